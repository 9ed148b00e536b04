use kck_core::{primer, Ctx};

#[primer(key = "nightly/{store}", schedule = "61 3 * * *")]
async fn nightly(_ctx: &Ctx, store: u32) -> Result<u32, std::io::Error> {
    Ok(store)
}

fn main() {}
