//! `warden ca serve` as a real process, used by the `spiffe` crate's Workload API client and
//! `X509Source` — the same client code SPIRE users run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use spiffe::{WorkloadApiClient, X509Source};
use warden_identity::workload_api::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use warden_identity::workload_api::proto::{JwtsvidRequest, X509svidRequest};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
const ID: &str = "spiffe://warden.local/ns/team-alpha/sa/orchestrator";

/// A child process that is killed when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn warden(args: &[&str]) -> std::process::Output {
    Command::new(WARDEN)
        .args(args)
        .output()
        .expect("run warden")
}

fn serve(dir: &Path, ttl: &str) -> (Running, PathBuf) {
    let ca = dir.join("ca");
    let out = warden(&["ca", "init", "--dir", ca.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let socket = dir.join("agent.sock");
    let child = Command::new(WARDEN)
        .args([
            "ca",
            "serve",
            "--dir",
            ca.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
            "--id",
            ID,
            "--ttl",
            ttl,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn warden ca serve");
    let running = Running(child);
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (running, socket)
}

fn endpoint(socket: &Path) -> String {
    format!("unix:{}", socket.display())
}

fn not_after(der: &[u8]) -> SystemTime {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    UNIX_EPOCH + Duration::from_secs(cert.validity().not_after.timestamp() as u64)
}

#[tokio::test]
async fn spiffe_client_gets_svid_bundles_and_jwts_from_warden_ca_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, socket) = serve(dir.path(), "1h");
    let client = WorkloadApiClient::connect_to(endpoint(&socket))
        .await
        .unwrap();

    let svid = client.fetch_x509_svid().await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), ID);

    let bundles = client.fetch_x509_bundles().await.unwrap();
    let td = spiffe::TrustDomain::new("warden.local").unwrap();
    let bundle = bundles.get(&td).expect("bundle for warden.local");
    let root_pem = std::fs::read(dir.path().join("ca/ca.pem")).unwrap();
    let root = warden_identity::pem::certificates(&root_pem).unwrap();
    assert_eq!(bundle.authorities()[0].as_bytes(), root[0].as_ref());

    // The SVID the client got validates as an SVID of warden.local against that bundle.
    let chain: Vec<_> = svid
        .cert_chain()
        .iter()
        .map(|c| rustls_pki_types::CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let set = warden_identity::TrustBundleSet::single(
        warden_identity::TrustBundle::from_der("warden.local".parse().unwrap(), root, "ca.pem")
            .unwrap(),
    );
    let verified = warden_identity::svid::validate_x509_svid(
        &chain[0],
        &chain[1..],
        &set,
        warden_identity::svid::PeerRole::Client,
        rustls_pki_types::UnixTime::now(),
    )
    .unwrap();
    assert_eq!(verified.as_str(), ID);

    // JWT-SVIDs: issued for the caller's own ID, validated by the server for the right
    // audience only, and the JWT bundle parses as a SPIFFE bundle.
    let jwt = client
        .fetch_jwt_svid(["warden-gateway"], None)
        .await
        .unwrap();
    assert_eq!(jwt.spiffe_id().to_string(), ID);
    let validated = client
        .validate_jwt_token("warden-gateway", jwt.token())
        .await
        .unwrap();
    assert_eq!(validated.spiffe_id().to_string(), ID);
    assert!(
        client
            .validate_jwt_token("someone-else", jwt.token())
            .await
            .is_err()
    );
    let jwt_bundles = client.fetch_jwt_bundles().await.unwrap();
    assert!(jwt_bundles.get(&td).is_some());
}

#[tokio::test]
async fn x509_source_sees_the_rotated_svid_before_the_first_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, socket) = serve(dir.path(), "4s");
    let source = X509Source::builder()
        .endpoint(endpoint(&socket))
        .build()
        .await
        .unwrap();
    let first = source.svid().unwrap();
    let first_expiry = not_after(first.leaf().as_bytes());
    let mut updates = source.updated();
    tokio::time::timeout(Duration::from_secs(4), updates.changed())
        .await
        .expect("a rotation within the TTL")
        .unwrap();
    let second = source.svid().unwrap();
    assert_ne!(second.leaf().as_bytes(), first.leaf().as_bytes());
    assert_eq!(second.spiffe_id().to_string(), ID);
    assert!(
        SystemTime::now() < first_expiry,
        "rotation came only after expiry"
    );
    assert!(not_after(second.leaf().as_bytes()) > first_expiry);
    source.shutdown().await;
}

async fn raw_client(socket: &Path) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
    let socket = socket.to_owned();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap();
    SpiffeWorkloadApiClient::new(channel)
}

#[tokio::test]
async fn calls_without_the_security_header_get_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, socket) = serve(dir.path(), "1h");
    let mut client = raw_client(&socket).await;

    let err = client
        .fetch_x509svid(X509svidRequest {})
        .await
        .expect_err("no header, no SVID");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("security header"), "{err}");
    let err = client
        .fetch_jwtsvid(JwtsvidRequest {
            audience: vec!["x".into()],
            spiffe_id: String::new(),
        })
        .await
        .expect_err("no header, no JWT");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // The same call with the header succeeds: it is the header that made the difference.
    let mut request = tonic::Request::new(X509svidRequest {});
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    let mut stream = client.fetch_x509svid(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.svids[0].spiffe_id, ID);
}

/// Runs one of our SDK test clients (`crates/cli/tests/sdk`) against a fresh `warden ca serve`
/// whose SVIDs rotate every 3 s, asking it to follow two rotations; its JSON report.
fn sdk_client_report(program: &Path, args_before: &[&Path]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let (_server, socket) = serve(dir.path(), "6s");
    let out = Command::new(program)
        .args(args_before)
        .arg(&socket)
        .args(["warden-gateway", "2"])
        .output()
        .expect("run the SDK test client");
    assert!(
        out.status.success(),
        "{} failed:\n{}\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "report is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// What both SDK clients must have seen: their own SVID, the bundle, JWT-SVIDs that validate
/// on the server and locally (and not for another audience), and three SVIDs in a row.
fn assert_sdk_report(report: &serde_json::Value) {
    assert_eq!(report["x509_id"], ID, "{report}");
    assert!(report["x509_chain"].as_u64() >= Some(1), "{report}");
    assert_eq!(
        report["bundle_trust_domains"],
        serde_json::json!(["warden.local"])
    );
    assert_eq!(report["jwt_subject"], ID);
    assert_eq!(
        report["jwt_audience"],
        serde_json::json!(["warden-gateway"])
    );
    assert_eq!(report["jwt_validated_by_server"], ID);
    assert!(
        report["jwt_wrong_audience_error"]
            .as_str()
            .is_some_and(|e| e.to_lowercase().contains("audience")),
        "a token for warden-gateway must not validate for someone-else: {report}"
    );
    let serials = report["watched_serials"].as_array().expect("serials");
    assert_eq!(serials.len(), 3, "two rotations followed: {report}");
    let distinct: std::collections::HashSet<_> = serials.iter().collect();
    assert_eq!(distinct.len(), 3, "{report}");
}

#[test]
fn python_spiffe_library_gets_svids_bundles_jwts_and_rotations() {
    let test = "python_spiffe_library_gets_svids_bundles_jwts_and_rotations";
    let Some(python) = warden_testkit::sdk::python(test) else {
        return;
    };
    let script = warden_testkit::sdk::sources().join("python/spiffe_client.py");
    let report = sdk_client_report(&python, &[&script]);
    assert_sdk_report(&report);
    assert_eq!(report["jwt_validated_locally"], ID);
    assert_eq!(report["watch_errors"], serde_json::json!([]));
    assert!(
        report["jwt_other_subject_error"]
            .as_str()
            .is_some_and(|e| e.contains("may not obtain")),
        "a workload cannot get another's JWT-SVID: {report}"
    );
    assert_eq!(report["x509_source_id"], ID);
    assert_eq!(report["jwt_source_subject"], ID);
}

#[test]
fn go_spiffe_gets_svids_bundles_jwts_and_rotations() {
    let test = "go_spiffe_gets_svids_bundles_jwts_and_rotations";
    let Some(client) = warden_testkit::sdk::go_spiffe_client(test) else {
        return;
    };
    let report = sdk_client_report(&client, &[]);
    assert_sdk_report(&report);
    assert_eq!(report["jwt_validated_locally"], true);
}
