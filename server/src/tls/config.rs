//! Loading a node's TLS files (`--tls-cert`, `--tls-key`, `--tls-ca`) once at start-up into the
//! configurations of its three listeners and of every channel it dials.
//!
//! - Client port: a client certificate is optional (a client may prove itself with a token
//!   instead), but one that is presented must verify against the CA.
//! - Peer port: a client certificate from the CA is required (mutual TLS).
//! - Admin HTTP port: like the client port (optional client certificate), served by rustls
//!   directly (see `tls::admin`).
//! - Outgoing channels: the node's own certificate as client identity, the CA as the only
//!   root; the server name verified is the host of the address dialed.
//!
//! Invariants: every file is read and parsed here, before any port is bound; a missing,
//! unreadable or garbage file is a [`TlsConfigError`] naming the file, never a panic. The key
//! must match the certificate (checked by building the rustls configuration here). The key's
//! bytes are never printed: [`Tls`]'s `Debug` shows the file paths only.
//!
//! What it does not do: reload files while running (rotation is a rolling restart), check
//! names against the peer list (`tls::peers`), or generate certificates (`tls::certs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// How long a TLS handshake may take on any listener before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The three files TLS is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Why the TLS files cannot be used. Each names the file (the flag) it is about.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read {flag} {}: {source}", file.display())]
    Read {
        flag: &'static str,
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {} holds no PEM certificate", file.display())]
    NoCertificate { flag: &'static str, file: PathBuf },
    #[error("--tls-key {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", file.display())]
    NoKey { file: PathBuf },
    #[error("{flag} {} is not valid PEM: {reason}", file.display())]
    BadPem {
        flag: &'static str,
        file: PathBuf,
        reason: String,
    },
    #[error("--tls-ca {}: {reason}", file.display())]
    BadCa { file: PathBuf, reason: String },
    #[error("--tls-cert {} and --tls-key {} cannot be used together: {reason}", cert.display(), key.display())]
    BadPair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// A node's loaded TLS material.
pub struct Tls {
    pub files: TlsFiles,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Vec<u8>,
    admin: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

fn read(flag: &'static str, file: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(file).map_err(|source| TlsConfigError::Read {
        flag,
        file: file.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file (at least one).
pub fn parse_certs(
    flag: &'static str,
    file: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::BadPem {
            flag,
            file: file.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            flag,
            file: file.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn parse_key(file: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(k) => Ok(k),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(TlsConfigError::NoKey {
            file: file.to_path_buf(),
        }),
        Err(e) => Err(TlsConfigError::BadPem {
            flag: "--tls-key",
            file: file.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Reads and checks the three files.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsConfigError> {
        let cert_pem = read("--tls-cert", &files.cert)?;
        let key_pem = read("--tls-key", &files.key)?;
        let ca_pem = read("--tls-ca", &files.ca)?;
        let certs = parse_certs("--tls-cert", &files.cert, &cert_pem)?;
        let key = parse_key(&files.key, &key_pem)?;
        let ca = parse_certs("--tls-ca", &files.ca, &ca_pem)?;
        let mut roots = rustls::RootCertStore::empty();
        for c in ca {
            roots.add(c).map_err(|e| TlsConfigError::BadCa {
                file: files.ca.clone(),
                reason: e.to_string(),
            })?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsConfigError::BadCa {
                    file: files.ca.clone(),
                    reason: e.to_string(),
                })?;
        let bad_pair = |reason: String| TlsConfigError::BadPair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            reason,
        };
        let mut admin = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad_pair(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| bad_pair(e.to_string()))?;
        admin.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            files: files.clone(),
            cert_pem,
            key_pem,
            ca_pem,
            admin: Arc::new(admin),
        })
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    fn ca(&self) -> Certificate {
        Certificate::from_pem(&self.ca_pem)
    }

    /// The client listener: client certificate optional, verified against the CA when given.
    pub fn client_port(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(self.ca())
            .client_auth_optional(true)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The peer listener: a client certificate from the CA is required.
    pub fn peer_port(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(self.ca())
            .client_auth_optional(false)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// Every channel this node dials: its own certificate as identity, the CA as the only root.
    pub fn dial(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .identity(self.identity())
            .ca_certificate(self.ca())
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The admin HTTP listener's rustls configuration (optional client certificate).
    pub fn admin(&self) -> Arc<rustls::ServerConfig> {
        self.admin.clone()
    }
}

/// `https://ADDR` with TLS, `http://ADDR` without.
pub fn url(tls: Option<&Tls>, addr: &str) -> String {
    match tls {
        Some(_) => format!("https://{addr}"),
        None => format!("http://{addr}"),
    }
}

/// A tonic endpoint for `addr`, with the node's client TLS when it has TLS.
pub fn endpoint(
    tls: Option<&Tls>,
    addr: &str,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let e = tonic::transport::Endpoint::from_shared(url(tls, addr))?;
    match tls {
        Some(t) => e.tls_config(t.dial()),
        None => Ok(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).expect("write");
        p
    }

    fn files(dir: &Path) -> TlsFiles {
        let set = crate::tls::certs::generate(1, &[]).expect("certs");
        TlsFiles {
            cert: write(dir, "n.pem", set.nodes[0].cert_pem.as_bytes()),
            key: write(dir, "n.key", set.nodes[0].key_pem.as_bytes()),
            ca: write(dir, "ca.pem", set.ca.cert_pem.as_bytes()),
        }
    }

    #[test]
    fn good_files_load_and_debug_shows_paths_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = files(dir.path());
        let tls = Tls::load(&f).expect("load");
        let shown = format!("{tls:?}");
        assert!(shown.contains("n.key"));
        assert!(!shown.contains("PRIVATE KEY"));
    }

    #[test]
    fn missing_garbage_and_mismatched_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = files(dir.path());
        let mut f = good.clone();
        f.cert = dir.path().join("absent.pem");
        assert!(matches!(
            Tls::load(&f),
            Err(TlsConfigError::Read {
                flag: "--tls-cert",
                ..
            })
        ));
        let mut f = good.clone();
        f.key = write(dir.path(), "garbage.key", b"hello");
        let e = Tls::load(&f).expect_err("garbage key");
        assert!(matches!(e, TlsConfigError::NoKey { .. }));
        assert!(e.to_string().contains("garbage.key"));
        let mut f = good.clone();
        f.ca = write(
            dir.path(),
            "garbage.pem",
            b"-----BEGIN CERTIFICATE-----\n!!\n",
        );
        assert!(Tls::load(&f).is_err());
        // The key of another certificate.
        let other = crate::tls::certs::generate(1, &[]).expect("certs");
        let mut f = good;
        f.key = write(dir.path(), "other.key", other.nodes[0].key_pem.as_bytes());
        assert!(matches!(Tls::load(&f), Err(TlsConfigError::BadPair { .. })));
    }
}
