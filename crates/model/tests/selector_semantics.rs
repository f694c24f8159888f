//! Label-selector semantics, case by case, as Kubernetes defines them
//! (k8s.io/apimachinery/pkg/labels): requirements are ANDed; NotIn and DoesNotExist are
//! satisfied by a missing key; an empty selector matches everything; a null one nothing.

use std::collections::BTreeMap;

use warden_model::resources::{LabelSelector, LabelSelectorRequirement};
use warden_model::selector::{Selector, matches};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

fn selector(match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> LabelSelector {
    LabelSelector {
        match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
        match_expressions: (!exprs.is_empty()).then_some(exprs),
    }
}

/// (description, selector, namespace labels, expected match)
type Case<'a> = (&'a str, LabelSelector, &'a [(&'a str, &'a str)], bool);

#[test]
fn selector_table_matches_kubernetes() {
    let env_prod = [("env", "prod")];
    let env_dev = [("env", "dev")];
    let env_prod_team = [("env", "prod"), ("team", "a")];
    let none: [(&str, &str); 0] = [];
    let cases: Vec<Case> = vec![
        (
            "matchLabels equal",
            selector(&[("env", "prod")], vec![]),
            &env_prod,
            true,
        ),
        (
            "matchLabels other value",
            selector(&[("env", "prod")], vec![]),
            &env_dev,
            false,
        ),
        (
            "matchLabels missing key",
            selector(&[("env", "prod")], vec![]),
            &none,
            false,
        ),
        (
            "matchLabels all must hold",
            selector(&[("env", "prod"), ("team", "b")], vec![]),
            &env_prod_team,
            false,
        ),
        (
            "matchLabels subset",
            selector(&[("env", "prod")], vec![]),
            &env_prod_team,
            true,
        ),
        (
            "In listed",
            selector(&[], vec![expr("env", "In", &["dev", "prod"])]),
            &env_prod,
            true,
        ),
        (
            "In not listed",
            selector(&[], vec![expr("env", "In", &["dev", "qa"])]),
            &env_prod,
            false,
        ),
        (
            "In missing key",
            selector(&[], vec![expr("env", "In", &["prod"])]),
            &none,
            false,
        ),
        (
            "NotIn listed",
            selector(&[], vec![expr("env", "NotIn", &["prod"])]),
            &env_prod,
            false,
        ),
        (
            "NotIn not listed",
            selector(&[], vec![expr("env", "NotIn", &["dev"])]),
            &env_prod,
            true,
        ),
        (
            "NotIn missing key",
            selector(&[], vec![expr("env", "NotIn", &["prod"])]),
            &none,
            true,
        ),
        (
            "Exists present",
            selector(&[], vec![expr("env", "Exists", &[])]),
            &env_dev,
            true,
        ),
        (
            "Exists missing",
            selector(&[], vec![expr("env", "Exists", &[])]),
            &none,
            false,
        ),
        (
            "DoesNotExist present",
            selector(&[], vec![expr("env", "DoesNotExist", &[])]),
            &env_dev,
            false,
        ),
        (
            "DoesNotExist missing",
            selector(&[], vec![expr("env", "DoesNotExist", &[])]),
            &none,
            true,
        ),
        (
            "labels and expressions ANDed",
            selector(&[("team", "a")], vec![expr("env", "In", &["dev"])]),
            &env_prod_team,
            false,
        ),
        (
            "labels and expressions both hold",
            selector(&[("team", "a")], vec![expr("env", "In", &["prod"])]),
            &env_prod_team,
            true,
        ),
        (
            "empty selector, labels",
            selector(&[], vec![]),
            &env_prod,
            true,
        ),
        (
            "empty selector, no labels",
            selector(&[], vec![]),
            &none,
            true,
        ),
    ];
    for (what, sel, labels_, expected) in cases {
        let compiled = Selector::compile(&sel).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            matches(Some(&compiled), &labels(labels_)),
            expected,
            "{what}"
        );
    }
    // A null selector matches nothing, not even an empty label set.
    assert!(!matches(None, &labels(&[])));
    assert!(!matches(None, &labels(&env_prod)));
}

#[test]
fn invalid_selectors_name_the_field_and_rule() {
    let cases = [
        (
            selector(&[], vec![expr("env", "Equals", &["x"])]),
            "matchExpressions[0].operator",
            "unknown operator \"Equals\"",
        ),
        (
            selector(&[], vec![expr("env", "In", &[])]),
            "matchExpressions[0].values",
            "needs at least one value",
        ),
        (
            selector(&[], vec![expr("env", "NotIn", &[])]),
            "matchExpressions[0].values",
            "needs at least one value",
        ),
        (
            selector(&[], vec![expr("env", "Exists", &["x"])]),
            "matchExpressions[0].values",
            "takes no values",
        ),
        (
            selector(
                &[],
                vec![
                    expr("env", "Exists", &[]),
                    expr("env", "DoesNotExist", &["x"]),
                ],
            ),
            "matchExpressions[1].values",
            "takes no values",
        ),
        (
            selector(&[], vec![expr("bad key!", "Exists", &[])]),
            "matchExpressions[0].key",
            "not a valid label key",
        ),
        (
            selector(&[("-x", "y")], vec![]),
            "matchLabels.-x",
            "not a valid label key",
        ),
    ];
    for (sel, field, rule) in cases {
        let err = Selector::compile(&sel).expect_err(field);
        assert_eq!(err.field, field);
        assert!(err.rule.contains(rule), "{field}: {}", err.rule);
    }
}
