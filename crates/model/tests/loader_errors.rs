//! Bad manifests get errors that name the file, the document, the object, the field and the
//! rule; the example manifests load cleanly.

mod common;

fn one_error(yaml: &str) -> String {
    let errors = common::errors(yaml);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    errors.into_iter().next().unwrap_or_default()
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
}

const AGENT_HEAD: &str =
    "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: a, namespace: ns}\n";

#[test]
fn malformed_yaml_names_file_document_and_line() {
    let e =
        one_error("apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\nkind: [unclosed\n");
    assert_contains(&e, &["test.yaml: document 2", "malformed YAML", "line 5"]);
}

#[test]
fn wrong_types_name_the_field_path() {
    let e = one_error(&format!("{AGENT_HEAD}spec:\n  port: eighty\n"));
    assert_contains(
        &e,
        &[
            "test.yaml: document 1 (Agent ns/a)",
            "spec.port",
            "invalid type",
        ],
    );
    let e = one_error(&format!(
        "{AGENT_HEAD}spec:\n  allowedCallers: spiffe://warden.local/ns/x/sa/y\n"
    ));
    assert_contains(&e, &["spec.allowedCallers", "expected a sequence"]);
}

#[test]
fn unknown_enum_values_list_the_allowed_ones() {
    let e = one_error(&format!(
        "{AGENT_HEAD}spec:\n  allowedNamespaces: {{from: Everyone}}\n"
    ));
    assert_contains(
        &e,
        &[
            "spec.allowedNamespaces.from",
            "unknown variant `Everyone`",
            "`Same`, `All`, `Selector`",
        ],
    );
    let e = one_error(&format!("{AGENT_HEAD}spec:\n  mtls: {{mode: strict}}\n"));
    assert_contains(
        &e,
        &["spec.mtls.mode", "unknown variant `strict`", "`Strict`"],
    );
}

#[test]
fn misspelt_fields_are_errors_not_ignored_rules() {
    let e = one_error(&format!(
        "{AGENT_HEAD}spec:\n  deniedCaller: [spiffe://warden.local/ns/x/sa/y]\n"
    ));
    assert_contains(
        &e,
        &["spec", "unknown field `deniedCaller`", "deniedCallers"],
    );
}

#[test]
fn bad_values_name_field_and_rule() {
    let cases: [(&str, &[&str]); 8] = [
        (
            "  allowedNamespaces: {from: Selector}\n",
            &[
                "spec.allowedNamespaces.selector",
                "required when from is Selector",
            ],
        ),
        (
            "  allowedNamespaces: {from: Same, selector: {}}\n",
            &[
                "spec.allowedNamespaces.selector",
                "only used when from is Selector",
            ],
        ),
        (
            "  allowedNamespaces:\n    from: Selector\n    selector: {matchExpressions: [{key: team, operator: Equals, values: [a]}]}\n",
            &[
                "spec.allowedNamespaces.selector.matchExpressions[0].operator",
                "unknown operator",
            ],
        ),
        (
            "  allowedCallers: [spiffe://warden.local/ns/x/sa/y, not-an-id]\n",
            &["spec.allowedCallers[1]", "invalid SPIFFE ID"],
        ),
        (
            "  deniedCallers: [spiffe://warden.local/team/*/sa/*]\n",
            &["spec.deniedCallers[0]", "invalid SPIFFE ID"],
        ),
        ("  port: 0\n", &["spec.port", "between 1 and 65535"]),
        (
            "  tools: [{agentRef: {name: b}, headersFrom: [{name: X-A, value: v, valueFrom: {secretKeyRef: {name: s, key: k}}}]}]\n",
            &[
                "spec.tools[0].headersFrom[0]",
                "exactly one of value and valueFrom",
            ],
        ),
        (
            "  tools: [{agentRef: {name: b}, headersFrom: [{name: x-forwarded-client-cert, value: forged}]}]\n",
            &[
                "spec.tools[0].headersFrom[0].name",
                "carries caller identity",
            ],
        ),
    ];
    for (spec, parts) in cases {
        let e = one_error(&format!("{AGENT_HEAD}spec:\n{spec}"));
        assert_contains(&e, parts);
        assert_contains(&e, &["test.yaml: document 1 (Agent ns/a)"]);
    }
}

#[test]
fn duplicates_and_missing_metadata_are_refused() {
    let errors = common::errors(&format!(
        "{AGENT_HEAD}spec: {{}}\n---\n{AGENT_HEAD}spec: {{}}\n"
    ));
    assert_eq!(errors.len(), 1);
    assert_contains(
        &errors[0],
        &[
            "document 2",
            "agent ns/a is also declared at test.yaml: document 1",
        ],
    );
    let e = one_error(
        "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {namespace: ns}\nspec: {}\n",
    );
    assert_contains(&e, &["metadata.name", "required"]);
    let e = one_error(
        "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: Bad_Name}\nspec: {}\n",
    );
    assert_contains(&e, &["metadata.name", "not a DNS label"]);
    let e = one_error("kind: Agent\nmetadata: {name: a}\n");
    assert_contains(&e, &["needs apiVersion and kind"]);
    let e = one_error("apiVersion: warden.dev/v1alpha1\nkind: Agnet\nmetadata: {name: a}\n");
    assert_contains(&e, &["kind", "unknown Warden resource Agnet"]);
    let errors = common::errors(
        "apiVersion: warden.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: a}\nspec: {}\n---\napiVersion: warden.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: b}\nspec: {}\n",
    );
    assert_contains(&errors[0], &["document 2", "a mesh has one MeshConfig"]);
    let e = one_error(
        "apiVersion: warden.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: a}\nspec: {trustDomain: 'not a domain'}\n",
    );
    assert_contains(&e, &["spec.trustDomain", "invalid SPIFFE ID"]);
}

#[test]
fn unknown_kinds_are_skipped_with_a_notice() {
    let manifests = common::manifests(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns}\n",
    )
    .unwrap();
    assert_eq!(manifests.notices.len(), 1);
    assert_contains(
        &manifests.notices[0],
        &["document 1", "skipping Deployment (apps/v1)"],
    );
    assert_eq!(manifests.namespaces.len(), 1);
}

#[test]
fn missing_paths_and_empty_directories_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let errors = warden_model::load_path(&dir.path().join("nope.yaml")).unwrap_err();
    assert_contains(&errors[0].to_string(), &["nope.yaml"]);
    let errors = warden_model::load_path(dir.path()).unwrap_err();
    assert_contains(&errors[0].to_string(), &["no .yaml or .yml files"]);
}

#[test]
fn the_example_loads_from_its_directory() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cross-namespace-a2a");
    let manifests = warden_model::load_path(&path).unwrap();
    let snapshot = warden_model::compile(&manifests, 1).unwrap();
    assert_eq!(snapshot.agents().len(), 3);
}
