//! The operator-held key that signs the records keymint keeps in Secrets
//! (see [`crate::keys::signature`]). It lives in a Secret in the operator's
//! namespace, which only cluster administrators can read; the first replica
//! to start creates it, every replica reads the same one.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::{Api, ObjectMeta, PostParams};

use super::FIELD_MANAGER;
use super::lenient::{MetaOnly, Parsed};
use crate::keys::signature::SigningKey;

/// The data entry holding the key bytes.
pub const DATA_FIELD: &str = "hmac-sha256";
/// The Secret type, so the record key is never mistaken for a minted key.
pub const SECRET_TYPE: &str = "keymint.dev/record-key";
/// The Secret's name unless `--record-key-secret` says otherwise.
pub const DEFAULT_SECRET_NAME: &str = "keymint-record-key";

/// Reads the signing key from `namespace/name`, creating it if missing.
/// Errors name the Secret, never its content.
pub async fn load_or_create(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<SigningKey, String> {
    let where_ = format!("record signing key Secret {namespace}/{name}");
    let secrets = Api::<Parsed<Secret>>::namespaced(client.clone(), namespace);
    // Two replicas may start at once: the loser of the create reads the winner's.
    for _ in 0..2 {
        match secrets.get_opt(name).await {
            Ok(Some(Parsed::Ok(mut secret))) => {
                let key = read(&secret).map_err(|e| format!("{where_}: {e}"));
                super::secret::wipe(&mut secret);
                return key;
            }
            Ok(Some(Parsed::Unreadable { error, .. })) => {
                return Err(format!("{where_}: {error}"));
            }
            Ok(None) => {}
            Err(error) => return Err(format!("{where_}: cannot read it: {error}")),
        }
        let bytes =
            SigningKey::generate_bytes().map_err(|e| format!("{where_}: no randomness: {e}"))?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_string(),
                    "keymint".to_string(),
                )])),
                ..Default::default()
            },
            type_: Some(SECRET_TYPE.into()),
            immutable: Some(true),
            data: Some(BTreeMap::from([(
                DATA_FIELD.to_string(),
                ByteString(bytes.to_vec()),
            )])),
            ..Default::default()
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let mut secret = secret;
        let body = serde_json::to_vec(&secret);
        super::secret::wipe(&mut secret);
        let request = body
            .map_err(|e| e.to_string())
            .and_then(|body| {
                kube::core::Request::new(Secret::url_path(&(), Some(namespace)))
                    .create(&params, body)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| format!("{where_}: {e}"))?;
        // The answer is read as metadata only: the key never comes back. The
        // request body moves into the HTTP client, which does not wipe it.
        let created = client.request::<MetaOnly<Secret>>(request).await;
        match created {
            Ok(_) => return SigningKey::new(&bytes).map_err(|e| format!("{where_}: {e}")),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(format!("{where_}: cannot create it: {error}")),
        }
    }
    Err(format!(
        "{where_}: created and deleted concurrently; start again"
    ))
}

fn read(secret: &Secret) -> Result<SigningKey, String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(DATA_FIELD))
        .ok_or_else(|| format!("has no data.{DATA_FIELD}"))?;
    SigningKey::new(&bytes.0).map_err(|e| format!("data.{DATA_FIELD}: {e}"))
}
