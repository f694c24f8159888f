//! Every policy rule and their precedence, one row each.

mod common;

use warden_identity::SpiffeId;
use warden_model::policy::{CARD_METHOD, Caller, Rule, decide, explain};

const MESH: &str = r#"
apiVersion: warden.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {trustDomain: warden.local}
---
apiVersion: v1
kind: Namespace
metadata: {name: alpha, labels: {access: yes-please, tier: internal}}
---
apiVersion: v1
kind: Namespace
metadata: {name: beta, labels: {tier: internal}}
---
apiVersion: v1
kind: Namespace
metadata: {name: gamma, labels: {tier: external}}
---
apiVersion: warden.dev/v1alpha1
kind: Agent
metadata: {name: same, namespace: beta}
spec: {}
---
apiVersion: warden.dev/v1alpha1
kind: Agent
metadata: {name: all-permissive, namespace: beta}
spec:
  allowedNamespaces: {from: All}
---
apiVersion: warden.dev/v1alpha1
kind: Agent
metadata: {name: all-strict, namespace: beta}
spec:
  mtls: {mode: Strict}
  allowedNamespaces: {from: All}
---
apiVersion: warden.dev/v1alpha1
kind: Agent
metadata: {name: selected, namespace: beta}
spec:
  allowedNamespaces:
    from: Selector
    selector: {matchLabels: {access: yes-please}}
  allowedCallers:
    - spiffe://warden.local/ns/gamma/sa/friend
    - spiffe://warden.local/ns/delta/sa/*
  deniedCallers:
    - spiffe://warden.local/ns/alpha/sa/intern
    - spiffe://warden.local/ns/delta/sa/banned
---
apiVersion: warden.dev/v1alpha1
kind: Agent
metadata: {name: tier-internal, namespace: beta}
spec:
  allowedNamespaces:
    from: Selector
    selector:
      matchExpressions:
        - {key: tier, operator: In, values: [internal]}
"#;

fn spiffe(s: &str) -> Caller {
    Caller::Spiffe(SpiffeId::new(s).unwrap())
}

#[test]
fn policy_table() {
    let mesh = common::mesh(MESH);
    let alpha_agent = spiffe("spiffe://warden.local/ns/alpha/sa/orchestrator");
    let beta_agent = spiffe("spiffe://warden.local/ns/beta/sa/worker");
    let gamma_agent = spiffe("spiffe://warden.local/ns/gamma/sa/rogue");
    let jwt = Caller::Jwt {
        issuer: "https://idp.example".into(),
        subject: "alice".into(),
    };
    let anon = Caller::Anonymous;
    let send = "SendMessage";
    // (caller, target, method, allowed, rule)
    let cases: Vec<(Caller, &str, &str, bool, Rule)> = vec![
        // Same (the default)
        (beta_agent.clone(), "same", send, true, Rule::SameNamespace),
        (
            alpha_agent.clone(),
            "same",
            send,
            false,
            Rule::SameNamespace,
        ),
        (anon.clone(), "same", send, false, Rule::SameNamespace),
        (jwt.clone(), "same", send, false, Rule::SameNamespace),
        (
            spiffe("spiffe://other.org/ns/beta/sa/worker"),
            "same",
            send,
            false,
            Rule::SameNamespace,
        ),
        (
            spiffe("spiffe://warden.local/beta/worker"),
            "same",
            send,
            false,
            Rule::SameNamespace,
        ),
        // All
        (
            gamma_agent.clone(),
            "all-permissive",
            send,
            true,
            Rule::AllNamespaces,
        ),
        (
            jwt.clone(),
            "all-permissive",
            send,
            true,
            Rule::AllNamespaces,
        ),
        (
            anon.clone(),
            "all-permissive",
            send,
            true,
            Rule::AllNamespaces,
        ),
        (anon.clone(), "all-strict", send, false, Rule::AllNamespaces),
        (
            gamma_agent.clone(),
            "all-strict",
            send,
            true,
            Rule::AllNamespaces,
        ),
        // Selector
        (
            alpha_agent.clone(),
            "selected",
            send,
            true,
            Rule::NamespaceSelector,
        ),
        (
            beta_agent.clone(),
            "selected",
            send,
            false,
            Rule::NamespaceSelector,
        ),
        (
            anon.clone(),
            "selected",
            send,
            false,
            Rule::NamespaceSelector,
        ),
        (
            spiffe("spiffe://other.org/ns/alpha/sa/orchestrator"),
            "selected",
            send,
            false,
            Rule::NamespaceSelector,
        ),
        (
            beta_agent.clone(),
            "tier-internal",
            send,
            true,
            Rule::NamespaceSelector,
        ),
        (
            gamma_agent.clone(),
            "tier-internal",
            send,
            false,
            Rule::NamespaceSelector,
        ),
        // An undeclared namespace has no labels.
        (
            spiffe("spiffe://warden.local/ns/epsilon/sa/x"),
            "tier-internal",
            send,
            false,
            Rule::NamespaceSelector,
        ),
        // allowedCallers admits in addition, exact and pattern
        (
            spiffe("spiffe://warden.local/ns/gamma/sa/friend"),
            "selected",
            send,
            true,
            Rule::AllowedCallers,
        ),
        (
            spiffe("spiffe://warden.local/ns/delta/sa/anyone"),
            "selected",
            send,
            true,
            Rule::AllowedCallers,
        ),
        // deniedCallers wins over the selector and over allowedCallers
        (
            spiffe("spiffe://warden.local/ns/alpha/sa/intern"),
            "selected",
            send,
            false,
            Rule::DeniedCallers,
        ),
        (
            spiffe("spiffe://warden.local/ns/delta/sa/banned"),
            "selected",
            send,
            false,
            Rule::DeniedCallers,
        ),
        // control plane: the card, and nothing more
        (
            spiffe("spiffe://warden.local/ns/warden-system/sa/warden-gateway"),
            "same",
            CARD_METHOD,
            true,
            Rule::ControlPlane,
        ),
        (
            spiffe("spiffe://warden.local/ns/warden-system/sa/warden-controller"),
            "selected",
            CARD_METHOD,
            true,
            Rule::ControlPlane,
        ),
        (
            spiffe("spiffe://warden.local/ns/warden-system/sa/warden-gateway"),
            "all-permissive",
            send,
            false,
            Rule::ControlPlane,
        ),
        (
            spiffe("spiffe://warden.local/ns/warden-system/sa/impostor"),
            "same",
            CARD_METHOD,
            false,
            Rule::SameNamespace,
        ),
        // unknown target
        (
            beta_agent.clone(),
            "nobody",
            send,
            false,
            Rule::UnknownTarget,
        ),
    ];
    for (caller, target, method, allowed, rule) in cases {
        let decision = decide(&mesh, &caller, "beta", target, method);
        assert_eq!(
            (decision.allowed, decision.rule),
            (allowed, rule),
            "{caller} → beta/{target} ({method}): {}",
            decision.reason
        );
        // explain decides identically.
        assert_eq!(
            explain(&mesh, &caller, "beta", target, method).decision,
            decision
        );
    }
}

#[test]
fn explanations_show_the_labels_and_the_unmet_requirement() {
    let mesh = common::mesh(MESH);
    let e = explain(
        &mesh,
        &spiffe("spiffe://warden.local/ns/gamma/sa/rogue"),
        "beta",
        "selected",
        "SendMessage",
    );
    assert!(!e.decision.allowed);
    let text = e.steps.join("\n");
    assert!(text.contains("namespace gamma {tier=external}"), "{text}");
    assert!(text.contains("unmet: access=yes-please"), "{text}");
    let e = explain(
        &mesh,
        &spiffe("spiffe://warden.local/ns/alpha/sa/intern"),
        "beta",
        "selected",
        "SendMessage",
    );
    assert!(
        e.steps
            .iter()
            .any(|s| s.contains("deniedCallers: spiffe://warden.local/ns/alpha/sa/intern matches")),
        "{:?}",
        e.steps
    );
    let e = explain(
        &mesh,
        &Caller::Anonymous,
        "beta",
        "all-strict",
        "SendMessage",
    );
    assert_eq!(
        e.decision.reason,
        "Strict agents never admit anonymous callers"
    );
}
