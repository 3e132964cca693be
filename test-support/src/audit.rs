//! The API server's audit log as tests count it: a mark before the action,
//! then the requests since, narrowed by user, verb, object and response code.

use keymint_testenv::{AuditEvent, ControlPlane};

/// How many audit events the log holds now: pass it to [`since`] later.
pub fn audit_mark() -> usize {
    ControlPlane::shared()
        .audit_events()
        .expect("audit log")
        .len()
}

/// The audit events recorded after `mark` (0: all of them).
pub fn since(mark: usize) -> Requests {
    let mut events = ControlPlane::shared().audit_events().expect("audit log");
    Requests(events.split_off(mark.min(events.len())))
}

/// Whether the verb writes.
pub fn is_write(event: &AuditEvent) -> bool {
    matches!(
        event.verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// The response code, if the event has one.
pub fn code(event: &AuditEvent) -> Option<u16> {
    event.response_status.as_ref().and_then(|s| s.code)
}

/// Whether the API server answered 2xx.
pub fn succeeded(event: &AuditEvent) -> bool {
    code(event).is_some_and(|code| (200..300).contains(&code))
}

/// A selection of audit events; each method narrows it.
#[derive(Debug, Clone)]
pub struct Requests(pub Vec<AuditEvent>);

impl Requests {
    /// Those `keep` keeps.
    pub fn only(self, keep: impl Fn(&AuditEvent) -> bool) -> Requests {
        Requests(self.0.into_iter().filter(|e| keep(e)).collect())
    }

    /// Those made by `user`.
    pub fn by(self, user: &str) -> Requests {
        self.only(|e| e.user.username == user)
    }

    /// Those with one of `verbs`.
    pub fn verbs(self, verbs: &[&str]) -> Requests {
        self.only(|e| verbs.contains(&e.verb.as_str()))
    }

    /// Writes (create, update, patch, delete, deletecollection).
    pub fn writes(self) -> Requests {
        self.only(is_write)
    }

    /// Those about objects in `namespace`.
    pub fn in_namespace(self, namespace: &str) -> Requests {
        self.only(|e| e.object_ref.as_ref().and_then(|r| r.namespace.as_deref()) == Some(namespace))
    }

    /// Those about `resource` (a plural, e.g. `secrets`; not a subresource).
    pub fn resource(self, resource: &str) -> Requests {
        self.only(|e| {
            e.object_ref
                .as_ref()
                .is_some_and(|r| r.resource == resource && r.subresource.is_none())
        })
    }

    /// Those about the object named `name`.
    pub fn named(self, name: &str) -> Requests {
        self.only(|e| e.object_ref.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
    }

    /// Those the API server answered with `code`.
    pub fn with_code(self, wanted: u16) -> Requests {
        self.only(|e| code(e) == Some(wanted))
    }

    pub fn count(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `verb uri` of each, for an assertion message.
    pub fn lines(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|e| format!("{} {}", e.verb, e.request_uri))
            .collect()
    }

    /// `verb uri (code)` of each.
    pub fn lines_with_codes(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|e| format!("{} {} ({:?})", e.verb, e.request_uri, code(e)))
            .collect()
    }
}
