//! `keymint verify` as a process, in file mode (no cluster): every verify
//! form (JSON, forward-auth with Bearer and X-API-Key) with its statuses and
//! headers, readiness before and after the ring file exists, hot reload, a
//! malformed file keeping the last good ring, the metrics by reason, a clean
//! SIGTERM, and a scan of the process's log for every key used. Also the
//! verification recipe in Python (tests/verify_recipe.py) against
//! `Keyring::verify`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use keymint::keyring::{
    Issuer, Keyring, Member, MemberKind, MemberState, Reason, RingDocument, RingRef,
};
use keymint_test_support::verify::{VerifyServer, request};
use keymint_test_support::{Signal, eventually, send};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn token() -> String {
    keymint::keys::try_mint_token("ak", 256)
        .expect("mint")
        .expose()
        .to_string()
}

fn member(
    id: &str,
    key: &str,
    state: MemberState,
    not_before: &str,
    expires_at: Option<&str>,
) -> Member {
    Member {
        id: id.into(),
        sha256: keymint::keys::sha256_hex(key),
        kind: MemberKind::ApiKey,
        issuer: Issuer {
            namespace: Some("client".into()),
            name: "billing".into(),
            service_account: None,
        },
        permissions: vec!["models:*".into(), "read".into()],
        not_before: not_before.into(),
        expires_at: expires_at.map(str::to_string),
        state,
    }
}

fn document(members: Vec<Member>) -> Vec<u8> {
    RingDocument::new(
        RingRef {
            namespace: "svc".into(),
            name: "ring".into(),
        },
        "2026-01-01T00:00:00Z".into(),
        members,
    )
    .to_bytes()
}

/// Replaces `path` at once (write aside, rename), as the kubelet's swap does.
fn replace(path: &Path, bytes: &[u8]) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, bytes).expect("write the ring aside");
    std::fs::rename(&aside, path).expect("swap the ring in");
}

/// Counts what the test sent, by the reason it expects.
#[derive(Default)]
struct Expected(BTreeMap<&'static str, u64>);

impl Expected {
    fn add(&mut self, reason: Reason) {
        *self.0.entry(reason.code()).or_default() += 1;
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Every form a key could be written in: raw, JSON-escaped, base64
/// (standard and URL-safe, padded and not, at each alignment inside a
/// longer blob), and any 16-character piece of it (a partial key).
fn needles(key: &str) -> Vec<String> {
    let mut forms = vec![key.to_string(), serde_json::to_string(key).expect("json")];
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        forms.push(engine.encode(key));
        for prefix in 1..3usize {
            let mut blob = vec![0u8; prefix];
            blob.extend_from_slice(key.as_bytes());
            let encoded = engine.encode(&blob);
            // Only the characters that depend on the key's bytes alone.
            let start = (8 * prefix).div_ceil(6);
            let end = 8 * (prefix + key.len()) / 6;
            forms.push(encoded[start..end].to_string());
        }
    }
    let bytes = key.as_bytes();
    forms.extend(
        bytes
            .windows(16)
            .step_by(4)
            .filter_map(|piece| std::str::from_utf8(piece).ok())
            .filter(|piece| !piece.starts_with("ak_"))
            .map(str::to_string),
    );
    forms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_server_in_file_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ring_path = dir.path().join("keyring.json");
    let ring_arg = ring_path.display().to_string();
    let mut server = VerifyServer::start(
        dir.path(),
        "verify",
        &["--keyring-file", &ring_arg, "--poll-interval-ms", "50"],
        &[],
    );
    let port = server.port;

    // No ring yet: alive, not ready, no answer.
    eventually("/healthz", WAIT, || async {
        match request(port, "GET", "/healthz", &[], "") {
            Ok(answer) if answer.status == 200 => Ok(()),
            other => Err(format!("{:?}", other.map(|a| a.status))),
        }
    })
    .await;
    assert_eq!(
        request(port, "GET", "/readyz", &[], "")
            .expect("readyz")
            .status,
        503
    );
    let early = server
        .verify_json(&json!({"key": "ak_x"}))
        .expect("POST /v1/verify");
    assert_eq!(
        (early.status, early.json()["code"].clone()),
        (503, json!("UNAVAILABLE"))
    );

    let current = token();
    let second = token();
    let expired = token();
    let revoked = token();
    let future = token();
    let stranger = token();
    let all_keys = [&current, &second, &expired, &revoked, &future, &stranger];
    let members = |with_current: bool| {
        let mut list = vec![
            member(
                "SECOND",
                &second,
                MemberState::Current,
                "2026-01-01T00:00:00Z",
                None,
            ),
            member(
                "EXPIRED",
                &expired,
                MemberState::Previous,
                "2020-01-01T00:00:00Z",
                Some("2021-01-01T00:00:00Z"),
            ),
            member(
                "REVOKED",
                &revoked,
                MemberState::Revoked,
                "2020-01-01T00:00:00Z",
                None,
            ),
            member(
                "FUTURE",
                &future,
                MemberState::Current,
                "2999-01-01T00:00:00Z",
                None,
            ),
        ];
        if with_current {
            list.push(member(
                "CURRENT",
                &current,
                MemberState::Current,
                "2020-01-01T00:00:00Z",
                Some("2999-01-01T00:00:00Z"),
            ));
        }
        list
    };
    replace(&ring_path, &document(members(true)));
    eventually(
        "/readyz to turn 200 once the ring is written",
        WAIT,
        || async {
            match request(port, "GET", "/readyz", &[], "") {
                Ok(answer) if answer.status == 200 => Ok(()),
                other => Err(format!("{:?}", other.map(|a| a.status))),
            }
        },
    )
    .await;

    let mut expected = Expected::default();
    // JSON.
    let valid = server
        .verify_json(&json!({"key": current, "permission": "models:write"}))
        .expect("POST /v1/verify");
    expected.add(Reason::Valid);
    assert_eq!(valid.status, 200);
    assert_eq!(
        valid.json(),
        json!({
            "valid": true, "code": "VALID", "id": "CURRENT", "kind": "APIKey",
            "issuer": {"namespace": "client", "name": "billing"},
            "permissions": ["models:*", "read"], "expiresAt": "2999-01-01T00:00:00Z"
        })
    );
    let denied = server
        .verify_json(&json!({"key": current, "permission": "write"}))
        .expect("POST /v1/verify");
    expected.add(Reason::PermissionDenied);
    assert_eq!(
        (denied.status, denied.json()),
        (
            200,
            json!({"valid": false, "code": "PERMISSION_DENIED", "id": "CURRENT"})
        )
    );
    for (key, reason) in [
        (&expired, Reason::Expired),
        (&revoked, Reason::Revoked),
        (&future, Reason::NotYetValid),
        (&stranger, Reason::NotFound),
    ] {
        let answer = server
            .verify_json(&json!({"key": key}))
            .expect("POST /v1/verify");
        expected.add(reason);
        assert_eq!(
            (answer.status, answer.json()),
            (200, json!({"valid": false, "code": reason.code()}))
        );
    }
    let mut typo = current.clone();
    typo.pop();
    let answer = server
        .verify_json(&json!({"key": typo}))
        .expect("POST /v1/verify");
    expected.add(Reason::Malformed);
    assert_eq!(answer.json(), json!({"valid": false, "code": "MALFORMED"}));
    for bad in [
        String::from("{not json"),
        json!({"key": 7}).to_string(),
        json!({"permission": "x"}).to_string(),
    ] {
        let answer = request(port, "POST", "/v1/verify", &[], &bad).expect("POST");
        expected.add(Reason::Malformed);
        assert_eq!(
            (answer.status, answer.json()),
            (400, json!({"valid": false, "code": "MALFORMED"}))
        );
    }
    let huge = json!({"key": "a".repeat(10_000)}).to_string();
    let answer = request(port, "POST", "/v1/verify", &[], &huge).expect("POST");
    expected.add(Reason::Malformed);
    assert_eq!(
        (answer.status, answer.json()["code"].clone()),
        (413, json!("MALFORMED"))
    );

    // Forward-auth: Bearer (any method, any path below), X-API-Key.
    let bearer = format!("Bearer {current}");
    for (method, path) in [
        ("GET", "/v1/forward-auth"),
        ("POST", "/v1/forward-auth/api/models?x=1"),
        ("DELETE", "/v1/forward-auth/"),
    ] {
        let answer =
            request(port, method, path, &[("Authorization", &bearer)], "").expect("forward-auth");
        expected.add(Reason::Valid);
        assert_eq!(answer.status, 200, "{method} {path}");
        assert_eq!(answer.header("x-keymint-key-id"), Some("CURRENT"));
        assert_eq!(answer.header("x-keymint-issuer"), Some("client/billing"));
        assert_eq!(answer.header("x-keymint-kind"), Some("APIKey"));
        assert_eq!(
            answer.header("x-keymint-permissions"),
            Some("models:*,read")
        );
    }
    let answer = request(
        port,
        "GET",
        "/v1/forward-auth?permission=read",
        &[("X-API-Key", &second)],
        "",
    )
    .expect("forward-auth");
    expected.add(Reason::Valid);
    assert_eq!(
        (answer.status, answer.header("x-keymint-key-id")),
        (200, Some("SECOND"))
    );
    let answer = request(
        port,
        "GET",
        "/v1/forward-auth?permission=write",
        &[("Authorization", &bearer)],
        "",
    )
    .expect("forward-auth");
    expected.add(Reason::PermissionDenied);
    assert_eq!(
        (answer.status, answer.header("x-keymint-reason")),
        (403, Some("PERMISSION_DENIED"))
    );
    assert_eq!(answer.header("x-keymint-key-id"), None);
    let answer = request(
        port,
        "GET",
        "/v1/forward-auth",
        &[
            ("Authorization", &bearer),
            ("X-Keymint-Permission", "models:read, write"),
        ],
        "",
    )
    .expect("forward-auth");
    expected.add(Reason::PermissionDenied);
    assert_eq!(answer.status, 403);
    for (headers, reason) in [
        (vec![], Reason::Malformed),
        (
            vec![("Authorization", format!("Basic {current}"))],
            Reason::Malformed,
        ),
        (
            vec![
                ("Authorization", bearer.clone()),
                ("X-API-Key", second.clone()),
            ],
            Reason::Malformed,
        ),
        (vec![("X-API-Key", stranger.clone())], Reason::NotFound),
        (
            vec![("Authorization", format!("bearer {expired}"))],
            Reason::Expired,
        ),
        (vec![("X-API-Key", revoked.clone())], Reason::Revoked),
        (vec![("X-API-Key", future.clone())], Reason::NotYetValid),
    ] {
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let answer = request(port, "GET", "/v1/forward-auth/x", &pairs, "").expect("forward-auth");
        expected.add(reason);
        assert_eq!(answer.status, 401, "{reason:?}");
        assert_eq!(answer.header("x-keymint-reason"), Some(reason.code()));
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
        assert_eq!(answer.header("x-keymint-key-id"), None);
    }

    // Metrics: exactly what was sent, by reason; the ring's size.
    let metrics = request(port, "GET", "/metrics", &[], "")
        .expect("metrics")
        .body;
    for reason in Reason::ALL {
        let series = format!(
            "keymint_verify_verifications_total{{reason=\"{}\"}}",
            reason.code()
        );
        let want = expected.0.get(reason.code()).copied().unwrap_or(0) as f64;
        assert_eq!(
            metric(&metrics, &series),
            Some(want),
            "{series} in\n{metrics}"
        );
    }
    assert_eq!(metric(&metrics, "keymint_verify_ring_members"), Some(5.0));
    assert_eq!(
        metric(&metrics, "keymint_verify_ring_loads_total"),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, "keymint_verify_reload_failures_total"),
        Some(0.0)
    );
    assert!(metric(&metrics, "keymint_verify_ring_age_seconds").is_some_and(|age| age > 0.0));
    assert!(metric(&metrics, "keymint_verify_seconds_since_last_load").is_some_and(|s| s >= 0.0));

    // Hot reload: the current key removed is NOT_FOUND within the deadline.
    replace(&ring_path, &document(members(false)));
    eventually("the removed key to be NOT_FOUND", WAIT, || async {
        let code = server
            .verify_json(&json!({"key": current}))
            .expect("POST /v1/verify")
            .json()["code"]
            .clone();
        if code == json!("NOT_FOUND") {
            Ok(())
        } else {
            Err(code.to_string())
        }
    })
    .await;

    // A malformed file: counted, and the last good ring still answers.
    replace(
        &ring_path,
        br#"{"version":"keymint.dev/keyring/v1","members":[{"id":"#,
    );
    eventually("the refused document to be counted", WAIT, || async {
        let text = request(port, "GET", "/metrics", &[], "")
            .map_err(|e| e.to_string())?
            .body;
        match metric(&text, "keymint_verify_reload_failures_total") {
            Some(count) if count >= 1.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let still = server
        .verify_json(&json!({"key": second}))
        .expect("POST /v1/verify");
    assert_eq!(still.json()["code"], json!("VALID"));
    assert_eq!(
        request(port, "GET", "/readyz", &[], "")
            .expect("readyz")
            .status,
        200
    );
    assert!(
        server.log().contains("refused the key ring document"),
        "{}",
        server.log()
    );

    // SIGTERM: a clean stop.
    send(server.pid(), Signal::TERM);
    let status = eventually("keymint verify to exit after SIGTERM", WAIT, || {
        let waited = server.try_wait();
        async move {
            match waited {
                Some(status) => Ok(status),
                None => Err("still running".to_string()),
            }
        }
    })
    .await;
    assert!(status.success(), "exit {status:?}; log:\n{}", server.log());

    // No key, in any form, in the log.
    let log = server.log();
    assert!(
        log.contains("\"reason\":\"NOT_FOUND\""),
        "outcomes are logged at debug:\n{log}"
    );
    for key in all_keys {
        for needle in needles(key) {
            assert!(
                !log.contains(&needle),
                "the log holds a form of a key ({} characters)",
                needle.len()
            );
        }
    }
}

#[test]
fn the_python_recipe_agrees_with_keyring_verify() {
    let current = token();
    let expired = token();
    let revoked = token();
    let future = token();
    let root = token();
    let stranger = token();
    let mut root_member = member(
        "ROOT",
        &root,
        MemberState::Current,
        "2026-01-01T00:00:00Z",
        None,
    );
    root_member.kind = MemberKind::RootKey;
    root_member.issuer.namespace = None;
    root_member.permissions = vec!["*".into()];
    let bytes = document(vec![
        member(
            "CURRENT",
            &current,
            MemberState::Current,
            "2026-01-01T00:00:00Z",
            Some("2027-01-01T00:00:00Z"),
        ),
        member(
            "EXPIRED",
            &expired,
            MemberState::Previous,
            "2026-01-01T00:00:00Z",
            Some("2026-03-01T00:00:00Z"),
        ),
        member(
            "REVOKED",
            &revoked,
            MemberState::Revoked,
            "2026-01-01T00:00:00Z",
            None,
        ),
        member(
            "FUTURE",
            &future,
            MemberState::Current,
            "2026-09-01T00:00:00Z",
            None,
        ),
        root_member,
    ]);
    let ring = Keyring::from_bytes(&bytes).expect("a valid document");
    let mut typo = current.clone();
    let last = typo.pop().expect("a character");
    typo.push(if last == 'A' { 'B' } else { 'A' });
    let now = "2026-06-01T00:00:00Z";
    let mut cases: Vec<(String, Option<&str>, &str)> = Vec::new();
    for key in [
        &current, &expired, &revoked, &future, &root, &stranger, &typo,
    ] {
        for permission in [
            None,
            Some("read"),
            Some("models:eu:read"),
            Some("models"),
            Some("models:"),
            Some("write"),
            Some("*"),
        ] {
            cases.push((key.clone(), permission, now));
        }
    }
    for at in [
        "2025-12-31T23:59:59Z",
        "2026-01-01T00:00:00Z",
        "2026-03-01T00:00:00Z",
        "2027-01-01T00:00:00Z",
        "2026-09-01T00:00:00.5Z",
    ] {
        for key in [&current, &expired, &future] {
            cases.push((key.clone(), None, at));
        }
    }
    for junk in ["", "ak_", "Bearer x", "AK_abc", "ak_short1", "ak_ümlaut"] {
        cases.push((junk.to_string(), None, now));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let document_path = dir.path().join("keyring.json");
    let cases_path = dir.path().join("cases.json");
    std::fs::write(&document_path, &bytes).expect("write document");
    let table: Vec<Value> = cases
        .iter()
        .map(|(key, permission, at)| json!({"key": key, "permission": permission, "now": at}))
        .collect();
    std::fs::write(&cases_path, serde_json::to_vec(&table).expect("json")).expect("write cases");
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verify_recipe.py");
    let output = Command::new("python3")
        .arg(&recipe)
        .arg(&document_path)
        .arg(&cases_path)
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<String> =
        serde_json::from_slice(&output.stdout).expect("a JSON list of codes");
    assert_eq!(answers.len(), cases.len());
    let mut seen = std::collections::BTreeSet::new();
    for ((key, permission, at), python) in cases.iter().zip(&answers) {
        let rust = ring
            .verify(key, *permission, at.parse().expect("time"))
            .reason
            .code();
        seen.insert(rust);
        assert_eq!(
            python,
            rust,
            "case {permission:?} at {at} (key of {} characters)",
            key.len()
        );
    }
    assert_eq!(
        seen.len(),
        Reason::ALL.len(),
        "the table reaches every reason: {seen:?}"
    );
}
