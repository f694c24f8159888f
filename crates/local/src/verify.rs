//! `warden verify`: proves a running local mesh does what it should, one row per property.
//!
//! It finds the roles in the compiled snapshot: the *orchestrator* (an agent with an accepted
//! cross-namespace tool reference), the *specialist* (that reference's target) and a *rogue*
//! (an agent the specialist does not admit). It calls the gateway as a workload of the
//! orchestrator's namespace (`…/sa/warden-verify`) and as the rogue, with SVIDs from the mesh's
//! CA, exactly as agents do.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use warden_identity::ca::CertificateAuthority;
use warden_identity::{IdentityCell, SpiffeId, X509Identity};
use warden_model::MeshSnapshot;
use warden_model::policy::{Caller, decide};
use warden_proxy::config::Limits;
use warden_proxy::forward::{Upstreams, Via};

use crate::status::MeshStatus;

/// One verified property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Whether it holds.
    pub pass: bool,
    /// Evidence, or why not.
    pub detail: String,
}

/// Renders the rows; the last line says how many passed.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for (i, c) in checks.iter().enumerate() {
        out.push_str(&format!(
            "{} {}. {} — {}\n",
            if c.pass { "PASS" } else { "FAIL" },
            i + 1,
            c.name,
            c.detail
        ));
    }
    let passed = checks.iter().filter(|c| c.pass).count();
    out.push_str(&format!("{passed} of {} checks passed", checks.len()));
    out
}

struct Client {
    upstreams: Upstreams,
}

impl Client {
    fn as_workload(ca: &CertificateAuthority, id: &SpiffeId) -> Result<Self, String> {
        let svid = ca
            .issue_x509(id, std::time::Duration::from_secs(600))
            .map_err(|e| e.to_string())?;
        let identity = X509Identity::new(
            svid.chain.clone(),
            svid.private_key(),
            Arc::new(ca.bundle_set()),
        )
        .map_err(|e| e.to_string())?;
        Ok(Self {
            upstreams: Upstreams::new(IdentityCell::with(identity), Limits::default()),
        })
    }

    async fn call(&self, url: &str, via: Via<'_>, body: Option<&Value>) -> (u16, String) {
        let builder = match body {
            Some(_) => {
                http::Request::post(url).header(http::header::CONTENT_TYPE, "application/json")
            }
            None => http::Request::get(url),
        };
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let Ok(request) = builder.body(Full::new(bytes)) else {
            return (0, "cannot build the request".into());
        };
        let response = self.upstreams.send(request, via).await;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

fn message(text: &str) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": "verify", "method": "SendMessage", "params": {"message": {
        "role": "user", "messageId": "warden-verify", "parts": [{"kind": "text", "text": text}]}}})
}

fn short(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    t.replace('\n', " ")
}

/// Runs every check against the mesh whose state is in `state_dir`.
pub async fn verify(state_dir: &Path) -> Result<Vec<Check>, String> {
    let status = MeshStatus::load(state_dir)?;
    let snapshot_path = state_dir.join("snapshot.json");
    let snapshot: MeshSnapshot = serde_json::from_str(
        &std::fs::read_to_string(&snapshot_path)
            .map_err(|e| format!("{}: {e}", snapshot_path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", snapshot_path.display()))?;
    let ca = CertificateAuthority::load(Path::new(&status.ca.dir)).map_err(|e| e.to_string())?;

    // Roles. The orchestrator's tool is looked up in the snapshot *as written*, accepted or not,
    // so that a revoked grant shows up as a failed delegation rather than a missing role.
    let orchestrator = snapshot
        .agents()
        .iter()
        .find(|a| a.tools.iter().any(|t| t.namespace != a.namespace))
        .ok_or("no agent has a cross-namespace tool reference: nothing to verify")?;
    let tool = orchestrator
        .tools
        .iter()
        .find(|t| t.namespace != orchestrator.namespace)
        .ok_or("no tool")?;
    let specialist = snapshot
        .agent(&tool.namespace, &tool.name)
        .ok_or("the tool's target is not in the snapshot")?;
    let rogue = snapshot.agents().iter().find(|a| {
        a.key() != orchestrator.key()
            && a.key() != specialist.key()
            && !decide(
                &snapshot,
                &Caller::Spiffe(a.spiffe_id.clone()),
                &specialist.namespace,
                &specialist.name,
                "SendMessage",
            )
            .allowed
    });
    let place = |key: &str| {
        status
            .agents
            .iter()
            .find(|a| format!("{}/{}", a.namespace, a.name) == key)
    };
    let gateway_id = SpiffeId::new(&status.gateway.spiffe_id).map_err(|e| e.to_string())?;
    let gw = status
        .gateway
        .url
        .trim_end_matches('/')
        .replace("http://", "https://");
    let via_gateway = Via::Mesh(&gateway_id);
    let verifier_id = SpiffeId::for_workload(
        snapshot.trust_domain(),
        &orchestrator.namespace,
        "warden-verify",
    )
    .map_err(|e| e.to_string())?;
    let verifier = Client::as_workload(&ca, &verifier_id)?;
    let mut checks = Vec::new();

    // 1. Cards through the gateway carry gateway URLs.
    let mut problems = Vec::new();
    for agent in [orchestrator, specialist] {
        let url = format!(
            "{gw}/api/a2a/{}/{}/.well-known/agent-card.json",
            agent.namespace, agent.name
        );
        let (code, body) = verifier.call(&url, via_gateway, None).await;
        let leaked: Vec<&str> = status
            .agents
            .iter()
            .flat_map(|a| [a.app_address.as_str(), a.sidecar_address.as_str()])
            .filter(|addr| body.contains(addr))
            .collect();
        let card: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let expected = format!(
            "{}/api/a2a/{}/{}/",
            status.gateway.url, agent.namespace, agent.name
        );
        if code != 200 || card["url"] != expected.as_str() || !leaked.is_empty() {
            problems.push(format!(
                "{}: {code} url={} leaked={leaked:?}",
                agent.key(),
                card["url"]
            ));
        }
    }
    checks.push(Check {
        name: "cards are served through the gateway with gateway URLs".into(),
        pass: problems.is_empty(),
        detail: if problems.is_empty() {
            format!(
                "{} and {} point at {}",
                orchestrator.key(),
                specialist.key(),
                status.gateway.url
            )
        } else {
            problems.join("; ")
        },
    });

    // 2. Delegation: the orchestrator calls the specialist through its egress and the gateway.
    let url = format!(
        "{gw}/api/a2a/{}/{}/",
        orchestrator.namespace, orchestrator.name
    );
    let (code, body) = verifier
        .call(&url, via_gateway, Some(&message("please delegate")))
        .await;
    let reply: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let delegate = &reply["result"]["metadata"]["delegate"];
    let seen = &delegate["reply"]["result"]["metadata"];
    let header = tool.headers.first().map(|(h, _)| h.to_ascii_lowercase());
    let caller_ok = seen["caller"] == orchestrator.spiffe_id.as_str();
    let header_ok = header.as_ref().is_none_or(|h| {
        seen["delegationHeaders"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == h.as_str()))
    });
    let pass = code == 200 && delegate["status"] == 200 && caller_ok && header_ok;
    checks.push(Check {
        name: format!(
            "delegation: {} calls {} through its egress and the gateway",
            orchestrator.key(),
            specialist.key()
        ),
        pass,
        detail: if pass {
            format!(
                "{} saw caller {} and header {}",
                specialist.key(),
                seen["caller"],
                header.unwrap_or_default()
            )
        } else if code != 200 {
            format!("the orchestrator answered {code}: {}", short(&body))
        } else {
            format!(
                "the specialist's answer to the orchestrator: {} {}",
                delegate["status"],
                short(&delegate["reply"].to_string())
            )
        },
    });

    // 3. The rogue is denied at the gateway, with the rule named.
    let specialist_url = format!("{gw}/api/a2a/{}/{}/", specialist.namespace, specialist.name);
    match rogue {
        Some(rogue) => {
            let client = Client::as_workload(&ca, &rogue.spiffe_id)?;
            let (code, body) = client
                .call(&specialist_url, via_gateway, Some(&message("let me in")))
                .await;
            let rule = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["data"]["rule"].as_str().map(str::to_owned));
            checks.push(Check {
                name: format!("{} is denied access to {}", rogue.key(), specialist.key()),
                pass: code == 403 && rule.is_some(),
                detail: format!(
                    "{code}, rule {}",
                    rule.unwrap_or_else(|| "not named".into())
                ),
            });

            // 4. Skipping the gateway does not help.
            let sidecar = place(&specialist.key())
                .map(|p| p.sidecar_address.clone())
                .unwrap_or_default();
            let plain = verifier
                .call(
                    &format!("http://{sidecar}/"),
                    Via::Plain,
                    Some(&message("direct")),
                )
                .await;
            let direct = client
                .call(
                    &format!("https://{sidecar}/"),
                    Via::Mesh(&specialist.spiffe_id),
                    Some(&message("direct")),
                )
                .await;
            let plain_refused = plain.0 != 200;
            checks.push(Check {
                name: format!(
                    "a direct call to {}'s sidecar that skips the gateway is refused",
                    specialist.key()
                ),
                pass: plain_refused && direct.0 == 403,
                detail: format!(
                    "plaintext: {} ({}); mTLS as {}: {}",
                    plain.0,
                    if plain_refused { "refused" } else { "ACCEPTED" },
                    rogue.key(),
                    direct.0
                ),
            });
        }
        None => {
            checks.push(Check {
                name: "a rogue agent is denied".into(),
                pass: false,
                detail: "no agent outside the specialist's policy to try with".into(),
            });
            checks.push(Check {
                name: "a direct call that skips the gateway is refused".into(),
                pass: false,
                detail: "no rogue agent".into(),
            });
        }
    }

    // 5. mTLS everywhere, cards fetched over mTLS from the expected identity.
    let mut problems = Vec::new();
    for a in &status.agents {
        let mtls = a
            .conditions
            .iter()
            .any(|c| c.kind == "MTLSReady" && c.status == "True");
        let card_ok = a.card.as_ref().is_some_and(|c| {
            c.transport_security == "mtls"
                && c.attested_spiffe_id.as_deref() == Some(a.spiffe_id.as_str())
        });
        if !mtls || !card_ok {
            problems.push(format!(
                "{}/{}: MTLSReady={mtls} card={:?}",
                a.namespace, a.name, a.card
            ));
        }
    }
    checks.push(Check {
        name: "every agent is MTLSReady and its card was fetched over mTLS from its SPIFFE ID"
            .into(),
        pass: problems.is_empty(),
        detail: if problems.is_empty() {
            format!("{} agents", status.agents.len())
        } else {
            problems.join("; ")
        },
    });

    // 6. The audit log holds the allowed and the denied calls.
    let audit = std::fs::read_to_string(&status.gateway.audit_log).unwrap_or_default();
    let lines: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let target = specialist.key();
    let allowed = lines
        .iter()
        .any(|l| l["target"] == target.as_str() && l["decision"] == "allow");
    let denied = lines
        .iter()
        .any(|l| l["target"] == target.as_str() && l["decision"] == "deny");
    checks.push(Check {
        name: "the audit log holds the allowed and the denied calls".into(),
        pass: allowed && denied,
        detail: format!(
            "{} lines; allowed call to {target}: {allowed}; denied call: {denied}",
            lines.len()
        ),
    });
    Ok(checks)
}
