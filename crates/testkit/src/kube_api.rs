//! A real Kubernetes control plane without a kubelet, the way controller-runtime's envtest
//! gives Go operators one: etcd and kube-apiserver on loopback, optionally
//! kube-controller-manager (so Deployments make ReplicaSets and Pods, which stay Pending).
//!
//! The fixture makes its own PKI with openssl (a CA, the apiserver's serving certificate for
//! 127.0.0.1/localhost, an admin client certificate in `system:masters`, a service-account
//! key) and writes a kubeconfig that both `kubectl` and Rust clients read. Dropping the
//! [`KubeApi`] stops every process and removes every file.
//!
//! Known traps handled here: Debian's etcd is too old for current apiservers (the installer
//! builds etcd from its module); `--advertise-address 127.0.0.1` because a test machine may
//! have no default route.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::deps;
use crate::openssl::{self, OpensslCa, time_from_now};
use crate::process::{Running, free_addr, spawn_logged, wait_until};

/// How long a component may take to become ready on a loaded 2-core machine.
const START_LIMIT: Duration = Duration::from_secs(90);

/// A running etcd + kube-apiserver (+ kube-controller-manager), torn down on drop.
pub struct KubeApi {
    // Processes first: fields drop in order, so they stop before their files go.
    controller_manager: Option<Running>,
    apiserver: Running,
    etcd: Running,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The apiserver's address.
    pub addr: SocketAddr,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    kcm_binary: PathBuf,
    ca: OpensslCa,
    dir: tempfile::TempDir,
}

impl KubeApi {
    /// etcd + kube-apiserver, ready to serve; `None` (after one loud line) when the installer
    /// has not built them.
    pub fn start() -> Option<Self> {
        let [etcd, apiserver, kcm, kubectl]: [PathBuf; 4] = deps::tools(
            "kube-api",
            &[
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kubectl",
            ],
        )?
        .try_into()
        .ok()?;
        let started = Instant::now();
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(dir.path());
        let etcd_url = start_etcd(&etcd, dir.path());
        let etcd_process = etcd_url.1;
        let addr = free_addr();
        let apiserver_process = start_apiserver(&apiserver, dir.path(), &pki, &etcd_url.0, addr);
        let url = format!("https://{addr}");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, pki.kubeconfig(&url)).expect("write kubeconfig");
        let api = Self {
            controller_manager: None,
            apiserver: apiserver_process,
            etcd: etcd_process,
            url,
            addr,
            kubeconfig,
            kubectl,
            kcm_binary: kcm,
            ca: pki.ca,
            dir,
        };
        api.wait_ready();
        eprintln!(
            "KubeApi: etcd + kube-apiserver ready at {} in {:?}",
            api.url,
            started.elapsed()
        );
        Some(api)
    }

    /// [`Self::start`] plus kube-controller-manager, ready once it has made the `default`
    /// ServiceAccount (its service-account controller runs).
    pub fn start_with_controller_manager() -> Option<Self> {
        let mut api = Self::start()?;
        let started = Instant::now();
        let log = api.dir.path().join("kube-controller-manager.log");
        let dir = api.dir.path();
        let mut command = Command::new(&api.kcm_binary);
        command.args([
            "--kubeconfig",
            path_str(&api.kubeconfig),
            "--leader-elect=false",
            "--secure-port=0",
            "--use-service-account-credentials=false",
            "--service-account-private-key-file",
            path_str(&dir.join("sa.key")),
            "--root-ca-file",
            path_str(&api.ca.cert_path()),
            "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-route,-service",
        ]);
        api.controller_manager = Some(spawn_logged(&mut command, &log));
        wait_until("kube-controller-manager", START_LIMIT, &log, || {
            api.kubectl(&["get", "serviceaccount", "default", "-n", "default"])
                .status
                .success()
        });
        eprintln!(
            "KubeApi: kube-controller-manager ready in {:?}",
            started.elapsed()
        );
        Some(api)
    }

    /// The admin kubeconfig (client certificate in `system:masters`), for kubectl and clients.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The CA that signed the apiserver's serving certificate and the client certificates;
    /// also the one to sign webhook serving certificates with, if a test wants one.
    pub fn ca(&self) -> &OpensslCa {
        &self.ca
    }

    /// The process ids of etcd, kube-apiserver and (if started) kube-controller-manager, so a
    /// test can check that none outlives the fixture.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.etcd.pid(), self.apiserver.pid()];
        pids.extend(self.controller_manager.as_ref().map(Running::pid));
        pids
    }

    /// The fixture's scratch directory (removed on drop), for a test's own files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs kubectl against this apiserver.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Runs kubectl and returns its stdout; panics with its stderr when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` with `yaml` on stdin; its stdout, or a panic with its stderr.
    pub fn apply(&self, yaml: &str) -> String {
        use std::io::Write;
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(yaml.as_bytes())
            .expect("write to kubectl");
        let out = child.wait_with_output().expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Applies CustomResourceDefinitions (`yaml`, as `warden install` or `crds()` print them)
    /// and waits until the apiserver serves every CRD (condition Established).
    pub fn apply_crds(&self, yaml: &str) {
        self.apply(yaml);
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ]);
    }

    fn wait_ready(&self) {
        let log = self.dir.path().join("kube-apiserver.log");
        wait_until("kube-apiserver", START_LIMIT, &log, || {
            self.kubectl(&["get", "--raw", "/readyz"]).stdout == b"ok"
        });
    }
}

/// The fixture's certificates and keys, made by openssl in `dir`.
struct Pki {
    ca: OpensslCa,
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let ca = OpensslCa::new(dir, "kube-ca", "kube.test");
        let (start, end) = (time_from_now(-60), time_from_now(24 * 3600));
        ca.sign_leaf_as(
            "apiserver",
            "/CN=kube-apiserver",
            &[
                "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc",
                "keyUsage=critical,digitalSignature,keyEncipherment",
                "extendedKeyUsage=serverAuth",
                "basicConstraints=critical,CA:FALSE",
            ],
            &start,
            &end,
        );
        ca.sign_leaf_as(
            "admin",
            "/O=system:masters/CN=warden-test-admin",
            &[
                "keyUsage=critical,digitalSignature",
                "extendedKeyUsage=clientAuth",
                "basicConstraints=critical,CA:FALSE",
            ],
            &start,
            &end,
        );
        openssl::run(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "sa.key",
            ],
        );
        openssl::run(dir, &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        Self {
            ca,
            dir: dir.to_owned(),
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn kubeconfig(&self, url: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    \
             certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {cert}\n    \
             client-key: {key}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\n    \
             namespace: default\ncurrent-context: test\n",
            ca = self.ca.cert_path().display(),
            cert = self.file("admin.pem"),
            key = self.file("admin.key"),
        )
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// etcd on two loopback ports with its data in `dir`; (client URL, process) once it answers.
fn start_etcd(binary: &Path, dir: &Path) -> (String, Running) {
    let client = format!("http://{}", free_addr());
    let peer = format!("http://{}", free_addr());
    let log = dir.join("etcd.log");
    let mut command = Command::new(binary);
    command.args([
        "--name=default",
        &format!("--data-dir={}", dir.join("etcd").display()),
        &format!("--listen-client-urls={client}"),
        &format!("--advertise-client-urls={client}"),
        &format!("--listen-peer-urls={peer}"),
        &format!("--initial-advertise-peer-urls={peer}"),
        &format!("--initial-cluster=default={peer}"),
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]);
    let process = spawn_logged(&mut command, &log);
    let health = format!("{client}/health");
    wait_until("etcd", START_LIMIT, &log, || {
        Command::new("curl")
            .args(["-s", "--max-time", "2", &health])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"health\":\"true\""))
    });
    (client, process)
}

fn start_apiserver(binary: &Path, dir: &Path, pki: &Pki, etcd: &str, addr: SocketAddr) -> Running {
    let log = dir.join("kube-apiserver.log");
    let mut command = Command::new(binary);
    command.args([
        &format!("--etcd-servers={etcd}"),
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        &format!("--secure-port={}", addr.port()),
        &format!("--cert-dir={}", dir.join("apiserver-certs").display()),
        &format!("--tls-cert-file={}", pki.file("apiserver.pem")),
        &format!("--tls-private-key-file={}", pki.file("apiserver.key")),
        &format!("--client-ca-file={}", pki.ca.cert_path().display()),
        &format!("--service-account-key-file={}", pki.file("sa.pub")),
        &format!("--service-account-signing-key-file={}", pki.file("sa.key")),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--allow-privileged=true",
        "--authorization-mode=RBAC",
        "--disable-admission-plugins=ServiceAccount",
        "--v=1",
    ]);
    spawn_logged(&mut command, &log)
}
