use kck_core::{primer, Ctx};

struct Rates;

#[primer(key = "price", depends_on = [Rates])]
async fn price(_ctx: &Ctx) -> Result<f64, std::io::Error> {
    Ok(1.0)
}

fn main() {}
