//! The arguments of `#[primer(...)]`, parsed by darling, with the custom
//! values: durations, `depends_on` and `on_change`.

use std::time::Duration;

use darling::FromMeta;
use syn::{Expr, Lit, LitStr, Path};

/// `#[primer(key = "...", ...)]`. Field names are the attribute's keywords.
#[derive(FromMeta)]
pub(crate) struct PrimerArgs {
    pub(crate) key: LitStr,
    #[darling(default)]
    pub(crate) refresh: Option<DurationArg>,
    #[darling(default)]
    pub(crate) stale_after: Option<DurationArg>,
    #[darling(default)]
    pub(crate) expire_after: Option<DurationArg>,
    #[darling(default)]
    pub(crate) on_demand: bool,
    #[darling(default)]
    pub(crate) stale_if_error: bool,
    #[darling(default)]
    pub(crate) on_change: Option<OnChangeArg>,
    #[darling(default)]
    pub(crate) depends_on: DependsOn,
    #[darling(default)]
    pub(crate) prime_on_miss: Option<bool>,
    #[darling(default)]
    pub(crate) schedule: Option<ScheduleArg>,
    #[darling(default)]
    pub(crate) domain: Option<Path>,
    #[darling(default)]
    pub(crate) augment: darling::util::Flag,
    #[darling(default)]
    pub(crate) verify_every: Option<DurationArg>,
    #[darling(default)]
    pub(crate) augment_from: DependsOn,
    #[darling(default)]
    pub(crate) version: Option<LitStr>,
    #[darling(default, rename = "crate")]
    pub(crate) krate: Option<Path>,
}

/// A positive duration written as a string, such as `"5m"` or `"1h 30m"`.
pub(crate) struct DurationArg {
    pub(crate) value: Duration,
}

impl FromMeta for DurationArg {
    fn from_value(value: &Lit) -> darling::Result<Self> {
        let Lit::Str(text) = value else {
            return Err(darling::Error::custom(
                "expected a duration string such as \"5m\" or \"1h 30m\"",
            )
            .with_span(value));
        };
        match humantime::parse_duration(&text.value()) {
            Ok(duration) if duration.is_zero() => Err(darling::Error::custom(
                "the duration must be greater than zero",
            )
            .with_span(text)),
            Ok(value) => Ok(DurationArg { value }),
            Err(error) => Err(darling::Error::custom(format!(
                "invalid duration \"{}\": {error}",
                text.value()
            ))
            .with_span(text)),
        }
    }
}

/// A cron pattern, such as `"0 3 * * *"`, checked with the parser kck uses
/// at run time.
pub(crate) struct ScheduleArg {
    pub(crate) pattern: LitStr,
}

impl FromMeta for ScheduleArg {
    fn from_value(value: &Lit) -> darling::Result<Self> {
        let Lit::Str(text) = value else {
            return Err(
                darling::Error::custom("expected a cron pattern such as \"0 3 * * *\"")
                    .with_span(value),
            );
        };
        match text.value().parse::<croner::Cron>() {
            Ok(_) => Ok(ScheduleArg {
                pattern: text.clone(),
            }),
            Err(error) => Err(darling::Error::custom(format!(
                "invalid cron schedule \"{}\": {error}",
                text.value()
            ))
            .with_span(text)),
        }
    }
}

/// `on_change = "refresh" | "invalidate"`.
pub(crate) enum OnChangeArg {
    Refresh,
    Invalidate,
}

impl FromMeta for OnChangeArg {
    fn from_string(value: &str) -> darling::Result<Self> {
        match value {
            "refresh" => Ok(OnChangeArg::Refresh),
            "invalidate" => Ok(OnChangeArg::Invalidate),
            _ => Err(darling::Error::custom(
                "expected \"refresh\" or \"invalidate\"",
            )),
        }
    }
}

/// `depends_on = [primer, path::to::primer]`.
#[derive(Default)]
pub(crate) struct DependsOn(pub(crate) Vec<Path>);

impl FromMeta for DependsOn {
    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        let Expr::Array(array) = expr else {
            return Err(darling::Error::custom(
                "expected a list of primers, such as `[register_sales, stores::store_report]`",
            )
            .with_span(expr));
        };
        let mut errors = darling::Error::accumulator();
        let paths = array
            .elems
            .iter()
            .filter_map(|element| {
                errors.handle(match element {
                    Expr::Path(path) if path.qself.is_none() => Ok(path.path.clone()),
                    other => Err(
                        darling::Error::custom("expected the path of a primer function")
                            .with_span(other),
                    ),
                })
            })
            .collect();
        errors.finish_with(DependsOn(paths))
    }
}
