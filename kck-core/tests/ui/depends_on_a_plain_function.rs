use kck_core::{primer, Ctx};

async fn fetch_rates() -> f64 {
    1.0
}

#[primer(key = "price", depends_on = [fetch_rates])]
async fn price(_ctx: &Ctx) -> Result<f64, std::io::Error> {
    Ok(fetch_rates().await)
}

fn main() {}
