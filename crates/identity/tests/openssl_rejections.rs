//! The SPIFFE rejection table: certificates made by openssl, each presented in a real TLS
//! handshake on loopback to a Warden server, each refused with the rule it breaks; the good
//! one accepted with its SPIFFE ID.

mod support;

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use warden_identity::tls::{ClientAuth, PeerRejected, SpiffeServerCertVerifier, server_config};
use warden_identity::{
    Authorizer, IdentityCell, SpiffeId, TrustBundle, TrustBundleSet, TrustDomain, X509Identity,
};
use warden_testkit::openssl::{OpensslCa, svid_extensions, time_from_now};

fn certs(path: &std::path::Path) -> Vec<CertificateDer<'static>> {
    warden_identity::pem::certificates(&std::fs::read(path).unwrap()).unwrap()
}

fn key(path: &std::path::Path) -> PrivateKeyDer<'static> {
    warden_identity::pem::private_key(&std::fs::read(path).unwrap()).unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    good_ca: OpensslCa,
    other_td_ca: OpensslCa,
    rogue_ca: OpensslCa,
    server_identity: Arc<IdentityCell>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let good_ca = OpensslCa::new(dir.path(), "example-ca", "example.org");
    let other_td_ca = OpensslCa::new(dir.path(), "other-ca", "other.org");
    let rogue_ca = OpensslCa::new(dir.path(), "rogue-ca", "example.org");
    let ext = svid_extensions("spiffe://example.org/ns/server/sa/server");
    let ext: Vec<&str> = ext.iter().map(String::as_str).collect();
    let server = good_ca.sign_leaf("server", &ext, &time_from_now(-60), &time_from_now(3600));
    // The server trusts example.org and other.org, each with its own bundle.
    let mut bundles = TrustBundleSet::default();
    for (td, ca) in [("example.org", &good_ca), ("other.org", &other_td_ca)] {
        bundles.insert(
            TrustBundle::from_der(TrustDomain::new(td).unwrap(), certs(&ca.cert_path()), td)
                .unwrap(),
        );
    }
    let identity =
        X509Identity::new(certs(&server.cert), key(&server.key), Arc::new(bundles)).unwrap();
    Fixture {
        _dir: dir,
        good_ca,
        other_td_ca,
        rogue_ca,
        server_identity: IdentityCell::with(identity),
    }
}

/// A client that presents `chain`/`key` as is and verifies the server as Warden does.
fn client(fx: &Fixture, leaf: &warden_testkit::openssl::Leaf) -> Arc<rustls::ClientConfig> {
    client_with_versions(fx, leaf, rustls::DEFAULT_VERSIONS)
}

fn client_with_versions(
    fx: &Fixture,
    leaf: &warden_testkit::openssl::Leaf,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let verifier = SpiffeServerCertVerifier::new(
        fx.server_identity.clone(),
        Authorizer::exactly(SpiffeId::new("spiffe://example.org/ns/server/sa/server").unwrap()),
    );
    Arc::new(
        rustls::ClientConfig::builder_with_provider(warden_identity::tls::crypto_provider())
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(certs(&leaf.cert), key(&leaf.key))
            .unwrap(),
    )
}

/// (name, signing CA, leaf extensions, notBefore, notAfter, the rule it must break or None
/// for the one that must be accepted)
type Case<'a> = (
    &'a str,
    &'a OpensslCa,
    Vec<String>,
    String,
    String,
    Option<&'a str>,
);

#[tokio::test]
async fn every_broken_rule_is_refused_by_name_and_the_good_svid_is_accepted() {
    let fx = fixture();
    let now_minus = time_from_now(-60);
    let in_an_hour = time_from_now(3600);
    let good_id = "spiffe://example.org/ns/team-a/sa/agent";
    let base = svid_extensions(good_id);
    let with = |replace: &str, line: &str| -> Vec<String> {
        base.iter()
            .map(|l| {
                if l.starts_with(replace) {
                    line.to_owned()
                } else {
                    l.clone()
                }
            })
            .collect()
    };

    let cases: Vec<Case> = vec![
        (
            "good",
            &fx.good_ca,
            base.clone(),
            now_minus.clone(),
            in_an_hour.clone(),
            None,
        ),
        (
            "wrong_trust_domain",
            &fx.good_ca,
            with(
                "subjectAltName",
                "subjectAltName=URI:spiffe://evil.org/ns/team-a/sa/agent",
            ),
            now_minus.clone(),
            in_an_hour.clone(),
            Some("known_trust_domain"),
        ),
        (
            "expired",
            &fx.good_ca,
            base.clone(),
            time_from_now(-7200),
            time_from_now(-3600),
            Some("not_expired"),
        ),
        (
            "not_yet_valid",
            &fx.good_ca,
            base.clone(),
            time_from_now(3600),
            time_from_now(7200),
            Some("already_valid"),
        ),
        (
            "leaf_is_ca",
            &fx.good_ca,
            with("basicConstraints", "basicConstraints=critical,CA:TRUE"),
            now_minus.clone(),
            in_an_hour.clone(),
            Some("leaf_not_ca"),
        ),
        (
            "two_uri_sans",
            &fx.good_ca,
            with(
                "subjectAltName",
                "subjectAltName=URI:spiffe://example.org/ns/a/sa/x,URI:spiffe://example.org/ns/a/sa/y",
            ),
            now_minus.clone(),
            in_an_hour.clone(),
            Some("one_uri_san"),
        ),
        (
            "no_uri_san",
            &fx.good_ca,
            with("subjectAltName", "subjectAltName=DNS:agent.example.org"),
            now_minus.clone(),
            in_an_hour.clone(),
            Some("one_uri_san"),
        ),
        (
            "no_digital_signature",
            &fx.good_ca,
            with("keyUsage", "keyUsage=critical,keyAgreement"),
            now_minus.clone(),
            in_an_hour.clone(),
            Some("digital_signature"),
        ),
        (
            "key_cert_sign_on_leaf",
            &fx.good_ca,
            with("keyUsage", "keyUsage=critical,digitalSignature,keyCertSign"),
            now_minus.clone(),
            in_an_hour.clone(),
            Some("no_key_cert_sign"),
        ),
        (
            "crl_sign_on_leaf",
            &fx.good_ca,
            with("keyUsage", "keyUsage=critical,digitalSignature,cRLSign"),
            now_minus.clone(),
            in_an_hour.clone(),
            Some("no_crl_sign"),
        ),
        (
            "unknown_ca",
            &fx.rogue_ca,
            base.clone(),
            now_minus.clone(),
            in_an_hour.clone(),
            Some("chain_verifies"),
        ),
        (
            // example.org ID, signed by other.org's CA, whose bundle the server also trusts.
            "chained_to_other_trust_domain",
            &fx.other_td_ca,
            base.clone(),
            now_minus.clone(),
            in_an_hour.clone(),
            Some("chain_verifies"),
        ),
    ];

    let config = server_config(
        fx.server_identity.clone(),
        Authorizer::any_in([
            TrustDomain::new("example.org").unwrap(),
            TrustDomain::new("other.org").unwrap(),
        ]),
        ClientAuth::Required,
    )
    .unwrap();
    let mut server = support::serve(config).await;

    for (name, ca, ext, start, end, expected) in &cases {
        let ext: Vec<&str> = ext.iter().map(String::as_str).collect();
        let leaf = ca.sign_leaf(name, &ext, start, end);
        let client_result = support::connect(server.addr, client(&fx, &leaf)).await;
        let server_outcome = server.outcomes.recv().await.expect("server reports");
        match expected {
            None => {
                assert_eq!(
                    server_outcome
                        .as_ref()
                        .ok()
                        .cloned()
                        .flatten()
                        .map(|id| id.to_string()),
                    Some(good_id.to_owned()),
                    "{name}: the good SVID is accepted with its ID ({server_outcome:?})"
                );
                assert_eq!(
                    client_result.unwrap().unwrap().as_str(),
                    "spiffe://example.org/ns/server/sa/server"
                );
            }
            Some(rule) => {
                assert!(
                    client_result.is_err(),
                    "{name}: client must not get through"
                );
                let err = server_outcome.expect_err(name);
                let rejected = PeerRejected::from_io_error(&err)
                    .unwrap_or_else(|| panic!("{name}: not a PeerRejected: {err:?}"));
                assert_eq!(rejected.reason(), *rule, "{name}: {rejected}");
            }
        }
    }
}

#[tokio::test]
async fn a_client_refuses_a_server_that_breaks_a_rule_and_one_outside_its_authorizer() {
    let fx = fixture();
    let expired = leaf_for(
        &fx.good_ca,
        "expired-server",
        "spiffe://example.org/ns/server/sa/server",
        -7200,
        -3600,
    );
    let rejected = dial_server_presenting(&fx, &expired).await;
    assert_eq!(rejected.reason(), "not_expired");

    // A valid server whose ID is not the one the client expects.
    let impostor = leaf_for(
        &fx.good_ca,
        "impostor",
        "spiffe://example.org/ns/impostor/sa/server",
        -60,
        3600,
    );
    let rejected = dial_server_presenting(&fx, &impostor).await;
    assert_eq!(rejected.reason(), "not_authorized");
    assert!(
        rejected
            .to_string()
            .contains("spiffe://example.org/ns/impostor/sa/server")
    );
}

/// A well-formed SVID leaf for `id`, valid from `start` to `end` seconds from now.
fn leaf_for(
    ca: &OpensslCa,
    name: &str,
    id: &str,
    start: i64,
    end: i64,
) -> warden_testkit::openssl::Leaf {
    let ext = svid_extensions(id);
    let ext: Vec<&str> = ext.iter().map(String::as_str).collect();
    ca.sign_leaf(name, &ext, &time_from_now(start), &time_from_now(end))
}

/// Starts a plain rustls server presenting `leaf` as is, dials it as a Warden client that
/// expects the fixture's server ID, and returns why the client refused it.
async fn dial_server_presenting(
    fx: &Fixture,
    leaf: &warden_testkit::openssl::Leaf,
) -> PeerRejected {
    let config =
        rustls::ServerConfig::builder_with_provider(warden_identity::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs(&leaf.cert), key(&leaf.key))
            .unwrap();
    let server = support::serve(config).await;
    let client_config = warden_identity::tls::client_config(
        fx.server_identity.clone(),
        Authorizer::exactly(SpiffeId::new("spiffe://example.org/ns/server/sa/server").unwrap()),
    )
    .unwrap();
    let err = support::connect(server.addr, Arc::new(client_config))
        .await
        .unwrap_err();
    PeerRejected::from_io_error(&err)
        .cloned()
        .unwrap_or_else(|| panic!("not a PeerRejected: {err:?}"))
}

#[tokio::test]
async fn a_bad_client_certificate_does_not_take_down_the_listener() {
    let fx = fixture();
    let mut server = strict_server(&fx).await;
    let bad_ext = svid_extensions("spiffe://example.org/ns/a/sa/b");
    let ext: Vec<&str> = bad_ext.iter().map(String::as_str).collect();
    let rogue = fx
        .rogue_ca
        .sign_leaf("rogue", &ext, &time_from_now(-60), &time_from_now(3600));
    let good = fx
        .good_ca
        .sign_leaf("good", &ext, &time_from_now(-60), &time_from_now(3600));
    for _ in 0..3 {
        assert!(
            support::connect(server.addr, client(&fx, &rogue))
                .await
                .is_err()
        );
        assert!(server.outcomes.recv().await.unwrap().is_err());
        let id = support::connect(server.addr, client(&fx, &good))
            .await
            .unwrap();
        assert!(id.is_some());
        assert!(server.outcomes.recv().await.unwrap().is_ok());
    }
}

#[tokio::test]
async fn tls12_peers_get_the_same_verification() {
    let fx = fixture();
    let mut server = strict_server(&fx).await;
    let ext = svid_extensions("spiffe://example.org/ns/legacy/sa/agent");
    let ext: Vec<&str> = ext.iter().map(String::as_str).collect();
    let good = fx.good_ca.sign_leaf(
        "tls12-good",
        &ext,
        &time_from_now(-60),
        &time_from_now(3600),
    );
    let expired = fx.good_ca.sign_leaf(
        "tls12-expired",
        &ext,
        &time_from_now(-7200),
        &time_from_now(-3600),
    );
    let tls12 = [&rustls::version::TLS12];

    let client = client_with_versions(&fx, &good, &tls12);
    let server_id = support::connect(server.addr, client).await.unwrap();
    assert_eq!(
        server_id.unwrap().as_str(),
        "spiffe://example.org/ns/server/sa/server"
    );
    let seen = server.outcomes.recv().await.unwrap().unwrap();
    assert_eq!(
        seen.unwrap().as_str(),
        "spiffe://example.org/ns/legacy/sa/agent"
    );

    let client = client_with_versions(&fx, &expired, &tls12);
    assert!(support::connect(server.addr, client).await.is_err());
    let err = server.outcomes.recv().await.unwrap().unwrap_err();
    assert_eq!(
        PeerRejected::from_io_error(&err).map(|r| r.reason()),
        Some("not_expired")
    );
}

/// A server config trusting example.org (the fixture's bundles), client certificate required.
async fn strict_server(fx: &Fixture) -> support::Server {
    let config = server_config(
        fx.server_identity.clone(),
        Authorizer::any_in([TrustDomain::new("example.org").unwrap()]),
        ClientAuth::Required,
    )
    .unwrap();
    support::serve(config).await
}

#[tokio::test]
async fn a_client_is_verified_again_on_every_connection_once_the_bundle_changes() {
    let fx = fixture();
    let mut server = strict_server(&fx).await;
    let good = leaf_for(
        &fx.good_ca,
        "reconnecting",
        "spiffe://example.org/ns/team-a/sa/agent",
        -60,
        3600,
    );
    // One client config for every connection: it would resume a session if offered one.
    let client = client(&fx, &good);
    for _ in 0..2 {
        support::connect(server.addr, client.clone()).await.unwrap();
        assert!(server.outcomes.recv().await.unwrap().is_ok());
    }
    // The server's bundle for example.org is now the rogue CA's: the good CA is no longer
    // trusted, so neither a remembered chain nor a resumed session may let the client in.
    // (The test's client verifies the server with the same cell, so the server's new SVID
    // comes from the newly trusted CA.)
    let server_leaf = leaf_for(
        &fx.rogue_ca,
        "server-again",
        "spiffe://example.org/ns/server/sa/server",
        -60,
        3600,
    );
    let mut bundles = TrustBundleSet::default();
    bundles.insert(
        TrustBundle::from_der(
            TrustDomain::new("example.org").unwrap(),
            certs(&fx.rogue_ca.cert_path()),
            "rogue bundle",
        )
        .unwrap(),
    );
    fx.server_identity.store(
        X509Identity::new(
            certs(&server_leaf.cert),
            key(&server_leaf.key),
            Arc::new(bundles),
        )
        .unwrap(),
    );
    let _ = support::connect(server.addr, client).await;
    let err = server.outcomes.recv().await.unwrap().unwrap_err();
    assert_eq!(
        PeerRejected::from_io_error(&err).map(|r| r.reason()),
        Some("chain_verifies")
    );
}

#[tokio::test]
async fn an_svid_that_expires_between_connections_is_refused_on_the_next() {
    let fx = fixture();
    let mut server = strict_server(&fx).await;
    let short = leaf_for(
        &fx.good_ca,
        "short-lived",
        "spiffe://example.org/ns/team-a/sa/agent",
        -60,
        3,
    );
    let client = client(&fx, &short);
    support::connect(server.addr, client.clone()).await.unwrap();
    assert!(server.outcomes.recv().await.unwrap().is_ok());
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let _ = support::connect(server.addr, client).await;
    let err = server.outcomes.recv().await.unwrap().unwrap_err();
    assert_eq!(
        PeerRejected::from_io_error(&err).map(|r| r.reason()),
        Some("not_expired")
    );
}
