//! TLS for the client: which CA to trust and which certificate to present, and what a failed
//! handshake means.
//!
//! [`TlsOptions`] names PEM files (`--cacert`, `--cert`, `--key`); [`TlsOptions::load`] reads
//! and checks them once, when the client is created, so a missing or garbage file is an
//! [`Error::Tls`] naming it before any connection is tried.
//!
//! [`tls_failure`] reads a failed call's error chain by downcasting (never by message text):
//! a rustls certificate error means the server's certificate is not trusted (or ours was
//! refused); a TLS record that is not TLS means the server speaks plaintext. A plaintext call
//! that failed without an answer from a RingKV server is followed by [`speaks_tls`], a
//! handshake that trusts no root: failing on the server's certificate proves the server speaks
//! TLS. Each is an [`Error::Tls`]: certainly not executed, and retrying does not help.
//!
//! What it does not do: trust the system's roots (a RingKV cluster has its own CA), or reload
//! files while the client runs.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::error::{Error, TlsFailure};

/// The TLS files of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// The cluster CA (PEM): the only root trusted for the servers' certificates.
    pub ca: PathBuf,
    /// A client certificate and its key (PEM), when the client proves itself with one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

fn config_error(message: String) -> Error {
    Error::Tls {
        failure: TlsFailure::Config,
        message,
    }
}

fn read(flag: &str, file: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(file)
        .map_err(|e| config_error(format!("cannot read {flag} {}: {e}", file.display())))
}

impl TlsOptions {
    /// Reads and checks the files into the channel configuration.
    pub fn load(&self) -> Result<ClientTlsConfig, Error> {
        let ca = read("--cacert", &self.ca)?;
        let certs = CertificateDer::pem_slice_iter(&ca)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                config_error(format!(
                    "--cacert {} is not valid PEM: {e}",
                    self.ca.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(config_error(format!(
                "--cacert {} holds no PEM certificate",
                self.ca.display()
            )));
        }
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca))
            .timeout(std::time::Duration::from_secs(10));
        match (&self.cert, &self.key) {
            (None, None) => {}
            (Some(cert_file), Some(key_file)) => {
                let cert = read("--cert", cert_file)?;
                let key = read("--key", key_file)?;
                if CertificateDer::pem_slice_iter(&cert)
                    .next()
                    .is_none_or(|c| c.is_err())
                {
                    return Err(config_error(format!(
                        "--cert {} holds no PEM certificate",
                        cert_file.display()
                    )));
                }
                if PrivateKeyDer::from_pem_slice(&key).is_err() {
                    return Err(config_error(format!(
                        "--key {} holds no PEM private key",
                        key_file.display()
                    )));
                }
                config = config.identity(Identity::from_pem(cert, key));
            }
            _ => {
                return Err(config_error(
                    "give both --cert and --key, or neither".to_string(),
                ));
            }
        }
        Ok(config)
    }
}

/// What a failed call's error chain says about TLS, when it says anything. `tls_on`: whether
/// this client spoke TLS to the server.
pub(crate) fn tls_failure(s: &tonic::Status, tls_on: bool) -> Option<Error> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = src {
        let found = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(r) = found {
            return Some(from_rustls(r));
        }
        src = e.source();
    }
    let _ = tls_on;
    None
}

/// Whether the server at `addr` speaks TLS: a handshake that trusts no root at all fails on
/// the server's certificate only when the server sent one. Used only after a plaintext call
/// failed without an answer from a RingKV server, to say why.
pub(crate) async fn speaks_tls(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(name) = rustls_pki_types::ServerName::try_from(host.to_string()) else {
        return false;
    };
    let Ok(builder) = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions() else {
        return false;
    };
    let config = builder
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let probe = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let err = connector.connect(name, tcp).await.err()?;
        let r = err.get_ref()?.downcast_ref::<rustls::Error>()?;
        Some(matches!(r, rustls::Error::InvalidCertificate(_)))
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The error of a plaintext call to a server that speaks TLS.
pub(crate) fn server_speaks_tls(addr: &str) -> Error {
    Error::Tls {
        failure: TlsFailure::ServerSpeaksTls,
        message: format!(
            "{addr} requires TLS and this client speaks plaintext: give --cacert with the cluster CA"
        ),
    }
}

fn from_rustls(e: &rustls::Error) -> Error {
    use rustls::{AlertDescription, CertificateError, Error as R};
    let (failure, message) = match e {
        R::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            (
                TlsFailure::UntrustedServer,
                format!("the server's certificate is not signed by the CA in --cacert ({e})"),
            )
        }
        R::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => (
            TlsFailure::UntrustedServer,
            format!("the server's certificate does not name the host dialed ({e})"),
        ),
        R::InvalidCertificate(_) => (
            TlsFailure::UntrustedServer,
            format!("the server's certificate is not trusted ({e})"),
        ),
        R::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateRequired
            | AlertDescription::CertificateUnknown
            | AlertDescription::DecryptError,
        ) => (
            TlsFailure::ClientRefused,
            format!(
                "the server refused this client's certificate, or needs one (--cert/--key) ({e})"
            ),
        ),
        R::InvalidMessage(_) | R::InappropriateMessage { .. } => (
            TlsFailure::ServerSpeaksPlaintext,
            format!("the server does not speak TLS (drop --cacert, or give the server TLS) ({e})"),
        ),
        other => (
            TlsFailure::Handshake,
            format!("TLS handshake failed: {other}"),
        ),
    };
    Error::Tls { failure, message }
}
