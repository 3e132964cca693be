//! The one reconcile loop all three kinds share.
//!
//! Per reconcile: find where the Secret goes and whether it is ours; check the
//! binding; decide with the pure [`crate::keys::plan`]; apply the Secret (only
//! if it changed), then the status (only if it changed); publish an Event for
//! what happened; requeue at the next rotation or end of a grace period.

use std::sync::Arc;
use std::time::Duration;

use super::events::EventType;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::holders::KeyFeed;
use super::kinds::{Binding, Blocked, KeyResource};
use super::lenient::{MetaOnly, Parsed};
use super::owner::OwnerId;
use super::pacing::SecretClaim;
use super::reason::MAX_REQUEUE;
use super::reason::{KeyEvent, Reason, Requeue};
use super::ring;
use super::secret::{self, Claim, DataDigests, Foreign, Found, SecretContent};
use super::status::{self, Ready};
use super::{Context, Error, FIELD_MANAGER, Result};
use crate::api::{COMPROMISED_ANNOTATION, DeletionPolicy, ROTATE_REQUEST_ANNOTATION};
use crate::keys::plan::{
    self, Change, MintReason, NewKey, Observed, PlanError, RotateReason, Wanted,
};
use crate::keys::{
    ExpiryPolicy, TokenError, parse_duration, sha256_hex, truncate_to_second, try_mint_token,
    try_new_key_id,
};
use crate::rollout;

/// Its namespace has its share of reconciles in flight, or another reconcile
/// holds its Secret: look again shortly.
const BUSY_REQUEUE: Duration = Duration::from_millis(250);
/// A busy key looks again after [`BUSY_REQUEUE`] plus up to three times as
/// long at random: thousands of keys of one namespace waiting for their turn
/// do not all come back in the same instant to be turned away again.
fn busy_requeue() -> Duration {
    BUSY_REQUEUE + BUSY_REQUEUE.mul_f64(3.0 * rand::random::<f64>())
}

/// `wait`, give or take a quarter: keys told the same wait spread out.
fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(0.75 + 0.5 * rand::random::<f64>())
}

/// How soon a reconcile whose cached resource predates keymint's own status
/// write looks again (a watch event is usually milliseconds behind).
const CACHE_BEHIND_REQUEUE: Duration = Duration::from_millis(200);

/// Longest wait after an error that passes by itself (API server down, 5xx).
const TRANSIENT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// events.k8s.io limits an Event's note to 1 KiB.
const MAX_EVENT_NOTE_BYTES: usize = 1024;
/// Condition messages stay readable and far below the API server's 32 KiB.
const MAX_CONDITION_MESSAGE_BYTES: usize = 1024;
/// Longest rotate-request value recorded as is.
const MAX_ROTATE_REQUEST_RECORD: usize = 253;

pub async fn reconcile<K: KeyResource>(
    object: Arc<Parsed<K>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(&K::kind(&()));
    let resource = match &*object {
        Parsed::Ok(resource) => resource,
        Parsed::Unreadable { metadata, error } => {
            return Ok(unreadable_resource::<K>(metadata, error, &ctx).await);
        }
    };
    // Woken (by its Secret's watch, say) before the watch delivered the status
    // keymint just wrote: judged now, the old status would look out of date
    // and be written again. The echo of that write is not a trigger, so look
    // again shortly.
    if ctx.is_status_behind(&K::kind(&()), resource.meta()) {
        return Ok(Action::requeue(CACHE_BEHIND_REQUEUE));
    }
    // One namespace never takes every reconcile slot: the others go on.
    let namespace = resource.meta().namespace.as_deref().unwrap_or_default();
    let _slot = match ctx
        .pacing
        .enter(namespace, &resource.owner_id().to_string())
    {
        Ok(slot) => slot,
        Err(wait) => return Ok(Action::requeue(jittered(wait))),
    };
    let now = truncate_to_second(Timestamp::now());
    let mut read = ReadSecret::IfNeeded;
    loop {
        let stop = match prepare(resource, &ctx, now, read).await {
            Ok(prepared) => match issue(resource, &ctx, prepared, now).await? {
                Issued::Done(action) => return Ok(action),
                Issued::ReadFirst => Stop::ReadFirst,
            },
            Err(stop) => stop,
        };
        match stop {
            // Not read (never issued there, or judged by its startup view),
            // and it turned out to matter: once more, reading it.
            Stop::ReadFirst if read == ReadSecret::IfNeeded => {
                read = ReadSecret::Always;
            }
            stop => return stopped(resource, &ctx, stop).await,
        }
    }
}

/// Whether a reconcile reads the resource's Secret before deciding.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadSecret {
    /// Not when the resource has no status yet (a new resource): its Secret
    /// is almost always absent, and the create-only apply refuses to touch
    /// one that exists after all (then it is read).
    /// Nor when its startup view proves it up to date (see [`super::known`]).
    IfNeeded,
    Always,
}

/// What `issue` came to.
enum Issued {
    Done(Action),
    /// The Secret must be read first: one assumed absent exists, or one
    /// judged by its view needs a write. Nothing was written.
    ReadFirst,
}

async fn stopped<K: KeyResource>(resource: &K, ctx: &Context, stop: Stop) -> Result<Action> {
    match stop {
        // A Secret that exists though the read said it did not (created
        // meanwhile): decided again after a short wait.
        Stop::Busy | Stop::ReadFirst => Ok(Action::requeue(busy_requeue())),
        Stop::Wait(action) => Ok(action),
        Stop::Blocked(target, blocked) => {
            not_ready(resource, ctx, &target.borrowed(), blocked).await
        }
        Stop::Revoke(target, secret, blocked) => {
            revoke(resource, ctx, &target.borrowed(), &secret, &blocked.message).await?;
            not_ready(resource, ctx, &target.borrowed(), blocked).await
        }
        Stop::Failed(error) => Err(error),
    }
}

/// Where the resource's Secret goes. `namespace` is unknown only when the
/// resource may not have a Secret where it asks.
#[derive(Clone)]
struct Target {
    namespace: Option<String>,
    secret_name: String,
}

/// [`Target`] borrowed, as the status and Event writers take it.
struct TargetRef<'a> {
    namespace: Option<&'a str>,
    secret_name: &'a str,
}

impl Target {
    fn borrowed(&self) -> TargetRef<'_> {
        TargetRef {
            namespace: self.namespace.as_deref(),
            secret_name: &self.secret_name,
        }
    }
}

/// Everything checked before a key can be issued: where the Secret goes,
/// that it is ours (or absent) and what it holds, the binding.
struct Prepared {
    target: Target,
    owner: String,
    owner_uid: String,
    existing: Option<Held>,
    /// What `existing` holds, by digest.
    data: DataDigests,
    /// `existing` is the startup view: it holds no values, so it serves
    /// only a key that needs no write.
    viewed: bool,
    observed: Observed,
    bound_uid: Option<String>,
    policy: ExpiryPolicy,
    /// Held until the Secret is written: no other resource claims it meanwhile.
    _claim: SecretClaim,
}

/// Why a reconcile stops before issuing.
enum Stop {
    /// Its namespace or its Secret is busy with another reconcile.
    Busy,
    /// Nothing to do until then (a terminating resource whose key is valid).
    Wait(Action),
    Blocked(Target, Blocked),
    /// The key is revoked: the Secret is deleted, then the reason reported.
    Revoke(Target, Box<Held>, Blocked),
    /// The Secret was not read, and this path needs it (a terminating
    /// resource, a missing binding).
    ReadFirst,
    Failed(Error),
}

/// The preconditions, in order, each one a `?`.
async fn prepare<K: KeyResource>(
    resource: &K,
    ctx: &Context,
    now: Timestamp,
    read: ReadSecret,
) -> Result<Prepared, Stop> {
    let secret_name = resource
        .common()
        .secret_name(&resource.name_any())
        .to_string();
    let target = |namespace: Option<&str>| Target {
        namespace: namespace.map(str::to_string),
        secret_name: secret_name.clone(),
    };
    let namespace = resource
        .secret_namespace(&ctx.settings)
        .map_err(|blocked| Stop::Blocked(target(None), blocked))?;
    let here = target(Some(&namespace));
    // Two resources naming one Secret are decided one after the other.
    let claim = ctx
        .pacing
        .claim(&namespace, &secret_name)
        .ok_or(Stop::Busy)?;
    let owner = resource.owner_id().to_string();
    let owner_uid = resource.meta().uid.clone().unwrap_or_default();
    let status = resource.key_status();
    let ids = Claim {
        owner: &owner,
        owner_uid: &owner_uid,
        namespace: &namespace,
        name: &secret_name,
    };
    let issued_here = status.is_some_and(|status| secret::issued_here(status, &ids));
    let lazy = read == ReadSecret::IfNeeded;
    // Once keymint has reported anything (a conflict, a bad spec) the
    // Secret is read as before: a blocked resource does not retry the
    // create-only apply on every reconcile.
    let unread = lazy && !issued_here && status.is_none_or(|s| s.conditions.is_empty());
    let view = if lazy && issued_here {
        ctx.known.take(&namespace, &secret_name)
    } else {
        None
    };
    // This reconcile judges that version: the watch delivering it later
    // (after the view is gone) is no news, like the echo of a write.
    if let Some(view) = &view {
        ctx.record_own_write(&view.secret.metadata);
    }
    let viewed = view.is_some();
    let (fetched, data) = match view {
        Some(view) => (Some(view.secret), view.data),
        None if unread => (None, DataDigests::default()),
        None => {
            ctx.metrics.secret_read(&K::kind(&()));
            let fetched = read_secret(ctx, &namespace, &here).await?;
            let data = fetched.as_ref().map(DataDigests::of).unwrap_or_default();
            (fetched, data)
        }
    };
    let found = secret::classify(fetched, &data, &ids, &ctx.signing_key, status);
    let (existing, observed) = match found {
        // A view decides only for a Secret that is ours and intact so far.
        _ if viewed && !matches!(found, Found::Ours { .. }) => return Err(Stop::ReadFirst),
        Found::Nothing => (None, Observed::Missing),
        Found::Ours { secret, record } => {
            let observed = secret::observe(&data, record);
            (Some(Held(*secret)), observed)
        }
        Found::Tampered(secret) => {
            let rotations = status
                .and_then(|s| s.rotations)
                .and_then(|r| u64::try_from(r).ok())
                .unwrap_or(0);
            (Some(Held(*secret)), Observed::Untrusted { rotations })
        }
        Found::Foreign(whose) => {
            let message = conflict_message::<K>(&namespace, &secret_name, whose);
            return Err(Stop::Blocked(
                here,
                Blocked::new(Reason::SecretConflict, message),
            ));
        }
    };
    if resource.meta().deletion_timestamp.is_some() {
        if unread || viewed {
            return Err(Stop::ReadFirst);
        }
        return Err(terminating(resource, here, existing, &observed, now));
    }
    let bound_uid = match resource.binding(ctx).await.map_err(Stop::Failed)? {
        Binding::Unbound => None,
        Binding::Bound { uid } => Some(uid),
        // A Secret keymint wrote but never named in the status (a crash
        // between the two writes) is revoked too.
        Binding::Missing(_) if unread || viewed => return Err(Stop::ReadFirst),
        // Ours or tampered: either way the Secret holds a key keymint issued.
        Binding::Missing(blocked) => {
            return Err(match existing {
                Some(secret) => Stop::Revoke(here, Box::new(secret), blocked),
                None => Stop::Blocked(here, blocked),
            });
        }
    };
    let policy = expiry_policy(resource.common()).map_err(|message| {
        Stop::Blocked(here.clone(), Blocked::new(Reason::InvalidSpec, message))
    })?;
    Ok(Prepared {
        target: here,
        owner,
        owner_uid,
        existing,
        data,
        viewed,
        observed,
        bound_uid,
        policy,
        _claim: claim,
    })
}

/// A Secret read from the API server, wiped when dropped.
struct Held(Secret);

impl Drop for Held {
    fn drop(&mut self) {
        secret::wipe(&mut self.0);
    }
}

/// The resource's own Secret, leniently read. A refusal (403...) or a body
/// that fits no Secret is for the user to see; 5xx and throttling pass.
async fn read_secret(
    ctx: &Context,
    namespace: &str,
    target: &Target,
) -> Result<Option<Secret>, Stop> {
    let name = &target.secret_name;
    let secrets = Api::<Parsed<Secret>>::namespaced(ctx.client.clone(), namespace);
    let unreadable = |why: String| {
        let message = format!("Secret {namespace}/{name} cannot be read: {why}");
        Stop::Blocked(
            target.clone(),
            Blocked::new(Reason::SecretUnreadable, message),
        )
    };
    match secrets.get_opt(name).await {
        Ok(None) => Ok(None),
        Ok(Some(Parsed::Ok(secret))) => Ok(Some(secret)),
        Ok(Some(Parsed::Unreadable { error, .. })) => Err(unreadable(error)),
        Err(kube::Error::Api(status)) if is_refusal(&status) => {
            Err(unreadable(format!("{}: {}", status.reason, status.message)))
        }
        Err(error) => Err(Stop::Failed(error.into())),
    }
}

/// A 4xx answer other than a conflict or throttling: retrying soon will not help.
fn is_refusal(status: &kube::core::Status) -> bool {
    (400..500).contains(&status.code) && ![409, 429].contains(&status.code)
}

/// Says whose the Secret is without quoting anything from it: its labels and
/// annotations are someone else's and may be secret or crafted.
fn conflict_message<K: KeyResource>(namespace: &str, name: &str, whose: Foreign) -> String {
    let kind = K::kind(&());
    match whose {
        Foreign::Application => format!(
            "spec.secretName: Secret {namespace}/{name} exists and belongs to another application; keymint never overwrites it"
        ),
        Foreign::OtherResource => format!(
            "spec.secretName: Secret {namespace}/{name} exists and belongs to another keymint resource; keymint never overwrites it"
        ),
        Foreign::EarlierResource => format!(
            "spec.secretName: Secret {namespace}/{name} holds the key of an earlier {kind} of this name (deleted with deletionPolicy Retain or orphaned); keymint does not hand it to this one: delete the Secret to issue a new key"
        ),
    }
}

/// Decides with the pure plan, writes the Secret (if it changed), announces
/// the change, then writes the status (if it changed).
async fn issue<K: KeyResource>(
    resource: &K,
    ctx: &Context,
    prepared: Prepared,
    now: Timestamp,
) -> Result<Issued> {
    let kind = K::kind(&()).to_string();
    let common = resource.common();
    let target = prepared.target.borrowed();
    let namespace = target.namespace.unwrap_or_default();
    let status = resource.key_status();
    let wanted = Wanted {
        policy: prepared.policy,
        rotate_request: resource
            .annotations()
            .get(ROTATE_REQUEST_ANNOTATION)
            .map(|request| rotate_request_record(request)),
        bound_uid: prepared.bound_uid.clone(),
        compromise: resource
            .annotations()
            .get(COMPROMISED_ANNOTATION)
            .filter(|mark| !mark.is_empty())
            .map(|mark| rotate_request_record(mark)),
        issued_before: status.and_then(|s| s.id.as_ref()).is_some(),
        previous_released: false,
        rotation_spread: ctx.settings.rotation_spread,
    };
    // The holders of the key: the previous key may go once they all run the
    // current one.
    let holders = Holding::new(resource, ctx, namespace, target.secret_name);
    let before = match &prepared.observed {
        Observed::Present { record, .. } if record.previous.is_some() => holders.assess(&record.id),
        _ => None,
    };
    let wanted = Wanted {
        previous_released: before
            .as_ref()
            .is_some_and(|a| a.switch == rollout::Switch::AllSwitched),
        ..wanted
    };

    let mut minted = None;
    let plan = plan::plan(now, &prepared.observed, &wanted, || {
        let token = try_mint_token(resource.token_prefix(), common.entropy_bits())?;
        let key = NewKey {
            id: try_new_key_id()?,
            sha256: token.sha256_hex(),
        };
        minted = Some(token);
        Ok::<_, TokenError>(key)
    });
    let plan = match plan {
        Ok(plan) => plan,
        Err(PlanError::Mint(error)) => return Err(Error::Mint(error)),
        Err(PlanError::Expiry(error)) => {
            let blocked = Blocked::new(Reason::InvalidSpec, error.to_string());
            return not_ready(resource, ctx, &target, blocked)
                .await
                .map(Issued::Done);
        }
    };

    if plan.change == Change::Rotate(RotateReason::Scheduled)
        && !rotation_may_start(ctx, &prepared.observed, &wanted, now)
    {
        // Over the rotation rate and still ahead of its renewal time: the
        // key waits its turn (the minted token is dropped unused).
        return Ok(Issued::Done(Action::requeue(ROTATION_RATE_WAIT)));
    }
    let existing = prepared.existing.as_ref().map(|held| &held.0);
    if prepared.viewed && plan.change != Change::None {
        return Ok(Issued::ReadFirst);
    }
    let texts = if prepared.viewed {
        secret::KeyTexts::carried_unread(&prepared.observed, &prepared.data)
    } else {
        secret::key_texts(
            existing,
            &prepared.observed,
            minted.as_ref().map(|token| token.expose()),
            &plan.change,
        )
        .ok_or(Error::MissingField {
            kind: "Secret",
            field: "data.key",
        })?
    };
    let claim = Claim {
        owner: &prepared.owner,
        owner_uid: &prepared.owner_uid,
        namespace,
        name: target.secret_name,
    };
    let mut desired = secret::desired_secret(&SecretContent {
        claim,
        signing_key: &ctx.signing_key,
        record: &plan.record,
        key: &texts.key,
        previous_key: texts.previous_key.as_deref().map(|k| k.as_str()),
        template_labels: common.template_labels(),
        template_annotations: common.template_annotations(),
        extra_annotations: resource.secret_annotations(),
        owner_reference: owner_reference(resource, common.deletion_policy()),
    });
    let mut desired_data = DataDigests::of(&desired);
    if prepared.viewed {
        // The texts were stand-ins for the keys the Secret keeps.
        secret::carry_key_digests(&mut desired_data, &prepared.data);
    }
    let writes = secret::writes(
        existing.map(|secret| (secret, &prepared.data)),
        &desired,
        &desired_data,
    );
    if prepared.viewed && writes.any() {
        secret::wipe(&mut desired);
        return Ok(Issued::ReadFirst);
    }
    // For key rings: the previous key's hash (never the key).
    let previous_key_sha256 = desired_data.values.get(secret::DATA_PREVIOUS_KEY).cloned();
    let secrets = Api::<MetaOnly<Secret>>::namespaced(ctx.client.clone(), namespace);
    let written = write_secret(
        ctx,
        &secrets,
        existing,
        writes,
        &mut desired,
        target.secret_name,
    )
    .await;
    // Key material does not outlive the write (the token itself is Zeroizing).
    secret::wipe(&mut desired);
    drop(minted);
    match written {
        Ok(()) => {}
        Err(WriteError::Refused(status)) => {
            let message = scrub(
                &format!(
                    "Secret {namespace}/{} cannot be written: {}: {}",
                    target.secret_name, status.reason, status.message
                ),
                &texts.all(),
            );
            let blocked = Blocked::new(Reason::SecretWriteFailed, message);
            return not_ready(resource, ctx, &target, blocked)
                .await
                .map(Issued::Done);
        }
        Err(WriteError::Exists) => return Ok(Issued::ReadFirst),
        Err(WriteError::Other(error)) => return Err(error),
    }
    if plan.change == Change::Rotate(RotateReason::Compromised)
        && let Observed::Present { record: leaked, .. } = &prepared.observed
    {
        let (member_kind, permissions, account) = resource.ring_identity();
        ring::revoke_in_rings(
            resource,
            ctx,
            leaked,
            member_kind,
            permissions,
            account,
            now,
        )
        .await;
    }
    announce(resource, ctx, &plan.change, &plan.record.id, &kind).await;
    let previous_until = match &prepared.observed {
        Observed::Present { record, .. } => record.previous.as_ref().map(|p| p.until),
        _ => None,
    };
    let dropped = plan.change == Change::DropPrevious;
    let released_early =
        dropped && wanted.previous_released && previous_until.is_some_and(|until| until > now);
    let timed_out_now = dropped
        && !wanted.previous_released
        && before
            .as_ref()
            .is_some_and(|a| matches!(a.switch, rollout::Switch::Waiting { .. }));
    // Against the key the status will name: the one assessed above unless a
    // new key was minted.
    let after = match before {
        Some(assessment) if !matches!(plan.change, Change::Mint(_) | Change::Rotate(_)) => {
            Some(assessment)
        }
        _ => holders.assess(&plan.record.id),
    };

    let expires_note = plan
        .record
        .expires_at
        .map(|t| format!("; expires at {}", secret::format_time(t)))
        .unwrap_or_default();
    let new_status = status::issued(
        status,
        &status::Issued {
            previous_key_sha256,
            revoked_keys: revoked_keys(status, &plan.change, &prepared.observed, now),
            record: &plan.record,
            renewal_time: plan::planned_rotation(&plan.record, &wanted),
            secret_name: target.secret_name,
            // Only a cluster-scoped resource says where its Secret is.
            secret_namespace: resource.meta().namespace.is_none().then_some(namespace),
            generation: resource.meta().generation,
            consumers: holders.report(after.as_ref(), status, &plan.record, timed_out_now),
            ready: match ring::refusal_for(resource, ctx).await? {
                // The key is issued; a ring it names does not take it.
                Some(refused) => Ready {
                    status: false,
                    reason: refused.reason.as_str().into(),
                    message: refused.message,
                },
                None => Ready::issued(format!(
                    "Key {} issued to Secret {namespace}/{}{expires_note}",
                    plan.record.id, target.secret_name
                )),
            },
        },
        now,
    );
    status::write_if_changed(resource, ctx, status, new_status).await?;
    ctx.metrics
        .key_observed(&kind, &prepared.owner, plan.record.expires_at);
    ctx.pacing.succeeded(&prepared.owner);
    let mut action = requeue_at(plan.wake_at);
    if let Some(after) = &after {
        holders
            .announce(
                &after.switch,
                &after.not_holders,
                released_early,
                timed_out_now,
                &plan.record.id,
            )
            .await;
        // After the status write: the rollout controller reads the new id
        // from the status.
        if holders.nudge(&after.statuses) {
            action = Action::requeue(PENDING_CONSUMERS_REQUEUE.min(requeue_delay(plan.wake_at)));
        }
    }
    Ok(Issued::Done(action))
}

/// How long a scheduled rotation over the rotation rate waits to try again.
const ROTATION_RATE_WAIT: Duration = Duration::from_secs(1);

/// A scheduled rotation goes ahead within the configured rate, and always
/// once its renewal time has come: the rate spreads rotations, it never
/// makes one late.
fn rotation_may_start(ctx: &Context, observed: &Observed, wanted: &Wanted, now: Timestamp) -> bool {
    let deadline = match observed {
        Observed::Present { record, .. } => plan::rotation_time(record, &wanted.policy),
        _ => None,
    };
    ctx.pacing.take_rotation() || deadline.is_none_or(|deadline| deadline <= now)
}

enum WriteError {
    /// The API server refused the write (immutable, quota, admission...).
    Refused(Box<kube::core::Status>),
    /// A Secret thought absent exists (the create-only apply was refused).
    Exists,
    Other(Error),
}

/// A resourceVersion no object ever has (etcd would need 2^64 writes): a
/// server-side apply carrying it creates a missing Secret and is refused
/// with 409 Conflict when one exists, whoever wrote it. Applying with no
/// resourceVersion instead would merge into a Secret created since it was
/// found absent (kubernetes/kubernetes#106745 relies on the same rule).
const CREATE_ONLY: &str = "18446744073709551615";

/// Applies the Secret if anything changed, on the version that was read (so
/// a concurrent edit is never overwritten), then removes record fields that
/// keymint no longer owns (someone erased its managedFields) but must not keep.
async fn write_secret(
    ctx: &Context,
    secrets: &Api<MetaOnly<Secret>>,
    existing: Option<&Secret>,
    writes: secret::Writes,
    desired: &mut Secret,
    name: &str,
) -> Result<(), WriteError> {
    if !writes.any() {
        return Ok(());
    }
    desired.metadata.resource_version = Some(match existing {
        Some(secret) => secret.metadata.resource_version.clone().unwrap_or_default(),
        None => CREATE_ONLY.to_string(),
    });
    // Secret first: the record in it is the truth, so a crash before the
    // status write never mints twice.
    let refused = |error: kube::Error| match error {
        kube::Error::Api(status) if existing.is_none() && status.code == 409 => WriteError::Exists,
        kube::Error::Api(status) if is_refusal(&status) => WriteError::Refused(status),
        error => WriteError::Other(error.into()),
    };
    let written = secrets
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&*desired),
        )
        .await
        .map_err(refused)?;
    ctx.record_own_write(&written.metadata);
    if let Some(mut patch) = writes.remove {
        patch["metadata"]["resourceVersion"] = json!(written.metadata.resource_version);
        let written = secrets
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(refused)?;
        ctx.record_own_write(&written.metadata);
    }
    Ok(())
}

/// `text` with every occurrence of the given secrets (raw or base64) masked.
fn scrub(text: &str, secrets: &[&str]) -> String {
    use base64::Engine;
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
        text = text
            .replace(secret, "[redacted]")
            .replace(&encoded, "[redacted]");
    }
    text
}

/// A resource being deleted while something (a finalizer) holds it: no new
/// key and no rotation; once its key expires the Secret goes, so a
/// terminating resource never keeps a key valid past its expiry.
fn terminating<K: KeyResource>(
    resource: &K,
    target: Target,
    existing: Option<Held>,
    observed: &Observed,
    now: Timestamp,
) -> Stop {
    let Some(secret) = existing else {
        return Stop::Wait(Action::await_change());
    };
    let record = match observed {
        Observed::Present { record, .. } => Some(record),
        _ => None,
    };
    let expires_at = record.and_then(|r| r.expires_at).or_else(|| {
        resource
            .key_status()
            .and_then(|s| s.expires_at.as_ref())
            .map(|t| t.0)
    });
    match expires_at {
        // An untrusted record proves no later expiry than the status.
        Some(expires_at) if expires_at <= now || record.is_none() => {
            let message = format!(
                "the {} is being deleted and its key expired at {}; Secret {}/{} deleted",
                K::kind(&()),
                secret::format_time(expires_at),
                target.namespace.as_deref().unwrap_or_default(),
                target.secret_name
            );
            Stop::Revoke(
                target,
                Box::new(secret),
                Blocked::new(Reason::KeyExpired, message),
            )
        }
        Some(expires_at) => Stop::Wait(requeue_at(Some(expires_at))),
        None => Stop::Wait(Action::await_change()),
    }
}

/// A key resource that does not fit its type: reported, skipped, retried
/// with backoff. Every other resource goes on.
async fn unreadable_resource<K: KeyResource>(
    metadata: &ObjectMeta,
    error: &str,
    ctx: &Context,
) -> Action {
    let kind = K::kind(&()).to_string();
    let object = OwnerId::of(&kind, metadata).to_string();
    warn!(object = %object, error = %error, "key resource cannot be read; skipped");
    let reference = ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(kind.clone()),
        name: metadata.name.clone(),
        namespace: metadata.namespace.clone(),
        uid: metadata.uid.clone(),
        ..Default::default()
    };
    let note = format!("The {kind} cannot be read: {error}; it is skipped until it is fixed");
    publish_to(
        ctx,
        &reference,
        &object,
        &kind,
        EventType::Warning,
        Reason::InvalidSpec.as_str(),
        &note,
        "Reconcile",
    )
    .await;
    Action::requeue(ctx.pacing.failed(&object))
}

/// The expiry policy from the spec. The CRD already validated every field;
/// this only fails if the schema and the parser disagree.
fn expiry_policy(common: &crate::api::KeySpecCommon) -> Result<ExpiryPolicy, String> {
    let duration = |field: &str, value: &Option<String>| -> Result<Duration, String> {
        match value {
            Some(text) => parse_duration(text).map_err(|e| format!("spec.{field}: {e}")),
            None => Ok(Duration::ZERO),
        }
    };
    let valid_for = match &common.valid_for {
        Some(text) => Some(parse_duration(text).map_err(|e| format!("spec.validFor: {e}"))?),
        None => None,
    };
    Ok(ExpiryPolicy {
        expires_at: common.expires_at.as_ref().map(|t| truncate_to_second(t.0)),
        valid_for,
        renew_before: duration("renewBefore", &common.renew_before)?,
        grace_period: duration("gracePeriod", &common.grace_period)?,
    })
}

fn owner_reference<K: KeyResource>(resource: &K, policy: DeletionPolicy) -> Option<OwnerReference> {
    match policy {
        DeletionPolicy::Retain => None,
        DeletionPolicy::Delete => resource.controller_owner_ref(&()),
    }
}

fn requeue_at(wake_at: Option<Timestamp>) -> Action {
    Action::requeue(requeue_delay(wake_at))
}

fn requeue_delay(wake_at: Option<Timestamp>) -> Duration {
    let Some(wake_at) = wake_at else {
        return MAX_REQUEUE;
    };
    let until = wake_at.duration_since(Timestamp::now());
    // A few milliseconds late rather than early: early means one more pass.
    let delay = Duration::try_from(until).unwrap_or(Duration::ZERO) + Duration::from_millis(5);
    delay.min(MAX_REQUEUE)
}

/// A key whose consumers do not carry its id yet (held back by their
/// namespace's rollout limit, or the status was not cached yet when the
/// rollout controller looked) asks again after this.
const PENDING_CONSUMERS_REQUEUE: Duration = Duration::from_secs(5);

/// A key's consumers, for one reconcile.
struct Holding<'a, K: KeyResource> {
    resource: &'a K,
    ctx: &'a Context,
    namespace: &'a str,
    secret_name: &'a str,
    annotation: String,
}

impl<'a, K: KeyResource> Holding<'a, K> {
    fn new(resource: &'a K, ctx: &'a Context, namespace: &'a str, secret_name: &'a str) -> Self {
        let annotation = rollout::annotation_key(&K::kind(&()), namespace, &resource.name_any());
        Holding {
            resource,
            ctx,
            namespace,
            secret_name,
            annotation,
        }
    }

    /// What the consumers run against `key_id`; None without consumers or
    /// while the caches are loading.
    fn assess(&self, key_id: &str) -> Option<rollout::Assessment> {
        let consumers = self.resource.consumers();
        if consumers.is_empty() {
            return None;
        }
        self.ctx.holders.get()?.assess(&KeyFeed {
            namespace: self.namespace,
            secret_name: self.secret_name,
            annotation: &self.annotation,
            key_id,
            consumers,
        })
    }

    /// The status's consumer list and condition.
    fn report(
        &self,
        after: Option<&rollout::Assessment>,
        current: Option<&crate::api::KeyStatus>,
        record: &plan::KeyRecord,
        timed_out_now: bool,
    ) -> status::Consumers {
        if self.resource.consumers().is_empty() {
            return status::Consumers::None;
        }
        let Some(after) = after else {
            return status::Consumers::Keep;
        };
        // A timeout stays reported until the consumers finish (or a new key).
        let timed_out = timed_out_now
            || (status::consumers_reason(current) == Some("RolloutTimedOut")
                && current.and_then(|s| s.id.as_deref()) == Some(record.id.as_str()));
        let until = record
            .previous
            .as_ref()
            .map(|p| secret::format_time(p.until));
        let report = rollout::report(&after.switch, &record.id, until.as_deref(), timed_out);
        status::Consumers::Report(
            after.statuses.clone(),
            Ready {
                status: report.rolled_out,
                reason: report.reason.into(),
                message: bounded(&report.message, MAX_CONDITION_MESSAGE_BYTES),
            },
        )
    }

    /// Events and metrics for what the consumers did.
    async fn announce(
        &self,
        switch: &rollout::Switch,
        not_holders: &[String],
        released_early: bool,
        timed_out_now: bool,
        key_id: &str,
    ) {
        let kind = K::kind(&()).to_string();
        if released_early {
            self.ctx.metrics.rollout_completed(&kind);
            let note = format!(
                "Every consumer runs key {key_id}: the previous key was removed before its grace period ended"
            );
            self.publish(EventType::Normal, KeyEvent::ConsumersRolledOut, &note)
                .await;
        }
        if timed_out_now {
            self.ctx.metrics.rollout_timed_out(&kind);
            let report = rollout::report(switch, key_id, None, true);
            self.publish(
                EventType::Warning,
                KeyEvent::RolloutTimedOut,
                &report.message,
            )
            .await;
        }
        let known: Vec<String> = self
            .resource
            .key_status()
            .map(|s| {
                s.consumers
                    .iter()
                    .filter(|c| c.state == crate::api::ConsumerState::NotAHolder)
                    .map(|c| format!("{}/{}", c.kind, c.name))
                    .collect()
            })
            .unwrap_or_default();
        let new: Vec<&String> = not_holders.iter().filter(|n| !known.contains(n)).collect();
        if !new.is_empty() {
            let list = new
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let note = format!(
                "{list}: the pod template does not read Secret {}; keymint does not roll it out",
                self.secret_name
            );
            self.publish(EventType::Warning, KeyEvent::ConsumerNotAHolder, &note)
                .await;
        }
    }

    async fn publish(&self, type_: EventType, event: KeyEvent, note: &str) {
        publish(
            self.resource,
            self.ctx,
            type_,
            event.as_str(),
            note,
            "Rollout",
        )
        .await;
    }

    /// Asks for the rollout of consumers that do not carry the id yet;
    /// whether there were any.
    fn nudge(&self, statuses: &[crate::api::ConsumerStatus]) -> bool {
        let pending = statuses
            .iter()
            .any(|s| s.state == crate::api::ConsumerState::Pending);
        if pending && let Some(holders) = self.ctx.holders.get() {
            holders.nudge(self.namespace, statuses);
        }
        pending
    }
}

async fn not_ready<K: KeyResource>(
    resource: &K,
    ctx: &Context,
    target: &TargetRef<'_>,
    blocked: Blocked,
) -> Result<Action> {
    // Messages can quote the API server, which can quote anything.
    let blocked = Blocked {
        message: bounded(&blocked.message, MAX_CONDITION_MESSAGE_BYTES),
        ..blocked
    };
    let current = resource.key_status();
    let new_status = status::blocked(
        current,
        &blocked,
        target.secret_name,
        target
            .namespace
            .filter(|_| resource.meta().namespace.is_none()),
        resource.meta().generation,
        Timestamp::now(),
    );
    let reason = blocked.reason.as_str();
    let changed = status::ready_reason(current) != Some(reason);
    status::write_if_changed(resource, ctx, current, new_status).await?;
    let kind = K::kind(&());
    if changed {
        warn!(reason, message = ?blocked.message, "key not issued");
        publish(
            resource,
            ctx,
            EventType::Warning,
            reason,
            &blocked.message,
            "Reconcile",
        )
        .await;
        ctx.metrics.not_ready(&kind, blocked.reason);
    }
    let owner = resource.owner_id().to_string();
    ctx.metrics.key_blocked(&kind, &owner);
    let requeue = match blocked.reason.requeue() {
        Requeue::After(delay) => delay,
        Requeue::Backoff => ctx.pacing.failed(&owner),
    };
    Ok(Action::requeue(requeue))
}

async fn revoke<K: KeyResource>(
    resource: &K,
    ctx: &Context,
    target: &TargetRef<'_>,
    secret: &Held,
    why: &str,
) -> Result<()> {
    let secrets = Api::<MetaOnly<Secret>>::namespaced(
        ctx.client.clone(),
        target.namespace.unwrap_or_default(),
    );
    let name = secret.0.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: secret.0.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match secrets.delete(&name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(error) => return Err(error.into()),
    }
    let message = format!("Key revoked: Secret {name} deleted because {why}");
    info!(secret = %name, "key revoked");
    publish(
        resource,
        ctx,
        EventType::Normal,
        KeyEvent::KeyRevoked.as_str(),
        &message,
        "Revoke",
    )
    .await;
    Ok(())
}

async fn announce<K: KeyResource>(
    resource: &K,
    ctx: &Context,
    change: &Change,
    id: &str,
    kind: &str,
) {
    // What happened, as the Event's reason and its note (ending in the key id).
    let (reason, what) = match change {
        Change::Mint(MintReason::Initial) => (KeyEvent::KeyIssued, "Issued key"),
        Change::Mint(MintReason::SecretLost) => (
            KeyEvent::KeyRestored,
            "The Secret was deleted and its key cannot be recovered; issued new key",
        ),
        Change::Mint(MintReason::KeyTampered) => (
            KeyEvent::KeyReplaced,
            "The Secret's key or its record was edited (it no longer matches what keymint wrote); issued new key",
        ),
        Change::Mint(MintReason::BindingChanged) => (
            KeyEvent::KeyIssued,
            "The bound ServiceAccount was re-created; issued new key",
        ),
        Change::Rotate(RotateReason::Scheduled) => {
            (KeyEvent::KeyRotated, "Rotated on schedule to key")
        }
        Change::Rotate(RotateReason::Requested) => {
            (KeyEvent::KeyRotated, "Rotated on request to key")
        }
        Change::Rotate(RotateReason::Compromised) => (
            KeyEvent::KeyCompromised,
            "Marked compromised (keymint.dev/compromised): the leaked key is revoked with no grace period and listed as revoked in its key rings; rotated to key",
        ),
        Change::Reschedule | Change::DropPrevious | Change::None => return,
    };
    let message = format!("{what} {id}");
    let event_type = if reason.is_warning() {
        EventType::Warning
    } else {
        EventType::Normal
    };
    if matches!(change, Change::Rotate(_)) {
        ctx.metrics.rotated(kind);
    }
    let reason = reason.as_str();
    info!(key_id = id, reason, "key changed");
    publish(resource, ctx, event_type, reason, &message, "Issue").await;
}

async fn publish<K: KeyResource>(
    resource: &K,
    ctx: &Context,
    type_: EventType,
    reason: &str,
    note: &str,
    action: &str,
) {
    let reference = resource.object_ref(&());
    let kind = K::kind(&()).to_string();
    publish_to(
        ctx,
        &reference,
        &resource.owner_id().to_string(),
        &kind,
        type_,
        reason,
        note,
        action,
    )
    .await;
}

/// Publishes an Event unless this object has had its share of Events with
/// this reason lately (a key rotating every second must not write an Event
/// every second).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn publish_to(
    ctx: &Context,
    reference: &ObjectReference,
    object: &str,
    kind: &str,
    type_: EventType,
    reason: &str,
    note: &str,
    action: &str,
) {
    if !ctx.pacing.may_publish(object, reason) {
        ctx.metrics.event_suppressed(kind);
        return;
    }
    let note = bounded(note, MAX_EVENT_NOTE_BYTES);
    if let Err(error) = ctx
        .events
        .publish(reference, type_, reason, &note, action)
        .await
    {
        warn!(%error, reason, "cannot publish event");
    }
}

/// Most compromised keys a status lists (newest first).
const MAX_REVOKED_KEYS: usize = 4;
/// How long a compromised key that never expires is listed as revoked.
const REVOKED_LISTED_FOR: jiff::SignedDuration = jiff::SignedDuration::from_hours(24 * 30);

/// The status's compromised keys: those still within their time, and the
/// key just rotated out for a compromise mark.
fn revoked_keys(
    status: Option<&crate::api::KeyStatus>,
    change: &Change,
    observed: &Observed,
    now: Timestamp,
) -> Vec<crate::api::RevokedKey> {
    let mut revoked: Vec<crate::api::RevokedKey> = Vec::new();
    if *change == Change::Rotate(RotateReason::Compromised)
        && let Observed::Present { record, .. } = observed
    {
        revoked.push(crate::api::RevokedKey {
            id: record.id.clone(),
            key_sha256: record.sha256.clone(),
            revoked_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
            until: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                record.expires_at.unwrap_or(now + REVOKED_LISTED_FOR),
            ),
        });
    }
    let earlier = status
        .map(|s| s.revoked_keys.as_slice())
        .unwrap_or_default();
    revoked.extend(
        earlier
            .iter()
            .filter(|key| {
                key.until.0 > now && revoked.iter().all(|r| r.key_sha256 != key.key_sha256)
            })
            .cloned()
            .collect::<Vec<_>>(),
    );
    revoked.truncate(MAX_REVOKED_KEYS);
    revoked
}

/// How a rotate request is recorded (Secret annotation, status): as given when
/// short, else by its SHA-256, so an annotation of any size on the resource can
/// never push the Secret or the status over the API server's limits.
pub(crate) fn rotate_request_record(request: &str) -> String {
    if request.len() <= MAX_ROTATE_REQUEST_RECORD {
        request.to_string()
    } else {
        format!("sha256:{}", sha256_hex(request))
    }
}

/// `text` cut to at most `max` bytes on a character boundary, marked with `…`.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A failed reconcile is retried with exponential backoff per resource.
pub fn error_policy<K: KeyResource>(
    object: Arc<Parsed<K>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    warn!(name = %object.name_any(), namespace = ?object.namespace(), error = ?error.to_string(), "reconcile failed");
    ctx.metrics
        .reconcile_failed(&K::kind(&()), error.category());
    let object = OwnerId::of(&K::kind(&()), object.meta()).to_string();
    // Transport errors, 5xx and conflicts pass: retry soon, but never in a
    // tight loop. (Refusals the user must see back off further, up to
    // MAX_BACKOFF, through `failed`.)
    Action::requeue(ctx.pacing.failed(&object).min(TRANSIENT_MAX_BACKOFF))
}

#[cfg(test)]
mod tests {
    //! The engine against a mocked API server: which requests one reconcile
    //! makes, in which order, with what in them. (The behaviours themselves are
    //! proven against a real API server in tests/e2e.)

    use std::sync::Arc;

    use http::{Method, Request, Response, StatusCode};
    use k8s_openapi::api::core::v1::Secret;
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::reconcile;
    use crate::api::ApiKey;
    use crate::controller::lenient::Parsed;
    use crate::controller::{Context, Metrics, Settings};
    use crate::keys::sha256_hex;
    use crate::keys::signature::SigningKey;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn context() -> (Arc<Context>, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let settings = Settings {
            operator_namespace: "keymint-system".into(),
            root_key_namespaces: vec!["keymint-system".into()],
            max_rollouts_per_namespace: 4,
            rotation_spread: std::time::Duration::ZERO,
            max_rotations_per_second: 50,
        };
        (
            Arc::new(Context::new(
                client,
                Arc::new(Metrics::default()),
                settings,
                SigningKey::new(&[7; 32]).expect("key"),
            )),
            handle,
        )
    }

    fn api_key(status: Option<Value>) -> ApiKey {
        let mut object = json!({
            "apiVersion": "keymint.dev/v1alpha1", "kind": "APIKey",
            "metadata": {"name": "billing", "namespace": "team", "uid": "uid-1", "generation": 1},
            "spec": {"permissions": ["read"], "validFor": "1h"}
        });
        if let Some(status) = status {
            object["status"] = status;
        }
        serde_json::from_value(object).expect("api key")
    }

    /// Takes the next request, checks its method and path, and answers it.
    async fn expect(
        handle: &mut Handle,
        method: Method,
        path: &str,
        answer: impl FnOnce(Value) -> (StatusCode, Value),
    ) -> Value {
        let (request, respond) = handle.next_request().await.expect("a request");
        assert_eq!((request.method(), request.uri().path()), (&method, path));
        let body = request.into_body().collect_bytes().await.expect("body");
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).expect("json body")
        };
        let (status, reply) = answer(body.clone());
        let reply = serde_json::to_vec(&reply).expect("reply");
        respond.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(reply))
                .expect("response"),
        );
        body
    }

    /// The Event keymint publishes, as the API server records it.
    async fn event_posted(handle: &mut Handle) -> Value {
        expect(
            handle,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/team/events",
            echo,
        )
        .await
    }

    /// The status keymint applies, answered with the whole object.
    async fn status_applied(handle: &mut Handle) -> Value {
        expect(
            handle,
            Method::PATCH,
            "/apis/keymint.dev/v1alpha1/namespaces/team/apikeys/billing/status",
            status_reply,
        )
        .await
    }

    /// What keymint sent while minting the first key of a new APIKey.
    struct FirstMint {
        secret: Value,
        event: Value,
        status: Value,
    }

    /// The API server refuses a create-only apply: a Secret is there.
    fn exists(_: Value) -> (StatusCode, Value) {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
            "message": "Operation cannot be fulfilled on secrets \"billing\": the object has been modified"});
        (StatusCode::CONFLICT, status)
    }

    /// Reconciles a new APIKey against the mock, answering the requests a
    /// first mint must make, in their order: apply the Secret (created: no
    /// read first), publish the Event, apply the status.
    async fn first_mint() -> FirstMint {
        let (ctx, mut handle) = context();
        let run = tokio::spawn(reconcile(Arc::new(Parsed::Ok(api_key(None))), ctx));
        let secret = expect(
            &mut handle,
            Method::PATCH,
            "/api/v1/namespaces/team/secrets/billing",
            applied,
        )
        .await;
        let event = event_posted(&mut handle).await;
        let status = status_applied(&mut handle).await;
        finish(run).await;
        FirstMint {
            secret,
            event,
            status,
        }
    }

    /// Waits for the reconcile with a deadline: an unexpected request would
    /// otherwise leave it waiting for an answer forever.
    async fn finish(
        run: tokio::task::JoinHandle<crate::controller::Result<kube::runtime::controller::Action>>,
    ) {
        tokio::time::timeout(std::time::Duration::from_secs(10), run)
            .await
            .expect("the reconcile made no request the test did not expect")
            .expect("join")
            .expect("reconcile");
    }

    /// The API server answers a status patch with the whole object.
    fn status_reply(body: Value) -> (StatusCode, Value) {
        let mut object = serde_json::to_value(api_key(None)).expect("json");
        object["status"] = body["status"].clone();
        (StatusCode::OK, object)
    }

    /// The API server answers a server-side apply with the object, recording
    /// keymint as the field manager.
    fn applied(mut body: Value) -> (StatusCode, Value) {
        body["metadata"]["managedFields"] =
            json!([{"manager": "keymint", "operation": "Apply", "apiVersion": "v1"}]);
        (StatusCode::OK, body)
    }

    fn echo(body: Value) -> (StatusCode, Value) {
        (StatusCode::OK, body)
    }

    #[tokio::test]
    async fn a_resource_cached_before_keymints_own_status_write_waits_and_sends_nothing() {
        let (ctx, _handle) = context();
        let mut written = api_key(None);
        written.metadata.resource_version = Some("9".into());
        ctx.record_own_status("APIKey", &written.metadata);
        let mut cached = api_key(Some(json!({"id": "OLD"})));
        cached.metadata.resource_version = Some("5".into());
        // No request is answered: one sent would leave the reconcile waiting.
        let action = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            reconcile(Arc::new(Parsed::Ok(cached)), ctx),
        )
        .await
        .expect("no request sent")
        .expect("reconcile");
        assert_eq!(
            action,
            kube::runtime::controller::Action::requeue(super::CACHE_BEHIND_REQUEUE)
        );
    }

    #[tokio::test]
    async fn a_new_key_is_written_before_its_status_and_announced_without_the_key() {
        let FirstMint {
            secret,
            event,
            status,
        } = first_mint().await;

        let secret: Secret = serde_json::from_value(secret).expect("secret");
        let key = crate::controller::secret::data_text(&secret, "key")
            .expect("key")
            .to_string();
        assert!(key.starts_with("ak_"));
        assert_eq!(secret.type_.as_deref(), Some("keymint.dev/key"));
        // Not read first, so created only if absent.
        assert_eq!(
            secret.metadata.resource_version.as_deref(),
            Some(super::CREATE_ONLY)
        );
        assert_eq!(
            secret
                .metadata
                .owner_references
                .as_ref()
                .map(|r| r[0].uid.as_str()),
            Some("uid-1")
        );
        assert_eq!(status["status"]["keySHA256"], json!(sha256_hex(&key)));
        assert_eq!(
            status["status"]["conditions"][0]["reason"],
            json!("KeyIssued")
        );
        assert_eq!(event["reason"], json!("KeyIssued"));
        assert!(!event.to_string().contains(&key) && !status.to_string().contains(&key));
    }

    /// A new resource whose Secret exists after all: the create-only apply
    /// is refused, then the Secret is read and answered with `answer`.
    async fn secret_found_at_first_mint(
        handle: &mut Handle,
        answer: impl FnOnce(Value) -> (StatusCode, Value),
    ) {
        let refused = expect(
            handle,
            Method::PATCH,
            "/api/v1/namespaces/team/secrets/billing",
            exists,
        )
        .await;
        assert_eq!(
            refused["metadata"]["resourceVersion"],
            json!(super::CREATE_ONLY),
            "a Secret not read first is applied create-only"
        );
        expect(
            handle,
            Method::GET,
            "/api/v1/namespaces/team/secrets/billing",
            answer,
        )
        .await;
    }

    /// The resource's own Secret cannot be read: Ready=False SecretUnreadable
    /// in the status, then a Warning Event; nothing is written to the Secret.
    async fn unreadable_secret(answer: fn(Value) -> (StatusCode, Value)) -> (Value, Value) {
        let (ctx, mut handle) = context();
        let run = tokio::spawn(reconcile(Arc::new(Parsed::Ok(api_key(None))), ctx));
        secret_found_at_first_mint(&mut handle, answer).await;
        let status = status_applied(&mut handle).await;
        let event = event_posted(&mut handle).await;
        finish(run).await;
        (status, event)
    }

    #[tokio::test]
    async fn a_secret_that_cannot_be_read_is_reported_not_retried_blindly() {
        fn forbidden(_: Value) -> (StatusCode, Value) {
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "Forbidden", "code": 403, "message": "secrets \"billing\" is forbidden"});
            (StatusCode::FORBIDDEN, status)
        }
        // A body that fits no Secret (data values must be strings).
        fn misshapen(_: Value) -> (StatusCode, Value) {
            let secret = json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "billing", "namespace": "team"},
                "type": "keymint.dev/key", "data": {"key": 5}});
            (StatusCode::OK, secret)
        }
        for answer in [forbidden as fn(Value) -> (StatusCode, Value), misshapen] {
            let (status, event) = unreadable_secret(answer).await;
            let condition = &status["status"]["conditions"][0];
            assert_eq!(condition["reason"], json!("SecretUnreadable"), "{status}");
            assert_eq!(condition["status"], json!("False"));
            assert_eq!(event["reason"], json!("SecretUnreadable"));
            assert_eq!(event["type"], json!("Warning"));
        }
    }

    #[tokio::test]
    async fn a_secret_found_at_the_first_mint_is_read_and_never_overwritten() {
        fn application_secret(_: Value) -> (StatusCode, Value) {
            let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "billing", "namespace": "team", "resourceVersion": "41"},
                "data": {"password": "aHVudGVyMg=="}});
            (StatusCode::OK, secret)
        }
        let (ctx, mut handle) = context();
        let run = tokio::spawn(reconcile(Arc::new(Parsed::Ok(api_key(None))), ctx));
        secret_found_at_first_mint(&mut handle, application_secret).await;
        // Then only the status and the Event: no second write of the Secret.
        let status = status_applied(&mut handle).await;
        let event = event_posted(&mut handle).await;
        finish(run).await;
        let condition = &status["status"]["conditions"][0];
        assert_eq!(condition["reason"], json!("SecretConflict"), "{status}");
        assert_eq!(event["reason"], json!("SecretConflict"));
    }

    /// Reconciles the APIKey again with the status its first mint wrote.
    fn reconcile_issued(
        ctx: Arc<Context>,
        status: &Value,
    ) -> tokio::task::JoinHandle<crate::controller::Result<kube::runtime::controller::Action>> {
        tokio::spawn(reconcile(
            Arc::new(Parsed::Ok(api_key(Some(status["status"].clone())))),
            ctx,
        ))
    }

    /// Once every client is dropped, the mock reports the end rather than
    /// another request.
    async fn assert_no_more_requests(mut handle: Handle, what: &str) {
        let next =
            tokio::time::timeout(std::time::Duration::from_secs(5), handle.next_request()).await;
        assert!(matches!(next, Ok(None)), "{what}");
    }

    #[tokio::test]
    async fn an_up_to_date_key_costs_one_read_and_no_write() {
        // First reconcile: capture what keymint writes.
        let FirstMint { secret, status, .. } = first_mint().await;

        // Second reconcile of the same state: one GET, nothing else.
        let (ctx, mut handle) = context();
        let run = reconcile_issued(ctx, &status);
        expect(
            &mut handle,
            Method::GET,
            "/api/v1/namespaces/team/secrets/billing",
            move |_| applied(secret),
        )
        .await;
        finish(run).await;
        // The reconcile has finished and dropped its client: the mock reports
        // the end rather than another request.
        assert_no_more_requests(handle, "no further request after the read").await;
    }

    #[tokio::test]
    async fn an_up_to_date_key_after_a_restart_is_confirmed_from_its_view_without_a_read() {
        let FirstMint { secret, status, .. } = first_mint().await;
        let (ctx, handle) = context();
        ctx.known
            .keep(serde_json::from_value(applied(secret).1).expect("secret"));
        let run = reconcile_issued(ctx.clone(), &status);
        finish(run).await;
        assert!(ctx.known.is_empty(), "the view served its one reconcile");
        drop(ctx);
        assert_no_more_requests(handle, "no request at all").await;
    }

    #[tokio::test]
    async fn a_view_of_a_key_that_needs_a_write_is_not_trusted_the_secret_is_read() {
        use base64::Engine;
        let FirstMint { secret, status, .. } = first_mint().await;
        // Someone put another key into the Secret: its view shows another
        // digest, so the Secret is read, then a new key issued.
        let mut tampered = secret;
        let other = crate::keys::mint_token_with(
            &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(9),
            "ak",
            256,
        );
        let planted = json!(base64::engine::general_purpose::STANDARD.encode(other.expose()));
        tampered["data"]["key"] = planted.clone();
        let (ctx, mut handle) = context();
        ctx.known
            .keep(serde_json::from_value(applied(tampered.clone()).1).expect("secret"));
        let run = reconcile_issued(ctx, &status);
        expect(
            &mut handle,
            Method::GET,
            "/api/v1/namespaces/team/secrets/billing",
            move |_| applied(tampered),
        )
        .await;
        let rewritten = expect(
            &mut handle,
            Method::PATCH,
            "/api/v1/namespaces/team/secrets/billing",
            applied,
        )
        .await;
        event_posted(&mut handle).await;
        status_applied(&mut handle).await;
        finish(run).await;
        assert_ne!(
            rewritten["data"]["key"], planted,
            "the planted key is replaced"
        );
    }
}
