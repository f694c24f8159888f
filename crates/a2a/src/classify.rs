//! Which A2A call a request is, from where it arrives under the agent's interfaces.
//!
//! The gateway forwards every path under an agent; to authorize and audit it needs the A2A
//! method. The agent's card says where each binding lives ([`crate::card::interfaces`]), so a
//! request is classified by the interface whose path is the longest prefix of the request's:
//! under a JSON-RPC interface a POST to the interface itself carries its method in the body
//! (read by [`crate::jsonrpc_call`]); under an HTTP+JSON interface the rest of the path is a
//! REST route (after the interface's tenant, when it has one); a gRPC request names its method
//! in the path (`/lf.a2a.v1.A2AService/SendMessage`) whatever the interfaces say. Without a card
//! the agent's root is taken as both a JSON-RPC and an HTTP+JSON interface.

use crate::card::{Binding, Interface};
use crate::{canonical_method, rest_method};

/// What a request is, as far as its path and HTTP method tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// A JSON-RPC POST: the method is in the body.
    JsonRpc,
    /// An HTTP+JSON route, with the task id in the path when there is one.
    Rest {
        /// The 1.0 method name.
        method: &'static str,
        /// The task in the path.
        task_id: Option<String>,
    },
    /// A gRPC call of the A2A service.
    Grpc {
        /// The 1.0 method name.
        method: &'static str,
    },
    /// Nothing A2A knows: authorized and audited as `{HTTP method} {path}`.
    Other,
}

/// The gRPC services of the A2A binding: 1.0 and 0.3.
const GRPC_SERVICES: [&str; 2] = ["lf.a2a.v1.A2AService", "a2a.v1.A2AService"];

/// The method of an A2A gRPC path (`/lf.a2a.v1.A2AService/SendMessage`, 0.3
/// `/a2a.v1.A2AService/TaskSubscription`), by its 1.0 name.
pub fn grpc_method(path: &str) -> Option<&'static str> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if !GRPC_SERVICES.contains(&service) {
        return None;
    }
    canonical_method(method)
}

/// Classifies a request for `path` (relative to the agent's root, with or without a leading
/// `/`) by the agent's `interfaces` (empty when its card is unknown).
pub fn classify(interfaces: &[Interface], http_method: &str, path: &str) -> Classified {
    let path = format!("/{}", path.trim_start_matches('/'));
    if let Some(method) = grpc_method(&path) {
        return Classified::Grpc { method };
    }
    let root = [
        Interface {
            binding: Binding::JsonRpc,
            path: String::new(),
            tenant: None,
        },
        Interface {
            binding: Binding::HttpJson,
            path: String::new(),
            tenant: None,
        },
    ];
    let interfaces = if interfaces.is_empty() {
        &root[..]
    } else {
        interfaces
    };
    let mut best: Option<(&Interface, &str)> = None;
    for interface in interfaces {
        if let Some(rest) = under(&path, &interface.path)
            && best.is_none_or(|(b, _)| interface.path.len() > b.path.len())
        {
            best = Some((interface, rest));
        }
    }
    let Some((interface, rest)) = best else {
        return Classified::Other;
    };
    // Several interfaces may share a path: JSON-RPC takes a POST to the path itself.
    let jsonrpc_here = interfaces
        .iter()
        .any(|i| i.binding == Binding::JsonRpc && i.path == interface.path);
    if http_method == "POST" && rest.trim_matches('/').is_empty() && jsonrpc_here {
        return Classified::JsonRpc;
    }
    let rest_here = interfaces
        .iter()
        .filter(|i| i.binding == Binding::HttpJson && i.path == interface.path);
    for rest_interface in rest_here {
        if let Some((method, task_id)) = rest_route(http_method, rest, rest_interface) {
            return Classified::Rest { method, task_id };
        }
    }
    Classified::Other
}

/// The rest of `path` when it lies under `prefix` (segment-wise), starting with `/` or empty.
fn under<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// A REST route after an interface's path, with its tenant first when it names one.
fn rest_route(
    http_method: &str,
    rest: &str,
    interface: &Interface,
) -> Option<(&'static str, Option<String>)> {
    let rest = rest.trim_start_matches('/');
    match &interface.tenant {
        Some(tenant) => {
            let rest = rest.strip_prefix(tenant.as_str())?.strip_prefix('/')?;
            rest_method(http_method, rest)
        }
        None => rest_method(http_method, rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::interfaces;
    use serde_json::json;

    fn rest(method: &'static str, task: Option<&str>) -> Classified {
        Classified::Rest {
            method,
            task_id: task.map(str::to_owned),
        }
    }

    #[test]
    fn requests_under_the_js_sample_layout_are_classified_by_their_interface() {
        let card = json!({"supportedInterfaces": [
            {"url": "http://a:1/a2a/jsonrpc", "protocolBinding": "JSONRPC"},
            {"url": "http://a:1/a2a/rest", "protocolBinding": "HTTP+JSON"}
        ]});
        let found = interfaces(&card);
        let cases = [
            ("POST", "a2a/jsonrpc", Classified::JsonRpc),
            ("POST", "/a2a/jsonrpc/", Classified::JsonRpc),
            ("POST", "a2a/rest/message:send", rest("SendMessage", None)),
            (
                "POST",
                "a2a/rest/v1/message:stream",
                rest("SendStreamingMessage", None),
            ),
            ("GET", "a2a/rest/tasks/t1", rest("GetTask", Some("t1"))),
            (
                "POST",
                "a2a/rest/tasks/t1:cancel",
                rest("CancelTask", Some("t1")),
            ),
            ("POST", "a2a/jsonrpcx", Classified::Other),
            ("POST", "", Classified::Other),
            ("GET", "a2a/rest/nothing", Classified::Other),
        ];
        for (method, path, want) in cases {
            assert_eq!(classify(&found, method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn without_a_card_the_root_speaks_json_rpc_and_rest() {
        assert_eq!(classify(&[], "POST", ""), Classified::JsonRpc);
        assert_eq!(classify(&[], "POST", "/"), Classified::JsonRpc);
        assert_eq!(
            classify(&[], "POST", "v1/message:send"),
            rest("SendMessage", None)
        );
        assert_eq!(classify(&[], "GET", "elsewhere"), Classified::Other);
    }

    #[test]
    fn a_tenant_interface_expects_its_tenant_first() {
        let card = json!({"supportedInterfaces": [
            {"url": "http://a:1/api", "protocolBinding": "HTTP+JSON", "tenant": "acme"}
        ]});
        let found = interfaces(&card);
        assert_eq!(
            classify(&found, "POST", "api/acme/message:send"),
            rest("SendMessage", None)
        );
        assert_eq!(
            classify(&found, "POST", "api/message:send"),
            Classified::Other
        );
    }

    #[test]
    fn grpc_paths_name_their_method_in_both_versions() {
        let cases = [
            ("/lf.a2a.v1.A2AService/SendMessage", Some("SendMessage")),
            (
                "/lf.a2a.v1.A2AService/SendStreamingMessage",
                Some("SendStreamingMessage"),
            ),
            (
                "/lf.a2a.v1.A2AService/SubscribeToTask",
                Some("SubscribeToTask"),
            ),
            (
                "/lf.a2a.v1.A2AService/GetExtendedAgentCard",
                Some("GetExtendedAgentCard"),
            ),
            (
                "/a2a.v1.A2AService/TaskSubscription",
                Some("SubscribeToTask"),
            ),
            ("/a2a.v1.A2AService/GetTask", Some("GetTask")),
            ("/a2a.v1.A2AService/Nope", None),
            ("/other.Service/SendMessage", None),
            ("/SendMessage", None),
        ];
        for (path, want) in cases {
            assert_eq!(grpc_method(path), want, "{path}");
        }
        assert_eq!(
            classify(&[], "POST", "lf.a2a.v1.A2AService/CancelTask"),
            Classified::Grpc {
                method: "CancelTask"
            }
        );
    }
}
