//! The JSON API's handlers: each reads its parameters, asks
//! [`Cache::inspect`](kck_core::Cache::inspect) or the cache, and answers
//! with a view of `json.rs` or an [`ApiError`].

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use kck_core::event::EventKind;
use kck_core::inspect::ProductFilter;
use kck_core::storage::{JobId, ProductState};
use kck_core::{Cache, Key};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::json;

/// What every handler shares.
pub(crate) struct AdminState {
    pub(crate) cache: Cache,
}

pub(crate) type Shared = State<Arc<AdminState>>;

/// The most items a list answers at once.
const MAX_LIMIT: usize = ProductFilter::MAX_LIMIT;

/// A query string, or a 400 naming what is wrong with it.
fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

/// The key in the path: a registered primer's key, or 400/404.
fn path_key(cache: &Cache, path: Result<Path<String>, PathRejection>) -> Result<Key, ApiError> {
    let Path(text) = path.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    Ok(cache.parse_key(&text)?)
}

/// The job id in the path, or 400.
fn path_job(path: Result<Path<String>, PathRejection>) -> Result<JobId, ApiError> {
    let Path(text) = path.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    text.parse()
        .map(JobId)
        .map_err(|_| ApiError::bad_request(format!("`{text}` is not a job id (an integer)")))
}

fn limit(limit: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default),
        Some(limit @ 1..=MAX_LIMIT) => Ok(limit),
        Some(limit) => Err(ApiError::bad_request(format!(
            "limit {limit} is out of range: 1 to {MAX_LIMIT}"
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProductsParams {
    primer: Option<String>,
    state: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/products`
pub(crate) async fn products(
    State(state): Shared,
    params: Result<Query<ProductsParams>, QueryRejection>,
) -> Result<Json<json::Page>, ApiError> {
    let params = query(params)?;
    let mut filter = match params.primer {
        Some(primer) => ProductFilter::primer(primer),
        None => ProductFilter::all(),
    };
    if let Some(text) = params.state {
        let wanted: ProductState =
            text.parse()
                .map_err(|error: kck_core::storage::UnknownState| {
                    ApiError::bad_request(error.to_string())
                })?;
        filter = filter.state(wanted);
    }
    if let Some(after) = params.after {
        let after = Key::parse(&after)
            .map_err(|error| ApiError::bad_request(format!("`after` is not a key: {error}")))?;
        filter = filter.after(after);
    }
    filter = filter.limit(limit(params.limit, 50)?);
    let page = state.cache.inspect().products(&filter).await?;
    Ok(Json(json::Page::from(&page)))
}

/// `GET /api/products/{key}`
pub(crate) async fn product(
    State(state): Shared,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<json::Detail>, ApiError> {
    let key = path_key(&state.cache, path)?;
    let detail = state.cache.inspect().product(&key).await?;
    match detail {
        Some(detail) => Ok(Json(json::Detail::from(&detail))),
        None => Err(not_stored(&key)),
    }
}

fn not_stored(key: &Key) -> ApiError {
    ApiError::not_found("not_found", format!("no product `{key}` is stored")).with_key(key)
}

/// `POST /api/products/{key}/refresh`: computes the product now, and
/// answers it as it then is.
pub(crate) async fn refresh(
    State(state): Shared,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<json::Detail>, ApiError> {
    let key = path_key(&state.cache, path)?;
    state.cache.refresh_key(&key).await?;
    match state.cache.inspect().product(&key).await? {
        Some(detail) => Ok(Json(json::Detail::from(&detail))),
        None => Err(not_stored(&key)),
    }
}

/// `POST /api/products/{key}/invalidate`
pub(crate) async fn invalidate(
    State(state): Shared,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let key = path_key(&state.cache, path)?;
    let invalidated = state.cache.invalidate(&key).await?;
    Ok(Json(
        json!({ "key": key.to_string(), "invalidated": invalidated }),
    ))
}

/// `DELETE /api/products/{key}`
pub(crate) async fn remove(
    State(state): Shared,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let key = path_key(&state.cache, path)?;
    if state.cache.remove(&key).await? {
        Ok(Json(json!({ "key": key.to_string(), "removed": true })))
    } else {
        Err(not_stored(&key))
    }
}

/// `GET /api/primers`
pub(crate) async fn primers(State(state): Shared) -> Result<Json<Vec<json::Primer>>, ApiError> {
    let primers = state.cache.inspect().primers(10_000).await?;
    Ok(Json(primers.iter().map(json::Primer::from).collect()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GraphParams {
    key: Option<String>,
    depth: Option<u32>,
    max_nodes: Option<usize>,
}

/// `GET /api/graph`: around `key` if given, else between primers.
pub(crate) async fn graph(
    State(state): Shared,
    params: Result<Query<GraphParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let params = query(params)?;
    let inspect = state.cache.inspect();
    let Some(key) = params.key else {
        let graph = json::PrimerGraphJson::from(&inspect.primer_graph());
        return Ok(Json(json!({ "primers": graph })));
    };
    let key = state.cache.parse_key(&key)?;
    let depth = match params.depth {
        None => 2,
        Some(depth @ 0..=10) => depth,
        Some(depth) => {
            return Err(ApiError::bad_request(format!(
                "depth {depth} is out of range: 0 to 10"
            )));
        }
    };
    let max_nodes = limit(params.max_nodes, 200)?;
    let graph = inspect.graph(&key, depth, max_nodes).await?;
    Ok(Json(
        json!({ "key": key.to_string(), "graph": json::GraphJson::from(&graph) }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobsParams {
    limit: Option<usize>,
}

/// `GET /api/jobs`
pub(crate) async fn jobs(
    State(state): Shared,
    params: Result<Query<JobsParams>, QueryRejection>,
) -> Result<Json<json::JobsJson>, ApiError> {
    let params = query(params)?;
    let jobs = state
        .cache
        .inspect()
        .jobs(limit(params.limit, 100)?)
        .await?;
    Ok(Json(json::JobsJson::from(&jobs)))
}

/// `POST /api/jobs/{id}/retry`
pub(crate) async fn retry_job(
    State(state): Shared,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = path_job(path)?;
    if state.cache.inspect().retry_job(id).await? {
        Ok(Json(json!({ "id": id.0, "retried": true })))
    } else {
        Err(ApiError::not_found(
            "unknown_job",
            format!("there is no failed job {id}"),
        ))
    }
}

/// `DELETE /api/jobs/{id}`
pub(crate) async fn cancel_job(
    State(state): Shared,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = path_job(path)?;
    if state.cache.inspect().cancel_job(id).await? {
        Ok(Json(json!({ "id": id.0, "cancelled": true })))
    } else {
        Err(ApiError::not_found(
            "unknown_job",
            format!("there is no pending or failed job {id} (a running job cannot be cancelled)"),
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsParams {
    /// Include hits and coalesced reads (many: every read).
    hits: Option<bool>,
}

/// `GET /api/events`: the cache's events as server-sent events, from now
/// on; each named by its kind (`computed`, `refresh-queued`…), its data
/// `{"key", "primer", "kind", "text"}`. A `missed` event says how many
/// were dropped because the client fell behind.
pub(crate) async fn events(
    State(state): Shared,
    params: Result<Query<EventsParams>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let hits = query(params)?.hits.unwrap_or(false);
    let stream = state.cache.subscribe();
    let events = futures_util::stream::unfold(stream, move |mut stream| async move {
        loop {
            let sse = match stream.next().await? {
                Ok(event)
                    if !hits && matches!(event.kind, EventKind::Hit | EventKind::Coalesced) =>
                {
                    continue;
                }
                Ok(event) => {
                    let data = json!({
                        "key": event.key.to_string(),
                        "primer": event.key.primer(),
                        "kind": event.kind.name(),
                        "text": event.to_string(),
                    });
                    SseEvent::default()
                        .event(event.kind.name())
                        .data(data.to_string())
                }
                Err(missed) => SseEvent::default()
                    .event("missed")
                    .data(missed.0.to_string()),
            };
            return Some((Ok(sse), stream));
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
