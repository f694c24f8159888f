//! Which mTLS mode an agent's sidecar runs in, and why.
//!
//! One order everywhere (webhook, controller, `warden status`): the pod-template annotation
//! `warden.dev/mtls-mode` (the controller writes it, so a change rolls the workload), else the
//! Agent's `spec.mtls.mode`, else the MeshConfig's `defaultMtlsMode`, else Permissive.

use std::fmt;

use warden_model::MtlsMode;
use warden_model::resources::UnknownMtlsMode;

/// The pod (template) annotation that pins a workload's mode.
pub const MODE_ANNOTATION: &str = "warden.dev/mtls-mode";
/// The pod label that says which Agent (in the pod's namespace) a pod belongs to.
pub const AGENT_LABEL: &str = "warden.dev/agent";

/// Where a resolved mode came from, for messages and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeSource {
    /// The `warden.dev/mtls-mode` annotation.
    Annotation,
    /// The Agent's `spec.mtls.mode`.
    Agent,
    /// The MeshConfig's `defaultMtlsMode`.
    MeshConfig,
    /// Nothing set: Permissive.
    Default,
}

impl fmt::Display for ModeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModeSource::Annotation => "annotation warden.dev/mtls-mode",
            ModeSource::Agent => "the Agent's spec.mtls.mode",
            ModeSource::MeshConfig => "the MeshConfig's defaultMtlsMode",
            ModeSource::Default => "the default",
        })
    }
}

/// A mode and the setting it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedMode {
    /// The mode.
    pub mode: MtlsMode,
    /// Where it came from.
    pub source: ModeSource,
}

/// The annotation holds something other than disabled, permissive or strict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata.annotations[{MODE_ANNOTATION}]: {0}")]
pub struct ModeAnnotationError(pub UnknownMtlsMode);

/// Resolves the mode in the documented order. A malformed annotation is an error rather than
/// a silent fallback: a typo must not quietly weaken `strict` to the default.
pub fn resolve_mode(
    annotation: Option<&str>,
    agent: Option<MtlsMode>,
    mesh_default: Option<MtlsMode>,
) -> Result<ResolvedMode, ModeAnnotationError> {
    if let Some(text) = annotation {
        let mode = text.trim().parse().map_err(ModeAnnotationError)?;
        return Ok(ResolvedMode {
            mode,
            source: ModeSource::Annotation,
        });
    }
    Ok(match (agent, mesh_default) {
        (Some(mode), _) => ResolvedMode {
            mode,
            source: ModeSource::Agent,
        },
        (None, Some(mode)) => ResolvedMode {
            mode,
            source: ModeSource::MeshConfig,
        },
        (None, None) => ResolvedMode {
            mode: MtlsMode::Permissive,
            source: ModeSource::Default,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use MtlsMode::*;

    /// annotation, agent, MeshConfig → mode, source.
    type Row = (
        Option<&'static str>,
        Option<MtlsMode>,
        Option<MtlsMode>,
        MtlsMode,
        ModeSource,
    );

    #[test]
    fn order_is_annotation_agent_meshconfig_default() {
        let table: [Row; 7] = [
            (
                Some("strict"),
                Some(Disabled),
                Some(Permissive),
                Strict,
                ModeSource::Annotation,
            ),
            (
                Some("Disabled"),
                None,
                None,
                Disabled,
                ModeSource::Annotation,
            ),
            (
                Some(" permissive "),
                Some(Strict),
                None,
                Permissive,
                ModeSource::Annotation,
            ),
            (
                None,
                Some(Strict),
                Some(Disabled),
                Strict,
                ModeSource::Agent,
            ),
            (None, Some(Disabled), None, Disabled, ModeSource::Agent),
            (None, None, Some(Strict), Strict, ModeSource::MeshConfig),
            (None, None, None, Permissive, ModeSource::Default),
        ];
        for (annotation, agent, mesh, mode, source) in table {
            let got = resolve_mode(annotation, agent, mesh).unwrap();
            assert_eq!(
                got,
                ResolvedMode { mode, source },
                "{annotation:?} {agent:?} {mesh:?}"
            );
        }
    }

    #[test]
    fn a_misspelt_annotation_is_an_error_naming_it() {
        let err = resolve_mode(Some("strcit"), Some(Strict), None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("warden.dev/mtls-mode"), "{text}");
        assert!(text.contains("strcit"), "{text}");
        assert!(text.contains("disabled, permissive or strict"), "{text}");
    }
}
