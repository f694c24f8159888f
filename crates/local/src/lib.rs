//! The local mesh: `warden up` runs the whole scenario on one machine — embedded CA and
//! Workload API, gateway, a sidecar and an agent per `Agent` — from a directory of manifests;
//! `warden check` runs its pre-flight checks; `warden status` shows the mesh as its processes
//! report it; `warden verify` proves it works; `warden down` stops it; `warden logs` shows
//! its logs.

pub mod lock;
pub mod logs;
mod mesh;
pub mod preflight;
pub mod probe;
pub mod spire;
pub mod status;
pub mod supervisor;
pub mod up;
pub mod users;
pub mod verify;

pub use up::{UpConfig, UpError, up};
