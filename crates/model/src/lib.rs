//! Warden's mesh model: the resources users write, how they are loaded and compiled into a
//! snapshot, and the policy engine every request is decided by.
//!
//! - [`resources`]: `Agent` and `MeshConfig` (`warden.dev/v1alpha1`), as Kubernetes CRD types;
//! - [`loader`]: YAML files and directories → [`loader::Manifests`], errors with file, document,
//!   field and rule;
//! - [`compile`](mod@compile): manifests → [`MeshSnapshot`] with indexes built once;
//! - [`policy`]: `decide` (allocation-free) and `explain` (the same code, traced);
//! - [`kagent`], [`kagenti`]: users' existing kinds (kagent's `Agent`, kagenti's
//!   `AgentRuntime`) read as they are and enforced like Warden's own;
//! - [`convert`](mod@convert): those kinds → the equivalent `warden.dev` manifests;
//! - [`lint`]: warnings for valid manifests that admit more than they seem to;
//! - [`selector`]: Kubernetes label-selector semantics;
//! - [`store`]: the current snapshot, replaced only by a good one.

pub mod compile;
pub mod convert;
pub mod kagent;
pub mod kagenti;
pub mod lint;
pub mod loader;
pub mod policy;
pub mod resources;
pub mod selector;
pub mod snapshot;
pub mod store;

pub use compile::compile;
pub use convert::convert;
pub use lint::lint;
pub use loader::{Manifests, ModelError, load_path};
pub use policy::{Caller, Decision, Explanation, Rule, decide, explain};
pub use resources::{Agent, AgentSpec, MeshConfig, MeshConfigSpec, MtlsMode};
pub use snapshot::{CompiledAgent, MeshSnapshot};
pub use store::SnapshotStore;
