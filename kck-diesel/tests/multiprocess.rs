//! Several processes on one database, as in production: this test binary
//! starts copies of itself (running only the `child` test, in a role given
//! by the environment) and talks to them over stdin and stdout.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kck_core::store::{ChangeWatcher, Store, Version};
use kck_core::{Cache, Ctx, Key, primer};
use kck_diesel::PgStore;
use kck_testing::postgres::TestDatabase;
use tokio::sync::watch;

static COMPUTED: AtomicUsize = AtomicUsize::new(0);

/// A product every process can compute; counts computations per process.
#[primer(key = "shared/{name}")]
async fn shared(_ctx: &Ctx, name: String) -> Result<u64, std::convert::Infallible> {
    COMPUTED.fetch_add(1, Ordering::SeqCst);
    // Slow enough that the processes' reads overlap.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(name.len() as u64)
}

/// A copy of this test binary, in `role`, on the database at `url`.
struct Peer {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Peer {
    fn start(role: &str, url: &str) -> Peer {
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args(["child", "--exact", "--nocapture", "--test-threads", "1"])
            .env("KCK_CHILD", role)
            .env("KCK_CHILD_URL", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the test binary starts");
        let input = child.stdin.take().expect("piped");
        let output = BufReader::new(child.stdout.take().expect("piped"));
        Peer {
            child,
            input,
            output,
        }
    }

    /// The next thing the child said: what follows `kck> ` on a line (the
    /// test harness may print before it on the same line).
    fn hear(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let read = self
                .output
                .read_line(&mut line)
                .expect("the child's output");
            assert!(read > 0, "the child ended without answering");
            if let Some(at) = line.find("kck> ") {
                return line[at + 5..].trim_end().to_owned();
            }
        }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.input, "{line}").expect("the child's input");
        self.input.flush().expect("the child's input");
    }

    fn finish(mut self) {
        let status = self.child.wait().expect("the child ends");
        assert!(status.success(), "the child failed: {status}");
    }
}

/// Runs a conversation with children off the runtime, failing the test
/// (rather than hanging it) if they do not answer within two minutes.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let talk = tokio::task::spawn_blocking(f);
    tokio::time::timeout(Duration::from_secs(120), talk)
        .await
        .expect("the children answer within two minutes")
        .expect("no panic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_one_process_reaches_the_memo_of_another() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let url = db.url().to_owned();
    let mut reader = blocking(move || Peer::start("reader", &url)).await;
    let (mut reader, said) = blocking(move || {
        let said = reader.hear();
        (reader, said)
    })
    .await;
    assert_eq!(said, "read 5 computed 1");

    let cache = Cache::builder()
        .store(PgStore::connect(db.url()).await.expect("connects"))
        .build()
        .expect("valid primers");
    let version = cache.set(&shared::key("hello".into()), 42).await.unwrap();

    let said = blocking(move || {
        reader.say(&format!("expect {}", version.0));
        let said = reader.hear();
        reader.finish();
        said
    })
    .await;
    assert_eq!(
        said, "read 42 computed 1",
        "read from the store, not computed again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_key_missed_by_four_processes_at_once_is_computed_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    // Create the tables before the processes race to.
    drop(PgStore::connect(db.url()).await.expect("connects"));
    let url = db.url().to_owned();
    let computed = blocking(move || {
        let mut peers: Vec<Peer> = (0..4).map(|_| Peer::start("stampede", &url)).collect();
        for peer in &mut peers {
            assert_eq!(peer.hear(), "ready");
        }
        for peer in &mut peers {
            peer.say("go");
        }
        let mut computed = 0;
        for mut peer in peers {
            let said = peer.hear();
            let count: usize = said
                .strip_prefix("done computed ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected: {said}"));
            computed += count;
            peer.finish();
        }
        computed
    })
    .await;
    assert_eq!(
        computed, 1,
        "one computation across four processes of 100 readers each"
    );
}

/// Tells when the store reports a change of a key at a version.
struct ChangeSeen(watch::Sender<i64>);

impl ChangeWatcher for ChangeSeen {
    fn changed(&self, _key: &Key, version: Version) {
        self.0.send_modify(|seen| *seen = (*seen).max(version.0));
    }
    fn released(&self, _key: &Key) {}
    fn tracking(&self, _tracked: bool) {}
}

/// The other side: does nothing unless started by a test above.
#[test]
fn child() {
    let Ok(role) = std::env::var("KCK_CHILD") else {
        return;
    };
    let url = std::env::var("KCK_CHILD_URL").expect("the database URL");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store = Arc::new(PgStore::connect(&url).await.expect("connects"));
        let cache = Cache::builder()
            .shared_store(store.clone())
            .build()
            .expect("valid primers");
        let lines = std::io::stdin().lines();
        let mut lines = lines.map(|line| line.expect("the parent's input"));
        match role.as_str() {
            "reader" => {
                let seen = Arc::new(ChangeSeen(watch::Sender::new(0)));
                let watcher: Arc<dyn ChangeWatcher> = seen.clone();
                store.watch(Arc::downgrade(&watcher));
                let value = shared(&cache, "hello".into()).await.expect("computed");
                let computed = COMPUTED.load(Ordering::SeqCst);
                println!("kck> read {value} computed {computed}");
                let expected: i64 = lines
                    .next()
                    .and_then(|line| line.strip_prefix("expect ")?.parse().ok())
                    .expect("expect <version>");
                // Wait for the notification (at most 30 s), then read.
                let mut versions = seen.0.subscribe();
                let notified = versions.wait_for(|seen| *seen >= expected);
                tokio::time::timeout(Duration::from_secs(30), notified)
                    .await
                    .expect("the write is announced")
                    .expect("the watcher lives");
                let value = shared(&cache, "hello".into()).await.expect("read");
                let computed = COMPUTED.load(Ordering::SeqCst);
                println!("kck> read {value} computed {computed}");
            }
            "stampede" => {
                println!("kck> ready");
                assert_eq!(lines.next().as_deref(), Some("go"));
                let readers: Vec<_> = (0..100)
                    .map(|_| {
                        let cache = cache.clone();
                        tokio::spawn(
                            async move { *shared(&cache, "cold".into()).await.expect("read") },
                        )
                    })
                    .collect();
                for reader in readers {
                    assert_eq!(reader.await.expect("no panic"), 4);
                }
                let computed = COMPUTED.load(Ordering::SeqCst);
                println!("kck> done computed {computed}");
            }
            other => panic!("unknown role {other}"),
        }
    });
}
