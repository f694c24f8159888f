//! `warden agent echo` as a real process, called with curl.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use warden_testkit::process::{Running, free_addr, wait_listening};

fn rpc(addr: std::net::SocketAddr, body: &str, extra: &[&str]) -> serde_json::Value {
    let url = format!("http://{addr}/");
    let mut args = vec!["-H", "content-type: application/json", "-d", body];
    args.extend(extra);
    args.push(&url);
    let out = curl(&args);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn echo_agent_names_its_caller_and_speaks_both_protocol_versions() {
    let addr = free_addr();
    let _agent = Running(
        Command::new(WARDEN)
            .args([
                "agent",
                "echo",
                "--listen",
                &addr.to_string(),
                "--name",
                "specialist",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(addr, Duration::from_secs(10));
    let card: serde_json::Value = serde_json::from_slice(
        &curl(&[&format!("http://{addr}/.well-known/agent-card.json")]).stdout,
    )
    .unwrap();
    assert_eq!(card["name"], "specialist");
    assert_eq!(card["capabilities"]["streaming"], true);

    let xfcc = format!("x-forwarded-client-cert: By={SPECIALIST};URI={ORCHESTRATOR}");
    let send = r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"role":"user","messageId":"m1","contextId":"c1","parts":[{"kind":"text","text":"hello"}]}}}"#;
    let reply = rpc(addr, send, &["-H", &xfcc, "-H", "X-Delegation-Token: t"]);
    let result = &reply["result"];
    assert_eq!(result["metadata"]["caller"], ORCHESTRATOR);
    assert_eq!(
        result["metadata"]["delegationHeaders"],
        serde_json::json!(["x-delegation-token"])
    );
    assert!(
        result["parts"][0]["text"]
            .as_str()
            .unwrap()
            .contains("hello")
    );
    let task_id = result["taskId"].as_str().unwrap().to_owned();

    // 0.3 names work too; without XFCC the caller is anonymous.
    let v03 = send.replace("\"SendMessage\"", "\"message/send\"");
    assert_eq!(
        rpc(addr, &v03, &[])["result"]["metadata"]["caller"],
        "anonymous"
    );
    let get =
        format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tasks/get","params":{{"id":"{task_id}"}}}}"#);
    assert_eq!(
        rpc(addr, &get, &[])["result"]["status"]["state"],
        "completed"
    );
    let cancel = format!(
        r#"{{"jsonrpc":"2.0","id":3,"method":"CancelTask","params":{{"id":"{task_id}"}}}}"#
    );
    assert_eq!(rpc(addr, &cancel, &[])["error"]["code"], -32002);
    assert_eq!(
        rpc(addr, r#"{"jsonrpc":"2.0","id":4,"method":"Nope"}"#, &[])["error"]["code"],
        -32601
    );

    // Streaming: SSE with a status update, then the reply.
    let stream = send.replace("\"SendMessage\"", "\"SendStreamingMessage\"");
    let out = curl(&[
        "-N",
        "-H",
        "content-type: application/json",
        "-d",
        &stream,
        &format!("http://{addr}/"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let events: Vec<&str> = text.lines().filter(|l| l.starts_with("data: ")).collect();
    assert_eq!(events.len(), 2, "{text}");
    assert!(events[0].contains("status-update") && events[1].contains("echoes: hello"));
}
