//! Crash safety: the operator is SIGKILLed at random points while it mints and
//! rotates hundreds of short-lived keys, and restarted each time. Nothing may
//! be lost or issued twice. Its own test binary (own control plane).
//!
//! Counts: `KEYMINT_FAULT_KEYS` (default 300) and `KEYMINT_FAULT_KILLS`
//! (default 10); `make soak` raises them to 1000 and 20.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use keymint::api::ApiKey;
use keymint::keys::sha256_hex;
use keymint_test_support::*;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use rand::Rng;
use serde_json::json;

/// Every key's lifetime and when it is rotated: a rotation every 15 s.
const VALID_FOR_SECONDS: i64 = 20;
const RENEW_BEFORE_SECONDS: i64 = 5;

fn count(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a watch on the namespace's Secrets saw: every key id, with the Secret
/// and key hash it was seen with, and how many Secret versions went by.
#[derive(Default)]
struct Seen {
    ids: Mutex<BTreeMap<String, BTreeSet<(String, String)>>>,
    versions: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    let key_count = count("KEYMINT_FAULT_KEYS", 300);
    let kills = count("KEYMINT_FAULT_KILLS", 10);
    let plane = cluster();
    let client = plane.client().await.expect("client");
    let namespace = plane.namespace(&client, "crash").await.expect("namespace");
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);

    let seen = Arc::new(Seen::default());
    let watch = {
        let seen = seen.clone();
        let stream = watcher(secrets.clone(), watcher::Config::default()).applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Ok(Some(secret)) = stream.try_next().await {
                seen.versions.fetch_add(1, Ordering::Relaxed);
                let (Some(id), Some(sha)) = (
                    annotation(&secret, "keymint.dev/key-id"),
                    annotation(&secret, "keymint.dev/key-sha256"),
                ) else {
                    continue;
                };
                seen.ids
                    .lock()
                    .expect("seen")
                    .entry(id)
                    .or_default()
                    .insert((secret.name_any(), sha));
            }
        })
    };

    let mut operator = Operator::watching("crash-0", &namespace);
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    let names: Vec<String> = (0..key_count).map(|i| format!("crash-{i:04}")).collect();
    let spec = json!({"permissions": ["read"], "validFor": format!("{VALID_FOR_SECONDS}s"), "renewBefore": format!("{RENEW_BEFORE_SECONDS}s"), "gracePeriod": "4s"});
    futures::stream::iter(names.iter())
        .for_each_concurrent(16, |name| {
            let keys = keys.clone();
            let spec = spec.clone();
            async move {
                apply(&keys, &api_key(name, spec)).await.expect("apply");
            }
        })
        .await;

    // Kill points are chosen by progress, not by time: after a random number
    // (1..=40) of further Secret writes, so kills land mid-mint and mid-rotation.
    let seed: u64 = rand::rng().random();
    println!("kill schedule seed: {seed}");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    for kill in 1..=kills {
        if kill == kills / 2 + 1 {
            // The second half of the kills lands while keys rotate.
            eventually("the first rotations", Duration::from_secs(120), || async {
                let ids = seen.ids.lock().expect("seen").len();
                if ids > key_count {
                    Ok(())
                } else {
                    Err(format!("{ids} key ids so far"))
                }
            })
            .await;
        }
        let target = rng.random_range(1..=40);
        let mark = seen.versions.load(Ordering::Relaxed);
        eventually(
            &format!("{target} more Secret writes before kill {kill}"),
            WAIT,
            || async {
                let now = seen.versions.load(Ordering::Relaxed);
                if now >= mark + target {
                    Ok(())
                } else {
                    Err(format!("{} of {target}", now - mark))
                }
            },
        )
        .await;
        operator.kill();
        operator = Operator::watching(&format!("crash-{kill}"), &namespace);
    }

    // Quiesce: a long lifetime for every key (an edit reschedules, it does not
    // mint), so the check below sees a state that is no longer moving.
    let calm = json!({"permissions": ["read"], "validFor": "1h", "renewBefore": format!("{RENEW_BEFORE_SECONDS}s"), "gracePeriod": "4s"});
    futures::stream::iter(names.iter())
        .for_each_concurrent(16, |name| {
            let keys = keys.clone();
            let calm = calm.clone();
            async move {
                apply(&keys, &api_key(name, calm)).await.expect("apply");
            }
        })
        .await;

    // Converged: every key Ready on its current generation, its Secret holding
    // the key its status names.
    let converged = eventually(
        "every key to be Ready and consistent after the kills",
        Duration::from_secs(180),
        || {
            let keys = keys.clone();
            let secrets = secrets.clone();
            let names = &names;
            async move {
                let listed = keys
                    .list(&Default::default())
                    .await
                    .map_err(|e| e.to_string())?
                    .items;
                let by_name: BTreeMap<String, Secret> = secrets
                    .list(&Default::default())
                    .await
                    .map_err(|e| e.to_string())?
                    .items
                    .into_iter()
                    .map(|s| (s.name_any(), s))
                    .collect();
                let mut bad = Vec::new();
                for key in &listed {
                    let ready = ready_of(key).is_some_and(|(s, _)| s == "True");
                    let current = key.status.as_ref().and_then(|s| s.observed_generation)
                        == key.metadata.generation;
                    let status_sha = key.status.as_ref().and_then(|s| s.key_sha256.clone());
                    let secret_sha = by_name
                        .get(&key.name_any())
                        .and_then(|s| text(s, "key"))
                        .map(|k| sha256_hex(&k));
                    if !(ready && current && status_sha.is_some() && status_sha == secret_sha) {
                        bad.push(format!(
                            "{} (ready {ready}, generation observed {current}, hash matches {})",
                            key.name_any(),
                            status_sha.is_some() && status_sha == secret_sha
                        ));
                    }
                }
                if listed.len() == names.len() && bad.is_empty() {
                    Ok(listed)
                } else {
                    Err(format!(
                        "{} of {} not converged, e.g. {:?}",
                        bad.len(),
                        listed.len(),
                        bad.first()
                    ))
                }
            }
        },
    )
    .await;
    let finished = Timestamp::now();
    watch.abort();

    // No key id was issued twice: each id belongs to one Secret and one key.
    let ids = seen.ids.lock().expect("seen").clone();
    let duplicated: Vec<_> = ids
        .iter()
        .filter(|(_, holders)| holders.len() > 1)
        .collect();
    assert!(
        duplicated.is_empty(),
        "key ids issued more than once: {duplicated:?}"
    );
    let mut ids_per_secret: BTreeMap<String, usize> = BTreeMap::new();
    for holders in ids.values() {
        for (secret, _) in holders {
            *ids_per_secret.entry(secret.clone()).or_default() += 1;
        }
    }

    // No resource rotated more often than its schedule allows, and no key was
    // minted beyond its rotations (a restart never mints again).
    let period = VALID_FOR_SECONDS - RENEW_BEFORE_SECONDS;
    let mut total_rotations = 0;
    for key in &converged {
        let status = key.status.as_ref().expect("status");
        let rotations = status.rotations.unwrap_or(0);
        total_rotations += rotations;
        let created = key.metadata.creation_timestamp.as_ref().expect("created").0;
        let allowed = finished.duration_since(created).as_secs() / period + 1;
        assert!(
            rotations <= allowed,
            "{} rotated {rotations} times in {}s (allowed {allowed})",
            key.name_any(),
            finished.duration_since(created).as_secs()
        );
        let minted = ids_per_secret.get(&key.name_any()).copied().unwrap_or(0);
        let rotations = usize::try_from(rotations).expect("rotations");
        assert!(
            minted <= rotations + 1,
            "{} holds {minted} distinct keys over {rotations} rotations",
            key.name_any()
        );
    }
    assert!(
        total_rotations > 0,
        "the kills happened while keys were rotating"
    );

    // No Secret without an owner.
    for secret in secrets.list(&Default::default()).await.expect("list").items {
        let owners = secret.owner_references();
        assert!(
            owners.len() == 1 && owners[0].kind == "APIKey" && owners[0].name == secret.name_any(),
            "{} has owners {owners:?}",
            secret.name_any()
        );
    }
    println!(
        "crash safety: {key_count} keys, {kills} SIGKILLs, {total_rotations} rotations, {} key ids, none lost or duplicated",
        ids.len()
    );
    operator.sigterm();
}
