//! The verify phase's watch-mode part, on its own control plane: a ring and
//! one APIKey (no grace period) reconciled by `keymint run`, and
//! `keymint verify --keyring-secret` watching the ring's Secret. Measured,
//! from the API write to the verify server's answer changing:
//!
//! - a rotation (`keymint.dev/rotate-request`): the old key answers `NOT_FOUND`;
//! - a leak (`keymint.dev/compromised`): the leaked key answers `REVOKED`.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use keymint::api::{ApiKey, KeyRing};
use keymint_testenv::ControlPlane;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::operator::Operator;
use crate::stats::Summary;
use crate::{Result, cluster, progress};

const NAMESPACE: &str = "bench-verify";
const RING: &str = "bench-ring";
const KEY: &str = "bench-key";
const SAMPLES: usize = 5;
const DEADLINE: Duration = Duration::from_secs(60);

/// Seconds from the write to the changed answer, per kind of change.
pub struct WatchLatencies {
    pub rotation: Summary,
    pub revocation: Summary,
}

pub async fn measure(keymint: &Path, dir: &Path) -> Result<WatchLatencies> {
    progress("verify: a control plane for watch mode");
    let plane =
        tokio::task::spawn_blocking(|| ControlPlane::start(keymint_testenv::Options::default()))
            .await
            .map_err(|e| format!("control plane thread: {e}"))??;
    let outcome = on_plane(keymint, dir, &plane).await;
    plane.stop();
    outcome
}

async fn on_plane(keymint: &Path, dir: &Path, plane: &ControlPlane) -> Result<WatchLatencies> {
    let client = plane.client().await?;
    cluster::install_crds(&client).await?;
    cluster::create_namespace(&client, NAMESPACE).await?;
    cluster::create_namespace(&client, "keymint-system").await?;
    let mut operator = Operator::start(keymint, plane, "operator-verify", Some(NAMESPACE), &[])?;
    operator.wait_ready(DEADLINE).await?;
    let rings = Api::<KeyRing>::namespaced(client.clone(), NAMESPACE);
    rings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "keymint.dev/v1alpha1", "kind": "KeyRing",
                "metadata": {"name": RING}, "spec": {}
            }))?,
        )
        .await?;
    let keys = Api::<ApiKey>::namespaced(client.clone(), NAMESPACE);
    keys.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "keymint.dev/v1alpha1", "kind": "APIKey",
            "metadata": {"name": KEY},
            "spec": {"permissions": ["read"], "keyRings": [{"name": RING}]}
        }))?,
    )
    .await?;
    let mut command = std::process::Command::new(keymint);
    let port = keymint_testenv::free_port()?;
    command
        .args(["verify", "--keyring-secret", RING, "--namespace", NAMESPACE])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-level",
            "warn",
        ])
        .env("KUBECONFIG", plane.kubeconfig_path());
    let mut server =
        keymint_testenv::spawn_tied_to_process(command, &dir.join("verify-watch.log"))?;
    let secrets = Api::<Secret>::namespaced(client.clone(), NAMESPACE);
    let token = || async {
        let secret = secrets.get(KEY).await?;
        let bytes = secret
            .data
            .and_then(|data| data.get("key").map(|k| k.0.clone()))
            .ok_or("the key's Secret has no key")?;
        Ok::<String, crate::Error>(String::from_utf8(bytes)?)
    };
    let first = wait_for_key(&secrets).await?;
    wait_answer(port, &first, "VALID").await?;
    progress(&format!(
        "verify: {SAMPLES} rotations and {SAMPLES} leaks in watch mode"
    ));
    let (mut rotation, mut revocation) = (Vec::new(), Vec::new());
    for sample in 0..SAMPLES {
        let old = token().await?;
        wait_answer(port, &old, "VALID").await?;
        let written = annotate(
            &keys,
            json!({"keymint.dev/rotate-request": format!("r{sample}")}),
        )
        .await?;
        wait_answer(port, &old, "NOT_FOUND").await?;
        rotation.push(written.elapsed().as_secs_f64());

        let current = wait_for_new_key(&secrets, &old).await?;
        wait_answer(port, &current, "VALID").await?;
        let written = annotate(
            &keys,
            json!({
                "keymint.dev/rotate-request": format!("r{sample}"),
                "keymint.dev/compromised": format!("c{sample}"),
            }),
        )
        .await?;
        wait_answer(port, &current, "REVOKED").await?;
        revocation.push(written.elapsed().as_secs_f64());
        wait_for_new_key(&secrets, &current).await?;
    }
    let _ = server.kill();
    let _ = server.wait();
    drop(operator);
    Ok(WatchLatencies {
        rotation: Summary::of(&rotation),
        revocation: Summary::of(&revocation),
    })
}

async fn annotate(keys: &Api<ApiKey>, annotations: serde_json::Value) -> Result<Instant> {
    keys.patch(
        KEY,
        &PatchParams::apply("keymint-bench"),
        &Patch::Apply(&json!({
            "apiVersion": "keymint.dev/v1alpha1", "kind": "APIKey",
            "metadata": {"name": KEY, "annotations": annotations},
        })),
    )
    .await?;
    Ok(Instant::now())
}

async fn key_of(secrets: &Api<Secret>) -> Option<String> {
    let secret = secrets.get_opt(KEY).await.ok()??;
    let bytes = secret.data?.get("key")?.0.clone();
    String::from_utf8(bytes).ok()
}

async fn wait_for_key(secrets: &Api<Secret>) -> Result<String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(key) = key_of(secrets).await {
            return Ok(key);
        }
        if Instant::now() > deadline {
            return Err("the bench key was never minted".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_new_key(secrets: &Api<Secret>, old: &str) -> Result<String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(key) = key_of(secrets).await.filter(|key| key != old) {
            return Ok(key);
        }
        if Instant::now() > deadline {
            return Err("the bench key was not rotated".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls the verify server (every millisecond) until it answers `code`.
async fn wait_answer(port: u16, key: &str, code: &str) -> Result<()> {
    let deadline = Instant::now() + DEADLINE;
    let body = json!({"key": key}).to_string();
    let wanted = format!("\"code\":\"{code}\"");
    loop {
        let answer = keymint_test_support::verify::request(
            port,
            "POST",
            "/v1/verify",
            &[("Content-Type", "application/json")],
            &body,
        );
        if answer.is_ok_and(|answer| answer.body.contains(&wanted)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the verify server never answered {code}").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
