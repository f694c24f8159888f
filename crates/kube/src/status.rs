//! `warden status --kubeconfig` and `warden verify --kubeconfig`: a cluster's mesh, described
//! the way local mode describes its own ([`warden_local::status::AgentStatus`]), so that the
//! same table and the same verify checks ([`warden_local::verify`]) apply to both.
//!
//! What is read: every Agent with the status the controller wrote (MODE, Accepted,
//! MTLSReady, CardDiscovered, Ready, `status.card`), the mesh compiled from the cluster by
//! [`crate::watch::MeshWatch`] (SPIFFE IDs, policy: the expectations of verify), the agents'
//! EndpointSlices ([`crate::endpoints`]: where their sidecars are) and the gateway's
//! Deployment in the control namespace.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use serde::Serialize;
use warden_local::status::{AgentStatus, CaStatus, CardInfo, Condition, GatewayStatus, MeshStatus};
use warden_local::verify::{Check, Credentials, Target};
use warden_model::resources::TransportSecurity;
use warden_model::{Agent, MeshSnapshot};

use crate::endpoints::endpoint_map;
use crate::watch::{MeshWatch, WatchOptions};

/// How long to wait for the cluster's caches to list everything once.
const SYNC_LIMIT: Duration = Duration::from_secs(30);

/// The gateway's Deployment name (as `warden install` makes it).
pub const GATEWAY_DEPLOYMENT: &str = "warden-gateway";

/// Reading the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// A list or get failed.
    #[error("cannot read {what} from the cluster: {source}")]
    Read {
        /// What was being read.
        what: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The caches did not sync in time.
    #[error(
        "the cluster's Agents, MeshConfigs, Namespaces, Secrets and ConfigMaps were not listed \
         within {0:?} (RBAC: get list watch on each)"
    )]
    NotSynced(Duration),
    /// The mesh does not compile (nothing to derive expectations from).
    #[error("the cluster's mesh does not compile: {0}")]
    NotCompiled(String),
}

/// The gateway as the cluster runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayDeployment {
    /// `namespace/name` of its Deployment.
    pub deployment: String,
    /// Whether the Deployment exists.
    pub found: bool,
    /// Ready replicas.
    pub ready_replicas: i32,
    /// Desired replicas.
    pub replicas: i32,
}

/// A cluster's mesh, as `warden status --kubeconfig` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The apiserver.
    pub cluster: String,
    /// One row per Agent, with what the controller wrote.
    pub agents: Vec<AgentStatus>,
    /// The gateway's Deployment.
    pub gateway: GatewayDeployment,
    /// Why the cluster's mesh does not compile now (the agents' rows still show).
    pub errors: Vec<String>,
    /// The compiled snapshot (not printed; verify's expectations).
    #[serde(skip)]
    pub snapshot: Option<Arc<MeshSnapshot>>,
}

impl ClusterStatus {
    /// Reads the cluster once (the mesh compiled as the gateway and controller compile it).
    pub async fn read(client: kube::Client, control_namespace: &str) -> Result<Self, StatusError> {
        let cluster = client.default_namespace().to_owned();
        let watch = MeshWatch::start(client.clone(), WatchOptions::default());
        let state = tokio::time::timeout(SYNC_LIMIT, watch.synced())
            .await
            .map_err(|_| StatusError::NotSynced(SYNC_LIMIT))?;
        let agents: Vec<Agent> = list(Api::all(client.clone()), "agents.warden.dev").await?;
        let slices: Vec<EndpointSlice> = list(Api::all(client.clone()), "endpointslices").await?;
        let addresses = endpoint_map(&slices);
        let deployments: Api<Deployment> = Api::namespaced(client, control_namespace);
        let gateway = deployments
            .get_opt(GATEWAY_DEPLOYMENT)
            .await
            .map_err(|source| StatusError::Read {
                what: format!("deployment {control_namespace}/{GATEWAY_DEPLOYMENT}"),
                source,
            })?;
        let snapshot = state.snapshot.clone();
        let rows = agents
            .iter()
            .map(|agent| agent_row(agent, snapshot.as_deref(), &addresses))
            .collect();
        Ok(Self {
            cluster: cluster_name(&cluster),
            agents: rows,
            gateway: gateway_row(control_namespace, gateway.as_ref()),
            errors: state.errors.iter().map(crate::validate::located).collect(),
            snapshot,
        })
    }

    /// The table: one row per Agent (kubectl get agents' columns plus the SPIFFE ID and where
    /// its sidecars are), the conditions that are not True, then the gateway.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<30} {:<11} {:<9} {:<10} {:<6} {:<6} {:<22} {}\n",
            "AGENT", "MODE", "ACCEPTED", "MTLSREADY", "CARD", "READY", "ENDPOINT", "SPIFFE ID"
        );
        for a in &self.agents {
            let card = a.card.as_ref();
            out.push_str(&format!(
                "{:<30} {:<11} {:<9} {:<10} {:<6} {:<6} {:<22} {}\n",
                a.key(),
                a.mtls_mode,
                a.condition("Accepted"),
                a.condition("MTLSReady"),
                card.map_or("-", |c| c.transport_security.as_str()),
                a.condition("Ready"),
                if a.sidecar_address.is_empty() {
                    "-"
                } else {
                    &a.sidecar_address
                },
                card.and_then(|c| c.attested_spiffe_id.as_deref())
                    .unwrap_or(&a.spiffe_id),
            ));
            for c in a.conditions.iter().filter(|c| c.status != "True") {
                out.push_str(&format!(
                    "    {} {}: {} {}\n",
                    c.kind, c.status, c.reason, c.message
                ));
            }
        }
        let g = &self.gateway;
        out.push_str(&match g.found {
            true => format!(
                "\ngateway: Deployment {} {}/{} ready\n",
                g.deployment, g.ready_replicas, g.replicas
            ),
            false => format!("\ngateway: Deployment {} not found\n", g.deployment),
        });
        for error in &self.errors {
            out.push_str(&format!("the cluster's mesh does not compile: {error}\n"));
        }
        out
    }

    /// What `warden verify --kubeconfig` checks: this mesh, reached at `gateway_url` (which
    /// must prove `gateway_id`, by default the snapshot's gateway identity), with
    /// `credentials`; the gateway's audit log when readable here (`audit_log`, else not
    /// checked).
    pub fn verify_target(
        self,
        gateway_url: &str,
        gateway_id: Option<&str>,
        audit_log: Option<&str>,
        credentials: Credentials,
    ) -> Result<Target, StatusError> {
        let snapshot = self
            .snapshot
            .ok_or_else(|| StatusError::NotCompiled(self.errors.join("; ")))?;
        let ready = Check {
            name: "the cluster's mesh compiles".into(),
            pass: self.errors.is_empty(),
            detail: match self.errors.is_empty() {
                true => format!(
                    "{} agents, snapshot compiled from {}",
                    snapshot.agents().len(),
                    self.cluster
                ),
                false => self.errors.join("; "),
            },
        };
        let gateway_url = gateway_url.trim_end_matches('/').to_owned();
        let domain = snapshot.control_plane().host_domain.clone();
        let (scheme, authority) = gateway_url
            .split_once("://")
            .unwrap_or(("https", &gateway_url));
        let port = authority
            .rsplit_once(':')
            .map(|(_, p)| format!(":{p}"))
            .unwrap_or_default();
        let host_url = |ns: &str, name: &str| {
            let host = warden_a2a::host::agent_host(ns, name, &domain);
            format!("{scheme}://{host}{port}/")
        };
        let status = MeshStatus {
            running: true,
            pid: 0,
            agents: self
                .agents
                .into_iter()
                .map(|mut a| {
                    a.gateway_url = format!("{gateway_url}/api/a2a/{}/{}/", a.namespace, a.name);
                    a.host_url = host_url(&a.namespace, &a.name);
                    a
                })
                .collect(),
            processes: Vec::new(),
            gateway: GatewayStatus {
                url: gateway_url,
                public_url: None,
                spiffe_id: gateway_id.map_or_else(
                    || snapshot.control_plane().gateway.to_string(),
                    str::to_owned,
                ),
                audit_log: audit_log.unwrap_or_default().to_owned(),
                restarts: 0,
                admin_address: String::new(),
            },
            ca: CaStatus {
                trust_domain: snapshot.trust_domain().to_string(),
                dir: String::new(),
                root_expiry_unix: 0,
            },
            manifests: self.cluster,
            manifests_error: None,
            snapshot_version: snapshot.version(),
            ready: true,
            spire: None,
        };
        Ok(Target {
            status,
            snapshot: (*snapshot).clone(),
            credentials,
            ready,
        })
    }
}

async fn list<K>(api: Api<K>, what: &str) -> Result<Vec<K>, StatusError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|source| StatusError::Read {
            what: what.to_owned(),
            source,
        })
}

fn cluster_name(default_namespace: &str) -> String {
    format!("the cluster (default namespace {default_namespace})")
}

/// One Agent's row: the controller's status, the compiled SPIFFE ID and mode, its endpoint.
fn agent_row(
    agent: &Agent,
    snapshot: Option<&MeshSnapshot>,
    addresses: &warden_proxy::endpoints::EndpointMap,
) -> AgentStatus {
    let namespace = agent.metadata.namespace.clone().unwrap_or_default();
    let name = agent.metadata.name.clone().unwrap_or_default();
    let compiled = snapshot.and_then(|s| s.agent(&namespace, &name));
    let status = agent.status.as_ref();
    let key = format!("{namespace}/{name}");
    AgentStatus {
        spiffe_id: compiled.map_or(String::new(), |c| c.spiffe_id.to_string()),
        mtls_mode: status
            .and_then(|s| s.mtls_mode)
            .or(compiled.map(|c| c.mtls_mode))
            .map_or("-".to_owned(), |m| format!("{m:?}")),
        conditions: status
            .map(|s| {
                s.conditions
                    .iter()
                    .map(|c| Condition {
                        kind: c.type_.clone(),
                        status: c.status.clone(),
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        card: status.and_then(|s| s.card.as_ref()).map(|c| CardInfo {
            transport_security: match c.transport_security {
                TransportSecurity::Mtls => "mtls".into(),
                TransportSecurity::Http => "http".into(),
            },
            attested_spiffe_id: c.attested_spiffe_id.clone(),
            card_hash: c.card_hash.clone().unwrap_or_default(),
        }),
        gateway_url: String::new(),
        host_url: String::new(),
        uid: None,
        sidecar_address: addresses
            .get(&key)
            .and_then(|a| a.first())
            .map(|e| e.authority(compiled.map_or(0, |c| c.port)))
            .unwrap_or_default(),
        egress_address: String::new(),
        sidecar_admin_address: String::new(),
        app_address: String::new(),
        restarts: 0,
        namespace,
        name,
    }
}

fn gateway_row(namespace: &str, deployment: Option<&Deployment>) -> GatewayDeployment {
    let status = deployment.and_then(|d| d.status.as_ref());
    GatewayDeployment {
        deployment: format!("{namespace}/{GATEWAY_DEPLOYMENT}"),
        found: deployment.is_some(),
        ready_replicas: status.and_then(|s| s.ready_replicas).unwrap_or(0),
        replicas: deployment.and_then(|d| d.spec.replicas).unwrap_or(1),
    }
}
