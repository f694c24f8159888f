#![allow(dead_code)]
//! Shared by the end-to-end tests: an openssl PKI for the example's workloads, starting
//! `warden sidecar`, curl.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub mod spire;

use warden_testkit::openssl::{OpensslCa, svid_extensions, time_from_now};
use warden_testkit::process::{Running, free_addr, log_tail, spawn_logged};

pub const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
pub const SPECIALIST: &str = "spiffe://warden.local/ns/team-beta/sa/specialist";
pub const ORCHESTRATOR: &str = "spiffe://warden.local/ns/team-alpha/sa/orchestrator";
pub const ROGUE: &str = "spiffe://warden.local/ns/team-gamma/sa/rogue";
pub const GATEWAY: &str = "spiffe://warden.local/ns/warden-system/sa/warden-gateway";
pub const PUBLIC: &str = "spiffe://warden.local/ns/team-beta/sa/public";

/// An openssl CA for warden.local with SVIDs for the three workloads, and a spiffe-helper
/// directory for the specialist's sidecar.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = OpensslCa::new(dir.path(), "ca", "warden.local");
        for (name, id) in [
            ("specialist", SPECIALIST),
            ("orchestrator", ORCHESTRATOR),
            ("rogue", ROGUE),
            ("gateway", GATEWAY),
            ("public", PUBLIC),
        ] {
            let ext = svid_extensions(id);
            let ext: Vec<&str> = ext.iter().map(String::as_str).collect();
            ca.sign_leaf(name, &ext, &time_from_now(-60), &time_from_now(3600));
            let svid_dir = dir.path().join(format!("{name}-svid"));
            std::fs::create_dir_all(&svid_dir).unwrap();
            std::fs::copy(
                dir.path().join(format!("{name}.pem")),
                svid_dir.join("svid.pem"),
            )
            .unwrap();
            std::fs::copy(
                dir.path().join(format!("{name}.key")),
                svid_dir.join("svid_key.pem"),
            )
            .unwrap();
            std::fs::copy(ca.cert_path(), svid_dir.join("svid_bundle.pem")).unwrap();
        }
        Self { dir }
    }

    pub fn svid_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-svid"))
    }

    pub fn cert(&self, name: &str) -> String {
        self.dir
            .path()
            .join(format!("{name}.pem"))
            .display()
            .to_string()
    }

    pub fn key(&self, name: &str) -> String {
        self.dir
            .path()
            .join(format!("{name}.key"))
            .display()
            .to_string()
    }
}

pub struct Sidecar {
    pub process: Running,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
}

/// Starts `warden sidecar` on fresh loopback ports. A port that was free when picked can be
/// taken by a parallel test before the sidecar binds it: a sidecar that exits before it
/// listens is started again on other ports (three tries), and its own log says why otherwise.
pub fn start_sidecar(svid_dir: &Path, app: SocketAddr, extra: &[&str]) -> Sidecar {
    let log = tempfile::NamedTempFile::new().expect("sidecar log");
    for _ in 0..3 {
        let (inbound, admin) = (free_addr(), free_addr());
        let mut args = vec![
            "sidecar".to_owned(),
            "--inbound".into(),
            inbound.to_string(),
            "--app".into(),
            app.to_string(),
            "--admin".into(),
            admin.to_string(),
            "--svid-dir".into(),
            svid_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut command = Command::new(WARDEN);
        command.args(&args).env_remove("MTLS_MODE");
        let mut process = spawn_logged(&mut command, log.path());
        let start = std::time::Instant::now();
        while process.alive() && start.elapsed() < Duration::from_secs(10) {
            if std::net::TcpStream::connect_timeout(&inbound, Duration::from_millis(100)).is_ok() {
                return Sidecar {
                    process,
                    inbound,
                    admin,
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !process.alive(),
            "sidecar not listening on {inbound} after 10 s: {}",
            log_tail(log.path(), 20)
        );
    }
    panic!(
        "sidecar exited three times before listening: {}",
        log_tail(log.path(), 20)
    );
}

pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed (scripts/test.sh installs it)")
}

/// Plaintext GET; (exit code, body).
pub fn plain(sidecar: &Sidecar, path: &str, headers: &[&str]) -> (i32, String) {
    let url = format!("http://{}{path}", sidecar.inbound);
    let mut args: Vec<&str> = Vec::new();
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(&url);
    let out = curl(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// mTLS GET as `who` (server certificate not checked by curl: the sidecar's SVID has no DNS
/// name; the test is about the sidecar checking the client).
pub fn mtls(pki: &Pki, who: &str, sidecar: &Sidecar, path: &str, extra: &[&str]) -> (i32, String) {
    let url = format!("https://{}{path}", sidecar.inbound);
    let (cert, key) = (pki.cert(who), pki.key(who));
    let mut args = vec!["-k", "--cert", &cert, "--key", &key];
    args.extend(extra);
    args.push(&url);
    let out = curl(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

pub fn headers(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Copies the cross-namespace example, edits its text, and compiles it into `out` (atomically).
pub fn compile_example(out: &Path, edit: impl Fn(&str) -> String) {
    let dir = out.parent().unwrap().join(format!(
        "manifests-{}",
        out.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cross-namespace-a2a");
    for entry in std::fs::read_dir(example).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(dir.join(path.file_name().unwrap()), edit(&text)).unwrap();
    }
    let tmp = out.with_extension("new");
    let status = Command::new(WARDEN)
        .args([
            "compile",
            dir.to_str().unwrap(),
            "--out",
            tmp.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::rename(&tmp, out).unwrap();
}

/// Streams `url` with curl (mTLS as `cert`/`key`) from the test app's `/sse`: the first event
/// must arrive while the app still holds the stream open; then the app is released and the
/// rest must follow.
pub async fn assert_sse_not_buffered(
    url: &str,
    cert: &str,
    key: &str,
    app: &warden_testkit::app::App,
) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("curl")
        .args([
            "-s",
            "-N",
            "-k",
            "--max-time",
            "10",
            "--cert",
            cert,
            "--key",
            key,
            url,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = tokio::task::spawn_blocking(move || (lines.next().and_then(|l| l.ok()), lines));
    let (first, mut lines) = tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .expect("the first event arrived while the upstream was still streaming")
        .expect("reader");
    assert_eq!(first.as_deref(), Some("data: one"));
    app.release_stream();
    let rest: Vec<String> =
        tokio::task::spawn_blocking(move || lines.by_ref().map_while(Result::ok).collect())
            .await
            .expect("reader");
    assert!(rest.contains(&"data: two".to_owned()), "{rest:?}");
    assert!(child.wait().expect("curl").success());
}

pub mod up;
