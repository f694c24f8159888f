//! Warden's SPIFFE Workload API server: gRPC `SpiffeWorkloadAPI` on Unix sockets, backed by
//! the embedded CA.
//!
//! Local mode runs the same client code path as a cluster with SPIRE: workloads fetch their
//! SVIDs with any Workload API client. Instead of attesting callers by their process, each
//! workload gets a socket of its own, and a socket only ever hands out the SVID of the workload
//! it was bound for, so one workload cannot obtain another's SVID as long as it cannot reach
//! the other's socket (the supervisor puts each in a directory only that workload sees).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::wrappers::{UnixListenerStream, WatchStream};
use tonic::{Request, Response, Status};

use crate::ca::{CertificateAuthority, IssuedSvid};
use crate::h2_authority::AuthorityFix;
use crate::id::SpiffeId;

/// The generated protobuf types and gRPC stubs of the SPIFFE Workload API.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

use proto::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};

/// JWT-SVIDs are short-lived bearer tokens: at most this, or the X.509 TTL when shorter.
const JWT_SVID_TTL: Duration = Duration::from_secs(300);

/// The metadata header every Workload API call must carry (SSRF protection in the spec).
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A socket could not be bound.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("Workload API server on {path}: {source}")]
    Transport {
        /// The socket path.
        path: PathBuf,
        /// The transport error.
        source: tonic::transport::Error,
    },
}

/// One workload served by the Workload API server: its ID and the socket that serves it.
#[derive(Debug, Clone)]
pub struct WorkloadBinding {
    /// The SPIFFE ID this socket hands out.
    pub id: SpiffeId,
    /// The Unix socket path.
    pub socket: PathBuf,
}

/// A Workload API server for any number of workloads, each on its own socket.
pub struct WorkloadApiServer {
    ca: Arc<CertificateAuthority>,
    ttl: Duration,
}

impl WorkloadApiServer {
    /// SVIDs are issued with `ttl` and rotated at half of it.
    pub fn new(ca: Arc<CertificateAuthority>, ttl: Duration) -> Self {
        Self { ca, ttl }
    }

    /// Binds every socket (replacing stale socket files), then serves until `shutdown`
    /// resolves. A bind failure is reported before anything is served.
    pub async fn serve(
        &self,
        workloads: Vec<WorkloadBinding>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let mut listeners = Vec::with_capacity(workloads.len());
        for binding in workloads {
            let listener = bind(&binding.socket)?;
            listeners.push((binding, listener));
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let mut servers = Vec::new();
        // Workloads with the same ID share one rotation, so they see the same SVID.
        let mut rotations: HashMap<SpiffeId, watch::Receiver<Option<Arc<IssuedSvid>>>> =
            HashMap::new();
        for (binding, listener) in listeners {
            let svids = rotations
                .entry(binding.id.clone())
                .or_insert_with(|| {
                    spawn_rotation(
                        self.ca.clone(),
                        binding.id.clone(),
                        self.ttl,
                        stop_rx.clone(),
                    )
                })
                .clone();
            let service = WorkloadService {
                ca: self.ca.clone(),
                id: binding.id.clone(),
                svids,
                stop: stop_rx.clone(),
                ttl: self.ttl,
            };
            let mut stop = stop_rx.clone();
            let path = binding.socket.clone();
            servers.push(tokio::spawn(async move {
                tracing::info!(socket = %path.display(), id = %binding.id, "serving the Workload API");
                tonic::transport::Server::builder()
                    .add_service(SpiffeWorkloadApiServer::with_interceptor(
                        service,
                        require_security_header,
                    ))
                    .serve_with_incoming_shutdown(incoming(listener), async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
                    .map_err(|source| ServeError::Transport { path, source })
            }));
        }
        for server in servers {
            match server.await {
                Ok(result) => result?,
                Err(e) => tracing::error!(error = %e, "Workload API server task failed"),
            }
        }
        Ok(())
    }
}

fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    give_to_directory_owner(path).map_err(err)?;
    Ok(listener)
}

/// A socket belongs to whoever owns its directory: a supervisor running as root serves a
/// workload that runs as its own user from a directory only that user can open (0700, owned
/// by it), so the socket must be that user's too to be connectable.
fn give_to_directory_owner(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    let (dir, socket) = (std::fs::metadata(parent)?, std::fs::metadata(path)?);
    if dir.uid() == socket.uid() {
        return Ok(());
    }
    std::os::unix::fs::chown(path, Some(dir.uid()), Some(dir.gid()))
}

/// The connections of `listener`, each behind [`AuthorityFix`] so that grpcio clients'
/// `:authority` (the percent-encoded socket path) is accepted.
fn incoming(
    listener: UnixListener,
) -> impl Stream<Item = std::io::Result<AuthorityFix<tokio::net::UnixStream>>> {
    UnixListenerStream::new(listener).map(|conn| conn.map(AuthorityFix::new))
}

/// Issues an SVID for `id` now and again at every half-life, until `stop`.
fn spawn_rotation(
    ca: Arc<CertificateAuthority>,
    id: SpiffeId,
    ttl: Duration,
    mut stop: watch::Receiver<bool>,
) -> watch::Receiver<Option<Arc<IssuedSvid>>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        loop {
            let wait = match ca.issue_x509(&id, ttl) {
                Ok(svid) => {
                    let wait = svid.ttl / 2;
                    tracing::debug!(%id, "issued X.509-SVID");
                    tx.send_replace(Some(Arc::new(svid)));
                    wait
                }
                Err(e) => {
                    tracing::error!(%id, error = %e, "issuing X.509-SVID failed; retrying");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait.max(Duration::from_millis(100))) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
    rx
}

/// Refuses calls without `workload.spiffe.io: true`, as the spec demands.
#[allow(clippy::result_large_err)]
fn require_security_header(request: Request<()>) -> Result<Request<()>, Status> {
    match request.metadata().get(SECURITY_HEADER) {
        Some(v) if v == "true" => Ok(request),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

struct WorkloadService {
    ca: Arc<CertificateAuthority>,
    id: SpiffeId,
    svids: watch::Receiver<Option<Arc<IssuedSvid>>>,
    stop: watch::Receiver<bool>,
    ttl: Duration,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl WorkloadService {
    /// One message now, then the stream stays open (bundles do not change while it runs)
    /// until the server stops.
    fn single_then_hold<T: Send + 'static>(&self, item: T) -> ResponseStream<T> {
        let mut stop = self.stop.clone();
        let hold = futures::stream::once(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .filter_map(|_| async { None });
        Box::pin(futures::stream::once(async move { Ok(item) }).chain(hold))
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadService {
    type FetchX509SVIDStream = ResponseStream<proto::X509svidResponse>;
    type FetchX509BundlesStream = ResponseStream<proto::X509BundlesResponse>;
    type FetchJWTBundlesStream = ResponseStream<proto::JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        _request: Request<proto::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let bundle = self.ca.bundle().x509_der_concatenated();
        let mut stop = self.stop.clone();
        let stream = WatchStream::new(self.svids.clone())
            .filter_map(|svid| async move { svid })
            .map(move |svid| {
                Ok(proto::X509svidResponse {
                    svids: vec![proto::X509svid {
                        spiffe_id: svid.id.to_string(),
                        x509_svid: svid.chain.iter().flat_map(|c| c.iter().copied()).collect(),
                        x509_svid_key: svid.key_pkcs8.clone(),
                        bundle: bundle.clone(),
                        hint: String::new(),
                    }],
                    crl: Vec::new(),
                    federated_bundles: HashMap::new(),
                })
            })
            .take_until(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch_x509_bundles(
        &self,
        _request: Request<proto::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let bundle = self.ca.bundle();
        let response = proto::X509BundlesResponse {
            crl: Vec::new(),
            bundles: HashMap::from([(
                bundle.trust_domain().id_string(),
                bundle.x509_der_concatenated(),
            )]),
        };
        Ok(Response::new(self.single_then_hold(response)))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<proto::JwtsvidRequest>,
    ) -> Result<Response<proto::JwtsvidResponse>, Status> {
        let request = request.into_inner();
        if request.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if !request.spiffe_id.is_empty() && request.spiffe_id != self.id.as_str() {
            return Err(Status::permission_denied(format!(
                "this workload is {} and may not obtain a JWT-SVID for {}",
                self.id, request.spiffe_id
            )));
        }
        let ttl = JWT_SVID_TTL.min(self.ttl);
        let token = self
            .ca
            .issue_jwt(&self.id, &request.audience, ttl)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(proto::JwtsvidResponse {
            svids: vec![proto::Jwtsvid {
                spiffe_id: self.id.to_string(),
                svid: token,
                hint: String::new(),
            }],
        }))
    }

    async fn fetch_jwt_bundles(
        &self,
        _request: Request<proto::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let bundle = self.ca.bundle();
        let response = proto::JwtBundlesResponse {
            bundles: HashMap::from([(bundle.trust_domain().id_string(), bundle.to_jwt_jwks())]),
        };
        Ok(Response::new(self.single_then_hold(response)))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<proto::ValidateJwtsvidRequest>,
    ) -> Result<Response<proto::ValidateJwtsvidResponse>, Status> {
        let request = request.into_inner();
        if request.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if request.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let verified =
            crate::jwt::validate_jwt_svid(&request.svid, &self.ca.bundle_set(), &request.audience)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(proto::ValidateJwtsvidResponse {
            spiffe_id: verified.spiffe_id.to_string(),
            claims: Some(json_to_struct(verified.claims)),
        }))
    }
}

fn json_to_struct(value: serde_json::Value) -> prost_types::Struct {
    match json_to_value(value).kind {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        _ => prost_types::Struct::default(),
    }
}

fn json_to_value(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .into_iter()
                .map(|(k, v)| (k, json_to_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}
