//! The crowded cluster, on a control plane of its own: `--crowded-keys`
//! APIKeys with an operator watching all namespaces; its RSS (a) once they
//! are minted, (b) after `--unrelated-secrets` Secrets without keymint's
//! label and `--unrelated-service-accounts` ServiceAccounts appear in 10
//! other namespaces, (c) after a SIGKILL and restart. What keymint holds for
//! objects that are not its own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use keymint::api::ApiKey;
use keymint_testenv::{ControlPlane, OPERATOR_USER};
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta};

use crate::audit::AuditLog;
use crate::operator::Operator;
use crate::options::Options;
use crate::phases::{self, OPERATOR_START, PATIENCE, confirm_all, settle};
use crate::results::{Crowded, Run};
use crate::workload::{self, BaselineSecrets};
use crate::{Result, cluster, progress, report};

/// Namespaces the unrelated objects are spread over.
pub const UNRELATED_NAMESPACES: usize = 10;
const KEYS_NAMESPACE: &str = "crowded-keys";

fn unrelated_namespace(index: usize) -> String {
    format!("crowded-unrelated-{index}")
}

/// Runs the phase and writes the results (into `results` and to disk).
pub async fn run(
    plane: &ControlPlane,
    options: &Options,
    results: &mut Run,
) -> Result<Vec<PathBuf>> {
    let client = phases::prepare(plane, options, results).await?;
    // An operator on all namespaces would take the warm-up's keys and
    // keymint-labelled Secrets for its own.
    cluster::delete_namespace(&client, phases::WARM_UP_NAMESPACE, Duration::from_secs(120)).await?;
    let crowded = measure(plane, &client, options).await?;
    results.crowded = Some(crowded);
    results.machine.load_at_end = crate::machine::load_average();
    report::write(&options.out, results)
}

async fn measure(
    plane: &ControlPlane,
    client: &kube::Client,
    options: &Options,
) -> Result<Crowded> {
    let (n, concurrency) = (options.crowded_keys, options.concurrency);
    let audit = AuditLog::new(plane.audit_log_path());
    cluster::create_namespace(client, KEYS_NAMESPACE).await?;
    let mut operator = Operator::start(&options.keymint, plane, "operator-crowded", None, &[])?;
    operator.wait_ready(OPERATOR_START).await?;
    let idle = operator.sample_at_rest().await?;
    let mut tracker = workload::track_keys(client, KEYS_NAMESPACE);
    tracker
        .wait("synced", Duration::from_secs(60), |c| c.synced)
        .await?;
    progress(&format!(
        "crowded: {n} APIKeys, the operator watching all namespaces"
    ));
    let keys = Api::<ApiKey>::namespaced(client.clone(), KEYS_NAMESPACE);
    let spec = phases::long_lived_spec();
    let applied = workload::create_all(&keys, n, concurrency, |i| {
        workload::api_key(KEYS_NAMESPACE, i, &spec)
    })
    .await?;
    tracker
        .wait("all Ready", PATIENCE, |c| c.ready >= n)
        .await?;
    let mint_seconds = applied.started.elapsed().as_secs_f64();
    drop(tracker.finish());
    settle(&operator).await?;
    let minted = operator.sample_at_rest().await?;
    progress(&format!(
        "crowded (a): minted in {mint_seconds:.1} s; RSS {:.1} MiB, peak {:.1} MiB",
        minted.rss_mib, minted.peak_rss_mib
    ));

    let secrets = options.unrelated_secrets;
    let accounts = options.unrelated_service_accounts;
    progress(&format!(
        "crowded: {secrets} unrelated Secrets and {accounts} ServiceAccounts in {UNRELATED_NAMESPACES} namespaces"
    ));
    let unrelated_started = Instant::now();
    for index in 0..UNRELATED_NAMESPACES {
        let namespace = unrelated_namespace(index);
        cluster::create_namespace(client, &namespace).await?;
        let template = BaselineSecrets::new(&namespace)?;
        let api = Api::<Secret>::namespaced(client.clone(), &namespace);
        workload::create_all(&api, share(secrets, index), concurrency, |i| {
            unrelated_secret(&template, i)
        })
        .await?;
        let api = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
        workload::create_all(&api, share(accounts, index), concurrency, |i| {
            Ok(ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(format!("unrelated-{i:05}")),
                    ..Default::default()
                },
                ..Default::default()
            })
        })
        .await?;
    }
    let unrelated_seconds = unrelated_started.elapsed().as_secs_f64();
    settle(&operator).await?;
    let crowded = operator.sample_at_rest().await?;
    progress(&format!(
        "crowded (b): unrelated objects created in {unrelated_seconds:.1} s; RSS {:.1} MiB, peak {:.1} MiB",
        crowded.rss_mib, crowded.peak_rss_mib
    ));

    operator.kill()?;
    let mark = audit.mark()?;
    let restart_started = Instant::now();
    let mut restarted = Operator::start(
        &options.keymint,
        plane,
        "operator-crowded-restart",
        None,
        &[],
    )?;
    let confirmed = confirm_all(&mut restarted, n, PATIENCE).await?;
    let restart_seconds = confirmed.duration_since(restart_started).as_secs_f64();
    settle(&restarted).await?;
    let restarted_sample = restarted.sample_at_rest().await?;
    let requests = audit.requests(OPERATOR_USER, mark, audit.mark()?)?;
    progress(&format!(
        "crowded (c): restarted, all confirmed in {restart_seconds:.2} s; RSS {:.1} MiB, peak {:.1} MiB",
        restarted_sample.rss_mib, restarted_sample.peak_rss_mib
    ));
    restarted.kill()?;
    Ok(Crowded {
        keys: n,
        unrelated_secrets: secrets,
        unrelated_service_accounts: accounts,
        unrelated_namespaces: UNRELATED_NAMESPACES,
        mint_seconds,
        unrelated_seconds,
        restart_seconds,
        idle,
        minted,
        crowded,
        restarted: restarted_sample,
        unrelated_growth_mib: crowded.rss_mib - minted.rss_mib,
        restart_growth_mib: restarted_sample.rss_mib - minted.rss_mib,
        restart_writes: requests.object_writes() + requests.event_writes(),
    })
}

/// Namespace `index`'s share of `total` objects (the first ones take the remainder).
fn share(total: usize, index: usize) -> usize {
    total / UNRELATED_NAMESPACES + usize::from(index < total % UNRELATED_NAMESPACES)
}

/// A Secret of the baseline's size that is not keymint's: no keymint label,
/// type Opaque, the annotations under another prefix.
fn unrelated_secret(template: &BaselineSecrets, index: usize) -> Result<Secret> {
    let mut secret = template.secret(index)?;
    secret.metadata.name = Some(format!("unrelated-{index:05}"));
    secret.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/name".to_string(),
        "unrelated".to_string(),
    )]));
    secret.type_ = Some("Opaque".into());
    let annotations = std::mem::take(secret.annotations_mut());
    *secret.annotations_mut() = annotations
        .into_iter()
        .map(|(key, value)| (key.replace("keymint.dev/", "example.com/"), value))
        .collect();
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for total in [0, 7, 600, 30_001] {
            let sum: usize = (0..UNRELATED_NAMESPACES).map(|i| share(total, i)).sum();
            assert_eq!(sum, total);
        }
    }

    #[test]
    fn an_unrelated_secret_is_not_keymints() {
        let template = BaselineSecrets::new("ns").expect("template");
        let secret = unrelated_secret(&template, 3).expect("secret");
        assert_eq!(secret.name_any(), "unrelated-00003");
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        assert!(
            !secret
                .labels()
                .contains_key(keymint::controller::secret::MANAGED_BY_LABEL)
        );
        assert!(
            secret
                .annotations()
                .keys()
                .all(|k| !k.starts_with("keymint.dev/"))
        );
        let keymints = template.secret(3).expect("baseline");
        let size = workload::json_size(&secret) as f64;
        let baseline = workload::json_size(&keymints) as f64;
        assert!((size / baseline - 1.0).abs() < 0.1, "{size} vs {baseline}");
    }
}
