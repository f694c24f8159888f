//! The systems under test, all on loopback: a minimal upstream, Warden's processes, nginx.

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

const SERVER: &str = "spiffe://warden.local/ns/bench-b/sa/server";
const CLIENT: &str = "spiffe://warden.local/ns/bench-a/sa/client";

/// Child processes, killed on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    /// SIGTERM (nginx's master then stops its workers; sidecars drain), SIGKILL after 5 s.
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.0 {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The run's scratch directory (CA, SVIDs, snapshot, logs), removed at the end.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A third-party proxy terminating the same mTLS (nginx, HAProxy), or why it is not running.
pub type ThirdParty = Result<(SocketAddr, Vec<u32>), String>;

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
    nginx: ThirdParty,
    haproxy: ThirdParty,
    _procs: Procs,
    /// Last, so that it goes after the processes that use it have stopped.
    _dir: Scratch,
}

fn free() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let start = Instant::now();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(15),
            "nothing listening on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
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
    let gw_id = "spiffe://warden.local/ns/warden-system/sa/warden-gateway";
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
            s(gw_id),
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

/// Starts a third-party proxy when asked for, keeping its processes in `procs`.
fn third_party(
    wanted: bool,
    procs: &mut Procs,
    start: impl FnOnce() -> anyhow::Result<(SocketAddr, Child)>,
) -> ThirdParty {
    if !wanted {
        return Err("not asked for".into());
    }
    match start() {
        Ok((addr, child)) => {
            let mut pids = vec![child.id()];
            pids.extend(children_of(child.id()));
            procs.0.push(child);
            Ok((addr, pids))
        }
        Err(e) => {
            eprintln!("warden-bench: {e}");
            Err(e.to_string())
        }
    }
}

/// Which optional parts of the environment to start.
pub struct Wanted<'a> {
    /// Start nginx.
    pub nginx: bool,
    /// Start HAProxy.
    pub haproxy: bool,
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
        let gateway_dir = write(
            "spiffe://warden.local/ns/warden-system/sa/warden-gateway",
            "gateway",
        )?;
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
        let nginx = third_party(wanted.nginx, &mut procs, || {
            start_nginx(&dir, upstream, &server_dir)
        });
        let haproxy = third_party(wanted.haproxy, &mut procs, || {
            start_haproxy(&dir, upstream, &server_dir)
        });
        Ok(Self {
            upstream,
            client,
            tls: Arc::new(tls),
            warden: ours,
            baseline,
            nginx,
            haproxy,
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

    /// A third-party proxy's target, or why it is not running.
    fn third_party_target(&self, peer: &ThirdParty) -> Result<Arc<Target>, String> {
        let (addr, pids) = peer.as_ref().map_err(Clone::clone)?;
        Ok(self.target(
            format!("https://{addr}/"),
            Some(SERVER),
            pids.clone(),
            *addr,
        ))
    }

    /// nginx terminating the same mTLS, or why it is not running.
    pub fn nginx(&self) -> Result<Arc<Target>, String> {
        self.third_party_target(&self.nginx)
    }

    /// HAProxy terminating the same mTLS, or why it is not running.
    pub fn haproxy(&self) -> Result<Arc<Target>, String> {
        self.third_party_target(&self.haproxy)
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

/// The client and server sides of nginx's and HAProxy's mTLS: the server's SVID, and the
/// bundle client certificates must chain to.
fn peer_files(certs: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        certs.join("svid.pem"),
        certs.join("svid_key.pem"),
        certs.join("svid_bundle.pem"),
    )
}

/// nginx terminating mTLS with the same certificates, proxying to the upstream with keep-alive.
fn start_nginx(
    dir: &Path,
    upstream: SocketAddr,
    certs: &Path,
) -> anyhow::Result<(SocketAddr, Child)> {
    let nginx = which("nginx").ok_or_else(|| {
        anyhow::anyhow!("nginx-mtls: nginx is not installed (scripts/install-bench-deps.sh)")
    })?;
    let listen = free()?;
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let (cert, key, bundle) = peer_files(certs);
    let conf = format!(
        "worker_processes auto; daemon off; pid {p}/nginx.pid; error_log {p}/logs/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n\
           upstream up {{ server {upstream}; keepalive 64; }}\n\
           server {{ listen {listen} ssl; ssl_protocols TLSv1.3 TLSv1.2;\n\
             ssl_certificate {c}; ssl_certificate_key {k};\n\
             ssl_client_certificate {b}; ssl_verify_client on; ssl_verify_depth 2;\n\
             location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n",
        p = prefix.display(),
        c = cert.display(),
        k = key.display(),
        b = bundle.display(),
    );
    std::fs::write(prefix.join("nginx.conf"), conf)?;
    let child = Command::new(nginx)
        .args([
            "-p",
            &prefix.display().to_string(),
            "-c",
            &prefix.join("nginx.conf").display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_listening(listen)?;
    std::thread::sleep(Duration::from_millis(200));
    Ok((listen, child))
}

/// HAProxy terminating mTLS with the same certificates (client certificate required, chained
/// to the same bundle), proxying to the upstream over kept-alive, reused connections; one
/// thread per CPU, as nginx's `worker_processes auto`.
fn start_haproxy(
    dir: &Path,
    upstream: SocketAddr,
    certs: &Path,
) -> anyhow::Result<(SocketAddr, Child)> {
    let haproxy = which("haproxy").ok_or_else(|| {
        anyhow::anyhow!("haproxy-mtls: haproxy is not installed (scripts/install-bench-deps.sh)")
    })?;
    let listen = free()?;
    let prefix = dir.join("haproxy");
    std::fs::create_dir_all(&prefix)?;
    let (cert, key, bundle) = peer_files(certs);
    // HAProxy takes the certificate chain and its key in one file.
    let mut combined = std::fs::read(&cert)?;
    combined.extend(std::fs::read(&key)?);
    let pem = prefix.join("server.pem");
    std::fs::write(&pem, combined)?;
    std::fs::set_permissions(&pem, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let conf = format!(
        "global\n  maxconn 8192\n  ssl-default-bind-options ssl-min-ver TLSv1.2\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  http-reuse always\n\
         frontend mtls\n  bind {listen} ssl crt {pem} ca-file {b} verify required\n  default_backend up\n\
         backend up\n  server up {upstream}\n",
        pem = pem.display(),
        b = bundle.display(),
    );
    let cfg = prefix.join("haproxy.cfg");
    std::fs::write(&cfg, conf)?;
    let log = std::fs::File::create(prefix.join("haproxy.log"))?;
    let child = Command::new(haproxy)
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    wait_listening(listen).map_err(|e| {
        let why = std::fs::read_to_string(prefix.join("haproxy.log")).unwrap_or_default();
        anyhow::anyhow!("haproxy-mtls: haproxy did not start ({e}): {why}")
    })?;
    std::thread::sleep(Duration::from_millis(200));
    Ok((listen, child))
}

fn which(program: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

fn children_of(pid: u32) -> Vec<u32> {
    Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Resident set size from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// User + system CPU seconds of the processes.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let after = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        / ticks
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
