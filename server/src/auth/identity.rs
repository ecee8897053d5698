//! Who an authenticated caller is: a name from the tokens file, a role, and optionally the one
//! key prefix it may touch.
//!
//! Invariant: an [`Identity`] exists only for a caller that proved itself (a valid bearer token,
//! a verified client certificate, or a cluster peer speaking for one of these). It holds no
//! secret, so it may be logged. It does not decide what the caller may do: [`super::policy`]
//! does.

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;

/// What an identity may do (see [`super::policy`] for the exact table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including membership changes and backups.
    Admin,
    /// Reads and writes of keys (within the prefix), and status.
    Readwrite,
    /// Reads of keys (within the prefix), and status.
    Readonly,
    /// Status only: a cluster node identified by its peer certificate, asking another node's
    /// client port for status (bootstrap, re-admission, joining). Never read from a tokens
    /// file: only a certificate that passes the peer check gets it.
    #[serde(skip_deserializing)]
    Node,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Readwrite => "readwrite",
            Role::Readonly => "readonly",
            Role::Node => "node",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The entry's `name` in the tokens file (or `admin` for the built-in certificate name).
    pub name: String,
    pub role: Role,
    /// When set, every key this identity touches must start with these bytes.
    pub prefix: Option<Bytes>,
}

/// The name a client certificate carries to get the admin role when the tokens file has no
/// entry of that name (the certificate `ringkv-server certs` issues).
pub const BUILTIN_ADMIN_CERT_NAME: &str = "admin";

/// The prefix of a [`Role::Node`] identity's name (then the certificate's first name), so a
/// node can never pass for a tokens-file entry.
pub const NODE_IDENTITY_PREFIX: &str = "node certificate ";

impl Identity {
    /// The status-only identity of a cluster node's certificate named `cert_name`.
    pub fn node(cert_name: &str) -> Identity {
        Identity {
            name: format!("{NODE_IDENTITY_PREFIX}{cert_name}"),
            role: Role::Node,
            prefix: None,
        }
    }

    /// The admin identity of a certificate named [`BUILTIN_ADMIN_CERT_NAME`].
    pub fn builtin_admin() -> Identity {
        Identity {
            name: BUILTIN_ADMIN_CERT_NAME.to_string(),
            role: Role::Admin,
            prefix: None,
        }
    }
}

/// `key` for a message: printable ASCII as it is, every other byte (and `\`) as `\xNN`, so a
/// non-UTF-8 key or one with control characters cannot garble a log line or a terminal.
pub fn escape_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_escaped_for_messages() {
        assert_eq!(escape_key(b"order:{42}:state"), "order:{42}:state");
        assert_eq!(escape_key(b"a\\b\n\xff"), "a\\x5cb\\x0a\\xff");
    }
}
