//! Every cache decision is an event, in order, with readable text.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Source, SourceDown, on_every_store, source};
use kck_core::{Cache, Ctx, Event, Key, primer};

#[primer(key = "gauge/{name}", stale_after = "1m")]
async fn gauge(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

fn key(text: &str) -> Key {
    Key::parse(text).expect("a valid key")
}

on_every_store! {
    #[tokio::test]
    async fn reads_emit_miss_computed_hit_stale_served_and_refresh_started(test, _source) {
        let key = key("gauge/a");
        gauge(&test, "a".into()).await.unwrap();
        gauge(&test, "a".into()).await.unwrap();
        test.advance(Duration::from_secs(61));
        gauge(&test, "a".into()).await.unwrap();
        test.settle().await;
        assert_eq!(
            test.recorder().kinds_of(&key),
            [
                "miss",
                "computed",
                "hit",
                "stale-served",
                "refresh-queued",
                "refresh-started",
                "computed"
            ]
        );
    }
}

on_every_store! {
    #[tokio::test]
    async fn failures_writes_and_removals_are_events_too(test, source) {
        source.fail("b", true);
        let key = key("gauge/b");
        gauge(&test, "b".into()).await.unwrap_err();
        test.set(&gauge::key("b".into()), 5).await.unwrap();
        test.invalidate(&key).await.unwrap();
        test.remove(&key).await.unwrap();
        assert_eq!(
            test.recorder().kinds_of(&key),
            ["miss", "failed", "set", "invalidated", "removed"]
        );
        let text: Vec<String> = test
            .recorder()
            .events_of(&key)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text[1],
            "failed gauge/b: computing `gauge/b` failed: source `b` is down"
        );
    }
}

#[tokio::test]
async fn listeners_given_to_the_builder_see_every_event() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let source = Source::new();
    let cache = Cache::builder()
        .state(source.clone())
        .on_event({
            let seen = seen.clone();
            move |event: &Event| seen.lock().unwrap().push(event.to_string())
        })
        .build()
        .unwrap();
    gauge(&cache, "c".into()).await.unwrap();
    gauge(&cache, "c".into()).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen[0] == "miss gauge/c" && seen[2] == "hit gauge/c",
        "{seen:?}"
    );
}
