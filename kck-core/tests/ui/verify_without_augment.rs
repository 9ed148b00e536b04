use kck_core::{Ctx, primer};

#[primer(key = "totals/{store}", verify_every = "1h")]
async fn totals(_ctx: &Ctx, store: u32) -> Result<u64, std::convert::Infallible> {
    Ok(u64::from(store))
}

fn main() {}
