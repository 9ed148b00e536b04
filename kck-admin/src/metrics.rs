//! `GET /metrics`: the cache's metrics in Prometheus's text format, from
//! the recorder [`install_metrics`] installs.

use std::sync::{Mutex, OnceLock, PoisonError};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

use crate::api::Shared;
use crate::error::ApiError;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static INSTALLING: Mutex<()> = Mutex::new(());

/// The buckets of every histogram, in seconds: from a millisecond to ten
/// minutes.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0,
];

/// Why the Prometheus recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the Prometheus recorder: {0}")]
pub struct MetricsError(#[from] BuildError);

/// Installs a Prometheus recorder as the process's [`metrics`] recorder,
/// once (later calls return the same handle), so that `GET /metrics`
/// serves what caches built with
/// [`CacheBuilder::metrics`](kck_core::CacheBuilder::metrics) record.
/// Call it before building the cache.
///
/// # Errors
///
/// [`MetricsError`] if another recorder is installed already: then render
/// metrics with that recorder's own exporter.
pub fn install_metrics() -> Result<PrometheusHandle, MetricsError> {
    let _installing = INSTALLING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(&BUCKETS)?
        .install_recorder()?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// `GET /metrics`
pub(crate) async fn metrics(State(state): Shared) -> Result<Response, ApiError> {
    let Some(handle) = HANDLE.get() else {
        return Err(ApiError::not_found(
            "metrics_not_installed",
            "no metrics are recorded: call kck_admin::install_metrics() and build the cache \
             with CacheBuilder::metrics()",
        ));
    };
    state.cache.record_gauges().await?;
    let text = handle.render();
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
