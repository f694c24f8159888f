//! On random meshes, the compiled engine decides exactly as a naive reference implementation
//! of DESIGN.md's rules, written here from scratch over the raw resources (string matching,
//! linear scans, no indexes).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;
use warden_identity::SpiffeId;
use warden_model::loader::{Manifests, Origin, Sourced};
use warden_model::policy::{CARD_METHOD, Caller, decide};
use warden_model::resources::{
    Agent, AgentSpec, AllowedNamespaces, LabelSelector, LabelSelectorRequirement, MtlsMode,
    MtlsSpec, NamespaceFrom,
};

const NAMESPACES: [&str; 5] = ["ns-a", "ns-b", "ns-c", "ns-d", "warden-system"];
const KEYS: [&str; 3] = ["team", "tier", "env"];
const VALUES: [&str; 3] = ["x", "y", "z"];
const SAS: [&str; 4] = ["s1", "s2", "warden-gateway", "warden-controller"];

/// A tiny deterministic generator, so that one proptest seed describes one whole mesh.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn random_id(rng: &mut Rng) -> String {
    let td = if rng.chance(10) {
        "other.org"
    } else {
        "warden.local"
    };
    if rng.chance(5) {
        return format!("spiffe://{td}/not/a/workload");
    }
    format!(
        "spiffe://{td}/ns/{}/sa/{}",
        rng.pick(&NAMESPACES),
        rng.pick(&SAS)
    )
}

fn random_pattern(rng: &mut Rng) -> String {
    if rng.chance(30) {
        format!("spiffe://warden.local/ns/{}/sa/*", rng.pick(&NAMESPACES))
    } else {
        random_id(rng)
    }
}

fn random_labels(rng: &mut Rng) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for key in KEYS {
        if rng.chance(50) {
            labels.insert(key.to_string(), rng.pick(&VALUES).to_string());
        }
    }
    labels
}

fn random_selector(rng: &mut Rng) -> LabelSelector {
    let match_labels = rng
        .chance(50)
        .then(|| random_labels(rng))
        .filter(|l| !l.is_empty() || rng.chance(50));
    let exprs: Vec<LabelSelectorRequirement> = (0..rng.below(3))
        .map(|_| {
            let op = rng.pick(&["In", "NotIn", "Exists", "DoesNotExist"]);
            let values = matches!(op, "In" | "NotIn").then(|| {
                (0..1 + rng.below(2))
                    .map(|_| rng.pick(&VALUES).to_string())
                    .collect()
            });
            LabelSelectorRequirement {
                key: rng.pick(&KEYS).to_string(),
                operator: op.to_string(),
                values,
            }
        })
        .collect();
    LabelSelector {
        match_labels,
        match_expressions: (!exprs.is_empty()).then_some(exprs),
    }
}

fn origin() -> Origin {
    Origin {
        file: "generated".into(),
        document: 1,
        object: None,
    }
}

fn random_mesh(seed: u64) -> Manifests {
    let mut rng = Rng(seed | 1);
    let mut manifests = Manifests::default();
    for ns in NAMESPACES.iter().take(4) {
        if rng.chance(80) {
            manifests.namespaces.push(Sourced {
                resource: Namespace {
                    metadata: ObjectMeta {
                        name: Some(ns.to_string()),
                        labels: Some(random_labels(&mut rng)),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                },
                origin: origin(),
            });
        }
    }
    for i in 0..(1 + rng.below(12)) {
        let from = [
            NamespaceFrom::Same,
            NamespaceFrom::All,
            NamespaceFrom::Selector,
        ][rng.below(3)];
        let spec = AgentSpec {
            description: None,
            service_account_name: rng.chance(50).then(|| rng.pick(&SAS[..2]).to_string()),
            port: 8080,
            mtls: rng.chance(70).then(|| MtlsSpec {
                mode: Some(
                    [MtlsMode::Disabled, MtlsMode::Permissive, MtlsMode::Strict][rng.below(3)],
                ),
            }),
            allowed_namespaces: AllowedNamespaces {
                from,
                selector: (from == NamespaceFrom::Selector).then(|| random_selector(&mut rng)),
            },
            allowed_callers: (0..rng.below(3))
                .map(|_| random_pattern(&mut rng))
                .collect(),
            denied_callers: (0..rng.below(3))
                .map(|_| random_pattern(&mut rng))
                .collect(),
            tools: Vec::new(),
            card: None,
            local: None,
            forward_authorization: false,
            target_ref: None,
        };
        let mut agent = Agent::new(&format!("agent-{i}"), spec);
        agent.metadata.namespace = Some(rng.pick(&NAMESPACES[..4]).to_string());
        manifests.agents.push(Sourced {
            resource: agent,
            origin: origin(),
        });
    }
    manifests
}

// ---- the reference: DESIGN.md's rules, written as plainly as possible ----

/// (trust domain, namespace, service account) of a workload ID, by string splitting.
fn split_id(id: &str) -> Option<(&str, Option<(&str, &str)>)> {
    let rest = id.strip_prefix("spiffe://")?;
    let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
    let parts: Vec<&str> = path.split('/').collect();
    let workload = match parts.as_slice() {
        ["ns", ns, "sa", sa] => Some((*ns, *sa)),
        _ => None,
    };
    Some((td, workload))
}

fn pattern_matches(pattern: &str, id: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix("/sa/*") {
        let Some(rest) = prefix.strip_prefix("spiffe://") else {
            return false;
        };
        let Some((ptd, ppath)) = rest.split_once('/') else {
            return false;
        };
        let Some(pns) = ppath.strip_prefix("ns/") else {
            return false;
        };
        return matches!(split_id(id), Some((td, Some((ns, _)))) if td == ptd && ns == pns);
    }
    pattern == id
}

fn selector_matches_reference(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        let ok = match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => !labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => unreachable!(),
        };
        if !ok {
            return false;
        }
    }
    true
}

fn reference(m: &Manifests, caller: &Caller, target_ns: &str, target: &str, method: &str) -> bool {
    let Some(agent) = m.agents.iter().map(|s| &s.resource).find(|a| {
        a.metadata.name.as_deref() == Some(target)
            && a.metadata.namespace.as_deref() == Some(target_ns)
    }) else {
        return false;
    };
    let spec = &agent.spec;
    let mode = spec
        .mtls
        .as_ref()
        .and_then(|m| m.mode)
        .unwrap_or(MtlsMode::Permissive);
    let caller_id = match caller {
        Caller::Spiffe(id) => Some(id.as_str().to_owned()),
        _ => None,
    };
    if let Some(id) = &caller_id {
        if spec.denied_callers.iter().any(|p| pattern_matches(p, id)) {
            return false;
        }
        if id == "spiffe://warden.local/ns/warden-system/sa/warden-gateway"
            || id == "spiffe://warden.local/ns/warden-system/sa/warden-controller"
        {
            return method == CARD_METHOD;
        }
        if spec.allowed_callers.iter().any(|p| pattern_matches(p, id)) {
            return true;
        }
    }
    let caller_ns = caller_id.as_deref().and_then(split_id).and_then(|(td, w)| {
        (td == "warden.local")
            .then_some(w)
            .flatten()
            .map(|(ns, _)| ns.to_owned())
    });
    match spec.allowed_namespaces.from {
        NamespaceFrom::Same => caller_ns.as_deref() == Some(target_ns),
        NamespaceFrom::All => !matches!(caller, Caller::Anonymous) || mode != MtlsMode::Strict,
        NamespaceFrom::Selector => {
            let Some(ns) = caller_ns else { return false };
            let labels = m
                .namespaces
                .iter()
                .find(|n| n.resource.metadata.name.as_deref() == Some(ns.as_str()))
                .and_then(|n| n.resource.metadata.labels.clone())
                .unwrap_or_default();
            spec.allowed_namespaces
                .selector
                .as_ref()
                .is_some_and(|s| selector_matches_reference(s, &labels))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn compiled_engine_decides_like_the_reference(seed in any::<u64>()) {
        let manifests = random_mesh(seed);
        let snapshot = warden_model::compile(&manifests, 1).expect("generated meshes are valid");
        let mut rng = Rng(seed.rotate_left(17) | 1);
        for _ in 0..60 {
            let caller = match rng.below(10) {
                0 => Caller::Anonymous,
                1 => Caller::Jwt { issuer: "https://idp".into(), subject: "alice".into() },
                _ => Caller::Spiffe(SpiffeId::new(&random_id(&mut rng)).unwrap()),
            };
            let ns = rng.pick(&NAMESPACES[..4]);
            let name = format!("agent-{}", rng.below(14));
            let method = if rng.chance(20) { CARD_METHOD } else { "SendMessage" };
            let got = decide(&snapshot, &caller, ns, &name, method).allowed;
            let want = reference(&manifests, &caller, ns, &name, method);
            prop_assert_eq!(got, want, "caller {} → {}/{} ({})", caller, ns, name, method);
        }
    }
}
