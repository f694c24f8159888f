//! The third-party proxies Warden's rows are compared with, on the same certificates and the
//! same upstream:
//!
//! - `nginx-mtls`, `haproxy-mtls`: one proxy terminating mTLS in front of the upstream, as the
//!   `sidecar-mtls` sidecar does;
//! - `nginx-mesh`, `haproxy-mesh`: three of them chained as the `mesh-path` is — plain HTTP in
//!   (the egress) → mTLS → a middle hop that logs every request to a file (the gateway and its
//!   audit log) → mTLS → the last hop (the target's sidecar) → the upstream. Each hop verifies
//!   the next one's certificate chain and name, presents its own certificate, and keeps its
//!   upstream connections alive; no TLS session resumption, as Warden has none. The
//!   difference that stays: they check a DNS name where Warden checks the SPIFFE ID.
//!
//! Each proxy runs one worker per CPU (nginx's `worker_processes auto`, HAProxy's default
//! threads), as Warden's processes run one runtime worker per CPU.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::os::{Procs, free, wait_listening, which};

/// The name the chains' middle and last hops are verified by (their certificates carry it
/// beside the SPIFFE ID).
pub const GATEWAY_NAME: &str = "gateway.bench.local";
/// See [`GATEWAY_NAME`].
pub const SERVER_NAME: &str = "server.bench.local";

/// Certificate directories (`svid.pem`, `svid_key.pem`, `svid_bundle.pem`).
pub struct Certs {
    /// The server's SVID with [`SERVER_NAME`]: the single proxies and the chains' last hop.
    pub server: PathBuf,
    /// The gateway's SVID with [`GATEWAY_NAME`]: the chains' middle hop, both ways.
    pub gateway: PathBuf,
    /// The calling workload's SVID: the chains' first hop toward the middle one.
    pub client: PathBuf,
}

/// One third-party row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// `nginx-mtls`.
    NginxMtls,
    /// `haproxy-mtls`.
    HaproxyMtls,
    /// `nginx-mesh`.
    NginxMesh,
    /// `haproxy-mesh`.
    HaproxyMesh,
}

impl Peer {
    /// Every third-party row, in the order they run.
    pub const ALL: [Peer; 4] = [
        Peer::NginxMtls,
        Peer::HaproxyMtls,
        Peer::NginxMesh,
        Peer::HaproxyMesh,
    ];

    /// The row's name.
    pub fn row(self) -> &'static str {
        match self {
            Peer::NginxMtls => "nginx-mtls",
            Peer::HaproxyMtls => "haproxy-mtls",
            Peer::NginxMesh => "nginx-mesh",
            Peer::HaproxyMesh => "haproxy-mesh",
        }
    }

    /// Whether the client speaks mTLS to it (else plain HTTP, as an app to its egress).
    pub fn mtls(self) -> bool {
        matches!(self, Peer::NginxMtls | Peer::HaproxyMtls)
    }

    fn program(self) -> &'static str {
        match self {
            Peer::NginxMtls | Peer::NginxMesh => "nginx",
            Peer::HaproxyMtls | Peer::HaproxyMesh => "haproxy",
        }
    }

    /// Starts it in front of `upstream`, its files under `dir`: its listener and processes, or
    /// why not (printed too).
    pub fn start(
        self,
        dir: &Path,
        upstream: SocketAddr,
        certs: &Certs,
    ) -> Result<(SocketAddr, Procs), String> {
        let started = match which(self.program()) {
            None => Err(anyhow::anyhow!(
                "{}: {} is not installed (scripts/install-bench-deps.sh)",
                self.row(),
                self.program()
            )),
            Some(program) => self.start_with(&program, dir, upstream, certs),
        };
        started.map_err(|e| {
            eprintln!("warden-bench: {e:#}");
            format!("{e:#}")
        })
    }

    fn start_with(
        self,
        program: &Path,
        dir: &Path,
        upstream: SocketAddr,
        certs: &Certs,
    ) -> anyhow::Result<(SocketAddr, Procs)> {
        let dir = dir.join(self.row());
        let row = self.row();
        let mut procs = Procs::default();
        let mut hop = |name: &str, hop: Hop| -> anyhow::Result<SocketAddr> {
            let listen = free()?;
            let child = match self {
                Peer::NginxMtls | Peer::NginxMesh => nginx(program, &dir.join(name), listen, &hop)?,
                Peer::HaproxyMtls | Peer::HaproxyMesh => {
                    haproxy(program, &dir.join(name), listen, &hop)?
                }
            };
            procs.0.push(child);
            wait_listening(listen).map_err(|e| {
                let log = ["logs/error.log", "haproxy.log"]
                    .iter()
                    .filter_map(|log| std::fs::read_to_string(dir.join(name).join(log)).ok())
                    .collect::<String>();
                anyhow::anyhow!("{row}: its {name} hop did not start ({e}): {log}")
            })?;
            Ok(listen)
        };
        let listen = if self.mtls() {
            hop("proxy", Hop::terminating(&certs.server, upstream))?
        } else {
            // Built from the end: each hop needs the next one's address.
            let last = hop("server", Hop::terminating(&certs.server, upstream))?;
            let middle = hop(
                "gateway",
                Hop {
                    tls_in: Some(&certs.gateway),
                    next: last,
                    tls_out: Some((&certs.gateway, SERVER_NAME)),
                    log: true,
                },
            )?;
            hop(
                "egress",
                Hop {
                    tls_in: None,
                    next: middle,
                    tls_out: Some((&certs.client, GATEWAY_NAME)),
                    log: false,
                },
            )?
        };
        std::thread::sleep(Duration::from_millis(200));
        Ok((listen, procs))
    }
}

/// What one proxy in a row does.
struct Hop<'a> {
    /// Terminates mTLS with this certificate directory (client certificates required,
    /// chained to its bundle); else plain HTTP.
    tls_in: Option<&'a Path>,
    /// Where it proxies to.
    next: SocketAddr,
    /// Originates mTLS with this certificate directory, verifying the chain to its bundle and
    /// this name; else plain HTTP.
    tls_out: Option<(&'a Path, &'a str)>,
    /// Logs every request to a file (`access.log`).
    log: bool,
}

impl<'a> Hop<'a> {
    /// mTLS in with `certs`, plain HTTP out to `next`.
    fn terminating(certs: &'a Path, next: SocketAddr) -> Self {
        Hop {
            tls_in: Some(certs),
            next,
            tls_out: None,
            log: false,
        }
    }
}

/// A certificate directory's (certificate chain, key, bundle).
fn files(certs: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        certs.join("svid.pem"),
        certs.join("svid_key.pem"),
        certs.join("svid_bundle.pem"),
    )
}

/// nginx (its prefix `dir`) on `listen`, doing `hop`.
fn nginx(
    program: &Path,
    dir: &Path,
    listen: SocketAddr,
    hop: &Hop,
) -> anyhow::Result<std::process::Child> {
    std::fs::create_dir_all(dir.join("logs"))?;
    let p = dir.display();
    let tls_in = hop.tls_in.map_or(String::new(), |certs| {
        let (cert, key, bundle) = files(certs);
        format!(
            "ssl_protocols TLSv1.3 TLSv1.2; ssl_certificate {}; ssl_certificate_key {};\n\
             ssl_client_certificate {}; ssl_verify_client on; ssl_verify_depth 2;\n",
            cert.display(),
            key.display(),
            bundle.display()
        )
    });
    let (scheme, tls_out) = hop
        .tls_out
        .map_or(("http", String::new()), |(certs, name)| {
            let (cert, key, bundle) = files(certs);
            let out = format!(
                "proxy_ssl_certificate {}; proxy_ssl_certificate_key {};\n\
             proxy_ssl_trusted_certificate {}; proxy_ssl_verify on; proxy_ssl_verify_depth 2;\n\
             proxy_ssl_name {name}; proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse off;\n",
                cert.display(),
                key.display(),
                bundle.display()
            );
            ("https", out)
        });
    let log = match hop.log {
        true => format!("access_log {p}/logs/access.log;"),
        false => "access_log off;".into(),
    };
    let conf = format!(
        "worker_processes auto; daemon off; pid {p}/nginx.pid; error_log {p}/logs/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ {log} client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n\
           upstream next {{ server {next}; keepalive 64; }}\n\
           server {{ listen {listen}{ssl};\n{tls_in}\
             location / {{ proxy_pass {scheme}://next; proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n{tls_out} }} }} }}\n",
        next = hop.next,
        ssl = if hop.tls_in.is_some() { " ssl" } else { "" },
    );
    std::fs::write(dir.join("nginx.conf"), conf)?;
    Ok(Command::new(program)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// HAProxy (its files in `dir`) on `listen`, doing `hop`; its messages in `haproxy.log`, its
/// request log (when `hop.log`) in `access.log`.
fn haproxy(
    program: &Path,
    dir: &Path,
    listen: SocketAddr,
    hop: &Hop,
) -> anyhow::Result<std::process::Child> {
    std::fs::create_dir_all(dir)?;
    // HAProxy takes a certificate chain and its key in one file.
    let combined = |certs: &Path, name: &str| -> anyhow::Result<(PathBuf, PathBuf)> {
        let (cert, key, bundle) = files(certs);
        let mut pem = std::fs::read(&cert)?;
        pem.extend(std::fs::read(&key)?);
        let path = dir.join(name);
        std::fs::write(&path, pem)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok((path, bundle))
    };
    let bind = match hop.tls_in {
        Some(certs) => {
            let (pem, bundle) = combined(certs, "server.pem")?;
            format!(
                "{listen} ssl crt {} ca-file {} verify required",
                pem.display(),
                bundle.display()
            )
        }
        None => listen.to_string(),
    };
    let server = match hop.tls_out {
        Some((certs, name)) => {
            let (pem, bundle) = combined(certs, "client.pem")?;
            format!(
                "{} ssl crt {} ca-file {} verify required verifyhost {name} no-ssl-reuse",
                hop.next,
                pem.display(),
                bundle.display()
            )
        }
        None => hop.next.to_string(),
    };
    let (log_global, log_defaults) = match hop.log {
        true => (
            "  log stdout format raw local0\n",
            "  log global\n  option httplog\n",
        ),
        false => ("", ""),
    };
    let conf = format!(
        "global\n  maxconn 8192\n  ssl-default-bind-options ssl-min-ver TLSv1.2\n{log_global}\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  http-reuse always\n{log_defaults}\
         frontend in\n  bind {bind}\n  default_backend next\n\
         backend next\n  server next {server}\n",
    );
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, conf)?;
    let stdout = match hop.log {
        true => Stdio::from(std::fs::File::create(dir.join("access.log"))?),
        false => Stdio::null(),
    };
    Ok(Command::new(program)
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(stdout)
        .stderr(std::fs::File::create(dir.join("haproxy.log"))?)
        .spawn()?)
}
