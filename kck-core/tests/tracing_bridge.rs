//! Events reach `tracing`, under the target `kck`.

use std::sync::{Arc, Mutex};

use kck_core::{Cache, Ctx, primer};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[primer(key = "traced/{n}")]
async fn traced(_ctx: &Ctx, n: u32) -> Result<u32, std::convert::Infallible> {
    Ok(n)
}

/// Keeps `(level, event name)` of every `kck` event.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<(tracing::Level, String)>>>);

struct EventName(String);

impl tracing::field::Visit for EventName {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "event" {
            self.0 = value.to_owned();
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl Subscriber for Collect {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == "kck"
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut name = EventName(String::new());
        event.record(&mut name);
        self.0
            .lock()
            .expect("not poisoned")
            .push((*event.metadata().level(), name.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn cache_decisions_are_tracing_events() {
    let collect = Collect::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tracing::subscriber::with_default(collect.clone(), || {
        runtime.block_on(async {
            let cache = Cache::builder().build().unwrap();
            traced(&cache, 1).await.unwrap();
            traced(&cache, 1).await.unwrap();
        });
    });
    let seen = collect.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (tracing::Level::DEBUG, "miss".to_owned()),
            (tracing::Level::DEBUG, "computed".to_owned()),
            (tracing::Level::TRACE, "hit".to_owned()),
        ]
    );
}
