use kck_core::{primer, Ctx};

#[primer(refresh = "5m")]
async fn rates(_ctx: &Ctx) -> Result<f64, std::io::Error> {
    Ok(1.0)
}

fn main() {}
