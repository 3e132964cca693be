//! A resource whose own Secret the operator may not read: it is reported
//! (`Ready=False, SecretUnreadable` and a Warning Event) and retried with
//! exponential backoff, while keys in other namespaces are issued as usual.
//! The operator runs as a ServiceAccount whose RBAC grants `get` on Secrets
//! in every namespace but one. Its own test binary (own control plane), so
//! no other operator reconciles these keys.

#[allow(dead_code)]
#[path = "e2e/support.rs"]
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use keymint::api::ApiKey;
use keymint_testenv::{ControlPlane, rule};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;
use support::*;

const ACCOUNT: &str = "keymint-limited";

fn api_key(name: &str) -> ApiKey {
    serde_json::from_value(json!({
        "apiVersion": "keymint.dev/v1alpha1", "kind": "APIKey",
        "metadata": {"name": name},
        "spec": {"permissions": ["read"]}
    }))
    .expect("manifest")
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        ..Default::default()
    }
}

fn subject() -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".into(),
        name: ACCOUNT.into(),
        namespace: Some(OPERATOR_NAMESPACE.into()),
        ..Default::default()
    }]
}

fn role_ref(kind: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name: ACCOUNT.into(),
    }
}

/// Created, or already there (the grant runs twice).
fn created<T>(result: Result<T, kube::Error>) {
    match result {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("RBAC set-up: {error}"),
    }
}

/// Everything the operator needs, except `get` on Secrets, cluster-wide;
/// `get` on Secrets only in `readable` namespaces.
async fn grant(client: &kube::Client, readable: &[&str]) {
    created(
        Api::<ServiceAccount>::namespaced(client.clone(), OPERATOR_NAMESPACE)
            .create(
                &PostParams::default(),
                &ServiceAccount {
                    metadata: meta(ACCOUNT, Some(OPERATOR_NAMESPACE)),
                    ..Default::default()
                },
            )
            .await,
    );
    let rules: Vec<PolicyRule> = vec![
        rule(
            &["keymint.dev"],
            &["rootkeys", "serviceaccountkeys", "apikeys"],
            &["list", "watch"],
        ),
        rule(
            &["keymint.dev"],
            &[
                "rootkeys/status",
                "serviceaccountkeys/status",
                "apikeys/status",
            ],
            &["patch"],
        ),
        rule(&[""], &["serviceaccounts"], &["get", "list", "watch"]),
        rule(
            &[""],
            &["secrets"],
            &["list", "watch", "create", "patch", "delete"],
        ),
        rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
    ];
    created(
        Api::<ClusterRole>::all(client.clone())
            .create(
                &PostParams::default(),
                &ClusterRole {
                    metadata: meta(ACCOUNT, None),
                    rules: Some(rules),
                    ..Default::default()
                },
            )
            .await,
    );
    created(
        Api::<ClusterRoleBinding>::all(client.clone())
            .create(
                &PostParams::default(),
                &ClusterRoleBinding {
                    metadata: meta(ACCOUNT, None),
                    role_ref: role_ref("ClusterRole"),
                    subjects: Some(subject()),
                },
            )
            .await,
    );
    for namespace in readable.iter().copied() {
        created(
            Api::<Role>::namespaced(client.clone(), namespace)
                .create(
                    &PostParams::default(),
                    &Role {
                        metadata: meta(ACCOUNT, Some(namespace)),
                        rules: Some(vec![rule(&[""], &["secrets"], &["get"])]),
                    },
                )
                .await,
        );
        created(
            Api::<RoleBinding>::namespaced(client.clone(), namespace)
                .create(
                    &PostParams::default(),
                    &RoleBinding {
                        metadata: meta(ACCOUNT, Some(namespace)),
                        role_ref: role_ref("Role"),
                        subjects: Some(subject()),
                    },
                )
                .await,
        );
    }
}

/// A kubeconfig that authenticates as the limited ServiceAccount.
async fn kubeconfig(plane: &ControlPlane, client: &kube::Client) -> std::path::PathBuf {
    let token = plane
        .service_account_token(client, OPERATOR_NAMESPACE, ACCOUNT)
        .await
        .expect("TokenRequest");
    let admin = kube::config::Kubeconfig::read_from(plane.kubeconfig_path()).expect("kubeconfig");
    let ca = admin.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.certificate_authority.clone())
        .expect("certificate-authority");
    let path = plane.dir().join(format!("{ACCOUNT}.kubeconfig"));
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n    certificate-authority: {ca}\nusers:\n- name: {ACCOUNT}\n  user:\n    token: {token}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: {ACCOUNT}\ncurrent-context: local\n",
        plane.server()
    );
    std::fs::write(&path, config).expect("write kubeconfig");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_the_operator_may_not_read_is_reported_and_retried_with_backoff() {
    let plane = cluster();
    let client = plane.client().await.expect("client");
    let locked = plane.namespace(&client, "locked").await.expect("namespace");
    let open = plane.namespace(&client, "open").await.expect("namespace");
    grant(&client, &[&open, OPERATOR_NAMESPACE]).await;
    let kubeconfig = kubeconfig(plane, &client).await;
    let _operator = Operator::start("limited", &kubeconfig, &["--leader-elect=false"], &[]);

    // Another namespace is not held up.
    let open_keys = Api::<ApiKey>::namespaced(client.clone(), &open);
    apply(&open_keys, &api_key("fine")).await.expect("apply");
    wait_ready(&open_keys, "fine").await;

    let locked_keys = Api::<ApiKey>::namespaced(client.clone(), &locked);
    let mark = plane.audit_events().expect("audit").len();
    apply(&locked_keys, &api_key("unreadable"))
        .await
        .expect("apply");
    let reported = wait_reason(&locked_keys, "unreadable", "False", "SecretUnreadable").await;
    let message = &reported.status.expect("status").conditions[0].message;
    assert!(
        message.contains("Forbidden") && message.contains(&format!("{locked}/unreadable")),
        "names the Secret and the API server's reason: {message}"
    );
    let warning = wait_event(&client, &locked, "unreadable", "SecretUnreadable").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));

    // Backoff: 5 s, 10 s, 20 s ... between attempts, so 40 s after the first
    // refusal about 4 reads were made (one more when its own status write
    // wakes it at once); a fixed 5 s retry makes 9.
    let user = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{ACCOUNT}");
    let reads = || {
        plane
            .audit_events()
            .expect("audit")
            .into_iter()
            .skip(mark)
            .filter(|e| {
                e.user.username == user
                    && e.verb == "get"
                    && e.request_uri
                        .starts_with(&format!("/api/v1/namespaces/{locked}/secrets/unreadable"))
            })
            .count()
    };
    let first = std::time::Instant::now();
    keymint_testenv::eventually("a first refused read", WAIT, || async {
        if reads() >= 1 {
            Ok(())
        } else {
            Err("no read yet".to_string())
        }
    })
    .await;
    // A fixed window: the claim is a count over it.
    tokio::time::sleep(Duration::from_secs(40).saturating_sub(first.elapsed())).await;
    let attempts = reads();
    println!("reads of the unreadable Secret in 40 s: {attempts}");
    assert!(
        (2..=5).contains(&attempts),
        "retried with exponential backoff: {attempts} reads in 40 s"
    );

    // Granting the read ends it: the key is issued.
    grant(&client, &[&locked]).await;
    wait_ready(&locked_keys, "unreadable").await;
}
