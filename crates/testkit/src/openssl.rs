//! Certificates made by the openssl command line, not by Warden, so that validation is
//! tested against an independent implementation's output.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs openssl with `args` in `dir`, panicking with its stderr when it fails; its output.
pub fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A CA made by openssl: `<name>.pem` and `<name>.key` (PKCS#8) in `dir`.
pub struct OpensslCa {
    pub dir: PathBuf,
    pub name: String,
}

impl OpensslCa {
    /// A self-signed P-256 CA whose URI SAN names `trust_domain`.
    pub fn new(dir: &Path, name: &str, trust_domain: &str) -> Self {
        run(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/O=openssl-test/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-addext",
                &format!("subjectAltName=URI:spiffe://{trust_domain}"),
            ],
        );
        let db = dir.join(format!("{name}-db"));
        std::fs::create_dir_all(db.join("new")).unwrap();
        std::fs::write(db.join("index.txt"), "").unwrap();
        std::fs::write(db.join("serial"), "1000\n").unwrap();
        std::fs::write(
            db.join("ca.cnf"),
            format!(
                "[ca]\ndefault_ca = d\n[d]\ndatabase = {db}/index.txt\nnew_certs_dir = {db}/new\n\
                 serial = {db}/serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n\
                 copy_extensions = none\n[p]\ncommonName = optional\norganizationName = optional\n",
                db = db.display()
            ),
        )
        .unwrap();
        Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join(format!("{}.key", self.name))
    }

    /// Signs a P-256 leaf named `leaf` with the given v3 extension lines, valid from `start`
    /// to `end` (openssl `YYYYMMDDHHMMSSZ`). Writes `<leaf>.pem` and `<leaf>.key`.
    pub fn sign_leaf(&self, leaf: &str, extensions: &[&str], start: &str, end: &str) -> Leaf {
        let subject = format!("/O=openssl-test/CN={leaf}");
        self.sign_leaf_as(leaf, &subject, extensions, start, end)
    }

    /// [`Self::sign_leaf`] with the given subject (openssl `/O=../CN=..` form), for peers that
    /// read identity from it (Kubernetes: CN is the user, O the groups).
    pub fn sign_leaf_as(
        &self,
        leaf: &str,
        subject: &str,
        extensions: &[&str],
        start: &str,
        end: &str,
    ) -> Leaf {
        let dir = &self.dir;
        run(
            dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{leaf}.key"),
                "-out",
                &format!("{leaf}.csr"),
                "-subj",
                subject,
            ],
        );
        std::fs::write(
            dir.join(format!("{leaf}.ext")),
            format!("[v3]\n{}\n", extensions.join("\n")),
        )
        .unwrap();
        let cnf = dir.join(format!("{}-db/ca.cnf", self.name));
        run(
            dir,
            &[
                "ca",
                "-batch",
                "-notext",
                "-config",
                cnf.to_str().unwrap(),
                "-cert",
                self.cert_path().to_str().unwrap(),
                "-keyfile",
                self.key_path().to_str().unwrap(),
                "-in",
                &format!("{leaf}.csr"),
                "-out",
                &format!("{leaf}.pem"),
                "-startdate",
                start,
                "-enddate",
                end,
                "-extfile",
                &format!("{leaf}.ext"),
                "-extensions",
                "v3",
            ],
        );
        Leaf {
            cert: dir.join(format!("{leaf}.pem")),
            key: dir.join(format!("{leaf}.key")),
        }
    }
}

/// A leaf certificate and its key on disk.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The default extensions of a well-formed SVID for `id`.
pub fn svid_extensions(id: &str) -> Vec<String> {
    vec![
        format!("subjectAltName=URI:{id}"),
        "keyUsage=critical,digitalSignature".into(),
        "basicConstraints=critical,CA:FALSE".into(),
        "extendedKeyUsage=serverAuth,clientAuth".into(),
    ]
}

/// openssl's time format for `offset` seconds from now.
pub fn time_from_now(offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = time::OffsetDateTime::from_unix_timestamp(now + offset).unwrap();
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
