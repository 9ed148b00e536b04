use kck_core::primer;

#[primer(key = "rates")]
async fn rates() -> Result<f64, std::io::Error> {
    Ok(1.0)
}

fn main() {}
