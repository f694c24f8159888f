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

pub struct Env {
    upstream: SocketAddr,
    client: Arc<Upstreams>,
    tls: Arc<rustls::ClientConfig>,
    sidecar: SocketAddr,
    sidecar_pid: u32,
    egress: SocketAddr,
    mesh_pids: Vec<u32>,
    nginx: Option<(SocketAddr, Vec<u32>)>,
    nginx_skip: String,
    _procs: Procs,
    idle_sidecar_rss: Option<u64>,
    idle_gateway_rss: Option<u64>,
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

impl Env {
    /// Starts the upstream and Warden's processes, and nginx when `with_nginx`.
    pub async fn start(warden: &Path, with_nginx: bool) -> anyhow::Result<Self> {
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

        // A mesh for the gateway: the client's namespace may call the server.
        let manifests = "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: server, namespace: bench-b}\nspec: {allowedNamespaces: {from: All}}\n---\n\
             apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: client, namespace: bench-a}\nspec: {}\n";
        std::fs::write(dir.join("mesh.yaml"), manifests)?;
        let loaded = warden_model::load_path(&dir.join("mesh.yaml"))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let snapshot = warden_model::compile(&loaded, 1).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let snap = dir.join("snapshot.json");
        std::fs::write(&snap, serde_json::to_vec(&snapshot)?)?;

        let upstream = upstream().await?;
        let (sidecar, mesh_in, egress, client_in, gateway) =
            (free()?, free()?, free()?, free()?, free()?);
        let gw_id = "spiffe://warden.local/ns/warden-system/sa/warden-gateway";
        // In the guard from the first spawn on: a failed start stops what it started.
        let mut procs = Procs(Vec::new());
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
                s(server_dir.display()),
                // Room for the 1,000 held connections on top of the load runs' pool.
                s("--max-connections"),
                s(4096),
            ],
            &dir.join("sidecar.log"),
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
                s(server_dir.display()),
                s("--snapshot"),
                s(snap.display()),
                s("--agent"),
                s("bench-b/server"),
            ],
            &dir.join("server-sidecar.log"),
        )?);
        procs.0.push(spawn(
            warden,
            &[
                s("gateway"),
                s("--listen"),
                s(gateway),
                s("--snapshot"),
                s(snap.display()),
                s("--svid-dir"),
                s(gateway_dir.display()),
                s("--endpoint"),
                format!("bench-b/server={mesh_in}"),
            ],
            &dir.join("gateway.log"),
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
                s(client_dir.display()),
            ],
            &dir.join("client-sidecar.log"),
        )?);
        for addr in [sidecar, mesh_in, gateway, egress] {
            wait_listening(addr)?;
        }
        let pids: Vec<u32> = procs.0.iter().map(|p| p.id()).collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle_sidecar_rss = rss_kib(pids[0]);
        let idle_gateway_rss = rss_kib(pids[2]);
        let started = if with_nginx {
            start_nginx(&dir, upstream, &server_dir)
        } else {
            Err(anyhow::anyhow!("not asked for"))
        };
        let (nginx, nginx_skip) = match started {
            Ok((addr, child)) => {
                let mut npids = vec![child.id()];
                npids.extend(children_of(child.id()));
                procs.0.push(child);
                (Some((addr, npids)), String::new())
            }
            Err(e) => (None, e.to_string()),
        };
        Ok(Self {
            upstream,
            client,
            tls: Arc::new(tls),
            sidecar,
            sidecar_pid: pids[0],
            egress,
            mesh_pids: vec![pids[3], pids[2], pids[1]],
            nginx,
            nginx_skip,
            _procs: procs,
            idle_sidecar_rss,
            idle_gateway_rss,
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

    pub fn direct(&self) -> Arc<Target> {
        self.target(
            format!("http://{}/", self.upstream),
            None,
            vec![],
            self.upstream,
        )
    }

    pub fn sidecar(&self) -> Arc<Target> {
        self.target(
            format!("https://{}/", self.sidecar),
            Some(SERVER),
            vec![self.sidecar_pid],
            self.sidecar,
        )
    }

    pub fn mesh_path(&self) -> Arc<Target> {
        self.target(
            format!("http://{}/api/a2a/bench-b/server/", self.egress),
            None,
            self.mesh_pids.clone(),
            self.egress,
        )
    }

    pub fn nginx(&self) -> Option<Arc<Target>> {
        let (addr, pids) = self.nginx.as_ref()?;
        Some(self.target(
            format!("https://{addr}/"),
            Some(SERVER),
            pids.clone(),
            *addr,
        ))
    }

    pub fn nginx_skip_reason(&self) -> String {
        self.nginx_skip.clone()
    }

    /// Sidecar RSS idle (at start) and with 1,000 open mTLS connections.
    pub async fn sidecar_memory(&self) -> anyhow::Result<(Option<u64>, Option<u64>)> {
        let held = hold_connections(&self.sidecar(), 1000).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let loaded = rss_kib(self.sidecar_pid);
        drop(held);
        Ok((self.idle_sidecar_rss, loaded))
    }

    pub fn gateway_rss(&self) -> Option<u64> {
        self.idle_gateway_rss
    }
}

/// nginx terminating mTLS with the same certificates, proxying to the upstream with keep-alive.
/// Installed from Debian's packages when missing and running as root.
fn start_nginx(
    dir: &Path,
    upstream: SocketAddr,
    certs: &Path,
) -> anyhow::Result<(SocketAddr, Child)> {
    let nginx = which("nginx").or_else(|| {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .ok()
            .is_some_and(|o| o.stdout.starts_with(b"0"));
        if root {
            eprintln!("installing nginx-light from Debian for the nginx-mtls row…");
            let _ = Command::new("apt-get")
                .args(["install", "-y", "-qq", "nginx-light"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status();
        }
        which("nginx")
    });
    let nginx = nginx
        .ok_or_else(|| anyhow::anyhow!("nginx is not installed (apt-get install nginx-light)"))?;
    let listen = free()?;
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let conf = format!(
        "worker_processes auto; daemon off; pid {p}/nginx.pid; error_log {p}/logs/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n\
           upstream up {{ server {upstream}; keepalive 64; }}\n\
           server {{ listen {listen} ssl; ssl_protocols TLSv1.3 TLSv1.2;\n\
             ssl_certificate {c}/svid.pem; ssl_certificate_key {c}/svid_key.pem;\n\
             ssl_client_certificate {c}/svid_bundle.pem; ssl_verify_client on; ssl_verify_depth 2;\n\
             location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n",
        p = prefix.display(),
        c = certs.display()
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
