//! Between kck's types and PostgreSQL's: timestamps, rows and errors.

use std::time::Duration;

use diesel::pg::data_types::PgTimestamp;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use kck_core::Key;
use kck_core::clock::Timestamp;
use kck_core::storage::{
    ContentHash, Edge, EntryError, EntryMeta, JobDelta, StoreError, StoredEntry, Version,
};

use crate::sql::{EdgeRow, EntryRow};
use crate::statement::Bind;

/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

pub(crate) fn to_pg(time: Timestamp) -> PgTimestamp {
    PgTimestamp(time.as_unix_micros().saturating_sub(PG_EPOCH_MICROS))
}

pub(crate) fn from_pg(time: PgTimestamp) -> Timestamp {
    Timestamp::from_unix_micros(time.0.saturating_add(PG_EPOCH_MICROS))
}

pub(crate) fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

impl EntryRow {
    /// The stored entry, or [`StoreError::Corrupt`] if a column holds what
    /// kck never writes.
    pub(crate) fn into_entry(self) -> Result<StoredEntry, StoreError> {
        let key = parse_key(&self.key)?;
        let hash: [u8; 16] = self
            .content_hash
            .as_slice()
            .try_into()
            .map_err(|_| corrupt(&self.key, "the content hash is not 16 bytes"))?;
        let last_error = match (self.error_message, self.error_at) {
            (Some(message), Some(at)) => Some(EntryError {
                message,
                at: from_pg(at),
                attempts: u32::try_from(self.error_attempts).unwrap_or(0),
            }),
            _ => None,
        };
        Ok(StoredEntry {
            key,
            version: Version(self.version),
            value: self.value.into_bytes(),
            meta: EntryMeta {
                computed_at: from_pg(self.computed_at),
                changed_at: from_pg(self.changed_at),
                stale_at: self.stale_at.map(from_pg),
                refresh_at: self.refresh_at.map(from_pg),
                expires_at: self.expires_at.map(from_pg),
                content_hash: ContentHash(hash),
                code_version: self.code_version,
                compute_duration: Duration::from_micros(self.compute_micros.unsigned_abs()),
                last_error,
                read_at: self.read_at.map(from_pg),
            },
        })
    }
}

/// Deltas as stored with a job: a JSON array of `{"from", "before",
/// "after", "delta"}`.
pub(crate) fn deltas_to_json(key: &Key, deltas: &[JobDelta]) -> Result<String, StoreError> {
    let items = deltas
        .iter()
        .map(|delta| {
            let value: serde_json::Value = serde_json::from_slice(&delta.delta)
                .map_err(|error| corrupt(key.as_str(), format!("a delta is not JSON: {error}")))?;
            Ok(serde_json::json!({
                "from": delta.from.as_str(),
                "before": delta.before.to_string(),
                "after": delta.after.to_string(),
                "delta": value,
            }))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(serde_json::Value::Array(items).to_string())
}

/// Reads what [`deltas_to_json`] wrote.
pub(crate) fn deltas_from_json(key: &str, text: &str) -> Result<Vec<JobDelta>, StoreError> {
    let bad = |reason: &str| corrupt(key, format!("unreadable job deltas: {reason}"));
    let serde_json::Value::Array(items) =
        serde_json::from_str(text).map_err(|error| bad(&error.to_string()))?
    else {
        return Err(bad("not an array"));
    };
    items
        .iter()
        .map(|item| {
            let text = |field: &str| {
                item.get(field)
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| bad(&format!("no `{field}`")))
            };
            let hash = |field: &str| {
                text(field).and_then(|hex| {
                    parse_hash(hex).ok_or_else(|| bad(&format!("`{field}` is not a hash")))
                })
            };
            Ok(JobDelta {
                from: parse_key(text("from")?)?,
                before: hash("before")?,
                after: hash("after")?,
                delta: serde_json::to_vec(item.get("delta").ok_or_else(|| bad("no `delta`"))?)
                    .map_err(|error| bad(&error.to_string()))?,
            })
        })
        .collect()
}

/// A content hash from its 32 hex digits.
fn parse_hash(hex: &str) -> Option<ContentHash> {
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(ContentHash(bytes))
}

/// A store error for a row that kck cannot read back.
pub(crate) fn corrupt(key: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        reason: reason.to_string(),
    }
}

/// A key read back from the database.
pub(crate) fn parse_key(key: &str) -> Result<Key, StoreError> {
    Key::parse(key).map_err(|e| corrupt(key, e))
}

impl EdgeRow {
    pub(crate) fn into_edge(self) -> Result<Edge, StoreError> {
        let key = parse_key(&self.key)?;
        let seen = match &self.seen {
            Some(bytes) => {
                Some(ContentHash(bytes.as_slice().try_into().map_err(|_| {
                    corrupt(&self.key, "a seen hash is not 16 bytes")
                })?))
            }
            None => None,
        };
        Ok(Edge::new(key, seen))
    }
}

/// A query's error: transient when the database cannot be reached or is
/// going away (diesel does not expose the SQLSTATE, so a shutdown is told by
/// its message), permanent otherwise.
pub(crate) fn query_error(error: DieselError) -> StoreError {
    let transient = match &error {
        DieselError::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::UnableToSendCommand
            | DatabaseErrorKind::SerializationFailure => true,
            _ => {
                let message = info.message();
                message.contains("terminating connection")
                    || message.contains("shutting down")
                    || message.contains("starting up")
                    || message.contains("connection")
            }
        },
        DieselError::BrokenTransactionManager => true,
        _ => false,
    };
    if transient {
        StoreError::unavailable(error)
    } else {
        StoreError::backend(error)
    }
}

/// A pool's error: the database cannot be reached (or the pool is
/// exhausted).
pub(crate) fn pool_error(error: diesel_async::pooled_connection::bb8::RunError) -> StoreError {
    StoreError::unavailable(error)
}

/// A key as a text bind.
pub(crate) fn key_bind(key: &Key) -> Bind {
    Bind::Text(key.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_postgres_epoch() {
        let t = Timestamp::from_unix_micros(1_767_225_600_123_456);
        assert_eq!(from_pg(to_pg(t)), t);
        assert_eq!(to_pg(Timestamp::from_unix_micros(PG_EPOCH_MICROS)).0, 0);
    }
}
