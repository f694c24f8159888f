//! The compiled mesh: what the data plane decides with.
//!
//! A `MeshSnapshot` is versioned and serialisable (local processes load it from a file). Its
//! indexes are built once, when it is compiled or loaded, so that looking up a target agent or
//! the agents behind a caller's identity costs the same at 10 agents as at 100,000.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use warden_identity::authorizer::{Authorizer, PeerMatcher};
use warden_identity::{SpiffeId, TrustDomain};

use crate::resources::{LocalProcess, MtlsMode, NamespaceFrom};
use crate::selector::{Labels, Selector};

/// A list of SPIFFE IDs and `…/sa/*` patterns, kept both as written (for display and
/// serialisation) and compiled (for matching).
#[derive(Debug, Clone)]
pub struct CallerSet {
    matchers: Vec<PeerMatcher>,
    authorizer: Authorizer,
}

impl CallerSet {
    /// Compiles patterns; the error names the index of the bad one.
    pub fn parse(patterns: &[String]) -> Result<Self, (usize, String)> {
        let matchers = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| PeerMatcher::parse(p).map_err(|e| (i, e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            authorizer: Authorizer::new(matchers.iter().cloned()),
            matchers,
        })
    }

    /// Whether `id` is in the set: a hash lookup for exact IDs, a scan of the (few) patterns;
    /// allocates nothing.
    pub fn contains(&self, id: &SpiffeId) -> bool {
        self.authorizer.admits(id)
    }

    /// The first entry matching `id`, for explanations.
    pub fn matching(&self, id: &SpiffeId) -> Option<&PeerMatcher> {
        self.matchers.iter().find(|m| m.matches(id))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }

    /// The entries as written.
    pub fn patterns(&self) -> Vec<String> {
        self.matchers.iter().map(|m| m.to_string()).collect()
    }
}

impl Serialize for CallerSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.patterns().serialize(s)
    }
}

impl<'de> Deserialize<'de> for CallerSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let patterns = Vec::<String>::deserialize(d)?;
        Self::parse(&patterns).map_err(|(i, e)| serde::de::Error::custom(format!("[{i}]: {e}")))
    }
}

/// The `Accepted` condition of an agent, as the compiler decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// True when every tool reference was accepted.
    pub status: bool,
    /// CamelCase reason: `Accepted`, `CrossNamespaceReferenceDenied`, `ReferenceDenied`,
    /// `AgentNotFound`, `SecretNotFound`, `ConfigMapNotFound`.
    pub reason: String,
    /// What to do about it.
    pub message: String,
}

/// A tool reference after compilation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompiledTool {
    /// Namespace of the agent called.
    pub namespace: String,
    /// Name of the agent called.
    pub name: String,
    /// Whether the reference is accepted; headers are only added for accepted ones.
    pub accepted: bool,
    /// Resolved delegation headers (name, value), in order.
    pub headers: Vec<(String, String)>,
}

/// An agent as the data plane sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompiledAgent {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Service account.
    pub service_account: String,
    /// `spiffe://<td>/ns/<namespace>/sa/<serviceAccount>`.
    pub spiffe_id: SpiffeId,
    /// A2A port of the app.
    pub port: u16,
    /// Resolved mTLS mode (the MeshConfig default applied).
    pub mtls_mode: MtlsMode,
    /// `allowedNamespaces.from`.
    pub allowed_from: NamespaceFrom,
    /// `allowedNamespaces.selector`, validated (present exactly when `from` is Selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// `allowedCallers`.
    pub allowed_callers: CallerSet,
    /// `deniedCallers`.
    pub denied_callers: CallerSet,
    /// Tool references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<CompiledTool>,
    /// The name the agent's card carries when it is not `name` (kagent's agents: `-`
    /// replaced by `_`); see [`CompiledAgent::card_name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_name: Option<String>,
    /// Static card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<serde_json::Value>,
    /// Local process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalProcess>,
    /// `forwardAuthorization`: the gateway keeps the caller's `Authorization` header for this
    /// agent (off unless the Agent opts in; see `AgentSpec::forward_authorization`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_authorization: bool,
    /// The `Accepted` condition.
    pub accepted: Accepted,
}

impl CompiledAgent {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The name in the agent's A2A card: what the built-in app announces and what the
    /// controller expects of it, so a kagent user's agent keeps kagent's card name.
    pub fn card_name(&self) -> &str {
        self.card_name.as_deref().unwrap_or(&self.name)
    }
}

/// Identities of Warden's own control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlane {
    /// The gateway: may fetch cards; calls it forwards are decided on the forwarded caller.
    pub gateway: SpiffeId,
    /// The controller: may fetch cards.
    pub controller: SpiffeId,
    /// The gateway's port.
    pub gateway_port: u16,
    /// MeshConfig `spec.gateway.hostDomain`: each agent is also served at the root of
    /// `{agent}.{namespace}.{hostDomain}` (standard A2A discovery needs the card at a host's
    /// root). Validated by the compiler; snapshots written before the field get the default.
    #[serde(default = "default_host_domain")]
    pub host_domain: String,
}

fn default_host_domain() -> String {
    warden_a2a::host::DEFAULT_DOMAIN.to_owned()
}

impl ControlPlane {
    /// `{agent}.{namespace}.{hostDomain}`: the host name whose root is the agent at the
    /// gateway.
    pub fn agent_host(&self, namespace: &str, name: &str) -> String {
        warden_a2a::host::agent_host(namespace, name, &self.host_domain)
    }
}

/// The serialised form of a snapshot (indexes are rebuilt on load).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotData {
    /// Increases with every snapshot a store accepts.
    pub version: u64,
    /// The mesh's trust domain.
    pub trust_domain: TrustDomain,
    /// The mode of agents that set none.
    pub default_mtls_mode: MtlsMode,
    /// Control-plane identities.
    pub control_plane: ControlPlane,
    /// JWT issuers (as declared).
    #[serde(default)]
    pub jwt_issuers: Vec<crate::resources::JwtIssuer>,
    /// Namespace labels.
    pub namespaces: BTreeMap<String, Labels>,
    /// Agents, sorted by namespace and name.
    pub agents: Vec<CompiledAgent>,
}

/// A compiled, indexed mesh.
#[derive(Debug, Clone)]
pub struct MeshSnapshot {
    data: SnapshotData,
    /// namespace → name → index into `data.agents`.
    by_name: HashMap<String, HashMap<String, usize>>,
    /// namespace → service account → agents running as it.
    by_service_account: HashMap<String, HashMap<String, Vec<usize>>>,
    /// namespace → labels.
    labels: HashMap<String, Labels>,
    /// (caller agent, target agent) → the delegation headers the gateway adds, parsed once
    /// here rather than on every request.
    delegations: HashMap<(usize, usize), Delegation>,
}

/// A tool reference's delegation headers as the gateway sends them.
type Delegation = Vec<(http::HeaderName, http::HeaderValue)>;

static NO_LABELS: Labels = Labels::new();

impl MeshSnapshot {
    /// Builds the indexes. Agents must be unique by namespace and name (the compiler ensures
    /// it; a duplicate in a hand-edited file is refused).
    pub fn new(data: SnapshotData) -> Result<Self, String> {
        let mut by_name: HashMap<String, HashMap<String, usize>> = HashMap::new();
        let mut by_service_account: HashMap<String, HashMap<String, Vec<usize>>> = HashMap::new();
        for (i, agent) in data.agents.iter().enumerate() {
            if by_name
                .entry(agent.namespace.clone())
                .or_default()
                .insert(agent.name.clone(), i)
                .is_some()
            {
                return Err(format!("agent {} appears twice", agent.key()));
            }
            by_service_account
                .entry(agent.namespace.clone())
                .or_default()
                .entry(agent.service_account.clone())
                .or_default()
                .push(i);
        }
        let labels = data
            .namespaces
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let delegations = delegations(&data.agents, &by_name)?;
        Ok(Self {
            data,
            by_name,
            by_service_account,
            labels,
            delegations,
        })
    }

    /// The delegation headers the gateway adds to a call from `caller` to `namespace/name`
    /// (its agents' accepted tool references to that target, in order).
    pub fn delegation_headers<'a>(
        &'a self,
        caller: &SpiffeId,
        namespace: &str,
        name: &str,
    ) -> impl Iterator<Item = &'a (http::HeaderName, http::HeaderValue)> {
        let target = self.by_name.get(namespace).and_then(|n| n.get(name));
        let callers = target.and_then(|_| self.agent_indexes(caller));
        callers
            .into_iter()
            .flatten()
            .filter_map(move |&c| self.delegations.get(&(c, *target?)))
            .flatten()
    }

    /// The serialisable contents.
    pub fn data(&self) -> &SnapshotData {
        &self.data
    }

    /// The version.
    pub fn version(&self) -> u64 {
        self.data.version
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.data.trust_domain
    }

    /// Control-plane identities.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.data.control_plane
    }

    /// Every agent, sorted by namespace and name.
    pub fn agents(&self) -> &[CompiledAgent] {
        &self.data.agents
    }

    /// The DNS names the gateway's certificate should carry: one `*.{namespace}.{hostDomain}`
    /// per namespace with agents, so that clients which check host names (every gRPC client,
    /// the SDKs over https) accept the gateway at each agent's host. Sorted; a name a CA would
    /// refuse is left out, since it would leave the gateway with no certificate at all.
    pub fn gateway_host_names(&self) -> Vec<String> {
        let domain = &self.control_plane().host_domain;
        let mut names: Vec<String> = self
            .agents()
            .iter()
            .map(|a| warden_a2a::host::namespace_wildcard(&a.namespace, domain))
            .filter(|name| warden_identity::ca::check_dns_name(name).is_ok())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The agent hosts (`{agent}.{namespace}.{hostDomain}`) that none of `cert_names` covers:
    /// where a client that checks host names refuses a gateway whose certificate carries only
    /// `cert_names`.
    pub fn agent_hosts_not_covered(&self, cert_names: &[String]) -> Vec<String> {
        let plane = self.control_plane();
        self.agents()
            .iter()
            .map(|a| plane.agent_host(&a.namespace, &a.name))
            .filter(|host| {
                !cert_names
                    .iter()
                    .any(|name| warden_a2a::host::name_covers(name, host))
            })
            .collect()
    }

    /// An agent by namespace and name.
    pub fn agent(&self, namespace: &str, name: &str) -> Option<&CompiledAgent> {
        let i = *self.by_name.get(namespace)?.get(name)?;
        self.data.agents.get(i)
    }

    /// The agents that run as `id` (usually one).
    pub fn agents_with_identity(&self, id: &SpiffeId) -> impl Iterator<Item = &CompiledAgent> {
        self.agent_indexes(id)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.data.agents.get(i))
    }

    /// Indexes into `data.agents` of the agents that run as `id`.
    fn agent_indexes(&self, id: &SpiffeId) -> Option<&Vec<usize>> {
        (id.trust_domain_name() == self.data.trust_domain.name())
            .then(|| id.workload())
            .flatten()
            .and_then(|w| {
                self.by_service_account
                    .get(w.namespace)?
                    .get(w.service_account)
            })
    }

    /// Labels of a namespace; an undeclared namespace has none.
    pub fn namespace_labels(&self, namespace: &str) -> &Labels {
        self.labels.get(namespace).unwrap_or(&NO_LABELS)
    }

    /// Whether a Namespace resource declared this namespace.
    pub fn namespace_declared(&self, namespace: &str) -> bool {
        self.labels.contains_key(namespace)
    }

    /// Sets each agent's resolved tool references and acceptance (the compiler's second
    /// pass, which needs the snapshot to decide them), and indexes their delegation headers.
    pub(crate) fn set_tools(
        &mut self,
        resolved: impl IntoIterator<Item = (Vec<CompiledTool>, Accepted)>,
    ) -> Result<(), String> {
        for (agent, (tools, accepted)) in self.data.agents.iter_mut().zip(resolved) {
            if !accepted.status {
                tracing::debug!(agent = %agent.key(), reason = %accepted.reason, "agent not accepted");
            }
            agent.tools = tools;
            agent.accepted = accepted;
        }
        self.delegations = delegations(&self.data.agents, &self.by_name)?;
        Ok(())
    }

    /// The same snapshot under another version number.
    pub fn with_version(mut self, version: u64) -> Self {
        self.data.version = version;
        self
    }
}

impl Serialize for MeshSnapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.data.serialize(s)
    }
}

impl<'de> Deserialize<'de> for MeshSnapshot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(SnapshotData::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Every accepted tool reference's headers, parsed, by (caller, target) index. A header the
/// compiler would not have produced (a hand-edited snapshot) refuses the snapshot, naming it,
/// rather than being left out of calls silently.
fn delegations(
    agents: &[CompiledAgent],
    by_name: &HashMap<String, HashMap<String, usize>>,
) -> Result<HashMap<(usize, usize), Delegation>, String> {
    let mut out: HashMap<(usize, usize), Delegation> = HashMap::new();
    for (caller, agent) in agents.iter().enumerate() {
        for tool in agent
            .tools
            .iter()
            .filter(|t| t.accepted && !t.headers.is_empty())
        {
            let Some(&target) = by_name.get(&tool.namespace).and_then(|n| n.get(&tool.name)) else {
                continue;
            };
            for (name, value) in &tool.headers {
                let bad = |what: &str| {
                    format!(
                        "agent {}: tool {}/{}: delegation header {name:?} has an invalid {what}",
                        agent.key(),
                        tool.namespace,
                        tool.name
                    )
                };
                let name =
                    http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("name"))?;
                let value = http::HeaderValue::from_str(value).map_err(|_| bad("value"))?;
                out.entry((caller, target)).or_default().push((name, value));
            }
        }
    }
    Ok(out)
}
