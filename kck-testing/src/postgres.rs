//! A throwaway PostgreSQL for tests (feature `postgres`).
//!
//! [`TestDatabase::create`] gives each test a fresh, empty database, dropped
//! when the test ends. It comes from, in order:
//!
//! 1. the server at `KCK_TEST_DATABASE_URL`, when set (any database there:
//!    kck creates and drops its own next to it);
//! 2. a cluster started for this test process from the local PostgreSQL
//!    binaries (`initdb`, `pg_ctl`, on the `PATH` or under
//!    `/usr/lib/postgresql/*/bin`), run as the `postgres` user through
//!    `runuser` when the tests run as root. It lives in a temporary
//!    directory, listens on a free port of 127.0.0.1, and is stopped and
//!    deleted when the test process exits.
//!
//! When neither is possible the test says so loudly on stderr and is
//! skipped, unless `KCK_REQUIRE_POSTGRES=1`, which makes it fail instead.
//!
//! ```no_run
//! # async fn test() {
//! use kck_testing::postgres::TestDatabase;
//!
//! let Some(db) = TestDatabase::create().await else { return };
//! // connect a store to db.url() ...
//! # }
//! ```

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use kck_diesel::PgStore;
use tokio_postgres::NoTls;

/// A fresh database for one test. Dropping it drops the database.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    name: String,
    admin_url: String,
    /// Keeps a dedicated cluster alive as long as its database.
    _cluster: Option<Arc<Cluster>>,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl TestDatabase {
    /// A fresh database on the test server, or `None` (after a loud message)
    /// when no PostgreSQL is available.
    ///
    /// # Panics
    ///
    /// When no PostgreSQL is available and `KCK_REQUIRE_POSTGRES=1`, or
    /// when the server refuses to create the database.
    pub async fn create() -> Option<TestDatabase> {
        let admin_url = match std::env::var("KCK_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => match shared_cluster() {
                Ok(cluster) => cluster.url("postgres"),
                Err(reason) => return unavailable(&reason),
            },
        };
        Some(Self::create_on(&admin_url, None).await)
    }

    /// A cluster of the test's own (see [`Cluster::start`]), for tests that
    /// stop and restart the server; `None` (after a loud message) when the
    /// local binaries are unavailable.
    ///
    /// # Panics
    ///
    /// When the cluster cannot start and `KCK_REQUIRE_POSTGRES=1`.
    pub fn own_cluster() -> Option<Arc<Cluster>> {
        match Cluster::start() {
            Ok(cluster) => Some(Arc::new(cluster)),
            Err(reason) => unavailable(&reason),
        }
    }

    /// A cluster of the test's own that accepts TLS with this certificate
    /// chain and key (see [`Cluster::start_with_tls`]); `None` as
    /// [`TestDatabase::own_cluster`].
    ///
    /// # Panics
    ///
    /// When the cluster cannot start and `KCK_REQUIRE_POSTGRES=1`.
    pub fn own_tls_cluster(certificate_pem: &str, key_pem: &str) -> Option<Arc<Cluster>> {
        match Cluster::start_with_tls(certificate_pem, key_pem) {
            Ok(cluster) => Some(Arc::new(cluster)),
            Err(reason) => unavailable(&reason),
        }
    }

    /// A fresh database on `cluster`, kept alive with it.
    ///
    /// # Panics
    ///
    /// When the server refuses to create the database.
    pub async fn create_in(cluster: &Arc<Cluster>) -> TestDatabase {
        Self::create_on(&cluster.url("postgres"), Some(cluster.clone())).await
    }

    async fn create_on(admin_url: &str, cluster: Option<Arc<Cluster>>) -> TestDatabase {
        let name = format!(
            "kck_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let admin = connect(admin_url)
            .await
            .unwrap_or_else(|error| panic!("kck-testing: cannot reach {admin_url}: {error}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|error| panic!("kck-testing: cannot create database {name}: {error}"));
        TestDatabase {
            url: with_database(admin_url, &name),
            name,
            admin_url: admin_url.to_owned(),
            _cluster: cluster,
        }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new [`PgStore`] on the database: its own pool and `LISTEN`
    /// connection, as a process of its own would have.
    ///
    /// # Panics
    ///
    /// When the database refuses connections.
    pub async fn connect(&self) -> PgStore {
        PgStore::connect(&self.url)
            .await
            .unwrap_or_else(|error| panic!("kck-testing: cannot connect to {}: {error}", self.url))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside a runtime; use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = connect(&admin_url).await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                admin.batch_execute(&sql).await.ok()
            })
        });
        let _ = dropped.join();
    }
}

/// Connects with tokio-postgres and drives the connection on the runtime.
async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let server = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// Skips loudly (`None`), or fails under `KCK_REQUIRE_POSTGRES=1`.
fn unavailable<T>(reason: &str) -> Option<T> {
    if std::env::var("KCK_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
        panic!(
            "kck-testing: PostgreSQL is required (KCK_REQUIRE_POSTGRES=1) but unavailable: {reason}"
        );
    }
    eprintln!(
        "\n*** SKIPPED: this test needs PostgreSQL, which is unavailable: {reason}\n\
         *** Set KCK_TEST_DATABASE_URL, or install PostgreSQL's server binaries.\n"
    );
    None
}

/// The cluster every test of this process shares, started on first use.
fn shared_cluster() -> Result<Arc<Cluster>, String> {
    static SHARED: OnceLock<Result<Arc<Cluster>, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| Cluster::start().map(Arc::new))
        .clone()
}

/// A PostgreSQL cluster of the test process, started from the local
/// binaries: its own data directory, port and lifetime. A test that stops
/// and restarts the server (to test outages) starts its own.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// Server settings of its own, given at every start (`-c name=value`).
    settings: Vec<String>,
}

impl Cluster {
    /// Creates and starts a cluster; it is stopped and deleted when the
    /// value is dropped, or when the test process exits.
    ///
    /// # Errors
    ///
    /// Why it cannot: no binaries, no `postgres` user to run them as root,
    /// or a failed `initdb` or start.
    pub fn start() -> Result<Cluster, String> {
        Cluster::start_with(&[], Vec::new())
    }

    /// Creates and starts a cluster that accepts TLS (as well as plain
    /// connections) with this certificate chain and private key, both PEM:
    /// for tests of clients that verify it.
    ///
    /// # Errors
    ///
    /// As [`Cluster::start`], or if the files cannot be written.
    pub fn start_with_tls(certificate_pem: &str, key_pem: &str) -> Result<Cluster, String> {
        Cluster::start_with(
            &[("server.crt", certificate_pem), ("server.key", key_pem)],
            [
                "ssl=on",
                "ssl_cert_file=server.crt",
                "ssl_key_file=server.key",
            ]
            .map(String::from)
            .to_vec(),
        )
    }

    /// Creates and starts a hot standby of this cluster: a base backup
    /// (`pg_basebackup -R`, so that it streams from this cluster), on a
    /// port of its own. It replays this cluster's writes a moment after
    /// they commit; `SELECT pg_wal_replay_pause()` on it stops the replay,
    /// to make it lag on purpose. Stopped and deleted when dropped.
    ///
    /// # Errors
    ///
    /// If the backup or the start fails.
    pub fn start_standby(&self) -> Result<Cluster, String> {
        let standby = Cluster::new_dir(self.settings.clone())?;
        self.pg(&[
            "pg_basebackup",
            "--host",
            "127.0.0.1",
            "--port",
            &self.port.to_string(),
            "--username",
            "postgres",
            "--pgdata",
            standby.data(),
            "--write-recovery-conf",
            "--wal-method",
            "stream",
            "--no-sync",
        ])?;
        standby.watch_parent()?;
        standby.resume()?;
        Ok(standby)
    }

    /// A cluster value on a new, empty directory (owned by `postgres` when
    /// root) and a free port; nothing is initialized or started.
    fn new_dir(settings: Vec<String>) -> Result<Cluster, String> {
        static CLUSTERS: AtomicUsize = AtomicUsize::new(0);
        let bin = binaries()?;
        let dir = std::env::temp_dir().join(format!(
            "kck-pg-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // PostgreSQL starts only on a directory its owner alone may enter.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| format!("cannot restrict {}: {e}", dir.display()))?;
        if running_as_root() {
            run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
        }
        let port = free_port()?;
        Ok(Cluster {
            dir,
            bin,
            port,
            settings,
        })
    }

    /// Initializes a cluster, writes `files` into its data directory (only
    /// its owner may read them) and starts it with `settings`.
    fn start_with(files: &[(&str, &str)], settings: Vec<String>) -> Result<Cluster, String> {
        let cluster = Cluster::new_dir(settings)?;
        cluster.pg(&[
            "initdb",
            "--pgdata",
            cluster.data(),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-sync",
        ])?;
        for (name, contents) in files {
            cluster.write_private(name, contents)?;
        }
        cluster.watch_parent()?;
        cluster.resume()?;
        Ok(cluster)
    }

    /// The TCP port it listens on, at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server (fast shutdown: connections are closed).
    ///
    /// # Errors
    ///
    /// If `pg_ctl stop` fails.
    pub fn stop(&self) -> Result<(), String> {
        self.pg(&[
            "pg_ctl",
            "stop",
            "--pgdata",
            self.data(),
            "--mode",
            "fast",
            "--wait",
        ])
    }

    /// Starts the server again, on the same data and port.
    ///
    /// # Errors
    ///
    /// If `pg_ctl start` fails.
    pub fn resume(&self) -> Result<(), String> {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        for setting in &self.settings {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let log = self.dir.join("server.log");
        self.pg(&[
            "pg_ctl",
            "start",
            "--pgdata",
            self.data(),
            "--wait",
            "--timeout",
            "60",
            "--log",
            &log.display().to_string(),
            "-o",
            &options,
        ])
    }

    /// Writes a file into the data directory that only the server's user
    /// may read (PostgreSQL refuses a key file others can read).
    fn write_private(&self, name: &str, contents: &str) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.dir.join(name);
        let failed = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
        std::fs::write(&path, contents).map_err(failed)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
        if running_as_root() {
            run(Command::new("chown").arg("postgres:postgres").arg(&path))?;
        }
        Ok(())
    }

    fn data(&self) -> &str {
        // A path we built from UTF-8 parts.
        self.dir.to_str().map_or("", |dir| dir)
    }

    /// Runs a PostgreSQL program, as the `postgres` user when root.
    fn pg(&self, args: &[&str]) -> Result<(), String> {
        let program = self.bin.join(args[0]);
        let mut command = as_postgres(&program);
        command.args(&args[1..]);
        run(&mut command)
    }

    /// Stops and deletes the cluster when the test process exits, however
    /// it exits: a shell, as the cluster's owner, waits for it to go.
    fn watch_parent(&self) -> Result<(), String> {
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 0.5; done; \
             '{pg_ctl}' stop --pgdata '{dir}' --mode immediate >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            dir = self.data(),
        );
        as_postgres(Path::new("sh"))
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| format!("cannot start the cluster's watchdog: {e}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg(&[
            "pg_ctl",
            "stop",
            "--pgdata",
            self.data(),
            "--mode",
            "immediate",
        ]);
        let _ = as_postgres(Path::new("rm"))
            .args(["-rf", self.data()])
            .status();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `program`, run as `postgres` through `runuser` when root (PostgreSQL
/// refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The directory of `initdb` and `pg_ctl`.
fn binaries() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(|d| d.ok())
                .map(|d| d.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versioned.sort_by_key(|dir| {
        dir.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versioned.reverse();
    versioned
        .into_iter()
        .chain(on_path)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .map(|dir| std::fs::canonicalize(&dir).unwrap_or(dir))
        .ok_or_else(|| "no initdb and pg_ctl on the PATH or under /usr/lib/postgresql".to_owned())
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("no free port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
