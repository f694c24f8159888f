//! `warden up`: the supervisor of a local mesh.
//!
//! Pre-flight first (state directory writable and not in use — its lock is held for the life
//! of `up` —, ports free, manifests valid). Then it compiles the manifests into
//! `<state>/snapshot.json` (which the gateway and sidecars watch), serves the Workload API
//! in-process with one socket per workload, starts the gateway and a sidecar plus an app per
//! agent as supervised children (see [`crate::supervisor`]), fetches every card over mTLS as
//! `warden-controller`, asks every process how it is each second (see [`crate::probe`]) and
//! writes what it learns to `<state>/status.json`. Manifest edits are re-compiled; agents
//! added or removed are started or stopped.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use warden_identity::ca::{CertificateAuthority, write_atomic};
use warden_identity::source::CaSource;
use warden_identity::{SpiffeId, SvidSource, TrustDomain};
use warden_model::MeshSnapshot;
use warden_model::resources::SYSTEM_NAMESPACE;
use warden_proxy::config::Limits;
use warden_proxy::forward::Upstreams;

use crate::mesh::Mesh;
use crate::preflight::{Problem, preflight};
use crate::spire::{Identities, SpireRun};

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
    /// `--public-url` for the gateway; `None`: cards keep the scheme and authority each
    /// client used (https over mTLS).
    pub public_url: Option<String>,
    /// The `warden` binary to start children with.
    pub warden: PathBuf,
    /// Run `verify` once everything is ready.
    pub verify: bool,
    /// `--log-format json` was given to `up`: every child logs one JSON object per line too
    /// (a log shipper reading `<state>/logs/` then needs no second parser).
    pub json_logs: bool,
    /// The `spire-server` program, for MeshConfig `spec.identity.provider: Spire`.
    pub spire_server: PathBuf,
}

impl UpConfig {
    /// The CA directory in use.
    pub fn ca_dir(&self) -> PathBuf {
        self.ca_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("ca"))
    }
}

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The manifests are invalid.
    #[error("the manifests are not valid:\n{0}")]
    Manifests(String),
    /// Pre-flight found problems; nothing was started.
    #[error("pre-flight checks failed; nothing was started:\n{}", .0.iter().map(Problem::to_string).collect::<Vec<_>>().join("\n"))]
    Preflight(Vec<Problem>),
    /// Something on disk.
    #[error("{0}")]
    Setup(String),
}

pub(crate) fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> UpError + '_ {
    move |e| UpError::Setup(format!("{what}: {e}"))
}

/// Compiles the manifests.
pub fn compile(manifests: &Path, version: u64) -> Result<MeshSnapshot, UpError> {
    let lines = |errors: &[_]| -> String {
        errors
            .iter()
            .map(|e: &warden_model::ModelError| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let loaded = warden_model::load_path(manifests).map_err(|e| UpError::Manifests(lines(&e)))?;
    warden_model::compile(&loaded, version).map_err(|e| UpError::Manifests(lines(&e)))
}

pub(crate) fn write_snapshot(path: &Path, snapshot: &MeshSnapshot) -> Result<(), UpError> {
    let json = serde_json::to_vec_pretty(snapshot).map_err(setup("serialising the snapshot"))?;
    write_atomic(path, &json, 0o600)
        .map_err(|e| UpError::Setup(format!("writing {}: {e}", path.display())))
}

/// Loads the CA in `dir`, or creates one for `trust_domain`.
pub fn ensure_ca(dir: &Path, trust_domain: &TrustDomain) -> Result<CertificateAuthority, UpError> {
    let ca = if dir.join(warden_identity::ca::CA_CERT_FILE).exists() {
        CertificateAuthority::load(dir)
            .map_err(|e| UpError::Setup(format!("loading the CA in {}: {e}", dir.display())))?
    } else {
        CertificateAuthority::init(dir, trust_domain)
            .map_err(|e| UpError::Setup(format!("creating the CA in {}: {e}", dir.display())))?
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

type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn manifest_fingerprint(path: &Path) -> Fingerprint {
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

/// Runs the local mesh until `shutdown`.
pub async fn up(
    config: UpConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), UpError> {
    let cleared = preflight(&config).map_err(UpError::Preflight)?;
    let _lock = cleared.lock;
    let snapshot = cleared.snapshot;
    let ca = Arc::new(ensure_ca(&config.ca_dir(), snapshot.trust_domain())?);
    write_snapshot(&config.state_dir.join("snapshot.json"), &snapshot)?;
    let spire = match cleared.identities {
        Identities::EmbeddedCa => None,
        Identities::Spire(sockets) => {
            let gateway = &snapshot.control_plane().gateway;
            let names = snapshot.gateway_host_names();
            let run = SpireRun::prepare(config.spire_server.clone(), sockets, gateway, &names)
                .await
                .map_err(setup("registering with SPIRE"))?;
            Some(run)
        }
    };
    let controller: Arc<dyn SvidSource> = match &spire {
        None => Arc::new(controller_source(&ca, snapshot.trust_domain())?),
        Some(run) => Arc::new(run.controller_source().await.map_err(UpError::Setup)?),
    };
    let upstreams = Upstreams::new(controller, Limits::default());

    let (stop_tx, stop_rx) = watch::channel(false);
    let mesh = Arc::new(Mesh::new(config, ca, snapshot, spire)?);
    mesh.start().await?;
    let controller_task = tokio::spawn(control(mesh.clone(), upstreams, stop_rx));

    shutdown.await;
    tracing::info!("stopping the mesh");
    let _ = stop_tx.send(true);
    controller_task.abort();
    mesh.stop_all().await;
    Ok(())
}

/// The controller's SVID from the embedded CA.
fn controller_source(
    ca: &Arc<CertificateAuthority>,
    trust_domain: &TrustDomain,
) -> Result<CaSource, UpError> {
    let id = SpiffeId::for_workload(trust_domain, SYSTEM_NAMESPACE, "warden-controller")
        .map_err(setup("controller identity"))?;
    CaSource::start(ca.clone(), id, Duration::from_secs(3600)).map_err(setup("controller identity"))
}

/// The controller loop: every second, fetch cards, ask every process, write the status; every
/// 250 ms, look for manifest edits.
async fn control(mesh: Arc<Mesh>, upstreams: Upstreams, mut stop: watch::Receiver<bool>) {
    let started = Instant::now();
    let mut announced = false;
    let mut complained = false;
    let mut prints = manifest_fingerprint(&mesh.config.manifests);
    loop {
        let before = mesh.write_status().await;
        mesh.fetch_cards(&upstreams, &before).await;
        let status = mesh.write_status().await;
        if status.ready && !announced {
            announced = true;
            announce(&mesh, &status).await;
        } else if !status.ready && !announced && !complained && started.elapsed() > STARTUP_GRACE {
            complained = true;
            println!("{}", status.table());
            println!(
                "the mesh is NOT up after {STARTUP_GRACE:?}: see the processes above and `warden logs`"
            );
        }
        for _ in 0..4 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = crate::supervisor::stopped(&mut stop) => return,
            }
            let now = manifest_fingerprint(&mesh.config.manifests);
            if now != prints {
                prints = now;
                mesh.apply_manifests().await;
                mesh.write_status().await;
            }
        }
    }
}

/// How long startup may take before `up` says the mesh is not up.
const STARTUP_GRACE: Duration = Duration::from_secs(15);

async fn announce(mesh: &Mesh, status: &crate::status::MeshStatus) {
    println!("{}", status.table());
    if mesh.config.verify {
        match crate::verify::verify(&mesh.config.state_dir).await {
            Ok(checks) => println!("{}", crate::verify::render(&checks)),
            Err(e) => println!("verify: {e}"),
        }
    }
    println!(
        "the mesh is up; gateway {} — Ctrl-C or `warden down` stops it",
        mesh.gateway_url()
    );
}
