use kck_core::{primer, Ctx};

struct Store {
    id: u32,
}

#[primer(key = "report/{store}")]
async fn report(_ctx: &Ctx, store: Store) -> Result<u32, std::io::Error> {
    Ok(store.id)
}

fn main() {}
