//! `warden convert` output decides every call exactly as the manifests it was made from:
//! checked with the policy engine's `explain` over every (caller, target, method), and on the
//! compiled modes, tool acceptance and delegation headers.

mod common;

use std::path::Path;

use warden_model::loader::{Manifests, load_str};
use warden_model::policy::{CARD_METHOD, Caller, explain};
use warden_model::{MeshSnapshot, compile, convert};

/// The converted documents plus the original's Namespaces, Secrets and ConfigMaps (which
/// `convert` leaves as they are).
fn reload(original: &Manifests, converted: &str) -> MeshSnapshot {
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    load_str(
        Path::new("converted.yaml"),
        converted,
        &mut manifests,
        &mut errors,
    );
    assert!(
        errors.is_empty(),
        "the converted manifests load: {errors:#?}\n{converted}"
    );
    assert!(
        manifests.agents.iter().all(|a| a
            .origin
            .object
            .as_deref()
            .is_some_and(|o| o.starts_with("Agent "))),
        "every converted agent is a warden.dev Agent"
    );
    assert!(manifests.agent_runtimes.is_empty());
    manifests.namespaces = original.namespaces.clone();
    manifests.secrets = original.secrets.clone();
    manifests.config_maps = original.config_maps.clone();
    compile(&manifests, 1).unwrap_or_else(|e| panic!("{e:#?}\n{converted}"))
}

fn callers(snapshot: &MeshSnapshot) -> Vec<Caller> {
    let mut callers: Vec<Caller> = snapshot
        .agents()
        .iter()
        .map(|a| Caller::Spiffe(a.spiffe_id.clone()))
        .collect();
    callers.push(Caller::Anonymous);
    callers.push(Caller::Spiffe(snapshot.control_plane().gateway.clone()));
    callers.push(Caller::Spiffe(snapshot.control_plane().controller.clone()));
    callers.push(Caller::Spiffe(
        warden_identity::SpiffeId::new("spiffe://other.domain/ns/team-alpha/sa/orchestrator")
            .unwrap(),
    ));
    callers
}

fn assert_same_decisions(original: &MeshSnapshot, converted: &MeshSnapshot) -> usize {
    let mut pairs = 0;
    assert_eq!(original.agents().len(), converted.agents().len());
    for (a, b) in original.agents().iter().zip(converted.agents()) {
        assert_eq!(a.key(), b.key());
        assert_eq!(a.spiffe_id, b.spiffe_id, "{}", a.key());
        assert_eq!(a.mtls_mode, b.mtls_mode, "{}", a.key());
        assert_eq!(a.accepted, b.accepted, "{}", a.key());
        assert_eq!(a.tools, b.tools, "{}", a.key());
    }
    for caller in callers(original) {
        for target in original.agents() {
            for method in ["SendMessage", "GetTask", CARD_METHOD] {
                let before = explain(original, &caller, &target.namespace, &target.name, method);
                let after = explain(converted, &caller, &target.namespace, &target.name, method);
                assert_eq!(
                    before.decision,
                    after.decision,
                    "{caller} -> {} {method}\nbefore: {:#?}\nafter: {:#?}",
                    target.key(),
                    before.steps,
                    after.steps
                );
                pairs += 1;
            }
        }
    }
    pairs
}

#[test]
fn the_kagent_example_converts_to_the_same_decisions() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kagent-cross-namespace");
    let manifests = warden_model::load_path(&path).unwrap();
    let original = compile(&manifests, 1).unwrap();
    let text = convert(&manifests).unwrap();
    assert!(text.contains("apiVersion: warden.dev/v1alpha1"), "{text}");
    assert!(!text.contains("apiVersion: kagent.dev"), "{text}");
    assert!(!text.contains("kind: AgentRuntime"), "{text}");
    assert!(
        !text.contains("delegated-by-team-alpha"),
        "no Secret value is printed: {text}"
    );
    let converted = reload(&manifests, &text);
    let pairs = assert_same_decisions(&original, &converted);
    assert_eq!(pairs, 7 * 3 * 3, "every caller, target and method");
}

#[test]
fn a_mixed_mesh_converts_to_the_same_decisions() {
    let yaml = r#"
apiVersion: warden.dev/v1alpha1
kind: MeshConfig
metadata: {name: m}
spec: {trustDomain: example.org, defaultMtlsMode: Strict}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-alpha, labels: {team: alpha}}
---
apiVersion: warden.dev/v1alpha1
kind: Agent
metadata: {name: specialist, namespace: team-beta}
spec:
  allowedNamespaces: {from: Selector, selector: {matchExpressions: [{key: team, operator: In, values: [alpha]}]}}
  deniedCallers: [spiffe://example.org/ns/team-alpha/sa/intern]
---
apiVersion: kagent.dev/v1alpha2
kind: Agent
metadata: {name: orchestrator, namespace: team-alpha}
spec:
  type: Declarative
  allowedNamespaces: {from: All}
  declarative:
    modelConfig: m
    deployment: {serviceAccountName: orch}
    tools:
      - {type: Agent, agent: {name: specialist, namespace: team-beta}, headersFrom: [{name: X-Team, valueFrom: {type: ConfigMap, name: team, key: name}}]}
      - {type: McpServer, mcpServer: {name: tools}}
---
apiVersion: kagent.dev/v1alpha2
kind: Agent
metadata: {name: intern, namespace: team-alpha}
spec:
  type: Declarative
  declarative:
    tools: [{type: Agent, agent: {name: specialist, namespace: team-beta}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: team, namespace: team-alpha}
data: {name: alpha}
---
apiVersion: agent.rossoctl.dev/v1alpha1
kind: AgentRuntime
metadata: {name: intern, namespace: team-alpha}
spec: {targetRef: {kind: Deployment, name: intern}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: orchestrator, namespace: team-alpha}
spec: {template: {metadata: {annotations: {kagenti.io/mtls-mode: disabled}}}}
"#;
    let manifests = common::manifests(yaml).unwrap();
    let original = compile(&manifests, 1).unwrap();
    let text = convert(&manifests).unwrap();
    let converted = reload(&manifests, &text);
    let pairs = assert_same_decisions(&original, &converted);
    assert!(pairs > 0);
    // The modes kagenti's resources decided are written out.
    let orchestrator = converted.agent("team-alpha", "orchestrator").unwrap();
    assert_eq!(orchestrator.mtls_mode, warden_model::MtlsMode::Disabled);
    assert_eq!(orchestrator.service_account, "orch");
    assert_eq!(
        converted.agent("team-alpha", "intern").unwrap().mtls_mode,
        warden_model::MtlsMode::Permissive
    );
}

#[test]
fn invalid_manifests_are_not_converted() {
    let manifests = common::manifests(
        "apiVersion: kagent.dev/v1alpha2\nkind: Agent\nmetadata: {name: a, namespace: b}\nspec: {type: Declarative, declarative: {deployment: {serviceAccountName: Bad_SA}}}\n",
    )
    .unwrap();
    let errors = convert(&manifests).unwrap_err();
    assert!(
        errors[0]
            .to_string()
            .contains("spec.declarative.deployment.serviceAccountName")
    );
}
