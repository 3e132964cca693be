//! The hostile table's vocabulary: what a row attacks, what exists before it,
//! how it is sent, what must become of it, and the builders the row files
//! write rows with.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keymint::api::KeyStatus;
use kube::api::ObjectMeta;
use serde_json::{Value, json};

use crate::table::Ctx;
use crate::table::{Kind, merged};

pub(crate) const KIB: usize = 1 << 10;
pub(crate) const MIB: usize = 1 << 20;

/// What a row attacks, for the per-category count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Category {
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
    pub(crate) fn label(self) -> &'static str {
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
pub(crate) enum Fixture {
    /// Another application's Secret, in this namespace (`None`: the test's).
    Secret(Option<String>, Box<Secret>),
    /// Another keymint resource (full name, spec), Ready before the row is sent.
    Key(Kind, String, Value),
}

/// A step of an edit of an existing, Ready object.
pub(crate) enum Edit {
    /// The resource re-applied with this merge patch onto its base spec.
    Spec(Value),
    /// A strict JSON merge patch of the resource itself.
    Resource(Value),
    /// A JSON merge patch of the resource's Secret.
    Secret(Value),
}

/// How a row reaches the API server.
pub(crate) enum Input {
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
pub(crate) enum After {
    /// No Secret at the spec's target.
    Absent,
    /// The Secret at the target is exactly as it was before the row (another
    /// application's, or keymint's own before the edit).
    Unchanged,
}

pub(crate) type Check = Box<dyn Fn(&Snapshot) -> Result<(), String>>;

/// The state an accepted row must reach.
pub(crate) enum State {
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

pub(crate) enum Expect {
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
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Expect::Refused(_) | Expect::TooLarge => "refused",
            Expect::State(State::Handled { .. }) => "handled",
            Expect::State(State::Ready(_)) => "accepted",
            Expect::State(State::Any(_)) => "handled-or-accepted",
            Expect::RefusedOr(..) => "refused-or-handled",
        }
    }
}

pub(crate) struct Row {
    pub(crate) category: Category,
    pub(crate) kind: Kind,
    pub(crate) what: String,
    pub(crate) fixtures: Vec<Fixture>,
    pub(crate) send: Input,
    pub(crate) expect: Expect,
}

/// What a row observed: the resource, its status and the Secret at its target.
pub(crate) struct Snapshot {
    pub(crate) spec: Value,
    pub(crate) status: KeyStatus,
    pub(crate) owner: String,
    pub(crate) prefix: String,
    pub(crate) secret_namespace: String,
    pub(crate) secret_name: String,
    pub(crate) secret: Option<Secret>,
    /// The Secret at the target before the hostile step.
    pub(crate) before: Option<Secret>,
    /// `status.id` before an edit.
    pub(crate) before_id: Option<String>,
}

/// A row's problems, and what it legitimately left behind.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) problems: Vec<String>,
    /// How a row with more than one acceptable outcome came out.
    pub(crate) notes: Vec<String>,
    pub(crate) objects: Vec<(Kind, String)>,
    pub(crate) secrets: Vec<(String, String)>,
}

/// Like [`merged`], but a `null` is kept and sent as `null`.
pub(crate) fn with_nulls(base: &Value, patch: &Value) -> Value {
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

pub(crate) fn row(
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
    pub(crate) fn with(mut self, fixture: Fixture) -> Row {
        self.fixtures.push(fixture);
        self
    }
}

/// Strict apply of the kind's minimal spec with `patch` merged in.
pub(crate) fn spec(kind: Kind, patch: Value) -> Input {
    Input::Apply {
        spec: merged(&kind.minimal(), &patch),
        metadata: json!({}),
    }
}

/// Strict apply with extra metadata.
pub(crate) fn meta(kind: Kind, metadata: Value, patch: Value) -> Input {
    Input::Apply {
        spec: merged(&kind.minimal(), &patch),
        metadata,
    }
}

/// Strict POST of the kind's minimal spec with `patch` put in as it is (nulls too).
pub(crate) fn post_spec(kind: Kind, patch: Value) -> Input {
    Input::Post {
        manifest: json!({"spec": with_nulls(&kind.minimal(), &patch)}),
        strict: true,
    }
}

/// Strict POST of the kind's minimal spec with this metadata.
pub(crate) fn post_meta(kind: Kind, metadata: Value) -> Input {
    Input::Post {
        manifest: json!({"metadata": metadata, "spec": kind.minimal()}),
        strict: true,
    }
}

pub(crate) fn post(manifest: Value) -> Input {
    Input::Post {
        manifest,
        strict: true,
    }
}

pub(crate) fn edit(kind: Kind, base: Value, edit: Edit) -> Input {
    Input::Edit {
        base: merged(&kind.minimal(), &base),
        edit,
    }
}

pub(crate) fn refused(path: &'static str) -> Expect {
    Expect::Refused(path)
}

pub(crate) fn handled(reason: &'static str, names: &[&str], after: After) -> State {
    State::Handled {
        reason,
        names: names.iter().map(|n| n.to_string()).collect(),
        after,
    }
}

pub(crate) fn issued() -> Expect {
    Expect::State(State::Ready(Box::new(|_| Ok(()))))
}

pub(crate) fn issued_and(check: impl Fn(&Snapshot) -> Result<(), String> + 'static) -> Expect {
    Expect::State(State::Ready(Box::new(check)))
}

pub(crate) fn ready_and(check: impl Fn(&Snapshot) -> Result<(), String> + 'static) -> State {
    State::Ready(Box::new(check))
}

pub(crate) fn secret(
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

pub(crate) fn opaque(name: &str) -> Secret {
    secret(name, "Opaque", &[], &[], &[("password", "hunter2")])
}

/// The whole value of a template annotation or label map with `count` entries.
pub(crate) fn entries(
    count: usize,
    key: impl Fn(usize) -> String,
    value: impl Fn(usize) -> String,
) -> Value {
    Value::Object((0..count).map(|i| (key(i), json!(value(i)))).collect())
}

pub(crate) fn expect_eq<T: PartialEq + std::fmt::Debug>(
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

pub(crate) fn lifetime(snapshot: &Snapshot) -> Option<i64> {
    let created = snapshot.status.created_at.as_ref()?.0;
    let expires = snapshot.status.expires_at.as_ref()?.0;
    Some(expires.as_second() - created.as_second())
}

pub(crate) fn expires_at(snapshot: &Snapshot) -> Option<String> {
    snapshot
        .status
        .expires_at
        .as_ref()
        .map(|t| serde_json::to_value(t).expect("JSON"))
        .and_then(|v| v.as_str().map(str::to_string))
}

/// The table.
pub(crate) struct Table<'a> {
    pub(crate) ctx: &'a Ctx,
    pub(crate) rows: Vec<Row>,
}

impl Table<'_> {
    /// The name the next row's object gets.
    pub(crate) fn next_name(&self, kind: Kind) -> String {
        self.ctx
            .object_name(kind, &format!("h{:03}", self.rows.len()))
    }

    /// A full name for a fixture object or Secret of this test.
    pub(crate) fn fixture_name(&self, kind: Kind, local: &str) -> String {
        self.ctx
            .object_name(kind, &format!("{local}-{:03}", self.rows.len()))
    }

    pub(crate) fn push(&mut self, row: Row) {
        self.rows.push(row);
    }
}
