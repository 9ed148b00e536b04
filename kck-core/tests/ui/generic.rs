use kck_core::{primer, Ctx};

#[primer(key = "rates/{n}")]
async fn rates<T: Into<f64>>(_ctx: &Ctx, n: u32) -> Result<f64, std::io::Error> {
    Ok(f64::from(n))
}

fn main() {}
