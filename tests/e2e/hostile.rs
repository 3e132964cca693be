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

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use keymint::api::{self, ApiKey, KeyStatus, RootKey, ServiceAccountKey};
use keymint::keys::{sha256_hex, verify_checksum};
use keymint_testenv::eventually;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams,
    ValidationDirective,
};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use keymint_test_support::*;

/// How long one row may take to reach its expected state.
const ROW_WAIT: Duration = Duration::from_secs(20);
/// Rows in flight at once.
const CONCURRENCY: usize = 16;
const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// The three kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Root,
    Sak,
    Api,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Root => "RootKey",
            Kind::Sak => "ServiceAccountKey",
            Kind::Api => "APIKey",
        }
    }

    fn resource(self) -> ApiResource {
        match self {
            Kind::Root => ApiResource::erase::<RootKey>(&()),
            Kind::Sak => ApiResource::erase::<ServiceAccountKey>(&()),
            Kind::Api => ApiResource::erase::<ApiKey>(&()),
        }
    }

    fn namespaced(self) -> bool {
        self != Kind::Root
    }

    /// The smallest valid spec of the kind.
    fn minimal(self) -> Value {
        match self {
            Kind::Root => json!({}),
            Kind::Sak => json!({"serviceAccountName": "robot"}),
            Kind::Api => json!({"permissions": ["read"]}),
        }
    }

    fn default_prefix(self) -> &'static str {
        match self {
            Kind::Root => "rk",
            Kind::Sak => "sak",
            Kind::Api => "ak",
        }
    }

    /// Whether keymint's own type reads `object`, as the operator's watch must.
    fn readable(self, object: &Value) -> Result<(), String> {
        let object = object.clone();
        match self {
            Kind::Root => serde_json::from_value::<RootKey>(object).map(drop),
            Kind::Sak => serde_json::from_value::<ServiceAccountKey>(object).map(drop),
            Kind::Api => serde_json::from_value::<ApiKey>(object).map(drop),
        }
        .map_err(|e| e.to_string())
    }
}

/// What a row attacks, for the per-category count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Category {
    Oversized,
    Unicode,
    Duration,
    Timestamp,
    WrongType,
    UnknownField,
    HugeTemplate,
    ClaimsOwner,
    ForeignTarget,
    HostileEdit,
}

impl Category {
    fn label(self) -> &'static str {
        match self {
            Category::Oversized => "oversized",
            Category::Unicode => "unicode",
            Category::Duration => "duration",
            Category::Timestamp => "timestamp",
            Category::WrongType => "wrong-type",
            Category::UnknownField => "unknown-field",
            Category::HugeTemplate => "huge-template",
            Category::ClaimsOwner => "claims-owner",
            Category::ForeignTarget => "foreign-target",
            Category::HostileEdit => "hostile-edit",
        }
    }
}

/// Something that exists before a row is sent.
enum Fixture {
    /// Another application's Secret, in this namespace (`None`: the test's).
    Secret(Option<String>, Box<Secret>),
    /// Another keymint resource (full name, spec), Ready before the row is sent.
    Key(Kind, String, Value),
}

/// A step of an edit of an existing, Ready object.
enum Edit {
    /// The resource re-applied with this merge patch onto its base spec.
    Spec(Value),
    /// A strict JSON merge patch of the resource itself.
    Resource(Value),
    /// A JSON merge patch of the resource's Secret.
    Secret(Value),
}

/// How a row reaches the API server.
enum Input {
    /// Strict server-side apply of the kind's manifest with this spec and metadata.
    Apply { spec: Value, metadata: Value },
    /// POST of this manifest (apiVersion, kind and metadata.name added when
    /// absent), with strict field validation or with unknown fields ignored.
    Post { manifest: Value, strict: bool },
    /// Strict POST of raw JSON text; `@NAME@` is the row's object name.
    Raw(String),
    /// The base spec (merged onto the kind's minimal one) is applied and Ready
    /// first; then the edit.
    Edit { base: Value, edit: Edit },
}

/// What becomes of a Secret in a handled row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    /// No Secret at the spec's target.
    Absent,
    /// The Secret at the target is exactly as it was before the row (another
    /// application's, or keymint's own before the edit).
    Unchanged,
}

type Check = Box<dyn Fn(&Snapshot) -> Result<(), String>>;

/// The state an accepted row must reach.
enum State {
    /// `Ready=False` with this reason, a message naming every one of `names`,
    /// a Warning Event with the reason, and the Secret as `after` says.
    Handled {
        reason: &'static str,
        names: Vec<String>,
        after: After,
    },
    /// `Ready=True`, a correct Secret, and the row's own check.
    Ready(Check),
    /// Any one of these.
    Any(Vec<State>),
}

enum Expect {
    /// Refused naming this field; nothing stored (an edit: nothing changed).
    Refused(&'static str),
    /// Refused before it is even parsed (413): nothing stored.
    TooLarge,
    /// Accepted, then this state.
    State(State),
    /// Either refused naming the field, or accepted and then this state.
    RefusedOr(&'static str, State),
}

impl Expect {
    fn outcome(&self) -> &'static str {
        match self {
            Expect::Refused(_) | Expect::TooLarge => "refused",
            Expect::State(State::Handled { .. }) => "handled",
            Expect::State(State::Ready(_)) => "accepted",
            Expect::State(State::Any(_)) => "handled-or-accepted",
            Expect::RefusedOr(..) => "refused-or-handled",
        }
    }
}

struct Row {
    category: Category,
    kind: Kind,
    what: String,
    fixtures: Vec<Fixture>,
    send: Input,
    expect: Expect,
}

/// What a row observed: the resource, its status and the Secret at its target.
struct Snapshot {
    spec: Value,
    status: KeyStatus,
    owner: String,
    prefix: String,
    secret_namespace: String,
    secret_name: String,
    secret: Option<Secret>,
    /// The Secret at the target before the hostile step.
    before: Option<Secret>,
    /// `status.id` before an edit.
    before_id: Option<String>,
}

/// A row's problems, and what it legitimately left behind.
#[derive(Default)]
struct Report {
    problems: Vec<String>,
    /// How a row with more than one acceptable outcome came out.
    notes: Vec<String>,
    objects: Vec<(Kind, String)>,
    secrets: Vec<(String, String)>,
}

/// `patch` applied to `base` as a JSON merge patch (RFC 7386): `null` removes.
fn merged(base: &Value, patch: &Value) -> Value {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            let mut out = base.clone();
            for (key, value) in patch {
                if value.is_null() {
                    out.remove(key);
                } else {
                    let next = merged(out.get(key).unwrap_or(&Value::Null), value);
                    out.insert(key.clone(), next);
                }
            }
            Value::Object(out)
        }
        (_, patch) => patch.clone(),
    }
}

/// Like [`merged`], but a `null` is kept and sent as `null`.
fn with_nulls(base: &Value, patch: &Value) -> Value {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            let mut out = base.clone();
            for (key, value) in patch {
                let next = with_nulls(out.get(key).unwrap_or(&Value::Null), value);
                out.insert(key.clone(), next);
            }
            Value::Object(out)
        }
        (_, patch) => patch.clone(),
    }
}

fn row(
    category: Category,
    kind: Kind,
    what: impl Into<String>,
    send: Input,
    expect: Expect,
) -> Row {
    Row {
        category,
        kind,
        what: what.into(),
        fixtures: Vec::new(),
        send,
        expect,
    }
}

impl Row {
    fn with(mut self, fixture: Fixture) -> Row {
        self.fixtures.push(fixture);
        self
    }
}

/// Strict apply of the kind's minimal spec with `patch` merged in.
fn spec(kind: Kind, patch: Value) -> Input {
    Input::Apply {
        spec: merged(&kind.minimal(), &patch),
        metadata: json!({}),
    }
}

/// Strict apply with extra metadata.
fn meta(kind: Kind, metadata: Value, patch: Value) -> Input {
    Input::Apply {
        spec: merged(&kind.minimal(), &patch),
        metadata,
    }
}

/// Strict POST of the kind's minimal spec with `patch` put in as it is (nulls too).
fn post_spec(kind: Kind, patch: Value) -> Input {
    Input::Post {
        manifest: json!({"spec": with_nulls(&kind.minimal(), &patch)}),
        strict: true,
    }
}

/// Strict POST of the kind's minimal spec with this metadata.
fn post_meta(kind: Kind, metadata: Value) -> Input {
    Input::Post {
        manifest: json!({"metadata": metadata, "spec": kind.minimal()}),
        strict: true,
    }
}

fn post(manifest: Value) -> Input {
    Input::Post {
        manifest,
        strict: true,
    }
}

fn edit(kind: Kind, base: Value, edit: Edit) -> Input {
    Input::Edit {
        base: merged(&kind.minimal(), &base),
        edit,
    }
}

fn refused(path: &'static str) -> Expect {
    Expect::Refused(path)
}

fn handled(reason: &'static str, names: &[&str], after: After) -> State {
    State::Handled {
        reason,
        names: names.iter().map(|n| n.to_string()).collect(),
        after,
    }
}

fn issued() -> Expect {
    Expect::State(State::Ready(Box::new(|_| Ok(()))))
}

fn issued_and(check: impl Fn(&Snapshot) -> Result<(), String> + 'static) -> Expect {
    Expect::State(State::Ready(Box::new(check)))
}

fn ready_and(check: impl Fn(&Snapshot) -> Result<(), String> + 'static) -> State {
    State::Ready(Box::new(check))
}

fn secret(
    name: &str,
    type_: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, String)],
    data: &[(&str, &str)],
) -> Secret {
    let strings = |pairs: Vec<(String, String)>| -> Option<BTreeMap<String, String>> {
        (!pairs.is_empty()).then(|| pairs.into_iter().collect())
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: strings(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            annotations: strings(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
            ..Default::default()
        },
        type_: Some(type_.into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

fn opaque(name: &str) -> Secret {
    secret(name, "Opaque", &[], &[], &[("password", "hunter2")])
}

/// The whole value of a template annotation or label map with `count` entries.
fn entries(count: usize, key: impl Fn(usize) -> String, value: impl Fn(usize) -> String) -> Value {
    Value::Object((0..count).map(|i| (key(i), json!(value(i)))).collect())
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(
    what: &str,
    found: T,
    wanted: T,
) -> Result<(), String> {
    if found == wanted {
        Ok(())
    } else {
        Err(format!("{what}: {found:?}, wanted {wanted:?}"))
    }
}

fn lifetime(snapshot: &Snapshot) -> Option<i64> {
    let created = snapshot.status.created_at.as_ref()?.0;
    let expires = snapshot.status.expires_at.as_ref()?.0;
    Some(expires.as_second() - created.as_second())
}

fn expires_at(snapshot: &Snapshot) -> Option<String> {
    snapshot
        .status
        .expires_at
        .as_ref()
        .map(|t| serde_json::to_value(t).expect("JSON"))
        .and_then(|v| v.as_str().map(str::to_string))
}

/// A string no longer than a readable failure line.
fn short(text: &str) -> String {
    const MAX: usize = 400;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head}... ({} bytes)", text.len())
    }
}

/// The table.
struct Table<'a> {
    ctx: &'a Ctx,
    rows: Vec<Row>,
}

impl Table<'_> {
    /// The name the next row's object gets.
    fn next_name(&self, kind: Kind) -> String {
        self.ctx
            .object_name(kind, &format!("h{:03}", self.rows.len()))
    }

    /// A full name for a fixture object or Secret of this test.
    fn fixture_name(&self, kind: Kind, local: &str) -> String {
        self.ctx
            .object_name(kind, &format!("{local}-{:03}", self.rows.len()))
    }

    fn push(&mut self, row: Row) {
        self.rows.push(row);
    }
}

#[rustfmt::skip]
fn oversized(t: &mut Table) {
    use Category::Oversized as C;
    use Kind::*;
    let mib = |c: &str| c.repeat(MIB);
    t.push(row(C, Api, "expiresAt 36 characters (10 fraction digits and an offset)", spec(Api, json!({"expiresAt": "2030-01-01T00:00:00.1234567890+00:00"})), refused("spec.expiresAt")));
    t.push(row(C, Root, "expiresAt 1 MiB", spec(Root, json!({"expiresAt": format!("2030-01-01T00:00:00.{}Z", "0".repeat(MIB))})), refused("spec.expiresAt")));
    t.push(row(C, Sak, "validFor 1 MiB", spec(Sak, json!({"validFor": "1h".repeat(MIB / 2)})), refused("spec.validFor")));
    t.push(row(C, Api, "renewBefore 33 characters that parse as 1s", spec(Api, json!({"renewBefore": format!("{}1s", "0".repeat(31))})), refused("spec.renewBefore")));
    t.push(row(C, Root, "gracePeriod 1 MiB of digits", spec(Root, json!({"gracePeriod": format!("{}h", "9".repeat(MIB))})), refused("spec.gracePeriod")));
    t.push(row(C, Api, "secretName 1 MiB", spec(Api, json!({"secretName": mib("a")})), refused("spec.secretName")));
    t.push(row(C, Sak, "format.prefix 1 MiB", spec(Sak, json!({"format": {"prefix": mib("a")}})), refused("spec.format.prefix")));
    t.push(row(C, Root, "secretNamespace 1 MiB", spec(Root, json!({"secretNamespace": mib("a")})), refused("spec.secretNamespace")));
    t.push(row(C, Sak, "serviceAccountName 1 MiB", spec(Sak, json!({"serviceAccountName": mib("a")})), refused("spec.serviceAccountName")));
    t.push(row(C, Api, "permission 1 MiB", spec(Api, json!({"permissions": [mib("a")]})), refused("spec.permissions")));
    t.push(row(C, Api, "description 1 MiB", spec(Api, json!({"description": mib("a")})), refused("spec.description")));
    t.push(row(C, Api, "description 1025 two-byte characters", spec(Api, json!({"description": "é".repeat(1025)})), refused("spec.description")));
    let emoji = "\u{1F511}".repeat(1024);
    t.push(row(C, Api, "description 1024 four-byte characters (4 KiB) is within maxLength", spec(Api, json!({"description": emoji})),
        issued_and(move |s| expect_eq("keymint.dev/description", s.secret.as_ref().and_then(|x| annotation(x, "keymint.dev/description")), Some(emoji.clone())))));
    t.push(row(C, Sak, "label value 1 MiB", spec(Sak, json!({"secretTemplate": {"labels": {"team": mib("a")}}})), refused("spec.secretTemplate.labels")));
    t.push(row(C, Root, "label key 318 characters", spec(Root, json!({"secretTemplate": {"labels": {format!("{}/{}", "a".repeat(254), "b".repeat(63)): "v"}}})), refused("spec.secretTemplate.labels")));
    // By POST: an apply patch is YAML, and a key this long is not even YAML.
    t.push(row(C, Api, "label key 1 MiB", post_spec(Api, json!({"secretTemplate": {"labels": {mib("a"): "v"}}})), refused("spec.secretTemplate.labels")));
    t.push(row(C, Sak, "annotation key 318 characters", spec(Sak, json!({"secretTemplate": {"annotations": {format!("{}/{}", "a".repeat(254), "b".repeat(63)): "v"}}})), refused("spec.secretTemplate.annotations")));
    t.push(row(C, Api, "annotation value 1 MiB", spec(Api, json!({"secretTemplate": {"annotations": {"note": mib("a")}}})), refused("spec.secretTemplate.annotations")));
    t.push(row(C, Api, "annotation value 4097 two-byte characters", spec(Api, json!({"secretTemplate": {"annotations": {"note": "é".repeat(4097)}}})), refused("spec.secretTemplate.annotations")));
    // Kubernetes caps a label or annotation key's prefix at 253 characters;
    // a key within the schema's 317 characters can still be refused on the Secret.
    t.push(row(C, Api, "label key with a 254-character prefix (the Secret could not carry it)", spec(Api, json!({"secretTemplate": {"labels": {format!("{}/x", "a".repeat(254)): "v"}}})),
        Expect::RefusedOr("spec.secretTemplate.labels", handled("InvalidSpec", &["spec.secretTemplate.labels"], After::Absent))));
    t.push(row(C, Sak, "annotation key with a 300-character prefix (the Secret could not carry it)", spec(Sak, json!({"secretTemplate": {"annotations": {format!("{}/x", "a".repeat(300)): "v"}}})),
        Expect::RefusedOr("spec.secretTemplate.annotations", handled("InvalidSpec", &["spec.secretTemplate.annotations"], After::Absent))));
    t.push(row(C, Api, "metadata.name 254 characters", post_meta(Api, json!({"name": "a".repeat(254)})), refused("metadata.name")));
    t.push(row(C, Root, "metadata.name 1 MiB", post_meta(Root, json!({"name": mib("a")})), refused("metadata.name")));
    t.push(row(C, Api, "the resource's own annotations 300 KiB", meta(Api, json!({"annotations": {"example.com/blob": "a".repeat(300 * KIB)}}), json!({})), refused("metadata.annotations")));
    t.push(row(C, Sak, "the resource's own label value 64 characters", meta(Sak, json!({"labels": {"team": "a".repeat(64)}}), json!({})), refused("metadata.labels")));
    t.push(row(C, Api, "a 4 MiB request body", spec(Api, json!({"description": "a".repeat(4 * MIB)})), Expect::TooLarge));
    // The rotate-request annotation is copied to the Secret (as
    // keymint.dev/rotate-request-handled): a value the resource may carry can
    // be one the Secret may not.
    t.push(row(C, Api, "keymint.dev/rotate-request annotation of 200 KiB with a full secretTemplate",
        meta(Api, json!({"annotations": {"keymint.dev/rotate-request": "r".repeat(200 * KIB)}}),
            json!({"secretTemplate": {"annotations": entries(32, |i| format!("example.com/note-{i}"), |_| "n".repeat(4096))}})),
        Expect::RefusedOr("metadata.annotations", State::Any(vec![
            handled("InvalidSpec", &["keymint.dev/rotate-request"], After::Absent),
            ready_and(|_| Ok(())),
        ]))));
}

#[rustfmt::skip]
fn unicode(t: &mut Table) {
    use Category::Unicode as C;
    use Kind::*;
    let names: [(&str, Kind, &str); 7] = [
        ("Cyrillic а (U+0430) homoglyph", Api, "billing-\u{430}pi"),
        ("zero-width joiner", Api, "bill\u{200d}ing"),
        ("right-to-left override U+202E", Sak, "\u{202e}yek-gnillib"),
        ("fullwidth letters", Root, "\u{ff42}\u{ff49}\u{ff4c}\u{ff4c}"),
        ("NUL", Api, "billing\u{0}"),
        ("trailing newline", Sak, "billing\n"),
        ("BEL control character", Root, "bill\u{7}ing"),
    ];
    for (what, kind, name) in names {
        t.push(row(C, kind, format!("metadata.name with {what}"), post_meta(kind, json!({"name": name})), refused("metadata.name")));
    }
    let secret_names: [(&str, Kind, &str); 5] = [
        ("Cyrillic е (U+0435)", Api, "billing-k\u{435}y"),
        ("zero-width space", Sak, "billing\u{200b}key"),
        ("right-to-left override", Root, "\u{202e}yek"),
        ("fullwidth letters", Api, "\u{ff4b}\u{ff45}\u{ff59}"),
        ("NUL", Api, "key\u{0}"),
    ];
    for (what, kind, name) in secret_names {
        t.push(row(C, kind, format!("secretName with {what}"), spec(kind, json!({"secretName": name})), refused("spec.secretName")));
    }
    t.push(row(C, Sak, "serviceAccountName with Cyrillic о (U+043E)", spec(Sak, json!({"serviceAccountName": "r\u{43e}bot"})), refused("spec.serviceAccountName")));
    t.push(row(C, Sak, "serviceAccountName with a zero-width joiner", spec(Sak, json!({"serviceAccountName": "ro\u{200d}bot"})), refused("spec.serviceAccountName")));
    t.push(row(C, Sak, "serviceAccountName with a trailing NUL", spec(Sak, json!({"serviceAccountName": "robot\u{0}"})), refused("spec.serviceAccountName")));
    t.push(row(C, Api, "prefix with Cyrillic а", spec(Api, json!({"format": {"prefix": "\u{430}k"}})), refused("spec.format.prefix")));
    t.push(row(C, Root, "prefix in fullwidth letters", spec(Root, json!({"format": {"prefix": "\u{ff52}\u{ff4b}"}})), refused("spec.format.prefix")));
    t.push(row(C, Api, "permission with Cyrillic а", spec(Api, json!({"permissions": ["re\u{430}d"]})), refused("spec.permissions")));
    t.push(row(C, Api, "permission with a zero-width joiner", spec(Api, json!({"permissions": ["read\u{200d}"]})), refused("spec.permissions")));
    t.push(row(C, Api, "permission with a right-to-left override", spec(Api, json!({"permissions": ["\u{202e}etirw"]})), refused("spec.permissions")));
    t.push(row(C, Root, "secretNamespace with Cyrillic е", spec(Root, json!({"secretNamespace": "keymint-syst\u{435}m"})), refused("spec.secretNamespace")));
    t.push(row(C, Sak, "reserved label key spelt with Cyrillic е", spec(Sak, json!({"secretTemplate": {"labels": {"kubern\u{435}tes.io/service-account.name": "default"}}})), refused("spec.secretTemplate.labels")));
    t.push(row(C, Api, "label value with a right-to-left override", spec(Api, json!({"secretTemplate": {"labels": {"role": "\u{202e}nimda"}}})), refused("spec.secretTemplate.labels")));
    t.push(row(C, Root, "label value with a zero-width joiner", spec(Root, json!({"secretTemplate": {"labels": {"team": "pay\u{200d}ments"}}})), refused("spec.secretTemplate.labels")));
    t.push(row(C, Api, "annotation key with a zero-width space", spec(Api, json!({"secretTemplate": {"annotations": {"example.com/ow\u{200b}ner": "x"}}})), refused("spec.secretTemplate.annotations")));
    let values = json!({
        "example.com/rtl": "\u{202e}nimda\u{202c}",
        "example.com/zwj": "a\u{200d}b\u{200b}c",
        "example.com/emoji": "\u{1F511}\u{1F468}\u{200d}\u{1F4BB}",
        "example.com/nul": "before\u{0}after",
        "example.com/control": "bell\u{7}tab\tnewline\n",
        "example.com/homoglyph": "\u{430}dmin",
    });
    let sent = values.clone();
    t.push(row(C, Api, "annotation values with RTL override, ZWJ, emoji, NUL and control characters are copied verbatim", spec(Api, json!({"secretTemplate": {"annotations": values}})),
        issued_and(move |s| {
            let secret = s.secret.as_ref().ok_or("no Secret")?;
            for (key, value) in sent.as_object().expect("map") {
                expect_eq(key, annotation(secret, key), value.as_str().map(str::to_string))?;
            }
            Ok(())
        })));
    let description = "\u{202e}tropxe gnillib\u{202c} \u{200d}\u{1F511} nul\u{0} bell\u{7} \u{430}dmin";
    t.push(row(C, Api, "description with RTL override, ZWJ, NUL, BEL and homoglyphs is copied verbatim", spec(Api, json!({"description": description})),
        issued_and(move |s| expect_eq("keymint.dev/description", s.secret.as_ref().and_then(|x| annotation(x, "keymint.dev/description")), Some(description.to_string())))));
    t.push(row(C, Sak, "the resource's own label value with Cyrillic а", meta(Sak, json!({"labels": {"team": "p\u{430}yments"}}), json!({})), refused("metadata.labels")));
    t.push(row(C, Api, "the resource's own annotation key with a zero-width joiner", meta(Api, json!({"annotations": {"example.com/no\u{200d}te": "x"}}), json!({})), refused("metadata.annotations")));
    t.push(row(C, Api, "validFor with a fullwidth digit", spec(Api, json!({"validFor": "\u{ff11}h"})), refused("spec.validFor")));
    t.push(row(C, Sak, "gracePeriod with Cyrillic һ (U+04BB) for h", spec(Sak, json!({"gracePeriod": "1\u{4bb}"})), refused("spec.gracePeriod")));
    t.push(row(C, Root, "expiresAt with fullwidth digits", spec(Root, json!({"expiresAt": "\u{ff12}\u{ff10}\u{ff13}\u{ff10}-01-01T00:00:00Z"})), refused("spec.expiresAt")));
    t.push(row(C, Api, "deletionPolicy with Cyrillic е", spec(Api, json!({"deletionPolicy": "R\u{435}tain"})), refused("spec.deletionPolicy")));
    t.push(row(C, Api, "gracePeriod with both micro signs (U+00B5, U+03BC), as Go allows", spec(Api, json!({"gracePeriod": "1\u{b5}s1\u{3bc}s"})), issued()));
}

#[rustfmt::skip]
fn durations(t: &mut Table) {
    use Category::Duration as C;
    use Kind::*;
    let refused_rows: [(Kind, &str, &'static str, &str); 21] = [
        (Api, "validFor with 20 digits of hours", "spec.validFor", "99999999999999999999h"),
        (Sak, "validFor 2562048h, just over Go's int64 nanoseconds", "spec.validFor", "2562048h"),
        (Root, "validFor i64::MAX nanoseconds (292 years)", "spec.validFor", "9223372036854775807ns"),
        (Api, "gracePeriod i64::MAX+1 nanoseconds (overflow)", "spec.gracePeriod", "9223372036854775808ns"),
        (Api, "renewBefore 2^64 seconds (overflow)", "spec.renewBefore", "18446744073709551616s"),
        (Sak, "validFor overflowing only in the sum of its parts", "spec.validFor", "2562047h2562047h"),
        (Api, "validFor over the cap only in the sum of its parts", "spec.validFor", "876000h876000h"),
        (Root, "renewBefore -0s", "spec.renewBefore", "-0s"),
        (Api, "validFor with a plus sign", "spec.validFor", "+1h"),
        (Sak, "validFor 0h0m0s", "spec.validFor", "0h0m0s"),
        (Api, "validFor 0.5s (under 1s)", "spec.validFor", "0.5s"),
        (Api, "validFor in exponent notation 1e3s", "spec.validFor", "1e3s"),
        (Root, "gracePeriod in exponent notation 1E3s", "spec.gracePeriod", "1E3s"),
        (Sak, "validFor unit-less fraction 1.5", "spec.validFor", "1.5"),
        (Api, "gracePeriod bare 0 (Go accepts it, the contract does not)", "spec.gracePeriod", "0"),
        (Api, "validFor 1h-30m", "spec.validFor", "1h-30m"),
        (Sak, "renewBefore with a space, 1h 30m", "spec.renewBefore", "1h 30m"),
        (Api, "validFor with a trailing newline", "spec.validFor", "1h\n"),
        (Root, "validFor in ISO 8601, PT1H", "spec.validFor", "PT1H"),
        (Api, "validFor .5h", "spec.validFor", ".5h"),
        (Api, "validFor in uppercase, 1H", "spec.validFor", "1H"),
    ];
    for (kind, what, path, value) in refused_rows {
        let field = path.trim_start_matches("spec.");
        t.push(row(C, kind, what, spec(kind, json!({field: value})), refused(path)));
    }
    t.push(row(C, Api, "validFor with 23 fraction digits, 0.99999999999999999999999h", spec(Api, json!({"validFor": "0.99999999999999999999999h"})),
        issued_and(|s| match lifetime(s) {
            Some(3599 | 3600) => Ok(()),
            other => Err(format!("lifetime {other:?}s, wanted just under 1h")),
        })));
    t.push(row(C, Sak, "gracePeriod below a nanosecond, 0.0000000001ns", spec(Sak, json!({"gracePeriod": "0.0000000001ns"})), issued()));
}

#[rustfmt::skip]
fn timestamps(t: &mut Table) {
    use Category::Timestamp as C;
    use Kind::*;
    let past = |kind: Kind, what: &str, at: &str| row(C, kind, what, spec(kind, json!({"expiresAt": at})),
        Expect::State(handled("InvalidSpec", &["spec.expiresAt"], After::Absent)));
    t.push(past(Api, "expiresAt 1969-12-31T23:59:59Z, before the epoch", "1969-12-31T23:59:59Z"));
    t.push(past(Sak, "expiresAt 0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"));
    t.push(past(Root, "expiresAt at the epoch", "1970-01-01T00:00:00Z"));
    t.push(past(Api, "expiresAt in year 0000", "0000-01-01T00:00:00Z"));
    t.push(row(C, Api, "expiresAt before the epoch with validFor 1h: the key lives 1h", spec(Api, json!({"expiresAt": "1969-12-31T23:59:59Z", "validFor": "1h"})),
        issued_and(|s| expect_eq("lifetime", lifetime(s), Some(3600)))));
    t.push(row(C, Api, "expiresAt in year 10000", spec(Api, json!({"expiresAt": "10000-01-01T00:00:00Z"})), refused("spec.expiresAt")));
    // Year 9999 but beyond what keymint's timestamp type holds
    // (9999-12-30T22:00:00Z): refused, or read and handled, never stored unreadable.
    t.push(row(C, Sak, "expiresAt 9999-12-31T23:59:59Z, the last second of 9999", spec(Sak, json!({"expiresAt": "9999-12-31T23:59:59Z"})),
        Expect::RefusedOr("spec.expiresAt", State::Any(vec![handled("InvalidSpec", &["spec.expiresAt"], After::Absent), ready_and(|_| Ok(()))]))));
    t.push(row(C, Api, "expiresAt 9999-12-30T23:00:00-02:00, year 10000 in UTC", spec(Api, json!({"expiresAt": "9999-12-30T23:00:00-02:00"})),
        Expect::RefusedOr("spec.expiresAt", State::Any(vec![handled("InvalidSpec", &["spec.expiresAt"], After::Absent), ready_and(|_| Ok(()))]))));
    t.push(row(C, Root, "expiresAt 9999-12-30T00:00:00Z: Ready with that expiry", spec(Root, json!({"expiresAt": "9999-12-30T00:00:00Z"})),
        issued_and(|s| {
            expect_eq("status.expiresAt", expires_at(s).as_deref(), Some("9999-12-30T00:00:00Z"))?;
            expect_eq("keymint.dev/expires-at", s.secret.as_ref().and_then(|x| annotation(x, "keymint.dev/expires-at")).as_deref(), Some("9999-12-30T00:00:00Z"))
        })));
    t.push(row(C, Api, "expiresAt on a leap second, 2016-12-31T23:59:60Z", spec(Api, json!({"expiresAt": "2016-12-31T23:59:60Z"})),
        Expect::RefusedOr("spec.expiresAt", handled("InvalidSpec", &["spec.expiresAt"], After::Absent))));
    t.push(row(C, Sak, "expiresAt with offset +25:00", spec(Sak, json!({"expiresAt": "2030-01-01T00:00:00+25:00"})), refused("spec.expiresAt")));
    t.push(row(C, Api, "expiresAt with offset minutes 60", spec(Api, json!({"expiresAt": "2030-01-01T00:00:00+05:60"})), refused("spec.expiresAt")));
    t.push(row(C, Api, "expiresAt with lowercase t and z", spec(Api, json!({"expiresAt": "2030-01-01t00:00:00z"})),
        Expect::RefusedOr("spec.expiresAt", ready_and(|s| expect_eq("status.expiresAt", expires_at(s).as_deref(), Some("2030-01-01T00:00:00Z"))))));
    t.push(row(C, Root, "expiresAt with offset -00:00: Ready, expiry in UTC", spec(Root, json!({"expiresAt": "2030-01-01T00:00:00-00:00"})),
        issued_and(|s| expect_eq("status.expiresAt", expires_at(s).as_deref(), Some("2030-01-01T00:00:00Z")))));
    t.push(row(C, Api, "expiresAt with nine zero fraction digits and offset -23:59", spec(Api, json!({"expiresAt": "2030-01-01T00:00:00.000000000-23:59"})),
        issued_and(|s| expect_eq("status.expiresAt", expires_at(s).as_deref(), Some("2030-01-01T23:59:00Z")))));
    let refused_rows: [(Kind, &str, &str); 5] = [
        (Api, "expiresAt with an expanded year +002030", "+002030-01-01T00:00:00Z"),
        (Sak, "expiresAt without zero padding", "2030-1-1T0:0:0Z"),
        (Api, "expiresAt with a comma before the fraction", "2030-01-01T00:00:00,5Z"),
        (Api, "expiresAt without seconds", "2030-01-01T00:00Z"),
        (Root, "expiresAt February 29 of a common year", "2027-02-29T00:00:00Z"),
    ];
    for (kind, what, at) in refused_rows {
        t.push(row(C, kind, what, spec(kind, json!({"expiresAt": at})), refused("spec.expiresAt")));
    }
}

#[rustfmt::skip]
fn wrong_types(t: &mut Table) {
    use Category::WrongType as C;
    use Kind::*;
    let rows: [(Kind, &str, &'static str, Value); 19] = [
        (Api, "secretName a number", "spec.secretName", json!({"secretName": 123})),
        (Sak, "serviceAccountName a list", "spec.serviceAccountName", json!({"serviceAccountName": ["robot"]})),
        (Api, "description a boolean", "spec.description", json!({"description": true})),
        (Root, "format.prefix a number", "spec.format.prefix", json!({"format": {"prefix": 1}})),
        (Api, "permissions an object", "spec.permissions", json!({"permissions": {"read": true}})),
        (Api, "permissions [null]", "spec.permissions", json!({"permissions": [null]})),
        (Api, "permissions a nested list", "spec.permissions", json!({"permissions": [["read"]]})),
        (Sak, "secretTemplate a list", "spec.secretTemplate", json!({"secretTemplate": []})),
        (Api, "secretTemplate.labels a list", "spec.secretTemplate.labels", json!({"secretTemplate": {"labels": ["team=payments"]}})),
        (Root, "annotation value an object", "spec.secretTemplate.annotations", json!({"secretTemplate": {"annotations": {"note": {"a": "b"}}}})),
        (Api, "format a string", "spec.format", json!({"format": "ak"})),
        (Sak, "entropyBits 1e300", "spec.format.entropyBits", json!({"format": {"entropyBits": 1e300}})),
        (Root, "entropyBits -256", "spec.format.entropyBits", json!({"format": {"entropyBits": -256}})),
        (Api, "expiresAt a boolean", "spec.expiresAt", json!({"expiresAt": true})),
        (Sak, "expiresAt an object", "spec.expiresAt", json!({"expiresAt": {"seconds": 1}})),
        (Api, "deletionPolicy a list", "spec.deletionPolicy", json!({"deletionPolicy": ["Retain"]})),
        (Api, "permissions null (required)", "spec.permissions", json!({"permissions": null})),
        (Sak, "serviceAccountName null (required)", "spec.serviceAccountName", json!({"serviceAccountName": null})),
        (Root, "secretNamespace a number", "spec.secretNamespace", json!({"secretNamespace": 8})),
    ];
    for (kind, what, path, patch) in rows {
        t.push(row(C, kind, what, post_spec(kind, patch), refused(path)));
    }
    t.push(row(C, Api, "spec a string", post(json!({"spec": "permissions: [read]"})), refused("spec")));
    t.push(row(C, Sak, "spec a list", post(json!({"spec": []})), refused("spec")));
    t.push(row(C, Api, "spec null", post(json!({"spec": null})), refused("spec")));
    t.push(row(C, Api, "metadata.name a number", post(json!({"metadata": {"name": 5}, "spec": Api.minimal()})), refused("ObjectMeta.name")));
    t.push(row(C, Api, "metadata.labels a list", post(json!({"metadata": {"labels": ["a"]}, "spec": Api.minimal()})), refused("ObjectMeta.labels")));
    t.push(row(C, Api, "entropyBits 2^64", Input::Raw(format!(
        r#"{{"apiVersion":"{}","kind":"APIKey","metadata":{{"name":"@NAME@"}},"spec":{{"permissions":["read"],"format":{{"entropyBits":18446744073709551616}}}}}}"#,
        api::API_VERSION)), refused("spec.format.entropyBits")));
    t.push(row(C, Api, "optional fields null are dropped like missing ones", post_spec(Api, json!({"secretName": null, "description": null, "format": null, "secretTemplate": null, "expiresAt": null})),
        issued_and(|s| expect_eq("stored spec", &s.spec, &json!({"permissions": ["read"]})))));
    t.push(row(C, Api, "entropyBits 256.0 is the integer 256", post_spec(Api, json!({"format": {"entropyBits": 256.0}})),
        issued_and(|s| expect_eq("stored entropyBits", s.spec["format"]["entropyBits"].as_u64(), Some(256)))));
    t.push(row(C, Sak, "label value null", post_spec(Sak, json!({"secretTemplate": {"labels": {"team": null}}})),
        Expect::RefusedOr("spec.secretTemplate.labels", ready_and(|s| expect_eq("label team", s.secret.as_ref().and_then(|x| label(x, "team")), None)))));
}

#[rustfmt::skip]
fn unknown_fields(t: &mut Table) {
    use Category::UnknownField as C;
    use Kind::*;
    let with = |kind: Kind, extra: Value| post(with_nulls(&json!({"spec": kind.minimal()}), &extra));
    t.push(row(C, Api, "top-level data (as in a Secret)", with(Api, json!({"data": {"key": "YWtfYXR0YWNrZXI="}})), refused("data")));
    t.push(row(C, Sak, "metadata.owner", with(Sak, json!({"metadata": {"owner": "someone"}})), refused("metadata.owner")));
    t.push(row(C, Root, "spec.format.prefixes", with(Root, json!({"spec": {"format": {"prefixes": ["rk"]}}})), refused("spec.format.prefixes")));
    t.push(row(C, Api, "spec.secretTemplate.type asking for a service-account token", with(Api, json!({"spec": {"secretTemplate": {"type": "kubernetes.io/service-account-token"}}})), refused("spec.secretTemplate.type")));
    t.push(row(C, Sak, "spec.secretTemplate.data", with(Sak, json!({"spec": {"secretTemplate": {"data": {"key": "ak_attacker"}}}})), refused("spec.secretTemplate.data")));
    t.push(row(C, Api, "spec.type", with(Api, json!({"spec": {"type": "kubernetes.io/service-account-token"}})), refused("spec.type")));
    t.push(row(C, Root, "spec.ownerReferences", with(Root, json!({"spec": {"ownerReferences": [{"kind": "Namespace", "name": "kube-system"}]}})), refused("spec.ownerReferences")));
    t.push(row(C, Api, "spec.SecretName (miscased)", with(Api, json!({"spec": {"SecretName": "x"}})), refused("spec.SecretName")));
    t.push(row(C, Api, "spec.secretNamespace on an APIKey (a RootKey-only field)", with(Api, json!({"spec": {"secretNamespace": "kube-system"}})), refused("spec.secretNamespace")));
    t.push(row(C, Sak, "spec.secretNamespace on a ServiceAccountKey", with(Sak, json!({"spec": {"secretNamespace": "kube-system"}})), refused("spec.secretNamespace")));
    t.push(row(C, Sak, "spec.permissions on a ServiceAccountKey", with(Sak, json!({"spec": {"permissions": ["admin"]}})), refused("spec.permissions")));
    t.push(row(C, Root, "spec.serviceAccountName on a RootKey", with(Root, json!({"spec": {"serviceAccountName": "default"}})), refused("spec.serviceAccountName")));
    t.push(row(C, Api, "duplicate secretName in the JSON", Input::Raw(format!(
        r#"{{"apiVersion":"{}","kind":"APIKey","metadata":{{"name":"@NAME@"}},"spec":{{"permissions":["read"],"secretName":"a","secretName":"b"}}}}"#,
        api::API_VERSION)), refused("secretName")));
    t.push(row(C, Api, "kind ApiKey (miscased)", post(json!({"kind": "ApiKey", "spec": Api.minimal()})), refused("kind")));
    t.push(row(C, Api, "spec.secretTemplate.type sent without strict validation is pruned: the Secret stays keymint.dev/key",
        Input::Post { manifest: json!({"spec": {"permissions": ["read"], "secretTemplate": {"type": "kubernetes.io/service-account-token", "labels": {"team": "a"}}}}), strict: false },
        issued_and(|s| expect_eq("stored secretTemplate", &s.spec["secretTemplate"], &json!({"labels": {"team": "a"}})))));
    let forged = json!({"id": "FORGED1", "keySHA256": "0".repeat(64), "conditions": [{"type": "Ready", "status": "True", "reason": "KeyIssued", "message": "forged", "lastTransitionTime": "2020-01-01T00:00:00Z"}]});
    t.push(row(C, Api, "status sent with the object on create is ignored", with(Api, json!({"status": forged})),
        issued_and(|s| if s.status.id.as_deref() == Some("FORGED1") { Err("the forged status.id was kept".into()) } else { Ok(()) })));
}

#[rustfmt::skip]
fn huge_templates(t: &mut Table) {
    use Category::HugeTemplate as C;
    use Kind::*;
    t.push(row(C, Api, "10000 labels", spec(Api, json!({"secretTemplate": {"labels": entries(10_000, |i| format!("l{i}"), |_| "v".into())}})), refused("spec.secretTemplate.labels")));
    t.push(row(C, Sak, "300 annotations of 4096 characters (1.2 MiB)", spec(Sak, json!({"secretTemplate": {"annotations": entries(300, |i| format!("a{i}"), |_| "a".repeat(4096))}})), refused("spec.secretTemplate.annotations")));
    let key = |i: usize| format!("{}/{}{i:02}", "p".repeat(253), "n".repeat(61));
    let annotations = entries(32, key, |i| format!("{i:02}{}", "v".repeat(4094)));
    let sent = annotations.clone();
    t.push(row(C, Api, "32 annotations of 4096 characters with 317-character keys", spec(Api, json!({"secretTemplate": {"annotations": annotations}})),
        issued_and(move |s| {
            let secret = s.secret.as_ref().ok_or("no Secret")?;
            for (key, value) in sent.as_object().expect("map") {
                if annotation(secret, key).as_deref() != value.as_str() {
                    return Err(format!("annotation {} missing or different", short(key)));
                }
            }
            Ok(())
        })));
    let labels = entries(64, key, |i| format!("{i:02}{}", "v".repeat(61)));
    let sent = labels.clone();
    t.push(row(C, Root, "64 labels of 63 characters with 317-character keys", spec(Root, json!({"secretTemplate": {"labels": labels}})),
        issued_and(move |s| {
            let secret = s.secret.as_ref().ok_or("no Secret")?;
            let found = sent.as_object().expect("map").iter().filter(|(k, v)| label(secret, k).as_deref() == v.as_str()).count();
            expect_eq("template labels on the Secret", found, 64)
        })));
    // maxLength counts characters; the API server's 256 KiB limit on a
    // Secret's annotations counts bytes.
    t.push(row(C, Api, "32 annotations of 4096 four-byte characters (512 KiB)", spec(Api, json!({"secretTemplate": {"annotations": entries(32, |i| format!("example.com/e{i}"), |_| "\u{1F511}".repeat(4096))}})),
        Expect::RefusedOr("spec.secretTemplate.annotations", handled("InvalidSpec", &["spec.secretTemplate.annotations"], After::Absent))));
    t.push(row(C, Sak, "32 annotations of 4096 two-byte characters (256 KiB of values)", spec(Sak, json!({"secretTemplate": {"annotations": entries(32, |i| format!("example.com/e{i}"), |_| "é".repeat(4096))}})),
        Expect::RefusedOr("spec.secretTemplate.annotations", handled("InvalidSpec", &["spec.secretTemplate.annotations"], After::Absent))));
    t.push(row(C, Api, "label with an empty key", spec(Api, json!({"secretTemplate": {"labels": {"": "v"}}})), refused("spec.secretTemplate.labels")));
}

#[rustfmt::skip]
fn claims_owner(t: &mut Table) {
    use Category::ClaimsOwner as C;
    use Kind::*;
    let (labels, annotations) = ("spec.secretTemplate.labels", "spec.secretTemplate.annotations");
    let template = |kind: Kind, map: &str, key: &str, value: &str| spec(kind, json!({"secretTemplate": {map: {key: value}}}));
    t.push(row(C, Api, "annotation keymint.dev/owner naming another resource", template(Api, "annotations", "keymint.dev/owner", "APIKey/kube-system/admin"), refused(annotations)));
    t.push(row(C, Sak, "label keymint.dev/owner", template(Sak, "labels", "keymint.dev/owner", "x"), refused(labels)));
    t.push(row(C, Api, "annotation keymint.dev/key-sha256 (forging the record)", template(Api, "annotations", "keymint.dev/key-sha256", &"0".repeat(64)), refused(annotations)));
    t.push(row(C, Root, "annotation kubectl.kubernetes.io/last-applied-configuration", template(Root, "annotations", "kubectl.kubernetes.io/last-applied-configuration", "{}"), refused(annotations)));
    t.push(row(C, Api, "annotation kubernetes.io/service-account.uid", template(Api, "annotations", "kubernetes.io/service-account.uid", "1234"), refused(annotations)));
    t.push(row(C, Api, "label argocd.argoproj.io/secret-type: cluster (Argo CD would read it as a cluster)", template(Api, "labels", "argocd.argoproj.io/secret-type", "cluster"), refused(labels)));
    t.push(row(C, Sak, "annotation argocd.argoproj.io/sync-options", template(Sak, "annotations", "argocd.argoproj.io/sync-options", "Prune=false"), refused(annotations)));
    t.push(row(C, Api, "label under a subdomain, sub.argocd.argoproj.io/x", template(Api, "labels", "sub.argocd.argoproj.io/x", "y"), refused(labels)));
    // Not reserved by the contract: copied, and harmless while the Secret says
    // app.kubernetes.io/managed-by: keymint (Helm adopts only its own).
    let copied = |key: &'static str, value: &'static str, is_label: bool| move |s: &Snapshot| {
        let secret = s.secret.as_ref().ok_or("no Secret")?;
        let found = if is_label { label(secret, key) } else { annotation(secret, key) };
        expect_eq(key, found.as_deref(), Some(value))
    };
    t.push(row(C, Api, "label helm.sh/chart is copied (not reserved)", template(Api, "labels", "helm.sh/chart", "billing-1.0.0"), issued_and(copied("helm.sh/chart", "billing-1.0.0", true))));
    t.push(row(C, Sak, "annotations meta.helm.sh/release-name and -namespace are copied (not reserved)", spec(Sak, json!({"secretTemplate": {"annotations": {"meta.helm.sh/release-name": "billing", "meta.helm.sh/release-namespace": "billing"}}})),
        issued_and(copied("meta.helm.sh/release-name", "billing", false))));
    t.push(row(C, Root, "label kustomize.toolkit.fluxcd.io/name is copied (not reserved)", template(Root, "labels", "kustomize.toolkit.fluxcd.io/name", "infra"), issued_and(copied("kustomize.toolkit.fluxcd.io/name", "infra", true))));
    t.push(row(C, Api, "label app.kubernetes.io/Managed-By (case variant) is a different key", template(Api, "labels", "app.kubernetes.io/Managed-By", "Helm"), issued_and(copied("app.kubernetes.io/Managed-By", "Helm", true))));
    t.push(row(C, Api, "the resource's own labels and annotations claiming an owner are not copied to the Secret",
        meta(Api, json!({
            "labels": {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "other-app", "argocd.argoproj.io/instance": "other-app"},
            "annotations": {"keymint.dev/owner": "APIKey/kube-system/admin", "argocd.argoproj.io/tracking-id": "other-app:/Secret:kube-system/admin"},
        }), json!({})),
        issued_and(|s| {
            let secret = s.secret.as_ref().ok_or("no Secret")?;
            for key in ["app.kubernetes.io/instance", "argocd.argoproj.io/instance"] {
                expect_eq(key, label(secret, key), None)?;
            }
            expect_eq("argocd.argoproj.io/tracking-id", annotation(secret, "argocd.argoproj.io/tracking-id"), None)
        })));
    t.push(row(C, Api, "secretName shaped like a service-account token's still gets a keymint.dev/key Secret", spec(Api, json!({"secretName": "default-token-x7k2p"})), issued()));
}

#[rustfmt::skip]
fn foreign_targets(t: &mut Table) {
    use Category::ForeignTarget as C;
    use Kind::*;
    let conflict = |names: &[&str]| Expect::State(handled("SecretConflict", &[&["spec.secretName"][..], names].concat(), After::Unchanged));
    let foreign = |what: &str, kind: Kind, secret: Secret, namespace: Option<String>| {
        let name = secret.name_any();
        let spec = match &namespace {
            Some(ns) if kind == Root => json!({"secretName": name, "secretNamespace": ns}),
            _ => json!({"secretName": name}),
        };
        row(C, kind, what, Input::Apply { spec: merged(&kind.minimal(), &spec), metadata: json!({}) }, conflict(&[]))
            .with(Fixture::Secret(namespace, Box::new(secret)))
    };
    let helm_opaque = secret("billing-db", "Opaque",
        &[("app.kubernetes.io/managed-by", "Helm")],
        &[("meta.helm.sh/release-name", "billing".into()), ("meta.helm.sh/release-namespace", "billing".into())],
        &[("password", "hunter2")]);
    t.push(foreign("secretName of a Helm-managed Opaque Secret", Api, helm_opaque, None));
    let token = secret("robot-token", "kubernetes.io/service-account-token", &[],
        &[("kubernetes.io/service-account.name", "default".into())], &[("token", "eyJhbGciOi.x.y")]);
    t.push(foreign("secretName of a service-account-token Secret", Sak, token, None));
    let release = secret("sh.helm.release.v1.x.v1", "helm.sh/release.v1",
        &[("owner", "helm"), ("name", "x"), ("status", "deployed"), ("version", "1")], &[], &[("release", "H4sIAAAAAAAA")]);
    t.push(foreign("secretName of a Helm release Secret sh.helm.release.v1.x.v1", Api, release, None));
    let in_operator_ns = t.fixture_name(Root, "foreign");
    t.push(foreign("RootKey secretName of another application's Secret in the operator's namespace", Root, opaque(&in_operator_ns), Some(OPERATOR_NAMESPACE.into())));
    let in_roots_ns = t.fixture_name(Root, "foreign");
    t.push(foreign("RootKey secretName of another application's Secret in keymint-roots", Root, opaque(&in_roots_ns), Some(ROOT_KEY_NAMESPACE.into())));
    t.push(foreign("secretName of a dockerconfigjson Secret", Api,
        secret("registry", "kubernetes.io/dockerconfigjson", &[], &[], &[(".dockerconfigjson", r#"{"auths":{}}"#)]), None));
    t.push(foreign("secretName of a TLS Secret", Sak,
        secret("ingress-tls", "kubernetes.io/tls", &[], &[], &[("tls.crt", "crt"), ("tls.key", "key")]), None));
    t.push(foreign("secretName of a Secret typed keymint.dev/key with no owner annotation", Api,
        secret("typed-only", "keymint.dev/key", &[], &[], &[("key", "ak_planted")]), None));
    let own = format!("APIKey/{}/{}", t.ctx.namespace, t.next_name(Api));
    t.push(foreign("secretName of an Opaque Secret whose owner annotation forges this resource", Api,
        secret("forged-owner", "Opaque", &[], &[("keymint.dev/owner", own)], &[("key", "ak_planted")]), None));
    let ghost = format!("APIKey/{}/ghost", t.ctx.namespace);
    t.push(foreign("secretName of a keymint-labelled Secret of a resource that does not exist", Sak,
        secret("ghost-key", "keymint.dev/key", &[("app.kubernetes.io/managed-by", "keymint")], &[("keymint.dev/owner", ghost)], &[("key", "ak_ghost")]), None));
    // A Secret of the resource's type and with its owner annotation, planted
    // before the resource exists, carrying Argo CD's tracking label: keymint
    // did not write it, so it is not keymint's.
    let own = format!("APIKey/{}/{}", t.ctx.namespace, t.next_name(Api));
    t.push(foreign("secretName of a planted Secret forging this resource's owner annotation and type, tracked by Argo CD", Api,
        secret("planted", "keymint.dev/key", &[("app.kubernetes.io/instance", "argo-app")], &[("keymint.dev/owner", own)], &[("key", "ak_planted")]), None));
    t.push(foreign("secretName of a Secret whose owner annotation is 64 KiB", Api,
        secret("long-owner", "Opaque", &[], &[("keymint.dev/owner", "o".repeat(64 * KIB))], &[("key", "x")]), None));
    // The message says whose it is without quoting the other Secret's annotations.
    let keys: [(Kind, Kind, &str); 3] = [(Api, Sak, "another keymint resource"), (Sak, Api, "another keymint resource"), (Root, Root, "another keymint resource")];
    for (kind, other, names) in keys {
        let other_name = t.fixture_name(other, "owner");
        t.push(row(C, kind, format!("secretName of a {}'s Secret", other.name()), spec(kind, json!({"secretName": other_name})), conflict(&[names]))
            .with(Fixture::Key(other, other_name.clone(), other.minimal())));
    }
    let not_allowed = |what: &str, namespace: &str| row(C, Root, what, spec(Root, json!({"secretNamespace": namespace})),
        Expect::State(handled("NamespaceNotAllowed", &["spec.secretNamespace"], After::Absent)));
    t.push(not_allowed("RootKey secretNamespace kube-system", "kube-system"));
    t.push(not_allowed("RootKey secretNamespace default", "default"));
    let own_namespace = t.ctx.namespace.clone();
    t.push(not_allowed("RootKey secretNamespace of an ordinary namespace", &own_namespace));
    let missing: String = format!("missing-{}", t.ctx.namespace).chars().take(63).collect();
    t.push(not_allowed("RootKey secretNamespace that does not exist", &missing));
    t.push(row(C, Api, "secretName with a namespace, kube-system/default-token", spec(Api, json!({"secretName": "kube-system/default-token"})), refused("spec.secretName")));
    t.push(row(C, Api, "secretName with a relative path", spec(Api, json!({"secretName": "../kube-system/x"})), refused("spec.secretName")));
    t.push(row(C, Sak, "serviceAccountName of another namespace's account, kube-system/default", spec(Sak, json!({"serviceAccountName": "kube-system/default"})), refused("spec.serviceAccountName")));
    t.push(row(C, Api, "metadata.namespace kube-system in a request to the test's namespace", post(json!({"metadata": {"namespace": "kube-system"}, "spec": Api.minimal()})), refused("namespace")));
}

#[rustfmt::skip]
fn hostile_edits(t: &mut Table) {
    use Category::HostileEdit as C;
    use Kind::*;
    t.push(row(C, Sak, "serviceAccountName changed to a missing account: the key is revoked", edit(Sak, json!({}), Edit::Spec(json!({"serviceAccountName": "ghost"}))),
        Expect::State(handled("ServiceAccountNotFound", &["spec.serviceAccountName", "ghost"], After::Absent))));
    t.push(row(C, Sak, "serviceAccountName changed to another account: a new key for the new identity", edit(Sak, json!({}), Edit::Spec(json!({"serviceAccountName": "robot2"}))),
        issued_and(|s| {
            if s.status.id == s.before_id { return Err("the key of the previous account was kept".into()); }
            expect_eq("keymint.dev/service-account", s.secret.as_ref().and_then(|x| annotation(x, "keymint.dev/service-account")).as_deref(), Some("robot2"))
        })));
    t.push(row(C, Api, "deletionPolicy Delete -> Retain drops the owner reference, keeps the key", edit(Api, json!({}), Edit::Spec(json!({"deletionPolicy": "Retain"}))),
        issued_and(|s| {
            expect_eq("status.id", &s.status.id, &s.before_id)?;
            expect_eq("owner references", s.secret.as_ref().map(|x| x.owner_references().len()), Some(0))
        })));
    t.push(row(C, Root, "deletionPolicy Retain -> Delete adds the owner reference, keeps the key", edit(Root, json!({"deletionPolicy": "Retain"}), Edit::Spec(json!({"deletionPolicy": "Delete"}))),
        issued_and(|s| {
            expect_eq("status.id", &s.status.id, &s.before_id)?;
            let kinds: Vec<String> = s.secret.as_ref().map(|x| x.owner_references().iter().map(|r| r.kind.clone()).collect()).unwrap_or_default();
            expect_eq("owner reference kinds", kinds, vec!["RootKey".to_string()])
        })));
    let other = format!("APIKey/{}/someone-else", t.ctx.namespace);
    let reclaimed = || ready_and(|s| expect_eq("status.id", &s.status.id, &s.before_id));
    t.push(row(C, Api, "the Secret's keymint.dev/owner edited to another resource's id",
        edit(Api, json!({}), Edit::Secret(json!({"metadata": {"annotations": {"keymint.dev/owner": other}}}))),
        Expect::State(State::Any(vec![handled("SecretConflict", &["spec.secretName", "someone-else"], After::Unchanged), reclaimed()]))));
    t.push(row(C, Api, "the Secret's keymint.dev/owner removed",
        edit(Api, json!({}), Edit::Secret(json!({"metadata": {"annotations": {"keymint.dev/owner": null}}}))),
        Expect::State(State::Any(vec![handled("SecretConflict", &["spec.secretName"], After::Unchanged), reclaimed()]))));
    t.push(row(C, Sak, "the Secret's type changed to Opaque (immutable)", edit(Sak, json!({}), Edit::Secret(json!({"type": "Opaque"}))), refused("type")));
    t.push(row(C, Api, "the Secret's type changed to a service-account token (immutable)", edit(Api, json!({}), Edit::Secret(json!({"type": "kubernetes.io/service-account-token", "metadata": {"annotations": {"kubernetes.io/service-account.name": "default"}}}))), refused("type")));
    t.push(row(C, Sak, "the Secret's managed-by label changed to Helm is put back", edit(Sak, json!({}), Edit::Secret(json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "Helm"}}}))),
        issued_and(|s| expect_eq("status.id", &s.status.id, &s.before_id))));
    t.push(row(C, Api, "the Secret's owner reference removed is put back", edit(Api, json!({}), Edit::Secret(json!({"metadata": {"ownerReferences": null}}))),
        issued_and(|s| {
            expect_eq("status.id", &s.status.id, &s.before_id)?;
            expect_eq("owner references", s.secret.as_ref().map(|x| x.owner_references().len()), Some(1))
        })));
    // Planting a key: a value keymint did not mint, with its hash recorded so
    // that the tamper check passes. Ready must still mean a keymint token.
    t.push(row(C, Api, "the Secret's key replaced by a planted value with a matching key-sha256",
        edit(Api, json!({}), Edit::Secret(json!({"data": {"key": "aHVudGVyMg=="}, "metadata": {"annotations": {"keymint.dev/key-sha256": sha256_hex("hunter2")}}}))),
        issued()));
    t.push(row(C, Api, "the Secret's keymint.dev/expires-at set beyond what keymint can read: a new key", edit(Api, json!({}), Edit::Secret(json!({"metadata": {"annotations": {"keymint.dev/expires-at": "9999-12-31T23:59:59Z"}}}))),
        issued_and(|s| if s.status.id == s.before_id { Err("the unreadable record was kept".into()) } else { Ok(()) })));
    let foreign_name = t.fixture_name(Api, "foreign");
    t.push(row(C, Api, "secretName of a Ready key changed to another application's Secret", edit(Api, json!({}), Edit::Spec(json!({"secretName": foreign_name}))),
        Expect::State(handled("SecretConflict", &["spec.secretName"], After::Unchanged)))
        .with(Fixture::Secret(None, Box::new(opaque(&foreign_name)))));
    let other_key = t.fixture_name(Sak, "owner");
    t.push(row(C, Api, "secretName of a Ready key changed to a ServiceAccountKey's Secret", edit(Api, json!({}), Edit::Spec(json!({"secretName": other_key}))),
        Expect::State(handled("SecretConflict", &["spec.secretName", "another keymint resource"], After::Unchanged)))
        .with(Fixture::Key(Sak, other_key.clone(), Sak.minimal())));
    t.push(row(C, Root, "secretNamespace of a Ready RootKey changed to kube-system", edit(Root, json!({}), Edit::Spec(json!({"secretNamespace": "kube-system"}))),
        Expect::State(handled("NamespaceNotAllowed", &["spec.secretNamespace"], After::Absent))));
    t.push(row(C, Api, "expiresAt of a never-expiring key set before the epoch", edit(Api, json!({}), Edit::Spec(json!({"expiresAt": "1969-12-31T23:59:59Z"}))),
        Expect::State(handled("InvalidSpec", &["spec.expiresAt"], After::Unchanged))));
    t.push(row(C, Api, "expiresAt of a Ready key set to 9999-12-31T23:59:59Z", edit(Api, json!({}), Edit::Spec(json!({"expiresAt": "9999-12-31T23:59:59Z"}))),
        Expect::RefusedOr("spec.expiresAt", State::Any(vec![handled("InvalidSpec", &["spec.expiresAt"], After::Unchanged), ready_and(|_| Ok(()))]))));
    t.push(row(C, Sak, "serviceAccountName changed to a Cyrillic homoglyph", edit(Sak, json!({}), Edit::Spec(json!({"serviceAccountName": "r\u{43e}bot"}))), refused("spec.serviceAccountName")));
    t.push(row(C, Api, "keymint.dev/rotate-request annotation of 1 MiB", edit(Api, json!({}), Edit::Resource(json!({"metadata": {"annotations": {"keymint.dev/rotate-request": "r".repeat(MIB)}}}))), refused("metadata.annotations")));
    t.push(row(C, Sak, "a forged status sent to the main resource is ignored",
        edit(Sak, json!({}), Edit::Resource(json!({"status": {"id": "FORGED1", "conditions": [{"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": "forged", "lastTransitionTime": "2020-01-01T00:00:00Z"}]}}))),
        issued_and(|s| expect_eq("status.id", &s.status.id, &s.before_id))));
}

fn rows(ctx: &Ctx) -> Vec<Row> {
    let mut table = Table {
        ctx,
        rows: Vec::new(),
    };
    oversized(&mut table);
    unicode(&mut table);
    durations(&mut table);
    timestamps(&mut table);
    wrong_types(&mut table);
    unknown_fields(&mut table);
    huge_templates(&mut table);
    claims_owner(&mut table);
    foreign_targets(&mut table);
    hostile_edits(&mut table);
    table.rows
}

/// A test's client and namespace.
struct Ctx {
    client: kube::Client,
    namespace: String,
}

impl Ctx {
    fn api(&self, kind: Kind) -> Api<DynamicObject> {
        let resource = kind.resource();
        if kind.namespaced() {
            Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        }
    }

    fn secrets(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// RootKeys are cluster-scoped: their names carry the test's namespace name.
    fn object_name(&self, kind: Kind, name: &str) -> String {
        if kind.namespaced() {
            name.to_string()
        } else {
            format!("{}-{name}", self.namespace)
        }
    }

    fn owner_id(&self, kind: Kind, name: &str) -> String {
        if kind.namespaced() {
            format!("{}/{}/{name}", kind.name(), self.namespace)
        } else {
            format!("{}/{name}", kind.name())
        }
    }

    /// Where the Secret of a `kind` object named `name` with `spec` goes.
    fn target(&self, kind: Kind, name: &str, spec: &Value) -> (String, String) {
        let namespace = if kind.namespaced() {
            self.namespace.clone()
        } else {
            spec["secretNamespace"]
                .as_str()
                .unwrap_or(OPERATOR_NAMESPACE)
                .to_string()
        };
        let secret = spec["secretName"].as_str().unwrap_or(name).to_string();
        (namespace, secret)
    }

    fn manifest(&self, kind: Kind, name: &str, spec: &Value, metadata: &Value) -> Value {
        let mut metadata = metadata.clone();
        metadata["name"] = json!(name);
        json!({
            "apiVersion": api::API_VERSION,
            "kind": kind.name(),
            "metadata": metadata,
            "spec": spec,
        })
    }

    /// POST `body` (strict or ignoring unknown fields), for real or as a dry run.
    async fn post(
        &self,
        kind: Kind,
        body: Vec<u8>,
        strict: bool,
        dry_run: bool,
    ) -> Result<Value, kube::Error> {
        let namespace = kind.namespaced().then_some(self.namespace.as_str());
        let mut url = DynamicObject::url_path(&kind.resource(), namespace);
        url.push_str(if strict {
            "?fieldValidation=Strict"
        } else {
            "?fieldValidation=Ignore"
        });
        if dry_run {
            url.push_str("&dryRun=All");
        }
        let request = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .expect("request");
        self.client.request::<Value>(request).await
    }

    /// Strict server-side apply, for real or as a dry run.
    async fn apply(
        &self,
        kind: Kind,
        name: &str,
        body: &Value,
        dry_run: bool,
    ) -> Result<Value, kube::Error> {
        let mut params = PatchParams::apply(TEST_MANAGER)
            .force()
            .validation(ValidationDirective::Strict);
        if dry_run {
            params = params.dry_run();
        }
        self.api(kind)
            .patch(name, &params, &Patch::Apply(body))
            .await
            .map(|o| serde_json::to_value(o).expect("JSON"))
    }

    async fn get(&self, kind: Kind, name: &str) -> Result<Value, String> {
        self.api(kind)
            .get(name)
            .await
            .map(|o| serde_json::to_value(o).expect("JSON"))
            .map_err(|e| format!("get {} {name}: {e}", kind.name()))
    }

    /// Whether an object of `kind` named `name` exists (by listing: the name
    /// may not even fit in a URL).
    async fn stored(&self, kind: Kind, name: &str) -> Result<bool, String> {
        let list = self
            .api(kind)
            .list(&Default::default())
            .await
            .map_err(|e| format!("list {}: {e}", kind.name()))?;
        Ok(list
            .items
            .iter()
            .any(|o| o.metadata.name.as_deref() == Some(name)))
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String> {
        self.secrets(namespace)
            .get_opt(name)
            .await
            .map_err(|e| format!("get Secret {namespace}/{name}: {e}"))
    }

    /// The object, its status and the Secret at its target, once the status is current.
    async fn snapshot(
        &self,
        kind: Kind,
        name: &str,
        before: &Option<Secret>,
        before_id: &Option<String>,
    ) -> Result<Snapshot, String> {
        let object = self.get(kind, name).await?;
        let generation = object["metadata"]["generation"].as_i64();
        let status: KeyStatus =
            serde_json::from_value(object.get("status").cloned().unwrap_or(json!({})))
                .map_err(|e| format!("status does not parse: {e}"))?;
        if status.observed_generation != generation || status.conditions.is_empty() {
            return Err(format!(
                "status not current: observedGeneration {:?}, generation {generation:?}, conditions {:?}",
                status.observed_generation,
                status
                    .conditions
                    .iter()
                    .map(|c| (&c.status, &c.reason))
                    .collect::<Vec<_>>()
            ));
        }
        let spec = object["spec"].clone();
        let (secret_namespace, secret_name) = self.target(kind, name, &spec);
        let secret = self.secret(&secret_namespace, &secret_name).await?;
        let prefix = spec["format"]["prefix"]
            .as_str()
            .unwrap_or(kind.default_prefix())
            .to_string();
        Ok(Snapshot {
            spec,
            status,
            owner: self.owner_id(kind, name),
            prefix,
            secret_namespace,
            secret_name,
            secret,
            before: before.clone(),
            before_id: before_id.clone(),
        })
    }
}

/// Polls `probe` (with `eventually`) until it succeeds or [`ROW_WAIT`] has
/// passed; then returns its last answer instead of panicking, so that one
/// row's failure is collected with the others.
async fn poll<T, F, Fut>(what: &str, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + ROW_WAIT;
    eventually(what, ROW_WAIT * 3, || {
        let attempt = probe();
        async move {
            match attempt.await {
                Ok(value) => Ok(Ok(value)),
                Err(last) if Instant::now() >= deadline => Ok(Err(last)),
                Err(last) => Err(last),
            }
        }
    })
    .await
}

/// Whether the error cause `field` is `path` or inside it.
fn names_field(field: &str, path: &str) -> bool {
    field == path
        || field
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// Checks that `result` is a refusal with one of `codes` naming `path`.
fn check_refused(
    result: &Result<Value, kube::Error>,
    codes: &[u16],
    path: &str,
) -> Result<(), String> {
    let status = match result {
        Ok(_) => return Err("accepted".into()),
        Err(kube::Error::Api(status)) => status,
        Err(other) => return Err(format!("not an API error: {}", short(&other.to_string()))),
    };
    let message = short(&status.message);
    if !codes.contains(&status.code) {
        return Err(format!(
            "HTTP {} (expected {codes:?}): {message}",
            status.code
        ));
    }
    if status.code == 413 {
        return Ok(());
    }
    if !status.message.contains(path) {
        return Err(format!(
            "HTTP {}: message does not name {path}: {message}",
            status.code
        ));
    }
    // A 422 lists its causes: they must all be about the row's field.
    if status.code == 422 {
        let fields: Vec<&str> = status
            .details
            .iter()
            .flat_map(|d| d.causes.iter())
            .map(|c| c.field.as_str())
            .filter(|f| !f.is_empty() && *f != "<nil>")
            .collect();
        if fields.is_empty() || fields.iter().any(|f| !names_field(f, path)) {
            return Err(format!(
                "causes name {fields:?}, not just {path}: {message}"
            ));
        }
    }
    Ok(())
}

fn ready_condition(status: &KeyStatus) -> Result<&Condition, String> {
    status
        .condition(api::CONDITION_READY)
        .ok_or_else(|| "no Ready condition".to_string())
}

/// The Secret is exactly as it was (nobody wrote it).
fn same_secret(before: &Secret, after: &Secret) -> Result<(), String> {
    let differs = |what: &str| Err(format!("the Secret's {what} changed"));
    if after.resource_version() != before.resource_version() {
        return differs("resourceVersion");
    }
    if after.type_ != before.type_ {
        return differs("type");
    }
    if after.data != before.data {
        return differs("data");
    }
    if after.labels() != before.labels() || after.annotations() != before.annotations() {
        return differs("labels or annotations");
    }
    if after.owner_references() != before.owner_references() {
        return differs("owner references");
    }
    Ok(())
}

/// `Ready=True` and a correct Secret at the target.
fn check_issued(s: &Snapshot) -> Result<(), String> {
    let ready = ready_condition(&s.status)?;
    if ready.status != "True" || ready.reason != api::REASON_KEY_ISSUED {
        return Err(format!(
            "Ready={} {}: {}",
            ready.status,
            ready.reason,
            short(&ready.message)
        ));
    }
    let secret = s.secret.as_ref().ok_or_else(|| {
        format!(
            "Ready, but no Secret {}/{}",
            s.secret_namespace, s.secret_name
        )
    })?;
    expect_eq(
        "Secret type",
        secret.type_.as_deref(),
        Some(api::SECRET_TYPE),
    )?;
    let key = text(secret, api::SECRET_KEY).ok_or("no key in the Secret")?;
    if !key.starts_with(&format!("{}_", s.prefix)) || verify_checksum(&key).is_err() {
        return Err(format!(
            "the Secret's key is not a keymint token with prefix {}",
            s.prefix
        ));
    }
    let sha = sha256_hex(&key);
    expect_eq(
        "status.keySHA256",
        s.status.key_sha256.as_deref(),
        Some(sha.as_str()),
    )?;
    expect_eq(
        "keymint.dev/key-sha256",
        annotation(secret, api::KEY_SHA256_ANNOTATION).as_deref(),
        Some(sha.as_str()),
    )?;
    expect_eq(
        "the Secret's id",
        text(secret, api::SECRET_ID),
        s.status.id.clone(),
    )?;
    expect_eq(
        "keymint.dev/owner",
        annotation(secret, "keymint.dev/owner"),
        Some(s.owner.clone()),
    )?;
    expect_eq(
        "app.kubernetes.io/managed-by",
        label(secret, api::MANAGED_BY_LABEL).as_deref(),
        Some(api::MANAGED_BY_VALUE),
    )?;
    expect_eq(
        "status.secretName",
        s.status.secret_name.as_deref(),
        Some(s.secret_name.as_str()),
    )
}

/// `Ready=False` with `reason`, naming `names`; the Secret as `after` says.
fn check_handled(s: &Snapshot, reason: &str, names: &[String], after: After) -> Result<(), String> {
    let ready = ready_condition(&s.status)?;
    if ready.status != "False" || ready.reason != reason {
        return Err(format!(
            "Ready={} {} (wanted False {reason}): {}",
            ready.status,
            ready.reason,
            short(&ready.message)
        ));
    }
    for name in names {
        if !ready.message.contains(name.as_str()) {
            return Err(format!(
                "message does not name {name}: {}",
                short(&ready.message)
            ));
        }
    }
    match (after, &s.secret, &s.before) {
        (After::Absent, None, _) => Ok(()),
        (After::Absent, Some(_), _) => Err(format!(
            "a Secret {}/{} exists",
            s.secret_namespace, s.secret_name
        )),
        (After::Unchanged, Some(after), Some(before)) => same_secret(before, after),
        (After::Unchanged, None, _) => Err(format!(
            "the Secret {}/{} is gone",
            s.secret_namespace, s.secret_name
        )),
        (After::Unchanged, Some(_), None) => Err("no Secret to compare with".into()),
    }
}

fn alternatives(state: &State) -> Vec<&State> {
    match state {
        State::Any(states) => states.iter().flat_map(alternatives).collect(),
        other => vec![other],
    }
}

fn allows_secret(state: &State) -> bool {
    alternatives(state)
        .iter()
        .any(|s| matches!(s, State::Ready(_)))
}

/// Waits until the object reaches `state` (one of its alternatives).
async fn reach(
    ctx: &Ctx,
    kind: Kind,
    name: &str,
    state: &State,
    before: &Option<Secret>,
    before_id: &Option<String>,
) -> Result<String, String> {
    let events_namespace = if kind.namespaced() {
        ctx.namespace.clone()
    } else {
        "default".to_string()
    };
    poll(&format!("{name} to be handled"), || async {
        let snapshot = ctx.snapshot(kind, name, before, before_id).await?;
        let mut misses = Vec::new();
        for alternative in alternatives(state) {
            let result = match alternative {
                State::Ready(check) => check_issued(&snapshot).and_then(|()| check(&snapshot)),
                State::Handled {
                    reason,
                    names,
                    after,
                } => match check_handled(&snapshot, reason, names, *after) {
                    Ok(()) => {
                        let events = events_for(&ctx.client, &events_namespace, name).await;
                        if events.iter().any(|e| {
                            e.reason.as_deref() == Some(*reason)
                                && e.type_.as_deref() == Some("Warning")
                        }) {
                            Ok(())
                        } else {
                            Err(format!("no Warning Event {reason}"))
                        }
                    }
                    Err(miss) => Err(miss),
                },
                State::Any(_) => unreachable!("flattened"),
            };
            match (result, alternative) {
                (Ok(()), State::Handled { reason, .. }) => {
                    return Ok(format!("handled: Ready=False {reason}"));
                }
                (Ok(()), _) => return Ok("accepted: Ready=True".to_string()),
                (Err(miss), _) => misses.push(miss),
            }
        }
        Err(misses.join("; or "))
    })
    .await
    .map_err(|miss| match operator_error(name) {
        Some(error) => format!("{miss}; the operator's last error for {name}: {error}"),
        None => miss,
    })
}

/// The last reconcile error the operator logged for an object named `name`.
fn operator_error(name: &str) -> Option<String> {
    operator_log()
        .lines()
        .filter(|line| line.contains("reconcile failed") && line.contains(&format!("\"{name}\"")))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|entry| {
            entry
                .pointer("/fields/error")
                .and_then(Value::as_str)
                .map(short)
        })
        .next_back()
}

impl Ctx {
    /// Creates a fixture and records what it leaves behind.
    async fn install(&self, fixture: &Fixture, report: &mut Report) -> Result<(), String> {
        match fixture {
            Fixture::Secret(namespace, secret) => {
                let namespace = namespace.clone().unwrap_or_else(|| self.namespace.clone());
                let name = secret.name_any();
                self.secrets(&namespace)
                    .create(&PostParams::default(), secret)
                    .await
                    .map_err(|e| format!("create fixture Secret {namespace}/{name}: {e}"))?;
                report.secrets.push((namespace, name));
            }
            Fixture::Key(kind, name, spec) => {
                self.ready_object(*kind, name, spec, report).await?;
            }
        }
        Ok(())
    }

    /// Applies a valid object and waits for it to be Ready; returns it.
    async fn ready_object(
        &self,
        kind: Kind,
        name: &str,
        spec: &Value,
        report: &mut Report,
    ) -> Result<Value, String> {
        let body = self.manifest(kind, name, spec, &json!({}));
        self.apply(kind, name, &body, false)
            .await
            .map_err(|e| format!("apply {} {name}: {e}", kind.name()))?;
        report.objects.push((kind, name.to_string()));
        report.secrets.push(self.target(kind, name, spec));
        poll(&format!("{name} to be Ready"), || async {
            let snapshot = self.snapshot(kind, name, &None, &None).await?;
            check_issued(&snapshot)
        })
        .await
        .map_err(|e| format!("{} {name} never Ready: {e}", kind.name()))?;
        self.get(kind, name).await
    }
}

/// Sends a new object (for real or as a dry run).
async fn send_new(
    ctx: &Ctx,
    kind: Kind,
    name: &str,
    send: &Input,
    dry_run: bool,
) -> Result<Value, kube::Error> {
    match send {
        Input::Apply { spec, metadata } => {
            let body = ctx.manifest(kind, name, spec, metadata);
            ctx.apply(kind, name, &body, dry_run).await
        }
        Input::Post { manifest, strict } => {
            let body = serde_json::to_vec(&post_manifest(kind, name, manifest)).expect("JSON");
            ctx.post(kind, body, *strict, dry_run).await
        }
        Input::Raw(text) => {
            let body = text.replace("@NAME@", name).into_bytes();
            ctx.post(kind, body, true, dry_run).await
        }
        Input::Edit { .. } => unreachable!("edits are sent by run_edit"),
    }
}

/// A POSTed manifest with apiVersion, kind and metadata.name filled in when absent.
fn post_manifest(kind: Kind, name: &str, manifest: &Value) -> Value {
    let mut manifest = manifest.clone();
    for (key, value) in [("apiVersion", api::API_VERSION), ("kind", kind.name())] {
        if manifest.get(key).is_none() {
            manifest[key] = json!(value);
        }
    }
    if manifest.get("metadata").is_none() {
        manifest["metadata"] = json!({});
    }
    if manifest["metadata"].get("name").is_none() {
        manifest["metadata"]["name"] = json!(name);
    }
    manifest
}

/// The name and spec a new-object row sends.
fn sent_name_and_spec(kind: Kind, name: &str, send: &Input) -> (Option<String>, Value) {
    match send {
        Input::Apply { spec, .. } => (Some(name.to_string()), spec.clone()),
        Input::Post { manifest, .. } => {
            let manifest = post_manifest(kind, name, manifest);
            (
                manifest["metadata"]["name"].as_str().map(str::to_string),
                manifest["spec"].clone(),
            )
        }
        Input::Raw(_) => (Some(name.to_string()), json!({})),
        Input::Edit { .. } => unreachable!("edits are sent by run_edit"),
    }
}

/// Checks that a dry run of the row, if accepted, stores what keymint can read.
fn check_readable(kind: Kind, dry_run: &Result<Value, kube::Error>) -> Result<(), String> {
    match dry_run {
        Ok(object) => kind.readable(object).map_err(|e| {
            format!(
                "the API server accepts it, but keymint cannot read the stored object ({e}); not created, as it would stall the operator's watch of every {}",
                kind.name()
            )
        }),
        Err(_) => Ok(()),
    }
}

async fn run_new(ctx: &Ctx, row: &Row, name: &str, report: &mut Report) {
    let kind = row.kind;
    let dry = send_new(ctx, kind, name, &row.send, true).await;
    if let Err(problem) = check_readable(kind, &dry) {
        report.problems.push(problem);
        return;
    }
    let (sent_name, spec) = sent_name_and_spec(kind, name, &row.send);
    let (secret_namespace, secret_name) = ctx.target(kind, name, &spec);
    // The target as it was (a refused row's target may not even fit in a URL).
    let before = match &row.expect {
        Expect::Refused(_) | Expect::TooLarge => None,
        _ => match ctx.secret(&secret_namespace, &secret_name).await {
            Ok(before) => before,
            Err(problem) => {
                report.problems.push(problem);
                return;
            }
        },
    };
    let result = send_new(ctx, kind, name, &row.send, false).await;
    let state = match &row.expect {
        Expect::Refused(path) => {
            if let Err(problem) = check_refused(&result, &[400, 422], path) {
                report.problems.push(problem);
            }
            None
        }
        Expect::TooLarge => {
            if let Err(problem) = check_refused(&result, &[413], "") {
                report.problems.push(problem);
            }
            None
        }
        Expect::State(state) => match &result {
            Ok(_) => Some(state),
            Err(error) => {
                report
                    .problems
                    .push(format!("refused: {}", short(&error.to_string())));
                None
            }
        },
        Expect::RefusedOr(path, state) => match &result {
            Ok(_) => Some(state),
            Err(_) => {
                match check_refused(&result, &[400, 422], path) {
                    Ok(()) => report.notes.push(format!("refused naming {path}")),
                    Err(problem) => report.problems.push(problem),
                }
                None
            }
        },
    };
    match state {
        Some(state) => {
            report.objects.push((kind, name.to_string()));
            if allows_secret(state) {
                report.secrets.push((secret_namespace, secret_name));
            }
            match reach(ctx, kind, name, state, &before, &None).await {
                Ok(how) => report.notes.push(how),
                Err(problem) => report.problems.push(problem),
            }
        }
        None => {
            // Refused: nothing of it was stored.
            let Some(sent_name) = sent_name else { return };
            match ctx.stored(kind, &sent_name).await {
                Ok(false) => {}
                Ok(true) => {
                    report
                        .problems
                        .push("refused, yet an object was stored".into());
                    report.objects.push((kind, sent_name));
                }
                Err(problem) => report.problems.push(problem),
            }
        }
    }
}

async fn run_edit(
    ctx: &Ctx,
    row: &Row,
    name: &str,
    base: &Value,
    edit: &Edit,
    report: &mut Report,
) {
    let kind = row.kind;
    let original = match ctx.ready_object(kind, name, base, report).await {
        Ok(object) => object,
        Err(problem) => {
            report.problems.push(format!("base object: {problem}"));
            return;
        }
    };
    let before_id = original["status"]["id"].as_str().map(str::to_string);
    let (base_namespace, base_secret) = ctx.target(kind, name, base);
    let strict_merge = PatchParams {
        field_validation: Some(ValidationDirective::Strict),
        ..Default::default()
    };
    let new_spec = match edit {
        Edit::Spec(patch) => merged(base, patch),
        _ => base.clone(),
    };
    let (secret_namespace, secret_name) = ctx.target(kind, name, &new_spec);
    let pre_edit = match ctx.secret(&secret_namespace, &secret_name).await {
        Ok(secret) => secret,
        Err(problem) => {
            report.problems.push(problem);
            return;
        }
    };
    let mut before = pre_edit.clone();
    let result: Result<Value, kube::Error> = match edit {
        Edit::Spec(_) => {
            let body = ctx.manifest(kind, name, &new_spec, &json!({}));
            let dry = ctx.apply(kind, name, &body, true).await;
            if let Err(problem) = check_readable(kind, &dry) {
                report.problems.push(problem);
                return;
            }
            ctx.apply(kind, name, &body, false).await
        }
        Edit::Resource(patch) => ctx
            .api(kind)
            .patch(name, &strict_merge, &Patch::Merge(patch))
            .await
            .map(|o| serde_json::to_value(o).expect("JSON")),
        Edit::Secret(patch) => {
            let patched = ctx
                .secrets(&base_namespace)
                .patch(&base_secret, &PatchParams::default(), &Patch::Merge(patch))
                .await;
            if let Ok(secret) = &patched {
                before = Some(secret.clone());
            }
            patched.map(|s| serde_json::to_value(s).expect("JSON"))
        }
    };
    match &row.expect {
        Expect::Refused(path) => {
            if let Err(problem) = check_refused(&result, &[400, 422], path) {
                report.problems.push(problem);
            }
            // Nothing changed: not the object, not its Secret.
            match ctx.get(kind, name).await {
                Ok(now) => {
                    for field in ["spec", "metadata"] {
                        let (was, is) = (&original[field], &now[field]);
                        let strip = |v: &Value| {
                            let mut v = v.clone();
                            if let Some(m) = v.as_object_mut() {
                                m.remove("managedFields");
                                m.remove("resourceVersion");
                            }
                            v
                        };
                        if strip(was) != strip(is) {
                            report
                                .problems
                                .push(format!("the object's {field} changed"));
                        }
                    }
                }
                Err(problem) => report.problems.push(problem),
            }
            match (ctx.secret(&secret_namespace, &secret_name).await, &pre_edit) {
                (Ok(Some(after)), Some(was)) => {
                    if let Err(problem) = same_secret(was, &after) {
                        report.problems.push(problem);
                    }
                }
                (Ok(after), was) => report.problems.push(format!(
                    "the Secret went from {} to {}",
                    if was.is_some() { "present" } else { "absent" },
                    if after.is_some() { "present" } else { "absent" }
                )),
                (Err(problem), _) => report.problems.push(problem),
            }
        }
        Expect::TooLarge => report
            .problems
            .push("TooLarge is not an edit outcome".into()),
        Expect::State(state) | Expect::RefusedOr(_, state) => {
            if let Err(error) = &result {
                if let Expect::RefusedOr(path, _) = &row.expect {
                    match check_refused(&result, &[400, 422], path) {
                        Ok(()) => report.notes.push(format!("refused naming {path}")),
                        Err(problem) => report.problems.push(problem),
                    }
                } else {
                    report
                        .problems
                        .push(format!("edit refused: {}", short(&error.to_string())));
                }
                return;
            }
            if allows_secret(state) {
                report.secrets.push((secret_namespace, secret_name));
            }
            match reach(ctx, kind, name, state, &before, &before_id).await {
                Ok(how) => report.notes.push(how),
                Err(problem) => report.problems.push(problem),
            }
        }
    }
}

async fn run_row(ctx: &Ctx, index: usize, row: &Row) -> (usize, Report) {
    let mut report = Report::default();
    let name = ctx.object_name(row.kind, &format!("h{index:03}"));
    for fixture in &row.fixtures {
        if let Err(problem) = ctx.install(fixture, &mut report).await {
            report.problems.push(format!("fixture: {problem}"));
            return (index, report);
        }
    }
    match &row.send {
        Input::Edit { base, edit } => run_edit(ctx, row, &name, base, edit, &mut report).await,
        _ => run_new(ctx, row, &name, &mut report).await,
    }
    (index, report)
}

/// Everything this test left that no row allows: objects and Secrets.
async fn strays(
    ctx: &Ctx,
    objects: &BTreeSet<(Kind, String)>,
    secrets: &BTreeSet<(String, String)>,
) -> Vec<String> {
    let mut strays = Vec::new();
    let mine = |kind: Kind, name: &str| {
        kind.namespaced() || name.starts_with(&format!("{}-", ctx.namespace))
    };
    for kind in [Kind::Root, Kind::Sak, Kind::Api] {
        match ctx.api(kind).list(&Default::default()).await {
            Ok(list) => {
                for name in list.items.iter().map(ResourceExt::name_any) {
                    if mine(kind, &name) && !objects.contains(&(kind, name.clone())) {
                        strays.push(format!(
                            "{} {name} is stored but no row accepted it",
                            kind.name()
                        ));
                    }
                }
            }
            Err(error) => strays.push(format!("list {}: {error}", kind.name())),
        }
    }
    let namespaces = [
        ctx.namespace.as_str(),
        OPERATOR_NAMESPACE,
        ROOT_KEY_NAMESPACE,
        "kube-system",
        "default",
    ];
    for namespace in namespaces {
        match ctx.secrets(namespace).list(&Default::default()).await {
            Ok(list) => {
                for name in list.items.iter().map(ResourceExt::name_any) {
                    let ours = namespace == ctx.namespace
                        || name.starts_with(&format!("{}-", ctx.namespace));
                    if ours && !secrets.contains(&(namespace.to_string(), name.clone())) {
                        strays.push(format!(
                            "Secret {namespace}/{name} was written but no row allows it"
                        ));
                    }
                }
            }
            Err(error) => strays.push(format!("list Secrets in {namespace}: {error}")),
        }
    }
    strays
}

/// Deletes this test's RootKeys and the Secrets it left in shared namespaces,
/// then its namespace.
async fn clean_up(ctx: &Ctx) {
    let prefix = format!("{}-", ctx.namespace);
    let roots = ctx.api(Kind::Root);
    if let Ok(list) = roots.list(&Default::default()).await {
        for name in list
            .items
            .iter()
            .map(ResourceExt::name_any)
            .filter(|n| n.starts_with(&prefix))
        {
            let _ = roots.delete(&name, &DeleteParams::default()).await;
        }
    }
    eventually("this test's RootKeys to be gone", WAIT, || async {
        let left: Vec<String> = roots
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .iter()
            .map(ResourceExt::name_any)
            .filter(|n| n.starts_with(&prefix))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
    for namespace in [OPERATOR_NAMESPACE, ROOT_KEY_NAMESPACE] {
        let secrets = ctx.secrets(namespace);
        if let Ok(list) = secrets.list(&Default::default()).await {
            for name in list
                .items
                .iter()
                .map(ResourceExt::name_any)
                .filter(|n| n.starts_with(&prefix))
            {
                let _ = secrets.delete(&name, &DeleteParams::default()).await;
            }
        }
    }
    let _ = Api::<Namespace>::all(ctx.client.clone())
        .delete(&ctx.namespace, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn hostile_input_is_refused_or_handled_never_half_applied() {
    let started = Instant::now();
    let (client, namespace) = setup("hostile").await;
    let ctx = Ctx { client, namespace };
    let accounts = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ctx.namespace);
    for name in ["robot", "robot2"] {
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        accounts
            .create(&PostParams::default(), &account)
            .await
            .expect("service account");
    }
    let rows = rows(&ctx);
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
    clean_up(&ctx).await;

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
