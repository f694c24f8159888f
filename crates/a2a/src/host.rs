//! Routing by host name: each agent is also served at the root of `{agent}.{namespace}.{domain}`.
//!
//! Standard A2A discovery (clients, the A2A TCK) looks for the card at
//! `https://{host}/.well-known/agent-card.json`, which a path-routed gateway can offer for one
//! agent only; with a host name per agent, every agent has its own root. The domain comes from
//! MeshConfig; by default `a2a.localhost`, which RFC 6761 reserves for loopback. Agent and
//! namespace names are DNS labels (no dots), so a host splits in exactly one way.

/// The domain agents are served under when MeshConfig names none.
pub const DEFAULT_DOMAIN: &str = "a2a.localhost";

/// `{agent}.{namespace}.{domain}`.
pub fn agent_host(namespace: &str, agent: &str, domain: &str) -> String {
    format!("{agent}.{namespace}.{}", domain.trim_matches('.'))
}

/// `*.{namespace}.{domain}`: the one certificate name that covers every agent host of a
/// namespace, so the gateway's certificate grows with namespaces, not with agents.
pub fn namespace_wildcard(namespace: &str, domain: &str) -> String {
    format!("*.{namespace}.{}", domain.trim_matches('.'))
}

/// Whether a certificate's DNS name `cert_name` covers `host` as a client that checks host
/// names sees it (RFC 6125 §6.4): equal ignoring case, or `*.` standing for exactly one
/// non-empty leftmost label.
pub fn name_covers(cert_name: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    match cert_name.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(parent)),
        None => cert_name.trim_end_matches('.').eq_ignore_ascii_case(host),
    }
}

/// The `(namespace, agent)` that `host` (a `Host`/`:authority` value or an SNI name, with or
/// without a port; any case) names under `domain`; `None` when it is not such a host.
pub fn route_host<'h>(host: &'h str, domain: &str) -> Option<(&'h str, &'h str)> {
    let name = strip_port(host).trim_end_matches('.');
    let domain = domain.trim_matches('.');
    if name.len() <= domain.len() + 1 {
        return None;
    }
    let (labels, suffix) = name.split_at(name.len() - domain.len());
    if !suffix.eq_ignore_ascii_case(domain) {
        return None;
    }
    let (agent, namespace) = labels.strip_suffix('.')?.split_once('.')?;
    let label = |s: &str| {
        !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    (label(agent) && label(namespace)).then_some((namespace, agent))
}

/// Checks that `domain` can carry agent host names: dot-separated DNS labels (ASCII letters,
/// digits and `-`, 1–63 characters, not starting or ending with `-`), 253 characters at most.
/// `Err` says which rule the domain broke, for the user who wrote it.
pub fn check_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() || domain.len() > 253 {
        return Err(format!(
            "{domain:?} is not a DNS domain: it must be 1 to 253 characters"
        ));
    }
    for label in domain.split('.') {
        if !warden_identity::id::is_dns_label(label) {
            return Err(format!(
                "{domain:?} is not a DNS domain: label {label:?} must be 1 to 63 letters, digits \
                 or '-', not starting or ending with '-'"
            ));
        }
    }
    Ok(())
}

/// `host` without a trailing `:port` (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_wildcard_covers_its_agents_and_nothing_else() {
        let wildcard = namespace_wildcard("team-beta", "agents.example.");
        assert_eq!(wildcard, "*.team-beta.agents.example");
        let host = agent_host("team-beta", "specialist", "agents.example");
        assert!(name_covers(&wildcard, &host));
        assert!(name_covers(
            &wildcard,
            "Specialist.TEAM-BETA.agents.example."
        ));
        for other in [
            "team-beta.agents.example",
            "a.b.team-beta.agents.example",
            ".team-beta.agents.example",
            "specialist.team-alpha.agents.example",
            "specialist.team-beta.agents.example.evil",
        ] {
            assert!(!name_covers(&wildcard, other), "{other}");
        }
    }

    #[test]
    fn an_exact_name_covers_only_its_host() {
        let host = agent_host("team-beta", "specialist", DEFAULT_DOMAIN);
        assert!(name_covers(&host, &host.to_uppercase()));
        assert!(!name_covers(&host, "desk.team-beta.a2a.localhost"));
    }

    #[test]
    fn agent_hosts_parse_back_to_their_agent() {
        let host = agent_host("team-beta", "specialist", DEFAULT_DOMAIN);
        assert_eq!(host, "specialist.team-beta.a2a.localhost");
        assert_eq!(
            route_host(&host, DEFAULT_DOMAIN),
            Some(("team-beta", "specialist"))
        );
        assert_eq!(
            route_host("Specialist.Team-Beta.A2A.localhost:8083", "a2a.localhost"),
            Some(("Team-Beta", "Specialist"))
        );
        assert_eq!(
            route_host(
                "specialist.team-beta.agents.example.com.",
                "agents.example.com"
            ),
            Some(("team-beta", "specialist"))
        );
    }

    #[test]
    fn domains_must_be_dns_names() {
        for good in [DEFAULT_DOMAIN, "agents.example.com", "x"] {
            assert_eq!(check_domain(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".a2a.localhost",
            "a2a..localhost",
            "a2a.localhost.",
            "-a.b",
            "a_b.c",
            "a b",
        ] {
            let error = check_domain(bad).expect_err(bad);
            assert!(error.contains("is not a DNS domain"), "{bad}: {error}");
        }
    }

    #[test]
    fn other_hosts_are_not_agents() {
        for host in [
            "127.0.0.1:8083",
            "a2a.localhost",
            "team-beta.a2a.localhost",
            "x.specialist.team-beta.a2a.localhost",
            "specialist.team-beta.a2a.localhost.evil.com",
            "specialist.team-betaa2a.localhost",
            "spe_cialist.team-beta.a2a.localhost",
            "[::1]:8083",
            "",
        ] {
            assert_eq!(route_host(host, DEFAULT_DOMAIN), None, "{host}");
        }
    }
}
