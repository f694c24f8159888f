//! The admin port — `/healthz`, `/readyz` (503 until the first SVID), `/metrics` — and the
//! start of a process's identity, which the admin port reports on. Kept apart from the
//! request path so that admin routes are added here only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use warden_identity::source::{FileSource, SvidSource, WorkloadApiSource};

use crate::config::IdentityConfig;
use crate::error::SidecarError;
use crate::http::full;
use crate::metrics::Metrics;
use crate::server::{Drain, bind, stopped};

/// The identity a process has, once its source is up (the admin port starts before it).
pub type IdentitySlot = Arc<ArcSwap<Option<Arc<dyn SvidSource>>>>;

/// `/healthz`, `/readyz` (503 until the first SVID), `/metrics`.
pub async fn serve_admin(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    identity: IdentitySlot,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = stopped(&mut stop) => return,
        };
        let (metrics, identity) = (metrics.clone(), identity.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let (metrics, identity) = (metrics.clone(), identity.clone());
                async move {
                    let svid = identity
                        .load()
                        .as_ref()
                        .as_ref()
                        .and_then(|source| source.current());
                    // Ready while the held SVID is still valid: a source that cannot renew
                    // (its Workload API down) keeps serving on it until then, not after.
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    let ready = svid.as_ref().is_some_and(|svid| svid.not_after() > now);
                    if let Some(svid) = &svid {
                        metrics.set_svid_expiry(svid.not_after());
                    }
                    let format = crate::metrics::Format::negotiate(
                        req.headers()
                            .get(http::header::ACCEPT)
                            .and_then(|v| v.to_str().ok()),
                    );
                    let (status, body): (StatusCode, Bytes) = match req.uri().path() {
                        "/healthz" => (StatusCode::OK, Bytes::from_static(b"ok\n")),
                        "/readyz" if ready => (StatusCode::OK, Bytes::from_static(b"ready\n")),
                        "/readyz" => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            Bytes::from_static(b"no valid SVID (none loaded yet, or it expired)\n"),
                        ),
                        "/status" => (StatusCode::OK, crate::admin_status::body(ready)),
                        "/metrics" => (StatusCode::OK, Bytes::from(metrics.encode_as(format))),
                        _ => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")),
                    };
                    let metrics_page = req.uri().path() == "/metrics";
                    let mut response = Response::new(full(body));
                    *response.status_mut() = status;
                    if metrics_page {
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static(format.content_type()),
                        );
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// Starts the admin port (if any) first, so that `/readyz` answers 503 while the identity
/// loads, then the SVID source.
pub async fn start_admin_and_identity(
    admin: Option<SocketAddr>,
    identity: &IdentityConfig,
    metrics: &Arc<Metrics>,
    drain: &Drain,
) -> Result<Arc<dyn SvidSource>, SidecarError> {
    let slot: IdentitySlot = Arc::new(ArcSwap::from_pointee(None));
    if let Some(addr) = admin {
        let listener = bind(addr, "admin").await?;
        tokio::spawn(serve_admin(
            listener,
            metrics.clone(),
            slot.clone(),
            drain.stop_signal(),
        ));
    }
    let source = start_identity(identity).await?;
    slot.store(Arc::new(Some(source.clone())));
    Ok(source)
}

/// Starts the configured SVID source.
async fn start_identity(config: &IdentityConfig) -> Result<Arc<dyn SvidSource>, SidecarError> {
    Ok(match config {
        IdentityConfig::SvidDir(dir) => {
            Arc::new(FileSource::watch(dir).map_err(|e| SidecarError::Identity(e.to_string()))?)
        }
        IdentityConfig::WorkloadApi(endpoint) => Arc::new(
            WorkloadApiSource::connect(endpoint.as_deref())
                .await
                .map_err(|e| SidecarError::Identity(e.to_string()))?,
        ),
    })
}
