//! The red team's attacks on the data plane (issue 11), each against real `warden`
//! processes over loopback, bounded in count and time.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP/2 connection (prior knowledge, plaintext) that answers PINGs and SETTINGS — the
/// client library does — and never sends a request. Resolves when the server closes it.
async fn silent_http2(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = hyper::client::conn::http2::handshake::<
        _,
        _,
        http_body_util::Empty<bytes::Bytes>,
    >(TokioExecutor::new(), TokioIo::new(tcp))
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _keep = send;
        let _ = conn.await;
    })
}

/// An HTTP/2 connection that makes one request, then stays open answering PINGs.
async fn used_http2(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http2::handshake::<
        _,
        _,
        http_body_util::Empty<bytes::Bytes>,
    >(TokioExecutor::new(), TokioIo::new(tcp))
    .await
    .expect("HTTP/2 handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    send.ready().await.expect("HTTP/2 ready");
    let request = http::Request::get(format!("http://{addr}/headers"))
        .body(http_body_util::Empty::new())
        .expect("request");
    let response = send.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    drop(response);
    tokio::spawn(async move {
        let _keep = send;
        let _ = task.await;
    })
}

fn metrics(admin: SocketAddr) -> String {
    String::from_utf8_lossy(&curl(&[&format!("http://{admin}/metrics")]).stdout).into_owned()
}

fn closed_count(admin: SocketAddr, reason: &str) -> u64 {
    let prefix = format!("warden_connections_closed_total{{reason=\"{reason}\"}} ");
    metrics(admin)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Issue 11.1: connections that never ask anything fill every slot; a legitimate caller must
/// still be served (the longest-idle connection is closed for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_http2_connections_at_the_limit_do_not_lock_out_a_caller() {
    let pki = Pki::new();
    let app = warden_testkit::app::start().await;
    let sidecar = start_sidecar(
        &pki.svid_dir("specialist"),
        app.addr,
        &[
            "--mode",
            "permissive",
            "--max-connections",
            "8",
            "--header-read-timeout",
            "60s",
            "--idle-timeout",
            "60s",
        ],
    );
    let mut attackers = Vec::new();
    for _ in 0..8 {
        attackers.push(silent_http2(sidecar.inbound).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (code, body) = tokio::task::spawn_blocking({
        let url = format!("http://{}/headers", sidecar.inbound);
        move || {
            let out = curl(&["-w", "\n%{http_code}", &url]);
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    })
    .await
    .map(|text| {
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
        (code.to_owned(), body.to_owned())
    })
    .expect("curl");
    assert_eq!(code, "200", "a caller at the limit was refused: {body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        closed_count(sidecar.admin, "shed") >= 1,
        "{}",
        metrics(sidecar.admin)
    );
    let closed = attackers.iter().filter(|a| a.is_finished()).count();
    assert!(closed >= 1, "no silent connection was closed");
}

/// Issue 11.1: a connection that never sends a request, one that went idle while answering
/// PINGs, and half-sent HTTP/1.1 headers (slowloris) are each closed by their timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_idle_and_slowloris_connections_are_closed_by_their_timeouts() {
    let pki = Pki::new();
    let app = warden_testkit::app::start().await;
    let sidecar = start_sidecar(
        &pki.svid_dir("specialist"),
        app.addr,
        &[
            "--mode",
            "permissive",
            "--header-read-timeout",
            "1s",
            "--idle-timeout",
            "4s",
        ],
    );
    let addr = sidecar.inbound;
    let started = Instant::now();
    let silent = silent_http2(addr).await;
    let idle = used_http2(addr).await;
    let mut slowloris = TcpStream::connect(addr).await.expect("connect");
    slowloris
        .write_all(b"GET /headers HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(3), slowloris.read(&mut buf)).await;
    assert!(
        read.is_ok(),
        "half-sent headers held the connection past 3 s"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    tokio::time::timeout(Duration::from_secs(4), silent)
        .await
        .expect("a silent HTTP/2 connection was kept past 4 s")
        .expect("task");
    tokio::time::timeout(Duration::from_secs(8), idle)
        .await
        .expect("an idle HTTP/2 connection answering PINGs was kept past 8 s")
        .expect("task");
    assert!(closed_count(sidecar.admin, "header_timeout") >= 1);
    assert!(
        closed_count(sidecar.admin, "idle") >= 1,
        "{}",
        metrics(sidecar.admin)
    );
}

const WSGI_APP: &str = r#"
import json, sys
from wsgiref.simple_server import make_server, WSGIRequestHandler

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

def app(environ, start_response):
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

make_server("127.0.0.1", int(sys.argv[1]), app, handler_class=Quiet).serve_forever()
"#;

/// A stdlib WSGI app (python3 wsgiref), which reads `_` in header names as `-`.
fn start_wsgi_app(dir: &std::path::Path) -> (warden_testkit::process::Running, SocketAddr) {
    let script = dir.join("wsgi_app.py");
    std::fs::write(&script, WSGI_APP).expect("write the WSGI app");
    let addr = warden_testkit::process::free_addr();
    let child = std::process::Command::new("python3")
        .arg(&script)
        .arg(addr.port().to_string())
        .spawn()
        .expect("python3 is installed (scripts/install-test-deps.sh)");
    let running = warden_testkit::process::Running(child);
    warden_testkit::process::wait_listening(addr, Duration::from_secs(10));
    (running, addr)
}

const LOOK_ALIKES: [&str; 3] = [
    "X_Forwarded_Client_Cert: By=spiffe://warden.local/ns/team-beta/sa/specialist;URI=spiffe://warden.local/ns/team-alpha/sa/orchestrator",
    "x-warden_caller: spiffe://warden.local/ns/team-alpha/sa/orchestrator",
    "x_spiffe_id: spiffe://warden.local/ns/team-alpha/sa/orchestrator",
];

/// Issue 11.3: identity-header look-alikes with `_` never reach a WSGI app behind a
/// Permissive sidecar (dropped by default), or are refused with 400 when so configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_look_alikes_of_identity_headers_never_reach_a_wsgi_app() {
    let pki = Pki::new();
    let (_app, app_addr) = start_wsgi_app(pki.dir.path());
    let sidecar = start_sidecar(
        &pki.svid_dir("specialist"),
        app_addr,
        &["--mode", "permissive"],
    );
    let mut args: Vec<&str> = LOOK_ALIKES.to_vec();
    args.push("x-ordinary: kept");
    let (code, body) = plain(&sidecar, "/whoami", &args);
    assert_eq!(code, 0, "{body}");
    let environ = headers(&body);
    for key in [
        "HTTP_X_FORWARDED_CLIENT_CERT",
        "HTTP_X_WARDEN_CALLER",
        "HTTP_X_SPIFFE_ID",
    ] {
        assert!(environ.get(key).is_none(), "{key} reached the app: {body}");
    }
    assert_eq!(environ["HTTP_X_ORDINARY"], "kept", "{body}");

    let strict = start_sidecar(
        &pki.svid_dir("specialist"),
        app_addr,
        &["--mode", "permissive", "--underscore-headers", "reject"],
    );
    let url = format!("http://{}/whoami", strict.inbound);
    let out = curl(&["-w", "\n%{http_code}", "-H", LOOK_ALIKES[1], &url]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", ""));
    assert_eq!(status, "400", "{body}");
    assert!(
        body.contains("x-warden_caller"),
        "the refusal names the header: {body}"
    );
}

fn reloads(admin: SocketAddr) -> u64 {
    metrics(admin)
        .lines()
        .find_map(|l| {
            l.strip_prefix("warden_reloads_total ")
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Issue 11.6: reading the snapshot (100 times) reloads nothing; a real change still applies
/// within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_snapshot_reloads_nothing_and_a_change_applies_within_a_second() {
    let pki = Pki::new();
    let app = warden_testkit::app::start().await;
    let snapshot = pki.dir.path().join("snapshot.json");
    compile_example(&snapshot, str::to_owned);
    let snap = snapshot.to_str().expect("path");
    let sidecar = start_sidecar(
        &pki.svid_dir("specialist"),
        app.addr,
        &["--snapshot", snap, "--agent", "team-beta/specialist"],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..100 {
        std::fs::read(&snapshot).expect("read the snapshot");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(reloads(sidecar.admin), 0, "reads set off reloads");

    compile_example(&snapshot, |text| text.replace("team-alpha", "team-delta"));
    let changed = Instant::now();
    while reloads(sidecar.admin) == 0 {
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "a real change was not applied within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reloads(sidecar.admin), 1, "one change, one reload");
}

/// Issue 11.7: a plaintext keep-alive connection opened under Permissive is not served as
/// anonymous after the sidecar's mode goes Strict: its next request is refused and it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_switch_to_strict_closes_plaintext_connections_at_their_next_request() {
    let pki = Pki::new();
    let app = warden_testkit::app::start().await;
    let config = pki.dir.path().join("sidecar.yaml");
    std::fs::write(&config, "mode: permissive\n").expect("write config");
    let sidecar = start_sidecar(
        &pki.svid_dir("specialist"),
        app.addr,
        &["--config", config.to_str().expect("path")],
    );
    let mut tcp = TcpStream::connect(sidecar.inbound).await.expect("connect");
    let request = b"GET /headers HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = vec![0u8; 8192];
    tcp.write_all(request).await.expect("write");
    let n = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf))
        .await
        .expect("an answer")
        .expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    std::fs::write(&config, "mode: strict\n").expect("write config");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    tcp.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was not closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("mode_changed"), "{answer}");
}

/// A raw HTTP/2 frame: 9-byte header (length, type, flags, stream id), then the payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Reads one frame: (type, flags, stream id, payload).
async fn read_h2_frame(tcp: &mut TcpStream) -> (u8, u8, u32, Vec<u8>) {
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).await.expect("frame header");
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.expect("frame payload");
    (head[3], head[4], stream, payload)
}

/// Issue 11.1: a client that ignores the server's SETTINGS_MAX_CONCURRENT_STREAMS (well-behaved
/// libraries queue instead, so the frames are written by hand) gets the streams past the cap
/// refused with RST_STREAM(REFUSED_STREAM); the streams within it are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_per_connection_cap_are_refused_and_the_others_served() {
    const CAP: u32 = 4;
    const OPENED: u32 = 10;
    let (headers, data, rst, settings) = (1u8, 0u8, 3u8, 4u8);
    let (end_stream, end_headers, ack) = (0x1u8, 0x4u8, 0x1u8);
    let pki = Pki::new();
    let app = warden_testkit::app::start().await;
    let cap = CAP.to_string();
    let sidecar = start_sidecar(
        &pki.svid_dir("specialist"),
        app.addr,
        &["--mode", "permissive", "--max-concurrent-streams", &cap],
    );
    let mut tcp = TcpStream::connect(sidecar.inbound).await.expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    tcp.write_all(&h2_frame(settings, 0, 0, &[]))
        .await
        .expect("settings");
    // The server's SETTINGS announce the cap; acknowledge them before opening streams.
    let announced = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (kind, flags, _, payload) = read_h2_frame(&mut tcp).await;
            if kind == settings && flags & ack == 0 {
                break payload
                    .chunks(6)
                    .find(|s| s[..2] == [0, 3])
                    .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
            }
        }
    })
    .await
    .expect("the server's SETTINGS");
    assert_eq!(announced, Some(CAP), "SETTINGS_MAX_CONCURRENT_STREAMS");
    tcp.write_all(&h2_frame(settings, ack, 0, &[]))
        .await
        .expect("ack");
    // POST /echo, bodies left open so that every stream stays in flight.
    let authority = sidecar.inbound.to_string();
    let mut block = vec![0x83, 0x86, 0x04, 5];
    block.extend_from_slice(b"/echo");
    block.extend_from_slice(&[0x01, authority.len() as u8]);
    block.extend_from_slice(authority.as_bytes());
    let streams: Vec<u32> = (0..OPENED).map(|i| 1 + 2 * i).collect();
    for &id in &streams {
        let frame = h2_frame(headers, end_headers, id, &block);
        tcp.write_all(&frame).await.expect("HEADERS");
    }
    let mut refused = std::collections::BTreeSet::new();
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        while refused.len() < (OPENED - CAP) as usize {
            let (kind, _, stream, payload) = read_h2_frame(&mut tcp).await;
            if kind == rst && payload == 7u32.to_be_bytes() {
                refused.insert(stream);
            }
        }
        // The streams within the cap end their bodies and are answered.
        let admitted: Vec<u32> = streams
            .iter()
            .copied()
            .filter(|s| !refused.contains(s))
            .collect();
        for &id in &admitted {
            tcp.write_all(&h2_frame(data, end_stream, id, &[]))
                .await
                .expect("DATA");
        }
        let mut answered = std::collections::BTreeMap::new();
        while answered.len() < admitted.len() {
            let (kind, _, stream, payload) = read_h2_frame(&mut tcp).await;
            if kind == headers {
                // 0x88: the static table's `:status: 200`.
                answered.insert(stream, payload.first() == Some(&0x88));
            }
            assert!(
                kind != rst || !admitted.contains(&stream),
                "stream {stream} reset"
            );
        }
        answered
    })
    .await;
    let answered = outcome.unwrap_or_else(|_| panic!("timed out; refused so far: {refused:?}"));
    assert_eq!(refused.len(), (OPENED - CAP) as usize, "{refused:?}");
    assert_eq!(answered.len(), CAP as usize, "{answered:?}");
    assert!(answered.values().all(|ok| *ok), "not all 200: {answered:?}");
}
