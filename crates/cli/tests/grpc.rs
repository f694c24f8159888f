//! The A2A gRPC binding through Warden (issue 12.4): a2a-sdk's own gRPC server behind
//! `warden sidecar` (Strict) and `warden gateway`, called by a2a-sdk's gRPC client holding an
//! SVID from `warden ca issue`, which fetches the card and follows it — real processes, HTTP/2
//! with ALPN over mTLS from client to gateway and gateway to sidecar, h2c to the app.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use warden_testkit::process::{Running, free_addr, log_tail, spawn_logged, wait_listening};

/// How long the agent holds a streamed task open between its `working` event and the end.
const PAUSE_SECS: f64 = 1.5;

/// `warden ca` with `args`, which must succeed.
fn warden_ca(args: &[&str]) {
    let out = Command::new(WARDEN).arg("ca").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "warden ca {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Warden CA for warden.local and SVIDs issued by it (`warden ca issue`).
struct Identities {
    dir: tempfile::TempDir,
}

impl Identities {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        warden_ca(&["init", "--dir", ca.to_str().unwrap()]);
        let this = Self { dir };
        for (name, id) in [
            ("specialist", SPECIALIST),
            ("orchestrator", ORCHESTRATOR),
            ("rogue", ROGUE),
        ] {
            let out = this.svid(name);
            warden_ca(&[
                "issue",
                "--dir",
                ca.to_str().unwrap(),
                "--id",
                id,
                "--out",
                out.to_str().unwrap(),
            ]);
        }
        this.gateway_svid(&ca);
        this
    }

    fn svid(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-svid"))
    }

    fn file(&self, name: &str, file: &str) -> String {
        self.svid(name).join(file).display().to_string()
    }

    /// The gateway's SVID, with the agents' host names beside its SPIFFE ID (`--dns`): gRPC
    /// clients (grpcio) always check the host name, with no way to turn that off.
    fn gateway_svid(&self, ca: &Path) {
        let out = self.svid("gateway");
        warden_ca(&[
            "issue",
            "--dir",
            ca.to_str().unwrap(),
            "--id",
            GATEWAY,
            "--dns",
            "*.team-beta.a2a.localhost",
            "--out",
            out.to_str().unwrap(),
        ]);
    }
}

/// The example mesh, the specialist serving a static card whose one interface is gRPC.
fn mesh_edit(app: &str) -> impl Fn(&str) -> String {
    let card = format!(
        "  card:\n    name: grpc-specialist\n    description: a2a-sdk gRPC agent\n    version: 1.0.0\n    \
         supportedInterfaces:\n      - url: \"{app}\"\n        protocolBinding: GRPC\n        protocolVersion: \"1.0\"\n    \
         capabilities:\n      streaming: true\n    defaultInputModes: [text/plain]\n    defaultOutputModes: [text/plain]\n    \
         skills:\n      - id: echo\n        name: echo\n        description: echoes\n        tags: [echo]\n"
    );
    move |text: &str| {
        text.replace(
            "  description: Answers questions about invoices.\n",
            &format!("  description: Answers questions about invoices.\n{card}"),
        )
    }
}

/// How the gRPC client reaches the gateway.
#[derive(Clone, Copy)]
enum Caller {
    /// mTLS with this workload's SVID.
    Svid(&'static str),
    /// TLS without a client certificate.
    NoCertificate,
    /// h2c with prior knowledge, no TLS.
    Plaintext,
}

struct Mesh {
    ids: Identities,
    _agent: Running,
    sidecar: Sidecar,
    _gateway: Running,
    gateway: std::net::SocketAddr,
    audit: PathBuf,
    python: PathBuf,
    egress: Option<Sidecar>,
}

impl Mesh {
    /// The mesh with the app held by the uid the sidecar expects (this test's).
    fn start(python: PathBuf) -> Self {
        // The app is this test's: h2c to it goes through the `--app-uid` check too.
        let me = warden_local::users::OsUser::current().uid;
        Self::start_with_app_uid(python, me)
    }

    /// The mesh with the specialist's sidecar using the app only while `app_uid` holds its
    /// port.
    fn start_with_app_uid(python: PathBuf, app_uid: u32) -> Self {
        let ids = Identities::new();
        let dir = ids.dir.path().to_owned();
        let app = free_addr();
        let script = warden_testkit::sdk::sources().join("python/grpc_agent.py");
        let agent_log = dir.join("agent.log");
        let agent = spawn_logged(
            Command::new(&python)
                .arg(script)
                .arg(app.to_string())
                .arg(PAUSE_SECS.to_string()),
            &agent_log,
        );
        wait_listening(app, Duration::from_secs(20));
        let snapshot = dir.join("snapshot.json");
        compile_example(&snapshot, mesh_edit(&app.to_string()));
        let snap = snapshot.to_str().unwrap();
        let app_uid = app_uid.to_string();
        let sidecar = start_sidecar(
            &ids.svid("specialist"),
            app,
            &[
                "--snapshot",
                snap,
                "--agent",
                "team-beta/specialist",
                "--app-uid",
                &app_uid,
            ],
        );
        let gateway = free_addr();
        let audit = dir.join("audit.log");
        let child = Command::new(WARDEN)
            .args(["gateway", "--listen", &gateway.to_string()])
            .args(["--admin", &free_addr().to_string(), "--snapshot", snap])
            .args(["--svid-dir", ids.svid("gateway").to_str().unwrap()])
            .args([
                "--endpoint",
                &format!("team-beta/specialist={}", sidecar.inbound),
            ])
            .args(["--audit-log", audit.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let gateway_process = Running(child);
        wait_listening(gateway, Duration::from_secs(10));
        Mesh {
            ids,
            _agent: agent,
            sidecar,
            _gateway: gateway_process,
            gateway,
            audit,
            python,
            egress: None,
        }
    }

    /// grpc_client.py's `refused` mode to `target` as `who`: the refusal the SDK saw must
    /// name each of `names` (a gRPC code, a caller, a rule); `what` labels it in the log.
    fn assert_refused(&self, what: &str, target: &str, who: Caller, names: &[&str]) {
        let seen = self.client("refused", target, who);
        let said = seen["refused"].as_str().unwrap_or_default();
        eprintln!("a2a-sdk gRPC refusal ({what}): {said}");
        assert!(
            names.iter().all(|name| said.contains(name)),
            "{what}: {said}"
        );
    }

    /// Runs grpc_client.py `mode` with `target` as `who`.
    fn client(&self, mode: &str, target: &str, who: Caller) -> serde_json::Value {
        let script = warden_testkit::sdk::sources().join("python/grpc_client.py");
        let (cert, key) = match who {
            Caller::Svid(who) => (
                self.ids.file(who, "svid.pem"),
                self.ids.file(who, "svid_key.pem"),
            ),
            Caller::NoCertificate => ("-".to_owned(), "-".to_owned()),
            Caller::Plaintext => ("plain".to_owned(), "-".to_owned()),
        };
        let out = Command::new(&self.python)
            .arg(script)
            .args([mode, target, &cert, &key])
            .arg(self.ids.file("gateway", "svid_bundle.pem"))
            .output()
            .expect("run the a2a-sdk gRPC client");
        assert!(
            out.status.success(),
            "grpc_client.py {mode}: {}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            log_tail(&self.ids.dir.path().join("agent.log"), 20)
        );
        serde_json::from_slice(&out.stdout).expect("the client prints JSON")
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The orchestrator's sidecar with an egress port toward the gateway; its address.
    fn start_egress(&mut self) -> std::net::SocketAddr {
        let egress = free_addr();
        let gateway_url = format!("https://{}", self.gateway);
        let sidecar = start_sidecar(
            &self.ids.svid("orchestrator"),
            free_addr(),
            &[
                "--egress",
                &egress.to_string(),
                "--gateway-url",
                &gateway_url,
                "--gateway-id",
                GATEWAY,
            ],
        );
        wait_listening(egress, Duration::from_secs(10));
        self.egress = Some(sidecar);
        egress
    }

    /// The response head (lowercase) of an empty gRPC call to `url` over HTTP/2 with `who`'s
    /// SVID, as curl saw it.
    fn raw_grpc_head(&self, url: &str, who: &str) -> String {
        let (cert, key) = (
            self.ids.file(who, "svid.pem"),
            self.ids.file(who, "svid_key.pem"),
        );
        let out = curl(&[
            "-k",
            "--http2",
            "--cert",
            &cert,
            "--key",
            &key,
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "--data-binary",
            "",
            "-D",
            "-",
            "-o",
            "/dev/null",
            url,
        ]);
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    }

    /// The gRPC target of `agent` at the gateway: its host name, which the gateway routes by.
    fn grpc_target(&self, agent: &str) -> String {
        format!("{agent}.team-beta.a2a.localhost:{}", self.gateway.port())
    }
}

/// What a client that followed the card (send, stream, get, subscribe, cancel) must have seen.
fn assert_followed(seen: &serde_json::Value, grpc_url: &str) {
    assert_eq!(seen["card_grpc_urls"], serde_json::json!([grpc_url]));
    assert_eq!(seen["send"]["state"], "TASK_STATE_COMPLETED");
    assert_eq!(seen["send"]["artifact"], "echo: hello");
    assert_eq!(seen["get"]["id_matches"], true);
    assert_eq!(seen["get"]["state"], "TASK_STATE_COMPLETED");
    assert!(
        seen["get_unknown"]
            .as_str()
            .is_some_and(|e| e.contains("TaskNotFound") || e.contains("NOT_FOUND")),
        "{seen}"
    );
    // Server streaming is delivered event by event: the first events arrive while the agent
    // still holds the stream open, the last one after its pause.
    let stream = seen["stream"].as_array().expect("stream events");
    let at = |e: &serde_json::Value| e["at"].as_f64().unwrap_or_default();
    let (first, last) = (
        stream.first().expect("events"),
        stream.last().expect("events"),
    );
    assert!(
        at(last) - at(first) >= PAUSE_SECS * 0.8,
        "the stream arrived at once (buffered): {stream:?}"
    );
    assert_eq!(last["kind"], "status_update", "{stream:?}");
    // SubscribeToTask streams until the task is canceled; CancelTask answers canceled.
    assert_eq!(seen["cancel"], "TASK_STATE_CANCELED");
    assert_eq!(seen["subscribe"]["first"], "task");
    assert!(
        seen["subscribe"]["after_cancel"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e == "status_update")),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2a_sdk_grpc_client_and_server_work_through_gateway_and_sidecar() {
    let test = "a2a_sdk_grpc_client_and_server_work_through_gateway_and_sidecar";
    let Some(python) = warden_testkit::sdk::python(test) else {
        return;
    };
    let mut mesh = Mesh::start(python);
    let base = format!("https://{}/api/a2a/team-beta/specialist", mesh.gateway);
    let seen = mesh.client("follow", &base, Caller::Svid("orchestrator"));
    eprintln!("a2a-sdk gRPC client saw: {seen}");
    // The card sends gRPC clients to the agent's host at the gateway, still gRPC.
    assert_followed(&seen, &mesh.grpc_target("specialist"));

    // Through the orchestrator's egress (plaintext h2c from the app): the card fetched there
    // points at the agent's host at the egress's port (`*.a2a.localhost` is loopback), and the
    // egress takes the call to the gateway over mTLS as the orchestrator.
    let egress = mesh.start_egress();
    let base = format!("http://{egress}/api/a2a/team-beta/specialist");
    let seen = mesh.client("follow", &base, Caller::Plaintext);
    eprintln!("a2a-sdk gRPC client through its egress saw: {seen}");
    assert_followed(
        &seen,
        &format!("specialist.team-beta.a2a.localhost:{}", egress.port()),
    );

    // Refusals are gRPC statuses naming who was refused and the rule.
    let specialist = mesh.grpc_target("specialist");
    mesh.assert_refused(
        "rogue",
        &specialist,
        Caller::Svid("rogue"),
        &["PERMISSION_DENIED", ROGUE, "namespace_selector"],
    );
    mesh.assert_refused(
        "no certificate",
        &specialist,
        Caller::NoCertificate,
        &["UNAUTHENTICATED", "anonymous", "namespace_selector"],
    );
    mesh.assert_refused(
        "h2c, no TLS",
        &specialist,
        Caller::Plaintext,
        &["UNAUTHENTICATED", "namespace_selector"],
    );
    mesh.assert_refused(
        "unknown agent",
        &mesh.grpc_target("ghost"),
        Caller::Svid("orchestrator"),
        &["NOT_FOUND", "unknown_target"],
    );

    // The sidecar's own refusal (a caller that skips the gateway) is a gRPC status too.
    let url = format!(
        "https://{}/lf.a2a.v1.A2AService/SendMessage",
        mesh.sidecar.inbound
    );
    let head = mesh.raw_grpc_head(&url, "rogue");
    assert!(
        head.starts_with("http/2 200")
            && head.contains("grpc-status: 7")
            && head.contains(&ROGUE.to_ascii_lowercase()),
        "{head}"
    );

    // The audit names the gRPC method and its status, the upstream's error status included.
    let lines = mesh.audit_lines();
    let find = |caller: &str, method: &str, grpc_status: u64| {
        lines.iter().any(|l| {
            l["caller"] == caller && l["method"] == method && l["grpc_status"] == grpc_status
        })
    };
    for method in [
        "SendMessage",
        "SendStreamingMessage",
        "GetTask",
        "SubscribeToTask",
        "CancelTask",
    ] {
        // Once direct, once through the egress: the caller is the orchestrator both times.
        let ok = lines.iter().filter(|l| {
            l["caller"] == ORCHESTRATOR && l["method"] == method && l["grpc_status"] == 0
        });
        assert!(
            ok.count() >= 2,
            "{method} not audited as OK twice: {lines:#?}"
        );
    }
    assert!(
        find(ORCHESTRATOR, "GetTask", 5),
        "the upstream's NOT_FOUND: {lines:#?}"
    );
    assert!(find(ROGUE, "SendMessage", 7), "{lines:#?}");
    assert!(find("anonymous", "SendMessage", 16), "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| l["decision"] != "allow" || l["caller"] == ORCHESTRATOR),
        "{lines:#?}"
    );
}

/// A gRPC call the gateway allows but the target's sidecar refuses — the app's port is held by
/// another uid than `--app-uid` — ends for the a2a-sdk client as a gRPC status naming the
/// rule, not a hang; the gateway's audit record of it names the sidecar's rule
/// (`upstream_rule`), and the header that carried it stops at the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_the_sidecar_refuses_is_a_status_and_audited_with_the_sidecars_rule() {
    let test = "a_grpc_call_the_sidecar_refuses_is_a_status_and_audited_with_the_sidecars_rule";
    let Some(python) = warden_testkit::sdk::python(test) else {
        return;
    };
    // The app runs as this test's uid; the sidecar expects another.
    let other = warden_local::users::OsUser::current()
        .uid
        .wrapping_add(4242);
    let mesh = Mesh::start_with_app_uid(python, other);
    mesh.assert_refused(
        "app not owned",
        &mesh.grpc_target("specialist"),
        Caller::Svid("orchestrator"),
        &["UNAVAILABLE", "app_not_owned"],
    );

    // A raw gRPC call through the gateway: the status reaches the client, the header does not.
    let url = format!(
        "https://{}/api/a2a/team-beta/specialist/lf.a2a.v1.A2AService/GetTask",
        mesh.gateway
    );
    let head = mesh.raw_grpc_head(&url, "orchestrator");
    assert!(
        head.starts_with("http/2 200")
            && head.contains("grpc-status: 14")
            && head.contains("app_not_owned")
            && !head.contains("x-warden-refused-by"),
        "{head}"
    );

    // The same refusal of a plain HTTP call is a 502, its header stopped at the gateway too.
    let url = format!("https://{}/api/a2a/team-beta/specialist/x", mesh.gateway);
    let (cert, key) = (
        mesh.ids.file("orchestrator", "svid.pem"),
        mesh.ids.file("orchestrator", "svid_key.pem"),
    );
    let out = curl(&[
        "-k",
        "--http1.1",
        "--cert",
        &cert,
        "--key",
        &key,
        "-D",
        "-",
        &url,
    ]);
    let answer = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        answer.starts_with("http/1.1 502")
            && answer.contains("\"rule\":\"app_not_owned\"")
            && !answer.contains("x-warden-refused-by"),
        "{answer}"
    );

    let lines = mesh.audit_lines();
    let record_of = |method: &str| {
        lines
            .iter()
            .find(|l| l["caller"] == ORCHESTRATOR && l["method"] == method)
            .unwrap_or_else(|| panic!("no record of {method}: {lines:#?}"))
    };
    for method in ["SendMessage", "GetTask"] {
        let record = record_of(method);
        assert_eq!(record["decision"], "allow", "{record}");
        assert_eq!(record["grpc_status"], 14, "{record}");
        assert_eq!(record["upstream_rule"], "app_not_owned", "{record}");
    }
    let record = record_of("GET /x");
    assert_eq!(record["status"], 502, "{record}");
    assert_eq!(record["upstream_rule"], "app_not_owned", "{record}");
}

/// Under `warden up`, the gateway's SVID names every namespace's agent hosts
/// (`*.{namespace}.{hostDomain}`), so a2a-sdk's gRPC client — which checks the host name, with
/// no way to turn that off — accepts the gateway at an agent's host, and a refused caller gets
/// the gRPC status naming the rule. An agent whose app is a2a-sdk's gRPC server (which answers
/// no HTTP/1.1, so no card GET) becomes Ready with its static card, its sidecar attested over
/// mTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_warden_up_grpc_clients_accept_the_gateway_at_an_agents_host() {
    use common::up::{start, text, wait_ready, warden};
    let test = "under_warden_up_grpc_clients_accept_the_gateway_at_an_agents_host";
    let Some(python) = warden_testkit::sdk::python(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("mesh.yaml"),
        "apiVersion: warden.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\n\
         spec: {trustDomain: warden.local, defaultMtlsMode: Strict}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: blue}\n---\n\
         apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: desk, namespace: blue}\n\
         spec: {description: built-in app}\n---\n"
            .to_owned()
            + &grpc_only_agent(&python),
    )
    .unwrap();
    let state = dir.path().join("state");
    let gateway = free_addr();
    let mut up = start(&state, &manifests, gateway);
    let status = wait_ready(&state, &mut up, 2, Duration::from_secs(60));
    let grpc_desk = status["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "grpc-desk"))
        .unwrap_or_else(|| panic!("no grpc-desk: {status}"));
    assert_eq!(
        grpc_desk["card"]["transportSecurity"], "mtls",
        "{grpc_desk}"
    );
    assert_eq!(
        grpc_desk["card"]["attestedSpiffeId"], grpc_desk["spiffeId"],
        "{grpc_desk}"
    );
    let svid = dir.path().join("rogue");
    let out = warden(
        &state,
        &[
            "ca",
            "issue",
            "--id",
            ROGUE,
            "--out",
            svid.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let file = |f: &str| svid.join(f).display().to_string();
    let script = warden_testkit::sdk::sources().join("python/grpc_client.py");
    let target = format!("desk.blue.a2a.localhost:{}", gateway.port());
    let out = Command::new(&python)
        .arg(script)
        .args(["refused", &target])
        .args([
            file("svid.pem"),
            file("svid_key.pem"),
            file("svid_bundle.pem"),
        ])
        .output()
        .expect("run the a2a-sdk gRPC client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let said = seen["refused"].as_str().unwrap_or_default();
    eprintln!("a2a-sdk gRPC refusal under warden up: {said}");
    // PERMISSION_DENIED comes from the gateway's policy: the TLS handshake, host name check
    // included, succeeded (a failed one is UNAVAILABLE).
    assert!(
        said.contains("PERMISSION_DENIED") && said.contains(ROGUE) && said.contains("rule "),
        "{said}"
    );
    let _ = warden(&state, &["down"]);
}

/// An agent `blue/grpc-desk` whose app (`warden up` starts it) is a2a-sdk's gRPC server on
/// `$PORT`, with the static card a gRPC-only agent needs.
fn grpc_only_agent(python: &Path) -> String {
    let script = warden_testkit::sdk::sources().join("python/grpc_agent.py");
    format!(
        "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {{name: grpc-desk, namespace: blue}}\n\
         spec:\n  description: a2a-sdk gRPC app\n  local: {{command: {python}, args: [{script}]}}\n  \
         card:\n    name: grpc-desk\n    description: a2a-sdk gRPC agent\n    version: 1.0.0\n    \
         supportedInterfaces:\n      - url: \"127.0.0.1:1\"\n        protocolBinding: GRPC\n        \
         protocolVersion: \"1.0\"\n    capabilities: {{streaming: true}}\n    \
         defaultInputModes: [text/plain]\n    defaultOutputModes: [text/plain]\n    \
         skills: [{{id: echo, name: echo, description: echoes, tags: [echo]}}]\n",
        python = python.display(),
        script = script.display(),
    )
}
