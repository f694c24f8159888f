//! Reads resources from a YAML file or a directory of them (multi-document, as kubectl
//! takes them).
//!
//! Unknown kinds are skipped with a notice, so one set of manifests can hold Deployments and
//! Services too. Every error names the file, the document, the object, the field path and the
//! rule it broke.

use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::kagenti::{AgentRuntime, KAGENTI_GROUP, ROSSOCTL_GROUP, Workload};
use crate::resources::{API_VERSION, Agent, MeshConfig};

/// Where a resource came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub file: PathBuf,
    /// 1-based position of the document in the file.
    pub document: usize,
    /// `Kind namespace/name` (or `Kind name`), once known.
    pub object: Option<String>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file.display(), self.document)?;
        if let Some(object) = &self.object {
            write!(f, " ({object})")?;
        }
        Ok(())
    }
}

/// A problem with the manifests: where, which field, and what rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ModelError {
    /// The file and document, when the problem is in one.
    pub origin: Option<Origin>,
    /// The field path (`spec.allowedNamespaces.from`), when known.
    pub field: Option<String>,
    /// The rule broken, in words.
    pub message: String,
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl ModelError {
    /// An error at `field` of the resource from `origin`.
    pub fn at(origin: &Origin, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            origin: Some(origin.clone()),
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

/// A resource with the place it was read from.
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    /// The resource.
    pub resource: T,
    /// Where it came from.
    pub origin: Origin,
}

/// Everything read from a set of manifests.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    /// Agents.
    pub agents: Vec<Sourced<Agent>>,
    /// MeshConfigs (more than one is an error, reported by the compiler).
    pub mesh_configs: Vec<Sourced<MeshConfig>>,
    /// Namespaces, for their labels.
    pub namespaces: Vec<Sourced<Namespace>>,
    /// Secrets, for `headersFrom`.
    pub secrets: Vec<Sourced<Secret>>,
    /// ConfigMaps, for `headersFrom`.
    pub config_maps: Vec<Sourced<ConfigMap>>,
    /// kagenti/rossoctl AgentRuntimes, for the mTLS mode of the agent each targets.
    pub agent_runtimes: Vec<Sourced<AgentRuntime>>,
    /// Deployments and StatefulSets, for their pod templates' mTLS-mode annotations.
    pub workloads: Vec<Sourced<Workload>>,
    /// For agents read from another kind (kagent's): how Warden's field paths map back to
    /// the fields the user wrote, so errors found later name the user's field.
    pub field_maps: Vec<(Origin, Vec<(String, String)>)>,
    /// For agents read from kagent's kind: the name kagent gives the agent in its card
    /// (agents of Warden's own kind are named by their plain name).
    pub card_names: Vec<(Origin, String)>,
    /// Documents skipped because Warden does not use their kind, and fields of users' kinds
    /// that Warden accepts but does not act on.
    pub notices: Vec<String>,
}

impl Manifests {
    /// Rewrites the field of each error about a converted resource to the user's field path.
    pub fn locate(&self, mut errors: Vec<ModelError>) -> Vec<ModelError> {
        for error in &mut errors {
            if let (Some(origin), Some(field)) = (&error.origin, &error.field) {
                error.field = Some(self.field_path(origin, field));
            }
        }
        errors
    }

    /// The name the agent from `origin` carries in its card, when its kind names it otherwise
    /// than by its resource name (kagent's `my-helper` is `my_helper`).
    pub fn card_name(&self, origin: &Origin) -> Option<&str> {
        self.card_names
            .iter()
            .find(|(o, _)| o == origin)
            .map(|(_, name)| name.as_str())
    }

    /// A Warden field path (`spec.tools`) of the resource from `origin`, as the user wrote it
    /// (`spec.declarative.tools` for a kagent Agent).
    pub fn field_path(&self, origin: &Origin, field: &str) -> String {
        match self.field_maps.iter().find(|(o, _)| o == origin) {
            Some((_, map)) => crate::kagent::kagent_path(map, field),
            None => field.to_owned(),
        }
    }
}

/// Reads a file, or every `*.yaml`/`*.yml` file of a directory (sorted, not recursive).
/// Returns every error found, not just the first.
pub fn load_path(path: &Path) -> Result<Manifests, Vec<ModelError>> {
    let files = if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| vec![io_error(path, &e)])?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(vec![ModelError {
                origin: None,
                field: None,
                message: format!("{}: no .yaml or .yml files", path.display()),
            }]);
        }
        files
    } else {
        vec![path.to_owned()]
    };
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => load_str(&file, &text, &mut manifests, &mut errors),
            Err(e) => errors.push(io_error(&file, &e)),
        }
    }
    if errors.is_empty() {
        Ok(manifests)
    } else {
        Err(errors)
    }
}

fn io_error(path: &Path, e: &std::io::Error) -> ModelError {
    ModelError {
        origin: None,
        field: None,
        message: format!("{}: {e}", path.display()),
    }
}

/// Parses the documents of one file's text into `manifests`, collecting errors.
pub fn load_str(file: &Path, text: &str, manifests: &mut Manifests, errors: &mut Vec<ModelError>) {
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            file: file.to_owned(),
            document: index + 1,
            object: None,
        };
        let value = match serde_yaml_ng::Value::deserialize(document) {
            Ok(value) => value,
            Err(e) => {
                let at = e
                    .location()
                    .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
                    .unwrap_or_default();
                errors.push(ModelError {
                    origin: Some(origin),
                    field: None,
                    message: format!("malformed YAML{at}: {e}"),
                });
                // The rest of the stream cannot be trusted to split into documents.
                return;
            }
        };
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        manifests.push_document(origin, value, errors);
    }
}

impl Manifests {
    /// Adds one parsed object (a YAML document, or an object from the API server converted with
    /// `serde_yaml_ng::to_value`), by its apiVersion and kind: Warden's kinds, kagent's Agent,
    /// kagenti's AgentRuntime, Namespaces, Secrets, ConfigMaps and workloads' mode annotations.
    /// Problems are pushed to `errors` located at `origin` and the field; kinds Warden does not
    /// use are noticed and skipped. This is the loader's whole per-document step, so the
    /// admission webhook validates exactly as `warden validate` does.
    pub fn push_document(
        &mut self,
        mut origin: Origin,
        value: serde_yaml_ng::Value,
        errors: &mut Vec<ModelError>,
    ) {
        let manifests = self;
        let text_field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let (Some(api_version), Some(kind)) = (text_field("apiVersion"), text_field("kind")) else {
            errors.push(ModelError {
                origin: Some(origin),
                field: None,
                message: "a resource needs apiVersion and kind".into(),
            });
            return;
        };
        let metadata = value.get("metadata");
        let name = metadata
            .and_then(|m| m.get("name"))
            .and_then(|v| v.as_str())
            .unwrap_or("<unnamed>");
        // Kinds other than Warden's and core ones are named kubectl's way (`Agent.kagent.dev`),
        // so that a conflict between two `Agent`s says which is which.
        let group = api_version.split_once('/').map(|(g, _)| g);
        let shown_kind = match group {
            Some(g) if g != "warden.dev" && !g.ends_with("k8s.io") && g != "apps" => {
                format!("{kind}.{g}")
            }
            _ => kind.clone(),
        };
        let namespace = metadata
            .and_then(|m| m.get("namespace"))
            .and_then(|v| v.as_str());
        origin.object = Some(match namespace {
            Some(ns) => format!("{shown_kind} {ns}/{name}"),
            None => format!("{shown_kind} {name}"),
        });
        if let Some(allowed) = top_level_fields(&api_version, &kind)
            && let Err(e) = check_envelope(&value, allowed, &origin)
        {
            errors.push(e);
            return;
        }
        match (api_version.as_str(), kind.as_str()) {
            (API_VERSION, "Agent") => push(value, origin, &mut manifests.agents, errors),
            (API_VERSION, "MeshConfig") => push(value, origin, &mut manifests.mesh_configs, errors),
            ("v1", "Namespace") => push(value, origin, &mut manifests.namespaces, errors),
            ("v1", "Secret") => push(value, origin, &mut manifests.secrets, errors),
            ("v1", "ConfigMap") => push(value, origin, &mut manifests.config_maps, errors),
            (crate::kagent::API_VERSION, "Agent") => push_kagent(&value, origin, manifests, errors),
            (api, "Agent") if api.starts_with("kagent.dev/") => errors.push(ModelError {
                origin: Some(origin),
                field: Some("apiVersion".into()),
                message: format!(
                    "Warden reads kagent's Agent in {}, not {api}",
                    crate::kagent::API_VERSION
                ),
            }),
            (api, "AgentRuntime")
                if api == format!("{ROSSOCTL_GROUP}/v1alpha1")
                    || api == format!("{KAGENTI_GROUP}/v1alpha1") =>
            {
                if value
                    .get("spec")
                    .and_then(|s| s.get("type"))
                    .is_some()
                {
                    manifests.notices.push(format!(
                        "{origin}: spec.type: ignored (kagenti's agent-type label; Warden does not act on it)"
                    ));
                }
                push(value, origin, &mut manifests.agent_runtimes, errors)
            }
            ("apps/v1", "Deployment" | "StatefulSet") => {
                push_workload(&value, &kind, origin, manifests)
            }
            (api, kind) if api.starts_with("warden.dev/") => errors.push(ModelError {
                origin: Some(origin),
                field: Some("kind".into()),
                message: format!(
                    "unknown Warden resource {kind} in {api}: expected Agent or MeshConfig in {API_VERSION}"
                ),
            }),
            _ => manifests
                .notices
                .push(format!("{origin}: skipping {kind} ({api_version}): not a kind Warden uses")),
        }
    }
}

fn push<T: DeserializeOwned>(
    value: serde_yaml_ng::Value,
    origin: Origin,
    into: &mut Vec<Sourced<T>>,
    errors: &mut Vec<ModelError>,
) {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(resource) => into.push(Sourced { resource, origin }),
        Err(e) => {
            let path = e.path().to_string();
            errors.push(ModelError {
                origin: Some(origin),
                field: (path != ".").then_some(path),
                message: e.into_inner().to_string(),
            });
        }
    }
}

/// Reads a kagent Agent: its metadata as Warden's, its spec converted, its ignored fields
/// noticed.
fn push_kagent(
    value: &serde_yaml_ng::Value,
    origin: Origin,
    manifests: &mut Manifests,
    errors: &mut Vec<ModelError>,
) {
    let metadata = value
        .get("metadata")
        .cloned()
        .unwrap_or(serde_yaml_ng::Value::Null);
    let metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
        match serde_path_to_error::deserialize(metadata) {
            Ok(m) => m,
            Err(e) => {
                errors.push(ModelError::at(
                    &origin,
                    format!("metadata.{}", e.path()),
                    e.into_inner().to_string(),
                ));
                return;
            }
        };
    if value.get("status").is_some() {
        manifests.notices.push(format!(
            "{origin}: status: ignored (kagent's observed state; Warden reports its own)"
        ));
    }
    match crate::kagent::convert(value.get("spec"), &origin) {
        Ok(converted) => {
            manifests.notices.extend(converted.notices);
            manifests
                .field_maps
                .push((origin.clone(), converted.field_map));
            if let Some(name) = &metadata.name {
                manifests
                    .card_names
                    .push((origin.clone(), crate::kagent::card_name(name)));
            }
            manifests.agents.push(Sourced {
                resource: Agent {
                    metadata,
                    spec: converted.spec,
                    status: None,
                },
                origin,
            });
        }
        Err(e) => errors.push(e),
    }
}

/// Keeps a Deployment's or StatefulSet's pod-template annotations (for the mTLS-mode ones);
/// the rest of the workload is Kubernetes' business.
fn push_workload(
    value: &serde_yaml_ng::Value,
    kind: &str,
    origin: Origin,
    manifests: &mut Manifests,
) {
    let text = |v: Option<&serde_yaml_ng::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
    let metadata = value.get("metadata");
    let annotations: std::collections::BTreeMap<String, String> = value
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.as_mapping())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    if !crate::kagenti::MODE_ANNOTATIONS
        .iter()
        .any(|a| annotations.contains_key(*a))
    {
        manifests.notices.push(format!(
            "{origin}: skipping {kind} (apps/v1): Warden reads only its pod template's mTLS-mode annotations, and it has none"
        ));
        return;
    }
    manifests.workloads.push(Sourced {
        resource: Workload {
            kind: kind.to_owned(),
            namespace: text(metadata.and_then(|m| m.get("namespace")))
                .unwrap_or_else(|| crate::compile::DEFAULT_NAMESPACE.into()),
            name: text(metadata.and_then(|m| m.get("name"))).unwrap_or_default(),
            annotations,
        },
        origin,
    });
}

/// `metav1.ObjectMeta`'s fields. k8s-openapi ignores unknown ones, so a misspelt `lables:` on a
/// Namespace would silently drop its labels (and open a `NotIn`/`DoesNotExist` selector).
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
];

/// The top-level fields of each kind Warden reads, for the kinds whose Rust types would
/// otherwise ignore unknown ones (their specs refuse unknown fields themselves).
fn top_level_fields(api_version: &str, kind: &str) -> Option<&'static [&'static str]> {
    const SPEC_STATUS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
    match (api_version, kind) {
        (API_VERSION, "Agent" | "MeshConfig")
        | ("v1", "Namespace")
        | (crate::kagent::API_VERSION, "Agent") => Some(SPEC_STATUS),
        (api, "AgentRuntime")
            if api == format!("{ROSSOCTL_GROUP}/v1alpha1")
                || api == format!("{KAGENTI_GROUP}/v1alpha1") =>
        {
            Some(SPEC_STATUS)
        }
        ("v1", "Secret") => Some(&[
            "apiVersion",
            "kind",
            "metadata",
            "data",
            "stringData",
            "type",
            "immutable",
        ]),
        ("v1", "ConfigMap") => Some(&[
            "apiVersion",
            "kind",
            "metadata",
            "data",
            "binaryData",
            "immutable",
        ]),
        _ => None,
    }
}

/// Refuses a field of the object or of its metadata that its kind does not have.
pub(crate) fn check_envelope(
    value: &serde_yaml_ng::Value,
    allowed: &[&str],
    origin: &Origin,
) -> Result<(), ModelError> {
    check_keys(value, "", allowed, origin)?;
    match value.get("metadata") {
        Some(metadata) => check_keys(metadata, "metadata.", OBJECT_META_FIELDS, origin),
        None => Ok(()),
    }
}

/// The error for the first key of mapping `value` that is not in `allowed`.
pub(crate) fn check_keys(
    value: &serde_yaml_ng::Value,
    prefix: &str,
    allowed: &[&str],
    origin: &Origin,
) -> Result<(), ModelError> {
    let Some(mapping) = value.as_mapping() else {
        return Ok(()); // a wrong type is reported by the typed parse, with its path
    };
    for key in mapping.keys() {
        let name = key.as_str().unwrap_or_default();
        if !allowed.contains(&name) {
            return Err(ModelError::at(
                origin,
                format!("{prefix}{name}"),
                format!(
                    "unknown field `{name}`, expected one of {}",
                    allowed
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    Ok(())
}
