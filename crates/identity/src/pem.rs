//! PEM reading and writing, shared by bundles, SVID files and the CA.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Every CERTIFICATE block in `pem`, in order.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("malformed PEM: {e}"))
}

/// The first private key block in `pem` (PKCS#8, SEC1 or PKCS#1).
pub fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => "holds no PRIVATE KEY block".to_owned(),
        other => format!("malformed PEM: {other}"),
    })
}

/// One DER object as a PEM block.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A certificate as a PEM block.
pub fn encode_certificate(der: &[u8]) -> String {
    encode("CERTIFICATE", der)
}

// spiffe-helper's file layout: written by the embedded CA, read by the file source. Kept in
// this leaf module so that neither of those imports the other.
/// The certificate chain, leaf first.
pub const SVID_CERT_FILE: &str = "svid.pem";
/// The private key.
pub const SVID_KEY_FILE: &str = "svid_key.pem";
/// The trust bundle of the SVID's trust domain.
pub const SVID_BUNDLE_FILE: &str = "svid_bundle.pem";
