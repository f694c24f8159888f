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
    /// Documents skipped because Warden does not use their kind.
    pub notices: Vec<String>,
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
        let mut origin = Origin {
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
        let text_field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let (Some(api_version), Some(kind)) = (text_field("apiVersion"), text_field("kind")) else {
            errors.push(ModelError {
                origin: Some(origin),
                field: None,
                message: "a resource needs apiVersion and kind".into(),
            });
            continue;
        };
        let metadata = value.get("metadata");
        let name = metadata
            .and_then(|m| m.get("name"))
            .and_then(|v| v.as_str())
            .unwrap_or("<unnamed>");
        origin.object = Some(
            match metadata
                .and_then(|m| m.get("namespace"))
                .and_then(|v| v.as_str())
            {
                Some(ns) => format!("{kind} {ns}/{name}"),
                None => format!("{kind} {name}"),
            },
        );
        match (api_version.as_str(), kind.as_str()) {
            (API_VERSION, "Agent") => push(value, origin, &mut manifests.agents, errors),
            (API_VERSION, "MeshConfig") => push(value, origin, &mut manifests.mesh_configs, errors),
            ("v1", "Namespace") => push(value, origin, &mut manifests.namespaces, errors),
            ("v1", "Secret") => push(value, origin, &mut manifests.secrets, errors),
            ("v1", "ConfigMap") => push(value, origin, &mut manifests.config_maps, errors),
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
