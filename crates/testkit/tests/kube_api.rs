//! The `KubeApi` fixture against the real etcd, kube-apiserver, kube-controller-manager and
//! kubectl that scripts/install-test-deps.sh builds: a CRD applied and read back, a
//! Deployment turned into a ReplicaSet and a Pending Pod, and nothing left behind.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use warden_testkit::deps::TierTimer;
use warden_testkit::kube_api::KubeApi;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.warden.dev
spec:
  group: smoke.warden.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer}
"#;

const WIDGET: &str = r#"
apiVersion: smoke.warden.dev/v1
kind: Widget
metadata: {name: w1, namespace: default}
spec: {size: 3}
"#;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: agent, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: example.invalid/agent:1}]
"#;

/// Polls `kubectl get ARGS -o name` until it lists something, up to `limit`.
fn wait_listed(api: &KubeApi, args: &[&str], limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let mut full = vec!["get"];
        full.extend(args);
        full.extend(["-o", "name"]);
        let out = api.kubectl_ok(&full);
        if !out.trim().is_empty() {
            return out;
        }
        assert!(start.elapsed() < limit, "nothing for kubectl get {args:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kubectl_applies_and_gets_a_crd_and_deployments_make_pending_pods() {
    let _timer = TierTimer::new("kube-api");
    let Some(api) = KubeApi::start_with_controller_manager() else {
        return;
    };
    let server = api.kubectl_ok(&["version", "-o", "json"]);
    assert!(server.contains("\"gitVersion\": \"v1.35"), "{server}");

    api.apply(CRD);
    api.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.smoke.warden.dev",
        "--timeout=30s",
    ]);
    assert!(
        api.apply(WIDGET)
            .contains("widget.smoke.warden.dev/w1 created")
    );
    let size = api.kubectl_ok(&["get", "widgets", "w1", "-o", "jsonpath={.spec.size}"]);
    assert_eq!(size, "3");
    // The schema is enforced by the real apiserver, not by us.
    let bad = api.kubectl(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":"big"}}"#,
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("spec.size"));

    api.apply(DEPLOYMENT);
    wait_listed(
        &api,
        &["replicasets", "-l", "app=agent"],
        Duration::from_secs(30),
    );
    let pod = wait_listed(&api, &["pods", "-l", "app=agent"], Duration::from_secs(30));
    let phase = api.kubectl_ok(&["get", pod.trim(), "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Pending", "no kubelet: the pod is never scheduled");

    let (dir, addr, pids) = (api.dir().to_owned(), api.addr, api.pids());
    assert_eq!(pids.len(), 3);
    drop(api);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} outlived the fixture"
        );
    }
    assert!(!dir.exists(), "the fixture's files are gone");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
        "the apiserver is stopped"
    );
}
