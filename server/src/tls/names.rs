//! The names a certificate speaks for, and the certificate the caller of an RPC presented.
//!
//! A name is a DNS subject alternative name, an IP address SAN (in its usual text form), or the
//! subject's common name, in that order, without duplicates. Peer checks (is this a node on the
//! peer list?) and client roles (`cert_name` in the tokens file) both match against these.
//!
//! Invariants: the names come only from a certificate the TLS layer has already verified
//! against the cluster CA (tonic exposes the chain only after a successful handshake); a
//! certificate that does not parse yields [`CertNameError`], never a panic and never an empty
//! list taken for "anyone".
//!
//! What it does not do: verify signatures, validity periods or key usage (rustls did that
//! during the handshake), or decide what a name may do.

use std::net::IpAddr;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A presented certificate could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CertNameError {
    /// The DER bytes are not an X.509 certificate, or its SAN extension is malformed. Not
    /// retryable: the same certificate fails the same way.
    #[error("the presented certificate cannot be parsed: {0}")]
    Malformed(String),
}

/// The names of one DER-encoded certificate: SAN DNS names, SAN IP addresses, then the
/// subject's common names.
pub fn cert_names(der: &[u8]) -> Result<Vec<String>, CertNameError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| CertNameError::Malformed(e.to_string()))?;
    let mut names: Vec<String> = Vec::new();
    let mut push = |n: String| {
        if !names.contains(&n) {
            names.push(n);
        }
    };
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertNameError::Malformed(e.to_string()))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => push(dns.to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(cn) = cn.as_str() {
            push(cn.to_string());
        }
    }
    Ok(names)
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The names of the end-entity certificate the caller of `request` presented and the TLS
/// layer verified. `Ok(None)`: no client certificate (plaintext, or TLS without one).
pub fn caller_cert_names<T>(
    request: &tonic::Request<T>,
) -> Result<Option<Vec<String>>, CertNameError> {
    let Some(chain) = request.peer_certs() else {
        return Ok(None);
    };
    match chain.first() {
        Some(leaf) => cert_names(leaf.as_ref()).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_malformed_certificate_not_a_panic() {
        assert!(matches!(
            cert_names(b"not a certificate"),
            Err(CertNameError::Malformed(_))
        ));
        assert!(matches!(cert_names(&[]), Err(CertNameError::Malformed(_))));
    }

    #[test]
    fn dns_and_ip_sans_come_before_the_common_name_once_each() {
        let mut params =
            rcgen::CertificateParams::new(vec!["node-1".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "node-1");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            cert_names(cert.der()).expect("names"),
            vec!["node-1".to_string(), "127.0.0.1".to_string()]
        );
    }

    #[test]
    fn ip_sans_read_in_their_text_form() {
        assert_eq!(
            ip_from_bytes(&[127, 0, 0, 1]),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(ip_from_bytes(&[1, 2, 3]), None);
    }
}
