//! The part of the cluster an admission decision reads, fetched before the decision so that
//! the decision itself is a pure function.
//!
//! A review asks for exactly what it needs ([`Lookups`]: the referenced agents, the
//! namespaces whose labels matter, the MeshConfigs), which keeps the webhook's RBAC to `get`
//! on agents and namespaces and `list` on meshconfigs, and costs a few GETs per review
//! whatever the size of the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use warden_model::{Agent, Manifests, MeshConfig};

/// What a review needs to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookups {
    /// Agents by (namespace, name).
    pub agents: BTreeSet<(String, String)>,
    /// Namespaces, for their labels.
    pub namespaces: BTreeSet<String>,
}

/// What was read: absent objects are simply missing.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Agents by (namespace, name).
    pub agents: BTreeMap<(String, String), Agent>,
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Every MeshConfig (a mesh has one; more is reported by the MeshConfig review).
    pub mesh_configs: Vec<MeshConfig>,
}

impl ClusterView {
    /// The view a set of manifests gives of itself: what `warden admission` checks against
    /// (objects named `default` namespace when they name none, as kubectl does).
    pub fn from_manifests(manifests: &Manifests) -> Self {
        let ns_of = |ns: &Option<String>| {
            ns.clone()
                .unwrap_or_else(|| warden_model::compile::DEFAULT_NAMESPACE.into())
        };
        Self {
            agents: manifests
                .agents
                .iter()
                .filter_map(|s| {
                    let name = s.resource.metadata.name.clone()?;
                    Some((
                        (ns_of(&s.resource.metadata.namespace), name),
                        s.resource.clone(),
                    ))
                })
                .collect(),
            namespaces: manifests
                .namespaces
                .iter()
                .filter_map(|s| Some((s.resource.metadata.name.clone()?, s.resource.clone())))
                .collect(),
            mesh_configs: manifests
                .mesh_configs
                .iter()
                .map(|s| s.resource.clone())
                .collect(),
        }
    }

    /// The part of this view that `lookups` asks for (what a real cluster would answer).
    pub fn select(&self, lookups: &Lookups) -> Self {
        Self {
            agents: self
                .agents
                .iter()
                .filter(|(k, _)| lookups.agents.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            namespaces: self
                .namespaces
                .iter()
                .filter(|(k, _)| lookups.namespaces.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            mesh_configs: self.mesh_configs.clone(),
        }
    }
}

/// Reading the cluster failed; the review fails closed with this message.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {what} from the cluster: {source}")]
pub struct ReadError {
    /// What was being read.
    pub what: String,
    /// The client's error.
    pub source: kube::Error,
}

/// Where a review's [`ClusterView`] comes from.
pub trait ClusterReader: Send + Sync + 'static {
    /// Reads what `lookups` names, plus every MeshConfig.
    fn read(
        &self,
        lookups: &Lookups,
    ) -> impl Future<Output = Result<ClusterView, ReadError>> + Send;
}

/// A fixed view: offline checks (`warden admission`) and tests.
impl ClusterReader for ClusterView {
    async fn read(&self, lookups: &Lookups) -> Result<ClusterView, ReadError> {
        Ok(self.select(lookups))
    }
}

/// The apiserver, through kube-rs.
#[derive(Clone)]
pub struct KubeReader {
    client: kube::Client,
}

impl KubeReader {
    /// Reads through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl ClusterReader for KubeReader {
    async fn read(&self, lookups: &Lookups) -> Result<ClusterView, ReadError> {
        let mut view = ClusterView::default();
        let configs: Api<MeshConfig> = Api::all(self.client.clone());
        view.mesh_configs = configs
            .list(&ListParams::default())
            .await
            .map_err(|source| ReadError {
                what: "meshconfigs".into(),
                source,
            })?
            .items;
        for (ns, name) in &lookups.agents {
            let api: Api<Agent> = Api::namespaced(self.client.clone(), ns);
            let found = api.get_opt(name).await.map_err(|source| ReadError {
                what: format!("agent {ns}/{name}"),
                source,
            })?;
            if let Some(agent) = found {
                view.agents.insert((ns.clone(), name.clone()), agent);
            }
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        for name in &lookups.namespaces {
            let found = namespaces.get_opt(name).await.map_err(|source| ReadError {
                what: format!("namespace {name}"),
                source,
            })?;
            if let Some(ns) = found {
                view.namespaces.insert(name.clone(), ns);
            }
        }
        Ok(view)
    }
}
