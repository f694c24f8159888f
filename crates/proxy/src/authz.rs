//! Who the caller of a request is, and whether it may proceed.
//!
//! Until a policy snapshot is configured, the sidecar admits by flags: verified callers must
//! be in `--allow-id` or `--allow-namespace` (none given: any ID of the trust domain), and
//! anonymous (plaintext) callers are admitted unless the sidecar is Strict.

use warden_identity::SpiffeId;
use warden_model::MtlsMode;
use warden_model::policy::Caller;

use crate::config::DynamicConfig;

/// What the proxy knows about the peer of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The verified SPIFFE ID, for mTLS connections.
    pub id: Option<SpiffeId>,
    /// SHA-256 of the peer's leaf certificate, hex, for XFCC.
    pub cert_hash: Option<String>,
    /// The XFCC value for requests of this peer itself (not forwarded by a gateway): the same
    /// for every request of the connection, so built on the first.
    pub xfcc: std::sync::OnceLock<Option<http::HeaderValue>>,
    /// The connection is TLS (with or without a client certificate): cards given to this
    /// client keep `https`.
    pub tls: bool,
    /// The server name (SNI) a TLS client asked for: the gateway routes by it and refuses a
    /// request whose host names another agent (421).
    pub server_name: Option<String>,
}

impl Peer {
    /// A TLS peer, with the SPIFFE ID and SHA-256 (hex) of its leaf certificate when it
    /// presented one.
    pub fn verified(id: Option<SpiffeId>, cert_hash: Option<String>) -> Self {
        Self {
            id,
            cert_hash,
            xfcc: std::sync::OnceLock::new(),
            tls: true,
            server_name: None,
        }
    }

    /// A plaintext peer: no identity.
    pub fn anonymous() -> Self {
        Self {
            tls: false,
            ..Self::verified(None, None)
        }
    }
}

/// The caller of one request: the mTLS peer, or — when the peer is a configured gateway that
/// forwarded one — the caller the gateway verified.
pub fn resolve_caller(
    peer: &Peer,
    forwarded: Option<&http::HeaderValue>,
    config: &DynamicConfig,
) -> (Caller, bool) {
    let Some(id) = &peer.id else {
        return (Caller::Anonymous, false);
    };
    if config.gateway_ids.contains(id)
        && let Some(value) = forwarded.and_then(|v| v.to_str().ok())
    {
        return (parse_caller_header(value), true);
    }
    (Caller::Spiffe(id.clone()), false)
}

/// The outcome of an authorization, with a rule name for metrics and the 403 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The rule that decided (snake_case).
    pub rule: &'static str,
    /// Why, in one sentence.
    pub reason: &'static str,
}

/// Decides by the flag-configured allow lists.
pub fn authorize_by_flags(
    caller: &Caller,
    config: &DynamicConfig,
    trust_domain: &str,
    mode: MtlsMode,
) -> Verdict {
    match caller {
        Caller::Anonymous if mode == MtlsMode::Strict => Verdict {
            allowed: false,
            rule: "strict_requires_identity",
            reason: "Strict mode never admits anonymous callers",
        },
        Caller::Anonymous | Caller::Jwt { .. } => Verdict {
            allowed: true,
            rule: "anonymous",
            reason: "anonymous callers are admitted outside Strict mode",
        },
        Caller::Spiffe(id) => {
            if id.trust_domain_name() != trust_domain {
                return Verdict {
                    allowed: false,
                    rule: "trust_domain",
                    reason: "the caller is not in this mesh's trust domain",
                };
            }
            if config.allow_ids.is_empty() && config.allow_namespaces.is_empty() {
                return Verdict {
                    allowed: true,
                    rule: "trust_domain",
                    reason: "any ID of the trust domain is admitted (no allow list configured)",
                };
            }
            if config.allow_ids.contains(id) {
                return Verdict {
                    allowed: true,
                    rule: "allow_id",
                    reason: "the caller is listed in --allow-id",
                };
            }
            if id
                .namespace()
                .is_some_and(|ns| config.allow_namespaces.iter().any(|a| a == ns))
            {
                return Verdict {
                    allowed: true,
                    rule: "allow_namespace",
                    reason: "the caller's namespace is listed in --allow-namespace",
                };
            }
            Verdict {
                allowed: false,
                rule: "allow_list",
                reason: "the caller is in neither --allow-id nor --allow-namespace",
            }
        }
    }
}

/// How a gateway writes the caller it verified into `x-warden-caller`: the SPIFFE ID,
/// `jwt:<issuer>#<subject>`, or `anonymous`.
pub fn caller_header_value(caller: &Caller) -> String {
    match caller {
        Caller::Spiffe(id) => id.to_string(),
        Caller::Jwt { issuer, subject } => format!("jwt:{issuer}#{subject}"),
        Caller::Anonymous => "anonymous".into(),
    }
}

/// Reads `x-warden-caller`; anything unreadable forwards nobody (anonymous).
pub fn parse_caller_header(value: &str) -> Caller {
    if let Some(jwt) = value.strip_prefix("jwt:")
        && let Some((issuer, subject)) = jwt.rsplit_once('#')
    {
        return Caller::Jwt {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
        };
    }
    SpiffeId::new(value).map_or(Caller::Anonymous, Caller::Spiffe)
}
