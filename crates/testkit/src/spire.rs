//! A real SPIRE deployment for tests: `spire-server` on loopback and its admin Unix socket,
//! one `spire-agent` attested with a join token, the `unix` workload attestor, registration
//! entries made with `spire-server entry create`, and the bundle in SPIFFE format.
//!
//! Workloads are told apart by uid, as on a real node: [`as_uid`] runs a program under
//! `setpriv` as its own uid (the tests run as root). Such a program, its files and the agent
//! socket must be reachable by that uid, so the fixture's directory is world-searchable
//! (0755) and [`Spire::readable_copy`] puts binaries where any uid can run them.
//!
//! Dropping the [`Spire`] stops the agent and the server and removes every file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::deps;
use crate::process::{Running, free_addr, spawn_logged, wait_until};

const START_LIMIT: Duration = Duration::from_secs(60);

/// One registration entry: the SPIFFE ID that a workload running as `uid` gets.
#[derive(Clone, Debug)]
pub struct Entry {
    pub spiffe_id: String,
    pub uid: u32,
    /// X.509-SVID lifetime; the agent rotates at half of it.
    pub x509_ttl: Duration,
}

impl Entry {
    pub fn new(spiffe_id: &str, uid: u32, x509_ttl: Duration) -> Self {
        Self {
            spiffe_id: spiffe_id.to_owned(),
            uid,
            x509_ttl,
        }
    }
}

/// A running SPIRE server and agent, torn down on drop.
pub struct Spire {
    // Processes first: fields drop in order, so they stop before their files go.
    agent: Option<Running>,
    _server: Running,
    server_bin: PathBuf,
    agent_bin: PathBuf,
    /// The trust domain, e.g. `warden.local`.
    pub trust_domain: String,
    /// `spiffe://<td>/spire/agent/join_token/<token>`: the parent of every entry.
    pub agent_id: String,
    dir: tempfile::TempDir,
}

impl Spire {
    /// Server, then the entries, then the agent (so that its first sync brings them), ready;
    /// `None` (after one loud line) when the installer has not built SPIRE.
    pub fn start(trust_domain: &str, entries: &[Entry]) -> Option<Self> {
        let [server_bin, agent_bin]: [PathBuf; 2] =
            deps::tools("spire", &["spire-server", "spire-agent"])?
                .try_into()
                .ok()?;
        if !running_as_root() {
            deps::skip(
                "spire",
                "not root: workloads run as their own uids (setpriv) for the unix attestor",
            );
            return None;
        }
        let started = Instant::now();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod fixture dir");
        let server = start_server(&server_bin, dir.path(), trust_domain);
        let mut spire = Self {
            agent: None,
            _server: server,
            server_bin,
            agent_bin,
            trust_domain: trust_domain.to_owned(),
            agent_id: String::new(),
            dir,
        };
        let token = spire.generate_token();
        spire.agent_id = format!("spiffe://{trust_domain}/spire/agent/join_token/{token}");
        for entry in entries {
            spire.register(entry);
        }
        std::fs::write(
            spire.dir.path().join("agent.conf"),
            agent_config(spire.dir.path(), trust_domain, &token, &spire.server_port()),
        )
        .expect("write agent.conf");
        // Copied now, before any test thread forks (see readable_copy).
        spire.readable_copy(&spire.agent_bin.clone());
        spire.start_agent();
        eprintln!(
            "Spire: server + agent ready ({} entries) in {:?}",
            entries.len(),
            started.elapsed()
        );
        Some(spire)
    }

    /// The agent's Workload API socket.
    pub fn agent_socket(&self) -> PathBuf {
        self.dir.path().join("agent/api.sock")
    }

    /// The Workload API endpoint in SPIFFE form, `unix:///…/api.sock`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.agent_socket().display())
    }

    /// The server's admin API socket (what `spire-server entry …` talks to).
    pub fn server_socket(&self) -> PathBuf {
        self.dir.path().join("server/api.sock")
    }

    /// The fixture's directory (0755, removed on drop), for a test's own files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A directory only `uid` can use (0700, owned by it), for a workload's own files.
    pub fn workload_dir(&self, name: &str, uid: u32) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir workload dir");
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).expect("chown workload dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod workload dir");
        dir
    }

    /// `binary` copied into the fixture's `bin/` (0755), where any uid can run it (a
    /// `target/` under root's home may not be reachable by a workload uid).
    ///
    /// A binary any uid can already reach is used where it is: writing a copy while other
    /// threads fork can leave the copy open for writing in a child, and exec then fails
    /// with ETXTBSY. For the same reason a copy is made once and never written over.
    pub fn readable_copy(&self, binary: &Path) -> PathBuf {
        readable_copy(binary, self.dir.path())
    }

    /// Runs `spire-server ARGS -socketPath <server socket>`; panics with its output on failure.
    pub fn server_cli(&self, args: &[&str]) -> String {
        let out = Command::new(&self.server_bin)
            .args(args)
            .arg("-socketPath")
            .arg(self.server_socket())
            .output()
            .expect("run spire-server");
        ok_stdout("spire-server", args, out)
    }

    /// `spire-server entry create` for `entry`, parented to the agent, JWT-SVIDs for 5 min.
    pub fn register(&self, entry: &Entry) {
        self.server_cli(&[
            "entry",
            "create",
            "-parentID",
            &self.agent_id,
            "-spiffeID",
            &entry.spiffe_id,
            "-selector",
            &format!("unix:uid:{}", entry.uid),
            "-x509SVIDTTL",
            &entry.x509_ttl.as_secs().to_string(),
            "-jwtSVIDTTL",
            "300",
        ]);
    }

    /// The trust bundle in SPIFFE format (JWKS with `x509-svid` and `jwt-svid` keys), as
    /// `spire-server bundle show -format spiffe` prints it.
    pub fn bundle_spiffe(&self) -> String {
        self.server_cli(&["bundle", "show", "-format", "spiffe"])
    }

    /// The trust bundle as PEM.
    pub fn bundle_pem(&self) -> String {
        self.server_cli(&["bundle", "show", "-format", "pem"])
    }

    /// Runs `spire-agent api ARGS -socketPath <agent socket>` as `uid` (so the agent attests
    /// that uid); its output.
    pub fn agent_api_as(&self, uid: u32, args: &[&str]) -> Output {
        let agent = self.readable_copy(&self.agent_bin);
        as_uid(uid, &agent)
            .arg("api")
            .args(args)
            .arg("-socketPath")
            .arg(self.agent_socket())
            .output()
            .expect("run spire-agent api")
    }

    /// A JWT-SVID for `audience` minted by the agent for the workload running as `uid`.
    pub fn fetch_jwt(&self, uid: u32, audience: &str) -> String {
        let out = self.agent_api_as(uid, &["fetch", "jwt", "-audience", audience]);
        let text = ok_stdout("spire-agent api fetch jwt", &[], out);
        // "token(spiffe://…):\n\t<jwt>\nbundle(…):…": the line after the first "token(".
        let mut lines = text.lines().skip_while(|l| !l.starts_with("token("));
        lines.next();
        lines
            .next()
            .map(|l| l.trim().to_owned())
            .unwrap_or_else(|| panic!("no token in: {text}"))
    }

    /// Writes `uid`'s X.509-SVID into `dir` (owned by `uid`) as `svid.0.pem`,
    /// `svid.0.key` and `bundle.0.pem`, the way `spire-agent api fetch x509 -write` does.
    pub fn fetch_x509(&self, uid: u32, dir: &Path) {
        let out = self.agent_api_as(uid, &["fetch", "x509", "-write", path_str(dir)]);
        ok_stdout("spire-agent api fetch x509", &[], out);
    }

    /// Starts (or restarts) the agent and waits until its Workload API is healthy.
    pub fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "the agent is already running");
        let log = self.dir.path().join("agent.log");
        let mut command = Command::new(&self.agent_bin);
        command
            .args(["run", "-config"])
            .arg(self.dir.path().join("agent.conf"));
        self.agent = Some(spawn_logged(&mut command, &log));
        let socket = self.agent_socket();
        let bin = self.agent_bin.clone();
        wait_until("spire-agent", START_LIMIT, &log, || {
            Command::new(&bin)
                .args(["healthcheck", "-shallow", "-socketPath"])
                .arg(&socket)
                .output()
                .is_ok_and(|o| o.status.success())
        });
    }

    /// Stops the agent (SIGTERM, then waits); workloads keep what they hold.
    pub fn stop_agent(&mut self) {
        let agent = self.agent.take().expect("the agent is running");
        drop(agent);
    }

    fn generate_token(&self) -> String {
        let out = self.server_cli(&["token", "generate", "-ttl", "600"]);
        out.lines()
            .find_map(|l| l.strip_prefix("Token: "))
            .unwrap_or_else(|| panic!("unexpected token output: {out}"))
            .trim()
            .to_owned()
    }

    fn server_port(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.port")).expect("server.port")
    }
}

/// `binary` copied into `dir/bin` (0755; `dir` must be searchable by all), where any uid can
/// run it, unless any uid can already run it where it is. See [`Spire::readable_copy`].
pub fn readable_copy(binary: &Path, dir: &Path) -> PathBuf {
    if world_executable(binary) {
        return binary.to_owned();
    }
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    let name = binary.file_name().expect("a file name");
    let copy = bin.join(name);
    if copy.exists() {
        return copy;
    }
    let tmp = bin.join(format!(".{}.new", name.to_string_lossy()));
    std::fs::copy(binary, &tmp).unwrap_or_else(|e| panic!("copy {}: {e}", binary.display()));
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod copy");
    std::fs::rename(&tmp, &copy).expect("rename copy");
    copy
}

/// `program` run as `uid`/`uid` with no supplementary groups, through `setpriv`.
pub fn as_uid(uid: u32, program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid", &uid.to_string(), "--regid", &uid.to_string()])
        .args(["--clear-groups", "--"])
        .arg(program);
    command
}

/// Whether every uid can run `binary`: the file and each directory above it are `o+x`.
fn world_executable(binary: &Path) -> bool {
    let Ok(binary) = binary.canonicalize() else {
        return false;
    };
    binary
        .ancestors()
        .all(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// Whether the tests run as root (needed to run workloads as other uids).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn ok_stdout(what: &str, args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn start_server(binary: &Path, dir: &Path, trust_domain: &str) -> Running {
    let port = free_addr().port().to_string();
    std::fs::write(dir.join("server.port"), &port).expect("write server.port");
    let config = dir.join("server.conf");
    std::fs::write(&config, server_config(dir, trust_domain, &port)).expect("server.conf");
    let log = dir.join("server.log");
    let mut command = Command::new(binary);
    command.args(["run", "-config"]).arg(&config);
    let server = spawn_logged(&mut command, &log);
    let socket = dir.join("server/api.sock");
    wait_until("spire-server", START_LIMIT, &log, || {
        Command::new(binary)
            .args(["healthcheck", "-socketPath"])
            .arg(&socket)
            .output()
            .is_ok_and(|o| o.status.success())
    });
    server
}

fn server_config(dir: &Path, trust_domain: &str, port: &str) -> String {
    let d = dir.display();
    format!(
        r#"server {{
  bind_address = "127.0.0.1"
  bind_port = "{port}"
  socket_path = "{d}/server/api.sock"
  trust_domain = "{trust_domain}"
  data_dir = "{d}/server"
  log_level = "INFO"
  ca_key_type = "ec-p256"
  ca_ttl = "24h"
  default_x509_svid_ttl = "1h"
  default_jwt_svid_ttl = "5m"
}}
plugins {{
  DataStore "sql" {{
    plugin_data {{
      database_type = "sqlite3"
      connection_string = "{d}/server/datastore.sqlite3"
    }}
  }}
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
  KeyManager "memory" {{
    plugin_data {{}}
  }}
}}
"#
    )
}

/// The agent keeps its own SVID and keys on disk, so that a restarted agent resumes without
/// the (single-use) join token.
fn agent_config(dir: &Path, trust_domain: &str, token: &str, port: &str) -> String {
    let d = dir.display();
    format!(
        r#"agent {{
  data_dir = "{d}/agent"
  log_level = "INFO"
  server_address = "127.0.0.1"
  server_port = "{port}"
  socket_path = "{d}/agent/api.sock"
  trust_domain = "{trust_domain}"
  insecure_bootstrap = true
  join_token = "{token}"
}}
plugins {{
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
  KeyManager "disk" {{
    plugin_data {{
      directory = "{d}/agent"
    }}
  }}
  WorkloadAttestor "unix" {{
    plugin_data {{}}
  }}
}}
"#
    )
}
