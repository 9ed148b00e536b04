//! Every cache decision is an event, in order, with readable text.

mod common;

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::{Source, SourceDown, lock, on_every_store, source};
use futures_util::FutureExt;
use kck_core::clock::{MockClock, Timestamp};
use kck_core::event::Event;
use kck_core::{Cache, Ctx, Key, primer};

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
                "job-started",
                "refresh-started",
                "computed",
                "job-done"
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

#[tokio::test]
async fn subscribers_receive_every_event_from_then_on_and_hear_when_they_fell_behind() {
    let source = Source::new();
    let cache = Cache::builder().state(source.clone()).build().unwrap();
    gauge(&cache, "before".into()).await.unwrap();
    let mut stream = cache.subscribe();
    gauge(&cache, "d".into()).await.unwrap();
    gauge(&cache, "d".into()).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(stream.next().await.unwrap().unwrap().to_string());
    }
    assert_eq!(seen, ["miss gauge/d", "computed gauge/d", "hit gauge/d"]);

    // 2,000 hits unread: the stream missed the oldest, and says how many.
    for _ in 0..2000 {
        gauge(&cache, "d".into()).await.unwrap();
    }
    let missed = stream.next().await.unwrap().unwrap_err();
    assert_eq!(missed.0, 2000 - 1024);
    assert_eq!(
        stream.next().await.unwrap().unwrap().to_string(),
        "hit gauge/d"
    );

    drop(stream);
    assert!(
        cache.subscribe().next().now_or_never().is_none(),
        "a new stream starts empty"
    );
}

#[primer(key = "reading/{name}", on_demand)]
async fn reading(ctx: &Ctx, name: String) -> Result<i64, SourceDown> {
    source(ctx).read(&name).await
}

/// A listener that writes down each event when it has been told, and that
/// holds the thread telling the `cause` event until another event arrives
/// (or half a second passes). Work that `cause` starts, if started before
/// `cause` is told, tells its own events meanwhile, and they are written
/// down first.
struct CauseFirst {
    cause: &'static str,
    arrived: Mutex<mpsc::Sender<()>>,
    holding: Mutex<mpsc::Receiver<()>>,
    told: Mutex<Vec<&'static str>>,
}

impl CauseFirst {
    fn new(cause: &'static str) -> Arc<Self> {
        let (arrived, holding) = mpsc::channel();
        Arc::new(Self {
            cause,
            arrived: Mutex::new(arrived),
            holding: Mutex::new(holding),
            told: Mutex::default(),
        })
    }

    fn listen(&self, event: &Event) {
        let name = event.kind.name();
        if name == self.cause {
            let holding = lock(&self.holding);
            while holding.try_recv().is_ok() {}
            let _ = holding.recv_timeout(Duration::from_millis(500));
            lock(&self.told).push(name);
        } else {
            lock(&self.told).push(name);
            let _ = lock(&self.arrived).send(());
        }
    }

    fn cache(self: &Arc<Self>, source: &Arc<Source>, clock: &Arc<MockClock>) -> Cache {
        let listener = self.clone();
        Cache::builder()
            .state(source.clone())
            .clock(clock.clone())
            .on_event(move |event: &Event| listener.listen(event))
            .build()
            .expect("a cache with valid primers")
    }

    fn told(&self) -> Vec<&'static str> {
        lock(&self.told).clone()
    }
}

fn mock_clock() -> Arc<MockClock> {
    Arc::new(MockClock::new(Timestamp::from_unix_micros(
        1_800_000_000_000_000,
    )))
}

// The work an event starts (a refresh's computation, an on-demand
// computation, the store check behind a stale read) begins only after the
// event is told, so no listener sees an effect before its cause, even with
// the work free to run on another thread (see `CauseFirst`).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_computes_only_after_refresh_started_is_told() {
    let (source, clock) = (Source::new(), mock_clock());
    let refresh = CauseFirst::new("refresh-started");
    let cache = refresh.cache(&source, &clock);
    gauge(&cache, "a".into()).await.unwrap();
    cache.refresh(&gauge::key("a".into())).await.unwrap();
    assert_eq!(
        refresh.told(),
        ["miss", "computed", "refresh-started", "computed"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_read_computes_only_after_its_miss_is_told() {
    let (source, clock) = (Source::new(), mock_clock());
    let miss = CauseFirst::new("miss");
    let cache = miss.cache(&source, &clock);
    reading(&cache, "b".into()).await.unwrap();
    assert_eq!(miss.told(), ["miss", "computed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_read_checks_the_store_only_after_stale_served_is_told() {
    let (source, clock) = (Source::new(), mock_clock());
    let stale = CauseFirst::new("stale-served");
    let cache = stale.cache(&source, &clock);
    gauge(&cache, "c".into()).await.unwrap();
    clock.advance(Duration::from_secs(61));
    gauge(&cache, "c".into()).await.unwrap();
    cache.wait_idle().await;
    let told = stale.told();
    assert_eq!(
        told[..4],
        ["miss", "computed", "stale-served", "refresh-queued"],
        "{told:?}"
    );
}
