//! The validating webhook's checks, as pure functions over parsed objects and a
//! [`ClusterView`]. They run the model's own loader and compiler, so an object is refused for
//! exactly the reasons `warden validate` gives, with the same field paths and rules.
//!
//! What is refused:
//! - anything the loader or compiler refuses (unknown fields, bad selectors, bad names …);
//! - a tool reference the target's policy does not admit (`CrossNamespaceReferenceDenied`,
//!   naming both sides and the rule), decided by the policy engine against the target as it
//!   is in the cluster;
//! - a second MeshConfig.
//!
//! What is admitted with a warning, because the order of `kubectl apply` must not matter: a
//! tool whose target does not exist yet. The controller reports it (`AgentNotFound`) until it
//! does. `headersFrom` Secrets are not read by the webhook (it has no access to Secrets).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Namespace;
use serde_json::Value;
use warden_model::loader::{Origin, Sourced, load_str};
use warden_model::{Agent, Manifests, MeshConfig, ModelError, compile};

use crate::cluster::{ClusterView, Lookups};

/// The outcome of a check: refused when there are errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Why the object is refused (none: admitted).
    pub errors: Vec<ModelError>,
    /// What the user should know although the object is admitted.
    pub warnings: Vec<String>,
}

impl Verdict {
    /// Admitted?
    pub fn allowed(&self) -> bool {
        self.errors.is_empty()
    }

    /// The denial message: each problem located by object and field, one per line.
    pub fn message(&self) -> String {
        self.errors
            .iter()
            .map(located)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `Kind ns/name: field: rule` — `warden validate`'s line without the file and document,
/// which an object sent to the apiserver does not have.
pub fn located(e: &ModelError) -> String {
    let mut out = String::new();
    if let Some(object) = e.origin.as_ref().and_then(|o| o.object.as_ref()) {
        out.push_str(object);
        out.push_str(": ");
    }
    if let Some(field) = &e.field {
        out.push_str(field);
        out.push_str(": ");
    }
    out.push_str(&e.message);
    out
}

/// Warden field path → the user's field path, for agents read from another kind (kagent's).
type FieldMaps = Vec<(Origin, Vec<(String, String)>)>;

/// An Agent as the model reads it, from Warden's kind or kagent's.
#[derive(Debug, Clone)]
pub struct ParsedAgent {
    /// The agent, in Warden's terms.
    pub agent: Sourced<Agent>,
    /// How errors about it are re-located to the fields the user wrote (kagent's kind).
    pub field_maps: FieldMaps,
}

impl ParsedAgent {
    /// Errors with the user's field paths.
    fn locate(&self, errors: Vec<ModelError>) -> Vec<ModelError> {
        Manifests {
            field_maps: self.field_maps.clone(),
            ..Manifests::default()
        }
        .locate(errors)
    }
}

/// A Warden object taken from an admission request.
#[derive(Debug, Clone)]
pub enum WardenObject {
    /// A `warden.dev` Agent, or kagent's `kagent.dev/v1alpha2` Agent read as one.
    Agent(Box<ParsedAgent>),
    /// A MeshConfig.
    MeshConfig(Box<Sourced<MeshConfig>>),
}

/// Where objects read from the apiserver "come from" in messages.
pub const CLUSTER: &str = "cluster";

/// The origin of an object read from the apiserver: `object` is its `Kind ns/name`.
pub fn cluster_origin(object: String) -> Origin {
    Origin {
        file: PathBuf::from(CLUSTER),
        document: 1,
        object: Some(object),
    }
}

/// Parses an object from an admission request with the model's loader (the same parser, so
/// the same errors as `warden validate`). `namespace` is the request's, used when the object
/// does not carry one.
pub fn parse_object(
    object: &Value,
    namespace: Option<&str>,
) -> Result<WardenObject, Vec<ModelError>> {
    let mut object = object.clone();
    if let (Some(ns), Some(meta)) = (
        namespace,
        object.get_mut("metadata").and_then(Value::as_object_mut),
    ) && !meta.contains_key("namespace")
    {
        meta.insert("namespace".into(), Value::String(ns.to_owned()));
    }
    // JSON is YAML: the loader reads it as one document.
    let text = serde_json::to_string(&object).unwrap_or_default();
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    load_str(Path::new(CLUSTER), &text, &mut manifests, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    if let Some(agent) = manifests.agents.pop() {
        return Ok(WardenObject::Agent(Box::new(ParsedAgent {
            agent,
            field_maps: manifests.field_maps,
        })));
    }
    if let Some(config) = manifests.mesh_configs.pop() {
        return Ok(WardenObject::MeshConfig(Box::new(config)));
    }
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("?");
    Err(vec![ModelError {
        origin: None,
        field: Some("kind".into()),
        message: format!(
            "Warden's validating webhook checks Agents (warden.dev, kagent.dev) and MeshConfigs, not {kind}"
        ),
    }])
}

fn namespace_of(agent: &Agent) -> String {
    agent
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| warden_model::compile::DEFAULT_NAMESPACE.into())
}

fn target_of(agent: &Agent, tool: &warden_model::resources::ToolRef) -> (String, String) {
    (
        tool.agent_ref
            .namespace
            .clone()
            .unwrap_or_else(|| namespace_of(agent)),
        tool.agent_ref.name.clone(),
    )
}

/// What checking `object` reads from the cluster.
pub fn lookups(object: &WardenObject) -> Lookups {
    let mut lookups = Lookups::default();
    if let WardenObject::Agent(parsed) = object {
        let agent = &parsed.agent.resource;
        lookups.namespaces.insert(namespace_of(agent));
        for tool in &agent.spec.tools {
            lookups.agents.insert(target_of(agent, tool));
        }
    }
    lookups
}

/// Checks `object` against the cluster as `view` shows it.
pub fn check(object: &WardenObject, view: &ClusterView) -> Verdict {
    match object {
        WardenObject::Agent(parsed) => {
            let mut verdict = check_agent(&parsed.agent, view);
            verdict.errors = parsed.locate(verdict.errors);
            verdict
        }
        WardenObject::MeshConfig(config) => check_mesh_config(config, view),
    }
}

fn mesh_config(view: &ClusterView) -> Vec<Sourced<MeshConfig>> {
    let mut configs: Vec<&MeshConfig> = view.mesh_configs.iter().collect();
    configs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    configs
        .first()
        .map(|c| Sourced {
            resource: (*c).clone(),
            origin: cluster_origin(format!(
                "MeshConfig {}",
                c.metadata.name.as_deref().unwrap_or("?")
            )),
        })
        .into_iter()
        .collect()
}

fn namespaces(view: &ClusterView) -> Vec<Sourced<Namespace>> {
    view.namespaces
        .iter()
        .map(|(name, ns)| Sourced {
            resource: ns.clone(),
            origin: cluster_origin(format!("Namespace {name}")),
        })
        .collect()
}

fn cluster_agent(key: &(String, String), agent: &Agent) -> Sourced<Agent> {
    Sourced {
        resource: agent.clone(),
        origin: cluster_origin(format!("Agent {}/{}", key.0, key.1)),
    }
}

/// Does `agent` compile on its own (with the cluster's MeshConfig and namespaces)?
fn compiles_alone(agent: Sourced<Agent>, view: &ClusterView) -> Result<(), Vec<ModelError>> {
    let manifests = Manifests {
        agents: vec![agent],
        mesh_configs: mesh_config(view),
        namespaces: namespaces(view),
        ..Manifests::default()
    };
    compile(&manifests, 1).map(|_| ())
}

fn check_agent(agent: &Sourced<Agent>, view: &ClusterView) -> Verdict {
    if let Err(errors) = compiles_alone(agent.clone(), view) {
        return Verdict {
            errors,
            warnings: Vec::new(),
        };
    }
    let me = (
        namespace_of(&agent.resource),
        agent.resource.metadata.name.clone().unwrap_or_default(),
    );
    // The probe keeps the tools whose target can be decided now, without delegation headers
    // (their Secrets are the controller's business): whatever it is refused for is a policy
    // refusal.
    let mut probe = agent.clone();
    probe.resource.spec.tools.clear();
    let mut targets: Vec<Sourced<Agent>> = Vec::new();
    let mut warnings = Vec::new();
    for (i, tool) in agent.resource.spec.tools.iter().enumerate() {
        let key = target_of(&agent.resource, tool);
        let usable = if key == me {
            true
        } else if let Some(target) = view.agents.get(&key) {
            let sourced = cluster_agent(&key, target);
            match compiles_alone(sourced.clone(), view) {
                Ok(()) => {
                    if !targets.iter().any(|t| t.origin == sourced.origin) {
                        targets.push(sourced);
                    }
                    true
                }
                Err(errors) => {
                    warnings.push(format!(
                        "spec.tools[{i}]: agent {}/{} is itself invalid ({}); the reference is not checked",
                        key.0,
                        key.1,
                        errors.first().map(located).unwrap_or_default()
                    ));
                    false
                }
            }
        } else {
            warnings.push(format!(
                "spec.tools[{i}]: agent {}/{} does not exist yet; Accepted stays False (AgentNotFound) until it does",
                key.0, key.1
            ));
            false
        };
        if usable {
            let mut tool = tool.clone();
            tool.headers_from.clear();
            probe.resource.spec.tools.push(tool);
        }
    }
    let mut agents = vec![probe];
    agents.extend(targets);
    let manifests = Manifests {
        agents,
        mesh_configs: mesh_config(view),
        namespaces: namespaces(view),
        ..Manifests::default()
    };
    let errors = match compile(&manifests, 1) {
        Err(errors) => errors,
        Ok(snapshot) => snapshot
            .agent(&me.0, &me.1)
            .filter(|a| !a.accepted.status)
            .map(|a| {
                ModelError::at(
                    &agent.origin,
                    "spec.tools",
                    format!(
                        "Accepted=False {}: {}",
                        a.accepted.reason, a.accepted.message
                    ),
                )
            })
            .into_iter()
            .collect(),
    };
    Verdict { errors, warnings }
}

fn check_mesh_config(config: &Sourced<MeshConfig>, view: &ClusterView) -> Verdict {
    let manifests = Manifests {
        mesh_configs: vec![config.clone()],
        ..Manifests::default()
    };
    let mut errors = compile(&manifests, 1).err().unwrap_or_default();
    let name = config.resource.metadata.name.as_deref();
    for other in &view.mesh_configs {
        if other.metadata.name.as_deref() != name {
            errors.push(ModelError::at(
                &config.origin,
                "metadata.name",
                format!(
                    "a mesh has one MeshConfig and {} already exists; edit that one instead",
                    other.metadata.name.as_deref().unwrap_or("?")
                ),
            ));
        }
    }
    Verdict {
        errors,
        warnings: Vec::new(),
    }
}

/// What the validating webhook would answer for each Agent and MeshConfig of `manifests`,
/// with the manifests themselves as the cluster (`warden admission`, for CI before
/// `kubectl apply`). Errors keep their file and document.
pub fn check_manifests(manifests: &Manifests) -> Vec<(String, Verdict)> {
    let view = ClusterView::from_manifests(manifests);
    let name = |origin: &Origin| origin.object.clone().unwrap_or_else(|| origin.to_string());
    let agents = manifests.agents.iter().map(|a| {
        let parsed = ParsedAgent {
            agent: a.clone(),
            field_maps: manifests.field_maps.clone(),
        };
        (name(&a.origin), WardenObject::Agent(Box::new(parsed)))
    });
    let configs = manifests.mesh_configs.iter().map(|c| {
        (
            name(&c.origin),
            WardenObject::MeshConfig(Box::new(c.clone())),
        )
    });
    agents
        .chain(configs)
        .map(|(name, object)| {
            let verdict = check(&object, &view.select(&lookups(&object)));
            (name, verdict)
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// The cross-namespace example as a cluster: team-beta/specialist admits namespaces
    /// labelled `a2a-access: specialist`; team-alpha has the label, team-gamma not.
    pub(crate) fn example_cluster() -> ClusterView {
        let yaml = r#"
apiVersion: warden.dev/v1alpha1
kind: Agent
metadata: {name: specialist, namespace: team-beta}
spec:
  mtls: {mode: Strict}
  allowedNamespaces:
    from: Selector
    selector: {matchLabels: {a2a-access: specialist}}
---
apiVersion: warden.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {trustDomain: example.org, defaultMtlsMode: Permissive}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-alpha, labels: {a2a-access: specialist}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-gamma, labels: {tier: external}}
"#;
        let mut manifests = Manifests::default();
        let mut errors = Vec::new();
        load_str(Path::new("cluster.yaml"), yaml, &mut manifests, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        ClusterView::from_manifests(&manifests)
    }

    pub(crate) fn agent(ns: &str, name: &str, spec: Value) -> Value {
        json!({"apiVersion": "warden.dev/v1alpha1", "kind": "Agent",
               "metadata": {"name": name, "namespace": ns}, "spec": spec})
    }

    fn verdict(object: Value, view: &ClusterView) -> Verdict {
        match parse_object(&object, None) {
            Ok(object) => check(&object, &view.select(&lookups(&object))),
            Err(errors) => Verdict {
                errors,
                warnings: Vec::new(),
            },
        }
    }

    fn tool(ns: &str, name: &str) -> Value {
        json!({"tools": [{"agentRef": {"name": name, "namespace": ns},
               "headersFrom": [{"name": "X-Token", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]}]})
    }

    #[test]
    fn an_unauthorised_cross_namespace_reference_is_refused_naming_both_sides_and_the_rule() {
        let v = verdict(
            agent("team-gamma", "rogue", tool("team-beta", "specialist")),
            &example_cluster(),
        );
        assert!(!v.allowed());
        let message = v.message();
        for needle in [
            "Agent team-gamma/rogue: spec.tools: Accepted=False CrossNamespaceReferenceDenied",
            "team-gamma/rogue",
            "team-beta/specialist",
            "namespace_selector",
        ] {
            assert!(message.contains(needle), "{needle:?} not in {message}");
        }
    }

    #[test]
    fn an_admitted_reference_passes_without_reading_its_secret() {
        let v = verdict(
            agent(
                "team-alpha",
                "orchestrator",
                tool("team-beta", "specialist"),
            ),
            &example_cluster(),
        );
        assert!(v.allowed(), "{}", v.message());
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    }

    #[test]
    fn a_missing_target_is_admitted_with_a_warning() {
        let v = verdict(
            agent("team-gamma", "rogue", tool("team-delta", "later")),
            &example_cluster(),
        );
        assert!(v.allowed(), "{}", v.message());
        assert_eq!(v.warnings.len(), 1);
        assert!(
            v.warnings[0].contains("team-delta/later") && v.warnings[0].contains("AgentNotFound"),
            "{:?}",
            v.warnings
        );
    }

    #[test]
    fn structural_errors_name_the_field_and_rule() {
        let table = [
            (
                json!({"allowedNamespaces": {"from": "Selector", "selector": {"matchExpressions": [{"key": "a", "operator": "Near", "values": ["b"]}]}}}),
                "Agent team-beta/bad: spec.allowedNamespaces.selector.matchExpressions[0].operator: ",
            ),
            (
                json!({"allowedNamespaces": {"from": "Selector"}}),
                "Agent team-beta/bad: spec.allowedNamespaces.selector: required when from is Selector",
            ),
            (
                json!({"deniedCaller": ["x"]}),
                "Agent team-beta/bad: spec.deniedCaller: unknown field `deniedCaller`",
            ),
            (
                json!({"port": 0}),
                "Agent team-beta/bad: spec.port: must be between 1 and 65535",
            ),
        ];
        for (spec, expected) in table {
            let v = verdict(agent("team-beta", "bad", spec.clone()), &example_cluster());
            assert!(!v.allowed(), "{spec} was admitted");
            assert!(
                v.message().starts_with(expected),
                "{spec}: {} does not start with {expected}",
                v.message()
            );
        }
    }

    #[test]
    fn the_messages_are_warden_validates_without_the_file() {
        let object = agent(
            "team-beta",
            "bad",
            json!({"allowedNamespaces": {"from": "Selector"}}),
        );
        let webhook = verdict(object.clone(), &example_cluster()).message();
        let mut manifests = Manifests::default();
        let mut errors = Vec::new();
        load_str(
            Path::new("bad.yaml"),
            &serde_json::to_string(&object).unwrap(),
            &mut manifests,
            &mut errors,
        );
        let validate = compile(&manifests, 1).unwrap_err()[0].to_string();
        assert_eq!(
            validate,
            format!("bad.yaml: document 1 ({}", webhook.replacen(": ", "): ", 1))
        );
    }

    #[test]
    fn an_update_of_a_self_referencing_agent_is_not_a_duplicate() {
        let mut view = example_cluster();
        let spec = json!({"tools": [{"agentRef": {"name": "specialist"}}]});
        let current: Agent =
            serde_json::from_value(agent("team-beta", "specialist", spec.clone())).unwrap();
        view.agents
            .insert(("team-beta".into(), "specialist".into()), current);
        let v = verdict(agent("team-beta", "specialist", spec), &view);
        assert!(v.allowed(), "{}", v.message());
    }

    #[test]
    fn a_kagent_agent_is_checked_like_wardens_own() {
        let rogue = json!({"apiVersion": "kagent.dev/v1alpha2", "kind": "Agent",
            "metadata": {"name": "rogue", "namespace": "team-gamma"},
            "spec": {"type": "Declarative", "declarative": {"tools": [
                {"type": "Agent", "agent": {"name": "specialist", "namespace": "team-beta"}}]}}});
        let v = verdict(rogue, &example_cluster());
        assert!(!v.allowed());
        let message = v.message();
        assert!(
            message.contains("Agent.kagent.dev team-gamma/rogue"),
            "{message}"
        );
        assert!(
            message.contains("CrossNamespaceReferenceDenied"),
            "{message}"
        );
        let picky = json!({"apiVersion": "kagent.dev/v1alpha2", "kind": "Agent",
            "metadata": {"name": "picky", "namespace": "team-beta"},
            "spec": {"type": "Declarative", "declarative": {}, "allowedNamespaces": {"from": "Selector"}}});
        let v = verdict(picky, &example_cluster());
        assert!(
            v.message()
                .contains("spec.allowedNamespaces.selector: required when from is Selector"),
            "{}",
            v.message()
        );
    }

    #[test]
    fn a_second_mesh_config_is_refused_naming_the_first() {
        let object = json!({"apiVersion": "warden.dev/v1alpha1", "kind": "MeshConfig",
                            "metadata": {"name": "other"}, "spec": {}});
        let v = verdict(object, &example_cluster());
        assert!(
            v.message()
                .contains("a mesh has one MeshConfig and mesh already exists"),
            "{}",
            v.message()
        );
        let object = json!({"apiVersion": "warden.dev/v1alpha1", "kind": "MeshConfig",
                            "metadata": {"name": "mesh"}, "spec": {"trustDomain": "Bad Domain"}});
        let v = verdict(object, &example_cluster());
        assert!(
            v.message()
                .starts_with("MeshConfig mesh: spec.trustDomain: "),
            "{}",
            v.message()
        );
    }

    #[test]
    fn offline_check_of_manifests_keeps_files() {
        let yaml = serde_json::to_string(&agent(
            "team-gamma",
            "rogue",
            tool("team-beta", "specialist"),
        ))
        .unwrap();
        let mut manifests = Manifests::default();
        let mut errors = Vec::new();
        load_str(Path::new("rogue.yaml"), &yaml, &mut manifests, &mut errors);
        // The manifests stand in for the cluster: the target must be in them.
        let results = check_manifests(&manifests);
        assert_eq!(results.len(), 1);
        assert!(
            results[0].1.allowed(),
            "no target in the manifests: admitted with a warning"
        );
        let specialist: Sourced<Agent> = Sourced {
            resource: example_cluster().agents[&("team-beta".into(), "specialist".into())].clone(),
            origin: cluster_origin("Agent team-beta/specialist".into()),
        };
        manifests.agents.push(specialist);
        let results = check_manifests(&manifests);
        let rogue = &results[0].1;
        assert!(!rogue.allowed());
        assert!(rogue.errors[0].to_string().starts_with("rogue.yaml: document 1 (Agent team-gamma/rogue): spec.tools: Accepted=False CrossNamespaceReferenceDenied"), "{}", rogue.errors[0]);
    }
}
