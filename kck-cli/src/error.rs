//! What a command fails with, and the exit code a script sees.

use std::process::ExitCode;

use kck_core::Error;
use kck_core::storage::StoreError;
use kck_diesel::ConnectError;

/// Why a command failed. Each kind has its exit code ([`CliError::code`]),
/// so that a script can tell "not there" from "cannot ask".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// What was asked for is not there: no such product or job, a product
    /// that is not stored and that its primer does not compute on a miss,
    /// or no kck tables at all in the database a command that only looks
    /// was given. Exit code 1.
    #[error("{0}")]
    NotFound(String),
    /// The command cannot be run as given: a malformed key, an unknown
    /// primer, a bad flag value, a dump file that is not one, a database URL
    /// that cannot be right. Exit code 2, as clap's own usage errors.
    #[error("{0}")]
    BadInput(String),
    /// The store cannot be reached: refused, unreachable, timed out, TLS
    /// failed. Trying again later may work. Exit code 3.
    #[error("{0}")]
    Unreachable(String),
    /// The command ran and failed: a computation failed or panicked, the
    /// store refused a write, a job could not be settled. Exit code 4.
    #[error("{0}")]
    Failed(String),
    /// Stopped by a signal (Ctrl-C, SIGTERM) before it was done; what it
    /// did so far is kept, and saying so is its message. Exit code 130.
    #[error("{0}")]
    Interrupted(String),
}

impl CliError {
    /// The process's exit code: 1 not found, 2 bad input, 3 store
    /// unreachable, 4 failed, 130 interrupted (0 is success).
    pub fn code(&self) -> u8 {
        match self {
            CliError::NotFound(_) => 1,
            CliError::BadInput(_) => 2,
            CliError::Unreachable(_) => 3,
            CliError::Failed(_) => 4,
            CliError::Interrupted(_) => 130,
        }
    }

    /// [`CliError::code`] as an [`ExitCode`].
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

impl From<Error> for CliError {
    fn from(error: Error) -> Self {
        match &error {
            Error::InvalidKey(_) | Error::UnknownPrimer { .. } => {
                CliError::BadInput(error.to_string())
            }
            Error::NotPrimed { .. } => CliError::NotFound(error.to_string()),
            Error::Store(store) => CliError::from_store(store, &error),
            _ => CliError::Failed(error.to_string()),
        }
    }
}

impl From<StoreError> for CliError {
    fn from(error: StoreError) -> Self {
        CliError::from_store(&error, &error)
    }
}

impl CliError {
    fn from_store(store: &StoreError, shown: &dyn std::fmt::Display) -> Self {
        if store.is_transient() {
            CliError::Unreachable(shown.to_string())
        } else {
            CliError::Failed(shown.to_string())
        }
    }
}

impl From<ConnectError> for CliError {
    fn from(error: ConnectError) -> Self {
        match error {
            ConnectError::InvalidUrl { .. }
            | ConnectError::UnknownSslMode { .. }
            | ConnectError::UnsupportedOption { .. }
            | ConnectError::CaFile { .. }
            | ConnectError::NoRootCertificates { .. }
            | ConnectError::MissingUrl
            | ConnectError::InvalidSchema { .. } => CliError::BadInput(error.to_string()),
            ConnectError::NoSchema { .. } => CliError::NotFound(error.to_string()),
            ConnectError::SchemaOutdated { .. } => CliError::Failed(error.to_string()),
            _ => CliError::Unreachable(error.to_string()),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        CliError::Failed(error.to_string())
    }
}
