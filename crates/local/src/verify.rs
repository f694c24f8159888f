//! `warden verify`: proves a running local mesh does what its manifests say, one row per
//! property, for any mesh the loader accepts. Every check is derived from the compiled
//! snapshot:
//!
//! - every proxy has loaded the current snapshot (waited for, bounded);
//! - every agent's card is served through the gateway with gateway URLs;
//! - every accepted tool reference works end to end from its agent's egress, with its headers;
//!   a reference the target's policy does not admit (Accepted=False) is refused with the rule;
//! - every pair of agents the policy denies is refused at the gateway, naming the rule;
//! - a direct call that skips the gateway is refused by every Strict agent's sidecar;
//! - every agent with mTLS is MTLSReady and its card came over mTLS from its SPIFFE ID;
//! - the audit log holds exactly this run's calls (found by this run's A2A context id).
//!
//! It calls as workloads with SVIDs from the mesh's CA (or SPIRE server), exactly as agents do. The checks take
//! a [`Target`] (the mesh's status, snapshot and the credentials to call with), so a cluster
//! is verified by the same functions (`warden verify --kubeconfig`, built in `warden-kube`):
//! there, only the SVIDs given are held, a check that needs another identity's says so, and
//! a tool reference is called through the gateway as its agent (no egress is reachable).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use warden_identity::{IdentityCell, SpiffeId, SvidSource};
use warden_model::MeshSnapshot;
use warden_model::MtlsMode;
use warden_model::policy::{Caller, decide};
use warden_model::snapshot::CompiledAgent;
use warden_proxy::config::Limits;
use warden_proxy::forward::{Upstreams, Via};

use crate::status::{MeshStatus, ProcessHealth};

/// How long `verify` waits for every proxy to load the current snapshot.
pub const SYNC_LIMIT: Duration = Duration::from_secs(10);

/// At most this many denied pairs are tried (the first ones, in manifest order).
const MAX_DENIED_PAIRS: usize = 24;

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

/// Whose SVIDs `verify` calls with.
pub enum Credentials {
    /// The local mesh's issuer (its embedded CA or its SPIRE server): any workload's SVID,
    /// issued on demand.
    Issue(crate::spire::Issuer),
    /// Only these (a cluster's: SVID files, or the Workload API's one), by their SPIFFE IDs.
    Held(Vec<Arc<dyn SvidSource>>),
}

impl Credentials {
    /// Whether a call as `id` can be made.
    fn holds(&self, id: &SpiffeId) -> bool {
        match self {
            Credentials::Issue(_) => true,
            Credentials::Held(sources) => sources
                .iter()
                .any(|s| held_id(s.as_ref()).as_ref() == Some(id)),
        }
    }

    /// The identities held, for checks that need some caller (all of the mesh's with a CA).
    fn held(&self) -> Vec<SpiffeId> {
        match self {
            Credentials::Issue(_) => Vec::new(),
            Credentials::Held(sources) => {
                sources.iter().filter_map(|s| held_id(s.as_ref())).collect()
            }
        }
    }

    /// A client calling as `id`; `None` when no SVID of `id` is held.
    async fn client(&self, id: &SpiffeId) -> Result<Option<Client>, String> {
        let source: Arc<dyn SvidSource> = match self {
            Credentials::Issue(issuer) => IdentityCell::with(issuer.identity(id).await?),
            Credentials::Held(sources) => {
                match sources
                    .iter()
                    .find(|s| held_id(s.as_ref()).as_ref() == Some(id))
                {
                    Some(source) => source.clone(),
                    None => return Ok(None),
                }
            }
        };
        Ok(Some(Client {
            upstreams: Upstreams::new(source, Limits::default()),
        }))
    }
}

/// The SPIFFE ID a held source calls as (it does not change across rotations).
fn held_id(source: &dyn SvidSource) -> Option<SpiffeId> {
    source
        .current()
        .map(|identity| identity.spiffe_id().clone())
}

struct Client {
    upstreams: Upstreams,
}

impl Client {
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
        let answer = crate::probe::mesh_request(&self.upstreams, request, via).await;
        (
            answer.status,
            String::from_utf8_lossy(&answer.body).into_owned(),
        )
    }
}

fn short(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    t.replace('\n', " ")
}

/// One `verify` run: the mesh, the CA, and the A2A context id that marks this run's calls.
struct Run {
    status: MeshStatus,
    snapshot: MeshSnapshot,
    credentials: Credentials,
    context: String,
    gateway: String,
    gateway_id: SpiffeId,
    /// Calls made through the gateway: the decision the gateway must have logged, when the
    /// answer shows it (a failed tool call may have been refused by the gateway or later).
    audited: Vec<Option<bool>>,
}

impl Run {
    fn message(&self, text: &str) -> Value {
        serde_json::json!({"jsonrpc": "2.0", "id": "verify", "method": "SendMessage", "params": {"message": {
            "role": "user", "messageId": format!("{}-{text}", self.context), "contextId": self.context,
            "parts": [{"kind": "text", "text": text}]}}})
    }

    fn url(&self, agent: &CompiledAgent) -> String {
        format!(
            "{}/api/a2a/{}/{}/",
            self.gateway, agent.namespace, agent.name
        )
    }

    fn id(&self, namespace: &str, sa: &str) -> Result<SpiffeId, String> {
        SpiffeId::for_workload(self.snapshot.trust_domain(), namespace, sa)
            .map_err(|e| e.to_string())
    }

    fn allowed(&self, caller: &SpiffeId, target: &CompiledAgent, method: &str) -> bool {
        decide(
            &self.snapshot,
            &Caller::Spiffe(caller.clone()),
            &target.namespace,
            &target.name,
            method,
        )
        .allowed
    }
}

fn read_snapshot(state_dir: &Path) -> Result<MeshSnapshot, String> {
    let path = state_dir.join("snapshot.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The newest modification time of the manifest files at `path`.
fn newest_manifest(path: &Path) -> Option<std::time::SystemTime> {
    let files: Vec<std::path::PathBuf> = match path.is_dir() {
        true => std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect(),
        false => vec![path.to_owned()],
    };
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .max()
}

/// Why the snapshot in force is not yet the manifests' latest word, if it is not: an edit
/// `up` has not compiled yet, or one it refused.
/// `snapshot` is the snapshot file's mtime taken *before* its content was read, so that a
/// snapshot written in between cannot pass for the one read.
fn pending_edit(snapshot: Option<std::time::SystemTime>, status: &MeshStatus) -> Option<String> {
    if let Some(error) = &status.manifests_error {
        return Some(format!("the last manifest edit was not applied: {error}"));
    }
    let snapshot = snapshot?;
    let newest = newest_manifest(Path::new(&status.manifests))?;
    (newest > snapshot).then(|| format!("{} changed after the snapshot in force", status.manifests))
}

/// Waits (up to [`SYNC_LIMIT`]) until the snapshot reflects the manifests, every proxy
/// reports its version and every process is Ready; the row says what is behind when it gives
/// up.
async fn wait_synced(state_dir: &Path) -> Result<(MeshStatus, MeshSnapshot, Check), String> {
    let start = Instant::now();
    loop {
        let stamped = std::fs::metadata(state_dir.join("snapshot.json"))
            .and_then(|m| m.modified())
            .ok();
        let snapshot = read_snapshot(state_dir)?;
        let version = snapshot.version();
        let mut status = MeshStatus::load(state_dir).map_err(|e| e.to_string())?;
        let written = status.snapshot_version;
        status.snapshot_version = version;
        status.refresh().await;
        let mut behind: Vec<String> = pending_edit(stamped, &status).into_iter().collect();
        if written != version {
            behind.push(format!(
                "the status describes snapshot v{written}, not v{version}"
            ));
        }
        behind.extend(
            status
                .processes
                .iter()
                .filter(|p| !p.synced(version) || p.health != ProcessHealth::Ready)
                .map(|p| {
                    format!(
                        "{}: {:?}, snapshot {}",
                        p.name,
                        p.health,
                        p.snapshot_version
                            .map_or("none".to_owned(), |v| format!("v{v}"))
                    )
                }),
        );
        // A refused edit will not fix itself: no point in waiting.
        let refused = status.manifests_error.is_some();
        if behind.is_empty() || refused || start.elapsed() > SYNC_LIMIT {
            let check = Check {
                name: format!("every process is Ready and every proxy runs snapshot v{version}"),
                pass: behind.is_empty(),
                detail: if behind.is_empty() {
                    format!(
                        "{} processes, after {} ms",
                        status.processes.len(),
                        start.elapsed().as_millis()
                    )
                } else {
                    format!(
                        "after {} ms: {}",
                        start.elapsed().as_millis(),
                        behind.join("; ")
                    )
                },
            };
            return Ok((status, snapshot, check));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs every check against the mesh whose state is in `state_dir`.
pub async fn verify(state_dir: &Path) -> Result<Vec<Check>, String> {
    let (status, snapshot, synced) = wait_synced(state_dir).await?;
    let issuer = crate::spire::Issuer::of(&status)?;
    verify_target(Target {
        status,
        snapshot,
        credentials: Credentials::Issue(issuer),
        ready: synced,
    })
    .await
}

/// What a verify run checks: a mesh, described by its status (gateway, agents' addresses,
/// conditions and cards) and compiled snapshot, and whose SVIDs to call with.
pub struct Target {
    /// The mesh's status; an agent's empty `egressAddress` means its egress is not
    /// reachable from here (its tool references are called through the gateway as the agent);
    /// an empty gateway `auditLog` means the audit log is not checked.
    pub status: MeshStatus,
    /// The snapshot every expectation is derived from.
    pub snapshot: MeshSnapshot,
    /// Whose SVIDs to call with.
    pub credentials: Credentials,
    /// The first row: the mesh is ready and runs `snapshot`, as the caller found out.
    pub ready: Check,
}

/// Runs every check against `target`.
pub async fn verify_target(target: Target) -> Result<Vec<Check>, String> {
    let Target {
        status,
        snapshot,
        credentials,
        ready,
    } = target;
    let audit_path = std::path::PathBuf::from(&status.gateway.audit_log);
    let audit_start = std::fs::metadata(&audit_path).map_or(0, |m| m.len());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut run = Run {
        gateway: status
            .gateway
            .url
            .trim_end_matches('/')
            .replace("http://", "https://"),
        gateway_id: SpiffeId::new(&status.gateway.spiffe_id).map_err(|e| e.to_string())?,
        context: format!("warden-verify-{}-{nanos}", std::process::id()),
        status,
        snapshot,
        credentials,
        audited: Vec::new(),
    };
    let mut checks = vec![ready];
    checks.push(cards(&run).await?);
    checks.extend(tool_references(&mut run).await?);
    checks.extend(denied_pairs(&mut run).await?);
    checks.extend(direct_calls(&run).await?);
    checks.push(mtls(&run));
    if !run.status.gateway.audit_log.is_empty() {
        checks.extend(audit(&run, &audit_path, audit_start));
    }
    Ok(checks)
}

/// Where cards fetched over mTLS point: the configured public URL, else the gateway's own
/// authority with https (the gateway keeps the scheme the client used).
fn card_base(run: &Run) -> String {
    run.status.gateway.public_url.clone().unwrap_or_else(|| {
        let url = &run.status.gateway.url;
        format!(
            "https://{}",
            url.split_once("://").map_or(url.as_str(), |(_, a)| a)
        )
    })
}

/// Every card through the gateway, fetched as a caller its policy admits, carries gateway
/// URLs and no internal address.
async fn cards(run: &Run) -> Result<Check, String> {
    let mut problems = Vec::new();
    let mut unreachable = Vec::new();
    let mut fetched = 0;
    for agent in run.snapshot.agents() {
        let own = run.id(&agent.namespace, "warden-verify")?;
        let caller = std::iter::once(own)
            .chain(run.snapshot.agents().iter().map(|a| a.spiffe_id.clone()))
            .chain(run.credentials.held())
            .find(|id| run.credentials.holds(id) && run.allowed(id, agent, "GetAgentCard"));
        let client = match caller {
            Some(id) => run.credentials.client(&id).await?,
            None => None,
        };
        let Some(client) = client else {
            unreachable.push(agent.key());
            continue;
        };
        let url = format!("{}.well-known/agent-card.json", run.url(agent));
        let (code, body) = client.call(&url, Via::Mesh(&run.gateway_id), None).await;
        let leaked: Vec<&str> = run
            .status
            .agents
            .iter()
            .flat_map(|a| [a.app_address.as_str(), a.sidecar_address.as_str()])
            .filter(|addr| !addr.is_empty() && body.contains(addr))
            .collect();
        let base = card_base(run);
        let expected = format!(
            "{}/api/a2a/{}/{}/",
            base.trim_end_matches('/'),
            agent.namespace,
            agent.name
        );
        fetched += 1;
        if code != 200 || !body.contains(&expected) || !leaked.is_empty() {
            problems.push(format!(
                "{}: {code}, gateway URL present: {}, internal addresses: {leaked:?}",
                agent.key(),
                body.contains(&expected)
            ));
        }
    }
    Ok(Check {
        name: "cards are served through the gateway with gateway URLs".into(),
        pass: problems.is_empty(),
        detail: if problems.is_empty() {
            let mut detail = format!("{fetched} cards point at {}", card_base(run));
            if !unreachable.is_empty() {
                detail.push_str(&format!(
                    "; not fetched (no caller held may): {}",
                    unreachable.join(", ")
                ));
            }
            detail
        } else {
            problems.join("; ")
        },
    })
}

/// Every tool reference: the agent's egress → gateway → target; the target must see the
/// agent as caller and every delegation header (when it reports them, as the echo agent does).
async fn tool_references(run: &mut Run) -> Result<Vec<Check>, String> {
    let mut checks = Vec::new();
    let agents = run.snapshot.agents().to_vec();
    for agent in &agents {
        let Some(egress) = run
            .status
            .agents
            .iter()
            .find(|a| a.key() == agent.key())
            .map(|a| a.egress_address.clone())
        else {
            continue;
        };
        for tool in &agent.tools {
            let Some(target) = run.snapshot.agent(&tool.namespace, &tool.name).cloned() else {
                continue;
            };
            let Some((code, body)) = call_tool(run, agent, &egress, tool).await? else {
                checks.push(Check {
                    name: format!("{}'s tool reference to {}", agent.key(), target.key()),
                    pass: false,
                    detail: format!("not checked: no SVID of {} is held", agent.spiffe_id),
                });
                continue;
            };
            // The gateway's decision, when the answer shows it was the gateway's.
            let admitted = run.allowed(&agent.spiffe_id, &target, "SendMessage");
            run.audited.push(match (admitted, code) {
                (true, 200) => Some(true),
                (false, 403) => Some(false),
                _ => None,
            });
            checks.push(match (tool.accepted, admitted) {
                (true, _) => tool_check(agent, tool, &target, code, &body),
                (false, false) => refused_tool_check(run, agent, &target, code, &body),
                (false, true) => Check {
                    name: format!("{}'s tool reference to {}", agent.key(), target.key()),
                    pass: false,
                    detail: format!(
                        "not accepted: {} {}",
                        agent.accepted.reason, agent.accepted.message
                    ),
                },
            });
        }
    }
    Ok(checks)
}

/// Calls `tool` as `agent` would: through its egress when it is reachable (`egress`), else
/// through the gateway with the agent's own SVID; `None` when that SVID is not held.
async fn call_tool(
    run: &Run,
    agent: &CompiledAgent,
    egress: &str,
    tool: &warden_model::snapshot::CompiledTool,
) -> Result<Option<(u16, String)>, String> {
    let message = run.message("tool reference");
    if !egress.is_empty() {
        // The app's side of its egress is plaintext: whoever calls is the agent.
        let url = format!("http://{egress}/api/a2a/{}/{}/", tool.namespace, tool.name);
        let Some(client) = run
            .credentials
            .client(&run.id("warden-system", "warden-verify")?)
            .await?
        else {
            return Ok(None);
        };
        return Ok(Some(client.call(&url, Via::Plain, Some(&message)).await));
    }
    let Some(client) = run.credentials.client(&agent.spiffe_id).await? else {
        return Ok(None);
    };
    let url = format!("{}/api/a2a/{}/{}/", run.gateway, tool.namespace, tool.name);
    Ok(Some(
        client
            .call(&url, Via::Mesh(&run.gateway_id), Some(&message))
            .await,
    ))
}

/// A tool reference the target's policy does not admit (Accepted=False): its calls must be
/// refused at the gateway with the rule that denies it.
fn refused_tool_check(
    run: &Run,
    agent: &CompiledAgent,
    target: &CompiledAgent,
    code: u16,
    body: &str,
) -> Check {
    let rule = decide(
        &run.snapshot,
        &Caller::Spiffe(agent.spiffe_id.clone()),
        &target.namespace,
        &target.name,
        "SendMessage",
    )
    .rule
    .name();
    let pass = code == 403 && body.contains(rule);
    Check {
        name: format!(
            "{}'s tool reference to {} is not accepted, and its calls are refused",
            agent.key(),
            target.key()
        ),
        pass,
        detail: match pass {
            true => format!("403 {rule} ({})", agent.accepted.reason),
            false => format!("{code} {} (expected 403 {rule})", short(body)),
        },
    }
}

fn tool_check(
    agent: &CompiledAgent,
    tool: &warden_model::snapshot::CompiledTool,
    target: &CompiledAgent,
    code: u16,
    body: &str,
) -> Check {
    let reply: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let seen = &reply["result"]["metadata"];
    let reports = seen.get("caller").is_some();
    let caller_ok = !reports || seen["caller"] == agent.spiffe_id.as_str();
    let missing: Vec<String> = tool
        .headers
        .iter()
        .map(|(h, _)| h.to_ascii_lowercase())
        .filter(|h| {
            reports
                && !seen["delegationHeaders"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v == h.as_str()))
        })
        .collect();
    let pass = code == 200 && caller_ok && missing.is_empty();
    let detail = if pass && reports {
        let names: Vec<&str> = tool.headers.iter().map(|(h, _)| h.as_str()).collect();
        format!(
            "{} saw caller {} and headers [{}]",
            target.key(),
            seen["caller"],
            names.join(", ")
        )
    } else if pass {
        format!("200 from {} (it does not report what it saw)", target.key())
    } else if code != 200 {
        format!("{code} {}", short(body))
    } else {
        format!(
            "200, but {} saw caller {} and lacked headers {missing:?}",
            target.key(),
            seen["caller"]
        )
    };
    Check {
        name: format!(
            "delegation: {} calls {} through its egress and the gateway",
            agent.key(),
            target.key()
        ),
        pass,
        detail,
    }
}

/// Every pair (caller agent, target agent) the policy denies is refused at the gateway with
/// 403 naming the rule.
async fn denied_pairs(run: &mut Run) -> Result<Option<Check>, String> {
    let agents = run.snapshot.agents().to_vec();
    let mut pairs = Vec::new();
    for target in &agents {
        for caller in agents.iter().filter(|c| c.key() != target.key()) {
            let d = decide(
                &run.snapshot,
                &Caller::Spiffe(caller.spiffe_id.clone()),
                &target.namespace,
                &target.name,
                "SendMessage",
            );
            if !d.allowed {
                pairs.push((caller, target, d.rule.name()));
            }
        }
    }
    if pairs.is_empty() {
        return Ok(None);
    }
    let total = pairs.len();
    let mut seen = Vec::new();
    let mut problems = Vec::new();
    let held = pairs
        .into_iter()
        .filter(|(caller, _, _)| run.credentials.holds(&caller.spiffe_id));
    for (caller, target, rule) in held.take(MAX_DENIED_PAIRS) {
        let Some(client) = run.credentials.client(&caller.spiffe_id).await? else {
            continue;
        };
        let message = run.message("denied pair");
        let (code, body) = client
            .call(&run.url(target), Via::Mesh(&run.gateway_id), Some(&message))
            .await;
        run.audited.push((code == 403).then_some(false));
        let pair = format!("{} → {}", caller.key(), target.key());
        if code == 403 && body.contains(rule) {
            seen.push(format!("{pair}: 403 {rule}"));
        } else {
            problems.push(format!(
                "{pair}: {code} {} (expected 403 {rule})",
                short(&body)
            ));
        }
    }
    let tried = seen.len() + problems.len();
    if tried == 0 {
        problems.push("not checked: no SVID of a denied caller is held".into());
    }
    Ok(Some(Check {
        name: format!("every denied pair of agents is refused at the gateway ({tried} of {total})"),
        pass: problems.is_empty(),
        detail: if problems.is_empty() {
            seen.join("; ")
        } else {
            problems.join("; ")
        },
    }))
}

/// A call that skips the gateway: plaintext to every Strict sidecar is refused, and an mTLS
/// caller its policy does not admit gets 403.
async fn direct_calls(run: &Run) -> Result<Vec<Check>, String> {
    let outsider = run.id("warden-verify-outsider", "warden-verify")?;
    let mut checks = Vec::new();
    for agent in run
        .snapshot
        .agents()
        .iter()
        .filter(|a| a.mtls_mode == MtlsMode::Strict)
    {
        let Some(sidecar) = run
            .status
            .agents
            .iter()
            .find(|a| a.key() == agent.key())
            .map(|a| a.sidecar_address.clone())
        else {
            continue;
        };
        let message = run.message("direct");
        let plain = plaintext_call(&sidecar, &message).await;
        let plain_refused = !matches!(plain, Ok(200..=299));
        let mut detail = match plain {
            Ok(code) if plain_refused => format!("plaintext: {code} (refused)"),
            Ok(code) => format!("plaintext: {code} (ACCEPTED)"),
            Err(e) => format!("plaintext: refused ({e})"),
        };
        let mut pass = plain_refused;
        let denied = std::iter::once(outsider.clone())
            .chain(run.credentials.held())
            .find(|id| run.credentials.holds(id) && !run.allowed(id, agent, "SendMessage"));
        if let Some((caller, client)) = match denied {
            Some(id) => run.credentials.client(&id).await?.map(|c| (id, c)),
            None => None,
        } {
            let (code, _) = client
                .call(
                    &format!("https://{sidecar}/"),
                    Via::Mesh(&agent.spiffe_id),
                    Some(&message),
                )
                .await;
            pass &= code == 403;
            detail.push_str(&format!("; mTLS as {caller}: {code}"));
        }
        checks.push(Check {
            name: format!(
                "a direct call to {}'s sidecar that skips the gateway is refused",
                agent.key()
            ),
            pass,
            detail,
        });
    }
    Ok(checks)
}

/// A plaintext JSON-RPC call straight to a sidecar's mesh port: its status, or why the
/// sidecar gave none (a Strict sidecar drops the connection).
async fn plaintext_call(sidecar: &str, message: &Value) -> Result<u16, String> {
    let addr: std::net::SocketAddr = sidecar
        .parse()
        .map_err(|e| format!("sidecar address {sidecar}: {e}"))?;
    let request = http::Request::post("/")
        .header(http::header::HOST, sidecar)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(message.to_string())))
        .map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        crate::probe::plain_request(addr, request),
    )
    .await
    .map_err(|_| "no answer within 5 s".to_owned())?;
    answer.map(|(code, _)| code)
}

/// Every agent with mTLS is MTLSReady (its sidecar's own word) and its card came over mTLS.
fn mtls(run: &Run) -> Check {
    let mut problems = Vec::new();
    let with_mtls: Vec<_> = run
        .status
        .agents
        .iter()
        .filter(|a| a.mtls_mode != "Disabled")
        .collect();
    for a in &with_mtls {
        let mtls = a.condition("MTLSReady") == "True";
        let card_ok = a.card.as_ref().is_some_and(|c| {
            c.transport_security == "mtls"
                && c.attested_spiffe_id.as_deref() == Some(a.spiffe_id.as_str())
        });
        if !mtls || !card_ok {
            problems.push(format!(
                "{}: MTLSReady={} card={:?}",
                a.key(),
                a.condition("MTLSReady"),
                a.card
            ));
        }
    }
    Check {
        name: "every agent with mTLS is MTLSReady and its card was fetched over mTLS from its SPIFFE ID"
            .into(),
        pass: problems.is_empty(),
        detail: if problems.is_empty() {
            format!("{} agents", with_mtls.len())
        } else {
            problems.join("; ")
        },
    }
}

/// The audit log holds one line per call this run made through the gateway, with the
/// decision the run saw (its lines carry this run's context id; other lines are ignored).
fn audit(run: &Run, path: &Path, from: u64) -> Option<Check> {
    if run.audited.is_empty() {
        return None;
    }
    let text = std::fs::read(path).unwrap_or_default();
    let from = usize::try_from(from).unwrap_or(0);
    let tail = match text.len() >= from {
        true => &text[from..],
        false => &text[..],
    };
    let ours: Vec<Value> = String::from_utf8_lossy(tail)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["context_id"] == run.context.as_str())
        .collect();
    let count = |allowed: bool| {
        let decision = if allowed { "allow" } else { "deny" };
        let made = run.audited.iter().filter(|d| **d == Some(allowed)).count();
        let logged = ours.iter().filter(|l| l["decision"] == decision).count();
        (made, logged)
    };
    let (allowed_made, allowed_logged) = count(true);
    let (denied_made, denied_logged) = count(false);
    // Allowed calls may cause more allowed lines (an agent that delegates onwards).
    let pass = allowed_made <= allowed_logged
        && denied_made == denied_logged
        && ours.len() >= run.audited.len();
    Some(Check {
        name: "the audit log holds this run's allowed and denied calls".into(),
        pass,
        detail: format!(
            "{} lines of this run's {} calls in {}: {allowed_logged} allowed (succeeded: {allowed_made}), {denied_logged} denied (refused at the gateway: {denied_made})",
            ours.len(),
            run.audited.len(),
            path.display()
        ),
    })
}
