//! Asks the processes themselves how they are: a sidecar's or gateway's admin `/status`
//! (readiness and the snapshot version it has loaded), an app's port. A process that does not
//! answer within the timeout is `Unknown` — never assumed Ready.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// How long a process has to answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// What a proxy says on its admin `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminReport {
    /// It holds an SVID and serves.
    pub ready: bool,
    /// The snapshot version it has loaded.
    pub snapshot_version: Option<u64>,
    /// Its PID.
    pub pid: Option<u32>,
}

/// Sends `request` over plain HTTP/1.1 to `addr`; (status, body), or why there is none.
pub(crate) async fn plain_request<B>(
    addr: SocketAddr,
    request: http::Request<B>,
) -> Result<(u16, bytes::Bytes), String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

async fn get(addr: SocketAddr, path: &str) -> Result<(u16, bytes::Bytes), String> {
    let request = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    plain_request(addr, request).await
}

/// The admin `/status` of the proxy at `admin`; `Err` says why there is no answer.
pub async fn admin(admin: SocketAddr) -> Result<AdminReport, String> {
    let (status, body) = tokio::time::timeout(PROBE_TIMEOUT, get(admin, "/status"))
        .await
        .map_err(|_| format!("no answer from {admin} within {PROBE_TIMEOUT:?}"))??;
    if status != 200 {
        return Err(format!("{admin}/status answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{admin}/status: {e}"))
}

/// Whether something accepts connections on `addr` (an app has no admin port).
pub async fn listening(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// What the mesh answered a workload's request.
pub(crate) struct MeshAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The whole body.
    pub body: bytes::Bytes,
    /// The peer answered it (over the connection, mTLS proving `via`'s identity): not an error
    /// this process made up because there was no answer (refused connection, failed
    /// handshake, timeout).
    pub from_peer: bool,
}

/// Sends `request` through `upstreams` (mTLS or plain, by `via`) and reads the whole answer.
/// The one way `up` and `verify` call the mesh as a workload.
pub(crate) async fn mesh_request<B>(
    upstreams: &warden_proxy::forward::Upstreams,
    request: http::Request<B>,
    via: warden_proxy::forward::Via<'_>,
) -> MeshAnswer
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
    B::Error: Into<warden_proxy::http::BoxError>,
{
    let response = upstreams.send(request, via).await;
    let status = response.status().as_u16();
    let from_peer = warden_proxy::http::answered_by_peer(&response);
    let body = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    MeshAnswer {
        status,
        body,
        from_peer,
    }
}
