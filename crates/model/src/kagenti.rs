//! kagenti/rossoctl's `AgentRuntime` and mTLS-mode annotations, read as users wrote them.
//!
//! kagenti resolves a workload's mTLS mode from the `AgentRuntime` that targets it (its
//! `mtlsMode`), then its namespace's `authbridge-runtime-config` ConfigMap (`mtls.mode`), then
//! `permissive`; the operator writes the result to the pod template as
//! `rossoctl.io/mtls-mode` (`kagenti.io/mtls-mode` in kagenti's older releases). Warden applies
//! the same order to the Agent the runtime targets, and reads those annotations beside its own
//! `warden.dev/mtls-mode`. Two resources that set different modes for one agent are an error
//! naming both: Warden never picks one silently.
//!
//! The operator's `api/v1alpha1` types file could not be read; the group, kinds and field names
//! come from its controller (`agentruntime_controller.go`). The Go field is `MTLSMode`; its JSON
//! tag was not visible, so both `mtlsMode` and `mTLSMode` are accepted.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::loader::{Manifests, ModelError, Origin, Sourced};
use crate::resources::MtlsMode;

/// rossoctl's API group.
pub const ROSSOCTL_GROUP: &str = "agent.rossoctl.dev";
/// kagenti's (older) API group.
pub const KAGENTI_GROUP: &str = "agent.kagenti.dev";
/// The namespace ConfigMap of kagenti's second resolution step.
pub const RUNTIME_CONFIG_MAP: &str = "authbridge-runtime-config";
/// Its key.
pub const RUNTIME_CONFIG_KEY: &str = "mtls.mode";
/// Pod-template annotations that carry a workload's resolved mode, Warden's first.
pub const MODE_ANNOTATIONS: [&str; 3] = [
    "warden.dev/mtls-mode",
    "rossoctl.io/mtls-mode",
    "kagenti.io/mtls-mode",
];

/// An `AgentRuntime` (`agent.rossoctl.dev/v1alpha1` or `agent.kagenti.dev/v1alpha1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentRuntime {
    /// `group/version`.
    pub api_version: String,
    /// `AgentRuntime`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    /// What the runtime configures.
    pub spec: AgentRuntimeSpec,
    /// Written by kagenti's operator; not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// `spec` of an `AgentRuntime`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentRuntimeSpec {
    /// The workload whose sidecar the mode applies to.
    pub target_ref: TargetRef,
    /// kagenti's agent-type label; not acted on.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub runtime_type: Option<String>,
    /// disabled, permissive or strict; unset: the namespace ConfigMap, then permissive.
    #[serde(default, alias = "mTLSMode", skip_serializing_if = "Option::is_none")]
    pub mtls_mode: Option<RuntimeMode>,
}

/// kagenti's lower-case mode names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeMode {
    /// Plaintext only.
    Disabled,
    /// mTLS and plaintext.
    Permissive,
    /// mTLS only.
    Strict,
}

impl From<RuntimeMode> for MtlsMode {
    fn from(mode: RuntimeMode) -> Self {
        match mode {
            RuntimeMode::Disabled => MtlsMode::Disabled,
            RuntimeMode::Permissive => MtlsMode::Permissive,
            RuntimeMode::Strict => MtlsMode::Strict,
        }
    }
}

/// `spec.targetRef`: a Deployment, StatefulSet or Sandbox in the runtime's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    /// `apps/v1`, or `agents.x-k8s.io/v1alpha1` for a Sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Deployment, StatefulSet or Sandbox.
    pub kind: String,
    /// The workload's name: kagent names an Agent's Deployment after the Agent.
    pub name: String,
}

/// A Deployment or StatefulSet's pod-template annotations, for the mode annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    /// Namespace (default applied).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.template.metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
}

/// The mode a pod template's annotations set, and which annotation set it. Two annotations
/// that disagree are an error naming both.
pub fn annotation_mode(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<(&'static str, MtlsMode)>, String> {
    let mut found: Option<(&'static str, MtlsMode)> = None;
    for key in MODE_ANNOTATIONS {
        let Some(value) = annotations.get(key) else {
            continue;
        };
        let mode: MtlsMode = value
            .parse()
            .map_err(|e| format!("annotation {key}: {e}"))?;
        match found {
            Some((first, other)) if other != mode => {
                return Err(format!(
                    "annotation {key}: {mode} conflicts with {first}: {other}"
                ));
            }
            Some(_) => {}
            None => found = Some((key, mode)),
        }
    }
    Ok(found)
}

/// A mode set for one agent, and by what.
#[derive(Debug, Clone)]
pub struct ModeSource {
    /// The mode.
    pub mode: MtlsMode,
    /// The resource that set it.
    pub origin: Origin,
    /// How, in words (`spec.mtlsMode`, `ConfigMap team-a/authbridge-runtime-config`, …).
    pub how: String,
}

/// Modes set by AgentRuntimes and pod-template annotations, by `(namespace, agent)`.
pub type ModeOverrides = HashMap<(String, String), ModeSource>;

const TARGET_KINDS: [(&str, &str); 3] = [
    ("Deployment", "apps/v1"),
    ("StatefulSet", "apps/v1"),
    ("Sandbox", "agents.x-k8s.io/v1alpha1"),
];

/// Resolves every AgentRuntime and mode annotation of `manifests` by kagenti's order. An
/// AgentRuntime whose target is not an agent of the mesh, two runtimes for one agent, and
/// sources that disagree are errors naming the resources.
pub fn resolve_modes(manifests: &Manifests) -> Result<ModeOverrides, Vec<ModelError>> {
    let mut errors = Vec::new();
    let mut modes: ModeOverrides = HashMap::new();
    for runtime in &manifests.agent_runtimes {
        let Some(key) = runtime_target(runtime, manifests, &mut errors) else {
            continue;
        };
        let source = runtime_mode(runtime, &key.0, manifests, &mut errors);
        if let Some(first) = modes.get(&key) {
            errors.push(ModelError::at(
                &runtime.origin,
                "spec.targetRef",
                format!(
                    "agent {}/{} is already the target of {}; one AgentRuntime per workload",
                    key.0, key.1, first.origin
                ),
            ));
            continue;
        }
        modes.insert(key, source);
    }
    for workload in &manifests.workloads {
        let key = (
            workload.resource.namespace.clone(),
            workload.resource.name.clone(),
        );
        let found = match annotation_mode(&workload.resource.annotations) {
            Ok(found) => found,
            Err(e) => {
                errors.push(ModelError::at(
                    &workload.origin,
                    "spec.template.metadata.annotations",
                    e,
                ));
                continue;
            }
        };
        let Some((annotation, mode)) = found else {
            continue;
        };
        let source = ModeSource {
            mode,
            origin: workload.origin.clone(),
            how: format!("pod-template annotation {annotation}"),
        };
        match modes.get(&key) {
            Some(first) if first.mode != mode => errors.push(conflict(&source, first, &key)),
            Some(_) => {}
            None => {
                modes.insert(key, source);
            }
        }
    }
    if errors.is_empty() {
        Ok(modes)
    } else {
        Err(errors)
    }
}

/// The error for two resources that set different modes for one agent, naming both.
pub fn conflict(second: &ModeSource, first: &ModeSource, key: &(String, String)) -> ModelError {
    ModelError {
        origin: Some(second.origin.clone()),
        field: None,
        message: format!(
            "conflicting mTLS modes for agent {}/{}: {} here sets {}, but {} at {} sets {}",
            key.0, key.1, second.how, second.mode, first.how, first.origin, first.mode
        ),
    }
}

fn runtime_target(
    runtime: &Sourced<AgentRuntime>,
    manifests: &Manifests,
    errors: &mut Vec<ModelError>,
) -> Option<(String, String)> {
    let origin = &runtime.origin;
    let target = &runtime.resource.spec.target_ref;
    let Some((_, api_version)) = TARGET_KINDS.iter().find(|(k, _)| *k == target.kind) else {
        errors.push(ModelError::at(
            origin,
            "spec.targetRef.kind",
            format!(
                "{:?}: expected Deployment, StatefulSet or Sandbox",
                target.kind
            ),
        ));
        return None;
    };
    if let Some(given) = target.api_version.as_deref().filter(|v| v != api_version) {
        errors.push(ModelError::at(
            origin,
            "spec.targetRef.apiVersion",
            format!("{given:?}: a {} is {api_version}", target.kind),
        ));
        return None;
    }
    let namespace = runtime
        .resource
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| crate::compile::DEFAULT_NAMESPACE.into());
    let exists = manifests.agents.iter().any(|a| {
        a.resource.metadata.name.as_deref() == Some(target.name.as_str())
            && a.resource
                .metadata
                .namespace
                .as_deref()
                .unwrap_or(crate::compile::DEFAULT_NAMESPACE)
                == namespace
    });
    if !exists {
        errors.push(ModelError::at(
            origin,
            "spec.targetRef.name",
            format!(
                "no Agent {namespace}/{} in the manifests; Warden runs one workload per Agent, named after it (as kagent names an Agent's Deployment)",
                target.name
            ),
        ));
        return None;
    }
    Some((namespace, target.name.clone()))
}

/// kagenti's order: the resource, then the namespace ConfigMap, then permissive.
fn runtime_mode(
    runtime: &Sourced<AgentRuntime>,
    namespace: &str,
    manifests: &Manifests,
    errors: &mut Vec<ModelError>,
) -> ModeSource {
    let origin = runtime.origin.clone();
    if let Some(mode) = runtime.resource.spec.mtls_mode {
        return ModeSource {
            mode: mode.into(),
            origin,
            how: "AgentRuntime spec.mtlsMode".into(),
        };
    }
    let config_map = manifests.config_maps.iter().find(|c| {
        c.resource.metadata.name.as_deref() == Some(RUNTIME_CONFIG_MAP)
            && c.resource
                .metadata
                .namespace
                .as_deref()
                .unwrap_or(crate::compile::DEFAULT_NAMESPACE)
                == namespace
    });
    if let Some(c) = config_map
        && let Some(value) = c
            .resource
            .data
            .as_ref()
            .and_then(|d| d.get(RUNTIME_CONFIG_KEY))
    {
        match value.trim().parse::<RuntimeModeName>() {
            Ok(RuntimeModeName(mode)) => {
                return ModeSource {
                    mode,
                    origin,
                    how: format!(
                        "ConfigMap {namespace}/{RUNTIME_CONFIG_MAP} {RUNTIME_CONFIG_KEY} (AgentRuntime sets no mtlsMode)"
                    ),
                };
            }
            Err(e) => errors.push(ModelError::at(
                &c.origin,
                format!("data.{RUNTIME_CONFIG_KEY}"),
                e,
            )),
        }
    }
    ModeSource {
        mode: MtlsMode::Permissive,
        origin,
        how: "kagenti's default, permissive (AgentRuntime sets no mtlsMode, no namespace ConfigMap does)".into(),
    }
}

/// A mode name as kagenti writes it: lower case only.
struct RuntimeModeName(MtlsMode);

impl std::str::FromStr for RuntimeModeName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disabled" => Ok(Self(MtlsMode::Disabled)),
            "permissive" => Ok(Self(MtlsMode::Permissive)),
            "strict" => Ok(Self(MtlsMode::Strict)),
            other => Err(format!(
                "{other:?}: expected disabled, permissive or strict"
            )),
        }
    }
}
