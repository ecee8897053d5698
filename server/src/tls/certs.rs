//! `ringkv-server certs`: a private CA, one certificate per node and an admin client
//! certificate, written as PEM files, so a cluster runs with mutual TLS without an external
//! tool.
//!
//! Files in `--out`: `ca.pem`, `ca.key`, `node-I.pem`/`node-I.key` for I in 1..=N, and
//! `client.pem`/`client.key` (name `admin`). Node I's certificate names `node-I`, `localhost`,
//! `127.0.0.1` and the `--hosts`: when `--hosts` has exactly N entries, the I-th host goes to
//! node I only; otherwise every host goes to every node. A node's names must include the host
//! its peers dial it at (the server name they verify) and the host in every `--peers` entry
//! (the peer check).
//!
//! Invariants: keys are written with mode 0600 (created so, never widened later); an existing
//! file is never overwritten unless `--force`; nothing is written when any target exists.
//!
//! What it does not do: revoke, renew or rotate (issue new files and roll the nodes), or keep
//! the CA key anywhere but the file it writes.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The name of the admin client certificate.
pub const ADMIN_NAME: &str = "admin";

/// `ringkv-server certs` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct CertsArgs {
    /// Directory to write the files into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of node certificates (node-1 … node-N).
    #[arg(long)]
    pub nodes: u32,
    /// Extra names (DNS or IP) for the node certificates: exactly N entries give the I-th to
    /// node I; any other count gives them all to every node.
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// Why `certs` did not write its files.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// Bad arguments or existing files: nothing written, exit 2.
    #[error("{0}")]
    Refused(String),
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One certificate and its key, PEM-encoded.
pub struct Pem {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Everything `certs` writes.
pub struct CertSet {
    pub ca: Pem,
    pub nodes: Vec<Pem>,
    pub client: Pem,
}

/// The years around now: certificates are valid from last year for ten years.
fn validity(params: &mut CertificateParams) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let year = 1970 + (secs / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
}

fn leaf_params(
    name: &str,
    sans: Vec<String>,
    server: bool,
) -> Result<CertificateParams, CertsError> {
    let mut p = CertificateParams::new(sans)?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = if server {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    p.use_authority_key_identifier_extension = true;
    validity(&mut p);
    Ok(p)
}

/// The names of node `i` (1-based) of `n`, given the `--hosts`.
pub fn node_names(i: u32, n: u32, hosts: &[String]) -> Vec<String> {
    let mut names = vec![format!("node-{i}"), "localhost".into(), "127.0.0.1".into()];
    let extra: Vec<&String> = if n > 1 && hosts.len() == n as usize {
        hosts.get(i as usize - 1).into_iter().collect()
    } else {
        hosts.iter().collect()
    };
    for h in extra {
        if !h.is_empty() && !names.contains(h) {
            names.push(h.clone());
        }
    }
    names
}

/// Generates a new CA, `n` node certificates and the admin client certificate in memory.
pub fn generate(n: u32, hosts: &[String]) -> Result<CertSet, CertsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "RingKV cluster CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca_params);
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let issue = |name: &str, sans: Vec<String>, server: bool| -> Result<Pem, CertsError> {
        let key = KeyPair::generate()?;
        let cert = leaf_params(name, sans, server)?.signed_by(&key, &ca)?;
        Ok(Pem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    };
    let mut nodes = Vec::with_capacity(n as usize);
    for i in 1..=n {
        nodes.push(issue(&format!("node-{i}"), node_names(i, n, hosts), true)?);
    }
    let client = issue(ADMIN_NAME, vec![ADMIN_NAME.to_string()], false)?;
    Ok(CertSet {
        ca: Pem {
            cert_pem: ca.pem(),
            key_pem: ca_key_pem,
        },
        nodes,
        client,
    })
}

/// The files of `set` as (name, contents, is a key).
fn files(set: &CertSet) -> Vec<(String, &str, bool)> {
    let mut out = vec![
        ("ca.pem".to_string(), set.ca.cert_pem.as_str(), false),
        ("ca.key".to_string(), set.ca.key_pem.as_str(), true),
    ];
    for (i, n) in set.nodes.iter().enumerate() {
        out.push((format!("node-{}.pem", i + 1), n.cert_pem.as_str(), false));
        out.push((format!("node-{}.key", i + 1), n.key_pem.as_str(), true));
    }
    out.push(("client.pem".into(), set.client.cert_pem.as_str(), false));
    out.push(("client.key".into(), set.client.key_pem.as_str(), true));
    out
}

fn write_file(path: &Path, body: &str, key: bool, force: bool) -> Result<(), CertsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    if force && path.exists() {
        std::fs::remove_file(path).map_err(err)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if key { 0o600 } else { 0o644 })
        .open(path)
        .map_err(err)?;
    f.write_all(body.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Writes `set` into `dir`; refuses (writing nothing) when a file exists, unless `force`.
/// Returns the paths written.
pub fn write(dir: &Path, set: &CertSet, force: bool) -> Result<Vec<PathBuf>, CertsError> {
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let files = files(set);
    if !force {
        let existing: Vec<String> = files
            .iter()
            .map(|(name, _, _)| dir.join(name))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(CertsError::Refused(format!(
                "{} already exist(s); nothing written (give --force to replace them)",
                existing.join(", ")
            )));
        }
    }
    let mut written = Vec::new();
    for (name, body, key) in files {
        let path = dir.join(name);
        write_file(&path, body, key, force)?;
        written.push(path);
    }
    Ok(written)
}

/// `ringkv-server certs`: generates and writes, prints what it wrote.
pub fn run(args: &CertsArgs) -> Result<(), CertsError> {
    if args.nodes == 0 || args.nodes > 1000 {
        return Err(CertsError::Refused("--nodes must be 1..=1000".into()));
    }
    let set = generate(args.nodes, &args.hosts)?;
    let written = write(&args.out, &set, args.force)?;
    for p in &written {
        println!("wrote {}", p.display());
    }
    println!(
        "node flags: --tls-cert {0}/node-I.pem --tls-key {0}/node-I.key --tls-ca {0}/ca.pem",
        args.out.display()
    );
    println!(
        "CLI flags:  --cacert {0}/ca.pem --cert {0}/client.pem --key {0}/client.key",
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn hosts_go_to_their_node_when_there_is_one_per_node() {
        let hosts = vec!["a".to_string(), "b".to_string()];
        assert_eq!(node_names(2, 2, &hosts)[3..], ["b".to_string()]);
        assert_eq!(node_names(1, 3, &hosts)[3..], hosts[..]);
        assert_eq!(node_names(1, 1, &[]).len(), 3);
    }

    #[test]
    fn certificates_carry_their_names() {
        let set = generate(2, &["10.0.0.9".into()]).expect("generate");
        let der = |pem: &str| {
            crate::tls::config::parse_certs("t", Path::new("t"), pem.as_bytes()).expect("pem")[0]
                .to_vec()
        };
        let names = crate::tls::names::cert_names(&der(&set.nodes[1].cert_pem)).expect("names");
        assert_eq!(names, ["node-2", "localhost", "127.0.0.1", "10.0.0.9"]);
        let names = crate::tls::names::cert_names(&der(&set.client.cert_pem)).expect("names");
        assert_eq!(names, [ADMIN_NAME]);
    }

    #[test]
    fn keys_are_private_and_nothing_is_overwritten_without_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let set = generate(1, &[]).expect("generate");
        let written = write(dir.path(), &set, false).expect("write");
        assert_eq!(written.len(), 6);
        let mode = |n: &str| {
            std::fs::metadata(dir.path().join(n))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("ca.key"), 0o600);
        assert_eq!(mode("node-1.key"), 0o600);
        assert_eq!(mode("client.key"), 0o600);
        assert_eq!(mode("ca.pem"), 0o644);
        let before = std::fs::read(dir.path().join("ca.pem")).expect("read");
        let again = generate(1, &[]).expect("generate");
        assert!(matches!(
            write(dir.path(), &again, false),
            Err(CertsError::Refused(_))
        ));
        assert_eq!(
            std::fs::read(dir.path().join("ca.pem")).expect("read"),
            before
        );
        write(dir.path(), &again, true).expect("forced");
        assert_ne!(
            std::fs::read(dir.path().join("ca.pem")).expect("read"),
            before
        );
        assert_eq!(mode("node-1.key"), 0o600);
    }
}
