//! Agent cards seen through the gateway: which interfaces a card declares, and the card with
//! every interface pointed at the gateway.
//!
//! An interface keeps everything but its URL — `protocolBinding`/`transport`,
//! `protocolVersion`, `tenant` — and its URL keeps its own path: the gateway forwards
//! `{base}/{path}` to `{agent}/{path}`, so an agent that serves JSON-RPC at `/a2a/jsonrpc` and
//! HTTP+JSON at `/a2a/rest` is reached at `{base}/a2a/jsonrpc` and `{base}/a2a/rest`. The base
//! keeps the scheme and authority the client used to fetch the card ([`client_base`]), so a
//! client that came over mTLS stays on mTLS and one that came through its egress stays there.
//! gRPC has no path prefix (the path is `/{service}/{method}`), so a gRPC interface points at an
//! authority whose root is the agent: the agent's host name at the gateway (see [`crate::host`]).

use serde_json::Value;

/// The three A2A protocol bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// JSON-RPC 2.0 over HTTP (`JSONRPC`).
    JsonRpc,
    /// The HTTP+JSON (REST) binding (`HTTP+JSON`).
    HttpJson,
    /// The gRPC binding (`GRPC`).
    Grpc,
}

impl Binding {
    /// The binding named in a card (`JSONRPC`, `HTTP+JSON`, `GRPC`; 0.3 also `REST`), any case.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "JSONRPC" | "JSON-RPC" => Some(Self::JsonRpc),
            "HTTP+JSON" | "REST" | "HTTP_JSON" => Some(Self::HttpJson),
            "GRPC" => Some(Self::Grpc),
            _ => None,
        }
    }
}

/// One interface of a card, as the gateway needs it to classify requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// How requests on it are encoded.
    pub binding: Binding,
    /// Its path on the agent, without a trailing slash (`""` for the root, `/a2a/rest`).
    pub path: String,
    /// The tenant it serves, when the card names one (HTTP+JSON paths then start with it).
    pub tenant: Option<String>,
}

/// Where the card's URLs must point: the gateway as the client reached it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayUrls {
    /// The agent's root at the gateway, without a trailing slash:
    /// `https://127.0.0.1:8083/api/a2a/team-beta/specialist`, or
    /// `https://specialist.team-beta.a2a.localhost:8083` when routed by host name.
    pub base: String,
    /// `host:port` whose root is the agent, for gRPC interfaces; `None` points them at the
    /// base's authority.
    pub grpc_authority: Option<String>,
}

/// `scheme://authority` of the gateway as this client reached it: https when the connection
/// was TLS, and the authority the client asked for (`:authority` or `Host`); `fallback` (the
/// configured listen address) when the request named none.
pub fn client_base(tls: bool, authority: Option<&str>, fallback: &str) -> String {
    let scheme = if tls { "https" } else { "http" };
    let authority = authority
        .map(str::trim)
        .filter(|a| !a.is_empty() && a.parse::<http::uri::Authority>().is_ok())
        .unwrap_or(fallback);
    format!("{scheme}://{authority}")
}

/// The interfaces `card` declares: 1.0 `supportedInterfaces`, and 0.3 `url` (with
/// `preferredTransport`, JSON-RPC by default) plus `additionalInterfaces`. Entries with an
/// unknown binding or an unusable URL are left out.
pub fn interfaces(card: &Value) -> Vec<Interface> {
    let mut found = Vec::new();
    for item in interface_entries(card) {
        let Some(url) = item.url else { continue };
        let Some(binding) = Binding::parse(item.binding) else {
            continue;
        };
        found.push(Interface {
            binding,
            path: url_path(url).trim_end_matches('/').to_owned(),
            tenant: item.tenant.filter(|t| !t.is_empty()).map(str::to_owned),
        });
    }
    found.dedup();
    found
}

/// Points every interface URL of `card` at the gateway, each keeping its own path (gRPC: the
/// gateway authority for the agent). Returns how many URLs were rewritten.
pub fn rewrite_card(card: &mut Value, gateway: &GatewayUrls) -> usize {
    let grpc = gateway
        .grpc_authority
        .clone()
        .unwrap_or_else(|| authority_of(&gateway.base).to_owned());
    let rewrite = |item: &mut Value, default_binding: &str| -> usize {
        let binding = binding_of(item, default_binding);
        let Some(url) = item.get_mut("url") else {
            return 0;
        };
        let Some(old) = url.as_str() else { return 0 };
        let new = match Binding::parse(binding.as_deref().unwrap_or(default_binding)) {
            Some(Binding::Grpc) => grpc.clone(),
            _ => format!(
                "{}{}",
                gateway.base.trim_end_matches('/'),
                path_or_root(old)
            ),
        };
        *url = Value::String(new);
        1
    };
    let mut count = 0;
    // 0.3: the main URL speaks `preferredTransport` (JSON-RPC when absent).
    let preferred = card
        .get("preferredTransport")
        .and_then(Value::as_str)
        .unwrap_or("JSONRPC")
        .to_owned();
    if card.get("url").is_some() {
        let mut main = serde_json::json!({ "url": card["url"].take(), "transport": preferred });
        count += rewrite(&mut main, &preferred);
        card["url"] = main["url"].take();
    }
    for list in ["additionalInterfaces", "supportedInterfaces"] {
        if let Some(items) = card.get_mut(list).and_then(Value::as_array_mut) {
            for item in items {
                count += rewrite(item, "JSONRPC");
            }
        }
    }
    count
}

/// An interface entry as found in a card, before interpretation.
struct Entry<'a> {
    url: Option<&'a str>,
    binding: &'a str,
    tenant: Option<&'a str>,
}

fn interface_entries(card: &Value) -> Vec<Entry<'_>> {
    // 1.0's list names the binding `protocolBinding`, 0.3's `transport`; each list prefers
    // its own spelling and accepts the other.
    let mut entries = listed_entries(
        card,
        "supportedInterfaces",
        ["protocolBinding", "transport"],
    );
    if let Some(url) = text(card, "url") {
        entries.push(Entry {
            url: Some(url),
            binding: text(card, "preferredTransport").unwrap_or("JSONRPC"),
            tenant: None,
        });
    }
    entries.extend(listed_entries(
        card,
        "additionalInterfaces",
        ["transport", "protocolBinding"],
    ));
    entries
}

/// The entries of the interface list `key`, each binding read from the first of `binding_keys`
/// present (JSON-RPC when none is).
fn listed_entries<'c>(card: &'c Value, key: &str, binding_keys: [&str; 2]) -> Vec<Entry<'c>> {
    let items = card
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    items
        .map(|item| Entry {
            url: text(item, "url"),
            binding: text(item, binding_keys[0])
                .or_else(|| text(item, binding_keys[1]))
                .unwrap_or("JSONRPC"),
            tenant: text(item, "tenant"),
        })
        .collect()
}

fn text<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

fn binding_of(item: &Value, default: &str) -> Option<String> {
    item.get("protocolBinding")
        .or_else(|| item.get("transport"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| Some(default.to_owned()))
}

/// The path (and query) of a URL, or of an authority-only gRPC target (`host:port` → `""`).
fn url_path(url: &str) -> &str {
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest,
        None if url.starts_with('/') => return url,
        None => url,
    };
    rest.find('/').map_or("", |i| &rest[i..])
}

/// The path of `url`, `/` when it has none.
fn path_or_root(url: &str) -> &str {
    match url_path(url) {
        "" => "/",
        path => path,
    }
}

/// `host:port` of `scheme://host:port/…`.
fn authority_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gateway() -> GatewayUrls {
        GatewayUrls {
            base: "https://127.0.0.1:8083/api/a2a/team-beta/specialist".into(),
            grpc_authority: Some("specialist.team-beta.a2a.localhost:8083".into()),
        }
    }

    #[test]
    fn each_1_0_interface_keeps_its_path_binding_version_and_tenant() {
        let mut card = json!({
            "name": "specialist",
            "supportedInterfaces": [
                {"url": "http://10.0.0.7:8080/a2a/jsonrpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
                {"url": "http://10.0.0.7:8080/a2a/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0", "tenant": "t1"},
                {"url": "10.0.0.7:9000", "protocolBinding": "GRPC", "protocolVersion": "1.0"},
                {"url": "http://10.0.0.7:8080", "protocolBinding": "JSONRPC", "protocolVersion": "0.3"}
            ]
        });
        assert_eq!(rewrite_card(&mut card, &gateway()), 4);
        let items = &card["supportedInterfaces"];
        let base = "https://127.0.0.1:8083/api/a2a/team-beta/specialist";
        assert_eq!(items[0]["url"], format!("{base}/a2a/jsonrpc"));
        assert_eq!(items[1]["url"], format!("{base}/a2a/rest"));
        assert_eq!(items[1]["tenant"], "t1");
        assert_eq!(items[1]["protocolBinding"], "HTTP+JSON");
        assert_eq!(items[2]["url"], "specialist.team-beta.a2a.localhost:8083");
        assert_eq!(items[2]["protocolBinding"], "GRPC");
        assert_eq!(items[3]["url"], format!("{base}/"));
        assert_eq!(items[3]["protocolVersion"], "0.3");
        assert!(!card.to_string().contains("10.0.0.7"));
        assert_eq!(card["name"], "specialist");
    }

    #[test]
    fn a_0_3_card_keeps_preferred_transport_and_additional_interfaces_paths() {
        let mut card = json!({
            "url": "http://10.0.0.7:8080/a2a/rest",
            "preferredTransport": "HTTP+JSON",
            "additionalInterfaces": [
                {"url": "http://10.0.0.7:8080/a2a/rest", "transport": "HTTP+JSON"},
                {"url": "http://10.0.0.7:8080/a2a/jsonrpc?x=1", "transport": "JSONRPC"},
                {"url": "grpc://10.0.0.7:9000", "transport": "GRPC"}
            ]
        });
        let gateway = GatewayUrls {
            base: "http://127.0.0.1:15001/api/a2a/ns/a/".into(),
            grpc_authority: None,
        };
        assert_eq!(rewrite_card(&mut card, &gateway), 4);
        assert_eq!(card["url"], "http://127.0.0.1:15001/api/a2a/ns/a/a2a/rest");
        assert_eq!(card["preferredTransport"], "HTTP+JSON");
        let extra = &card["additionalInterfaces"];
        assert_eq!(
            extra[1]["url"],
            "http://127.0.0.1:15001/api/a2a/ns/a/a2a/jsonrpc?x=1"
        );
        assert_eq!(
            extra[2]["url"], "127.0.0.1:15001",
            "no host route: the base's authority"
        );
        assert_eq!(extra[2]["transport"], "GRPC");
    }

    #[test]
    fn interfaces_are_read_from_both_card_versions() {
        let card = json!({
            "url": "http://a:1/",
            "additionalInterfaces": [{"url": "http://a:1/v1/", "transport": "HTTP+JSON"}],
            "supportedInterfaces": [
                {"url": "http://a:1/a2a/jsonrpc", "protocolBinding": "JSONRPC"},
                {"url": "http://a:1/a2a/rest", "protocolBinding": "HTTP+JSON", "tenant": "t1"},
                {"url": "a:9", "protocolBinding": "GRPC"},
                {"url": "http://a:1/x", "protocolBinding": "SMOKE-SIGNALS"}
            ]
        });
        let found = interfaces(&card);
        let summary: Vec<(Binding, &str, Option<&str>)> = found
            .iter()
            .map(|i| (i.binding, i.path.as_str(), i.tenant.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                (Binding::JsonRpc, "/a2a/jsonrpc", None),
                (Binding::HttpJson, "/a2a/rest", Some("t1")),
                (Binding::Grpc, "", None),
                (Binding::JsonRpc, "", None),
                (Binding::HttpJson, "/v1", None),
            ]
        );
    }

    #[test]
    fn the_base_keeps_the_scheme_and_authority_the_client_used() {
        assert_eq!(
            client_base(true, Some("127.0.0.1:8083"), "127.0.0.1:9"),
            "https://127.0.0.1:8083"
        );
        assert_eq!(
            client_base(
                false,
                Some("specialist.team-beta.a2a.localhost:8083"),
                "x:1"
            ),
            "http://specialist.team-beta.a2a.localhost:8083"
        );
        assert_eq!(
            client_base(true, None, "127.0.0.1:8083"),
            "https://127.0.0.1:8083"
        );
        assert_eq!(
            client_base(false, Some("bad host/with/path"), "127.0.0.1:8083"),
            "http://127.0.0.1:8083",
            "a Host that is not an authority is not echoed into cards"
        );
    }
}
