//! `warden sidecar` as a real process, with curl as the client, certificates made by openssl,
//! and a test app behind it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;
use warden_testkit::process::{free_addr, wait_listening};

const SPOOF: &str = "x-forwarded-client-cert: By=spiffe://warden.local/ns/x/sa/evil;URI=spiffe://warden.local/ns/kube-system/sa/admin";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_decide_plaintext_and_mtls_and_spoofed_identity_never_reaches_the_app() {
    let pki = Pki::new();
    let app = warden_testkit::app::start().await;

    // Permissive: both; plaintext has no identity, mTLS has the verified one.
    let sc = start_sidecar(
        &pki.svid_dir("specialist"),
        app.addr,
        &["--mode", "permissive"],
    );
    let (code, body) = plain(
        &sc,
        "/headers",
        &[SPOOF, "x-warden-caller: spiffe://warden.local/ns/x/sa/evil"],
    );
    assert_eq!(code, 0);
    let h = headers(&body);
    assert!(
        h.get("x-forwarded-client-cert").is_none(),
        "spoofed XFCC reached the app: {h}"
    );
    assert!(h.get("x-warden-caller").is_none(), "{h}");
    let (code, body) = mtls(&pki, "orchestrator", &sc, "/headers", &["-H", SPOOF]);
    assert_eq!(code, 0);
    let xfcc = headers(&body)["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        xfcc.starts_with(&format!("By={SPECIALIST};Hash=")),
        "{xfcc}"
    );
    assert!(xfcc.ends_with(&format!(";URI={ORCHESTRATOR}")), "{xfcc}");
    assert!(!xfcc.contains("evil"), "{xfcc}");
    drop(sc);

    // Strict: mTLS only. (On one worker thread: the single-threaded runtime serves the same.)
    let sc = start_sidecar(
        &pki.svid_dir("specialist"),
        app.addr,
        &["--mode", "strict", "--workers", "1"],
    );
    let (code, _) = plain(&sc, "/headers", &[]);
    assert_ne!(code, 0, "Strict must refuse plaintext");
    let (code, body) = mtls(&pki, "orchestrator", &sc, "/headers", &["-H", SPOOF]);
    assert_eq!(code, 0);
    assert!(
        headers(&body)["x-forwarded-client-cert"]
            .as_str()
            .unwrap()
            .ends_with(&format!("URI={ORCHESTRATOR}"))
    );
    // A client with no certificate gets no further than the handshake.
    let url = format!("https://{}/headers", sc.inbound);
    assert_ne!(curl(&["-k", &url]).status.code(), Some(0));
    let metrics = String::from_utf8_lossy(&curl(&[&format!("http://{}/metrics", sc.admin)]).stdout)
        .into_owned();
    assert!(
        metrics.contains("warden_handshake_failures_total{reason=\"plaintext_in_strict\"} 1"),
        "{metrics}"
    );
    drop(sc);

    // Disabled: plaintext only.
    let sc = start_sidecar(
        &pki.svid_dir("specialist"),
        app.addr,
        &["--mode", "disabled"],
    );
    let (code, body) = plain(&sc, "/headers", &[SPOOF]);
    assert_eq!(code, 0);
    assert!(headers(&body).get("x-forwarded-client-cert").is_none());
    let (code, _) = mtls(&pki, "orchestrator", &sc, "/headers", &[]);
    assert_ne!(code, 0, "Disabled must refuse TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_outside_the_allow_lists_get_403_naming_the_rule() {
    let pki = Pki::new();
    let app = warden_testkit::app::start().await;
    let sc = start_sidecar(
        &pki.svid_dir("specialist"),
        app.addr,
        &[
            "--allow-namespace",
            "team-alpha",
            "--allow-id",
            "spiffe://warden.local/ns/ops/sa/oncall",
        ],
    );
    let (code, body) = mtls(&pki, "orchestrator", &sc, "/headers", &[]);
    assert_eq!(code, 0);
    assert!(headers(&body)["x-forwarded-client-cert"].is_string());

    let (_, body) = mtls(&pki, "rogue", &sc, "/headers", &["-w", "\n%{http_code}"]);
    let (json, status) = body.rsplit_once('\n').unwrap();
    assert_eq!(status, "403");
    let json = headers(json);
    assert_eq!(json["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(
        json["error"]["details"][0]["metadata"]["rule"],
        "allow_list"
    );
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--allow-namespace")
    );

    // A JSON-RPC request gets a JSON-RPC error object with its id.
    let rpc = r#"{"jsonrpc":"2.0","id":"req-7","method":"SendMessage","params":{}}"#;
    let (_, body) = mtls(
        &pki,
        "rogue",
        &sc,
        "/",
        &[
            "-H",
            "content-type: application/json",
            "-d",
            rpc,
            "-w",
            "\n%{http_code}",
        ],
    );
    let (json, status) = body.rsplit_once('\n').unwrap();
    assert_eq!(status, "403");
    let json = headers(json);
    assert_eq!(json["jsonrpc"], "2.0");
    assert_eq!(json["id"], "req-7");
    assert_eq!(json["error"]["data"]["rule"], "allow_list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svid_rotation_every_second_fails_no_request_and_mode_changes_apply_live() {
    let pki = Pki::new();
    let app = warden_testkit::app::start().await;
    let dir = pki.dir.path();
    let ca = dir.join("warden-ca");
    let init = Command::new(WARDEN)
        .args(["ca", "init", "--dir", ca.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(init.status.success());
    let issue = |id: &str, out: &Path| {
        let ok = Command::new(WARDEN)
            .args([
                "ca",
                "issue",
                "--dir",
                ca.to_str().unwrap(),
                "--id",
                id,
                "--out",
                out.to_str().unwrap(),
                "--ttl",
                "10m",
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    let server_dir = dir.join("rotating");
    let client_dir = dir.join("client");
    issue(SPECIALIST, &server_dir);
    issue(ORCHESTRATOR, &client_dir);
    let config = dir.join("sidecar.yaml");
    std::fs::write(&config, "mode: permissive\n").unwrap();
    let mut sc = start_sidecar(
        &server_dir,
        app.addr,
        &["--config", config.to_str().unwrap()],
    );
    let pid = sc.process.pid();

    // Requests back to back (a new TLS handshake each) while the SVID is replaced every second.
    let rotator = {
        let (ca, server_dir) = (ca.clone(), server_dir.clone());
        std::thread::spawn(move || {
            for _ in 0..5 {
                std::thread::sleep(Duration::from_secs(1));
                let ok = Command::new(WARDEN)
                    .args([
                        "ca",
                        "issue",
                        "--dir",
                        ca.to_str().unwrap(),
                        "--id",
                        SPECIALIST,
                        "--out",
                        server_dir.to_str().unwrap(),
                    ])
                    .stdout(Stdio::null())
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
            }
        })
    };
    let url = format!("https://{}/headers", sc.inbound);
    let (cert, key) = (client_dir.join("svid.pem"), client_dir.join("svid_key.pem"));
    let (mut count, mut failures, mut serials) = (0, Vec::new(), std::collections::HashSet::new());
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(5500) {
        count += 1;
        let out = curl(&[
            "-k",
            "-v",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            &url,
        ]);
        if !out.status.success() {
            failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        // curl -v prints the server certificate's dates; a new SVID has a new start date.
        let verbose = String::from_utf8_lossy(&out.stderr).into_owned();
        if let Some(line) = verbose.lines().find(|l| l.contains("start date:")) {
            serials.insert(line.to_owned());
        }
    }
    rotator.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {count} requests failed: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(count >= 20, "only {count} requests");
    assert!(
        serials.len() >= 3,
        "the server presented only {} distinct SVIDs",
        serials.len()
    );

    // Permissive → Strict by editing the config file: new plaintext connections are refused,
    // mTLS goes on, and it is the same process.
    assert_eq!(plain(&sc, "/headers", &[]).0, 0);
    std::fs::write(&config, "mode: strict\n").unwrap();
    let start = Instant::now();
    while plain(&sc, "/headers", &[]).0 == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "Strict never took effect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = curl(&[
        "-k",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        &url,
    ]);
    assert!(out.status.success());
    assert!(sc.process.alive());
    assert_eq!(sc.process.pid(), pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_works_and_server_sent_events_are_not_buffered() {
    let pki = Pki::new();
    let app = warden_testkit::app::start().await;
    let sc = start_sidecar(&pki.svid_dir("specialist"), app.addr, &[]);
    let (code, version) = mtls(
        &pki,
        "orchestrator",
        &sc,
        "/headers",
        &["--http2", "-o", "/dev/null", "-w", "%{http_version}"],
    );
    assert_eq!((code, version.as_str()), (0, "2"));
    let (code, version) = mtls(
        &pki,
        "orchestrator",
        &sc,
        "/headers",
        &["--http1.1", "-o", "/dev/null", "-w", "%{http_version}"],
    );
    assert_eq!((code, version.as_str()), (0, "1.1"));
    let out = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &format!("http://{}/headers", sc.inbound),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2");

    // The app sends the first event and holds the stream open until released; the client
    // must see that event first.
    let (cert, key) = (pki.cert("orchestrator"), pki.key("orchestrator"));
    assert_sse_not_buffered(&format!("https://{}/sse", sc.inbound), &cert, &key, &app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_turns_the_apps_plain_request_into_mtls_with_its_svid() {
    let pki = Pki::new();
    let far_app = warden_testkit::app::start().await;
    let near_app = warden_testkit::app::start().await;
    // The far side: Strict, so only mTLS gets in.
    let far = start_sidecar(
        &pki.svid_dir("specialist"),
        far_app.addr,
        &["--mode", "strict"],
    );
    let egress = free_addr();
    let far_url = format!("http://{}", far.inbound);
    let mesh_peer = format!("{}={SPECIALIST}", far.inbound);
    let _near = start_sidecar(
        &pki.svid_dir("orchestrator"),
        near_app.addr,
        &[
            "--egress",
            &egress.to_string(),
            "--gateway-url",
            &far_url,
            "--gateway-id",
            SPECIALIST,
            "--mesh-peer",
            &mesh_peer,
        ],
    );
    wait_listening(egress, Duration::from_secs(5));

    // Origin-form: to --gateway-url.
    let out = curl(&[&format!("http://{egress}/headers")]);
    assert!(out.status.success());
    let h = headers(&String::from_utf8_lossy(&out.stdout));
    let xfcc = h["x-forwarded-client-cert"].as_str().unwrap_or_default();
    assert!(xfcc.starts_with(&format!("By={SPECIALIST};")), "{h}");
    assert!(xfcc.ends_with(&format!("URI={ORCHESTRATOR}")), "{h}");

    // Absolute-form (the app uses the egress as an HTTP proxy) to a --mesh-peer.
    let out = curl(&[
        "-x",
        &format!("http://{egress}"),
        &format!("http://{}/headers", far.inbound),
    ]);
    assert!(out.status.success());
    let h = headers(&String::from_utf8_lossy(&out.stdout));
    assert!(
        h["x-forwarded-client-cert"]
            .as_str()
            .unwrap_or_default()
            .ends_with(&format!("URI={ORCHESTRATOR}")),
        "{h}"
    );

    // If the far side is not who egress expects, the request fails rather than going to an
    // impostor.
    let wrong = start_sidecar(&pki.svid_dir("rogue"), far_app.addr, &["--mode", "strict"]);
    let egress2 = free_addr();
    let _near2 = start_sidecar(
        &pki.svid_dir("orchestrator"),
        near_app.addr,
        &[
            "--egress",
            &egress2.to_string(),
            "--gateway-url",
            &format!("http://{}", wrong.inbound),
            "--gateway-id",
            SPECIALIST,
        ],
    );
    wait_listening(egress2, Duration::from_secs(5));
    let out = curl(&["-w", "\n%{http_code}", &format!("http://{egress2}/headers")]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.ends_with("502"), "{text}");
    assert!(text.contains("upstream_unavailable"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let pki = Pki::new();
    let app = warden_testkit::app::start().await;
    let mut sc = start_sidecar(&pki.svid_dir("specialist"), app.addr, &[]);
    let url = format!("http://{}/slow", sc.inbound);
    let slow = std::thread::spawn(move || curl(&[&url]));
    std::thread::sleep(Duration::from_millis(300));
    sc.process.terminate();
    let out = slow.join().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "slow done");
    assert_eq!(sc.process.wait_exit(Duration::from_secs(10)), Some(0));
    assert_ne!(
        plain(&sc, "/headers", &[]).0,
        0,
        "no new connections after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_first_svid() {
    let pki = Pki::new();
    let app = warden_testkit::app::start().await;
    let empty = pki.dir.path().join("not-yet");
    std::fs::create_dir_all(&empty).unwrap();
    let sc = start_sidecar(&empty, app.addr, &[]);
    let readyz = format!("http://{}/readyz", sc.admin);
    assert_eq!(
        String::from_utf8_lossy(&curl(&["-o", "/dev/null", "-w", "%{http_code}", &readyz]).stdout),
        "503"
    );
    for file in ["svid.pem", "svid_key.pem", "svid_bundle.pem"] {
        std::fs::copy(pki.svid_dir("specialist").join(file), empty.join(file)).unwrap();
    }
    let start = Instant::now();
    while String::from_utf8_lossy(&curl(&["-o", "/dev/null", "-w", "%{http_code}", &readyz]).stdout)
        != "200"
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(mtls(&pki, "orchestrator", &sc, "/headers", &[]).0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_snapshot_the_mesh_policy_decides_and_only_the_gateway_may_forward_a_caller() {
    let pki = Pki::new();
    let app = warden_testkit::app::start().await;
    let snapshot = pki.dir.path().join("snapshot.json");
    compile_example(&snapshot, |t| t.to_owned());
    let mut sc = start_sidecar(
        &pki.svid_dir("specialist"),
        app.addr,
        &[
            "--snapshot",
            snapshot.to_str().unwrap(),
            "--agent",
            "team-beta/specialist",
        ],
    );
    let pid = sc.process.pid();

    // The example makes the specialist Strict and admits namespaces labelled for it.
    assert_ne!(
        plain(&sc, "/headers", &[]).0,
        0,
        "the snapshot's Strict mode refuses plaintext"
    );
    let (code, body) = mtls(&pki, "orchestrator", &sc, "/headers", &[]);
    assert_eq!(code, 0);
    assert!(
        headers(&body)["x-forwarded-client-cert"]
            .as_str()
            .unwrap()
            .ends_with(&format!("URI={ORCHESTRATOR}"))
    );
    let (_, body) = mtls(&pki, "rogue", &sc, "/headers", &["-w", "\n%{http_code}"]);
    let (json, status) = body.rsplit_once('\n').unwrap();
    assert_eq!(status, "403");
    assert_eq!(
        headers(json)["error"]["details"][0]["metadata"]["rule"],
        "namespace_selector"
    );

    // The gateway forwards callers; the decision is on the forwarded caller.
    let forwarded_rogue = format!("x-warden-caller: {ROGUE}");
    let forwarded_orchestrator = format!("x-warden-caller: {ORCHESTRATOR}");
    let (_, body) = mtls(
        &pki,
        "gateway",
        &sc,
        "/headers",
        &["-H", &forwarded_rogue, "-w", "\n%{http_code}"],
    );
    assert!(body.ends_with("403"), "{body}");
    let (code, body) = mtls(
        &pki,
        "gateway",
        &sc,
        "/headers",
        &["-H", &forwarded_orchestrator],
    );
    assert_eq!(code, 0);
    let xfcc = headers(&body)["x-forwarded-client-cert"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(xfcc, format!("By={SPECIALIST};URI={ORCHESTRATOR}"));
    // The gateway alone gets the card, nothing else.
    let (_, body) = mtls(&pki, "gateway", &sc, "/headers", &["-w", "\n%{http_code}"]);
    assert!(body.ends_with("403"), "{body}");
    let (code, _) = mtls(&pki, "gateway", &sc, "/.well-known/agent-card.json", &[]);
    assert_eq!(code, 0);
    // Anyone else claiming to forward a caller is decided as itself.
    let (_, body) = mtls(
        &pki,
        "rogue",
        &sc,
        "/headers",
        &["-H", &forwarded_orchestrator, "-w", "\n%{http_code}"],
    );
    assert!(body.ends_with("403"), "{body}");

    // A policy change in the snapshot applies without a restart: admit everyone.
    compile_example(&snapshot, |t| {
        t.replace("    from: Selector\n    selector:\n      matchLabels:\n        a2a-access: specialist\n", "    from: All\n")
    });
    let start = Instant::now();
    while mtls(&pki, "rogue", &sc, "/headers", &[])
        .1
        .contains("namespace_selector")
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the new snapshot never applied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        headers(&mtls(&pki, "rogue", &sc, "/headers", &[]).1)["x-forwarded-client-cert"]
            .is_string()
    );
    // A broken snapshot keeps the last good one.
    std::fs::write(&snapshot, "{ not json").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(mtls(&pki, "rogue", &sc, "/headers", &[]).0, 0);
    assert!(sc.process.alive());
    assert_eq!(sc.process.pid(), pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_oversized_requests_and_silent_peers_do_not_stall_others() {
    use std::io::Write;
    let pki = Pki::new();
    let app = warden_testkit::app::start().await;
    let sc = start_sidecar(
        &pki.svid_dir("specialist"),
        app.addr,
        &[
            "--max-body-bytes",
            "1024",
            "--max-header-bytes",
            "8192",
            "--handshake-timeout",
            "1s",
        ],
    );
    // A body over the limit: 413 naming the limit (declared length and streamed alike).
    let url = format!("http://{}/echo", sc.inbound);
    let big = "x".repeat(4096);
    let out = curl(&["-w", "\n%{http_code}", "-d", &big, &url]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.ends_with("413") && text.contains("max_body_bytes"),
        "{text}"
    );
    let out = curl(&[
        "-w",
        "\n%{http_code}",
        "-H",
        "transfer-encoding: chunked",
        "-d",
        &big,
        &url,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.ends_with("413"), "{text}");
    let out = curl(&["-d", "small", &url]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "small");
    // Headers over the limit are refused by the HTTP layer (431).
    let huge = format!("x-big: {}", "y".repeat(16 * 1024));
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &huge,
        &format!("http://{}/headers", sc.inbound),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "431");

    // Silent peers (no byte, or half a TLS hello) hold no one up, and are cut at the
    // handshake timeout.
    let mut silent: Vec<std::net::TcpStream> = (0..5)
        .map(|_| std::net::TcpStream::connect(sc.inbound).unwrap())
        .collect();
    silent[0].write_all(&[0x16, 0x03, 0x01]).unwrap();
    let start = Instant::now();
    assert_eq!(mtls(&pki, "orchestrator", &sc, "/headers", &[]).0, 0);
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "a request waited on silent peers"
    );
    std::thread::sleep(Duration::from_millis(1500));
    for stream in &mut silent {
        use std::io::Read;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 16];
        assert!(
            matches!(stream.read(&mut buf), Ok(0) | Err(_)),
            "a silent connection was not closed"
        );
    }
    let metrics = String::from_utf8_lossy(&curl(&[&format!("http://{}/metrics", sc.admin)]).stdout)
        .into_owned();
    assert!(
        metrics.contains("warden_handshake_failures_total{reason=\"timeout\"} 5"),
        "{metrics}"
    );
}

/// A listener that answers nothing and counts the bytes any connection sends it.
async fn counting_listener() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = std::sync::Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = tcp.read(&mut buf).await {
                    count.fetch_add(n, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, received)
}

/// `--app-uid`: a connection to the app is used only when its port is held by one of those
/// uids. Every port here is this test's (one uid), so a sidecar told another uid sees what it
/// sees when another user took the app's port: the caller gets 502 `app_not_owned` naming
/// the address and both uids, the listener gets not a byte, the refusal is counted. Told this
/// uid (in its `--config` file, `app-uid`), the sidecar serves the call with the verified XFCC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_is_used_only_while_an_app_uid_holds_its_port() {
    use std::sync::atomic::Ordering;
    let pki = Pki::new();
    let me = warden_local::users::OsUser::current().uid;
    let other = me.wrapping_add(4242);

    let (impostor, received) = counting_listener().await;
    let sc = start_sidecar(
        &pki.svid_dir("specialist"),
        impostor,
        &["--app-uid", &other.to_string()],
    );
    let (_, body) = mtls(
        &pki,
        "orchestrator",
        &sc,
        "/headers",
        &["-w", "\n%{http_code}"],
    );
    let (json, status) = body.rsplit_once('\n').unwrap();
    assert_eq!(status, "502", "{json}");
    let error = headers(json);
    assert_eq!(error["error"]["rule"], "app_not_owned", "{json}");
    let message = error["error"]["message"].as_str().unwrap();
    for named in [impostor.to_string(), format!("uid {me}"), other.to_string()] {
        assert!(message.contains(&named), "{named} not in {message}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(received.load(Ordering::SeqCst), 0, "the impostor got bytes");
    let metrics = String::from_utf8_lossy(&curl(&[&format!("http://{}/metrics", sc.admin)]).stdout)
        .into_owned();
    assert!(
        metrics.contains("warden_connections_closed_total{reason=\"app_uid\"} 1"),
        "{metrics}"
    );
    drop(sc);

    let app = warden_testkit::app::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sidecar.yaml");
    std::fs::write(&config, format!("app-uid: [{other}, {me}]\n")).unwrap();
    let sc = start_sidecar(
        &pki.svid_dir("specialist"),
        app.addr,
        &["--config", config.to_str().unwrap()],
    );
    let (code, body) = mtls(&pki, "orchestrator", &sc, "/headers", &[]);
    assert_eq!(code, 0, "{body}");
    assert!(
        headers(&body)["x-forwarded-client-cert"]
            .as_str()
            .unwrap()
            .ends_with(&format!("URI={ORCHESTRATOR}")),
        "{body}"
    );
}
