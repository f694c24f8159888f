//! The sidecar's Prometheus metrics, all under the `warden_` prefix.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a proxied request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `inbound` or `egress`.
    pub direction: &'static str,
    /// The mTLS mode the connection was accepted under.
    pub mode: &'static str,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// The rule that decided.
    pub rule: &'static str,
    /// HTTP status class returned (`2xx`, `4xx`, …).
    pub status: &'static str,
}

/// Labels of a refused connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why: the broken SVID rule, `not_authorized`, `timeout`, `plaintext_in_strict`, …
    pub reason: &'static str,
}

/// Labels of a gateway request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GatewayLabels {
    /// `namespace/agent`.
    pub target: String,
    /// The A2A method.
    pub method: String,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// HTTP status class.
    pub status: &'static str,
}

/// Labels of a denial.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// The rule that denied.
    pub rule: String,
}

/// Every metric of the data plane.
pub struct Metrics {
    registry: Registry,
    /// `warden_requests_total`.
    pub requests: Family<RequestLabels, Counter>,
    /// `warden_handshake_failures_total`.
    pub handshake_failures: Family<ReasonLabels, Counter>,
    /// `warden_connections_closed_total`: connections the proxy closed, by reason.
    pub connections_closed: Family<ReasonLabels, Counter>,
    /// `warden_reloads_total`: configuration or snapshot changes applied.
    pub reloads: Counter,
    /// `warden_plaintext_requests_total`: plaintext requests accepted in Permissive mode.
    pub plaintext_requests: Counter,
    /// `warden_svid_expiry_seconds`: seconds until the current SVID expires.
    pub svid_expiry_seconds: Gauge<i64, AtomicI64>,
    /// `warden_gateway_requests_total`.
    pub gateway_requests: Family<GatewayLabels, Counter>,
    /// `warden_gateway_denials_total`.
    pub gateway_denials: Family<RuleLabels, Counter>,
    /// `warden_gateway_request_duration_seconds`.
    pub gateway_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("warden");
        let requests = Family::default();
        let handshake_failures = Family::default();
        let plaintext_requests = Counter::default();
        let reloads = Counter::default();
        let connections_closed = Family::default();
        let svid_expiry_seconds = Gauge::default();
        let gateway_requests = Family::default();
        let gateway_denials = Family::default();
        let gateway_latency = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
        ]);
        registry.register(
            "requests",
            "Requests proxied, by direction, mode, decision, rule and status class",
            requests.clone(),
        );
        registry.register(
            "handshake_failures",
            "Connections refused before any request, by reason",
            handshake_failures.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections the proxy closed: header_timeout, idle, shed",
            connections_closed.clone(),
        );
        registry.register(
            "reloads",
            "Changes of the config file or snapshot applied",
            reloads.clone(),
        );
        registry.register(
            "plaintext_requests",
            "Plaintext requests accepted in Permissive mode",
            plaintext_requests.clone(),
        );
        registry.register(
            "svid_expiry_seconds",
            "Seconds until the current SVID expires",
            svid_expiry_seconds.clone(),
        );
        registry.register(
            "gateway_requests",
            "Gateway requests by target, method, decision and status class",
            gateway_requests.clone(),
        );
        registry.register(
            "gateway_denials",
            "Gateway denials by rule",
            gateway_denials.clone(),
        );
        registry.register(
            "gateway_request_duration_seconds",
            "Gateway request latency, arrival to end of response",
            gateway_latency.clone(),
        );
        Self {
            registry,
            gateway_requests,
            gateway_denials,
            gateway_latency,
            requests,
            handshake_failures,
            connections_closed,
            plaintext_requests,
            reloads,
            svid_expiry_seconds,
        }
    }
}

impl Metrics {
    /// Counts a refused connection.
    pub fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a connection the proxy closed.
    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// `2xx`, `4xx`, … for a status code, without allocating.
pub fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}
