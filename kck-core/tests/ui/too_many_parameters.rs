use kck_core::{primer, Ctx};

#[primer(key = "wide/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}")]
#[allow(clippy::too_many_arguments)]
async fn wide(
    _ctx: &Ctx,
    a: u8,
    b: u8,
    c: u8,
    d: u8,
    e: u8,
    f: u8,
    g: u8,
    h: u8,
    i: u8,
) -> Result<u8, std::io::Error> {
    Ok(a + b + c + d + e + f + g + h + i)
}

fn main() {}
