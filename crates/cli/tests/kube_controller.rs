//! `warden controller` against a real kube-apiserver (+ kube-controller-manager) and real
//! SPIRE. No kubelet: the specialist's "pod" is a local `warden sidecar --workload-api` (its
//! SVID from SPIRE, as its own uid) in front of the test app, and the test writes the
//! EndpointSlice that points at it, as the EndpointSlice controller would for a pod.
//!
//! - with SPIRE: `kubectl get agents` shows MTLSReady True and CARD mtls with the attested
//!   ID; a slice pointing at another agent's sidecar is refused (wrong identity); the mode goes
//!   into the Deployment's pod template and a mode change makes a new ReplicaSet; a Namespace
//!   relabel flips Accepted; an agent whose app is a2a-sdk's gRPC server (no card GET) is
//!   Ready with its static card, its sidecar attested over mTLS;
//! - without SPIRE: MTLSReady False SPIREUnavailable and a Warning event, True once the
//!   SPIFFE CSI driver appears; cards over plain HTTP; kagenti's deprecated flags warn, and
//!   only when given; a second replica stands by (the Lease).
//!
//! Skipped, loudly, when scripts/install-test-deps.sh has not built the binaries.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{SPECIALIST, WARDEN, compile_example, curl};
use warden_testkit::deps::TierTimer;
use warden_testkit::kube_api::KubeApi;
use warden_testkit::process::{Running, free_addr, spawn_logged, wait_until};
use warden_testkit::spire::{Entry, Spire, as_uid};

const CONTROLLER: &str = "spiffe://warden.local/ns/warden-system/sa/warden-controller";
const ORCHESTRATOR_ID: &str = common::ORCHESTRATOR;
const UID_SPECIALIST: u32 = 42001;
const UID_ORCHESTRATOR: u32 = 42002;
const UID_GRPC_DESK: u32 = 42003;
const GRPC_DESK: &str = "spiffe://warden.local/ns/team-beta/sa/grpc-desk";
/// A Strict agent whose app is a2a-sdk's gRPC server, which answers no HTTP/1.1 (no card
/// GET) and has no RPC for its public card: its card is the static `spec.card`.
const GRPC_DESK_AGENT: &str = "apiVersion: warden.dev/v1alpha1\nkind: Agent\n\
    metadata: {name: grpc-desk, namespace: team-beta}\n\
    spec:\n  description: a2a-sdk gRPC app\n  mtls: {mode: Strict}\n  card:\n    \
    name: grpc-desk\n    description: a2a-sdk gRPC agent\n    version: 1.0.0\n    \
    supportedInterfaces:\n      - url: \"127.0.0.1:1\"\n        protocolBinding: GRPC\n        \
    protocolVersion: \"1.0\"\n    capabilities: {streaming: true}\n    \
    defaultInputModes: [text/plain]\n    defaultOutputModes: [text/plain]\n    \
    skills: [{id: echo, name: echo, description: echoes, tags: [echo]}]\n";
const HOUR: Duration = Duration::from_secs(3600);

/// From `warden install`: the CRDs, the namespace and the least-privilege RBAC (the
/// Deployments need a kubelet; the webhook configurations would need a webhook).
fn install(api: &KubeApi) {
    let out = Command::new(WARDEN)
        .args([
            "install",
            "--webhook-url",
            "https://127.0.0.1:9",
            "--tls-dir",
        ])
        .arg(api.dir().join("wh"))
        .output()
        .expect("warden install");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let of_kinds = |kinds: &[&str]| -> Vec<&str> {
        text.split("\n---\n")
            .filter(|doc| {
                doc.lines()
                    .any(|l| kinds.iter().any(|k| l == format!("kind: {k}")))
            })
            .collect()
    };
    let crds = of_kinds(&["CustomResourceDefinition"]);
    assert_eq!(crds.len(), 2, "the two warden.dev CRDs");
    api.apply_crds(&crds.join("\n---\n"));
    let rbac = of_kinds(&[
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ]);
    api.apply(&rbac.join("\n---\n"));
}

/// A kubeconfig with a token of the `warden-controller` ServiceAccount: the controller runs
/// with exactly the RBAC `warden install` grants it.
fn controller_kubeconfig(api: &KubeApi) -> std::path::PathBuf {
    let path = api.dir().join("controller.kubeconfig");
    if path.exists() {
        return path;
    }
    let token = api.kubectl_ok(&[
        "create",
        "token",
        "warden-controller",
        "-n",
        "warden-system",
        "--duration=1h",
    ]);
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\nusers:\n- name: controller\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: controller}}\ncurrent-context: test\n",
        url = api.url,
        ca = api.ca().cert_path().display(),
        token = token.trim(),
    );
    std::fs::write(&path, config).expect("write the controller's kubeconfig");
    path
}

fn example(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/cross-namespace-a2a")
        .join(file);
    std::fs::read_to_string(path).expect("example")
}

fn apply_example(api: &KubeApi) {
    api.apply(&example("mesh.yaml"));
    api.apply(&example("agents.yaml"));
}

/// The EndpointSlice for `agent`'s "pod" at `addr` (on loopback). The apiserver refuses
/// loopback IPs in slices, so it is an `FQDN` slice naming `<agent>.localhost` (RFC 6761:
/// loopback; the controller resolves it so).
fn endpoint_slice(api: &KubeApi, ns: &str, agent: &str, addr: SocketAddr) {
    assert!(addr.ip().is_loopback());
    api.apply(&format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {agent}-test\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {agent}}}\naddressType: FQDN\nports: [{{name: a2a, port: {port}, protocol: TCP}}]\nendpoints: [{{addresses: [{agent}.localhost], conditions: {{ready: true}}}}]\n",
        port = addr.port(),
    ));
}

/// `kubectl get agent` jsonpath.
fn agent_field(api: &KubeApi, ns: &str, name: &str, path: &str) -> String {
    let out = api.kubectl(&[
        "get",
        "agents.warden.dev",
        name,
        "-n",
        ns,
        "-o",
        &format!("jsonpath={{{path}}}"),
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn condition(api: &KubeApi, ns: &str, name: &str, kind: &str, field: &str) -> String {
    agent_field(
        api,
        ns,
        name,
        &format!(".status.conditions[?(@.type==\"{kind}\")].{field}"),
    )
}

/// Polls until `test` holds, at most `limit`; how long it took.
fn eventually(what: &str, limit: Duration, log: &Path, mut test: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    wait_until(what, limit, log, &mut test);
    started.elapsed()
}

struct Controller {
    _process: Running,
    admin: SocketAddr,
    log: std::path::PathBuf,
}

fn start_controller(api: &KubeApi, name: &str, extra: &[&str]) -> Controller {
    let admin = free_addr();
    let log = api.dir().join(format!("{name}.log"));
    let mut command = Command::new(WARDEN);
    command
        .args(["controller", "--kubeconfig"])
        .arg(controller_kubeconfig(api))
        .args(["--namespace", "warden-system", "--identity", name])
        .args(["--admin", &admin.to_string()])
        .args(extra)
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env("RUST_LOG", "info,warden_kube=debug");
    let process = spawn_logged(&mut command, &log);
    Controller {
        _process: process,
        admin,
        log,
    }
}

/// The installed RBAC sufficed: the controller was refused nothing.
fn assert_nothing_forbidden(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let refused: Vec<&str> = text
        .lines()
        // The apiserver's refusal: `… is forbidden: User "system:serviceaccount:…" cannot …`.
        .filter(|l| l.contains("is forbidden"))
        .collect();
    assert!(
        refused.is_empty(),
        "refused by RBAC:\n{}",
        refused.join("\n")
    );
}

fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let out = curl(&[
        "-s",
        "-w",
        "\n%{http_code}",
        &format!("http://{addr}{path}"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "000"));
    (status.to_owned(), body.to_owned())
}

/// `warden sidecar` as `uid` with its SVID from SPIRE, in front of `app`; (process, inbound).
fn sidecar(spire: &Spire, uid: u32, agent: &str, app: SocketAddr) -> (Running, SocketAddr) {
    let snapshot = spire.dir().join("snapshot.json");
    if !snapshot.exists() {
        compile_example(&snapshot, |t| match t.contains("name: specialist") {
            true => format!("{t}\n---\n{GRPC_DESK_AGENT}"),
            false => t.to_owned(),
        });
        // warden writes it owner-only; the workloads' uids must read it.
        std::fs::set_permissions(&snapshot, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (inbound, admin) = (free_addr(), free_addr());
    let warden = spire.readable_copy(Path::new(WARDEN));
    let mut command = as_uid(uid, &warden);
    command
        .args(["sidecar", "--inbound", &inbound.to_string()])
        .args(["--app", &app.to_string(), "--admin", &admin.to_string()])
        .args(["--workload-api", &spire.endpoint(), "--snapshot"])
        .arg(&snapshot)
        .args(["--agent", agent])
        .env_remove("MTLS_MODE");
    let name = agent.replace('/', "-");
    let log = spire.dir().join(format!("{name}.log"));
    let process = spawn_logged(&mut command, &log);
    wait_until(&name, Duration::from_secs(30), &log, || {
        http_get(admin, "/readyz").0 == "200"
    });
    (process, inbound)
}

/// `team-beta/grpc-desk` (the agent, its a2a-sdk gRPC app, its sidecar, its slice); the
/// processes run until dropped.
fn grpc_desk(api: &KubeApi, spire: &Spire, python: &Path) -> [Running; 2] {
    api.apply(GRPC_DESK_AGENT);
    let app = free_addr();
    let script = warden_testkit::sdk::sources().join("python/grpc_agent.py");
    let log = spire.dir().join("grpc-desk-app.log");
    let app_process = spawn_logged(
        Command::new(python)
            .arg(script)
            .arg(app.to_string())
            .arg("1"),
        &log,
    );
    warden_testkit::process::wait_listening(app, Duration::from_secs(20));
    let (sidecar, inbound) = sidecar(spire, UID_GRPC_DESK, "team-beta/grpc-desk", app);
    endpoint_slice(api, "team-beta", "grpc-desk", inbound);
    [app_process, sidecar]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_spire_cards_are_fetched_over_mtls_and_modes_roll_workloads() {
    let entries = [
        Entry::new(CONTROLLER, 0, HOUR),
        Entry::new(SPECIALIST, UID_SPECIALIST, HOUR),
        Entry::new(ORCHESTRATOR_ID, UID_ORCHESTRATOR, HOUR),
        Entry::new(GRPC_DESK, UID_GRPC_DESK, HOUR),
    ];
    let Some(spire) = Spire::start("warden.local", &entries) else {
        return;
    };
    let Some(api) = KubeApi::start_with_controller_manager() else {
        return;
    };
    let _timer = TierTimer::new("kube controller (SPIRE)");
    install(&api);
    apply_example(&api);
    let app = warden_testkit::app::start().await;
    let (_specialist, specialist_inbound) =
        sidecar(&spire, UID_SPECIALIST, "team-beta/specialist", app.addr);
    let (_orchestrator, orchestrator_inbound) = sidecar(
        &spire,
        UID_ORCHESTRATOR,
        "team-alpha/orchestrator",
        app.addr,
    );
    endpoint_slice(&api, "team-beta", "specialist", specialist_inbound);
    // The gRPC-only agent, when the Python SDK is installed (else a loud skip notice).
    let grpc_desk = warden_testkit::sdk::python("kube controller: a gRPC-only agent's card")
        .map(|python| grpc_desk(&api, &spire, &python));
    // The rogue's slice points at the orchestrator's sidecar: it cannot prove the rogue's ID.
    endpoint_slice(&api, "team-gamma", "rogue", orchestrator_inbound);
    // The controller's Workload API socket is not there yet: SPIRE "starts" after the
    // controller (the socket appears), and MTLSReady turns True by itself.
    let socket = api.dir().join("workload-api.sock");
    let endpoint = format!("unix://{}", socket.display());
    let controller = start_controller(&api, "controller-a", &["--workload-api", &endpoint]);
    eventually(
        "SPIREUnavailable before the socket",
        Duration::from_secs(30),
        &controller.log,
        || condition(&api, "team-beta", "specialist", "MTLSReady", "reason") == "SPIREUnavailable",
    );
    // Without an SVID the Strict specialist's card cannot be fetched over plain HTTP.
    eventually(
        "plain fetch refused by the Strict sidecar",
        Duration::from_secs(10),
        &controller.log,
        || condition(&api, "team-beta", "specialist", "CardDiscovered", "reason") == "FetchFailed",
    );
    std::os::unix::fs::symlink(spire.agent_socket(), &socket).expect("symlink the socket");

    let started = Instant::now();
    eventually(
        "specialist card over mTLS",
        Duration::from_secs(30),
        &controller.log,
        || {
            agent_field(
                &api,
                "team-beta",
                "specialist",
                ".status.card.transportSecurity",
            ) == "mtls"
        },
    );
    eprintln!(
        "Workload API appears → card over mTLS in {:?}",
        started.elapsed()
    );
    let wide = api.kubectl_ok(&["get", "agents.warden.dev", "-A", "-o", "wide"]);
    eprintln!("{wide}");
    let line = wide
        .lines()
        .find(|l| l.contains("specialist"))
        .expect("specialist row");
    for column in ["Strict", "True", "mtls", SPECIALIST] {
        assert!(line.contains(column), "{column} missing in: {line}");
    }
    assert_eq!(
        condition(&api, "team-beta", "specialist", "MTLSReady", "reason"),
        "SPIREAvailable"
    );
    assert_eq!(
        condition(&api, "team-beta", "specialist", "Ready", "status"),
        "True"
    );
    let hash = agent_field(&api, "team-beta", "specialist", ".status.card.cardHash");
    assert_eq!(hash.len(), 64, "sha256 hex: {hash}");
    assert_eq!(
        condition(
            &api,
            "team-beta",
            "specialist",
            "Accepted",
            "observedGeneration"
        ),
        agent_field(&api, "team-beta", "specialist", ".metadata.generation")
    );

    // The gRPC-only agent: its static card, its sidecar attested over mTLS, Ready.
    if grpc_desk.is_some() {
        eventually(
            "grpc-desk's static card over mTLS",
            Duration::from_secs(15),
            &controller.log,
            || condition(&api, "team-beta", "grpc-desk", "Ready", "status") == "True",
        );
        let card = |field: &str| agent_field(&api, "team-beta", "grpc-desk", field);
        assert_eq!(card(".status.card.transportSecurity"), "mtls");
        assert_eq!(card(".status.card.attestedSpiffeId"), GRPC_DESK);
        assert_eq!(card(".status.card.cardHash").len(), 64);
        let message = condition(&api, "team-beta", "grpc-desk", "CardDiscovered", "message");
        assert!(
            message.starts_with("the static card (spec.card);") && message.contains(GRPC_DESK),
            "{message}"
        );
    }

    // The rogue: not admitted, and its "pod" proves another identity.
    eventually(
        "rogue's fetch refused",
        Duration::from_secs(15),
        &controller.log,
        || condition(&api, "team-gamma", "rogue", "CardDiscovered", "reason") == "FetchFailed",
    );
    assert_eq!(
        condition(&api, "team-gamma", "rogue", "Accepted", "reason"),
        "CrossNamespaceReferenceDenied"
    );
    assert_eq!(agent_field(&api, "team-gamma", "rogue", ".status.card"), "");

    // The specialist's "pod" moves to the orchestrator's sidecar: the slice change triggers a
    // refetch, which the wrong identity fails; the last good card stays in the status. Moved
    // back, the card is discovered again.
    endpoint_slice(&api, "team-beta", "specialist", orchestrator_inbound);
    let took = eventually(
        "specialist refetched and refused",
        Duration::from_secs(10),
        &controller.log,
        || condition(&api, "team-beta", "specialist", "CardDiscovered", "reason") == "FetchFailed",
    );
    eprintln!("EndpointSlice change → refetch refused in {took:?}");
    let message = condition(&api, "team-beta", "specialist", "CardDiscovered", "message");
    assert!(message.contains(ORCHESTRATOR_ID), "{message}");
    assert_eq!(
        condition(&api, "team-beta", "specialist", "Ready", "status"),
        "False"
    );
    assert_eq!(
        agent_field(&api, "team-beta", "specialist", ".status.card.cardHash"),
        hash
    );
    endpoint_slice(&api, "team-beta", "specialist", specialist_inbound);
    eventually(
        "specialist card again",
        Duration::from_secs(10),
        &controller.log,
        || condition(&api, "team-beta", "specialist", "Ready", "status") == "True",
    );

    // The specialist's Deployment gets the mode; a mode change rolls it.
    api.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: specialist, namespace: team-beta}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: specialist}}\n  template:\n    metadata: {labels: {app: specialist}}\n    spec: {containers: [{name: app, image: example.invalid/specialist}]}\n",
    );
    let template = |key: &str| {
        String::from_utf8_lossy(
            &api.kubectl(&[
                "get",
                "deployment",
                "specialist",
                "-n",
                "team-beta",
                "-o",
                &format!("jsonpath={{.spec.template.metadata.annotations.{key}}}"),
            ])
            .stdout,
        )
        .into_owned()
    };
    // The mode of each ReplicaSet's pod template: the Deployment makes one per template.
    let replica_set_modes = || {
        api.kubectl_ok(&[
            "get",
            "replicasets",
            "-n",
            "team-beta",
            "-o",
            r#"jsonpath={range .items[*]}{.spec.template.metadata.annotations.warden\.dev/mtls-mode}{" "}{end}"#,
        ])
    };
    let has_replica_set = |mode: &str| replica_set_modes().split_whitespace().any(|m| m == mode);
    eventually(
        "strict annotation",
        Duration::from_secs(10),
        &controller.log,
        || template("warden\\.dev/mtls-mode") == "strict",
    );
    eventually(
        "a strict ReplicaSet",
        Duration::from_secs(30),
        &controller.log,
        || has_replica_set("strict"),
    );
    api.kubectl_ok(&[
        "patch",
        "agents.warden.dev",
        "specialist",
        "-n",
        "team-beta",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"mtls":{"mode":"Permissive"}}}"#,
    ]);
    let took = eventually(
        "permissive annotation",
        Duration::from_secs(10),
        &controller.log,
        || template("warden\\.dev/mtls-mode") == "permissive",
    );
    eprintln!("mode change → pod template annotated in {took:?}");
    let took = eventually(
        "a new ReplicaSet",
        Duration::from_secs(30),
        &controller.log,
        || has_replica_set("permissive"),
    );
    eprintln!("… → new ReplicaSet in {took:?}");
    assert_eq!(
        agent_field(&api, "team-beta", "specialist", ".status.mtlsMode"),
        "Permissive"
    );

    // Relabelling team-alpha: the orchestrator's tool is no longer admitted.
    api.kubectl_ok(&["label", "namespace", "team-alpha", "a2a-access-"]);
    let took = eventually(
        "orchestrator Accepted=False",
        Duration::from_secs(5),
        &controller.log,
        || condition(&api, "team-alpha", "orchestrator", "Accepted", "status") == "False",
    );
    eprintln!("namespace relabel → Accepted=False (seen by kubectl polling) in {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "Accepted flipped after {took:?}"
    );
    assert_eq!(
        condition(&api, "team-alpha", "orchestrator", "Accepted", "reason"),
        "CrossNamespaceReferenceDenied"
    );

    let (status, _) = http_get(controller.admin, "/readyz");
    assert_eq!(status, "200");
    let (_, metrics) = http_get(controller.admin, "/metrics");
    for line in [
        "warden_controller_leader 1",
        "warden_controller_spire_available 1",
        "warden_controller_card_fetches_total{transport=\"mtls\",result=\"ok\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    // The body is in the format its Content-Type names (Prometheus 3 refuses a mismatch).
    assert!(
        !metrics.contains("# EOF"),
        "text 0.0.4 has no # EOF:\n{metrics}"
    );
    let url = format!("http://{}/metrics", controller.admin);
    let content_type = |accept: &str| {
        let out = curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{content_type}",
            "-H",
            accept,
            &url,
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        content_type("Accept: */*"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(
        content_type("Accept: application/openmetrics-text"),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_nothing_forbidden(&controller.log);

    // The kill switch: a leader with --enable-verified-fetch=false fetches over plain HTTP
    // although it holds an SVID (which the Strict specialist's sidecar refuses).
    drop(controller);
    let killed = start_controller(
        &api,
        "controller-b",
        &[
            "--workload-api",
            &spire.endpoint(),
            "--enable-verified-fetch=false",
        ],
    );
    eventually(
        "a plain-HTTP fetch",
        Duration::from_secs(20),
        &killed.log,
        || {
            condition(&api, "team-beta", "specialist", "CardDiscovered", "message")
                .contains("GET http://")
        },
    );
    assert_eq!(
        condition(&api, "team-beta", "specialist", "CardDiscovered", "reason"),
        "FetchFailed"
    );
    let log = std::fs::read_to_string(&killed.log).unwrap_or_default();
    assert!(log.contains("--enable-verified-fetch=false"), "{log}");
    assert_nothing_forbidden(&killed.log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_spire_mtls_is_unavailable_until_the_csi_driver_appears() {
    let Some(api) = KubeApi::start() else { return };
    let _timer = TierTimer::new("kube controller (no SPIRE)");
    install(&api);
    apply_example(&api);
    let app = warden_testkit::app::start().await;
    endpoint_slice(&api, "team-beta", "specialist", app.addr);
    let controller = start_controller(
        &api,
        "controller-a",
        &[
            "--require-a2a-signature",
            "--signature-audit-mode=true",
            "--enforce-network-policies",
        ],
    );
    eventually(
        "SPIREUnavailable",
        Duration::from_secs(30),
        &controller.log,
        || condition(&api, "team-beta", "specialist", "MTLSReady", "reason") == "SPIREUnavailable",
    );
    assert_eq!(
        condition(&api, "team-beta", "specialist", "MTLSReady", "status"),
        "False"
    );
    assert_eq!(
        condition(&api, "team-beta", "specialist", "MTLSReady", "message"),
        "mTLS requires SPIRE; either deploy SPIRE or set mtls.mode: Disabled"
    );
    eventually(
        "MeshConfig Accepted",
        Duration::from_secs(10),
        &controller.log,
        || {
            api.kubectl_ok(&[
                "get",
                "meshconfig",
                "mesh",
                "-o",
                r#"jsonpath={.status.conditions[?(@.type=="Accepted")].status}"#,
            ]) == "True"
        },
    );
    // A malformed Agent (no webhook here to refuse it) is not accepted, naming its field;
    // the others keep their status.
    api.apply(
        "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: broken, namespace: team-beta}\nspec:\n  allowedNamespaces:\n    from: Selector\n    selector: {matchExpressions: [{key: a, operator: Sometimes}]}\n",
    );
    eventually(
        "broken Agent Invalid",
        Duration::from_secs(10),
        &controller.log,
        || condition(&api, "team-beta", "broken", "Accepted", "reason") == "Invalid",
    );
    let message = condition(&api, "team-beta", "broken", "Accepted", "message");
    assert!(
        message.contains("spec.allowedNamespaces.selector.matchExpressions[0].operator"),
        "{message}"
    );
    assert_eq!(
        condition(&api, "team-beta", "specialist", "Accepted", "status"),
        "True"
    );
    // No socket: the card is fetched over plain HTTP, and says so. MTLSReady does not block Ready.
    eventually(
        "card over http",
        Duration::from_secs(15),
        &controller.log,
        || {
            agent_field(
                &api,
                "team-beta",
                "specialist",
                ".status.card.transportSecurity",
            ) == "http"
        },
    );
    assert_eq!(
        agent_field(
            &api,
            "team-beta",
            "specialist",
            ".status.card.attestedSpiffeId"
        ),
        ""
    );
    assert_eq!(
        condition(&api, "team-beta", "specialist", "Ready", "status"),
        "True"
    );
    eventually(
        "Warning event",
        Duration::from_secs(10),
        &controller.log,
        || {
            let events = api.kubectl_ok(&["get", "events", "-n", "team-beta"]);
            events.contains("Warning") && events.contains("SPIREUnavailable")
        },
    );

    // A second replica: stands by, ready, and without the deprecated flags warns of nothing.
    let standby = start_controller(&api, "controller-b", &[]);
    eventually(
        "standby ready",
        Duration::from_secs(30),
        &standby.log,
        || http_get(standby.admin, "/readyz").0 == "200",
    );
    let (_, metrics) = http_get(standby.admin, "/metrics");
    assert!(metrics.contains("warden_controller_leader 0"), "{metrics}");

    // SPIRE deployed later: the SPIFFE CSI driver appears, MTLSReady turns True by itself.
    api.apply(
        "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {name: csi.spiffe.io}\nspec: {attachRequired: false, podInfoOnMount: true, volumeLifecycleModes: [Ephemeral]}\n",
    );
    let took = eventually(
        "SPIREAvailable",
        Duration::from_secs(10),
        &controller.log,
        || condition(&api, "team-beta", "specialist", "MTLSReady", "status") == "True",
    );
    eprintln!("CSIDriver csi.spiffe.io → MTLSReady True in {took:?}");

    let holder = api.kubectl_ok(&[
        "get",
        "lease",
        "warden-controller",
        "-n",
        "warden-system",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, "controller-a");
    assert_nothing_forbidden(&controller.log);
    let leader_log = std::fs::read_to_string(&controller.log).unwrap();
    for flag in [
        "--require-a2a-signature",
        "--signature-audit-mode",
        "--enforce-network-policies",
    ] {
        assert!(
            leader_log.contains(&format!("{flag} is deprecated")),
            "no deprecation warning for {flag}:\n{leader_log}"
        );
    }
    let standby_log = std::fs::read_to_string(&standby.log).unwrap();
    assert!(!standby_log.contains("deprecated"), "{standby_log}");

    // The leader stops (SIGTERM: it releases the Lease); the standby takes over and writes.
    drop(controller);
    let lease_holder = || {
        api.kubectl_ok(&[
            "get",
            "lease",
            "warden-controller",
            "-n",
            "warden-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
    };
    let took = eventually(
        "standby takes over",
        Duration::from_secs(10),
        &standby.log,
        || lease_holder() == "controller-b",
    );
    eprintln!("leader stopped → standby holds the Lease in {took:?}");
    api.kubectl_ok(&["delete", "csidriver", "csi.spiffe.io"]);
    eventually(
        "the new leader writes",
        Duration::from_secs(10),
        &standby.log,
        || condition(&api, "team-beta", "specialist", "MTLSReady", "reason") == "SPIREUnavailable",
    );
    let (_, metrics) = http_get(standby.admin, "/metrics");
    assert!(metrics.contains("warden_controller_leader 1"), "{metrics}");
    assert_nothing_forbidden(&standby.log);
    drop(standby);
}
