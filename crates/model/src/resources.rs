//! The resources users write: `Agent` and `MeshConfig` (`warden.dev/v1alpha1`), declared once
//! as Kubernetes custom resources so that the same YAML is applied with kubectl and run
//! locally with `warden up`.
//!
//! Spec types reject unknown fields: a misspelt `deniedCallers` must be an error, never a
//! silently ignored rule.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group and version of Warden's resources.
pub const API_VERSION: &str = "warden.dev/v1alpha1";
/// The namespace of Warden's own control-plane identities.
pub const SYSTEM_NAMESPACE: &str = "warden-system";
/// The default A2A port of an agent's app.
pub const DEFAULT_AGENT_PORT: u16 = 8080;

/// How a workload's sidecar treats inbound connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum MtlsMode {
    /// Plaintext only: an explicit opt-out.
    Disabled,
    /// mTLS and plaintext on one port (first byte decides); plaintext callers are anonymous.
    #[default]
    Permissive,
    /// mTLS only.
    Strict,
}

impl MtlsMode {
    /// The lower-case name used on the command line, in env vars and annotations.
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Disabled => "disabled",
            MtlsMode::Permissive => "permissive",
            MtlsMode::Strict => "strict",
        }
    }
}

impl fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An mTLS mode name that is not one of disabled, permissive, strict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mTLS mode {0:?}: expected disabled, permissive or strict")]
pub struct UnknownMtlsMode(pub String);

impl FromStr for MtlsMode {
    type Err = UnknownMtlsMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "disabled" => Ok(MtlsMode::Disabled),
            "permissive" => Ok(MtlsMode::Permissive),
            "strict" => Ok(MtlsMode::Strict),
            _ => Err(UnknownMtlsMode(s.to_owned())),
        }
    }
}

/// An agent: an A2A server run by some team, with the policy that says who may call it.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "warden.dev",
    version = "v1alpha1",
    kind = "Agent",
    namespaced,
    status = "AgentStatus",
    shortname = "wag",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".status.mtlsMode"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"MTLSReady","type":"string","jsonPath":".status.conditions[?(@.type==\"MTLSReady\")].status"}"#,
    printcolumn = r#"{"name":"Card","type":"string","jsonPath":".status.card.transportSecurity"}"#,
    printcolumn = r#"{"name":"SPIFFE ID","type":"string","priority":1,"jsonPath":".status.card.attestedSpiffeId"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentSpec {
    /// What the agent does, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The service account the agent runs as; its SPIFFE ID is
    /// `spiffe://<td>/ns/<namespace>/sa/<serviceAccountName>`. Default: the agent's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The A2A port of the agent's app.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Transport security of the agent's sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsSpec>,
    /// Which namespaces' agents may call this one.
    #[serde(default)]
    pub allowed_namespaces: AllowedNamespaces,
    /// SPIFFE IDs (or `spiffe://<td>/ns/<ns>/sa/*`) admitted in addition to
    /// `allowedNamespaces`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_callers: Vec<String>,
    /// SPIFFE IDs (or patterns) never admitted; wins over every other rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_callers: Vec<String>,
    /// Other agents this agent calls, with the delegation headers to add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolRef>,
    /// A static A2A agent card, served when the agent does not serve its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub card: Option<serde_json::Value>,
    /// How `warden up` starts the agent locally; ignored in Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalProcess>,
    /// Whether the gateway passes the caller's `Authorization` header on to this agent.
    /// Off by default, and dangerous when on: the header carries the credential the caller
    /// proved itself to the gateway with, so the agent (and anything it is compromised by)
    /// can replay it to reach every other agent as that caller. Turn it on only for an agent
    /// that must check the caller's token itself and is trusted with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_authorization: bool,
    /// The Kubernetes workload that runs the agent, whose pod template carries the
    /// `warden.dev/mtls-mode` annotation so that a mode change rolls it. Default: the
    /// Deployment named like the Agent (kagenti's AgentRuntime names it the same way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
}

/// `spec.targetRef`: the workload whose pods are this agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    /// `Deployment` or `StatefulSet`.
    pub kind: WorkloadKind,
    /// The workload's name, in the Agent's namespace.
    pub name: String,
}

/// The kinds of workload an Agent can name: the ones with a pod template the controller can
/// annotate to roll them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
}

fn default_port() -> u16 {
    DEFAULT_AGENT_PORT
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// `spec.mtls`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MtlsSpec {
    /// Unset: the MeshConfig's `defaultMtlsMode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
}

/// Where callers may come from, Gateway-API style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum NamespaceFrom {
    /// Only the agent's own namespace.
    #[default]
    Same,
    /// Any authenticated caller (anonymous ones too, unless the agent is Strict).
    All,
    /// Namespaces whose labels match `selector`.
    Selector,
}

/// `spec.allowedNamespaces`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedNamespaces {
    /// Same (default), All or Selector.
    #[serde(default)]
    pub from: NamespaceFrom,
    /// Required when `from` is Selector: a Kubernetes label selector over namespace labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// A Kubernetes label selector over namespace labels (`metav1.LabelSelector`'s fields).
///
/// Warden's own type rather than k8s-openapi's, because that one ignores unknown fields: a
/// misspelt `matchLabel:` would leave an empty selector, which matches every namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Requirements that must all hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

impl LabelSelector {
    /// True when the selector has no requirement at all, and so matches every namespace.
    pub fn is_empty(&self) -> bool {
        self.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && self.match_expressions.as_ref().is_none_or(Vec::is_empty)
    }
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// In, NotIn, Exists or DoesNotExist.
    pub operator: String,
    /// The values, for In and NotIn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

/// A tool reference: this agent calls another agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolRef {
    /// The agent called.
    pub agent_ref: AgentRef,
    /// Headers the gateway adds to calls from this agent to that one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_from: Vec<HeaderFrom>,
}

/// A reference to an agent; the namespace defaults to the referrer's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentRef {
    /// The agent's name.
    pub name: String,
    /// The agent's namespace; default: the referring agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// One delegation header: a literal `value` or a `valueFrom` reference (exactly one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderFrom {
    /// The header name.
    pub name: String,
    /// A literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A value read from a Secret or ConfigMap in the referring agent's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,
}

/// `valueFrom`: exactly one of the two references.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueFrom {
    /// A key of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
    /// A key of a ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
}

/// A key of a named Secret or ConfigMap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRef {
    /// The object's name.
    pub name: String,
    /// The key within it.
    pub key: String,
}

/// `spec.local`: the process `warden up` runs for this agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalProcess {
    /// The program (`warden` for the built-in echo agent).
    pub command: String,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The local port the app listens on; default: assigned by `warden up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The OS user (name or numeric uid) the agent's app and sidecar run as, so that another
    /// agent's processes cannot use its egress, reach its app port or read its socket, and so
    /// that SPIRE's `unix` attestor can tell the agents apart. Needs `warden up` to run as
    /// root; default: the user running `warden up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// What the control plane observed about an agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// The mTLS mode the agent's sidecars run in, resolved (annotation, agent, MeshConfig,
    /// default): `kubectl get agents` shows it as MODE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls_mode: Option<MtlsMode>,
    /// `Accepted`, `MTLSReady`, `CardDiscovered`, `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The agent card as last fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<CardStatus>,
}

/// How the card was fetched and from whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardStatus {
    /// `mtls` or `http`.
    pub transport_security: TransportSecurity,
    /// The SPIFFE ID the agent proved in the handshake, when over mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attested_spiffe_id: Option<String>,
    /// SHA-256 of the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_hash: Option<String>,
    /// When it was fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch_time: Option<Time>,
}

/// Transport of the last card fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TransportSecurity {
    /// Mutual TLS.
    Mtls,
    /// Plain HTTP.
    Http,
}

/// Mesh-wide settings; one per mesh (cluster-scoped).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "warden.dev",
    version = "v1alpha1",
    kind = "MeshConfig",
    status = "MeshConfigStatus",
    printcolumn = r#"{"name":"Trust Domain","type":"string","jsonPath":".spec.trustDomain"}"#,
    printcolumn = r#"{"name":"Default Mode","type":"string","jsonPath":".spec.defaultMtlsMode"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfigSpec {
    /// The trust domain of every agent; default `warden.local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// The mTLS mode of agents that set none; default Permissive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mtls_mode: Option<MtlsMode>,
    /// Where SVIDs come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentitySourceSpec>,
    /// Gateway settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySpec>,
    /// Issuers whose JWTs the gateway accepts as caller identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_issuers: Vec<JwtIssuer>,
}

/// What the controller observed about the mesh-wide settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfigStatus {
    /// E.g. `Accepted` (the settings compiled) with the reason when not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum IdentityProvider {
    /// Warden's embedded CA (local mode's default).
    #[default]
    EmbeddedCa,
    /// The SPIFFE Workload API (SPIRE).
    WorkloadApi,
    /// spiffe-helper files.
    Files,
    /// A SPIRE server and agent that `warden up` registers each workload with
    /// (`agentSocket`, `serverSocket`); the agent attests each workload by its uid.
    #[serde(alias = "spire")]
    Spire,
}

/// `spec.identity`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentitySourceSpec {
    /// EmbeddedCa, WorkloadApi or Files.
    #[serde(default)]
    pub provider: IdentityProvider,
    /// Workload API socket (`unix:///…`), for WorkloadApi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// SVID directory, for Files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svid_dir: Option<String>,
    /// The SPIRE agent's Workload API socket (a path or `unix:///…`), for Spire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_socket: Option<String>,
    /// The SPIRE server's admin socket (a path or `unix:///…`), for Spire: `warden up`
    /// registers each workload there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_socket: Option<String>,
}

/// `spec.gateway`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// The gateway's port; default 8083.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The gateway's service account in `warden-system`; default `warden-gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The DNS domain under which each agent is also served at the root of its own host name,
    /// `{agent}.{namespace}.{hostDomain}`, where A2A clients look for
    /// `/.well-known/agent-card.json`. Default `a2a.localhost` (RFC 6761: loopback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_domain: Option<String>,
}

/// A JWT issuer trusted by the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtIssuer {
    /// The `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values (at least one must be present in the token).
    pub audiences: Vec<String>,
    /// A local JWKS file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
    /// A JWKS URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
}
