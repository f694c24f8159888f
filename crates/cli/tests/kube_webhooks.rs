//! Warden's CRDs, `warden install` and both admission webhooks against a real kube-apiserver
//! (etcd + kube-apiserver from the testkit's `KubeApi`; no kubelet). The webhooks are served by
//! a real `warden webhook` process over TLS on loopback and called by the apiserver, the way
//! envtest-based operators are tested. One apiserver for the whole scenario: it is the
//! expensive part.
//!
//! Skipped, loudly, when scripts/install-test-deps.sh has not built the Kubernetes binaries.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{WARDEN, curl};
use warden_testkit::deps::TierTimer;
use warden_testkit::kube_api::KubeApi;
use warden_testkit::process::{Running, free_addr, spawn_logged, wait_listening};

fn warden(args: &[&str]) -> Output {
    Command::new(WARDEN)
        .args(args)
        .output()
        .expect("run warden")
}

fn stdout_ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl <verb> -f -` with `yaml`; (success, stdout + stderr).
fn kubectl_stdin(api: &KubeApi, args: &[&str], yaml: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("kubectl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn kubectl_path() -> std::path::PathBuf {
    warden_testkit::deps::bin_dir().join("kubectl")
}

fn start_webhook(api: &KubeApi, addr: SocketAddr, tls_dir: &Path) -> Running {
    let log = api.dir().join("webhook.log");
    let process = spawn_logged(
        Command::new(WARDEN)
            .args(["webhook", "--kubeconfig"])
            .arg(api.kubeconfig())
            .args(["--listen", &addr.to_string(), "--tls-dir"])
            .arg(tls_dir)
            .args(["--image", "warden:test", "--trust-domain", "warden.local"]),
        &log,
    );
    wait_listening(addr, Duration::from_secs(20));
    process
}

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-alpha, labels: {a2a-access: specialist}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-beta}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-gamma}
---
apiVersion: warden.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {trustDomain: warden.local, defaultMtlsMode: Permissive}
---
apiVersion: warden.dev/v1alpha1
kind: Agent
metadata: {name: specialist, namespace: team-beta}
spec:
  mtls: {mode: Strict}
  allowedNamespaces:
    from: Selector
    selector: {matchLabels: {a2a-access: specialist}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: specialist, namespace: team-beta}
"#;

const ORCHESTRATOR: &str = r#"
apiVersion: warden.dev/v1alpha1
kind: Agent
metadata: {name: orchestrator, namespace: team-alpha}
spec:
  tools:
    - agentRef: {name: specialist, namespace: team-beta}
      headersFrom:
        - {name: X-Team, value: team-alpha}
"#;

const ROGUE: &str = r#"
apiVersion: warden.dev/v1alpha1
kind: Agent
metadata: {name: rogue, namespace: team-gamma}
spec:
  tools:
    - agentRef: {name: specialist, namespace: team-beta}
"#;

const KAGENT_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: agents.kagent.dev}
spec:
  group: kagent.dev
  names: {kind: Agent, plural: agents, singular: agent}
  scope: Namespaced
  versions:
    - name: v1alpha2
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

const KAGENT_ROGUE: &str = r#"
apiVersion: kagent.dev/v1alpha2
kind: Agent
metadata: {name: rogue, namespace: team-gamma}
spec:
  type: Declarative
  declarative:
    tools:
      - type: Agent
        agent: {name: specialist, namespace: team-beta}
"#;

const BAD_SELECTOR: &str = r#"apiVersion: warden.dev/v1alpha1
kind: Agent
metadata: {name: picky, namespace: team-beta}
spec:
  allowedNamespaces:
    from: Selector
    selector:
      matchExpressions:
        - {key: tier, operator: Near, values: [internal]}
"#;

fn pod(name: &str, labels: &str, annotations: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: team-beta
  labels: {labels}
  annotations: {annotations}
spec:
  serviceAccountName: specialist
  automountServiceAccountToken: false
  containers:
    - {{name: app, image: "agent:1", ports: [{{containerPort: 8080}}]}}
"#
    )
}

fn pod_json(api: &KubeApi, name: &str) -> serde_json::Value {
    let text = api.kubectl_ok(&["get", "pod", name, "-n", "team-beta", "-o", "json"]);
    serde_json::from_str(&text).expect("pod json")
}

fn sidecar_mode(pod: &serde_json::Value) -> Option<String> {
    let sidecar = pod["spec"]["initContainers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "warden-sidecar")?;
    sidecar["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == "MTLS_MODE")
        .and_then(|e| e["value"].as_str())
        .map(str::to_owned)
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn install_crds_and_webhooks_on_a_real_apiserver() {
    let Some(api) = KubeApi::start() else {
        return; // the fixture printed which tool is missing
    };
    let _timer = TierTimer::new("kube webhooks (real kube-apiserver)");
    let tls_dir = api.dir().join("webhook-tls");
    let addr = free_addr();
    let url = format!("https://{addr}");

    // 1. warden install | kubectl apply -f -, webhooks pointed at a local warden process.
    let manifests = stdout_ok(
        warden(&[
            "install",
            "--webhook-url",
            &url,
            "--tls-dir",
            tls_dir.to_str().unwrap(),
            "--image",
            "warden:test",
        ]),
        "warden install",
    );
    let mut webhook = start_webhook(&api, addr, &tls_dir);
    let (ok, out) = kubectl_stdin(&api, &["apply"], &manifests);
    assert!(ok, "kubectl apply of warden install failed:\n{out}");
    api.kubectl_ok(&[
        "wait",
        "--for",
        "condition=Established",
        "crd/agents.warden.dev",
        "crd/meshconfigs.warden.dev",
        "--timeout",
        "60s",
    ]);
    eprintln!("step: installed, CRDs Established");

    // 2. A malformed AdmissionReview, straight to the process over TLS: a clear denial.
    let ca = tls_dir.join("ca.crt");
    let out = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        "content-type: application/json",
        "--data",
        "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u-1\",\"operation\":7}}",
        &format!("{url}/validate"),
    ]);
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)
        .expect("the webhook answers malformed reviews with JSON");
    assert_eq!(body["response"]["allowed"], false, "{body}");
    assert_eq!(body["response"]["uid"], "u-1", "{body}");
    let message = body["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("malformed AdmissionReview: request"),
        "{message}"
    );

    // 3. A valid example applies through the validating webhook.
    let (ok, out) = kubectl_stdin(&api, &["apply"], CLUSTER);
    assert!(ok, "the valid example was refused:\n{out}");
    let (ok, out) = kubectl_stdin(&api, &["apply"], ORCHESTRATOR);
    assert!(
        ok,
        "an admitted cross-namespace reference was refused:\n{out}"
    );

    // 4. An unauthorised cross-namespace tool reference is refused by kubectl apply, naming
    //    both sides and the rule.
    let (ok, out) = kubectl_stdin(&api, &["apply"], ROGUE);
    assert!(!ok, "the rogue's reference was admitted:\n{out}");
    for needle in [
        "admission webhook \"agents.validate.warden.dev\" denied the request",
        "CrossNamespaceReferenceDenied",
        "team-gamma/rogue",
        "team-beta/specialist",
        "namespace_selector",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
    eprintln!("step: rogue refused: {}", out.trim());

    // 4b. kagent's own Agent kind is enforced the same way (a minimal stand-in for kagent's
    //     CRD: Warden reads the fields it knows).
    let (ok, out) = kubectl_stdin(&api, &["apply"], KAGENT_CRD);
    assert!(ok, "{out}");
    api.kubectl_ok(&[
        "wait",
        "--for",
        "condition=Established",
        "crd/agents.kagent.dev",
        "--timeout",
        "60s",
    ]);
    let (ok, out) = kubectl_stdin(&api, &["apply"], KAGENT_ROGUE);
    assert!(!ok, "kagent's rogue was admitted:\n{out}");
    for needle in [
        "admission webhook \"agents.validate.kagent.dev\" denied the request",
        "Agent.kagent.dev team-gamma/rogue",
        "CrossNamespaceReferenceDenied",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }

    // 5. An invalid selector is refused with its field, in `warden validate`'s words.
    let bad = api.dir().join("bad-selector.yaml");
    std::fs::write(&bad, BAD_SELECTOR).unwrap();
    let validate = String::from_utf8_lossy(&warden(&["validate", bad.to_str().unwrap()]).stdout)
        .trim()
        .to_owned();
    let prefix = format!("{}: document 1 (", bad.display());
    assert!(validate.starts_with(&prefix), "{validate}");
    let expected = validate[prefix.len()..].replacen("): ", ": ", 1);
    assert!(
        expected.contains("spec.allowedNamespaces.selector.matchExpressions[0].operator"),
        "{expected}"
    );
    let (ok, out) = kubectl_stdin(&api, &["apply"], BAD_SELECTOR);
    assert!(!ok, "the bad selector was admitted");
    assert!(out.contains(&expected), "{expected:?} not in:\n{out}");

    // 6. kubectl get agents shows the columns (fully qualified: kagent's CRD is installed
    //    too, and a bare `agents` would pick one of the two).
    let table = api.kubectl_ok(&["get", "agents.warden.dev", "-A"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "MODE",
            "ACCEPTED",
            "MTLSREADY",
            "CARD",
            "AGE"
        ],
        "{table}"
    );
    assert!(
        table.contains("specialist") && table.contains("orchestrator"),
        "{table}"
    );
    assert!(!table.contains("rogue"), "{table}");

    // 7. A Pod of the agent's workload comes back with the sidecar and MTLS_MODE; an
    //    annotation overrides the Agent; other pods are untouched.
    let (ok, out) = kubectl_stdin(
        &api,
        &["create"],
        &pod("specialist-0", "{warden.dev/agent: specialist}", "{}"),
    );
    assert!(ok, "{out}");
    let injected = pod_json(&api, "specialist-0");
    assert_eq!(
        sidecar_mode(&injected).as_deref(),
        Some("strict"),
        "{injected}"
    );
    let sidecar = &injected["spec"]["initContainers"][0];
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["readinessProbe"]["httpGet"]["port"], 15020);
    let volumes = injected["spec"]["volumes"].to_string();
    assert!(volumes.contains("csi.spiffe.io"), "{volumes}");
    let (ok, out) = kubectl_stdin(
        &api,
        &["create"],
        &pod(
            "specialist-1",
            "{warden.dev/agent: specialist}",
            "{warden.dev/mtls-mode: permissive}",
        ),
    );
    assert!(ok, "{out}");
    assert_eq!(
        sidecar_mode(&pod_json(&api, "specialist-1")).as_deref(),
        Some("permissive")
    );
    let (ok, out) = kubectl_stdin(&api, &["create"], &pod("web", "{app: web}", "{}"));
    assert!(ok, "{out}");
    let web = pod_json(&api, "web");
    assert!(
        sidecar_mode(&web).is_none(),
        "a non-agent pod was injected: {web}"
    );
    eprintln!("step: sidecar injected");

    // The process counted what it decided.
    let metrics = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-w",
        "\n%{content_type}",
        &format!("{url}/metrics"),
    ]);
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let (metrics, content_type) = metrics.rsplit_once('\n').unwrap_or_default();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        !metrics.contains("# EOF"),
        "text 0.0.4 has no # EOF:\n{metrics}"
    );
    for series in [
        r#"warden_admission_reviews_total{webhook="validating",kind="Agent",decision="deny"}"#,
        r#"warden_admission_reviews_total{webhook="mutating",kind="Pod",decision="patch"}"#,
        r#"warden_admission_reviews_total{webhook="validating",kind="",decision="malformed"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} not in:\n{metrics}");
    }

    // 8. The webhook stopped: an Agent apply fails closed, saying why.
    webhook.terminate();
    assert_eq!(webhook.wait_exit(Duration::from_secs(35)), Some(0));
    let (ok, out) = kubectl_stdin(
        &api,
        &["apply"],
        &ORCHESTRATOR.replace("orchestrator", "helper"),
    );
    assert!(!ok, "an Agent was admitted with the webhook down:\n{out}");
    assert!(
        out.contains("failed calling webhook \"agents.validate.warden.dev\""),
        "{out}"
    );
    eprintln!("step: webhook down, fails closed: {}", out.trim());

    // 9. warden uninstall | kubectl delete removes what install made.
    let names = stdout_ok(
        warden(&["uninstall", "--webhook-url", &url]),
        "warden uninstall",
    );
    let (ok, out) = kubectl_stdin(
        &api,
        &["delete", "--ignore-not-found", "--wait=false"],
        &names,
    );
    assert!(ok, "{out}");
    wait_for("CRDs deleted", Duration::from_secs(60), || {
        !api.kubectl(&["get", "crd", "agents.warden.dev"])
            .status
            .success()
    });
    let left = api.kubectl_ok(&[
        "get",
        "validatingwebhookconfigurations,mutatingwebhookconfigurations,clusterroles",
        "-l",
        "app.kubernetes.io/part-of=warden",
        "-o",
        "name",
    ]);
    assert!(left.trim().is_empty(), "left behind: {left}");

    // 10. The in-cluster layout (webhook Deployment, Service, Secret with a generated
    //     certificate, caBundle) applies too, and uninstalls. Another namespace: without
    //     kube-controller-manager a deleted namespace stays Terminating.
    let layout = ["--namespace", "warden-incluster"];
    let install = stdout_ok(warden(&[&["install"][..], &layout].concat()), "install");
    let (ok, out) = kubectl_stdin(&api, &["apply"], &install);
    assert!(ok, "kubectl apply of the in-cluster install failed:\n{out}");
    assert!(
        out.contains("deployment.apps/warden-webhook created"),
        "{out}"
    );
    assert!(out.contains("secret/warden-webhook-tls created"), "{out}");
    let (ok, out) = kubectl_stdin(
        &api,
        &["delete", "--ignore-not-found", "--wait=false"],
        &stdout_ok(warden(&[&["uninstall"][..], &layout].concat()), "uninstall"),
    );
    assert!(ok, "{out}");
}

/// `warden admission` answers offline what the validating webhook would: the manifests stand
/// in for the cluster, and DENY lines keep `warden validate`'s file and document.
#[test]
fn admission_checks_manifests_offline() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster.yaml");
    std::fs::write(&cluster, CLUSTER).unwrap();
    std::fs::write(dir.path().join("orchestrator.yaml"), ORCHESTRATOR).unwrap();
    let out = warden(&["admission", dir.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("ALLOW Agent team-alpha/orchestrator"),
        "{text}"
    );

    let rogue = dir.path().join("rogue.yaml");
    std::fs::write(&rogue, ROGUE).unwrap();
    let out = warden(&["admission", dir.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let expected = format!(
        "DENY {}: document 1 (Agent team-gamma/rogue): spec.tools: Accepted=False CrossNamespaceReferenceDenied",
        rogue.display()
    );
    assert!(text.contains(&expected), "{expected:?} not in:\n{text}");
    assert!(text.contains("1 refused"), "{text}");

    let out = warden(&["admission", "-o", "json", dir.path().to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["denied"], 1, "{json}");
}

/// Every option of `warden install` is a flag with help, and `--tls-dir` keeps keys 0600 and
/// the same CA across runs.
#[test]
fn install_flags_and_tls_dir() {
    use std::os::unix::fs::PermissionsExt;
    let help = stdout_ok(warden(&["install", "--help"]), "warden install --help");
    for flag in [
        "--namespace",
        "--image",
        "--trust-domain",
        "--spiffe-socket",
        "--spiffe-host-dir",
        "--webhook-url",
        "--tls-dir",
        "--cert-manager",
        "--gateway-replicas",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let args = [
        "install",
        "--webhook-url",
        "https://127.0.0.1:9443",
        "--tls-dir",
        tls.to_str().unwrap(),
    ];
    let first = stdout_ok(warden(&args), "install");
    let second = stdout_ok(warden(&args), "install again");
    assert_eq!(first, second, "same caBundle and objects on a second run");
    for key in ["ca.key", "tls.key"] {
        let mode = std::fs::metadata(tls.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let out = warden(&[
        "install",
        "--webhook-url",
        "http://127.0.0.1:9443",
        "--tls-dir",
        tls.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("https only"));
}
