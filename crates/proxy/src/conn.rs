//! What a listener knows about its open connections: requests in flight and the last
//! activity of each, for the idle and first-request timeouts and for shedding the oldest idle
//! connection when the connection limit is reached.
//!
//! Activity is requests and responses only: HTTP/2 PING and SETTINGS frames, which a client
//! can send forever without asking anything, do not keep a connection open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Why the proxy closed a connection (`warden_connections_closed_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// No request arrived within `--header-read-timeout` of the connection's start.
    HeaderTimeout,
    /// No request in flight for `--idle-timeout`.
    Idle,
    /// Closed to make room for a new caller at the connection limit.
    Shed,
    /// Opened by an OS user the listener does not serve (`--egress-allow-uid`).
    PeerUid,
    /// Dialled to the app, whose port another OS user held (`--app-uid`).
    AppUid,
}

impl Closed {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::Idle => "idle",
            Closed::Shed => "shed",
            Closed::PeerUid => "peer_uid",
            Closed::AppUid => "app_uid",
        }
    }
}

/// One connection's activity.
pub struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` of the last request start or response end.
    last: AtomicU64,
    served: AtomicBool,
    close: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            served: AtomicBool::new(false),
            close: Notify::new(),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// A request started; activity lasts until the returned guard is dropped (when the
    /// response body ends or is abandoned).
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.served.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }

    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(self.epoch + Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }

    /// Resolves when the connection should be closed: idle past its timeout (before any
    /// request: `first_request`; after: `idle`), or asked to make room.
    pub async fn expired(&self, first_request: Duration, idle: Duration) -> Closed {
        loop {
            let served = self.served.load(Ordering::Relaxed);
            let limit = if served { idle } else { first_request };
            let wake = match self.idle_since() {
                Some(since) if since + limit <= Instant::now() => {
                    return if served {
                        Closed::Idle
                    } else {
                        Closed::HeaderTimeout
                    };
                }
                Some(since) => since + limit,
                None => Instant::now() + limit,
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                () = self.close.notified() => return Closed::Shed,
            }
        }
    }
}

/// A request in flight on a connection.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The open connections of one listener.
#[derive(Default)]
pub struct Connections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Connections {
    /// Registers a new connection; it is forgotten when the returned handle drops.
    pub fn open(self: &Arc<Self>) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, activity.clone());
        }
        Registered {
            id,
            activity,
            connections: self.clone(),
        }
    }

    /// Asks the connection idle the longest to close; false when none is idle.
    pub fn shed_oldest_idle(&self) -> bool {
        let Ok(open) = self.open.lock() else {
            return false;
        };
        let oldest = open
            .values()
            .filter_map(|a| a.idle_since().map(|since| (since, a)))
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, activity)) => {
                activity.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A connection's entry in [`Connections`].
pub struct Registered {
    id: u64,
    /// Its activity.
    pub activity: Arc<Activity>,
    connections: Arc<Connections>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut open) = self.connections.open.lock() {
            open.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn a_connection_without_a_request_expires_at_the_first_request_timeout() {
        let connections = Arc::new(Connections::default());
        let conn = connections.open();
        let started = Instant::now();
        let closed = conn.activity.expired(50 * MS, 10_000 * MS).await;
        assert_eq!(closed, Closed::HeaderTimeout);
        assert!(started.elapsed() < 5_000 * MS);
    }

    #[tokio::test]
    async fn in_flight_requests_keep_a_connection_and_idleness_closes_it() {
        let connections = Arc::new(Connections::default());
        let conn = connections.open();
        let request = conn.activity.start();
        let activity = conn.activity.clone();
        let expiry = tokio::spawn(async move { activity.expired(10 * MS, 100 * MS).await });
        tokio::time::sleep(300 * MS).await;
        assert!(!expiry.is_finished(), "a request in flight keeps it open");
        drop(request);
        let closed = tokio::time::timeout(2_000 * MS, expiry).await;
        assert_eq!(closed.ok().and_then(Result::ok), Some(Closed::Idle));
    }

    #[tokio::test]
    async fn shedding_picks_the_longest_idle_connection_and_never_a_busy_one() {
        let connections = Arc::new(Connections::default());
        let old = connections.open();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let young = connections.open();
        young.activity.touch();
        let busy = connections.open();
        let _request = busy.activity.start();
        assert!(connections.shed_oldest_idle());
        let closed = tokio::time::timeout(
            Duration::from_millis(100),
            old.activity
                .expired(Duration::from_secs(60), Duration::from_secs(60)),
        )
        .await;
        assert_eq!(closed.ok(), Some(Closed::Shed));
        drop((old, young));
        assert!(!connections.shed_oldest_idle(), "only a busy one is left");
    }
}
