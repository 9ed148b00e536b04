//! TLS against a real server: a throwaway cluster serving a certificate
//! these tests generate. Every `sslmode` connects when it should and fails
//! with a typed cause when it should not, promptly; every connection of a
//! store (pool, listener) is encrypted.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl as _;
use kck_core::{Cache, Ctx, primer};
use kck_diesel::{ConnectError, PgStore, SslMode, TlsFailure};
use kck_testing::postgres::{Cluster, TestDatabase};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// The host name the server's certificate is issued to. Connections name
/// it as their host and reach 127.0.0.1 through `hostaddr`, so no DNS is
/// involved.
const HOST: &str = "db.kck.test";

/// Long enough never to fire on a loaded machine; each failure must come
/// from its cause, well before it.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A cluster serving a certificate for [`HOST`] issued by a CA of its own,
/// that CA's file, and another CA's file.
struct TlsServer {
    cluster: Arc<Cluster>,
    dir: PathBuf,
}

impl TlsServer {
    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn other_ca_file(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }

    /// A URL naming `host`, reaching the cluster, with these TLS options.
    fn url(&self, host: &str, options: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/postgres?hostaddr=127.0.0.1&{options}",
            self.cluster.port()
        )
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

/// The TLS server of this test process, started on first use; `None`
/// where PostgreSQL is unavailable (see `TestDatabase`).
fn server() -> Option<&'static TlsServer> {
    static SERVER: OnceLock<Option<TlsServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let ca = certificate_authority("kck test CA");
            let key = KeyPair::generate().expect("server key");
            let certificate = CertificateParams::new(vec![HOST.to_owned()])
                .expect("server parameters")
                .signed_by(&key, &ca)
                .expect("server certificate");
            let cluster = TestDatabase::own_tls_cluster(&certificate.pem(), &key.serialize_pem())?;
            let dir = std::env::temp_dir().join(format!("kck-tls-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("certificate directory");
            std::fs::write(dir.join("ca.pem"), ca.pem()).expect("CA file");
            let other = certificate_authority("another CA");
            std::fs::write(dir.join("other-ca.pem"), other.pem()).expect("other CA file");
            Some(TlsServer { cluster, dir })
        })
        .as_ref()
}

async fn connect(url: &str) -> Result<PgStore, ConnectError> {
    PgStore::builder(url)
        .connect_timeout(TIMEOUT)
        .connect()
        .await
}

fn tls_failure(result: Result<PgStore, ConnectError>) -> TlsFailure {
    match result {
        Err(ConnectError::Tls { cause, server }) => {
            // host:port/database, no user.
            assert!(
                server.ends_with("/postgres") && !server.contains('@'),
                "{server}"
            );
            cause
        }
        Err(other) => panic!("expected a TLS failure, got: {other}"),
        Ok(_) => panic!("expected a TLS failure, but it connected"),
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// How many client connections to the cluster are not encrypted, and how
/// many are.
async fn plain_and_encrypted(store: &PgStore) -> (i64, i64) {
    let mut conn = store.pool().get().await.expect("a pooled connection");
    let count = |encrypted: bool| {
        diesel::sql_query(format!(
            "SELECT count(*) AS count FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE backend_type = 'client backend' AND ssl = {encrypted}"
        ))
    };
    let plain = count(false)
        .get_result::<Count>(&mut conn)
        .await
        .expect("plain");
    let encrypted = count(true)
        .get_result::<Count>(&mut conn)
        .await
        .expect("encrypted");
    (plain.count, encrypted.count)
}

#[primer(key = "greeting/{n}")]
async fn greeting(_ctx: &Ctx, n: u32) -> Result<String, std::convert::Infallible> {
    Ok(format!("hello {n}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_right_ca_connects_and_serves_over_tls_only() {
    let Some(server) = server() else { return };
    let url = server.url(
        HOST,
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            server.ca_file().display()
        ),
    );
    let store = connect(&url).await.expect("verify-full with the right CA");
    // The pool's connection and the listener's: all encrypted.
    let (plain, encrypted) = plain_and_encrypted(&store).await;
    assert_eq!(plain, 0, "a connection without TLS");
    assert!(encrypted >= 2, "the pool's and the listener's: {encrypted}");
    let cache = Cache::builder()
        .store(store)
        .local_worker(false)
        .local_scheduler(false)
        .build()
        .expect("valid primers");
    assert_eq!(*greeting(&cache, 7).await.expect("computed"), "hello 7");
    assert_eq!(*greeting(&cache, 7).await.expect("served"), "hello 7");

    // The same through the builder rather than the URL.
    PgStore::builder(&server.url(HOST, ""))
        .ssl_mode(SslMode::VerifyFull)
        .ssl_root_cert(server.ca_file())
        .connect_timeout(TIMEOUT)
        .connect()
        .await
        .expect("verify-full set in code");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_as_untrusted() {
    let Some(server) = server() else { return };
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = server.url(
            HOST,
            &format!(
                "sslmode={mode}&sslrootcert={}",
                server.other_ca_file().display()
            ),
        );
        let cause = tls_failure(connect(&url).await);
        assert!(
            matches!(&cause, TlsFailure::UntrustedCertificate(why) if why.contains("UnknownIssuer")),
            "{mode}: {cause}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_fails_verify_full_only() {
    let Some(server) = server() else { return };
    let options = |mode: &str| format!("sslmode={mode}&sslrootcert={}", server.ca_file().display());
    let wrong_host = server.url("other.kck.test", &options("verify-full"));
    assert_eq!(
        tls_failure(connect(&wrong_host).await),
        TlsFailure::WrongHostName
    );
    // verify-ca checks the chain, not the name.
    connect(&server.url("other.kck.test", &options("verify-ca")))
        .await
        .expect("verify-ca ignores the name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_and_prefer_encrypt_without_checking_the_certificate() {
    let Some(server) = server() else { return };
    for mode in ["require", "prefer"] {
        let store = connect(&server.url(HOST, &format!("sslmode={mode}")))
            .await
            .unwrap_or_else(|error| panic!("{mode}: {error}"));
        assert_eq!(plain_and_encrypted(&store).await.0, 0, "{mode}");
    }
    // The default is libpq's: prefer.
    let store = connect(&server.url(HOST, "")).await.expect("default mode");
    assert_eq!(plain_and_encrypted(&store).await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_against_a_server_without_tls_is_refused_and_prefer_falls_back() {
    let Some(plain) = TestDatabase::own_cluster() else {
        return;
    };
    let url = |mode: &str| format!("{}?sslmode={mode}", plain.url("postgres"));
    for mode in ["require", "verify-ca", "verify-full"] {
        let mut builder = PgStore::builder(&url(mode)).connect_timeout(TIMEOUT);
        if mode != "require" {
            // A CA file, so that the failure is the server's, not ours.
            if let Some(server) = server() {
                builder = builder.ssl_root_cert(server.ca_file());
            }
        }
        assert_eq!(
            tls_failure(builder.connect().await),
            TlsFailure::NotOffered,
            "{mode}"
        );
    }
    connect(&url("prefer"))
        .await
        .expect("prefer falls back to plain");
    connect(&url("disable")).await.expect("disable");
}
