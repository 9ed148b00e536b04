use kck_core::{primer, Ctx};

#[primer(key = "rates", stale_after = "0s")]
async fn rates(_ctx: &Ctx) -> Result<f64, std::io::Error> {
    Ok(1.0)
}

fn main() {}
