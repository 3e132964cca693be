//! Which workloads a key's `spec.consumers` names, what each of them runs,
//! and whether the key's previous key may go before its grace period ends.

use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt};

use super::progress::Progress;
use crate::api::{Consumer, ConsumerKind, ConsumerState, ConsumerStatus, MAX_CONSUMER_STATUSES};
use crate::keys::token::is_valid_key_id;

/// A workload in the key's namespace, as the assessment sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub kind: ConsumerKind,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Its pod template reads the key's Secret.
    pub holder: bool,
    /// The key id its pod template carries under the key's annotation.
    pub key_id: Option<String>,
    /// Where it is in rolling out to the current key.
    pub progress: Progress,
}

/// Whether `consumer` names the workload `kind/name` with `labels`. A
/// selector that does not parse names nothing.
pub fn selects(
    consumer: &Consumer,
    kind: ConsumerKind,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    if consumer.kind != kind {
        return false;
    }
    match (&consumer.name, &consumer.selector) {
        (Some(wanted), _) => wanted == name,
        (None, Some(selector)) => {
            Selector::try_from(selector.clone()).is_ok_and(|selector| selector.matches(labels))
        }
        (None, None) => false,
    }
}

/// Whether the previous key may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switch {
    /// No workload holding the key: the previous key follows its grace period.
    NoHolders,
    /// Every holder runs the current key: the previous key may go now.
    AllSwitched,
    /// These holders (`Kind/name`) do not run the current key yet.
    Waiting { unfinished: Vec<String> },
}

/// What a key's consumers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// For `status.consumers`: sorted by kind and name, at most 32.
    pub statuses: Vec<ConsumerStatus>,
    pub switch: Switch,
    /// Named workloads that do not read the key's Secret (`Kind/name`).
    pub not_holders: Vec<String>,
}

/// Assesses `consumers` against the workloads of the key's namespace.
pub fn assess(consumers: &[Consumer], candidates: &[Candidate]) -> Assessment {
    let mut found: BTreeMap<(ConsumerKind, &str), ConsumerState> = BTreeMap::new();
    let mut key_ids: BTreeMap<(ConsumerKind, &str), Option<String>> = BTreeMap::new();
    let mut unfinished = Vec::new();
    let mut not_holders = Vec::new();
    let mut holders = 0usize;
    for candidate in candidates {
        if !consumers
            .iter()
            .any(|c| selects(c, candidate.kind, &candidate.name, &candidate.labels))
        {
            continue;
        }
        let slot = (candidate.kind, candidate.name.as_str());
        if found.contains_key(&slot) {
            continue;
        }
        let label = format!("{}/{}", candidate.kind, candidate.name);
        let state = if !candidate.holder {
            not_holders.push(label);
            ConsumerState::NotAHolder
        } else {
            holders += 1;
            let state = match candidate.progress {
                Progress::Done => ConsumerState::RolledOut,
                Progress::Rolling { .. } => ConsumerState::RollingOut,
                Progress::NotStarted => ConsumerState::Pending,
            };
            if state != ConsumerState::RolledOut {
                unfinished.push(label);
            }
            state
        };
        found.insert(slot, state);
        // The annotation is on the tenant's workload: a value that is not a
        // key id is not reported (the status schema would refuse it, and a
        // refused status write would stall the key's status and its rings).
        let key_id = candidate.key_id.clone().filter(|id| is_valid_key_id(id));
        key_ids.insert(slot, key_id);
    }
    // A workload named by name that is not there.
    for consumer in consumers {
        if let Some(name) = &consumer.name {
            found
                .entry((consumer.kind, name.as_str()))
                .or_insert(ConsumerState::NotFound);
        }
    }
    let statuses = found
        .into_iter()
        .take(MAX_CONSUMER_STATUSES as usize)
        .map(|((kind, name), state)| ConsumerStatus {
            kind,
            name: name.to_string(),
            key_id: key_ids.get(&(kind, name)).cloned().flatten(),
            state,
        })
        .collect();
    unfinished.sort();
    not_holders.sort();
    let switch = if holders == 0 {
        Switch::NoHolders
    } else if unfinished.is_empty() {
        Switch::AllSwitched
    } else {
        Switch::Waiting { unfinished }
    };
    Assessment {
        statuses,
        switch,
        not_holders,
    }
}

/// The `ConsumersRolledOut` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub rolled_out: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Most consumers a condition message names.
const MAX_NAMED: usize = 5;

fn named(list: &[String]) -> String {
    let mut text = list
        .iter()
        .take(MAX_NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > MAX_NAMED {
        text.push_str(&format!(" and {} more", list.len() - MAX_NAMED));
    }
    text
}

/// The condition for a key whose current id is `key_id`. `previous_until`:
/// when the previous key goes at the latest, while it is kept. `timed_out`:
/// the grace period ended before the consumers finished rolling out to this
/// key.
pub fn report(
    switch: &Switch,
    key_id: &str,
    previous_until: Option<&str>,
    timed_out: bool,
) -> Report {
    match switch {
        Switch::NoHolders => Report {
            rolled_out: false,
            reason: "NoHolders",
            message: "no consumer reads the key's Secret: nothing to roll out, the previous key follows gracePeriod".into(),
        },
        Switch::AllSwitched => Report {
            rolled_out: true,
            reason: "RolledOut",
            message: format!("every consumer runs key {key_id}"),
        },
        Switch::Waiting { unfinished } if timed_out => Report {
            rolled_out: false,
            reason: "RolloutTimedOut",
            message: format!(
                "gracePeriod ended before {} ran key {key_id}; the previous key was removed",
                named(unfinished)
            ),
        },
        Switch::Waiting { unfinished } => Report {
            rolled_out: false,
            reason: "RollingOut",
            message: match previous_until {
                Some(until) => format!(
                    "waiting for {} to run key {key_id}; the previous key is kept until then, at most until {until}",
                    named(unfinished)
                ),
                None => format!("rolling out key {key_id} to {}", named(unfinished)),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn consumer(value: serde_json::Value) -> Consumer {
        serde_json::from_value(value).expect("a consumer")
    }

    fn candidate(kind: ConsumerKind, name: &str, holder: bool, progress: Progress) -> Candidate {
        Candidate {
            kind,
            name: name.into(),
            labels: BTreeMap::from([("app".to_string(), name.to_string())]),
            holder,
            key_id: (progress != Progress::NotStarted).then(|| "NEW".to_string()),
            progress,
        }
    }

    const ROLLING: Progress = Progress::Rolling {
        updated: 1,
        available: 0,
        wanted: 2,
    };

    #[test]
    fn consumers_are_selected_by_kind_and_name_or_selector() {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let by_name = consumer(json!({"kind": "Deployment", "name": "web"}));
        let by_selector =
            consumer(json!({"kind": "Deployment", "selector": {"matchLabels": {"app": "web"}}}));
        let expressions = consumer(
            json!({"kind": "Deployment", "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]}}),
        );
        let broken = consumer(
            json!({"kind": "Deployment", "selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}),
        );
        assert!(selects(&by_name, ConsumerKind::Deployment, "web", &labels));
        assert!(!selects(
            &by_name,
            ConsumerKind::StatefulSet,
            "web",
            &labels
        ));
        assert!(!selects(
            &by_name,
            ConsumerKind::Deployment,
            "other",
            &labels
        ));
        assert!(selects(
            &by_selector,
            ConsumerKind::Deployment,
            "x",
            &labels
        ));
        assert!(!selects(
            &by_selector,
            ConsumerKind::Deployment,
            "x",
            &BTreeMap::new()
        ));
        assert!(selects(
            &expressions,
            ConsumerKind::Deployment,
            "x",
            &labels
        ));
        assert!(!selects(&broken, ConsumerKind::Deployment, "x", &labels));
    }

    #[test]
    fn the_previous_key_may_go_only_when_every_holder_runs_the_current_key() {
        let named = [
            consumer(json!({"kind": "Deployment", "name": "web"})),
            consumer(json!({"kind": "StatefulSet", "name": "db"})),
        ];
        let rows = [
            (vec![], Switch::NoHolders),
            (
                vec![candidate(
                    ConsumerKind::Deployment,
                    "web",
                    false,
                    Progress::NotStarted,
                )],
                Switch::NoHolders,
            ),
            (
                vec![candidate(
                    ConsumerKind::Deployment,
                    "web",
                    true,
                    Progress::Done,
                )],
                Switch::AllSwitched,
            ),
            (
                vec![
                    candidate(ConsumerKind::Deployment, "web", true, Progress::Done),
                    candidate(ConsumerKind::StatefulSet, "db", true, ROLLING),
                ],
                Switch::Waiting {
                    unfinished: vec!["StatefulSet/db".into()],
                },
            ),
            (
                vec![
                    candidate(ConsumerKind::Deployment, "web", true, Progress::NotStarted),
                    candidate(ConsumerKind::StatefulSet, "db", true, Progress::Done),
                    // Not named: ignored.
                    candidate(ConsumerKind::Deployment, "other", true, ROLLING),
                ],
                Switch::Waiting {
                    unfinished: vec!["Deployment/web".into()],
                },
            ),
        ];
        for (candidates, expected) in rows {
            assert_eq!(
                assess(&named, &candidates).switch,
                expected,
                "{candidates:?}"
            );
        }
    }

    #[test]
    fn statuses_name_every_consumer_once_with_its_state() {
        let consumers = [
            consumer(json!({"kind": "Deployment", "name": "web"})),
            consumer(json!({"kind": "Deployment", "selector": {"matchLabels": {"app": "web"}}})),
            consumer(json!({"kind": "Deployment", "name": "gone"})),
            consumer(json!({"kind": "DaemonSet", "name": "agent"})),
        ];
        let candidates = [
            candidate(ConsumerKind::Deployment, "web", true, ROLLING),
            candidate(
                ConsumerKind::DaemonSet,
                "agent",
                false,
                Progress::NotStarted,
            ),
        ];
        let assessment = assess(&consumers, &candidates);
        let states: Vec<(String, ConsumerState, Option<String>)> = assessment
            .statuses
            .iter()
            .map(|s| (format!("{}/{}", s.kind, s.name), s.state, s.key_id.clone()))
            .collect();
        assert_eq!(
            states,
            vec![
                ("Deployment/gone".into(), ConsumerState::NotFound, None),
                (
                    "Deployment/web".into(),
                    ConsumerState::RollingOut,
                    Some("NEW".into())
                ),
                ("DaemonSet/agent".into(), ConsumerState::NotAHolder, None),
            ]
        );
        assert_eq!(assessment.not_holders, vec!["DaemonSet/agent".to_string()]);
    }

    #[test]
    fn the_condition_names_what_keeps_the_previous_key() {
        let waiting = Switch::Waiting {
            unfinished: (0..7).map(|i| format!("Deployment/w{i}")).collect(),
        };
        let rolling = report(&waiting, "K2", Some("2026-12-02T10:00:00Z"), false);
        assert_eq!((rolling.rolled_out, rolling.reason), (false, "RollingOut"));
        assert!(
            rolling.message.contains("Deployment/w4 and 2 more"),
            "{}",
            rolling.message
        );
        assert!(rolling.message.contains("2026-12-02T10:00:00Z"));
        let late = report(&waiting, "K2", None, true);
        assert_eq!(late.reason, "RolloutTimedOut");
        assert!(
            late.message
                .starts_with("gracePeriod ended before Deployment/w0")
        );
        let done = report(&Switch::AllSwitched, "K2", None, true);
        assert_eq!((done.rolled_out, done.reason), (true, "RolledOut"));
        assert_eq!(
            report(&Switch::NoHolders, "K2", None, false).reason,
            "NoHolders"
        );
    }

    #[test]
    fn a_template_annotation_that_is_not_a_key_id_is_not_reported() {
        let consumers = [consumer(json!({"kind": "Deployment", "selector": {}}))];
        let crafted = ["a".repeat(300), "lower".into(), String::new(), "K1 ".into()];
        for value in crafted {
            let mut candidate = candidate(ConsumerKind::Deployment, "web", true, ROLLING);
            candidate.key_id = Some(value.clone());
            let statuses = assess(&consumers, &[candidate]).statuses;
            assert_eq!(statuses[0].key_id, None, "{value:?}");
        }
        let mut candidate = candidate(ConsumerKind::Deployment, "web", true, ROLLING);
        candidate.key_id = Some("K2D9Q".into());
        assert_eq!(
            assess(&consumers, &[candidate]).statuses[0]
                .key_id
                .as_deref(),
            Some("K2D9Q")
        );
    }

    #[test]
    fn a_selector_matching_many_workloads_lists_at_most_the_bound() {
        let consumers = [consumer(json!({"kind": "Deployment", "selector": {}}))];
        let candidates: Vec<Candidate> = (0..100)
            .map(|i| {
                candidate(
                    ConsumerKind::Deployment,
                    &format!("w{i:03}"),
                    true,
                    Progress::Done,
                )
            })
            .collect();
        let assessment = assess(&consumers, &candidates);
        assert_eq!(assessment.statuses.len(), MAX_CONSUMER_STATUSES as usize);
        assert_eq!(assessment.switch, Switch::AllSwitched);
    }
}
