//! The annotations keymint applies to one workload's pod template for every
//! key feeding it, and whether a rollout may start now.

use std::collections::BTreeMap;

/// Prefix of keymint's pod-template annotations.
pub const ANNOTATION_PREFIX: &str = "keymint.dev/key-";

/// One key feeding a workload: its annotation and current id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    pub annotation: String,
    pub key_id: String,
}

/// The full set of keymint annotations to apply to a pod template whose
/// annotations are `current`, or None when it already carries every feed's
/// id (nothing to write, nothing restarts). Every `keymint.dev/key-*`
/// annotation already there is kept as it is, so a key that stops naming the
/// workload causes no restart, and the apply (server-side, which removes
/// what the manager no longer applies) never drops one.
pub fn wanted_annotations(
    current: &BTreeMap<String, String>,
    feeds: &[Feed],
) -> Option<BTreeMap<String, String>> {
    if feeds
        .iter()
        .all(|feed| current.get(&feed.annotation) == Some(&feed.key_id))
    {
        return None;
    }
    let mut wanted: BTreeMap<String, String> = current
        .iter()
        .filter(|(key, _)| key.starts_with(ANNOTATION_PREFIX))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    for feed in feeds {
        wanted.insert(feed.annotation.clone(), feed.key_id.clone());
    }
    Some(wanted)
}

/// Whether a workload may start rolling out now: it is rolling already (the
/// new template supersedes the running rollout), or fewer than `limit` other
/// workloads of its namespace are rolling.
pub fn may_start(rolling_elsewhere: usize, limit: usize, already_rolling: bool) -> bool {
    already_rolling || rolling_elsewhere < limit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(annotation: &str, id: &str) -> Feed {
        Feed {
            annotation: annotation.into(),
            key_id: id.into(),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nothing_is_written_when_the_template_carries_every_current_id() {
        let current = map(&[("keymint.dev/key-a", "A1"), ("team", "x")]);
        assert_eq!(
            wanted_annotations(&current, &[feed("keymint.dev/key-a", "A1")]),
            None
        );
        assert_eq!(wanted_annotations(&current, &[]), None);
    }

    #[test]
    fn one_write_carries_every_key_and_keeps_the_ones_already_there() {
        let current = map(&[
            ("keymint.dev/key-a", "A1"),
            ("keymint.dev/key-old", "Z9"),
            ("team", "x"),
        ]);
        let feeds = [
            feed("keymint.dev/key-a", "A2"),
            feed("keymint.dev/key-b", "B1"),
        ];
        assert_eq!(
            wanted_annotations(&current, &feeds),
            Some(map(&[
                ("keymint.dev/key-a", "A2"),
                ("keymint.dev/key-b", "B1"),
                ("keymint.dev/key-old", "Z9"),
            ]))
        );
    }

    #[test]
    fn the_namespace_limit_holds_back_new_rollouts_only() {
        assert!(may_start(0, 2, false));
        assert!(may_start(1, 2, false));
        assert!(!may_start(2, 2, false));
        assert!(may_start(5, 2, true));
        assert!(!may_start(0, 0, false));
    }
}
