//! The resource's status: a projection of the key's record plus the Ready
//! condition, written only when it changed.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use kube::Resource;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::kinds::{Blocked, KeyResource};
use super::{Context, Error, FIELD_MANAGER, Result};
use crate::api::KeyStatus;
use crate::keys::plan::KeyRecord;

use super::reason::Reason;
use crate::api::CONDITION_CONSUMERS_ROLLED_OUT as CONSUMERS;
use crate::api::CONDITION_READY as READY;
use crate::api::ConsumerStatus;
/// `status.lastRotateRequest`'s maxLength in the CRD.
const MAX_ROTATE_REQUEST_CHARS: usize = 1024;

/// The Ready condition to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Ready {
    pub fn issued(message: String) -> Self {
        Ready {
            status: true,
            reason: Reason::KeyIssued.as_str().into(),
            message,
        }
    }
}

/// The reason of the current Ready condition, if any.
pub fn ready_reason(status: Option<&KeyStatus>) -> Option<&str> {
    ready_condition(status).map(|c| c.reason.as_str())
}

fn ready_condition(status: Option<&KeyStatus>) -> Option<&Condition> {
    find_condition(status, READY)
}

fn find_condition<'a>(status: Option<&'a KeyStatus>, type_: &str) -> Option<&'a Condition> {
    status.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

/// The reason of the current ConsumersRolledOut condition, if any.
pub fn consumers_reason(status: Option<&KeyStatus>) -> Option<&str> {
    find_condition(status, CONSUMERS).map(|c| c.reason.as_str())
}

/// The Ready condition, keeping `lastTransitionTime` unless the status flipped
/// (a timestamp that moves without a real change makes Argo CD and the
/// controller itself see a change that is not there).
fn condition(
    current: Option<&KeyStatus>,
    ready: Ready,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    typed_condition(current, READY, ready, generation, now)
}

fn typed_condition(
    current: Option<&KeyStatus>,
    type_: &str,
    ready: Ready,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if ready.status { "True" } else { "False" };
    let last_transition_time = find_condition(current, type_)
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: ready.reason,
        message: ready.message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// What a status of an issued key is made of.
pub struct Issued<'a> {
    pub record: &'a KeyRecord,
    pub renewal_time: Option<Timestamp>,
    pub secret_name: &'a str,
    /// Set only for a cluster-scoped resource (a RootKey).
    pub secret_namespace: Option<&'a str>,
    pub generation: Option<i64>,
    pub ready: Ready,
    /// SHA-256 of the previous key, while it is kept.
    pub previous_key_sha256: Option<String>,
    /// Keys marked compromised, newest first.
    pub revoked_keys: Vec<crate::api::RevokedKey>,
    pub consumers: Consumers,
}

/// What the status says of the key's consumers.
pub enum Consumers {
    /// The key names none.
    None,
    /// Not known right now (the caches are loading): the status keeps what it said.
    Keep,
    /// Each consumer's state and the `ConsumersRolledOut` condition.
    Report(Vec<ConsumerStatus>, Ready),
}

/// Status of a resource whose key is issued.
#[allow(clippy::too_many_arguments)]
pub fn issued(current: Option<&KeyStatus>, issued: &Issued<'_>, now: Timestamp) -> KeyStatus {
    let record = issued.record;
    let generation = issued.generation;
    KeyStatus {
        id: Some(record.id.clone()),
        created_at: Some(Time(record.created_at)),
        updated_at: Some(Time(record.updated_at)),
        expires_at: record.expires_at.map(Time),
        renewal_time: issued.renewal_time.map(Time),
        secret_name: Some(issued.secret_name.to_string()),
        secret_namespace: issued.secret_namespace.map(str::to_string),
        key_sha256: Some(record.sha256.clone()),
        previous_id: record.previous.as_ref().map(|p| p.id.clone()),
        previous_expires_at: record.previous.as_ref().map(|p| Time(p.until)),
        previous_key_sha256: record
            .previous
            .as_ref()
            .and(issued.previous_key_sha256.clone()),
        revoked_keys: issued.revoked_keys.clone(),
        rotations: Some(i64::try_from(record.rotations).unwrap_or(i64::MAX)),
        // The schema caps it (an annotation value may be far longer).
        last_rotate_request: record
            .rotate_request
            .as_ref()
            .map(|r| r.chars().take(MAX_ROTATE_REQUEST_CHARS).collect()),
        observed_generation: generation,
        consumers: match &issued.consumers {
            Consumers::None => Vec::new(),
            Consumers::Keep => current.map(|s| s.consumers.clone()).unwrap_or_default(),
            Consumers::Report(statuses, _) => statuses.clone(),
        },
        conditions: [
            Some(condition(current, issued.ready.clone(), generation, now)),
            match &issued.consumers {
                Consumers::None => None,
                Consumers::Keep => find_condition(current, CONSUMERS).cloned(),
                Consumers::Report(_, report) => Some(typed_condition(
                    current,
                    CONSUMERS,
                    report.clone(),
                    generation,
                    now,
                )),
            },
        ]
        .into_iter()
        .flatten()
        .collect(),
    }
}

/// Status of a resource whose key cannot be issued. The last key's facts stay
/// (its Secret is still there) unless the key was revoked.
pub fn blocked(
    current: Option<&KeyStatus>,
    why: &Blocked,
    secret_name: &str,
    secret_namespace: Option<&str>,
    generation: Option<i64>,
    now: Timestamp,
) -> KeyStatus {
    let ready = Ready {
        status: false,
        reason: why.reason.as_str().into(),
        message: why.message.clone(),
    };
    let base = match current {
        Some(status) if !why.reason.revokes() => status.clone(),
        Some(status) => KeyStatus {
            rotations: status.rotations,
            // Still listed as revoked by key rings until they would have expired.
            revoked_keys: status.revoked_keys.clone(),
            ..KeyStatus::default()
        },
        None => KeyStatus::default(),
    };
    // While a key is recorded, secretName keeps naming the Secret that holds
    // it: it is what tells keymint where it issued a key (a blocked move to
    // another Secret must never make that one look like keymint's).
    let (secret_name, secret_namespace) = if base.key_sha256.is_some() {
        (base.secret_name.clone(), base.secret_namespace.clone())
    } else {
        (
            Some(secret_name.to_string()),
            secret_namespace
                .map(str::to_string)
                .or(base.secret_namespace.clone()),
        )
    };
    // Other conditions (ConsumersRolledOut) still say what they said.
    let others = base.conditions.iter().filter(|c| c.type_ != READY).cloned();
    let conditions = std::iter::once(condition(current, ready, generation, now))
        .chain(others)
        .collect();
    KeyStatus {
        secret_name,
        secret_namespace,
        observed_generation: generation,
        conditions,
        ..base
    }
}

/// Applies the status through the status subresource, only when it differs.
pub async fn write_if_changed<K: KeyResource>(
    resource: &K,
    ctx: &Context,
    current: Option<&KeyStatus>,
    new: KeyStatus,
) -> Result<()> {
    let serialize = |status: &KeyStatus| {
        serde_json::to_value(status).map_err(|source| Error::Serialize {
            what: "status",
            source,
        })
    };
    let new_value = serialize(&new)?;
    if let Some(current) = current
        && serialize(current)? == new_value
    {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": new_value,
    });
    let written = K::api(ctx.client.clone(), resource)
        .patch_status(
            &resource.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    ctx.record_own_status(&K::kind(&()), written.meta());
    Ok(())
}
