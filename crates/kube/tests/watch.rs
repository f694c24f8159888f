//! `warden_kube::watch` against a real kube-apiserver (the testkit's `KubeApi`: etcd +
//! kube-apiserver, no kubelet): objects applied with kubectl reach the compiled snapshot, a
//! Namespace relabel flips `Accepted` and a Secret rotation changes the delegation header
//! within a second, and a malformed Agent is reported by name while the last good snapshot
//! stays. Skipped, loudly, when scripts/install-test-deps.sh has not built the binaries.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_kube::watch::{MeshState, MeshWatch, WatchOptions};
use warden_testkit::deps::TierTimer;
use warden_testkit::kube_api::KubeApi;

/// Applies the CRDs and waits until the apiserver serves them.
fn install_crds(api: &KubeApi) {
    let yaml: Vec<String> = warden_kube::crd::crds()
        .iter()
        .map(|crd| serde_yaml_ng::to_string(crd).expect("CRD as YAML"))
        .collect();
    api.apply_crds(&yaml.join("---\n"));
}

fn example(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/cross-namespace-a2a")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Waits (at most `limit`) for a state that satisfies `what`; the state and how long it took.
async fn wait_for(
    watch: &MeshWatch,
    limit: Duration,
    what: &str,
    test: impl Fn(&MeshState) -> bool,
) -> (Arc<MeshState>, Duration) {
    let started = Instant::now();
    let mut rx = watch.subscribe();
    let found = tokio::time::timeout(limit, rx.wait_for(|s| test(s))).await;
    match found {
        Ok(Ok(state)) => (state.clone(), started.elapsed()),
        _ => panic!(
            "no state where {what} within {limit:?}; last: {:?}",
            watch.current()
        ),
    }
}

fn accepted(state: &MeshState, ns: &str, name: &str) -> Option<bool> {
    let snapshot = state.snapshot.as_ref()?;
    Some(snapshot.agent(ns, name)?.accepted.status)
}

fn delegation_token(state: &MeshState) -> Option<String> {
    let agent = state
        .snapshot
        .as_ref()?
        .agent("team-alpha", "orchestrator")?;
    let tool = agent.tools.first()?;
    tool.headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("x-delegation-token"))
        .map(|(_, value)| value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_compiles_live_and_keeps_the_last_good_snapshot() {
    let Some(api) = KubeApi::start() else { return };
    let _timer = TierTimer::new("kube watch");
    install_crds(&api);
    api.apply(&example("mesh.yaml"));
    api.apply(&example("agents.yaml"));

    let client = warden_kube::client(Some(api.kubeconfig()))
        .await
        .expect("client");
    let watch = MeshWatch::start(client, WatchOptions::default());
    let first = tokio::time::timeout(Duration::from_secs(30), watch.synced())
        .await
        .expect("caches sync within 30 s");
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let (state, _) = wait_for(&watch, Duration::from_secs(5), "all three agents", |s| {
        s.snapshot.as_ref().is_some_and(|s| s.agents().len() == 3)
    })
    .await;
    assert_eq!(accepted(&state, "team-alpha", "orchestrator"), Some(true));
    assert_eq!(accepted(&state, "team-gamma", "rogue"), Some(false));
    let rogue = state
        .snapshot
        .as_ref()
        .and_then(|s| s.agent("team-gamma", "rogue"))
        .expect("rogue");
    assert_eq!(rogue.accepted.reason, "CrossNamespaceReferenceDenied");
    assert_eq!(
        delegation_token(&state).as_deref(),
        Some("delegated-by-team-alpha")
    );

    // Relabelling team-alpha: the orchestrator is no longer admitted.
    api.kubectl_ok(&["label", "namespace", "team-alpha", "a2a-access-"]);
    let (_, took) = wait_for(
        &watch,
        Duration::from_secs(1),
        "orchestrator Accepted=False",
        |s| accepted(s, "team-alpha", "orchestrator") == Some(false),
    )
    .await;
    eprintln!("namespace relabel → Accepted=False in {took:?}");
    api.kubectl_ok(&["label", "namespace", "team-alpha", "a2a-access=specialist"]);
    wait_for(
        &watch,
        Duration::from_secs(1),
        "orchestrator Accepted=True again",
        |s| accepted(s, "team-alpha", "orchestrator") == Some(true),
    )
    .await;

    // Rotating the headersFrom Secret changes the delegation header.
    api.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: orchestrator-delegation, namespace: team-alpha}\nstringData: {token: rotated}\n",
    );
    let (_, took) = wait_for(&watch, Duration::from_secs(1), "the rotated token", |s| {
        delegation_token(s).as_deref() == Some("rotated")
    })
    .await;
    eprintln!("secret rotation → new header in {took:?}");

    // A malformed Agent (no webhook here to refuse it): reported by name and field, and the
    // last good snapshot stays.
    let good_version = watch
        .current()
        .snapshot
        .as_ref()
        .map(|s| s.version())
        .expect("a snapshot");
    api.apply(
        "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: broken, namespace: team-beta}\nspec:\n  allowedNamespaces:\n    from: Selector\n    selector: {matchExpressions: [{key: a, operator: Sometimes}]}\n",
    );
    let (state, _) = wait_for(&watch, Duration::from_secs(2), "an error", |s| {
        !s.errors.is_empty()
    })
    .await;
    let errors: Vec<String> = state
        .errors_for("Agent team-beta/broken")
        .map(warden_kube::validate::located)
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.allowedNamespaces.selector.matchExpressions[0].operator")),
        "{errors:?} / {:?}",
        state.errors
    );
    assert_eq!(
        state.snapshot.as_ref().map(|s| s.version()),
        Some(good_version),
        "the last good snapshot stays"
    );
    api.kubectl_ok(&["delete", "agent.warden.dev", "broken", "-n", "team-beta"]);
    let (state, _) = wait_for(&watch, Duration::from_secs(2), "errors cleared", |s| {
        s.errors.is_empty()
    })
    .await;
    assert!(
        state.snapshot.as_ref().map(|s| s.version()) > Some(good_version),
        "a fresh snapshot once the cluster compiles again"
    );
}
