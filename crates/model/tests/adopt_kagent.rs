//! kagent's `Agent` (kagent.dev/v1alpha2) read as users wrote it: every field Warden enforces
//! is mapped, every field it ignores is noticed once by path, every error names the file, the
//! document, the object and the field as the user wrote it.

mod common;

use warden_model::policy::{Caller, decide};
use warden_model::resources::{MtlsMode, NamespaceFrom};

fn contains_all(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
}

const HEAD: &str = "apiVersion: kagent.dev/v1alpha2\nkind: Agent\nmetadata: {name: orchestrator, namespace: team-alpha}\n";

#[test]
fn every_enforced_field_is_mapped() {
    let manifests = common::manifests(&format!(
        r#"{HEAD}spec:
  type: Declarative
  description: Plans work.
  allowedNamespaces:
    from: Selector
    selector:
      matchLabels: {{team: alpha}}
      matchExpressions: [{{key: tier, operator: NotIn, values: [external]}}]
  declarative:
    deployment: {{serviceAccountName: orchestrator-sa}}
    tools:
      - type: McpServer
        mcpServer: {{name: k8s-tools, kind: RemoteMCPServer}}
      - type: Agent
        agent: {{name: specialist, namespace: team-beta, kind: Agent, apiGroup: kagent.dev}}
        headersFrom:
          - {{name: X-Delegation-Token, valueFrom: {{type: Secret, name: tok, key: token}}}}
          - {{name: X-Team, valueFrom: {{type: ConfigMap, name: team, key: name}}}}
          - {{name: X-Literal, value: v}}
      - type: Agent
        agent: {{name: helper}}
"#
    ))
    .unwrap();
    let agent = &manifests.agents[0].resource;
    let spec = &agent.spec;
    assert_eq!(agent.metadata.name.as_deref(), Some("orchestrator"));
    assert_eq!(agent.metadata.namespace.as_deref(), Some("team-alpha"));
    assert_eq!(spec.description.as_deref(), Some("Plans work."));
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some("orchestrator-sa")
    );
    assert_eq!(spec.port, 8080, "kagent serves A2A on port 8080");
    assert_eq!(spec.allowed_namespaces.from, NamespaceFrom::Selector);
    let selector = spec.allowed_namespaces.selector.as_ref().unwrap();
    assert_eq!(selector.match_labels.as_ref().unwrap()["team"], "alpha");
    assert_eq!(
        selector.match_expressions.as_ref().unwrap()[0].operator,
        "NotIn"
    );
    assert_eq!(
        spec.tools.len(),
        2,
        "the MCP tool is not an agent reference"
    );
    let tool = &spec.tools[0];
    assert_eq!(tool.agent_ref.name, "specialist");
    assert_eq!(tool.agent_ref.namespace.as_deref(), Some("team-beta"));
    let secret = tool.headers_from[0].value_from.as_ref().unwrap();
    assert_eq!(secret.secret_key_ref.as_ref().unwrap().name, "tok");
    assert!(secret.config_map_key_ref.is_none());
    let config_map = tool.headers_from[1].value_from.as_ref().unwrap();
    assert_eq!(config_map.config_map_key_ref.as_ref().unwrap().key, "name");
    assert_eq!(tool.headers_from[2].value.as_deref(), Some("v"));
    assert_eq!(
        spec.tools[1].agent_ref.namespace, None,
        "defaults to the agent's own"
    );
    // The MCP tool is noticed, once.
    assert_eq!(manifests.notices.len(), 1, "{:#?}", manifests.notices);
    contains_all(
        &manifests.notices[0],
        &[
            "(Agent.kagent.dev team-alpha/orchestrator)",
            "spec.declarative.tools[0]",
            "MCP tool",
        ],
    );
    // BYO agents' service account comes from spec.byo.deployment.
    let byo = common::manifests(&format!(
        "{HEAD}spec: {{type: BYO, byo: {{deployment: {{image: x, serviceAccountName: byo-sa}}}}}}\n"
    ))
    .unwrap();
    assert_eq!(
        byo.agents[0].resource.spec.service_account_name.as_deref(),
        Some("byo-sa")
    );
}

#[test]
fn every_ignored_field_is_noticed_once_by_path() {
    let deployment_fields = [
        "image: x",
        "cmd: x",
        "args: [a]",
        "workingDir: /w",
        "imageRegistry: r",
        "replicas: 2",
        "imagePullSecrets: [{name: p}]",
        "volumes: []",
        "volumeMounts: []",
        "labels: {a: b}",
        "annotations: {a: b}",
        "deploymentAnnotations: {a: b}",
        "env: []",
        "envFrom: []",
        "imagePullPolicy: Always",
        "resources: {}",
        "tolerations: []",
        "affinity: {}",
        "topologySpreadConstraints: []",
        "nodeSelector: {}",
        "securityContext: {}",
        "podSecurityContext: {}",
        "serviceAccountConfig: {}",
        "extraContainers: []",
    ];
    let yaml = format!(
        r#"{HEAD}spec:
  type: Declarative
  iconUrl: https://x/icon.png
  documentationUrl: https://x/doc
  version: "1"
  provider: {{organization: o, url: https://o}}
  skills: {{refs: [ghcr.io/x/skill]}}
  sandbox: {{network: {{allowedDomains: [x.com]}}}}
  declarative:
    runtime: go
    systemMessage: hi
    systemMessageFrom: {{type: ConfigMap, name: p, key: k}}
    promptTemplate: {{dataSources: []}}
    modelConfig: default-model-config
    stream: true
    a2aConfig: {{skills: [{{name: s}}]}}
    memory: {{modelConfig: m}}
    shareTools: true
    context: {{compaction: {{compactionInterval: 5}}}}
    deployment: {{{}}}
    tools:
      - {{type: Agent, agent: {{name: a}}, isolateSessions: true}}
status: {{conditions: []}}
"#,
        deployment_fields.join(", ")
    );
    let manifests = common::manifests(&yaml).unwrap();
    let mut expected: Vec<String> = [
        "spec.iconUrl",
        "spec.documentationUrl",
        "spec.version",
        "spec.provider",
        "spec.skills",
        "spec.sandbox",
        "spec.declarative.runtime",
        "spec.declarative.systemMessage",
        "spec.declarative.systemMessageFrom",
        "spec.declarative.promptTemplate",
        "spec.declarative.modelConfig",
        "spec.declarative.stream",
        "spec.declarative.a2aConfig",
        "spec.declarative.memory",
        "spec.declarative.shareTools",
        "spec.declarative.context",
        "spec.declarative.tools[0].isolateSessions",
        "status",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for field in deployment_fields {
        let name = field.split(':').next().unwrap();
        expected.push(format!("spec.declarative.deployment.{name}"));
    }
    assert_eq!(
        manifests.notices.len(),
        expected.len(),
        "{:#?}",
        manifests.notices
    );
    for path in &expected {
        let hits = manifests
            .notices
            .iter()
            .filter(|n| n.contains(&format!(": {path}: ignored")))
            .count();
        assert_eq!(hits, 1, "{path}: {:#?}", manifests.notices);
    }
    for notice in &manifests.notices {
        contains_all(
            notice,
            &["test.yaml: document 1 (Agent.kagent.dev team-alpha/orchestrator)"],
        );
    }
}

#[test]
fn errors_name_file_document_object_and_the_users_field() {
    let cases: &[(&str, &[&str])] = &[
        (
            "spec: {type: Declarative, declarative: {}, allowedNamespace: {from: All}}",
            &["spec.allowedNamespace", "unknown field `allowedNamespace`"],
        ),
        (
            "spec: {type: Declarative, declarative: {}, allowedNamespaces: {from: Selector, selector: {matchLabel: {team: alpha}}}}",
            &[
                "spec.allowedNamespaces.selector",
                "unknown field `matchLabel`",
            ],
        ),
        (
            "spec: {type: Declarative, declarative: {modelConfg: m}}",
            &["spec.declarative.modelConfg", "unknown field"],
        ),
        (
            "spec: {type: Declarative, declarative: {tools: [{agent: {name: s, namespace: b}}]}}",
            &["spec.declarative.tools[0].type", "type: Agent"],
        ),
        (
            "spec: {type: Declarative, declarative: {tools: [{type: Agent}]}}",
            &["spec.declarative.tools[0].agent", "must be specified"],
        ),
        (
            "spec: {type: Declarative, declarative: {tools: [{type: Agent, agent: {name: s, kind: RemoteMCPServer}}]}}",
            &["spec.declarative.tools[0].agent.kind", "RemoteMCPServer"],
        ),
        (
            "spec: {type: Declarative, declarative: {tools: [{type: Agent, agent: {name: s}, headersFrom: [{name: X-A, valueFrom: {type: Vault, name: v, key: k}}]}]}}",
            &[
                "spec.declarative.tools[0].headersFrom[0].valueFrom.type",
                "unknown variant `Vault`",
            ],
        ),
        (
            "spec: {type: Declarative, declarative: {tools: [{type: Agent, agent: {name: s}, headersFrom: [{name: X-A, valueFrom: {type: Secret, name: v, key: k}, valu: x}]}]}}",
            &[
                "spec.declarative.tools[0].headersFrom[0]",
                "unknown field `valu`",
            ],
        ),
        (
            "spec: {type: BYO}",
            &["spec.type", "byo must be specified if type is BYO"],
        ),
        (
            "spec: {type: Declarative, declarative: {deployment: {serviceAccountName: Bad_SA}}}",
            &[
                "spec.declarative.deployment.serviceAccountName",
                "not a DNS label",
            ],
        ),
        (
            // The compiler's errors about the second agent tool (index 1 in Warden's list is
            // index 2 in the user's, after an MCP tool) name the user's path.
            "spec: {type: Declarative, declarative: {tools: [{type: Agent, agent: {name: s}}, {type: McpServer, mcpServer: {name: m}}, {type: Agent, agent: {name: t}, headersFrom: [{name: X-Forwarded-Client-Cert, value: forged}]}]}}",
            &[
                "spec.declarative.tools[2].headersFrom[0].name",
                "carries caller identity",
            ],
        ),
        (
            "spec: {type: Declarative, declarative: {tools: [{type: Agent, agent: {name: s}, headersFrom: [{name: X-A}]}]}}",
            &[
                "spec.declarative.tools[0].headersFrom[0]",
                "exactly one of value and valueFrom",
            ],
        ),
    ];
    for (spec, parts) in cases {
        let errors = common::errors(&format!("{HEAD}{spec}\n"));
        assert_eq!(errors.len(), 1, "{spec}: {errors:#?}");
        contains_all(&errors[0], parts);
        contains_all(
            &errors[0],
            &["test.yaml: document 1 (Agent.kagent.dev team-alpha/orchestrator)"],
        );
    }
    let errors = common::errors(
        "apiVersion: kagent.dev/v1alpha1\nkind: Agent\nmetadata: {name: a, namespace: b}\nspec: {}\n",
    );
    contains_all(&errors[0], &["apiVersion", "kagent.dev/v1alpha2"]);
    let errors = common::errors(&format!(
        "{HEAD}spec: {{type: Declarative, declarative: {{}}}}\nsatus: {{}}\n"
    ));
    contains_all(&errors[0], &["satus", "unknown field"]);
}

/// kagent's PR #1908 scenario as written in kagent's kinds: the same decisions and the same
/// Accepted conditions as the Warden example.
#[test]
fn the_kagent_example_decides_like_the_seed() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/kagent-cross-namespace");
    let manifests = warden_model::load_path(&path).unwrap();
    let snapshot = warden_model::compile(&manifests, 1).unwrap();
    let agent = |ns: &str, name: &str| snapshot.agent(ns, name).unwrap();
    let id = |ns: &str, name: &str| Caller::Spiffe(agent(ns, name).spiffe_id.clone());
    let specialist = agent("team-beta", "specialist");
    assert_eq!(
        specialist.mtls_mode,
        MtlsMode::Strict,
        "AgentRuntime mtlsMode: strict"
    );
    assert_eq!(
        agent("team-alpha", "orchestrator").mtls_mode,
        MtlsMode::Permissive,
        "team-alpha's authbridge-runtime-config"
    );
    let call =
        |caller: &Caller| decide(&snapshot, caller, "team-beta", "specialist", "SendMessage");
    assert!(call(&id("team-alpha", "orchestrator")).allowed);
    assert!(!call(&id("team-gamma", "rogue")).allowed);
    assert!(!call(&Caller::Anonymous).allowed);
    let orchestrator = agent("team-alpha", "orchestrator");
    assert!(orchestrator.accepted.status);
    assert_eq!(
        orchestrator.tools[0].headers,
        vec![(
            "X-Delegation-Token".to_owned(),
            "delegated-by-team-alpha".to_owned()
        )]
    );
    let rogue = agent("team-gamma", "rogue");
    assert!(!rogue.accepted.status);
    assert_eq!(rogue.accepted.reason, "CrossNamespaceReferenceDenied");
    // Only ignored model settings and the AgentRuntimes' type labels are noticed.
    assert!(
        manifests.notices.iter().all(|n| n.contains("ignored")),
        "{:#?}",
        manifests.notices
    );
}

/// kagent names the card's agent with `-` replaced by `_`; Warden's own kind keeps the plain
/// name, so the same dashed name compiles to two different card names by kind.
#[test]
fn a_dashed_kagent_agent_keeps_kagents_card_name() {
    let snapshot = common::mesh(
        "apiVersion: kagent.dev/v1alpha2\nkind: Agent\nmetadata: {name: my-helper, namespace: team-alpha}\nspec: {declarative: {}}\n\
---\napiVersion: kagent.dev/v1alpha2\nkind: Agent\nmetadata: {name: plain, namespace: team-alpha}\nspec: {declarative: {}}\n\
---\napiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: my-helper, namespace: team-beta}\nspec: {}\n",
    );
    let card = |ns: &str, name: &str| snapshot.agent(ns, name).unwrap().card_name().to_owned();
    assert_eq!(card("team-alpha", "my-helper"), "my_helper");
    assert_eq!(card("team-alpha", "plain"), "plain");
    assert_eq!(card("team-beta", "my-helper"), "my-helper");
    // The resource keeps its name: URLs, keys and SPIFFE IDs are unchanged.
    let kagent = snapshot.agent("team-alpha", "my-helper").unwrap();
    assert_eq!(kagent.key(), "team-alpha/my-helper");
    assert!(kagent.spiffe_id.to_string().ends_with("/sa/my-helper"));
}
