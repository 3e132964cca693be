//! Real Argo CD (issue #13): the version pinned in `tests/argocd/go.mod`,
//! built by `make argocd`, running next to the node's control plane in its
//! own network namespace, reading a local git repository that holds this
//! repository's chart and examples. The example Applications are synced as
//! docs/argocd.md gives them (repo URL aside, and the image values the node
//! needs) from an empty cluster; then each test checks one claim of
//! docs/argocd.md with Argo CD itself.
//!
//! Argo CD owns the installation while these tests run; the first test of
//! the rest of the suite hands it back to Helm ([`hand_back`]).

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keymint::api::names::record;
use keymint::api::{ApiKey, RootKey};
use keymint_test_support::argocd_instance::{ARGOCD_NAMESPACE, ArgoCd, GitRepo};
use keymint_test_support::{Signal, eventually, send};
use keymint_testenv::AuditEvent;
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use serde_json::{Value, json};

use super::{
    NAMESPACE, RELEASE, ROLLOUT, VERSION, admin, audit, container_id, describe, helm,
    install_as_readme_says, node, node_with_image, scratch, wait_rollout,
};

/// The parent Application (app of apps) over `examples/argocd/`.
const PARENT: &str = "keymint-apps";
/// The two Applications of `examples/argocd/`.
const KEYMINT_APP: &str = "keymint";
const EXAMPLES_APP: &str = "keymint-examples";
/// Argo CD names itself at the start of the User-Agent of every request it
/// makes: `argocd-application-controller/…` and `argocd-server/…` for their
/// own clients, `argocd/…` for the kubectl library that syncs and patches
/// (seen in the audit log; the syncs are the latter).
const ARGOCD_AGENT: &str = "argocd";
/// keymint's CRDs (the chart installs them with the operator).
const KEYMINT_CRDS: [&str; 4] = [
    "apikeys.keymint.dev",
    "keyrings.keymint.dev",
    "rootkeys.keymint.dev",
    "serviceaccountkeys.keymint.dev",
];
/// How long the keys rotate under Argo CD's eyes in the no-sync-loop test.
const ROTATING_WINDOW: Duration = Duration::from_secs(90);
/// Sync, health and a Pod rollout on 2 cores.
const ARGO_WAIT: Duration = Duration::from_secs(240);

/// What the tests share: Argo CD, the git repository, what the first sync did.
struct Stage {
    argocd: ArgoCd,
    git: GitRepo,
    /// When Argo CD was started, as an audit-log position.
    audit_start: usize,
}

/// `Some` while Argo CD owns the installation.
static STAGE: Mutex<Option<Stage>> = Mutex::new(None);
static STAGE_FAILED: AtomicBool = AtomicBool::new(false);

/// The stage, also after a test panicked while holding it (its state is
/// what Argo CD and the cluster say, not what the panic interrupted).
fn staged() -> std::sync::MutexGuard<'static, Option<Stage>> {
    STAGE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn dir() -> PathBuf {
    scratch().join("argocd")
}

fn application_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "argoproj.io",
        "v1alpha1",
        "Application",
    ))
}

fn applications(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ARGOCD_NAMESPACE, &application_resource())
}

async fn application(client: &kube::Client, name: &str) -> Result<Value, String> {
    let app = applications(client)
        .get(name)
        .await
        .map_err(|e| format!("get Application {name}: {e}"))?;
    serde_json::to_value(app).map_err(|e| e.to_string())
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn sync_status(app: &Value) -> &str {
    text(app, "/status/sync/status")
}

fn health_status(app: &Value) -> &str {
    text(app, "/status/health/status")
}

/// The ids of the syncs Argo CD has recorded (`status.history`).
fn sync_ids(app: &Value) -> Vec<i64> {
    app.pointer("/status/history")
        .and_then(Value::as_array)
        .map(|history| {
            history
                .iter()
                .filter_map(|entry| entry["id"].as_i64())
                .collect()
        })
        .unwrap_or_default()
}

/// An Application's entry for one of its resources.
fn resource_entry<'a>(app: &'a Value, kind: &str, name: &str) -> Option<&'a Value> {
    app.pointer("/status/resources")?
        .as_array()?
        .iter()
        .find(|resource| resource["kind"] == kind && resource["name"] == name)
}

/// Waits until `name` is Synced and Healthy at the git revision `revision`
/// (any revision when empty).
async fn wait_synced_healthy(client: &kube::Client, name: &str, revision: &str) -> Value {
    eventually(
        &format!("Application {name} to be Synced and Healthy"),
        ARGO_WAIT,
        || async {
            let app = application(client, name).await?;
            let at = text(&app, "/status/sync/revision");
            let operation = text(&app, "/status/operationState/phase");
            if sync_status(&app) == "Synced"
                && health_status(&app) == "Healthy"
                && (revision.is_empty() || at == revision)
                && operation != "Running"
            {
                Ok(app)
            } else {
                Err(format!(
                    "sync {} at {at}, health {} ({}), operation {operation}: {}",
                    sync_status(&app),
                    health_status(&app),
                    text(&app, "/status/health/message"),
                    text(&app, "/status/operationState/message"),
                ))
            }
        },
    )
    .await
}

/// Asks Argo CD to read git again now (what a webhook or the UI's Refresh
/// does) instead of waiting for its reconciliation period.
async fn refresh(client: &kube::Client, name: &str) {
    applications(client)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("refresh {name}: {e}"));
}

/// Argo CD's writes since `mark` to the objects of `resource` (plural). Not
/// its dry runs: each comparison is a server-side dry-run apply of every
/// resource (Argo CD 3's server-side diff), a patch that changes nothing.
fn argocd_writes_since(mark: usize, resource: &str) -> Vec<AuditEvent> {
    audit()
        .into_iter()
        .skip(mark)
        .filter(|event| event.user_agent.starts_with(ARGOCD_AGENT))
        .filter(|event| !event.request_uri.contains("dryRun="))
        .filter(keymint_test_support::is_write)
        .filter(|event| {
            event
                .object_ref
                .as_ref()
                .is_some_and(|o| o.resource == resource)
        })
        .collect()
}

/// The example Applications as docs/argocd.md gives them, with the test
/// repository's URL and the image values a node-local image needs (as the
/// README's Helm commands add them).
fn write_applications(git: &GitRepo) {
    let folder = git.work().join("examples/argocd");
    for file in ["keymint.yaml", "keymint-examples.yaml"] {
        let path = folder.join(file);
        let mut app: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).expect("read"))
            .expect("an Application");
        app["spec"]["source"]["repoURL"] = json!(git.url());
        if file == "keymint.yaml" {
            app["spec"]["source"]["helm"]["valuesObject"] = json!({
                "image": {"repository": "keymint", "tag": VERSION, "pullPolicy": "Never"},
            });
        }
        std::fs::write(&path, serde_yaml::to_string(&app).expect("YAML")).expect("write");
    }
}

/// The parent Application: the app of apps docs/argocd.md describes.
fn parent(git: &GitRepo) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": PARENT, "namespace": ARGOCD_NAMESPACE},
        "spec": {
            "project": "default",
            "source": {"repoURL": git.url(), "targetRevision": "main", "path": "examples/argocd"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": ARGOCD_NAMESPACE},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}},
        },
    }))
    .expect("an Application")
}

/// Nothing of keymint left: no release, no CRDs (so no keys), no Argo CD
/// Applications from an earlier stage.
async fn empty_cluster(client: &kube::Client) {
    let kubeconfig = node().control_plane().kubeconfig_path();
    let kubeconfig = kubeconfig.display().to_string();
    let _ = helm().run(&[
        "uninstall",
        RELEASE,
        "--namespace",
        NAMESPACE,
        "--wait",
        "--kubeconfig",
        &kubeconfig,
    ]);
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for name in KEYMINT_CRDS {
        let _ = crds.delete(name, &DeleteParams::default()).await;
    }
    eventually("keymint's CRDs to be gone", ROLLOUT, || async {
        let left = crds
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let left: Vec<String> = left
            .items
            .iter()
            .map(|crd| crd.name_any())
            .filter(|name| name.ends_with(".keymint.dev"))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("left: {left:?}"))
        }
    })
    .await;
}

/// Argo CD running and the example Applications synced, starting from an
/// empty cluster (once per stage): the parent syncs once, `keymint` (wave -1)
/// is Healthy with the operator Pod on the node before `keymint-examples`
/// (wave 1) starts, and that one's first sync succeeds.
async fn stage(client: &kube::Client) {
    if staged().is_some() {
        return;
    }
    // A stage that failed once fails the other tests at once, not again
    // after the same minutes.
    assert!(
        !STAGE_FAILED.load(Ordering::SeqCst),
        "staging Argo CD failed in an earlier test"
    );
    STAGE_FAILED.store(true, Ordering::SeqCst);
    node_with_image();
    empty_cluster(client).await;
    let git = GitRepo::with(&dir().join("git"), &["charts/keymint", "examples"])
        .expect("a git repository");
    write_applications(&git);
    let revision = git
        .commit_and_push("the example Applications for this repository")
        .expect("push");
    let audit_start = super::audit_mark();
    let argocd = ArgoCd::start(node().control_plane(), &dir().join("instance"))
        .unwrap_or_else(|e| panic!("start Argo CD: {e}"));
    argocd
        .confined()
        .unwrap_or_else(|e| panic!("Argo CD listens only in its own network namespace: {e}"));
    let started = Instant::now();
    applications(client)
        .create(&PostParams::default(), &parent(&git))
        .await
        .expect("create the parent Application");
    let keymint = wait_synced_healthy(client, KEYMINT_APP, &revision).await;
    let examples = wait_synced_healthy(client, EXAMPLES_APP, &revision).await;
    let parent = wait_synced_healthy(client, PARENT, &revision).await;
    eprintln!(
        "argocd: empty cluster to every Application Synced and Healthy in {:?}",
        started.elapsed()
    );
    let pods = wait_rollout(client).await;
    assert_eq!(pods.len(), 1, "the operator Pod runs on the node");
    assert_eq!(
        pods[0]
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.clone())
            .as_deref(),
        Some(keymint_testenv::NODE_NAME)
    );
    assert_eq!(
        sync_ids(&parent).len(),
        1,
        "the parent synced once: {parent}"
    );
    assert_eq!(
        sync_ids(&examples).len(),
        1,
        "the keys synced at the first attempt: {examples}"
    );
    assert_eq!(
        sync_ids(&keymint).len(),
        1,
        "keymint synced once: {keymint}"
    );
    // Wave -1 before wave 1, in the API server's own order of requests: the
    // operator held its Lease before Argo CD applied the first key resource.
    // (The Pod's Ready time is no witness: a probe that times out on a busy
    // node moves it later.)
    let requests: Vec<AuditEvent> = audit().into_iter().skip(audit_start).collect();
    let resource_is = |event: &AuditEvent, resource: &str| {
        event
            .object_ref
            .as_ref()
            .is_some_and(|o| o.resource == resource)
    };
    let writes = ["create", "update", "patch"];
    let operator_pod = pods[0].name_any();
    let lease_held = requests.iter().position(|event| {
        event.user.pod_name() == Some(operator_pod.as_str())
            && resource_is(event, "leases")
            && writes.contains(&event.verb.as_str())
            && keymint_test_support::succeeded(event)
    });
    let first_key = requests.iter().position(|event| {
        event.user_agent.starts_with(ARGOCD_AGENT)
            && resource_is(event, "apikeys")
            && writes.contains(&event.verb.as_str())
    });
    match (lease_held, first_key) {
        (Some(lease), Some(key)) => assert!(
            lease < key,
            "the operator took its Lease (request {lease}) before Argo CD applied a key (request {key}); restarts {}",
            super::restart_count(&pods[0])
        ),
        other => panic!("the Lease and the first key in the audit log: {other:?}"),
    }
    *staged() = Some(Stage {
        argocd,
        git,
        audit_start,
    });
    STAGE_FAILED.store(false, Ordering::SeqCst);
}

fn with_stage<T>(f: impl FnOnce(&Stage) -> T) -> T {
    f(STAGE
        .lock()
        .expect("stage")
        .as_ref()
        .expect("Argo CD is staged"))
}

/// Gives the installation back to Helm for the rest of the node suite: the
/// Applications deleted (the parent without cascade, the children with it),
/// Argo CD stopped, the kept CRDs marked for Helm to adopt, the release
/// installed again the README's way. A no-op when Argo CD is not staged.
pub(super) async fn hand_back() {
    let Some(stage) = staged().take() else {
        return;
    };
    let client = admin().await;
    delete_applications(&stage.argocd, &client).await;
    drop(stage);
    // Retain Secrets outlive their keys (as documented): the examples applied
    // again later would find them and, rightly, not adopt them.
    let secrets = Api::<Secret>::namespaced(client.clone(), "default");
    for secret in secrets
        .list(&ListParams::default())
        .await
        .expect("list Secrets")
        .items
    {
        if secret.annotations().contains_key(record::KEY_ID) && secret.owner_references().is_empty()
        {
            let _ = secrets
                .delete(&secret.name_any(), &DeleteParams::default())
                .await;
        }
    }
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for name in KEYMINT_CRDS {
        let adopt = json!({"metadata": {"annotations": {
            "meta.helm.sh/release-name": RELEASE,
            "meta.helm.sh/release-namespace": NAMESPACE,
        }, "labels": {"app.kubernetes.io/managed-by": "Helm"}}});
        let _ = crds
            .patch(name, &PatchParams::default(), &Patch::Merge(adopt))
            .await;
    }
    install_as_readme_says(&helm(), node(), false);
}

/// Deletes the parent (keeping its children), then each child with its
/// resources, through argocd-server, and waits until they are gone.
async fn delete_applications(argocd: &ArgoCd, client: &kube::Client) {
    // The parent first, or its self-heal re-creates the children; then the
    // keys before the operator (which the keymint Application holds), and
    // whatever a failed test left.
    delete_application(argocd, client, PARENT, false).await;
    let mut left: Vec<String> = applications(client)
        .list(&ListParams::default())
        .await
        .expect("list Applications")
        .items
        .iter()
        .map(|app| app.name_any())
        .collect();
    left.sort_by_key(|name| name == KEYMINT_APP);
    for app in left {
        delete_application(argocd, client, &app, true).await;
    }
}

/// Deletes an Application through argocd-server (with its resources when
/// `cascade`) and waits until it is gone (`argocd app delete --wait` can
/// miss the deletion and wait forever).
async fn delete_application(argocd: &ArgoCd, client: &kube::Client, name: &str, cascade: bool) {
    let cascade = format!("--cascade={cascade}");
    argocd
        .cli(&["app", "delete", name, &cascade, "--yes"])
        .unwrap_or_else(|e| panic!("delete {name}: {e}"));
    eventually(
        &format!("Application {name} to be gone"),
        ARGO_WAIT,
        || async {
            match applications(client).get_opt(name).await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err("still there".to_string()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
}

async fn argo_scene() -> (tokio::sync::MutexGuard<'static, ()>, kube::Client) {
    let suite = super::SUITE.lock().await;
    let client = admin().await;
    stage(&client).await;
    (suite, client)
}

#[tokio::test]
async fn argo_cd_installs_keymint_then_the_keys_from_an_empty_cluster_in_one_sync() {
    let (_suite, client) = argo_scene().await;
    // (`stage` asserted the order and the single syncs when it synced.)
    let examples = application(&client, EXAMPLES_APP)
        .await
        .expect("keys Application");
    for (kind, name) in [
        ("APIKey", "billing-export"),
        ("APIKey", "reports-reader"),
        ("APIKey", "search-api"),
        ("ServiceAccountKey", "ingest-robot-key"),
        ("RootKey", "platform-root"),
    ] {
        let entry = resource_entry(&examples, kind, name)
            .unwrap_or_else(|| panic!("{kind} {name} in {examples}"));
        assert_eq!(entry["status"], "Synced", "{kind} {name}");
    }
    let keys = Api::<ApiKey>::namespaced(client.clone(), "default");
    for name in ["billing-export", "reports-reader", "search-api"] {
        keymint_test_support::wait_ready(&keys, name).await;
    }
    keymint_test_support::wait_ready(&Api::<RootKey>::all(client.clone()), "platform-root").await;
}

/// A sync with prune through argocd-server, once the automated sync Argo CD
/// may be running (after a push) has finished.
async fn sync_with_prune(client: &kube::Client, app: &str) {
    eventually(&format!("a pruning sync of {app}"), ARGO_WAIT, || async {
        wait_synced_healthy(client, app, "").await;
        with_stage(|stage| {
            stage
                .argocd
                .cli(&["app", "sync", app, "--prune", "--timeout", "120"])
        })
        .map(|_| ())
    })
    .await;
}

/// The health Argo CD reports for one resource of an Application.
fn resource_health(app: &Value, kind: &str, name: &str) -> (String, String) {
    let entry = resource_entry(app, kind, name);
    let field = |pointer: &str| {
        entry
            .map(|e| text(e, pointer).to_string())
            .unwrap_or_default()
    };
    (field("/health/status"), field("/health/message"))
}

/// Waits until Argo CD reports `status` (and a message containing
/// `message`) for the resource.
async fn wait_resource_health(
    client: &kube::Client,
    kind: &str,
    name: &str,
    status: &str,
    message: &str,
) -> Value {
    eventually(
        &format!("Argo CD to report {kind} {name} {status} ({message})"),
        ARGO_WAIT,
        || async {
            let app = application(client, EXAMPLES_APP).await?;
            let (health, said) = resource_health(&app, kind, name);
            if health == status && said.contains(message) {
                Ok(app)
            } else {
                Err(format!("{health}: {said}"))
            }
        },
    )
    .await
}

/// Writes `text` to `path` in the test repository, pushes, asks Argo CD to
/// look; the new revision.
async fn push(client: &kube::Client, path: &str, text: Option<&str>, message: &str) -> String {
    let revision = with_stage(|stage| {
        let file = stage.git.work().join(path);
        match text {
            Some(text) => std::fs::write(&file, text).expect("write to the work tree"),
            None => std::fs::remove_file(&file).expect("remove from the work tree"),
        }
        stage.git.commit_and_push(message).expect("push")
    });
    refresh(client, EXAMPLES_APP).await;
    revision
}

/// A key that rotates every few seconds (validFor 40 s, renewed 30 s early).
const ROTATING_KEY: &str = "apiVersion: keymint.dev/v1alpha1
kind: APIKey
metadata:
  name: rotating
  namespace: default
spec:
  permissions: [read]
  validFor: 40s
  renewBefore: 30s
  gracePeriod: 5s
";

fn key_id(key: &ApiKey) -> String {
    key.status
        .as_ref()
        .and_then(|status| status.id.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn argo_cd_keeps_the_keys_synced_while_they_rotate_with_no_sync_loop() {
    let (_suite, client) = argo_scene().await;
    let revision = push(
        &client,
        "examples/zz-rotating.yaml",
        Some(ROTATING_KEY),
        "a key that rotates every 10 s",
    )
    .await;
    let before = wait_synced_healthy(&client, EXAMPLES_APP, &revision).await;
    let syncs = sync_ids(&before);
    let keys = Api::<ApiKey>::namespaced(client.clone(), "default");
    let mark = super::audit_mark();
    let mut seen = vec![key_id(
        &keymint_test_support::wait_ready(&keys, "rotating").await,
    )];
    let deadline = Instant::now() + ROTATING_WINDOW;
    while Instant::now() < deadline {
        let app = application(&client, EXAMPLES_APP)
            .await
            .expect("Application");
        assert_eq!(
            sync_status(&app),
            "Synced",
            "no drift while the key rotates: {app}"
        );
        assert_eq!(health_status(&app), "Healthy", "{app}");
        assert_eq!(sync_ids(&app), syncs, "no new sync while the key rotates");
        let current = key_id(&keys.get("rotating").await.expect("the key"));
        if seen.last() != Some(&current) && !current.is_empty() {
            seen.push(current);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rotations = seen.len() - 1;
    assert!(
        rotations >= 6,
        "a rotation every 10 s for {ROTATING_WINDOW:?}: {seen:?}"
    );
    // Argo CD wrote nothing of keymint's while comparing every 10 s, and
    // keymint wrote only what rotating takes, not a write per comparison:
    // per rotation a Secret write and a status write for the new key, and
    // the same again when the grace period drops the previous key.
    for resource in ["apikeys", "secrets", "rootkeys", "serviceaccountkeys"] {
        let writes = argocd_writes_since(mark, resource);
        assert!(
            writes.is_empty(),
            "Argo CD wrote {resource}: {:?}",
            describe(&writes)
        );
    }
    let operator = super::operator_writes_since(mark);
    let key_writes = operator
        .iter()
        .filter(|event| {
            event
                .object_ref
                .as_ref()
                .is_some_and(|o| o.resource == "apikeys" || o.resource == "secrets")
        })
        .count();
    assert!(
        key_writes <= 4 * (rotations + 1),
        "{key_writes} key and Secret writes by keymint for {rotations} rotations: {:?}",
        describe(&operator)
    );
    push(
        &client,
        "examples/zz-rotating.yaml",
        None,
        "the rotating key goes",
    )
    .await;
}

/// The operator's process on the node, for SIGSTOP/SIGCONT.
async fn operator_pid(client: &kube::Client) -> u32 {
    let pods: Vec<Pod> = wait_rollout(client).await;
    node()
        .container_pid(&container_id(&pods[0]))
        .expect("the operator's pid")
}

#[tokio::test]
async fn argo_cd_shows_an_edit_progressing_until_keymint_observes_it_and_a_conflict_degraded() {
    let (_suite, client) = argo_scene().await;
    // A frozen operator cannot observe the edit: Argo CD syncs it and waits.
    let pid = operator_pid(&client).await;
    send(pid, Signal::STOP);
    let edited = with_stage(|stage| {
        std::fs::read_to_string(stage.git.work().join("examples/apikey-expiring.yaml"))
            .expect("read")
            .replace("validFor: 2160h", "validFor: 2000h")
    });
    let revision = push(
        &client,
        "examples/apikey-expiring.yaml",
        Some(&edited),
        "billing-export: validFor 2000h",
    )
    .await;
    let app = eventually("Argo CD to sync the edit", ARGO_WAIT, || async {
        let app = application(&client, EXAMPLES_APP).await?;
        let (health, message) = resource_health(&app, "APIKey", "billing-export");
        if text(&app, "/status/sync/revision") == revision
            && sync_status(&app) == "Synced"
            && health == "Progressing"
        {
            Ok((app, message))
        } else {
            Err(format!(
                "{} at {}, billing-export {health}: {message}",
                sync_status(&app),
                text(&app, "/status/sync/revision")
            ))
        }
    })
    .await;
    send(pid, Signal::CONT);
    assert!(
        app.1
            .contains("Waiting for keymint to observe generation 2"),
        "Progressing with the health check's message: {}",
        app.1
    );
    assert_eq!(
        health_status(&app.0),
        "Progressing",
        "the Application waits too"
    );
    let healthy = wait_synced_healthy(&client, EXAMPLES_APP, &revision).await;
    let (_, message) = resource_health(&healthy, "APIKey", "billing-export");
    assert!(
        message.contains("issued to Secret default/billing-export"),
        "{message}"
    );

    // A secretName naming a Secret keymint does not own: Degraded with
    // keymint's message; the foreign Secret untouched; pruned away, Healthy.
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "someone-elses", "namespace": "default"},
        "stringData": {"token": "not keymint's"},
    }))
    .expect("a Secret");
    let secrets = Api::<Secret>::namespaced(client.clone(), "default");
    let foreign = secrets
        .create(&PostParams::default(), &foreign)
        .await
        .expect("the foreign Secret");
    let conflicting = "apiVersion: keymint.dev/v1alpha1
kind: APIKey
metadata:
  name: conflicting
  namespace: default
spec:
  permissions: [read]
  secretName: someone-elses
";
    push(
        &client,
        "examples/zz-conflicting.yaml",
        Some(conflicting),
        "a key over someone else's Secret",
    )
    .await;
    let app = wait_resource_health(
        &client,
        "APIKey",
        "conflicting",
        "Degraded",
        "someone-elses",
    )
    .await;
    assert_eq!(
        health_status(&app),
        "Degraded",
        "the Application is Degraded: {app}"
    );
    let (_, message) = resource_health(&app, "APIKey", "conflicting");
    let ready = keys_ready_message(&client, "conflicting").await;
    assert_eq!(message, ready, "Argo CD shows keymint's Ready message");
    let revision = push(
        &client,
        "examples/zz-conflicting.yaml",
        None,
        "the conflicting key goes",
    )
    .await;
    wait_synced_healthy(&client, EXAMPLES_APP, &revision).await;
    let after = secrets
        .get("someone-elses")
        .await
        .expect("the foreign Secret is still there");
    assert_eq!(
        after.resource_version(),
        foreign.resource_version(),
        "never written"
    );
    secrets
        .delete("someone-elses", &DeleteParams::default())
        .await
        .expect("clean up");
}

async fn keys_ready_message(client: &kube::Client, name: &str) -> String {
    let key = Api::<ApiKey>::namespaced(client.clone(), "default")
        .get(name)
        .await
        .expect("the key");
    keymint_test_support::ready_message(&key)
}

#[tokio::test]
async fn the_rotate_action_through_argocd_server_rotates_exactly_once_and_the_app_stays_synced() {
    let (_suite, client) = argo_scene().await;
    let keys = Api::<ApiKey>::namespaced(client.clone(), "default");
    let before_key = keymint_test_support::wait_ready(&keys, "billing-export").await;
    let before = wait_synced_healthy(&client, EXAMPLES_APP, "").await;
    let mark = super::audit_mark();
    with_stage(|stage| {
        stage.argocd.cli(&[
            "app",
            "actions",
            "run",
            EXAMPLES_APP,
            "rotate",
            "--kind",
            "APIKey",
            "--group",
            "keymint.dev",
            "--resource-name",
            "billing-export",
            "--namespace",
            "default",
        ])
    })
    .expect("run the rotate action");
    let rotated = eventually(
        "the action's request to rotate the key",
        ARGO_WAIT,
        || async {
            let key = keys
                .get("billing-export")
                .await
                .map_err(|e| e.to_string())?;
            let asked = key
                .annotations()
                .get("keymint.dev/rotate-request")
                .cloned()
                .unwrap_or_default();
            let done = key
                .status
                .as_ref()
                .and_then(|s| s.last_rotate_request.clone())
                .unwrap_or_default();
            if !asked.is_empty() && asked == done && key_id(&key) != key_id(&before_key) {
                Ok(key)
            } else {
                Err(format!("requested {asked:?}, done {done:?}"))
            }
        },
    )
    .await;
    keymint_test_support::holds_for(
        "the key to stay rotated once, the app Synced",
        Duration::from_secs(12),
        || async {
            let key = keys
                .get("billing-export")
                .await
                .map_err(|e| e.to_string())?;
            let app = application(&client, EXAMPLES_APP).await?;
            if key_id(&key) != key_id(&rotated) {
                return Err(format!(
                    "rotated again: {} then {}",
                    key_id(&rotated),
                    key_id(&key)
                ));
            }
            if sync_status(&app) != "Synced" || sync_ids(&app) != sync_ids(&before) {
                return Err(format!(
                    "{} with syncs {:?} (before {:?})",
                    sync_status(&app),
                    sync_ids(&app),
                    sync_ids(&before)
                ));
            }
            Ok(())
        },
    )
    .await;
    // Argo CD wrote the key once: the action's patch of its annotation, no
    // sync putting anything back.
    let patches = argocd_writes_since(mark, "apikeys");
    let described = describe(&patches);
    assert_eq!(
        described,
        vec!["patch apikeys/billing-export by None".to_string()],
        "Argo CD's writes to keys: {described:?}"
    );
    let secret_writes: Vec<AuditEvent> = super::operator_secret_writes_since(mark)
        .into_iter()
        .filter(|event| {
            event.object_ref.as_ref().and_then(|o| o.name.as_deref()) == Some("billing-export")
        })
        .collect();
    assert_eq!(
        secret_writes.len(),
        1,
        "one rotation, one Secret write: {:?}",
        describe(&secret_writes)
    );
}

/// Where a Ready RootKey's Secret is (namespace, name).
async fn root_key_secret(client: &kube::Client, name: &str) -> (String, String) {
    let key = keymint_test_support::wait_ready(&Api::<RootKey>::all(client.clone()), name).await;
    let status = key.status.expect("a status");
    (
        status.secret_namespace.expect("the Secret's namespace"),
        status.secret_name.expect("the Secret's name"),
    )
}

/// The namespace of the deletion scenario (not the Application's own).
const DELETION_NAMESPACE: &str = "argocd-deletion";

fn deletion_manifests() -> String {
    format!(
        "apiVersion: keymint.dev/v1alpha1
kind: APIKey
metadata:
  name: deleted-with-its-key
  namespace: {DELETION_NAMESPACE}
spec:
  permissions: [read]
---
apiVersion: keymint.dev/v1alpha1
kind: APIKey
metadata:
  name: outlives-its-key
  namespace: {DELETION_NAMESPACE}
spec:
  permissions: [read]
  deletionPolicy: Retain
---
apiVersion: keymint.dev/v1alpha1
kind: APIKey
metadata:
  name: tracked-retained
  namespace: {DELETION_NAMESPACE}
spec:
  permissions: [read]
  deletionPolicy: Retain
---
apiVersion: keymint.dev/v1alpha1
kind: RootKey
metadata:
  name: argocd-deletion-root
spec:
  expiresAt: \"2030-01-01T00:00:00Z\"
"
    )
}

/// An Application of its own for the deletion scenario (the examples' stays).
fn deletion_application(git: &GitRepo) -> DynamicObject {
    let mut app: Value = serde_yaml::from_str(
        &std::fs::read_to_string(git.work().join("examples/argocd/keymint-examples.yaml"))
            .expect("read"),
    )
    .expect("YAML");
    app["metadata"]["name"] = json!("keymint-deletion");
    app["metadata"]["annotations"] = json!({});
    app["spec"]["source"]["path"] = json!("deletion");
    app["spec"]["destination"]["namespace"] = json!(DELETION_NAMESPACE);
    serde_json::from_value(app).expect("an Application")
}

#[tokio::test]
async fn argo_cd_never_prunes_keymint_secrets_and_deleting_an_application_keeps_what_the_docs_say()
{
    let (_suite, client) = argo_scene().await;
    // The namespace is not the Application's: deleting a namespace deletes
    // every Secret in it, Retain or not.
    keymint_test_support::create_if_absent(
        &Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()),
        &keymint_test_support::namespace(DELETION_NAMESPACE),
    )
    .await
    .expect("the namespace");
    let git_dir = with_stage(|stage| stage.git.work().to_path_buf());
    std::fs::create_dir_all(git_dir.join("deletion")).expect("a folder");
    std::fs::write(git_dir.join("deletion/keys.yaml"), deletion_manifests()).expect("write");
    let revision = with_stage(|stage| stage.git.commit_and_push("keys for the deletion scenario"))
        .expect("push");
    let app = with_stage(|stage| deletion_application(&stage.git));
    applications(&client)
        .create(&PostParams::default(), &app)
        .await
        .expect("create the Application");
    wait_synced_healthy(&client, "keymint-deletion", &revision).await;

    // A Retain Secret Argo CD does track (its tracking annotation set by
    // hand), marked as docs/argocd.md says: never pruned or deleted, and
    // the Application stays Synced.
    let secrets = Api::<Secret>::namespaced(client.clone(), DELETION_NAMESPACE);
    keymint_test_support::wait_ready(
        &Api::<ApiKey>::namespaced(client.clone(), DELETION_NAMESPACE),
        "tracked-retained",
    )
    .await;
    secrets
        .patch(
            "tracked-retained",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "argocd.argoproj.io/tracking-id": format!("keymint-deletion:/Secret:{DELETION_NAMESPACE}/tracked-retained"),
                "argocd.argoproj.io/compare-options": "IgnoreExtraneous",
                "argocd.argoproj.io/sync-options": "Prune=false,Delete=false",
            }}})),
        )
        .await
        .expect("mark the tracked Secret");
    refresh(&client, "keymint-deletion").await;
    eventually("Argo CD to track the Secret", ARGO_WAIT, || async {
        let app = application(&client, "keymint-deletion").await?;
        match resource_entry(&app, "Secret", "tracked-retained") {
            Some(_) if sync_status(&app) == "Synced" => Ok(()),
            entry => Err(format!("{} with {entry:?}", sync_status(&app))),
        }
    })
    .await;

    // Prune syncs delete no Secret: the others are not tracked, not the
    // Retain one, not the RootKey's in the operator's namespace.
    for app in [EXAMPLES_APP, "keymint-deletion", KEYMINT_APP] {
        sync_with_prune(&client, app).await;
    }
    let audit_start = with_stage(|stage| stage.audit_start);
    let deleted = argocd_writes_since(audit_start, "secrets")
        .into_iter()
        .filter(|event| event.verb == "delete")
        .collect::<Vec<_>>();
    assert!(
        deleted.is_empty(),
        "Argo CD deleted Secrets: {:?}",
        describe(&deleted)
    );
    let tracked = secrets
        .get("tracked-retained")
        .await
        .expect("the tracked Retain Secret stays through prune syncs");
    assert_eq!(
        sync_status(&application(&client, "keymint-deletion").await.expect("app")),
        "Synced"
    );
    let retained = secrets
        .get("outlives-its-key")
        .await
        .expect("the Retain Secret");
    let root = root_key_secret(&client, "argocd-deletion-root").await;
    for (name, app) in [
        ("search-api-credentials", EXAMPLES_APP),
        ("outlives-its-key", "keymint-deletion"),
    ] {
        let app = application(&client, app).await.expect("Application");
        assert!(
            resource_entry(&app, "Secret", name).is_none(),
            "{name} is not one of the Application's resources"
        );
    }

    // Deleting the Application with its resources (what `argocd app delete`
    // does by default) deletes the keys; Kubernetes deletes their Secrets
    // with them, except the Retain one (kept as it was) and the CRDs stay.
    with_stage(|stage| {
        stage
            .argocd
            .cli(&["app", "delete", "keymint-deletion", "--cascade", "--yes"])
    })
    .expect("delete the Application");
    eventually(
        "the keys' Secrets to go with their keys",
        ARGO_WAIT,
        || async {
            let left = secrets
                .get_opt("deleted-with-its-key")
                .await
                .map_err(|e| e.to_string())?;
            let root_left = Api::<Secret>::namespaced(client.clone(), &root.0)
                .get_opt(&root.1)
                .await
                .map_err(|e| e.to_string())?;
            if left.is_none() && root_left.is_none() {
                Ok(())
            } else {
                Err("still there".into())
            }
        },
    )
    .await;
    let kept_tracked = secrets
        .get("tracked-retained")
        .await
        .expect("the tracked Retain Secret is kept (Delete=false)");
    assert_eq!(kept_tracked.data, tracked.data, "its key unchanged");
    let kept = secrets
        .get("outlives-its-key")
        .await
        .expect("the Retain Secret is kept");
    assert_eq!(kept.data, retained.data, "its key unchanged");
    assert!(kept.owner_references().is_empty());
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for name in KEYMINT_CRDS {
        crds.get(name)
            .await
            .unwrap_or_else(|e| panic!("CRD {name} kept: {e}"));
    }
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .delete(DELETION_NAMESPACE, &DeleteParams::default())
        .await;
}
