//! The identity of a key resource as keymint records it on its Secret
//! (`keymint.dev/owner`) and uses it in its own bookkeeping: `Kind/name` for
//! a cluster-scoped RootKey, `Kind/namespace/name` otherwise. Formatted and
//! parsed here only.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnerId {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{}/{namespace}/{}", self.kind, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

impl OwnerId {
    /// The identity of an object of `kind` with this metadata (also for one
    /// that could not be read as its kind).
    pub fn of(kind: &str, metadata: &kube::api::ObjectMeta) -> Self {
        OwnerId {
            kind: kind.to_string(),
            namespace: metadata.namespace.clone(),
            name: metadata.name.clone().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an owner is Kind/name or Kind/namespace/name, each part non-empty")]
pub struct NotAnOwner;

impl FromStr for OwnerId {
    type Err = NotAnOwner;

    fn from_str(text: &str) -> Result<Self, NotAnOwner> {
        let parts: Vec<&str> = text.split('/').collect();
        if parts.iter().any(|part| part.is_empty()) {
            return Err(NotAnOwner);
        }
        match parts[..] {
            [kind, name] => Ok(OwnerId {
                kind: kind.into(),
                namespace: None,
                name: name.into(),
            }),
            [kind, namespace, name] => Ok(OwnerId {
                kind: kind.into(),
                namespace: Some(namespace.into()),
                name: name.into(),
            }),
            _ => Err(NotAnOwner),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_round_trip_and_anything_else_is_refused() {
        for text in ["RootKey/admin", "APIKey/team/billing"] {
            let owner: OwnerId = text.parse().expect("an owner");
            assert_eq!(owner.to_string(), text);
        }
        let namespaced: OwnerId = "APIKey/team/billing".parse().expect("an owner");
        assert_eq!(namespaced.namespace.as_deref(), Some("team"));
        for text in [
            "",
            "APIKey",
            "APIKey/",
            "/a/b",
            "APIKey//b",
            "a/b/c/d",
            "a/b\n/c/d",
        ] {
            assert_eq!(text.parse::<OwnerId>(), Err(NotAnOwner), "{text:?}");
        }
    }
}
