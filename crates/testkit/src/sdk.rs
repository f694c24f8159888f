//! The third-party SDKs the interop tests run as peers — Python (a2a-sdk, spiffe), JavaScript
//! (@a2a-js/sdk), Go (go-spiffe) — as installed by `scripts/install-sdk-deps.sh` outside the
//! clone, and our own test programs for them in `crates/cli/tests/sdk/`.
//!
//! A test asks for a tool and gets `None` when it is missing, after a loud line on stderr that
//! names the tool and the script that installs it — or a failure with
//! `WARDEN_TEST_PEERS=require`, as for the other real peers ([`crate::deps`]).

use std::path::{Path, PathBuf};

/// `sdk/` beside the peers' `bin/` ([`crate::deps::bin_dir`]): `$WARDEN_TEST_DEPS/sdk`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/warden/test-deps/sdk`.
pub fn install_dir() -> PathBuf {
    let bin = crate::deps::bin_dir();
    bin.parent().unwrap_or(&bin).join("sdk")
}

/// Our test programs for the SDKs (`crates/cli/tests/sdk`).
pub fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/tests/sdk")
}

/// Reports a missing tool: a loud skip notice (a panic with `WARDEN_TEST_PEERS=require`);
/// always `None`.
fn missing<T>(tool: &str, test: &str) -> Option<T> {
    let why = format!(
        "{tool} is not installed (scripts/install-sdk-deps.sh installs it into {})",
        install_dir().display()
    );
    if std::env::var("WARDEN_TEST_PEERS").as_deref() == Ok("require") {
        panic!("{test}: {why}, and WARDEN_TEST_PEERS=require");
    }
    eprintln!("SKIPPED {test}: {why}");
    None
}

/// The Python of the SDK venv (a2a-sdk, spiffe, uvicorn), or `None` with a notice.
pub fn python(test: &str) -> Option<PathBuf> {
    let python = install_dir().join("venv/bin/python");
    if python.exists() {
        Some(python)
    } else {
        missing("the Python SDK venv", test)
    }
}

/// The `node_modules` holding @a2a-js/sdk, or `None` with a notice.
pub fn node_modules(test: &str) -> Option<PathBuf> {
    let modules = install_dir().join("js/node_modules");
    if !modules.join("@a2a-js/sdk").exists() {
        return missing("@a2a-js/sdk", test);
    }
    if which("node").is_none() {
        return missing("node", test);
    }
    Some(modules)
}

/// `promtool` (Debian's `prometheus` package), or `None` with a notice.
pub fn promtool(test: &str) -> Option<PathBuf> {
    which("promtool").or_else(|| missing("promtool", test))
}

/// Builds our go-spiffe test client (`go build`, incremental) and returns it; `None` with a
/// notice when Go is missing. A build failure is a test failure.
pub fn go_spiffe_client(test: &str) -> Option<PathBuf> {
    let Some(go) = which("go") else {
        eprintln!("SKIPPED {test}: go is not installed; the go-spiffe test needs it");
        return None;
    };
    let out = install_dir().join("bin/go-spiffe-client");
    let status = std::process::Command::new(go)
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(sources().join("go-spiffe"))
        .status()
        .expect("run go build");
    assert!(
        status.success(),
        "go build of the go-spiffe test client failed"
    );
    Some(out)
}

/// The path of `tool` on `PATH`.
pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|path| path.is_file())
    })
}
