use kck_core::{primer, Ctx};

#[primer(key = "report/{store}/{week}", stale_after = "soon", expire_after = "1 fortnight")]
async fn report(_ctx: &Ctx, store: u32, day: u32) -> Result<u32, std::io::Error> {
    Ok(store + day)
}

fn main() {}
