//! `warden webhook`: both admission webhooks over HTTPS, on the same listener machinery as the
//! data plane (`warden_proxy::server`: connection limit, handshake timeout, HTTP/1.1 and
//! HTTP/2, drain on shutdown).
//!
//! Routes: `POST /validate`, `POST /mutate` (AdmissionReview JSON), `GET /healthz`,
//! `/readyz`, `/metrics` (`warden_admission_reviews_total{webhook,kind,decision}`,
//! `warden_admission_review_duration_seconds`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio_rustls::TlsAcceptor;
use warden_model::MtlsMode;
use warden_proxy::authz::Peer;
use warden_proxy::config::Limits;
use warden_proxy::http::{ProxyBody, full};
use warden_proxy::metrics::Metrics;
use warden_proxy::server::{BindError, Drain, Server, Service, bind};

use crate::admission::{Webhook, WebhookSettings, review};
use crate::certs::{CertError, ReloadingCert};
use crate::cluster::ClusterReader;

/// How often the serving certificate's files are checked for a renewal.
const CERT_REFRESH: Duration = Duration::from_secs(10);

/// What `warden webhook` serves, and where.
#[derive(Debug, Clone)]
pub struct WebhookServerConfig {
    /// The HTTPS listener.
    pub listen: SocketAddr,
    /// The directory with `tls.crt` and `tls.key` (watched for renewals).
    pub tls_dir: PathBuf,
    /// Injection settings.
    pub settings: WebhookSettings,
    /// Listener limits (the body limit bounds an AdmissionReview).
    pub limits: Limits,
}

/// The webhook server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The serving certificate.
    #[error("webhook certificate: {0}")]
    Cert(#[from] CertError),
    /// The listener.
    #[error(transparent)]
    Bind(#[from] BindError),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    webhook: &'static str,
    kind: String,
    decision: &'static str,
}

/// The webhooks' metrics.
struct AdmissionMetrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    duration: Histogram,
}

impl AdmissionMetrics {
    fn new(listener: &Metrics) -> Self {
        let mut registry = Registry::with_prefix("warden");
        let reviews = Family::default();
        let duration = Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]);
        registry.register(
            "admission_reviews",
            "AdmissionReviews answered, by webhook, object kind and decision",
            reviews.clone(),
        );
        registry.register(
            "admission_review_duration_seconds",
            "Time to answer an AdmissionReview, cluster reads included",
            duration.clone(),
        );
        registry.register(
            "handshake_failures",
            "Connections refused before any request, by reason",
            listener.handshake_failures.clone(),
        );
        Self {
            registry,
            reviews,
            duration,
        }
    }
}

struct WebhookService<R> {
    reader: R,
    settings: WebhookSettings,
    metrics: AdmissionMetrics,
    max_body: usize,
}

/// A response with `status` and a text body (the admin ports' answers).
/// `/metrics` as the request's `Accept` asks, body and Content-Type from one choice (the
/// webhook's and the controller's admin ports).
pub(crate) fn metrics_response(
    registry: &Registry,
    req: &Request<Incoming>,
) -> Response<ProxyBody> {
    let accept = req.headers().get(http::header::ACCEPT);
    let (content_type, body) = warden_proxy::metrics::exposition(registry, accept);
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
}

impl<R: ClusterReader> WebhookService<R> {
    async fn admit(&self, req: Request<Incoming>, webhook: Webhook) -> Response<ProxyBody> {
        let started = Instant::now();
        let body = match Limited::new(req.into_body(), self.max_body).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("cannot read the AdmissionReview: {e}\n"),
                );
            }
        };
        let reviewed = review(&body, webhook, &self.reader, &self.settings).await;
        self.metrics
            .reviews
            .get_or_create(&ReviewLabels {
                webhook: webhook.as_str(),
                kind: reviewed.kind.clone(),
                decision: reviewed.decision.as_str(),
            })
            .inc();
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        if let Some(response) = &reviewed.review.response
            && !response.allowed
        {
            tracing::info!(
                webhook = webhook.as_str(),
                kind = %reviewed.kind,
                uid = %response.uid,
                message = %response.result.message,
                "admission denied"
            );
        }
        let json = serde_json::to_vec(&reviewed.review).unwrap_or_default();
        let mut response = text(StatusCode::OK, json);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    }
}

impl<R: ClusterReader> Service for WebhookService<R> {
    fn mode(&self) -> MtlsMode {
        // TLS only (the apiserver calls webhooks over HTTPS); no client certificate is asked.
        MtlsMode::Strict
    }

    async fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
        _peer: Arc<Peer>,
        _mode: MtlsMode,
    ) -> Response<ProxyBody> {
        match (req.method(), req.uri().path()) {
            (&Method::POST, "/validate") => self.admit(req, Webhook::Validating).await,
            (&Method::POST, "/mutate") => self.admit(req, Webhook::Mutating).await,
            (&Method::GET, "/healthz" | "/readyz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/metrics") => metrics_response(&self.metrics.registry, &req),
            (_, "/validate" | "/mutate") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n")
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// Serves both webhooks until `shutdown` resolves, then drains. Returns once bound (the
/// bound address is logged) and serving has stopped.
pub async fn run<R: ClusterReader>(
    config: WebhookServerConfig,
    reader: R,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WebhookError> {
    let cert = Arc::new(ReloadingCert::new(&config.tls_dir)?);
    let acceptor = TlsAcceptor::from(Arc::new(cert.server_config()?));
    let listener_metrics = Arc::new(Metrics::default());
    let service = Arc::new(WebhookService {
        reader,
        settings: config.settings,
        metrics: AdmissionMetrics::new(&listener_metrics),
        max_body: usize::try_from(config.limits.max_body_bytes).unwrap_or(usize::MAX),
    });
    let server = Arc::new(Server::new(Some(acceptor), listener_metrics, config.limits));
    let listener = bind(config.listen, "webhook").await?;
    let local = listener.local_addr().unwrap_or(config.listen);
    let mut drain = Drain::default();
    drain.listen(server, service, listener);
    let refresher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(CERT_REFRESH).await;
            cert.refresh();
        }
    });
    tracing::info!(listen = %local, tls_dir = %config.tls_dir.display(), "admission webhooks serving /validate and /mutate");
    shutdown.await;
    refresher.abort();
    drain.shutdown().await;
    Ok(())
}
