//! How kck reaches PostgreSQL: the URL parsed once into a [`Target`], TLS
//! as libpq's `sslmode` says, and the one function that opens every
//! connection kck uses (the pool's, the listener's and the migrations').

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection as _};
use kck_core::storage::StoreError;
use percent_encoding::percent_decode_str;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::Host;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Config, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How connections use TLS: libpq's `sslmode`, with libpq's meaning.
///
/// In a URL: `?sslmode=verify-full`. The certificates a mode checks against
/// are those of `sslrootcert` (a PEM file of CA certificates), or the
/// system's roots when it is absent or `system` (with `system`, as in
/// libpq 16, the mode is `verify-full` unless given, and a weaker one is
/// refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SslMode {
    /// Plain connections only.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is
    /// not checked. libpq's default, and kck's.
    #[default]
    Prefer,
    /// TLS or no connection. The certificate is not checked, unless
    /// `sslrootcert` names a CA file: then as [`SslMode::VerifyCa`] (as in
    /// libpq).
    Require,
    /// TLS, with a certificate that chains to a trusted CA.
    VerifyCa,
    /// TLS, with a certificate that chains to a trusted CA and names the
    /// host connected to: the mode that stops a man in the middle.
    VerifyFull,
}

impl SslMode {
    /// The mode as a URL writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = ConnectError;

    fn from_str(value: &str) -> Result<SslMode, ConnectError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(ConnectError::UnknownSslMode {
                    value: value.to_owned(),
                });
            }
        })
    }
}

/// Why connecting a [`PgStore`](crate::PgStore) failed. No variant ever
/// shows a password: servers are named by host, port and database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL cannot be read.
    #[error("invalid PostgreSQL URL: {reason}")]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// `sslmode` is none of libpq's modes.
    #[error(
        "unknown sslmode `{value}`: expected disable, prefer, require, verify-ca or verify-full"
    )]
    UnknownSslMode {
        /// The value given.
        value: String,
    },
    /// A libpq connection option kck does not implement (client
    /// certificates, for now).
    #[error("the connection option `{option}` is not supported by kck")]
    UnsupportedOption {
        /// The option.
        option: String,
    },
    /// The CA file (`sslrootcert`) cannot be read or holds no certificate.
    #[error("cannot use the CA file {} (sslrootcert): {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The mode checks certificates, no CA file was given and the system
    /// has no root certificates.
    #[error(
        "sslmode={mode} checks the server's certificate, but no CA file was given (sslrootcert) \
         and the system has no root certificates"
    )]
    NoRootCertificates {
        /// The mode.
        mode: SslMode,
    },
    /// The server was reached, but TLS with it failed.
    #[error("TLS with PostgreSQL at {server} failed: {cause}")]
    Tls {
        /// `host:port/database`.
        server: String,
        /// Why.
        cause: TlsFailure,
    },
    /// The server answered and refused: authentication failed, the
    /// database does not exist, too many connections, starting up.
    #[error("PostgreSQL at {server} refused the connection: {}", causes(.source.as_ref()))]
    Refused {
        /// `host:port/database`.
        server: String,
        /// The server's SQLSTATE code, such as `28P01` (wrong password) or
        /// `57P03` (starting up).
        sqlstate: String,
        /// The server's error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The server cannot be reached, or the connection broke while it was
    /// being set up. Trying again later may succeed.
    #[error("cannot reach PostgreSQL at {server}: {}", causes(.source.as_ref()))]
    Unreachable {
        /// `host:port/database`.
        server: String,
        /// The underlying error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// No connection within the connect time-out.
    #[error("timed out after {after:?} connecting to PostgreSQL at {server}")]
    Timeout {
        /// `host:port/database`.
        server: String,
        /// The time-out.
        after: Duration,
    },
    /// Neither `KCK_DATABASE_URL` nor `DATABASE_URL` is set.
    #[error("no PostgreSQL URL: set KCK_DATABASE_URL (or DATABASE_URL)")]
    MissingUrl,
    /// The schema given for kck's tables is not one kck accepts.
    #[error("invalid schema name `{name}`: {reason}")]
    InvalidSchema {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// The database has no kck tables, and the store was asked not to
    /// create them ([`Migrations::Require`](crate::Migrations::Require)):
    /// likely the wrong database.
    #[error(
        "PostgreSQL at {server} has no kck tables: is it the right database? \
         (the application creates them when it starts)"
    )]
    NoSchema {
        /// `host:port/database`.
        server: String,
    },
    /// kck's tables lack migrations of this version of kck, and the store
    /// was asked not to apply them
    /// ([`Migrations::Require`](crate::Migrations::Require)).
    #[error(
        "kck's tables at {server} are older than this program ({pending} migrations to apply): \
         start the application of this version once, it upgrades them"
    )]
    SchemaOutdated {
        /// `host:port/database`.
        server: String,
        /// How many migrations are not applied.
        pending: usize,
    },
    /// A replica URL names a server that is not a hot standby (it is not
    /// in recovery): a primary, which kck would read stale data from.
    #[error("the replica at {server} is not a hot standby (it is not in recovery)")]
    NotAReplica {
        /// `host:port/database`.
        server: String,
    },
    /// A replica URL names a hot standby of another primary.
    #[error("the replica at {server} is a standby of another primary than {primary}")]
    ReplicaOfAnotherPrimary {
        /// The replica, `host:port/database`.
        server: String,
        /// The primary, `host:port/database`.
        primary: String,
    },
    /// A replica URL names a standby of the primary, but another database
    /// on it.
    #[error("the replica at {server} serves database `{database}`, not the primary's `{expected}`")]
    ReplicaOfAnotherDatabase {
        /// The replica, `host:port/database`.
        server: String,
        /// The replica's database.
        database: String,
        /// The primary's.
        expected: String,
    },
    /// Connected, but kck's schema could not be created or upgraded.
    #[error("cannot set up kck's tables in PostgreSQL at {server}: {source}")]
    Setup {
        /// `host:port/database`.
        server: String,
        /// The underlying error.
        #[source]
        source: StoreError,
    },
}

/// Why TLS with a server failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server does not offer TLS, and the mode requires it.
    #[error("the server does not offer TLS, and the sslmode requires it")]
    NotOffered,
    /// The server's certificate does not chain to a trusted CA (or is
    /// expired, or malformed).
    #[error("the server's certificate is not trusted: {0}")]
    UntrustedCertificate(String),
    /// The certificate is trusted but names other hosts than the one
    /// connected to (`verify-full`).
    #[error("the server's certificate does not name the host connected to")]
    WrongHostName,
    /// The handshake failed otherwise.
    #[error("{0}")]
    Handshake(String),
}

impl ConnectError {
    /// Whether trying again later may succeed (the server was down or
    /// slow), as opposed to a configuration that will keep failing.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Unreachable { .. } | ConnectError::Timeout { .. } => true,
            // Starting up or shutting down, out of connections, or a
            // connection exception: the server may say yes later.
            ConnectError::Refused { sqlstate, .. } => {
                matches!(
                    sqlstate.as_str(),
                    "57P01" | "57P02" | "57P03" | "53300" | "53400"
                ) || sqlstate.starts_with("08")
            }
            ConnectError::Setup { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}

impl From<ConnectError> for StoreError {
    fn from(error: ConnectError) -> StoreError {
        if error.is_transient() {
            StoreError::unavailable(error)
        } else {
            StoreError::backend(error)
        }
    }
}

/// The connection settings a URL holds, with kck's TLS options taken out
/// (tokio-postgres knows only `disable`, `prefer` and `require`).
#[derive(Debug)]
pub(crate) struct ParsedUrl {
    pub(crate) config: Config,
    pub(crate) ssl_mode: Option<SslMode>,
    pub(crate) ssl_root_cert: Option<PathBuf>,
}

impl ParsedUrl {
    /// Reads a `postgres://` or `postgresql://` URL.
    pub(crate) fn parse(url: &str) -> Result<ParsedUrl, ConnectError> {
        let Some(parts) = UrlParts::split(url) else {
            return Err(ConnectError::InvalidUrl {
                reason: "expected a URL that starts with postgres:// or postgresql://".into(),
            });
        };
        let (base, query) = (parts.base(), parts.query.unwrap_or(""));
        let mut kept = Vec::new();
        let mut ssl_mode = None;
        let mut ssl_root_cert = None;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match decode(key)?.as_str() {
                "sslmode" => ssl_mode = Some(decode(value)?.parse()?),
                "sslrootcert" => ssl_root_cert = Some(decode(value)?),
                option @ ("sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir") => {
                    return Err(ConnectError::UnsupportedOption {
                        option: option.to_owned(),
                    });
                }
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        // tokio-postgres's messages name options, never their values.
        let config = Config::from_str(&rest).map_err(|error| ConnectError::InvalidUrl {
            reason: causes(&error),
        })?;
        Ok(ParsedUrl {
            config,
            ssl_mode,
            ssl_root_cert: ssl_root_cert.map(PathBuf::from),
        })
    }
}

/// The mode and the CA file, from what was given (by the URL or in
/// code), as libpq settles them: without a mode, `prefer`; with
/// `sslrootcert=system`, the system's roots, and then only `verify-full`
/// (its default there; a weaker mode is refused, as libpq 16 does).
pub(crate) fn settle_tls(
    mode: Option<SslMode>,
    root_cert: Option<PathBuf>,
) -> Result<(SslMode, Option<PathBuf>), ConnectError> {
    if root_cert.as_deref() != Some(Path::new("system")) {
        return Ok((mode.unwrap_or_default(), root_cert));
    }
    match mode.unwrap_or(SslMode::VerifyFull) {
        SslMode::VerifyFull => Ok((SslMode::VerifyFull, None)),
        weaker => Err(ConnectError::InvalidUrl {
            reason: format!(
                "sslmode={weaker} may not be used with sslrootcert=system: use verify-full"
            ),
        }),
    }
}

impl ParsedUrl {}

/// The URL among the environment's variables, as `var` reads them:
/// `KCK_DATABASE_URL`, else `DATABASE_URL`; an empty one counts as unset.
pub(crate) fn database_url(var: impl Fn(&str) -> Option<String>) -> Result<String, ConnectError> {
    ["KCK_DATABASE_URL", "DATABASE_URL"]
        .into_iter()
        .find_map(|name| var(name).filter(|url| !url.is_empty()))
        .ok_or(ConnectError::MissingUrl)
}

/// The URL with its password, if any, replaced by `***`: in the user
/// part (`user:secret@host`) and as a `password` parameter.
pub(crate) fn redact_url(url: &str) -> String {
    // Not a URL: nothing in it can be told from a secret.
    let Some(parts) = UrlParts::split(url) else {
        return "***".to_owned();
    };
    let mut out = format!("{}://", parts.scheme);
    if let Some(credentials) = parts.credentials {
        match credentials.split_once(':') {
            Some((user, _secret)) => out.push_str(&format!("{user}:***@")),
            None => out.push_str(&format!("{credentials}@")),
        }
    }
    out.push_str(parts.rest);
    if let Some(query) = parts.query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if decode(key).is_ok_and(|key| key == "password") => {
                    format!("{key}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// A `postgres://` URL cut as tokio-postgres cuts it: the credentials
/// run to the first `@` (a password may hold `/`, `?` or `:`), the query
/// starts at the first `?` after them.
struct UrlParts<'a> {
    scheme: &'a str,
    credentials: Option<&'a str>,
    /// Hosts, ports and database.
    rest: &'a str,
    query: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> Option<UrlParts<'a>> {
        let scheme = ["postgres", "postgresql"].into_iter().find(|scheme| {
            url.strip_prefix(scheme)
                .is_some_and(|rest| rest.starts_with("://"))
        })?;
        let after = &url[scheme.len() + 3..];
        let (credentials, after) = match after.split_once('@') {
            Some((credentials, after)) => (Some(credentials), after),
            None => (None, after),
        };
        let (rest, query) = match after.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (after, None),
        };
        Some(UrlParts {
            scheme,
            credentials,
            rest,
            query,
        })
    }

    /// The URL without its query.
    fn base(&self) -> String {
        match self.credentials {
            Some(credentials) => format!("{}://{credentials}@{}", self.scheme, self.rest),
            None => format!("{}://{}", self.scheme, self.rest),
        }
    }
}

fn decode(text: &str) -> Result<String, ConnectError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| ConnectError::InvalidUrl {
            reason: "a query parameter is not UTF-8 once decoded".into(),
        })
}

/// Where and how to connect: every connection kck opens to one server
/// comes from here, so all of them use the same TLS and session.
#[derive(Clone)]
pub(crate) struct Target {
    config: Config,
    tls: Option<MakeRustlsConnect>,
    server: Arc<str>,
    schema: Option<Schema>,
    statement_timeout: Option<Duration>,
}

/// The PostgreSQL schema kck's tables live in, when not the connection's
/// default: a plain lower-case identifier, so that it needs no quoting and
/// the channel names made from it stay within PostgreSQL's 63 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Schema(Arc<str>);

impl Schema {
    pub(crate) fn new(name: &str) -> Result<Schema, ConnectError> {
        let invalid = |reason: &str| ConnectError::InvalidSchema {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        if name.is_empty() || name.len() > 48 {
            return Err(invalid("it must have 1 to 48 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            || name.as_bytes()[0].is_ascii_digit()
        {
            return Err(invalid(
                "it must be lower-case ASCII letters, digits and underscores, not starting with a digit",
            ));
        }
        if name.starts_with("pg_") {
            return Err(invalid("names starting with pg_ are PostgreSQL's"));
        }
        Ok(Schema(name.into()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("server", &self.server)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Prepares connections with `config` (whose own `ssl_mode` is
    /// replaced), TLS as `mode` says.
    pub(crate) fn new(
        mut config: Config,
        mode: SslMode,
        root_cert: Option<&Path>,
    ) -> Result<Target, ConnectError> {
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        let server = describe(&config);
        let tls = match mode {
            SslMode::Disable => None,
            mode => Some(MakeRustlsConnect::new(client_config(
                mode, root_cert, &server,
            )?)),
        };
        Ok(Target {
            config,
            tls,
            server: server.into(),
            schema: None,
            statement_timeout: None,
        })
    }

    /// Connections put kck's tables in `schema` (and use channels of its
    /// own), and stop statements after `statement_timeout`. Set once
    /// connected (`SET`), not as startup options, which connection poolers
    /// such as PgBouncer refuse.
    pub(crate) fn with_session(
        mut self,
        schema: Option<Schema>,
        statement_timeout: Option<Duration>,
    ) -> Target {
        self.schema = schema;
        self.statement_timeout = statement_timeout;
        self
    }

    /// The same target without a statement time-out: for migrations,
    /// which may rewrite a large table.
    pub(crate) fn without_statement_timeout(&self) -> Target {
        let mut target = self.clone();
        target.statement_timeout = None;
        target
    }

    pub(crate) fn schema(&self) -> Option<&Schema> {
        self.schema.as_ref()
    }

    /// The name of one of kck's channels: `base`, or `base.schema` with a
    /// schema of its own, so that two applications on one database do not
    /// hear each other. The SQL that notifies builds the same name from
    /// the `kck.channel_suffix` setting of the session.
    pub(crate) fn channel(&self, base: &str) -> String {
        match &self.schema {
            Some(schema) => format!("{base}.{}", schema.as_str()),
            None => base.to_owned(),
        }
    }

    /// What a new connection runs before it is used.
    fn session_sql(&self) -> String {
        let mut sql = String::new();
        if let Some(schema) = &self.schema {
            let schema = schema.as_str();
            sql.push_str(&format!(
                "SET search_path TO {schema}; SET kck.channel_suffix TO '.{schema}';"
            ));
        }
        if let Some(timeout) = self.statement_timeout {
            sql.push_str(&format!(
                "SET statement_timeout TO {};",
                timeout.as_millis().max(1)
            ));
        }
        sql
    }

    /// `host:port/database`, for messages: never the user or password.
    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    /// Opens a connection, within `timeout`.
    pub(crate) async fn connect(
        &self,
        timeout: Duration,
    ) -> Result<AsyncPgConnection, ConnectError> {
        let attempt = async {
            match &self.tls {
                None => establish(&self.config, tokio_postgres::NoTls).await,
                Some(tls) => establish(&self.config, tls.clone()).await,
            }
        };
        let session = self.session_sql();
        let attempt = async {
            let mut conn = attempt.await?;
            if !session.is_empty() {
                conn.batch_execute(&session)
                    .await
                    .map_err(Failure::Session)?;
            }
            Ok(conn)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(Failure::Session(error))) => Err(ConnectError::Setup {
                server: self.server.to_string(),
                source: crate::convert::query_error(error),
            }),
            Ok(Err(Failure::Postgres(error))) => Err(self.classify(error)),
            Ok(Err(Failure::Setup(error))) => Err(ConnectError::Unreachable {
                server: self.server.to_string(),
                source: error.into(),
            }),
            Err(_) => Err(ConnectError::Timeout {
                server: self.server.to_string(),
                after: timeout,
            }),
        }
    }

    fn classify(&self, error: tokio_postgres::Error) -> ConnectError {
        let server = self.server.to_string();
        if let Some(cause) = tls_failure(&error) {
            ConnectError::Tls { server, cause }
        } else if let Some(db) = error.as_db_error() {
            ConnectError::Refused {
                server,
                sqlstate: db.code().code().to_owned(),
                source: error.into(),
            }
        } else {
            ConnectError::Unreachable {
                server,
                source: error.into(),
            }
        }
    }
}

enum Failure {
    Postgres(tokio_postgres::Error),
    Setup(diesel::ConnectionError),
    Session(diesel::result::Error),
}

async fn establish<T>(config: &Config, tls: T) -> Result<AsyncPgConnection, Failure>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: tokio_postgres::tls::TlsStream + Unpin + Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, connection) = config.connect(tls).await.map_err(Failure::Postgres)?;
    AsyncPgConnection::try_from_client_and_connection(client, connection)
        .await
        .map_err(Failure::Setup)
}

/// What went wrong with TLS, if that is what went wrong.
fn tls_failure(error: &tokio_postgres::Error) -> Option<TlsFailure> {
    let mut next: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(cause) = next {
        let rustls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(error) = rustls {
            return Some(match error {
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => TlsFailure::WrongHostName,
                rustls::Error::InvalidCertificate(_) => {
                    TlsFailure::UntrustedCertificate(error.to_string())
                }
                error => TlsFailure::Handshake(error.to_string()),
            });
        }
        next = cause.source();
    }
    // tokio-postgres's words when the server declines TLS and the mode
    // requires it; its error kinds are private (pinned by a test).
    causes(error)
        .contains("server does not support TLS")
        .then_some(TlsFailure::NotOffered)
}

/// An error and its causes, `: `-separated: tokio-postgres's own messages
/// say only what it was doing ("error connecting to server"), their
/// causes say why.
fn causes(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}

/// `host:port/database` of a configuration.
fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => config
            .get_hostaddrs()
            .first()
            .map_or_else(|| "localhost".to_owned(), ToString::to_string),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{database}")
}

/// rustls's configuration for a mode other than `disable`.
fn client_config(
    mode: SslMode,
    root_cert: Option<&Path>,
    server: &str,
) -> Result<ClientConfig, ConnectError> {
    let rustls_error = |error: rustls::Error| ConnectError::Tls {
        server: server.to_owned(),
        cause: TlsFailure::Handshake(error.to_string()),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, root_cert) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => {
            Arc::new(AnyCertificate(algorithms))
        }
        (SslMode::Require | SslMode::VerifyCa, _) => {
            let roots = roots(mode, root_cert)?;
            Arc::new(ChainOnly(webpki(roots, &provider).map_err(rustls_error)?))
        }
        (SslMode::VerifyFull, _) => {
            webpki(roots(mode, root_cert)?, &provider).map_err(rustls_error)?
        }
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// rustls's standard verifier.
fn webpki(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|error| rustls::Error::General(error.to_string()))
}

/// The certificates a mode trusts: the CA file's, or the system's.
fn roots(mode: SslMode, root_cert: Option<&Path>) -> Result<RootCertStore, ConnectError> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let ca_file = |reason: String| ConnectError::CaFile {
                path: path.to_owned(),
                reason,
            };
            let certificates = CertificateDer::pem_file_iter(path)
                .map_err(|error| ca_file(error.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| ca_file(error.to_string()))?;
            let (added, _) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(ca_file("it holds no usable PEM certificate".into()));
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                return Err(ConnectError::NoRootCertificates { mode });
            }
        }
    }
    Ok(roots)
}

/// `prefer`, and `require` without a CA file: encryption without
/// authentication, as libpq. The handshake's signatures are still checked,
/// so the session is bound to the certificate presented.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: the chain must reach a trusted CA; the names in the
/// certificate are not compared with the host. rustls checks the chain
/// before the name, so a name mismatch means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_error(url: &str) -> ConnectError {
        match ParsedUrl::parse(url) {
            Ok(parsed) => panic!("{url} parsed: {parsed:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn takes_sslmode_and_sslrootcert_out_of_the_url() {
        let parsed = ParsedUrl::parse(
            "postgres://kck:pw@db.internal:6432/reports?sslmode=verify-full\
             &application_name=reports&sslrootcert=%2Fetc%2Fca%20file.pem",
        )
        .unwrap();
        assert_eq!(parsed.ssl_mode, Some(SslMode::VerifyFull));
        assert_eq!(
            parsed.ssl_root_cert,
            Some(PathBuf::from("/etc/ca file.pem"))
        );
        assert_eq!(parsed.config.get_application_name(), Some("reports"));
        assert_eq!(describe(&parsed.config), "db.internal:6432/reports");

        let plain = ParsedUrl::parse("postgresql://localhost/test").unwrap();
        assert_eq!((plain.ssl_mode, plain.ssl_root_cert), (None, None));
        let system = ParsedUrl::parse("postgres://h/d?sslrootcert=system").unwrap();
        assert_eq!(
            settle_tls(system.ssl_mode, system.ssl_root_cert).unwrap(),
            (SslMode::VerifyFull, None),
            "system roots, and verify-full by default"
        );
        assert!(matches!(
            settle_tls(Some(SslMode::Require), Some(PathBuf::from("system"))),
            Err(ConnectError::InvalidUrl { .. })
        ));
        assert_eq!(
            settle_tls(None, Some(PathBuf::from("/ca.pem"))).unwrap(),
            (SslMode::Prefer, Some(PathBuf::from("/ca.pem")))
        );
    }

    #[test]
    fn every_libpq_mode_reads_and_prints_back() {
        for mode in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert_eq!(mode.as_str().parse::<SslMode>().unwrap(), mode);
        }
        assert_eq!(SslMode::default(), SslMode::Prefer);
    }

    #[test]
    fn bad_urls_are_typed_errors() {
        assert!(matches!(
            parse_error("postgres://h/d?sslmode=verify-everything"),
            ConnectError::UnknownSslMode { value } if value == "verify-everything"
        ));
        assert!(matches!(
            parse_error("host=localhost user=kck"),
            ConnectError::InvalidUrl { .. }
        ));
        assert!(matches!(
            parse_error("postgres://kck:pw@h:notaport/d"),
            ConnectError::InvalidUrl { .. }
        ));
        assert!(matches!(
            parse_error("postgres://h/d?sslcert=/client.pem"),
            ConnectError::UnsupportedOption { option } if option == "sslcert"
        ));
        assert!(matches!(
            parse_error("postgres://h/d?sslmode=%FF"),
            ConnectError::InvalidUrl { .. }
        ));
    }

    #[test]
    fn an_unreadable_ca_file_is_a_typed_error() {
        let config = ParsedUrl::parse("postgres://h/d").unwrap().config;
        let missing = Path::new("/nonexistent/kck-ca.pem");
        for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            let error = Target::new(config.clone(), mode, Some(missing)).unwrap_err();
            assert!(
                matches!(&error, ConnectError::CaFile { path, .. } if path == missing),
                "{error}"
            );
        }
        // A file that holds no certificate.
        let empty = std::env::temp_dir().join(format!("kck-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = Target::new(config.clone(), SslMode::VerifyFull, Some(&empty)).unwrap_err();
        std::fs::remove_file(&empty).unwrap();
        assert!(matches!(error, ConnectError::CaFile { .. }), "{error}");
        // Modes that do not check certificates do not read it.
        Target::new(config.clone(), SslMode::Prefer, Some(missing)).unwrap();
        Target::new(config, SslMode::Disable, Some(missing)).unwrap();
    }

    #[test]
    fn a_server_that_may_say_yes_later_is_a_transient_failure() {
        let refused = |sqlstate: &str| ConnectError::Refused {
            server: "db:5432/app".into(),
            sqlstate: sqlstate.into(),
            source: "refused".into(),
        };
        for later in ["57P03", "53300", "08006", "57P01"] {
            assert!(refused(later).is_transient(), "{later}");
        }
        for never in ["28P01", "3D000", "28000"] {
            assert!(!refused(never).is_transient(), "{never}");
        }
        let setup = |source: StoreError| ConnectError::Setup {
            server: "db:5432/app".into(),
            source,
        };
        assert!(setup(StoreError::unavailable("timed out migrating")).is_transient());
        assert!(!setup(StoreError::backend("a migration failed")).is_transient());
        assert!(StoreError::from(refused("57P03")).is_transient());
    }

    #[test]
    fn the_url_comes_from_kck_database_url_then_database_url() {
        fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
            move |name| {
                vars.iter()
                    .find(|(var, _)| *var == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        }
        let both = [
            ("KCK_DATABASE_URL", "postgres://kck/a"),
            ("DATABASE_URL", "postgres://app/b"),
        ];
        assert_eq!(database_url(env(&both)).unwrap(), "postgres://kck/a");
        let fallback = [
            ("KCK_DATABASE_URL", ""),
            ("DATABASE_URL", "postgres://app/b"),
        ];
        assert_eq!(database_url(env(&fallback)).unwrap(), "postgres://app/b");
        assert!(matches!(
            database_url(env(&[])),
            Err(ConnectError::MissingUrl)
        ));
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["reports", "app_2", "_kck"] {
            assert_eq!(Schema::new(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "Reports",
            "2app",
            "app-a",
            "a b",
            "pg_kck",
            "x\"; DROP",
            &"s".repeat(49),
        ] {
            assert!(
                matches!(Schema::new(bad), Err(ConnectError::InvalidSchema { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_schema_has_channels_of_its_own() {
        let config = ParsedUrl::parse("postgres://h/d").unwrap().config;
        let plain = Target::new(config, SslMode::Disable, None).unwrap();
        assert_eq!(plain.channel("kck_changes"), "kck_changes");
        assert_eq!(plain.session_sql(), "");
        let own = plain.clone().with_session(
            Some(Schema::new("reports").unwrap()),
            Some(Duration::from_secs(3)),
        );
        assert_eq!(own.channel("kck_changes"), "kck_changes.reports");
        assert!(own.session_sql().contains("SET statement_timeout TO 3000;"));
        assert!(
            !own.without_statement_timeout()
                .session_sql()
                .contains("statement_timeout")
        );
    }

    #[test]
    fn no_password_is_shown() {
        let url =
            "postgres://kck:hunter2@db.internal:5432/reports?password=hunter2&sslmode=require";
        assert_eq!(
            redact_url(url),
            "postgres://kck:***@db.internal:5432/reports?password=***&sslmode=require"
        );
        assert_eq!(redact_url("postgres://db/reports"), "postgres://db/reports");
        // A password with `/`, `?`, `:` or `@`-free oddities: tokio-postgres
        // reads credentials to the first `@`, and so does the redaction.
        for (url, shown) in [
            (
                "postgres://kck:ab/hunter2@db/app",
                "postgres://kck:***@db/app",
            ),
            (
                "postgres://kck:ab?hunter2@db/app",
                "postgres://kck:***@db/app",
            ),
            (
                "postgres://kck:a:hunter2@db/app?sslmode=require",
                "postgres://kck:***@db/app?sslmode=require",
            ),
        ] {
            assert_eq!(redact_url(url), shown);
            let parsed = ParsedUrl::parse(url).unwrap();
            assert!(!format!("{parsed:?}").contains("hunter2"), "{parsed:?}");
            assert_eq!(parsed.config.get_user(), Some("kck"));
        }
        let parsed =
            ParsedUrl::parse("postgres://kck:ab?hunter2@db/app?sslmode=verify-full").unwrap();
        assert_eq!(parsed.ssl_mode, Some(SslMode::VerifyFull));
        assert_eq!(parsed.config.get_password(), Some(&b"ab?hunter2"[..]));
        assert_eq!(redact_url("host=db password=hunter2"), "***");
        let target = Target::new(
            ParsedUrl::parse(url).unwrap().config,
            SslMode::Require,
            None,
        )
        .unwrap();
        assert!(!format!("{target:?}").contains("hunter2"));
        assert_eq!(target.server(), "db.internal:5432/reports");
        // tokio-postgres's parse errors name the option, not its value.
        let error = parse_error("postgres://kck:hunter2@db/reports?port=hunter2");
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(!format!("{error:?}").contains("hunter2"), "{error:?}");
    }
}
