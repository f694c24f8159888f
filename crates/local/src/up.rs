//! `warden up`: the supervisor of a local mesh.
//!
//! It compiles the manifests into `<state>/snapshot.json` (which the gateway and sidecars
//! watch), serves the Workload API in-process with one socket per workload, starts the
//! gateway and a sidecar plus an app per agent as child processes (logs in `<state>/logs`,
//! restarted with backoff when they crash), fetches every card over mTLS as
//! `warden-controller` to fill the status, and re-compiles when the manifests change.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Empty};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use warden_identity::ca::{CertificateAuthority, write_atomic};
use warden_identity::source::CaSource;
use warden_identity::workload_api::{WorkloadApiServer, WorkloadBinding};
use warden_identity::{SpiffeId, TrustDomain};
use warden_model::resources::SYSTEM_NAMESPACE;
use warden_model::{MeshSnapshot, MtlsMode};
use warden_proxy::config::Limits;
use warden_proxy::forward::{Upstreams, Via};

use crate::status::{AgentStatus, CaStatus, CardInfo, Condition, GatewayStatus, MeshStatus};

/// How `warden up` runs.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// A manifest file or directory.
    pub manifests: PathBuf,
    /// Where state, sockets, logs, the snapshot and the audit log go.
    pub state_dir: PathBuf,
    /// The CA directory (default `<state>/ca`; created when absent).
    pub ca_dir: Option<PathBuf>,
    /// The gateway's listener.
    pub gateway_listen: SocketAddr,
    /// The `warden` binary to start children with.
    pub warden: PathBuf,
    /// Run `verify` once everything is ready.
    pub verify: bool,
}

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The manifests are invalid.
    #[error("the manifests are not valid:\n{0}")]
    Manifests(String),
    /// Something on disk.
    #[error("{0}")]
    Setup(String),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> UpError + '_ {
    move |e| UpError::Setup(format!("{what}: {e}"))
}

/// Ports and paths of one agent.
#[derive(Debug, Clone)]
struct Placement {
    inbound: SocketAddr,
    egress: SocketAddr,
    app: SocketAddr,
    socket: PathBuf,
}

fn free_port() -> Result<SocketAddr, UpError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(setup("allocating a port"))?;
    listener.local_addr().map_err(setup("allocating a port"))
}

/// Compiles the manifests.
pub fn compile(manifests: &Path, version: u64) -> Result<MeshSnapshot, UpError> {
    let loaded = warden_model::load_path(manifests).map_err(|errors| {
        UpError::Manifests(
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    warden_model::compile(&loaded, version).map_err(|errors| {
        UpError::Manifests(
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })
}

fn write_snapshot(path: &Path, snapshot: &MeshSnapshot) -> Result<(), UpError> {
    let json = serde_json::to_vec_pretty(snapshot).map_err(setup("serialising the snapshot"))?;
    write_atomic(path, &json, 0o600).map_err(setup("writing the snapshot"))
}

/// Loads the CA in `dir`, or creates one for `trust_domain`.
pub fn ensure_ca(dir: &Path, trust_domain: &TrustDomain) -> Result<CertificateAuthority, UpError> {
    let ca = if dir.join(warden_identity::ca::CA_CERT_FILE).exists() {
        CertificateAuthority::load(dir).map_err(setup("loading the CA"))?
    } else {
        CertificateAuthority::init(dir, trust_domain).map_err(setup("creating the CA"))?
    };
    if ca.trust_domain() != trust_domain {
        return Err(UpError::Setup(format!(
            "the CA in {} is for trust domain {}, the manifests say {trust_domain}",
            dir.display(),
            ca.trust_domain()
        )));
    }
    Ok(ca)
}

/// One supervised child process.
struct Child {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    log: PathBuf,
    restarts: Arc<AtomicU32>,
}

/// Runs `child` until `stop`; restarts it with backoff when it exits.
async fn supervise(child: Child, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&child.log);
        let (out, err) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
            Ok((a, b)) => (Stdio::from(a), Stdio::from(b)),
            Err(_) => (Stdio::null(), Stdio::null()),
        };
        let spawned = tokio::process::Command::new(&child.program)
            .args(&child.args)
            .envs(&child.env)
            .env_remove("MTLS_MODE")
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn();
        let mut process = match spawned {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(child = %child.name, error = %e, "cannot start");
                return;
            }
        };
        let pid = process.id();
        tokio::select! {
            status = process.wait() => {
                tracing::warn!(child = %child.name, ?status, "exited; restarting in {backoff:?}");
                child.restarts.fetch_add(1, Ordering::Relaxed);
            }
            _ = warden_proxy::server::stopped(&mut stop) => {
                if let Some(pid) = pid {
                    let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
                }
                if tokio::time::timeout(Duration::from_secs(5), process.wait()).await.is_err() {
                    let _ = process.kill().await;
                }
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = warden_proxy::server::stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn manifest_fingerprint(path: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    } else {
        vec![path.to_owned()]
    };
    let mut prints: Vec<_> = files
        .into_iter()
        .filter_map(|f| {
            let meta = std::fs::metadata(&f).ok()?;
            Some((f, meta.len(), meta.modified().ok()))
        })
        .collect();
    prints.sort();
    prints
}

struct Mesh {
    config: UpConfig,
    snapshot: Mutex<Arc<MeshSnapshot>>,
    placements: BTreeMap<String, Placement>,
    restarts: BTreeMap<String, Arc<AtomicU32>>,
    gateway_restarts: Arc<AtomicU32>,
    gateway_id: SpiffeId,
    ca: CaStatus,
    cards: Mutex<BTreeMap<String, Result<CardInfo, String>>>,
}

impl Mesh {
    fn gateway_url(&self) -> String {
        format!("http://{}", self.config.gateway_listen)
    }

    fn status(&self) -> MeshStatus {
        let snapshot = self
            .snapshot
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let cards = self.cards.lock().map(|c| c.clone()).unwrap_or_default();
        let mut agents = Vec::new();
        for agent in snapshot.agents() {
            let key = agent.key();
            let Some(place) = self.placements.get(&key) else {
                continue;
            };
            let condition = |kind: &str, ok: bool, reason: &str, message: String| Condition {
                kind: kind.into(),
                status: if ok { "True" } else { "False" }.into(),
                reason: reason.into(),
                message,
            };
            let accepted = condition(
                "Accepted",
                agent.accepted.status,
                &agent.accepted.reason,
                agent.accepted.message.clone(),
            );
            let mtls = if agent.mtls_mode == MtlsMode::Disabled {
                condition(
                    "MTLSReady",
                    false,
                    "MTLSDisabled",
                    "spec.mtls.mode is Disabled; set Permissive or Strict to get mTLS".into(),
                )
            } else {
                condition(
                    "MTLSReady",
                    true,
                    "SVIDIssued",
                    format!("the sidecar holds an SVID for {}", agent.spiffe_id),
                )
            };
            let card = cards.get(&key);
            let discovered = match card {
                Some(Ok(_)) => condition("CardDiscovered", true, "Fetched", String::new()),
                Some(Err(e)) => condition("CardDiscovered", false, "FetchFailed", e.clone()),
                None => Condition {
                    kind: "CardDiscovered".into(),
                    status: "Unknown".into(),
                    reason: "Pending".into(),
                    message: "the card has not been fetched yet".into(),
                },
            };
            // MTLSReady never blocks Ready.
            let ready_ok = accepted.status == "True" && discovered.status == "True";
            let ready = condition(
                "Ready",
                ready_ok,
                if ready_ok { "Ready" } else { "NotReady" },
                String::new(),
            );
            agents.push(AgentStatus {
                namespace: agent.namespace.clone(),
                name: agent.name.clone(),
                spiffe_id: agent.spiffe_id.to_string(),
                mtls_mode: format!("{:?}", agent.mtls_mode),
                conditions: vec![accepted, mtls, discovered, ready],
                card: card.and_then(|c| c.as_ref().ok().cloned()),
                gateway_url: format!(
                    "{}/api/a2a/{}/{}/",
                    self.gateway_url(),
                    agent.namespace,
                    agent.name
                ),
                sidecar_address: place.inbound.to_string(),
                egress_address: place.egress.to_string(),
                app_address: place.app.to_string(),
                restarts: self
                    .restarts
                    .get(&key)
                    .map_or(0, |r| r.load(Ordering::Relaxed)),
            });
        }
        let ready = agents.iter().all(|a| {
            a.conditions
                .iter()
                .any(|c| c.kind == "CardDiscovered" && c.status == "True")
        });
        MeshStatus {
            agents,
            gateway: GatewayStatus {
                url: self.gateway_url(),
                spiffe_id: self.gateway_id.to_string(),
                audit_log: self
                    .config
                    .state_dir
                    .join("audit.log")
                    .display()
                    .to_string(),
                restarts: self.gateway_restarts.load(Ordering::Relaxed),
            },
            ca: self.ca.clone(),
            snapshot_version: snapshot.version(),
            ready,
        }
    }

    fn write_status(&self) -> MeshStatus {
        let status = self.status();
        if let Ok(json) = serde_json::to_vec_pretty(&status) {
            let _ = write_atomic(&self.config.state_dir.join("status.json"), &json, 0o644);
        }
        status
    }
}

/// Fetches every card once, over mTLS as the controller (plain HTTP for Disabled agents).
async fn fetch_cards(mesh: &Mesh, upstreams: &Upstreams) {
    let snapshot = mesh
        .snapshot
        .lock()
        .map(|s| s.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    for agent in snapshot.agents() {
        let key = agent.key();
        let Some(place) = mesh.placements.get(&key) else {
            continue;
        };
        let (scheme, via, transport) = if agent.mtls_mode == MtlsMode::Disabled {
            ("http", Via::Plain, "http")
        } else {
            ("https", Via::Mesh(&agent.spiffe_id), "mtls")
        };
        let request = match http::Request::get(format!(
            "{scheme}://{}/.well-known/agent-card.json",
            place.inbound
        ))
        .body(Empty::<bytes::Bytes>::new())
        {
            Ok(r) => r,
            Err(_) => continue,
        };
        let response = upstreams.send(request, via).await;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let outcome =
            if status.is_success() && serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
                Ok(CardInfo {
                    transport_security: transport.into(),
                    // Via::Mesh only completes a handshake with a server proving this ID.
                    attested_spiffe_id: (transport == "mtls").then(|| agent.spiffe_id.to_string()),
                    card_hash: hex::encode(Sha256::digest(&body)),
                })
            } else {
                Err(format!(
                    "GET /.well-known/agent-card.json over {transport}: {status} {}",
                    String::from_utf8_lossy(&body)
                ))
            };
        if let Ok(mut cards) = mesh.cards.lock() {
            cards.insert(key, outcome);
        }
    }
}

/// Runs the local mesh until `shutdown`.
pub async fn up(
    config: UpConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), UpError> {
    let state = config.state_dir.clone();
    for dir in ["logs", "sockets"] {
        std::fs::create_dir_all(state.join(dir)).map_err(setup("creating the state directory"))?;
    }
    let snapshot = compile(&config.manifests, 1)?;
    let td = snapshot.trust_domain().clone();
    let ca_dir = config.ca_dir.clone().unwrap_or_else(|| state.join("ca"));
    let ca = Arc::new(ensure_ca(&ca_dir, &td)?);
    let snapshot_path = state.join("snapshot.json");
    write_snapshot(&snapshot_path, &snapshot)?;

    let mut placements = BTreeMap::new();
    let mut bindings = Vec::new();
    for agent in snapshot.agents() {
        let socket = state
            .join("sockets")
            .join(format!("{}.{}", agent.namespace, agent.name))
            .join("agent.sock");
        bindings.push(WorkloadBinding {
            id: agent.spiffe_id.clone(),
            socket: socket.clone(),
        });
        let app = match agent.local.as_ref().and_then(|l| l.port) {
            Some(port) => SocketAddr::from(([127, 0, 0, 1], port)),
            None => free_port()?,
        };
        placements.insert(
            agent.key(),
            Placement {
                inbound: free_port()?,
                egress: free_port()?,
                app,
                socket,
            },
        );
    }
    let gateway_id = snapshot.control_plane().gateway.clone();
    let gateway_socket = state
        .join("sockets")
        .join("warden-gateway")
        .join("agent.sock");
    bindings.push(WorkloadBinding {
        id: gateway_id.clone(),
        socket: gateway_socket.clone(),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let api = WorkloadApiServer::new(ca.clone(), Duration::from_secs(3600));
    let api_task = tokio::spawn({
        let mut stop = stop_rx.clone();
        async move {
            api.serve(bindings, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        }
    });

    let root_expiry = warden_identity::svid::inspect_x509_svid(
        std::slice::from_ref(ca.root()),
        None,
        rustls_now(),
    )
    .not_after;
    let mesh = Arc::new(Mesh {
        restarts: placements
            .keys()
            .map(|k| (k.clone(), Arc::new(AtomicU32::new(0))))
            .collect(),
        placements,
        snapshot: Mutex::new(Arc::new(snapshot)),
        gateway_restarts: Arc::new(AtomicU32::new(0)),
        gateway_id: gateway_id.clone(),
        ca: CaStatus {
            trust_domain: td.to_string(),
            dir: ca_dir.display().to_string(),
            root_expiry_unix: root_expiry,
        },
        cards: Mutex::new(BTreeMap::new()),
        config: config.clone(),
    });

    // Children: gateway, then a sidecar and an app per agent.
    let unix = |p: &Path| format!("unix://{}", p.display());
    let snap = snapshot_path.display().to_string();
    let mut gateway_args = vec![
        "gateway".to_owned(),
        "--listen".into(),
        config.gateway_listen.to_string(),
        "--snapshot".into(),
        snap.clone(),
        "--workload-api".into(),
        unix(&gateway_socket),
        "--trust-domain".into(),
        td.to_string(),
        "--audit-log".into(),
        state.join("audit.log").display().to_string(),
        "--public-url".into(),
        mesh.gateway_url(),
    ];
    let mut children = Vec::new();
    let current = mesh
        .snapshot
        .lock()
        .map(|s| s.clone())
        .map_err(|_| UpError::Setup("snapshot lock".into()))?;
    for agent in current.agents() {
        let key = agent.key();
        let Some(place) = mesh.placements.get(&key) else {
            continue;
        };
        gateway_args.extend(["--endpoint".into(), format!("{key}={}", place.inbound)]);
        let restarts = mesh.restarts.get(&key).cloned().unwrap_or_default();
        children.push(Child {
            name: format!("{key} sidecar"),
            program: config.warden.clone(),
            args: vec![
                "sidecar".into(),
                "--inbound".into(),
                place.inbound.to_string(),
                "--app".into(),
                place.app.to_string(),
                "--egress".into(),
                place.egress.to_string(),
                "--gateway-url".into(),
                mesh.gateway_url(),
                "--gateway-id".into(),
                gateway_id.to_string(),
                "--workload-api".into(),
                unix(&place.socket),
                "--trust-domain".into(),
                td.to_string(),
                "--snapshot".into(),
                snap.clone(),
                "--agent".into(),
                key.clone(),
            ],
            env: BTreeMap::new(),
            log: state
                .join("logs")
                .join(format!("{}.{}.sidecar.log", agent.namespace, agent.name)),
            restarts: restarts.clone(),
        });
        let (program, args, mut env) = match &agent.local {
            Some(local) => (
                PathBuf::from(&local.command),
                local.args.clone(),
                local.env.clone(),
            ),
            None => {
                let mut args = vec![
                    "agent".into(),
                    "echo".into(),
                    "--listen".into(),
                    place.app.to_string(),
                    "--name".into(),
                    agent.name.clone(),
                ];
                if let Some(tool) = agent.tools.iter().find(|t| t.accepted) {
                    args.extend([
                        "--delegate-to".into(),
                        format!(
                            "http://{}/api/a2a/{}/{}/",
                            place.egress, tool.namespace, tool.name
                        ),
                    ]);
                }
                (config.warden.clone(), args, BTreeMap::new())
            }
        };
        env.insert("PORT".into(), place.app.port().to_string());
        env.insert("WARDEN_EGRESS".into(), format!("http://{}", place.egress));
        children.push(Child {
            name: format!("{key} app"),
            program,
            args,
            env,
            log: state
                .join("logs")
                .join(format!("{}.{}.app.log", agent.namespace, agent.name)),
            restarts,
        });
    }
    children.insert(
        0,
        Child {
            name: "gateway".into(),
            program: config.warden.clone(),
            args: gateway_args,
            env: BTreeMap::new(),
            log: state.join("logs").join("gateway.log"),
            restarts: mesh.gateway_restarts.clone(),
        },
    );
    let supervisors: Vec<_> = children
        .into_iter()
        .map(|c| tokio::spawn(supervise(c, stop_rx.clone())))
        .collect();

    // The controller: its own SVID from the CA, cards fetched over mTLS.
    let controller_id = SpiffeId::for_workload(&td, SYSTEM_NAMESPACE, "warden-controller")
        .map_err(setup("controller identity"))?;
    let controller = CaSource::start(ca.clone(), controller_id, Duration::from_secs(3600))
        .map_err(setup("controller identity"))?;
    let upstreams = Upstreams::new(Arc::new(controller), Limits::default());
    let controller_task = tokio::spawn({
        let mesh = mesh.clone();
        let mut stop = stop_rx.clone();
        async move {
            let mut announced = false;
            let mut prints = manifest_fingerprint(&mesh.config.manifests);
            let mut version = 1;
            loop {
                fetch_cards(&mesh, &upstreams).await;
                let status = mesh.write_status();
                if status.ready && !announced {
                    announced = true;
                    println!("{}", status.table());
                    if mesh.config.verify {
                        match crate::verify::verify(&mesh.config.state_dir).await {
                            Ok(checks) => println!("{}", crate::verify::render(&checks)),
                            Err(e) => println!("verify: {e}"),
                        }
                    }
                    println!(
                        "the mesh is up; gateway {} — Ctrl-C stops it",
                        mesh.gateway_url()
                    );
                }
                // Manifest edits apply within a second.
                for _ in 0..4 {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                        _ = warden_proxy::server::stopped(&mut stop) => return,
                    }
                    let now = manifest_fingerprint(&mesh.config.manifests);
                    if now != prints {
                        prints = now;
                        version += 1;
                        match compile(&mesh.config.manifests, version) {
                            Ok(next) => match write_snapshot(
                                &mesh.config.state_dir.join("snapshot.json"),
                                &next,
                            ) {
                                Ok(()) => {
                                    tracing::info!(
                                        version,
                                        "manifests changed; new snapshot written"
                                    );
                                    if let Ok(mut s) = mesh.snapshot.lock() {
                                        *s = Arc::new(next);
                                    }
                                    mesh.write_status();
                                }
                                Err(e) => tracing::error!(error = %e, "cannot write the snapshot"),
                            },
                            Err(e) => eprintln!(
                                "manifests not applied, keeping the last good snapshot: {e}"
                            ),
                        }
                    }
                }
            }
        }
    });

    shutdown.await;
    tracing::info!("stopping the mesh");
    let _ = stop_tx.send(true);
    for s in supervisors {
        let _ = s.await;
    }
    controller_task.abort();
    let _ = api_task.await;
    Ok(())
}

fn rustls_now() -> rustls_pki_types::UnixTime {
    rustls_pki_types::UnixTime::now()
}
