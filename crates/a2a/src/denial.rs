//! Refusals in the error shape of each A2A binding, so that an A2A SDK shows its user who was
//! refused, for what, and by which rule — instead of mistaking the refusal for another error.
//!
//! - JSON-RPC: an error object with a code A2A assigns to nothing (A2A takes −32001…−32009 —
//!   −32001 is TaskNotFound, which the JS SDK would throw as `JsonRpcTaskNotFoundError` — and
//!   JSON-RPC itself −32700 and −32600…−32603; the rest of −32000…−32099 is left to servers),
//!   the rule and the parties in `data`. Warden sends it with HTTP 403 (the status tools and
//!   `warden verify` read); the JS SDK then throws a `JsonRpcTransportError` with this message
//!   and data. a2a-sdk (Python) raises on the status before it reads any body, so the proxy
//!   also puts [`Denial::message`] in the HTTP/1.1 reason phrase, which its error text shows.
//! - HTTP+JSON: `google.rpc.Status` in the JSON mapping A2A uses (`{"error": {code, status,
//!   message, details}}`, `code` the HTTP status 403/401, `status` the canonical name
//!   `PERMISSION_DENIED` (7) or `UNAUTHENTICATED` (16)), with a `google.rpc.ErrorInfo` detail
//!   carrying the rule.
//! - gRPC: status `PERMISSION_DENIED` (7) or `UNAUTHENTICATED` (16) with the message.

use serde_json::{Value, json};

/// The JSON-RPC error code of a request the policy refused.
pub const JSONRPC_PERMISSION_DENIED: i64 = -32090;
/// The JSON-RPC error code of a request whose credentials were refused.
pub const JSONRPC_UNAUTHENTICATED: i64 = -32091;
/// The `domain` of Warden's `google.rpc.ErrorInfo` details.
pub const ERROR_DOMAIN: &str = "warden.dev";
const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The caller is known and the policy does not admit it (HTTP 403, gRPC 7).
    PermissionDenied,
    /// The caller's credentials were refused (HTTP 401, gRPC 16).
    Unauthenticated,
}

impl Refusal {
    /// The HTTP status.
    pub fn http_status(self) -> u16 {
        match self {
            Self::PermissionDenied => 403,
            Self::Unauthenticated => 401,
        }
    }

    /// The canonical gRPC code.
    pub fn grpc_code(self) -> u32 {
        match self {
            Self::PermissionDenied => 7,
            Self::Unauthenticated => 16,
        }
    }

    /// The canonical code's name.
    pub fn status_name(self) -> &'static str {
        match self {
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    fn jsonrpc_code(self) -> i64 {
        match self {
            Self::PermissionDenied => JSONRPC_PERMISSION_DENIED,
            Self::Unauthenticated => JSONRPC_UNAUTHENTICATED,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::PermissionDenied => "POLICY_DENIED",
            Self::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

/// One refused request: who, what, and why.
#[derive(Debug, Clone, Copy)]
pub struct Denial<'a> {
    /// Which kind of refusal.
    pub refusal: Refusal,
    /// The rule that refused (`namespace_selector`, `authentication`, …).
    pub rule: &'a str,
    /// The explanation of the decision.
    pub reason: &'a str,
    /// The caller: a SPIFFE ID, a JWT subject, or `anonymous`.
    pub caller: &'a str,
    /// The target agent, `namespace/name`.
    pub target: &'a str,
    /// The A2A method (or `{HTTP method} {path}`).
    pub method: &'a str,
}

impl Denial<'_> {
    /// One sentence for a person: who was refused, what, and why.
    pub fn message(&self) -> String {
        match self.refusal {
            Refusal::PermissionDenied => format!(
                "{} may not call {} on {}: {} (rule {})",
                self.caller, self.method, self.target, self.reason, self.rule
            ),
            Refusal::Unauthenticated => format!(
                "credentials refused for {} on {}: {} (rule {})",
                self.method, self.target, self.reason, self.rule
            ),
        }
    }

    fn fields(&self) -> Value {
        json!({
            "rule": self.rule,
            "caller": self.caller,
            "target": self.target,
            "method": self.method,
            "status": self.refusal.status_name(),
        })
    }

    /// The JSON-RPC response for the request with `id`.
    pub fn jsonrpc(&self, id: &Value) -> Value {
        json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": self.refusal.jsonrpc_code(),
                "message": self.message(),
                "data": self.fields(),
            }
        })
    }

    /// The HTTP+JSON error body (sent with [`Refusal::http_status`]).
    pub fn rest(&self) -> Value {
        let mut metadata = self.fields();
        if let Some(m) = metadata.as_object_mut() {
            m.remove("status");
        }
        json!({
            "error": {
                "code": self.refusal.http_status(),
                "status": self.refusal.status_name(),
                "message": self.message(),
                "details": [{
                    "@type": ERROR_INFO_TYPE,
                    "reason": self.refusal.reason(),
                    "domain": ERROR_DOMAIN,
                    "metadata": metadata,
                }],
            }
        })
    }

    /// The `grpc-status` and `grpc-message` (percent-encoded as gRPC requires) of a gRPC
    /// trailers-only response.
    pub fn grpc(&self) -> (u32, String) {
        (
            self.refusal.grpc_code(),
            grpc_percent_encode(&self.message()),
        )
    }
}

/// gRPC's `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX` (shared
/// with the proxy's other gRPC refusals, so every `grpc-message` decodes the same way).
pub fn grpc_percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rogue() -> Denial<'static> {
        Denial {
            refusal: Refusal::PermissionDenied,
            rule: "namespace_selector",
            reason: "namespace team-gamma does not match the selector",
            caller: "spiffe://warden.local/ns/team-gamma/sa/rogue",
            target: "team-beta/specialist",
            method: "SendMessage",
        }
    }

    #[test]
    fn the_jsonrpc_code_is_none_that_a2a_or_json_rpc_assign() {
        let assigned = [
            -32700, -32600, -32601, -32602, -32603, -32001, -32002, -32003, -32004, -32005, -32006,
            -32007, -32008, -32009,
        ];
        for code in [JSONRPC_PERMISSION_DENIED, JSONRPC_UNAUTHENTICATED] {
            assert!(!assigned.contains(&code));
            assert!((-32099..=-32000).contains(&code), "server error range");
        }
        let body = rogue().jsonrpc(&json!("req-1"));
        assert_eq!(body["id"], "req-1");
        assert_eq!(body["error"]["code"], JSONRPC_PERMISSION_DENIED);
        assert_eq!(body["error"]["data"]["rule"], "namespace_selector");
        assert_eq!(body["error"]["data"]["caller"], rogue().caller);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message
                .contains("team-gamma/sa/rogue may not call SendMessage on team-beta/specialist")
        );
        assert!(message.contains("rule namespace_selector"));
    }

    #[test]
    fn rest_denials_are_google_rpc_status_with_the_rule_in_error_info() {
        let body = rogue().rest();
        assert_eq!(body["error"]["code"], 403);
        assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
        let info = &body["error"]["details"][0];
        assert_eq!(info["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
        assert_eq!(info["domain"], "warden.dev");
        assert_eq!(info["metadata"]["rule"], "namespace_selector");
        assert_eq!(info["metadata"]["target"], "team-beta/specialist");
        let unauthenticated = Denial {
            refusal: Refusal::Unauthenticated,
            rule: "authentication",
            reason: "token expired",
            ..rogue()
        };
        let body = unauthenticated.rest();
        assert_eq!(body["error"]["code"], 401);
        assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("token expired")
        );
    }

    #[test]
    fn grpc_denials_carry_the_canonical_code_and_an_encoded_message() {
        let (code, message) = rogue().grpc();
        assert_eq!(code, 7);
        assert!(message.contains("may not call SendMessage"));
        let odd = Denial {
            refusal: Refusal::Unauthenticated,
            reason: "100% wrong\nüber",
            ..rogue()
        };
        let (code, message) = odd.grpc();
        assert_eq!(code, 16);
        assert!(message.contains("100%25 wrong%0A%C3%BCber"), "{message}");
    }
}
