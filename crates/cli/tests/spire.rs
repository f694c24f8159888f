//! The data plane on real SPIRE (built by scripts/install-test-deps.sh): `warden sidecar` and
//! `warden gateway` take their SVIDs from a SPIRE agent's Workload API, each workload running
//! as its own uid so that the agent's `unix` attestor tells them apart; calls are decided on
//! the SPIRE-issued IDs; short TTLs rotate under load; the agent goes away and comes back;
//! spiffe-helper feeds `--svid-dir`; SPIRE's JWT-SVIDs pass the gateway with SPIRE's bundle.
//!
//! Skipped, loudly, when the SPIRE binaries are not installed.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use common::spire::*;
use common::*;
use warden_testkit::deps::TierTimer;
use warden_testkit::process::{Running, free_addr, spawn_logged, wait_until};
use warden_testkit::spire::{Entry, Spire, as_uid};

const UID_SPECIALIST: u32 = 41001;
const UID_GATEWAY: u32 = 41002;
const UID_ORCHESTRATOR: u32 = 41003;
const UID_ROGUE: u32 = 41004;
const UID_HELPER: u32 = 41005;

/// One SPIRE deployment at a time: the rotation tests count seconds on a shared 2-core box.
/// (An async lock: it is held across the tests' awaits, and each test has its own runtime.)
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const HOUR: Duration = Duration::from_secs(3600);

/// The serial number of the certificate a TLS server at `addr` presents (as `client`).
fn served_serial(addr: SocketAddr, client: &Client) -> String {
    let shown = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} -cert {} -key {} </dev/null 2>/dev/null \
             | openssl x509 -noout -serial",
            client.cert, client.key
        ))
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&shown.stdout).trim().to_owned()
}

/// Waits until the certificate served at `addr` is no longer `old`; the new serial.
fn wait_rotated(addr: SocketAddr, client: &Client, old: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let now = served_serial(addr, client);
        if !now.is_empty() && now != old {
            return now;
        }
        assert!(
            start.elapsed() < limit,
            "{addr} still serves {old} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The example mesh with its specialist's sidecar and the gateway, both on SPIRE SVIDs.
struct Mesh {
    gateway_addr: SocketAddr,
    gateway_admin: SocketAddr,
    sidecar_inbound: SocketAddr,
    sidecar_admin: SocketAddr,
    _gateway: Running,
    _sidecar: Running,
    _app: warden_testkit::app::App,
}

impl Mesh {
    async fn start(spire: &Spire) -> Self {
        let app = warden_testkit::app::start().await;
        let snapshot = spire.dir().join("snapshot.json");
        compile_example(&snapshot, |t| t.to_owned());
        // warden writes it owner-only; the workloads' uids must read it.
        std::fs::set_permissions(&snapshot, std::fs::Permissions::from_mode(0o644)).unwrap();
        let bundle = spire.dir().join("spire-bundle.json");
        std::fs::write(&bundle, spire.bundle_spiffe()).unwrap();
        let endpoint = spire.endpoint();
        let snap = snapshot.to_str().unwrap();
        let (sidecar, inbound, sidecar_admin) = sidecar_as(
            spire,
            UID_SPECIALIST,
            app.addr,
            &[
                "--workload-api",
                &endpoint,
                "--snapshot",
                snap,
                "--agent",
                "team-beta/specialist",
            ],
        );
        let (gateway_addr, gateway_admin) = (free_addr(), free_addr());
        let gateway = warden_as(
            spire,
            UID_GATEWAY,
            "gateway",
            &[
                "gateway",
                "--listen",
                &gateway_addr.to_string(),
                "--admin",
                &gateway_admin.to_string(),
                "--snapshot",
                snap,
                "--workload-api",
                &endpoint,
                "--endpoint",
                &format!("team-beta/specialist={inbound}"),
                "--jwt-bundle",
                bundle.to_str().unwrap(),
            ],
        );
        wait_ready(spire, "gateway", gateway_admin);
        Self {
            gateway_addr,
            gateway_admin,
            sidecar_inbound: inbound,
            sidecar_admin,
            _gateway: gateway,
            _sidecar: sidecar,
            _app: app,
        }
    }

    fn url(&self, rest: &str) -> String {
        format!(
            "https://{}/api/a2a/team-beta/specialist/{rest}",
            self.gateway_addr
        )
    }
}

fn mesh_entries(workload_ttl: Duration) -> Vec<Entry> {
    vec![
        Entry::new(SPECIALIST, UID_SPECIALIST, workload_ttl),
        Entry::new(GATEWAY, UID_GATEWAY, workload_ttl),
        Entry::new(ORCHESTRATOR, UID_ORCHESTRATOR, HOUR),
        Entry::new(ROGUE, UID_ROGUE, HOUR),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_gateway_and_sidecar_are_decided_on_spire_issued_ids() {
    let _serial = SERIAL.lock().await;
    let _timer = TierTimer::new("spire: decisions on SPIRE IDs");
    let Some(spire) = Spire::start("warden.local", &mesh_entries(HOUR)) else {
        return;
    };
    let mesh = Mesh::start(&spire).await;
    let orchestrator = Client::fetch(&spire, "orchestrator", UID_ORCHESTRATOR);
    let rogue = Client::fetch(&spire, "rogue", UID_ROGUE);

    let (status, body) = orchestrator.call(&mesh.url("headers"), &[]);
    assert_eq!(status, "200", "{body}");
    // The sidecar (SPIRE SVID of uid 41001) saw the gateway (uid 41002) vouch for the
    // orchestrator (uid 41003): three identities, all issued by SPIRE, none configured.
    assert_eq!(
        headers(&body)["x-forwarded-client-cert"],
        format!("By={SPECIALIST};URI={ORCHESTRATOR}")
    );
    let (status, body) = rogue.call(&mesh.url(""), &["-d", "{}"]);
    assert_eq!(status, "403", "{body}");
    assert!(body.contains("namespace_selector"), "{body}");

    // The specialist is Strict and decides on its own: called directly, it admits the
    // orchestrator's SPIRE SVID by the policy, refuses the rogue's, and a caller without an
    // SVID gets no call at all.
    let direct = format!("https://{}/headers", mesh.sidecar_inbound);
    let (status, body) = orchestrator.call(&direct, &[]);
    assert_eq!(status, "200", "{body}");
    let xfcc = headers(&body)["x-forwarded-client-cert"].clone();
    assert!(
        xfcc.as_str()
            .is_some_and(|x| x.starts_with(&format!("By={SPECIALIST};"))
                && x.ends_with(&format!("URI={ORCHESTRATOR}"))),
        "{body}"
    );
    let (status, body) = rogue.call(&direct, &[]);
    assert_eq!(status, "403", "{body}");
    let plain = curl(&["-k", &direct]);
    assert!(!plain.status.success(), "no client certificate, no call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_svids_minted_by_spire_pass_the_gateway_with_spires_bundle() {
    let _serial = SERIAL.lock().await;
    let _timer = TierTimer::new("spire: JWT-SVIDs");
    let Some(spire) = Spire::start("warden.local", &mesh_entries(HOUR)) else {
        return;
    };
    let mesh = Mesh::start(&spire).await;
    let plain = format!(
        "http://{}/api/a2a/team-beta/specialist/headers",
        mesh.gateway_addr
    );
    let call = |token: &str| {
        let bearer = format!("authorization: Bearer {token}");
        status_and_body(&curl(&["-H", &bearer, "-w", "\n%{http_code}", &plain]))
    };
    let (status, body) = call(&spire.fetch_jwt(UID_ORCHESTRATOR, "warden-gateway"));
    assert_eq!(status, "200", "{body}");
    assert!(headers(&body).get("authorization").is_none(), "{body}");
    let (status, body) = call(&spire.fetch_jwt(UID_ROGUE, "warden-gateway"));
    assert_eq!(status, "403", "the rogue's JWT-SVID is the rogue: {body}");
    let (status, body) = call(&spire.fetch_jwt(UID_ORCHESTRATOR, "someone-else"));
    assert_eq!(status, "401", "wrong audience: {body}");
    assert!(body.contains("JWT-SVID refused"), "{body}");
}

/// Runs curl calls through the gateway back to back until stopped; (ok, failed, failures).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, client: &Client) -> Self {
        let (cert, key) = (client.cert.clone(), client.key.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let thread = std::thread::spawn({
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            move || {
                let client = Client { cert, key };
                while !stop.load(Ordering::Relaxed) {
                    match client.call(&url, &[]) {
                        (status, _) if status == "200" => ok.fetch_add(1, Ordering::Relaxed),
                        (status, body) => {
                            failed.lock().unwrap().push(format!("{status}: {body}"));
                            0
                        }
                    };
                }
            }
        });
        Self {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the loop; (successful calls, failures).
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        (self.ok(), self.failed.lock().unwrap().clone())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_ttls_rotate_and_the_agent_restarts_under_load_without_a_failed_call() {
    let _serial = SERIAL.lock().await;
    let _timer = TierTimer::new("spire: rotation and agent restart under load");
    let ttl = Duration::from_secs(20);
    let Some(mut spire) = Spire::start("warden.local", &mesh_entries(ttl)) else {
        return;
    };
    let mesh = Mesh::start(&spire).await;
    let orchestrator = Client::fetch(&spire, "orchestrator", UID_ORCHESTRATOR);
    let load = Load::start(mesh.url("headers"), &orchestrator);

    // Two rotations of each SVID while the calls go on (SPIRE renews at half the TTL).
    let limit = ttl + Duration::from_secs(5);
    let sidecar0 = served_serial(mesh.sidecar_inbound, &orchestrator);
    let gateway0 = served_serial(mesh.gateway_addr, &orchestrator);
    let sidecar1 = wait_rotated(mesh.sidecar_inbound, &orchestrator, &sidecar0, limit);
    let gateway1 = wait_rotated(mesh.gateway_addr, &orchestrator, &gateway0, limit);
    let sidecar2 = wait_rotated(mesh.sidecar_inbound, &orchestrator, &sidecar1, limit);
    eprintln!(
        "rotations: sidecar {sidecar0} -> {sidecar1} -> {sidecar2}, gateway {gateway0} -> {gateway1}"
    );

    // The agent goes away: both stay ready and keep serving on the SVIDs they hold.
    let before = load.ok();
    spire.stop_agent();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(readyz(mesh.sidecar_admin), "200");
    assert_eq!(readyz(mesh.gateway_admin), "200");
    assert!(
        load.ok() > before + 5,
        "calls kept flowing with the agent down"
    );

    // The agent comes back: both pick up fresh SVIDs by themselves.
    spire.start_agent();
    let held = served_serial(mesh.sidecar_inbound, &orchestrator);
    wait_rotated(mesh.sidecar_inbound, &orchestrator, &held, limit);
    let held = served_serial(mesh.gateway_addr, &orchestrator);
    wait_rotated(mesh.gateway_addr, &orchestrator, &held, limit);

    let (ok, failed) = load.finish();
    eprintln!("{ok} calls through the gateway during rotations and the agent restart");
    assert!(
        failed.is_empty(),
        "{} failed calls: {failed:?}",
        failed.len()
    );
    assert!(ok > 50, "only {ok} calls");
}

fn spiffe_helper_config(spire: &Spire, dir: &Path) -> PathBuf {
    let config = dir.join("helper.conf");
    std::fs::write(
        &config,
        format!(
            "agent_address = \"{}\"\ncmd = \"\"\ncmd_args = \"\"\ncert_dir = \"{}\"\n\
             renew_signal = \"\"\nsvid_file_name = \"svid.pem\"\nsvid_key_file_name = \"svid_key.pem\"\n\
             svid_bundle_file_name = \"svid_bundle.pem\"\ndaemon_mode = true\n",
            spire.agent_socket().display(),
            dir.display()
        ),
    )
    .unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_helper_files_feed_svid_dir_across_rotations() {
    let _serial = SERIAL.lock().await;
    let _timer = TierTimer::new("spire: spiffe-helper -> --svid-dir");
    let Some([helper_bin]) = warden_testkit::deps::tools("spiffe-helper", &["spiffe-helper"])
        .map(|v| <[PathBuf; 1]>::try_from(v).unwrap())
    else {
        return;
    };
    let ttl = Duration::from_secs(20);
    let entries = [
        Entry::new(SPECIALIST, UID_HELPER, ttl),
        Entry::new(ORCHESTRATOR, UID_ORCHESTRATOR, HOUR),
    ];
    let Some(spire) = Spire::start("warden.local", &entries) else {
        return;
    };
    let svid_dir = spire.workload_dir("specialist-svid", UID_HELPER);
    let config = spiffe_helper_config(&spire, &svid_dir);
    let helper_bin = spire.readable_copy(&helper_bin);
    let mut command = as_uid(UID_HELPER, &helper_bin);
    command.arg("-config").arg(&config);
    let log = spire.dir().join("spiffe-helper.log");
    let _helper = spawn_logged(&mut command, &log);
    wait_until("spiffe-helper", Duration::from_secs(30), &log, || {
        svid_dir.join("svid_bundle.pem").exists() && svid_dir.join("svid_key.pem").exists()
    });

    let app = warden_testkit::app::start().await;
    let (_sidecar, inbound, _) = sidecar_as(
        &spire,
        UID_HELPER,
        app.addr,
        &["--svid-dir", svid_dir.to_str().unwrap(), "--mode", "strict"],
    );
    let orchestrator = Client::fetch(&spire, "orchestrator", UID_ORCHESTRATOR);
    let (status, body) = orchestrator.call(&format!("https://{inbound}/headers"), &[]);
    assert_eq!(status, "200", "{body}");
    assert!(
        headers(&body)["x-forwarded-client-cert"]
            .as_str()
            .is_some_and(|x| x.contains(&format!("URI={ORCHESTRATOR}"))),
        "{body}"
    );

    let load = Load::start(format!("https://{inbound}/headers"), &orchestrator);
    let limit = ttl + Duration::from_secs(5);
    let first = served_serial(inbound, &orchestrator);
    let second = wait_rotated(inbound, &orchestrator, &first, limit);
    let third = wait_rotated(inbound, &orchestrator, &second, limit);
    eprintln!("spiffe-helper rotations served by the sidecar: {first} -> {second} -> {third}");
    let (ok, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "{} failed calls: {failed:?}",
        failed.len()
    );
    assert!(ok > 20, "only {ok} calls");
}

/// Whether the certificate served at `addr` is still valid one second from now; `None` when
/// no certificate could be read.
fn served_still_valid(addr: SocketAddr, client: &Client) -> Option<bool> {
    let shown = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} -cert {} -key {} </dev/null 2>/dev/null \
             | openssl x509 -noout -checkend 1",
            client.cert, client.key
        ))
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&shown.stdout);
    if text.contains("will not expire") {
        Some(true)
    } else if text.contains("will expire") {
        Some(false)
    } else {
        None
    }
}

/// The agent stops and stays away past the expiry of the SVIDs the sidecar and gateway hold:
/// ready while the SVID is valid; with `expect_unready`, `/readyz` must then turn 503; the
/// agent comes back and everything recovers by itself.
async fn agent_outage_past_expiry(expect_unready: bool) {
    let _serial = SERIAL.lock().await;
    let _timer = TierTimer::new("spire: agent outage past SVID expiry");
    let ttl = Duration::from_secs(12);
    let Some(mut spire) = Spire::start("warden.local", &mesh_entries(ttl)) else {
        return;
    };
    let mesh = Mesh::start(&spire).await;
    let orchestrator = Client::fetch(&spire, "orchestrator", UID_ORCHESTRATOR);
    spire.stop_agent();

    let deadline = Instant::now() + ttl + Duration::from_secs(10);
    loop {
        let ready = readyz(mesh.sidecar_admin);
        match served_still_valid(mesh.sidecar_inbound, &orchestrator) {
            Some(true) => assert_eq!(ready, "200", "unready while its SVID is valid"),
            Some(false) => break,
            None => {}
        }
        assert!(Instant::now() < deadline, "the held SVID never expired");
        std::thread::sleep(Duration::from_millis(250));
    }
    if expect_unready {
        let log = spire.dir().join("sidecar.log");
        wait_until("sidecar unready", Duration::from_secs(5), &log, || {
            readyz(mesh.sidecar_admin) == "503"
        });
    }

    spire.start_agent();
    wait_ready(&spire, "sidecar", mesh.sidecar_admin);
    wait_ready(&spire, "gateway", mesh.gateway_admin);
    let start = Instant::now();
    while served_still_valid(mesh.sidecar_inbound, &orchestrator) != Some(true) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the sidecar never served a fresh SVID after the agent came back"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let (status, body) = orchestrator.call(&mesh.url("headers"), &[]);
    assert_eq!(status, "200", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_agent_outage_past_svid_expiry_everything_recovers_by_itself() {
    agent_outage_past_expiry(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_unready_when_the_held_svid_expires_without_the_agent() {
    agent_outage_past_expiry(true).await;
}
