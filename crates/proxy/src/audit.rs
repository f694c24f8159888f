//! The audit log: one JSON line per request, written before the response ends.
//!
//! A generated response (denial, error) is logged before it is returned; a proxied response is
//! logged when its body ends (or is abandoned), so the record has the status, latency and byte
//! counts and is on disk before the client sees the end of the stream. Lines go straight to
//! the file (no user-space buffer, one `write(2)` each, no lock between requests), so a
//! SIGTERM after the drain loses nothing; past a size the file is rotated: `<file>` →
//! `<file>.1` → `<file>.2` …, keeping `max_files` old files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;

use crate::http::{BoxError, ProxyBody};

/// One audited request.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// RFC 3339 time the request arrived.
    pub time: String,
    /// The caller: SPIFFE ID, `jwt:<issuer>#<subject>` or `anonymous`.
    pub caller: String,
    /// How it was authenticated: `mtls`, `jwt-svid`, `oidc`, `anonymous`, or `invalid`.
    pub authn: &'static str,
    /// `namespace/agent`.
    pub target: String,
    /// The A2A method (1.0 name), `GetAgentCard`, or the HTTP route when not A2A (borrowed
    /// when it is a static name: no allocation per request).
    pub method: std::borrow::Cow<'static, str>,
    /// Task id, when visible.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Context id, when visible.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// The rule that decided.
    pub rule: &'static str,
    /// The HTTP status sent.
    pub status: u16,
    /// A gRPC call's `grpc-status` (0 OK; the upstream's error status as it sent it, or the
    /// proxy's refusal), from the response head or its trailers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// Milliseconds from arrival to the end of the response.
    pub latency_ms: f64,
    /// Request body bytes (as declared or read).
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// True when the client or the upstream went away before the response ended.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub aborted: bool,
    /// Where an aborted request stopped: `received`, `forwarding` or `responding`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<&'static str>,
    /// The rule of the target's sidecar when it refused what the gateway allowed (e.g.
    /// `app_not_owned`: another OS user held the app's port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_rule: Option<String>,
}

/// Where audit lines go.
pub enum Sink {
    /// Standard output.
    Stdout,
    /// A file, rotated past `max_bytes`.
    File {
        /// The file.
        path: PathBuf,
        /// The open file, in append mode: each line is one `write(2)`, which the kernel
        /// appends whole, so requests write at once under the shared (read) lock; only a
        /// rotation takes it exclusively. (A mutex here was contended by every worker and
        /// profiled at a fifth of the gateway's CPU under load.)
        file: RwLock<File>,
        /// Bytes in the current file, reserved by each line before it is written.
        size: AtomicU64,
        /// Rotation threshold.
        max_bytes: u64,
        /// Old files kept (`<file>.1` is the newest).
        max_files: u32,
    },
    /// Nowhere.
    Discard,
}

impl Sink {
    /// Opens (appends to) an audit file.
    pub fn file(path: PathBuf, max_bytes: u64, max_files: u32) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        let size = file.metadata()?.len();
        Ok(Sink::File {
            path,
            file: RwLock::new(file),
            size: AtomicU64::new(size),
            max_bytes,
            max_files,
        })
    }

    /// Writes one record as one line.
    pub fn write(&self, record: &Record) {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(_) => return,
        };
        line.push(b'\n');
        match self {
            Sink::Discard => {}
            Sink::Stdout => {
                let _ = std::io::stdout().lock().write_all(&line);
            }
            Sink::File {
                path,
                file,
                size,
                max_bytes,
                max_files,
            } => {
                let len = line.len() as u64;
                let before = size.fetch_add(len, Ordering::AcqRel);
                let written = if before + len > *max_bytes && before > 0 {
                    // The line that crosses the threshold rotates, unless another did since
                    // it reserved its bytes (then it goes, and counts, in the fresh file).
                    let Ok(mut file) = file.write() else { return };
                    if size.load(Ordering::Acquire) >= before + len {
                        rotate(path, *max_files);
                        match OpenOptions::new()
                            .create(true)
                            .append(true)
                            .mode(0o600)
                            .open(path)
                        {
                            Ok(fresh) => {
                                *file = fresh;
                                size.store(len, Ordering::Release);
                            }
                            Err(e) => {
                                tracing::error!(error = %e, file = %path.display(), "audit file reopen failed");
                            }
                        }
                    } else {
                        size.fetch_add(len, Ordering::AcqRel);
                    }
                    (&*file).write_all(&line)
                } else {
                    let Ok(file) = file.read() else { return };
                    (&*file).write_all(&line)
                };
                if let Err(e) = written {
                    tracing::error!(error = %e, file = %path.display(), "audit write failed");
                }
            }
        }
    }
}

/// `<file>.<n>`: the n-th newest rotated file.
pub fn rotated_name(path: &std::path::Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Shifts `<file>.1…` up by one (the oldest past `max_files` is removed) and moves the file
/// to `<file>.1`. With `max_files` 0 the file is simply started over.
fn rotate(path: &std::path::Path, max_files: u32) {
    if max_files == 0 {
        let _ = std::fs::remove_file(path);
        return;
    }
    let _ = std::fs::remove_file(rotated_name(path, max_files));
    for n in (1..max_files).rev() {
        let _ = std::fs::rename(rotated_name(path, n), rotated_name(path, n + 1));
    }
    if let Err(e) = std::fs::rename(path, rotated_name(path, 1)) {
        tracing::error!(error = %e, file = %path.display(), "audit rotation failed");
    }
}

/// Where a finished request is recorded: the audit line and the gateway metrics, together.
pub struct Audit {
    /// The audit log.
    pub sink: Sink,
    /// The metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Audit {
    /// Writes the line and counts the request.
    pub fn record(&self, record: &Record) {
        self.sink.write(record);
        let status =
            http::StatusCode::from_u16(record.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        self.metrics
            .gateway_requests
            .get_or_create(&crate::metrics::GatewayLabels {
                target: crate::metrics::target_label(record.rule, &record.target),
                method: crate::metrics::method_label(&record.method),
                decision: record.decision,
                status: crate::metrics::status_class(status),
            })
            .inc();
        if record.decision == "deny" {
            self.metrics
                .gateway_denials
                .get_or_create(&crate::metrics::RuleLabels {
                    rule: record.rule.to_owned(),
                })
                .inc();
        }
        self.metrics
            .gateway_latency
            .observe(record.latency_ms / 1000.0);
    }
}

/// RFC 3339 for a time.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let millis = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_millis());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A response body that writes its audit record when it ends, before the end reaches the
/// client (or when it is dropped early).
pub struct AuditedBody {
    inner: ProxyBody,
    record: Option<Record>,
    audit: Arc<Audit>,
    start: Instant,
}

impl AuditedBody {
    /// Wraps `inner`; `record` is completed with bytes and latency when the body ends.
    pub fn new(inner: ProxyBody, record: Record, audit: Arc<Audit>, start: Instant) -> Self {
        Self {
            inner,
            record: Some(record),
            audit,
            start,
        }
    }

    fn finish(&mut self, aborted: bool) {
        if let Some(mut record) = self.record.take() {
            record.latency_ms = self.start.elapsed().as_secs_f64() * 1000.0;
            record.aborted = aborted;
            if aborted {
                record.phase = Some("responding");
            }
            self.audit.record(&record);
        }
    }
}

impl Body for AuditedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(record) = this.record.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        record.bytes_out += data.len() as u64;
                    } else if let Some(trailers) = frame.trailers_ref() {
                        record.grpc_status =
                            crate::grpc::status_of(trailers).or(record.grpc_status);
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish(false);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finish(false);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(true);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        self.finish(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> Record {
        Record {
            time: rfc3339(SystemTime::UNIX_EPOCH),
            caller: format!("spiffe://warden.local/ns/a/sa/caller-{i}"),
            authn: "mtls",
            target: "b/agent".into(),
            method: "SendMessage".into(),
            task_id: None,
            context_id: None,
            decision: "allow",
            rule: "same_namespace",
            status: 200,
            grpc_status: None,
            latency_ms: 1.0,
            bytes_in: 0,
            bytes_out: 0,
            aborted: false,
            phase: None,
            upstream_rule: None,
        }
    }

    #[test]
    fn rotation_keeps_max_files_old_files_named_after_the_log_and_loses_no_recent_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let sink = Sink::file(path.clone(), 2_000, 3).unwrap();
        for i in 0..100 {
            sink.write(&record(i));
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["audit.log", "audit.log.1", "audit.log.2", "audit.log.3"]
        );
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.len() <= 2_000);
        // Oldest to newest, the kept lines are consecutive and end with the last one.
        let lines: Vec<u64> = (1..=3)
            .rev()
            .map(|n| std::fs::read_to_string(rotated_name(&path, n)).unwrap())
            .chain([current])
            .flat_map(|text| {
                text.lines()
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).unwrap();
                        let caller = v["caller"].as_str().unwrap().to_owned();
                        caller.rsplit('-').next().unwrap().parse().unwrap()
                    })
                    .collect::<Vec<u64>>()
            })
            .collect();
        assert_eq!(lines.last(), Some(&99));
        assert!(lines.windows(2).all(|w| w[1] == w[0] + 1), "{lines:?}");
    }

    #[tokio::test]
    async fn a_streamed_calls_grpc_status_is_read_from_its_trailers() {
        use http_body_util::{BodyExt, StreamBody};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Arc::new(Audit {
            sink: Sink::file(path.clone(), u64::MAX, 1).unwrap(),
            metrics: Arc::new(crate::metrics::Metrics::default()),
        });
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("5"));
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures::stream::iter(frames)).boxed();
        let audited = AuditedBody::new(body, record(1), audit, Instant::now());
        let collected = audited.collect().await.expect("the body");
        assert!(collected.trailers().is_some(), "trailers reach the client");
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!(line["grpc_status"], 5);
        assert_eq!(line["bytes_out"], 5);
    }

    #[test]
    fn lines_written_at_once_by_many_threads_are_each_whole_and_none_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let sink = Arc::new(Sink::file(path.clone(), u64::MAX, 1).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..250 {
                        sink.write(&record(t * 1000 + i));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        let mut callers: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a whole JSON line");
                v["caller"].as_str().unwrap().to_owned()
            })
            .collect();
        callers.sort();
        callers.dedup();
        assert_eq!(callers.len(), 2000);
    }

    #[test]
    fn times_are_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_372_481_123);
        assert_eq!(rfc3339(t), "2026-11-22T18:34:41.123Z");
    }
}
