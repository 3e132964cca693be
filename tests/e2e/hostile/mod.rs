//! Hostile and malformed input, against the real API server and the running
//! operator: oversized strings, unicode tricks, out-of-range durations and
//! timestamps, wrong types, unknown fields, huge `secretTemplate` maps, labels
//! and annotations that claim another owner, `secretName`s that point at other
//! applications' Secrets, and hostile edits of existing objects.
//!
//! Every row is one manifest or edit with one expected outcome:
//! - refused by the API server, with a message naming the field, and nothing
//!   stored (or, for an edit, nothing changed);
//! - accepted and handled by the operator with `Ready=False`, the contract's
//!   reason, a message naming the field and a Warning Event, and no Secret
//!   written where it must not be (another application's Secret untouched);
//! - accepted and handled normally: `Ready=True` and a correct Secret.
//!
//! A few rows accept either a refusal or a clear condition, where the contract
//! allows both (the CRD or the operator may be the one to catch it).
//!
//! Before anything is really created, a dry run checks that what the API
//! server would store can be read by keymint's own types: an object the
//! operator cannot deserialise makes its initial list of the whole kind fail
//! (after any restart), and would stall every other test sharing the operator.
//!
//! The rows run concurrently; every mismatch is collected and reported at once,
//! with a count of rows per category and outcome. After the table: the
//! operator never panicked, and no object or Secret exists that no row allows.
//! RootKeys are cluster-scoped: their names (and their Secrets' names) start
//! with this test's namespace. `api_validation.rs` holds the plain malformed
//! rows; none of them is repeated here.

mod model;
mod rows;
mod runner;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ServiceAccount;
use keymint_test_support::*;
use kube::api::{Api, PostParams};

use crate::table::Ctx;
use model::{Category, Expect, Report, State};
use runner::{run_row, strays};

/// Rows in flight at once.
const CONCURRENCY: usize = 16;

#[tokio::test]
async fn hostile_input_is_refused_or_handled_never_half_applied() {
    let started = Instant::now();
    let (client, namespace) = setup("hostile").await;
    let ctx = Ctx { client, namespace };
    let accounts = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ctx.namespace);
    for name in ["robot", "robot2"] {
        accounts
            .create(&PostParams::default(), &service_account(name))
            .await
            .expect("service account");
    }
    let rows = rows::rows(&ctx);
    let reports: Vec<(usize, Report)> = futures::stream::iter(rows.iter().enumerate())
        .map(|(index, row)| run_row(&ctx, index, row))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut reports: BTreeMap<usize, Report> = reports.into_iter().collect();

    let mut failures = Vec::new();
    let mut objects = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let mut counts: BTreeMap<(Category, &'static str), usize> = BTreeMap::new();
    let mut notes = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let report = reports.remove(&index).expect("every row reports");
        *counts
            .entry((row.category, row.expect.outcome()))
            .or_default() += 1;
        for problem in report.problems {
            failures.push(format!(
                "#{index} [{}] {} {}: {problem}",
                row.category.label(),
                row.kind.name(),
                row.what
            ));
        }
        if matches!(
            row.expect,
            Expect::RefusedOr(..) | Expect::State(State::Any(_))
        ) {
            for note in &report.notes {
                notes.push(format!("#{index} {} {}: {note}", row.kind.name(), row.what));
            }
        }
        objects.extend(report.objects);
        secrets.extend(report.secrets);
    }
    failures.extend(strays(&ctx, &objects, &secrets).await);
    let log = operator_log();
    if log.contains("panicked") {
        failures.push("the operator panicked (see its log)".into());
    }
    ctx.clean_up().await;

    let mut by_category: BTreeMap<Category, Vec<String>> = BTreeMap::new();
    for ((category, outcome), count) in &counts {
        by_category
            .entry(*category)
            .or_default()
            .push(format!("{count} {outcome}"));
    }
    eprintln!("{} hostile rows in {:.1?}:", rows.len(), started.elapsed());
    for (category, outcomes) in &by_category {
        eprintln!("  {:<15} {}", category.label(), outcomes.join(", "));
    }
    eprintln!("rows with more than one acceptable outcome:");
    for note in &notes {
        eprintln!("  {note}");
    }
    assert!(rows.len() >= 100, "only {} rows", rows.len());
    assert!(
        failures.is_empty(),
        "{} problems in {} rows:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}
