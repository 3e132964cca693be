//! Runs one row against the API server and the operator: sends it (a dry
//! run first), waits for its expected state with a deadline, and reports
//! every mismatch; after the table, finds what no row allows and cleans up.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use keymint::api::{self, KeyStatus};
use keymint::keys::{sha256_hex, verify_checksum};
use keymint_test_support::*;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams, ValidationDirective};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::model::*;
use crate::table::{self, Ctx, Kind, merged, short};

/// How long one row may take to reach its expected state.
const ROW_WAIT: Duration = Duration::from_secs(20);

impl Ctx {
    pub(crate) fn secrets(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub(crate) fn owner_id(&self, kind: Kind, name: &str) -> String {
        if kind.namespaced() {
            format!("{}/{}/{name}", kind.name(), self.namespace)
        } else {
            format!("{}/{name}", kind.name())
        }
    }

    /// Where the Secret of a `kind` object named `name` with `spec` goes.
    pub(crate) fn target(&self, kind: Kind, name: &str, spec: &Value) -> (String, String) {
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

    pub(crate) fn manifest(&self, kind: Kind, name: &str, spec: &Value, metadata: &Value) -> Value {
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
    pub(crate) async fn post(
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
    pub(crate) async fn apply(
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

    pub(crate) async fn get(&self, kind: Kind, name: &str) -> Result<Value, String> {
        self.api(kind)
            .get(name)
            .await
            .map(|o| serde_json::to_value(o).expect("JSON"))
            .map_err(|e| format!("get {} {name}: {e}", kind.name()))
    }

    /// Whether an object of `kind` named `name` exists (by listing: the name
    /// may not even fit in a URL).
    pub(crate) async fn stored(&self, kind: Kind, name: &str) -> Result<bool, String> {
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

    pub(crate) async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Secret>, String> {
        self.secrets(namespace)
            .get_opt(name)
            .await
            .map_err(|e| format!("get Secret {namespace}/{name}: {e}"))
    }

    /// The object, its status and the Secret at its target, once the status is current.
    pub(crate) async fn snapshot(
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
pub(crate) async fn poll<T, F, Fut>(what: &str, mut probe: F) -> Result<T, String>
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

/// Checks that `result` is a refusal with one of `codes` naming `path` (a
/// 413 is refused before the body is read: it names nothing).
pub(crate) fn check_refused(
    result: &Result<Value, kube::Error>,
    codes: &[u16],
    path: &str,
) -> Result<(), String> {
    let status = table::refusal(result)?;
    if status.code == 413 && codes.contains(&413) {
        return Ok(());
    }
    table::check_refused(status, codes, path, true)
}

pub(crate) fn ready_condition(status: &KeyStatus) -> Result<&Condition, String> {
    status
        .condition(api::CONDITION_READY)
        .ok_or_else(|| "no Ready condition".to_string())
}

/// The Secret is exactly as it was (nobody wrote it).
pub(crate) fn same_secret(before: &Secret, after: &Secret) -> Result<(), String> {
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
pub(crate) fn check_issued(s: &Snapshot) -> Result<(), String> {
    let ready = ready_condition(&s.status)?;
    if ready.status != "True"
        || ready.reason != keymint::controller::reason::Reason::KeyIssued.as_str()
    {
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
        annotation(secret, api::names::record::KEY_SHA256).as_deref(),
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
pub(crate) fn check_handled(
    s: &Snapshot,
    reason: &str,
    names: &[String],
    after: After,
) -> Result<(), String> {
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

pub(crate) fn alternatives(state: &State) -> Vec<&State> {
    match state {
        State::Any(states) => states.iter().flat_map(alternatives).collect(),
        other => vec![other],
    }
}

pub(crate) fn allows_secret(state: &State) -> bool {
    alternatives(state)
        .iter()
        .any(|s| matches!(s, State::Ready(_)))
}

/// Waits until the object reaches `state` (one of its alternatives).
pub(crate) async fn reach(
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
pub(crate) fn operator_error(name: &str) -> Option<String> {
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
    pub(crate) async fn install(
        &self,
        fixture: &Fixture,
        report: &mut Report,
    ) -> Result<(), String> {
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
    pub(crate) async fn ready_object(
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
pub(crate) async fn send_new(
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
pub(crate) fn post_manifest(kind: Kind, name: &str, manifest: &Value) -> Value {
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
pub(crate) fn sent_name_and_spec(kind: Kind, name: &str, send: &Input) -> (Option<String>, Value) {
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
pub(crate) fn check_readable(
    kind: Kind,
    dry_run: &Result<Value, kube::Error>,
) -> Result<(), String> {
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

pub(crate) async fn run_new(ctx: &Ctx, row: &Row, name: &str, report: &mut Report) {
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

pub(crate) async fn run_edit(
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

pub(crate) async fn run_row(ctx: &Ctx, index: usize, row: &Row) -> (usize, Report) {
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
pub(crate) async fn strays(
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
