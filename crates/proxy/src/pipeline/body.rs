//! Reading a request body into memory, for the one step that must (JSON-RPC classification at
//! the gateway), within three bounds: the body limit, a read timeout, and a process-wide
//! budget of bytes buffered at once — so that stalled or huge bodies from many callers cannot
//! grow memory without bound. The budget is held until the exchange ends.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds of a buffered body.
#[derive(Debug, Clone)]
pub struct BodyRules {
    /// The most one body may hold.
    pub max_body_bytes: usize,
    /// Time for the whole body to arrive.
    pub read_timeout: Duration,
    /// Bytes buffered at once across all requests (permits are bytes).
    pub budget: Arc<Semaphore>,
}

impl BodyRules {
    /// Rules with a fresh budget of `max_buffered_bytes`.
    pub fn new(max_body_bytes: u64, read_timeout: Duration, max_buffered_bytes: u64) -> Self {
        let budget = usize::try_from(max_buffered_bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
            read_timeout,
            budget: Arc::new(Semaphore::new(budget)),
        }
    }
}

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Larger than the body limit.
    #[error("the request body is larger than the configured limit")]
    TooLarge,
    /// Not complete within the read timeout.
    #[error("the request body did not arrive in time")]
    Timeout,
    /// The budget of buffered bytes is spent; try again shortly.
    #[error("too many request bytes are buffered right now; retry shortly")]
    Busy,
    /// The body could not be read (bad chunked framing, connection reset).
    #[error("the request body could not be read")]
    Malformed,
}

/// A body read whole, with the share of the budget it holds.
pub struct Buffered {
    /// The bytes.
    pub bytes: Bytes,
    /// Released when dropped.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// Reads `body` within `rules`.
pub async fn read<B>(body: B, rules: &BodyRules) -> Result<Buffered, BodyError>
where
    B: Body<Data = Bytes> + Unpin,
{
    tokio::time::timeout(rules.read_timeout, read_frames(body, rules))
        .await
        .map_err(|_| BodyError::Timeout)?
}

async fn read_frames<B>(mut body: B, rules: &BodyRules) -> Result<Buffered, BodyError>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut bytes = BytesMut::new();
    let mut permit: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Malformed)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if bytes.len() + data.len() > rules.max_body_bytes {
            return Err(BodyError::TooLarge);
        }
        let n = u32::try_from(data.len()).map_err(|_| BodyError::TooLarge)?;
        let more = rules
            .budget
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| BodyError::Busy)?;
        match &mut permit {
            Some(held) => held.merge(more),
            None => permit = Some(more),
        }
        bytes.extend_from_slice(&data);
    }
    Ok(Buffered {
        bytes: bytes.freeze(),
        permit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn rules(max_body: u64, budget: u64) -> BodyRules {
        BodyRules::new(max_body, Duration::from_secs(1), budget)
    }

    #[tokio::test]
    async fn a_body_within_the_bounds_is_read_and_holds_its_bytes_of_the_budget() {
        let rules = rules(100, 100);
        let read = read(Full::new(Bytes::from_static(b"{\"a\":1}")), &rules)
            .await
            .expect("read");
        assert_eq!(&read.bytes[..], b"{\"a\":1}");
        assert_eq!(rules.budget.available_permits(), 93);
        drop(read);
        assert_eq!(rules.budget.available_permits(), 100);
    }

    #[tokio::test]
    async fn the_body_limit_and_the_budget_refuse_with_their_own_errors() {
        let too_large = read(Full::new(Bytes::from(vec![0u8; 101])), &rules(100, 1000)).await;
        assert_eq!(too_large.err(), Some(BodyError::TooLarge));
        let rules = rules(100, 150);
        let first = read(Full::new(Bytes::from(vec![0u8; 100])), &rules)
            .await
            .expect("first");
        let second = read(Full::new(Bytes::from(vec![0u8; 100])), &rules).await;
        assert_eq!(second.err(), Some(BodyError::Busy));
        drop(first);
        assert!(
            read(Full::new(Bytes::from(vec![0u8; 100])), &rules)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let (_tx, rx) =
            tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(1);
        let stalled = http_body_util::StreamBody::new(tokio_stream_from(rx));
        let rules = BodyRules::new(100, Duration::from_millis(50), 100);
        assert_eq!(read(stalled, &rules).await.err(), Some(BodyError::Timeout));
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures::Stream<Item = T> + Unpin {
        Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
