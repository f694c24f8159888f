//! The policy engine: may this caller make this request of this agent?
//!
//! One function decides every call, at the gateway and again at the target's sidecar. The
//! order of the rules is the precedence:
//!
//! 1. the target must exist;
//! 2. `deniedCallers` wins over everything;
//! 3. Warden's control plane (`warden-system`) may fetch the agent card, and nothing more;
//! 4. `allowedCallers` admits listed IDs;
//! 5. `allowedNamespaces`: `Same` (caller's namespace is the agent's), `All` (any
//!    authenticated caller; anonymous ones only when the agent is not Strict), `Selector`
//!    (caller's namespace labels match).
//!
//! An anonymous caller never satisfies `Same` or `Selector`; a caller from another trust
//! domain, or whose ID is not `ns/<ns>/sa/<sa>`, belongs to no local namespace.
//!
//! [`decide`] allocates nothing. [`explain`] runs the very same code with a tracer that
//! records each step, so an explanation can never disagree with a decision.

use std::fmt;

use serde::Serialize;
use warden_identity::SpiffeId;

use crate::resources::{MtlsMode, NamespaceFrom, SYSTEM_NAMESPACE};
use crate::selector::Labels;
use crate::snapshot::{CompiledAgent, MeshSnapshot};

/// The pseudo-method of fetching an agent card (`GET …/.well-known/agent-card.json`).
pub const CARD_METHOD: &str = "GetAgentCard";

/// Who is calling, as authenticated by the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A verified SPIFFE ID (mTLS peer, or the subject of a verified JWT-SVID).
    Spiffe(SpiffeId),
    /// The subject of a verified JWT from a configured OIDC issuer.
    Jwt {
        /// `iss`.
        issuer: String,
        /// `sub`.
        subject: String,
    },
    /// No verified credential.
    Anonymous,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Spiffe(id) => write!(f, "{id}"),
            Caller::Jwt { issuer, subject } => write!(f, "jwt {subject} (issuer {issuer})"),
            Caller::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// Which rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The target agent does not exist.
    UnknownTarget,
    /// `deniedCallers`.
    DeniedCallers,
    /// The control-plane exception.
    ControlPlane,
    /// `allowedCallers`.
    AllowedCallers,
    /// `allowedNamespaces.from: Same`.
    SameNamespace,
    /// `allowedNamespaces.from: All`.
    AllNamespaces,
    /// `allowedNamespaces.from: Selector`.
    NamespaceSelector,
}

impl Rule {
    /// A stable snake_case name for metric labels and audit records.
    pub fn name(self) -> &'static str {
        match self {
            Rule::UnknownTarget => "unknown_target",
            Rule::DeniedCallers => "denied_callers",
            Rule::ControlPlane => "control_plane",
            Rule::AllowedCallers => "allowed_callers",
            Rule::SameNamespace => "same_namespace",
            Rule::AllNamespaces => "all_namespaces",
            Rule::NamespaceSelector => "namespace_selector",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The outcome of a policy check. `Copy` and allocation-free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The rule that decided.
    pub rule: Rule,
    /// Why, in one sentence.
    pub reason: &'static str,
}

impl Decision {
    const fn allow(rule: Rule, reason: &'static str) -> Self {
        Self {
            allowed: true,
            rule,
            reason,
        }
    }

    const fn deny(rule: Rule, reason: &'static str) -> Self {
        Self {
            allowed: false,
            rule,
            reason,
        }
    }
}

/// Records the steps of an evaluation; the no-op tracer compiles away.
trait Trace {
    fn step(&mut self, f: impl FnOnce() -> String);
}

struct NoTrace;

impl Trace for NoTrace {
    #[inline(always)]
    fn step(&mut self, _: impl FnOnce() -> String) {}
}

impl Trace for Vec<String> {
    fn step(&mut self, f: impl FnOnce() -> String) {
        self.push(f());
    }
}

/// Decides whether `caller` may make a request (`method`) of agent `namespace/name`.
pub fn decide(
    snapshot: &MeshSnapshot,
    caller: &Caller,
    namespace: &str,
    name: &str,
    method: &str,
) -> Decision {
    evaluate(snapshot, caller, namespace, name, method, &mut NoTrace)
}

/// A decision with the chain of reasons that led to it.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The decision.
    pub decision: Decision,
    /// The caller, as text.
    pub caller: String,
    /// `namespace/name` of the target.
    pub target: String,
    /// The method.
    pub method: String,
    /// Each rule looked at, in order, with what it found.
    pub steps: Vec<String>,
}

/// Decides like [`decide`] and records why.
pub fn explain(
    snapshot: &MeshSnapshot,
    caller: &Caller,
    namespace: &str,
    name: &str,
    method: &str,
) -> Explanation {
    let mut steps = Vec::new();
    let decision = evaluate(snapshot, caller, namespace, name, method, &mut steps);
    Explanation {
        decision,
        caller: caller.to_string(),
        target: format!("{namespace}/{name}"),
        method: method.to_owned(),
        steps,
    }
}

/// The namespace a caller belongs to in this mesh, or why it belongs to none.
fn local_namespace<'c>(
    snapshot: &MeshSnapshot,
    caller: &'c Caller,
) -> Result<&'c str, &'static str> {
    match caller {
        Caller::Anonymous => Err("anonymous callers belong to no namespace"),
        Caller::Jwt { .. } => Err("a JWT subject belongs to no namespace"),
        Caller::Spiffe(id) => {
            if id.trust_domain_name() != snapshot.trust_domain().name() {
                return Err("callers from another trust domain belong to no local namespace");
            }
            id.namespace()
                .ok_or("the caller's SPIFFE ID is not of the form ns/<namespace>/sa/<sa>")
        }
    }
}

fn evaluate(
    snapshot: &MeshSnapshot,
    caller: &Caller,
    namespace: &str,
    name: &str,
    method: &str,
    trace: &mut impl Trace,
) -> Decision {
    trace.step(|| format!("caller: {caller}; target: {namespace}/{name}; method: {method}"));
    let Some(target) = snapshot.agent(namespace, name) else {
        trace.step(|| {
            format!(
                "no agent {namespace}/{name} in snapshot v{}",
                snapshot.version()
            )
        });
        return Decision::deny(Rule::UnknownTarget, "there is no such agent");
    };

    if let Caller::Spiffe(id) = caller {
        if target.denied_callers.contains(id) {
            trace.step(|| matched("deniedCallers", target.denied_callers.matching(id)));
            return Decision::deny(Rule::DeniedCallers, "the caller is listed in deniedCallers");
        }
        trace.step(|| {
            describe_list(
                "deniedCallers",
                &target.denied_callers.patterns(),
                "no entry matches",
            )
        });

        let cp = snapshot.control_plane();
        if id.namespace() == Some(SYSTEM_NAMESPACE) && (*id == cp.gateway || *id == cp.controller) {
            if method == CARD_METHOD {
                trace.step(|| {
                    "control plane: Warden's gateway and controller may fetch the agent card".into()
                });
                return Decision::allow(
                    Rule::ControlPlane,
                    "Warden's control plane may fetch the agent card",
                );
            }
            trace.step(|| format!("control plane: {id} may only fetch the agent card ({CARD_METHOD}), not {method}"));
            return Decision::deny(
                Rule::ControlPlane,
                "Warden's control-plane identities may only fetch the agent card",
            );
        }

        if target.allowed_callers.contains(id) {
            trace.step(|| matched("allowedCallers", target.allowed_callers.matching(id)));
            return Decision::allow(
                Rule::AllowedCallers,
                "the caller is listed in allowedCallers",
            );
        }
        trace.step(|| {
            describe_list(
                "allowedCallers",
                &target.allowed_callers.patterns(),
                "no entry matches",
            )
        });
    } else {
        trace.step(|| "deniedCallers/allowedCallers: only apply to SPIFFE IDs".into());
    }

    match target.allowed_from {
        NamespaceFrom::Same => match local_namespace(snapshot, caller) {
            Ok(ns) if ns == target.namespace => {
                trace.step(|| {
                    format!("allowedNamespaces.from=Same: caller namespace {ns} is the agent's")
                });
                Decision::allow(
                    Rule::SameNamespace,
                    "the caller is in the agent's namespace",
                )
            }
            Ok(ns) => {
                trace.step(|| {
                    format!(
                        "allowedNamespaces.from=Same: caller namespace {ns} is not {}",
                        target.namespace
                    )
                });
                Decision::deny(
                    Rule::SameNamespace,
                    "the caller is in another namespace and the agent admits only its own (from: Same)",
                )
            }
            Err(why) => {
                trace.step(|| format!("allowedNamespaces.from=Same: {why}"));
                Decision::deny(Rule::SameNamespace, no_namespace_reason(caller))
            }
        },
        NamespaceFrom::All => match caller {
            Caller::Anonymous if target.mtls_mode == MtlsMode::Strict => {
                trace.step(|| "allowedNamespaces.from=All: the agent is Strict, which never admits anonymous callers".into());
                Decision::deny(
                    Rule::AllNamespaces,
                    "Strict agents never admit anonymous callers",
                )
            }
            Caller::Anonymous => {
                trace.step(|| format!("allowedNamespaces.from=All: anonymous callers are admitted because the agent is {}", target.mtls_mode));
                Decision::allow(
                    Rule::AllNamespaces,
                    "anonymous callers are admitted (from: All, agent not Strict)",
                )
            }
            _ => {
                trace.step(|| {
                    "allowedNamespaces.from=All: any authenticated caller is admitted".into()
                });
                Decision::allow(
                    Rule::AllNamespaces,
                    "any authenticated caller is admitted (from: All)",
                )
            }
        },
        NamespaceFrom::Selector => match local_namespace(snapshot, caller) {
            Ok(ns) => {
                let labels = snapshot.namespace_labels(ns);
                if crate::selector::matches(target.selector.as_ref(), labels) {
                    trace.step(|| {
                        format!(
                            "allowedNamespaces.from=Selector: namespace {ns} {} matches {}",
                            show_labels(labels),
                            show_selector(target)
                        )
                    });
                    Decision::allow(
                        Rule::NamespaceSelector,
                        "the caller's namespace labels match the selector",
                    )
                } else {
                    trace.step(|| {
                        let failed: Vec<String> = target
                            .selector
                            .iter()
                            .flat_map(|s| s.requirements())
                            .filter(|r| !r.matches(labels))
                            .map(|r| r.to_string())
                            .collect();
                        let declared = if snapshot.namespace_declared(ns) { "" } else { " (no Namespace resource declares it)" };
                        format!(
                            "allowedNamespaces.from=Selector: namespace {ns}{declared} {} does not match {}; unmet: {}",
                            show_labels(labels),
                            show_selector(target),
                            failed.join(", ")
                        )
                    });
                    Decision::deny(
                        Rule::NamespaceSelector,
                        "the caller's namespace labels do not match the selector",
                    )
                }
            }
            Err(why) => {
                trace.step(|| format!("allowedNamespaces.from=Selector: {why}"));
                Decision::deny(Rule::NamespaceSelector, no_namespace_reason(caller))
            }
        },
    }
}

fn no_namespace_reason(caller: &Caller) -> &'static str {
    match caller {
        Caller::Anonymous => "anonymous callers never satisfy a namespace rule",
        Caller::Jwt { .. } => "a JWT subject belongs to no namespace",
        Caller::Spiffe(_) => {
            "the caller belongs to no namespace of this mesh (other trust domain or not ns/<ns>/sa/<sa>)"
        }
    }
}

fn matched(field: &str, entry: Option<&warden_identity::PeerMatcher>) -> String {
    match entry {
        Some(m) => format!("{field}: {m} matches the caller"),
        None => format!("{field}: matches the caller"),
    }
}

fn describe_list(field: &str, patterns: &[String], none: &str) -> String {
    if patterns.is_empty() {
        format!("{field}: empty")
    } else {
        format!("{field}: [{}] — {none}", patterns.join(", "))
    }
}

fn show_labels(labels: &Labels) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", parts.join(","))
}

fn show_selector(agent: &CompiledAgent) -> String {
    agent.selector.as_ref().map_or_else(
        || "no selector (matches nothing)".into(),
        |s| format!("selector {s}"),
    )
}
