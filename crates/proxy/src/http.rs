//! HTTP pieces shared by the sidecar's listeners: the body type, identity and hop-by-hop
//! header handling, XFCC, and the JSON / JSON-RPC denial responses.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use warden_identity::SpiffeId;

/// An error inside a streamed body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the proxy produces: streamed from upstream or generated.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// The header a gateway hop uses to forward the caller it verified. Trusted only from
/// configured gateway identities; removed from every other request.
pub const CALLER_HEADER: &str = "x-warden-caller";

/// The header an egress tells the gateway its own address in (`http://127.0.0.1:15001`, as its
/// app reached it), so that cards fetched through the egress send the app back through it.
/// Believed only from a mesh egress identity (see `pipeline::card`); removed from every
/// request by admission.
pub const EGRESS_URL_HEADER: &str = "x-warden-egress-url";

/// The header a sidecar names its own refusal of an allowed request in (`app_not_owned`, on
/// a 502 or a gRPC caller's trailers-only error status), so that the gateway's audit record
/// of the call says why it failed. Read by the gateway of those forms only, and removed there;
/// the app's own header of this name on those forms is dropped (see `refused_by`).
pub const REFUSED_BY_HEADER: &str = "x-warden-refused-by";

const XFCC: &str = "x-forwarded-client-cert";

/// The header the sidecar tells its app the verified caller in (Envoy's XFCC format).
pub static XFCC_HEADER: HeaderName = HeaderName::from_static(XFCC);

/// Headers that assert a caller's identity. Whatever arrives from outside is removed before
/// the sidecar sets its own.
pub static IDENTITY_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static(XFCC),
    HeaderName::from_static(CALLER_HEADER),
    HeaderName::from_static("x-spiffe-id"),
];

/// Connection-scoped headers that must not be forwarded (RFC 9110 §7.6.1); hyper re-frames
/// bodies itself, so `transfer-encoding` goes too.
static HOP_BY_HOP: [HeaderName; 9] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
    http::header::TRANSFER_ENCODING,
];

/// Removes identity headers and hop-by-hop headers (including those named by `Connection`).
pub fn strip_inbound_headers(headers: &mut HeaderMap) {
    // The common request carries none of them: one pass over its few names instead of a
    // hash lookup per listed header.
    if !headers.keys().any(|k| IDENTITY_HEADERS.contains(k)) {
        return strip_hop_by_hop(headers);
    }
    for name in &IDENTITY_HEADERS {
        headers.remove(name);
    }
    strip_hop_by_hop(headers);
}

/// Removes hop-by-hop headers, including those `Connection` names — except `te: trailers`,
/// which HTTP/2 allows end to end and gRPC servers require (a request without it is refused).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let te_trailers = headers
        .get(http::header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The `x-forwarded-client-cert` value for a verified caller, in Envoy's format:
/// `By=<this workload>;Hash=<sha256 of the peer leaf>;URI=<caller>`. `hash` is absent when the
/// caller was forwarded by a gateway (the certificate presented was the gateway's).
pub fn xfcc(by: &SpiffeId, hash: Option<&str>, caller: &SpiffeId) -> Option<HeaderValue> {
    let value = match hash {
        Some(hash) => format!("By={by};Hash={hash};URI={caller}"),
        None => format!("By={by};URI={caller}"),
    };
    HeaderValue::from_str(&value).ok()
}

/// A generated body.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Marks a response the proxy generated as an error (not one from upstream), with its
/// message, so that a gRPC caller can be answered with a gRPC status instead
/// (`crate::grpc::reshape`).
#[derive(Debug, Clone)]
pub struct GeneratedError(pub String);

/// Whether the peer itself answered `response` (over the connection, mTLS proving the expected
/// ID when there was one): not an error this process made up because there was no answer
/// (refused connect, failed handshake, timeout). What attests a sidecar whose app has no card.
pub fn answered_by_peer<B>(response: &Response<B>) -> bool {
    response.extensions().get::<GeneratedError>().is_none()
}

/// A JSON error response: `{"error": {"code": …, "rule": …, "message": …}}`.
pub fn json_error(status: StatusCode, rule: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": { "status": status.as_u16(), "rule": rule, "message": message }
    });
    let mut response = json_response(status, &body);
    response
        .extensions_mut()
        .insert(GeneratedError(format!("{message} (rule {rule})")));
    response
}

/// A JSON-RPC 2.0 error object for request `id`, with the HTTP status kept.
pub fn jsonrpc_error(
    status: StatusCode,
    id: serde_json::Value,
    rule: &str,
    message: &str,
) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": -32001, "message": message, "data": { "rule": rule, "status": status.as_u16() } }
    });
    json_response(status, &body)
}

/// A refusal in the shape of the request's binding (see `warden_a2a::denial`): a gRPC
/// trailers-only response with the canonical status, a JSON-RPC error object for request
/// `jsonrpc_id`, or a `google.rpc.Status` body; HTTP 403/401 for the last two.
pub fn denial_response(
    denial: &warden_a2a::denial::Denial<'_>,
    jsonrpc_id: Option<&serde_json::Value>,
    grpc: bool,
) -> Response<ProxyBody> {
    let status =
        StatusCode::from_u16(denial.refusal.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    if grpc {
        let (code, message) = denial.grpc();
        return trailers_only(code, &message);
    }
    let mut response = match jsonrpc_id {
        Some(id) => json_response(status, &denial.jsonrpc(id)),
        None => json_response(status, &denial.rest()),
    };
    // HTTP/1.1 clients that report only the status line (a2a-sdk raises on a 403 before it
    // reads the body) still tell their user who was refused and why.
    if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason_phrase(status, &denial.message()))
    {
        response.extensions_mut().insert(phrase);
    }
    response
}

/// A gRPC trailers-only response (HTTP 200, `content-type: application/grpc`, no body): the
/// shape gRPC clients read a call's failure from. `message` is already percent-encoded.
pub fn trailers_only(code: u32, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(message) = HeaderValue::from_str(message) {
        headers.insert("grpc-message", message);
    }
    response
}

/// `Forbidden: {message}` as a reason phrase: printable ASCII, at most 300 bytes.
fn reason_phrase(status: StatusCode, message: &str) -> Vec<u8> {
    let mut phrase = format!("{}: ", status.canonical_reason().unwrap_or("Refused")).into_bytes();
    phrase.extend(
        message
            .bytes()
            .map(|b| if (0x20..0x7f).contains(&b) { b } else { b'?' })
            .take(300),
    );
    phrase
}

/// Whether a request is a gRPC call (its refusals must be gRPC statuses).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The `id` of a JSON-RPC 2.0 request body, or `None` when the body is not one.
pub fn jsonrpc_id(body: &[u8]) -> Option<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    (value.get("jsonrpc")? == "2.0")
        .then(|| value.get("id").cloned().unwrap_or(serde_json::Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    HeaderName::from_bytes(n.as_bytes()).expect("test header name"),
                    HeaderValue::from_str(v).expect("test header value"),
                )
            })
            .collect()
    }

    fn names(map: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn each_identity_header_is_removed_even_alone() {
        for spoofed in ["x-forwarded-client-cert", "x-warden-caller", "x-spiffe-id"] {
            let mut map = headers(&[("content-type", "application/json"), (spoofed, "x")]);
            strip_inbound_headers(&mut map);
            assert_eq!(names(&map), ["content-type"], "{spoofed} must not pass");
        }
    }

    #[test]
    fn each_hop_by_hop_header_is_removed_even_alone() {
        for hop in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "upgrade",
            "transfer-encoding",
        ] {
            let mut map = headers(&[("accept", "*/*"), (hop, "x")]);
            strip_hop_by_hop(&mut map);
            assert_eq!(names(&map), ["accept"], "{hop} must not pass");
        }
    }

    #[test]
    fn te_trailers_is_kept_for_grpc_and_any_other_te_removed() {
        let mut map = headers(&[("te", "trailers"), ("content-type", "application/grpc")]);
        strip_inbound_headers(&mut map);
        assert_eq!(map[http::header::TE], "trailers");
        let mut map = headers(&[("te", "gzip, trailers")]);
        strip_inbound_headers(&mut map);
        assert!(map.is_empty(), "{map:?}");
    }

    #[test]
    fn headers_named_by_connection_are_removed_and_the_rest_kept() {
        let mut map = headers(&[
            ("connection", "x-session, Keep-Alive"),
            ("x-session", "abc"),
            ("keep-alive", "timeout=5"),
            ("x-request-id", "r1"),
            ("host", "a.example"),
        ]);
        strip_inbound_headers(&mut map);
        assert_eq!(names(&map), ["host", "x-request-id"]);
    }

    #[test]
    fn ordinary_requests_are_left_untouched() {
        let mut map = headers(&[
            ("host", "a.example"),
            ("content-type", "application/json"),
            ("content-length", "12"),
            ("authorization", "Bearer t"),
        ]);
        let before = map.clone();
        strip_inbound_headers(&mut map);
        assert_eq!(map, before);
    }
}
