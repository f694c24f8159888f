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
    /// The agent at the root of its own host name at the gateway,
    /// `{agent}.{namespace}.{hostDomain}`, where standard A2A discovery finds its card.
    #[serde(default)]
    pub host_url: String,
    /// Its sidecar's mesh-facing address.
    pub sidecar_address: String,
    /// Its sidecar's egress address.
    pub egress_address: String,
    /// Its sidecar's admin address (`/metrics`, `/readyz`).
    #[serde(default)]
    pub sidecar_admin_address: String,
    /// The app's address.
    pub app_address: String,
    /// Restarts of its sidecar and app.
    pub restarts: u32,
    /// The uid its app and sidecar run as (`spec.local.user`, else `up`'s own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

impl AgentStatus {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The status of condition `kind` (`True`, `False`, `Unknown`), `?` when absent.
    pub fn condition(&self, kind: &str) -> &str {
        self.conditions
            .iter()
            .find(|c| c.kind == kind)
            .map_or("?", |c| c.status.as_str())
    }

    fn set_condition(&mut self, next: Condition) {
        match self.conditions.iter_mut().find(|c| c.kind == next.kind) {
            Some(c) => *c = next,
            None => self.conditions.push(next),
        }
    }
}

/// The health of one process, from its own answer (never assumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessHealth {
    /// It answered and is ready.
    Ready,
    /// It answered and is not ready (e.g. no SVID yet).
    NotReady,
    /// It exited and waits to be restarted (see `lastError`).
    Failing,
    /// It did not answer.
    Unknown,
}

/// What a process does in the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// The gateway.
    Gateway,
    /// An agent's sidecar.
    Sidecar,
    /// An agent's app.
    App,
}

/// One supervised process, as it reports itself (like `istioctl proxy-status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStatus {
    /// `gateway`, `team-beta/specialist sidecar`, `team-beta/specialist app`.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The agent it serves (`namespace/name`), for sidecars and apps.
    pub agent: Option<String>,
    /// Where it is asked: the admin port of a proxy, the listener of an app.
    pub probe: String,
    /// The PID the supervisor started.
    pub pid: Option<u32>,
    /// Its health.
    pub health: ProcessHealth,
    /// The snapshot version it says it has loaded (proxies only).
    pub snapshot_version: Option<u64>,
    /// Why it is not Ready, when it is not.
    pub detail: Option<String>,
    /// Times it exited and was restarted.
    pub restarts: u32,
    /// The last error it printed before it exited, with the exit status.
    pub last_error: Option<String>,
    /// Its log file.
    pub log: String,
    /// True between an exit and its restart.
    pub waiting_restart: bool,
}

/// The gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// Base URL.
    pub url: String,
    /// The `--public-url` cards are rewritten to, when one was given; otherwise cards keep
    /// the scheme and authority each client used (https over mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// SPIFFE ID.
    pub spiffe_id: String,
    /// Audit log file.
    pub audit_log: String,
    /// Restarts.
    pub restarts: u32,
    /// The gateway's admin address (`/metrics`, `/readyz`).
    #[serde(default)]
    pub admin_address: String,
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
    /// Whether a `warden up` holds the state directory (false: every other field is what the
    /// last run left behind).
    pub running: bool,
    /// The PID of `warden up`.
    pub pid: u32,
    /// Agents.
    pub agents: Vec<AgentStatus>,
    /// Every supervised process.
    pub processes: Vec<ProcessStatus>,
    /// Gateway.
    pub gateway: GatewayStatus,
    /// CA.
    pub ca: CaStatus,
    /// The manifests `up` runs (a file or directory).
    pub manifests: String,
    /// Why the last edit of the manifests was not applied (the previous snapshot stays in
    /// force); absent when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests_error: Option<String>,
    /// Version of the snapshot the supervisor compiled last (each proxy reports its own).
    pub snapshot_version: u64,
    /// True when every process is Ready on the current snapshot and every card was fetched.
    pub ready: bool,
    /// Where SVIDs come from when it is SPIRE (absent: the embedded CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spire: Option<crate::spire::SpireStatus>,
}

/// Why there is no status to show.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No `warden up` holds the state directory.
    #[error(
        "the mesh in {0} is not running (no `warden up` holds its lock); start it with `warden up`"
    )]
    NotRunning(String),
    /// `status.json` is missing or unreadable.
    #[error("{0}")]
    Unreadable(String),
}

impl MeshStatus {
    /// Reads `<state-dir>/status.json` of a running mesh.
    pub fn load(state_dir: &Path) -> Result<Self, StatusError> {
        if crate::lock::holder(state_dir).is_none() {
            return Err(StatusError::NotRunning(state_dir.display().to_string()));
        }
        let path = state_dir.join("status.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            StatusError::Unreadable(format!(
                "{}: {e} (`warden up` is starting, or cannot write there)",
                path.display()
            ))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| StatusError::Unreadable(format!("{}: {e}", path.display())))
    }

    /// Asks every process how it is, then derives `MTLSReady`, `Ready` and the mesh's
    /// readiness from the answers: a process that does not answer is `Unknown`.
    pub async fn refresh(&mut self) {
        let probes = self.processes.iter().map(|p| async move {
            match (p.role, p.probe.parse::<std::net::SocketAddr>()) {
                (_, Err(e)) => Err(format!("bad probe address {}: {e}", p.probe)),
                (Role::App, Ok(addr)) => match crate::probe::listening(addr).await {
                    true => Ok(None),
                    false => Err(format!("nothing accepts connections on {addr}")),
                },
                (_, Ok(addr)) => crate::probe::admin(addr).await.map(Some),
            }
        });
        let answers = futures::future::join_all(probes).await;
        for (process, answer) in self.processes.iter_mut().zip(answers) {
            process.judge(answer);
        }
        let current = self.snapshot_version;
        for agent in &mut self.agents {
            let key = agent.key();
            let of = |role| {
                self.processes
                    .iter()
                    .find(|p| p.role == role && p.agent.as_deref() == Some(key.as_str()))
            };
            agent.judge(of(Role::Sidecar), of(Role::App));
        }
        self.ready = self
            .processes
            .iter()
            .all(|p| p.health == ProcessHealth::Ready && p.synced(current))
            && self
                .agents
                .iter()
                .all(|a| a.condition("CardDiscovered") == "True");
    }

    /// The status table `warden up` and `warden status` print.
    pub fn table(&self) -> String {
        let mut out = format!(
            "gateway {} ({})   CA trust domain {}   snapshot v{}\n\n",
            self.gateway.url, self.gateway.spiffe_id, self.ca.trust_domain, self.snapshot_version
        );
        out.push_str(&match &self.spire {
            Some(spire) => format!(
                "identities: SPIRE (agent {}, entries under {})\n\n",
                spire.sockets.agent_socket.display(),
                spire.parent_id
            ),
            None => format!("identities: embedded CA ({})\n\n", self.ca.dir),
        });
        if let Some(error) = &self.manifests_error {
            out.push_str(&format!(
                "the last edit of {} was NOT applied (snapshot v{} stays in force):\n{error}\n\n",
                self.manifests, self.snapshot_version
            ));
        }
        out.push_str(&format!(
            "{:<26} {:<11} {:<9} {:<9} {:<9} {:<7} {:<22} {}\n",
            "AGENT", "MODE", "ACCEPTED", "MTLS", "CARD", "READY", "SIDECAR", "SPIFFE ID"
        ));
        for a in &self.agents {
            out.push_str(&format!(
                "{:<26} {:<11} {:<9} {:<9} {:<9} {:<7} {:<22} {}\n",
                a.key(),
                a.mtls_mode,
                a.condition("Accepted"),
                a.condition("MTLSReady"),
                a.card
                    .as_ref()
                    .map_or("-".to_owned(), |c| c.transport_security.clone()),
                a.condition("Ready"),
                a.sidecar_address,
                a.spiffe_id
            ));
            out.push_str(&format!(
                "    url {}   host {}\n",
                a.gateway_url, a.host_url
            ));
            for c in a.conditions.iter().filter(|c| c.status != "True") {
                out.push_str(&format!(
                    "    {} {}: {} {}\n",
                    c.kind, c.status, c.reason, c.message
                ));
            }
        }
        out.push('\n');
        out.push_str(&self.process_table());
        out
    }

    /// One row per process: PID, health, loaded snapshot, restarts, last error.
    fn process_table(&self) -> String {
        let mut out = format!(
            "{:<34} {:<8} {:<9} {:<14} {:<8} {}\n",
            "PROCESS", "PID", "HEALTH", "SNAPSHOT", "RESTARTS", "LAST ERROR"
        );
        for p in &self.processes {
            let snapshot = match (p.role, p.snapshot_version) {
                (Role::App, _) => "-".to_owned(),
                (_, None) => "none".to_owned(),
                (_, Some(v)) if v == self.snapshot_version => format!("v{v}"),
                (_, Some(v)) => format!("v{v} STALE"),
            };
            out.push_str(&format!(
                "{:<34} {:<8} {:<9} {:<14} {:<8} {}\n",
                p.name,
                p.pid.map_or("-".to_owned(), |p| p.to_string()),
                format!("{:?}", p.health),
                snapshot,
                p.restarts,
                p.last_error.as_deref().unwrap_or("")
            ));
            if let Some(detail) = p
                .detail
                .as_ref()
                .filter(|_| p.health != ProcessHealth::Ready)
            {
                out.push_str(&format!("    {detail}\n"));
            }
        }
        out
    }
}

impl ProcessStatus {
    /// Whether it runs the snapshot `current` (apps have none to run).
    pub fn synced(&self, current: u64) -> bool {
        self.role == Role::App || self.snapshot_version == Some(current)
    }

    fn judge(&mut self, answer: Result<Option<crate::probe::AdminReport>, String>) {
        // The supervisor knows best that a process is down: whatever answers on its port
        // then is someone else.
        if self.waiting_restart || self.pid.is_none() {
            self.snapshot_version = None;
            self.health = ProcessHealth::Failing;
            self.detail = Some(match &self.last_error {
                Some(e) => format!("not running; it {e}"),
                None => "not running".into(),
            });
            return;
        }
        (self.health, self.detail) = match answer {
            Ok(None) => (ProcessHealth::Ready, None),
            Ok(Some(report)) => {
                self.snapshot_version = report.snapshot_version;
                if report.ready {
                    (ProcessHealth::Ready, None)
                } else {
                    (
                        ProcessHealth::NotReady,
                        Some("it has no SVID yet (see its log)".into()),
                    )
                }
            }
            Err(why) => {
                self.snapshot_version = None;
                (ProcessHealth::Unknown, Some(why))
            }
        };
    }
}

fn condition(kind: &str, status: &str, reason: &str, message: String) -> Condition {
    Condition {
        kind: kind.into(),
        status: status.into(),
        reason: reason.into(),
        message,
    }
}

impl AgentStatus {
    /// `MTLSReady` from the sidecar's own word; `Ready` from Accepted, the card and both
    /// processes (MTLSReady never blocks Ready).
    fn judge(&mut self, sidecar: Option<&ProcessStatus>, app: Option<&ProcessStatus>) {
        let health = |p: Option<&ProcessStatus>| p.map_or(ProcessHealth::Unknown, |p| p.health);
        if self.mtls_mode != "Disabled" {
            let mtls = match health(sidecar) {
                ProcessHealth::Ready => condition(
                    "MTLSReady",
                    "True",
                    "SVIDIssued",
                    format!("the sidecar holds an SVID for {}", self.spiffe_id),
                ),
                ProcessHealth::NotReady => condition(
                    "MTLSReady",
                    "False",
                    "NoSVID",
                    "the sidecar has no SVID yet; see its log (`warden logs`)".into(),
                ),
                other => condition(
                    "MTLSReady",
                    "Unknown",
                    "SidecarNotAnswering",
                    format!("the sidecar is {other:?}; `warden logs {}`", self.key()),
                ),
            };
            self.set_condition(mtls);
        }
        let processes_ok =
            health(sidecar) == ProcessHealth::Ready && health(app) == ProcessHealth::Ready;
        // The first thing in the way, named so the user knows what to fix.
        let ready = if !processes_ok {
            let message = format!(
                "sidecar {:?}, app {:?}; see `warden status` processes",
                health(sidecar),
                health(app)
            );
            condition("Ready", "False", "ProcessesNotReady", message)
        } else if self.condition("Accepted") != "True" {
            let message = "the manifest is not accepted (see the Accepted condition); its \
                           processes run but its refused references are denied"
                .to_owned();
            condition("Ready", "False", "NotAccepted", message)
        } else if self.condition("CardDiscovered") != "True" {
            let message = "the agent card has not been fetched yet (see CardDiscovered)".to_owned();
            condition("Ready", "False", "CardNotDiscovered", message)
        } else {
            condition("Ready", "True", "Ready", String::new())
        };
        self.set_condition(ready);
    }
}
