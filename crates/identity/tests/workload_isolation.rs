//! One Workload API server, many workloads: each socket hands out only its own workload's
//! SVID and JWT-SVID.

use std::sync::Arc;
use std::time::Duration;

use spiffe::WorkloadApiClient;
use warden_identity::workload_api::{WorkloadApiServer, WorkloadBinding};
use warden_identity::{CertificateAuthority, SpiffeId};

#[tokio::test]
async fn each_socket_serves_only_its_own_workload() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(
        CertificateAuthority::init(&dir.path().join("ca"), &"warden.local".parse().unwrap())
            .unwrap(),
    );
    let ids: Vec<SpiffeId> = [
        "team-alpha/sa/orchestrator",
        "team-beta/sa/specialist",
        "team-gamma/sa/rogue",
    ]
    .iter()
    .map(|s| SpiffeId::new(&format!("spiffe://warden.local/ns/{s}")).unwrap())
    .collect();
    let bindings: Vec<WorkloadBinding> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| WorkloadBinding {
            id: id.clone(),
            socket: dir.path().join(format!("w{i}/agent.sock")),
            dns_names: Vec::new(),
        })
        .collect();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = WorkloadApiServer::new(ca, Duration::from_secs(3600));
    let serving = tokio::spawn({
        let bindings = bindings.clone();
        async move {
            server
                .serve(bindings, async {
                    let _ = stop_rx.await;
                })
                .await
        }
    });
    for binding in &bindings {
        let start = std::time::Instant::now();
        while !binding.socket.exists() {
            assert!(start.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for (i, binding) in bindings.iter().enumerate() {
        let client = WorkloadApiClient::connect_to(format!("unix:{}", binding.socket.display()))
            .await
            .unwrap();
        let svids = client.fetch_all_x509_svids().await.unwrap();
        assert_eq!(svids.len(), 1);
        assert_eq!(svids[0].spiffe_id().to_string(), binding.id.as_str());
        // Asking for another workload's JWT-SVID is refused.
        let other = spiffe::SpiffeId::new(ids[(i + 1) % ids.len()].as_str()).unwrap();
        let err = client
            .fetch_jwt_svid(["aud"], Some(&other))
            .await
            .expect_err("another workload's JWT-SVID");
        assert!(err.to_string().contains("may not obtain"), "{err}");
        let own = client.fetch_jwt_svid(["aud"], None).await.unwrap();
        assert_eq!(own.spiffe_id().to_string(), binding.id.as_str());
    }
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
