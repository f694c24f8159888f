//! kagenti/rossoctl's `AgentRuntime` and mode annotations: kagenti's resolution order, every
//! field mapped or noticed, conflicts named on both sides; and a mesh mixing Warden's, kagent's
//! and kagenti's kinds.

mod common;

use warden_model::policy::{Caller, decide};
use warden_model::resources::MtlsMode;

fn contains_all(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
}

/// A Warden agent `team-beta/specialist` in a mesh whose default is Strict (so kagenti's
/// fallback to permissive is visible).
const MESH: &str = "apiVersion: warden.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: m}\nspec: {defaultMtlsMode: Strict}\n---\napiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: specialist, namespace: team-beta}\nspec: {}\n";

fn runtime(group: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: {group}/v1alpha1\nkind: AgentRuntime\nmetadata: {{name: rt, namespace: team-beta}}\nspec: {spec}\n"
    )
}

const TARGET: &str = "targetRef: {apiVersion: apps/v1, kind: Deployment, name: specialist}";

fn config_map(mode: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: authbridge-runtime-config, namespace: team-beta}}\ndata: {{mtls.mode: {mode}}}\n"
    )
}

fn mode_of(yaml: &str) -> MtlsMode {
    common::mesh(yaml)
        .agent("team-beta", "specialist")
        .unwrap()
        .mtls_mode
}

#[test]
fn the_mode_resolves_in_kagentis_order() {
    let cases: Vec<(String, MtlsMode, &str)> = vec![
        (String::new(), MtlsMode::Strict, "no runtime: the mesh default"),
        (
            runtime("agent.rossoctl.dev", &format!("{{{TARGET}, mtlsMode: disabled}}")),
            MtlsMode::Disabled,
            "the resource's mtlsMode",
        ),
        (
            runtime("agent.kagenti.dev", &format!("{{{TARGET}, mTLSMode: strict}}")),
            MtlsMode::Strict,
            "kagenti's group, the Go field's spelling",
        ),
        (
            format!(
                "{}{}",
                runtime("agent.rossoctl.dev", &format!("{{{TARGET}, mtlsMode: disabled}}")),
                config_map("strict")
            ),
            MtlsMode::Disabled,
            "the resource wins over the ConfigMap",
        ),
        (
            format!(
                "{}{}",
                runtime("agent.rossoctl.dev", &format!("{{{TARGET}}}")),
                config_map("disabled")
            ),
            MtlsMode::Disabled,
            "then the namespace ConfigMap",
        ),
        (
            runtime("agent.rossoctl.dev", &format!("{{{TARGET}, type: agent}}")),
            MtlsMode::Permissive,
            "then permissive, not the mesh default",
        ),
        (
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: specialist, namespace: team-beta}\nspec: {template: {metadata: {annotations: {rossoctl.io/mtls-mode: disabled}}}}\n".into(),
            MtlsMode::Disabled,
            "rossoctl's pod-template annotation",
        ),
        (
            "---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: specialist, namespace: team-beta}\nspec: {template: {metadata: {annotations: {kagenti.io/mtls-mode: permissive, warden.dev/mtls-mode: permissive}}}}\n".into(),
            MtlsMode::Permissive,
            "kagenti's and Warden's annotations agreeing",
        ),
    ];
    for (extra, expected, what) in cases {
        assert_eq!(mode_of(&format!("{MESH}{extra}")), expected, "{what}");
    }
}

#[test]
fn the_runtimes_type_label_is_noticed() {
    let manifests = common::manifests(&format!(
        "{MESH}{}",
        runtime("agent.rossoctl.dev", &format!("{{{TARGET}, type: agent}}"))
    ))
    .unwrap();
    assert_eq!(manifests.notices.len(), 1, "{:#?}", manifests.notices);
    contains_all(
        &manifests.notices[0],
        &[
            "document 3 (AgentRuntime.agent.rossoctl.dev team-beta/rt)",
            "spec.type: ignored",
        ],
    );
}

#[test]
fn errors_and_conflicts_name_the_resources() {
    let rossoctl = |spec: &str| runtime("agent.rossoctl.dev", spec);
    let cases: Vec<(String, &[&str])> = vec![
        (
            rossoctl(&format!("{{{TARGET}, mtlsMode: Strict}}")),
            &["document 3 (AgentRuntime.agent.rossoctl.dev team-beta/rt)", "spec.mtlsMode", "unknown variant `Strict`", "`strict`"],
        ),
        (
            rossoctl(&format!("{{{TARGET}, mtlsMod: strict}}")),
            &["spec", "unknown field `mtlsMod`"],
        ),
        (
            rossoctl("{targetRef: {kind: Deployment, nam: specialist}}"),
            &["spec.targetRef", "unknown field `nam`"],
        ),
        (
            rossoctl("{targetRef: {kind: Pod, name: specialist}}"),
            &["spec.targetRef.kind", "Deployment, StatefulSet or Sandbox"],
        ),
        (
            rossoctl("{targetRef: {apiVersion: v1, kind: Deployment, name: specialist}}"),
            &["spec.targetRef.apiVersion", "apps/v1"],
        ),
        (
            rossoctl("{targetRef: {kind: Deployment, name: nobody}}"),
            &["spec.targetRef.name", "no Agent team-beta/nobody"],
        ),
        (
            format!("{}{}", rossoctl(&format!("{{{TARGET}}}")), config_map("STRICT")),
            &["document 4 (ConfigMap team-beta/authbridge-runtime-config)", "data.mtls.mode", "expected disabled, permissive or strict"],
        ),
        (
            format!(
                "{}{}",
                rossoctl(&format!("{{{TARGET}, mtlsMode: strict}}")),
                rossoctl(&format!("{{{TARGET}, mtlsMode: strict}}")).replace("name: rt,", "name: rt2,")
            ),
            &["document 4 (AgentRuntime.agent.rossoctl.dev team-beta/rt2)", "already the target of", "document 3"],
        ),
        (
            format!(
                "{}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: specialist, namespace: team-beta}}\nspec: {{template: {{metadata: {{annotations: {{kagenti.io/mtls-mode: disabled}}}}}}}}\n",
                rossoctl(&format!("{{{TARGET}, mtlsMode: strict}}"))
            ),
            &["conflicting mTLS modes for agent team-beta/specialist", "annotation kagenti.io/mtls-mode", "disabled", "(AgentRuntime.agent.rossoctl.dev team-beta/rt)", "strict"],
        ),
        (
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: specialist, namespace: team-beta}\nspec: {template: {metadata: {annotations: {rossoctl.io/mtls-mode: strict, kagenti.io/mtls-mode: disabled}}}}\n".into(),
            &["(Deployment team-beta/specialist)", "kagenti.io/mtls-mode", "conflicts with rossoctl.io/mtls-mode"],
        ),
    ];
    for (extra, parts) in cases {
        let errors = common::errors(&format!("{MESH}{extra}"));
        assert_eq!(errors.len(), 1, "{extra}: {errors:#?}");
        contains_all(&errors[0], parts);
    }
    // The agent's own spec.mtls.mode against an AgentRuntime: both named.
    let errors = common::errors(&format!(
        "{}{}",
        MESH.replace("spec: {}\n", "spec: {mtls: {mode: Disabled}}\n"),
        rossoctl(&format!("{{{TARGET}, mtlsMode: strict}}"))
    ));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    contains_all(
        &errors[0],
        &[
            "conflicting mTLS modes for agent team-beta/specialist",
            "spec.mtls.mode",
            "(Agent team-beta/specialist)",
            "(AgentRuntime.agent.rossoctl.dev team-beta/rt)",
        ],
    );
    // Agreeing is no conflict.
    let yaml = format!(
        "{}{}",
        MESH.replace("spec: {}\n", "spec: {mtls: {mode: Strict}}\n"),
        rossoctl(&format!("{{{TARGET}, mtlsMode: strict}}"))
    );
    assert_eq!(mode_of(&yaml), MtlsMode::Strict);
}

/// Warden's, kagent's and kagenti's kinds in one mesh: each enforced, references across kinds
/// resolved, and two Agents of different kinds for one agent refused naming both.
#[test]
fn a_mixed_mesh() {
    let yaml = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-alpha, labels: {team: alpha}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-gamma}
---
apiVersion: warden.dev/v1alpha1
kind: Agent
metadata: {name: specialist, namespace: team-beta}
spec:
  allowedNamespaces: {from: Selector, selector: {matchLabels: {team: alpha}}}
---
apiVersion: kagent.dev/v1alpha2
kind: Agent
metadata: {name: orchestrator, namespace: team-alpha}
spec:
  type: Declarative
  declarative:
    tools: [{type: Agent, agent: {name: specialist, namespace: team-beta}}]
---
apiVersion: kagent.dev/v1alpha2
kind: Agent
metadata: {name: rogue, namespace: team-gamma}
spec:
  type: BYO
  byo: {deployment: {image: rogue:latest}}
---
apiVersion: agent.rossoctl.dev/v1alpha1
kind: AgentRuntime
metadata: {name: specialist, namespace: team-beta}
spec: {targetRef: {kind: Deployment, name: specialist}, mtlsMode: strict}
---
apiVersion: agent.kagenti.dev/v1alpha1
kind: AgentRuntime
metadata: {name: orchestrator, namespace: team-alpha}
spec: {targetRef: {kind: Deployment, name: orchestrator}, mtlsMode: disabled}
"#;
    let snapshot = common::mesh(yaml);
    let agent = |ns: &str, n: &str| snapshot.agent(ns, n).unwrap();
    assert_eq!(agent("team-beta", "specialist").mtls_mode, MtlsMode::Strict);
    assert_eq!(
        agent("team-alpha", "orchestrator").mtls_mode,
        MtlsMode::Disabled
    );
    assert_eq!(agent("team-gamma", "rogue").mtls_mode, MtlsMode::Permissive);
    assert!(agent("team-alpha", "orchestrator").accepted.status);
    let caller = |ns: &str, n: &str| Caller::Spiffe(agent(ns, n).spiffe_id.clone());
    let to_specialist =
        |c: &Caller| decide(&snapshot, c, "team-beta", "specialist", "SendMessage").allowed;
    assert!(to_specialist(&caller("team-alpha", "orchestrator")));
    assert!(!to_specialist(&caller("team-gamma", "rogue")));
    // kagent's default (no allowedNamespaces) is Same, enforced per request.
    assert!(
        !decide(
            &snapshot,
            &caller("team-beta", "specialist"),
            "team-alpha",
            "orchestrator",
            "SendMessage"
        )
        .allowed
    );

    let errors = common::errors(&format!(
        "{yaml}---\napiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {{name: orchestrator, namespace: team-alpha}}\nspec: {{}}\n"
    ));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    contains_all(
        &errors[0],
        &[
            "document 8 (Agent team-alpha/orchestrator)",
            "also declared at test.yaml: document 4 (Agent.kagent.dev team-alpha/orchestrator)",
        ],
    );
}
