//! `warden gateway --kubernetes` against a real kube-apiserver (the testkit's `KubeApi`, no
//! kubelet) and real SPIRE: the gateway compiles the cluster's Agents, MeshConfig,
//! Namespaces and Secrets live, routes to the EndpointSlice the test writes (pointing at a
//! local `warden sidecar` that stands in for the specialist's pod), and decides on
//! SPIRE-issued IDs. Live re-evaluation: relabelling `team-alpha` or editing the target
//! Agent makes the gateway's next decision a denial, and rotating the `headersFrom` Secret
//! changes the next forwarded header, each measured and required within 1 s. Then the real
//! `warden controller` writes the Agents' status, `warden status/verify --kubeconfig` report
//! and verify the mesh, and a `warden sidecar --kubernetes` decides by the snapshot the
//! controller publishes.
//!
//! Skipped, loudly, when scripts/install-test-deps.sh has not built SPIRE or Kubernetes.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::spire::{Client, sidecar_on, wait_ready, warden_as};
use common::{GATEWAY, ORCHESTRATOR, ROGUE, SPECIALIST, WARDEN, compile_example, curl, headers};
use warden_testkit::deps::TierTimer;
use warden_testkit::kube_api::KubeApi;
use warden_testkit::process::{Running, free_addr, spawn_logged, wait_listening, wait_until};
use warden_testkit::spire::{Entry, Spire};

const UID_SPECIALIST: u32 = 42001;
const UID_GATEWAY: u32 = 42002;
const UID_ORCHESTRATOR: u32 = 42003;
const UID_ROGUE: u32 = 42004;

const CONTROLLER: &str = "spiffe://warden.local/ns/warden-system/sa/warden-controller";

const HOUR: Duration = Duration::from_secs(3600);

/// How soon a cluster change must decide the gateway's next request.
const LIVE_LIMIT: Duration = Duration::from_secs(1);

fn example(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/cross-namespace-a2a")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An agent's "pod" as the cluster knows it: an EndpointSlice (labelled like a Service's)
/// with one ready address, the sidecar's. The apiserver refuses loopback IPs in slices, so
/// the address is the name `{agent}-pod.localhost` in an FQDN slice, which Warden reads as
/// 127.0.0.1 (RFC 6761): the test's traffic stays on loopback.
fn endpoint_slice(namespace: &str, agent: &str, addr: SocketAddr) -> String {
    assert!(addr.ip().is_loopback(), "pods stand in on loopback");
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {agent}-pod\n  \
         namespace: {namespace}\n  labels:\n    kubernetes.io/service-name: {agent}\n\
         addressType: FQDN\nports:\n- name: a2a\n  port: {port}\n  protocol: TCP\nendpoints:\n\
         - addresses: [\"{agent}-pod.localhost\"]\n  conditions:\n    ready: true\n",
        port = addr.port(),
    )
}

/// A free port on 127.0.0.1: the pod address stand-in.
fn pod_addr() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind the pod stand-in");
    listener.local_addr().expect("local addr")
}

/// An agent's pod stood in for: `warden agent echo` behind a `warden sidecar` (as the
/// agent's uid, SPIRE SVID, the compiled example's policy) on a pod address, and its
/// EndpointSlice; the processes.
fn echo_pod(
    api: &KubeApi,
    spire: &Spire,
    snapshot: &Path,
    (namespace, name, uid): (&str, &str, u32),
) -> [Running; 2] {
    let app = free_addr();
    let echo = spawn_logged(
        Command::new(WARDEN).args([
            "agent",
            "echo",
            "--listen",
            &app.to_string(),
            "--name",
            name,
        ]),
        &spire.dir().join(format!("{name}-app.log")),
    );
    wait_listening(app, Duration::from_secs(10));
    let agent = format!("{namespace}/{name}");
    let (sidecar, inbound, _) = sidecar_on(
        spire,
        uid,
        pod_addr(),
        app,
        &[
            "--workload-api",
            &spire.endpoint(),
            "--snapshot",
            snapshot.to_str().unwrap(),
            "--agent",
            &agent,
        ],
        &[],
    );
    api.apply(&endpoint_slice(namespace, name, inbound));
    [echo, sidecar]
}

/// `spire-agent api fetch x509 -write` files of `client` copied into spiffe-helper's layout
/// (what `warden verify --svid-dir` reads, as `warden ca issue` writes it).
fn svid_dir(spire: &Spire, client: &Client, name: &str) -> String {
    let dir = spire.dir().join(format!("{name}-svid"));
    std::fs::create_dir_all(&dir).unwrap();
    let from = Path::new(&client.cert).parent().unwrap();
    for (src, dst) in [
        ("svid.0.pem", "svid.pem"),
        ("svid.0.key", "svid_key.pem"),
        ("bundle.0.pem", "svid_bundle.pem"),
    ] {
        std::fs::copy(from.join(src), dir.join(dst)).unwrap();
    }
    dir.display().to_string()
}

fn warden(args: &[&str]) -> (bool, String) {
    let out = Command::new(WARDEN)
        .args(args)
        .output()
        .expect("run warden");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The admin kubeconfig with its certificates inline, readable only by `uid`.
fn kubeconfig_for(api: &KubeApi, spire: &Spire, uid: u32) -> String {
    let flat = api.kubectl_ok(&["config", "view", "--raw", "--flatten", "--minify"]);
    let dir = spire.workload_dir(&format!("kube-{uid}"), uid);
    let path = dir.join("kubeconfig");
    std::fs::write(&path, flat).expect("write kubeconfig");
    std::os::unix::fs::chown(&path, Some(uid), Some(uid)).expect("chown kubeconfig");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path.display().to_string()
}

/// Calls `url` as `client` until `done(status, body)` holds; how long that took after
/// `since`, or a panic with the last answer after `limit`.
fn until(
    client: &Client,
    url: &str,
    since: Instant,
    limit: Duration,
    done: impl Fn(&str, &str) -> bool,
) -> Duration {
    loop {
        let (status, body) = client.call(url, &[]);
        if done(&status, &body) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit * 5,
            "still {status} {body} after {:?}",
            since.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn delegation_token(body: &str) -> String {
    headers(body)["x-delegation-token"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_routes_by_endpointslices_and_decides_the_next_request_by_the_cluster() {
    let _timer = TierTimer::new("kube gateway: live routing and re-evaluation");
    let entries = [
        Entry::new(SPECIALIST, UID_SPECIALIST, HOUR),
        Entry::new(GATEWAY, UID_GATEWAY, HOUR),
        Entry::new(ORCHESTRATOR, UID_ORCHESTRATOR, HOUR),
        Entry::new(ROGUE, UID_ROGUE, HOUR),
        // The controller runs as the test's own uid.
        Entry::new(CONTROLLER, 0, HOUR),
    ];
    let Some(spire) = Spire::start("warden.local", &entries) else {
        return;
    };
    let Some(api) = KubeApi::start() else { return };
    let crds = warden_kube::crd::crds();
    api.apply_crds(
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": crds}).to_string(),
    );
    api.apply(&example("mesh.yaml"));
    api.apply(&example("agents.yaml"));

    // The specialist's pod, stood in for: its app and its sidecar (SPIRE SVID, the example's
    // policy), and the EndpointSlice that says where it is.
    let app = warden_testkit::app::start().await;
    let snapshot = spire.dir().join("snapshot.json");
    compile_example(&snapshot, |t| t.to_owned());
    std::fs::set_permissions(&snapshot, std::fs::Permissions::from_mode(0o644)).unwrap();
    let endpoint = spire.endpoint();
    let (_sidecar, inbound, _) = sidecar_on(
        &spire,
        UID_SPECIALIST,
        pod_addr(),
        app.addr,
        &[
            "--workload-api",
            &endpoint,
            "--snapshot",
            snapshot.to_str().unwrap(),
            "--agent",
            "team-beta/specialist",
        ],
        &[],
    );
    api.apply(&endpoint_slice("team-beta", "specialist", inbound));

    let kubeconfig = kubeconfig_for(&api, &spire, UID_GATEWAY);
    let audit_log = Path::new(&kubeconfig).with_file_name("audit.log");
    let (listen, admin) = (free_addr(), free_addr());
    let started = Instant::now();
    let _gateway = warden_as(
        &spire,
        UID_GATEWAY,
        "gateway",
        &[
            "gateway",
            "--kubernetes",
            "--kubeconfig",
            &kubeconfig,
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
            "--workload-api",
            &endpoint,
            "--audit-log",
            audit_log.to_str().unwrap(),
        ],
    );
    wait_ready(&spire, "gateway", admin);
    eprintln!("gateway --kubernetes ready in {:?}", started.elapsed());
    // SPIRE's SVID for the gateway carries no DNS name (its entry lists none): the gateway
    // counts the cluster's three agent hosts as ones a host-name-checking client refuses.
    let uncovered = "warden_gateway_uncovered_agent_hosts{host_domain=\"a2a.localhost\"} 3";
    let metrics = || {
        let out = curl(&[&format!("http://{admin}/metrics")]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metrics().contains(uncovered) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metrics().contains(uncovered), "{}", metrics());

    let orchestrator = Client::fetch(&spire, "orchestrator", UID_ORCHESTRATOR);
    let rogue = Client::fetch(&spire, "rogue", UID_ROGUE);
    let url = format!("https://{listen}/api/a2a/team-beta/specialist/headers");

    // Routed to the EndpointSlice's address over mTLS (the sidecar saw the gateway vouch for
    // the orchestrator), with the delegation header from the cluster's Secret.
    let (status, body) = orchestrator.call(&url, &[]);
    assert_eq!(status, "200", "{body}");
    assert_eq!(
        headers(&body)["x-forwarded-client-cert"],
        format!("By={SPECIALIST};URI={ORCHESTRATOR}")
    );
    assert_eq!(delegation_token(&body), "delegated-by-team-alpha");
    let (status, body) = rogue.call(&url, &[]);
    assert_eq!(status, "403", "{body}");
    assert!(body.contains("namespace_selector"), "{body}");

    // Relabel team-alpha: the gateway's next decision is a denial.
    let relabelled = Instant::now();
    api.kubectl_ok(&["label", "namespace", "team-alpha", "a2a-access-"]);
    let took = until(
        &orchestrator,
        &url,
        relabelled,
        LIVE_LIMIT,
        |status, body| status == "403" && body.contains("namespace_selector"),
    );
    eprintln!("relabel team-alpha → the gateway denies the orchestrator after {took:?}");
    assert!(took <= LIVE_LIMIT, "the relabel took {took:?}");

    // And back: admitted again.
    let relabelled = Instant::now();
    api.kubectl_ok(&["label", "namespace", "team-alpha", "a2a-access=specialist"]);
    let took = until(&orchestrator, &url, relabelled, LIVE_LIMIT, |s, _| {
        s == "200"
    });
    eprintln!("label restored → admitted after {took:?}");
    assert!(took <= LIVE_LIMIT, "the restored label took {took:?}");

    // Rotate the headersFrom Secret: the next forwarded request carries the new value.
    let rotated = Instant::now();
    api.kubectl_ok(&[
        "patch",
        "secret",
        "orchestrator-delegation",
        "-n",
        "team-alpha",
        "--type=merge",
        "-p",
        r#"{"stringData":{"token":"rotated-token"}}"#,
    ]);
    let took = until(&orchestrator, &url, rotated, LIVE_LIMIT, |status, body| {
        status == "200" && delegation_token(body) == "rotated-token"
    });
    eprintln!("Secret rotation → the next forwarded header is the new one after {took:?}");
    assert!(took <= LIVE_LIMIT, "the rotation took {took:?}");

    // Edit the target Agent (deny the orchestrator by ID), then undo it: each edit decides
    // the gateway's next request.
    let denied =
        r#"{"spec":{"deniedCallers":["spiffe://warden.local/ns/team-alpha/sa/orchestrator"]}}"#;
    let patch_specialist = |patch: &str| {
        let args = [
            "patch",
            "agents.warden.dev",
            "specialist",
            "-n",
            "team-beta",
        ];
        api.kubectl_ok(&[&args[..], &["--type=merge", "-p", patch]].concat());
    };
    let edited = Instant::now();
    patch_specialist(denied);
    let took = until(&orchestrator, &url, edited, LIVE_LIMIT, |status, body| {
        status == "403" && body.contains("denied_callers")
    });
    eprintln!("target Agent edited (deniedCallers) → denied after {took:?}");
    assert!(took <= LIVE_LIMIT, "the Agent edit took {took:?}");
    let edited = Instant::now();
    patch_specialist(r#"{"spec":{"deniedCallers":[]}}"#);
    let took = until(&orchestrator, &url, edited, LIVE_LIMIT, |s, _| s == "200");
    eprintln!("target Agent edit undone → admitted after {took:?}");
    assert!(took <= LIVE_LIMIT, "the undo took {took:?}");

    // `warden status --kubeconfig`: the Agents as the cluster holds them, where their pods
    // are, and the gateway (not deployed in this cluster: it runs here).
    let _orchestrator_pod = echo_pod(
        &api,
        &spire,
        &snapshot,
        ("team-alpha", "orchestrator", UID_ORCHESTRATOR),
    );
    let _rogue_pod = echo_pod(&api, &spire, &snapshot, ("team-gamma", "rogue", UID_ROGUE));
    let kube = api.kubeconfig().to_str().unwrap();
    // The controller (its SVID from SPIRE): statuses, cards over mTLS, the sidecars' snapshot.
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: warden-system\n");
    let controller_log = spire.dir().join("controller.log");
    let _controller = spawn_logged(
        Command::new(WARDEN)
            .args([
                "controller",
                "--kubeconfig",
                kube,
                "--namespace",
                "warden-system",
            ])
            .args(["--identity", "kgw-test", "--workload-api", &endpoint]),
        &controller_log,
    );
    let started = Instant::now();
    wait_until(
        "every card over mTLS",
        Duration::from_secs(60),
        &controller_log,
        || {
            let cards = api.kubectl_ok(&[
                "get",
                "agents.warden.dev",
                "-A",
                "-o",
                "jsonpath={.items[*].status.card.transportSecurity}",
            ]);
            cards.split_whitespace().filter(|c| *c == "mtls").count() == 3
        },
    );
    eprintln!(
        "controller: every card over mTLS after {:?}",
        started.elapsed()
    );
    let (ok, table) = warden(&["status", "--kubeconfig", kube]);
    eprintln!("{table}");
    assert!(ok, "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("team-beta/specialist "))
        .unwrap_or_else(|| panic!("no specialist row:\n{table}"));
    assert!(
        row.contains(" Strict ") && row.contains(&inbound.to_string()),
        "{row}"
    );
    let columns: Vec<&str> = row.split_whitespace().collect();
    // AGENT MODE ACCEPTED MTLSREADY CARD READY ENDPOINT SPIFFE-ID (the attested one)
    assert_eq!(columns[2..5], ["True", "True", "mtls"], "{row}");
    assert_eq!(columns.last(), Some(&SPECIALIST), "{row}");
    assert!(table.contains("gateway: Deployment warden-system/warden-gateway not found"));
    let (ok, json) = warden(&["status", "--kubeconfig", kube, "-o", "json"]);
    assert!(ok, "{json}");
    let json: serde_json::Value = serde_json::from_str(&json).expect("status -o json");
    assert_eq!(json["agents"].as_array().map(Vec::len), Some(3), "{json}");

    // `warden verify --kubeconfig` against this gateway, calling as the orchestrator and the
    // rogue (SPIRE SVIDs): kagent's checks (cards through the gateway, delegation, rogue
    // rejected, direct call blocked) plus MTLSReady (as the controller wrote it) and the
    // audit.
    let started = Instant::now();
    let gateway_url = format!("https://{listen}");
    let (orchestrator_svid, rogue_svid) = (
        svid_dir(&spire, &orchestrator, "orchestrator"),
        svid_dir(&spire, &rogue, "rogue"),
    );
    let (ok, report) = warden(&[
        "verify",
        "--kubeconfig",
        kube,
        "--gateway",
        &gateway_url,
        "--svid-dir",
        &orchestrator_svid,
        "--svid-dir",
        &rogue_svid,
        "--audit-log",
        audit_log.to_str().unwrap(),
    ]);
    eprintln!("verify --kubeconfig in {:?}:\n{report}", started.elapsed());
    let rows: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL"))
        .collect();
    for expected in [
        "the cluster's mesh compiles",
        "cards are served through the gateway",
        "delegation: team-alpha/orchestrator calls team-beta/specialist",
        "team-gamma/rogue's tool reference to team-beta/specialist is not accepted",
        "every denied pair of agents is refused",
        "a direct call to team-beta/specialist's sidecar that skips the gateway is refused",
        "the audit log holds this run's allowed and denied calls",
        "every agent with mTLS is MTLSReady and its card was fetched over mTLS",
    ] {
        let row = rows.iter().find(|r| r.contains(expected));
        assert!(
            row.is_some_and(|r| r.starts_with("PASS")),
            "{expected}: {row:?}\n{report}"
        );
    }
    assert_eq!(rows.len(), 8, "{report}");
    assert!(ok, "{report}");

    // Sidecars in the cluster: `warden sidecar --kubernetes` decides by the snapshot the
    // controller publishes (kube::publish); a relabel reaches the sidecar's next decision
    // within the second too.
    // As on the injected container's read-only root filesystem: no temp dir it may write
    // (before the snapshot went in memory, the sidecar mirrored it into $TMPDIR and did not
    // start here).
    let sidecar_kubeconfig = kubeconfig_for(&api, &spire, UID_SPECIALIST);
    let read_only_tmp = spire.dir().join("read-only-tmp");
    std::fs::create_dir_all(&read_only_tmp).expect("read-only tmp");
    std::fs::set_permissions(&read_only_tmp, std::fs::Permissions::from_mode(0o555))
        .expect("chmod 0555");
    let tmpdir = read_only_tmp.display().to_string();
    let (_kube_sidecar, kube_inbound, _) = sidecar_on(
        &spire,
        UID_SPECIALIST,
        free_addr(),
        app.addr,
        &[
            "--workload-api",
            &endpoint,
            "--kubernetes",
            "--kubeconfig",
            &sidecar_kubeconfig,
            "--agent",
            "team-beta/specialist",
        ],
        &[("TMPDIR", &tmpdir)],
    );
    let direct = format!("https://{kube_inbound}/headers");
    let (status, body) = orchestrator.call(&direct, &[]);
    assert_eq!(status, "200", "{body}");
    let (status, body) = rogue.call(&direct, &[]);
    assert_eq!(status, "403", "{body}");
    let relabelled = Instant::now();
    api.kubectl_ok(&["label", "namespace", "team-alpha", "a2a-access-"]);
    let took = until(
        &orchestrator,
        &direct,
        relabelled,
        LIVE_LIMIT,
        |status, _| status == "403",
    );
    eprintln!("relabel team-alpha → the sidecar (--kubernetes) denies after {took:?}");
    assert!(took <= LIVE_LIMIT, "the sidecar took {took:?}");
    let published = api.kubectl_ok(&[
        "get",
        "configmap",
        "warden-mesh-snapshot",
        "-n",
        "warden-system",
        "-o",
        "jsonpath={.data.snapshot\\.json}",
    ]);
    assert!(published.contains("team-beta"), "{published}");
    assert!(
        !published.contains("rotated-token") && !published.contains("delegated-by-team-alpha"),
        "delegation header values must not be published: {published}"
    );
    api.kubectl_ok(&["label", "namespace", "team-alpha", "a2a-access=specialist"]);

    // The pod goes away (its slice's endpoint turns unready): no endpoint, 503.
    let gone = Instant::now();
    let unready = endpoint_slice("team-beta", "specialist", inbound);
    api.apply(&unready.replace("ready: true", "ready: false"));
    let took = until(&orchestrator, &url, gone, LIVE_LIMIT, |status, body| {
        status == "503" && body.contains("no_endpoint")
    });
    eprintln!("endpoint unready → 503 no_endpoint after {took:?}");
}
