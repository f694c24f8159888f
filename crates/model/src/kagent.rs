//! kagent's `kagent.dev/v1alpha2` `Agent`, read as users wrote it and enforced by Warden.
//!
//! kagent checks `allowedNamespaces` only when it reconciles a tool reference; Warden enforces
//! the same field on every request. What Warden enforces is read into typed structs that
//! refuse unknown fields; the rest of kagent's spec (model, prompts, MCP tools, deployment) is
//! accepted and set aside with one notice per field path, so that `warden validate` says
//! exactly what Warden does not act on. Field names are kagent's
//! (`go/api/v1alpha2/agent_types.go`, `common_types.go`).

use serde::Deserialize;

use crate::loader::{ModelError, Origin, check_keys};
use crate::resources::{
    AgentRef, AgentSpec, AllowedNamespaces, DEFAULT_AGENT_PORT, HeaderFrom, KeyRef, ToolRef,
    ValueFrom,
};

/// kagent's API group.
pub const GROUP: &str = "kagent.dev";
/// kagent's API version read by Warden.
pub const API_VERSION: &str = "kagent.dev/v1alpha2";

/// The name kagent gives an Agent in its A2A card: the resource name with `-` replaced by `_`
/// (kagent's convention, so that a kagent user's clients find the card they expect under
/// `warden up`).
pub fn card_name(agent_name: &str) -> String {
    agent_name.replace('-', "_")
}

/// What Warden reads of a kagent Agent's spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    /// Declarative (kagent's default) or BYO.
    #[serde(default, rename = "type")]
    agent_type: Option<AgentType>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    allowed_namespaces: Option<AllowedNamespaces>,
    #[serde(default)]
    declarative: Option<Declarative>,
    #[serde(default)]
    byo: Option<Byo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum AgentType {
    Declarative,
    #[serde(rename = "BYO")]
    Byo,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Declarative {
    #[serde(default)]
    tools: Vec<Tool>,
    #[serde(default)]
    deployment: Option<Deployment>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Byo {
    #[serde(default)]
    deployment: Option<Deployment>,
}

/// Of the deployment, only the identity matters: the service account is the SPIFFE ID.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Deployment {
    #[serde(default)]
    service_account_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Tool {
    #[serde(default, rename = "type")]
    tool_type: Option<ToolType>,
    #[serde(default)]
    agent: Option<TypedReference>,
    #[serde(default)]
    headers_from: Vec<ValueRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum ToolType {
    McpServer,
    Agent,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TypedReference {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    api_group: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ValueRef {
    name: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_from: Option<ValueSource>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ValueSource {
    #[serde(rename = "type")]
    source_type: SourceType,
    name: String,
    key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum SourceType {
    Secret,
    ConfigMap,
}

/// kagent fields Warden accepts and does not act on, per object, with why.
const IGNORED_SPEC: &[&str] = &[
    "iconUrl",
    "documentationUrl",
    "version",
    "provider",
    "skills",
    "sandbox",
];
const ENFORCED_SPEC: &[&str] = &[
    "type",
    "description",
    "allowedNamespaces",
    "declarative",
    "byo",
];
const IGNORED_DECLARATIVE: &[&str] = &[
    "runtime",
    "systemMessage",
    "systemMessageFrom",
    "promptTemplate",
    "modelConfig",
    "stream",
    "a2aConfig",
    "memory",
    "shareTools",
    "context",
];
const ENFORCED_DECLARATIVE: &[&str] = &["tools", "deployment"];
/// kagent's `SharedDeploymentSpec`, `ByoDeploymentSpec` and `DeclarativeDeploymentSpec`.
const IGNORED_DEPLOYMENT: &[&str] = &[
    "image",
    "cmd",
    "args",
    "workingDir",
    "imageRegistry",
    "replicas",
    "imagePullSecrets",
    "volumes",
    "volumeMounts",
    "labels",
    "annotations",
    "deploymentAnnotations",
    "env",
    "envFrom",
    "imagePullPolicy",
    "resources",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "nodeSelector",
    "securityContext",
    "podSecurityContext",
    "serviceAccountConfig",
    "extraContainers",
];
const ENFORCED_DEPLOYMENT: &[&str] = &["serviceAccountName"];
const IGNORED_AGENT_TOOL: &[&str] = &["isolateSessions"];
const ENFORCED_AGENT_TOOL: &[&str] = &["type", "agent", "headersFrom"];
const MCP_TOOL: &[&str] = &[
    "type",
    "mcpServer",
    "headersFrom",
    "isolateSessions",
    "agent",
];

/// A kagent Agent converted to Warden's spec, with what was set aside and how Warden's field
/// paths map back to kagent's (for errors found later, by the compiler).
#[derive(Debug, Clone)]
pub struct Converted {
    /// The equivalent Warden spec.
    pub spec: AgentSpec,
    /// One line per ignored field path.
    pub notices: Vec<String>,
    /// `(Warden path prefix, kagent path prefix)`, longest first.
    pub field_map: Vec<(String, String)>,
}

/// Reads the `spec` of a kagent Agent (`None` when absent) into Warden's `AgentSpec`.
pub fn convert(
    spec: Option<&serde_yaml_ng::Value>,
    origin: &Origin,
) -> Result<Converted, ModelError> {
    let mut notices = Vec::new();
    let mut spec = spec
        .cloned()
        .unwrap_or(serde_yaml_ng::Value::Mapping(Default::default()));
    sift_spec(&mut spec, origin, &mut notices)?;
    let parsed: Spec = serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        ModelError::at(
            origin,
            if path == "." {
                "spec".into()
            } else {
                format!("spec.{path}")
            },
            e.into_inner().to_string(),
        )
    })?;
    to_warden(parsed, origin, notices)
}

/// Removes the fields Warden ignores (noting each), and refuses fields kagent does not have.
fn sift_spec(
    spec: &mut serde_yaml_ng::Value,
    origin: &Origin,
    notices: &mut Vec<String>,
) -> Result<(), ModelError> {
    sift(
        spec,
        "spec",
        ENFORCED_SPEC,
        IGNORED_SPEC,
        "kagent's card and runtime settings",
        origin,
        notices,
    )?;
    for runtime in ["declarative", "byo"] {
        let Some(section) = spec.get_mut(runtime) else {
            continue;
        };
        let path = format!("spec.{runtime}");
        if runtime == "declarative" {
            sift(
                section,
                &path,
                ENFORCED_DECLARATIVE,
                IGNORED_DECLARATIVE,
                "model and prompt settings run by kagent",
                origin,
                notices,
            )?;
        } else {
            sift(section, &path, &["deployment"], &[], "", origin, notices)?;
        }
        if let Some(deployment) = section.get_mut("deployment") {
            sift(
                deployment,
                &format!("{path}.deployment"),
                ENFORCED_DEPLOYMENT,
                IGNORED_DEPLOYMENT,
                "how kagent deploys the pod",
                origin,
                notices,
            )?;
        }
        let Some(tools) = section.get_mut("tools").and_then(|t| t.as_sequence_mut()) else {
            continue;
        };
        for (i, tool) in tools.iter_mut().enumerate() {
            let path = format!("{path}.tools[{i}]");
            let is_mcp = tool.get("type").and_then(|t| t.as_str()) == Some("McpServer");
            if is_mcp {
                check_keys(tool, &format!("{path}."), MCP_TOOL, origin)?;
                notices.push(format!(
                    "{origin}: {path}: ignored (an MCP tool: Warden governs agent-to-agent calls)"
                ));
                if let Some(map) = tool.as_mapping_mut() {
                    map.retain(|k, _| k.as_str() == Some("type"));
                }
            } else {
                sift(
                    tool,
                    &path,
                    ENFORCED_AGENT_TOOL,
                    IGNORED_AGENT_TOOL,
                    "session handling inside kagent",
                    origin,
                    notices,
                )?;
            }
        }
    }
    Ok(())
}

/// Keeps `enforced` keys, removes `ignored` ones with a notice, refuses any other.
fn sift(
    value: &mut serde_yaml_ng::Value,
    path: &str,
    enforced: &[&str],
    ignored: &[&str],
    why: &str,
    origin: &Origin,
    notices: &mut Vec<String>,
) -> Result<(), ModelError> {
    let known: Vec<&str> = enforced.iter().chain(ignored).copied().collect();
    check_keys(value, &format!("{path}."), &known, origin)?;
    let Some(map) = value.as_mapping_mut() else {
        return Ok(());
    };
    for key in ignored {
        if map.remove(*key).is_some() {
            notices.push(format!(
                "{origin}: {path}.{key}: ignored ({why}; Warden does not act on it)"
            ));
        }
    }
    Ok(())
}

fn to_warden(spec: Spec, origin: &Origin, notices: Vec<String>) -> Result<Converted, ModelError> {
    let agent_type = spec.agent_type.unwrap_or(AgentType::Declarative);
    // kagent's own CEL rule on AgentSpec.
    match (agent_type, &spec.declarative, &spec.byo) {
        (AgentType::Declarative, Some(_), _) | (AgentType::Byo, _, Some(_)) => {}
        _ => {
            return Err(ModelError::at(
                origin,
                "spec.type",
                "declarative must be specified if type is Declarative, or byo must be specified if type is BYO (kagent's rule)",
            ));
        }
    }
    let (section, deployment) = match agent_type {
        AgentType::Declarative => (
            "declarative",
            spec.declarative
                .as_ref()
                .and_then(|d| d.deployment.as_ref()),
        ),
        AgentType::Byo => ("byo", spec.byo.as_ref().and_then(|b| b.deployment.as_ref())),
    };
    let mut field_map = vec![(
        "spec.serviceAccountName".to_owned(),
        format!("spec.{section}.deployment.serviceAccountName"),
    )];
    let mut tools = Vec::new();
    let kagent_tools = spec
        .declarative
        .as_ref()
        .map(|d| d.tools.as_slice())
        .unwrap_or_default();
    for (i, tool) in kagent_tools.iter().enumerate() {
        let path = format!("spec.declarative.tools[{i}]");
        let Some(tool_ref) = agent_tool(tool, &path, origin)? else {
            continue;
        };
        field_map.push((format!("spec.tools[{}]", tools.len()), path));
        tools.push(tool_ref);
    }
    field_map.push(("spec.tools".into(), "spec.declarative.tools".into()));
    // Longest prefix first, so `spec.tools[1]` is not taken for `spec.tools[10]`.
    field_map.sort_by_key(|(w, _)| std::cmp::Reverse(w.len()));
    Ok(Converted {
        spec: AgentSpec {
            description: spec.description,
            service_account_name: deployment.and_then(|d| d.service_account_name.clone()),
            port: DEFAULT_AGENT_PORT,
            mtls: None,
            allowed_namespaces: spec.allowed_namespaces.unwrap_or_default(),
            allowed_callers: Vec::new(),
            denied_callers: Vec::new(),
            tools,
            card: None,
            local: None,
            forward_authorization: false,
            target_ref: None,
        },
        notices,
        field_map,
    })
}

/// The Warden tool reference of a kagent `type: Agent` tool (`None` for an MCP tool).
fn agent_tool(tool: &Tool, path: &str, origin: &Origin) -> Result<Option<ToolRef>, ModelError> {
    let agent = match (tool.tool_type, &tool.agent) {
        (Some(ToolType::McpServer), _) => return Ok(None),
        (Some(ToolType::Agent), Some(agent)) => agent,
        (Some(ToolType::Agent), None) => {
            return Err(ModelError::at(
                origin,
                format!("{path}.agent"),
                "type.agent must be specified for Agent filter.type (kagent's rule)",
            ));
        }
        (None, _) => {
            return Err(ModelError::at(
                origin,
                format!("{path}.type"),
                "required: `type: Agent` for a reference to another agent (kagent refuses an `agent` without it)",
            ));
        }
    };
    if let Some(kind) = agent
        .kind
        .as_deref()
        .filter(|k| !k.is_empty() && *k != "Agent")
    {
        return Err(ModelError::at(
            origin,
            format!("{path}.agent.kind"),
            format!("{kind:?}: an Agent tool references an Agent"),
        ));
    }
    if let Some(group) = agent
        .api_group
        .as_deref()
        .filter(|g| !g.is_empty() && *g != GROUP && *g != "warden.dev")
    {
        return Err(ModelError::at(
            origin,
            format!("{path}.agent.apiGroup"),
            format!("{group:?}: expected kagent.dev (or warden.dev)"),
        ));
    }
    let headers_from = tool.headers_from.iter().map(header).collect();
    Ok(Some(ToolRef {
        agent_ref: AgentRef {
            name: agent.name.clone(),
            namespace: agent.namespace.clone().filter(|n| !n.is_empty()),
        },
        headers_from,
    }))
}

/// kagent's `ValueRef` as Warden's `HeaderFrom`; values resolve in the source agent's
/// namespace, as kagent resolves them.
fn header(value_ref: &ValueRef) -> HeaderFrom {
    let key_ref = |s: &ValueSource| KeyRef {
        name: s.name.clone(),
        key: s.key.clone(),
    };
    HeaderFrom {
        name: value_ref.name.clone(),
        value: value_ref.value.clone(),
        value_from: value_ref.value_from.as_ref().map(|s| ValueFrom {
            secret_key_ref: (s.source_type == SourceType::Secret).then(|| key_ref(s)),
            config_map_key_ref: (s.source_type == SourceType::ConfigMap).then(|| key_ref(s)),
        }),
    }
}

/// Rewrites a Warden field path of a converted agent to the kagent path the user wrote.
pub fn kagent_path(field_map: &[(String, String)], field: &str) -> String {
    for (warden, kagent) in field_map {
        if let Some(rest) = field.strip_prefix(warden.as_str())
            && (rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
        {
            return format!("{kagent}{}", rest.replace("agentRef", "agent"));
        }
    }
    field.to_owned()
}
