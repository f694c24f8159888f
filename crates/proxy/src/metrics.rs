//! The data plane's Prometheus metrics, all under the `warden_` prefix, served in the format
//! the scraper asks for; label values are bounded (see [`target_label`], [`method_label`]).

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
    /// The A2A method (a static name: no allocation per request).
    pub method: &'static str,
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

/// Labels of the gateway's host-name check.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostDomainLabels {
    /// MeshConfig `spec.gateway.hostDomain`.
    pub host_domain: String,
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
    /// `warden_gateway_uncovered_agent_hosts`: agent hosts the gateway's SVID has no DNS
    /// name for (see `gateway_names`). A family with one series, set only by the gateway, so
    /// that a sidecar exports no misleading zero.
    pub gateway_uncovered_agent_hosts: Family<HostDomainLabels, Gauge<i64, AtomicI64>>,
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
        let gateway_uncovered_agent_hosts = Family::default();
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
            "Connections the proxy closed: header_timeout, idle, shed, peer_uid, app_uid",
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
            "gateway_uncovered_agent_hosts",
            "Agent hosts ({agent}.{namespace}.{hostDomain}) the gateway's SVID has no DNS name \
             for: clients that check host names refuse the gateway there",
            gateway_uncovered_agent_hosts.clone(),
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
            gateway_uncovered_agent_hosts,
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

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        encode_registry(&self.registry, Format::OpenMetrics)
    }

    /// The exposition in `format`.
    pub fn encode_as(&self, format: Format) -> String {
        encode_registry(&self.registry, format)
    }

    /// Sets `warden_svid_expiry_seconds` from the SVID's `not_after` (Unix seconds).
    pub fn set_svid_expiry(&self, not_after: i64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.svid_expiry_seconds.set(not_after - now);
    }
}

/// The exposition formats a scraper may ask for. Prometheus 3 refuses a target whose
/// Content-Type does not say what the body is, so the body and the header come from one choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (`# EOF`, counters named without `_total` in TYPE).
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for scrapers that do not ask for OpenMetrics.
    Text004,
}

impl Format {
    /// OpenMetrics when the `Accept` header asks for it (with a non-zero weight), else text 0.0.4.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let wants_openmetrics = accept.into_iter().flat_map(|a| a.split(',')).any(|range| {
            let mut params = range.split(';').map(str::trim);
            let weight = |p: &str| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok());
            params.next() == Some("application/openmetrics-text")
                && params.filter_map(weight).all(|q| q > 0.0)
        });
        if wants_openmetrics {
            Self::OpenMetrics
        } else {
            Self::Text004
        }
    }

    /// The Content-Type of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text004 => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// `registry`'s exposition in `format`, for every admin port (proxies, controller, webhook):
/// prometheus-client writes OpenMetrics, which a scraper reads as such only when told so.
pub fn encode_registry(registry: &Registry, format: Format) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    match format {
        Format::OpenMetrics => out,
        Format::Text004 => openmetrics_to_text_004(&out),
    }
}

/// A `/metrics` response body and its Content-Type for a request's `Accept` header.
pub fn exposition(
    registry: &Registry,
    accept: Option<&http::HeaderValue>,
) -> (&'static str, String) {
    let format = Format::negotiate(accept.and_then(|v| v.to_str().ok()));
    (format.content_type(), encode_registry(registry, format))
}

/// OpenMetrics text as Prometheus text 0.0.4: a counter family's HELP and TYPE name its
/// `_total` samples, and the `# UNIT` and `# EOF` lines (not in 0.0.4) are dropped.
fn openmetrics_to_text_004(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.insert(name.to_owned());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The `target` label of a gateway request: unknown targets (unroutable paths, agents not in
/// the snapshot) collapse into `unknown`, so junk requests cannot mint series.
pub fn target_label(rule: &str, target: &str) -> String {
    match rule {
        "route" | "unknown_target" => "unknown".to_owned(),
        _ if target.is_empty() => "unknown".to_owned(),
        _ => target.to_owned(),
    }
}

/// The `method` label of a gateway request: A2A methods and the card by name, anything else
/// `other`.
pub fn method_label(method: &str) -> &'static str {
    if method == warden_model::policy::CARD_METHOD {
        return warden_model::policy::CARD_METHOD;
    }
    match warden_a2a::canonical_method(method) {
        Some(canonical) if canonical == method => canonical,
        _ => "other",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_follows_the_accept_header() {
        let prometheus3 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prometheus3)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Text004);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text004);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text004
        );
    }

    #[test]
    fn text_004_names_counters_by_their_samples_and_has_no_eof() {
        let metrics = Metrics::default();
        metrics.plaintext_requests.inc();
        let text = metrics.encode_as(Format::Text004);
        assert!(
            text.contains("# TYPE warden_plaintext_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP warden_plaintext_requests_total "),
            "{text}"
        );
        assert!(
            text.contains("\nwarden_plaintext_requests_total 1\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(metrics.encode_as(Format::OpenMetrics).ends_with("# EOF\n"));
    }

    #[test]
    fn labels_of_unknown_targets_and_methods_collapse() {
        assert_eq!(target_label("unknown_target", "junk-1/x"), "unknown");
        assert_eq!(target_label("route", ""), "unknown");
        assert_eq!(
            target_label("namespace_selector", "team-beta/specialist"),
            "team-beta/specialist"
        );
        assert_eq!(method_label("SendMessage"), "SendMessage");
        assert_eq!(method_label("GetAgentCard"), "GetAgentCard");
        assert_eq!(method_label("PATCH /nothing-3"), "other");
        assert_eq!(
            method_label("message/send"),
            "other",
            "audit records carry 1.0 names"
        );
    }
}
