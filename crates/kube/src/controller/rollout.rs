//! The resolved mode into the agent's workload: the pod-template annotation
//! `warden.dev/mtls-mode` (and the `warden.dev/agent` label the injector selects pods by) on
//! `spec.targetRef` (default: the Deployment named like the Agent). Changing the pod template
//! is what makes Kubernetes roll the workload, so a mode change reaches every pod's sidecar
//! (the injector reads the annotation) without anyone restarting anything.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use warden_model::resources::{TargetRef, WorkloadKind};
use warden_model::{CompiledAgent, MtlsMode};

use crate::mode::{AGENT_LABEL, MODE_ANNOTATION};

/// The workload an Agent's pods belong to.
pub fn target(agent: &CompiledAgent, target_ref: Option<&TargetRef>) -> TargetRef {
    target_ref.cloned().unwrap_or_else(|| TargetRef {
        kind: WorkloadKind::Deployment,
        name: agent.name.clone(),
    })
}

/// The merge patch that puts `mode` and the agent label on a pod template whose metadata is
/// `template`, or `None` when both are already there.
pub fn template_patch(template: Option<&ObjectMeta>, agent: &str, mode: MtlsMode) -> Option<Value> {
    let annotation = template
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(MODE_ANNOTATION));
    let label = template
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(AGENT_LABEL));
    if annotation.map(String::as_str) == Some(mode.as_str())
        && label.map(String::as_str) == Some(agent)
    {
        return None;
    }
    Some(json!({
        "spec": {"template": {"metadata": {
            "annotations": {MODE_ANNOTATION: mode.as_str()},
            "labels": {AGENT_LABEL: agent},
        }}}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn patches_only_what_differs() {
        let mut meta = ObjectMeta::default();
        let patch = template_patch(Some(&meta), "specialist", MtlsMode::Strict).unwrap();
        assert_eq!(
            patch["spec"]["template"]["metadata"]["annotations"][MODE_ANNOTATION],
            "strict"
        );
        meta.annotations = Some(BTreeMap::from([(MODE_ANNOTATION.into(), "strict".into())]));
        meta.labels = Some(BTreeMap::from([(AGENT_LABEL.into(), "specialist".into())]));
        assert_eq!(
            template_patch(Some(&meta), "specialist", MtlsMode::Strict),
            None
        );
        assert!(template_patch(Some(&meta), "specialist", MtlsMode::Disabled).is_some());
    }
}
