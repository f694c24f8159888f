//! What the compiler makes of references, Secrets and bad changes.

mod common;

use std::path::Path;

use warden_identity::SpiffeId;
use warden_model::policy::{Caller, decide};
use warden_model::{MeshSnapshot, SnapshotStore};

fn example() -> MeshSnapshot {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cross-namespace-a2a");
    warden_model::compile(&warden_model::load_path(&path).unwrap(), 7).unwrap()
}

#[test]
fn admitted_cross_namespace_reference_is_accepted_with_its_headers() {
    let snapshot = example();
    let orchestrator = snapshot.agent("team-alpha", "orchestrator").unwrap();
    assert!(orchestrator.accepted.status, "{:?}", orchestrator.accepted);
    assert_eq!(
        orchestrator.spiffe_id.as_str(),
        "spiffe://warden.local/ns/team-alpha/sa/orchestrator"
    );
    let tool = &orchestrator.tools[0];
    assert!(tool.accepted);
    assert_eq!(
        tool.headers,
        vec![
            (
                "X-Delegation-Token".to_owned(),
                "delegated-by-team-alpha".to_owned()
            ),
            ("X-Team".to_owned(), "team-alpha".to_owned()),
        ]
    );
    let specialist = snapshot.agent("team-beta", "specialist").unwrap();
    assert_eq!(specialist.mtls_mode, warden_model::MtlsMode::Strict);
    assert_eq!(snapshot.version(), 7);
}

#[test]
fn a_reference_the_target_does_not_admit_is_not_accepted_and_names_both_sides() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cross-namespace-a2a");
    let mut manifests = warden_model::load_path(&path).unwrap();
    // Give the rogue a tool reference to the specialist, whose selector team-gamma misses.
    let rogue = manifests
        .agents
        .iter_mut()
        .find(|a| a.resource.metadata.name.as_deref() == Some("rogue"))
        .unwrap();
    rogue
        .resource
        .spec
        .tools
        .push(warden_model::resources::ToolRef {
            agent_ref: warden_model::resources::AgentRef {
                name: "specialist".into(),
                namespace: Some("team-beta".into()),
            },
            headers_from: Vec::new(),
        });
    let snapshot = warden_model::compile(&manifests, 1).unwrap();
    let rogue = snapshot.agent("team-gamma", "rogue").unwrap();
    assert!(!rogue.accepted.status);
    assert_eq!(rogue.accepted.reason, "CrossNamespaceReferenceDenied");
    for part in [
        "team-gamma/rogue",
        "team-beta/specialist",
        "namespace_selector",
        "allowedNamespaces",
    ] {
        assert!(
            rogue.accepted.message.contains(part),
            "{part}: {}",
            rogue.accepted.message
        );
    }
    assert!(!rogue.tools[0].accepted);
    // The data plane decides the same way.
    let caller = Caller::Spiffe(rogue.spiffe_id.clone());
    assert!(!decide(&snapshot, &caller, "team-beta", "specialist", "SendMessage").allowed);
    // The example itself makes the same reference (its README shows Accepted=False): every
    // other agent of it is accepted.
    for agent in example().agents() {
        let rogue = agent.name == "rogue";
        assert_eq!(agent.accepted.status, !rogue, "{}", agent.name);
    }
}

#[test]
fn missing_secrets_keys_and_agents_are_reported_per_agent() {
    let base = "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: b, namespace: ns}\nspec: {}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: creds, namespace: ns}\nstringData: {token: t, file: \"t\\n\"}\n---\napiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: a, namespace: ns}\nspec:\n  tools:\n";
    let cases = [
        (
            "  - agentRef: {name: b}\n    headersFrom: [{name: X-T, valueFrom: {secretKeyRef: {name: nope, key: token}}}]\n",
            "SecretNotFound",
            "Secret ns/nope does not exist",
        ),
        (
            "  - agentRef: {name: b}\n    headersFrom: [{name: X-T, valueFrom: {secretKeyRef: {name: creds, key: other}}}]\n",
            "SecretNotFound",
            "Secret ns/creds has no key other",
        ),
        (
            "  - agentRef: {name: b}\n    headersFrom: [{name: X-T, valueFrom: {configMapKeyRef: {name: cm, key: k}}}]\n",
            "ConfigMapNotFound",
            "ConfigMap ns/cm does not exist",
        ),
        (
            // `kubectl create secret --from-file` keeps the file's final newline.
            "  - agentRef: {name: b}\n    headersFrom: [{name: X-T, valueFrom: {secretKeyRef: {name: creds, key: file}}}]\n",
            "InvalidHeaderValue",
            "header X-T: Secret ns/creds key file is not a valid HTTP header value",
        ),
        (
            "  - agentRef: {name: ghost}\n",
            "AgentNotFound",
            "tool ns/ghost does not exist",
        ),
    ];
    for (tools, reason, message) in cases {
        let snapshot = common::mesh(&format!("{base}{tools}"));
        let a = snapshot.agent("ns", "a").unwrap();
        assert!(!a.accepted.status);
        assert_eq!(a.accepted.reason, reason);
        assert!(
            a.accepted.message.contains(message),
            "{}",
            a.accepted.message
        );
        assert!(
            a.tools[0].headers.is_empty(),
            "headers of a rejected reference are dropped"
        );
    }
    let ok = common::mesh(&format!(
        "{base}  - agentRef: {{name: b}}\n    headersFrom: [{{name: X-T, valueFrom: {{secretKeyRef: {{name: creds, key: token}}}}}}]\n"
    ));
    assert_eq!(
        ok.agent("ns", "a").unwrap().tools[0].headers,
        vec![("X-T".into(), "t".into())]
    );
    // What the gateway sends, parsed when the snapshot was built: for a's identity calling b
    // only.
    let a = ok.agent("ns", "a").unwrap().spiffe_id.clone();
    let sent: Vec<_> = ok.delegation_headers(&a, "ns", "b").collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (sent[0].0.as_str(), sent[0].1.as_bytes()),
        ("x-t", &b"t"[..])
    );
    assert_eq!(ok.delegation_headers(&a, "ns", "a").count(), 0);
    let other = SpiffeId::new("spiffe://warden.local/ns/other/sa/a").unwrap();
    assert_eq!(ok.delegation_headers(&other, "ns", "b").count(), 0);
}

#[test]
fn a_delegation_header_named_with_an_underscore_or_with_a_control_character_is_refused() {
    let cases = [
        (
            "{name: X_Api_Key, value: k}",
            "headersFrom[0].name",
            "contains '_'",
        ),
        (
            "{name: X-Api-Key, value: \"k\\r\\nx-warden-caller: y\"}",
            "headersFrom[0].value",
            "not a valid HTTP header value",
        ),
    ];
    for (header, field, message) in cases {
        let manifests = format!(
            "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {{name: b, namespace: ns}}\nspec: {{}}\n---\napiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {{name: a, namespace: ns}}\nspec:\n  tools:\n  - agentRef: {{name: b}}\n    headersFrom: [{header}]\n"
        );
        let text = common::errors(&manifests).join("\n");
        assert!(
            text.contains(field) && text.contains(message),
            "{header}: {text}"
        );
    }
}

#[test]
fn a_hand_edited_snapshot_with_a_header_the_compiler_would_refuse_is_refused() {
    let ok = common::mesh(
        "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: b, namespace: ns}\nspec: {}\n---\napiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: a, namespace: ns}\nspec:\n  tools:\n  - agentRef: {name: b}\n    headersFrom: [{name: X-T, value: t}]\n",
    );
    let mut data = ok.data().clone();
    let a = data.agents.iter_mut().find(|a| a.name == "a").unwrap();
    a.tools[0].headers[0].1 = "t\r\nx-warden-caller: spiffe://warden.local/ns/ns/sa/admin".into();
    let error = MeshSnapshot::new(data).unwrap_err();
    assert!(
        error.contains("ns/a") && error.contains("\"X-T\" has an invalid value"),
        "{error}"
    );
}

#[test]
fn a_bad_change_never_replaces_the_last_good_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: a, namespace: ns}\nspec: {}\n").unwrap();
    let store = SnapshotStore::new();
    let first = store.reload(&file).unwrap();
    assert_eq!(first.version(), 1);
    std::fs::write(&file, "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: a, namespace: ns}\nspec: {allowedNamespaces: {from: Anyone}}\n").unwrap();
    let errors = store.reload(&file).unwrap_err();
    assert!(errors[0].to_string().contains("Anyone"));
    let current = store.current().unwrap();
    assert_eq!(current.version(), 1);
    assert!(current.agent("ns", "a").is_some());
    std::fs::write(&file, "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: b, namespace: ns}\nspec: {}\n").unwrap();
    let next = store.reload(&file).unwrap();
    assert_eq!(next.version(), 2);
    assert!(next.agent("ns", "a").is_none() && next.agent("ns", "b").is_some());
}

#[test]
fn snapshots_round_trip_through_json_and_decide_the_same() {
    let snapshot = example();
    let json = serde_json::to_string(&snapshot).unwrap();
    let back: MeshSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back.version(), snapshot.version());
    for (caller, ns, name) in [
        (
            "spiffe://warden.local/ns/team-alpha/sa/orchestrator",
            "team-beta",
            "specialist",
        ),
        (
            "spiffe://warden.local/ns/team-gamma/sa/rogue",
            "team-beta",
            "specialist",
        ),
        (
            "spiffe://warden.local/ns/team-alpha/sa/intern",
            "team-beta",
            "specialist",
        ),
    ] {
        let caller = Caller::Spiffe(SpiffeId::new(caller).unwrap());
        assert_eq!(
            decide(&back, &caller, ns, name, "SendMessage"),
            decide(&snapshot, &caller, ns, name, "SendMessage")
        );
    }
    // A hand-edited snapshot with a bad pattern is refused on load.
    let broken = json.replace("spiffe://warden.local/ns/team-alpha/sa/intern", "not-an-id");
    assert!(serde_json::from_str::<MeshSnapshot>(&broken).is_err());
}

#[test]
fn identities_map_back_to_their_agents() {
    let snapshot = example();
    let id = SpiffeId::new("spiffe://warden.local/ns/team-alpha/sa/orchestrator").unwrap();
    let names: Vec<String> = snapshot
        .agents_with_identity(&id)
        .map(|a| a.key())
        .collect();
    assert_eq!(names, ["team-alpha/orchestrator"]);
    let foreign = SpiffeId::new("spiffe://other.org/ns/team-alpha/sa/orchestrator").unwrap();
    assert_eq!(snapshot.agents_with_identity(&foreign).count(), 0);
}

#[test]
fn the_crds_carry_a_structural_schema() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(warden_model::Agent::crd()).unwrap();
    assert_eq!(crd["spec"]["group"], "warden.dev");
    assert_eq!(crd["spec"]["names"]["kind"], "Agent");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["card"]["x-kubernetes-preserve-unknown-fields"], true);
    assert_eq!(
        spec["allowedNamespaces"]["properties"]["from"]["enum"],
        serde_json::json!(["Same", "All", "Selector"])
    );
    let mesh = serde_json::to_value(warden_model::MeshConfig::crd()).unwrap();
    assert_eq!(mesh["spec"]["scope"], "Cluster");
}

/// Issue 11.4: the gateway keeps a caller's `Authorization` only for an Agent that opts in
/// with `forwardAuthorization: true`; an Agent that says nothing does not, and the choice
/// survives the snapshot's JSON.
#[test]
fn forwarding_authorization_is_off_unless_the_agent_opts_in() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: quiet, namespace: ns}\nspec: {}\n---\napiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: trusting, namespace: ns}\nspec: {forwardAuthorization: true}\n").unwrap();
    let snapshot = SnapshotStore::new().reload(&file).unwrap();
    let json = serde_json::to_string(&*snapshot).unwrap();
    let back: MeshSnapshot = serde_json::from_str(&json).unwrap();
    for s in [&*snapshot, &back] {
        assert!(!s.agent("ns", "quiet").unwrap().forward_authorization);
        assert!(s.agent("ns", "trusting").unwrap().forward_authorization);
    }
    assert!(example().agents().iter().all(|a| !a.forward_authorization));
}

#[test]
fn the_host_domain_comes_from_meshconfig_with_a2a_localhost_by_default() {
    const AGENT: &str = "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: specialist, namespace: team-beta}\nspec: {}\n";
    let plain = common::mesh(AGENT);
    assert_eq!(plain.control_plane().host_domain, "a2a.localhost");
    assert_eq!(
        plain.control_plane().agent_host("team-beta", "specialist"),
        "specialist.team-beta.a2a.localhost"
    );
    let config = |domain: &str| {
        format!(
            "{AGENT}---\napiVersion: warden.dev/v1alpha1\nkind: MeshConfig\nmetadata: {{name: mesh}}\nspec: {{gateway: {{hostDomain: {domain}}}}}\n"
        )
    };
    let custom = common::mesh(&config("Agents.Example.COM"));
    assert_eq!(
        custom.control_plane().agent_host("team-beta", "specialist"),
        "specialist.team-beta.agents.example.com"
    );
    let errors = common::errors(&config("'bad_domain.example'"));
    assert!(
        errors.len() == 1
            && errors[0].contains("spec.gateway.hostDomain")
            && errors[0].contains("\"bad_domain\""),
        "{errors:?}"
    );
}

#[test]
fn the_gateway_needs_one_wildcard_per_namespace_and_says_which_hosts_lack_one() {
    let mesh = example();
    let names = mesh.gateway_host_names();
    assert_eq!(
        names,
        [
            "*.team-alpha.a2a.localhost",
            "*.team-beta.a2a.localhost",
            "*.team-gamma.a2a.localhost"
        ]
    );
    assert!(mesh.agent_hosts_not_covered(&names).is_empty());

    let beta_only = vec!["*.team-beta.a2a.localhost".to_owned()];
    assert_eq!(
        mesh.agent_hosts_not_covered(&beta_only),
        [
            "orchestrator.team-alpha.a2a.localhost",
            "rogue.team-gamma.a2a.localhost"
        ]
    );
    assert_eq!(
        mesh.agent_hosts_not_covered(&[]).len(),
        mesh.agents().len(),
        "a certificate with no DNS names covers no agent host"
    );
}
