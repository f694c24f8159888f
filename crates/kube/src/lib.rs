//! Warden on Kubernetes: the CRDs, the objects `warden install` prints, and the admission
//! webhooks. The logic is pure functions over typed or JSON objects, tested without a
//! server; only [`cluster::KubeReader`] and [`server`] touch the network.
//!
//! - [`crd`]: the CustomResourceDefinitions, from the model's types;
//! - [`install`]: every object a cluster needs (least-privilege RBAC, Deployments, Services,
//!   webhook configurations), and what `warden uninstall` deletes;
//! - [`certs`]: the webhooks' serving certificate and its CA (`caBundle`);
//! - [`mode`]: the mTLS mode resolution order (annotation, Agent, MeshConfig, default);
//! - [`inject`]: sidecar injection into a Pod, and the JSON Patch for it;
//! - [`validate`]: the validating checks (the model's loader, compiler and policy engine);
//! - [`endpoints`]: the agents' EndpointSlices, watched (where the gateway routes);
//! - [`gateway`]: `warden gateway --kubernetes`'s snapshot and addresses from the cluster;
//! - [`cluster`]: what a review reads from the cluster, fetched before deciding;
//! - [`admission`]: one AdmissionReview in, one out;
//! - [`publish`]: the sidecars' snapshot, one ConfigMap the controller writes and they watch;
//! - [`server`]: `warden webhook`, HTTPS;
//! - [`status`]: a cluster's mesh as `warden status`/`verify --kubeconfig` describe it;
//! - [`watch`]: the cluster's mesh objects compiled live into the latest snapshot;
//! - [`controller`]: `warden controller`, Agents' status, card fetches, rollouts.

pub mod admission;
pub mod certs;
pub mod cluster;
pub mod controller;
pub mod crd;
pub mod endpoints;
pub mod gateway;
pub mod inject;
pub mod install;
pub mod mode;
pub mod publish;
pub mod server;
pub mod status;
pub mod validate;
pub mod watch;

use std::path::Path;

/// A client from a kubeconfig file, or, without one, the usual inference (`KUBECONFIG`,
/// `~/.kube/config`, then the in-cluster service account).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, ClientError> {
    // kube's TLS runs on rustls; make sure the process has the provider Warden uses.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                ClientError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => kube::Config::infer().await.map_err(ClientError::Infer)?,
    };
    kube::Client::try_from(config).map_err(ClientError::Client)
}

/// No client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file is unreadable or unusable.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// No configuration was found.
    #[error("no Kubernetes configuration (give --kubeconfig): {0}")]
    Infer(kube::config::InferConfigError),
    /// The client could not be built.
    #[error("cannot build the Kubernetes client: {0}")]
    Client(kube::Error),
}
