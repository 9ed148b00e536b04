use kck_core::{primer, Ctx};

#[primer(key = "report/{store}")]
async fn report(_ctx: &Ctx, store: u32, day: u32) -> Result<u64, std::io::Error> {
    Ok(u64::from(store + day))
}

fn main() {}
