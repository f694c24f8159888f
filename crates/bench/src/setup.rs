//! The systems under test, all on loopback: a minimal upstream, Warden's processes, and the
//! third-party proxies of [`crate::peers`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use warden_identity::ca::CertificateAuthority;
use warden_identity::tls::client_config;
use warden_identity::{Authorizer, IdentityCell, SpiffeId, TrustDomain, X509Identity};
use warden_proxy::config::Limits;
use warden_proxy::forward::Upstreams;

use crate::load::{Target, hold_connections};
use crate::os::{Procs, free, rss_kib, wait_listening};
use crate::peers::{Certs, GATEWAY_NAME, Peer, SERVER_NAME};

/// A third-party row's listener and processes (workers included), or why it is not running.
pub type ThirdParty = Result<(SocketAddr, Vec<u32>), String>;

const SERVER: &str = "spiffe://warden.local/ns/bench-b/sa/server";
const CLIENT: &str = "spiffe://warden.local/ns/bench-a/sa/client";
const GATEWAY: &str = "spiffe://warden.local/ns/warden-system/sa/warden-gateway";

/// The run's scratch directory (CA, SVIDs, snapshot, logs), removed at the end.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One set of Warden's processes, all from one binary: the Strict sidecar of `sidecar-mtls`
/// and the egress sidecar, gateway and target sidecar of `mesh-path`.
struct Wardens {
    sidecar: SocketAddr,
    sidecar_pid: u32,
    egress: SocketAddr,
    gateway: SocketAddr,
    gateway_pid: u32,
    /// Egress sidecar, gateway, target sidecar.
    mesh_pids: Vec<u32>,
    idle_sidecar_rss: Option<u64>,
    idle_gateway_rss: Option<u64>,
}

/// The certificates and snapshot every set of Warden's processes starts from.
struct Material {
    server: PathBuf,
    client: PathBuf,
    gateway: PathBuf,
    snapshot: PathBuf,
}

pub struct Env {
    upstream: SocketAddr,
    client: Arc<Upstreams>,
    tls: Arc<rustls::ClientConfig>,
    warden: Wardens,
    /// The same processes from the `--baseline` binary, for before/after in one run.
    baseline: Option<Wardens>,
    /// Each third-party row, started or why not.
    peers: Vec<(Peer, ThirdParty)>,
    _procs: Procs,
    /// Last, so that it goes after the processes that use it have stopped.
    _dir: Scratch,
}

/// The upstream: answers every request with a small JSON-RPC result, as fast as it can.
async fn upstream() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reply = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{"kind":"message","role":"agent","messageId":"r","parts":[{"kind":"text","text":"ok"}]}}"#);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let reply = reply.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let reply = reply.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, Infallible>(http::Response::new(Full::new(reply)))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn spawn(warden: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log)?;
    Ok(Command::new(warden)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .env_remove("MTLS_MODE")
        .spawn()?)
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

/// Starts one set of Warden's processes from `warden`, naming their logs after `tag`.
async fn start_wardens(
    warden: &Path,
    tag: &str,
    dir: &Path,
    m: &Material,
    upstream: SocketAddr,
    procs: &mut Procs,
) -> anyhow::Result<Wardens> {
    let (sidecar, mesh_in, egress, client_in, gateway) =
        (free()?, free()?, free()?, free()?, free()?);
    let log = |name: &str| dir.join(format!("{tag}-{name}.log"));
    let first = procs.0.len();
    // sidecar-mtls: a Strict sidecar in front of the upstream.
    procs.0.push(spawn(
        warden,
        &[
            s("sidecar"),
            s("--inbound"),
            s(sidecar),
            s("--app"),
            s(upstream),
            s("--mode"),
            s("strict"),
            s("--svid-dir"),
            s(m.server.display()),
            // Room for the 1,000 held connections on top of the load runs' pool.
            s("--max-connections"),
            s(4096),
        ],
        &log("sidecar"),
    )?);
    // mesh-path: client sidecar egress → gateway → server sidecar → upstream.
    procs.0.push(spawn(
        warden,
        &[
            s("sidecar"),
            s("--inbound"),
            s(mesh_in),
            s("--app"),
            s(upstream),
            s("--svid-dir"),
            s(m.server.display()),
            s("--snapshot"),
            s(m.snapshot.display()),
            s("--agent"),
            s("bench-b/server"),
        ],
        &log("server-sidecar"),
    )?);
    // The gateway writes its audit log, as it does in a deployment.
    procs.0.push(spawn(
        warden,
        &[
            s("gateway"),
            s("--listen"),
            s(gateway),
            s("--snapshot"),
            s(m.snapshot.display()),
            s("--svid-dir"),
            s(m.gateway.display()),
            s("--endpoint"),
            format!("bench-b/server={mesh_in}"),
            s("--audit-log"),
            s(dir.join(format!("{tag}-audit.log")).display()),
        ],
        &log("gateway"),
    )?);
    procs.0.push(spawn(
        warden,
        &[
            s("sidecar"),
            s("--inbound"),
            s(client_in),
            s("--app"),
            s(upstream),
            s("--egress"),
            s(egress),
            s("--gateway-url"),
            format!("http://{gateway}"),
            s("--gateway-id"),
            s(GATEWAY),
            s("--svid-dir"),
            s(m.client.display()),
        ],
        &log("client-sidecar"),
    )?);
    for addr in [sidecar, mesh_in, gateway, egress] {
        wait_listening(addr)?;
    }
    let pids: Vec<u32> = procs.0[first..].iter().map(|p| p.id()).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(Wardens {
        sidecar,
        sidecar_pid: pids[0],
        egress,
        gateway,
        gateway_pid: pids[2],
        mesh_pids: vec![pids[3], pids[2], pids[1]],
        idle_sidecar_rss: rss_kib(pids[0]),
        idle_gateway_rss: rss_kib(pids[2]),
    })
}

/// Starts `peer` when asked for, keeping its processes in `procs`.
fn third_party(
    peer: Peer,
    wanted: bool,
    procs: &mut Procs,
    dir: &Path,
    upstream: SocketAddr,
    certs: &Certs,
) -> ThirdParty {
    if !wanted {
        return Err("not asked for".into());
    }
    let (addr, started) = peer.start(dir, upstream, certs)?;
    let pids = started.pids();
    procs.adopt(started);
    Ok((addr, pids))
}

/// Which optional parts of the environment to start.
pub struct Wanted<'a> {
    /// Start these third-party rows.
    pub peers: Vec<Peer>,
    /// Also start Warden's processes from this binary.
    pub baseline: Option<&'a Path>,
}

impl Env {
    /// Starts the upstream and Warden's processes, and what `wanted` names.
    pub async fn start(warden: &Path, wanted: Wanted<'_>) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("warden-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let scratch = Scratch(dir.clone());
        let td = TrustDomain::new("warden.local")?;
        let ca = CertificateAuthority::init(&dir.join("ca"), &td)?;
        let write = |id: &str, name: &str| -> anyhow::Result<PathBuf> {
            let out = dir.join(name);
            ca.issue_x509(&SpiffeId::new(id)?, Duration::from_secs(3600))?
                .write_files(&out, ca.bundle())?;
            Ok(out)
        };
        let server_dir = write(SERVER, "server")?;
        let client_dir = write(CLIENT, "client")?;
        let gateway_dir = write(GATEWAY, "gateway")?;
        let svid = ca.issue_x509(&SpiffeId::new(CLIENT)?, Duration::from_secs(3600))?;
        let identity = IdentityCell::with(X509Identity::new(
            svid.chain.clone(),
            svid.private_key(),
            Arc::new(ca.bundle_set()),
        )?);
        // Warden's client config: no session resumption, so every handshake is a full one.
        let tls = client_config(
            identity.clone(),
            Authorizer::exactly(SpiffeId::new(SERVER)?),
        )?;
        let client = Arc::new(Upstreams::new(identity, Limits::default()));

        // A mesh for the gateway: the client's namespace (and anonymous callers) may call the
        // server; `private` admits its own namespace only (the gateway-burst's denied target).
        let manifests = "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: server, namespace: bench-b}\nspec: {allowedNamespaces: {from: All}}\n---\n\
             apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: client, namespace: bench-a}\nspec: {}\n---\n\
             apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: private, namespace: bench-b}\nspec: {allowedNamespaces: {from: Same}}\n";
        std::fs::write(dir.join("mesh.yaml"), manifests)?;
        let loaded = warden_model::load_path(&dir.join("mesh.yaml"))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let snapshot = warden_model::compile(&loaded, 1).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let snap = dir.join("snapshot.json");
        std::fs::write(&snap, serde_json::to_vec(&snapshot)?)?;
        let material = Material {
            server: server_dir.clone(),
            client: client_dir,
            gateway: gateway_dir,
            snapshot: snap,
        };

        let upstream = upstream().await?;
        // In the guard from the first spawn on: a failed start stops what it started.
        let mut procs = Procs(Vec::new());
        let ours = start_wardens(warden, "warden", &dir, &material, upstream, &mut procs).await?;
        let baseline = match wanted.baseline {
            Some(binary) => Some(
                start_wardens(binary, "baseline", &dir, &material, upstream, &mut procs).await?,
            ),
            None => None,
        };
        // The third-party proxies check DNS names, not SPIFFE IDs: their certificates carry
        // both.
        let named = |id: &str, dns: &str, name: &str| -> anyhow::Result<PathBuf> {
            let out = dir.join(name);
            ca.issue_x509_named(
                &SpiffeId::new(id)?,
                &[dns.into()],
                Duration::from_secs(3600),
            )?
            .write_files(&out, ca.bundle())?;
            Ok(out)
        };
        let certs = Certs {
            server: named(SERVER, SERVER_NAME, "peer-server")?,
            gateway: named(GATEWAY, GATEWAY_NAME, "peer-gateway")?,
            client: material.client.clone(),
        };
        let peers = Peer::ALL
            .into_iter()
            .map(|peer| {
                let wanted = wanted.peers.contains(&peer);
                let started = third_party(peer, wanted, &mut procs, &dir, upstream, &certs);
                (peer, started)
            })
            .collect();
        Ok(Self {
            upstream,
            client,
            tls: Arc::new(tls),
            warden: ours,
            baseline,
            peers,
            _procs: procs,
            _dir: scratch,
        })
    }

    fn target(
        &self,
        url: String,
        expect: Option<&str>,
        pids: Vec<u32>,
        addr: SocketAddr,
    ) -> Arc<Target> {
        Arc::new(Target {
            url,
            expect: expect.and_then(|e| SpiffeId::new(e).ok()),
            client: self.client.clone(),
            pids,
            addr: addr.to_string(),
            tls: expect.map(|_| self.tls.clone()),
        })
    }

    fn wardens(&self, baseline: bool) -> Option<&Wardens> {
        if baseline {
            self.baseline.as_ref()
        } else {
            Some(&self.warden)
        }
    }

    pub fn direct(&self) -> Arc<Target> {
        self.target(
            format!("http://{}/", self.upstream),
            None,
            vec![],
            self.upstream,
        )
    }

    /// The Strict sidecar (of the `--baseline` binary when `baseline`, if one was given).
    pub fn sidecar(&self, baseline: bool) -> Option<Arc<Target>> {
        let w = self.wardens(baseline)?;
        Some(self.target(
            format!("https://{}/", w.sidecar),
            Some(SERVER),
            vec![w.sidecar_pid],
            w.sidecar,
        ))
    }

    /// Egress → gateway → sidecar (of the `--baseline` binary when `baseline`).
    pub fn mesh_path(&self, baseline: bool) -> Option<Arc<Target>> {
        let w = self.wardens(baseline)?;
        Some(self.target(
            format!("http://{}/api/a2a/bench-b/server/", w.egress),
            None,
            w.mesh_pids.clone(),
            w.egress,
        ))
    }

    /// A third-party row's target, or why it is not running.
    pub fn peer(&self, peer: Peer) -> Result<Arc<Target>, String> {
        let (_, started) = self
            .peers
            .iter()
            .find(|(p, _)| *p == peer)
            .ok_or("not asked for")?;
        let (addr, pids) = started.as_ref().map_err(Clone::clone)?;
        Ok(match peer.mtls() {
            true => self.target(
                format!("https://{addr}/"),
                Some(SERVER),
                pids.clone(),
                *addr,
            ),
            false => self.target(
                format!("http://{addr}/api/a2a/bench-b/server/"),
                None,
                pids.clone(),
                *addr,
            ),
        })
    }

    /// Sidecar RSS idle (at start) and with 1,000 open mTLS connections.
    pub async fn sidecar_memory(&self) -> anyhow::Result<(Option<u64>, Option<u64>)> {
        let held = hold_connections(&self.direct_sidecar(), 1000).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let loaded = rss_kib(self.warden.sidecar_pid);
        drop(held);
        Ok((self.warden.idle_sidecar_rss, loaded))
    }

    fn direct_sidecar(&self) -> Arc<Target> {
        self.target(
            format!("https://{}/", self.warden.sidecar),
            Some(SERVER),
            vec![self.warden.sidecar_pid],
            self.warden.sidecar,
        )
    }

    /// The gateway's RSS at start, before any load.
    pub fn gateway_rss(&self) -> Option<u64> {
        self.warden.idle_gateway_rss
    }

    /// The gateway's listener and process.
    pub fn gateway(&self) -> (SocketAddr, u32) {
        (self.warden.gateway, self.warden.gateway_pid)
    }
}

/// Average cost of one policy decision with 100,000 agents in 10,000 namespaces.
pub fn policy_decision_ns() -> f64 {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use warden_model::loader::{Manifests, Origin, Sourced};
    use warden_model::resources::{
        Agent, AgentSpec, AllowedNamespaces, LabelSelector, NamespaceFrom,
    };
    let origin = || Origin {
        file: "bench".into(),
        document: 1,
        object: None,
    };
    let mut m = Manifests::default();
    for n in 0..10_000 {
        let labels = [(
            "tier".to_owned(),
            if n % 2 == 0 { "internal" } else { "external" }.to_owned(),
        )]
        .into();
        m.namespaces.push(Sourced {
            resource: Namespace {
                metadata: ObjectMeta {
                    name: Some(format!("ns-{n}")),
                    labels: Some(labels),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
            origin: origin(),
        });
    }
    for i in 0..100_000 {
        let selector = LabelSelector {
            match_labels: Some([("tier".to_owned(), "internal".to_owned())].into()),
            match_expressions: None,
        };
        let spec = AgentSpec {
            description: None,
            service_account_name: None,
            port: 8080,
            mtls: None,
            allowed_namespaces: AllowedNamespaces {
                from: NamespaceFrom::Selector,
                selector: Some(selector),
            },
            allowed_callers: vec![],
            denied_callers: vec![format!(
                "spiffe://warden.local/ns/ns-{}/sa/banned",
                i % 10_000
            )],
            tools: vec![],
            card: None,
            local: None,
            forward_authorization: false,
            target_ref: None,
        };
        let mut agent = Agent::new(&format!("agent-{i}"), spec);
        agent.metadata.namespace = Some(format!("ns-{}", i % 10_000));
        m.agents.push(Sourced {
            resource: agent,
            origin: origin(),
        });
    }
    let Ok(snapshot) = warden_model::compile(&m, 1) else {
        return f64::NAN;
    };
    let Ok(id) = SpiffeId::new("spiffe://warden.local/ns/ns-42/sa/orchestrator") else {
        return f64::NAN;
    };
    let caller = warden_model::Caller::Spiffe(id);
    let rounds = 1_000_000u32;
    let start = Instant::now();
    let mut allowed = 0u32;
    for _ in 0..rounds {
        if warden_model::decide(
            &snapshot,
            std::hint::black_box(&caller),
            "ns-9998",
            "agent-99998",
            "SendMessage",
        )
        .allowed
        {
            allowed += 1;
        }
    }
    std::hint::black_box(allowed);
    start.elapsed().as_nanos() as f64 / f64::from(rounds)
}

/// A one-line description of the machine the numbers come from.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024 / 1024);
    format!("{cpus} CPUs ({model}), {mem} GiB")
}
