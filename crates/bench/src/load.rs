//! The load generator: closed loop (throughput at N connections) and open loop (a fixed rate,
//! latency measured from each request's *intended* send time, so queueing is not hidden).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;
use warden_identity::SpiffeId;
use warden_proxy::forward::{Upstreams, Via};

/// Where requests go and how.
pub struct Target {
    /// Full URL of the request.
    pub url: String,
    /// Plain, or mTLS expecting this server identity.
    pub expect: Option<SpiffeId>,
    /// The client, presenting the client SVID on mTLS.
    pub client: Arc<Upstreams>,
    /// Processes on the path (for CPU and RSS).
    pub pids: Vec<u32>,
    /// host:port, for handshakes.
    pub addr: String,
    /// The TLS client config, for handshakes.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// An A2A `SendMessage` of about 1 KiB.
pub fn send_message() -> Bytes {
    let text = "x".repeat(900);
    Bytes::from(
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {
            "role": "user", "messageId": "bench", "parts": [{"kind": "text", "text": text}]}}})
        .to_string(),
    )
}

async fn one(target: &Target, body: &Bytes) -> bool {
    let Ok(request) = http::Request::post(&target.url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.clone()))
    else {
        return false;
    };
    let via = match &target.expect {
        Some(id) => Via::Mesh(id),
        None => Via::Plain,
    };
    let response = target.client.send(request, via).await;
    let ok = response.status().is_success();
    ok && response.into_body().collect().await.is_ok()
}

/// What a closed loop completed, and in how long.
#[derive(Debug, Clone, Copy)]
pub struct Completed {
    /// Successful attempts.
    pub count: u64,
    /// Wall-clock seconds from the first attempt to the end of the last.
    pub seconds: f64,
}

impl Completed {
    /// Successful attempts per second.
    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.seconds
    }
}

/// Requests completed with `connections` concurrent loops for `duration`.
pub async fn closed_loop(
    target: &Arc<Target>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Completed> {
    let body = send_message();
    // Warm the pool.
    anyhow::ensure!(
        one(target, &body).await,
        "{}: the first request failed",
        target.url
    );
    let target = target.clone();
    run_loops(connections, duration, move || {
        let (target, body) = (target.clone(), body.clone());
        async move { one(&target, &body).await }
    })
    .await
}

/// Latencies in milliseconds.
pub struct Latencies(Vec<f64>);

impl Latencies {
    /// How many requests were measured.
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// The q-quantile.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let i = ((self.0.len() as f64 - 1.0) * q).round() as usize;
        self.0[i.min(self.0.len() - 1)]
    }

    /// The largest.
    pub fn max(&self) -> f64 {
        self.0.last().copied().unwrap_or(f64::NAN)
    }
}

/// Sends at `rate` per second for `duration`; each latency counts from the intended send time.
///
/// Requests are dispatched from a dedicated thread that sleeps with the OS timer (tens of
/// microseconds), not tokio's millisecond timer wheel, so the harness does not add its own
/// scheduling lateness to every latency.
pub async fn open_loop(
    target: &Arc<Target>,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<Latencies> {
    let body = send_message();
    let count = (rate as f64 * duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let handle = tokio::runtime::Handle::current();
    let target_for_thread = target.clone();
    let dispatcher = std::thread::spawn(move || {
        let start = Instant::now() + Duration::from_millis(50);
        let mut tasks = Vec::with_capacity(count as usize);
        for i in 0..count {
            let intended = start + interval * i as u32;
            if let Some(wait) = intended.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let (target, body) = (target_for_thread.clone(), body.clone());
            tasks.push(handle.spawn(async move {
                let ok = one(&target, &body).await;
                (ok, intended.elapsed().as_secs_f64() * 1000.0)
            }));
        }
        tasks
    });
    let tasks = tokio::task::spawn_blocking(move || dispatcher.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the dispatcher thread panicked"))?;
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut failed = 0;
    for t in tasks {
        let (ok, ms) = t.await?;
        if ok {
            latencies.push(ms);
        } else {
            failed += 1;
        }
    }
    anyhow::ensure!(
        failed == 0,
        "{}: {failed} of {count} requests failed",
        target.url
    );
    latencies.sort_by(f64::total_cmp);
    Ok(Latencies(latencies))
}

/// Full mTLS handshakes (no resumption) completed against `target`.
pub async fn handshakes(target: &Arc<Target>, duration: Duration) -> anyhow::Result<Completed> {
    let tls = target
        .tls
        .clone()
        .ok_or_else(|| anyhow::anyhow!("handshakes need a TLS target"))?;
    let addr = target.addr.clone();
    run_loops(8, duration, move || {
        let (connector, addr) = (tokio_rustls::TlsConnector::from(tls.clone()), addr.clone());
        async move {
            match TcpStream::connect(&addr).await {
                Ok(tcp) => connector
                    .connect(warden_identity::tls::mesh_server_name(), tcp)
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        }
    })
    .await
}

/// Runs `loops` concurrent loops of `attempt` for `duration`; counts successful attempts.
async fn run_loops<F, Fut>(
    loops: usize,
    duration: Duration,
    attempt: F,
) -> anyhow::Result<Completed>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..loops)
        .map(|_| {
            let attempt = attempt.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while start.elapsed() < duration {
                    if attempt().await {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    Ok(Completed {
        count: total,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Opens `n` mTLS connections to `target` and keeps them open until the returned value drops.
pub async fn hold_connections(
    target: &Target,
    n: usize,
) -> anyhow::Result<Vec<tokio_rustls::client::TlsStream<TcpStream>>> {
    let tls = target
        .tls
        .clone()
        .ok_or_else(|| anyhow::anyhow!("needs a TLS target"))?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let open = async {
            let tcp = TcpStream::connect(&target.addr).await?;
            connector
                .connect(warden_identity::tls::mesh_server_name(), tcp)
                .await
        };
        // A proxy at its connection limit accepts TCP but never handshakes: fail, don't hang.
        let stream = tokio::time::timeout(Duration::from_secs(5), open)
            .await
            .map_err(|_| anyhow::anyhow!("connection {i} to {} timed out", target.addr))??;
        held.push(stream);
    }
    Ok(held)
}
