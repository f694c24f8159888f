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

/// Headers that assert a caller's identity. Whatever arrives from outside is removed before
/// the sidecar sets its own.
pub const IDENTITY_HEADERS: [&str; 3] = ["x-forwarded-client-cert", CALLER_HEADER, "x-spiffe-id"];

/// Connection-scoped headers that must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Removes identity headers and hop-by-hop headers (including those named by `Connection`).
pub fn strip_inbound_headers(headers: &mut HeaderMap) {
    for name in IDENTITY_HEADERS {
        headers.remove(name);
    }
    strip_hop_by_hop(headers);
}

/// Removes hop-by-hop headers, including those `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    // `transfer-encoding` is hop-by-hop too; hyper re-frames bodies itself.
    headers.remove(http::header::TRANSFER_ENCODING);
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

/// A JSON error response: `{"error": {"code": …, "rule": …, "message": …}}`.
pub fn json_error(status: StatusCode, rule: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": { "status": status.as_u16(), "rule": rule, "message": message }
    });
    json_response(status, &body)
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
