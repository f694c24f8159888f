//! `warden gateway` as a real process in front of real sidecars, with curl and a Rust client.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use warden_testkit::process::{Running, free_addr, wait_listening};

/// The example mesh plus `team-beta/public` (from: All, Permissive) and an OIDC issuer.
fn mesh_edit(text: &str) -> String {
    let mut text = text.to_owned();
    if text.contains("kind: MeshConfig") {
        text = text.replace(
            "  defaultMtlsMode: Permissive\n",
            "  defaultMtlsMode: Permissive\n  jwtIssuers:\n    - issuer: https://idp.test\n      audiences: [warden]\n      jwksFile: jwks.json\n",
        );
    }
    if text.contains("name: specialist") && text.contains("kind: Agent") {
        text.push_str(
            "---\napiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: public\n  namespace: team-beta\nspec:\n  allowedNamespaces:\n    from: All\n",
        );
    }
    text
}

struct Mesh {
    pki: Pki,
    app: warden_testkit::app::App,
    snapshot: PathBuf,
    _specialist: Sidecar,
    _public: Sidecar,
    gateway: Running,
    addr: SocketAddr,
    admin: SocketAddr,
    audit: PathBuf,
    oidc_key: PathBuf,
}

impl Mesh {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// The mesh with `extra` flags for the gateway.
    async fn start_with(extra: &[&str]) -> Self {
        let pki = Pki::new();
        let app = warden_testkit::app::start().await;
        let dir = pki.dir.path().to_owned();
        let snapshot = dir.join("snapshot.json");
        let oidc_key = make_oidc_issuer(&dir);
        compile_example(&snapshot, mesh_edit);
        let snap = snapshot.to_str().unwrap();
        let specialist = start_sidecar(
            &pki.svid_dir("specialist"),
            app.addr,
            &["--snapshot", snap, "--agent", "team-beta/specialist"],
        );
        let public = start_sidecar(
            &pki.svid_dir("public"),
            app.addr,
            &["--snapshot", snap, "--agent", "team-beta/public"],
        );
        // A JWT-SVID issuer: a warden CA for warden.local whose JWT authority is in the bundle.
        let ca = dir.join("jwt-ca");
        assert!(
            Command::new(WARDEN)
                .args(["ca", "init", "--dir", ca.to_str().unwrap()])
                .output()
                .unwrap()
                .status
                .success()
        );
        let bundle = Command::new(WARDEN)
            .args([
                "ca",
                "bundle",
                "--dir",
                ca.to_str().unwrap(),
                "--format",
                "spiffe",
            ])
            .output()
            .unwrap();
        std::fs::write(dir.join("jwt-bundle.json"), bundle.stdout).unwrap();
        let addr = free_addr();
        let admin = free_addr();
        let audit = dir.join("audit.log");
        let child = Command::new(WARDEN)
            .args([
                "gateway",
                "--listen",
                &addr.to_string(),
                "--admin",
                &admin.to_string(),
                "--snapshot",
                snap,
                "--svid-dir",
                pki.svid_dir("gateway").to_str().unwrap(),
                "--endpoint",
                &format!("team-beta/specialist={}", specialist.inbound),
                "--endpoint",
                &format!("team-beta/public={}", public.inbound),
                "--audit-log",
                audit.to_str().unwrap(),
                "--jwt-bundle",
                dir.join("jwt-bundle.json").to_str().unwrap(),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let gateway = Running(child);
        wait_listening(addr, Duration::from_secs(10));
        Mesh {
            pki,
            app,
            snapshot,
            _specialist: specialist,
            _public: public,
            gateway,
            addr,
            admin,
            audit,
            oidc_key,
        }
    }

    fn url(&self, agent: &str, rest: &str) -> String {
        format!("https://{}/api/a2a/team-beta/{agent}/{rest}", self.addr)
    }

    /// curl to the gateway as `who` (mTLS) or, with `None`, plaintext and anonymous.
    fn call(&self, who: Option<&str>, agent: &str, rest: &str, extra: &[&str]) -> (String, String) {
        let url = match who {
            Some(_) => self.url(agent, rest),
            None => format!("http://{}/api/a2a/team-beta/{agent}/{rest}", self.addr),
        };
        let (cert, key) = who
            .map(|w| (self.pki.cert(w), self.pki.key(w)))
            .unwrap_or_default();
        let mut args: Vec<&str> = Vec::new();
        if who.is_some() {
            args.extend(["-k", "--cert", &cert, "--key", &key]);
        }
        args.extend(extra);
        args.extend(["-w", "\n%{http_code}", &url]);
        let out = curl(&args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "000"));
        (status.to_owned(), body.to_owned())
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

const SEND: &str = r#"{"jsonrpc":"2.0","id":"r1","method":"message/send","params":{"message":{"role":"user","contextId":"ctx-9","parts":[{"kind":"text","text":"hi"}]}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_and_a_denied_cross_namespace_call_each_leave_an_audit_line() {
    let mesh = Mesh::start().await;
    let json = [
        "-H",
        "content-type: application/json",
        "-H",
        "X-Delegation-Token: forged",
        "-H",
        "A2A-Version: 1.0",
        "-d",
        SEND,
    ];
    let (status, body) = mesh.call(Some("orchestrator"), "specialist", "", &json);
    assert_eq!(status, "200", "{body}");
    let seen = headers(&body);
    // The specialist's sidecar saw the forwarded caller, not the gateway.
    assert_eq!(
        seen["x-forwarded-client-cert"],
        format!("By={SPECIALIST};URI={ORCHESTRATOR}")
    );
    // headersFrom replaced what the client sent; A2A headers pass through.
    assert_eq!(seen["x-delegation-token"], "delegated-by-team-alpha");
    assert_eq!(seen["x-team"], "team-alpha");
    assert_eq!(seen["a2a-version"], "1.0");

    let (status, body) = mesh.call(Some("rogue"), "specialist", "", &json);
    assert_eq!(status, "403");
    let denial = headers(&body);
    assert_eq!(denial["id"], "r1");
    assert_eq!(denial["error"]["data"]["rule"], "namespace_selector");
    // A code A2A assigns to nothing (-32001 is TaskNotFound), and a message saying who and why.
    assert_eq!(denial["error"]["code"], -32090);
    let message = denial["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(ROGUE) && message.contains("SendMessage on team-beta/specialist"),
        "{message}"
    );

    let lines = mesh.audit_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (allow, deny) = (&lines[0], &lines[1]);
    assert_eq!(allow["caller"], ORCHESTRATOR);
    assert_eq!(allow["authn"], "mtls");
    assert_eq!(allow["target"], "team-beta/specialist");
    assert_eq!(allow["method"], "SendMessage");
    assert_eq!(allow["context_id"], "ctx-9");
    assert_eq!(
        (
            allow["decision"].as_str(),
            allow["rule"].as_str(),
            allow["status"].as_u64()
        ),
        (Some("allow"), Some("namespace_selector"), Some(200))
    );
    assert!(
        allow["bytes_out"].as_u64().unwrap() > 0 && allow["latency_ms"].as_f64().unwrap() > 0.0
    );
    assert_eq!(deny["caller"], ROGUE);
    assert_eq!(
        (deny["decision"].as_str(), deny["status"].as_u64()),
        (Some("deny"), Some(403))
    );

    let metrics =
        String::from_utf8_lossy(&curl(&[&format!("http://{}/metrics", mesh.admin)]).stdout)
            .into_owned();
    for line in [
        r#"warden_gateway_requests_total{target="team-beta/specialist",method="SendMessage",decision="allow",status="2xx"} 1"#,
        r#"warden_gateway_requests_total{target="team-beta/specialist",method="SendMessage",decision="deny",status="4xx"} 1"#,
        r#"warden_gateway_denials_total{rule="namespace_selector"} 1"#,
        "warden_gateway_request_duration_seconds_count 2",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relabelling_the_callers_namespace_flips_allow_to_deny_within_a_second() {
    let mut mesh = Mesh::start().await;
    let pid = mesh.gateway.pid();
    assert_eq!(
        mesh.call(Some("orchestrator"), "specialist", "headers", &[])
            .0,
        "200"
    );
    compile_example(&mesh.snapshot, |t| {
        mesh_edit(t).replace(
            "    a2a-access: specialist\n    tier: internal\n",
            "    tier: internal\n",
        )
    });
    let changed = Instant::now();
    loop {
        let (status, _) = mesh.call(Some("orchestrator"), "specialist", "headers", &[]);
        if status == "403" {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "still {status} after {:?}",
            changed.elapsed()
        );
    }
    assert!(mesh.gateway.alive());
    assert_eq!(mesh.gateway.pid(), pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_reach_from_all_in_permissive_and_nothing_else() {
    let mesh = Mesh::start().await;
    assert_eq!(mesh.call(None, "public", "headers", &[]).0, "200");
    let (status, body) = mesh.call(None, "specialist", "headers", &[]);
    assert_eq!(status, "403");
    assert_eq!(
        headers(&body)["error"]["details"][0]["metadata"]["rule"],
        "namespace_selector"
    );
    // Self-asserted identity headers authenticate nobody.
    let (status, _) = mesh.call(
        None,
        "specialist",
        "headers",
        &[
            "-H",
            "X-User-Id: admin",
            "-H",
            &format!("x-warden-caller: {ORCHESTRATOR}"),
        ],
    );
    assert_eq!(status, "403");
    let (status, _) = mesh.call(None, "nobody", "headers", &[]);
    assert_eq!(status, "404");
}

/// A P-256 key (made by openssl) and its JWKS at `dir/jwks.json`, as issuer https://idp.test.
fn make_oidc_issuer(dir: &Path) -> PathBuf {
    let key = dir.join("idp.key");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            key.to_str().unwrap(),
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let der = Command::new("openssl")
        .args([
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ])
        .output()
        .unwrap()
        .stdout;
    let point = &der[der.len() - 64..];
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "idp-1", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&point[..32]), "y": URL_SAFE_NO_PAD.encode(&point[32..]),
    }]});
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).unwrap();
    key
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn oidc_token(key: &Path, claims: serde_json::Value, alg: jsonwebtoken::Algorithm) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some("idp-1".into());
    let key = match alg {
        jsonwebtoken::Algorithm::HS256 => jsonwebtoken::EncodingKey::from_secret(b"shared-secret"),
        _ => jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(key).unwrap()).unwrap(),
    };
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_svids_and_oidc_tokens_are_checked_and_every_refusal_says_why() {
    use jsonwebtoken::Algorithm::{ES256, HS256};
    let mesh = Mesh::start().await;
    let ca = mesh.pki.dir.path().join("jwt-ca");
    let jwt_svid = |aud: &str| {
        let out = Command::new(WARDEN)
            .args([
                "ca",
                "jwt",
                "--dir",
                ca.to_str().unwrap(),
                "--id",
                ORCHESTRATOR,
                "--audience",
                aud,
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let bearer = |t: &str| format!("authorization: Bearer {t}");

    // A JWT-SVID for the orchestrator is the orchestrator: admitted by the selector.
    let (status, body) = mesh.call(
        None,
        "specialist",
        "headers",
        &["-H", &bearer(&jwt_svid("warden-gateway"))],
    );
    assert_eq!(status, "200", "{body}");
    assert!(
        headers(&body).get("authorization").is_none(),
        "the gateway's token must not reach the agent"
    );
    let (status, body) = mesh.call(
        None,
        "specialist",
        "headers",
        &["-H", &bearer(&jwt_svid("someone-else"))],
    );
    assert_eq!(status, "401");
    assert!(
        headers(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JWT-SVID refused"),
        "{body}"
    );

    // An OIDC token: a subject that belongs to no namespace, admitted by from: All only.
    let good = serde_json::json!({"iss": "https://idp.test", "aud": "warden", "sub": "alice", "exp": now() + 300});
    let token = oidc_token(&mesh.oidc_key, good.clone(), ES256);
    let (status, body) = mesh.call(None, "public", "headers", &["-H", &bearer(&token)]);
    assert_eq!(status, "200", "{body}");
    assert_eq!(
        mesh.call(None, "specialist", "headers", &["-H", &bearer(&token)])
            .0,
        "403"
    );

    let with = |k: &str, v: serde_json::Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let tampered = {
        let t = oidc_token(&mesh.oidc_key, good.clone(), ES256);
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        let payload = serde_json::json!({"iss": "https://idp.test", "aud": "warden", "sub": "root", "exp": now() + 300});
        parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
        parts.join(".")
    };
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let cases = [
        (
            "expired",
            oidc_token(&mesh.oidc_key, with("exp", (now() - 3600).into()), ES256),
            "token expired",
        ),
        (
            "wrong audience",
            oidc_token(&mesh.oidc_key, with("aud", "other".into()), ES256),
            "wrong audience",
        ),
        (
            "wrong issuer",
            oidc_token(
                &mesh.oidc_key,
                with("iss", "https://evil.test".into()),
                ES256,
            ),
            "unknown issuer https://evil.test",
        ),
        ("alg none", none, "malformed token"),
        (
            "HS256",
            oidc_token(&mesh.oidc_key, good.clone(), HS256),
            "not allowed",
        ),
        ("tampered", tampered, "signature does not verify"),
    ];
    for (what, token, reason) in cases {
        let (status, body) = mesh.call(None, "public", "headers", &["-H", &bearer(&token)]);
        assert_eq!(status, "401", "{what}: {body}");
        let message = headers(&body)["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(reason), "{what}: {message}");
    }
    let refused = mesh
        .audit_lines()
        .iter()
        .filter(|l| l["authn"] == "invalid")
        .count();
    assert_eq!(refused, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_carry_only_gateway_urls_and_sse_streams_event_by_event() {
    let mesh = Mesh::start().await;
    let (status, body) = mesh.call(
        Some("orchestrator"),
        "specialist",
        ".well-known/agent-card.json",
        &[],
    );
    assert_eq!(status, "200", "{body}");
    assert!(!body.contains("10.9.9.9"), "{body}");
    let card = headers(&body);
    // Fetched over mTLS: the card keeps the client on https, and each interface its own path,
    // binding, version and tenant.
    let expected = format!("https://{}/api/a2a/team-beta/specialist/", mesh.addr);
    assert_eq!(card["url"], expected);
    assert_eq!(card["additionalInterfaces"][0]["url"], expected);
    assert_eq!(card["supportedInterfaces"][0]["url"], expected);
    let rest = &card["supportedInterfaces"][1];
    assert_eq!(rest["url"], format!("{expected}a2a/rest"));
    assert_eq!(
        (
            &rest["protocolBinding"],
            &rest["protocolVersion"],
            &rest["tenant"]
        ),
        (&"HTTP+JSON".into(), &"1.0".into(), &"t1".into())
    );
    // Fetched over plaintext (team-beta/public admits anonymous callers): http, and the
    // authority the client used.
    let (status, body) = mesh.call(None, "public", ".well-known/agent-card.json", &[]);
    assert_eq!(status, "200", "{body}");
    assert_eq!(
        headers(&body)["url"],
        format!("http://{}/api/a2a/team-beta/public/", mesh.addr)
    );
    // Second fetch: revalidated by ETag, same card.
    let (status, again) = mesh.call(
        Some("orchestrator"),
        "specialist",
        ".well-known/agent.json",
        &[],
    );
    assert_eq!(status, "200");
    assert_eq!(headers(&again), card);

    // Each agent is also at the root of its own host name: standard discovery works there, and
    // the card points at that host (curl reaches it through --connect-to: no DNS needed).
    let host = format!("specialist.team-beta.a2a.localhost:{}", mesh.addr.port());
    let (cert, key) = (mesh.pki.cert("orchestrator"), mesh.pki.key("orchestrator"));
    let connect_to = format!("{host}:{}", mesh.addr);
    let out = curl(&[
        "-k",
        "--cert",
        &cert,
        "--key",
        &key,
        "--connect-to",
        &connect_to,
        &format!("https://{host}/.well-known/agent-card.json"),
    ]);
    let card = headers(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(card["url"], format!("https://{host}/"));
    assert_eq!(
        card["supportedInterfaces"][1]["url"],
        format!("https://{host}/a2a/rest")
    );
    let last = mesh.audit_lines().pop().expect("an audit line");
    assert_eq!(
        (&last["target"], &last["method"]),
        (&"team-beta/specialist".into(), &"GetAgentCard".into())
    );

    // Calls on the interfaces' own paths reach the same paths upstream and are audited as the
    // A2A method, not as `POST /a2a/jsonrpc`.
    let json = ["-H", "content-type: application/json", "-d", SEND];
    for path in ["a2a/jsonrpc", "a2a/rest/message:send"] {
        let (status, body) = mesh.call(Some("orchestrator"), "specialist", path, &json);
        assert_eq!(status, "200", "{path}: {body}");
        let last = mesh.audit_lines().pop().expect("an audit line");
        assert_eq!(last["method"], "SendMessage", "{path}: {last}");
    }

    assert_sse_not_buffered(&mesh.url("specialist", "sse"), &cert, &key, &mesh.app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_ten_thousand_requests_leaves_ten_thousand_audit_lines() {
    use http_body_util::{BodyExt, Empty};
    let mesh = Mesh::start().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("http://{}/api/a2a/team-beta/public/headers", mesh.addr)
        .parse()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (client, uri) = (client.clone(), uri.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..200 {
                let response = client.get(uri.clone()).await.unwrap();
                let status = response.status();
                response.into_body().collect().await.unwrap();
                if status == 200 {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    assert_eq!(ok, 10_000);
    let lines = std::fs::read_to_string(&mesh.audit).unwrap();
    assert_eq!(lines.lines().count(), 10_000);
    assert!(
        lines
            .lines()
            .all(|l| l.contains("\"target\":\"team-beta/public\"") && l.contains("\"status\":200"))
    );
}

/// What Prometheus 3 sends.
const PROMETHEUS_ACCEPT: &str = "Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1";
/// What promtool reads (and Prometheus 2 without OpenMetrics).
const TEXT_ACCEPT: &str = "Accept: text/plain;version=0.0.4";

/// `/metrics` at `admin` asked with `accept`: (Content-Type, body).
fn scrape(admin: SocketAddr, accept: &str) -> (String, String) {
    let out = curl(&["-D", "-", "-H", accept, &format!("http://{admin}/metrics")]);
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").expect("an HTTP response");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(name, _)| name.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    (content_type, body.to_owned())
}

/// `promtool check metrics` on `body`: (passed, what it said).
fn promtool_check(promtool: &Path, body: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(body.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_the_gateway_and_a_sidecar_pass_promtool_and_junk_paths_add_no_series() {
    let test = "metrics_of_the_gateway_and_a_sidecar_pass_promtool_and_junk_paths_add_no_series";
    let Some(promtool) = warden_testkit::sdk::promtool(test) else {
        return;
    };
    let mesh = Mesh::start().await;
    let json = ["-H", "content-type: application/json", "-d", SEND];
    assert_eq!(
        mesh.call(Some("orchestrator"), "specialist", "", &json).0,
        "200"
    );
    assert_eq!(mesh.call(Some("rogue"), "specialist", "", &json).0, "403");
    let series = |body: &str| body.lines().filter(|l| l.starts_with("warden_")).count();
    let before = series(&scrape(mesh.admin, TEXT_ACCEPT).1);
    // Twenty unauthenticated requests for paths and agents nobody has.
    for i in 0..20 {
        let url = format!("http://{}/api/a2a/junk-{i}/agent-{i}/x", mesh.addr);
        curl(&[&url]);
        let url = format!("http://{}/nothing-{i}", mesh.addr);
        curl(&["-X", "PATCH", &url]);
    }
    for (who, admin) in [("gateway", mesh.admin), ("sidecar", mesh._specialist.admin)] {
        let (content_type, body) = scrape(admin, PROMETHEUS_ACCEPT);
        assert!(
            content_type.starts_with("application/openmetrics-text; version=1.0.0"),
            "{who}: Content-Type {content_type:?}"
        );
        assert!(body.ends_with("# EOF\n"), "{who}: {body}");
        let (content_type, body) = scrape(admin, TEXT_ACCEPT);
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{who}: Content-Type {content_type:?}"
        );
        let (ok, said) = promtool_check(&promtool, &body);
        assert!(ok, "{who}: promtool check metrics failed:\n{said}\n{body}");
        let expiry = body
            .lines()
            .find_map(|l| l.strip_prefix("warden_svid_expiry_seconds "))
            .and_then(|v| v.parse::<i64>().ok());
        assert!(
            expiry.is_some_and(|s| s > 3000),
            "{who}: SVID expiry {expiry:?}"
        );
    }
    let after = series(&scrape(mesh.admin, TEXT_ACCEPT).1);
    assert!(
        after <= before + 4,
        "40 junk requests added {} series",
        after - before
    );
}

/// `warden_gateway_uncovered_agent_hosts` at `admin`, once it reads `want` (10 s at most).
fn wait_uncovered(admin: SocketAddr, want: u32) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = scrape(admin, TEXT_ACCEPT).1.lines().find_map(|l| {
            l.strip_prefix("warden_gateway_uncovered_agent_hosts{host_domain=\"a2a.localhost\"} ")
                .and_then(|v| v.parse().ok())
        });
        if read == Some(want) || Instant::now() > deadline {
            return read;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// curl over TLS to `agent`'s host name at the gateway, checking the gateway's host name
/// against its certificate as gRPC and https clients do: curl's exit code (60: no name in the
/// certificate matches).
fn curl_agent_host(mesh: &Mesh, agent_host: &str) -> i32 {
    let ca = mesh.pki.dir.path().join("ca.pem");
    let url = format!(
        "https://{agent_host}:{}/.well-known/agent-card.json",
        mesh.addr.port()
    );
    let resolve = format!("{agent_host}:{}:127.0.0.1", mesh.addr.port());
    let (cert, key) = (mesh.pki.cert("orchestrator"), mesh.pki.key("orchestrator"));
    let args = [
        "--cacert",
        ca.to_str().unwrap(),
        "--cert",
        &cert,
        "--key",
        &key,
    ];
    let out = curl(&[&args[..], &["--resolve", &resolve, "-o", "/dev/null", &url]].concat());
    out.status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_counts_agent_hosts_its_svid_has_no_name_for_across_a_rotation() {
    let mesh = Mesh::start().await;
    let (specialist, orchestrator) = (
        "specialist.team-beta.a2a.localhost",
        "orchestrator.team-alpha.a2a.localhost",
    );
    // The openssl SVID carries only the SPIFFE ID: all four agents' hosts lack a name, and a
    // client that checks host names refuses the gateway at them.
    assert_eq!(wait_uncovered(mesh.admin, 4), Some(4));
    assert_eq!(curl_agent_host(&mesh, specialist), 60);

    // Rotate to an SVID that also names team-beta's agents (spiffe-helper's layout).
    let ca = warden_testkit::openssl::OpensslCa {
        dir: mesh.pki.dir.path().to_owned(),
        name: "ca".into(),
    };
    let san = format!("subjectAltName=URI:{GATEWAY},DNS:*.team-beta.a2a.localhost");
    let mut ext = warden_testkit::openssl::svid_extensions(GATEWAY);
    ext[0] = san;
    let ext: Vec<&str> = ext.iter().map(String::as_str).collect();
    let (start, end) = (
        warden_testkit::openssl::time_from_now(-60),
        warden_testkit::openssl::time_from_now(3600),
    );
    ca.sign_leaf("gateway-named", &ext, &start, &end);
    let dir = mesh.pki.svid_dir("gateway");
    let from = |f: &str| mesh.pki.dir.path().join(f);
    std::fs::copy(from("gateway-named.pem"), dir.join("svid.pem")).unwrap();
    std::fs::copy(from("gateway-named.key"), dir.join("svid_key.pem")).unwrap();

    // team-alpha's orchestrator and team-gamma's rogue are left.
    assert_eq!(wait_uncovered(mesh.admin, 2), Some(2));
    assert_eq!(curl_agent_host(&mesh, specialist), 0);
    assert_eq!(curl_agent_host(&mesh, orchestrator), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_a2a_sdk_client_is_told_who_was_refused_and_by_which_rule() {
    let test = "a_refused_a2a_sdk_client_is_told_who_was_refused_and_by_which_rule";
    let Some(python) = warden_testkit::sdk::python(test) else {
        return;
    };
    let mesh = Mesh::start().await;
    let script = warden_testkit::sdk::sources().join("python/denied_client.py");
    let out = Command::new(python)
        .arg(script)
        .arg(mesh.url("specialist", ""))
        .args([mesh.pki.cert("rogue"), mesh.pki.key("rogue")])
        .output()
        .expect("run the a2a-sdk client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for transport in ["card", "jsonrpc", "rest"] {
        let said = seen[transport].as_str().unwrap_or_default();
        eprintln!("a2a-sdk {transport} refusal: {said}");
        assert!(
            said.contains(ROGUE) && said.contains("rule namespace_selector"),
            "{transport}: the SDK user sees {said:?}"
        );
    }
}

/// Issue 11.4: a bearer scheme in any case is a credential, never forwarded; a second
/// `Authorization` header or a malformed one is refused naming the problem; mTLS plus a
/// token does not carry the token on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_for_the_gateway_never_reach_the_agent() {
    use jsonwebtoken::Algorithm::ES256;
    let mesh = Mesh::start().await;
    let claims = serde_json::json!({"iss": "https://idp.test", "aud": "warden", "sub": "alice", "exp": now() + 300});
    let token = oidc_token(&mesh.oidc_key, claims, ES256);
    for header in [
        format!("authorization: bearer {token}"),
        format!("authorization: BEARER {token}"),
        format!("authorization: Bearer\t{token}"),
    ] {
        let (status, body) = mesh.call(None, "public", "headers", &["-H", &header]);
        assert_eq!(status, "200", "{header}: {body}");
        let seen = headers(&body);
        assert!(
            seen.get("authorization").is_none(),
            "{header} reached the agent"
        );
    }
    // Authenticated as alice, audited as her.
    let lines = mesh.audit_lines();
    assert!(lines.iter().all(|l| l["authn"] == "oidc"), "{lines:?}");

    let twice = [
        "-H",
        &format!("authorization: Bearer {token}"),
        "-H",
        "authorization: Bearer second",
    ];
    let (status, body) = mesh.call(None, "public", "headers", &twice);
    assert_eq!(status, "400", "{body}");
    assert!(
        body.contains("more than one Authorization header"),
        "{body}"
    );
    let (status, body) = mesh.call(None, "public", "headers", &["-H", "authorization: Bearer"]);
    assert_eq!(status, "401", "{body}");

    // mTLS plus a token: the peer is the caller, and the token stays at the gateway.
    let header = format!("authorization: Bearer {token}");
    let (status, body) = mesh.call(Some("orchestrator"), "public", "headers", &["-H", &header]);
    assert_eq!(status, "200", "{body}");
    assert!(headers(&body).get("authorization").is_none());
    // A scheme the gateway does not use is not forwarded either.
    let (status, body) = mesh.call(
        None,
        "public",
        "headers",
        &["-H", "authorization: Basic dXNlcg=="],
    );
    assert_eq!(status, "200", "{body}");
    assert!(headers(&body).get("authorization").is_none());
}

/// Issue 11.9: a token whose subject cannot be written into `x-warden-caller` is refused; the
/// agent never sees the gateway itself as the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_subject_that_cannot_be_forwarded_is_401() {
    use jsonwebtoken::Algorithm::ES256;
    let mesh = Mesh::start().await;
    let claims = serde_json::json!({"iss": "https://idp.test", "aud": "warden", "sub": "alice\u{1}", "exp": now() + 300});
    let token = oidc_token(&mesh.oidc_key, claims, ES256);
    let header = format!("authorization: Bearer {token}");
    let (status, body) = mesh.call(None, "public", "headers", &["-H", &header]);
    assert_eq!(status, "401", "{body}");
    assert!(body.contains("cannot be forwarded"), "{body}");
}

/// Issue 11.5: a request the gateway allowed and forwarded leaves exactly one audit line even
/// when its client gives up before the response head: 200 clients, 200 lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_give_up_early_each_leave_one_audit_line() {
    use tokio::io::AsyncWriteExt;
    let mesh = Mesh::start().await;
    let request = b"GET /api/a2a/team-beta/public/hang HTTP/1.1\r\nHost: gateway\r\n\r\n";
    let (leave, _) = tokio::sync::broadcast::channel::<()>(1);
    let clients: Vec<_> = (0..200)
        .map(|_| {
            let addr = mesh.addr;
            let mut leave = leave.subscribe();
            tokio::spawn(async move {
                let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
                tcp.write_all(request).await.expect("write");
                // The agent never answers; the client leaves once every request reached it.
                let _ = leave.recv().await;
            })
        })
        .collect();
    // However loaded the machine, every request was decided and forwarded before anyone
    // leaves (the agent holds them all).
    let deadline = Instant::now() + Duration::from_secs(30);
    while mesh.app.hanging() < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mesh.app.hanging(), 200, "requests that reached the agent");
    leave.send(()).expect("clients waiting");
    for client in clients {
        client.await.expect("client");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = mesh.audit_lines();
        if lines.len() >= 200 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mesh.audit_lines().len(),
        200,
        "exactly one line per request"
    );
    assert_eq!(lines.len(), 200);
    for line in &lines {
        assert_eq!(line["aborted"], true, "{line}");
        assert_eq!(line["decision"], "allow", "{line}");
        assert_eq!(line["phase"], "forwarding", "{line}");
    }
}

/// Sends raw bytes to the gateway and returns what it answers within `wait` (or "" if it
/// says nothing that long).
async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(wait, tcp.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    }
}

fn post_head(agent: &str, length: usize) -> Vec<u8> {
    format!(
        "POST /api/a2a/team-beta/{agent}/ HTTP/1.1\r\nHost: gateway\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
    .into_bytes()
}

/// Issue 11.2: a large body from a caller the target admits for nothing is refused without
/// being read; a body that stalls is cut at --body-read-timeout; past --max-buffered-bytes a
/// request gets 503 with Retry-After instead of growing memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_not_read_before_the_decision_and_buffering_is_bounded() {
    let mesh = Mesh::start_with(&[
        "--body-read-timeout",
        "1s",
        "--max-buffered-bytes",
        "100000",
    ])
    .await;
    // Anonymous to specialist (from: Selector): refused at once, 9.9 MB never sent.
    let mut request = post_head("specialist", 9_900_000);
    request.extend_from_slice(&[b' '; 1000]);
    let answer = raw(mesh.addr, &request, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer:?}");

    // Anonymous to public (from: All): a stalled body holds 80 kB of the 100 kB budget...
    let mut stalled = post_head("public", 90_000);
    stalled.extend_from_slice(&vec![b' '; 80_000]);
    let addr = mesh.addr;
    let first = tokio::spawn(async move { raw(addr, &stalled, Duration::from_secs(4)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...so a second body of 50 kB does not fit: 503 with Retry-After.
    let mut second = post_head("public", 50_000);
    second.extend_from_slice(&vec![b' '; 50_000]);
    let answer = raw(mesh.addr, &second, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    // The stalled one is cut at the read timeout.
    let answer = first.await.expect("first");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}

/// Issue 11.10: batches and other JSON-RPC versions are refused with a JSON-RPC error; a body
/// that cannot be read is 400, not 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_batches_versions_and_broken_bodies_are_refused() {
    let mesh = Mesh::start().await;
    let json = ["-H", "content-type: application/json", "-d"];
    let batch = format!("[{SEND},{SEND}]");
    let (status, body) = mesh.call(
        Some("orchestrator"),
        "specialist",
        "",
        &[&json[..], &[batch.as_str()]].concat(),
    );
    assert_eq!(status, "400", "{body}");
    assert_eq!(headers(&body)["error"]["data"]["rule"], "jsonrpc_batch");
    let old = SEND.replace("\"2.0\"", "\"1.0\"");
    let (status, body) = mesh.call(
        Some("orchestrator"),
        "specialist",
        "",
        &[&json[..], &[old.as_str()]].concat(),
    );
    assert_eq!(status, "400", "{body}");
    let error = headers(&body);
    assert_eq!(
        (
            error["id"].as_str(),
            error["error"]["data"]["rule"].as_str()
        ),
        (Some("r1"), Some("jsonrpc_version"))
    );

    let broken = b"POST /api/a2a/team-beta/public/ HTTP/1.1\r\nHost: gateway\r\ntransfer-encoding: chunked\r\n\r\nZZ\r\nnot chunked\r\n";
    let answer = raw(mesh.addr, broken, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
}

/// Issue 11.10: an HTTP+JSON route carrying a JSON-RPC body that names another method is
/// refused (400) naming both, not decided as the route's method; a REST body goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_route_carrying_another_jsonrpc_method_is_refused() {
    let mesh = Mesh::start().await;
    let cancel = r#"{"jsonrpc":"2.0","id":"c1","method":"CancelTask","params":{"id":"t1"}}"#;
    let json = ["-H", "content-type: application/json", "-d"];
    let (status, body) = mesh.call(
        Some("orchestrator"),
        "specialist",
        "v1/message:send",
        &[&json[..], &[cancel]].concat(),
    );
    assert_eq!(status, "400", "{body}");
    assert!(
        body.contains("SendMessage") && body.contains("CancelTask"),
        "the refusal names both methods: {body}"
    );
    let rest = r#"{"message":{"role":"ROLE_USER","parts":[{"text":"hi"}]}}"#;
    let (status, body) = mesh.call(
        Some("orchestrator"),
        "specialist",
        "v1/message:send",
        &[&json[..], &[rest]].concat(),
    );
    assert_eq!(status, "200", "{body}");
    let lines = mesh.audit_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["rule"], "route_body_mismatch", "{lines:?}");
}

/// Issue 11.4: an Agent that opts in with `forwardAuthorization: true` receives the caller's
/// `Authorization`; the default (tested above) never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_opts_in_receives_the_callers_authorization() {
    let mesh = Mesh::start().await;
    let basic = ["-H", "authorization: Basic dXNlcg=="];
    let (status, body) = mesh.call(None, "public", "headers", &basic);
    assert_eq!(status, "200", "{body}");
    assert!(headers(&body).get("authorization").is_none(), "{body}");
    compile_example(&mesh.snapshot, |t| {
        mesh_edit(t).replace(
            "  name: public\n  namespace: team-beta\nspec:\n",
            "  name: public\n  namespace: team-beta\nspec:\n  forwardAuthorization: true\n",
        )
    });
    let changed = Instant::now();
    loop {
        let (status, body) = mesh.call(None, "public", "headers", &basic);
        assert_eq!(status, "200", "{body}");
        if headers(&body)["authorization"] == "Basic dXNlcg==" {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(2),
            "the opted-in agent never saw the header: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still only that agent: the specialist (no opt-in) does not see it.
    let (status, body) = mesh.call(Some("orchestrator"), "specialist", "headers", &basic);
    assert_eq!(status, "200", "{body}");
    assert!(headers(&body).get("authorization").is_none(), "{body}");
}

/// Issue 11.8: the control plane's card grant is exactly GET of the card path — not a
/// JSON-RPC GetAgentCard at the gateway, not any path ending in it at a sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_card_grant_is_exactly_get_of_the_card_path() {
    let mesh = Mesh::start().await;
    let sidecar = &mesh._specialist;
    let code = ["-w", "\n%{http_code}"];
    let status = |path: &str| {
        let (_, text) = mtls(&mesh.pki, "gateway", sidecar, path, &code);
        text.rsplit_once('\n')
            .map(|(_, s)| s.to_owned())
            .unwrap_or_default()
    };
    assert_eq!(status("/.well-known/agent-card.json"), "200");
    assert_eq!(status("/app/.well-known/agent-card.json"), "403");
    assert_eq!(status("/admin?x=/.well-known/agent-card.json"), "403");

    let card = r#"{"jsonrpc":"2.0","id":"c1","method":"GetAgentCard","params":{}}"#;
    let json = ["-H", "content-type: application/json", "-d", card];
    let (status, body) = mesh.call(Some("gateway"), "specialist", "", &json);
    assert_eq!(status, "403", "{body}");
}

/// Issue 11.11: an upstream that sends the head and part of the body, then stalls, is cut at
/// --upstream-idle-timeout and audited as aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upstream_body_is_cut_and_audited_as_aborted() {
    let mesh = Mesh::start_with(&["--upstream-idle-timeout", "1s"]).await;
    let url = mesh.url("specialist", "sse");
    let (cert, key) = (mesh.pki.cert("orchestrator"), mesh.pki.key("orchestrator"));
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        curl(&["-N", "-k", "--cert", &cert, "--key", &key, &url])
    })
    .await
    .expect("curl");
    let took = started.elapsed();
    assert!(!out.status.success(), "the stalled stream ended cleanly");
    assert!(took < Duration::from_secs(5), "held for {took:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("data: one"));
    let lines = mesh.audit_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["aborted"], true);
    assert_eq!(lines[0]["phase"], "responding");
}
