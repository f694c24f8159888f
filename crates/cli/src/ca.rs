//! `warden ca …`: the embedded CA's commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use warden_identity::svid::{Verdict, inspect_x509_svid};
use warden_identity::workload_api::{WorkloadApiServer, WorkloadBinding};
use warden_identity::{CertificateAuthority, SpiffeId, TrustBundle, TrustBundleSet, TrustDomain};

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create a root (ECDSA P-256) and JWT signing key, or adopt an existing CA with
    /// --ca-cert/--ca-key.
    Init(InitArgs),
    /// Issue an X.509-SVID into a directory in spiffe-helper's layout (svid.pem,
    /// svid_key.pem, svid_bundle.pem).
    Issue(IssueArgs),
    /// Serve the SPIFFE Workload API on a Unix socket, handing out (and rotating at
    /// half-life) the SVID of one workload.
    Serve(ServeArgs),
    /// Show a certificate's SPIFFE ID, validity and issuer, and the verdict of every SPIFFE
    /// rule. Exit 0 valid, 1 a rule is broken (named on the last line), 2 unreadable input.
    Inspect(InspectArgs),
    /// Print the trust bundle: PEM (X.509 authorities) or SPIFFE bundle JSON (with the JWT
    /// authorities, for `warden gateway --jwt-bundle`).
    Bundle(BundleArgs),
    /// Print a JWT-SVID for an ID of the CA's trust domain.
    Jwt(JwtArgs),
}

#[derive(Debug, Args)]
pub(crate) struct BundleArgs {
    #[command(flatten)]
    dir: DirArg,
    /// pem or spiffe.
    #[arg(long, default_value = "pem", value_parser = ["pem", "spiffe"])]
    format: String,
}

#[derive(Debug, Args)]
pub(crate) struct JwtArgs {
    #[command(flatten)]
    dir: DirArg,
    /// The subject.
    #[arg(long)]
    id: SpiffeId,
    /// An audience (repeatable).
    #[arg(long, required = true)]
    audience: Vec<String>,
    /// Lifetime.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct DirArg {
    /// The CA directory [default: <state-dir>/ca].
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl DirArg {
    fn resolve(&self, state_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| state_dir.join("ca"))
    }
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Trust domain of the CA [default: warden.local, or the one in --ca-cert's URI SAN].
    #[arg(long)]
    trust_domain: Option<TrustDomain>,
    /// Adopt this existing CA certificate (PEM) instead of creating one.
    #[arg(long, requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// The private key (PKCS#8 PEM) of --ca-cert.
    #[arg(long, requires = "ca_cert")]
    ca_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    #[command(flatten)]
    dir: DirArg,
    /// SPIFFE ID to issue for (must be in the CA's trust domain).
    #[arg(long)]
    id: SpiffeId,
    /// Directory to write svid.pem, svid_key.pem (0600) and svid_bundle.pem into.
    #[arg(long)]
    out: PathBuf,
    /// Lifetime of the SVID.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// A DNS name to add beside the SPIFFE ID (repeatable; `*.team-beta.a2a.localhost`): for a
    /// gateway whose clients check its host name, as every gRPC client does.
    #[arg(long = "dns")]
    dns: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Unix socket to serve on (a stale socket file is replaced).
    #[arg(long)]
    socket: PathBuf,
    /// The SPIFFE ID this socket hands out.
    #[arg(long)]
    id: SpiffeId,
    /// Lifetime of each SVID; a new one is issued at half of it.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The certificate chain (PEM, leaf first).
    cert: PathBuf,
    /// Trust bundle to verify the chain against (PEM or SPIFFE bundle JSON).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Trust domain the bundle belongs to [default: the SVID's own].
    #[arg(long)]
    trust_domain: Option<TrustDomain>,
}

pub(crate) async fn run(cmd: CaCommand, state_dir: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        CaCommand::Init(args) => init(args, state_dir),
        CaCommand::Issue(args) => issue(args, state_dir),
        CaCommand::Serve(args) => serve(args, state_dir).await,
        CaCommand::Inspect(args) => Ok(inspect(args)),
        CaCommand::Bundle(args) => {
            let ca = load(&args.dir.resolve(state_dir))?;
            match args.format.as_str() {
                "spiffe" => println!("{}", String::from_utf8_lossy(&ca.bundle().to_spiffe_json())),
                _ => print!("{}", ca.bundle().to_pem()),
            }
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Jwt(args) => {
            let ca = load(&args.dir.resolve(state_dir))?;
            println!("{}", ca.issue_jwt(&args.id, &args.audience, args.ttl)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init(args: InitArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    let dir = args.dir.resolve(state_dir);
    let ca = match (&args.ca_cert, &args.ca_key) {
        (Some(cert), Some(key)) => {
            CertificateAuthority::adopt(&dir, args.trust_domain.as_ref(), cert, key)?
        }
        _ => {
            let td = match args.trust_domain {
                Some(td) => td,
                None => TrustDomain::new(warden_identity::DEFAULT_TRUST_DOMAIN)?,
            };
            CertificateAuthority::init(&dir, &td)?
        }
    };
    println!(
        "CA for trust domain {} in {} (root {}, keys 0600)",
        ca.trust_domain(),
        dir.display(),
        dir.join(warden_identity::ca::CA_CERT_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}

fn load(dir: &Path) -> anyhow::Result<CertificateAuthority> {
    CertificateAuthority::load(dir).with_context(|| {
        format!(
            "loading the CA in {} (run `warden ca init` first?)",
            dir.display()
        )
    })
}

fn issue(args: IssueArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    let dir = args.dir.resolve(state_dir);
    let ca = load(&dir)?;
    let svid = ca.issue_x509_named(&args.id, &args.dns, args.ttl)?;
    svid.write_files(&args.out, ca.bundle())?;
    println!(
        "issued {} valid until {} into {}",
        args.id,
        humantime::format_rfc3339_seconds(svid.not_after),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    if args.ttl < Duration::from_secs(2) {
        bail!("--ttl must be at least 2s (SVIDs rotate at half-life)");
    }
    let ca = load(&args.dir.resolve(state_dir))?;
    let server = WorkloadApiServer::new(Arc::new(ca), args.ttl);
    server
        .serve(
            vec![WorkloadBinding {
                id: args.id,
                socket: args.socket,
            }],
            crate::shutdown_signal(),
        )
        .await?;
    Ok(ExitCode::SUCCESS)
}

fn time(unix: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    format!("{} (unix {unix})", humantime::format_rfc3339_seconds(t))
}

fn inspect(args: InspectArgs) -> ExitCode {
    match try_inspect(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn try_inspect(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let pem = std::fs::read(&args.cert).with_context(|| format!("{}", args.cert.display()))?;
    let chain = warden_identity::pem::certificates(&pem)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{}", args.cert.display()))?;
    if chain.is_empty() {
        bail!("{}: holds no CERTIFICATE block", args.cert.display());
    }
    let bundles = match &args.bundle {
        None => None,
        Some(path) => {
            let td = match (
                &args.trust_domain,
                warden_identity::svid::spiffe_id_of(&chain[0]),
            ) {
                (Some(td), _) => td.clone(),
                (None, Some(id)) => id.trust_domain(),
                (None, None) => TrustDomain::new(warden_identity::DEFAULT_TRUST_DOMAIN)?,
            };
            Some(TrustBundleSet::single(TrustBundle::load(td, path)?))
        }
    };
    let report = inspect_x509_svid(&chain, bundles.as_ref(), rustls_pki_types::UnixTime::now());
    let id = report
        .spiffe_id
        .as_ref()
        .map_or_else(|| "(none)".to_owned(), |id| id.to_string());
    println!("SPIFFE ID:   {id}");
    println!("Subject:     {}", report.subject);
    println!("Issuer:      {}", report.issuer);
    println!("Not before:  {}", time(report.not_before));
    println!("Not after:   {}", time(report.not_after));
    println!("Rules:");
    for (rule, verdict) in &report.verdicts {
        let (tag, detail) = match verdict {
            Verdict::Pass => ("PASS", String::new()),
            Verdict::Fail(r) => ("FAIL", format!(" — {r}")),
            Verdict::Skipped(why) => ("SKIP", format!(" — {why}")),
        };
        println!("  {tag} {:<20} {}{detail}", rule.name(), rule.description());
    }
    match report.first_failure() {
        None => {
            println!("VALID: {id} is a valid X.509-SVID");
            Ok(ExitCode::SUCCESS)
        }
        Some(rejection) => {
            println!(
                "INVALID: rule {} broken: {rejection}",
                rejection.rule().name()
            );
            Ok(ExitCode::from(1))
        }
    }
}
