//! The commands that change the cache: `refresh`, `invalidate`, `remove`,
//! `retry`, `warm`.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kck_admin::json;
use kck_core::inspect::ProductFilter;
use kck_core::primer::PrimerDef;
use kck_core::storage::{JobId, ProductState};
use kck_core::{Cache, Key};
use serde::Serialize;

use crate::CliError;
use crate::inspect::parse_key;
use crate::out::{Out, span};
use crate::process::Interrupt;

pub(crate) async fn refresh(cache: &Cache, out: &Out, key: &str) -> Result<(), CliError> {
    let key = parse_key(cache, key)?;
    cache.refresh_key(&key).await?;
    let Some(detail) = cache.inspect().product(&key).await? else {
        if out.is_json() {
            return out.json(&serde_json::json!({ "key": key.as_str(), "stored": false }));
        }
        return out.text(&format!("refreshed {key} (the primer does not store it)"));
    };
    if out.is_json() {
        return out.json(&json::Detail::from(&detail));
    }
    out.text(&format!(
        "refreshed {key}: version {}, computed in {}",
        detail.summary.version,
        span(detail.summary.meta.compute_duration)
    ))
}

pub(crate) async fn invalidate(cache: &Cache, out: &Out, key: &str) -> Result<(), CliError> {
    let key = parse_key(cache, key)?;
    let marked = cache.invalidate(&key).await?;
    if marked == 0 {
        return Err(not_stored(&key));
    }
    if out.is_json() {
        return out.json(&serde_json::json!({ "key": key.as_str(), "marked_stale": marked }));
    }
    out.text(&format!(
        "marked {marked} product{} stale: {key} and what read it",
        plural(marked)
    ))
}

pub(crate) async fn remove(cache: &Cache, out: &Out, key: &str) -> Result<(), CliError> {
    let key = parse_key(cache, key)?;
    if !cache.remove(&key).await? {
        return Err(not_stored(&key));
    }
    if out.is_json() {
        return out.json(&serde_json::json!({ "key": key.as_str(), "removed": true }));
    }
    out.text(&format!("removed {key}"))
}

fn not_stored(key: &Key) -> CliError {
    CliError::NotFound(format!("no product {key} is stored"))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub(crate) async fn retry(
    cache: &Cache,
    out: &Out,
    id: Option<i64>,
    all_failed: bool,
) -> Result<(), CliError> {
    let inspector = cache.inspect();
    let mut retried = Vec::new();
    if let Some(id) = id {
        if !inspector.retry_job(JobId(id)).await? {
            return Err(CliError::NotFound(format!("no failed job {id}")));
        }
        retried.push(id);
    } else if all_failed {
        // Retried jobs leave the failed list: page until it is empty, or
        // until a page retries nothing (another process took them).
        loop {
            let failed = cache.queue().failed(1000).await?;
            let before = retried.len();
            for job in &failed {
                if inspector.retry_job(job.id).await? {
                    retried.push(job.id.0);
                }
            }
            if failed.is_empty() || retried.len() == before {
                break;
            }
        }
    }
    if out.is_json() {
        return out.json(&serde_json::json!({ "retried": retried }));
    }
    out.text(&format!(
        "put {} failed job{} back in the queue, due now",
        retried.len(),
        plural(retried.len())
    ))
}

/// What `warm` and `refresh --primer` did.
#[derive(Debug, Default, Serialize)]
struct Summary {
    primer: String,
    /// Keys looked at.
    keys: usize,
    computed: usize,
    /// Keys that were fresh already (`warm` only).
    fresh: usize,
    failed: usize,
    /// The first failures, as `key: error`.
    errors: Vec<String>,
    elapsed_ms: u64,
    /// Whether a signal stopped it before the end.
    interrupted: bool,
}

/// How many failures a summary lists.
const ERRORS_SHOWN: usize = 10;

impl Summary {
    fn new(primer: &str) -> Self {
        Summary {
            primer: primer.to_owned(),
            ..Summary::default()
        }
    }

    fn failed(&mut self, key: &Key, error: &kck_core::Error) {
        self.failed += 1;
        if self.errors.len() < ERRORS_SHOWN {
            self.errors.push(format!("{key}: {error}"));
        }
    }

    /// Prints it; an error if anything failed or it was interrupted.
    fn finish(mut self, out: &Out, verb: &str, started: Instant) -> Result<(), CliError> {
        self.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if out.is_json() {
            out.json(&self)?;
        } else {
            let mut text = format!(
                "{verb} {}: {} key{}, {} computed",
                self.primer,
                self.keys,
                plural(self.keys),
                self.computed
            );
            if verb == "warmed" {
                text.push_str(&format!(", {} already fresh", self.fresh));
            }
            text.push_str(&format!(
                ", {} failed, in {}",
                self.failed,
                span(started.elapsed())
            ));
            for error in &self.errors {
                text.push_str(&format!("\n  {error}"));
            }
            out.text(&text)?;
        }
        if self.interrupted {
            Err(CliError::Interrupted(format!(
                "interrupted after {} of the keys of {}; what was computed is kept",
                self.computed + self.fresh + self.failed,
                self.primer
            )))
        } else if self.failed > 0 {
            Err(CliError::Failed(format!(
                "{} of {} key{} of {} failed",
                self.failed,
                self.keys,
                plural(self.keys),
                self.primer
            )))
        } else {
            Ok(())
        }
    }
}

fn primer(cache: &Cache, name: &str) -> Result<&'static PrimerDef, CliError> {
    cache
        .registry()
        .get(name)
        .ok_or_else(|| CliError::BadInput(format!("unknown primer {name}")))
}

fn progress(out: &Out, len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if out.is_json() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta} {wide_msg}")
    {
        bar.set_style(style);
    }
    bar
}

pub(crate) async fn warm(cache: &Cache, out: &Out, primer_name: &str) -> Result<(), CliError> {
    let def = primer(cache, primer_name)?;
    let domain = def.domain.ok_or_else(|| {
        CliError::BadInput(format!(
            "primer {primer_name} declares no domain (#[primer(domain = ...)]): nothing to warm"
        ))
    })?;
    let started = Instant::now();
    let keys = domain(cache).await?;
    let mut summary = Summary::new(primer_name);
    summary.keys = keys.len();
    let bar = progress(out, keys.len() as u64);
    let mut interrupt = Interrupt::new();
    for key in &keys {
        bar.set_message(key.to_string());
        let Some(detail) = interrupt.run(cache.inspect().product(key)).await else {
            summary.interrupted = true;
            break;
        };
        let fresh = detail?.is_some_and(|detail| {
            detail.summary.state == ProductState::Fresh
                && detail.summary.meta.code_version == def.code_version
        });
        if fresh {
            summary.fresh += 1;
        } else {
            match interrupt.run(cache.refresh_key(key)).await {
                None => {
                    summary.interrupted = true;
                    break;
                }
                Some(Ok(())) => summary.computed += 1,
                Some(Err(error)) => summary.failed(key, &error),
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    summary.finish(out, "warmed", started)
}

pub(crate) async fn refresh_primer(
    cache: &Cache,
    out: &Out,
    primer_name: &str,
) -> Result<(), CliError> {
    primer(cache, primer_name)?;
    let started = Instant::now();
    let inspector = cache.inspect();
    let total = match cache.storage().catalog() {
        Some(catalog) => catalog
            .census(primer_name, cache.now(), 10_000_000)
            .await?
            .total(),
        None => 0,
    };
    let bar = progress(out, total);
    let mut summary = Summary::new(primer_name);
    let mut interrupt = Interrupt::new();
    let mut filter = ProductFilter::primer(primer_name).limit(ProductFilter::MAX_LIMIT);
    'pages: loop {
        let page = inspector.products(&filter).await?;
        for product in &page.products {
            summary.keys += 1;
            bar.set_message(product.key.to_string());
            match interrupt.run(cache.refresh_key(&product.key)).await {
                None => {
                    summary.interrupted = true;
                    break 'pages;
                }
                Some(Ok(())) => summary.computed += 1,
                Some(Err(error)) => summary.failed(&product.key, &error),
            }
            bar.inc(1);
        }
        match page.next {
            Some(next) => filter = filter.after(next),
            None => break,
        }
    }
    bar.finish_and_clear();
    summary.finish(out, "refreshed", started)
}
