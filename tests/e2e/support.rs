//! Shared set-up: the control plane, keymint's CRDs, one `keymint run`
//! process, and helpers that poll with a deadline.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keymint::api::KeyStatus;
use keymint_testenv::{ControlPlane, eventually};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub const WAIT: Duration = Duration::from_secs(60);
/// The operator's own namespace: RootKey Secrets go here by default.
pub const OPERATOR_NAMESPACE: &str = "keymint-system";
/// A second namespace RootKey Secrets may be written to.
pub const ROOT_KEY_NAMESPACE: &str = "keymint-roots";
pub const TEST_MANAGER: &str = "e2e-test";

/// A `keymint run` process started by a test.
pub struct Operator {
    pub child: Mutex<Child>,
    pub log: PathBuf,
    pub metrics_port: u16,
}

impl Operator {
    /// Starts `keymint run` as the identity in `kubeconfig`, with `extra` arguments.
    pub fn start(
        name: &str,
        kubeconfig: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Operator {
        let plane = cluster();
        let log = plane.dir().join(format!("{name}.log"));
        let metrics_port = keymint_testenv::free_port().expect("free port");
        let mut command = Command::new(env!("CARGO_BIN_EXE_keymint"));
        command.args([
            "run",
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--operator-namespace",
            OPERATOR_NAMESPACE,
            "--root-key-namespaces",
            &format!("{OPERATOR_NAMESPACE},{ROOT_KEY_NAMESPACE}"),
            "--metrics-address",
            &format!("127.0.0.1:{metrics_port}"),
        ]);
        if !extra.contains(&"--log-format") {
            // JSON unless the test asks for another format (clap refuses the flag twice).
            command.args(["--log-format", "json"]);
        }
        if !extra.contains(&"--log-level") {
            // Debug level: the log scans prove keys stay out of the log even here.
            command.args([
                "--log-level",
                "debug,hyper=info,tower=info,kube_client=info,rustls=info,h2=info",
            ]);
        }
        command.args(extra).envs(env.iter().copied());
        let child =
            keymint_testenv::spawn_tied_to_process(command, &log).expect("start keymint run");
        Operator {
            child: Mutex::new(child),
            log,
            metrics_port,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.lock().expect("child").id()).expect("pid fits")
    }
}

/// The control plane with keymint's CRDs and the operator's namespaces installed.
pub fn cluster() -> &'static ControlPlane {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        ControlPlane::shared();
        // Set-up runs on its own runtime: each test has its own.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(install_crds_and_namespaces());
        })
        .join()
        .expect("set-up panicked");
    });
    ControlPlane::shared()
}

/// The control plane with one operator running (the controller tests share it).
pub fn plane() -> &'static ControlPlane {
    operator();
    cluster()
}

/// The shared operator process (started on first use).
pub fn operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        Operator::start(
            "operator",
            &cluster().operator_kubeconfig_path(),
            &["--leader-elect=false"],
            &[],
        )
    })
}

async fn install_crds_and_namespaces() {
    let client = ControlPlane::shared().client().await.expect("client");
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in keymint::api::crds() {
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("CRD applies");
        eventually(&format!("CRD {name} to be established"), WAIT, || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let crd = crds.get(&name).await.map_err(|e| e.to_string())?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    Ok(())
                } else {
                    Err("not established".into())
                }
            }
        })
        .await;
    }
    let namespaces = Api::<Namespace>::all(client);
    for name in [OPERATOR_NAMESPACE, ROOT_KEY_NAMESPACE] {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match namespaces.create(&PostParams::default(), &namespace).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => panic!("create namespace {name}: {error}"),
        }
    }
}

/// An admin client and a fresh namespace for one test.
pub async fn setup(prefix: &str) -> (kube::Client, String) {
    let plane = plane();
    let client = plane.client().await.expect("client");
    let namespace = plane.namespace(&client, prefix).await.expect("namespace");
    (client, namespace)
}

/// Server-side applies `object` as the test's field manager, with strict field validation.
pub async fn apply<K>(api: &Api<K>, object: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let mut params = PatchParams::apply(TEST_MANAGER).force();
    params.field_validation = Some(kube::api::ValidationDirective::Strict);
    api.patch(&object.name_any(), &params, &Patch::Apply(object))
        .await
}

pub trait HasStatus {
    fn key_status(&self) -> Option<&KeyStatus>;
}

macro_rules! has_status {
    ($($kind:ty),*) => {$(
        impl HasStatus for $kind {
            fn key_status(&self) -> Option<&KeyStatus> {
                self.status.as_ref()
            }
        }
    )*};
}
has_status!(
    keymint::api::ApiKey,
    keymint::api::RootKey,
    keymint::api::ServiceAccountKey
);

/// The Ready condition's (status, reason), if any.
pub fn ready_of<K: HasStatus>(object: &K) -> Option<(String, String)> {
    object
        .key_status()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Polls until `check` accepts the object (observedGeneration current), and returns it.
pub async fn wait_for<K, F>(api: &Api<K>, name: &str, what: &str, check: F) -> K
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + HasStatus,
    F: Fn(&K) -> bool,
{
    eventually(&format!("{name}: {what}"), WAIT, || {
        let api = api.clone();
        let check = &check;
        async move {
            let object = api.get(name).await.map_err(|e| e.to_string())?;
            let current =
                object.key_status().and_then(|s| s.observed_generation) == object.meta().generation;
            if current && check(&object) {
                Ok(object)
            } else {
                Err(format!("{:?}", object.key_status()))
            }
        }
    })
    .await
}

/// Waits for Ready=True with a current observedGeneration.
pub async fn wait_ready<K>(api: &Api<K>, name: &str) -> K
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + HasStatus,
{
    wait_for(api, name, "Ready=True", |o| {
        ready_of(o).is_some_and(|(s, _)| s == "True")
    })
    .await
}

/// Waits for Ready with the given status and reason.
pub async fn wait_reason<K>(api: &Api<K>, name: &str, status: &str, reason: &str) -> K
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + HasStatus,
{
    wait_for(api, name, &format!("Ready={status}/{reason}"), |o| {
        ready_of(o) == Some((status.to_string(), reason.to_string()))
    })
    .await
}

pub fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

pub fn annotation(secret: &Secret, key: &str) -> Option<String> {
    secret.annotations().get(key).cloned()
}

/// Events (events.k8s.io) about the object named `name` in `namespace`.
pub async fn events_for(client: &kube::Client, namespace: &str, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// Waits for an Event with `reason` about `name`.
pub async fn wait_event(client: &kube::Client, namespace: &str, name: &str, reason: &str) -> Event {
    eventually(&format!("event {reason} for {name}"), WAIT, || async move {
        let events = events_for(client, namespace, name).await;
        events
            .iter()
            .find(|e| e.reason.as_deref() == Some(reason))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "{:?}",
                    events.iter().map(|e| e.reason.clone()).collect::<Vec<_>>()
                )
            })
    })
    .await
}

/// The shared operator's log so far.
pub fn operator_log() -> String {
    operator().log()
}

/// Waits until `name` no longer exists (`what` says why it should go).
pub async fn wait_gone<K>(api: &Api<K>, name: &str, what: &str)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    eventually(what, WAIT, || async {
        match api.get_opt(name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err(format!("{name} still there")),
        }
    })
    .await
}
