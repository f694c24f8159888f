//! Is SPIRE there? Two signs, either is enough:
//!
//! - the SPIFFE CSI driver's `CSIDriver` object `csi.spiffe.io` (what SPIRE's Helm chart
//!   installs, and what injected pods mount their Workload API socket from; kagenti misses
//!   it);
//! - the controller's own Workload API socket (`--workload-api`) answers with an SVID that is
//!   still valid.
//!
//! Both are watched (the CSIDriver by a reflector, the socket by a retrying connect), so
//! deploying SPIRE later turns `MTLSReady` True with no restart. Not used as a sign: a
//! DaemonSet labelled like SPIRE's agent — labels are a convention anyone can copy and say
//! nothing about whether the agent serves.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::runtime::reflector::Store;
use warden_identity::SvidSource;
use warden_identity::source::WorkloadApiSource;

use super::status::SpireStatus;

/// The SPIFFE CSI driver's name.
pub const SPIFFE_CSI_DRIVER: &str = "csi.spiffe.io";
/// How often a missing Workload API is tried again.
pub const RETRY: Duration = Duration::from_secs(3);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Watches for SPIRE.
pub struct SpireDetector {
    csi_drivers: Store<CSIDriver>,
    endpoint: Option<String>,
    source: Arc<ArcSwapOption<WorkloadApiSource>>,
}

impl SpireDetector {
    /// Detects by `csi_drivers` and, when given, the Workload API at `endpoint`
    /// (`unix:///…`), which [`Self::connect_loop`] keeps trying.
    pub fn new(csi_drivers: Store<CSIDriver>, endpoint: Option<String>) -> Self {
        Self {
            csi_drivers,
            endpoint,
            source: Arc::new(ArcSwapOption::empty()),
        }
    }

    /// Tries the Workload API every [`RETRY`] until it answers, then calls `on_connect`.
    /// Returns at once without an endpoint.
    pub async fn connect_loop(&self, on_connect: impl Fn()) {
        let Some(endpoint) = &self.endpoint else {
            return;
        };
        loop {
            let attempt =
                tokio::time::timeout(CONNECT_TIMEOUT, WorkloadApiSource::connect(Some(endpoint)))
                    .await;
            match attempt {
                Ok(Ok(source)) => {
                    tracing::info!(%endpoint, "the Workload API answers: SPIRE is available, cards are fetched over mTLS");
                    self.source.store(Some(Arc::new(source)));
                    on_connect();
                    return;
                }
                Ok(Err(e)) => tracing::debug!(%endpoint, error = %e, "no Workload API yet"),
                Err(_) => tracing::debug!(%endpoint, "no Workload API yet (timed out)"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// The controller's SVID source, once the Workload API has answered.
    pub fn identity(&self) -> Option<Arc<dyn SvidSource>> {
        self.source
            .load_full()
            .map(|s| -> Arc<dyn SvidSource> { s })
    }

    /// What is known now.
    pub fn status(&self) -> SpireStatus {
        if self
            .csi_drivers
            .state()
            .iter()
            .any(|d| d.metadata.name.as_deref() == Some(SPIFFE_CSI_DRIVER))
        {
            return SpireStatus {
                available: true,
                evidence: format!(
                    "the SPIFFE CSI driver (CSIDriver {SPIFFE_CSI_DRIVER}) is installed"
                ),
            };
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let svid = self.identity().and_then(|s| s.current());
        match (&self.endpoint, svid) {
            (Some(endpoint), Some(svid)) if svid.not_after() > now => SpireStatus {
                available: true,
                evidence: format!(
                    "the Workload API at {endpoint} serves the controller {}",
                    svid.spiffe_id()
                ),
            },
            (Some(endpoint), _) => SpireStatus {
                available: false,
                evidence: format!(
                    "no CSIDriver {SPIFFE_CSI_DRIVER} and no valid SVID from {endpoint}"
                ),
            },
            (None, _) => SpireStatus {
                available: false,
                evidence: format!("no CSIDriver {SPIFFE_CSI_DRIVER} and no --workload-api"),
            },
        }
    }
}
