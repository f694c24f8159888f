//! What Warden knows of the A2A protocol: enough to authorize and audit a call and to point
//! an agent card at the gateway.
//!
//! - [`jsonrpc_call`]: the method (1.0 `SendMessage` or 0.3 `message/send`, reported by its
//!   1.0 name), id, task and context of a JSON-RPC request body;
//! - [`rest_method`]: the method of an HTTP+JSON binding route (`message:send`, `tasks/{id}`…);
//! - [`card`]: a card's interfaces, and the card with each interface pointed at the gateway
//!   keeping its own path, binding, version and tenant;
//! - [`classify`]: the A2A method of a request from its path under the agent's interfaces
//!   (JSON-RPC, HTTP+JSON route, gRPC path);
//! - [`denial`]: refusals in each binding's own error shape, naming the rule;
//! - [`host`]: `{agent}.{namespace}.{domain}` host names for routing by host;
//! - [`echo`]: the built-in echo agent.

pub mod card;
pub mod classify;
pub mod denial;
pub mod echo;
pub mod host;
mod jsonrpc;

use serde_json::Value;

/// A2A 1.0 method names (as the 1.0 SDKs send them over JSON-RPC and gRPC) with the other
/// names of the same method: 0.3 JSON-RPC, 0.3 gRPC, and earlier 1.0 drafts.
const METHODS: [(&str, &[&str]); 11] = [
    ("SendMessage", &["message/send"]),
    ("SendStreamingMessage", &["message/stream"]),
    ("GetTask", &["tasks/get"]),
    ("ListTasks", &["tasks/list"]),
    ("CancelTask", &["tasks/cancel"]),
    (
        "SubscribeToTask",
        &["tasks/resubscribe", "TaskSubscription"],
    ),
    (
        "CreateTaskPushNotificationConfig",
        &[
            "tasks/pushNotificationConfig/set",
            "SetTaskPushNotificationConfig",
        ],
    ),
    (
        "GetTaskPushNotificationConfig",
        &["tasks/pushNotificationConfig/get"],
    ),
    (
        "ListTaskPushNotificationConfigs",
        &[
            "tasks/pushNotificationConfig/list",
            "ListTaskPushNotificationConfig",
        ],
    ),
    (
        "DeleteTaskPushNotificationConfig",
        &["tasks/pushNotificationConfig/delete"],
    ),
    (
        "GetExtendedAgentCard",
        // 0.3's gRPC `GetAgentCard` is a call to the agent, not the public card route.
        &["agent/getAuthenticatedExtendedCard", "GetAgentCard"],
    ),
];

/// The 1.0 name of a method given by any of its names; `None` when it is not an A2A method.
pub fn canonical_method(name: &str) -> Option<&'static str> {
    METHODS
        .iter()
        .find(|(v1, others)| *v1 == name || others.contains(&name))
        .map(|(v1, _)| *v1)
}

/// What a JSON-RPC request says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The 1.0 method name, or the name as sent when it is not an A2A method.
    pub method: String,
    /// The JSON-RPC id (for error responses).
    pub id: Value,
    /// The task the call is about, when visible.
    pub task_id: Option<String>,
    /// The context the call is in, when visible.
    pub context_id: Option<String>,
}

/// Reads a JSON-RPC 2.0 request body; `None` when the body is not one.
pub fn jsonrpc_call(body: &[u8]) -> Option<Call> {
    jsonrpc::read(body)
}

/// The method of an HTTP+JSON binding request at `path` (relative to the agent's root, with
/// or without the `v1/` prefix), and the task id in the path when there is one.
pub fn rest_method(http_method: &str, path: &str) -> Option<(&'static str, Option<String>)> {
    let path = path.trim_start_matches('/');
    let path = path.strip_prefix("v1/").unwrap_or(path);
    match (http_method, path) {
        ("POST", "message:send") => return Some(("SendMessage", None)),
        ("POST", "message:stream") => return Some(("SendStreamingMessage", None)),
        ("GET", "tasks") => return Some(("ListTasks", None)),
        ("GET", "card" | "extendedAgentCard") => return Some(("GetExtendedAgentCard", None)),
        _ => {}
    }
    let rest = path.strip_prefix("tasks/")?;
    let (task, action) = match rest.split_once(':') {
        Some((task, action)) => (task, Some(action)),
        None => match rest.split_once('/') {
            Some((task, _)) => (task, Some("pushNotificationConfigs")),
            None => (rest, None),
        },
    };
    let method = match (http_method, action) {
        ("GET", None) => "GetTask",
        ("POST", Some("cancel")) => "CancelTask",
        ("POST" | "GET", Some("subscribe")) => "SubscribeToTask",
        ("POST", Some("pushNotificationConfigs")) => "CreateTaskPushNotificationConfig",
        ("GET", Some("pushNotificationConfigs")) => "GetTaskPushNotificationConfig",
        ("DELETE", Some("pushNotificationConfigs")) => "DeleteTaskPushNotificationConfig",
        _ => return None,
    };
    Some((method, Some(task.to_owned())))
}

/// Points every interface URL of `card` at `base` (the agent's root at the gateway), each
/// keeping its own path; see [`card::rewrite_card`]. Returns how many URLs were rewritten.
pub fn rewrite_card(card: &mut Value, base: &str) -> usize {
    card::rewrite_card(
        card,
        &card::GatewayUrls {
            base: base.to_owned(),
            grpc_authority: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonrpc_methods_of_both_versions_are_reported_by_their_1_0_name() {
        let v03 = br#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"contextId":"c1","taskId":"t1","parts":[]}}}"#;
        let call = jsonrpc_call(v03).unwrap();
        assert_eq!(call.method, "SendMessage");
        assert_eq!(call.id, serde_json::json!(1));
        assert_eq!(call.task_id.as_deref(), Some("t1"));
        assert_eq!(call.context_id.as_deref(), Some("c1"));
        let v1 = br#"{"jsonrpc":"2.0","id":"a","method":"GetTask","params":{"id":"t9"}}"#;
        let call = jsonrpc_call(v1).unwrap();
        assert_eq!(
            (call.method.as_str(), call.task_id.as_deref()),
            ("GetTask", Some("t9"))
        );
        assert_eq!(
            jsonrpc_call(br#"{"jsonrpc":"2.0","id":1,"method":"custom/x"}"#)
                .unwrap()
                .method,
            "custom/x"
        );
        assert!(jsonrpc_call(b"not json").is_none());
        assert!(jsonrpc_call(br#"{"id":1,"method":"message/send"}"#).is_none());
    }

    #[test]
    fn rest_routes_map_to_methods() {
        let cases = [
            ("POST", "/v1/message:send", Some(("SendMessage", None))),
            (
                "POST",
                "message:stream",
                Some(("SendStreamingMessage", None)),
            ),
            ("GET", "/v1/tasks/t1", Some(("GetTask", Some("t1")))),
            ("POST", "/tasks/t1:cancel", Some(("CancelTask", Some("t1")))),
            (
                "GET",
                "/v1/tasks/t1:subscribe",
                Some(("SubscribeToTask", Some("t1"))),
            ),
            ("GET", "/v1/tasks", Some(("ListTasks", None))),
            ("DELETE", "/v1/tasks/t1:cancel", None),
            ("GET", "/somewhere", None),
        ];
        for (m, p, want) in cases {
            let got = rest_method(m, p);
            assert_eq!(
                got.as_ref().map(|(a, b)| (*a, b.as_deref())),
                want,
                "{m} {p}"
            );
        }
    }

    #[test]
    fn every_interface_url_points_at_the_gateway() {
        let mut card = serde_json::json!({
            "name": "specialist",
            "url": "http://10.0.0.7:8080/",
            "additionalInterfaces": [{"url": "http://10.0.0.7:8080/", "transport": "JSONRPC"}, {"url": "http://10.0.0.7:8081/v1", "transport": "HTTP+JSON"}],
            "supportedInterfaces": [{"url": "grpc://10.0.0.7:9000", "protocolBinding": "GRPC"}]
        });
        let base = "http://127.0.0.1:8083/api/a2a/team-beta/specialist/";
        assert_eq!(rewrite_card(&mut card, base), 4);
        assert!(!card.to_string().contains("10.0.0.7"));
        assert_eq!(card["name"], "specialist");
    }
}
