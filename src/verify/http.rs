//! The verify server's HTTP surface (axum): `POST /v1/verify` (JSON),
//! forward-auth on any method under `/v1/forward-auth` (Envoy ext_authz
//! HTTP service, ingress-nginx `auth-url`, Traefik `forwardAuth`),
//! `/healthz`, `/readyz` and `/metrics`. The decisions (which key a request
//! presents, which permissions it requires, which status a reason gets, the
//! JSON shapes) are pure functions below the handlers.
//!
//! Nothing here logs or echoes a key, a request body or a credential
//! header: outcomes are logged at debug with the reason and key id only.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::debug;

use super::metrics::VerifyMetrics;
use super::source::RingHandle;
use crate::keyring::{Issuer, Keyring, Member, MemberKind, Reason, Verdict, grants};

/// Largest `POST /v1/verify` body: a key is under 100 bytes, a permission
/// under 64; anything near this is not a verify request.
pub const MAX_BODY_BYTES: usize = 8 * 1024;

pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub const X_KEYMINT_PERMISSION: HeaderName = HeaderName::from_static("x-keymint-permission");
pub const X_KEYMINT_REASON: HeaderName = HeaderName::from_static("x-keymint-reason");
pub const X_KEYMINT_KEY_ID: HeaderName = HeaderName::from_static("x-keymint-key-id");
pub const X_KEYMINT_ISSUER: HeaderName = HeaderName::from_static("x-keymint-issuer");
pub const X_KEYMINT_KIND: HeaderName = HeaderName::from_static("x-keymint-kind");
pub const X_KEYMINT_PERMISSIONS: HeaderName = HeaderName::from_static("x-keymint-permissions");
pub const X_KEYMINT_SERVICE_ACCOUNT: HeaderName =
    HeaderName::from_static("x-keymint-service-account");

/// The code answered while no ring is loaded (not a [`Reason`]: no key was judged).
pub const UNAVAILABLE: &str = "UNAVAILABLE";

/// The key a forward-auth request presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented<'a> {
    /// Neither `Authorization: Bearer` nor `X-API-Key`.
    Missing,
    Key(&'a str),
    /// Two different keys (both headers, or a header repeated), or a header
    /// that is not visible ASCII: refused as `MALFORMED` rather than guessed.
    Ambiguous,
}

/// Optional whitespace around header values and between scheme and token.
fn trim_ows(text: &str) -> &str {
    text.trim_matches([' ', '\t'])
}

/// The one value of `name`, if any; `Err` for several or non-ASCII.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ()> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    first.to_str().map(|v| Some(trim_ows(v))).map_err(|_| ())
}

/// The key in `Authorization: Bearer <key>` (scheme case-insensitive, any
/// spaces or tabs around) or `X-API-Key: <key>`. An `Authorization` header
/// with another scheme (Basic, say, meant for the upstream) is not ours and
/// is ignored. Both present with the same key is that key; with different
/// keys it is [`Presented::Ambiguous`].
pub fn presented_key(headers: &HeaderMap) -> Presented<'_> {
    let Ok(authorization) = single(headers, &AUTHORIZATION) else {
        return Presented::Ambiguous;
    };
    let Ok(api_key) = single(headers, &X_API_KEY) else {
        return Presented::Ambiguous;
    };
    let bearer = authorization.and_then(|value| {
        let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| trim_ows(rest))
    });
    match (bearer, api_key) {
        (None, None) => Presented::Missing,
        (Some(key), None) | (None, Some(key)) => Presented::Key(key),
        (Some(a), Some(b)) if a == b => Presented::Key(a),
        (Some(_), Some(_)) => Presented::Ambiguous,
    }
}

/// A `permission` parameter or header that is not valid percent-encoded UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a required permission cannot be decoded")]
pub struct Undecodable;

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
fn form_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(index + 1..index + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 2;
            }
            other => out.push(other),
        }
        index += 1;
    }
    String::from_utf8(out).ok()
}

/// Every permission a forward-auth request requires: each `permission`
/// query parameter and each comma-separated entry of each
/// `X-Keymint-Permission` header. All must be granted, so whoever adds one
/// (a client, through Envoy's forwarded path or nginx's forwarded headers)
/// can only make the check stricter. `Err` when one cannot be decoded.
pub fn required_permissions(
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Vec<String>, Undecodable> {
    let mut required = Vec::new();
    for pair in query.unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(name).ok_or(Undecodable)? == "permission" {
            let value = form_decode(value).ok_or(Undecodable)?;
            if !value.is_empty() {
                required.push(value);
            }
        }
    }
    for value in headers.get_all(&X_KEYMINT_PERMISSION) {
        let value = value.to_str().map_err(|_| Undecodable)?;
        required.extend(
            value
                .split(',')
                .map(trim_ows)
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        );
    }
    Ok(required)
}

/// [`Keyring::verify`] for every permission in `required` (none: any valid key).
pub fn judge<'r>(ring: &'r Keyring, key: &str, required: &[String], now: Timestamp) -> Verdict<'r> {
    let mut verdict = ring.verify(key, required.first().map(String::as_str), now);
    if verdict.is_valid()
        && let Some(member) = verdict.member
        && !required.iter().all(|p| grants(&member.permissions, p))
    {
        verdict.reason = Reason::PermissionDenied;
    }
    verdict
}

/// The forward-auth status for a reason: 200, 403 for a valid key without
/// the permission, 401 for every other refusal.
pub fn forward_status(reason: Reason) -> StatusCode {
    match reason {
        Reason::Valid => StatusCode::OK,
        Reason::PermissionDenied => StatusCode::FORBIDDEN,
        Reason::Malformed
        | Reason::NotFound
        | Reason::Expired
        | Reason::NotYetValid
        | Reason::Revoked => StatusCode::UNAUTHORIZED,
    }
}

/// `POST /v1/verify`'s body.
#[derive(Debug, Deserialize)]
pub struct VerifyRequest {
    pub key: String,
    #[serde(default)]
    pub permission: Option<String>,
}

/// `POST /v1/verify`'s answer. Identity fields only for a valid key (and
/// the id for `PERMISSION_DENIED`, so the caller can say which key lacks it).
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse<'a> {
    pub valid: bool,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<MemberKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<&'a Issuer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<&'a str>,
}

impl<'a> VerifyResponse<'a> {
    pub fn refused(code: &'static str) -> VerifyResponse<'a> {
        VerifyResponse {
            valid: false,
            code,
            id: None,
            kind: None,
            issuer: None,
            permissions: None,
            expires_at: None,
        }
    }

    pub fn of(verdict: &Verdict<'a>) -> VerifyResponse<'a> {
        let mut response = VerifyResponse::refused(verdict.reason.code());
        match (verdict.reason, verdict.member) {
            (Reason::Valid, Some(member)) => VerifyResponse {
                valid: true,
                id: Some(&member.id),
                kind: Some(member.kind),
                issuer: Some(&member.issuer),
                permissions: Some(&member.permissions),
                expires_at: member.expires_at.as_deref(),
                ..response
            },
            (Reason::PermissionDenied, Some(member)) => {
                response.id = Some(&member.id);
                response
            }
            _ => response,
        }
    }
}

/// `namespace/name` of a member's issuer (`name` for a cluster-scoped RootKey).
pub fn issuer_text(issuer: &Issuer) -> String {
    match &issuer.namespace {
        Some(namespace) => format!("{namespace}/{}", issuer.name),
        None => issuer.name.clone(),
    }
}

fn kind_text(kind: MemberKind) -> &'static str {
    match kind {
        MemberKind::ApiKey => "APIKey",
        MemberKind::ServiceAccountKey => "ServiceAccountKey",
        MemberKind::RootKey => "RootKey",
    }
}

/// The identity headers of a valid key's forward-auth answer. A value that
/// is not a valid header value (the document allows any permission text)
/// is left out rather than mangled.
pub fn identity_headers(member: &Member) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut put = |name: HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    put(X_KEYMINT_KEY_ID, member.id.clone());
    put(X_KEYMINT_ISSUER, issuer_text(&member.issuer));
    put(X_KEYMINT_KIND, kind_text(member.kind).to_string());
    put(X_KEYMINT_PERMISSIONS, member.permissions.join(","));
    if let Some(account) = &member.issuer.service_account {
        put(X_KEYMINT_SERVICE_ACCOUNT, account.clone());
    }
    headers
}

#[derive(Clone)]
struct Shared {
    ring: RingHandle,
    metrics: Arc<VerifyMetrics>,
}

/// The verify server's routes over `ring`, counting into `metrics`.
pub fn router(ring: RingHandle, metrics: Arc<VerifyMetrics>) -> Router {
    Router::new()
        .route("/v1/verify", post(verify_json))
        .route("/v1/forward-auth", any(forward_auth))
        .route("/v1/forward-auth/", any(forward_auth))
        .route("/v1/forward-auth/{*rest}", any(forward_auth))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Shared { ring, metrics })
}

/// The benchmark's floor: the same stack answering every `POST /v1/verify`
/// with a fixed `VALID`, no ring, no parsing.
pub fn floor_router() -> Router {
    Router::new()
        .route(
            "/v1/verify",
            post(|| async {
                (
                    [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                    r#"{"valid":true,"code":"VALID"}"#,
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
}

/// Serves `app` on `address` until `shutdown` turns true.
pub async fn serve(
    address: SocketAddr,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "serving /v1/verify, /v1/forward-auth, /healthz, /readyz and /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

fn json(status: StatusCode, body: &VerifyResponse<'_>) -> Response {
    // Serialising a struct of strings cannot fail.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        bytes,
    )
        .into_response()
}

fn log_outcome(form: &'static str, verdict: &Verdict<'_>) {
    debug!(
        form,
        reason = verdict.reason.code(),
        key_id = verdict.member.map(|m| m.id.as_str()),
        "verified"
    );
}

async fn verify_json(
    State(shared): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(ring) = shared.ring.current() else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &VerifyResponse::refused(UNAVAILABLE),
        );
    };
    // The parse error is not logged or returned: serde_json's messages quote values.
    let request = match body.map(|bytes| serde_json::from_slice::<VerifyRequest>(&bytes)) {
        Ok(Ok(request)) => request,
        Ok(Err(_)) => {
            shared.metrics.verified(Reason::Malformed);
            return json(
                StatusCode::BAD_REQUEST,
                &VerifyResponse::refused(Reason::Malformed.code()),
            );
        }
        Err(rejection) => {
            shared.metrics.verified(Reason::Malformed);
            return json(
                rejection.status(),
                &VerifyResponse::refused(Reason::Malformed.code()),
            );
        }
    };
    let verdict = ring.verify(
        &request.key,
        request.permission.as_deref(),
        Timestamp::now(),
    );
    shared.metrics.verified(verdict.reason);
    log_outcome("json", &verdict);
    json(StatusCode::OK, &VerifyResponse::of(&verdict))
}

fn refusal(status: StatusCode, code: &'static str) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(X_KEYMINT_REASON, HeaderValue::from_static(code));
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

async fn forward_auth(State(shared): State<Shared>, request: Request) -> Response {
    let Some(ring) = shared.ring.current() else {
        return refusal(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE);
    };
    let headers = request.headers();
    let (key, required) = match (
        presented_key(headers),
        required_permissions(request.uri().query(), headers),
    ) {
        (Presented::Key(key), Ok(required)) => (key, required),
        (presented, _) => {
            shared.metrics.verified(Reason::Malformed);
            debug!(
                form = "forward-auth",
                reason = Reason::Malformed.code(),
                missing = presented == Presented::Missing,
                "verified"
            );
            return refusal(StatusCode::UNAUTHORIZED, Reason::Malformed.code());
        }
    };
    let verdict = judge(&ring, key, &required, Timestamp::now());
    shared.metrics.verified(verdict.reason);
    log_outcome("forward-auth", &verdict);
    match (verdict.reason, verdict.member) {
        (Reason::Valid, Some(member)) => {
            let mut response = Response::new(Body::empty());
            *response.headers_mut() = identity_headers(member);
            response
        }
        (reason, _) => refusal(forward_status(reason), reason.code()),
    }
}

async fn readyz(State(shared): State<Shared>) -> (StatusCode, &'static str) {
    if shared.ring.is_loaded() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no key ring loaded yet")
    }
}

async fn metrics_text(State(shared): State<Shared>) -> (StatusCode, String) {
    match shared.metrics.encode() {
        Ok(text) => (StatusCode::OK, text),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode metrics".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_whitespace_is_optional() {
        for value in [
            "Bearer ak_x",
            "bearer ak_x",
            "BEARER  ak_x",
            " Bearer\tak_x  ",
        ] {
            assert_eq!(
                presented_key(&headers(&[("authorization", value)])),
                Presented::Key("ak_x"),
                "{value:?}"
            );
        }
        assert_eq!(
            presented_key(&headers(&[("x-api-key", "  ak_y ")])),
            Presented::Key("ak_y")
        );
        assert_eq!(presented_key(&headers(&[])), Presented::Missing);
        // Another scheme is the upstream's business.
        assert_eq!(
            presented_key(&headers(&[("authorization", "Basic dXNlcjpwdw==")])),
            Presented::Missing
        );
        assert_eq!(
            presented_key(&headers(&[
                ("authorization", "Basic dXNlcjpwdw=="),
                ("x-api-key", "ak_y")
            ])),
            Presented::Key("ak_y")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer")])),
            Presented::Key("")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearerak_x")])),
            Presented::Missing
        );
    }

    #[test]
    fn two_different_keys_are_ambiguous() {
        assert_eq!(
            presented_key(&headers(&[
                ("authorization", "Bearer ak_x"),
                ("x-api-key", "ak_x")
            ])),
            Presented::Key("ak_x")
        );
        assert_eq!(
            presented_key(&headers(&[
                ("authorization", "Bearer ak_x"),
                ("x-api-key", "ak_y")
            ])),
            Presented::Ambiguous
        );
        assert_eq!(
            presented_key(&headers(&[("x-api-key", "ak_x"), ("x-api-key", "ak_x")])),
            Presented::Ambiguous
        );
        let mut map = HeaderMap::new();
        map.insert(
            X_API_KEY,
            HeaderValue::from_bytes(b"ak_\xff").expect("opaque"),
        );
        assert_eq!(presented_key(&map), Presented::Ambiguous);
    }

    #[test]
    fn permissions_come_from_the_query_and_the_header_and_all_count() {
        let none = headers(&[]);
        assert_eq!(required_permissions(None, &none), Ok(vec![]));
        assert_eq!(
            required_permissions(Some("a=1&permission=models%3Aread&permission=&x"), &none),
            Ok(vec!["models:read".to_string()])
        );
        assert_eq!(
            required_permissions(
                Some("permission=read"),
                &headers(&[("x-keymint-permission", "write, admin")])
            ),
            Ok(vec!["read".to_string(), "write".into(), "admin".into()])
        );
        assert_eq!(
            required_permissions(Some("permission=%zz"), &none),
            Err(Undecodable)
        );
        assert_eq!(
            required_permissions(Some("permission=%ff"), &none),
            Err(Undecodable)
        );
    }

    #[test]
    fn statuses_by_reason() {
        for reason in Reason::ALL {
            let expected = match reason {
                Reason::Valid => 200,
                Reason::PermissionDenied => 403,
                _ => 401,
            };
            assert_eq!(forward_status(reason).as_u16(), expected, "{reason:?}");
        }
    }

    fn member() -> Member {
        Member {
            id: "K1".into(),
            sha256: "0".repeat(64),
            kind: MemberKind::ServiceAccountKey,
            issuer: Issuer {
                namespace: Some("client".into()),
                name: "billing".into(),
                service_account: Some("worker".into()),
            },
            permissions: vec!["read".into(), "models:*".into()],
            not_before: "2026-01-01T00:00:00Z".into(),
            expires_at: Some("2027-01-01T00:00:00Z".into()),
            state: crate::keyring::MemberState::Current,
        }
    }

    #[test]
    fn json_shapes() {
        let member = member();
        let valid = Verdict {
            reason: Reason::Valid,
            member: Some(&member),
        };
        assert_eq!(
            serde_json::to_value(VerifyResponse::of(&valid)).expect("json"),
            serde_json::json!({
                "valid": true, "code": "VALID", "id": "K1", "kind": "ServiceAccountKey",
                "issuer": {"namespace": "client", "name": "billing", "serviceAccount": "worker"},
                "permissions": ["read", "models:*"], "expiresAt": "2027-01-01T00:00:00Z"
            })
        );
        let denied = Verdict {
            reason: Reason::PermissionDenied,
            member: Some(&member),
        };
        assert_eq!(
            serde_json::to_value(VerifyResponse::of(&denied)).expect("json"),
            serde_json::json!({"valid": false, "code": "PERMISSION_DENIED", "id": "K1"})
        );
        for reason in [Reason::Expired, Reason::Revoked, Reason::NotYetValid] {
            let refused = Verdict {
                reason,
                member: Some(&member),
            };
            assert_eq!(
                serde_json::to_value(VerifyResponse::of(&refused)).expect("json"),
                serde_json::json!({"valid": false, "code": reason.code()})
            );
        }
        let headers = identity_headers(&member);
        assert_eq!(headers[X_KEYMINT_KEY_ID], "K1");
        assert_eq!(headers[X_KEYMINT_ISSUER], "client/billing");
        assert_eq!(headers[X_KEYMINT_KIND], "ServiceAccountKey");
        assert_eq!(headers[X_KEYMINT_PERMISSIONS], "read,models:*");
        assert_eq!(headers[X_KEYMINT_SERVICE_ACCOUNT], "worker");
    }

    #[test]
    fn every_required_permission_must_be_granted() {
        let key = crate::keys::try_mint_token("ak", 256).expect("mint");
        let key = key.expose();
        let mut member = member();
        member.sha256 = crate::keys::sha256_hex(key);
        let document = crate::keyring::RingDocument::new(
            crate::keyring::RingRef {
                namespace: "svc".into(),
                name: "ring".into(),
            },
            "2026-01-01T00:00:00Z".into(),
            vec![member],
        );
        let ring = Keyring::new(document);
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().expect("time");
        let need = |list: &[&str]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(judge(&ring, key, &need(&[]), now).reason, Reason::Valid);
        assert_eq!(
            judge(&ring, key, &need(&["read", "models:x"]), now).reason,
            Reason::Valid
        );
        assert_eq!(
            judge(&ring, key, &need(&["read", "write"]), now).reason,
            Reason::PermissionDenied
        );
        assert_eq!(
            judge(&ring, "ak_nope", &need(&["read"]), now).reason,
            Reason::Malformed
        );
    }
}
