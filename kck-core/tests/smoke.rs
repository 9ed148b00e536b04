use std::convert::Infallible;
use kck_core::{primer, Cache, Ctx};

#[primer(key = "double/{n}")]
async fn double(_ctx: &Ctx, n: u32) -> Result<u64, Infallible> {
    Ok(u64::from(n) * 2)
}

#[primer(key = "sum/{a}/{name}", depends_on = [double])]
async fn sum(ctx: &Ctx, name: &str, a: u32) -> Result<String, kck_core::Error> {
    let x = double(ctx, a).await?;
    Ok(format!("{name}:{x}"))
}

#[tokio::test]
async fn smoke() {
    let cache = Cache::builder().build().unwrap();
    assert_eq!(*double(&cache, 21).await.unwrap(), 42);
    assert_eq!(*sum(&cache, "a/b", 2).await.unwrap(), "a/b:4");
    let key = sum::key("a/b", 2);
    assert_eq!(key.as_str(), "sum/2/a%2Fb");
    assert_eq!(cache.dependents(&double::key(2)).await.unwrap(), vec![key.key().clone()]);
}
