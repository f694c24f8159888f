//! Resources → [`MeshSnapshot`].
//!
//! Structural problems (bad values, duplicates, invalid selectors or patterns) are errors: the
//! whole set is refused, so a bad change never replaces a good snapshot. Problems of one
//! agent's tool references (the target does not admit it, a Secret is missing) are not: the
//! agent is compiled with `Accepted=False` and the reason, and its delegation headers for that
//! reference are dropped.

use std::collections::{BTreeMap, HashMap};

use warden_identity::{SpiffeId, TrustDomain};

use crate::kagenti::{ModeOverrides, ModeSource, conflict, resolve_modes};
use crate::loader::{Manifests, ModelError, Origin, Sourced};
use crate::policy::{Caller, decide};
use crate::resources::{Agent, HeaderFrom, MtlsMode, NamespaceFrom, SYSTEM_NAMESPACE};
use crate::selector::Selector;
use crate::snapshot::{
    Accepted, CallerSet, CompiledAgent, CompiledTool, ControlPlane, MeshSnapshot, SnapshotData,
};

/// The namespace of a namespaced resource that names none (kubectl's default).
pub const DEFAULT_NAMESPACE: &str = "default";
/// The gateway's default port.
pub const DEFAULT_GATEWAY_PORT: u16 = 8083;
/// The method used to check that a tool reference would be admitted.
const TOOL_CHECK_METHOD: &str = "SendMessage";

/// Headers that carry caller identity between hops; delegation headers may not set them.
pub const RESERVED_HEADERS: [&str; 2] = ["x-forwarded-client-cert", "x-warden-caller"];

/// Compiles manifests into a snapshot with the given version. Errors about resources read
/// from users' own kinds name the fields as they wrote them.
pub fn compile(manifests: &Manifests, version: u64) -> Result<MeshSnapshot, Vec<ModelError>> {
    compile_located(manifests, version).map_err(|errors| manifests.locate(errors))
}

fn compile_located(manifests: &Manifests, version: u64) -> Result<MeshSnapshot, Vec<ModelError>> {
    let mut errors = Vec::new();
    let overrides = resolve_modes(manifests).unwrap_or_else(|e| {
        errors.extend(e);
        ModeOverrides::new()
    });

    // MeshConfig: at most one.
    let config = match manifests.mesh_configs.as_slice() {
        [] => None,
        [one] => Some(one),
        [first, rest @ ..] => {
            for other in rest {
                errors.push(ModelError::at(
                    &other.origin,
                    "metadata.name",
                    format!("a mesh has one MeshConfig; another is at {}", first.origin),
                ));
            }
            Some(first)
        }
    };
    let spec = config.map(|c| c.resource.spec.clone()).unwrap_or_default();
    let trust_domain = match TrustDomain::new(
        spec.trust_domain
            .as_deref()
            .unwrap_or(warden_identity::DEFAULT_TRUST_DOMAIN),
    ) {
        Ok(td) => td,
        Err(e) => {
            if let Some(c) = config {
                errors.push(ModelError::at(&c.origin, "spec.trustDomain", e.to_string()));
            }
            return Err(errors);
        }
    };
    let default_mode = spec.default_mtls_mode.unwrap_or_default();
    let gateway_sa = spec
        .gateway
        .as_ref()
        .and_then(|g| g.service_account_name.clone())
        .unwrap_or_else(|| "warden-gateway".into());
    let gateway_port = spec
        .gateway
        .as_ref()
        .and_then(|g| g.port)
        .unwrap_or(DEFAULT_GATEWAY_PORT);
    let control_plane = match (
        SpiffeId::for_workload(&trust_domain, SYSTEM_NAMESPACE, &gateway_sa),
        SpiffeId::for_workload(&trust_domain, SYSTEM_NAMESPACE, "warden-controller"),
    ) {
        (Ok(gateway), Ok(controller)) => ControlPlane {
            gateway,
            controller,
            gateway_port,
            host_domain: host_domain(config, spec.gateway.as_ref(), &mut errors),
        },
        (Err(e), _) | (_, Err(e)) => {
            if let Some(c) = config {
                errors.push(ModelError::at(
                    &c.origin,
                    "spec.gateway.serviceAccountName",
                    e.to_string(),
                ));
            }
            return Err(errors);
        }
    };
    for (i, issuer) in spec.jwt_issuers.iter().enumerate() {
        if let Some(c) = config {
            if issuer.jwks_file.is_some() == issuer.jwks_url.is_some() {
                errors.push(ModelError::at(
                    &c.origin,
                    format!("spec.jwtIssuers[{i}]"),
                    "set exactly one of jwksFile and jwksUrl",
                ));
            }
            if issuer.audiences.is_empty() {
                errors.push(ModelError::at(
                    &c.origin,
                    format!("spec.jwtIssuers[{i}].audiences"),
                    "at least one audience is required",
                ));
            }
        }
    }

    // Namespaces.
    let mut namespaces = BTreeMap::new();
    let mut namespace_origin: HashMap<String, &Origin> = HashMap::new();
    for ns in &manifests.namespaces {
        let Some(name) = ns.resource.metadata.name.clone() else {
            errors.push(ModelError::at(&ns.origin, "metadata.name", "required"));
            continue;
        };
        if let Some(first) = namespace_origin.insert(name.clone(), &ns.origin) {
            errors.push(ModelError::at(
                &ns.origin,
                "metadata.name",
                format!("namespace {name} is also declared at {first}"),
            ));
        }
        namespaces.insert(
            name,
            ns.resource.metadata.labels.clone().unwrap_or_default(),
        );
    }

    // Secrets and ConfigMaps by (namespace, name).
    let secrets = index_data(&manifests.secrets, |s| {
        let mut data: BTreeMap<String, Result<String, ()>> = s
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), String::from_utf8(v.0.clone()).map_err(|_| ())))
            .collect();
        for (k, v) in s.string_data.iter().flatten() {
            data.insert(k.clone(), Ok(v.clone()));
        }
        (s.metadata.name.clone(), s.metadata.namespace.clone(), data)
    });
    let config_maps = index_data(&manifests.config_maps, |c| {
        let data = c
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), Ok(v.clone())))
            .collect();
        (c.metadata.name.clone(), c.metadata.namespace.clone(), data)
    });

    // Agents, first pass: everything but tool acceptance.
    let mut agents: Vec<(CompiledAgent, &Sourced<Agent>)> = Vec::new();
    let mut seen: HashMap<(String, String), &Origin> = HashMap::new();
    for sourced in &manifests.agents {
        let before = errors.len();
        let agent = compile_agent(
            sourced,
            &trust_domain,
            default_mode,
            &overrides,
            &mut errors,
        );
        if let Some(mut agent) = agent {
            agent.card_name = manifests
                .card_name(&sourced.origin)
                .filter(|card| *card != agent.name)
                .map(str::to_owned);
            let key = (agent.namespace.clone(), agent.name.clone());
            if let Some(first) = seen.insert(key, &sourced.origin) {
                errors.push(ModelError::at(
                    &sourced.origin,
                    "metadata.name",
                    format!("agent {} is also declared at {first}", agent.key()),
                ));
            } else if errors.len() == before {
                agents.push((agent, sourced));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    agents.sort_by(|a, b| (&a.0.namespace, &a.0.name).cmp(&(&b.0.namespace, &b.0.name)));
    let sources: Vec<&Sourced<Agent>> = agents.iter().map(|(_, s)| *s).collect();
    let data = SnapshotData {
        version,
        trust_domain,
        default_mtls_mode: default_mode,
        control_plane,
        jwt_issuers: spec.jwt_issuers.clone(),
        namespaces,
        agents: agents.into_iter().map(|(a, _)| a).collect(),
    };
    // Second pass: tool references are checked against the targets' policies, with the same
    // engine the data plane uses. Only `tools` and `accepted` change, which neither the
    // indexes nor `decide` read.
    let mut snapshot = MeshSnapshot::new(data).map_err(|e| {
        vec![ModelError {
            origin: None,
            field: None,
            message: e,
        }]
    })?;
    let resolved: Vec<(Vec<CompiledTool>, Accepted)> = snapshot
        .agents()
        .iter()
        .zip(sources)
        .map(|(agent, sourced)| resolve_tools(agent, sourced, &snapshot, &secrets, &config_maps))
        .collect();
    snapshot.set_tools(resolved).map_err(|e| {
        vec![ModelError {
            origin: None,
            field: None,
            message: e,
        }]
    })?;
    Ok(snapshot)
}

/// `spec.gateway.hostDomain` (lowercased), or the default when unset; a domain that cannot
/// carry host names is an error at that field, and the default stands in so that the other
/// checks still run.
fn host_domain(
    config: Option<&Sourced<crate::resources::MeshConfig>>,
    gateway: Option<&crate::resources::GatewaySpec>,
    errors: &mut Vec<ModelError>,
) -> String {
    let Some(domain) = gateway.and_then(|g| g.host_domain.as_deref()) else {
        return warden_a2a::host::DEFAULT_DOMAIN.to_owned();
    };
    if let Err(rule) = warden_a2a::host::check_domain(domain) {
        if let Some(c) = config {
            errors.push(ModelError::at(&c.origin, "spec.gateway.hostDomain", rule));
        }
        return warden_a2a::host::DEFAULT_DOMAIN.to_owned();
    }
    domain.to_ascii_lowercase()
}

type DataIndex = HashMap<(String, String), BTreeMap<String, Result<String, ()>>>;

fn index_data<T>(
    items: &[Sourced<T>],
    parts: impl Fn(
        &T,
    ) -> (
        Option<String>,
        Option<String>,
        BTreeMap<String, Result<String, ()>>,
    ),
) -> DataIndex {
    items
        .iter()
        .filter_map(|s| {
            let (name, namespace, data) = parts(&s.resource);
            Some((
                (namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.into()), name?),
                data,
            ))
        })
        .collect()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_header_value(s: &str) -> bool {
    http::HeaderValue::from_str(s).is_ok()
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The agent's mode: its own `spec.mtls.mode`, else what an AgentRuntime or a pod-template
/// annotation set, else the mesh default. Its own and another resource's that differ are an
/// error naming both.
fn agent_mode(
    sourced: &Sourced<Agent>,
    key: &(String, String),
    default_mode: MtlsMode,
    overrides: &ModeOverrides,
    errors: &mut Vec<ModelError>,
) -> MtlsMode {
    let own = sourced.resource.spec.mtls.as_ref().and_then(|m| m.mode);
    match (own, overrides.get(key)) {
        (Some(mode), Some(other)) if mode != other.mode => {
            let own = ModeSource {
                mode,
                origin: sourced.origin.clone(),
                how: "spec.mtls.mode".into(),
            };
            errors.push(conflict(other, &own, key));
            mode
        }
        (Some(mode), _) => mode,
        (None, Some(other)) => other.mode,
        (None, None) => default_mode,
    }
}

fn compile_agent(
    sourced: &Sourced<Agent>,
    trust_domain: &TrustDomain,
    default_mode: MtlsMode,
    overrides: &ModeOverrides,
    errors: &mut Vec<ModelError>,
) -> Option<CompiledAgent> {
    let origin = &sourced.origin;
    let agent = &sourced.resource;
    let spec = &agent.spec;
    let Some(name) = agent.metadata.name.clone() else {
        errors.push(ModelError::at(origin, "metadata.name", "required"));
        return None;
    };
    let namespace = agent
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    for (field, value) in [("metadata.name", &name), ("metadata.namespace", &namespace)] {
        if !is_dns_label(value) {
            errors.push(ModelError::at(
                origin,
                field,
                format!(
                    "{value:?} is not a DNS label (lower-case alphanumerics and '-', at most 63)"
                ),
            ));
        }
    }
    let service_account = spec
        .service_account_name
        .clone()
        .unwrap_or_else(|| name.clone());
    // When defaulted, the name was already checked above.
    if spec.service_account_name.is_some() && !is_dns_label(&service_account) {
        errors.push(ModelError::at(
            origin,
            "spec.serviceAccountName",
            format!("{service_account:?} is not a DNS label"),
        ));
    }
    if spec.port == 0 {
        errors.push(ModelError::at(
            origin,
            "spec.port",
            "must be between 1 and 65535",
        ));
    }
    let selector = match (
        spec.allowed_namespaces.from,
        &spec.allowed_namespaces.selector,
    ) {
        (NamespaceFrom::Selector, None) => {
            errors.push(ModelError::at(
                origin,
                "spec.allowedNamespaces.selector",
                "required when from is Selector",
            ));
            None
        }
        (NamespaceFrom::Selector, Some(sel)) => match Selector::compile(sel) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(ModelError::at(
                    origin,
                    format!("spec.allowedNamespaces.selector.{}", e.field),
                    e.rule,
                ));
                None
            }
        },
        (from, Some(_)) => {
            errors.push(ModelError::at(
                origin,
                "spec.allowedNamespaces.selector",
                format!("only used when from is Selector (from is {from:?})"),
            ));
            None
        }
        (_, None) => None,
    };
    let callers =
        |field: &str, list: &[String], errors: &mut Vec<ModelError>| match CallerSet::parse(list) {
            Ok(set) => Some(set),
            Err((i, e)) => {
                errors.push(ModelError::at(origin, format!("spec.{field}[{i}]"), e));
                None
            }
        };
    let allowed_callers = callers("allowedCallers", &spec.allowed_callers, errors);
    let denied_callers = callers("deniedCallers", &spec.denied_callers, errors);
    for (t, tool) in spec.tools.iter().enumerate() {
        for (h, header) in tool.headers_from.iter().enumerate() {
            check_header(
                origin,
                &format!("spec.tools[{t}].headersFrom[{h}]"),
                header,
                errors,
            );
        }
    }
    let mtls_mode = agent_mode(
        sourced,
        &(namespace.clone(), name.clone()),
        default_mode,
        overrides,
        errors,
    );
    let spiffe_id = SpiffeId::for_workload(trust_domain, &namespace, &service_account)
        .map_err(|e| {
            errors.push(ModelError::at(
                origin,
                "spec.serviceAccountName",
                e.to_string(),
            ))
        })
        .ok()?;
    Some(CompiledAgent {
        namespace,
        name,
        service_account,
        spiffe_id,
        port: spec.port,
        mtls_mode,
        allowed_from: spec.allowed_namespaces.from,
        selector,
        allowed_callers: allowed_callers?,
        denied_callers: denied_callers?,
        tools: Vec::new(),
        card_name: None,
        card: spec.card.clone(),
        local: spec.local.clone(),
        forward_authorization: spec.forward_authorization,
        accepted: Accepted {
            status: true,
            reason: "Accepted".into(),
            message: String::new(),
        },
    })
}

fn check_header(origin: &Origin, field: &str, header: &HeaderFrom, errors: &mut Vec<ModelError>) {
    if !is_header_name(&header.name) {
        errors.push(ModelError::at(
            origin,
            format!("{field}.name"),
            format!("{:?} is not a valid HTTP header name", header.name),
        ));
    } else if header.name.contains('_') {
        errors.push(ModelError::at(
            origin,
            format!("{field}.name"),
            format!(
                "{} contains '_': sidecars drop such headers before the app (WSGI, CGI and \
                 Rack read '_' as '-', so they could pass for identity headers); use '-'",
                header.name
            ),
        ));
    } else if RESERVED_HEADERS.contains(&header.name.to_ascii_lowercase().as_str()) {
        errors.push(ModelError::at(
            origin,
            format!("{field}.name"),
            format!(
                "{} carries caller identity and cannot be set by headersFrom",
                header.name
            ),
        ));
    }
    match (&header.value, &header.value_from) {
        (Some(value), None) if !is_header_value(value) => errors.push(ModelError::at(
            origin,
            format!("{field}.value"),
            "not a valid HTTP header value (control characters are not allowed)",
        )),
        (Some(_), None) => {}
        (None, Some(from)) => {
            if from.secret_key_ref.is_some() == from.config_map_key_ref.is_some() {
                errors.push(ModelError::at(
                    origin,
                    format!("{field}.valueFrom"),
                    "set exactly one of secretKeyRef and configMapKeyRef",
                ));
            }
        }
        _ => errors.push(ModelError::at(
            origin,
            field,
            "set exactly one of value and valueFrom",
        )),
    }
}

/// Decides each tool reference of `agent`: target exists, target's policy admits the agent,
/// every header value resolves.
fn resolve_tools(
    agent: &CompiledAgent,
    sourced: &Sourced<Agent>,
    snapshot: &MeshSnapshot,
    secrets: &DataIndex,
    config_maps: &DataIndex,
) -> (Vec<CompiledTool>, Accepted) {
    let mut compiled = Vec::new();
    let mut failures: Vec<(&'static str, String)> = Vec::new();
    let caller = Caller::Spiffe(agent.spiffe_id.clone());
    for tool in &sourced.resource.spec.tools {
        let namespace = tool
            .agent_ref
            .namespace
            .clone()
            .unwrap_or_else(|| agent.namespace.clone());
        let name = tool.agent_ref.name.clone();
        let mut accepted = true;
        if snapshot.agent(&namespace, &name).is_none() {
            failures.push((
                "AgentNotFound",
                format!(
                    "tool {namespace}/{name} does not exist; create it or fix spec.tools.agentRef"
                ),
            ));
            accepted = false;
        } else {
            let decision = decide(snapshot, &caller, &namespace, &name, TOOL_CHECK_METHOD);
            if !decision.allowed {
                let (reason, what) = if namespace != agent.namespace {
                    ("CrossNamespaceReferenceDenied", "cross-namespace reference")
                } else {
                    ("ReferenceDenied", "reference")
                };
                failures.push((
                    reason,
                    format!(
                        "{what} from {} to {namespace}/{name} is not admitted by the target's policy ({}: {}); change {namespace}/{name}'s allowedNamespaces or allowedCallers",
                        agent.key(),
                        decision.rule,
                        decision.reason
                    ),
                ));
                accepted = false;
            }
        }
        let mut headers = Vec::new();
        for header in &tool.headers_from {
            match resolve_header(header, &agent.namespace, secrets, config_maps) {
                Ok(value) => headers.push((header.name.clone(), value)),
                Err(failure) => {
                    failures.push(failure);
                    accepted = false;
                }
            }
        }
        if !accepted {
            headers.clear();
        }
        compiled.push(CompiledTool {
            namespace,
            name,
            accepted,
            headers,
        });
    }
    let accepted = match failures.first() {
        None => Accepted {
            status: true,
            reason: "Accepted".into(),
            message: String::new(),
        },
        Some((reason, _)) => Accepted {
            status: false,
            reason: (*reason).into(),
            message: failures
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        },
    };
    (compiled, accepted)
}

fn resolve_header(
    header: &HeaderFrom,
    namespace: &str,
    secrets: &DataIndex,
    config_maps: &DataIndex,
) -> Result<String, (&'static str, String)> {
    if let Some(value) = &header.value {
        return Ok(value.clone());
    }
    // `check_header` already refused a header with neither; this keeps the function total.
    let missing = || {
        (
            "SecretNotFound",
            format!("header {}: no value", header.name),
        )
    };
    let from = header.value_from.as_ref().ok_or_else(missing)?;
    let (kind, reason, index, key_ref) = match (&from.secret_key_ref, &from.config_map_key_ref) {
        (Some(r), _) => ("Secret", "SecretNotFound", secrets, r),
        (None, Some(r)) => ("ConfigMap", "ConfigMapNotFound", config_maps, r),
        (None, None) => return Err(missing()),
    };
    let Some(data) = index.get(&(namespace.to_owned(), key_ref.name.clone())) else {
        return Err((
            reason,
            format!(
                "header {}: {kind} {namespace}/{} does not exist",
                header.name, key_ref.name
            ),
        ));
    };
    match data.get(&key_ref.key) {
        // A Secret written from a file often ends in a newline: found here, not when calls
        // go out without the header.
        Some(Ok(v)) if !is_header_value(v) => Err((
            "InvalidHeaderValue",
            format!(
                "header {}: {kind} {namespace}/{} key {} is not a valid HTTP header value \
                 (control characters such as a trailing newline are not allowed)",
                header.name, key_ref.name, key_ref.key
            ),
        )),
        Some(Ok(v)) => Ok(v.clone()),
        Some(Err(())) => Err((
            reason,
            format!(
                "header {}: {kind} {namespace}/{} key {} is not UTF-8 text",
                header.name, key_ref.name, key_ref.key
            ),
        )),
        None => Err((
            reason,
            format!(
                "header {}: {kind} {namespace}/{} has no key {}",
                header.name, key_ref.name, key_ref.key
            ),
        )),
    }
}
