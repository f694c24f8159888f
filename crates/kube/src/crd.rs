//! The CustomResourceDefinitions, generated from the model's Rust types: one definition for
//! local mode and the cluster. Printer columns and the status subresource are declared on the
//! types themselves (`warden_model::resources`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use warden_model::{Agent, MeshConfig};

/// Both CRDs, `Agent` first.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Agent::crd(), MeshConfig::crd()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn agent_crd_has_status_and_the_columns() {
        let crd = Agent::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("agents.warden.dev"));
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert!(version.served && version.storage);
        assert!(
            version.subresources.as_ref().unwrap().status.is_some(),
            "status subresource"
        );
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Mode", "Accepted", "MTLSReady", "Card", "Age"]);
    }

    #[test]
    fn mesh_config_crd_is_cluster_scoped_with_status() {
        let crd = MeshConfig::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert!(
            crd.spec.versions[0]
                .subresources
                .as_ref()
                .unwrap()
                .status
                .is_some()
        );
    }

    /// The rules of a structural schema a generator is most likely to break: every node that
    /// describes a value is typed, no `$ref`, no `type: null`, combinator branches add no
    /// types their parent lacks.
    fn check_structural(node: &Value, path: &str, typed_required: bool) {
        let Value::Object(m) = node else {
            panic!("{path}: not a schema object")
        };
        assert!(!m.contains_key("$ref"), "{path}: $ref");
        match m.get("type") {
            Some(t) => assert!(t.is_string() && t != "null", "{path}: type {t}"),
            None if typed_required => assert!(
                m.contains_key("x-kubernetes-int-or-string")
                    || m.contains_key("x-kubernetes-preserve-unknown-fields"),
                "{path}: untyped schema node {node}"
            ),
            None => {}
        }
        for (name, child) in m
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            check_structural(child, &format!("{path}.{name}"), true);
        }
        if let Some(items) = m.get("items") {
            check_structural(items, &format!("{path}[]"), true);
        }
        if let Some(extra @ Value::Object(_)) = m.get("additionalProperties") {
            check_structural(extra, &format!("{path}{{}}"), true);
        }
        for combinator in ["anyOf", "oneOf", "allOf"] {
            for (i, branch) in m
                .get(combinator)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let branch_path = format!("{path}.{combinator}[{i}]");
                check_structural(branch, &branch_path, false);
                assert!(
                    branch.get("type").is_none() || m.contains_key("type"),
                    "{branch_path} is typed but its parent is not"
                );
            }
        }
    }

    #[test]
    fn schemas_are_structural() {
        for crd in crds() {
            let version = &crd.spec.versions[0];
            let schema = version
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap();
            let schema = serde_json::to_value(schema).unwrap();
            check_structural(&schema, crd.metadata.name.as_deref().unwrap(), true);
        }
    }
}
