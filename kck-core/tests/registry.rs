//! Registration: inventory and the explicit builder, and start-up
//! validation that reports duplicate names, unknown dependencies and cycles.
//!
//! The primers here are deliberately broken, so this file is its own test
//! binary: no other test sees them in its inventory.

use std::convert::Infallible;

use kck_core::primer::{Registry, RegistryError};
use kck_core::{Cache, Ctx, primer};

#[primer(key = "twin/{n}")]
async fn twin(_ctx: &Ctx, n: u32) -> Result<u32, Infallible> {
    Ok(n)
}

mod elsewhere {
    use super::*;

    #[primer(key = "twin/{n}")]
    pub(crate) async fn other_twin(_ctx: &Ctx, n: u32) -> Result<u32, Infallible> {
        Ok(n + 1)
    }
}

#[primer(key = "helper")]
async fn helper(_ctx: &Ctx) -> Result<u32, Infallible> {
    Ok(1)
}

#[primer(key = "needs_helper", depends_on = [helper])]
async fn needs_helper(ctx: &Ctx) -> Result<u32, kck_core::Error> {
    Ok(*helper(ctx).await? + 1)
}

#[primer(key = "chicken", depends_on = [egg])]
async fn chicken(ctx: &Ctx) -> Result<u32, kck_core::Error> {
    egg(ctx).await.map(|egg| *egg)
}

#[primer(key = "egg", depends_on = [chicken])]
async fn egg(ctx: &Ctx) -> Result<u32, kck_core::Error> {
    chicken(ctx).await.map(|chicken| *chicken)
}

#[primer(key = "countdown/{n}", depends_on = [countdown])]
async fn countdown(ctx: &Ctx, n: u32) -> Result<u32, kck_core::Error> {
    match n {
        0 => Ok(0),
        n => Ok(*countdown(ctx, n - 1).await? + 1),
    }
}

#[test]
fn inventory_collects_every_primer_and_reports_every_problem_at_once() {
    let Err(RegistryError::Several(problems)) = Registry::from_inventory() else {
        panic!("this binary's primers are invalid");
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(matches!(
        &problems[0],
        RegistryError::DuplicateName { name: "twin", first, second }
            if first.starts_with("kck-core/tests/registry.rs:") && second.starts_with("kck-core/tests/registry.rs:")
    ));
    let RegistryError::Cycle { path } = &problems[1] else {
        panic!("expected a cycle, got {}", problems[1]);
    };
    assert!(path == &["chicken", "egg", "chicken"] || path == &["egg", "chicken", "egg"]);
    let message = RegistryError::Several(problems.clone()).to_string();
    assert!(
        message.starts_with("2 problems with the registered primers: two primers are named `twin`"),
        "{message}"
    );
    // Building a cache validates the same way.
    assert!(Cache::builder().build().is_err());
}

#[test]
fn the_builder_registers_exactly_what_it_is_given() {
    let registry = Registry::builder()
        .register::<helper>()
        .register::<needs_helper>()
        .register::<helper>()
        .build()
        .unwrap();
    let names: Vec<_> = registry.primers().map(|def| def.name).collect();
    assert_eq!(names, ["helper", "needs_helper"]);
    assert_eq!(registry.get("needs_helper").unwrap().depends_on, ["helper"]);
}

#[test]
fn an_unregistered_dependency_is_refused() {
    let error = Registry::builder()
        .register::<needs_helper>()
        .build()
        .unwrap_err();
    assert_eq!(
        error,
        RegistryError::UnknownDependency {
            primer: "needs_helper",
            dependency: "helper"
        }
    );
    assert_eq!(
        error.to_string(),
        "primer `needs_helper` depends on `helper`, which is not registered"
    );
}

#[test]
fn two_primers_with_one_name_are_refused() {
    let error = Registry::builder()
        .register::<twin>()
        .register::<elsewhere::other_twin>()
        .build()
        .unwrap_err();
    assert!(matches!(
        error,
        RegistryError::DuplicateName { name: "twin", .. }
    ));
}

#[test]
fn primers_that_depend_on_each_other_are_refused_but_recursion_is_allowed() {
    let error = Registry::builder()
        .register::<chicken>()
        .register::<egg>()
        .build()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "primers depend on each other in a cycle: chicken -> egg -> chicken"
    );
    assert!(Registry::builder().register::<countdown>().build().is_ok());
}

#[tokio::test]
async fn an_explicit_registry_runs_its_primers() {
    let registry = Registry::builder()
        .register::<countdown>()
        .register::<helper>()
        .register::<needs_helper>()
        .build()
        .unwrap();
    let cache = Cache::builder().registry(registry).build().unwrap();
    assert_eq!(*countdown(&cache, 3).await.unwrap(), 3);
    assert_eq!(*needs_helper(&cache).await.unwrap(), 2);
    let error = twin(&cache, 1).await.unwrap_err();
    assert_eq!(error.kind(), kck_core::ErrorKind::UnknownPrimer);
}

#[test]
fn a_stub_of_an_unregistered_primer_is_refused() {
    let registry = Registry::builder().register::<helper>().build().unwrap();
    let error = Cache::builder()
        .registry(registry)
        .stub::<twin>(|(n,)| Ok(n))
        .build()
        .unwrap_err();
    assert_eq!(error, RegistryError::UnknownStub { name: "twin" });
}

/// A primer implemented by hand, with a schedule the macro would have
/// rejected at compile time.
struct Badly;

impl kck_core::Primer for Badly {
    type Params = (u32,);
    type Value = u32;
    type Error = Infallible;
    const NAME: &'static str = "badly";
    const DEF: &'static kck_core::primer::PrimerDef = &kck_core::primer::PrimerDef::new(
        "badly",
        "badly/{n}",
        &["n"],
        kck_core::primer::Policy::DEFAULT.schedule("every tuesday"),
        &[],
        "1",
        "tests/registry.rs",
    );

    fn compute(
        _ctx: &Ctx,
        (n,): (u32,),
    ) -> futures_util::future::BoxFuture<'_, Result<u32, Infallible>> {
        Box::pin(async move { Ok(n) })
    }
}

#[test]
fn a_bad_schedule_is_reported_with_its_primer() {
    let error = Registry::builder()
        .register::<Badly>()
        .build()
        .expect_err("the schedule is invalid");
    let RegistryError::BadSchedule { primer, error: bad } = &error else {
        panic!("expected BadSchedule, got {error:?}");
    };
    assert_eq!(*primer, "badly");
    assert_eq!(bad.pattern, "every tuesday");
    assert!(
        error
            .to_string()
            .starts_with("primer `badly`: invalid cron schedule `every tuesday`"),
        "{error}"
    );

    let good = Registry::builder()
        .register::<helper>()
        .build()
        .expect("valid");
    assert!(good.schedule("helper").is_none());
}
