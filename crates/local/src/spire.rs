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

use std::collections::BTreeSet;
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

/// What `entry create|update -output json` prints: one result per entry written.
#[derive(Deserialize)]
struct BatchResults {
    #[serde(default)]
    results: Vec<BatchResult>,
}

#[derive(Deserialize)]
struct BatchResult {
    #[serde(default)]
    entry: serde_json::Value,
    status: BatchStatus,
}

/// A result's gRPC status: code 0 when the entry was written.
#[derive(Debug, Deserialize)]
struct BatchStatus {
    #[serde(default)]
    code: i32,
    #[serde(default)]
    message: String,
}

/// gRPC's InvalidArgument: SPIRE refused a field (e.g. a DNS name).
const INVALID_ARGUMENT: i32 = 3;
/// gRPC's AlreadyExists: a similar entry exists.
const ALREADY_EXISTS: i32 = 6;

/// The entry `up` wants for one workload: `-parentID`, `-spiffeID`, `-selector`.
struct EntrySpec<'a> {
    parent: &'a str,
    id: &'a SpiffeId,
    selector: String,
}

impl EntrySpec<'_> {
    fn args(&self) -> [&str; 6] {
        [
            "-parentID",
            self.parent,
            "-spiffeID",
            self.id.as_str(),
            "-selector",
            &self.selector,
        ]
    }

    /// SPIRE refused to create (or update) this entry.
    fn refused(&self, entry_id: Option<&str>, status: BatchStatus) -> SpireError {
        let verb = if entry_id.is_some() {
            "update"
        } else {
            "create"
        };
        SpireError {
            command: format!("entry {verb}"),
            message: format!(
                "{} ({}): {} (code {})",
                self.id, self.selector, status.message, status.code
            ),
        }
    }
}

/// A DNS name the SPIRE server would not put in a workload's entry. The entry, and so the SVID,
/// goes without it, as the embedded CA's SVID goes without a name it cannot carry: a workload
/// with one name too few serves most clients; one with no SVID serves none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SPIRE refused the DNS name {name:?} for {id}; its SVID goes without it: {message}")]
pub struct RefusedDnsName {
    /// The workload's SPIFFE ID.
    pub id: String,
    /// The name SPIRE refused.
    pub name: String,
    /// SPIRE's reason.
    pub message: String,
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

    /// Registers `id` for processes of `uid` under `parent`, its SVIDs carrying exactly
    /// `dns_names` (the gateway's host names; none for an agent). An entry with the same parent,
    /// ID and selector is reused as it is when its DNS names are these, updated when they are
    /// not (the namespaces changed since), created when missing. Names SPIRE refuses are left
    /// out and returned with SPIRE's message: the workload still gets an SVID, with the rest.
    pub async fn register(
        &self,
        parent: &str,
        id: &SpiffeId,
        uid: u32,
        dns_names: &[String],
    ) -> Result<Vec<RefusedDnsName>, SpireError> {
        let spec = EntrySpec {
            parent,
            id,
            selector: format!("unix:uid:{uid}"),
        };
        // Twice at most: an entry made by someone else between `show` and `create` is found
        // (and brought to these names) on the second round.
        for _ in 0..2 {
            let found = self.find(&spec).await?;
            if let Some(existing) = &found
                && same_dns_names(existing, dns_names)
            {
                tracing::info!(%id, uid, "SPIRE entry exists");
                return Ok(Vec::new());
            }
            if found.is_none() {
                self.warn_of_other_holders(parent, id, uid).await;
            }
            let entry_id = found.as_ref().and_then(entry_id);
            match self.write(&spec, entry_id.as_deref(), dns_names).await? {
                Ok(_) => {
                    let done = if entry_id.is_some() {
                        "updated"
                    } else {
                        "created"
                    };
                    tracing::info!(%id, uid, dns = ?dns_names, "SPIRE entry {done}");
                    return Ok(Vec::new());
                }
                Err(status) if status.code == ALREADY_EXISTS => continue,
                Err(status) if status.code == INVALID_ARGUMENT && !dns_names.is_empty() => {
                    return self
                        .write_names_one_by_one(&spec, entry_id, dns_names)
                        .await;
                }
                Err(status) => return Err(spec.refused(entry_id.as_deref(), status)),
            }
        }
        Err(SpireError {
            command: "entry create".into(),
            message: format!("an entry for {id} (unix:uid:{uid}) keeps appearing and going"),
        })
    }

    /// The entry with exactly `spec`'s parent, ID and selector, if there is one.
    async fn find(&self, spec: &EntrySpec<'_>) -> Result<Option<serde_json::Value>, SpireError> {
        let show = [
            "entry",
            "show",
            "-output",
            "json",
            "-matchSelectorsOn",
            "exact",
        ];
        let shown = self.run(&[&show[..], &spec.args()[..]].concat()).await?;
        let list: EntryList = serde_json::from_str(&shown).map_err(|e| SpireError {
            command: "entry show".into(),
            message: format!("unexpected output ({e}): {shown}"),
        })?;
        Ok(list.entries.into_iter().next())
    }

    /// Creates the entry (no `entry_id`) or updates entry `entry_id` to `spec` with exactly
    /// `dns_names`: the entry's ID, or SPIRE's refusal (`-output json` reports a refused entry
    /// in its result, with exit code 0).
    async fn write(
        &self,
        spec: &EntrySpec<'_>,
        entry_id: Option<&str>,
        dns_names: &[String],
    ) -> Result<Result<String, BatchStatus>, SpireError> {
        let mut args = match entry_id {
            Some(entry) => vec!["entry", "update", "-entryID", entry],
            None => vec!["entry", "create"],
        };
        args.extend(spec.args());
        for name in dns_names {
            args.extend(["-dns", name.as_str()]);
        }
        args.extend(["-output", "json"]);
        let text = self.run(&args).await?;
        let unexpected = |why: String| SpireError {
            command: args[..2].join(" "),
            message: format!("unexpected output ({why}): {text}"),
        };
        let batch: BatchResults =
            serde_json::from_str(&text).map_err(|e| unexpected(e.to_string()))?;
        let result = batch
            .results
            .into_iter()
            .next()
            .ok_or_else(|| unexpected("no result".into()))?;
        match result.status.code {
            0 => Ok(Ok(result.entry["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned())),
            _ => Ok(Err(result.status)),
        }
    }

    /// SPIRE refused the entry with all of `dns_names`, naming no name (`wildcard must be first
    /// label`): the entry is written with none (so the workload has an SVID whatever comes),
    /// then with each name SPIRE accepts added; each refused name comes back with its message.
    async fn write_names_one_by_one(
        &self,
        spec: &EntrySpec<'_>,
        entry_id: Option<String>,
        dns_names: &[String],
    ) -> Result<Vec<RefusedDnsName>, SpireError> {
        let entry_id = self
            .write(spec, entry_id.as_deref(), &[])
            .await?
            .map_err(|status| spec.refused(entry_id.as_deref(), status))?;
        let (mut accepted, mut refused) = (Vec::new(), Vec::new());
        for name in dns_names {
            let mut names = accepted.clone();
            names.push(name.clone());
            match self.write(spec, Some(&entry_id), &names).await? {
                Ok(_) => accepted = names,
                Err(status) if status.code == INVALID_ARGUMENT => refused.push(RefusedDnsName {
                    id: spec.id.to_string(),
                    name: name.clone(),
                    message: status.message,
                }),
                Err(status) => return Err(spec.refused(Some(&entry_id), status)),
            }
        }
        tracing::info!(id = %spec.id, dns = ?accepted, "SPIRE entry written without the DNS names SPIRE refused");
        Ok(refused)
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
    /// The DNS names this run last brought the gateway's entry to: a gateway restart with the
    /// same names (the first start, a manifest change that adds no namespace) asks SPIRE
    /// nothing.
    gateway_names: std::sync::Mutex<Option<Vec<String>>>,
}

impl SpireRun {
    /// Finds the agent, reads the bundle and registers the gateway (`up`'s own uid) with
    /// `dns_names`, its host names.
    pub(crate) async fn prepare(
        binary: PathBuf,
        sockets: SpireSockets,
        gateway: &SpiffeId,
        dns_names: &[String],
    ) -> Result<Self, SpireError> {
        let server = SpireServer {
            binary,
            socket: sockets.server_socket.clone(),
        };
        let parent = server.agent_id().await?;
        let bundle = server.bundle_spiffe().await?;
        let run = Self {
            server,
            sockets,
            parent,
            bundle,
            gateway_names: std::sync::Mutex::new(None),
        };
        run.register_gateway(gateway, dns_names).await?;
        Ok(run)
    }

    /// Registers the gateway (`up`'s own uid) with `dns_names`, or brings its entry to them;
    /// a name SPIRE refuses is reported (log and stderr) and left out. Names this run already
    /// registered are not asked for again.
    pub(crate) async fn register_gateway(
        &self,
        gateway: &SpiffeId,
        dns_names: &[String],
    ) -> Result<(), SpireError> {
        let unchanged = |names: &Option<Vec<String>>| names.as_deref() == Some(dns_names);
        if self.gateway_names.lock().is_ok_and(|n| unchanged(&n)) {
            tracing::debug!(id = %gateway, "the gateway's SPIRE entry already has these names");
            return Ok(());
        }
        let uid = crate::users::OsUser::current().uid;
        let refused = self
            .server
            .register(&self.parent, gateway, uid, dns_names)
            .await?;
        for name in refused {
            tracing::error!(id = %name.id, name = %name.name, reason = %name.message, "SPIRE refused a DNS name of the gateway");
            eprintln!("error: {name}");
        }
        if let Ok(mut names) = self.gateway_names.lock() {
            *names = Some(dns_names.to_vec());
        }
        Ok(())
    }

    /// Registers an agent's workload: `id` for processes of `uid`, with no DNS names.
    pub(crate) async fn register(&self, id: &SpiffeId, uid: u32) -> Result<(), SpireError> {
        self.server
            .register(&self.parent, id, uid, &[])
            .await
            .map(drop)
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

/// Whether an existing entry (from `entry show -output json`) carries exactly `wanted` as
/// DNS names, order and repeats aside: when not, `up` updates it, so that the gateway's SVID
/// follows the namespaces with agents and an agent's carries none.
fn same_dns_names(entry: &serde_json::Value, wanted: &[String]) -> bool {
    let have: BTreeSet<&str> = entry["dns_names"]
        .as_array()
        .map(|names| names.iter().filter_map(|n| n.as_str()).collect())
        .unwrap_or_default();
    have == wanted.iter().map(String::as_str).collect()
}

/// An entry's ID (from `entry show -output json`).
fn entry_id(entry: &serde_json::Value) -> Option<String> {
    entry["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

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
    fn an_entry_is_kept_only_when_its_dns_names_are_the_wanted_ones() {
        // As `entry show -output json` prints an entry (trimmed).
        let entry = |names: serde_json::Value| {
            serde_json::json!({"id": "6740157c", "dns_names": names,
                "selectors": [{"type": "unix", "value": "uid:0"}]})
        };
        let wanted = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let both = entry(serde_json::json!([
            "*.b.a2a.localhost",
            "*.a.a2a.localhost"
        ]));
        let a_b = wanted(&["*.a.a2a.localhost", "*.b.a2a.localhost"]);
        assert!(same_dns_names(&both, &a_b), "order does not matter");
        let repeated = wanted(&[
            "*.a.a2a.localhost",
            "*.b.a2a.localhost",
            "*.a.a2a.localhost",
        ]);
        assert!(same_dns_names(&both, &repeated), "repeats do not matter");
        // A namespace added or gone: update.
        let three = wanted(&[
            "*.a.a2a.localhost",
            "*.b.a2a.localhost",
            "*.c.a2a.localhost",
        ]);
        assert!(!same_dns_names(&both, &three));
        assert!(!same_dns_names(&both, &wanted(&["*.a.a2a.localhost"])));
        // An agent wants none: an entry with names is updated, one without (or with the
        // field absent, as older servers print it) is kept.
        assert!(!same_dns_names(&both, &[]));
        assert!(same_dns_names(&entry(serde_json::json!([])), &[]));
        assert!(same_dns_names(&serde_json::json!({"id": "x"}), &[]));
        assert!(!same_dns_names(&serde_json::json!({"id": "x"}), &a_b));
        assert_eq!(entry_id(&both).as_deref(), Some("6740157c"));
        assert_eq!(entry_id(&serde_json::json!({"id": ""})), None);
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
