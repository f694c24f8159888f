//! `warden up` on SPIRE: MeshConfig `spec.identity: {provider: Spire, agentSocket,
//! serverSocket}`.
//!
//! Instead of the embedded CA's per-workload sockets, every workload takes its SVID from the
//! SPIRE agent's one Workload API socket, and the agent tells workloads apart the only way it
//! can on one machine: by the uid of the calling process (the `unix` attestor). So `up`
//! registers each workload with the SPIRE server (`spire-server entry create -parentID <the
//! agent> -spiffeID <workload> -selector unix:uid:<its uid>`, once: existing entries are looked
//! up first) and starts it as that uid. The gateway keeps `up`'s own uid, which no agent has,
//! and `up` fetches cards with the same SVID (the gateway's, which sidecars admit for cards).
//! `warden verify` mints its test callers with `spire-server x509 mint` ([`SpireServer::mint`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warden_identity::bundle::{TrustBundle, TrustBundleSet};
use warden_identity::ca::CertificateAuthority;
use warden_identity::source::X509Identity;
use warden_identity::{SpiffeId, TrustDomain};
use warden_model::resources::IdentityProvider;

/// Where a local mesh's SVIDs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identities {
    /// The embedded CA, one Workload API socket per workload (the default).
    EmbeddedCa,
    /// A SPIRE server and agent.
    Spire(SpireSockets),
}

/// The sockets of `provider: Spire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpireSockets {
    /// `spec.identity.agentSocket`: the agent's Workload API.
    pub agent_socket: PathBuf,
    /// `spec.identity.serverSocket`: the server's admin API, where entries are made.
    pub server_socket: PathBuf,
}

impl SpireSockets {
    /// The agent's Workload API as a SPIFFE endpoint (`unix:///…`).
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.agent_socket.display())
    }
}

/// Reads the MeshConfig's `spec.identity` from `manifests`. `WorkloadApi` and `Files` are
/// for clusters; locally they run on the embedded CA, as they always have. Errors name the
/// file and field.
pub fn identities(manifests: &Path) -> Result<Identities, Vec<String>> {
    let loaded = warden_model::load_path(manifests)
        .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let Some(config) = loaded.mesh_configs.first() else {
        return Ok(Identities::EmbeddedCa);
    };
    let Some(spec) = config.resource.spec.identity.as_ref() else {
        return Ok(Identities::EmbeddedCa);
    };
    if spec.provider != IdentityProvider::Spire {
        return Ok(Identities::EmbeddedCa);
    }
    let socket = |value: &Option<String>, field: &str| {
        let err = |why: &str| {
            warden_model::ModelError::at(&config.origin, format!("spec.identity.{field}"), why)
                .to_string()
        };
        let text = value
            .as_deref()
            .ok_or_else(|| err("required with provider Spire (a path or unix:///path)"))?;
        let path = PathBuf::from(text.strip_prefix("unix://").unwrap_or(text));
        match path.is_absolute() {
            true => Ok(path),
            false => Err(err(&format!("{text:?} is not an absolute path"))),
        }
    };
    let agent = socket(&spec.agent_socket, "agentSocket");
    let server = socket(&spec.server_socket, "serverSocket");
    match (agent, server) {
        (Ok(agent_socket), Ok(server_socket)) => Ok(Identities::Spire(SpireSockets {
            agent_socket,
            server_socket,
        })),
        (agent, server) => Err([agent.err(), server.err()].into_iter().flatten().collect()),
    }
}

/// Why a SPIRE command failed.
#[derive(Debug, thiserror::Error)]
#[error("spire-server {command}: {message}")]
pub struct SpireError {
    command: String,
    message: String,
}

/// The `spire-server` CLI against one server's admin socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpireServer {
    /// The `spire-server` program.
    pub binary: PathBuf,
    /// The server's admin socket.
    pub socket: PathBuf,
}

#[derive(Deserialize)]
struct IdJson {
    trust_domain: String,
    path: String,
}

impl IdJson {
    fn uri(&self) -> String {
        format!("spiffe://{}{}", self.trust_domain, self.path)
    }
}

#[derive(Deserialize)]
struct AgentJson {
    id: IdJson,
    #[serde(default)]
    banned: bool,
}

#[derive(Deserialize)]
struct AgentList {
    #[serde(default)]
    agents: Vec<AgentJson>,
}

#[derive(Deserialize)]
struct EntryList {
    #[serde(default)]
    entries: Vec<serde_json::Value>,
}

impl SpireServer {
    async fn run(&self, args: &[&str]) -> Result<String, SpireError> {
        let command = args.iter().take(2).copied().collect::<Vec<_>>().join(" ");
        let fail = |message: String| SpireError {
            command: command.clone(),
            message,
        };
        let out = tokio::process::Command::new(&self.binary)
            .args(args)
            .arg("-socketPath")
            .arg(&self.socket)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), out)
            .await
            .map_err(|_| fail("no answer within 30 s".into()))?
            .map_err(|e| fail(format!("cannot run {}: {e}", self.binary.display())))?;
        if !out.status.success() {
            return Err(fail(format!(
                "{} (server socket {})",
                String::from_utf8_lossy(&out.stderr).trim(),
                self.socket.display()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The SPIFFE ID of the one SPIRE agent attested to the server: the parent of every
    /// workload entry (a local mesh runs on one node).
    pub async fn agent_id(&self) -> Result<String, SpireError> {
        let text = self.run(&["agent", "list", "-output", "json"]).await?;
        let list: AgentList = serde_json::from_str(&text).map_err(|e| SpireError {
            command: "agent list".into(),
            message: format!("unexpected output ({e}): {text}"),
        })?;
        let agents: Vec<String> = list
            .agents
            .iter()
            .filter(|a| !a.banned)
            .map(|a| a.id.uri())
            .collect();
        match agents.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(SpireError {
                command: "agent list".into(),
                message: "no SPIRE agent has attested to this server yet; start spire-agent on \
                          this machine first"
                    .into(),
            }),
            many => Err(SpireError {
                command: "agent list".into(),
                message: format!(
                    "{} agents are attested ({}); `warden up` registers its workloads under the \
                     one agent of this machine",
                    many.len(),
                    many.join(", ")
                ),
            }),
        }
    }

    /// Registers `id` for processes of `uid` under `parent`, unless that entry exists.
    pub async fn register(&self, parent: &str, id: &SpiffeId, uid: u32) -> Result<(), SpireError> {
        let selector = format!("unix:uid:{uid}");
        let entry = [
            "-parentID",
            parent,
            "-spiffeID",
            id.as_str(),
            "-selector",
            &selector,
        ];
        let show = [
            "entry",
            "show",
            "-output",
            "json",
            "-matchSelectorsOn",
            "exact",
        ];
        let shown = self.run(&[&show[..], &entry[..]].concat()).await?;
        let existing: EntryList = serde_json::from_str(&shown).unwrap_or(EntryList {
            entries: Vec::new(),
        });
        if !existing.entries.is_empty() {
            tracing::info!(%id, uid, "SPIRE entry exists");
            return Ok(());
        }
        self.warn_of_other_holders(parent, id, uid).await;
        let created = self
            .run(&[&["entry", "create"][..], &entry[..]].concat())
            .await;
        match created {
            Ok(_) => tracing::info!(%id, uid, "SPIRE entry created"),
            // Made meanwhile (or not listed): the entry is there, which is what is wanted.
            Err(e) if e.message.to_ascii_lowercase().contains("already exists") => {
                tracing::info!(%id, uid, "SPIRE entry exists");
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Entries that give `id` to processes other than `uid`'s (e.g. an agent's earlier user)
    /// still do after `up` registers the new one; `up` does not delete what it may not have
    /// made, but says so loudly.
    async fn warn_of_other_holders(&self, parent: &str, id: &SpiffeId, uid: u32) {
        let show = ["entry", "show", "-output", "json", "-parentID", parent];
        let Ok(text) = self
            .run(&[&show[..], &["-spiffeID", id.as_str()][..]].concat())
            .await
        else {
            return;
        };
        let others: Vec<String> = serde_json::from_str::<EntryList>(&text)
            .map(|list| list.entries.iter().map(selectors).collect())
            .unwrap_or_default();
        if !others.is_empty() {
            tracing::warn!(%id, uid, holders = ?others, "other SPIRE entries also give this ID out; delete them with `spire-server entry delete` if they are stale");
            eprintln!(
                "warning: SPIRE entries for {id} with selectors {} remain besides unix:uid:{uid}; \
                 delete stale ones with `spire-server entry delete -entryID …`",
                others.join(", ")
            );
        }
    }

    /// The trust bundle in SPIFFE format, for the gateway's JWT-SVID checks.
    pub async fn bundle_spiffe(&self) -> Result<String, SpireError> {
        self.run(&["bundle", "show", "-format", "spiffe"]).await
    }

    /// An X.509-SVID for `id` minted by the server (`spire-server x509 mint`), with the
    /// bundle of `trust_domain`: `verify`'s callers.
    pub async fn mint(
        &self,
        id: &SpiffeId,
        trust_domain: &TrustDomain,
    ) -> Result<X509Identity, String> {
        let dir = std::env::temp_dir().join(format!(
            "warden-mint-{}-{}",
            std::process::id(),
            MINTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        crate::users::private_dir(&dir, crate::users::OsUser::current())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let minted = self.mint_into(id, trust_domain, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        minted
    }

    async fn mint_into(
        &self,
        id: &SpiffeId,
        trust_domain: &TrustDomain,
        dir: &Path,
    ) -> Result<X509Identity, String> {
        let write = dir.display().to_string();
        self.run(&[
            "x509",
            "mint",
            "-spiffeID",
            id.as_str(),
            "-ttl",
            "10m",
            "-write",
            &write,
        ])
        .await
        .map_err(|e| e.to_string())?;
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| format!("x509 mint wrote no {name}: {e}"))
        };
        let chain = warden_identity::pem::certificates(&read("svid.pem")?)?;
        let key = warden_identity::pem::private_key(&read("key.pem")?)?;
        let bundle = TrustBundle::from_pem(trust_domain.clone(), &read("bundle.pem")?, "x509 mint")
            .map_err(|e| e.to_string())?;
        X509Identity::new(chain, key, Arc::new(TrustBundleSet::single(bundle)))
            .map_err(|e| e.to_string())
    }
}

/// A mesh `up` runs on SPIRE: the server it registers with, and the agent every entry is
/// parented to.
pub(crate) struct SpireRun {
    server: SpireServer,
    sockets: SpireSockets,
    parent: String,
    /// The trust bundle in SPIFFE format when `up` started (the gateway's `--jwt-bundle`).
    pub(crate) bundle: String,
}

impl SpireRun {
    /// Finds the agent, registers the gateway (`up`'s own uid) and reads the bundle.
    pub(crate) async fn prepare(
        binary: PathBuf,
        sockets: SpireSockets,
        gateway: &SpiffeId,
    ) -> Result<Self, SpireError> {
        let server = SpireServer {
            binary,
            socket: sockets.server_socket.clone(),
        };
        let parent = server.agent_id().await?;
        server
            .register(&parent, gateway, crate::users::OsUser::current().uid)
            .await?;
        let bundle = server.bundle_spiffe().await?;
        Ok(Self {
            server,
            sockets,
            parent,
            bundle,
        })
    }

    /// Registers an agent's workload: `id` for processes of `uid`.
    pub(crate) async fn register(&self, id: &SpiffeId, uid: u32) -> Result<(), SpireError> {
        self.server.register(&self.parent, id, uid).await
    }

    /// The Workload API endpoint every workload is given.
    pub(crate) fn endpoint(&self) -> String {
        self.sockets.endpoint()
    }

    /// What `status.json` records.
    pub(crate) fn status(&self) -> SpireStatus {
        SpireStatus {
            sockets: self.sockets.clone(),
            spire_server: self.server.binary.clone(),
            parent_id: self.parent.clone(),
        }
    }

    /// `up`'s own SVID from the agent (the gateway's: `up` runs as its uid), for fetching
    /// cards. A new entry reaches the agent at its next sync (seconds): retried for a while.
    pub(crate) async fn controller_source(
        &self,
    ) -> Result<warden_identity::source::WorkloadApiSource, String> {
        let endpoint = self.endpoint();
        let started = std::time::Instant::now();
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_secs(10),
                warden_identity::source::WorkloadApiSource::connect(Some(&endpoint)),
            )
            .await;
            match attempt {
                Ok(Ok(source)) => return Ok(source),
                Ok(Err(e)) if started.elapsed() > AGENT_SYNC_LIMIT => {
                    return Err(format!("no SVID from the SPIRE agent at {endpoint}: {e}"));
                }
                Err(_) if started.elapsed() > AGENT_SYNC_LIMIT => {
                    return Err(format!("no SVID from the SPIRE agent at {endpoint}"));
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// How long `up` waits for the SPIRE agent to serve the entries it just made.
const AGENT_SYNC_LIMIT: Duration = Duration::from_secs(60);

/// An entry's selectors as `type:value` (from `entry show -output json`).
fn selectors(entry: &serde_json::Value) -> String {
    let list = entry["selectors"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let texts: Vec<String> = list
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["type"].as_str().unwrap_or("?"),
                s["value"].as_str().unwrap_or("?")
            )
        })
        .collect();
    texts.join("+")
}

static MINTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What `status.json` records of a mesh on SPIRE, so that `status` shows it and `verify` can
/// mint its callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpireStatus {
    /// The sockets.
    #[serde(flatten)]
    pub sockets: SpireSockets,
    /// The `spire-server` program `up` registered entries with.
    pub spire_server: PathBuf,
    /// The SPIRE agent every entry is parented to.
    pub parent_id: String,
}

/// Where `verify` gets the SVIDs of the callers it plays.
pub enum Issuer {
    /// The mesh's embedded CA.
    Ca(Box<CertificateAuthority>),
    /// The SPIRE server.
    Spire(SpireServer, TrustDomain),
}

impl Issuer {
    /// The issuer of the mesh `status` describes.
    pub fn of(status: &crate::status::MeshStatus) -> Result<Self, String> {
        match &status.spire {
            Some(spire) => {
                let td = TrustDomain::new(&status.ca.trust_domain).map_err(|e| e.to_string())?;
                let server = SpireServer {
                    binary: spire.spire_server.clone(),
                    socket: spire.sockets.server_socket.clone(),
                };
                Ok(Self::Spire(server, td))
            }
            None => CertificateAuthority::load(Path::new(&status.ca.dir))
                .map(|ca| Self::Ca(Box::new(ca)))
                .map_err(|e| e.to_string()),
        }
    }

    /// A fresh SVID for `id`.
    pub async fn identity(&self, id: &SpiffeId) -> Result<X509Identity, String> {
        match self {
            Self::Ca(ca) => {
                let svid = ca
                    .issue_x509(id, Duration::from_secs(600))
                    .map_err(|e| e.to_string())?;
                X509Identity::new(
                    svid.chain.clone(),
                    svid.private_key(),
                    Arc::new(ca.bundle_set()),
                )
                .map_err(|e| e.to_string())
            }
            Self::Spire(server, td) => server.mint(id, td).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifests(identity: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: warden.dev/v1alpha1\nkind: MeshConfig\nmetadata:\n  name: mesh\n\
                 spec:\n  trustDomain: warden.local\n{identity}"
            ),
        )
        .unwrap();
        (dir, path)
    }

    #[test]
    fn selectors_read_as_spire_prints_them() {
        let entry = serde_json::json!({"selectors": [
            {"type": "unix", "value": "uid:1001"}, {"type": "unix", "value": "gid:7"}]});
        assert_eq!(selectors(&entry), "unix:uid:1001+unix:gid:7");
        assert_eq!(selectors(&serde_json::json!({})), "");
    }

    #[test]
    fn spire_needs_both_absolute_sockets_and_errors_name_the_field() {
        let (_d, path) = manifests(
            "  identity:\n    provider: spire\n    agentSocket: unix:///run/spire/agent.sock\n",
        );
        let errors = identities(&path).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("spec.identity.serverSocket") && errors[0].contains("mesh.yaml"),
            "{errors:?}"
        );
        let (_d, path) = manifests(
            "  identity:\n    provider: Spire\n    agentSocket: run/agent.sock\n    serverSocket: /run/server.sock\n",
        );
        let errors = identities(&path).unwrap_err();
        assert!(
            errors[0].contains("spec.identity.agentSocket") && errors[0].contains("absolute"),
            "{errors:?}"
        );
        let (_d, path) = manifests(
            "  identity:\n    provider: Spire\n    agentSocket: unix:///run/agent.sock\n    serverSocket: /run/server.sock\n",
        );
        assert_eq!(
            identities(&path).unwrap(),
            Identities::Spire(SpireSockets {
                agent_socket: "/run/agent.sock".into(),
                server_socket: "/run/server.sock".into(),
            })
        );
        let (_d, path) = manifests("");
        assert_eq!(identities(&path).unwrap(), Identities::EmbeddedCa);
    }
}
