//! The local mesh: `warden up` runs the whole scenario on one machine — embedded CA and
//! Workload API, gateway, a sidecar and an agent per `Agent` — from a directory of manifests;
//! `warden status` shows it; `warden verify` proves it works.

pub mod status;
pub mod up;
pub mod verify;

pub use up::{UpConfig, UpError, up};
