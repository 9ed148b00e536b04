//! The commands that look: `status`, `get`, `explain`, `jobs`. None of them
//! computes anything but `get` (as a read by the application would).

use std::collections::BTreeMap;
use std::time::Duration;

use kck_admin::json;
use kck_core::clock::Timestamp;
use kck_core::inspect::{Jobs, ProductDetail};
use kck_core::primer::PrimerDef;
use kck_core::storage::{JobCounts, ProductState};
use kck_core::{Cache, Key};
use serde::Serialize;

use crate::out::{Out, span, when};
use crate::{CliError, JobsArgs};

/// How many products of a primer `status` counts, at most.
const CENSUS_CAP: usize = 1_000_000;

/// How many jobs of each kind `status` looks at to group them by primer.
const JOBS_SCAN: usize = 10_000;

/// A primer's line in `status`.
#[derive(Debug, Default, Serialize)]
struct PrimerStatus {
    name: String,
    fresh: u64,
    stale: u64,
    expired: u64,
    failing: u64,
    computing: u64,
    total: u64,
    /// Whether every product was counted (`false`: the counts are lower
    /// bounds).
    complete: bool,
    pending: u64,
    running: u64,
    failed: u64,
    /// How long the most overdue of its pending jobs has been due, in
    /// milliseconds.
    most_overdue_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Status {
    primers: Vec<PrimerStatus>,
    /// The queue's totals.
    jobs: Totals,
    /// Whether the jobs grouped by primer are all of them.
    jobs_complete: bool,
}

#[derive(Debug, Serialize)]
struct Totals {
    pending: u64,
    running: u64,
    failed: u64,
}

pub(crate) async fn status(cache: &Cache, out: &Out) -> Result<(), CliError> {
    let inspector = cache.inspect();
    let primers = inspector.primers(CENSUS_CAP).await?;
    let jobs = inspector.jobs(JOBS_SCAN).await?;
    let counts: JobCounts = cache.queue().counts().await?;
    let now = cache.now();
    let mut lines: BTreeMap<String, PrimerStatus> = primers
        .iter()
        .map(|primer| {
            let census = &primer.census;
            let line = PrimerStatus {
                name: primer.def.name.to_owned(),
                fresh: census.get(ProductState::Fresh),
                stale: census.get(ProductState::Stale),
                expired: census.get(ProductState::Expired),
                failing: census.get(ProductState::Failing),
                computing: census.get(ProductState::Computing),
                total: census.total(),
                complete: census.complete,
                ..PrimerStatus::default()
            };
            (line.name.clone(), line)
        })
        .collect();
    fn line<'l>(lines: &'l mut BTreeMap<String, PrimerStatus>, key: &Key) -> &'l mut PrimerStatus {
        lines
            .entry(key.primer().to_owned())
            .or_insert_with(|| PrimerStatus {
                name: key.primer().to_owned(),
                complete: true,
                ..PrimerStatus::default()
            })
    }
    for job in &jobs.pending {
        let status = line(&mut lines, &job.key);
        status.pending += 1;
        if job.due_at <= now {
            let overdue = duration_ms(now.saturating_duration_since(job.due_at));
            status.most_overdue_ms = status.most_overdue_ms.max(Some(overdue));
        }
    }
    for job in &jobs.running {
        line(&mut lines, &job.key).running += 1;
    }
    for job in &jobs.failed {
        line(&mut lines, &job.key).failed += 1;
    }
    let jobs_complete = [jobs.pending.len(), jobs.running.len(), jobs.failed.len()]
        .iter()
        .all(|listed| *listed < JOBS_SCAN);
    let status = Status {
        primers: lines.into_values().collect(),
        jobs: Totals {
            pending: counts.pending,
            running: counts.running,
            failed: counts.failed,
        },
        jobs_complete,
    };
    if out.is_json() {
        return out.json(&status);
    }
    let at_least = |complete: bool, n: u64| {
        if complete {
            n.to_string()
        } else {
            format!(">={n}")
        }
    };
    let rows = status
        .primers
        .iter()
        .map(|line| {
            let c = line.complete;
            vec![
                line.name.clone(),
                at_least(c, line.fresh),
                at_least(c, line.stale),
                at_least(c, line.expired),
                at_least(c, line.failing),
                at_least(c, line.computing),
                at_least(jobs_complete, line.pending),
                at_least(jobs_complete, line.running),
                at_least(jobs_complete, line.failed),
                line.most_overdue_ms
                    .map_or_else(|| "-".to_owned(), |ms| span(Duration::from_millis(ms))),
            ]
        })
        .collect();
    out.table(
        &[
            "PRIMER",
            "FRESH",
            "STALE",
            "EXPIRED",
            "FAILING",
            "COMPUTING",
            "PENDING",
            "RUNNING",
            "FAILED",
            "MOST OVERDUE",
        ],
        rows,
    )?;
    out.text(&format!(
        "jobs: {} pending, {} running, {} failed",
        status.jobs.pending, status.jobs.running, status.jobs.failed
    ))
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A key from the command line, checked against the application's primers.
pub(crate) fn parse_key(cache: &Cache, text: &str) -> Result<Key, CliError> {
    Ok(cache.parse_key(text)?)
}

fn not_stored(key: &Key) -> CliError {
    CliError::NotFound(format!("no product {key} is stored"))
}

pub(crate) async fn get(
    cache: &Cache,
    out: &Out,
    key: &str,
    meta: bool,
    cached: bool,
) -> Result<(), CliError> {
    let key = parse_key(cache, key)?;
    let value = if cached {
        None
    } else {
        Some(cache.get_json(&key).await?)
    };
    if !meta && !cached {
        return out.json(&value);
    }
    let detail = cache.inspect().product(&key).await?;
    let Some(detail) = detail else {
        return match value {
            // Computed, but not stored: a primer that is never stored.
            Some(value) => out.json(&value),
            None => Err(not_stored(&key)),
        };
    };
    if !meta {
        return out.json(&detail.value);
    }
    out.json(&json::Detail::from(&detail))
}

pub(crate) async fn jobs(cache: &Cache, out: &Out, args: &JobsArgs) -> Result<(), CliError> {
    let all = !(args.failed || args.pending || args.running);
    let listed = cache.inspect().jobs(args.limit).await?;
    let jobs = Jobs {
        pending: if all || args.pending {
            listed.pending
        } else {
            Vec::new()
        },
        running: if all || args.running {
            listed.running
        } else {
            Vec::new()
        },
        failed: if all || args.failed {
            listed.failed
        } else {
            Vec::new()
        },
    };
    if out.is_json() {
        return out.json(&json::JobsJson::from(&jobs));
    }
    let now = cache.now();
    let mut rows = Vec::new();
    for job in &jobs.pending {
        let state = if job.attempts > 0 {
            "retrying"
        } else {
            "pending"
        };
        rows.push(vec![
            job.id.to_string(),
            state.to_owned(),
            job.key.to_string(),
            format!("due {}", when(job.due_at, now)),
            job.attempts.to_string(),
            job.error.clone().unwrap_or_default(),
        ]);
    }
    for job in &jobs.running {
        rows.push(vec![
            job.id.to_string(),
            "running".to_owned(),
            job.key.to_string(),
            format!(
                "on {}, lease until {}",
                job.worker,
                when(job.lease_until, now)
            ),
            job.attempts.to_string(),
            String::new(),
        ]);
    }
    for job in &jobs.failed {
        rows.push(vec![
            job.id.to_string(),
            "failed".to_owned(),
            job.key.to_string(),
            String::new(),
            job.attempts.to_string(),
            job.error.clone(),
        ]);
    }
    if rows.is_empty() {
        return out.text("no jobs");
    }
    out.table(&["ID", "STATE", "KEY", "WHEN", "ATTEMPTS", "ERROR"], rows)
}

/// Why a product is in its state, and what its next read does.
#[derive(Debug, Serialize)]
struct Explanation {
    key: String,
    primer: &'static str,
    /// `None` when nothing is stored.
    state: Option<&'static str>,
    /// The state in a sentence.
    why: String,
    /// What the next read would do.
    next_read: String,
    /// The stored product, as `kck-admin`'s API shows it.
    product: Option<json::Detail>,
}

pub(crate) async fn explain(cache: &Cache, out: &Out, key: &str) -> Result<(), CliError> {
    let key = parse_key(cache, key)?;
    let def = cache
        .registry()
        .get(key.primer())
        .ok_or_else(|| CliError::BadInput(format!("unknown primer {}", key.primer())))?;
    let detail = cache.inspect().product(&key).await?;
    let now = cache.now();
    let (why, next_read) = reasons(def, detail.as_ref(), now);
    if out.is_json() {
        return out.json(&Explanation {
            key: key.to_string(),
            primer: def.name,
            state: detail.as_ref().map(|detail| detail.summary.state.name()),
            why,
            next_read,
            product: detail.as_ref().map(json::Detail::from),
        });
    }
    out.text(&tree(&key, def, detail.as_ref(), &why, &next_read, now))
}

/// The state of a product in a sentence, and what its next read does.
fn reasons(def: &PrimerDef, detail: Option<&ProductDetail>, now: Timestamp) -> (String, String) {
    let Some(detail) = detail else {
        let next = if def.policy.prime_on_miss {
            "computed now (nothing is stored)"
        } else {
            "fails as not primed (nothing is stored, and the primer does not compute on a miss)"
        };
        return ("nothing is stored".to_owned(), next.to_owned());
    };
    let meta = &detail.summary.meta;
    let at = |time: Option<Timestamp>| time.map_or_else(|| "?".to_owned(), |t| when(t, now));
    let queued = match &detail.jobs.pending {
        Some(job) => format!(
            "a refresh is already queued (job {}, due {})",
            job.id,
            when(job.due_at, now)
        ),
        None => "a refresh is queued".to_owned(),
    };
    let why = match detail.summary.state {
        ProductState::Fresh => match meta.stale_at {
            Some(stale) => format!("fresh until {}", when(stale, now)),
            None => match meta.refresh_at {
                Some(refresh) => format!("fresh: no expiry; next refresh {}", when(refresh, now)),
                None => "fresh: no expiry; recomputed when what it read changes".to_owned(),
            },
        },
        ProductState::Stale => format!("stale since {}", at(meta.stale_at)),
        ProductState::Expired => format!("expired at {}", at(meta.expires_at)),
        ProductState::Computing => "being computed now (a cache holds its lease)".to_owned(),
        ProductState::Failing => match &meta.last_error {
            Some(error) => format!(
                "failing: its last refresh failed {} ({} attempt{} in a row): {}",
                when(error.at, now),
                error.attempts,
                if error.attempts == 1 { "" } else { "s" },
                error.message
            ),
            None => "failing".to_owned(),
        },
    };
    let next = if meta.code_version != def.code_version {
        format!(
            "computed now: it was computed by another version of the primer's code ({}; this \
             binary's is {})",
            meta.code_version, def.code_version
        )
    } else if def.policy.on_demand {
        "computed now: the primer recomputes on every read".to_owned()
    } else {
        match detail.summary.state {
            ProductState::Fresh => "served as it is".to_owned(),
            ProductState::Stale => format!("served, and {queued}"),
            ProductState::Expired => "computed now: it is past its hard expiry".to_owned(),
            ProductState::Computing => {
                "waits for the computation in flight, then served".to_owned()
            }
            ProductState::Failing if def.policy.stale_if_error => {
                format!("served as it is (stale if error), and {queued}")
            }
            ProductState::Failing => format!("served, and {queued}"),
        }
    };
    (why, next)
}

/// The explanation as a tree, for people.
fn tree(
    key: &Key,
    def: &PrimerDef,
    detail: Option<&ProductDetail>,
    why: &str,
    next_read: &str,
    now: Timestamp,
) -> String {
    let mut lines = vec![format!("{key}  (primer {})", def.name)];
    let mut branch = |label: String, children: Vec<String>| {
        lines.push(format!("├─ {label}"));
        let count = children.len();
        for (i, child) in children.into_iter().enumerate() {
            let elbow = if i + 1 == count { "└─" } else { "├─" };
            lines.push(format!("│  {elbow} {child}"));
        }
    };
    branch(format!("state: {why}"), Vec::new());
    if let Some(detail) = detail {
        let meta = &detail.summary.meta;
        let never = |time: Option<Timestamp>, none: &str| {
            time.map_or_else(|| none.to_owned(), |t| when(t, now))
        };
        branch(
            format!(
                "{}, code version {}{}",
                detail.summary.version,
                meta.code_version,
                if meta.code_version == def.code_version {
                    " (this binary's)"
                } else {
                    " (not this binary's)"
                }
            ),
            Vec::new(),
        );
        branch(
            format!(
                "last computed {}, in {}",
                when(meta.computed_at, now),
                span(meta.compute_duration)
            ),
            vec![format!("value last changed {}", when(meta.changed_at, now))],
        );
        branch(
            "deadlines".to_owned(),
            vec![
                format!("stale at:   {}", never(meta.stale_at, "never")),
                format!("refresh at: {}", never(meta.refresh_at, "none scheduled")),
                format!("expires at: {}", never(meta.expires_at, "never")),
            ],
        );
        branch(
            match &meta.last_error {
                Some(error) => format!(
                    "last error {}, attempt {}: {}",
                    when(error.at, now),
                    error.attempts,
                    error.message
                ),
                None => "last error: none".to_owned(),
            },
            Vec::new(),
        );
        let neighbours = |list: &[kck_core::inspect::Neighbour], read: bool| -> Vec<String> {
            list.iter()
                .map(|n| {
                    let stored = match n.stored {
                        Some((version, state)) => format!("{state}, {version}"),
                        None => "not stored".to_owned(),
                    };
                    let seen = match (read, n.current) {
                        (true, true) => "read as it is",
                        (true, false) => "changed since it was read",
                        (false, true) => "read its current value",
                        (false, false) => "read an older value",
                    };
                    format!("{}  {stored}  ({seen})", n.key)
                })
                .collect()
        };
        branch(
            format!("dependencies: {}", detail.dependencies.len()),
            neighbours(&detail.dependencies, true),
        );
        branch(
            format!("dependents: {}", detail.dependents.len()),
            neighbours(&detail.dependents, false),
        );
        let jobs = &detail.jobs;
        let mut listed = Vec::new();
        if let Some(job) = &jobs.pending {
            listed.push(format!(
                "job {}: pending, due {}",
                job.id,
                when(job.due_at, now)
            ));
        }
        for job in &jobs.running {
            listed.push(format!(
                "job {}: running on {}, lease until {}",
                job.id,
                job.worker,
                when(job.lease_until, now)
            ));
        }
        for job in &jobs.failed {
            listed.push(format!(
                "job {}: failed after {} attempts: {}",
                job.id, job.attempts, job.error
            ));
        }
        branch(format!("jobs: {}", listed.len()), listed);
    }
    lines.push(format!("└─ next read: {next_read}"));
    lines.join("\n")
}
