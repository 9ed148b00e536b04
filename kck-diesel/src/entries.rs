//! The entries port on PostgreSQL: `kck_entries` and `kck_edges`; a
//! save also queues its dependents' refreshes in `kck_jobs`, in the same
//! statement.

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::bb8::Pool;
use futures_util::future::BoxFuture;
use kck_core::Key;
use kck_core::storage::{
    ContentHash, Edge, Entry, EntryPatch, EntryStore, Expect, JobDelta, Saved, StoreError,
    StoredEntry, Version,
};

use crate::convert::{deltas_to_json, key_bind as text, micros, to_pg};
use crate::sql::{
    ContentHashes, Dependencies, Dependents, EdgeRow, EntryRow, LoadEntry, PatchEntry, RemoveEntry,
    RemoveRow, SaveAbsent, SaveAny, SaveOver, WriteRow,
};
use crate::statement::{Bind, Sql};
use crate::store::{PgStore, run_on};

/// The 14 binds of an entry's columns after its key (the last is its read
/// time).
fn entry_binds(entry: &Entry) -> Result<Vec<Bind>, StoreError> {
    let meta = &entry.meta;
    let value = String::from_utf8(entry.value.clone()).map_err(StoreError::backend)?;
    let error = meta.last_error.as_ref();
    Ok(vec![
        Bind::Text(entry.key.primer().to_owned()),
        Bind::Text(value),
        Bind::Time(to_pg(meta.computed_at)),
        Bind::Time(to_pg(meta.changed_at)),
        Bind::OptTime(meta.stale_at.map(to_pg)),
        Bind::OptTime(meta.refresh_at.map(to_pg)),
        Bind::OptTime(meta.expires_at.map(to_pg)),
        Bind::Bytes(meta.content_hash.0.to_vec()),
        Bind::Text(meta.code_version.clone()),
        Bind::BigInt(micros(meta.compute_duration)),
        Bind::OptText(error.map(|e| e.message.clone())),
        Bind::OptTime(error.map(|e| to_pg(e.at))),
        Bind::Int(error.map_or(0, |e| i32::try_from(e.attempts).unwrap_or(i32::MAX))),
        Bind::OptTime(meta.read_at.map(to_pg)),
    ])
}

fn saved(row: &WriteRow) -> Saved {
    match row.written {
        Some(version) => Saved::Written(Version(version)),
        None => Saved::Conflict {
            current: row.current.map(Version),
        },
    }
}

/// The entry of `key`, from a connection of `pool`.
async fn load_on(
    pool: &Pool<AsyncPgConnection>,
    key: &Key,
) -> Result<Option<StoredEntry>, StoreError> {
    let rows = run_on::<LoadEntry, EntryRow>(pool, vec![text(key)]).await?;
    rows.into_iter()
        .next()
        .map(EntryRow::into_entry)
        .transpose()
}

impl PgStore {
    /// Loads `key` from a replica, if one answers with at least what this
    /// process has seen of it; `None`: ask the primary.
    async fn load_from_replica(&self, key: &Key) -> Option<Option<StoredEntry>> {
        let replicas = self.replica_set()?;
        // Without the LISTEN connection, changes may go unheard: the
        // floors may be behind, and only the primary is sure.
        if !self.watchers().tracking() {
            return None;
        }
        let replica = replicas.pick()?;
        match replicas.verify(replica).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(error) => {
                replicas.failed(replica, &error);
                return None;
            }
        }
        match load_on(&replica.pool, key).await {
            Ok(found) => replicas.answered(replica, key, found, &self.watchers().floors),
            Err(error) => {
                replicas.failed(replica, &error);
                None
            }
        }
    }

    /// Remembers the version a write reports, which a replica must reach.
    fn saw(&self, key: &Key, saved: &Saved) {
        let version = match saved {
            Saved::Written(version) => Some(*version),
            Saved::Conflict { current } => *current,
        };
        if let Some(version) = version {
            self.watchers().floors.raise(key.as_str(), version);
        }
    }

    /// The edges a statement `S` selects for `key`.
    async fn edges<S: Sql>(&self, key: &Key) -> Result<Vec<Edge>, StoreError> {
        let rows: Vec<EdgeRow> = self.run::<S, _>(vec![text(key)]).await?;
        rows.into_iter().map(EdgeRow::into_edge).collect()
    }
}

impl EntryStore for PgStore {
    fn load<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<StoredEntry>, StoreError>> {
        Box::pin(async move {
            if let Some(answer) = self.load_from_replica(key).await {
                return Ok(answer);
            }
            let found = load_on(self.pool(), key).await?;
            if let Some(entry) = &found {
                self.watchers().floors.raise(key.as_str(), entry.version);
            }
            Ok(found)
        })
    }

    fn content_hashes<'a>(
        &'a self,
        keys: &'a [Key],
    ) -> BoxFuture<'a, Result<Vec<Option<ContentHash>>, StoreError>> {
        Box::pin(async move {
            let texts = keys.iter().map(|key| key.as_str().to_owned()).collect();
            let rows: Vec<EdgeRow> = self
                .run::<ContentHashes, _>(vec![Bind::Texts(texts)])
                .await?;
            let found: Vec<Edge> = rows
                .into_iter()
                .map(EdgeRow::into_edge)
                .collect::<Result<_, _>>()?;
            Ok(keys
                .iter()
                .map(|key| {
                    found
                        .iter()
                        .find(|edge| &edge.key == key)
                        .and_then(|edge| edge.seen)
                })
                .collect())
        })
    }

    fn save(&self, entry: Entry, expect: Expect) -> BoxFuture<'_, Result<Saved, StoreError>> {
        self.save_with_deltas(entry, expect, Vec::new())
    }

    fn save_with_deltas(
        &self,
        entry: Entry,
        expect: Expect,
        deltas: Vec<JobDelta>,
    ) -> BoxFuture<'_, Result<Saved, StoreError>> {
        Box::pin(async move {
            let deltas = deltas_to_json(&entry.key, &deltas)?;
            let values = entry_binds(&entry)?;
            let key = text(&entry.key);
            let dependencies: Vec<String> = entry
                .dependencies
                .iter()
                .map(|edge| edge.key.as_str().to_owned())
                .collect();
            let seen = entry
                .dependencies
                .iter()
                .map(|edge| edge.seen.map(|hash| hash.0.to_vec()))
                .collect();
            let hash = entry.meta.content_hash.0.to_vec();
            let tail = [
                Bind::Texts(dependencies.clone()),
                Bind::Texts(dependencies),
                Bind::OptBytesArray(seen),
                Bind::Bytes(hash.clone()),
                Bind::Bytes(hash.clone()),
                Bind::Time(to_pg(entry.meta.computed_at)),
                Bind::Text(deltas),
                key.clone(),
                Bind::Bytes(hash),
            ];
            let row: WriteRow = match expect {
                Expect::Any | Expect::Absent => {
                    let binds = std::iter::once(key).chain(values).chain(tail).collect();
                    if expect == Expect::Any {
                        self.run_one::<SaveAny, _>(binds).await?
                    } else {
                        self.run_one::<SaveAbsent, _>(binds).await?
                    }
                }
                Expect::Version(version) => {
                    let binds = values
                        .into_iter()
                        .chain([key, Bind::BigInt(version.0)])
                        .chain(tail)
                        .collect();
                    self.run_one::<SaveOver, _>(binds).await?
                }
            };
            let saved = saved(&row);
            self.saw(&entry.key, &saved);
            Ok(saved)
        })
    }

    fn patch<'a>(
        &'a self,
        key: &'a Key,
        patch: EntryPatch,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Saved, StoreError>> {
        Box::pin(async move {
            let expected = match expect {
                Expect::Any => None,
                Expect::Version(version) => Some(version.0),
                Expect::Absent => {
                    // A patch needs an entry: the condition never holds.
                    let current = EntryStore::load(self, key)
                        .await?
                        .map(|stored| stored.version);
                    return Ok(Saved::Conflict { current });
                }
            };
            let set_error = patch.last_error.is_some();
            let error = patch.last_error.clone().flatten();
            let binds = vec![
                Bind::OptTime(patch.stale_at.map(to_pg)),
                Bind::OptTime(patch.expires_at.map(to_pg)),
                Bind::Bool(set_error),
                Bind::OptText(error.as_ref().map(|e| e.message.clone())),
                Bind::Bool(set_error),
                Bind::OptTime(error.as_ref().map(|e| to_pg(e.at))),
                Bind::Bool(set_error),
                Bind::Int(error.map_or(0, |e| i32::try_from(e.attempts).unwrap_or(i32::MAX))),
                text(key),
                Bind::OptBigInt(expected),
                Bind::OptBigInt(expected),
                text(key),
            ];
            let row: WriteRow = self.run_one::<PatchEntry, _>(binds).await?;
            let saved = saved(&row);
            self.saw(key, &saved);
            Ok(saved)
        })
    }

    fn remove<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<Version>, StoreError>> {
        Box::pin(async move {
            let row: RemoveRow = self
                .run_one::<RemoveEntry, _>(vec![text(key), text(key)])
                .await?;
            let removed = row.version.map(Version);
            if let Some(version) = removed {
                self.watchers().floors.raise(key.as_str(), version);
            }
            Ok(removed)
        })
    }

    fn dependents<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Vec<Edge>, StoreError>> {
        Box::pin(self.edges::<Dependents>(key))
    }

    fn dependencies<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Vec<Edge>, StoreError>> {
        Box::pin(self.edges::<Dependencies>(key))
    }
}
