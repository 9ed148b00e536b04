use kck_core::{primer, Ctx};

#[primer(key = "rates", refresh = "5 parsecs")]
async fn rates(_ctx: &Ctx) -> Result<f64, std::io::Error> {
    Ok(1.0)
}

fn main() {}
