//! The A2A gateway: `/api/a2a/{namespace}/{agent}/…` on one port.
//!
//! Per request: route → authenticate (mTLS peer, bearer JWT, or anonymous) → read the A2A
//! method (JSON-RPC body or HTTP+JSON route) → decide by the target's policy in the current
//! snapshot → add the caller's delegation headers → forward over mTLS as the gateway to the
//! target's sidecar, which must prove the target's SPIFFE ID, with the caller in
//! `x-warden-caller` → stream the response back → audit. The snapshot a request starts with is
//! the one it finishes with; a new snapshot applies to the next request.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use tokio_rustls::TlsAcceptor;
use warden_identity::tls::{ClientAuth, server_config};
use warden_identity::{Authorizer, TrustBundle, TrustBundleSet, TrustDomain};
use warden_model::policy::{CARD_METHOD, Caller, decide};
use warden_model::{CompiledAgent, MeshSnapshot, MtlsMode};

use crate::audit::{Audit, AuditedBody, Record, Sink, rfc3339};
use crate::authn::{JwtConfig, OidcIssuer, authenticate_bearer};
use crate::authz::{Peer, caller_header_value};
use crate::config::{IdentityConfig, Limits};
use crate::forward::{Upstreams, Via};
use crate::http::{CALLER_HEADER, ProxyBody, json_error, jsonrpc_error, strip_inbound_headers};
use crate::metrics::Metrics;
use crate::server::{Drain, Server, Service, bind, start_admin_and_identity, watch_file};
use crate::sidecar::SidecarError;

/// Where the audit log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// Nowhere.
    None,
    /// Standard output (`--audit-log -`).
    Stdout,
    /// A file, rotated past `max_bytes` to `<file>.1`.
    File {
        /// The file.
        path: PathBuf,
        /// Rotation threshold.
        max_bytes: u64,
    },
}

/// Everything the gateway needs to start.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The listener (`127.0.0.1:8083`).
    pub listen: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub admin: Option<SocketAddr>,
    /// SVID source (the gateway's identity is `…/ns/warden-system/sa/warden-gateway`).
    pub identity: IdentityConfig,
    /// The mesh's trust domain.
    pub trust_domain: TrustDomain,
    /// Permissive (mTLS and plaintext on the port) or Strict (mTLS only).
    pub mode: MtlsMode,
    /// The compiled snapshot, watched.
    pub snapshot: PathBuf,
    /// Where each agent's sidecar listens: `namespace/name` → `host:port`.
    pub endpoints: HashMap<String, String>,
    /// The audit log.
    pub audit: AuditTarget,
    /// A SPIFFE bundle (JSON) with JWT authorities, to accept JWT-SVIDs.
    pub jwt_bundle: Option<PathBuf>,
    /// The audience a JWT-SVID must carry.
    pub jwt_audience: String,
    /// The URL clients reach the gateway at, for card rewriting; default `http://<listen>`.
    pub public_url: Option<String>,
    /// Limits.
    pub limits: Limits,
}

/// The policy and credentials a request is decided with.
struct State {
    snapshot: Arc<MeshSnapshot>,
    jwt: JwtConfig,
}

struct CachedCard {
    etag: String,
    card: serde_json::Value,
}

struct Gateway {
    config: GatewayConfig,
    state: ArcSwap<State>,
    upstreams: Upstreams,
    audit: Arc<Audit>,
    cards: Mutex<HashMap<String, CachedCard>>,
    base_url: String,
}

/// Runs the gateway until `shutdown` resolves, then drains in-flight requests.
pub async fn run_gateway(
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SidecarError> {
    let state = load_state(&config).map_err(SidecarError::Config)?;
    let metrics = Arc::new(Metrics::default());
    let mut drain = Drain::default();
    let identity =
        start_admin_and_identity(config.admin, &config.identity, &metrics, &drain).await?;
    // Client certificates are optional: a caller without one is anonymous (or brings a JWT).
    let tls = server_config(
        identity.clone(),
        Authorizer::any_in([config.trust_domain.clone()]),
        ClientAuth::Optional,
    )
    .map_err(|e| SidecarError::Identity(e.to_string()))?;
    let sink = match &config.audit {
        AuditTarget::None => Sink::Discard,
        AuditTarget::Stdout => Sink::Stdout,
        AuditTarget::File { path, max_bytes } => Sink::file(path.clone(), *max_bytes)
            .map_err(|e| SidecarError::Config(format!("audit log {}: {e}", path.display())))?,
    };
    let listener = bind(config.listen, "gateway").await?;
    tracing::info!(listen = %config.listen, mode = %config.mode, agents = state.snapshot.agents().len(), "gateway listening");
    let gateway = Arc::new(Gateway {
        base_url: config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.listen)),
        upstreams: Upstreams::new(identity, config.limits.clone()),
        state: ArcSwap::from_pointee(state),
        audit: Arc::new(Audit {
            sink,
            metrics: metrics.clone(),
        }),
        cards: Mutex::new(HashMap::new()),
        config,
    });
    {
        let target = gateway.clone();
        watch_file(gateway.config.snapshot.clone(), move || target.reload());
    }
    let server = Arc::new(Server::new(
        Some(TlsAcceptor::from(Arc::new(tls))),
        metrics,
        gateway.config.limits.clone(),
    ));
    drain.listen(server, gateway.clone(), listener);
    shutdown.await;
    drain.shutdown().await;
    Ok(())
}

fn load_state(config: &GatewayConfig) -> Result<State, String> {
    let path = &config.snapshot;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let snapshot: MeshSnapshot = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a Warden snapshot: {e}", path.display()))?;
    let mut issuers = HashMap::new();
    for issuer in &snapshot.data().jwt_issuers {
        let Some(file) = &issuer.jwks_file else {
            tracing::warn!(issuer = %issuer.issuer, "jwksUrl is not fetched yet; use jwksFile");
            continue;
        };
        let jwks_path = path
            .parent()
            .map_or_else(|| PathBuf::from(file), |dir| dir.join(file));
        let text = std::fs::read_to_string(&jwks_path)
            .map_err(|e| format!("issuer {}: {}: {e}", issuer.issuer, jwks_path.display()))?;
        let keys = serde_json::from_str(&text).map_err(|e| {
            format!(
                "issuer {}: {}: not a JWKS: {e}",
                issuer.issuer,
                jwks_path.display()
            )
        })?;
        issuers.insert(
            issuer.issuer.clone(),
            OidcIssuer {
                audiences: issuer.audiences.clone(),
                keys,
            },
        );
    }
    let svid_bundles = match &config.jwt_bundle {
        Some(path) => Some(TrustBundleSet::single(
            TrustBundle::load(config.trust_domain.clone(), path).map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    crate::admin_status::snapshot_loaded(snapshot.version());
    Ok(State {
        snapshot: Arc::new(snapshot),
        jwt: JwtConfig {
            svid_bundles,
            svid_audience: config.jwt_audience.clone(),
            issuers,
        },
    })
}

/// `/api/a2a/{ns}/{name}/{rest}` → (ns, name, rest).
fn route(path: &str) -> Option<(&str, &str, &str)> {
    let rest = path.strip_prefix("/api/a2a/")?;
    let mut parts = rest.splitn(3, '/');
    let ns = parts.next().filter(|s| !s.is_empty())?;
    let name = parts.next().filter(|s| !s.is_empty())?;
    Some((ns, name, parts.next().unwrap_or("")))
}

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl Service for Gateway {
    fn mode(&self) -> MtlsMode {
        self.config.mode
    }

    async fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Arc<Peer>,
        _mode: MtlsMode,
    ) -> Response<ProxyBody> {
        self.handle(req, &peer).await
    }
}

impl Gateway {
    fn reload(&self) {
        match load_state(&self.config) {
            Ok(state) => {
                tracing::info!(
                    version = state.snapshot.version(),
                    "snapshot loaded; applies to the next request"
                );
                self.state.store(Arc::new(state));
            }
            Err(e) => tracing::warn!(error = %e, "snapshot not usable; keeping the last good one"),
        }
    }

    /// Writes the record of a response generated here, then returns the response.
    fn finish(
        &self,
        mut record: Record,
        start: Instant,
        response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        record.status = response.status().as_u16();
        record.latency_ms = start.elapsed().as_secs_f64() * 1000.0;
        self.audit.record(&record);
        response
    }

    async fn handle(&self, req: Request<Incoming>, peer: &Peer) -> Response<ProxyBody> {
        let start = Instant::now();
        // The snapshot this request is decided and finished with.
        let state = self.state.load_full();
        let mut record = Record {
            time: rfc3339(SystemTime::now()),
            caller: "anonymous".into(),
            authn: "anonymous",
            target: String::new(),
            method: format!("{} {}", req.method(), req.uri().path()),
            task_id: None,
            context_id: None,
            decision: "deny",
            rule: String::new(),
            status: 0,
            latency_ms: 0.0,
            bytes_in: req
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            bytes_out: 0,
            aborted: false,
        };
        let path = req.uri().path().to_owned();
        let Some((ns, name, rest)) = route(&path) else {
            record.rule = "route".into();
            return self.finish(
                record,
                start,
                json_error(
                    StatusCode::NOT_FOUND,
                    "route",
                    "expected /api/a2a/{namespace}/{agent}/",
                ),
            );
        };
        record.target = format!("{ns}/{name}");
        let Some(agent) = state.snapshot.agent(ns, name) else {
            record.rule = "unknown_target".into();
            let message = format!("there is no agent {ns}/{name}");
            return self.finish(
                record,
                start,
                json_error(StatusCode::NOT_FOUND, "unknown_target", &message),
            );
        };

        // Authenticate.
        let (caller, authn) = match (&peer.id, bearer(req.headers())) {
            (Some(id), _) => (Caller::Spiffe(id.clone()), "mtls"),
            (None, Some(token)) => match authenticate_bearer(token, &state.jwt) {
                Ok(found) => found,
                Err(rejected) => {
                    record.authn = "invalid";
                    record.rule = "authentication".into();
                    let response =
                        json_error(StatusCode::UNAUTHORIZED, "authentication", &rejected.0);
                    return self.finish(record, start, response);
                }
            },
            (None, None) => (Caller::Anonymous, "anonymous"),
        };
        record.caller = caller_header_value(&caller);
        record.authn = authn;

        let (mut parts, body) = req.into_parts();
        // The body streams through unless it is read here (JSON-RPC, for its method).
        let mut body = Some(body);
        strip_inbound_headers(&mut parts.headers);
        if authn == "oidc" || authn == "jwt-svid" {
            // The token was for the gateway.
            parts.headers.remove(http::header::AUTHORIZATION);
        }

        // What is being asked.
        let is_card = parts.method == Method::GET
            && matches!(
                rest,
                ".well-known/agent-card.json" | ".well-known/agent.json"
            );
        let mut jsonrpc_id = None;
        let mut buffered: Option<Bytes> = None;
        let method: String = if is_card {
            CARD_METHOD.into()
        } else if parts.method == Method::POST && rest.is_empty() {
            let limit = usize::try_from(self.config.limits.max_body_bytes).unwrap_or(usize::MAX);
            let Some(incoming) = body.take() else {
                return self.finish(
                    record,
                    start,
                    json_error(StatusCode::BAD_REQUEST, "bad_request", "no body"),
                );
            };
            let bytes = match Limited::new(incoming, limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    record.rule = "max_body_bytes".into();
                    let response = json_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "max_body_bytes",
                        "the request body is larger than the configured limit",
                    );
                    return self.finish(record, start, response);
                }
            };
            record.bytes_in = bytes.len() as u64;
            let call = warden_a2a::jsonrpc_call(&bytes);
            buffered = Some(bytes);
            match call {
                Some(call) => {
                    record.task_id = call.task_id;
                    record.context_id = call.context_id;
                    jsonrpc_id = Some(call.id);
                    call.method
                }
                None => "POST /".into(),
            }
        } else if let Some((method, task)) = warden_a2a::rest_method(parts.method.as_str(), rest) {
            record.task_id = task;
            method.into()
        } else {
            format!("{} /{rest}", parts.method)
        };
        record.method = method.clone();

        // Decide.
        let decision = decide(&state.snapshot, &caller, ns, name, &method);
        record.rule = decision.rule.name().into();
        if !decision.allowed {
            tracing::info!(caller = %record.caller, target = %record.target, method = %method, rule = %record.rule, "denied");
            let response = match jsonrpc_id {
                Some(id) => jsonrpc_error(
                    StatusCode::FORBIDDEN,
                    id,
                    decision.rule.name(),
                    decision.reason,
                ),
                None => json_error(StatusCode::FORBIDDEN, decision.rule.name(), decision.reason),
            };
            return self.finish(record, start, response);
        }
        record.decision = "allow";
        if is_card {
            let response = self.card(agent, ns, name).await;
            return self.finish(record, start, response);
        }

        // Delegation headers of the caller's tool reference to this agent, replacing any sent.
        if let Caller::Spiffe(id) = &caller {
            for tool in state
                .snapshot
                .agents_with_identity(id)
                .flat_map(|a| a.tools.iter())
                .filter(|t| t.accepted && t.namespace == ns && t.name == name)
            {
                for (header, value) in &tool.headers {
                    if let (Ok(h), Ok(v)) = (
                        HeaderName::from_bytes(header.as_bytes()),
                        HeaderValue::from_str(value),
                    ) {
                        parts.headers.insert(h, v);
                    }
                }
            }
        }
        if let Ok(value) = HeaderValue::from_str(&caller_header_value(&caller)) {
            parts.headers.insert(CALLER_HEADER, value);
        }
        let Some(endpoint) = self.config.endpoints.get(&record.target) else {
            let message = format!("no endpoint is configured for {}", record.target);
            return self.finish(
                record,
                start,
                json_error(StatusCode::SERVICE_UNAVAILABLE, "no_endpoint", &message),
            );
        };
        let query = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        parts.uri = match format!("https://{endpoint}/{rest}{query}").parse() {
            Ok(uri) => uri,
            Err(_) => {
                return self.finish(
                    record,
                    start,
                    json_error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "cannot build the upstream URI",
                    ),
                );
            }
        };
        parts.version = http::Version::HTTP_11;
        if let Ok(host) = HeaderValue::from_str(endpoint) {
            parts.headers.insert(http::header::HOST, host);
        }
        let via = Via::Mesh(&agent.spiffe_id);
        let response = match (buffered, body) {
            (Some(bytes), _) => {
                self.upstreams
                    .send(Request::from_parts(parts, Full::new(bytes)), via)
                    .await
            }
            (None, Some(body)) => {
                self.upstreams
                    .send(Request::from_parts(parts, body), via)
                    .await
            }
            (None, None) => {
                self.upstreams
                    .send(Request::from_parts(parts, Empty::<Bytes>::new()), via)
                    .await
            }
        };
        record.status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        Response::from_parts(
            parts,
            AuditedBody::new(body, record, self.audit.clone(), start).boxed(),
        )
    }

    /// The agent's card with every URL pointing at the gateway: the static card from the
    /// snapshot, or the one the agent serves, fetched over mTLS and revalidated by ETag.
    async fn card(&self, agent: &CompiledAgent, ns: &str, name: &str) -> Response<ProxyBody> {
        let base = format!(
            "{}/api/a2a/{ns}/{name}/",
            self.base_url.trim_end_matches('/')
        );
        let key = format!("{ns}/{name}");
        let mut card = match &agent.card {
            Some(card) => card.clone(),
            None => {
                let Some(endpoint) = self.config.endpoints.get(&key) else {
                    return json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no_endpoint",
                        "no endpoint is configured for this agent",
                    );
                };
                match self.fetch_card(&key, endpoint, agent).await {
                    Ok(card) => card,
                    Err(response) => return response,
                }
            }
        };
        warden_a2a::rewrite_card(&mut card, &base);
        let mut response = Response::new(crate::http::full(card.to_string()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }

    async fn fetch_card(
        &self,
        key: &str,
        endpoint: &str,
        agent: &CompiledAgent,
    ) -> Result<serde_json::Value, Response<ProxyBody>> {
        let cached_etag = self
            .cards
            .lock()
            .ok()
            .and_then(|c| c.get(key).map(|c| c.etag.clone()));
        let mut request = Request::get(format!("https://{endpoint}/.well-known/agent-card.json"));
        if let Some(etag) = &cached_etag {
            request = request.header(http::header::IF_NONE_MATCH, etag);
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|_| {
            json_error(
                StatusCode::BAD_GATEWAY,
                "card_fetch",
                "cannot build the card request",
            )
        })?;
        let response = self
            .upstreams
            .send(request, Via::Mesh(&agent.spiffe_id))
            .await;
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED
            && let Some(cached) = self
                .cards
                .lock()
                .ok()
                .and_then(|c| c.get(key).map(|c| c.card.clone()))
        {
            return Ok(cached);
        }
        if !status.is_success() {
            return Err(response);
        }
        let etag = response
            .headers()
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|_| {
                json_error(
                    StatusCode::BAD_GATEWAY,
                    "card_fetch",
                    "the agent's card could not be read",
                )
            })?;
        let card: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
            json_error(
                StatusCode::BAD_GATEWAY,
                "card_fetch",
                "the agent's card is not JSON",
            )
        })?;
        if let (Some(etag), Ok(mut cards)) = (etag, self.cards.lock()) {
            cards.insert(
                key.to_owned(),
                CachedCard {
                    etag,
                    card: card.clone(),
                },
            );
        }
        Ok(card)
    }
}
