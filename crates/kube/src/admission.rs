//! One AdmissionReview in, one AdmissionReview out, for both webhooks.
//!
//! A body that is not a well-formed `admission.k8s.io/v1` AdmissionReview gets a denial that
//! says what is wrong with it (and carries the request's uid whenever one can be read, so the
//! apiserver shows the message rather than "invalid webhook response"). Reading the cluster
//! failing is a denial too: the webhooks fail closed.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use crate::cluster::{ClusterReader, Lookups};
use crate::inject::{InjectionPlan, SidecarTemplate, inject, patch};
use crate::mode::{AGENT_LABEL, MODE_ANNOTATION, resolve_mode};
use crate::validate::{check, lookups, parse_object};

/// Which webhook a review was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Webhook {
    /// `/validate`: Agents and MeshConfigs.
    Validating,
    /// `/mutate`: Pods of agents.
    Mutating,
}

impl Webhook {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Webhook::Validating => "validating",
            Webhook::Mutating => "mutating",
        }
    }
}

/// How a review ended, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted unchanged.
    Allow,
    /// Admitted with a patch (the sidecar was injected or updated).
    Patch,
    /// Refused.
    Deny,
    /// The body was not a usable AdmissionReview.
    Malformed,
}

impl Decision {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Patch => "patch",
            Decision::Deny => "deny",
            Decision::Malformed => "malformed",
        }
    }
}

/// What the webhooks need besides the cluster.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The injected sidecar's shared settings.
    pub sidecar: SidecarTemplate,
    /// The trust domain when no MeshConfig sets one.
    pub default_trust_domain: String,
}

/// The review's answer and how it ended.
#[derive(Debug)]
pub struct Reviewed {
    /// The AdmissionReview to return (HTTP 200, JSON).
    pub review: AdmissionReview<DynamicObject>,
    /// The outcome.
    pub decision: Decision,
    /// The object's kind, when known (`Agent`, `Pod` …).
    pub kind: String,
}

struct Parsed {
    request: AdmissionRequest<DynamicObject>,
    /// `request.object` exactly as sent (DynamicObject would drop unknown metadata fields).
    object: Value,
}

fn malformed(uid: Option<&str>, message: String) -> Box<AdmissionResponse> {
    let mut response = AdmissionResponse::invalid(format!("malformed AdmissionReview: {message}"));
    if let Some(uid) = uid {
        response.uid = uid.to_owned();
    }
    Box::new(response)
}

fn parse(body: &[u8]) -> Result<Parsed, Box<AdmissionResponse>> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| malformed(None, format!("the body is not JSON ({e})")))?;
    let uid = value.pointer("/request/uid").and_then(Value::as_str);
    match value.get("apiVersion").and_then(Value::as_str) {
        Some("admission.k8s.io/v1") => {}
        other => {
            return Err(malformed(
                uid,
                format!("apiVersion is {other:?}; this webhook speaks admission.k8s.io/v1"),
            ));
        }
    }
    let review: AdmissionReview<DynamicObject> = serde_path_to_error::deserialize(&value)
        .map_err(|e| malformed(uid, format!("{}: {}", e.path(), e.inner())))?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| malformed(uid, "it holds no request".into()))?;
    let object = value
        .pointer("/request/object")
        .cloned()
        .unwrap_or(Value::Null);
    Ok(Parsed { request, object })
}

/// Answers one AdmissionReview body sent to `webhook`.
pub async fn review<R: ClusterReader>(
    body: &[u8],
    webhook: Webhook,
    reader: &R,
    settings: &WebhookSettings,
) -> Reviewed {
    let parsed = match parse(body) {
        Ok(parsed) => parsed,
        Err(response) => {
            let response = *response;
            return Reviewed {
                review: response.into_review(),
                decision: Decision::Malformed,
                kind: String::new(),
            };
        }
    };
    let kind = parsed.request.kind.kind.clone();
    let base = AdmissionResponse::from(&parsed.request);
    let response = match webhook {
        Webhook::Validating => validating(&parsed, base, reader).await,
        Webhook::Mutating => mutating(&parsed, base, reader, settings).await,
    };
    let decision = match (&response.allowed, &response.patch) {
        (false, _) => Decision::Deny,
        (true, Some(_)) => Decision::Patch,
        (true, None) => Decision::Allow,
    };
    Reviewed {
        review: response.into_review(),
        decision,
        kind,
    }
}

async fn validating<R: ClusterReader>(
    parsed: &Parsed,
    base: AdmissionResponse,
    reader: &R,
) -> AdmissionResponse {
    let request = &parsed.request;
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return base;
    }
    if !parsed.object.is_object() {
        return base.deny("malformed AdmissionReview: request.object is missing");
    }
    let object = match parse_object(&parsed.object, request.namespace.as_deref()) {
        Ok(object) => object,
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(crate::validate::located).collect();
            return base.deny(lines.join("\n"));
        }
    };
    let view = match reader.read(&lookups(&object)).await {
        Ok(view) => view,
        Err(e) => return base.deny(format!("Warden cannot check this object: {e}")),
    };
    let verdict = check(&object, &view);
    if !verdict.allowed() {
        return base.deny(verdict.message());
    }
    let mut response = base;
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings);
    }
    response
}

async fn mutating<R: ClusterReader>(
    parsed: &Parsed,
    base: AdmissionResponse,
    reader: &R,
    settings: &WebhookSettings,
) -> AdmissionResponse {
    let request = &parsed.request;
    if request.operation != Operation::Create || request.kind.kind != "Pod" {
        return base;
    }
    let pod = &parsed.object;
    let label = |map: &str, key: &str| {
        pod.pointer(&format!("/metadata/{map}"))
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let Some(name) = label("labels", AGENT_LABEL) else {
        return base; // not an agent's pod: untouched
    };
    let Some(namespace) = request
        .namespace
        .clone()
        .or_else(|| label("metadata", "namespace"))
    else {
        return base.deny("malformed AdmissionReview: request.namespace is missing for a Pod");
    };
    let key = (namespace.clone(), name.clone());
    let lookups = Lookups {
        agents: [key.clone()].into(),
        namespaces: Default::default(),
    };
    let view = match reader.read(&lookups).await {
        Ok(view) => view,
        Err(e) => return base.deny(format!("Warden cannot inject the sidecar: {e}")),
    };
    let Some(agent) = view.agents.get(&key) else {
        return base.deny(format!(
            "metadata.labels[{AGENT_LABEL}]: the pod belongs to agent {namespace}/{name}, which does not exist; create the Agent first or remove the label"
        ));
    };
    let mesh = view.mesh_configs.first().map(|c| &c.spec);
    let resolved = match resolve_mode(
        label("annotations", MODE_ANNOTATION).as_deref(),
        agent.spec.mtls.as_ref().and_then(|m| m.mode),
        mesh.and_then(|m| m.default_mtls_mode),
    ) {
        Ok(resolved) => resolved,
        Err(e) => return base.deny(e.to_string()),
    };
    let plan = InjectionPlan {
        namespace,
        name,
        port: agent.spec.port,
        mode: resolved.mode,
        trust_domain: mesh
            .and_then(|m| m.trust_domain.clone())
            .unwrap_or_else(|| settings.default_trust_domain.clone()),
    };
    let mut after = pod.clone();
    if let Err(e) = inject(&mut after, &settings.sidecar, &plan) {
        return base.deny(format!("cannot inject the Warden sidecar: {e}"));
    }
    let patch = patch(pod, &after);
    tracing::info!(
        agent = %format!("{}/{}", plan.namespace, plan.name),
        mode = %resolved.mode,
        source = %resolved.source,
        changes = patch.0.len(),
        "sidecar injection"
    );
    if patch.0.is_empty() {
        return base;
    }
    match base.clone().with_patch(patch) {
        Ok(response) => response,
        Err(e) => base.deny(format!("cannot encode the sidecar patch: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterView;
    use crate::inject::{SIDECAR_NAME, SpiffeSocket};
    use crate::validate::tests::{agent, example_cluster};
    use serde_json::json;

    fn settings() -> WebhookSettings {
        WebhookSettings {
            sidecar: SidecarTemplate {
                image: "warden:test".into(),
                control_namespace: "warden-system".into(),
                socket: SpiffeSocket::default(),
            },
            default_trust_domain: "warden.local".into(),
        }
    }

    fn body(
        kind: (&str, &str, &str),
        resource: &str,
        ns: Option<&str>,
        operation: &str,
        object: Value,
    ) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "4b0e-uid", "kind": {"group": kind.0, "version": kind.1, "kind": kind.2},
                "resource": {"group": kind.0, "version": kind.1, "resource": resource},
                "namespace": ns, "operation": operation, "name": object["metadata"]["name"],
                "userInfo": {"username": "alice"}, "object": object, "dryRun": false
            }
        }))
        .unwrap()
    }

    fn run(body: &[u8], webhook: Webhook, view: &ClusterView) -> Reviewed {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(review(body, webhook, view, &settings()))
    }

    fn response(r: &Reviewed) -> &AdmissionResponse {
        r.review.response.as_ref().unwrap()
    }

    #[test]
    fn malformed_reviews_get_a_clear_denial() {
        let good = body(
            ("warden.dev", "v1alpha1", "Agent"),
            "agents",
            Some("team-gamma"),
            "CREATE",
            agent("team-gamma", "rogue", json!({})),
        );
        let mut bad_operation: Value = serde_json::from_slice(&good).unwrap();
        bad_operation["request"]["operation"] = json!("EXPLODE");
        let mut no_request: Value = serde_json::from_slice(&good).unwrap();
        no_request.as_object_mut().unwrap().remove("request");
        let mut old_version: Value = serde_json::from_slice(&good).unwrap();
        old_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let table: [(Vec<u8>, &str, &str); 5] = [
            (
                b"{not json".to_vec(),
                "",
                "malformed AdmissionReview: the body is not JSON",
            ),
            (
                b"[]".to_vec(),
                "",
                "malformed AdmissionReview: apiVersion is None",
            ),
            (
                serde_json::to_vec(&bad_operation).unwrap(),
                "4b0e-uid",
                "malformed AdmissionReview: request.operation: unknown variant `EXPLODE`",
            ),
            (
                serde_json::to_vec(&no_request).unwrap(),
                "",
                "malformed AdmissionReview: it holds no request",
            ),
            (
                serde_json::to_vec(&old_version).unwrap(),
                "4b0e-uid",
                "admission.k8s.io/v1beta1",
            ),
        ];
        for (input, uid, message) in table {
            let r = run(&input, Webhook::Validating, &example_cluster());
            let resp = response(&r);
            assert_eq!(r.decision, Decision::Malformed);
            assert!(!resp.allowed);
            assert_eq!(resp.uid, uid);
            assert!(
                resp.result.message.contains(message),
                "{:?} lacks {message:?}",
                resp.result.message
            );
            // The answer is itself a well-formed review.
            let out = serde_json::to_value(&r.review).unwrap();
            assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
            assert_eq!(out["kind"], "AdmissionReview");
        }
    }

    #[test]
    fn validating_denies_with_the_rule_and_allows_with_warnings() {
        let rogue = agent(
            "team-gamma",
            "rogue",
            json!({"tools": [{"agentRef": {"name": "specialist", "namespace": "team-beta"}}]}),
        );
        let r = run(
            &body(
                ("warden.dev", "v1alpha1", "Agent"),
                "agents",
                Some("team-gamma"),
                "CREATE",
                rogue,
            ),
            Webhook::Validating,
            &example_cluster(),
        );
        assert_eq!(r.decision, Decision::Deny);
        assert_eq!(response(&r).uid, "4b0e-uid");
        assert!(
            response(&r)
                .result
                .message
                .contains("CrossNamespaceReferenceDenied"),
            "{}",
            response(&r).result.message
        );
        let waiting = agent(
            "team-gamma",
            "rogue",
            json!({"tools": [{"agentRef": {"name": "later"}}]}),
        );
        let r = run(
            &body(
                ("warden.dev", "v1alpha1", "Agent"),
                "agents",
                Some("team-gamma"),
                "UPDATE",
                waiting,
            ),
            Webhook::Validating,
            &example_cluster(),
        );
        assert_eq!(r.decision, Decision::Allow);
        assert_eq!(response(&r).warnings.as_ref().unwrap().len(), 1);
        let r = run(
            &body(
                ("warden.dev", "v1alpha1", "Agent"),
                "agents",
                Some("team-gamma"),
                "DELETE",
                json!({"metadata": {"name": "x"}}),
            ),
            Webhook::Validating,
            &example_cluster(),
        );
        assert_eq!(r.decision, Decision::Allow, "deletes are not checked");
    }

    fn pod(labels: Value, annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "p", "labels": labels, "annotations": annotations},
               "spec": {"containers": [{"name": "app", "image": "agent:1"}]}})
    }

    fn mutate(pod: Value) -> Reviewed {
        run(
            &body(("", "v1", "Pod"), "pods", Some("team-beta"), "CREATE", pod),
            Webhook::Mutating,
            &example_cluster(),
        )
    }

    fn patched(pod: &Value, r: &Reviewed) -> Value {
        let patch: json_patch::Patch =
            serde_json::from_slice(response(r).patch.as_ref().unwrap()).unwrap();
        let mut out = pod.clone();
        json_patch::patch(&mut out, &patch).unwrap();
        out
    }

    fn mode_of(pod: &Value) -> String {
        let sidecar = &pod["spec"]["initContainers"][0];
        assert_eq!(sidecar["name"], SIDECAR_NAME);
        sidecar["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "MTLS_MODE")
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn an_agents_pod_gets_the_sidecar_with_the_resolved_mode_once() {
        let original = pod(json!({"warden.dev/agent": "specialist"}), json!({}));
        let r = mutate(original.clone());
        assert_eq!(r.decision, Decision::Patch);
        let injected = patched(&original, &r);
        assert_eq!(mode_of(&injected), "strict", "from the Agent");
        let args = injected["spec"]["initContainers"][0]["args"].to_string();
        assert!(
            args.contains("spiffe://example.org/ns/warden-system/sa/warden-gateway"),
            "trust domain from the MeshConfig: {args}"
        );
        let again = mutate(injected);
        assert_eq!(
            again.decision,
            Decision::Allow,
            "a second pass changes nothing"
        );
        assert!(response(&again).patch.is_none());

        let annotated = pod(
            json!({"warden.dev/agent": "specialist"}),
            json!({"warden.dev/mtls-mode": "disabled"}),
        );
        let r = mutate(annotated.clone());
        assert_eq!(
            mode_of(&patched(&annotated, &r)),
            "disabled",
            "the annotation wins"
        );
    }

    #[test]
    fn non_agent_pods_are_untouched_and_bad_labels_refused() {
        let r = mutate(pod(json!({"app": "web"}), json!({})));
        assert_eq!(r.decision, Decision::Allow);
        assert!(response(&r).patch.is_none());
        let r = mutate(pod(json!({"warden.dev/agent": "ghost"}), json!({})));
        assert_eq!(r.decision, Decision::Deny);
        assert!(
            response(&r)
                .result
                .message
                .contains("agent team-beta/ghost, which does not exist"),
            "{}",
            response(&r).result.message
        );
        let r = mutate(pod(
            json!({"warden.dev/agent": "specialist"}),
            json!({"warden.dev/mtls-mode": "strcit"}),
        ));
        assert_eq!(r.decision, Decision::Deny);
        assert!(
            response(&r)
                .result
                .message
                .contains("metadata.annotations[warden.dev/mtls-mode]"),
            "{}",
            response(&r).result.message
        );
    }
}
