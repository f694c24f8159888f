//! The status of a running local mesh, written by `warden up` to `<state-dir>/status.json`.
//! The JSON form is a stable interface (`warden status -o json`).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One condition of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Accepted`, `MTLSReady`, `CardDiscovered`, `Ready`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False`, `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// What to do about it.
    pub message: String,
}

/// How the controller fetched the card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CardInfo {
    /// `mtls` or `http`.
    pub transport_security: String,
    /// The SPIFFE ID the agent's sidecar proved.
    pub attested_spiffe_id: Option<String>,
    /// SHA-256 of the card.
    pub card_hash: String,
}

/// One agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// SPIFFE ID.
    pub spiffe_id: String,
    /// Resolved mTLS mode.
    pub mtls_mode: String,
    /// Conditions.
    pub conditions: Vec<Condition>,
    /// The card, once fetched.
    pub card: Option<CardInfo>,
    /// The agent's URL at the gateway.
    pub gateway_url: String,
    /// Its sidecar's mesh-facing address.
    pub sidecar_address: String,
    /// Its sidecar's egress address.
    pub egress_address: String,
    /// The app's address.
    pub app_address: String,
    /// Restarts of its sidecar and app.
    pub restarts: u32,
}

/// The gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// Base URL.
    pub url: String,
    /// SPIFFE ID.
    pub spiffe_id: String,
    /// Audit log file.
    pub audit_log: String,
    /// Restarts.
    pub restarts: u32,
}

/// The CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaStatus {
    /// Trust domain.
    pub trust_domain: String,
    /// Directory.
    pub dir: String,
    /// Root expiry, seconds since the epoch.
    pub root_expiry_unix: i64,
}

/// The whole mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshStatus {
    /// Agents.
    pub agents: Vec<AgentStatus>,
    /// Gateway.
    pub gateway: GatewayStatus,
    /// CA.
    pub ca: CaStatus,
    /// Version of the snapshot in force.
    pub snapshot_version: u64,
    /// True once every agent's card was fetched.
    pub ready: bool,
}

impl MeshStatus {
    /// Reads `<state-dir>/status.json`.
    pub fn load(state_dir: &Path) -> Result<Self, String> {
        let path = state_dir.join("status.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: {e} (is `warden up` running with this --state-dir?)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The status table `warden up` and `warden status` print.
    pub fn table(&self) -> String {
        let mut out = format!(
            "gateway {} ({})   CA trust domain {}   snapshot v{}\n\n",
            self.gateway.url, self.gateway.spiffe_id, self.ca.trust_domain, self.snapshot_version
        );
        out.push_str(&format!(
            "{:<26} {:<11} {:<9} {:<9} {:<9} {:<7} {:<22} {}\n",
            "AGENT", "MODE", "ACCEPTED", "MTLS", "CARD", "READY", "SIDECAR", "SPIFFE ID"
        ));
        for a in &self.agents {
            let cond = |t: &str| {
                a.conditions
                    .iter()
                    .find(|c| c.kind == t)
                    .map_or("?".to_owned(), |c| c.status.clone())
            };
            out.push_str(&format!(
                "{:<26} {:<11} {:<9} {:<9} {:<9} {:<7} {:<22} {}\n",
                format!("{}/{}", a.namespace, a.name),
                a.mtls_mode,
                cond("Accepted"),
                cond("MTLSReady"),
                a.card
                    .as_ref()
                    .map_or("-".to_owned(), |c| c.transport_security.clone()),
                cond("Ready"),
                a.sidecar_address,
                a.spiffe_id
            ));
            for c in a.conditions.iter().filter(|c| c.status != "True") {
                out.push_str(&format!(
                    "    {} {}: {} {}\n",
                    c.kind, c.status, c.reason, c.message
                ));
            }
        }
        out
    }
}
