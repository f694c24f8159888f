//! Rotation under load: handshakes run back to back while the server's SVID is replaced every
//! second, from files (written non-atomically, as spiffe-helper does) and from the Workload
//! API. No handshake may fail, and the client must see several different server certificates.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_identity::ca::IssuedSvid;
use warden_identity::source::{FileSource, SvidSource, WorkloadApiSource, wait_ready};
use warden_identity::tls::{ClientAuth, client_config, server_config};
use warden_identity::workload_api::{WorkloadApiServer, WorkloadBinding};
use warden_identity::{Authorizer, CertificateAuthority, IdentityCell, SpiffeId, X509Identity};

const LOAD_FOR: Duration = Duration::from_secs(5);

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

/// Writes the three files one by one with plain writes and a pause between, like
/// spiffe-helper: a reader can catch the new certificate with the old key.
fn write_non_atomically(svid: &IssuedSvid, ca: &CertificateAuthority, dir: &Path) {
    let chain: String = svid
        .chain
        .iter()
        .map(|c| warden_identity::pem::encode_certificate(c))
        .collect();
    std::fs::write(dir.join("svid.pem"), chain).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(
        dir.join("svid_key.pem"),
        warden_identity::pem::encode("PRIVATE KEY", &svid.key_pkcs8),
    )
    .unwrap();
    std::fs::write(dir.join("svid_bundle.pem"), ca.bundle().to_pem()).unwrap();
}

fn client_identity(ca: &CertificateAuthority) -> Arc<IdentityCell> {
    let svid = ca
        .issue_x509(
            &id("spiffe://warden.local/ns/client/sa/client"),
            Duration::from_secs(600),
        )
        .unwrap();
    IdentityCell::with(
        X509Identity::new(
            svid.chain.clone(),
            svid.private_key(),
            Arc::new(ca.bundle_set()),
        )
        .unwrap(),
    )
}

fn new_ca(dir: &Path) -> Arc<CertificateAuthority> {
    Arc::new(CertificateAuthority::init(&dir.join("ca"), &"warden.local".parse().unwrap()).unwrap())
}

fn assert_rotated_without_failures((count, failures, distinct): (usize, Vec<String>, usize)) {
    assert!(
        failures.is_empty(),
        "{} of {count} handshakes failed: {failures:?}",
        failures.len()
    );
    assert!(count > 20, "only {count} handshakes ran");
    assert!(
        distinct >= 3,
        "the server presented only {distinct} distinct SVIDs"
    );
}

/// Runs handshakes back to back for [`LOAD_FOR`]; returns (handshakes, failures, distinct
/// server certificates seen).
async fn handshake_loop(
    server_source: Arc<dyn SvidSource>,
    client_source: Arc<dyn SvidSource>,
    server_id: SpiffeId,
) -> (usize, Vec<String>, usize) {
    let config = server_config(
        server_source.clone(),
        Authorizer::exactly(id("spiffe://warden.local/ns/client/sa/client")),
        ClientAuth::Required,
    )
    .unwrap();
    let mut server = support::serve(config).await;
    let client = Arc::new(client_config(client_source, Authorizer::exactly(server_id)).unwrap());
    let mut failures = Vec::new();
    let mut seen = HashSet::new();
    let mut count = 0;
    let start = Instant::now();
    while start.elapsed() < LOAD_FOR {
        count += 1;
        if let Err(e) = support::connect(server.addr, client.clone()).await {
            failures.push(format!("client: {e}"));
        }
        match server.outcomes.recv().await {
            Some(Ok(_)) => {}
            Some(Err(e)) => failures.push(format!("server: {e}")),
            None => failures.push("server stopped".into()),
        }
        if let Some(current) = server_source.current() {
            seen.insert(current.chain()[0].to_vec());
        }
    }
    (count, failures, seen.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_rotating_every_second_fails_no_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let server_id = id("spiffe://warden.local/ns/server/sa/server");
    let svid_dir = dir.path().join("svid");
    std::fs::create_dir_all(&svid_dir).unwrap();
    write_non_atomically(
        &ca.issue_x509(&server_id, Duration::from_secs(60)).unwrap(),
        &ca,
        &svid_dir,
    );
    let source = Arc::new(FileSource::watch(&svid_dir).unwrap());
    wait_ready(source.as_ref(), Duration::from_secs(5))
        .await
        .unwrap();

    let rotator = {
        let (ca, server_id, svid_dir) = (ca.clone(), server_id.clone(), svid_dir.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < LOAD_FOR {
                std::thread::sleep(Duration::from_secs(1));
                let svid = ca.issue_x509(&server_id, Duration::from_secs(60)).unwrap();
                write_non_atomically(&svid, &ca, &svid_dir);
            }
        })
    };
    let outcome = handshake_loop(source.clone(), client_identity(&ca), server_id).await;
    rotator.join().unwrap();
    assert_rotated_without_failures(outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_source_rotating_every_second_fails_no_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let server_id = id("spiffe://warden.local/ns/server/sa/server");
    let socket = dir.path().join("agent.sock");
    // TTL 2 s: a new SVID every second.
    let api = WorkloadApiServer::new(ca.clone(), Duration::from_secs(2));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn({
        let binding = WorkloadBinding {
            id: server_id.clone(),
            socket: socket.clone(),
            dns_names: Vec::new(),
        };
        async move {
            api.serve(vec![binding], async {
                let _ = stop_rx.await;
            })
            .await
        }
    });
    let source = Arc::new(
        WorkloadApiSource::connect(Some(&format!("unix:{}", socket.display())))
            .await
            .unwrap(),
    );
    let outcome = handshake_loop(source.clone(), client_identity(&ca), server_id).await;
    assert_rotated_without_failures(outcome);
    drop(source);
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn file_source_keeps_the_last_good_svid_when_key_and_certificate_do_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::init(&dir.path().join("ca"), &"warden.local".parse().unwrap())
        .unwrap();
    let server_id = id("spiffe://warden.local/ns/server/sa/server");
    let svid_dir = dir.path().join("svid");
    let first = ca.issue_x509(&server_id, Duration::from_secs(600)).unwrap();
    first.write_files(&svid_dir, ca.bundle()).unwrap();
    let source = Arc::new(FileSource::watch(&svid_dir).unwrap());
    let loaded = wait_ready(source.as_ref(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(loaded.chain(), first.chain.as_slice());
    let mut updates = source.updates();
    updates.borrow_and_update();

    // A new certificate arrives but the key file still holds the old key.
    let second = ca.issue_x509(&server_id, Duration::from_secs(600)).unwrap();
    let chain: String = second
        .chain
        .iter()
        .map(|c| warden_identity::pem::encode_certificate(c))
        .collect();
    std::fs::write(svid_dir.join("svid.pem"), chain).unwrap();
    // Well past the debounce: the source has looked at the files and must have kept `first`.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !updates.has_changed().unwrap(),
        "a mismatched pair must not be swapped in"
    );
    assert_eq!(source.current().unwrap().chain(), first.chain.as_slice());

    // Handshakes still work with the last good SVID.
    let config = server_config(
        source.clone(),
        Authorizer::exactly(id("spiffe://warden.local/ns/client/sa/client")),
        ClientAuth::Required,
    )
    .unwrap();
    let mut server = support::serve(config).await;
    let client = Arc::new(
        client_config(client_identity(&ca), Authorizer::exactly(server_id.clone())).unwrap(),
    );
    assert_eq!(
        support::connect(server.addr, client).await.unwrap(),
        Some(server_id.clone())
    );
    assert!(server.outcomes.recv().await.unwrap().is_ok());

    // Once the matching key lands, the new SVID is taken.
    std::fs::write(
        svid_dir.join("svid_key.pem"),
        warden_identity::pem::encode("PRIVATE KEY", &second.key_pkcs8),
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), updates.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(source.current().unwrap().chain(), second.chain.as_slice());
}

/// An idle workload's source must stay idle. notify reports our own reads (`open`, close
/// after reading) as events; a source that reloaded on them re-read its three files every
/// debounce period, forever, in every idle sidecar and gateway.
#[tokio::test]
async fn an_idle_file_source_does_not_keep_rereading_its_files() {
    use notify::Watcher;
    use notify::event::{AccessKind, EventKind};

    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let svid_dir = dir.path().join("svid");
    let svid = ca
        .issue_x509(
            &id("spiffe://warden.local/ns/a/sa/a"),
            Duration::from_secs(600),
        )
        .unwrap();
    svid.write_files(&svid_dir, ca.bundle()).unwrap();

    // Counts every open of a file in the directory, whoever opens it.
    let opens = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut counter = notify::recommended_watcher({
        let opens = opens.clone();
        move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && matches!(event.kind, EventKind::Access(AccessKind::Open(_)))
            {
                opens.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    })
    .unwrap();
    counter
        .watch(&svid_dir, notify::RecursiveMode::NonRecursive)
        .unwrap();

    let source = FileSource::watch(&svid_dir).unwrap();
    wait_ready(&source, Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_load = opens.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        after_load >= 3,
        "the counter must see the first load's reads (saw {after_load} opens)"
    );

    // Ten debounce periods with nothing written: nothing may be read again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = opens.load(std::sync::atomic::Ordering::Relaxed) - after_load;
    assert_eq!(
        idle, 0,
        "an idle source opened its files {idle} times in 1 s"
    );
    drop(source);
}
