//! Where each agent's sidecars listen, as the gateway forwards to them.
//!
//! Two sources fill it: `--endpoint NS/AGENT=HOST:PORT` flags (fixed for the life of the
//! process), or, in a cluster, the agents' EndpointSlices, which change as pods come and go.
//! The whole table is swapped at once (one atomic store), so a request sees either the old
//! or the new table, never half of each; a request picks one address, round-robin.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;

/// One ready address of an agent: its host (an IP in a cluster) and, when the source names
/// one, its port; without a port the agent's own `spec.port` is used (the sidecar holds the
/// agent's port on the pod IP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// An IP address or host name.
    pub host: String,
    /// The port, when the source says.
    pub port: Option<u16>,
}

impl Endpoint {
    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self, default_port: u16) -> String {
        let port = self.port.unwrap_or(default_port);
        match self.host.contains(':') {
            true => format!("[{}]:{port}", self.host),
            false => format!("{}:{port}", self.host),
        }
    }
}

/// `namespace/name` → the agent's ready addresses.
pub type EndpointMap = HashMap<String, Vec<Endpoint>>;

/// The gateway's current table of agent addresses.
#[derive(Debug, Default)]
pub struct Endpoints {
    current: ArcSwap<EndpointMap>,
    next: AtomicUsize,
}

impl Endpoints {
    /// A table that never changes: `namespace/name` → `host:port` (the `--endpoint` flags);
    /// an address without a port is an error naming it.
    pub fn fixed(map: HashMap<String, String>) -> Result<Self, String> {
        let mut table = EndpointMap::new();
        for (agent, address) in map {
            let endpoint = address
                .rsplit_once(':')
                .and_then(|(host, port)| {
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    Some(Endpoint {
                        host: host.to_owned(),
                        port: Some(port.parse().ok()?),
                    })
                })
                .filter(|e| !e.host.is_empty())
                .ok_or_else(|| format!("endpoint of {agent}: {address:?} is not HOST:PORT"))?;
            table.insert(agent, vec![endpoint]);
        }
        Ok(Self::from_map(table))
    }

    /// A table with these addresses (replaced later with [`Self::replace`]).
    pub fn from_map(map: EndpointMap) -> Self {
        Self {
            current: ArcSwap::from_pointee(map),
            next: AtomicUsize::new(0),
        }
    }

    /// Makes `map` the table for the next request.
    pub fn replace(&self, map: Arc<EndpointMap>) {
        self.current.store(map);
    }

    /// One address of `key` (`namespace/name`), taking turns among its ready addresses; an
    /// address without a port gets `default_port`.
    pub fn pick(&self, key: &str, default_port: u16) -> Option<String> {
        let table = self.current.load();
        let addresses = table.get(key).filter(|a| !a.is_empty())?;
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % addresses.len();
        Some(addresses[turn].authority(default_port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(host: &str, port: Option<u16>) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn fixed_addresses_are_used_as_given() {
        let table = Endpoints::fixed(HashMap::from([
            (
                "team-beta/specialist".to_owned(),
                "127.0.0.1:9001".to_owned(),
            ),
            ("team-beta/v6".to_owned(), "[::1]:9002".to_owned()),
        ]))
        .expect("valid");
        assert_eq!(
            table.pick("team-beta/specialist", 8080).as_deref(),
            Some("127.0.0.1:9001")
        );
        assert_eq!(
            table.pick("team-beta/v6", 8080).as_deref(),
            Some("[::1]:9002")
        );
        assert_eq!(table.pick("team-beta/other", 8080), None);
        let bad = Endpoints::fixed(HashMap::from([("a/b".to_owned(), "host".to_owned())]));
        assert_eq!(
            bad.err().as_deref(),
            Some("endpoint of a/b: \"host\" is not HOST:PORT")
        );
    }

    #[test]
    fn addresses_take_turns_and_take_the_agent_port_when_they_name_none() {
        let table = Endpoints::from_map(HashMap::from([(
            "b/s".to_owned(),
            vec![
                at("10.0.0.1", None),
                at("10.0.0.2", Some(9000)),
                at("fd00::1", None),
            ],
        )]));
        let picked: Vec<String> = (0..3).filter_map(|_| table.pick("b/s", 8080)).collect();
        assert_eq!(picked, ["10.0.0.1:8080", "10.0.0.2:9000", "[fd00::1]:8080"]);
    }

    #[test]
    fn a_replaced_table_applies_to_the_next_pick_and_an_empty_list_is_no_endpoint() {
        let table = Endpoints::from_map(HashMap::from([(
            "b/s".to_owned(),
            vec![at("10.0.0.1", Some(1))],
        )]));
        table.replace(Arc::new(HashMap::from([("b/s".to_owned(), Vec::new())])));
        assert_eq!(table.pick("b/s", 8080), None);
    }
}
