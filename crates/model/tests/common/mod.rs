#![allow(dead_code)]
//! Helpers: build snapshots from inline YAML.

use std::path::Path;

use warden_model::loader::{Manifests, ModelError, load_str};
use warden_model::{MeshSnapshot, compile};

/// Parses `yaml` as if it were the file `test.yaml`.
pub fn manifests(yaml: &str) -> Result<Manifests, Vec<ModelError>> {
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    load_str(Path::new("test.yaml"), yaml, &mut manifests, &mut errors);
    if errors.is_empty() {
        Ok(manifests)
    } else {
        Err(errors)
    }
}

/// Loads and compiles `yaml`, panicking with the errors if there are any.
pub fn mesh(yaml: &str) -> MeshSnapshot {
    let manifests = manifests(yaml).unwrap_or_else(|e| panic!("load: {e:#?}"));
    compile(&manifests, 1).unwrap_or_else(|e| panic!("compile: {e:#?}"))
}

/// All error messages from loading and compiling `yaml`.
pub fn errors(yaml: &str) -> Vec<String> {
    match manifests(yaml).and_then(|m| compile(&m, 1).map(|_| ())) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}
