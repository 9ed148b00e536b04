use kck_core::{primer, Ctx};

#[primer(key = "rates")]
async fn rates(_ctx: &Ctx) -> Result<f64, std::io::Error> {
    Ok(1.0)
}

#[primer(key = "price", depends_on = [rats])]
async fn price(ctx: &Ctx) -> Result<f64, kck_core::Error> {
    Ok(*rates(ctx).await?)
}

fn main() {}
