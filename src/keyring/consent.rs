//! Both sides consent: a key joins a ring only when it names the ring and
//! the ring accepts the key's namespace (as Gateway API's `allowedRoutes`
//! and ReferenceGrant do). The ring's owner decides; a namespace label is
//! written by whoever may label namespaces (cluster admins, usually).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};

/// Which namespaces a ring accepts keys from.
#[derive(Debug, Clone, PartialEq)]
pub enum AllowedFrom {
    /// Only the ring's own namespace (the default).
    Same,
    /// Namespaces whose labels the selector matches (an empty selector
    /// matches every namespace), the ring's own included only if it matches.
    Selector(LabelSelector),
    /// Every namespace.
    All,
}

/// Whether a ring in `ring_namespace` accepting `allowed` takes a key from
/// `key_namespace` (labelled `key_namespace_labels`; `None` when the
/// namespace could not be read, which accepts nothing a selector decides).
/// A selector that cannot be parsed accepts nothing.
pub fn accepts(
    ring_namespace: &str,
    allowed: &AllowedFrom,
    key_namespace: &str,
    key_namespace_labels: Option<&BTreeMap<String, String>>,
) -> bool {
    match allowed {
        AllowedFrom::Same => ring_namespace == key_namespace,
        AllowedFrom::All => true,
        AllowedFrom::Selector(selector) => {
            let Ok(selector) = Selector::try_from(selector.clone()) else {
                return false;
            };
            key_namespace_labels.is_some_and(|labels| selector.matches(labels))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selector(pairs: &[(&str, &str)]) -> AllowedFrom {
        AllowedFrom::Selector(LabelSelector {
            match_labels: Some(labels(pairs)),
            match_expressions: None,
        })
    }

    #[test]
    fn consent_table() {
        let team = labels(&[("team", "billing")]);
        let unlabelled = labels(&[]);
        type Row<'a> = (
            &'a str,
            AllowedFrom,
            &'a str,
            Option<&'a BTreeMap<String, String>>,
            bool,
        );
        let rows: Vec<Row<'_>> = vec![
            ("svc", AllowedFrom::Same, "svc", None, true),
            ("svc", AllowedFrom::Same, "client", Some(&team), false),
            ("svc", AllowedFrom::All, "client", None, true),
            (
                "svc",
                selector(&[("team", "billing")]),
                "client",
                Some(&team),
                true,
            ),
            (
                "svc",
                selector(&[("team", "search")]),
                "client",
                Some(&team),
                false,
            ),
            (
                "svc",
                selector(&[("team", "billing")]),
                "client",
                None,
                false,
            ),
            // The ring's own namespace is not special under a selector.
            (
                "svc",
                selector(&[("team", "billing")]),
                "svc",
                Some(&unlabelled),
                false,
            ),
        ];
        for (ring, allowed, key, key_labels, expected) in rows {
            assert_eq!(
                accepts(ring, &allowed, key, key_labels),
                expected,
                "{ring} {allowed:?} {key}"
            );
        }
    }

    #[test]
    fn a_selector_that_does_not_parse_accepts_nothing() {
        let broken = AllowedFrom::Selector(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: "Near".into(),
                values: None,
            }]),
        });
        assert!(!accepts(
            "svc",
            &broken,
            "client",
            Some(&labels(&[("team", "x")]))
        ));
    }
}
