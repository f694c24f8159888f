//! `warden validate` and `warden explain`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use warden_identity::SpiffeId;
use warden_model::policy::{Caller, explain};
use warden_model::{Manifests, MeshSnapshot, ModelError};

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// A manifest file or a directory of them.
    path: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Output {
    /// For people.
    Text,
    /// One JSON object.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// A manifest file or a directory of them.
    path: PathBuf,
    /// The caller: NS/AGENT, a SPIFFE ID, or `anonymous`.
    #[arg(long)]
    from: String,
    /// The target agent: NS/AGENT.
    #[arg(long)]
    to: String,
    /// The A2A method (1.0 or 0.3 name), or GetAgentCard for fetching the card.
    #[arg(long, default_value = "SendMessage")]
    method: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct CompileArgs {
    /// A manifest file or a directory of them.
    path: PathBuf,
    /// Where to write the snapshot (JSON, mode 0600: it holds resolved headersFrom values).
    #[arg(long, short = 'o')]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {
    /// A manifest file or a directory of them (kagent Agents, AgentRuntimes, Warden's own).
    path: PathBuf,
}

/// Prints the `warden.dev` manifests equivalent to the given ones.
pub(crate) fn convert(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    let converted = warden_model::load_path(&args.path)
        .and_then(|manifests| warden_model::convert(&manifests))
        .map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            anyhow::anyhow!("the manifests are not valid:\n{}", lines.join("\n"))
        })?;
    print!("{converted}");
    Ok(ExitCode::SUCCESS)
}

/// Writes the compiled snapshot that sidecars load with `--snapshot`.
pub(crate) fn compile(args: CompileArgs) -> anyhow::Result<ExitCode> {
    let (_, snapshot) = load(&args.path).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("the manifests are not valid:\n{}", lines.join("\n"))
    })?;
    let json = serde_json::to_vec_pretty(&snapshot)?;
    warden_identity::ca::write_atomic(&args.out, &json, 0o600)?;
    println!(
        "snapshot v{} with {} agents written to {}",
        snapshot.version(),
        snapshot.agents().len(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn load(path: &Path) -> Result<(Manifests, MeshSnapshot), Vec<ModelError>> {
    let manifests = warden_model::load_path(path)?;
    let snapshot = warden_model::compile(&manifests, 1)?;
    Ok((manifests, snapshot))
}

/// Exit 0 when every resource is valid and every agent accepted; otherwise each problem on
/// its own line and exit 1.
pub(crate) fn validate(args: ValidateArgs) -> ExitCode {
    match load(&args.path) {
        Err(errors) => {
            for e in &errors {
                println!("{e}");
            }
            ExitCode::from(1)
        }
        Ok((manifests, snapshot)) => {
            for notice in &manifests.notices {
                eprintln!("notice: {notice}");
            }
            for warning in warden_model::lint(&manifests) {
                eprintln!("warning: {warning}");
            }
            let mut rejected = 0;
            for agent in snapshot.agents().iter().filter(|a| !a.accepted.status) {
                rejected += 1;
                let origin = manifests
                    .agents
                    .iter()
                    .find(|s| {
                        s.resource.metadata.name.as_deref() == Some(&agent.name)
                            && s.resource
                                .metadata
                                .namespace
                                .as_deref()
                                .unwrap_or("default")
                                == agent.namespace
                    })
                    .map(|s| {
                        format!(
                            "{}: {}",
                            s.origin,
                            manifests.field_path(&s.origin, "spec.tools")
                        )
                    })
                    .unwrap_or_else(|| "spec.tools".into());
                println!(
                    "{origin}: Accepted=False {}: {}",
                    agent.accepted.reason, agent.accepted.message
                );
            }
            if rejected > 0 {
                return ExitCode::from(1);
            }
            println!(
                "valid: {} agents in {} namespaces, trust domain {}",
                snapshot.agents().len(),
                snapshot
                    .agents()
                    .iter()
                    .map(|a| a.namespace.as_str())
                    .collect::<std::collections::BTreeSet<_>>()
                    .len(),
                snapshot.trust_domain()
            );
            ExitCode::SUCCESS
        }
    }
}

fn parse_target(s: &str, flag: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => bail!("{flag} {s:?}: expected NAMESPACE/AGENT"),
    }
}

fn parse_caller(s: &str, snapshot: &MeshSnapshot) -> anyhow::Result<Caller> {
    if s == "anonymous" {
        return Ok(Caller::Anonymous);
    }
    if s.starts_with("spiffe://") {
        return Ok(Caller::Spiffe(SpiffeId::new(s)?));
    }
    let (ns, name) = parse_target(s, "--from")?;
    let agent = snapshot.agent(&ns, &name).with_context(|| {
        format!(
            "--from {s}: no agent {ns}/{name} in the manifests; they have {}",
            agent_list(snapshot)
        )
    })?;
    Ok(Caller::Spiffe(agent.spiffe_id.clone()))
}

fn agent_list(snapshot: &MeshSnapshot) -> String {
    let keys: Vec<String> = snapshot.agents().iter().map(|a| a.key()).collect();
    keys.join(", ")
}

/// The method's A2A 1.0 name; a name that is no A2A method (1.0 or 0.3) is an error.
fn parse_method(method: &str) -> anyhow::Result<&'static str> {
    if method == "GetAgentCard" {
        return Ok("GetAgentCard");
    }
    warden_a2a::canonical_method(method).with_context(|| {
        format!(
            "--method {method:?}: not an A2A method; use a 1.0 name (SendMessage, \
             SendStreamingMessage, GetTask, ListTasks, CancelTask, SubscribeToTask, …), its 0.3 \
             name (message/send, tasks/get, …), or GetAgentCard"
        )
    })
}

/// Exit 0 allow, 1 deny, 2 error.
pub(crate) fn run_explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let (_, snapshot) = load(&args.path).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("the manifests are not valid:\n{}", lines.join("\n"))
    })?;
    let caller = parse_caller(&args.from, &snapshot)?;
    let (ns, name) = parse_target(&args.to, "--to")?;
    if snapshot.agent(&ns, &name).is_none() {
        bail!(
            "--to {}: no agent {ns}/{name} in the manifests; they have {}",
            args.to,
            agent_list(&snapshot)
        );
    }
    let method = parse_method(&args.method)?;
    let explanation = explain(&snapshot, &caller, &ns, &name, method);
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
        Output::Text => {
            let d = &explanation.decision;
            println!(
                "{} {} -> {} ({})",
                if d.allowed { "ALLOW" } else { "DENY" },
                explanation.caller,
                explanation.target,
                explanation.method
            );
            println!("rule: {} — {}", d.rule, d.reason);
            for (i, step) in explanation.steps.iter().enumerate() {
                println!("  {}. {step}", i + 1);
            }
        }
    }
    Ok(if explanation.decision.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
