//! Warnings: manifests that are valid but almost certainly do not mean what they say.
//!
//! Kept apart from the compiler's errors so that `warden validate` and the admission webhook
//! (as admission warnings) can show them without refusing the resources.

use crate::loader::{Manifests, ModelError};
use crate::resources::NamespaceFrom;

/// Every warning for `manifests`, each located like an error.
pub fn lint(manifests: &Manifests) -> Vec<ModelError> {
    let mut warnings = Vec::new();
    for sourced in &manifests.agents {
        let allowed = &sourced.resource.spec.allowed_namespaces;
        if allowed.from == NamespaceFrom::Selector
            && allowed.selector.as_ref().is_some_and(|s| s.is_empty())
        {
            warnings.push(ModelError::at(
                &sourced.origin,
                "spec.allowedNamespaces.selector",
                "the selector is empty, so it admits every namespace; write `from: All` if that \
                 is meant, or add matchLabels/matchExpressions",
            ));
        }
    }
    warnings
}
