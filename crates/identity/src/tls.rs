//! rustls integration: SPIFFE certificate verifiers, a resolver that serves the current SVID,
//! and ready-made server and client configurations.
//!
//! The verifiers pick the bundle by the *peer's* trust domain, apply every SVID rule
//! ([`crate::svid`]), then ask an [`Authorizer`] whether that peer may connect. A refusal is a
//! [`PeerRejected`] inside `rustls::Error`, so the listener can log and count it by rule
//! while the connection alone fails.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::authorizer::{Authorizer, NotAuthorized};
use crate::id::SpiffeId;
use crate::source::SvidSource;
use crate::svid::{PeerRole, SvidRejection, spiffe_id_of};
use crate::verified_chains::{VerifiedChains, validate_x509_svid_cached};

pub use crate::crypto::{crypto_provider, signature_algorithms};

/// Why a peer was refused during the handshake.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerRejected {
    /// The certificate chain is not a valid SVID for a trusted trust domain.
    #[error("invalid SVID ({rule}): {0}", rule = .0.rule())]
    InvalidSvid(SvidRejection),
    /// A valid SVID whose ID the authorizer does not admit.
    #[error("{0}")]
    NotAuthorized(NotAuthorized),
    /// This endpoint has no SVID yet, so it has no bundles to verify with.
    #[error("no local SVID loaded yet; cannot verify peers")]
    NotReady,
}

impl PeerRejected {
    /// A stable label for logs and metrics: the broken SVID rule, `not_authorized` or
    /// `not_ready`.
    pub fn reason(&self) -> &'static str {
        match self {
            PeerRejected::InvalidSvid(r) => r.rule().name(),
            PeerRejected::NotAuthorized(_) => "not_authorized",
            PeerRejected::NotReady => "not_ready",
        }
    }

    /// Finds the rejection inside a handshake error, if that is what failed it.
    pub fn from_tls_error(err: &rustls::Error) -> Option<&PeerRejected> {
        match err {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
                inner.downcast_ref::<PeerRejected>()
            }
            _ => None,
        }
    }

    /// Finds the rejection inside an I/O error from a TLS stream.
    pub fn from_io_error(err: &std::io::Error) -> Option<&PeerRejected> {
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .and_then(Self::from_tls_error)
    }
}

impl From<PeerRejected> for rustls::Error {
    fn from(r: PeerRejected) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(r))))
    }
}

/// Verification shared by both directions.
#[derive(Clone)]
struct SpiffeVerifier {
    source: Arc<dyn SvidSource>,
    authorizer: Arc<Authorizer>,
    verified: Arc<VerifiedChains>,
}

impl std::fmt::Debug for SpiffeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpiffeVerifier").finish_non_exhaustive()
    }
}

impl SpiffeVerifier {
    fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        role: PeerRole,
        now: UnixTime,
    ) -> Result<SpiffeId, PeerRejected> {
        let identity = self.source.current().ok_or(PeerRejected::NotReady)?;
        let id = validate_x509_svid_cached(
            leaf,
            intermediates,
            identity.bundles(),
            role,
            now,
            &self.verified,
        )
        .map_err(PeerRejected::InvalidSvid)?;
        self.authorizer
            .authorize(&id)
            .map_err(PeerRejected::NotAuthorized)?;
        Ok(id)
    }
}

/// Server-side verifier of client SVIDs (mutual TLS).
#[derive(Debug)]
pub struct SpiffeClientCertVerifier {
    inner: SpiffeVerifier,
    mandatory: bool,
}

impl SpiffeClientCertVerifier {
    /// Verifies clients against the bundles of `source` and admits those `authorizer` allows.
    /// With `mandatory` false a client may connect without a certificate (it is then
    /// anonymous); one that presents a certificate must still pass every rule.
    pub fn new(source: Arc<dyn SvidSource>, authorizer: Authorizer, mandatory: bool) -> Self {
        Self {
            inner: SpiffeVerifier {
                source,
                authorizer: Arc::new(authorizer),
                verified: Arc::default(),
            },
            mandatory,
        }
    }
}

impl ClientCertVerifier for SpiffeClientCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify(end_entity, intermediates, PeerRole::Client, now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &signature_algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &signature_algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signature_algorithms().supported_schemes()
    }
}

/// Client-side verifier of server SVIDs. The TLS server name is ignored: a mesh peer is
/// identified by its SPIFFE ID, which the authorizer checks.
#[derive(Debug)]
pub struct SpiffeServerCertVerifier {
    inner: SpiffeVerifier,
}

impl SpiffeServerCertVerifier {
    /// Verifies servers against the bundles of `source` and accepts those `authorizer` allows
    /// (usually exactly the expected ID).
    pub fn new(source: Arc<dyn SvidSource>, authorizer: Authorizer) -> Self {
        Self {
            inner: SpiffeVerifier {
                source,
                authorizer: Arc::new(authorizer),
                verified: Arc::default(),
            },
        }
    }
}

impl ServerCertVerifier for SpiffeServerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify(end_entity, intermediates, PeerRole::Server, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &signature_algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &signature_algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signature_algorithms().supported_schemes()
    }
}

/// Presents the source's current SVID on every handshake, so a rotated SVID is used from the
/// next handshake on. Reading it is one atomic load.
#[derive(Clone)]
pub struct SvidResolver {
    source: Arc<dyn SvidSource>,
}

impl std::fmt::Debug for SvidResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvidResolver").finish_non_exhaustive()
    }
}

impl SvidResolver {
    /// Serves whatever `source` holds at handshake time.
    pub fn new(source: Arc<dyn SvidSource>) -> Self {
        Self { source }
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.source.current().map(|id| id.certified_key().clone())
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl rustls::client::ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Whether a server demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Mutual TLS: a client without a valid, authorized SVID is refused.
    Required,
    /// A client may connect without a certificate and is then anonymous.
    Optional,
}

/// A TLS 1.3/1.2 server that presents the source's SVID and verifies client SVIDs.
pub fn server_config(
    source: Arc<dyn SvidSource>,
    authorizer: Authorizer,
    client_auth: ClientAuth,
) -> Result<ServerConfig, rustls::Error> {
    let verifier = SpiffeClientCertVerifier::new(
        source.clone(),
        authorizer,
        client_auth == ClientAuth::Required,
    );
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SvidResolver::new(source)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // No session resumption: a resumed session carries the identity verified when it began
    // (rustls keeps such sessions for 24 hours), so a peer whose SVID has since expired, or
    // whose CA has left the bundle, would get back in. Every connection is verified against
    // the current bundles; the cost of repeat handshakes is kept down by remembering chains
    // that already verified (see `verified_chains`).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A TLS 1.3/1.2 client that presents the source's SVID and accepts servers `authorizer`
/// allows.
pub fn client_config(
    source: Arc<dyn SvidSource>,
    authorizer: Authorizer,
) -> Result<ClientConfig, rustls::Error> {
    let verifier = SpiffeServerCertVerifier::new(source.clone(), authorizer);
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SvidResolver::new(source)));
    // As on the server side: every connection verifies the server against current bundles.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// The verified SPIFFE ID of the peer of an established connection, if it presented one.
pub fn peer_spiffe_id(conn: &rustls::CommonState) -> Option<SpiffeId> {
    conn.peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(spiffe_id_of)
}

/// The name a client puts in SNI when dialing a mesh peer; the verifier ignores it.
pub fn mesh_server_name() -> ServerName<'static> {
    ServerName::try_from("warden.mesh")
        .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
}
