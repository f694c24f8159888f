//! Policy decision and compile costs at scale.
//!
//! Targets (issue 4): one decision ≤ 1 µs with 100,000 agents in 10,000 namespaces;
//! compiling 10,000 agents ≤ 1 s. Run with `cargo bench -p warden-model`.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use warden_identity::SpiffeId;
use warden_model::loader::{Manifests, Origin, Sourced};
use warden_model::policy::{Caller, decide};
use warden_model::resources::{Agent, AgentSpec, AllowedNamespaces, LabelSelector, NamespaceFrom};

fn origin() -> Origin {
    Origin {
        file: "bench".into(),
        document: 1,
        object: None,
    }
}

/// `agents` agents spread over `namespaces` namespaces; every third agent uses a selector,
/// every third All, the rest Same; each has one allowed and one denied caller.
fn mesh(agents: usize, namespaces: usize) -> Manifests {
    let mut m = Manifests::default();
    for n in 0..namespaces {
        let labels: BTreeMap<String, String> = [
            ("team".to_owned(), format!("t{}", n % 100)),
            (
                "tier".to_owned(),
                if n % 2 == 0 { "internal" } else { "external" }.to_owned(),
            ),
        ]
        .into();
        m.namespaces.push(Sourced {
            resource: Namespace {
                metadata: ObjectMeta {
                    name: Some(format!("ns-{n}")),
                    labels: Some(labels),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
            origin: origin(),
        });
    }
    for i in 0..agents {
        let ns = i % namespaces;
        let from = [
            NamespaceFrom::Same,
            NamespaceFrom::All,
            NamespaceFrom::Selector,
        ][i % 3];
        let spec = AgentSpec {
            description: None,
            service_account_name: None,
            port: 8080,
            mtls: None,
            allowed_namespaces: AllowedNamespaces {
                from,
                selector: (from == NamespaceFrom::Selector).then(|| LabelSelector {
                    match_labels: Some([("tier".to_owned(), "internal".to_owned())].into()),
                    match_expressions: None,
                }),
            },
            allowed_callers: vec![format!(
                "spiffe://warden.local/ns/ns-{}/sa/friend",
                (ns + 1) % namespaces
            )],
            denied_callers: vec![format!("spiffe://warden.local/ns/ns-{ns}/sa/banned")],
            tools: Vec::new(),
            card: None,
            local: None,
            forward_authorization: false,
            target_ref: None,
        };
        let mut agent = Agent::new(&format!("agent-{i}"), spec);
        agent.metadata.namespace = Some(format!("ns-{ns}"));
        m.agents.push(Sourced {
            resource: agent,
            origin: origin(),
        });
    }
    m
}

fn bench(c: &mut Criterion) {
    let big = warden_model::compile(&mesh(100_000, 10_000), 1).expect("valid mesh");
    let caller =
        Caller::Spiffe(SpiffeId::new("spiffe://warden.local/ns/ns-42/sa/orchestrator").unwrap());
    // agent-99998 is a Selector agent (99998 % 3 == 2) in ns-9998.
    let mut group = c.benchmark_group("decide_100k_agents_10k_namespaces");
    group.bench_function("selector", |b| {
        b.iter(|| {
            decide(
                black_box(&big),
                black_box(&caller),
                "ns-9998",
                "agent-99998",
                "SendMessage",
            )
        })
    });
    group.bench_function("same_namespace", |b| {
        b.iter(|| {
            decide(
                black_box(&big),
                black_box(&caller),
                "ns-9999",
                "agent-99999",
                "SendMessage",
            )
        })
    });
    group.bench_function("unknown_target", |b| {
        b.iter(|| {
            decide(
                black_box(&big),
                black_box(&caller),
                "ns-1",
                "nobody",
                "SendMessage",
            )
        })
    });
    group.finish();

    let small = warden_model::compile(&mesh(10, 5), 1).expect("valid mesh");
    c.bench_function("decide_10_agents/selector", |b| {
        b.iter(|| {
            decide(
                black_box(&small),
                black_box(&caller),
                "ns-2",
                "agent-2",
                "SendMessage",
            )
        })
    });

    let input = mesh(10_000, 1_000);
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.bench_function("10k_agents_1k_namespaces", |b| {
        b.iter(|| warden_model::compile(black_box(&input), 1).expect("valid mesh"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
