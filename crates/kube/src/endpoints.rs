//! Where each agent's pods are: the agents' EndpointSlices, watched.
//!
//! The convention (shared by the gateway's routing and the controller's card fetch): an
//! agent's addresses are the EndpointSlices in the agent's namespace labelled
//! `kubernetes.io/service-name: <agent name>` — what Kubernetes makes for a Service named
//! like the agent, and what a test or an out-of-cluster agent writes by hand. An endpoint
//! counts while its `conditions.ready` is not `false` (absent means ready, as Kubernetes
//! reads it). The port is the slice's port named `a2a`, else its only port; a slice without
//! ports means the agent's own `spec.port` (the sidecar holds the agent's port on the pod IP).
//! A name in an `FQDN` slice that is `localhost` or ends in `.localhost` means 127.0.0.1
//! (RFC 6761 §6.3), so an agent on the machine itself can be written down: the apiserver
//! refuses loopback IPs in slices.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::Store;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use warden_proxy::endpoints::{Endpoint, EndpointMap};

/// The label Kubernetes puts on a Service's EndpointSlices.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The name of the slice port used when a slice has several.
pub const A2A_PORT_NAME: &str = "a2a";

/// The agents' ready addresses from `slices`, by `namespace/name`.
pub fn endpoint_map<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> EndpointMap {
    let mut map: BTreeMap<String, Vec<Endpoint>> = BTreeMap::new();
    for slice in slices {
        let labels = slice.metadata.labels.as_ref();
        let (Some(agent), Some(namespace)) = (
            labels.and_then(|l| l.get(SERVICE_NAME_LABEL)),
            slice.metadata.namespace.as_ref(),
        ) else {
            continue;
        };
        let Some(port) = slice_port(slice) else {
            tracing::warn!(
                slice = %format!("{namespace}/{}", slice.metadata.name.as_deref().unwrap_or("?")),
                "EndpointSlice has several ports and none named {A2A_PORT_NAME:?}; ignored"
            );
            continue;
        };
        let ready = slice
            .endpoints
            .iter()
            .flatten()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false));
        let entry = map.entry(format!("{namespace}/{agent}")).or_default();
        for endpoint in ready {
            entry.extend(endpoint.addresses.iter().map(|host| Endpoint {
                host: match is_localhost(host) {
                    true => "127.0.0.1".to_owned(),
                    false => host.clone(),
                },
                port,
            }));
        }
    }
    map.into_iter()
        .map(|(agent, mut addresses)| {
            addresses.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
            addresses.dedup();
            (agent, addresses)
        })
        .collect()
}

/// RFC 6761 §6.3: `localhost` and `*.localhost` are loopback, whatever the resolver says
/// (glibc's `files` resolves only the names in /etc/hosts). An FQDN slice must name at least
/// two labels, so a pod on the machine itself is `something.localhost`.
pub fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// The port a slice names for the agent: `Some(None)` when it names none (the agent's port),
/// `None` when it names several and none is `a2a`.
fn slice_port(slice: &EndpointSlice) -> Option<Option<u16>> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let number = |p: &k8s_openapi::api::discovery::v1::EndpointPort| {
        p.port.and_then(|n| u16::try_from(n).ok())
    };
    match ports {
        [] => Some(None),
        [only] => Some(number(only)),
        several => several
            .iter()
            .find(|p| p.name.as_deref() == Some(A2A_PORT_NAME))
            .map(number),
    }
}

/// The agents' address table, kept current from the cluster's EndpointSlices; dropping it
/// stops the watch.
pub struct EndpointWatch {
    table: watch::Receiver<Arc<EndpointMap>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for EndpointWatch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl EndpointWatch {
    /// Watches every EndpointSlice (cluster-wide: RBAC `get list watch` on
    /// `endpointslices`) with [`crate::watch::reflect`], and publishes the agents' address
    /// table once the first list is in and after every change. Watch errors are retried with
    /// backoff (and logged), keeping the last table.
    pub fn start(client: kube::Client) -> Self {
        let changed = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        let on_change = {
            let changed = changed.clone();
            move || changed.notify_one()
        };
        let store: Store<EndpointSlice> =
            crate::watch::reflect(Api::all(client), (), on_change, &mut tasks);
        let (tx, table) = watch::channel(Arc::new(EndpointMap::new()));
        tasks.push(tokio::spawn(async move {
            if store.wait_until_ready().await.is_err() {
                return;
            }
            loop {
                let state = store.state();
                let next = endpoint_map(state.iter().map(|s| s.as_ref()));
                if tx.send(Arc::new(next)).is_err() {
                    return;
                }
                changed.notified().await;
            }
        }));
        Self { table, tasks }
    }

    /// A receiver of the current table; `changed()` wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<EndpointMap>> {
        self.table.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(json: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json).expect("an EndpointSlice")
    }

    #[test]
    fn ready_addresses_of_labelled_slices_by_agent_with_the_slice_port() {
        let slices = [
            slice(serde_json::json!({
                "metadata": {"name": "specialist-x", "namespace": "team-beta",
                             "labels": {"kubernetes.io/service-name": "specialist"}},
                "addressType": "IPv4",
                "ports": [{"port": 8080}],
                "endpoints": [
                    {"addresses": ["10.0.0.2"], "conditions": {"ready": true}},
                    {"addresses": ["10.0.0.1"]},
                    {"addresses": ["10.0.0.3"], "conditions": {"ready": false}}
                ]
            })),
            slice(serde_json::json!({
                "metadata": {"name": "orch", "namespace": "team-alpha",
                             "labels": {"kubernetes.io/service-name": "orchestrator"}},
                "addressType": "IPv4",
                "ports": [{"name": "metrics", "port": 9090}, {"name": "a2a", "port": 8000}],
                "endpoints": [{"addresses": ["10.0.1.1"]}]
            })),
            slice(serde_json::json!({
                "metadata": {"name": "unlabelled", "namespace": "team-beta"},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.9.9.9"]}]
            })),
        ];
        let map = endpoint_map(&slices);
        let addresses =
            |key: &str| -> Vec<String> { map[key].iter().map(|e| e.authority(1)).collect() };
        assert_eq!(
            addresses("team-beta/specialist"),
            ["10.0.0.1:8080", "10.0.0.2:8080"]
        );
        assert_eq!(addresses("team-alpha/orchestrator"), ["10.0.1.1:8000"]);
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn a_slice_without_ports_means_the_agents_port_and_ambiguous_ports_are_ignored() {
        let slices = [
            slice(serde_json::json!({
                "metadata": {"name": "a", "namespace": "n",
                             "labels": {"kubernetes.io/service-name": "a"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.0.0.1"]}]
            })),
            slice(serde_json::json!({
                "metadata": {"name": "b", "namespace": "n",
                             "labels": {"kubernetes.io/service-name": "b"}},
                "addressType": "IPv4",
                "ports": [{"name": "x", "port": 1}, {"name": "y", "port": 2}],
                "endpoints": [{"addresses": ["10.0.0.2"]}]
            })),
        ];
        let map = endpoint_map(&slices);
        assert_eq!(map["n/a"][0].authority(8080), "10.0.0.1:8080");
        assert!(!map.contains_key("n/b"));
    }
}
