//! Users' kinds → the equivalent `warden.dev` manifests, for users who want to move over.
//!
//! The output decides every call exactly as the input does (tests check this over all pairs):
//! kagent Agents become Warden Agents with the same policy, tools and headers; each
//! AgentRuntime's resolved mode (its own, the namespace ConfigMap's, or permissive) and each
//! pod-template mode annotation is written into the agent's `spec.mtls.mode`. Namespaces,
//! Secrets and ConfigMaps are not printed (they stay as they are, and a Secret's value does not
//! belong on a terminal).

use crate::kagenti::resolve_modes;
use crate::loader::{Manifests, ModelError};
use crate::resources::{Agent, MtlsSpec};

/// The `warden.dev` documents equivalent to `manifests`' agents and mesh config, as YAML.
/// Refuses manifests that do not compile: a conversion of invalid input would hide the errors.
pub fn convert(manifests: &Manifests) -> Result<String, Vec<ModelError>> {
    crate::compile(manifests, 1)?;
    let modes = resolve_modes(manifests)?;
    let mut documents = Vec::new();
    for config in &manifests.mesh_configs {
        documents.push(to_yaml(&config.resource)?);
    }
    for sourced in &manifests.agents {
        let mut agent: Agent = sourced.resource.clone();
        let key = (
            agent
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| crate::compile::DEFAULT_NAMESPACE.into()),
            agent.metadata.name.clone().unwrap_or_default(),
        );
        if let Some(source) = modes.get(&key) {
            agent.spec.mtls = Some(MtlsSpec {
                mode: Some(source.mode),
            });
        }
        agent.status = None;
        let mut text = format!("# from {}\n", sourced.origin);
        text.push_str(&to_yaml(&agent)?);
        documents.push(text);
    }
    let mut out = String::from(
        "# Converted by `warden convert`. Namespaces, Secrets and ConfigMaps are unchanged: keep\n# them beside this file. AgentRuntimes are folded into each agent's spec.mtls.mode.\n",
    );
    out.push_str(&documents.join("---\n"));
    Ok(out)
}

fn to_yaml<T: serde::Serialize>(value: &T) -> Result<String, Vec<ModelError>> {
    serde_yaml_ng::to_string(value).map_err(|e| {
        vec![ModelError {
            origin: None,
            field: None,
            message: format!("cannot print the converted manifests: {e}"),
        }]
    })
}
