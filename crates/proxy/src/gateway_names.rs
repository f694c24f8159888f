//! Tells the operator when the gateway's certificate lacks its agents' host names.
//!
//! Clients that check host names (every gRPC client, the A2A SDKs over https) refuse the
//! gateway at `{agent}.{namespace}.{hostDomain}` unless its SVID carries that name or
//! `*.{namespace}.{hostDomain}`. `warden up` issues those names itself; in a cluster the SVID
//! comes from SPIRE with whatever its registration says, and nothing else would notice a
//! namespace added after it was written. So whenever the SVID or the snapshot changes, the
//! gateway compares them, logs a warning naming the hosts and the names to add, and sets
//! `warden_gateway_uncovered_agent_hosts` for alerting.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use warden_a2a::host::name_covers;
use warden_identity::SvidSource;
use warden_identity::svid::dns_names_of;

use crate::metrics::{HostDomainLabels, Metrics};
use crate::pipeline::Policy;

/// How many hosts one warning lists by name; the rest are counted.
const LISTED: usize = 10;

/// The comparison of the gateway's SVID with the snapshot's agent hosts.
pub(crate) struct HostNameCheck {
    identity: Arc<dyn SvidSource>,
    policy: Arc<ArcSwap<Policy>>,
    metrics: Arc<Metrics>,
    /// What was last reported, so an SVID rotation that changes nothing logs nothing.
    reported: Mutex<Option<Reported>>,
}

impl HostNameCheck {
    /// Checks now and after every SVID update, from a task that ends when the returned
    /// handle is aborted. Snapshot changes call [`Self::run`] themselves.
    pub(crate) fn start(
        identity: Arc<dyn SvidSource>,
        policy: Arc<ArcSwap<Policy>>,
        metrics: Arc<Metrics>,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let check = Arc::new(Self {
            identity,
            policy,
            metrics,
            reported: Mutex::new(None),
        });
        let task = tokio::spawn({
            let check = check.clone();
            async move {
                let mut updates = check.identity.updates();
                loop {
                    check.run();
                    if updates.changed().await.is_err() {
                        return;
                    }
                }
            }
        });
        (check, task)
    }

    /// Compares the current SVID with the current snapshot; a no-op until both exist.
    pub(crate) fn run(&self) {
        let Some(snapshot) = self.policy.load().snapshot.clone() else {
            return;
        };
        let Some(svid) = self.identity.current() else {
            return;
        };
        let names = svid.chain().first().map(dns_names_of).unwrap_or_default();
        let now = Reported {
            host_domain: snapshot.control_plane().host_domain.clone(),
            uncovered: snapshot.agent_hosts_not_covered(&names),
        };
        let Ok(mut reported) = self.reported.lock() else {
            return;
        };
        if reported.as_ref() == Some(&now) {
            return;
        }
        self.set_gauge(reported.as_ref(), &now);
        if now.uncovered.is_empty() {
            if reported.is_some() {
                tracing::info!(id = %svid.spiffe_id(), "the gateway's SVID now carries every agent's host name");
            }
        } else {
            let add: Vec<String> = snapshot
                .gateway_host_names()
                .into_iter()
                .filter(|name| now.uncovered.iter().any(|host| name_covers(name, host)))
                .collect();
            tracing::warn!(
                id = %svid.spiffe_id(),
                hosts = %listed(&now.uncovered),
                add = %add.join(", "),
                "the gateway's SVID does not carry these agent hosts: clients that check host \
                 names (gRPC, https) refuse the gateway there; give its SVID the DNS names in \
                 `add` (docs/kubernetes.md, \"Agent host names over TLS\")"
            );
        }
        *reported = Some(now);
    }

    /// One series, labelled with the current host domain; a changed domain's old series goes.
    fn set_gauge(&self, before: Option<&Reported>, now: &Reported) {
        let gauge = &self.metrics.gateway_uncovered_agent_hosts;
        if let Some(before) = before.filter(|b| b.host_domain != now.host_domain) {
            gauge.remove(&HostDomainLabels {
                host_domain: before.host_domain.clone(),
            });
        }
        let labels = HostDomainLabels {
            host_domain: now.host_domain.clone(),
        };
        let count = i64::try_from(now.uncovered.len()).unwrap_or(i64::MAX);
        gauge.get_or_create(&labels).set(count);
    }
}

/// What was last reported.
#[derive(PartialEq, Eq)]
struct Reported {
    host_domain: String,
    /// Agent hosts the SVID has no DNS name for.
    uncovered: Vec<String>,
}

/// The first [`LISTED`] hosts, and how many more.
fn listed(hosts: &[String]) -> String {
    let shown = hosts[..hosts.len().min(LISTED)].join(", ");
    match hosts.len().saturating_sub(LISTED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_of_hosts_is_cut_and_counted() {
        let hosts: Vec<String> = (0..12).map(|i| format!("a{i}.ns.example")).collect();
        assert_eq!(listed(&hosts[..2]), "a0.ns.example, a1.ns.example");
        let long = listed(&hosts);
        assert!(long.ends_with("a9.ns.example and 2 more"), "{long}");
        assert!(!long.contains("a10."), "{long}");
    }
}
