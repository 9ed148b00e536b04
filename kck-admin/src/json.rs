//! The API's JSON: views of kck's types, as the OpenAPI document describes
//! them. Times are RFC 3339 in UTC; durations are milliseconds.

use std::time::Duration;

use kck_core::clock::Timestamp;
use kck_core::inspect::{Graph, Jobs, Neighbour, PrimerGraph, PrimerSummary, ProductDetail};
use kck_core::storage::{
    EntryError, FailedJob, KeyJobs, PendingJob, ProductPage, ProductState, ProductSummary,
    RefreshReason, RunningJob,
};
use serde::Serialize;

fn time(at: Timestamp) -> String {
    at.to_string()
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn reasons(reasons: &[RefreshReason]) -> Vec<String> {
    reasons.iter().map(RefreshReason::to_text).collect()
}

/// A product as listed.
#[derive(Debug, Serialize)]
pub struct Product {
    key: String,
    primer: String,
    version: i64,
    state: &'static str,
    computed_at: String,
    changed_at: String,
    stale_at: Option<String>,
    refresh_at: Option<String>,
    expires_at: Option<String>,
    read_at: Option<String>,
    compute_ms: f64,
    size: u64,
    code_version: String,
    last_error: Option<LastError>,
}

#[derive(Debug, Serialize)]
struct LastError {
    message: String,
    at: String,
    attempts: u32,
}

impl From<&EntryError> for LastError {
    fn from(error: &EntryError) -> Self {
        LastError {
            message: error.message.clone(),
            at: time(error.at),
            attempts: error.attempts,
        }
    }
}

impl From<&ProductSummary> for Product {
    fn from(product: &ProductSummary) -> Self {
        let meta = &product.meta;
        Product {
            key: product.key.to_string(),
            primer: product.key.primer().to_owned(),
            version: product.version.0,
            state: product.state.name(),
            computed_at: time(meta.computed_at),
            changed_at: time(meta.changed_at),
            stale_at: meta.stale_at.map(time),
            refresh_at: meta.refresh_at.map(time),
            expires_at: meta.expires_at.map(time),
            read_at: meta.read_at.map(time),
            compute_ms: millis(meta.compute_duration),
            size: product.size,
            code_version: meta.code_version.clone(),
            last_error: meta.last_error.as_ref().map(LastError::from),
        }
    }
}

/// A page of products.
#[derive(Debug, Serialize)]
pub struct Page {
    products: Vec<Product>,
    /// The `after` of the next page; `null` at the end.
    next: Option<String>,
}

impl From<&ProductPage> for Page {
    fn from(page: &ProductPage) -> Self {
        Page {
            products: page.products.iter().map(Product::from).collect(),
            next: page.next.as_ref().map(ToString::to_string),
        }
    }
}

/// One product with its value, neighbours and jobs.
#[derive(Debug, Serialize)]
pub struct Detail {
    #[serde(flatten)]
    product: Product,
    value: serde_json::Value,
    dependencies: Vec<Edge>,
    dependents: Vec<Edge>,
    jobs: KeyJobsJson,
}

#[derive(Debug, Serialize)]
struct Edge {
    key: String,
    /// `null` if it is not stored.
    state: Option<&'static str>,
    version: Option<i64>,
    /// Whether the reader saw its current value.
    current: bool,
}

impl From<&Neighbour> for Edge {
    fn from(neighbour: &Neighbour) -> Self {
        Edge {
            key: neighbour.key.to_string(),
            state: neighbour.stored.map(|(_, state)| state.name()),
            version: neighbour.stored.map(|(version, _)| version.0),
            current: neighbour.current,
        }
    }
}

impl From<&ProductDetail> for Detail {
    fn from(detail: &ProductDetail) -> Self {
        Detail {
            product: Product::from(&detail.summary),
            value: detail.value.clone(),
            dependencies: detail.dependencies.iter().map(Edge::from).collect(),
            dependents: detail.dependents.iter().map(Edge::from).collect(),
            jobs: KeyJobsJson::from(&detail.jobs),
        }
    }
}

#[derive(Debug, Serialize)]
struct KeyJobsJson {
    pending: Option<Pending>,
    running: Vec<Running>,
    failed: Vec<Failed>,
}

impl From<&KeyJobs> for KeyJobsJson {
    fn from(jobs: &KeyJobs) -> Self {
        KeyJobsJson {
            pending: jobs.pending.as_ref().map(Pending::from),
            running: jobs.running.iter().map(Running::from).collect(),
            failed: jobs.failed.iter().map(Failed::from).collect(),
        }
    }
}

/// A pending job.
#[derive(Debug, Serialize)]
pub struct Pending {
    id: i64,
    key: String,
    due_at: String,
    priority: i16,
    reasons: Vec<String>,
    attempts: u32,
    error: Option<String>,
    deltas: usize,
}

impl From<&PendingJob> for Pending {
    fn from(job: &PendingJob) -> Self {
        Pending {
            id: job.id.0,
            key: job.key.to_string(),
            due_at: time(job.due_at),
            priority: job.priority,
            reasons: reasons(&job.reasons),
            attempts: job.attempts,
            error: job.error.clone(),
            deltas: job.deltas,
        }
    }
}

/// A running job.
#[derive(Debug, Serialize)]
pub struct Running {
    id: i64,
    key: String,
    worker: String,
    lease_until: String,
    due_at: String,
    priority: i16,
    reasons: Vec<String>,
    attempts: u32,
    deltas: usize,
}

impl From<&RunningJob> for Running {
    fn from(job: &RunningJob) -> Self {
        Running {
            id: job.id.0,
            key: job.key.to_string(),
            worker: job.worker.clone(),
            lease_until: time(job.lease_until),
            due_at: time(job.due_at),
            priority: job.priority,
            reasons: reasons(&job.reasons),
            attempts: job.attempts,
            deltas: job.deltas,
        }
    }
}

/// A job kept as failed.
#[derive(Debug, Serialize)]
pub struct Failed {
    id: i64,
    key: String,
    attempts: u32,
    error: String,
    reasons: Vec<String>,
}

impl From<&FailedJob> for Failed {
    fn from(job: &FailedJob) -> Self {
        Failed {
            id: job.id.0,
            key: job.key.to_string(),
            attempts: job.attempts,
            error: job.error.clone(),
            reasons: reasons(&job.reasons),
        }
    }
}

/// The queue's jobs.
#[derive(Debug, Serialize)]
pub struct JobsJson {
    pending: Vec<Pending>,
    running: Vec<Running>,
    failed: Vec<Failed>,
}

impl From<&Jobs> for JobsJson {
    fn from(jobs: &Jobs) -> Self {
        JobsJson {
            pending: jobs.pending.iter().map(Pending::from).collect(),
            running: jobs.running.iter().map(Running::from).collect(),
            failed: jobs.failed.iter().map(Failed::from).collect(),
        }
    }
}

/// A primer with its policy and counts.
#[derive(Debug, Serialize)]
pub struct Primer {
    name: &'static str,
    template: &'static str,
    params: &'static [&'static str],
    depends_on: &'static [&'static str],
    code_version: &'static str,
    location: &'static str,
    policy: Policy,
    /// Products per state; `complete` is `false` if only the first ones
    /// were counted.
    counts: Counts,
}

#[derive(Debug, Serialize)]
struct Policy {
    refresh_ms: Option<f64>,
    stale_after_ms: Option<f64>,
    expire_after_ms: Option<f64>,
    on_demand: bool,
    stale_if_error: bool,
    schedule: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct Counts {
    fresh: u64,
    stale: u64,
    expired: u64,
    failing: u64,
    computing: u64,
    total: u64,
    complete: bool,
}

impl From<&PrimerSummary> for Primer {
    fn from(primer: &PrimerSummary) -> Self {
        let def = primer.def;
        let policy = &def.policy;
        let census = &primer.census;
        Primer {
            name: def.name,
            template: def.template,
            params: def.params,
            depends_on: def.depends_on,
            code_version: def.code_version,
            location: def.location,
            policy: Policy {
                refresh_ms: policy.refresh.map(millis),
                stale_after_ms: policy.stale_after.map(millis),
                expire_after_ms: policy.expire_after.map(millis),
                on_demand: policy.on_demand,
                stale_if_error: policy.stale_if_error,
                schedule: policy.schedule,
            },
            counts: Counts {
                fresh: census.get(ProductState::Fresh),
                stale: census.get(ProductState::Stale),
                expired: census.get(ProductState::Expired),
                failing: census.get(ProductState::Failing),
                computing: census.get(ProductState::Computing),
                total: census.total(),
                complete: census.complete,
            },
        }
    }
}

/// The graph around a product.
#[derive(Debug, Serialize)]
pub struct GraphJson {
    nodes: Vec<Node>,
    /// `[dependent, dependency]` pairs.
    edges: Vec<[String; 2]>,
    truncated: bool,
}

#[derive(Debug, Serialize)]
struct Node {
    key: String,
    primer: String,
    state: Option<&'static str>,
    distance: i32,
}

impl From<&Graph> for GraphJson {
    fn from(graph: &Graph) -> Self {
        GraphJson {
            nodes: graph
                .nodes
                .iter()
                .map(|node| Node {
                    key: node.key.to_string(),
                    primer: node.key.primer().to_owned(),
                    state: node.state.map(ProductState::name),
                    distance: node.distance,
                })
                .collect(),
            edges: graph
                .edges
                .iter()
                .map(|(a, b)| [a.to_string(), b.to_string()])
                .collect(),
            truncated: graph.truncated,
        }
    }
}

/// The primers and their declared dependencies.
#[derive(Debug, Serialize)]
pub struct PrimerGraphJson {
    primers: Vec<&'static str>,
    /// `[primer, dependency]` pairs.
    edges: Vec<[&'static str; 2]>,
}

impl From<&PrimerGraph> for PrimerGraphJson {
    fn from(graph: &PrimerGraph) -> Self {
        PrimerGraphJson {
            primers: graph.primers.clone(),
            edges: graph.edges.iter().map(|(a, b)| [*a, *b]).collect(),
        }
    }
}
