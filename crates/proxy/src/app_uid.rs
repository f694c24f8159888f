//! The sidecar's connections to its app are used only while the app's port is held by the
//! agent's own OS user (`--app-uid`).
//!
//! A loopback port is the app's only while the app runs: when it is down (crashed,
//! restarting), any local user can bind it, and the sidecar would hand that user every
//! caller's request — with the verified caller's XFCC and the delegation headers the gateway
//! added. So each new connection to the app is checked before a byte is written on it: the
//! kernel's socket table names the owner of the socket that accepted it (an accepted socket
//! carries the uid of its listener's creator, see [`crate::peer_uid::server_uid`]). Another
//! owner, or none found, and the connection is closed and the request answered 502
//! `app_not_owned`. Pooled connections are not checked again: one table read per connection,
//! nothing per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::conn::Closed;
use crate::http::{BoxError, ProxyBody, REFUSED_BY_HEADER, json_error};
use crate::metrics::Metrics;

/// The rule named by the 502 a refused connection answers.
pub const RULE: &str = "app_not_owned";

/// The app's address and the uids that may hold it.
pub struct AppOwners {
    app: http::uri::Authority,
    uids: Vec<u32>,
    metrics: Arc<Metrics>,
}

impl AppOwners {
    /// Connections to `app` are used only when one of `uids` holds its port; `None` when
    /// `uids` is empty (nothing to check). Refusals are counted in `metrics`.
    pub fn new(app: http::uri::Authority, uids: Vec<u32>, metrics: Arc<Metrics>) -> Option<Self> {
        (!uids.is_empty()).then_some(Self { app, uids, metrics })
    }

    /// Whether `dst` is the app (a client may be asked for other hosts: only the app's
    /// connections are checked).
    fn is_app(&self, dst: &http::Uri) -> bool {
        dst.host() == Some(self.app.host()) && dst.port_u16() == self.app.port_u16()
    }

    /// Whether the socket that accepted `tcp` (our connection to the app) is owned by one of
    /// the uids; counted and logged when not.
    fn check(&self, tcp: &TcpStream) -> Result<(), AppNotOwned> {
        let (local, remote) = (tcp.local_addr(), tcp.peer_addr());
        let found = match (&local, &remote) {
            (Ok(local), Ok(remote)) => crate::peer_uid::server_uid(*local, *remote),
            _ => None,
        };
        if found.is_some_and(|uid| self.uids.contains(&uid)) {
            return Ok(());
        }
        let at = remote.map_or_else(|_| self.app.to_string(), |remote| remote.to_string());
        let refused = AppNotOwned {
            at,
            found,
            expected: self.uids.clone(),
        };
        tracing::warn!(rule = RULE, app = %refused.at, found = ?found, expected = ?self.uids, "connection to the app refused before sending: {refused}");
        self.metrics.connection_closed(Closed::AppUid.reason());
        Err(refused)
    }
}

/// A connection to the app refused: its port is held by another OS user, or its socket is
/// not in the kernel's table (fail closed).
#[derive(Debug)]
pub struct AppNotOwned {
    /// The app's address as connected.
    pub at: String,
    /// The uid holding it, if found.
    pub found: Option<u32>,
    /// The uids that may.
    pub expected: Vec<u32>,
}

impl std::fmt::Display for AppNotOwned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let expected: Vec<String> = self.expected.iter().map(u32::to_string).collect();
        match self.found {
            Some(uid) => write!(f, "the app's port {} is held by uid {uid}", self.at)?,
            None => write!(
                f,
                "the socket serving the app's port {} is not in the kernel's table",
                self.at
            )?,
        }
        write!(
            f,
            ", not by the agent's (--app-uid {}); nothing was sent to it",
            expected.join(", ")
        )
    }
}

impl std::error::Error for AppNotOwned {}

/// Marks a response as this module's refusal (see [`mark`]).
#[derive(Debug, Clone, Copy)]
struct Refused;

/// The caller's answer to a refused app connection: 502 naming the rule, the address and the
/// uids.
pub fn refusal(refused: &AppNotOwned) -> http::Response<ProxyBody> {
    let mut response = json_error(http::StatusCode::BAD_GATEWAY, RULE, &refused.to_string());
    response.extensions_mut().insert(Refused);
    response
}

/// A response of the app hop as it goes back: [`REFUSED_BY_HEADER`] names [`RULE`] when the
/// sidecar refused the app's connection, and is never the app's own on a response in the form
/// of a refusal (so an app cannot write the gateway's audit records, which read it of those
/// only: [`crate::refused_by`]). Any other status costs one comparison.
pub fn mark(response: &mut http::Response<ProxyBody>) {
    if !crate::refused_by::is_refusal_form(response) {
        return;
    }
    let refused = response.extensions().get::<Refused>().is_some();
    let headers = response.headers_mut();
    headers.remove(REFUSED_BY_HEADER);
    if refused {
        headers.insert(REFUSED_BY_HEADER, http::HeaderValue::from_static(RULE));
    }
}

/// The TCP connector of plaintext clients: [`HttpConnector`], and for connections to the app
/// the owner check of [`AppOwners`] before the connection is handed to the client.
#[derive(Clone)]
pub struct AppDial {
    tcp: HttpConnector,
    owners: Option<Arc<AppOwners>>,
}

impl AppDial {
    /// Dials with `tcp`, checking connections to the app when `owners` is set.
    pub fn new(tcp: HttpConnector, owners: Option<Arc<AppOwners>>) -> Self {
        Self { tcp, owners }
    }
}

impl tower::Service<http::Uri> for AppDial {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let owners = self.owners.clone().filter(|o| o.is_app(&dst));
        let connecting = self.tcp.call(dst);
        Box::pin(async move {
            let io = connecting.await?;
            if let Some(owners) = owners {
                owners.check(io.inner())?;
            }
            Ok(io)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn owners(app: SocketAddr, uids: Vec<u32>) -> (Arc<AppOwners>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let app = http::uri::Authority::try_from(app.to_string()).expect("authority");
        let owners = AppOwners::new(app, uids, metrics.clone()).expect("uids");
        (Arc::new(owners), metrics)
    }

    fn me() -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").expect("/proc/self").uid()
    }

    async fn dial(owners: Arc<AppOwners>, to: SocketAddr) -> Result<TokioIo<TcpStream>, BoxError> {
        use tower::Service;
        let mut dial = AppDial::new(HttpConnector::new(), Some(owners));
        dial.call(format!("http://{to}/").parse().expect("uri"))
            .await
    }

    #[tokio::test]
    async fn the_app_held_by_an_expected_uid_is_dialled_and_by_another_refused_and_counted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let app = listener.local_addr().expect("addr");
        let (allowed, _) = owners(app, vec![me().wrapping_add(7), me()]);
        assert!(dial(allowed, app).await.is_ok());

        let (others, metrics) = owners(app, vec![me().wrapping_add(1)]);
        let error = dial(others, app).await.expect_err("another uid's port");
        let refused = error.downcast_ref::<AppNotOwned>().expect("AppNotOwned");
        assert_eq!(refused.found, Some(me()));
        assert_eq!(refused.at, app.to_string());
        let text = refused.to_string();
        assert!(text.contains(&format!("uid {}", me())), "{text}");
        assert!(text.contains(&me().wrapping_add(1).to_string()), "{text}");
        assert!(
            metrics
                .encode()
                .contains("warden_connections_closed_total{reason=\"app_uid\"} 1"),
            "{}",
            metrics.encode()
        );
    }

    #[tokio::test]
    async fn another_host_than_the_app_is_not_checked() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let other = listener.local_addr().expect("addr");
        let app: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let (owners, metrics) = owners(app, vec![me().wrapping_add(1)]);
        assert!(dial(owners, other).await.is_ok());
        assert!(!metrics.encode().contains("app_uid"));
    }

    #[test]
    fn only_the_sidecars_refusal_names_its_rule_to_the_gateway_never_the_apps_header() {
        use http_body_util::BodyExt;
        let refused = AppNotOwned {
            at: "127.0.0.1:8080".into(),
            found: Some(1001),
            expected: vec![1000],
        };
        let mut response = refusal(&refused);
        mark(&mut response);
        assert_eq!(response.status(), 502);
        assert_eq!(response.headers()[REFUSED_BY_HEADER], RULE);

        let mut forged = http::Response::new(
            http_body_util::Empty::<bytes::Bytes>::new()
                .map_err(|e| match e {})
                .boxed(),
        );
        *forged.status_mut() = http::StatusCode::BAD_GATEWAY;
        forged.headers_mut().insert(
            REFUSED_BY_HEADER,
            http::HeaderValue::from_static("app_not_owned"),
        );
        mark(&mut forged);
        assert!(forged.headers().get(REFUSED_BY_HEADER).is_none());

        // Nor on a gRPC error status of its own (trailers-only), which the gateway reads too.
        let mut forged = crate::http::trailers_only(14, "down");
        forged.headers_mut().insert(
            REFUSED_BY_HEADER,
            http::HeaderValue::from_static("app_not_owned"),
        );
        mark(&mut forged);
        assert!(forged.headers().get(REFUSED_BY_HEADER).is_none());
    }

    #[test]
    fn no_uids_is_no_check() {
        let app = http::uri::Authority::from_static("127.0.0.1:8080");
        assert!(AppOwners::new(app, Vec::new(), Arc::new(Metrics::default())).is_none());
    }
}
