//! A misspelt field anywhere in a resource is an error naming its path, never a silently
//! dropped rule (a `matchLabel:` that left an empty selector once admitted every namespace).
//!
//! The test walks every nested object type of each resource's schema (generated from the Rust
//! types, as the CRD is): for each object in a document that sets every field, it adds a
//! misspelling of one of its fields and expects the load to fail naming that field. It also
//! checks that the documents reach every object type in the schema, so a new nested type
//! cannot be added without being walked.

mod common;

use std::collections::BTreeSet;

use serde_json::Value;
use serde_yaml_ng::Value as Yaml;
use warden_model::resources::{AgentSpec, MeshConfigSpec};

const AGENT: &str = r#"
apiVersion: warden.dev/v1alpha1
kind: Agent
metadata:
  name: specialist
  namespace: team-beta
  labels: {app: specialist}
  annotations: {note: x}
spec:
  description: d
  serviceAccountName: specialist
  port: 8080
  mtls: {mode: Strict}
  allowedNamespaces:
    from: Selector
    selector:
      matchLabels: {team: alpha}
      matchExpressions: [{key: tier, operator: In, values: [internal]}]
  allowedCallers: [spiffe://warden.local/ns/x/sa/y]
  deniedCallers: [spiffe://warden.local/ns/x/sa/z]
  tools:
    - agentRef: {name: other, namespace: team-beta}
      headersFrom:
        - name: X-A
          valueFrom: {secretKeyRef: {name: s, key: k}}
        - name: X-B
          valueFrom: {configMapKeyRef: {name: c, key: k}}
  card: {name: free-form, anything: goes}
  local: {command: warden, args: [agent, echo], env: {A: b}, port: 9000, user: nobody}
  targetRef: {kind: Deployment, name: specialist}
"#;

const MESH: &str = r#"
apiVersion: warden.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  trustDomain: warden.local
  defaultMtlsMode: Permissive
  identity: {provider: EmbeddedCa, socket: unix:///tmp/s, svidDir: /tmp, agentSocket: /tmp/a, serverSocket: /tmp/s}
  gateway: {serviceAccountName: warden-gateway, port: 8083, hostDomain: a2a.localhost}
  jwtIssuers: [{issuer: https://i, audiences: [a], jwksFile: /tmp/j}]
"#;

const OTHERS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-beta, labels: {team: beta}}
---
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: team-beta}
stringData: {k: v}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c, namespace: team-beta}
data: {k: v}
"#;

/// The schema of a spec type, with every subschema inlined.
fn schema_of<T: schemars::JsonSchema>() -> Value {
    let schema = schemars::generate::SchemaSettings::openapi3()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<T>();
    schema.as_value().clone()
}

/// The object schema inside `schema` (through `anyOf`/`oneOf`/`allOf` and nullable wrappers).
fn object_schema(schema: &Value) -> Option<&Value> {
    if schema.get("properties").is_some() || schema.get("additionalProperties").is_some() {
        return Some(schema);
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        if let Some(found) = schema
            .get(combinator)
            .and_then(Value::as_array)
            .and_then(|list| list.iter().find_map(object_schema))
        {
            return Some(found);
        }
    }
    None
}

fn items_schema(schema: &Value) -> Option<&Value> {
    if let Some(items) = schema.get("items") {
        return Some(items);
    }
    ["anyOf", "oneOf", "allOf"].iter().find_map(|c| {
        schema
            .get(*c)
            .and_then(Value::as_array)
            .and_then(|l| l.iter().find_map(items_schema))
    })
}

/// Paths (`[]` for array items) of every struct-like object type in `schema`.
fn schema_structs(schema: &Value, path: &str, out: &mut BTreeSet<String>) {
    if let Some(items) = items_schema(schema) {
        schema_structs(items, &format!("{path}[]"), out);
    }
    let Some(object) = object_schema(schema) else {
        return;
    };
    if object.get("x-kubernetes-preserve-unknown-fields").is_some() {
        return;
    }
    if let Some(properties) = object.get("properties").and_then(Value::as_object) {
        out.insert(path.to_owned());
        for (name, sub) in properties {
            schema_structs(sub, &join(path, name), out);
        }
    } else if let Some(values) = object.get("additionalProperties") {
        schema_structs(values, &format!("{path}.*"), out);
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// A struct-like mapping found in a document: its schema path, its real path, its keys.
struct Found {
    schema_path: String,
    yaml_path: Vec<YamlStep>,
    keys: Vec<String>,
}

#[derive(Clone)]
enum YamlStep {
    Key(String),
    Index(usize),
}

fn display(path: &[YamlStep]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            YamlStep::Key(k) if out.is_empty() => out.push_str(k),
            YamlStep::Key(k) => out.push_str(&format!(".{k}")),
            YamlStep::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Walks `value` along `schema`, recording every struct-like mapping.
fn walk(
    value: &Yaml,
    schema: &Value,
    schema_path: &str,
    yaml_path: &mut Vec<YamlStep>,
    out: &mut Vec<Found>,
) {
    if let (Some(seq), Some(items)) = (value.as_sequence(), items_schema(schema)) {
        for (i, item) in seq.iter().enumerate() {
            yaml_path.push(YamlStep::Index(i));
            walk(item, items, &format!("{schema_path}[]"), yaml_path, out);
            yaml_path.pop();
        }
        return;
    }
    let (Some(mapping), Some(object)) = (value.as_mapping(), object_schema(schema)) else {
        return;
    };
    if object.get("x-kubernetes-preserve-unknown-fields").is_some() {
        return;
    }
    let properties = object.get("properties").and_then(Value::as_object);
    let keys: Vec<String> = mapping
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    if properties.is_some() {
        out.push(Found {
            schema_path: schema_path.to_owned(),
            yaml_path: yaml_path.clone(),
            keys: keys.clone(),
        });
    }
    for key in keys {
        let sub = match (properties, object.get("additionalProperties")) {
            (Some(p), _) => p.get(&key),
            (None, Some(values)) => Some(values),
            (None, None) => None,
        };
        let (Some(sub), Some(child)) = (sub, mapping.get(key.as_str())) else {
            continue;
        };
        let sub_path = if properties.is_some() {
            join(schema_path, &key)
        } else {
            format!("{schema_path}.*")
        };
        yaml_path.push(YamlStep::Key(key.clone()));
        walk(child, sub, &sub_path, yaml_path, out);
        yaml_path.pop();
    }
}

fn mapping_at<'v>(value: &'v mut Yaml, path: &[YamlStep]) -> &'v mut serde_yaml_ng::Mapping {
    let mut node = value;
    for step in path {
        node = match step {
            YamlStep::Key(k) => node.get_mut(k.as_str()).expect("path exists"),
            YamlStep::Index(i) => node.get_mut(*i).expect("path exists"),
        };
    }
    node.as_mapping_mut().expect("a mapping")
}

/// `matchLabels` → `matchLabel`: the misspelling the red team used (a dropped last letter),
/// or a doubled last letter when dropping one gives another real field.
fn misspell(key: &str, keys: &[String]) -> String {
    let dropped = &key[..key.len() - 1];
    if !dropped.is_empty() && !keys.iter().any(|k| k == dropped) {
        dropped.to_owned()
    } else {
        format!("{key}{}", &key[key.len() - 1..])
    }
}

fn yaml_doc(text: &str) -> Yaml {
    serde_yaml_ng::from_str(text).expect("test document parses")
}

/// For every struct in `doc` (top level and metadata included), misspell each field in turn
/// and expect an error naming it. Returns the schema paths of the spec's structs visited.
fn every_misspelling_is_refused(doc_text: &str, spec_schema: &Value) -> BTreeSet<String> {
    let doc = yaml_doc(doc_text);
    let baseline = format!("{doc_text}\n---\n{OTHERS}");
    assert!(
        common::errors(&baseline).is_empty(),
        "the full document must be valid: {:?}",
        common::errors(&baseline)
    );
    let mut found = Vec::new();
    // The envelope and metadata are structs too; the spec is walked along its schema.
    let envelope = serde_json::json!({
        "properties": {
            "apiVersion": {}, "kind": {}, "status": {}, "spec": spec_schema,
            "metadata": {"properties": {
                "name": {}, "namespace": {},
                "labels": {"additionalProperties": {}},
                "annotations": {"additionalProperties": {}}
            }}
        }
    });
    walk(&doc, &envelope, "", &mut Vec::new(), &mut found);
    let mut visited = BTreeSet::new();
    let mut checked = 0;
    for object in &found {
        if let Some(spec_path) = object.schema_path.strip_prefix("spec") {
            visited.insert(spec_path.trim_start_matches('.').to_owned());
        }
        for key in &object.keys {
            if object.yaml_path.is_empty() && (key == "apiVersion" || key == "kind") {
                continue; // without them a document is refused before its kind is known
            }
            let wrong = misspell(key, &object.keys);
            let mut bad = doc.clone();
            let mapping = mapping_at(&mut bad, &object.yaml_path);
            let value = mapping.remove(key.as_str()).expect("key present");
            mapping.insert(Yaml::String(wrong.clone()), value);
            let text = serde_yaml_ng::to_string(&bad).expect("serialise");
            let errors = common::errors(&format!("{text}\n---\n{OTHERS}"));
            let field = {
                let mut path = object.yaml_path.clone();
                path.push(YamlStep::Key(wrong.clone()));
                display(&path)
            };
            let parent = display(&object.yaml_path);
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains(&format!("unknown field `{wrong}`"))
                        && (e.contains(&field) || e.contains(&format!("{parent}: ")))),
                "misspelling {key:?} as {wrong:?} at {parent:?} was not refused by name: {errors:#?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} misspellings tried");
    visited
}

#[test]
fn every_field_of_every_agent_type_refuses_a_misspelling() {
    let schema = schema_of::<AgentSpec>();
    let visited = every_misspelling_is_refused(AGENT, &schema);
    let mut expected = BTreeSet::new();
    schema_structs(&schema, "", &mut expected);
    let missed: Vec<_> = expected.difference(&visited).collect();
    assert!(
        missed.is_empty(),
        "the test Agent does not reach these object types of the schema: {missed:?}"
    );
}

#[test]
fn every_field_of_every_mesh_config_type_refuses_a_misspelling() {
    let schema = schema_of::<MeshConfigSpec>();
    let visited = every_misspelling_is_refused(MESH, &schema);
    let mut expected = BTreeSet::new();
    schema_structs(&schema, "", &mut expected);
    let missed: Vec<_> = expected.difference(&visited).collect();
    assert!(
        missed.is_empty(),
        "the test MeshConfig does not reach these object types of the schema: {missed:?}"
    );
}

#[test]
fn misspelt_namespace_metadata_is_refused() {
    let errors = common::errors(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-gamma, lables: {untrusted: 'true'}}\n",
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("metadata.lables") && errors[0].contains("unknown field `lables`"),
        "{errors:#?}"
    );
}

/// The red team's finding, as they wrote it: `matchLabel:` under the selector.
#[test]
fn match_label_without_s_is_refused_not_an_empty_selector() {
    for field in [
        "matchLabel: {team: alpha}",
        "matchExpression: [{key: team, operator: Exists}]",
    ] {
        let errors = common::errors(&format!(
            "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {{name: s, namespace: b}}\nspec:\n  allowedNamespaces:\n    from: Selector\n    selector: {{{field}}}\n"
        ));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].contains("spec.allowedNamespaces.selector")
                && errors[0].contains("unknown field"),
            "{errors:#?}"
        );
    }
}

#[test]
fn an_empty_selector_under_from_selector_warns_and_suggests_all() {
    let manifests = common::manifests(
        "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: s, namespace: b}\nspec:\n  allowedNamespaces: {from: Selector, selector: {}}\n",
    )
    .unwrap();
    let warnings: Vec<String> = warden_model::lint(&manifests)
        .iter()
        .map(|w| w.to_string())
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    for part in [
        "test.yaml: document 1 (Agent b/s)",
        "spec.allowedNamespaces.selector",
        "admits every namespace",
        "from: All",
    ] {
        assert!(
            warnings[0].contains(part),
            "{part:?} missing: {warnings:#?}"
        );
    }
    let fine = common::manifests(
        "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: s, namespace: b}\nspec:\n  allowedNamespaces: {from: Selector, selector: {matchLabels: {a: b}}}\n",
    )
    .unwrap();
    assert!(warden_model::lint(&fine).is_empty());
}
