//! Issue 11's memory attack on the gateway: many anonymous JSON-RPC bodies of ~9.9 MB, each
//! sent almost whole and then stalled, to a target that denies anonymous callers (and, harder,
//! to one that admits them, so that the gateway reads the bodies within its buffering budget).
//! What counts is the gateway's RSS after the burst: back within 20 MiB of idle.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::os::rss_kib;

/// The declared size of each body (the gateway's default body cap is 10 MiB).
const DECLARED: usize = 9_900_000;
/// How much of it each connection sends before stalling.
const SENT: usize = 9_800_000;
/// How long each connection may spend sending before it stalls anyway (a gateway that refuses
/// without reading stops taking bytes).
const SEND_FOR: Duration = Duration::from_secs(5);

/// The gateway's RSS during and after the burst.
pub struct Burst {
    /// The largest RSS seen while the stalled connections were open.
    pub peak_kib: Option<u64>,
    /// RSS two seconds after the connections were closed.
    pub after_kib: Option<u64>,
}

/// One anonymous, stalled upload to `agent` (`namespace/name`): the head, then `SENT` bytes
/// of a `SendMessage` body.
async fn stalled_upload(addr: SocketAddr, agent: &'static str) -> Option<TcpStream> {
    let mut tcp = TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "POST /api/a2a/{agent}/ HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {DECLARED}\r\n\r\n"
    );
    let prefix = br#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"role":"user","messageId":"m","parts":[{"kind":"text","text":""#;
    let chunk = vec![b'x'; 64 * 1024];
    let send = async {
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(prefix).await?;
        let mut sent = prefix.len();
        while sent < SENT {
            let n = chunk.len().min(SENT - sent);
            tcp.write_all(&chunk[..n]).await?;
            sent += n;
        }
        Ok::<_, std::io::Error>(())
    };
    // Refused early, or the gateway stopped reading: either way the connection is held.
    let _ = tokio::time::timeout(SEND_FOR, send).await;
    Some(tcp)
}

/// Runs `count` stalled uploads at once to `agent` through the gateway at `addr` (process
/// `pid`).
pub async fn gateway_burst(addr: SocketAddr, pid: u32, agent: &'static str, count: usize) -> Burst {
    let uploads: Vec<_> = (0..count)
        .map(|_| tokio::spawn(stalled_upload(addr, agent)))
        .collect();
    let mut peak = rss_kib(pid);
    let mut held = Vec::with_capacity(count);
    for upload in uploads {
        if let Ok(Some(tcp)) = upload.await {
            held.push(tcp);
        }
        peak = peak.max(rss_kib(pid));
    }
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_kib(pid));
    }
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;
    Burst {
        peak_kib: peak,
        after_kib: rss_kib(pid),
    }
}
