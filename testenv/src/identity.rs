//! Who talks to the control plane: the fixed token identities (admin,
//! operator, standby operator) and their kubeconfigs, clients for them or for
//! any bearer token, ServiceAccounts with a Role and a TokenRequest token, and
//! test namespaces.

use std::fs;
use std::path::Path;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::node::NODE_NAME;
use crate::{ControlPlane, Error, Result, io_err};

/// User name of the admin identity (group `system:masters`).
pub const ADMIN_USER: &str = "keymint-admin";
/// User name the operator runs as in tests, so the audit log can tell its
/// requests apart from the test's own.
pub const OPERATOR_USER: &str = "keymint-operator";
/// A second operator identity (`system:masters`), for a second replica.
pub const STANDBY_OPERATOR_USER: &str = "keymint-operator-standby";

/// Lifetime asked of a ServiceAccount token from the TokenRequest API.
const SERVICE_ACCOUNT_TOKEN_SECONDS: i64 = 3600;

/// The bearer tokens of the fixed identities, one per start attempt.
pub(crate) struct StaticTokens {
    pub(crate) admin: String,
    pub(crate) operator: String,
    pub(crate) standby: String,
    /// The node's kubelet: `system:node:<name>` in `system:nodes`.
    pub(crate) node: String,
}

impl StaticTokens {
    pub(crate) fn generate() -> Self {
        StaticTokens {
            admin: random_token(),
            operator: random_token(),
            standby: random_token(),
            node: random_token(),
        }
    }

    /// kube-apiserver's `--token-auth-file`. It is read once at start-up:
    /// every identity the tests need that is not a ServiceAccount must be here.
    pub(crate) fn token_auth_file(&self) -> String {
        format!(
            "{},{ADMIN_USER},uid-admin,\"system:masters\"\n{},{OPERATOR_USER},uid-operator,\"system:masters\"\n{},{STANDBY_OPERATOR_USER},uid-standby,\"system:masters\"\n{},system:node:{NODE_NAME},uid-node,\"system:nodes\"\n",
            self.admin, self.operator, self.standby, self.node
        )
    }
}

/// 32 random hex digits.
pub(crate) fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Convenience for tests: a ClusterRole rule.
pub fn rule(api_groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect());
    PolicyRule {
        api_groups: strings(api_groups),
        resources: strings(resources),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

impl ControlPlane {
    /// Kubeconfig of the admin user (`system:masters`).
    pub fn kubeconfig_path(&self) -> std::path::PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Kubeconfig of the operator's test identity ([`OPERATOR_USER`], `system:masters`).
    pub fn operator_kubeconfig_path(&self) -> std::path::PathBuf {
        self.dir.join("operator.kubeconfig")
    }

    /// Kubeconfig of the second operator identity ([`STANDBY_OPERATOR_USER`]).
    pub fn standby_kubeconfig_path(&self) -> std::path::PathBuf {
        self.dir.join("standby.kubeconfig")
    }

    /// Writes the kubeconfigs of the three fixed identities.
    pub(crate) fn write_kubeconfigs(&self) -> Result<()> {
        self.write_kubeconfig(&self.kubeconfig_path(), ADMIN_USER, &self.tokens.admin)?;
        self.write_kubeconfig(
            &self.operator_kubeconfig_path(),
            OPERATOR_USER,
            &self.tokens.operator,
        )?;
        self.write_kubeconfig(
            &self.standby_kubeconfig_path(),
            STANDBY_OPERATOR_USER,
            &self.tokens.standby,
        )
    }

    pub(crate) fn write_kubeconfig(&self, path: &Path, user: &str, token: &str) -> Result<()> {
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: keymint-local\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: keymint-local\n  context:\n    cluster: keymint-local\n    user: {user}\n    namespace: default\ncurrent-context: keymint-local\n",
            server = self.server,
            ca = self.serving_certificate_path().display(),
        );
        fs::write(path, config).map_err(io_err(format!("write {}", path.display())))
    }

    /// A client for the admin user. Create one per test: a client belongs to
    /// the tokio runtime it was first used on.
    pub async fn client(&self) -> Result<kube::Client> {
        self.client_from(&self.kubeconfig_path()).await
    }

    /// A client for [`OPERATOR_USER`].
    pub async fn operator_client(&self) -> Result<kube::Client> {
        self.client_from(&self.operator_kubeconfig_path()).await
    }

    async fn client_from(&self, path: &Path) -> Result<kube::Client> {
        let config = kube_config(path).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// A client that authenticates with a bearer token (e.g. from the TokenRequest API).
    pub async fn client_with_token(&self, token: &str) -> Result<kube::Client> {
        let mut config = kube_config(&self.kubeconfig_path()).await?;
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.to_string().into()),
            ..Default::default()
        };
        Ok(kube::Client::try_from(config)?)
    }

    /// Creates a namespace with a unique name starting with `prefix` and returns its name.
    pub async fn namespace(&self, client: &kube::Client, prefix: &str) -> Result<String> {
        let name = format!("{prefix}-{}", &random_token()[..8].to_lowercase());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        Ok(name)
    }

    /// Creates a ServiceAccount in `namespace`, grants it `rules` there through a Role,
    /// and returns a client that authenticates as it with a token from the TokenRequest API.
    pub async fn service_account_client(
        &self,
        admin: &kube::Client,
        namespace: &str,
        name: &str,
        rules: Vec<PolicyRule>,
    ) -> Result<kube::Client> {
        let meta = ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        };
        let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), namespace);
        accounts
            .create(
                &PostParams::default(),
                &ServiceAccount {
                    metadata: meta.clone(),
                    ..Default::default()
                },
            )
            .await?;
        if !rules.is_empty() {
            Api::<Role>::namespaced(admin.clone(), namespace)
                .create(
                    &PostParams::default(),
                    &Role {
                        metadata: meta.clone(),
                        rules: Some(rules),
                    },
                )
                .await?;
            let binding = RoleBinding {
                metadata: meta.clone(),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: name.into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: name.into(),
                    namespace: Some(namespace.into()),
                    ..Default::default()
                }]),
            };
            Api::<RoleBinding>::namespaced(admin.clone(), namespace)
                .create(&PostParams::default(), &binding)
                .await?;
        }
        let token = self.service_account_token(admin, namespace, name).await?;
        self.client_with_token(&token).await
    }

    /// A token for a ServiceAccount from the TokenRequest API.
    pub async fn service_account_token(
        &self,
        admin: &kube::Client,
        namespace: &str,
        name: &str,
    ) -> Result<String> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(SERVICE_ACCOUNT_TOKEN_SECONDS),
                ..Default::default()
            },
            ..Default::default()
        };
        let response = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await?;
        response.status.map(|status| status.token).ok_or_else(|| {
            Error::Kubeconfig(format!(
                "TokenRequest for {namespace}/{name} returned no token"
            ))
        })
    }
}

/// A client configuration read from the kubeconfig at `path`.
async fn kube_config(path: &Path) -> Result<kube::Config> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))
}
