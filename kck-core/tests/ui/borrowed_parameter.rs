use kck_core::{primer, Ctx};

#[primer(key = "report/{store}")]
async fn report(_ctx: &Ctx, store: &u32) -> Result<u32, std::io::Error> {
    Ok(*store)
}

fn main() {}
