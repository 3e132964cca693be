//! Proves the local control plane is a real one: CRDs are served, CEL rules
//! run, server-side apply detects conflicts, RBAC denies, the garbage
//! collector and the namespace controller run.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use keymint_test_support::{WAIT, apply_crd, eventually};
use keymint_testenv::ControlPlane;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ObjectMeta, Patch,
    PatchParams, PostParams,
};
use serde_json::json;

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.smoke.keymint.dev"},
        "spec": {
            "group": "smoke.keymint.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "properties": {
                            "min": {"type": "integer"},
                            "max": {"type": "integer"}
                        },
                        "x-kubernetes-validations": [
                            {"rule": "self.min <= self.max", "message": "spec.min must not exceed spec.max"}
                        ]
                    }}
                }}
            }]
        }
    }))
    .expect("widget CRD is valid JSON for the type")
}

async fn ensure_widget_crd(client: &kube::Client) -> Api<DynamicObject> {
    apply_crd(client, &widget_crd(), "smoke-test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let resource =
        ApiResource::from_gvk(&GroupVersionKind::gvk("smoke.keymint.dev", "v1", "Widget"));
    let namespace = ControlPlane::shared()
        .namespace(client, "smoke-crd")
        .await
        .expect("namespace");
    Api::namespaced_with(client.clone(), &namespace, &resource)
}

fn widget(name: &str, min: i64, max: i64) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "smoke.keymint.dev/v1", "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"min": min, "max": max}
    }))
    .expect("widget object")
}

#[tokio::test]
async fn a_custom_resource_definition_is_served() {
    let client = ControlPlane::shared().client().await.expect("client");
    let widgets = ensure_widget_crd(&client).await;
    // The CRD's REST endpoint may lag the Established condition by a moment.
    let created = eventually("a widget to be created", WAIT, || {
        let widgets = widgets.clone();
        async move {
            widgets
                .create(&PostParams::default(), &widget("good", 1, 2))
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    assert_eq!(created.data["spec"]["max"], 2);
    let read = widgets.get("good").await.expect("widget is served");
    assert_eq!(read.metadata.uid, created.metadata.uid);
}

#[tokio::test]
async fn a_cel_rule_rejects_a_bad_object_with_its_message() {
    let client = ControlPlane::shared().client().await.expect("client");
    let widgets = ensure_widget_crd(&client).await;
    let error = eventually("the bad widget to be refused by validation", WAIT, || {
        let widgets = widgets.clone();
        async move {
            match widgets
                .create(&PostParams::default(), &widget("bad", 5, 1))
                .await
            {
                Err(kube::Error::Api(status)) if status.code == 422 => Ok(status),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert!(
        error.message.contains("spec.min must not exceed spec.max"),
        "message: {}",
        error.message
    );
}

#[tokio::test]
async fn server_side_apply_reports_a_field_manager_conflict() {
    let plane = ControlPlane::shared();
    let client = plane.client().await.expect("client");
    let namespace = plane
        .namespace(&client, "smoke-ssa")
        .await
        .expect("namespace");
    let maps = Api::<ConfigMap>::namespaced(client, &namespace);
    let config = |value: &str| ConfigMap {
        metadata: ObjectMeta {
            name: Some("shared".into()),
            ..Default::default()
        },
        data: Some([("colour".to_string(), value.to_string())].into()),
        ..Default::default()
    };
    maps.patch(
        "shared",
        &PatchParams::apply("manager-a"),
        &Patch::Apply(&config("red")),
    )
    .await
    .expect("first apply");
    let conflict = maps
        .patch(
            "shared",
            &PatchParams::apply("manager-b"),
            &Patch::Apply(&config("blue")),
        )
        .await;
    match conflict {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 409, "{status:?}");
            assert!(
                status.message.contains("manager-a"),
                "conflict names the other manager: {}",
                status.message
            );
        }
        other => panic!("expected a 409 conflict, got {other:?}"),
    }
    let forced = maps
        .patch(
            "shared",
            &PatchParams::apply("manager-b").force(),
            &Patch::Apply(&config("blue")),
        )
        .await
        .expect("forced apply");
    assert_eq!(
        forced
            .data
            .unwrap_or_default()
            .get("colour")
            .map(String::as_str),
        Some("blue")
    );
}

#[tokio::test]
async fn rbac_denies_an_identity_without_a_role() {
    let plane = ControlPlane::shared();
    let admin = plane.client().await.expect("client");
    let namespace = plane
        .namespace(&admin, "smoke-rbac")
        .await
        .expect("namespace");
    let nobody = plane
        .service_account_client(&admin, &namespace, "nobody", vec![])
        .await
        .expect("service account client");
    match Api::<Secret>::namespaced(nobody.clone(), &namespace)
        .list(&Default::default())
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403, got {other:?}"),
    }
    // The same identity is allowed once a Role grants it: the 403 was RBAC's.
    let reader = plane
        .service_account_client(
            &admin,
            &namespace,
            "reader",
            vec![keymint_testenv::rule(&[""], &["secrets"], &["list"])],
        )
        .await
        .expect("service account client");
    Api::<Secret>::namespaced(reader, &namespace)
        .list(&Default::default())
        .await
        .expect("granted list");
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_secret() {
    let plane = ControlPlane::shared();
    let client = plane.client().await.expect("client");
    let namespace = plane
        .namespace(&client, "smoke-gc")
        .await
        .expect("namespace");
    let maps = Api::<ConfigMap>::namespaced(client.clone(), &namespace);
    let secrets = Api::<Secret>::namespaced(client, &namespace);
    let owner = maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("owner");
    let owned = Secret {
        metadata: ObjectMeta {
            name: Some("owned".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "owner".into(),
                uid: owner.metadata.uid.clone().expect("uid"),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &owned)
        .await
        .expect("owned secret");
    maps.delete("owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    eventually(
        "the garbage collector to delete the owned Secret",
        WAIT,
        || {
            let secrets = secrets.clone();
            async move {
                match secrets.get_opt("owned").await {
                    Ok(None) => Ok(()),
                    Ok(Some(_)) => Err("still there".into()),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await;
}

#[tokio::test]
async fn deleting_a_namespace_finishes() {
    let plane = ControlPlane::shared();
    let client = plane.client().await.expect("client");
    let namespace = plane
        .namespace(&client, "smoke-ns")
        .await
        .expect("namespace");
    let maps = Api::<ConfigMap>::namespaced(client.clone(), &namespace);
    maps.create(
        &PostParams::default(),
        &ConfigMap {
            metadata: ObjectMeta {
                name: Some("content".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .expect("content");
    let namespaces = Api::<Namespace>::all(client);
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .expect("delete namespace");
    eventually(
        "the namespace controller to finish deleting the namespace",
        WAIT,
        || {
            let namespaces = namespaces.clone();
            let namespace = namespace.clone();
            async move {
                match namespaces.get_opt(&namespace).await {
                    Ok(None) => Ok(()),
                    Ok(Some(ns)) => Err(format!("phase {:?}", ns.status.and_then(|s| s.phase))),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await;
}

#[tokio::test]
async fn the_audit_log_records_requests_by_user_and_verb() {
    let plane = ControlPlane::shared();
    let client = plane.client().await.expect("client");
    let namespace = plane
        .namespace(&client, "smoke-audit")
        .await
        .expect("namespace");
    let mark = plane.audit_events().expect("audit log").len();
    let maps = Api::<ConfigMap>::namespaced(client, &namespace);
    maps.create(
        &PostParams::default(),
        &ConfigMap {
            metadata: ObjectMeta {
                name: Some("counted".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .expect("create");
    maps.get("counted").await.expect("get");
    let counts = plane
        .count_requests_by_verb(keymint_testenv::ADMIN_USER, mark)
        .expect("count");
    assert!(
        counts.get("create").copied().unwrap_or(0) >= 1,
        "{counts:?}"
    );
    assert!(counts.get("get").copied().unwrap_or(0) >= 1, "{counts:?}");
    let events = plane.audit_events().expect("audit log");
    let created = events[mark..]
        .iter()
        .find(|e| {
            e.verb == "create"
                && e.object_ref.as_ref().is_some_and(|r| {
                    r.resource == "configmaps" && r.namespace.as_deref() == Some(namespace.as_str())
                })
        })
        .expect("the create is in the audit log");
    assert!(!created.audit_id.is_empty());
    assert!(created.request_uri.contains(&namespace));
}
