//! Testing a primer against stubbed dependencies: `store_report` runs for
//! real, `register_sales` (the remote fleet) never does.

use chrono::NaiveDate;
use kck_testing::TestCache;
use quickstart::{FleetDown, Sale, register_sales, store_report};

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).expect("a valid date")
}

fn sale(product: &str, cents: u64) -> Sale {
    Sale {
        product: product.to_owned(),
        cents,
    }
}

#[tokio::test]
async fn the_report_sums_its_registers_from_stubbed_sales() {
    let test = TestCache::builder()
        .stub_value(register_sales::key(70, day()), vec![sale("coffee", 350)])
        .stub_value(
            register_sales::key(71, day()),
            vec![sale("bagel", 275), sale("bagel", 275)],
        )
        .stub_value(register_sales::key(72, day()), vec![])
        .build();

    let report = store_report(&test, 7, day()).await.unwrap();
    assert_eq!(report.sales, 3);
    assert_eq!(report.revenue_cents, 900);
    assert_eq!(report.top_product.as_deref(), Some("bagel"));

    // Read again: served from the cache, computed once.
    store_report(&test, 7, day()).await.unwrap();
    test.assert_computed_once(&store_report::key(7, day()));
    for register in [70, 71, 72] {
        test.assert_stub_read(&register_sales::key(register, day()));
    }
}

#[tokio::test]
async fn a_new_sale_updates_the_report() {
    let test = TestCache::builder()
        .stub_fn::<register_sales>(|(_register, _day)| Ok(vec![sale("tea", 200)]))
        .build();
    assert_eq!(
        store_report(&test, 7, day()).await.unwrap().revenue_cents,
        600
    );

    test.stub_value(
        register_sales::key(70, day()),
        vec![sale("tea", 200), sale("cake", 900)],
    )
    .await;
    test.settle().await;
    let report = store_report(&test, 7, day()).await.unwrap();
    assert_eq!(report.revenue_cents, 1500);
    assert_eq!(report.top_product.as_deref(), Some("cake"));
    test.assert_computed(&store_report::key(7, day()), 2);
}

#[tokio::test]
async fn a_fleet_outage_reaches_the_caller_as_a_typed_error() {
    let test = TestCache::builder()
        .stub_value(register_sales::key(70, day()), vec![])
        .stub_error(register_sales::key(71, day()), FleetDown)
        .build();
    let error = store_report(&test, 7, day()).await.unwrap_err();
    assert_eq!(error.compute_error::<FleetDown>(), Some(&FleetDown));
    assert_eq!(error.key(), Some(&*register_sales::key(71, day())));
    test.assert_stub_not_read(&register_sales::key(72, day()));
}
