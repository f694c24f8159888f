//! The official A2A SDKs through `warden up`, used as their users use them (issue 12): the
//! agents are a2a-sdk (Python) and @a2a-js/sdk servers that `warden up` starts as the apps of
//! Strict agents, each in its SDK's own path layout (Python: JSON-RPC at `/`, REST at the root;
//! JS: `/a2a/jsonrpc` and `/a2a/rest`); the clients are the same SDKs, holding an SVID from
//! `warden ca issue`, fetching the card through the gateway and following it — no URL patched
//! by hand — over JSON-RPC and over HTTP+JSON: send, stream (incremental), get, cancel.
//!
//! Also: a client inside the mesh that fetched the card through its egress is sent back
//! through its egress (the egress's `x-warden-egress-url`, believed only from an agent's
//! identity); each agent at the root of its own host name `{agent}.{namespace}.a2a.localhost`,
//! with SNI and Host that must agree (421 otherwise); `warden status` shows both URLs; a
//! refused client sees the SDK's error naming who was refused and the rule.
//!
//! One `warden up` for the whole file (about 40 s of its run is the SDKs' clients).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::up::{start, text, wait_ready, warden};
use common::{ROGUE, curl};
use warden_testkit::process::free_addr;
use warden_testkit::sdk;

/// How long the agents' `stream` task waits between its first and last events.
const PAUSE_SECONDS: f64 = 1.0;
const CLIENT: &str = "spiffe://warden.local/ns/team-alpha/sa/sdk-client";
const CALLER_AGENT: &str = "spiffe://warden.local/ns/team-alpha/sa/caller";
const BINDINGS: [&str; 2] = ["JSONRPC", "HTTP+JSON"];

/// The mesh: two SDK agents in `sdk` (Strict, open to namespaces labelled `a2a-access: sdk`),
/// a built-in agent in team-alpha whose egress an in-mesh client uses, team-gamma refused.
fn manifests(dir: &Path, python: &Path, node: &Path, modules: &Path) -> PathBuf {
    let sources = sdk::sources();
    let agent = |name: &str, command: &Path, script: PathBuf, env: &str| {
        format!(
            "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {{name: {name}, namespace: sdk}}\n\
             spec:\n  allowedNamespaces: {{from: Selector, selector: {{matchLabels: {{a2a-access: sdk}}}}}}\n  \
             local:\n    command: {command}\n    args: [{script}]\n    \
             env: {{NAME: {name}, PAUSE: \"{PAUSE_SECONDS}\"{env}}}\n---\n",
            command = command.display(),
            script = script.display(),
        )
    };
    let mut yaml = String::from(
        "apiVersion: warden.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\n\
         spec: {trustDomain: warden.local, defaultMtlsMode: Strict, gateway: {hostDomain: a2a.localhost}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: sdk, labels: {a2a-access: sdk}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: team-alpha, labels: {a2a-access: sdk}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: team-gamma}\n---\n\
         apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: caller, namespace: team-alpha}\nspec: {}\n---\n",
    );
    yaml += &agent("py-agent", python, sources.join("python/http_agent.py"), "");
    yaml += &agent(
        "js-agent",
        node,
        sources.join("js/agent.mjs"),
        &format!(", A2A_NODE_MODULES: {}", modules.display()),
    );
    let dir = dir.join("manifests");
    std::fs::create_dir_all(&dir).expect("manifests directory");
    std::fs::write(dir.join("mesh.yaml"), yaml).expect("write manifests");
    dir
}

/// An SVID for `id` from the mesh's CA: (cert, key, bundle) paths.
fn issue(state: &Path, dir: &Path, id: &str) -> [String; 3] {
    let out_dir = dir.join(id.rsplit('/').next().unwrap_or("svid"));
    let out = warden(
        state,
        &[
            "ca",
            "issue",
            "--id",
            id,
            "--out",
            out_dir.to_str().expect("utf-8 path"),
        ],
    );
    assert!(out.status.success(), "warden ca issue: {}", text(&out));
    ["svid.pem", "svid_key.pem", "svid_bundle.pem"]
        .map(|f| out_dir.join(f).to_str().expect("utf-8 path").to_owned())
}

/// Runs an SDK program and returns the JSON object it printed.
fn run(what: &str, command: &mut Command) -> serde_json::Value {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {stdout}"))
}

/// The SDK programs, found once.
struct Sdks {
    python: PathBuf,
    node: PathBuf,
    modules: PathBuf,
}

impl Sdks {
    /// The client of `sdk` (`python` or `js`) following the card at `base` over `binding`.
    fn follow(&self, sdk: &str, base: &str, binding: &str, svid: [&str; 3]) -> serde_json::Value {
        let mut command = match sdk {
            "python" => {
                let mut c = Command::new(&self.python);
                c.arg(sdk::sources().join("python/http_client.py"));
                c
            }
            _ => {
                let mut c = Command::new(&self.node);
                c.arg(sdk::sources().join("js/client.mjs")).arg("follow");
                c.env("A2A_NODE_MODULES", &self.modules);
                c
            }
        };
        command.args([base, binding]).args(svid);
        run(
            &format!("the {sdk} client of {base} over {binding}"),
            &mut command,
        )
    }
}

/// What a client that followed the card saw: every URL under `base` (so nothing was patched and
/// it stayed where it fetched the card), and the four calls answered as the agent answers them.
fn assert_followed(seen: &serde_json::Value, base: &str, what: &str) {
    let urls = seen["urls"].as_object().expect("urls");
    assert_eq!(urls.len(), 2, "{what}: {seen}");
    for url in urls.values() {
        let url = url.as_str().unwrap_or_default();
        assert!(
            url.starts_with(base),
            "{what}: card URL {url} is not under {base}"
        );
    }
    assert_eq!(
        seen["send"]["state"], "TASK_STATE_COMPLETED",
        "{what}: {seen}"
    );
    assert_eq!(seen["send"]["artifact"], "echo: hello", "{what}: {seen}");
    assert_eq!(seen["get"]["id_matches"], true, "{what}: {seen}");
    assert_eq!(
        seen["get"]["state"], "TASK_STATE_COMPLETED",
        "{what}: {seen}"
    );
    assert_eq!(seen["cancel"], "TASK_STATE_CANCELED", "{what}: {seen}");
    // Incremental: the first events arrive long before the last one (the agent pauses between).
    let at: Vec<f64> = seen["stream"]
        .as_array()
        .expect("stream events")
        .iter()
        .filter_map(|e| e["at"].as_f64())
        .collect();
    assert!(at.len() >= 3, "{what}: stream {seen}");
    let (first, last) = (at[0], at[at.len() - 1]);
    assert!(
        last - first >= PAUSE_SECONDS * 0.7,
        "{what}: the stream arrived all at once (first {first:.3} s, last {last:.3} s)"
    );
}

/// `(status, body)` of a GET of the card at `url` with `args` (an SVID, headers …).
fn card(url: &str, args: &[&str]) -> (String, serde_json::Value) {
    let out = curl(&[args, &["-k", "-w", "\n%{http_code}", url]].concat());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        code.to_owned(),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn interface_urls(card: &serde_json::Value) -> Vec<String> {
    card["supportedInterfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["url"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a2a_sdk_agents_and_clients_work_through_warden_up_unchanged() {
    let test = "a2a_sdk_agents_and_clients_work_through_warden_up_unchanged";
    let (Some(python), Some(modules)) = (sdk::python(test), sdk::node_modules(test)) else {
        return;
    };
    let node = sdk::which("node").expect("node_modules() checked node");
    let sdks = Sdks {
        python,
        node,
        modules,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let manifests = manifests(dir.path(), &sdks.python, &sdks.node, &sdks.modules);
    let state = dir.path().join("state");
    let gateway = free_addr();
    let mut up = start(&state, &manifests, gateway);
    let status = wait_ready(&state, &mut up, 3, std::time::Duration::from_secs(60));

    status_shows_both_urls(&state, &status, gateway);
    let client = issue(&state, dir.path(), CLIENT);
    let svid = [client[0].as_str(), client[1].as_str(), client[2].as_str()];

    // Each SDK's client, each SDK's agent, each binding: through the gateway over mTLS.
    for agent in ["py-agent", "js-agent"] {
        let base = format!("https://{gateway}/api/a2a/sdk/{agent}");
        for sdk in ["python", "js"] {
            for binding in BINDINGS {
                let seen = sdks.follow(sdk, &base, binding, svid);
                assert_followed(
                    &seen,
                    &base,
                    &format!("{sdk} client → {agent} over {binding}"),
                );
            }
        }
    }

    audited_by_a2a_method(&state);
    egress_keeps_in_mesh_clients_on_their_egress(&sdks, &state, dir.path(), &status, gateway);
    host_names_route_by_sni_and_host(gateway, svid);
    // Standard discovery: the card at the root of the agent's own host, followed there (the
    // TLS server name and Host both name the agent).
    for (sdk, agent, binding) in [
        ("python", "py-agent", "JSONRPC"),
        ("js", "js-agent", "HTTP+JSON"),
    ] {
        let base = format!("https://{agent}.sdk.a2a.localhost:{}", gateway.port());
        let seen = sdks.follow(sdk, &base, binding, svid);
        assert_followed(
            &seen,
            &base,
            &format!("{sdk} client → {base} over {binding}"),
        );
    }
    refused_clients_see_who_and_which_rule(&sdks, &state, dir.path(), gateway);

    let out = Command::new("kill")
        .args(["-INT", &up.pid().to_string()])
        .status()
        .expect("kill");
    assert!(out.success());
    assert_eq!(up.wait_exit(std::time::Duration::from_secs(15)), Some(0));
}

/// `warden status` (table and JSON) gives each agent's path URL and host URL.
fn status_shows_both_urls(state: &Path, status: &serde_json::Value, gateway: SocketAddr) {
    let port = gateway.port();
    for agent in status["agents"].as_array().expect("agents") {
        let (ns, name) = (
            agent["namespace"].as_str().unwrap_or_default(),
            agent["name"].as_str().unwrap_or_default(),
        );
        assert_eq!(
            agent["gatewayUrl"],
            format!("http://{gateway}/api/a2a/{ns}/{name}/")
        );
        assert_eq!(
            agent["hostUrl"],
            format!("http://{name}.{ns}.a2a.localhost:{port}/")
        );
    }
    let table = text(&warden(state, &["status"]));
    assert!(
        table.contains(&format!(
            "url http://{gateway}/api/a2a/sdk/js-agent/   host http://js-agent.sdk.a2a.localhost:{port}/"
        )),
        "{table}"
    );
}

/// The gateway's audit log names the A2A method of every call the SDK clients made, whichever
/// binding and sub-path (`/a2a/jsonrpc`, `/a2a/rest/message:stream`, `/tasks/{id}:cancel` …).
fn audited_by_a2a_method(state: &Path) {
    let log = std::fs::read_to_string(state.join("audit.log")).expect("the gateway's audit log");
    let records: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for agent in ["sdk/py-agent", "sdk/js-agent"] {
        for method in [
            "GetAgentCard",
            "SendMessage",
            "SendStreamingMessage",
            "GetTask",
            "CancelTask",
        ] {
            let calls = records
                .iter()
                .filter(|r| {
                    r["target"] == agent
                        && r["method"] == method
                        && r["caller"] == CLIENT
                        && r["decision"] == "allow"
                })
                .count();
            // Two SDKs, two bindings (the card once per client run).
            assert!(
                calls >= 4,
                "{agent} {method}: {calls} allowed records in\n{log}"
            );
        }
    }
}

/// A client inside the mesh (an app calling through team-alpha/caller's egress, plain http)
/// gets cards pointing at its egress and follows them through it; the gateway believes the
/// egress's address only from an agent's identity.
fn egress_keeps_in_mesh_clients_on_their_egress(
    sdks: &Sdks,
    state: &Path,
    dir: &Path,
    status: &serde_json::Value,
    gateway: SocketAddr,
) {
    let egress = status["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .find(|a| a["name"] == "caller")
        .and_then(|a| a["egressAddress"].as_str())
        .expect("the caller's egress address")
        .to_owned();
    for (sdk, agent, binding) in [
        ("python", "js-agent", "JSONRPC"),
        ("js", "py-agent", "HTTP+JSON"),
    ] {
        let base = format!("http://{egress}/api/a2a/sdk/{agent}");
        let seen = sdks.follow(sdk, &base, binding, ["-", "-", "-"]);
        assert_followed(
            &seen,
            &base,
            &format!("{sdk} client via the egress → {agent}"),
        );
    }
    // They reached the gateway through the egress, as its agent (not anonymously past it).
    let log = std::fs::read_to_string(state.join("audit.log")).expect("the gateway's audit log");
    for agent in ["sdk/js-agent", "sdk/py-agent"] {
        assert!(
            log.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|r| r["target"] == agent
                    && r["caller"] == CALLER_AGENT
                    && r["method"] == "SendStreamingMessage"
                    && r["decision"] == "allow"),
            "no streamed call to {agent} as {CALLER_AGENT} in\n{log}"
        );
    }
    // The header from callers that are not a mesh egress changes nothing; from an agent's
    // identity it is believed (what the egress above relied on).
    let url = format!("https://{gateway}/api/a2a/sdk/py-agent/.well-known/agent-card.json");
    let claim = "x-warden-egress-url: http://127.0.0.1:1";
    let stranger = issue(state, dir, CLIENT);
    let agent = issue(state, dir, CALLER_AGENT);
    for (who, svid, expected) in [
        (
            "a non-agent identity",
            &stranger,
            format!("https://{gateway}/api/a2a/sdk/py-agent"),
        ),
        (
            "an agent's identity",
            &agent,
            "http://127.0.0.1:1/api/a2a/sdk/py-agent".to_owned(),
        ),
    ] {
        let (code, card) = card(&url, &["--cert", &svid[0], "--key", &svid[1], "-H", claim]);
        assert_eq!(code, "200", "{who}: {card}");
        let urls = interface_urls(&card);
        assert!(
            !urls.is_empty() && urls.iter().all(|u| u.starts_with(&expected)),
            "{who}: card URLs {urls:?}, expected under {expected}"
        );
    }
}

/// Each agent at the root of `{agent}.sdk.a2a.localhost`: the card there points at that host;
/// a request whose Host names another agent than the TLS server name is 421.
fn host_names_route_by_sni_and_host(gateway: SocketAddr, svid: [&str; 3]) {
    let port = gateway.port();
    let host = format!("js-agent.sdk.a2a.localhost:{port}");
    let resolve = format!("js-agent.sdk.a2a.localhost:{port}:{}", gateway.ip());
    let url = format!("https://{host}/.well-known/agent-card.json");
    let mtls = ["--cert", svid[0], "--key", svid[1], "--resolve", &resolve];
    let (code, card) = card(&url, &mtls);
    assert_eq!(code, "200", "{card}");
    assert_eq!(
        interface_urls(&card),
        [
            format!("https://{host}/a2a/jsonrpc"),
            format!("https://{host}/a2a/rest")
        ]
    );
    let other = format!("host: py-agent.sdk.a2a.localhost:{port}");
    let (code, refusal) = card_with(&url, &mtls, &other);
    assert_eq!(code, "421", "{refusal}");
    assert!(refusal.contains("misdirected"), "{refusal}");
}

fn card_with(url: &str, args: &[&str], header: &str) -> (String, String) {
    let out = curl(&[args, &["-k", "-H", header, "-w", "\n%{http_code}", url]].concat());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

/// team-gamma's rogue, refused by the agents' selector: each SDK's user is told the caller and
/// the rule, on the card, JSON-RPC and HTTP+JSON.
fn refused_clients_see_who_and_which_rule(
    sdks: &Sdks,
    state: &Path,
    dir: &Path,
    gateway: SocketAddr,
) {
    let rogue = issue(state, dir, ROGUE);
    let python = run(
        "the Python client as the rogue",
        Command::new(&sdks.python)
            .arg(sdk::sources().join("python/denied_client.py"))
            .arg(format!("https://{gateway}/api/a2a/sdk/py-agent"))
            .args([&rogue[0], &rogue[1]]),
    );
    let js = run(
        "the JS client as the rogue",
        Command::new(&sdks.node)
            .arg(sdk::sources().join("js/client.mjs"))
            .arg("refused")
            .arg(format!("https://{gateway}/api/a2a/sdk/js-agent"))
            .args(&rogue)
            .env("A2A_NODE_MODULES", &sdks.modules),
    );
    let seen = [("a2a-sdk", python), ("@a2a-js/sdk", js)];
    for (sdk, seen) in &seen {
        for transport in ["card", "jsonrpc", "rest"] {
            eprintln!("{sdk} {transport} refusal: {}", seen[transport]);
        }
    }
    for (sdk, seen) in &seen {
        for transport in ["card", "jsonrpc", "rest"] {
            let said = seen[transport].as_str().unwrap_or_default();
            if *sdk == "@a2a-js/sdk" && transport == "card" {
                // @a2a-js/sdk 1.3.0's card resolver reports the HTTP status alone, whatever
                // the body says; the 403 is all its user can be shown.
                assert!(said.contains("403"), "{sdk} {transport}: {said:?}");
                continue;
            }
            assert!(
                said.contains(ROGUE) && said.contains("namespace_selector"),
                "{sdk} {transport}: the SDK user sees {said:?}"
            );
        }
    }
}
