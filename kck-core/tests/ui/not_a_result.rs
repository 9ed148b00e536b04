use kck_core::{primer, Ctx};

#[primer(key = "rates")]
async fn rates(_ctx: &Ctx) -> f64 {
    1.0
}

fn main() {}
