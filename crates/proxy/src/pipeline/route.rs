//! Routing: which agent a gateway request is for, from `/api/a2a/{namespace}/{agent}/…`, and
//! whether the current snapshot knows it — decided from the request line alone, before
//! anything else is looked at. A sidecar serves one agent, so its requests need no route.

use http::{Response, StatusCode};

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
    let Some(target) = parse(ex.parts.uri.path()) else {
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
}
