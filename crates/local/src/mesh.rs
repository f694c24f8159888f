//! The running mesh as `warden up` holds it: which agents run where, their supervised
//! processes, the gateway, the cards fetched. It starts and stops agents as the manifests
//! change and turns what it knows into a [`MeshStatus`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::Empty;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warden_identity::SpiffeId;
use warden_identity::ca::{CertificateAuthority, write_atomic};
use warden_identity::workload_api::{WorkloadApiServer, WorkloadBinding};
use warden_model::snapshot::CompiledAgent;
use warden_model::{MeshSnapshot, MtlsMode};
use warden_proxy::forward::{Upstreams, Via};

use crate::spire::SpireRun;
use crate::status::{
    AgentStatus, CaStatus, CardInfo, Condition, GatewayStatus, MeshStatus, ProcessHealth,
    ProcessStatus, Role,
};
use crate::supervisor::{ChildSpec, ChildState, Health, supervise};
use crate::up::{UpConfig, UpError, compile, setup, write_snapshot};
use crate::users::{OsUser, private_dir};

/// The embedded CA's SPIFFE bundle in the state directory, which the gateway verifies
/// JWT-SVIDs with.
const JWT_BUNDLE: &str = "jwt-bundle.json";

/// Ports, paths and user of one agent.
#[derive(Debug, Clone)]
struct Placement {
    inbound: SocketAddr,
    egress: SocketAddr,
    app: SocketAddr,
    admin: SocketAddr,
    /// Its private directory (0700, its user's): Workload API socket, snapshot copy.
    dir: PathBuf,
    /// The user its app and sidecar run as.
    user: OsUser,
}

impl Placement {
    fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// A user other than `up`'s cannot read `up`'s 0600 snapshot: it gets its own copy.
    fn own_snapshot(&self) -> Option<PathBuf> {
        (self.user != OsUser::current()).then(|| self.dir.join("snapshot.json"))
    }

    /// The user to start its processes as, when not `up`'s own.
    fn run_as(&self) -> Option<OsUser> {
        (self.user != OsUser::current()).then_some(self.user)
    }
}

/// The ports apps will bind (`spec.local.port`).
fn app_ports(snapshot: &MeshSnapshot) -> Vec<u16> {
    let ports = snapshot.agents().iter();
    ports
        .filter_map(|a| a.local.as_ref().and_then(|l| l.port))
        .collect()
}

/// A free loopback port that is not in `taken` (the `spec.local.port`s apps will bind, and
/// ports handed out but not yet bound: the kernel may offer those again), added to `taken`.
fn free_port_avoiding(taken: &mut Vec<u16>) -> Result<SocketAddr, UpError> {
    for _ in 0..64 {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(setup("allocating a port"))?;
        let addr = listener.local_addr().map_err(setup("allocating a port"))?;
        if !taken.contains(&addr.port()) {
            taken.push(addr.port());
            return Ok(addr);
        }
    }
    Err(UpError::Setup(
        "allocating a port: the kernel kept offering taken ones".into(),
    ))
}

/// Supervised children that stop together (an agent's sidecar, app and Workload API socket;
/// or the gateway).
struct Group {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Group {
    fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    fn supervise(&mut self, warden: &Path, spec: ChildSpec, health: Health) {
        let stop = self.stop.subscribe();
        self.tasks.push(tokio::spawn(supervise(
            warden.to_owned(),
            spec,
            health,
            stop,
        )));
    }

    /// Stops every child (SIGTERM, then SIGKILL after 5 s) and waits for them.
    async fn halt(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

struct AgentRun {
    place: Placement,
    group: Group,
    sidecar: (Health, PathBuf),
    app: (Health, PathBuf),
}

/// The mesh `warden up` runs.
pub(crate) struct Mesh {
    pub(crate) config: UpConfig,
    api: Arc<WorkloadApiServer>,
    snapshot: Mutex<Arc<MeshSnapshot>>,
    version: AtomicU64,
    agents: tokio::sync::Mutex<BTreeMap<String, AgentRun>>,
    gateway: tokio::sync::Mutex<Option<Group>>,
    gateway_admin: SocketAddr,
    gateway_health: Health,
    gateway_id: SpiffeId,
    ca: CaStatus,
    cards: Mutex<BTreeMap<String, Result<CardInfo, String>>>,
    manifests_error: Mutex<Option<String>>,
    /// Set when SVIDs come from SPIRE instead of the embedded CA's sockets.
    spire: Option<SpireRun>,
}

impl Mesh {
    pub(crate) fn new(
        config: UpConfig,
        ca: Arc<CertificateAuthority>,
        snapshot: MeshSnapshot,
        spire: Option<SpireRun>,
    ) -> Result<Self, UpError> {
        let root_expiry = warden_identity::svid::inspect_x509_svid(
            std::slice::from_ref(ca.root()),
            None,
            rustls_pki_types::UnixTime::now(),
        )
        .not_after;
        let jwt_bundle = config.state_dir.join(JWT_BUNDLE);
        let bundle = match &spire {
            Some(run) => run.bundle.clone().into_bytes(),
            None => ca.bundle().to_spiffe_json(),
        };
        write_atomic(&jwt_bundle, &bundle, 0o600)
            .map_err(|e| UpError::Setup(format!("writing {}: {e}", jwt_bundle.display())))?;
        let gateway_admin = free_port_avoiding(&mut app_ports(&snapshot))?;
        Ok(Self {
            ca: CaStatus {
                trust_domain: snapshot.trust_domain().to_string(),
                dir: config.ca_dir().display().to_string(),
                root_expiry_unix: root_expiry,
            },
            api: Arc::new(WorkloadApiServer::new(
                ca,
                std::time::Duration::from_secs(3600),
            )),
            gateway_id: snapshot.control_plane().gateway.clone(),
            version: AtomicU64::new(snapshot.version()),
            snapshot: Mutex::new(Arc::new(snapshot)),
            agents: tokio::sync::Mutex::new(BTreeMap::new()),
            gateway: tokio::sync::Mutex::new(None),
            gateway_admin,
            gateway_health: Health::default(),
            cards: Mutex::new(BTreeMap::new()),
            manifests_error: Mutex::new(None),
            spire,
            config,
        })
    }

    pub(crate) fn gateway_url(&self) -> String {
        format!("http://{}", self.config.gateway_listen)
    }

    fn current(&self) -> Arc<MeshSnapshot> {
        self.snapshot
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn state(&self, parts: &[&str]) -> PathBuf {
        parts
            .iter()
            .fold(self.config.state_dir.clone(), |p, part| p.join(part))
    }

    /// The log format `up` was given, as the global flag every `warden` child gets (always
    /// explicit, so a `WARDEN_LOG_FORMAT` inherited from the shell cannot contradict it).
    fn log_flags(&self) -> Vec<String> {
        vec!["--log-format".into(), self.log_format().into()]
    }

    fn log_format(&self) -> &'static str {
        match self.config.json_logs {
            true => "json",
            false => "human",
        }
    }

    fn unix(path: &Path) -> String {
        format!("unix://{}", path.display())
    }

    /// Serves `id` its SVID (with `dns_names` beside the SPIFFE ID) on `socket` until `stop`
    /// (embedded CA; on SPIRE the agent's socket serves every workload).
    fn serve_identity(
        &self,
        (id, dns_names): (SpiffeId, Vec<String>),
        socket: PathBuf,
        mut stop: watch::Receiver<bool>,
    ) {
        if self.spire.is_some() {
            return;
        }
        let api = self.api.clone();
        tokio::spawn(async move {
            let binding = WorkloadBinding {
                id,
                socket,
                dns_names,
            };
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = api.serve(vec![binding], shutdown).await {
                tracing::error!(error = %e, "cannot serve the Workload API");
            }
        });
    }

    /// The Workload API a workload whose own socket is `socket` is given.
    fn workload_api(&self, socket: &Path) -> String {
        match &self.spire {
            Some(run) => run.endpoint(),
            None => Self::unix(socket),
        }
    }

    /// Writes `snapshot` where `place`'s sidecar reads it, when it has its own copy.
    fn write_own_snapshot(place: &Placement, snapshot: &MeshSnapshot) -> Result<(), UpError> {
        let Some(path) = place.own_snapshot() else {
            return Ok(());
        };
        let json =
            serde_json::to_vec_pretty(snapshot).map_err(setup("serialising the snapshot"))?;
        crate::users::write_owned(&path, &json, place.user)
            .map_err(|e| UpError::Setup(format!("writing {}: {e}", path.display())))
    }

    /// Starts the gateway, then every agent.
    pub(crate) async fn start(&self) -> Result<(), UpError> {
        let snapshot = self.current();
        for agent in snapshot.agents() {
            self.start_agent(agent).await?;
        }
        self.restart_gateway().await;
        Ok(())
    }

    /// Every port the mesh has given out or an app will bind (`spec.local.port`).
    async fn ports_in_use(&self) -> Vec<u16> {
        let mut ports = app_ports(&self.current());
        ports.push(self.gateway_admin.port());
        for run in self.agents.lock().await.values() {
            let p = &run.place;
            ports.extend([p.inbound, p.egress, p.admin, p.app].map(|a| a.port()));
        }
        ports
    }

    async fn start_agent(&self, agent: &CompiledAgent) -> Result<(), UpError> {
        let key = agent.key();
        let mut taken = self.ports_in_use().await;
        let app = match agent.local.as_ref().and_then(|l| l.port) {
            Some(port) => SocketAddr::from(([127, 0, 0, 1], port)),
            None => free_port_avoiding(&mut taken)?,
        };
        let dir = format!("{}.{}", agent.namespace, agent.name);
        let place = Placement {
            inbound: free_port_avoiding(&mut taken)?,
            egress: free_port_avoiding(&mut taken)?,
            admin: free_port_avoiding(&mut taken)?,
            app,
            dir: self.state(&["sockets", &dir]),
            user: crate::users::run_as(agent).map_err(UpError::Setup)?,
        };
        private_dir(&place.dir, place.user)
            .map_err(|e| UpError::Setup(format!("{}: {e}", place.dir.display())))?;
        Self::write_own_snapshot(&place, &self.current())?;
        if let Some(spire) = &self.spire {
            spire
                .register(&agent.spiffe_id, place.user.uid)
                .await
                .map_err(setup("registering with SPIRE"))?;
        }
        let mut group = Group::new();
        self.serve_identity(
            (agent.spiffe_id.clone(), Vec::new()),
            place.socket(),
            group.stop.subscribe(),
        );
        let sidecar = self.sidecar_spec(agent, &place);
        let app = self.app_spec(agent, &place);
        let (sidecar_health, app_health) = (Health::default(), Health::default());
        let (sidecar_log, app_log) = (sidecar.log.clone(), app.log.clone());
        group.supervise(&self.config.warden, app, app_health.clone());
        group.supervise(&self.config.warden, sidecar, sidecar_health.clone());
        tracing::info!(agent = %key, "agent started");
        let run = AgentRun {
            place,
            group,
            sidecar: (sidecar_health, sidecar_log),
            app: (app_health, app_log),
        };
        self.agents.lock().await.insert(key, run);
        Ok(())
    }

    fn sidecar_spec(&self, agent: &CompiledAgent, place: &Placement) -> ChildSpec {
        let snapshot = place
            .own_snapshot()
            .unwrap_or_else(|| self.state(&["snapshot.json"]));
        let args = [
            "sidecar",
            "--inbound",
            &place.inbound.to_string(),
            "--app",
            &place.app.to_string(),
            "--egress",
            &place.egress.to_string(),
            "--admin",
            &place.admin.to_string(),
            "--gateway-url",
            &self.gateway_url(),
            "--gateway-id",
            self.gateway_id.as_str(),
            // Absolute-form (HTTP proxy) egress to the gateway originates mTLS too.
            "--mesh-peer",
            &format!("{}={}", self.config.gateway_listen, self.gateway_id),
            "--workload-api",
            &self.workload_api(&place.socket()),
            "--trust-domain",
            &self.ca.trust_domain,
            "--snapshot",
            &snapshot.display().to_string(),
            "--agent",
            &agent.key(),
        ];
        let mut all = self.log_flags();
        all.extend(args.iter().map(|a| a.to_string()));
        // The egress serves the agent's user only (and `up`'s, which can become it anyway).
        let mut uids = vec![place.user.uid, OsUser::current().uid];
        uids.dedup();
        for uid in uids {
            all.extend(["--egress-allow-uid".into(), uid.to_string()]);
        }
        // The app runs as the agent's user: its port is used only while that user holds it.
        all.extend(["--app-uid".into(), place.user.uid.to_string()]);
        ChildSpec {
            name: format!("{} sidecar", agent.key()),
            program: self.config.warden.clone(),
            args: all,
            env: BTreeMap::new(),
            log: self.state(&[
                "logs",
                &format!("{}.{}.sidecar.log", agent.namespace, agent.name),
            ]),
            run_as: place.run_as(),
        }
    }

    fn app_spec(&self, agent: &CompiledAgent, place: &Placement) -> ChildSpec {
        let (program, args, mut env) = match &agent.local {
            Some(local) => (
                PathBuf::from(&local.command),
                local.args.clone(),
                local.env.clone(),
            ),
            None => {
                let mut args = self.log_flags();
                args.extend(["agent", "echo", "--listen"].map(String::from));
                args.extend([
                    place.app.to_string(),
                    "--name".into(),
                    agent.card_name().to_owned(),
                    // Its sidecar (and `up`'s probe) run as its user; nobody else gets in.
                    "--allow-uid".into(),
                    place.user.uid.to_string(),
                ]);
                if let Some(tool) = agent.tools.iter().find(|t| t.accepted) {
                    args.extend([
                        "--delegate-to".into(),
                        format!(
                            "http://{}/api/a2a/{}/{}/",
                            place.egress, tool.namespace, tool.name
                        ),
                    ]);
                }
                (self.config.warden.clone(), args, BTreeMap::new())
            }
        };
        env.insert("PORT".into(), place.app.port().to_string());
        // A command of the user's cannot be given a flag it may not know; a `warden` one
        // (or anything that honours it) reads the log format here.
        env.insert("WARDEN_LOG_FORMAT".into(), self.log_format().into());
        env.insert("WARDEN_EGRESS".into(), format!("http://{}", place.egress));
        ChildSpec {
            name: format!("{} app", agent.key()),
            program,
            args,
            env,
            log: self.state(&[
                "logs",
                &format!("{}.{}.app.log", agent.namespace, agent.name),
            ]),
            run_as: place.run_as(),
        }
    }

    async fn gateway_spec(&self) -> ChildSpec {
        let mut args = self.log_flags();
        args.extend([
            "gateway".into(),
            "--listen".into(),
            self.config.gateway_listen.to_string(),
            "--admin".into(),
            self.gateway_admin.to_string(),
            "--snapshot".into(),
            self.state(&["snapshot.json"]).display().to_string(),
            "--workload-api".into(),
            self.workload_api(&self.gateway_socket()),
            "--trust-domain".into(),
            self.ca.trust_domain.clone(),
            "--audit-log".into(),
            self.state(&["audit.log"]).display().to_string(),
            // JWT-SVIDs from the embedded CA (`warden ca jwt`) are callers like X.509 ones.
            "--jwt-bundle".into(),
            self.state(&[JWT_BUNDLE]).display().to_string(),
        ]);
        if let Some(url) = &self.config.public_url {
            args.extend(["--public-url".into(), url.clone()]);
        }
        for (key, run) in self.agents.lock().await.iter() {
            args.extend(["--endpoint".into(), format!("{key}={}", run.place.inbound)]);
        }
        ChildSpec {
            name: "gateway".into(),
            program: self.config.warden.clone(),
            args,
            env: BTreeMap::new(),
            log: self.state(&["logs", "gateway.log"]),
            run_as: None,
        }
    }

    fn gateway_socket(&self) -> PathBuf {
        self.state(&["sockets", "warden-gateway", "agent.sock"])
    }

    /// (Re)starts the gateway with the current agents as endpoints.
    async fn restart_gateway(&self) {
        let mut slot = self.gateway.lock().await;
        if let Some(old) = slot.take() {
            old.halt().await;
        }
        // The gateway's SVID asserts any caller at every sidecar: its socket sits in a
        // directory only `up`'s user can open, never one a workload of another user can.
        if let Some(dir) = self.gateway_socket().parent()
            && let Err(e) = private_dir(dir, OsUser::current())
        {
            tracing::error!(dir = %dir.display(), error = %e, "cannot make the gateway's socket directory private");
        }
        let names = self.current().gateway_host_names();
        if let Some(spire) = &self.spire
            && let Err(e) = spire.register_gateway(&self.gateway_id, &names).await
        {
            tracing::error!(error = %e, "cannot bring the gateway's SPIRE entry to the namespaces' host names; it keeps the ones it had");
            eprintln!("error: the gateway's SPIRE entry keeps its old DNS names: {e}");
        }
        let mut group = Group::new();
        self.serve_identity(
            (self.gateway_id.clone(), names),
            self.gateway_socket(),
            group.stop.subscribe(),
        );
        let spec = self.gateway_spec().await;
        group.supervise(&self.config.warden, spec, self.gateway_health.clone());
        *slot = Some(group);
    }

    /// Re-compiles the manifests; on success writes the snapshot (the proxies pick it up),
    /// starts added agents, stops removed ones and restarts the gateway with the new set.
    pub(crate) async fn apply_manifests(&self) {
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        let next = match compile(&self.config.manifests, version) {
            Ok(next) => next,
            Err(e) => {
                eprintln!("manifests not applied, keeping the last good snapshot: {e}");
                if let Ok(mut error) = self.manifests_error.lock() {
                    *error = Some(e.to_string());
                }
                return;
            }
        };
        if let Ok(mut error) = self.manifests_error.lock() {
            *error = None;
        }
        if let Err(e) = write_snapshot(&self.state(&["snapshot.json"]), &next) {
            tracing::error!(error = %e, "cannot write the snapshot");
            return;
        }
        for run in self.agents.lock().await.values() {
            if let Err(e) = Self::write_own_snapshot(&run.place, &next) {
                tracing::error!(error = %e, "cannot write an agent's snapshot");
            }
        }
        tracing::info!(version, "manifests changed; new snapshot written");
        let next = Arc::new(next);
        if let Ok(mut s) = self.snapshot.lock() {
            *s = next.clone();
        }
        let wanted: BTreeMap<String, &CompiledAgent> =
            next.agents().iter().map(|a| (a.key(), a)).collect();
        let removed: Vec<AgentRun> = {
            let mut agents = self.agents.lock().await;
            let gone: Vec<String> = agents
                .keys()
                .filter(|k| !wanted.contains_key(*k))
                .cloned()
                .collect();
            gone.iter().filter_map(|k| agents.remove(k)).collect()
        };
        let running: Vec<String> = self.agents.lock().await.keys().cloned().collect();
        let added: Vec<&CompiledAgent> = wanted
            .iter()
            .filter(|(k, _)| !running.contains(k))
            .map(|(_, a)| *a)
            .collect();
        if removed.is_empty() && added.is_empty() {
            return;
        }
        for agent in added {
            if let Err(e) = self.start_agent(agent).await {
                tracing::error!(agent = %agent.key(), error = %e, "cannot start the agent");
            }
        }
        self.restart_gateway().await;
        for run in removed {
            run.group.halt().await;
        }
        if let Ok(mut cards) = self.cards.lock() {
            cards.retain(|k, _| wanted.contains_key(k));
        }
    }

    /// Stops everything: the gateway first, then the agents.
    pub(crate) async fn stop_all(&self) {
        if let Some(gateway) = self.gateway.lock().await.take() {
            gateway.halt().await;
        }
        let agents = std::mem::take(&mut *self.agents.lock().await);
        futures::future::join_all(agents.into_values().map(|run| run.group.halt())).await;
    }

    /// Fetches the card of every agent whose sidecar is Ready in `status`, over mTLS as the
    /// controller (plain HTTP for Disabled agents); the others' cards are marked not fetched.
    pub(crate) async fn fetch_cards(&self, upstreams: &Upstreams, status: &MeshStatus) {
        let snapshot = self.current();
        let inbound: BTreeMap<String, SocketAddr> = self
            .agents
            .lock()
            .await
            .iter()
            .map(|(k, run)| (k.clone(), run.place.inbound))
            .collect();
        let fetches = snapshot.agents().iter().filter_map(|agent| {
            let addr = *inbound.get(&agent.key())?;
            let ready = status.processes.iter().any(|p| {
                p.role == Role::Sidecar
                    && p.agent.as_deref() == Some(agent.key().as_str())
                    && p.health == ProcessHealth::Ready
            });
            Some(async move {
                let outcome = match ready {
                    true => fetch_card(agent, addr, upstreams).await,
                    false => Err("its sidecar is not Ready".to_owned()),
                };
                (agent.key(), outcome)
            })
        });
        // Concurrently and bounded: an app that hangs must not stall the status of the rest.
        let outcomes = futures::future::join_all(fetches).await;
        if let Ok(mut cards) = self.cards.lock() {
            cards.extend(outcomes);
        }
    }

    /// What the supervisor knows, not yet checked with the processes.
    async fn layout(&self) -> MeshStatus {
        let snapshot = self.current();
        let cards = self.cards.lock().map(|c| c.clone()).unwrap_or_default();
        let runs = self.agents.lock().await;
        let mut processes = vec![process(
            "gateway".into(),
            Role::Gateway,
            None,
            self.gateway_admin,
            &self.gateway_health,
            &self.state(&["logs", "gateway.log"]),
        )];
        let mut agents = Vec::new();
        for agent in snapshot.agents() {
            let key = agent.key();
            let Some(run) = runs.get(&key) else {
                continue;
            };
            let sidecar = process(
                format!("{key} sidecar"),
                Role::Sidecar,
                Some(key.clone()),
                run.place.admin,
                &run.sidecar.0,
                &run.sidecar.1,
            );
            let app = process(
                format!("{key} app"),
                Role::App,
                Some(key.clone()),
                run.place.app,
                &run.app.0,
                &run.app.1,
            );
            agents.push(self.agent_layout(
                agent,
                run,
                cards.get(&key),
                sidecar.restarts + app.restarts,
            ));
            processes.extend([sidecar, app]);
        }
        MeshStatus {
            running: true,
            pid: std::process::id(),
            agents,
            processes,
            gateway: GatewayStatus {
                url: self.gateway_url(),
                public_url: self.config.public_url.clone(),
                admin_address: self.gateway_admin.to_string(),
                spiffe_id: self.gateway_id.to_string(),
                audit_log: self.state(&["audit.log"]).display().to_string(),
                restarts: snapshot_restarts(&self.gateway_health),
            },
            ca: self.ca.clone(),
            manifests: self.config.manifests.display().to_string(),
            manifests_error: self.manifests_error.lock().ok().and_then(|e| e.clone()),
            snapshot_version: snapshot.version(),
            ready: false,
            spire: self.spire.as_ref().map(SpireRun::status),
        }
    }

    fn agent_layout(
        &self,
        agent: &CompiledAgent,
        run: &AgentRun,
        card: Option<&Result<CardInfo, String>>,
        restarts: u32,
    ) -> AgentStatus {
        let cond = |kind: &str, status: &str, reason: &str, message: String| Condition {
            kind: kind.into(),
            status: status.into(),
            reason: reason.into(),
            message,
        };
        let accepted = match agent.accepted.status {
            true => "True",
            false => "False",
        };
        let mtls = match agent.mtls_mode {
            MtlsMode::Disabled => cond(
                "MTLSReady",
                "False",
                "MTLSDisabled",
                "spec.mtls.mode is Disabled; set Permissive or Strict to get mTLS".into(),
            ),
            _ => cond("MTLSReady", "Unknown", "Pending", "not asked yet".into()),
        };
        let discovered = match card {
            Some(Ok(_)) => cond("CardDiscovered", "True", "Fetched", String::new()),
            Some(Err(e)) => cond("CardDiscovered", "False", "FetchFailed", e.clone()),
            None => cond(
                "CardDiscovered",
                "Unknown",
                "Pending",
                "the card has not been fetched yet".into(),
            ),
        };
        AgentStatus {
            namespace: agent.namespace.clone(),
            name: agent.name.clone(),
            spiffe_id: agent.spiffe_id.to_string(),
            mtls_mode: format!("{:?}", agent.mtls_mode),
            conditions: vec![
                cond(
                    "Accepted",
                    accepted,
                    &agent.accepted.reason,
                    agent.accepted.message.clone(),
                ),
                mtls,
                discovered,
            ],
            card: card.and_then(|c| c.as_ref().ok().cloned()),
            gateway_url: format!(
                "{}/api/a2a/{}/{}/",
                self.gateway_url(),
                agent.namespace,
                agent.name
            ),
            host_url: format!(
                "http://{}:{}/",
                self.current()
                    .control_plane()
                    .agent_host(&agent.namespace, &agent.name),
                self.config.gateway_listen.port()
            ),
            sidecar_address: run.place.inbound.to_string(),
            egress_address: run.place.egress.to_string(),
            sidecar_admin_address: run.place.admin.to_string(),
            app_address: run.place.app.to_string(),
            restarts,
            uid: Some(run.place.user.uid),
        }
    }

    /// Asks every process, writes `<state>/status.json` (0600) and returns the status.
    pub(crate) async fn write_status(&self) -> MeshStatus {
        let mut status = self.layout().await;
        status.refresh().await;
        if let Ok(json) = serde_json::to_vec_pretty(&status) {
            let _ = write_atomic(&self.state(&["status.json"]), &json, 0o600);
        }
        status
    }
}

fn snapshot_restarts(health: &Health) -> u32 {
    health.lock().map_or(0, |s| s.restarts)
}

fn process(
    name: String,
    role: Role,
    agent: Option<String>,
    probe: SocketAddr,
    health: &Health,
    log: &Path,
) -> ProcessStatus {
    let state: ChildState = health.lock().map(|s| s.clone()).unwrap_or_default();
    ProcessStatus {
        name,
        role,
        agent,
        probe: probe.to_string(),
        pid: state.pid,
        health: ProcessHealth::Unknown,
        snapshot_version: None,
        detail: None,
        restarts: state.restarts,
        last_error: state.last_error,
        log: log.display().to_string(),
        waiting_restart: state.waiting_restart,
    }
}

/// How long the controller waits for a card.
const CARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The name the card must carry when `warden up` runs the built-in app (no `local` command,
/// no static card): the agent's card name (kagent's `my_helper` for a kagent `my-helper`).
fn builtin_card_name(agent: &CompiledAgent) -> Option<&str> {
    (agent.local.is_none() && agent.card.is_none()).then(|| agent.card_name())
}

/// The card of `agent`, fetched over mTLS from its sidecar (plain HTTP when Disabled) —
/// or, when the agent has a static card (`spec.card`), that card, once its sidecar answered
/// over mTLS.
async fn fetch_card(
    agent: &CompiledAgent,
    inbound: SocketAddr,
    upstreams: &Upstreams,
) -> Result<CardInfo, String> {
    let (scheme, via, transport) = if agent.mtls_mode == MtlsMode::Disabled {
        ("http", Via::Plain, "http")
    } else {
        ("https", Via::Mesh(&agent.spiffe_id), "mtls")
    };
    let request = http::Request::get(format!("{scheme}://{inbound}/.well-known/agent-card.json"))
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let exchange = crate::probe::mesh_request(upstreams, request, via);
    let answer = tokio::time::timeout(CARD_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            format!(
                "GET /.well-known/agent-card.json over {transport}: no answer within {CARD_TIMEOUT:?}"
            )
        })?;
    let (status, body) = (answer.status, &answer.body);
    let fetched = |body: &[u8]| CardInfo {
        transport_security: transport.into(),
        // Via::Mesh only completes a handshake with a server proving this ID.
        attested_spiffe_id: (transport == "mtls").then(|| agent.spiffe_id.to_string()),
        card_hash: hex::encode(Sha256::digest(body)),
    };
    let failed = || {
        format!(
            "GET /.well-known/agent-card.json over {transport}: {status} {}",
            String::from_utf8_lossy(body)
        )
    };
    // A static card is the card the gateway serves (it never asks the app), and the only one
    // an app that speaks no HTTP/1.1 has: a gRPC-only app (a2a-sdk's gRPC server) answers no
    // GET and has no RPC for its public card. The sidecar's own answer over mTLS, whatever it
    // says of the app, proves who it is; the app's port is probed on its own.
    if let Some(card) = &agent.card {
        return match answer.from_peer {
            true => Ok(fetched(card.to_string().as_bytes())),
            false => Err(failed()),
        };
    }
    let card = serde_json::from_slice::<serde_json::Value>(body).ok();
    if let (Some(card), Some(expected)) = (&card, builtin_card_name(agent))
        && (200..300).contains(&status)
        && card.get("name").and_then(|n| n.as_str()) != Some(expected)
    {
        return Err(format!(
            "GET /.well-known/agent-card.json over {transport}: the card names {}, expected {expected:?}",
            card.get("name").unwrap_or(&serde_json::Value::Null)
        ));
    }
    if (200..300).contains(&status) && card.is_some() {
        Ok(fetched(body))
    } else {
        Err(failed())
    }
}
