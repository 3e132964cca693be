//! The API contract as the real API server enforces it: every validation rule
//! of the CRDs refuses what it must, with a message naming the field, and
//! nothing invalid is ever stored; the valid variants are accepted and stored
//! unchanged; `kubectl explain` shows every field's description; `kubectl get
//! keymint -A` lists all three kinds with their printer columns.
//!
//! The tables are checked row by row and every mismatch is collected, so one
//! run reports all of them at once.

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::core::v1::ServiceAccount;
use keymint::api::{self, ApiKey, RootKey, ServiceAccountKey};
use keymint_testenv::eventually;
use kube::Resource;
use kube::api::{
    Api, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams,
    ValidationDirective,
};
use serde_json::{Value, json};

use keymint_test_support::*;

use crate::table::{self, Ctx, Kind, merged};

/// What the API server must answer to an invalid manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// A value the schema or a CEL rule refuses: 422 on every route.
    Invalid,
    /// A field the schema does not declare: 400 on create (strict field
    /// validation). Server-side apply cannot even convert such a patch to the
    /// schema's type and answers 500 "failed to create typed patch object"
    /// (kubernetes/kubernetes#139253, still open) or, once fixed, 400. A merge
    /// patch with strict validation answers 422 naming the unknown field.
    Unknown,
    /// A value of the wrong JSON type, or a duplicate in a `set` list: 422 on
    /// create; server-side apply answers 500 "failed to create typed patch
    /// object" (same issue) or, once fixed, a 4xx.
    Structural,
}

/// How a manifest is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// POST `?fieldValidation=Strict` (`kubectl create`, client-side apply).
    Create,
    /// Server-side apply of a new object, strict, as `support::apply`.
    Apply,
    /// Server-side apply over an existing valid object, strict.
    Update,
    /// Merge patch of the status subresource, strict.
    StatusMerge,
    /// Server-side apply of the status subresource, strict.
    StatusApply,
}

impl Route {
    fn server_side_apply(self) -> bool {
        matches!(self, Route::Apply | Route::Update | Route::StatusApply)
    }
}

/// One invalid manifest: its spec must be refused naming `path`.
struct Invalid {
    kind: Kind,
    what: String,
    /// The whole spec; `Null` sends no spec at all.
    spec: Value,
    /// A top-level field sent besides `spec`.
    extra: Option<(&'static str, Value)>,
    path: &'static str,
    refusal: Refusal,
}

/// One invalid status, patched onto an existing object's status subresource.
struct InvalidStatus {
    kind: Kind,
    what: String,
    status: Value,
    path: &'static str,
    refusal: Refusal,
}

/// One valid spec: accepted and stored unchanged.
struct Valid {
    kind: Kind,
    what: String,
    spec: Value,
}

fn labels(keys: impl IntoIterator<Item = String>) -> Value {
    Value::Object(keys.into_iter().map(|k| (k, json!("v"))).collect())
}

/// A table row: (field path the error must name, refusal, what, patch onto
/// the kind's minimal spec).
type Case = (&'static str, Refusal, String, Value);

/// The invalid cases every kind shares.
#[rustfmt::skip]
fn common_invalid_cases() -> Vec<Case> {
    use Refusal::*;
    let (valid_for, renew, grace) = ("spec.validFor", "spec.renewBefore", "spec.gracePeriod");
    let (bits, prefix) = ("spec.format.entropyBits", "spec.format.prefix");
    let (secret, expires, policy) = ("spec.secretName", "spec.expiresAt", "spec.deletionPolicy");
    let (labels_, annotations) = ("spec.secretTemplate.labels", "spec.secretTemplate.annotations");
    let cases: Vec<(&'static str, Refusal, &str, Value)> = vec![
        // Durations.
        (valid_for, Invalid, "validFor does not parse", json!({"validFor": "ten minutes"})),
        (valid_for, Invalid, "validFor in days (no Go unit)", json!({"validFor": "90d"})),
        (valid_for, Invalid, "validFor a bare number", json!({"validFor": "3600"})),
        (valid_for, Invalid, "validFor negative", json!({"validFor": "-1h"})),
        (valid_for, Invalid, "validFor zero", json!({"validFor": "0s"})),
        (valid_for, Invalid, "validFor below 1s", json!({"validFor": "999ms"})),
        (valid_for, Invalid, "validFor over the cap", json!({"validFor": "876001h"})),
        (valid_for, Invalid, "validFor over the cap by 1s", json!({"validFor": "876000h1s"})),
        (valid_for, Invalid, "validFor over 32 characters", json!({"validFor": "1h".repeat(17)})),
        (valid_for, Structural, "validFor a number", json!({"validFor": 3600})),
        (renew, Invalid, "renewBefore does not parse", json!({"renewBefore": "soon"})),
        (renew, Invalid, "renewBefore negative", json!({"renewBefore": "-10m"})),
        (renew, Invalid, "renewBefore over the cap", json!({"renewBefore": "876001h"})),
        (renew, Invalid, "renewBefore = validFor", json!({"validFor": "1h", "renewBefore": "1h"})),
        (renew, Invalid, "renewBefore = validFor in other units", json!({"validFor": "1h", "renewBefore": "60m"})),
        (renew, Invalid, "renewBefore > validFor", json!({"validFor": "1h", "renewBefore": "2h"})),
        (grace, Invalid, "gracePeriod does not parse", json!({"gracePeriod": "1 day"})),
        (grace, Invalid, "gracePeriod negative", json!({"gracePeriod": "-1s"})),
        (grace, Invalid, "gracePeriod over the cap", json!({"gracePeriod": "900000h"})),
        // Token format.
        (bits, Invalid, "entropyBits 127", json!({"format": {"entropyBits": 127}})),
        (bits, Invalid, "entropyBits 0", json!({"format": {"entropyBits": 0}})),
        (bits, Invalid, "entropyBits 513", json!({"format": {"entropyBits": 513}})),
        (bits, Invalid, "entropyBits 4096", json!({"format": {"entropyBits": 4096}})),
        (bits, Structural, "entropyBits a string", json!({"format": {"entropyBits": "256"}})),
        (bits, Structural, "entropyBits a fraction", json!({"format": {"entropyBits": 256.5}})),
        (prefix, Invalid, "prefix uppercase", json!({"format": {"prefix": "Billing"}})),
        (prefix, Invalid, "prefix starts with a digit", json!({"format": {"prefix": "1billing"}})),
        (prefix, Invalid, "prefix 17 characters", json!({"format": {"prefix": "abcdefghijklmnopq"}})),
        (prefix, Invalid, "prefix with an underscore", json!({"format": {"prefix": "my_key"}})),
        (prefix, Invalid, "prefix with a hyphen", json!({"format": {"prefix": "my-key"}})),
        (prefix, Invalid, "prefix empty", json!({"format": {"prefix": ""}})),
        // Secret name.
        (secret, Invalid, "secretName uppercase", json!({"secretName": "Billing-Key"})),
        (secret, Invalid, "secretName with an underscore", json!({"secretName": "billing_key"})),
        (secret, Invalid, "secretName starts with a hyphen", json!({"secretName": "-billing"})),
        (secret, Invalid, "secretName ends with a dot", json!({"secretName": "billing."})),
        (secret, Invalid, "secretName 254 characters", json!({"secretName": "a".repeat(254)})),
        // Unknown fields, at spec level and nested.
        ("spec.foo", Unknown, "unknown spec field", json!({"foo": "bar"})),
        ("spec.validfor", Unknown, "miscased spec field", json!({"validfor": "1h"})),
        ("spec.format.size", Unknown, "unknown field in format", json!({"format": {"size": 32}})),
        ("spec.secretTemplate.label", Unknown, "unknown field in secretTemplate", json!({"secretTemplate": {"label": {"a": "b"}}})),
        // expiresAt.
        (expires, Invalid, "expiresAt a date only", json!({"expiresAt": "2027-01-01"})),
        (expires, Invalid, "expiresAt garbage", json!({"expiresAt": "next tuesday"})),
        (expires, Invalid, "expiresAt with a space for T", json!({"expiresAt": "2027-01-01 00:00:00Z"})),
        (expires, Invalid, "expiresAt without an offset", json!({"expiresAt": "2027-01-01T00:00:00"})),
        (expires, Invalid, "expiresAt month 13", json!({"expiresAt": "2027-13-01T00:00:00Z"})),
        (expires, Invalid, "expiresAt February 30", json!({"expiresAt": "2027-02-30T00:00:00Z"})),
        (expires, Invalid, "expiresAt hour 24", json!({"expiresAt": "2027-01-01T24:00:00Z"})),
        (expires, Invalid, "expiresAt offset +24:00", json!({"expiresAt": "2027-01-01T00:00:00+24:00"})),
        (expires, Invalid, "expiresAt 10 fraction digits", json!({"expiresAt": "2027-01-01T00:00:00.1234567891Z"})),
        (expires, Structural, "expiresAt a Unix time", json!({"expiresAt": 1_800_000_000})),
        // deletionPolicy.
        (policy, Invalid, "deletionPolicy Orphan", json!({"deletionPolicy": "Orphan"})),
        (policy, Invalid, "deletionPolicy lowercase", json!({"deletionPolicy": "retain"})),
        (policy, Invalid, "deletionPolicy empty", json!({"deletionPolicy": ""})),
        // secretTemplate: values, keys, sizes.
        (labels_, Invalid, "label value with a space", json!({"secretTemplate": {"labels": {"team": "two words"}}})),
        (labels_, Invalid, "label value starts with a hyphen", json!({"secretTemplate": {"labels": {"team": "-payments"}}})),
        (labels_, Invalid, "label value ends with a dot", json!({"secretTemplate": {"labels": {"team": "payments."}}})),
        (labels_, Invalid, "label value 64 characters", json!({"secretTemplate": {"labels": {"team": "a".repeat(64)}}})),
        (labels_, Structural, "label value a number", json!({"secretTemplate": {"labels": {"tier": 5}}})),
        (labels_, Invalid, "label key with a space", json!({"secretTemplate": {"labels": {"bad key": "a"}}})),
        (labels_, Invalid, "label key with an uppercase prefix", json!({"secretTemplate": {"labels": {"Example.com/team": "a"}}})),
        (labels_, Invalid, "label key with two slashes", json!({"secretTemplate": {"labels": {"a/b/c": "a"}}})),
        (labels_, Invalid, "label key name 64 characters", json!({"secretTemplate": {"labels": {"a".repeat(64): "a"}}})),
        (labels_, Invalid, "65 labels", json!({"secretTemplate": {"labels": labels((0..65).map(|i| format!("l{i}")))}})),
        (annotations, Invalid, "annotation key with a space", json!({"secretTemplate": {"annotations": {"bad key": "a"}}})),
        (annotations, Invalid, "annotation value 4097 characters", json!({"secretTemplate": {"annotations": {"note": "a".repeat(4097)}}})),
        (annotations, Invalid, "33 annotations", json!({"secretTemplate": {"annotations": labels((0..33).map(|i| format!("a{i}")))}})),
    ];
    let mut cases: Vec<Case> = cases
        .into_iter()
        .map(|(path, refusal, what, patch)| (path, refusal, what.to_string(), patch))
        .collect();
    // Reserved keys, as labels and as annotations.
    for key in [
        "kubernetes.io/service-account.name",
        "k8s.io/team",
        "foo.kubernetes.io/bar",
        "node.k8s.io/pool",
        "argocd.argoproj.io/instance",
        "argocd.argoproj.io/tracking-id",
        "keymint.dev/key-id",
        "sub.keymint.dev/key-id",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/managed-by",
        "x.app.kubernetes.io/name",
    ] {
        cases.push((labels_, Invalid, format!("reserved label {key}"), json!({"secretTemplate": {"labels": {key: "a"}}})));
        cases.push((annotations, Invalid, format!("reserved annotation {key}"), json!({"secretTemplate": {"annotations": {key: "a"}}})));
    }
    cases
}

/// The invalid cases of one kind's own fields.
#[rustfmt::skip]
fn kind_invalid_cases(kind: Kind) -> Vec<Case> {
    use Refusal::*;
    let cases: Vec<(&'static str, Refusal, &str, Value)> = match kind {
        Kind::Sak => {
            let account = "spec.serviceAccountName";
            vec![
                (account, Invalid, "serviceAccountName uppercase", json!({"serviceAccountName": "Robot"})),
                (account, Invalid, "serviceAccountName with an underscore", json!({"serviceAccountName": "robot_one"})),
                (account, Invalid, "serviceAccountName starts with a hyphen", json!({"serviceAccountName": "-robot"})),
                (account, Invalid, "serviceAccountName 254 characters", json!({"serviceAccountName": "a".repeat(254)})),
                (account, Invalid, "serviceAccountName empty", json!({"serviceAccountName": ""})),
                (account, Invalid, "serviceAccountName missing", json!({"serviceAccountName": null})),
                (account, Structural, "serviceAccountName a number", json!({"serviceAccountName": 42})),
            ]
        }
        Kind::Api => {
            let permissions = "spec.permissions";
            vec![
                (permissions, Invalid, "permissions empty", json!({"permissions": []})),
                (permissions, Invalid, "permissions missing", json!({"permissions": null})),
                (permissions, Invalid, "permission uppercase", json!({"permissions": ["Read"]})),
                (permissions, Invalid, "permission starts with a colon", json!({"permissions": [":read"]})),
                (permissions, Invalid, "permission with a space", json!({"permissions": ["read write"]})),
                (permissions, Invalid, "permission with a slash", json!({"permissions": ["models/write"]})),
                (permissions, Invalid, "permission empty", json!({"permissions": [""]})),
                (permissions, Invalid, "permission 64 characters", json!({"permissions": ["a".repeat(64)]})),
                (permissions, Invalid, "65 permissions", json!({"permissions": (0..65).map(|i| format!("p{i}")).collect::<Vec<_>>()})),
                (permissions, Structural, "duplicate permissions", json!({"permissions": ["read", "write", "read"]})),
                (permissions, Structural, "permissions a string", json!({"permissions": "read"})),
                ("spec.description", Invalid, "description 1025 characters", json!({"description": "a".repeat(1025)})),
            ]
        }
        Kind::Root => {
            let namespace = "spec.secretNamespace";
            vec![
                (namespace, Invalid, "secretNamespace uppercase", json!({"secretNamespace": "Keymint-System"})),
                (namespace, Invalid, "secretNamespace with an underscore", json!({"secretNamespace": "keymint_system"})),
                (namespace, Invalid, "secretNamespace with a dot (a subdomain)", json!({"secretNamespace": "keymint.system"})),
                (namespace, Invalid, "secretNamespace starts with a hyphen", json!({"secretNamespace": "-keymint"})),
                (namespace, Invalid, "secretNamespace 64 characters", json!({"secretNamespace": "a".repeat(64)})),
                (namespace, Invalid, "secretNamespace empty", json!({"secretNamespace": ""})),
            ]
        }
    };
    cases
        .into_iter()
        .map(|(path, refusal, what, patch)| (path, refusal, what.to_string(), patch))
        .collect()
}

fn invalid_rows() -> Vec<Invalid> {
    let mut rows = Vec::new();
    for kind in Kind::ALL {
        for (path, refusal, what, patch) in common_invalid_cases()
            .into_iter()
            .chain(kind_invalid_cases(kind))
        {
            rows.push(Invalid {
                kind,
                what,
                spec: merged(&kind.minimal(), &patch),
                extra: None,
                path,
                refusal,
            });
        }
        rows.push(Invalid {
            kind,
            what: "no spec".into(),
            spec: Value::Null,
            extra: None,
            path: "spec",
            refusal: Refusal::Invalid,
        });
        rows.push(Invalid {
            kind,
            what: "spec misspelt specs".into(),
            spec: Value::Null,
            extra: Some(("specs", kind.minimal())),
            path: "specs",
            refusal: Refusal::Unknown,
        });
    }
    rows
}

#[rustfmt::skip]
fn invalid_status_rows() -> Vec<InvalidStatus> {
    use Refusal::*;
    let mut rows = Vec::new();
    for kind in Kind::ALL {
        let cases: Vec<(&'static str, Refusal, &'static str, Value)> = vec![
            ("status.id", Invalid, "id lowercase", json!({"id": "abc123"})),
            ("status.id", Invalid, "id with a hyphen", json!({"id": "KEY-1"})),
            ("status.id", Invalid, "id 21 characters", json!({"id": "A".repeat(21)})),
            ("status.id", Invalid, "id empty", json!({"id": ""})),
            ("status.id", Structural, "id a number", json!({"id": 5})),
            ("status.previousId", Invalid, "previousId lowercase", json!({"previousId": "abc"})),
            ("status.key", Unknown, "unknown status field", json!({"key": "ak_secret"})),
        ];
        for (path, refusal, what, status) in cases {
            rows.push(InvalidStatus { kind, what: what.into(), status, path, refusal });
        }
        // Times the API server's `date-time` format admits but the controller
        // (jiff, up to 9999-12-30T22:00:00.999999999Z) cannot read: one such
        // object would fail every list of its kind.
        for field in STATUS_TIME_FIELDS {
            let path = status_path(field);
            rows.push(InvalidStatus {
                kind,
                what: format!("{field} 9999-12-31T23:59:59Z (past jiff's range)"),
                status: json!({field: "9999-12-31T23:59:59Z"}),
                path,
                refusal: Invalid,
            });
        }
        let expires = "status.expiresAt";
        let times: [(&str, &str); 7] = [
            ("1s past jiff's last instant", "9999-12-30T22:00:01Z"),
            ("1ns past jiff's last instant", "9999-12-30T22:00:01.000000000Z"),
            ("past jiff's range through its offset", "9999-12-30T23:00:00-02:00"),
            ("year 10000", "10000-01-01T00:00:00Z"),
            ("a negative year", "-0001-01-01T00:00:00Z"),
            ("10 fraction digits", "2027-01-01T00:00:00.1234567891Z"),
            ("offset +24:00", "2027-01-01T00:00:00+24:00"),
        ];
        for (what, time) in times {
            rows.push(InvalidStatus {
                kind,
                what: format!("expiresAt {what}: {time}"),
                status: json!({"expiresAt": time}),
                path: expires,
                refusal: Invalid,
            });
        }
        for (what, time) in [
            ("9999-12-31T23:59:59Z (past jiff's range)", "9999-12-31T23:59:59Z"),
            ("10 fraction digits", "2027-01-01T00:00:00.1234567891Z"),
        ] {
            rows.push(InvalidStatus {
                kind,
                what: format!("condition lastTransitionTime {what}"),
                status: json!({"conditions": [ready_condition(time)]}),
                path: "status.conditions[0].lastTransitionTime",
                refusal: Invalid,
            });
        }
    }
    rows
}

/// Every time field of `status` besides the conditions'.
const STATUS_TIME_FIELDS: [&str; 5] = [
    "createdAt",
    "updatedAt",
    "expiresAt",
    "renewalTime",
    "previousExpiresAt",
];

fn status_path(field: &str) -> &'static str {
    match field {
        "createdAt" => "status.createdAt",
        "updatedAt" => "status.updatedAt",
        "expiresAt" => "status.expiresAt",
        "renewalTime" => "status.renewalTime",
        "previousExpiresAt" => "status.previousExpiresAt",
        other => panic!("not a status time field: {other}"),
    }
}

/// A well-formed `Ready` condition that changed at `time`.
fn ready_condition(time: &str) -> Value {
    json!({
        "type": "Ready",
        "status": "False",
        "reason": "InvalidSpec",
        "message": "",
        "lastTransitionTime": time,
    })
}

#[rustfmt::skip]
fn valid_rows() -> Vec<Valid> {
    let template = json!({
        "labels": {
            "team": "payments",
            "app.kubernetes.io/name": "billing",
            "app.kubernetes.io/part-of": "billing",
            "app.kubernetes.io/component": "api",
            "example.com/tier": "gold",
            "empty": "",
            "long": "a".repeat(63),
        },
        "annotations": {
            "example.com/owner": "payments",
            "app.kubernetes.io/name": "billing",
            "note": "a".repeat(4096),
        },
    });
    let common: Vec<(&str, Value)> = vec![
        ("minimal", json!({})),
        ("expiresAt alone", json!({"expiresAt": "2030-01-01T00:00:00Z"})),
        ("expiresAt with an offset and nanoseconds", json!({"expiresAt": "2030-06-30T12:34:56.123456789+02:00"})),
        ("validFor alone", json!({"validFor": "2160h"})),
        ("validFor 1s (the minimum)", json!({"validFor": "1s"})),
        ("validFor 876000h (the cap)", json!({"validFor": "876000h"})),
        ("validFor in mixed units", json!({"validFor": "1h30m"})),
        ("validFor fractional", json!({"validFor": "1.5h"})),
        ("renewBefore with validFor", json!({"validFor": "2160h", "renewBefore": "360h"})),
        ("renewBefore 0s with validFor 1s", json!({"validFor": "1s", "renewBefore": "0s"})),
        ("renewBefore just under validFor", json!({"validFor": "1h", "renewBefore": "59m59s"})),
        ("renewBefore without validFor", json!({"renewBefore": "24h"})),
        ("gracePeriod alone", json!({"gracePeriod": "24h"})),
        ("gracePeriod 0s", json!({"gracePeriod": "0s"})),
        ("gracePeriod 876000h (the cap)", json!({"gracePeriod": "876000h"})),
        ("secretName alone", json!({"secretName": "billing-api-key"})),
        ("secretName with dots", json!({"secretName": "billing.api.key"})),
        ("secretName 253 characters", json!({"secretName": "a".repeat(253)})),
        ("secretTemplate with allowed keys", json!({"secretTemplate": template})),
        ("format.prefix alone", json!({"format": {"prefix": "billing"}})),
        ("format.prefix one letter", json!({"format": {"prefix": "b"}})),
        ("format.prefix 16 characters with digits", json!({"format": {"prefix": "k8s0123456789abc"}})),
        ("format.entropyBits 128", json!({"format": {"entropyBits": 128}})),
        ("format.entropyBits 512", json!({"format": {"entropyBits": 512}})),
        ("deletionPolicy Retain", json!({"deletionPolicy": "Retain"})),
        ("deletionPolicy Delete", json!({"deletionPolicy": "Delete"})),
    ];
    let full = json!({
        "expiresAt": "2030-01-01T00:00:00Z",
        "validFor": "720h",
        "renewBefore": "72h",
        "gracePeriod": "1h",
        "secretName": "full-key",
        "secretTemplate": {
            "labels": {"team": "payments", "app.kubernetes.io/name": "billing"},
            "annotations": {"example.com/owner": "payments"},
        },
        "format": {"prefix": "full", "entropyBits": 384},
        "deletionPolicy": "Retain",
    });
    let mut rows = Vec::new();
    for kind in Kind::ALL {
        let own: Vec<(&str, Value)> = match kind {
            Kind::Root => vec![
                ("full", merged(&full, &json!({"secretNamespace": ROOT_KEY_NAMESPACE}))),
                ("secretNamespace alone", json!({"secretNamespace": ROOT_KEY_NAMESPACE})),
                ("secretNamespace 63 characters", json!({"secretNamespace": "a".repeat(63)})),
            ],
            Kind::Sak => vec![
                ("full", merged(&full, &json!({"serviceAccountName": "robot"}))),
                ("serviceAccountName with dots", json!({"serviceAccountName": "robot.one"})),
                ("serviceAccountName 253 characters", json!({"serviceAccountName": "a".repeat(253)})),
            ],
            Kind::Api => vec![
                ("full", merged(&full, &json!({"permissions": ["read", "models:write"], "description": "nightly billing export"}))),
                ("description 1024 characters", json!({"description": "a".repeat(1024)})),
                ("64 permissions", json!({"permissions": (0..64).map(|i| format!("p{i}")).collect::<Vec<_>>()})),
                ("permissions with every allowed character", json!({"permissions": ["models:*", "a.b_c-d", "0read", "a".repeat(63)]})),
            ],
        };
        for (what, patch) in common.iter().cloned().chain(own) {
            rows.push(Valid { kind, what: what.into(), spec: merged(&kind.minimal(), &patch) });
        }
    }
    rows
}

impl Ctx {
    async fn new(prefix: &str) -> Ctx {
        let plane = cluster();
        let client = plane.client().await.expect("client");
        let namespace = plane.namespace(&client, prefix).await.expect("namespace");
        Ctx { client, namespace }
    }

    fn row_manifest(
        &self,
        kind: Kind,
        name: &str,
        spec: &Value,
        extra: Option<&(&'static str, Value)>,
    ) -> Value {
        let mut manifest = json!({
            "apiVersion": api::API_VERSION,
            "kind": kind.name(),
            "metadata": {"name": name},
        });
        if !spec.is_null() {
            manifest["spec"] = spec.clone();
        }
        if let Some((field, value)) = extra {
            manifest[*field] = value.clone();
        }
        manifest
    }

    /// POST with strict field validation (kube's `PostParams` cannot ask for it).
    async fn create_strict(&self, kind: Kind, body: &Value) -> Result<Value, kube::Error> {
        let namespace = kind.namespaced().then_some(self.namespace.as_str());
        let url = format!(
            "{}?fieldValidation=Strict",
            DynamicObject::url_path(&kind.resource(), namespace)
        );
        let request = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).expect("JSON"))
            .expect("request");
        self.client.request::<Value>(request).await
    }

    async fn apply_strict(
        &self,
        kind: Kind,
        name: &str,
        body: &Value,
    ) -> Result<DynamicObject, kube::Error> {
        self.api(kind)
            .patch(name, &strict_apply(), &Patch::Apply(body))
            .await
    }

    async fn exists(&self, kind: Kind, name: &str) -> Result<bool, String> {
        self.api(kind)
            .get_opt(name)
            .await
            .map(|o| o.is_some())
            .map_err(|e| format!("get {name}: {e}"))
    }
}

fn strict_apply() -> PatchParams {
    PatchParams::apply(TEST_MANAGER)
        .force()
        .validation(ValidationDirective::Strict)
}

/// Checks that `result` is the refusal a row expects on `route`.
fn check_refused<T>(
    result: Result<T, kube::Error>,
    refusal: Refusal,
    route: Route,
    path: &str,
) -> Result<(), String> {
    let status = table::refusal(&result)?;
    let expected: &[u16] = match (refusal, route) {
        (Refusal::Invalid, _) => &[422],
        (Refusal::Unknown, Route::Create) => &[400],
        (Refusal::Unknown, Route::StatusMerge) => &[422],
        (Refusal::Unknown, _) => &[400],
        (Refusal::Structural, route) if route.server_side_apply() => &[400, 422],
        (Refusal::Structural, _) => &[422],
    };
    let mut codes = expected.to_vec();
    // kubernetes/kubernetes#139253: server-side apply answers 500 to a patch
    // that does not fit the schema's structure.
    let typed_patch_500 = route.server_side_apply()
        && refusal != Refusal::Invalid
        && status.code == 500
        && status
            .message
            .starts_with("failed to create typed patch object");
    if typed_patch_500 {
        codes.push(500);
    }
    table::check_refused(status, &codes, path, refusal != Refusal::Unknown)
}

/// Creates the valid object of `kind` the update and status rows patch.
async fn create_existing(ctx: &Ctx, kind: Kind) {
    let name = ctx.object_name(kind, "existing");
    let body = ctx.row_manifest(kind, &name, &kind.minimal(), None);
    ctx.apply_strict(kind, &name, &body)
        .await
        .unwrap_or_else(|e| panic!("{} {name} applies: {e}", kind.name()));
}

/// The existing object's generation and spec.
async fn existing_state(ctx: &Ctx, kind: Kind, name: &str) -> Result<(Option<i64>, Value), String> {
    let stored = ctx
        .api(kind)
        .get(name)
        .await
        .map_err(|e| format!("get {name}: {e}"))?;
    let spec = stored.data.get("spec").cloned().unwrap_or_default();
    Ok((stored.metadata.generation, spec))
}

/// Checks that the existing object is as it was `before` a refused update,
/// and puts its minimal spec back if not, so the next rows start from it.
async fn existing_unchanged(
    ctx: &Ctx,
    kind: Kind,
    name: &str,
    before: (Option<i64>, Value),
) -> Result<(), String> {
    let after = existing_state(ctx, kind, name).await?;
    if after == before {
        return Ok(());
    }
    let body = ctx.row_manifest(kind, name, &kind.minimal(), None);
    let _ = ctx.apply_strict(kind, name, &body).await;
    Err(format!(
        "the existing object changed: generation {:?} -> {:?}, spec {} -> {}",
        before.0, after.0, before.1, after.1
    ))
}

/// Whether every field of `spec` is an empty list or map (or there is no spec).
fn leaves_no_spec(spec: &Value) -> bool {
    spec.as_object().is_none_or(|fields| {
        fields.values().all(|value| match value {
            Value::Array(items) => items.is_empty(),
            Value::Object(map) => map.is_empty(),
            _ => false,
        })
    })
}

async fn check_invalid(ctx: &Ctx, index: usize, row: &Invalid) -> Vec<String> {
    let mut problems = Vec::new();
    let name = ctx.object_name(row.kind, &format!("invalid-{index}"));
    let body = ctx.row_manifest(row.kind, &name, &row.spec, row.extra.as_ref());
    let created = ctx.create_strict(row.kind, &body).await;
    if let Err(problem) = check_refused(created, row.refusal, Route::Create, row.path) {
        problems.push(format!("create: {problem}"));
    }
    let applied = ctx.apply_strict(row.kind, &name, &body).await;
    if let Err(problem) = check_refused(applied, row.refusal, Route::Apply, row.path) {
        problems.push(format!("apply: {problem}"));
    }
    match ctx.exists(row.kind, &name).await {
        Ok(false) => {}
        Ok(true) => {
            problems.push("an object was stored".into());
            let _ = ctx.api(row.kind).delete(&name, &Default::default()).await;
        }
        Err(error) => problems.push(error),
    }
    let existing = ctx.object_name(row.kind, "existing");
    let before = match existing_state(ctx, row.kind, &existing).await {
        Ok(before) => before,
        Err(error) => {
            problems.push(error);
            return problems;
        }
    };
    let body = ctx.row_manifest(row.kind, &existing, &row.spec, row.extra.as_ref());
    let updated = ctx.apply_strict(row.kind, &existing, &body).await;
    // Server-side apply removes the fields its manager no longer sets, and an
    // applied empty list sets nothing: a manifest whose spec keeps no value
    // leaves the existing object with no spec, and that is what is refused.
    let update_path = if leaves_no_spec(&row.spec) {
        "spec"
    } else {
        row.path
    };
    if let Err(problem) = check_refused(updated, row.refusal, Route::Update, update_path) {
        problems.push(format!("update: {problem}"));
    }
    if let Err(problem) = existing_unchanged(ctx, row.kind, &existing, before).await {
        problems.push(format!("update: {problem}"));
    }
    problems
}

async fn check_invalid_status(ctx: &Ctx, row: &InvalidStatus) -> Vec<String> {
    let mut problems = Vec::new();
    let api = ctx.api(row.kind);
    let name = ctx.object_name(row.kind, "existing");
    let strict = PatchParams {
        field_validation: Some(ValidationDirective::Strict),
        ..Default::default()
    };
    let merge = json!({"status": row.status});
    let result = api
        .patch_status(&name, &strict, &Patch::Merge(&merge))
        .await;
    if let Err(problem) = check_refused(result, row.refusal, Route::StatusMerge, row.path) {
        problems.push(format!("status merge patch: {problem}"));
    }
    let apply = json!({
        "apiVersion": api::API_VERSION,
        "kind": row.kind.name(),
        "metadata": {"name": name},
        "status": row.status,
    });
    let result = api
        .patch_status(&name, &strict_apply(), &Patch::Apply(&apply))
        .await;
    if let Err(problem) = check_refused(result, row.refusal, Route::StatusApply, row.path) {
        problems.push(format!("status apply: {problem}"));
    }
    // Nothing of the refused status was stored.
    let pointer = format!(
        "/{}",
        row.path
            .replace('[', ".")
            .replace(']', "")
            .replace('.', "/")
    );
    match api.get(&name).await {
        Ok(stored) => {
            let value = serde_json::to_value(&stored).expect("JSON");
            if let Some(stored) = value.pointer(&pointer) {
                let sent = row.status.pointer(&pointer["/status".len()..]);
                if Some(stored) == sent {
                    problems.push(format!("{} was stored: {stored}", row.path));
                }
            }
        }
        Err(error) => problems.push(format!("get {name}: {error}")),
    }
    problems
}

/// Reads the object back through its Rust type, as the operator does.
async fn typed_get(ctx: &Ctx, kind: Kind, name: &str) -> Result<(), kube::Error> {
    let client = ctx.client.clone();
    let namespace = ctx.namespace.as_str();
    match kind {
        Kind::Root => Api::<RootKey>::all(client).get(name).await.map(drop),
        Kind::Sak => Api::<ServiceAccountKey>::namespaced(client, namespace)
            .get(name)
            .await
            .map(drop),
        Kind::Api => Api::<ApiKey>::namespaced(client, namespace)
            .get(name)
            .await
            .map(drop),
    }
}

async fn check_valid(ctx: &Ctx, index: usize, row: &Valid) -> Vec<String> {
    let name = ctx.object_name(row.kind, &format!("valid-{index}"));
    let mut spec = row.spec.clone();
    // A RootKey's Secret goes to a shared namespace: give it this test's prefix
    // (so that `clean_up` finds it if it is retained).
    if let (Kind::Root, Some(secret)) = (row.kind, spec["secretName"].as_str()) {
        let mut unique = format!("{}-{secret}", ctx.namespace);
        unique.truncate(253);
        spec["secretName"] = json!(unique);
    }
    let body = ctx.row_manifest(row.kind, &name, &spec, None);
    let stored = match ctx.apply_strict(row.kind, &name, &body).await {
        Ok(stored) => stored,
        Err(kube::Error::Api(status)) => {
            return vec![format!("refused: HTTP {}: {}", status.code, status.message)];
        }
        Err(error) => return vec![format!("apply: {error}")],
    };
    let mut problems = Vec::new();
    if stored.data.get("spec") != Some(&spec) {
        problems.push(format!(
            "stored spec differs from the one sent: {}",
            stored.data.get("spec").cloned().unwrap_or_default()
        ));
    }
    if let Err(error) = typed_get(ctx, row.kind, &name).await {
        problems.push(format!(
            "the stored object does not fit the Rust type: {error}"
        ));
    }
    // Done with it: a running operator need not keep minting for it.
    if let Err(error) = ctx
        .api(row.kind)
        .delete(&name, &DeleteParams::default())
        .await
    {
        problems.push(format!("delete: {error}"));
    }
    problems
}

/// The keymint manifests in `examples/`: (file#document, kind, manifest).
fn example_manifests() -> Vec<(String, Kind, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut manifests = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read example");
        for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let manifest: Value = serde::Deserialize::deserialize(document).expect("YAML");
            let kind = Kind::ALL
                .into_iter()
                .find(|k| manifest["kind"].as_str() == Some(k.name()));
            if let Some(kind) = kind {
                let place = format!("{}#{index}", file.file_name().expect("name").display());
                manifests.push((place, kind, manifest));
            }
        }
    }
    manifests
}

#[tokio::test]
async fn invalid_manifests_are_refused_naming_the_field() {
    let ctx = Ctx::new("invalid").await;
    for kind in Kind::ALL {
        create_existing(&ctx, kind).await;
    }
    let rows = invalid_rows();
    let status_rows = invalid_status_rows();
    let mut failures = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        for problem in check_invalid(&ctx, index, row).await {
            failures.push(format!(
                "#{index} {} {} ({}): {problem}",
                row.kind.name(),
                row.what,
                row.path
            ));
        }
    }
    for (index, row) in status_rows.iter().enumerate() {
        for problem in check_invalid_status(&ctx, row).await {
            failures.push(format!(
                "status #{index} {} {} ({}): {problem}",
                row.kind.name(),
                row.what,
                row.path
            ));
        }
    }
    ctx.clean_up().await;
    eprintln!(
        "{} invalid spec rows (each by create, apply and update), {} invalid status rows",
        rows.len(),
        status_rows.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} rows did not behave:\n{}",
        failures.len(),
        rows.len() + status_rows.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn valid_manifests_are_accepted_and_stored_unchanged() {
    let ctx = Ctx::new("valid").await;
    let rows = valid_rows();
    let mut failures = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        for problem in check_valid(&ctx, index, row).await {
            failures.push(format!(
                "#{index} {} {}: {problem}",
                row.kind.name(),
                row.what
            ));
        }
    }
    // Every example is accepted as it is (dry run: nothing is created).
    let examples = example_manifests();
    for (place, kind, mut manifest) in examples.iter().cloned() {
        if kind.namespaced() {
            manifest["metadata"]["namespace"] = json!(ctx.namespace);
        }
        let name = manifest["metadata"]["name"]
            .as_str()
            .expect("example name")
            .to_string();
        let result = ctx
            .api(kind)
            .patch(&name, &strict_apply().dry_run(), &Patch::Apply(&manifest))
            .await;
        match result {
            Ok(stored) if stored.data.get("spec") == manifest.get("spec") => {}
            Ok(stored) => failures.push(format!(
                "example {place}: stored spec differs: {}",
                stored.data.get("spec").cloned().unwrap_or_default()
            )),
            Err(error) => failures.push(format!("example {place}: refused: {error}")),
        }
    }
    ctx.clean_up().await;
    eprintln!("{} valid rows, {} examples", rows.len(), examples.len());
    assert!(
        failures.is_empty(),
        "{} valid manifests did not behave:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Status times at the edges of what the controller can read: accepted,
/// stored as sent, and readable through the Rust types, one object and the
/// whole list.
#[tokio::test]
async fn status_times_in_range_are_accepted_and_readable() {
    let ctx = Ctx::new("status-times").await;
    let times = [
        "9999-01-01T00:00:00Z",
        "9999-12-30T22:00:00Z",
        // jiff's last instant, and the same instant through an offset.
        "9999-12-30T22:00:00.999999999Z",
        "9999-12-30T23:59:00.999999999+01:59",
        "2027-06-30T12:34:56.123456789+02:00",
        // The low end: year 1 (CEL's first) and the earliest instant the
        // pattern admits (year 0 at +23:59, i.e. -0001-12-31T00:01:00Z).
        "0001-01-01T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "0000-01-01T00:00:00+23:59",
    ];
    let mut failures = Vec::new();
    for kind in Kind::ALL {
        let name = ctx.object_name(kind, "far-status");
        let body = ctx.row_manifest(kind, &name, &kind.minimal(), None);
        ctx.apply_strict(kind, &name, &body)
            .await
            .unwrap_or_else(|e| panic!("{} {name} applies: {e}", kind.name()));
        let strict = PatchParams {
            field_validation: Some(ValidationDirective::Strict),
            ..Default::default()
        };
        for time in times {
            let mut status = serde_json::Map::new();
            for field in STATUS_TIME_FIELDS {
                status.insert(field.into(), json!(time));
            }
            status.insert("conditions".into(), json!([ready_condition(time)]));
            let status = Value::Object(status);
            let what = format!("{} status times {time}", kind.name());
            let stored = match ctx
                .api(kind)
                .patch_status(&name, &strict, &Patch::Merge(&json!({"status": status})))
                .await
            {
                Ok(stored) => stored,
                Err(error) => {
                    failures.push(format!("{what}: refused: {error}"));
                    continue;
                }
            };
            let stored = serde_json::to_value(&stored).expect("JSON");
            for field in STATUS_TIME_FIELDS {
                if stored["status"][field] != json!(time) {
                    failures.push(format!(
                        "{what}: {field} stored as {}",
                        stored["status"][field]
                    ));
                }
            }
            let condition_time = &stored["status"]["conditions"][0]["lastTransitionTime"];
            if condition_time != &json!(time) {
                failures.push(format!(
                    "{what}: lastTransitionTime stored as {condition_time}"
                ));
            }
            // What the API server returned, read as the operator reads it.
            let typed = match kind {
                Kind::Root => serde_json::from_value::<RootKey>(stored).map(drop),
                Kind::Sak => serde_json::from_value::<ServiceAccountKey>(stored).map(drop),
                Kind::Api => serde_json::from_value::<ApiKey>(stored).map(drop),
            };
            if let Err(error) = typed {
                failures.push(format!(
                    "{what}: the stored object does not fit the Rust type: {error}"
                ));
            }
            if let Err(error) = typed_list(&ctx, kind).await {
                failures.push(format!("{what}: the typed list fails: {error}"));
            }
        }
        if let Err(error) = ctx.api(kind).delete(&name, &DeleteParams::default()).await {
            failures.push(format!("delete {name}: {error}"));
        }
    }
    ctx.clean_up().await;
    assert!(
        failures.is_empty(),
        "{} status times did not behave:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Lists the kind through its Rust type, as the operator's watch does.
async fn typed_list(ctx: &Ctx, kind: Kind) -> Result<(), kube::Error> {
    let client = ctx.client.clone();
    let namespace = ctx.namespace.as_str();
    let params = Default::default();
    match kind {
        Kind::Root => Api::<RootKey>::all(client).list(&params).await.map(drop),
        Kind::Sak => Api::<ServiceAccountKey>::namespaced(client, namespace)
            .list(&params)
            .await
            .map(drop),
        Kind::Api => Api::<ApiKey>::namespaced(client, namespace)
            .list(&params)
            .await
            .map(drop),
    }
}

/// Runs kubectl against the test control plane.
fn kubectl(args: &[&str]) -> Result<String, String> {
    let plane = cluster();
    let program = std::env::var_os("KUBECTL").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/kubectl"),
        PathBuf::from,
    );
    let output = Command::new(&program)
        .args(args)
        .arg("--cache-dir")
        .arg(plane.dir().join("kubectl-cache"))
        .env("KUBECONFIG", plane.kubeconfig_path())
        .output()
        .map_err(|e| format!("run {}: {e}", program.display()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "kubectl {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every property under `schema` with its dotted path and description.
fn described_fields(path: &str, schema: &Value, out: &mut Vec<(String, Option<String>)>) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, property) in properties {
        let path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let description = property
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string);
        out.push((path.clone(), description));
        described_fields(&path, property, out);
        if let Some(items) = property.get("items") {
            described_fields(&path, items, out);
        }
    }
}

/// The DESCRIPTION section of `kubectl explain` output, whitespace squeezed.
fn explained_description(output: &str) -> String {
    let after = output
        .split_once("DESCRIPTION:")
        .map_or("", |(_, rest)| rest);
    let section = after
        .split_once("\nFIELDS:")
        .map_or(after, |(section, _)| section);
    squeeze(section)
}

#[tokio::test]
async fn kubectl_explain_shows_every_field_description() {
    cluster();
    let mut failures = Vec::new();
    let mut checked = 0;
    for kind in Kind::ALL {
        let plural = kind.plural();
        let schema = kind.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
        let mut fields = vec![(
            String::new(),
            schema["description"].as_str().map(str::to_string),
        )];
        let mut properties = Vec::new();
        described_fields("", &schema, &mut properties);
        fields.extend(
            properties
                .into_iter()
                .filter(|(path, _)| path.starts_with("spec") || path.starts_with("status")),
        );
        // The API server publishes a new CRD's OpenAPI a little after it is established.
        let spec_description = schema["properties"]["spec"]["description"]
            .as_str()
            .expect("spec description")
            .to_string();
        eventually(&format!("kubectl explain {plural}.spec"), WAIT, || async {
            let output = kubectl(&["explain", &format!("{plural}.spec")])?;
            if explained_description(&output).contains(&squeeze(&spec_description)) {
                Ok(())
            } else {
                Err(output)
            }
        })
        .await;
        for (path, description) in fields {
            checked += 1;
            let target = if path.is_empty() {
                plural.clone()
            } else {
                format!("{plural}.{path}")
            };
            let Some(description) = description else {
                failures.push(format!("{target}: no description in the CRD"));
                continue;
            };
            let output = match kubectl(&["explain", &target]) {
                Ok(output) => output,
                Err(error) => {
                    failures.push(format!("{target}: {error}"));
                    continue;
                }
            };
            let leaf = path.rsplit('.').next().unwrap_or_default();
            if !path.is_empty() && !output.contains(&format!("FIELD: {leaf} <")) {
                failures.push(format!("{target}: no FIELD line for {leaf}:\n{output}"));
            }
            let wanted = squeeze(&description);
            let shown = explained_description(&output);
            let head: String = wanted.chars().take(40).collect();
            if !shown.starts_with(&head) {
                failures.push(format!(
                    "{target}: description does not start with {head:?}:\n{output}"
                ));
            } else if !shown.contains(&wanted) {
                failures.push(format!(
                    "{target}: description shown incompletely:\n  CRD:     {wanted}\n  kubectl: {shown}"
                ));
            }
        }
    }
    eprintln!("{checked} fields explained");
    assert!(checked > 60, "only {checked} fields found in the CRDs");
    assert!(
        failures.is_empty(),
        "{} fields not explained:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The cells of a `kubectl get` table row, by header (columns are aligned).
fn table_row(header: &str, row: &str) -> Vec<(String, String)> {
    let mut starts = Vec::new();
    let bytes = header.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let starts_cell = b != b' ' && (i == 0 || (i >= 2 && &bytes[i - 2..i] == b"  "));
        if starts_cell {
            starts.push(i);
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).copied();
            let cell = |line: &str| {
                let end = end.unwrap_or(line.len()).min(line.len());
                line.get(start.min(end)..end)
                    .unwrap_or("")
                    .trim()
                    .to_string()
            };
            (cell(header), cell(row))
        })
        .collect()
}

#[tokio::test]
async fn kubectl_get_keymint_lists_all_kinds_with_columns() {
    let (client, namespace) = setup("listing").await;
    Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("robot".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("service account");
    let root_name = format!("{namespace}-listed");
    let manifest = |kind: &str, name: &str, spec: Value| json!({"apiVersion": api::API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec});
    let roots = Api::<RootKey>::all(client.clone());
    let saks = Api::<ServiceAccountKey>::namespaced(client.clone(), &namespace);
    let keys = Api::<ApiKey>::namespaced(client.clone(), &namespace);
    let root: RootKey =
        serde_json::from_value(manifest("RootKey", &root_name, json!({"validFor": "1h"})))
            .expect("RootKey");
    let sak: ServiceAccountKey = serde_json::from_value(manifest(
        "ServiceAccountKey",
        "listed-sak",
        json!({"serviceAccountName": "robot", "validFor": "1h"}),
    ))
    .expect("ServiceAccountKey");
    let key: ApiKey = serde_json::from_value(manifest(
        "APIKey",
        "listed-api",
        json!({"permissions": ["read"], "validFor": "1h"}),
    ))
    .expect("APIKey");
    apply(&roots, &root).await.expect("apply RootKey");
    apply(&saks, &sak).await.expect("apply ServiceAccountKey");
    apply(&keys, &key).await.expect("apply APIKey");
    let root = wait_ready(&roots, &root_name).await;
    let sak = wait_ready(&saks, "listed-sak").await;
    let key = wait_ready(&keys, "listed-api").await;

    let output = kubectl(&["get", "keymint", "-A"]).expect("kubectl get keymint -A");
    let expected = [
        (
            format!("rootkey.keymint.dev/{root_name}"),
            String::new(),
            root.status.clone().unwrap_or_default(),
            None,
        ),
        (
            "serviceaccountkey.keymint.dev/listed-sak".to_string(),
            namespace.clone(),
            sak.status.clone().unwrap_or_default(),
            Some("robot"),
        ),
        (
            "apikey.keymint.dev/listed-api".to_string(),
            namespace.clone(),
            key.status.clone().unwrap_or_default(),
            None,
        ),
    ];
    let mut failures = Vec::new();
    for (resource, object_namespace, status, account) in &expected {
        // The row of this object, and the header of its table.
        let mut header = None;
        let mut found = None;
        for line in output.lines() {
            if line.starts_with("NAMESPACE") {
                header = Some(line);
            } else if let Some(header) = header {
                let cells = table_row(header, line);
                let cell = |name: &str| {
                    cells
                        .iter()
                        .find(|(h, _)| h == name)
                        .map(|(_, v)| v.as_str())
                };
                if cell("NAME") == Some(resource) && cell("NAMESPACE") == Some(object_namespace) {
                    found = Some((header, cells.clone()));
                }
            }
        }
        let Some((header, cells)) = found else {
            failures.push(format!("{resource} not listed"));
            continue;
        };
        let columns: Vec<&str> = cells.iter().map(|(h, _)| h.as_str()).collect();
        let mut wanted = vec!["NAMESPACE", "NAME", "READY"];
        if account.is_some() {
            wanted.push("SERVICE ACCOUNT");
        }
        wanted.extend(["KEY ID", "EXPIRES", "SECRET", "AGE"]);
        if columns != wanted {
            failures.push(format!("{resource}: header {header:?}, wanted {wanted:?}"));
        }
        let expires = status
            .expires_at
            .as_ref()
            .map(|t| serde_json::to_value(t).expect("JSON"))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut values = vec![
            ("READY", "True".to_string()),
            ("KEY ID", status.id.clone().unwrap_or_default()),
            ("EXPIRES", expires),
            ("SECRET", status.secret_name.clone().unwrap_or_default()),
        ];
        if let Some(account) = account {
            values.push(("SERVICE ACCOUNT", account.to_string()));
        }
        for (column, value) in values {
            let shown = cells.iter().find(|(h, _)| h == column).map(|(_, v)| v);
            if shown != Some(&value) || value.is_empty() {
                failures.push(format!(
                    "{resource}: column {column} shows {shown:?}, wanted {value:?}"
                ));
            }
        }
    }
    roots
        .delete(&root_name, &DeleteParams::default())
        .await
        .expect("delete RootKey");
    assert!(
        failures.is_empty(),
        "kubectl get keymint -A:\n{output}\n{}",
        failures.join("\n")
    );
}
