//! The tokens file (`--auth-tokens FILE`): who may call, as what.
//!
//! ```toml
//! [[token]]
//! name = "orders-service"
//! sha256 = "<64 hex digits: the SHA-256 of the token>"   # or cert_name = "<certificate name>"
//! role = "readwrite"                                      # admin | readwrite | readonly
//! prefix = "order:"                                       # optional
//! ```
//!
//! Invariants: a loaded [`Table`] came from a file that parsed completely: unknown fields,
//! duplicate names, duplicate token hashes or certificate names, and an entry with both or
//! neither of `sha256` and `cert_name` are refused with one line naming the file and the
//! field. The table holds only hashes, never tokens; a presented token is hashed and compared
//! with every entry's hash in constant time. [`Tokens::reload`] swaps in a new table only when
//! the whole new file is good; otherwise the previous one stays.
//!
//! It does not decide what an identity may do ([`super::policy`]) nor read requests
//! ([`super`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::identity::{BUILTIN_ADMIN_CERT_NAME, Identity, Role};

/// Why a tokens file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("auth tokens file {path}: cannot read it: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("auth tokens file {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    #[serde(default)]
    token: Vec<EntryFormat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFormat {
    name: String,
    sha256: Option<String>,
    cert_name: Option<String>,
    role: Role,
    prefix: Option<String>,
}

/// How an entry's caller proves itself.
enum Proof {
    TokenSha256([u8; 32]),
    CertName(String),
}

struct Entry {
    proof: Proof,
    identity: Identity,
}

/// A parsed tokens file.
#[derive(Default)]
pub struct Table {
    entries: Vec<Entry>,
}

fn decode_sha256(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Equal digests, comparing every byte (no early exit), so the time taken says nothing about
/// how much of a guess was right.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

impl Table {
    /// Parses a tokens file's text; the error names the field (and entry) at fault.
    pub fn parse(text: &str) -> Result<Table, String> {
        let file: FileFormat = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            let msg = e.message().replace('\n', " ");
            match line {
                Some(l) => format!("line {l}: {msg}"),
                None => msg,
            }
        })?;
        let mut entries: Vec<Entry> = Vec::with_capacity(file.token.len());
        for (i, t) in file.token.into_iter().enumerate() {
            let at = |field: &str, problem: &str| {
                format!("token[{i}] (name {:?}): field {field}: {problem}", t.name)
            };
            if t.name.is_empty() {
                return Err(format!("token[{i}]: field name: must not be empty"));
            }
            if entries.iter().any(|e| e.identity.name == t.name) {
                return Err(at("name", "another entry has this name"));
            }
            let proof = match (&t.sha256, &t.cert_name) {
                (Some(h), None) => Proof::TokenSha256(
                    decode_sha256(h).ok_or_else(|| at("sha256", "must be 64 hex digits"))?,
                ),
                (None, Some(c)) if !c.is_empty() => Proof::CertName(c.clone()),
                (None, Some(_)) => return Err(at("cert_name", "must not be empty")),
                (Some(_), Some(_)) => {
                    return Err(at("sha256", "give sha256 or cert_name, not both"));
                }
                (None, None) => return Err(at("sha256", "give sha256 or cert_name")),
            };
            let clash = entries.iter().any(|e| match (&e.proof, &proof) {
                (Proof::TokenSha256(a), Proof::TokenSha256(b)) => a == b,
                (Proof::CertName(a), Proof::CertName(b)) => a == b,
                _ => false,
            });
            if clash {
                return Err(match proof {
                    Proof::TokenSha256(_) => at("sha256", "another entry has this token"),
                    Proof::CertName(_) => at("cert_name", "another entry has this name"),
                });
            }
            entries.push(Entry {
                proof,
                identity: Identity {
                    name: t.name,
                    role: t.role,
                    prefix: t.prefix.map(Bytes::from),
                },
            });
        }
        Ok(Table { entries })
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Table, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|e| TokensError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Table::parse(&text).map_err(|problem| TokensError::Invalid {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// Identities in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The identity whose token is `token`. Every entry's hash is compared, in constant time.
    pub fn by_token(&self, token: &[u8]) -> Option<&Identity> {
        let digest: [u8; 32] = Sha256::digest(token).into();
        let mut found = None;
        for e in &self.entries {
            if let Proof::TokenSha256(h) = &e.proof
                && digests_equal(h, &digest)
            {
                found = Some(&e.identity);
            }
        }
        found
    }

    /// The identity a verified client certificate with these names has: the entry whose
    /// `cert_name` is one of them (the first name that has one), else the built-in admin for a
    /// certificate named `admin` unless an entry is named `admin`.
    pub fn by_cert_names(&self, names: &[String]) -> Option<Identity> {
        for n in names {
            for e in &self.entries {
                if let Proof::CertName(c) = &e.proof
                    && c == n
                {
                    return Some(e.identity.clone());
                }
            }
        }
        let builtin = names.iter().any(|n| n == BUILTIN_ADMIN_CERT_NAME)
            && !self.entries.iter().any(|e| {
                e.identity.name == BUILTIN_ADMIN_CERT_NAME
                    || matches!(&e.proof, Proof::CertName(c) if c == BUILTIN_ADMIN_CERT_NAME)
            });
        builtin.then(Identity::builtin_admin)
    }

    /// The identity named `name` (a peer forwarding for a certificate-identified client).
    pub fn by_name(&self, name: &str) -> Option<Identity> {
        match self.entries.iter().find(|e| e.identity.name == name) {
            Some(e) => Some(e.identity.clone()),
            None if name == BUILTIN_ADMIN_CERT_NAME => Some(Identity::builtin_admin()),
            None => None,
        }
    }
}

/// The live table and where it came from.
pub struct Tokens {
    path: Option<PathBuf>,
    table: RwLock<Arc<Table>>,
}

impl Tokens {
    /// Loads `path` (none: an empty table, so only the built-in admin certificate counts).
    pub fn open(path: Option<&Path>) -> Result<Tokens, TokensError> {
        let table = match path {
            Some(p) => Table::load(p)?,
            None => Table::default(),
        };
        Ok(Tokens {
            path: path.map(Path::to_path_buf),
            table: RwLock::new(Arc::new(table)),
        })
    }

    /// The table right now.
    pub fn current(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the file: a good one replaces the table (and the count of identities is
    /// returned), a bad one leaves the previous table in place. `Ok(None)`: no file.
    pub fn reload(&self) -> Result<Option<usize>, TokensError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let table = Table::load(path)?;
        let n = table.len();
        let mut slot = match self.table.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Arc::new(table);
        Ok(Some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn entry(name: &str, proof: &str, role: &str) -> String {
        format!("[[token]]\nname = \"{name}\"\n{proof}\nrole = \"{role}\"\n")
    }

    #[test]
    fn a_good_file_maps_tokens_and_certificates() {
        let text = format!(
            "{}prefix = \"order:\"\n{}",
            entry(
                "orders",
                &format!("sha256 = \"{}\"", hash("s3cret")),
                "readwrite"
            ),
            entry("ops", "cert_name = \"ops.example\"", "admin"),
        );
        let t = Table::parse(&text).expect("ok");
        assert_eq!(t.len(), 2);
        let id = t.by_token(b"s3cret").expect("ok");
        assert_eq!(id.name, "orders");
        assert_eq!(id.role, Role::Readwrite);
        assert_eq!(id.prefix.as_deref(), Some(b"order:".as_slice()));
        assert!(t.by_token(b"s3creT").is_none());
        assert!(t.by_token(b"").is_none());
        let names = vec!["10.0.0.1".to_string(), "ops.example".to_string()];
        assert_eq!(t.by_cert_names(&names).expect("ok").name, "ops");
        assert!(t.by_cert_names(&["stranger".to_string()]).is_none());
        // The certificate `certs` issues is admin unless the file says otherwise.
        assert_eq!(
            t.by_cert_names(&["admin".to_string()]),
            Some(Identity::builtin_admin())
        );
        let overridden =
            Table::parse(&entry("ro", "cert_name = \"admin\"", "readonly")).expect("ok");
        assert_eq!(
            overridden
                .by_cert_names(&["admin".to_string()])
                .expect("ok")
                .role,
            Role::Readonly
        );
        let named = Table::parse(&entry(
            "admin",
            &format!("sha256 = \"{}\"", hash("x")),
            "readonly",
        ))
        .expect("ok");
        assert!(named.by_cert_names(&["admin".to_string()]).is_none());
    }

    #[test]
    fn an_empty_file_is_an_empty_table() {
        assert!(Table::parse("").expect("ok").is_empty());
    }

    #[test]
    fn bad_files_name_the_field() {
        let h = format!("sha256 = \"{}\"", hash("t"));
        let cases = [
            (
                format!("{}color = \"red\"\n", entry("a", &h, "admin")),
                "unknown field `color`",
            ),
            (
                "[[tokens]]\nname = \"a\"\n".to_string(),
                "unknown field `tokens`",
            ),
            (entry("a", &h, "root"), "unknown variant `root`"),
            // The nodes' status-only role is for peer certificates, never for a file entry.
            (entry("a", &h, "node"), "unknown variant `node`"),
            (
                entry("a", "sha256 = \"abc\"", "admin"),
                "field sha256: must be 64 hex digits",
            ),
            (
                entry("a", &format!("sha256 = \"{}\"", "g".repeat(64)), "admin"),
                "field sha256: must be 64 hex digits",
            ),
            (
                entry("a", &format!("{h}\ncert_name = \"c\""), "admin"),
                "field sha256: give sha256 or cert_name, not both",
            ),
            (
                entry("a", "", "admin"),
                "field sha256: give sha256 or cert_name",
            ),
            (
                format!(
                    "{}{}",
                    entry("a", &h, "admin"),
                    entry("a", "cert_name = \"c\"", "admin")
                ),
                "token[1] (name \"a\"): field name: another entry has this name",
            ),
            (
                format!("{}{}", entry("a", &h, "admin"), entry("b", &h, "readonly")),
                "field sha256: another entry has this token",
            ),
            (
                "[[token]]\nrole = \"admin\"\nsha256 = \"x\"\n".to_string(),
                "missing field `name`",
            ),
            ("[[token]\n".to_string(), "line 1"),
        ];
        for (text, want) in cases {
            let e = Table::parse(&text)
                .err()
                .unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(e.contains(want), "{text:?}: {e:?} lacks {want:?}");
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }

    #[test]
    fn reload_keeps_the_old_table_on_a_bad_file() {
        let dir = tempfile::tempdir().expect("ok");
        let path = dir.path().join("tokens.toml");
        let h = format!("sha256 = \"{}\"", hash("one"));
        std::fs::write(&path, entry("one", &h, "admin")).expect("ok");
        let tokens = Tokens::open(Some(&path)).expect("ok");
        assert!(tokens.current().by_token(b"one").is_some());
        std::fs::write(&path, "[[token]]\nnope = 1\n").expect("ok");
        assert!(tokens.reload().is_err());
        assert!(tokens.current().by_token(b"one").is_some());
        std::fs::write(&path, "").expect("ok");
        assert_eq!(tokens.reload().expect("ok"), Some(0));
        assert!(tokens.current().by_token(b"one").is_none());
        let e = Tokens::open(Some(&dir.path().join("missing.toml")))
            .err()
            .expect("ok");
        assert!(e.to_string().contains("missing.toml"), "{e}");
    }
}
