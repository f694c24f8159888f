//! Routing: which agent a gateway request is for, from its host name
//! (`{agent}.{namespace}.{domain}`, the domain from MeshConfig `spec.gateway.hostDomain`,
//! `a2a.localhost` by default; the agent at the root, so standard discovery of
//! `/.well-known/agent-card.json` works) or from `/api/a2a/{namespace}/{agent}/…`, and
//! whether the current snapshot knows it — decided from the request line alone, before
//! anything else is looked at. A sidecar serves one agent, so its requests need no route.
//!
//! Over TLS the server name (SNI) counts too: a connection opened for an agent's host name
//! serves that agent only. With no `Host`/`:authority` the SNI routes; a request naming
//! another host on such a connection is 421 Misdirected Request (RFC 9110 §15.5.20), the
//! answer that makes a client that reused a connection open a new one.

use http::{Response, StatusCode};

use warden_a2a::host::DEFAULT_DOMAIN;

use super::{Exchange, Handler, Refusal, Target};
use crate::http::{ProxyBody, json_error};

/// How a listener finds the target of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// The gateway: the path names the agent; an unknown one is 404.
    Gateway,
    /// A sidecar port: the agent is the one beside it.
    Fixed,
}

/// The routing step.
pub struct Route<S> {
    routing: Routing,
    inner: S,
}

impl<S> Route<S> {
    /// Routing by `routing`, then `inner`.
    pub fn new(routing: Routing, inner: S) -> Self {
        Self { routing, inner }
    }
}

impl<S: Handler> Handler for Route<S> {
    async fn handle(&self, ex: &mut Exchange) -> Response<ProxyBody> {
        if self.routing == Routing::Gateway
            && let Err(refusal) = route_gateway(ex)
        {
            return *refusal;
        }
        self.inner.handle(ex).await
    }
}

fn route_gateway(ex: &mut Exchange) -> Result<(), Refusal> {
    let policy = ex.policy.clone();
    let domain = policy
        .snapshot
        .as_ref()
        .map_or(DEFAULT_DOMAIN, |s| s.control_plane().host_domain.as_str());
    let path = ex.parts.uri.path();
    let by_sni = (ex.peer.server_name.as_deref()).and_then(|n| parse_host(n, path, domain));
    let host = request_host(ex);
    let by_host = host.and_then(|h| parse_host(h, path, domain));
    if let (Some(sni), Some(host)) = (&by_sni, host)
        && by_host.as_ref().map(Target::key) != Some(sni.key())
    {
        let message = format!(
            "this TLS connection was opened for {} (server name); the request is for {host}: \
             open a connection for that host",
            ex.peer.server_name.as_deref().unwrap_or_default()
        );
        ex.refused_by = Some("misdirected");
        return Err(Box::new(json_error(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected",
            &message,
        )));
    }
    let Some(target) = by_host.or(by_sni).or_else(|| parse(ex.parts.uri.path())) else {
        ex.refused_by = Some("route");
        return Err(Box::new(json_error(
            StatusCode::NOT_FOUND,
            "route",
            "expected /api/a2a/{namespace}/{agent}/",
        )));
    };
    let known = ex
        .policy
        .snapshot
        .as_ref()
        .is_some_and(|s| s.agent(&target.namespace, &target.name).is_some());
    if !known {
        let message = format!("there is no agent {}", target.key());
        ex.target = Some(target);
        ex.refused_by = Some("unknown_target");
        return Err(Box::new(json_error(
            StatusCode::NOT_FOUND,
            "unknown_target",
            &message,
        )));
    }
    ex.target = Some(target);
    Ok(())
}

/// The host the client asked for: HTTP/2's `:authority`, else `Host`.
fn request_host(ex: &Exchange) -> Option<&str> {
    ex.parts.uri.authority().map(|a| a.as_str()).or_else(|| {
        ex.parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// `{agent}.{namespace}.{domain}` (by default `a2a.localhost`, RFC 6761's loopback names) →
/// the target, the whole path being the agent's.
pub fn parse_host(host: &str, path: &str, domain: &str) -> Option<Target> {
    let (namespace, name) = warden_a2a::host::route_host(host, domain)?;
    Some(Target {
        namespace: namespace.to_ascii_lowercase(),
        name: name.to_ascii_lowercase(),
        rest: path.trim_start_matches('/').to_owned(),
        by_host: true,
    })
}

/// `/api/a2a/{ns}/{name}/{rest}` → the target.
pub fn parse(path: &str) -> Option<Target> {
    let rest = path.strip_prefix("/api/a2a/")?;
    let mut parts = rest.splitn(3, '/');
    let namespace = parts.next().filter(|s| !s.is_empty())?;
    let name = parts.next().filter(|s| !s.is_empty())?;
    Some(Target {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        rest: parts.next().unwrap_or("").to_owned(),
        by_host: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::test_support::{Answer, example_policy, exchange, seen};

    #[test]
    fn paths_name_namespace_agent_and_the_rest() {
        let t = parse("/api/a2a/team-beta/specialist/v1/message:send").expect("a route");
        assert_eq!(
            (t.namespace.as_str(), t.name.as_str(), t.rest.as_str()),
            ("team-beta", "specialist", "v1/message:send")
        );
        assert_eq!(
            parse("/api/a2a/team-beta/specialist").map(|t| t.rest),
            Some(String::new())
        );
        for bad in [
            "/",
            "/api/a2a/",
            "/api/a2a/ns",
            "/api/a2a//x/",
            "/other/a/b/",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn unknown_routes_and_agents_are_404_naming_the_rule() {
        for (path, rule) in [
            ("/healthz", "route"),
            ("/api/a2a/team-beta/nobody/", "unknown_target"),
        ] {
            let (last, _) = Answer::ok();
            let step = Route::new(Routing::Gateway, last);
            let mut ex = exchange("GET", path, example_policy());
            let response = step.handle(&mut ex).await;
            assert_eq!(response.status(), 404, "{path}");
            assert_eq!(ex.refused_by, Some(rule), "{path}");
        }
    }

    #[test]
    fn agent_host_names_route_to_the_agent_at_their_root() {
        let t = parse_host(
            "specialist.team-beta.a2a.localhost:8083",
            "/v1/message:send",
            DEFAULT_DOMAIN,
        )
        .expect("a route");
        assert_eq!(
            (t.key().as_str(), t.rest.as_str(), t.by_host),
            ("team-beta/specialist", "v1/message:send", true)
        );
        assert!(
            parse_host(
                "127.0.0.1:8083",
                "/api/a2a/team-beta/specialist/",
                DEFAULT_DOMAIN
            )
            .is_none()
        );
    }

    #[tokio::test]
    async fn a_known_agent_goes_on_with_its_target() {
        let (last, slot) = Answer::ok();
        let step = Route::new(Routing::Gateway, last);
        let mut ex = exchange("GET", "/api/a2a/team-beta/specialist/x", example_policy());
        assert_eq!(step.handle(&mut ex).await.status(), 200);
        assert_eq!(
            seen(&slot).target.map(|t| t.key()),
            Some("team-beta/specialist".into())
        );
    }

    fn over_tls_for(server_name: &str, uri: &str, host: Option<&str>) -> Exchange {
        let headers: Vec<(&str, &str)> = host.map(|h| ("host", h)).into_iter().collect();
        let mut ex =
            crate::pipeline::test_support::with_headers("GET", uri, &headers, example_policy());
        ex.peer = std::sync::Arc::new(crate::authz::Peer {
            server_name: Some(server_name.to_owned()),
            ..crate::authz::Peer::verified(None, None)
        });
        ex
    }

    #[tokio::test]
    async fn the_tls_server_name_routes_and_must_agree_with_the_host() {
        const SPECIALIST: &str = "specialist.team-beta.a2a.localhost";
        // SNI alone (no Host, no :authority) routes to the agent at the root.
        let (last, slot) = Answer::ok();
        let step = Route::new(Routing::Gateway, last);
        let mut ex = over_tls_for(SPECIALIST, "/.well-known/agent-card.json", None);
        assert_eq!(step.handle(&mut ex).await.status(), 200);
        let target = seen(&slot).target.expect("routed");
        assert_eq!(
            (target.key().as_str(), target.by_host),
            ("team-beta/specialist", true)
        );
        // The same agent in SNI and Host (any case, with a port): routed.
        let mut ex = over_tls_for(
            SPECIALIST,
            "/",
            Some("Specialist.team-beta.a2a.localhost:8083"),
        );
        assert_eq!(step.handle(&mut ex).await.status(), 200);
        // Another agent, or the gateway's path routes, on a connection for the specialist: 421.
        for (uri, host) in [
            ("/", "public.team-beta.a2a.localhost:8083"),
            ("/api/a2a/team-beta/specialist/", "127.0.0.1:8083"),
        ] {
            let mut ex = over_tls_for(SPECIALIST, uri, Some(host));
            let response = step.handle(&mut ex).await;
            assert_eq!(response.status(), 421, "{host}{uri}");
            assert_eq!(ex.refused_by, Some("misdirected"));
        }
        // A server name that is no agent's (an IP client, `localhost`) leaves routing to Host.
        let mut ex = over_tls_for(
            "localhost",
            "/",
            Some("specialist.team-beta.a2a.localhost:8083"),
        );
        assert_eq!(step.handle(&mut ex).await.status(), 200);
        let mut ex = over_tls_for(
            "localhost",
            "/api/a2a/team-beta/specialist/",
            Some("127.0.0.1:8083"),
        );
        assert_eq!(step.handle(&mut ex).await.status(), 200);
    }

    #[test]
    fn host_names_follow_the_meshconfig_domain() {
        assert!(
            parse_host(
                "specialist.team-beta.agents.example.com",
                "/",
                "agents.example.com"
            )
            .is_some()
        );
        assert!(
            parse_host(
                "specialist.team-beta.a2a.localhost",
                "/",
                "agents.example.com"
            )
            .is_none()
        );
    }
}
