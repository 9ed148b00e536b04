use kck_core::{primer, Ctx};

#[primer(key = "stores")]
async fn stores(_ctx: &Ctx) -> Result<Vec<u32>, std::io::Error> {
    Ok(vec![1, 2])
}

#[primer(key = "chain_total", domain = stores)]
async fn chain_total(_ctx: &Ctx) -> Result<u32, std::io::Error> {
    Ok(0)
}

fn main() {}
