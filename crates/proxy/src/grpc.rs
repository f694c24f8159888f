//! gRPC calls through the proxy (the A2A gRPC binding): refusals the proxy generates become
//! gRPC statuses, and the status of a call is read back for the audit record.
//!
//! A gRPC client reads a call's outcome from `grpc-status`/`grpc-message`, not from the HTTP
//! status or a JSON body: a refusal answered in JSON reaches its user as `UNKNOWN` or
//! `INTERNAL` with no word of why. Denials are shaped at the step that refuses
//! ([`crate::http::denial_response`]); every other error the proxy generates (no route, no
//! endpoint, limits, an unreachable upstream) is reshaped here, once, for gRPC requests.

use http::{HeaderMap, Response, StatusCode};

use crate::http::{GeneratedError, ProxyBody, REFUSED_BY_HEADER, trailers_only};

/// gRPC `NOT_FOUND`.
const NOT_FOUND: u32 = 5;

/// The gRPC status for a refusal the proxy would answer with HTTP `status`: the target is
/// unknown → `NOT_FOUND`; a limit → `RESOURCE_EXHAUSTED`; the upstream cannot be reached →
/// `UNAVAILABLE` (as is a request on a connection opened for another host, 421); it did not
/// answer in time → `DEADLINE_EXCEEDED`; a malformed request →
/// `INVALID_ARGUMENT`; refusals of the caller → `UNAUTHENTICATED` / `PERMISSION_DENIED`.
pub fn status_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 3,
        401 => 16,
        403 => 7,
        404 => NOT_FOUND,
        408 | 504 => 4,
        413 | 429 | 431 => 8,
        // 421: the connection was opened for another agent's host name; retry on a new one.
        421 | 502 | 503 => 14,
        501 => 12,
        _ => 13,
    }
}

/// A response the proxy generated as an error (see [`GeneratedError`]), as the gRPC status a
/// gRPC client can read; any other response (from upstream, or already gRPC) unchanged.
pub fn reshape(response: Response<ProxyBody>) -> Response<ProxyBody> {
    if crate::http::is_grpc(response.headers()) {
        return response;
    }
    let Some(GeneratedError(message)) = response.extensions().get::<GeneratedError>() else {
        return response;
    };
    let code = status_for(response.status());
    let message = warden_a2a::denial::grpc_percent_encode(message);
    let mut shaped = trailers_only(code, &message);
    // A sidecar's refusal keeps naming its rule to the gateway in this form too.
    if let Some(rule) = response.headers().get(REFUSED_BY_HEADER) {
        shaped.headers_mut().insert(REFUSED_BY_HEADER, rule.clone());
    }
    // The audit record keeps what the refusal was in HTTP terms.
    shaped
        .extensions_mut()
        .insert(RefusedWith(response.status()));
    shaped
}

/// The HTTP status a refusal reshaped into a gRPC status had (what audit and metrics record).
#[derive(Debug, Clone, Copy)]
pub struct RefusedWith(pub StatusCode);

/// Whether a request is native gRPC, which only HTTP/2 carries (its status comes in
/// trailers); gRPC-Web (`application/grpc-web…`) is made for HTTP/1.1 and goes on as such.
pub fn needs_http2(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
}

/// The `grpc-status` in `headers` (a trailers-only response's head, or the trailers).
pub fn status_of(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::json_error;

    #[test]
    fn a_generated_error_becomes_a_trailers_only_status_naming_the_rule() {
        let shaped = reshape(json_error(
            StatusCode::NOT_FOUND,
            "unknown_target",
            "there is no agent team-beta/ghost",
        ));
        assert_eq!(shaped.status(), StatusCode::OK);
        assert_eq!(shaped.headers()["content-type"], "application/grpc");
        assert_eq!(status_of(shaped.headers()), Some(NOT_FOUND));
        assert_eq!(
            shaped.headers()["grpc-message"],
            "there is no agent team-beta/ghost (rule unknown_target)"
        );
        assert_eq!(
            shaped.extensions().get::<RefusedWith>().map(|r| r.0),
            Some(StatusCode::NOT_FOUND)
        );
    }

    #[test]
    fn a_sidecars_refusal_reshaped_still_names_its_rule_to_the_gateway() {
        let mut refused = json_error(StatusCode::BAD_GATEWAY, "app_not_owned", "held by uid 7");
        refused.headers_mut().insert(
            REFUSED_BY_HEADER,
            http::HeaderValue::from_static("app_not_owned"),
        );
        let shaped = reshape(refused);
        assert_eq!(status_of(shaped.headers()), Some(14));
        assert_eq!(shaped.headers()[REFUSED_BY_HEADER], "app_not_owned");
        assert!(crate::refused_by::is_refusal_form(&shaped));
        // A refusal that names no rule gains none.
        let plain = reshape(json_error(StatusCode::BAD_GATEWAY, "r", "m"));
        assert!(plain.headers().get(REFUSED_BY_HEADER).is_none());
    }

    #[test]
    fn limits_and_unreachable_upstreams_map_to_their_grpc_codes() {
        for (http, grpc) in [
            (413, 8),
            (429, 8),
            (421, 14),
            (502, 14),
            (503, 14),
            (504, 4),
            (400, 3),
        ] {
            let status = StatusCode::from_u16(http).expect("status");
            let shaped = reshape(json_error(status, "r", "m"));
            assert_eq!(status_of(shaped.headers()), Some(grpc), "HTTP {http}");
        }
    }

    #[test]
    fn native_grpc_needs_http2_and_grpc_web_does_not() {
        let with = |ct: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, ct.parse().expect("value"));
            needs_http2(&headers)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(with("application/grpc; charset=utf-8"));
        assert!(!with("application/grpc-web+proto"));
        assert!(!with("application/json"));
    }

    #[test]
    fn upstream_responses_are_left_alone() {
        let mut upstream = Response::new(crate::http::full("not found"));
        *upstream.status_mut() = StatusCode::NOT_FOUND;
        let passed = reshape(upstream);
        assert_eq!(passed.status(), StatusCode::NOT_FOUND);
        assert!(status_of(passed.headers()).is_none());
    }
}
