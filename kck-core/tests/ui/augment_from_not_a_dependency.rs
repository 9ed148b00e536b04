use kck_core::{Ctx, primer};

#[primer(key = "sales/{store}")]
async fn sales(_ctx: &Ctx, store: u32) -> Result<u64, std::convert::Infallible> {
    Ok(u64::from(store))
}

#[primer(key = "report/{store}", augment_from = [sales])]
async fn report(_ctx: &Ctx, store: u32) -> Result<u64, std::convert::Infallible> {
    Ok(u64::from(store))
}

fn main() {}
