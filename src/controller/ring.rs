//! KeyRings: keeps each ring's Secret holding the document of its member
//! keys, and tells a key whether the rings it names take it. The decisions
//! are pure ([`crate::keyring::membership`], [`crate::keyring::consent`]);
//! this module reads the key caches, namespaces and the ring's Secret, writes
//! the Secret (only when the members changed) and the ring's status.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::kinds::{Blocked, KeyResource};
use super::lenient::Parsed;
use super::reason::Reason;
use super::secret::{MANAGED_BY, MANAGED_BY_LABEL, OWNER};
use super::{Context, Error, FIELD_MANAGER, Result};
use crate::api::{
    ApiKey, CONDITION_READY, KeyRing, KeyRingRef, KeyRingStatus, KeyStatus, NamespacesFrom,
    ServiceAccountKey,
};
use crate::keyring::consent::{AllowedFrom, accepts};
use crate::keyring::document::{DOCUMENT_DATA_KEY, Issuer, MemberKind, RingDocument, RingRef};
use crate::keyring::membership::{self, Candidate, CurrentKey, PreviousKey, Refusal};

/// Type of the Secret holding a ring document.
pub const RING_SECRET_TYPE: &str = "keymint.dev/keyring";
/// Label naming the ring on its Secret.
pub const RING_LABEL: &str = "keymint.dev/keyring";
/// Most refused keys the ring's status names.
const MAX_REFUSED_LISTED: usize = 20;
/// A ring whose Secret keymint may not write is looked at again this often.
const CONFLICT_REQUEUE: Duration = Duration::from_secs(30);
/// An idle ring is looked at this often (no write when up to date).
const IDLE_REQUEUE: Duration = Duration::from_secs(3600);

/// What the ring reconciler reads besides the ring: the key controllers' caches.
pub struct RingContext {
    pub ctx: Arc<Context>,
    pub api_keys: Vec<Store<Parsed<ApiKey>>>,
    pub account_keys: Vec<Store<Parsed<ServiceAccountKey>>>,
}

/// The rings a key names, with the namespace defaulted to the key's own.
pub fn named_rings(key_namespace: &str, refs: &[KeyRingRef]) -> Vec<(String, String)> {
    refs.iter()
        .map(|r| {
            (
                r.namespace
                    .clone()
                    .unwrap_or_else(|| key_namespace.to_string()),
                r.name.clone(),
            )
        })
        .collect()
}

/// The rings a key resource asks to join, as controller references.
pub fn rings_of<K: KeyResource>(key: &Parsed<K>) -> Vec<ObjectRef<Parsed<KeyRing>>> {
    let Some(key) = key.ok() else {
        return Vec::new();
    };
    named_rings(&key.namespace().unwrap_or_default(), key.key_rings())
        .into_iter()
        .map(|(namespace, name)| ObjectRef::new(&name).within(&namespace))
        .collect()
}

/// Which namespaces a ring accepts, from its spec.
pub fn allowed_from(ring: &KeyRing) -> AllowedFrom {
    let allowed = ring.spec.allowed_namespaces.as_ref();
    match allowed.and_then(|a| a.from).unwrap_or_default() {
        NamespacesFrom::Same => AllowedFrom::Same,
        NamespacesFrom::All => AllowedFrom::All,
        NamespacesFrom::Selector => {
            AllowedFrom::Selector(allowed.and_then(|a| a.selector.clone()).unwrap_or_default())
        }
    }
}

/// Namespace labels, read once per reconcile (only selectors need them).
struct NamespaceLabels {
    api: Api<Namespace>,
    seen: HashMap<String, Option<BTreeMap<String, String>>>,
}

impl NamespaceLabels {
    fn new(client: kube::Client) -> Self {
        NamespaceLabels {
            api: Api::all(client),
            seen: HashMap::new(),
        }
    }

    async fn of(&mut self, namespace: &str) -> Result<Option<&BTreeMap<String, String>>> {
        if !self.seen.contains_key(namespace) {
            let labels = self
                .api
                .get_metadata_opt(namespace)
                .await?
                .map(|meta| meta.metadata.labels.unwrap_or_default());
            self.seen.insert(namespace.to_string(), labels);
        }
        Ok(self.seen.get(namespace).and_then(Option::as_ref))
    }
}

async fn ring_accepts(
    ring: &KeyRing,
    key_namespace: &str,
    labels: &mut NamespaceLabels,
) -> Result<bool> {
    let allowed = allowed_from(ring);
    let ring_namespace = ring.namespace().unwrap_or_default();
    let key_labels = match allowed {
        AllowedFrom::Selector(_) => labels.of(key_namespace).await?,
        _ => None,
    };
    Ok(accepts(
        &ring_namespace,
        &allowed,
        key_namespace,
        key_labels,
    ))
}

/// Why a key's rings do not (all) take it, for its Ready condition; `None`
/// when every ring it names lists it (or it names none).
pub async fn refusal_for<K: KeyResource>(key: &K, ctx: &Context) -> Result<Option<Blocked>> {
    let key_namespace = key.namespace().unwrap_or_default();
    let mut labels = NamespaceLabels::new(ctx.client.clone());
    let me = format!("{key_namespace}/{}", key.name_any());
    for (namespace, name) in named_rings(&key_namespace, key.key_rings()) {
        let rings = Api::<Parsed<KeyRing>>::namespaced(ctx.client.clone(), &namespace);
        let ring = match rings.get_opt(&name).await? {
            Some(Parsed::Ok(ring)) => ring,
            _ => {
                return Ok(Some(Blocked::new(
                    Reason::KeyRingNotFound,
                    format!("KeyRing {namespace}/{name} not found"),
                )));
            }
        };
        if !ring_accepts(&ring, &key_namespace, &mut labels).await? {
            return Ok(Some(Blocked::new(
                Reason::KeyRingNotAllowed,
                format!(
                    "KeyRing {namespace}/{name} does not accept keys from namespace {key_namespace} (spec.allowedNamespaces)"
                ),
            )));
        }
        if ring
            .status
            .as_ref()
            .is_some_and(|status| status.refused.contains(&me))
        {
            return Ok(Some(Blocked::new(
                Reason::KeyRingFull,
                format!("KeyRing {namespace}/{name} is full: its Secret cannot list more keys"),
            )));
        }
    }
    Ok(None)
}

fn issued(status: Option<&KeyStatus>) -> (Option<CurrentKey>, Option<PreviousKey>) {
    let Some(status) = status else {
        return (None, None);
    };
    let current = match (&status.id, &status.key_sha256, &status.created_at) {
        (Some(id), Some(sha256), Some(created)) => Some(CurrentKey {
            id: id.clone(),
            sha256: sha256.clone(),
            minted: created.0,
            expires_at: status.expires_at.as_ref().map(|t| t.0),
        }),
        _ => None,
    };
    let previous = match (&status.previous_id, &status.previous_expires_at) {
        (Some(id), Some(until)) => Some(PreviousKey {
            id: id.clone(),
            until: until.0,
            sha256: status.previous_key_sha256.clone(),
        }),
        _ => None,
    };
    (current, previous)
}

/// The compromised keys a key's status lists.
fn revoked_of(status: Option<&KeyStatus>) -> Vec<membership::RevokedKey> {
    status
        .map(|status| {
            status
                .revoked_keys
                .iter()
                .map(|key| membership::RevokedKey {
                    id: key.id.clone(),
                    sha256: key.key_sha256.clone(),
                    until: key.until.0,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every key resource in the caches that names `ring`.
async fn candidates(ring: &KeyRing, rc: &RingContext) -> Result<Vec<Candidate>> {
    let mut labels = NamespaceLabels::new(rc.ctx.client.clone());
    let mut found = Vec::new();
    candidates_of(&rc.api_keys, ring, &mut labels, &mut found).await?;
    candidates_of(&rc.account_keys, ring, &mut labels, &mut found).await?;
    Ok(found)
}

/// The keys of one kind's caches that name `ring`, added to `found`.
async fn candidates_of<K: KeyResource>(
    stores: &[Store<Parsed<K>>],
    ring: &KeyRing,
    labels: &mut NamespaceLabels,
    found: &mut Vec<Candidate>,
) -> Result<()> {
    let ring_namespace = ring.namespace().unwrap_or_default();
    let ring_name = ring.name_any();
    for key in stores.iter().flat_map(|store| store.state()) {
        let Some(key) = key.ok() else { continue };
        let namespace = key.namespace().unwrap_or_default();
        let names_this = named_rings(&namespace, key.key_rings())
            .iter()
            .any(|(ns, name)| *ns == ring_namespace && *name == ring_name);
        if key.meta().deletion_timestamp.is_some() || !names_this {
            continue;
        }
        let (kind, permissions, service_account) = key.ring_identity();
        let status = key.key_status();
        let (current, previous) = issued(status);
        found.push(Candidate {
            kind,
            issuer: Issuer {
                namespace: Some(namespace.clone()),
                name: key.name_any(),
                service_account,
            },
            permissions,
            accepted: ring_accepts(ring, &namespace, labels).await?,
            created: created(key.meta()),
            current,
            previous,
            revoked: revoked_of(status),
        });
    }
    Ok(())
}

fn created(meta: &ObjectMeta) -> Timestamp {
    meta.creation_timestamp
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
}

/// What is at the ring's Secret name.
enum RingSecret {
    Absent,
    /// Ours: of our type and owned by this very ring (its UID). Its document,
    /// if it parses (a forged or broken one is simply replaced).
    Ours(Box<Secret>, Option<RingDocument>),
    Foreign,
}

fn classify(secret: Option<Secret>, ring_uid: &str) -> RingSecret {
    let Some(secret) = secret else {
        return RingSecret::Absent;
    };
    let owned = secret.type_.as_deref() == Some(RING_SECRET_TYPE)
        && secret
            .owner_references()
            .iter()
            .any(|r| r.kind == "KeyRing" && r.uid == ring_uid && r.controller == Some(true));
    if !owned {
        return RingSecret::Foreign;
    }
    let document = secret
        .data
        .as_ref()
        .and_then(|data| data.get(DOCUMENT_DATA_KEY))
        .and_then(|bytes| RingDocument::parse(&bytes.0).ok());
    RingSecret::Ours(Box::new(secret), document)
}

fn desired_secret(ring: &KeyRing, secret_name: &str, document: &RingDocument) -> Secret {
    let namespace = ring.namespace().unwrap_or_default();
    let owner = OwnerReference {
        api_version: KeyRing::api_version(&()).into_owned(),
        kind: "KeyRing".into(),
        name: ring.name_any(),
        uid: ring.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.to_string()),
            namespace: Some(namespace.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                (RING_LABEL.to_string(), ring.name_any()),
            ])),
            annotations: Some(BTreeMap::from([(
                OWNER.to_string(),
                format!("KeyRing/{namespace}/{}", ring.name_any()),
            )])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some(RING_SECRET_TYPE.to_string()),
        data: Some(BTreeMap::from([(
            DOCUMENT_DATA_KEY.to_string(),
            ByteString(document.to_bytes()),
        )])),
        ..Secret::default()
    }
}

fn ready(status: bool, reason: &str, message: String, ring: &KeyRing, now: Timestamp) -> Condition {
    let status = if status { "True" } else { "False" };
    let current = ring
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_READY));
    Condition {
        type_: CONDITION_READY.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: ring.meta().generation,
        last_transition_time: current
            .filter(|c| c.status == status)
            .map_or(Time(now), |c| c.last_transition_time.clone()),
    }
}

async fn write_status(ring: &KeyRing, ctx: &Context, status: KeyRingStatus) -> Result<()> {
    if ring.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": KeyRing::api_version(&()),
        "kind": "KeyRing",
        "status": status,
    });
    Api::<KeyRing>::namespaced(ctx.client.clone(), &ring.namespace().unwrap_or_default())
        .patch_status(
            &ring.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}

/// Writes `document` to the ring's Secret: created, or patched with the
/// resourceVersion that was read (a concurrent change fails the write, and
/// the ring is reconciled again).
async fn write_document(
    ring: &KeyRing,
    secrets: &Api<Secret>,
    secret_name: &str,
    held: Option<&Secret>,
    document: &RingDocument,
) -> Result<()> {
    let desired = desired_secret(ring, secret_name, document);
    match held {
        Some(secret) => {
            let patch = json!({
                "metadata": {
                    "resourceVersion": secret.metadata.resource_version,
                    "labels": desired.metadata.labels,
                    "annotations": desired.metadata.annotations,
                },
                "data": desired.data,
            });
            secrets
                .patch(secret_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        None => {
            secrets.create(&PostParams::default(), &desired).await?;
        }
    }
    Ok(())
}

/// Writes of a revocation that lose a race with the ring's own write are retried.
const REVOKE_ATTEMPTS: usize = 5;

/// How long a revoked key that never expires stays listed as revoked.
const REVOKED_LISTED_FOR: jiff::SignedDuration = jiff::SignedDuration::from_hours(24 * 30);

/// Lists a leaked key as revoked in every ring the key is a member of, in the
/// reconcile that rotated it (the rings' own reconciles keep the entry until
/// the key's expiry). Best effort: a ring that cannot be written now drops
/// the key at its next reconcile anyway (the key's status names the new key).
pub async fn revoke_in_rings<K: KeyResource>(
    key: &K,
    ctx: &Context,
    leaked: &crate::keys::plan::KeyRecord,
    kind: MemberKind,
    permissions: Vec<String>,
    service_account: Option<String>,
    now: Timestamp,
) {
    let key_namespace = key.namespace().unwrap_or_default();
    for (namespace, name) in named_rings(&key_namespace, key.key_rings()) {
        // The ring's own reconcile may write in between: read and write again.
        for attempt in 1..=REVOKE_ATTEMPTS {
            let outcome: Result<()> = async {
                let rings = Api::<Parsed<KeyRing>>::namespaced(ctx.client.clone(), &namespace);
                let Some(Parsed::Ok(ring)) = rings.get_opt(&name).await? else {
                    return Ok(());
                };
                let secret_name = ring
                    .spec
                    .secret_name
                    .clone()
                    .unwrap_or_else(|| ring.name_any());
                let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
                let uid = ring.meta().uid.clone().unwrap_or_default();
                let RingSecret::Ours(secret, Some(mut document)) =
                    classify(secrets.get_opt(&secret_name).await?, &uid)
                else {
                    return Ok(());
                };
                document
                    .members
                    .retain(|member| member.sha256 != leaked.sha256);
                document.members.push(crate::keyring::Member {
                    id: leaked.id.clone(),
                    sha256: leaked.sha256.clone(),
                    kind,
                    issuer: Issuer {
                        namespace: Some(key_namespace.clone()),
                        name: key.name_any(),
                        service_account: service_account.clone(),
                    },
                    permissions: permissions.clone(),
                    not_before: membership::format_time(leaked.created_at),
                    expires_at: Some(membership::format_time(
                        leaked.expires_at.unwrap_or(now + REVOKED_LISTED_FOR),
                    )),
                    state: crate::keyring::MemberState::Revoked,
                });
                let document = RingDocument::new(
                    document.ring.clone(),
                    membership::format_time(now),
                    document.members,
                );
                write_document(&ring, &secrets, &secret_name, Some(&secret), &document).await
            }
            .await;
            match outcome {
                Err(Error::Kube(kube::Error::Api(status)))
                    if status.code == 409 && attempt < REVOKE_ATTEMPTS =>
                {
                    continue;
                }
                Err(error) => {
                    tracing::warn!(ring = %format!("{namespace}/{name}"), %error, "cannot list the leaked key as revoked now");
                }
                Ok(()) => {}
            }
            break;
        }
    }
}

/// The members added and removed, by id and state, for the Event's note.
fn membership_changes(before: Option<&RingDocument>, after: &RingDocument) -> String {
    let ids = |document: Option<&RingDocument>| -> std::collections::BTreeSet<(String, String)> {
        document
            .into_iter()
            .flat_map(|d| d.members.iter())
            .map(|m| (m.id.clone(), format!("{:?}", m.state).to_lowercase()))
            .collect()
    };
    let (before, after) = (ids(before), ids(Some(after)));
    let changes: Vec<String> = after
        .difference(&before)
        .map(|(id, state)| format!("+{id} ({state})"))
        .chain(
            before
                .difference(&after)
                .map(|(id, state)| format!("-{id} ({state})")),
        )
        .collect();
    if changes.is_empty() {
        "document restored".to_string()
    } else {
        changes.join(", ")
    }
}

/// An Event about a ring (budgeted per ring and reason like keys' Events).
async fn ring_event(ring: &KeyRing, ctx: &Context, type_: EventType, reason: &str, note: &str) {
    let owner = format!(
        "KeyRing/{}/{}",
        ring.namespace().unwrap_or_default(),
        ring.name_any()
    );
    super::engine::publish_to(
        ctx,
        &ring.object_ref(&()),
        &owner,
        "KeyRing",
        type_,
        reason,
        note,
        "Reconcile",
    )
    .await;
}

/// Reconciles one KeyRing: its Secret lists exactly the keys it takes.
pub async fn reconcile(ring: Arc<Parsed<KeyRing>>, rc: Arc<RingContext>) -> Result<Action> {
    // An unreadable ring is skipped; its keys report the ring as not found.
    let Some(ring) = ring.ok() else {
        return Ok(Action::await_change());
    };
    if ring.meta().deletion_timestamp.is_some() {
        // The Secret goes with the ring (owner reference).
        return Ok(Action::await_change());
    }
    let ctx = &rc.ctx;
    let now = Timestamp::now();
    let namespace = ring.namespace().unwrap_or_default();
    let secret_name = ring
        .spec
        .secret_name
        .clone()
        .unwrap_or_else(|| ring.name_any());
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let existing = secrets.get_opt(&secret_name).await?;
    let uid = ring.meta().uid.clone().unwrap_or_default();
    let (held, earlier) = match classify(existing, &uid) {
        RingSecret::Absent => (None, None),
        RingSecret::Ours(secret, document) => (Some(secret), document),
        RingSecret::Foreign => {
            let condition = ready(
                false,
                Reason::SecretConflict.as_str(),
                format!(
                    "Secret {namespace}/{secret_name} exists and is not this KeyRing's: it is never overwritten"
                ),
                ring,
                now,
            );
            let status = KeyRingStatus {
                conditions: vec![condition],
                observed_generation: ring.meta().generation,
                secret_name: Some(secret_name.clone()),
                ..ring.status.clone().unwrap_or_default()
            };
            write_status(ring, ctx, status).await?;
            let note = format!(
                "Secret {namespace}/{secret_name} exists and is not this KeyRing's: it is never overwritten"
            );
            ring_event(
                ring,
                ctx,
                EventType::Warning,
                Reason::SecretConflict.as_str(),
                &note,
            )
            .await;
            return Ok(Action::requeue(CONFLICT_REQUEUE));
        }
    };
    let ring_ref = RingRef {
        namespace: namespace.clone(),
        name: ring.name_any(),
    };
    let decided = membership::decide(
        ring_ref,
        candidates(ring, &rc).await?,
        earlier.as_ref(),
        now,
    );
    let bytes = decided.document.to_bytes();
    let current_bytes = held
        .as_ref()
        .and_then(|secret| secret.data.as_ref())
        .and_then(|data| data.get(DOCUMENT_DATA_KEY))
        .map(|bytes| bytes.0.as_slice());
    if current_bytes != Some(bytes.as_slice()) {
        write_document(
            ring,
            &secrets,
            &secret_name,
            held.as_deref(),
            &decided.document,
        )
        .await?;
        let note = format!(
            "{} keys listed in Secret {namespace}/{secret_name}: {}",
            decided.document.members.len(),
            membership_changes(earlier.as_ref(), &decided.document)
        );
        ring_event(ring, ctx, EventType::Normal, "RingUpdated", &note).await;
    }
    let refused: Vec<String> = decided
        .refused
        .iter()
        .take(MAX_REFUSED_LISTED)
        .map(|(key, _)| key.clone())
        .collect();
    let full = decided
        .refused
        .iter()
        .any(|(_, why)| *why == Refusal::RingFull);
    let members = decided.document.members.len();
    let condition = if full {
        ready(
            false,
            "RingFull",
            format!("{members} keys listed; more keys name this ring than its Secret can hold"),
            ring,
            now,
        )
    } else {
        ready(
            true,
            "RingUpdated",
            format!("{members} keys listed in Secret {namespace}/{secret_name}"),
            ring,
            now,
        )
    };
    let status = KeyRingStatus {
        members: Some(i64::try_from(members).unwrap_or(i64::MAX)),
        secret_name: Some(secret_name),
        updated_at: decided.document.updated_at.parse().ok().map(Time),
        refused,
        observed_generation: ring.meta().generation,
        conditions: vec![condition],
    };
    write_status(ring, ctx, status).await?;
    Ok(match decided.wake_at {
        Some(at) => {
            let wait = now.duration_until(at).unsigned_abs();
            Action::requeue(wait.min(IDLE_REQUEUE) + Duration::from_millis(100))
        }
        None => Action::requeue(IDLE_REQUEUE),
    })
}

/// Failed reconciles are retried with a short fixed delay (rings are few).
pub fn error_policy(_ring: Arc<Parsed<KeyRing>>, error: &Error, _rc: Arc<RingContext>) -> Action {
    tracing::debug!(%error, "key ring reconcile failed");
    Action::requeue(Duration::from_secs(5))
}
