//! Who may use the API: bearer tokens and their scopes, from code or from
//! the environment.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The environment variable [`AdminConfig::from_env`] reads tokens from:
/// comma-separated `scope:secret` pairs, such as
/// `read:3f9c…,admin:b71e…`.
pub const TOKENS_ENV: &str = "KCK_ADMIN_TOKENS";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Look: every `GET`.
    Read,
    /// Look and act: refresh, invalidate and remove products, retry and
    /// cancel jobs.
    Admin,
}

impl Scope {
    /// `read` or `admin`.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// How the router is configured: its tokens, or none at all when
/// explicitly allowed, and the largest request body it accepts.
///
/// `Debug` shows each token's scope, never its secret.
///
/// ```
/// use kck_admin::{AdminConfig, Scope};
///
/// let config = AdminConfig::new()
///     .token(Scope::Read, "a-long-random-read-secret")
///     .token(Scope::Admin, "another-long-random-secret");
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct AdminConfig {
    tokens: Vec<Token>,
    insecure_no_auth: bool,
    body_limit: usize,
}

/// A token, kept as the SHA-256 of its secret: requests are checked by
/// comparing hashes in constant time, so neither the secret's bytes nor its
/// length leak through timing.
#[derive(Clone)]
struct Token {
    scope: Scope,
    digest: [u8; 32],
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// A configuration that cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No token is configured, and serving without auth was not asked for
    /// ([`AdminConfig::insecure_no_auth`]).
    #[error(
        "kck-admin has no token: configure at least one (KCK_ADMIN_TOKENS=\"admin:<secret>\"), \
         or call AdminConfig::insecure_no_auth() to serve without auth on loopback only"
    )]
    NoTokens,
    /// An entry of [`TOKENS_ENV`] is not `scope:secret`. The entry itself
    /// is not repeated: it may hold a secret.
    #[error(
        "entry {position} of {TOKENS_ENV} is not `read:<secret>` or `admin:<secret>`: {reason}"
    )]
    MalformedToken {
        /// Its position, from 1.
        position: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// [`TOKENS_ENV`] is not valid Unicode.
    #[error("{TOKENS_ENV} is not valid Unicode")]
    NotUnicode,
}

impl AdminConfig {
    /// The smallest secret accepted, in bytes.
    pub const MIN_SECRET_LEN: usize = 16;

    /// The default largest request body: 64 KiB.
    pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

    /// No token yet: add some with [`AdminConfig::token`] (or
    /// [`AdminConfig::from_env`]), or allow serving without auth.
    pub fn new() -> Self {
        AdminConfig {
            tokens: Vec::new(),
            insecure_no_auth: false,
            body_limit: Self::DEFAULT_BODY_LIMIT,
        }
    }

    /// The tokens of [`TOKENS_ENV`], if it is set.
    ///
    /// # Errors
    ///
    /// [`ConfigError::MalformedToken`] for an entry that is not
    /// `scope:secret` with a known scope and a secret of at least
    /// [`AdminConfig::MIN_SECRET_LEN`] bytes; [`ConfigError::NotUnicode`].
    pub fn from_env() -> Result<Self, ConfigError> {
        match std::env::var(TOKENS_ENV) {
            Ok(text) => AdminConfig::new().tokens_from(&text),
            Err(std::env::VarError::NotPresent) => Ok(AdminConfig::new()),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::NotUnicode),
        }
    }

    /// Adds the tokens of `text`, written as [`TOKENS_ENV`] is.
    ///
    /// # Errors
    ///
    /// As [`AdminConfig::from_env`].
    pub fn tokens_from(mut self, text: &str) -> Result<Self, ConfigError> {
        let entries = text.split(',').map(str::trim).filter(|e| !e.is_empty());
        for (index, entry) in entries.enumerate() {
            let malformed = |reason| ConfigError::MalformedToken {
                position: index + 1,
                reason,
            };
            let (scope, secret) = entry
                .split_once(':')
                .ok_or_else(|| malformed("no `:` between the scope and the secret"))?;
            let scope = match scope.trim() {
                "read" => Scope::Read,
                "admin" => Scope::Admin,
                _ => return Err(malformed("the scope is neither `read` nor `admin`")),
            };
            if secret.len() < Self::MIN_SECRET_LEN {
                return Err(malformed("the secret is shorter than 16 bytes"));
            }
            self = self.token(scope, secret);
        }
        Ok(self)
    }

    /// Accepts requests bearing `secret`, for `scope`. Use long random
    /// secrets (at least [`AdminConfig::MIN_SECRET_LEN`] bytes; shorter
    /// ones are accepted from code, not from the environment).
    #[must_use]
    pub fn token(mut self, scope: Scope, secret: impl AsRef<[u8]>) -> Self {
        self.tokens.push(Token {
            scope,
            digest: digest(secret.as_ref()),
        });
        self
    }

    /// Serves without any auth: every request may read and act. Meant for
    /// a developer's machine: [`serve`](crate::serve) then binds loopback
    /// addresses only.
    #[must_use]
    pub fn insecure_no_auth(mut self) -> Self {
        self.insecure_no_auth = true;
        self
    }

    /// Refuses requests whose `Content-Length` is over `bytes` (413). No
    /// route reads a body, so one sent without a length is never read.
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Whether it has any token.
    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Whether it serves without auth.
    pub fn is_insecure(&self) -> bool {
        self.insecure_no_auth && self.tokens.is_empty()
    }

    pub(crate) fn max_body(&self) -> usize {
        self.body_limit
    }

    /// Checks that the configuration can serve.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.tokens.is_empty() && !self.insecure_no_auth {
            return Err(ConfigError::NoTokens);
        }
        Ok(())
    }

    /// The scope of the token `secret`, if it is one of ours. Compares
    /// with every token, in constant time each.
    pub(crate) fn scope_of(&self, secret: &[u8]) -> Option<Scope> {
        let presented = digest(secret);
        let mut granted = None;
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&presented)) {
                granted = granted.max(Some(token.scope));
            }
        }
        granted
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig::new()
    }
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scopes: Vec<&str> = self.tokens.iter().map(|t| t.scope.name()).collect();
        f.debug_struct("AdminConfig")
            .field("tokens", &scopes)
            .field("insecure_no_auth", &self.insecure_no_auth)
            .field("body_limit", &self.body_limit)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_from_the_environment_form() {
        let config = AdminConfig::new()
            .tokens_from("read:0123456789abcdef0123, admin:fedcba9876543210fedc")
            .unwrap();
        assert_eq!(config.scope_of(b"0123456789abcdef0123"), Some(Scope::Read));
        assert_eq!(config.scope_of(b"fedcba9876543210fedc"), Some(Scope::Admin));
        assert_eq!(config.scope_of(b"0123456789abcdef012"), None);
        assert_eq!(config.scope_of(b""), None);
    }

    #[test]
    fn malformed_tokens_are_refused_without_repeating_them() {
        for (text, position) in [
            ("read", 1),
            ("read:0123456789abcdef,owner:0123456789abcdef", 2),
            ("admin:tinyvalue", 1),
        ] {
            let error = AdminConfig::new().tokens_from(text).unwrap_err();
            let ConfigError::MalformedToken { position: at, .. } = &error else {
                panic!("{error:?}");
            };
            assert_eq!(*at, position, "{text}");
            for secret in ["0123456789abcdef", "tinyvalue", "owner"] {
                assert!(!error.to_string().contains(secret), "{error}");
            }
        }
    }

    #[test]
    fn debug_shows_scopes_never_secrets() {
        let config = AdminConfig::new().token(Scope::Admin, "very-secret-value-123");
        let shown = format!("{config:?}");
        assert!(shown.contains("admin"), "{shown}");
        assert!(!shown.contains("very-secret"), "{shown}");
    }

    #[test]
    fn a_config_without_tokens_serves_only_when_told_to() {
        assert_eq!(AdminConfig::new().check(), Err(ConfigError::NoTokens));
        assert_eq!(AdminConfig::new().insecure_no_auth().check(), Ok(()));
    }
}
