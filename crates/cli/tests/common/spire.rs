//! Workloads on the testkit's SPIRE: `warden` processes run as their own uids (so the SPIRE
//! agent's `unix` attestor tells them apart) and callers holding SPIRE-issued SVIDs.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use warden_testkit::process::{Running, free_addr, spawn_logged, wait_until};
use warden_testkit::spire::{Spire, as_uid};

use super::{WARDEN, curl};

/// A caller's X.509-SVID as written by `spire-agent api fetch x509 -write`.
pub struct Client {
    pub cert: String,
    pub key: String,
}

impl Client {
    pub fn fetch(spire: &Spire, name: &str, uid: u32) -> Self {
        let dir = spire.workload_dir(name, uid);
        spire.fetch_x509(uid, &dir);
        Self {
            cert: dir.join("svid.0.pem").display().to_string(),
            key: dir.join("svid.0.key").display().to_string(),
        }
    }

    /// curl as this client (mTLS) to `url`; (HTTP status, body).
    pub fn call(&self, url: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["-k", "--cert", &self.cert, "--key", &self.key];
        args.extend(extra);
        args.extend(["-w", "\n%{http_code}", url]);
        status_and_body(&curl(&args))
    }
}

pub fn status_and_body(out: &std::process::Output) -> (String, String) {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "000"));
    (status.to_owned(), body.to_owned())
}

/// A `warden` process run as `uid`, logging into the fixture's directory.
pub fn warden_as(spire: &Spire, uid: u32, name: &str, args: &[&str]) -> Running {
    warden_as_in(spire, uid, name, args, &[])
}

/// [`warden_as`] with `env` set (e.g. a `TMPDIR` the process may not write).
pub fn warden_as_in(
    spire: &Spire,
    uid: u32,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Running {
    let warden = spire.readable_copy(Path::new(WARDEN));
    let mut command = as_uid(uid, &warden);
    command
        .args(args)
        .envs(env.iter().copied())
        .env_remove("MTLS_MODE");
    spawn_logged(&mut command, &spire.dir().join(format!("{name}.log")))
}

/// `/readyz` on an admin port: the HTTP status (000 when nothing answers).
pub fn readyz(admin: SocketAddr) -> String {
    let url = format!("http://{admin}/readyz");
    status_and_body(&curl(&["-w", "\n%{http_code}", &url])).0
}

pub fn wait_ready(spire: &Spire, name: &str, admin: SocketAddr) {
    let log = spire.dir().join(format!("{name}.log"));
    wait_until(name, Duration::from_secs(30), &log, || {
        readyz(admin) == "200"
    });
}

/// `warden sidecar` as `uid` in front of `app`, with `identity` (its SVID source and any
/// other flags), ready; (process, inbound, admin).
pub fn sidecar_as(
    spire: &Spire,
    uid: u32,
    app: SocketAddr,
    identity: &[&str],
) -> (Running, SocketAddr, SocketAddr) {
    sidecar_on(spire, uid, free_addr(), app, identity, &[])
}

/// [`sidecar_as`] with its mesh port on `inbound` (e.g. a pod IP stand-in) and `env` set.
pub fn sidecar_on(
    spire: &Spire,
    uid: u32,
    inbound: SocketAddr,
    app: SocketAddr,
    identity: &[&str],
    env: &[(&str, &str)],
) -> (Running, SocketAddr, SocketAddr) {
    let admin = free_addr();
    let (inbound_s, app_s, admin_s) = (inbound.to_string(), app.to_string(), admin.to_string());
    let mut args = vec![
        "sidecar",
        "--inbound",
        &inbound_s,
        "--app",
        &app_s,
        "--admin",
        &admin_s,
    ];
    args.extend(identity);
    let process = warden_as_in(spire, uid, "sidecar", &args, env);
    wait_ready(spire, "sidecar", admin);
    (process, inbound, admin)
}
