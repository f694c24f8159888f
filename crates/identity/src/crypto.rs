//! The one crypto provider of every Warden TLS endpoint and certificate check. A leaf module:
//! both the SVID rules ([`crate::svid`]) and the TLS glue ([`crate::tls`]) use it, so neither
//! has to import the other for it.

use std::sync::{Arc, LazyLock};

use rustls::crypto::WebPkiSupportedAlgorithms;

static PROVIDER: LazyLock<Arc<rustls::crypto::CryptoProvider>> = LazyLock::new(|| {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // AES-128-GCM first (as Go and BoringSSL order them): its SHA-256 key schedule runs on the
    // CPU's SHA extensions where SHA-384 does not, which is a tenth of a handshake's CPU.
    // The AES-256 and ChaCha20 suites stay available, after it.
    provider.cipher_suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(provider)
});

/// The aws-lc-rs crypto provider every Warden TLS endpoint uses.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    PROVIDER.clone()
}

/// The signature algorithms accepted in certificates and handshakes.
pub fn signature_algorithms() -> WebPkiSupportedAlgorithms {
    PROVIDER.signature_verification_algorithms
}
