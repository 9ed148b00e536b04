//! Several processes on one database, as in production: this test binary
//! starts copies of itself (running only the `child` test, in a role given
//! by the environment) and talks to them over stdin and stdout.
//!
//! - a write in one process reaches the memo of another;
//! - a cold key missed by four processes at once is computed once;
//! - three worker processes share a queue, one is killed with SIGKILL in
//!   the middle of a job: the job completes elsewhere once its lease runs
//!   out, a zombie's late writes are rejected, no job is lost, and every
//!   key ends computed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use kck_core::refresh::Worker;
use kck_core::storage::{
    ChangeWatcher, ContentHash, Coordination, Entry, EntryMeta, EntryStore, Expect, JobRequest,
    Queue, RefreshReason, Saved, Version,
};
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

/// A job that takes a while, and says when it starts.
#[primer(key = "slow_job/{n}")]
async fn slow_job(_ctx: &Ctx, n: u32) -> Result<u32, std::convert::Infallible> {
    println!("kck> started {n}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(n * 2)
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

    /// Forwards everything the child says to `said`, tagged with `id`, on a
    /// thread of its own; returns the child's input and handle.
    fn forward(self, id: usize, said: mpsc::Sender<(usize, String)>) -> (ChildStdin, Child) {
        let Peer {
            child,
            input,
            mut output,
        } = self;
        std::thread::spawn(move || {
            let mut line = String::new();
            while output.read_line(&mut line).is_ok_and(|read| read > 0) {
                if let Some(at) = line.find("kck> ") {
                    let _ = said.send((id, line[at + 5..].trim_end().to_owned()));
                }
                line.clear();
            }
        });
        (input, child)
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

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Jobs pending or running.
async fn open_jobs(store: &PgStore) -> i64 {
    use diesel_async::RunQueryDsl;
    let mut conn = store.pool().get().await.expect("a connection");
    let row: Count =
        diesel::sql_query("SELECT count(*) AS n FROM kck_jobs WHERE status <> 'failed'")
            .get_result(&mut *conn)
            .await
            .expect("counted");
    row.n
}

/// Polls `done` every 50 ms, for at most a minute.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    for _ in 0..1200 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within a minute: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_in_the_middle_of_a_job_loses_nothing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    const JOBS: u32 = 30;
    let store = Arc::new(PgStore::connect(db.url()).await.expect("connects"));
    let queue: Arc<dyn Queue> = store.clone();
    let now = kck_core::clock::Clock::now(&kck_core::clock::SystemClock);
    let jobs: Vec<JobRequest> = (0..JOBS)
        .map(|n| JobRequest::new(slow_job::key(n).into(), now, RefreshReason::Requested))
        .collect();
    queue.enqueue(&jobs).await.expect("queued");

    // A zombie: claims a job, then stalls past its lease.
    let zombie = queue
        .claim("zombie", 1, Duration::from_millis(500), now)
        .await
        .expect("claimed")
        .pop()
        .expect("a job");

    // Three workers; the first to start a job is killed in the middle of it.
    let url = db.url().to_owned();
    let (said, hear) = mpsc::channel();
    let (mut inputs, mut children): (Vec<_>, Vec<_>) = (0..3)
        .map(|id| Peer::start("worker", &url).forward(id, said.clone()))
        .unzip();
    let (killed, killed_job) = blocking(move || {
        loop {
            let (id, line) = hear.recv().expect("the workers speak");
            if let Some(n) = line.strip_prefix("started ") {
                let n: u32 = n.parse().expect("a job number");
                children[id].kill().expect("SIGKILL");
                children[id].wait().expect("reaped");
                return ((id, children, hear), n);
            }
        }
    })
    .await;
    let (killed, mut children, hear) = killed;

    // Every key ends computed, the killed worker's job by another worker
    // once its lease ran out.
    eventually("every key is computed", || {
        let store = store.clone();
        async move {
            for n in 0..JOBS {
                if store
                    .load(&slow_job::key(n))
                    .await
                    .expect("loads")
                    .is_none()
                {
                    return false;
                }
            }
            true
        }
    })
    .await;
    eventually("no job is left pending or running", || {
        let store = store.clone();
        async move { open_jobs(&store).await == 0 }
    })
    .await;
    assert!(
        queue.failed(usize::MAX).await.expect("listed").is_empty(),
        "no job failed"
    );
    for n in 0..JOBS {
        let stored = store
            .load(&slow_job::key(n))
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(stored.value, (n * 2).to_string().into_bytes());
    }
    let restarts: Vec<String> = hear.try_iter().map(|(_, line)| line).collect();
    assert!(
        restarts.contains(&format!("started {killed_job}")),
        "the killed worker's job ran again elsewhere: {restarts:?}"
    );

    // The zombie wakes up: its claim no longer holds, and the write it
    // would make (over the absent entry it found) is fenced out.
    let zombie_key = zombie.key.clone();
    assert!(
        queue
            .complete(std::slice::from_ref(&zombie.claim))
            .await
            .expect("answered")
            == [false],
        "a claim whose lease ran out cannot complete the job"
    );
    let late = Entry {
        key: zombie_key.clone(),
        value: b"-1".to_vec(),
        meta: EntryMeta {
            computed_at: now,
            changed_at: now,
            stale_at: None,
            refresh_at: None,
            expires_at: None,
            content_hash: ContentHash::of(b"-1"),
            code_version: "zombie".to_owned(),
            compute_duration: Duration::ZERO,
            last_error: None,
            read_at: None,
        },
        dependencies: Vec::new(),
    };
    let current = store
        .load(&zombie_key)
        .await
        .unwrap()
        .expect("stored")
        .version;
    assert_eq!(
        store.save(late, Expect::Absent).await.expect("answered"),
        Saved::Conflict {
            current: Some(current)
        },
        "a late write is rejected"
    );
    assert_ne!(
        store
            .load(&zombie_key)
            .await
            .unwrap()
            .expect("stored")
            .value,
        b"-1".to_vec()
    );

    // The survivors shut down cleanly when their input closes.
    for (id, (input, mut child)) in inputs.drain(..).zip(children.drain(..)).enumerate() {
        drop(input);
        if id != killed {
            let status = blocking(move || child.wait().expect("ends")).await;
            assert!(status.success(), "worker {id} failed: {status}");
        }
    }
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
        let store = PgStore::connect(&url).await.expect("connects");
        // Jobs run on the workers the roles start; a computation whose
        // process died frees its key after a second.
        let cache = Cache::builder()
            .store(store.clone())
            .local_worker(false)
            .local_scheduler(false)
            .lease_ttl(Duration::from_secs(1))
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
            "worker" => {
                // Until the parent closes our input (or kills us).
                let (closed, on_close) = tokio::sync::oneshot::channel::<()>();
                drop(lines);
                std::thread::spawn(move || {
                    for _ in std::io::stdin().lines() {}
                    let _ = closed.send(());
                });
                Worker::builder(&cache)
                    .concurrency(2)
                    .lease(Duration::from_secs(1))
                    .shutdown(async move {
                        let _ = on_close.await;
                    })
                    .build()
                    .run()
                    .await
                    .expect("the worker runs");
            }
            other => panic!("unknown role {other}"),
        }
    });
}
