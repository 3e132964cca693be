//! What differs between RootKey, ServiceAccountKey and APIKey, as one small
//! trait; everything else is the shared engine.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ObjectMeta};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::lenient::{MetaOnly, Parsed, Trim, trim_key_resource};
use super::owner::OwnerId;
use super::reason::Reason;
use super::{Context, Result, Settings};
use crate::api::names::about;
use crate::api::{
    ApiKey, Consumer, KeyRing, KeyRingRef, KeySpec, KeySpecCommon, KeyStatus, RootKey,
    ServiceAccountKey,
};
use crate::keyring::MemberKind;

/// Why a key cannot be issued right now (reported as `Ready=False`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub reason: Reason,
    pub message: String,
}

impl Blocked {
    pub fn new(reason: Reason, message: String) -> Self {
        Blocked { reason, message }
    }
}

/// The object a key is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// Not bound to anything.
    Unbound,
    /// Bound to an object that exists, with this UID.
    Bound { uid: String },
    /// The object it must be bound to is missing: the key is revoked.
    Missing(Blocked),
}

/// A key resource kind.
pub trait KeyResource:
    Resource<DynamicType = ()>
    + Trim
    + ResourceExt
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    fn common(&self) -> &KeySpecCommon;

    /// `spec.format.prefix`, else the kind's default (`rk`, `sak`, `ak`).
    fn token_prefix(&self) -> &str;

    /// The API for this resource (cluster-wide or in its namespace), read leniently.
    fn api(client: kube::Client, resource: &Self) -> Api<Parsed<Self>>;

    fn key_status(&self) -> Option<&KeyStatus>;

    /// The namespace the Secret is written to, or why it may not be.
    fn secret_namespace(&self, settings: &Settings) -> Result<String, Blocked>;

    /// Kind-specific annotations for the Secret.
    fn secret_annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// The object the key is bound to, if the kind has one.
    fn binding(&self, _ctx: &Context) -> impl Future<Output = Result<Binding>> + Send {
        async { Ok(Binding::Unbound) }
    }

    /// The KeyRings the key asks to join (`spec.keyRings`); none for RootKeys.
    fn key_rings(&self) -> &[KeyRingRef] {
        &[]
    }

    /// How the key appears in a ring: its kind, permissions and ServiceAccount.
    fn ring_identity(&self) -> (MemberKind, Vec<String>, Option<String>) {
        (MemberKind::RootKey, Vec::new(), None)
    }

    /// The workloads that hold the key (`spec.consumers`); none for RootKeys.
    fn consumers(&self) -> &[Consumer] {
        &[]
    }

    /// The resource's identity as recorded on its Secret (`Kind/namespace/name`).
    fn owner_id(&self) -> OwnerId {
        OwnerId::of(&Self::kind(&()), self.meta())
    }
}

/// The accessors every kind implements alike: the spec's shared fields and the status.
macro_rules! spec_and_status_accessors {
    () => {
        fn common(&self) -> &KeySpecCommon {
            self.spec.common()
        }

        fn token_prefix(&self) -> &str {
            self.spec.token_prefix()
        }

        fn key_status(&self) -> Option<&KeyStatus> {
            self.status.as_ref()
        }
    };
}

/// A namespaced kind: its API and its Secret are in its own namespace.
macro_rules! in_own_namespace {
    () => {
        fn api(client: kube::Client, resource: &Self) -> Api<Parsed<Self>> {
            Api::namespaced(client, &resource.namespace().unwrap_or_default())
        }

        fn secret_namespace(&self, _settings: &Settings) -> Result<String, Blocked> {
            own_namespace(self)
        }
    };
}

/// Key resources are cached with only what the engine reads of their metadata.
macro_rules! trimmed_key_resource {
    ($($kind:ty),*) => {$(
        impl Trim for $kind {
            fn trim(metadata: &mut kube::api::ObjectMeta) {
                trim_key_resource(metadata)
            }
        }
    )*};
}
trimmed_key_resource!(RootKey, ServiceAccountKey, ApiKey, KeyRing);

impl KeyResource for RootKey {
    fn api(client: kube::Client, _resource: &Self) -> Api<Parsed<Self>> {
        Api::all(client)
    }

    spec_and_status_accessors!();

    fn secret_namespace(&self, settings: &Settings) -> Result<String, Blocked> {
        let namespace = self
            .spec
            .secret_namespace
            .clone()
            .unwrap_or_else(|| settings.operator_namespace.clone());
        if settings.root_key_namespaces.contains(&namespace) {
            Ok(namespace)
        } else {
            Err(Blocked {
                reason: Reason::NamespaceNotAllowed,
                message: format!(
                    "spec.secretNamespace {namespace:?} is not allowed for RootKeys; the operator writes RootKey Secrets only to {:?} (--root-key-namespaces)",
                    settings.root_key_namespaces
                ),
            })
        }
    }
}

impl KeyResource for ServiceAccountKey {
    in_own_namespace!();
    spec_and_status_accessors!();

    fn key_rings(&self) -> &[KeyRingRef] {
        &self.spec.key_rings
    }

    fn consumers(&self) -> &[Consumer] {
        &self.spec.consumers
    }

    fn ring_identity(&self) -> (MemberKind, Vec<String>, Option<String>) {
        (
            MemberKind::ServiceAccountKey,
            Vec::new(),
            Some(self.spec.service_account_name.clone()),
        )
    }

    fn secret_annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(
            about::SERVICE_ACCOUNT.to_string(),
            self.spec.service_account_name.clone(),
        )])
    }

    fn binding(&self, ctx: &Context) -> impl Future<Output = Result<Binding>> + Send {
        let namespace = self.namespace().unwrap_or_default();
        let name = self.spec.service_account_name.clone();
        let accounts = Api::<MetaOnly<ServiceAccount>>::namespaced(ctx.client.clone(), &namespace);
        async move {
            let account = accounts.get_opt(&name).await?;
            Ok(match account.map(|a| a.metadata) {
                // A terminating account (a finalizer holds it) is as good as gone.
                Some(account) if account.deletion_timestamp.is_some() => Binding::Missing(
                    service_account_missing(&namespace, &name, "is being deleted"),
                ),
                Some(ObjectMeta { uid: Some(uid), .. }) => Binding::Bound { uid },
                _ => Binding::Missing(service_account_missing(&namespace, &name, "not found")),
            })
        }
    }
}

fn service_account_missing(namespace: &str, name: &str, why: &str) -> Blocked {
    Blocked {
        reason: Reason::ServiceAccountNotFound,
        message: format!(
            "spec.serviceAccountName: ServiceAccount {namespace}/{name} {why}; the key is issued when it exists"
        ),
    }
}

impl KeyResource for ApiKey {
    in_own_namespace!();
    spec_and_status_accessors!();

    fn key_rings(&self) -> &[KeyRingRef] {
        &self.spec.key_rings
    }

    fn consumers(&self) -> &[Consumer] {
        &self.spec.consumers
    }

    fn ring_identity(&self) -> (MemberKind, Vec<String>, Option<String>) {
        (MemberKind::ApiKey, self.spec.permissions.clone(), None)
    }

    /// Permissions travel with the key so verifiers can read them; they never
    /// grant anything in Kubernetes.
    fn secret_annotations(&self) -> BTreeMap<String, String> {
        let mut annotations = BTreeMap::new();
        if !self.spec.permissions.is_empty() {
            annotations.insert(
                about::PERMISSIONS.to_string(),
                self.spec.permissions.join(","),
            );
        }
        if let Some(description) = &self.spec.description {
            annotations.insert(about::DESCRIPTION.to_string(), description.clone());
        }
        annotations
    }
}

fn own_namespace<K: Resource>(resource: &K) -> Result<String, Blocked> {
    resource.meta().namespace.clone().ok_or(Blocked {
        reason: Reason::InvalidSpec,
        message: "metadata.namespace is missing on a namespaced key resource".into(),
    })
}
