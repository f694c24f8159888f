//! Warden's mesh model: the resources users write, how they are loaded and compiled into a
//! snapshot, and the policy engine every request is decided by.
//!
//! - [`resources`]: `Agent` and `MeshConfig` (`warden.dev/v1alpha1`), as Kubernetes CRD types;
//! - [`loader`]: YAML files and directories → [`loader::Manifests`], errors with file, document,
//!   field and rule;
//! - [`compile`](mod@compile): manifests → [`MeshSnapshot`] with indexes built once;
//! - [`policy`]: `decide` (allocation-free) and `explain` (the same code, traced);
//! - [`selector`]: Kubernetes label-selector semantics;
//! - [`store`]: the current snapshot, replaced only by a good one.

pub mod compile;
pub mod loader;
pub mod policy;
pub mod resources;
pub mod selector;
pub mod snapshot;
pub mod store;

pub use compile::compile;
pub use loader::{Manifests, ModelError, load_path};
pub use policy::{Caller, Decision, Explanation, Rule, decide, explain};
pub use resources::{Agent, AgentSpec, MeshConfig, MeshConfigSpec, MtlsMode};
pub use snapshot::{CompiledAgent, MeshSnapshot};
pub use store::SnapshotStore;
