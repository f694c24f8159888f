//! Every object a cluster needs for Warden, as data (`warden install` prints them for
//! `kubectl apply -f -`; `warden uninstall` prints their names for `kubectl delete -f -`).
//!
//! RBAC is least privilege, per component, and is the contract of what each component reads
//! and writes (docs/kubernetes.md has the table):
//! - webhook: `get` agents, `list` meshconfigs, `get` namespaces — exactly what a review reads;
//! - controller: agents (read, status patch), meshconfigs, namespaces, secrets, configmaps,
//!   the agents' Deployments/StatefulSets (read, patch the mode annotation), EndpointSlices and
//!   CSIDrivers (read), events (create, patch), its Lease (in its own namespace);
//! - gateway: agents, meshconfigs, namespaces, secrets and configmaps (`headersFrom`),
//!   EndpointSlices — read only.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, Namespace, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SecretVolumeSource, Service, ServiceAccount, ServicePort, ServiceSpec,
    Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use crate::certs::WebhookCerts;
use crate::inject::{ADMIN_PORT, SocketSource, SpiffeSocket, restricted_security_context};
use crate::mode::AGENT_LABEL;

/// The webhook server's port inside its pod.
pub const WEBHOOK_PORT: u16 = 9443;
/// The gateway's port (kagent's).
pub const GATEWAY_PORT: u16 = 8083;
/// Where the webhook's serving certificate is mounted.
pub const WEBHOOK_TLS_MOUNT: &str = "/etc/warden/webhook-tls";
/// The Secret holding the in-cluster webhook's serving certificate.
pub const WEBHOOK_TLS_SECRET: &str = "warden-webhook-tls";
/// The label every installed object carries (`kubectl get all -l` finds them).
pub const PART_OF: (&str, &str) = ("app.kubernetes.io/part-of", "warden");

/// How the apiserver reaches the webhooks and trusts their certificate.
#[derive(Debug, Clone)]
pub enum WebhookEndpoint {
    /// The in-cluster `warden-webhook` Deployment and Service; `certs` made by
    /// `warden install` (Secret + `caBundle`).
    InCluster(WebhookCerts),
    /// The in-cluster Deployment, with the certificate from cert-manager (a self-signed
    /// Issuer, a Certificate, and cert-manager's CA injection into the configurations).
    CertManager,
    /// A webhook outside the cluster (`warden webhook` on a developer machine or in tests):
    /// the configurations call `url` and trust `ca_pem`; no in-cluster webhook is deployed.
    Url {
        /// `https://HOST:PORT`.
        url: String,
        /// The CA of the serving certificate.
        ca_pem: String,
    },
}

/// `warden install`'s options.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The control plane's namespace.
    pub namespace: String,
    /// The Warden image, for every component and the injected sidecar.
    pub image: String,
    /// The trust domain when no MeshConfig sets one.
    pub trust_domain: String,
    /// The Workload API socket.
    pub socket: SpiffeSocket,
    /// The webhooks' endpoint and certificate.
    pub webhook: WebhookEndpoint,
    /// Gateway replicas.
    pub gateway_replicas: i32,
}

fn meta(name: &str, namespace: Option<&str>, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels(component)),
        ..ObjectMeta::default()
    }
}

fn labels(component: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name".to_owned(), component.to_owned()),
        (PART_OF.0.to_owned(), PART_OF.1.to_owned()),
    ]
    .into()
}

fn to_value<T: serde::Serialize>(kind_and_version: (&str, &str), object: &T) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        // apiVersion and kind first, as people write them.
        let mut ordered = serde_json::Map::new();
        ordered.insert("apiVersion".into(), kind_and_version.1.into());
        ordered.insert("kind".into(), kind_and_version.0.into());
        for (k, v) in std::mem::take(map) {
            if k != "apiVersion" && k != "kind" {
                ordered.insert(k, v);
            }
        }
        *map = ordered;
    }
    value
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |list: &[&str]| Some(list.iter().map(|s| (*s).to_owned()).collect());
    PolicyRule {
        api_groups: strings(groups),
        resources: strings(resources),
        verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

const READ: [&str; 3] = ["get", "list", "watch"];

/// The cluster-wide rules of each component.
pub fn cluster_rules(component: &str) -> Vec<PolicyRule> {
    match component {
        "warden-webhook" => vec![
            rule(&["warden.dev"], &["agents"], &["get"]),
            rule(&["warden.dev"], &["meshconfigs"], &["list"]),
            rule(&[""], &["namespaces"], &["get"]),
        ],
        "warden-controller" => vec![
            rule(&["warden.dev"], &["agents", "meshconfigs"], &READ),
            rule(
                &["warden.dev"],
                &["agents/status", "meshconfigs/status"],
                &["patch"],
            ),
            rule(&[""], &["namespaces", "secrets", "configmaps"], &READ),
            rule(
                &["apps"],
                &["deployments", "statefulsets"],
                &["get", "list", "watch", "patch"],
            ),
            rule(&["discovery.k8s.io"], &["endpointslices"], &READ),
            rule(&["storage.k8s.io"], &["csidrivers"], &READ),
            rule(&["", "events.k8s.io"], &["events"], &["create", "patch"]),
        ],
        "warden-gateway" => vec![
            rule(&["warden.dev"], &["agents", "meshconfigs"], &READ),
            rule(&[""], &["namespaces", "secrets", "configmaps"], &READ),
            rule(&["discovery.k8s.io"], &["endpointslices"], &READ),
        ],
        _ => Vec::new(),
    }
}

fn rbac(opts: &InstallOptions, component: &str, out: &mut Vec<Value>) {
    let ns = opts.namespace.as_str();
    out.push(to_value(
        ("ServiceAccount", "v1"),
        &ServiceAccount {
            metadata: meta(component, Some(ns), component),
            automount_service_account_token: Some(true),
            ..ServiceAccount::default()
        },
    ));
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: component.into(),
        namespace: Some(ns.into()),
        api_group: None,
    };
    out.push(to_value(
        ("ClusterRole", "rbac.authorization.k8s.io/v1"),
        &ClusterRole {
            metadata: meta(component, None, component),
            rules: Some(cluster_rules(component)),
            ..ClusterRole::default()
        },
    ));
    out.push(to_value(
        ("ClusterRoleBinding", "rbac.authorization.k8s.io/v1"),
        &ClusterRoleBinding {
            metadata: meta(component, None, component),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: component.into(),
            },
            subjects: Some(vec![subject.clone()]),
        },
    ));
    if component == "warden-controller" {
        // Leader election: its own Lease, in its own namespace only.
        out.push(to_value(
            ("Role", "rbac.authorization.k8s.io/v1"),
            &Role {
                metadata: meta(component, Some(ns), component),
                rules: Some(vec![rule(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["get", "create", "update"],
                )]),
            },
        ));
        out.push(to_value(
            ("RoleBinding", "rbac.authorization.k8s.io/v1"),
            &RoleBinding {
                metadata: meta(component, Some(ns), component),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Role".into(),
                    name: component.into(),
                },
                subjects: Some(vec![subject]),
            },
        ));
    }
}

fn http_probe(path: &str, port: u16, https: bool) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(port)),
            scheme: https.then(|| "HTTPS".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        ..Probe::default()
    }
}

struct Component<'a> {
    name: &'a str,
    args: Vec<String>,
    ports: Vec<(&'a str, u16)>,
    probe: Probe,
    replicas: i32,
    socket: bool,
    tls_secret: bool,
}

fn deployment(opts: &InstallOptions, c: Component<'_>) -> Value {
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    let mut env = vec![EnvVar {
        name: "RUST_LOG".into(),
        value: Some("info".into()),
        value_from: None,
    }];
    if c.socket {
        mounts.push(opts.socket.mount());
        volumes.push(opts.socket.volume());
        env.push(opts.socket.endpoint_env());
    }
    if c.tls_secret {
        mounts.push(VolumeMount {
            name: "webhook-tls".into(),
            mount_path: WEBHOOK_TLS_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "webhook-tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(WEBHOOK_TLS_SECRET.into()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    let selector: BTreeMap<String, String> =
        [("app.kubernetes.io/name".to_owned(), c.name.to_owned())].into();
    let container = Container {
        name: c.name.trim_start_matches("warden-").into(),
        image: Some(opts.image.clone()),
        args: Some(c.args),
        env: Some(env),
        ports: Some(
            c.ports
                .iter()
                .map(|(name, port)| ContainerPort {
                    name: Some((*name).into()),
                    container_port: i32::from(*port),
                    ..ContainerPort::default()
                })
                .collect(),
        ),
        readiness_probe: Some(c.probe),
        volume_mounts: Some(mounts),
        security_context: Some(restricted_security_context()),
        ..Container::default()
    };
    to_value(
        ("Deployment", "apps/v1"),
        &Deployment {
            metadata: meta(c.name, Some(&opts.namespace), c.name),
            spec: DeploymentSpec {
                replicas: Some(c.replicas),
                selector: LabelSelector {
                    match_labels: Some(selector),
                    ..LabelSelector::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(c.name)),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        service_account_name: Some(c.name.into()),
                        containers: vec![container],
                        volumes: Some(volumes),
                        security_context: Some(PodSecurityContext {
                            run_as_non_root: Some(true),
                            ..PodSecurityContext::default()
                        }),
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            },
            ..Deployment::default()
        },
    )
}

fn service(opts: &InstallOptions, name: &str, port: u16, target: u16, port_name: &str) -> Value {
    to_value(
        ("Service", "v1"),
        &Service {
            metadata: meta(name, Some(&opts.namespace), name),
            spec: Some(ServiceSpec {
                selector: Some([("app.kubernetes.io/name".to_owned(), name.to_owned())].into()),
                ports: Some(vec![ServicePort {
                    name: Some(port_name.into()),
                    port: i32::from(port),
                    target_port: Some(IntOrString::Int(i32::from(target))),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        },
    )
}

/// The flags `warden webhook` needs to inject sidecars the way these options say.
pub fn webhook_injection_args(opts: &InstallOptions) -> Vec<String> {
    let mut args = vec![
        "--image".to_owned(),
        opts.image.clone(),
        "--control-namespace".into(),
        opts.namespace.clone(),
        "--trust-domain".into(),
        opts.trust_domain.clone(),
        "--spiffe-socket".into(),
        opts.socket.path.clone(),
    ];
    if let SocketSource::HostPath(dir) = &opts.socket.source {
        args.extend(["--spiffe-host-dir".to_owned(), dir.clone()]);
    }
    args
}

/// The service DNS names the in-cluster webhook's certificate must carry.
pub fn webhook_service_hosts(namespace: &str) -> Vec<String> {
    vec![
        format!("warden-webhook.{namespace}.svc"),
        format!("warden-webhook.{namespace}.svc.cluster.local"),
    ]
}

fn client_config(opts: &InstallOptions, path: &str) -> WebhookClientConfig {
    match &opts.webhook {
        WebhookEndpoint::Url { url, ca_pem } => WebhookClientConfig {
            url: Some(format!("{}{path}", url.trim_end_matches('/'))),
            ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
            service: None,
        },
        endpoint => WebhookClientConfig {
            service: Some(ServiceReference {
                name: "warden-webhook".into(),
                namespace: opts.namespace.clone(),
                path: Some(path.into()),
                port: Some(443),
            }),
            ca_bundle: match endpoint {
                WebhookEndpoint::InCluster(certs) => {
                    Some(ByteString(certs.ca_pem.as_bytes().to_vec()))
                }
                _ => None,
            },
            url: None,
        },
    }
}

fn rules(
    group: &str,
    version: &str,
    resources: &[&str],
    ops: &[&str],
    scope: &str,
) -> Vec<RuleWithOperations> {
    vec![RuleWithOperations {
        api_groups: Some(vec![group.into()]),
        api_versions: Some(vec![version.into()]),
        operations: Some(ops.iter().map(|s| (*s).to_owned()).collect()),
        resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
        scope: Some(scope.into()),
    }]
}

fn webhook_meta(opts: &InstallOptions, name: &str) -> ObjectMeta {
    let mut metadata = meta(name, None, "warden-webhook");
    if matches!(opts.webhook, WebhookEndpoint::CertManager) {
        metadata.annotations = Some(
            [(
                "cert-manager.io/inject-ca-from".to_owned(),
                format!("{}/warden-webhook", opts.namespace),
            )]
            .into(),
        );
    }
    metadata
}

/// The groups and versions whose Agents the validating webhook checks.
const WARDEN: (&str, &str) = ("warden.dev", "v1alpha1");
const KAGENT: (&str, &str) = ("kagent.dev", "v1alpha2");

fn validating(opts: &InstallOptions) -> Value {
    let hook = |name: &str, (group, version): (&str, &str), resource: &str, scope: &str| {
        ValidatingWebhook {
            name: name.into(),
            client_config: client_config(opts, "/validate"),
            rules: Some(rules(
                group,
                version,
                &[resource],
                &["CREATE", "UPDATE"],
                scope,
            )),
            failure_policy: Some("Fail".into()),
            side_effects: "None".into(),
            admission_review_versions: vec!["v1".into()],
            timeout_seconds: Some(10),
            match_policy: Some("Equivalent".into()),
            ..ValidatingWebhook::default()
        }
    };
    to_value(
        (
            "ValidatingWebhookConfiguration",
            "admissionregistration.k8s.io/v1",
        ),
        &ValidatingWebhookConfiguration {
            metadata: webhook_meta(opts, "warden-validating"),
            webhooks: Some(vec![
                hook("agents.validate.warden.dev", WARDEN, "agents", "Namespaced"),
                hook(
                    "meshconfigs.validate.warden.dev",
                    WARDEN,
                    "meshconfigs",
                    "Cluster",
                ),
                // kagent's Agents are enforced like Warden's own (no effect without kagent).
                hook("agents.validate.kagent.dev", KAGENT, "agents", "Namespaced"),
            ]),
        },
    )
}

fn mutating(opts: &InstallOptions) -> Value {
    to_value(
        (
            "MutatingWebhookConfiguration",
            "admissionregistration.k8s.io/v1",
        ),
        &MutatingWebhookConfiguration {
            metadata: webhook_meta(opts, "warden-sidecar-injector"),
            webhooks: Some(vec![MutatingWebhook {
                name: "sidecar.inject.warden.dev".into(),
                client_config: client_config(opts, "/mutate"),
                rules: Some(rules("", "v1", &["pods"], &["CREATE"], "Namespaced")),
                // Only agents' pods reach the webhook; the control plane and kube-system never.
                object_selector: Some(LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: AGENT_LABEL.into(),
                        operator: "Exists".into(),
                        values: None,
                    }]),
                    ..LabelSelector::default()
                }),
                namespace_selector: Some(LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "kubernetes.io/metadata.name".into(),
                        operator: "NotIn".into(),
                        values: Some(vec!["kube-system".into(), opts.namespace.clone()]),
                    }]),
                    ..LabelSelector::default()
                }),
                // An agent's pod never runs without its sidecar.
                failure_policy: Some("Fail".into()),
                reinvocation_policy: Some("IfNeeded".into()),
                side_effects: "None".into(),
                admission_review_versions: vec!["v1".into()],
                timeout_seconds: Some(10),
                match_policy: Some("Equivalent".into()),
                match_conditions: None,
            }]),
        },
    )
}

fn cert_manager(opts: &InstallOptions) -> Vec<Value> {
    let ns = &opts.namespace;
    vec![
        json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
            "metadata": {"name": "warden-selfsigned", "namespace": ns, "labels": labels("warden-webhook")},
            "spec": {"selfSigned": {}}
        }),
        json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "warden-webhook", "namespace": ns, "labels": labels("warden-webhook")},
            "spec": {
                "secretName": WEBHOOK_TLS_SECRET,
                "dnsNames": webhook_service_hosts(ns),
                "issuerRef": {"name": "warden-selfsigned", "kind": "Issuer"}
            }
        }),
    ]
}

/// Every object, in an order `kubectl apply` accepts in one pass (CRDs and the namespace
/// first, the webhook configurations last so that nothing Warden installs is itself
/// reviewed by a webhook that is not running yet).
pub fn objects(opts: &InstallOptions) -> Vec<Value> {
    let ns = opts.namespace.as_str();
    let mut out: Vec<Value> = crate::crd::crds()
        .iter()
        .map(|crd| {
            let mut crd = crd.clone();
            crd.metadata.labels = Some(labels("warden"));
            to_value(
                ("CustomResourceDefinition", "apiextensions.k8s.io/v1"),
                &crd,
            )
        })
        .collect();
    out.push(to_value(
        ("Namespace", "v1"),
        &Namespace {
            metadata: meta(ns, None, "warden"),
            ..Namespace::default()
        },
    ));
    let in_cluster_webhook = !matches!(opts.webhook, WebhookEndpoint::Url { .. });
    for component in ["warden-controller", "warden-gateway"] {
        rbac(opts, component, &mut out);
    }
    if in_cluster_webhook {
        rbac(opts, "warden-webhook", &mut out);
    }
    let td = opts.trust_domain.clone();
    out.push(deployment(
        opts,
        Component {
            name: "warden-controller",
            // The trust domain comes from the MeshConfig; the pod's hostname names it in
            // the Lease; SPIFFE_ENDPOINT_SOCKET is its Workload API.
            args: vec![
                "controller".into(),
                "--namespace".into(),
                ns.to_owned(),
                "--admin".into(),
                format!("0.0.0.0:{ADMIN_PORT}"),
            ],
            ports: vec![("admin", ADMIN_PORT)],
            probe: http_probe("/readyz", ADMIN_PORT, false),
            replicas: 1,
            socket: true,
            tls_secret: false,
        },
    ));
    out.push(deployment(
        opts,
        Component {
            name: "warden-gateway",
            args: vec![
                "gateway".into(),
                "--kubernetes".into(),
                "--listen".into(),
                format!("0.0.0.0:{GATEWAY_PORT}"),
                "--admin".into(),
                format!("0.0.0.0:{ADMIN_PORT}"),
                "--trust-domain".into(),
                td,
            ],
            ports: vec![("a2a", GATEWAY_PORT), ("admin", ADMIN_PORT)],
            probe: http_probe("/readyz", ADMIN_PORT, false),
            replicas: opts.gateway_replicas,
            socket: true,
            tls_secret: false,
        },
    ));
    out.push(service(
        opts,
        "warden-gateway",
        GATEWAY_PORT,
        GATEWAY_PORT,
        "a2a",
    ));
    match &opts.webhook {
        WebhookEndpoint::InCluster(certs) => out.push(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": WEBHOOK_TLS_SECRET, "namespace": ns, "labels": labels("warden-webhook")},
            "stringData": {"tls.crt": certs.cert_pem, "tls.key": certs.key_pem, "ca.crt": certs.ca_pem}
        })),
        WebhookEndpoint::CertManager => out.extend(cert_manager(opts)),
        WebhookEndpoint::Url { .. } => {}
    }
    if in_cluster_webhook {
        let mut args = vec![
            "webhook".to_owned(),
            "--listen".into(),
            format!("0.0.0.0:{WEBHOOK_PORT}"),
            "--tls-dir".into(),
            WEBHOOK_TLS_MOUNT.into(),
        ];
        args.extend(webhook_injection_args(opts));
        out.push(deployment(
            opts,
            Component {
                name: "warden-webhook",
                args,
                ports: vec![("https", WEBHOOK_PORT)],
                probe: http_probe("/readyz", WEBHOOK_PORT, true),
                replicas: 2,
                socket: false,
                tls_secret: true,
            },
        ));
        out.push(service(opts, "warden-webhook", 443, WEBHOOK_PORT, "https"));
    }
    out.push(validating(opts));
    out.push(mutating(opts));
    out
}

/// What `warden uninstall` removes: every installed object by kind and name, webhook
/// configurations first (so nothing is refused while the rest goes), the CRDs last — and
/// only when `keep_crds` is false, since deleting a CRD deletes every Agent.
pub fn uninstall_objects(opts: &InstallOptions, keep_crds: bool) -> Vec<Value> {
    objects(opts)
        .iter()
        .rev()
        .filter(|o| !(keep_crds && o["kind"] == "CustomResourceDefinition"))
        .map(|o| {
            let mut metadata = serde_json::Map::new();
            metadata.insert("name".into(), o["metadata"]["name"].clone());
            if let Some(ns) = o["metadata"].get("namespace") {
                metadata.insert("namespace".into(), ns.clone());
            }
            json!({"apiVersion": o["apiVersion"], "kind": o["kind"], "metadata": metadata})
        })
        .collect()
}

/// Objects as one multi-document YAML stream.
pub fn to_yaml(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml_ng::to_string(o).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(webhook: WebhookEndpoint) -> InstallOptions {
        InstallOptions {
            namespace: "warden-system".into(),
            image: "warden:test".into(),
            trust_domain: "example.org".into(),
            socket: SpiffeSocket::default(),
            webhook,
            gateway_replicas: 1,
        }
    }

    fn certs() -> WebhookCerts {
        WebhookCerts {
            ca_pem: "CA PEM".into(),
            cert_pem: "CERT".into(),
            key_pem: "KEY".into(),
        }
    }

    fn kinds(objects: &[Value]) -> Vec<String> {
        objects
            .iter()
            .map(|o| {
                format!(
                    "{} {}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    #[test]
    fn in_cluster_install_has_every_object_in_apply_order() {
        let objects = objects(&options(WebhookEndpoint::InCluster(certs())));
        let names = kinds(&objects);
        assert_eq!(
            &names[..3],
            [
                "CustomResourceDefinition agents.warden.dev",
                "CustomResourceDefinition meshconfigs.warden.dev",
                "Namespace warden-system"
            ]
        );
        assert_eq!(
            &names[names.len() - 2..],
            [
                "ValidatingWebhookConfiguration warden-validating",
                "MutatingWebhookConfiguration warden-sidecar-injector"
            ]
        );
        for expected in [
            "ServiceAccount warden-controller",
            "ServiceAccount warden-gateway",
            "ServiceAccount warden-webhook",
            "ClusterRole warden-webhook",
            "ClusterRoleBinding warden-webhook",
            "Role warden-controller",
            "Deployment warden-controller",
            "Deployment warden-gateway",
            "Deployment warden-webhook",
            "Service warden-gateway",
            "Service warden-webhook",
            "Secret warden-webhook-tls",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
        for o in &objects {
            assert_eq!(
                o["metadata"]["labels"][PART_OF.0], PART_OF.1,
                "{}",
                o["kind"]
            );
        }
        let gateway = find(&objects, "Service", "warden-gateway");
        assert_eq!(gateway["spec"]["ports"][0]["port"], 8083);
        let secret = find(&objects, "Secret", WEBHOOK_TLS_SECRET);
        assert_eq!(secret["stringData"]["tls.crt"], "CERT");
        let validating = find(
            &objects,
            "ValidatingWebhookConfiguration",
            "warden-validating",
        );
        for hook in validating["webhooks"].as_array().unwrap() {
            assert_eq!(hook["failurePolicy"], "Fail");
            assert_eq!(hook["sideEffects"], "None");
            assert_eq!(hook["clientConfig"]["service"]["name"], "warden-webhook");
            assert_eq!(hook["clientConfig"]["service"]["path"], "/validate");
            // caBundle is base64 of the CA PEM.
            assert_eq!(hook["clientConfig"]["caBundle"], "Q0EgUEVN");
        }
        let mutating = find(
            &objects,
            "MutatingWebhookConfiguration",
            "warden-sidecar-injector",
        );
        let hook = &mutating["webhooks"][0];
        assert_eq!(
            hook["objectSelector"]["matchExpressions"][0]["key"],
            AGENT_LABEL
        );
        assert_eq!(
            hook["namespaceSelector"]["matchExpressions"][0]["values"],
            serde_json::json!(["kube-system", "warden-system"])
        );
        let webhook = find(&objects, "Deployment", "warden-webhook");
        let args = webhook["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        assert!(
            args.contains("--tls-dir")
                && args.contains("--trust-domain")
                && args.contains("example.org"),
            "{args}"
        );
        let controller = find(&objects, "Deployment", "warden-controller");
        let volume = &controller["spec"]["template"]["spec"]["volumes"][0];
        assert_eq!(volume["csi"]["driver"], "csi.spiffe.io");
    }

    #[test]
    fn an_out_of_cluster_webhook_gets_the_url_and_no_deployment() {
        let objects = objects(&options(WebhookEndpoint::Url {
            url: "https://127.0.0.1:9443".into(),
            ca_pem: "CA PEM".into(),
        }));
        let names = kinds(&objects);
        for absent in [
            "Deployment warden-webhook",
            "Service warden-webhook",
            "Secret warden-webhook-tls",
            "ServiceAccount warden-webhook",
        ] {
            assert!(!names.iter().any(|n| n == absent), "{absent} present");
        }
        let validating = find(
            &objects,
            "ValidatingWebhookConfiguration",
            "warden-validating",
        );
        assert_eq!(
            validating["webhooks"][0]["clientConfig"]["url"],
            "https://127.0.0.1:9443/validate"
        );
        assert!(
            validating["webhooks"][0]["clientConfig"]
                .get("service")
                .is_none()
        );
        let mutating = find(
            &objects,
            "MutatingWebhookConfiguration",
            "warden-sidecar-injector",
        );
        assert_eq!(
            mutating["webhooks"][0]["clientConfig"]["url"],
            "https://127.0.0.1:9443/mutate"
        );
    }

    #[test]
    fn cert_manager_injects_the_ca() {
        let objects = objects(&options(WebhookEndpoint::CertManager));
        let certificate = find(&objects, "Certificate", "warden-webhook");
        assert_eq!(certificate["spec"]["secretName"], WEBHOOK_TLS_SECRET);
        assert_eq!(
            certificate["spec"]["dnsNames"][0],
            "warden-webhook.warden-system.svc"
        );
        find(&objects, "Issuer", "warden-selfsigned");
        let validating = find(
            &objects,
            "ValidatingWebhookConfiguration",
            "warden-validating",
        );
        assert_eq!(
            validating["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "warden-system/warden-webhook"
        );
        assert!(
            validating["webhooks"][0]["clientConfig"]
                .get("caBundle")
                .is_none()
        );
    }

    #[test]
    fn rbac_is_least_privilege() {
        let objects = objects(&options(WebhookEndpoint::InCluster(certs())));
        for o in objects
            .iter()
            .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
        {
            for rule in o["rules"].as_array().unwrap() {
                let text = rule.to_string();
                assert!(!text.contains('*'), "wildcard in {text}");
                for verb in [
                    "delete",
                    "deletecollection",
                    "escalate",
                    "bind",
                    "impersonate",
                ] {
                    assert!(
                        !text.contains(&format!("\"{verb}\"")),
                        "{verb} in {}: {text}",
                        o["metadata"]["name"]
                    );
                }
            }
        }
        let webhook = find(&objects, "ClusterRole", "warden-webhook");
        assert_eq!(
            webhook["rules"],
            serde_json::json!([
                {"apiGroups": ["warden.dev"], "resources": ["agents"], "verbs": ["get"]},
                {"apiGroups": ["warden.dev"], "resources": ["meshconfigs"], "verbs": ["list"]},
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
            ])
        );
        let gateway = find(&objects, "ClusterRole", "warden-gateway").to_string();
        assert!(
            !gateway.contains("patch")
                && !gateway.contains("create")
                && !gateway.contains("update"),
            "the gateway only reads: {gateway}"
        );
    }

    #[test]
    fn uninstall_names_what_install_made_in_reverse() {
        let opts = options(WebhookEndpoint::InCluster(certs()));
        let installed = kinds(&objects(&opts));
        let removed = kinds(&uninstall_objects(&opts, false));
        let mut reversed = installed.clone();
        reversed.reverse();
        assert_eq!(removed, reversed);
        let kept = kinds(&uninstall_objects(&opts, true));
        assert_eq!(kept.len(), installed.len() - 2);
        assert!(
            !kept
                .iter()
                .any(|k| k.starts_with("CustomResourceDefinition"))
        );
        for o in uninstall_objects(&opts, false) {
            assert!(
                o.get("spec").is_none() && o.get("stringData").is_none(),
                "only names: {o}"
            );
        }
    }

    #[test]
    fn yaml_stream_round_trips() {
        let objects = objects(&options(WebhookEndpoint::InCluster(certs())));
        let yaml = to_yaml(&objects);
        let back: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        assert_eq!(back, objects);
    }
}
