//! `warden validate` and `warden explain` on the example and on broken manifests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cross-namespace-a2a")
}

fn warden(args: &[&str]) -> Output {
    Command::new(WARDEN)
        .args(args)
        .output()
        .expect("run warden")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn validate_names_the_examples_refused_reference_and_lists_every_error_of_a_broken_mesh() {
    // The example is valid, but its rogue makes a tool reference the specialist's policy does
    // not admit: that one line, naming the agent, the field and the rule, and exit 1.
    let out = warden(&["validate", example().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("Agent team-gamma/rogue")
            && lines[0].contains("spec.tools")
            && lines[0].contains("CrossNamespaceReferenceDenied")
            && lines[0].contains("namespace_selector"),
        "{lines:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: a, namespace: ns}\nspec: {port: 0}\n---\n\
         apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: b, namespace: ns}\nspec: {allowedNamespaces: {from: Selector}}\n",
    )
    .unwrap();
    let out = warden(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("broken.yaml: document 1 (Agent ns/a): spec.port"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("document 2 (Agent ns/b): spec.allowedNamespaces.selector: required"),
        "{}",
        lines[1]
    );
}

#[test]
fn validate_refuses_a_cross_namespace_reference_the_target_does_not_admit() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(example()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.path().join("zz-rogue-tool.yaml"),
        "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: sneaky, namespace: team-gamma}\n\
         spec:\n  tools: [{agentRef: {name: specialist, namespace: team-beta}}]\n",
    )
    .unwrap();
    let out = warden(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("zz-rogue-tool.yaml: document 1 (Agent team-gamma/sneaky)"),
        "{text}"
    );
    assert!(
        text.contains("Accepted=False CrossNamespaceReferenceDenied"),
        "{text}"
    );
    assert!(text.contains("team-beta/specialist"), "{text}");
}

#[test]
fn explain_allows_denies_and_says_why() {
    let path = example();
    let path = path.to_str().unwrap();
    let out = warden(&[
        "explain",
        path,
        "--from",
        "team-alpha/orchestrator",
        "--to",
        "team-beta/specialist",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).starts_with(
        "ALLOW spiffe://warden.local/ns/team-alpha/sa/orchestrator -> team-beta/specialist"
    ));

    let out = warden(&[
        "explain",
        path,
        "--from",
        "team-gamma/rogue",
        "--to",
        "team-beta/specialist",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.starts_with("DENY"), "{text}");
    assert!(text.contains("rule: namespace_selector"), "{text}");
    assert!(
        text.contains("namespace team-gamma {tier=external}"),
        "{text}"
    );
    assert!(text.contains("unmet: a2a-access=specialist"), "{text}");

    let out = warden(&[
        "explain",
        path,
        "--from",
        "anonymous",
        "--to",
        "team-beta/specialist",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = warden(&[
        "explain",
        path,
        "--from",
        "spiffe://warden.local/ns/team-alpha/sa/intern",
        "--to",
        "team-beta/specialist",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["decision"]["allowed"], false);
    assert_eq!(json["decision"]["rule"], "denied_callers");
    assert!(json["steps"].as_array().unwrap().len() >= 2);

    let out = warden(&[
        "explain",
        path,
        "--from",
        "spiffe://warden.local/ns/warden-system/sa/warden-gateway",
        "--to",
        "team-beta/specialist",
        "--method",
        "GetAgentCard",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn explain_errors_exit_2_and_name_the_problem() {
    let path = example();
    let path = path.to_str().unwrap();
    let out = warden(&[
        "explain",
        path,
        "--from",
        "team-alpha/nobody",
        "--to",
        "team-beta/specialist",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent team-alpha/nobody"));
    // An unknown target is an error (exit 2, not a deny) that lists the agents.
    let out = warden(&[
        "explain",
        path,
        "--from",
        "anonymous",
        "--to",
        "team-beta/nobody",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--to team-beta/nobody: no agent team-beta/nobody")
            && err.contains("team-beta/specialist, "),
        "{err}"
    );
    // A misspelt method is refused, not silently decided.
    let out = warden(&[
        "explain",
        path,
        "--from",
        "team-alpha/orchestrator",
        "--to",
        "team-beta/specialist",
        "--method",
        "SendMesage",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--method \"SendMesage\": not an A2A method"),
        "{err}"
    );
    let out = warden(&["explain", path, "--from", "anonymous", "--to", "specialist"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected NAMESPACE/AGENT"));
    let out = warden(&[
        "explain",
        "/nonexistent.yaml",
        "--from",
        "anonymous",
        "--to",
        "a/b",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.yaml"));
}

/// `warden convert` on kagent's example prints warden.dev manifests that `warden explain`
/// decides exactly as the originals, for every caller, target and method tried.
#[test]
fn convert_prints_manifests_that_explain_decides_the_same() {
    let kagent =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kagent-cross-namespace");
    let out = warden(&["convert", kagent.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let converted = stdout(&out);
    assert!(
        converted.contains("apiVersion: warden.dev/v1alpha1"),
        "{converted}"
    );
    assert!(!converted.contains("apiVersion: kagent.dev"), "{converted}");
    // The converted agents beside the original Namespaces, Secrets and ConfigMaps.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agents.yaml"), &converted).unwrap();
    let mut core = Vec::new();
    for file in ["namespaces.yaml", "agents.yaml", "runtimes.yaml"] {
        let text = std::fs::read_to_string(kagent.join(file)).unwrap();
        core.extend(
            text.split("\n---\n")
                .filter(|d| {
                    d.contains("\nkind: Namespace")
                        || d.contains("\nkind: Secret")
                        || d.contains("\nkind: ConfigMap")
                })
                .map(str::to_owned),
        );
    }
    std::fs::write(dir.path().join("core.yaml"), core.join("\n---\n")).unwrap();
    let agents = [
        "team-alpha/orchestrator",
        "team-beta/specialist",
        "team-gamma/rogue",
    ];
    let mut pairs = 0;
    for from in agents.iter().copied().chain(["anonymous"]) {
        for to in agents {
            for method in ["SendMessage", "GetAgentCard"] {
                let decide = |path: &Path| {
                    let out = warden(&[
                        "explain",
                        path.to_str().unwrap(),
                        "--from",
                        from,
                        "--to",
                        to,
                        "--method",
                        method,
                    ]);
                    let text = stdout(&out);
                    let head: Vec<String> = text.lines().take(2).map(str::to_owned).collect();
                    (out.status.code(), head)
                };
                let before = decide(&kagent);
                let after = decide(dir.path());
                assert!(
                    matches!(before.0, Some(0 | 1)),
                    "{from} -> {to}: {before:?}"
                );
                assert_eq!(before, after, "{from} -> {to} {method}");
                pairs += 1;
            }
        }
    }
    assert_eq!(pairs, 24);
}
