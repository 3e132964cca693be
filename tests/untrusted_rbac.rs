//! A resource whose own Secret the operator may not read: it is reported
//! (`Ready=False, SecretUnreadable` and a Warning Event) and retried with
//! exponential backoff, while keys in other namespaces are issued as usual.
//! The operator runs as a ServiceAccount whose RBAC grants `get` on Secrets
//! in every namespace but one. Its own test binary (own control plane), so
//! no other operator reconciles these keys.

use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use keymint::api::ApiKey;
use keymint_test_support::*;
use keymint_testenv::rule;
use kube::api::{Api, ObjectMeta};

const ACCOUNT: &str = "keymint-limited";

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
fn created(result: Result<(), kube::Error>) {
    result.unwrap_or_else(|error| panic!("RBAC set-up: {error}"));
}

/// Everything the operator needs, except `get` on Secrets, cluster-wide;
/// `get` on Secrets only in `readable` namespaces.
async fn grant(client: &kube::Client, readable: &[&str]) {
    created(
        create_if_absent(
            &Api::<ServiceAccount>::namespaced(client.clone(), OPERATOR_NAMESPACE),
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
        create_if_absent(
            &Api::<ClusterRole>::all(client.clone()),
            &ClusterRole {
                metadata: meta(ACCOUNT, None),
                rules: Some(rules),
                ..Default::default()
            },
        )
        .await,
    );
    created(
        create_if_absent(
            &Api::<ClusterRoleBinding>::all(client.clone()),
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
            create_if_absent(
                &Api::<Role>::namespaced(client.clone(), namespace),
                &Role {
                    metadata: meta(ACCOUNT, Some(namespace)),
                    rules: Some(vec![rule(&[""], &["secrets"], &["get"])]),
                },
            )
            .await,
        );
        created(
            create_if_absent(
                &Api::<RoleBinding>::namespaced(client.clone(), namespace),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_the_operator_may_not_read_is_reported_and_retried_with_backoff() {
    let plane = cluster();
    let client = plane.client().await.expect("client");
    let locked = plane.namespace(&client, "locked").await.expect("namespace");
    let open = plane.namespace(&client, "open").await.expect("namespace");
    grant(&client, &[&open, OPERATOR_NAMESPACE]).await;
    let kubeconfig = service_account_kubeconfig(plane, &client, OPERATOR_NAMESPACE, ACCOUNT).await;
    let _operator = Operator::start("limited", &kubeconfig, &["--leader-elect=false"], &[]);

    // Another namespace is not held up.
    let open_keys = Api::<ApiKey>::namespaced(client.clone(), &open);
    apply(&open_keys, &api_key("fine", read_only()))
        .await
        .expect("apply");
    wait_ready(&open_keys, "fine").await;

    // A Secret is there already (a new key's Secret is created without a
    // read, so only an existing one must be read): another application's.
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &locked)
        .create(
            &Default::default(),
            &opaque_secret("unreadable", &[("password", "hunter2")]),
        )
        .await
        .expect("create the Secret");
    let locked_keys = Api::<ApiKey>::namespaced(client.clone(), &locked);
    let mark = audit_mark();
    apply(&locked_keys, &api_key("unreadable", read_only()))
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
        since(mark)
            .by(&user)
            .verbs(&["get"])
            .only(|e| {
                e.request_uri
                    .starts_with(&secret_path(&locked, "unreadable"))
            })
            .count()
    };
    let first = std::time::Instant::now();
    eventually("a first refused read", WAIT, || async {
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

    // Granting the read ends it: the Secret is read, found to be another
    // application's, and left alone.
    grant(&client, &[&locked]).await;
    wait_reason(&locked_keys, "unreadable", "False", "SecretConflict").await;
}
