//! `warden ca init | issue | inspect` as a user runs them, checked with openssl.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use warden_testkit::openssl::run as openssl;

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

fn warden(args: &[&str]) -> Output {
    Command::new(WARDEN)
        .args(args)
        .output()
        .expect("run warden")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn init_issue_inspect_and_openssl_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let out = warden(&[
        "ca",
        "init",
        "--dir",
        p(&ca),
        "--trust-domain",
        "example.org",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&ca.join("ca_key.pem")), 0o600);
    assert_eq!(mode(&ca.join("jwt_key.pem")), 0o600);
    // A second init must not overwrite the root.
    let again = warden(&["ca", "init", "--dir", p(&ca)]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));

    let svid = dir.path().join("svid");
    let out = warden(&[
        "ca",
        "issue",
        "--dir",
        p(&ca),
        "--id",
        "spiffe://example.org/ns/team-a/sa/agent",
        "--out",
        p(&svid),
        "--ttl",
        "10m",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&svid.join("svid_key.pem")), 0o600);
    openssl(
        dir.path(),
        &[
            "verify",
            "-CAfile",
            p(&ca.join("ca.pem")),
            p(&svid.join("svid.pem")),
        ],
    );
    let text = stdout(&openssl(
        dir.path(),
        &[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            p(&svid.join("svid.pem")),
        ],
    ));
    assert!(
        text.contains("URI:spiffe://example.org/ns/team-a/sa/agent"),
        "{text}"
    );
    // The key file belongs to the certificate.
    let cert_pub = openssl(
        dir.path(),
        &[
            "x509",
            "-noout",
            "-pubkey",
            "-in",
            p(&svid.join("svid.pem")),
        ],
    )
    .stdout;
    let key_pub = openssl(
        dir.path(),
        &["pkey", "-pubout", "-in", p(&svid.join("svid_key.pem"))],
    )
    .stdout;
    assert_eq!(cert_pub, key_pub);

    let out = warden(&[
        "ca",
        "inspect",
        p(&svid.join("svid.pem")),
        "--bundle",
        p(&svid.join("svid_bundle.pem")),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("SPIFFE ID:   spiffe://example.org/ns/team-a/sa/agent"),
        "{text}"
    );
    assert!(text.contains("PASS chain_verifies"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");

    // Issuing outside the CA's trust domain is refused with both names.
    let out = warden(&[
        "ca",
        "issue",
        "--dir",
        p(&ca),
        "--id",
        "spiffe://other.org/ns/a/sa/b",
        "--out",
        p(&svid),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("other.org") && err.contains("example.org"),
        "{err}"
    );
}

#[test]
fn inspect_exit_codes_name_the_broken_rule() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    assert!(warden(&["ca", "init", "--dir", p(&ca)]).status.success());
    let svid = dir.path().join("svid");
    assert!(
        warden(&[
            "ca",
            "issue",
            "--dir",
            p(&ca),
            "--id",
            "spiffe://warden.local/ns/a/sa/b",
            "--out",
            p(&svid)
        ])
        .status
        .success()
    );

    // The root itself is not an SVID: its URI is a bare trust domain and it is a CA.
    let out = warden(&["ca", "inspect", p(&ca.join("ca.pem"))]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("INVALID: rule spiffe_id_uri"), "{text}");
    assert!(text.contains("FAIL leaf_not_ca"), "{text}");

    // Chained to a bundle of another CA: the chain rule fails.
    let other = dir.path().join("other");
    assert!(warden(&["ca", "init", "--dir", p(&other)]).status.success());
    let out = warden(&[
        "ca",
        "inspect",
        p(&svid.join("svid.pem")),
        "--bundle",
        p(&other.join("ca.pem")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out)
            .lines()
            .last()
            .unwrap()
            .starts_with("INVALID: rule chain_verifies"),
        "{}",
        stdout(&out)
    );

    // A bundle for a different trust domain than the SVID's.
    let out = warden(&[
        "ca",
        "inspect",
        p(&svid.join("svid.pem")),
        "--bundle",
        p(&ca.join("ca.pem")),
        "--trust-domain",
        "example.org",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out)
            .lines()
            .last()
            .unwrap()
            .starts_with("INVALID: rule known_trust_domain")
    );

    // Unreadable input.
    let out = warden(&["ca", "inspect", p(&dir.path().join("missing.pem"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.pem"));
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    let out = warden(&["ca", "inspect", p(&dir.path().join("junk.pem"))]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn adopts_a_ca_made_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "corp.key",
            "-out",
            "corp.pem",
            "-days",
            "2",
            "-subj",
            "/O=Corp/CN=Corp CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "subjectAltName=URI:spiffe://corp.example",
        ],
    );
    let ca = dir.path().join("ca");
    let out = warden(&[
        "ca",
        "init",
        "--dir",
        p(&ca),
        "--ca-cert",
        p(&dir.path().join("corp.pem")),
        "--ca-key",
        p(&dir.path().join("corp.key")),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains("trust domain corp.example"),
        "{}",
        stdout(&out)
    );
    assert_eq!(mode(&ca.join("ca_key.pem")), 0o600);
    let svid = dir.path().join("svid");
    let out = warden(&[
        "ca",
        "issue",
        "--dir",
        p(&ca),
        "--id",
        "spiffe://corp.example/ns/a/sa/b",
        "--out",
        p(&svid),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    openssl(
        dir.path(),
        &["verify", "-CAfile", "corp.pem", p(&svid.join("svid.pem"))],
    );
    let out = warden(&[
        "ca",
        "inspect",
        p(&svid.join("svid.pem")),
        "--bundle",
        p(&dir.path().join("corp.pem")),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // A key that does not belong to the certificate is refused, naming the file.
    openssl(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "wrong.key",
        ],
    );
    let out = warden(&[
        "ca",
        "init",
        "--dir",
        p(&dir.path().join("ca2")),
        "--ca-cert",
        p(&dir.path().join("corp.pem")),
        "--ca-key",
        p(&dir.path().join("wrong.key")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corp.pem") && err.contains("does not belong"),
        "{err}"
    );
    // A leaf is not a CA.
    let out = warden(&[
        "ca",
        "init",
        "--dir",
        p(&dir.path().join("ca3")),
        "--ca-cert",
        p(&svid.join("svid.pem")),
        "--ca-key",
        p(&svid.join("svid_key.pem")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a CA"));
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["ca", "--help"],
        vec!["ca", "init", "--help"],
        vec!["ca", "issue", "--help"],
        vec!["ca", "serve", "--help"],
        vec!["ca", "inspect", "--help"],
    ] {
        let out = warden(&args);
        assert!(out.status.success(), "{args:?}");
        assert!(stdout(&out).contains("Usage:"), "{args:?}");
    }
    let out = warden(&["--log-format", "yaml", "ca", "inspect", "x.pem"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-format"));
}
