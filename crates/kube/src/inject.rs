//! Sidecar injection into an agent's Pod, as a pure function over the Pod's JSON.
//!
//! The Pod is edited as JSON, not through k8s-openapi's typed `Pod`, so that fields newer than
//! k8s-openapi survive the round trip. See docs/kubernetes.md for the port takeover:
//!
//! - the sidecar runs as a *native sidecar* (an init container with `restartPolicy: Always`),
//!   first in `initContainers`, so it is started before any app container;
//! - it listens on the agent's port on the **pod IP** (`$(POD_IP):<port>`), the address every
//!   other pod, Service and the gateway reach; the app listens on **127.0.0.1:<port>** and is
//!   reachable only through the sidecar. No iptables, no NET_ADMIN: an app that binds the
//!   wildcard address fails with "address in use" instead of being exposed;
//! - the app's outbound calls go to the sidecar's egress on 127.0.0.1:15001.
//!
//! Injection is idempotent: a Pod that already has the sidecar keeps it (only its
//! `MTLS_MODE` is brought up to date), so a second pass yields an empty patch.

use k8s_openapi::api::core::v1::{
    CSIVolumeSource, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    HostPathVolumeSource, ObjectFieldSelector, Probe, ResourceRequirements, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value, json};
use warden_model::MtlsMode;

/// The injected container's name; its presence marks a Pod as injected.
pub const SIDECAR_NAME: &str = "warden-sidecar";
/// The volume that carries the SPIFFE Workload API socket.
pub const SOCKET_VOLUME: &str = "spiffe-workload-api";
/// The SPIFFE CSI driver's name.
pub const CSI_DRIVER: &str = "csi.spiffe.io";
/// The sidecar's admin port (`/healthz`, `/readyz`, `/metrics`).
pub const ADMIN_PORT: u16 = 15020;
/// The sidecar's egress port on 127.0.0.1.
pub const EGRESS_PORT: u16 = 15001;
/// Env var telling the app where to listen (the sidecar owns the pod-IP side of the port).
pub const APP_ADDR_ENV: &str = "WARDEN_APP_ADDR";
/// Env var telling the app where its egress is.
pub const EGRESS_ENV: &str = "WARDEN_EGRESS_URL";

/// Where the Workload API socket comes from on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSource {
    /// The SPIFFE CSI driver (`csi.spiffe.io`) mounts the agent's socket directory.
    Csi,
    /// A hostPath directory holding the SPIRE agent's socket.
    HostPath(String),
}

/// The SPIFFE Workload API socket as every Warden container sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeSocket {
    /// Where the socket directory comes from.
    pub source: SocketSource,
    /// The socket's path inside containers, e.g. `/spiffe-workload-api/spire-agent.sock`; its
    /// directory is the mount point.
    pub path: String,
}

impl Default for SpiffeSocket {
    fn default() -> Self {
        Self {
            source: SocketSource::Csi,
            path: "/spiffe-workload-api/spire-agent.sock".into(),
        }
    }
}

impl SpiffeSocket {
    /// The mount point: the socket path's directory.
    pub fn mount_dir(&self) -> &str {
        match self.path.rsplit_once('/') {
            Some(("", _)) | None => "/",
            Some((dir, _)) => dir,
        }
    }

    /// The pod volume that provides the socket directory.
    pub fn volume(&self) -> Volume {
        let mut volume = Volume {
            name: SOCKET_VOLUME.into(),
            ..Volume::default()
        };
        match &self.source {
            SocketSource::Csi => {
                volume.csi = Some(CSIVolumeSource {
                    driver: CSI_DRIVER.into(),
                    read_only: Some(true),
                    ..CSIVolumeSource::default()
                })
            }
            SocketSource::HostPath(dir) => {
                volume.host_path = Some(HostPathVolumeSource {
                    path: dir.clone(),
                    type_: Some("Directory".into()),
                })
            }
        }
        volume
    }

    /// The read-only mount of [`Self::volume`].
    pub fn mount(&self) -> VolumeMount {
        VolumeMount {
            name: SOCKET_VOLUME.into(),
            mount_path: self.mount_dir().into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }
    }

    /// `SPIFFE_ENDPOINT_SOCKET` for containers that mount [`Self::mount`].
    pub fn endpoint_env(&self) -> EnvVar {
        env("SPIFFE_ENDPOINT_SOCKET", format!("unix://{}", self.path))
    }
}

/// What every injected sidecar shares: set once, by `warden install`'s flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarTemplate {
    /// The Warden image.
    pub image: String,
    /// The namespace of Warden's control plane (the gateway's Service and identity).
    pub control_namespace: String,
    /// The Workload API socket.
    pub socket: SpiffeSocket,
}

/// What injection needs to know about one Pod's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectionPlan {
    /// The agent's namespace.
    pub namespace: String,
    /// The agent's name.
    pub name: String,
    /// The agent's A2A port: the sidecar takes it on the pod IP.
    pub port: u16,
    /// The resolved mode.
    pub mode: MtlsMode,
    /// The mesh's trust domain.
    pub trust_domain: String,
}

/// The Pod is not shaped like a Pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct InjectError {
    /// The field.
    pub field: String,
    /// What is wrong.
    pub rule: String,
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    // Serialising k8s-openapi types to a JSON value cannot fail (string keys, no floats NaN).
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The sidecar container for `plan`.
pub fn sidecar_container(template: &SidecarTemplate, plan: &InjectionPlan) -> Container {
    let gateway = format!(
        "http://warden-gateway.{}.svc:8083",
        template.control_namespace
    );
    let gateway_id = format!(
        "spiffe://{}/ns/{}/sa/warden-gateway",
        plan.trust_domain, template.control_namespace
    );
    let args = [
        "sidecar".to_owned(),
        "--inbound".into(),
        format!("$(POD_IP):{}", plan.port),
        "--app".into(),
        format!("127.0.0.1:{}", plan.port),
        "--egress".into(),
        format!("127.0.0.1:{EGRESS_PORT}"),
        "--admin".into(),
        format!("0.0.0.0:{ADMIN_PORT}"),
        "--gateway-url".into(),
        gateway,
        "--gateway-id".into(),
        gateway_id,
        "--trust-domain".into(),
        plan.trust_domain.clone(),
        // The agent's policy, live: the snapshot the controller publishes (kube::publish).
        "--kubernetes".into(),
        "--agent".into(),
        format!("{}/{}", plan.namespace, plan.name),
        "--control-namespace".into(),
        template.control_namespace.clone(),
    ];
    Container {
        name: SIDECAR_NAME.into(),
        image: Some(template.image.clone()),
        args: Some(args.into()),
        restart_policy: Some("Always".into()),
        env: Some(vec![
            env("MTLS_MODE", plan.mode.as_str()),
            EnvVar {
                name: "POD_IP".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "status.podIP".into(),
                        api_version: None,
                    }),
                    ..EnvVarSource::default()
                }),
            },
            template.socket.endpoint_env(),
            env("WARDEN_AGENT", format!("{}/{}", plan.namespace, plan.name)),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("warden-admin".into()),
            container_port: i32::from(ADMIN_PORT),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".into()),
                port: IntOrString::Int(i32::from(ADMIN_PORT)),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(2),
            ..Probe::default()
        }),
        volume_mounts: Some(vec![template.socket.mount()]),
        security_context: Some(restricted_security_context()),
        resources: Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_owned(), Quantity("10m".into())),
                    ("memory".to_owned(), Quantity("32Mi".into())),
                ]
                .into(),
            ),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    }
}

/// Non-root, read-only root filesystem, no privilege escalation, no capabilities: what the
/// `restricted` Pod Security Standard asks of every Warden container.
pub fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(k8s_openapi::api::core::v1::SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

fn array_at<'a>(
    spec: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Vec<Value>, InjectError> {
    let slot = spec.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if slot.is_null() {
        *slot = Value::Array(Vec::new());
    }
    slot.as_array_mut().ok_or_else(|| InjectError {
        field: format!("spec.{key}"),
        rule: "must be a list".into(),
    })
}

fn named<'a>(list: &'a mut [Value], name: &str) -> Option<&'a mut Value> {
    list.iter_mut()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
}

/// Sets (or adds) the env var `name` of a container's JSON to `value`.
fn set_env(container: &mut Value, name: &str, value: &str, replace: bool) {
    let Some(object) = container.as_object_mut() else {
        return;
    };
    let list = object
        .entry("env")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !list.is_array() {
        *list = Value::Array(Vec::new());
    }
    let Some(list) = list.as_array_mut() else {
        return;
    };
    match named(list, name) {
        Some(existing) if replace => {
            *existing = to_value(&env(name, value));
        }
        Some(_) => {}
        None => list.push(to_value(&env(name, value))),
    }
}

/// Injects the sidecar described by `template` and `plan` into `pod` (a Pod as JSON).
pub fn inject(
    pod: &mut Value,
    template: &SidecarTemplate,
    plan: &InjectionPlan,
) -> Result<(), InjectError> {
    let spec = pod
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| InjectError {
            field: "spec".into(),
            rule: "a Pod needs a spec object".into(),
        })?;
    let mode = plan.mode.as_str();
    let mut present = false;
    for key in ["initContainers", "containers"] {
        if let Some(existing) = spec
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .and_then(|list| named(list, SIDECAR_NAME))
        {
            set_env(existing, "MTLS_MODE", mode, true);
            present = true;
        }
    }
    if !present {
        array_at(spec, "initContainers")?.insert(0, to_value(&sidecar_container(template, plan)));
    }
    let volumes = array_at(spec, "volumes")?;
    if named(volumes, SOCKET_VOLUME).is_none() {
        volumes.push(to_value(&template.socket.volume()));
    }
    let app_addr = format!("127.0.0.1:{}", plan.port);
    let egress = format!("http://127.0.0.1:{EGRESS_PORT}");
    for container in array_at(spec, "containers")?.iter_mut() {
        if container.get("name").and_then(Value::as_str) == Some(SIDECAR_NAME) {
            continue;
        }
        set_env(container, APP_ADDR_ENV, &app_addr, false);
        set_env(container, EGRESS_ENV, &egress, false);
    }
    Ok(())
}

/// The paths injection may change.
const PATCHED: [&str; 3] = ["/spec/initContainers", "/spec/containers", "/spec/volumes"];

/// A JSON Patch that turns `before` into `after` at the paths [`inject`] touches (each
/// changed list replaced whole): empty when nothing changed.
pub fn patch(before: &Value, after: &Value) -> json_patch::Patch {
    let ops: Vec<Value> = PATCHED
        .iter()
        .filter_map(|path| {
            let new = after.pointer(path)?;
            (before.pointer(path) != Some(new))
                .then(|| json!({"op": "add", "path": path, "value": new}))
        })
        .collect();
    // Each element is an `add` with a valid pointer and a value: always a valid patch.
    serde_json::from_value(Value::Array(ops)).unwrap_or(json_patch::Patch(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> SidecarTemplate {
        SidecarTemplate {
            image: "warden:test".into(),
            control_namespace: "warden-system".into(),
            socket: SpiffeSocket::default(),
        }
    }

    fn plan(mode: MtlsMode) -> InjectionPlan {
        InjectionPlan {
            namespace: "team-beta".into(),
            name: "specialist".into(),
            port: 8080,
            mode,
            trust_domain: "example.org".into(),
        }
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "team-beta", "labels": {"warden.dev/agent": "specialist"}},
            "spec": {
                "containers": [{"name": "app", "image": "agent:1", "env": [{"name": "KEEP", "value": "1"}],
                                "someFutureField": {"kept": true}}],
                "volumes": [{"name": "data", "emptyDir": {}}]
            }
        })
    }

    fn apply(pod: &Value, patch: &json_patch::Patch) -> Value {
        let mut out = pod.clone();
        json_patch::patch(&mut out, patch).unwrap();
        out
    }

    #[test]
    fn injects_a_native_sidecar_on_the_pod_ip_with_the_mode() {
        let before = pod();
        let mut after = before.clone();
        inject(&mut after, &template(), &plan(MtlsMode::Strict)).unwrap();
        let sidecar = &after["spec"]["initContainers"][0];
        assert_eq!(sidecar["name"], SIDECAR_NAME);
        assert_eq!(sidecar["restartPolicy"], "Always");
        let args: Vec<&str> = sidecar["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let flag = |f: &str| args[args.iter().position(|a| *a == f).unwrap() + 1];
        assert_eq!(flag("--inbound"), "$(POD_IP):8080");
        assert_eq!(flag("--app"), "127.0.0.1:8080");
        assert!(args.contains(&"--kubernetes"), "{args:?}");
        assert_eq!(flag("--control-namespace"), "warden-system");
        assert_eq!(
            flag("--gateway-id"),
            "spiffe://example.org/ns/warden-system/sa/warden-gateway"
        );
        let env = sidecar["env"].as_array().unwrap();
        assert!(env.contains(&json!({"name": "MTLS_MODE", "value": "strict"})));
        assert!(env.contains(&json!({"name": "SPIFFE_ENDPOINT_SOCKET", "value": "unix:///spiffe-workload-api/spire-agent.sock"})));
        assert_eq!(sidecar["readinessProbe"]["httpGet"]["port"], 15020);
        assert_eq!(sidecar["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(
            sidecar["volumeMounts"][0]["mountPath"],
            "/spiffe-workload-api"
        );
        let volumes = after["spec"]["volumes"].as_array().unwrap();
        assert_eq!(volumes[0]["name"], "data");
        assert_eq!(volumes[1]["csi"]["driver"], "csi.spiffe.io");
        let app = &after["spec"]["containers"][0];
        assert_eq!(
            app["someFutureField"]["kept"], true,
            "unknown fields survive"
        );
        let app_env = app["env"].as_array().unwrap();
        assert_eq!(app_env[0], json!({"name": "KEEP", "value": "1"}));
        assert!(app_env.contains(&json!({"name": APP_ADDR_ENV, "value": "127.0.0.1:8080"})));
        // The patch reproduces the injected pod.
        assert_eq!(apply(&before, &patch(&before, &after)), after);
    }

    #[test]
    fn a_second_pass_changes_nothing() {
        let mut once = pod();
        inject(&mut once, &template(), &plan(MtlsMode::Permissive)).unwrap();
        let mut twice = once.clone();
        inject(&mut twice, &template(), &plan(MtlsMode::Permissive)).unwrap();
        assert_eq!(once, twice);
        assert!(patch(&once, &twice).0.is_empty());
    }

    #[test]
    fn a_present_sidecar_gets_only_its_mode_updated() {
        let mut pod = pod();
        inject(&mut pod, &template(), &plan(MtlsMode::Permissive)).unwrap();
        let mut again = pod.clone();
        inject(&mut again, &template(), &plan(MtlsMode::Disabled)).unwrap();
        let containers = again["spec"]["initContainers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "no second sidecar");
        assert!(
            containers[0]["env"]
                .as_array()
                .unwrap()
                .contains(&json!({"name": "MTLS_MODE", "value": "disabled"}))
        );
        let p = patch(&pod, &again);
        assert_eq!(p.0.len(), 1, "only initContainers changes: {p:?}");
    }

    #[test]
    fn hostpath_socket_and_existing_init_containers() {
        let mut template = template();
        template.socket = SpiffeSocket {
            source: SocketSource::HostPath("/run/spire/sockets".into()),
            path: "/run/spire/sockets/agent.sock".into(),
        };
        let mut pod = pod();
        pod["spec"]["initContainers"] = json!([{"name": "migrate", "image": "m:1"}]);
        inject(&mut pod, &template, &plan(MtlsMode::Strict)).unwrap();
        let init = pod["spec"]["initContainers"].as_array().unwrap();
        assert_eq!(init[0]["name"], SIDECAR_NAME, "the sidecar starts first");
        assert_eq!(init[1]["name"], "migrate");
        let volume = &pod["spec"]["volumes"][1];
        assert_eq!(volume["hostPath"]["path"], "/run/spire/sockets");
        assert_eq!(
            init[0]["volumeMounts"][0]["mountPath"],
            "/run/spire/sockets"
        );
    }

    #[test]
    fn a_pod_without_a_spec_is_an_error_naming_the_field() {
        let mut pod = json!({"metadata": {}});
        let err = inject(&mut pod, &template(), &plan(MtlsMode::Strict)).unwrap_err();
        assert_eq!(err.field, "spec");
        let mut pod = json!({"spec": {"containers": "nope"}});
        let err = inject(&mut pod, &template(), &plan(MtlsMode::Strict)).unwrap_err();
        assert_eq!(err.to_string(), "spec.containers: must be a list");
    }
}
