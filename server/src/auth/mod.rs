//! Client authentication and authorization.
//!
//! Two layers, so no RPC can be served unchecked:
//! 1. Authentication ([`Auth::interceptor`], in front of the `Kv` and `Cluster` services):
//!    every call gets a [`Caller`] in its request extensions, or is refused `UNAUTHENTICATED`
//!    when auth is on and the call proves nothing (or something invalid).
//! 2. Authorization ([`authorize`]): every handler names its [`Action`]s and gets the caller
//!    back only when they are allowed; the only way a handler reaches the caller (which it
//!    needs to forward a request) is through this check.
//!
//! How a caller proves itself, in this order:
//! - `x-ringkv-on-behalf-of: NAME` (a node forwarding for a certificate-identified client):
//!   accepted only from a caller whose verified certificate is a cluster peer's; then NAME is
//!   the identity. From anyone else the call is refused as unauthenticated.
//! - `authorization: Bearer TOKEN`: the token must be valid, and then it decides (a
//!   certificate presented too is not consulted): a wrong token is refused, not downgraded.
//! - a verified client certificate: the tokens-file entry whose `cert_name` is one of its
//!   names, or the built-in admin for a certificate named `admin`;
//! - a verified certificate that passes the peer check (a cluster node's): the status-only
//!   `node` role, so nodes can ask each other's client ports for status without a token.
//!
//! Auth is on when the node has a tokens file (`--auth-tokens`) or TLS
//! (`AuthSettings::require_identity`); without either, every call may do everything, as
//! before, and credentials are ignored. With TLS and no tokens file the only identities are
//! the built-in admin certificate and the nodes' certificates: a client without a certificate,
//! or with one of another name, is refused.
//! A forwarded request carries the client's proof (its `authorization` value unchanged, or
//! `x-ringkv-on-behalf-of`), never the forwarding node's, so the leader decides again.
//! Tokens never reach logs, metrics or error messages; [`Caller`]'s `Debug` hides them.

pub mod identity;
pub mod policy;
pub mod tokens;

use std::path::PathBuf;
use std::sync::Arc;

use ringkv_proto::meta;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::{Request, Status};

pub use identity::{Identity, Role};
pub use policy::{Action, Denied};
pub use tokens::{Table, Tokens, TokensError};

use crate::service::error::KvError;

/// The gRPC metadata key of a bearer token.
const AUTHORIZATION: &str = "authorization";
const BEARER: &str = "Bearer ";

/// When and from where a node authenticates clients (part of the node's `Config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthSettings {
    /// `--auth-tokens FILE` (only the path: the file is read at start and on SIGHUP).
    pub tokens_file: Option<PathBuf>,
    /// Every call must prove an identity even without a tokens file (set when TLS is on).
    pub require_identity: bool,
}

impl AuthSettings {
    /// Whether calls must authenticate.
    pub fn enabled(&self) -> bool {
        self.tokens_file.is_some() || self.require_identity
    }
}

/// Whether the given certificate names are those of a cluster peer (a node of this cluster).
pub type PeerCheck = Arc<dyn Fn(&[String]) -> bool + Send + Sync>;

/// A peer check that accepts no one (no peer certificates without TLS).
pub fn no_peers() -> PeerCheck {
    Arc::new(|_: &[String]| false)
}

/// The node's authenticator: settings, the live tokens table, the peer check.
pub struct Auth {
    enabled: bool,
    tokens: Tokens,
    is_peer: PeerCheck,
}

/// How a forwarded request proves the client's identity to the leader.
#[derive(Clone)]
enum Onward {
    /// The client's `authorization` value, unchanged.
    Bearer(AsciiMetadataValue),
    /// The identity's name, for a certificate-identified client.
    OnBehalfOf(AsciiMetadataValue),
    /// Nothing: a cluster node's own certificate proves it again at the next node.
    PeerCertificate,
}

#[derive(Clone)]
enum CallerKind {
    /// Auth is off: everything is allowed.
    Open,
    Known {
        identity: Arc<Identity>,
        onward: Onward,
    },
}

/// Who made a call; put in the request's extensions by [`Auth::interceptor`] and handed to a
/// handler only by [`authorize`].
#[derive(Clone)]
pub struct Caller(CallerKind);

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            CallerKind::Open => f.write_str("Caller(open)"),
            CallerKind::Known { identity, .. } => write!(
                f,
                "Caller({} as {})",
                identity::escape_key(identity.name.as_bytes()),
                identity.role
            ),
        }
    }
}

fn unauthenticated(why: &str) -> KvError {
    KvError::Unauthenticated(why.to_string())
}

impl Auth {
    /// Reads the tokens file (if any). An unreadable or invalid file is an error naming it.
    pub fn new(settings: &AuthSettings, is_peer: PeerCheck) -> Result<Auth, TokensError> {
        Ok(Auth {
            enabled: settings.enabled(),
            tokens: Tokens::open(settings.tokens_file.as_deref())?,
            is_peer,
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The live table (for reloads and counts).
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// Re-reads the tokens file and logs the result: how many identities a good file holds,
    /// or why a bad one was refused (the previous table stays). Never logs a token or hash.
    pub fn reload_and_log(&self) {
        match self.tokens.reload() {
            Ok(Some(n)) => tracing::info!(identities = n, "auth tokens file reloaded"),
            Ok(None) => tracing::info!("SIGHUP: no auth tokens file to reload"),
            Err(e) => {
                tracing::error!(error = %e, "auth tokens file refused; keeping the previous table")
            }
        }
    }

    /// Who made the call with this metadata and (verified) certificate names.
    fn identify(&self, md: &MetadataMap, cert_names: Option<&[String]>) -> Result<Caller, KvError> {
        if !self.enabled {
            return Ok(Caller(CallerKind::Open));
        }
        let table = self.tokens.current();
        if let Some(v) = md.get(meta::ON_BEHALF_OF) {
            let is_peer = cert_names.is_some_and(|n| (self.is_peer)(n));
            if !is_peer {
                return Err(unauthenticated(
                    "only a cluster node may forward on behalf of a client",
                ));
            }
            let name = v
                .to_str()
                .map_err(|_| unauthenticated("the on-behalf-of name is not ASCII"))?;
            let identity = table
                .by_name(name)
                .ok_or_else(|| unauthenticated("a forwarded identity this node does not know"))?;
            return Ok(Caller(CallerKind::Known {
                identity: Arc::new(identity),
                onward: Onward::OnBehalfOf(v.clone()),
            }));
        }
        if let Some(v) = md.get(AUTHORIZATION) {
            let token = v
                .to_str()
                .ok()
                .and_then(|s| s.strip_prefix(BEARER))
                .ok_or_else(|| {
                    unauthenticated("the authorization metadata is not \"Bearer TOKEN\"")
                })?;
            let identity = table
                .by_token(token.trim().as_bytes())
                .ok_or_else(|| unauthenticated("the token is not valid"))?;
            return Ok(Caller(CallerKind::Known {
                identity: Arc::new(identity.clone()),
                onward: Onward::Bearer(v.clone()),
            }));
        }
        if let Some(names) = cert_names
            && let Some(identity) = table.by_cert_names(names)
        {
            let onward = AsciiMetadataValue::try_from(identity.name.as_str())
                .map_err(|_| unauthenticated("the certificate's identity name is not ASCII"))?;
            return Ok(Caller(CallerKind::Known {
                identity: Arc::new(identity),
                onward: Onward::OnBehalfOf(onward),
            }));
        }
        if let Some(names) = cert_names
            && let Some(first) = names.first()
            && (self.is_peer)(names)
        {
            return Ok(Caller(CallerKind::Known {
                identity: Arc::new(Identity::node(first)),
                onward: Onward::PeerCertificate,
            }));
        }
        Err(match cert_names {
            Some(_) => unauthenticated("the client certificate has no role on this cluster"),
            None => unauthenticated(
                "authentication required: send a bearer token (--token) or a client certificate",
            ),
        })
    }

    /// Authenticates `request` and records its [`Caller`] in its extensions.
    pub fn authenticate<T>(&self, request: &mut Request<T>) -> Result<(), Status> {
        let names = if self.enabled {
            crate::tls::names::caller_cert_names(request)
                .map_err(|e| Status::from(unauthenticated(&e.to_string())))?
        } else {
            None
        };
        let caller = self.identify(request.metadata(), names.as_deref())?;
        request.extensions_mut().insert(caller);
        Ok(())
    }

    /// The tonic interceptor that authenticates every call of a service.
    pub fn interceptor(
        self: &Arc<Self>,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static
    {
        let auth = self.clone();
        move |mut req: Request<()>| {
            auth.authenticate(&mut req)?;
            Ok(req)
        }
    }
}

/// The environment variable holding the bearer token this node sends when it asks its peers'
/// client ports for their status (bootstrap, re-admission, joining). Read from the
/// environment only, so it never appears in the logged configuration. Without TLS, a node of
/// a cluster started with `--auth-tokens` needs it (any role will do: status is all it asks).
pub const NODE_TOKEN_ENV: &str = "RINGKV_NODE_TOKEN";

/// Adds this node's own credentials (see [`NODE_TOKEN_ENV`]) to a request it makes to a peer.
pub fn with_node_credentials<T>(request: &mut Request<T>) {
    if let Ok(t) = std::env::var(NODE_TOKEN_ENV)
        && let Ok(v) = AsciiMetadataValue::try_from(format!("{BEARER}{t}"))
    {
        request.metadata_mut().insert(AUTHORIZATION, v);
    }
}

fn caller_of<T>(request: &Request<T>) -> Result<&Caller, KvError> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| unauthenticated("the call was not authenticated"))
}

/// The caller of `request` when it may do every one of `actions` (in order; the first refused
/// one is the error). A call that never went through [`Auth::interceptor`] is refused.
pub fn authorize<'a, T>(
    request: &Request<T>,
    actions: impl IntoIterator<Item = Action<'a>>,
) -> Result<Caller, KvError> {
    let caller = caller_of(request)?;
    if let CallerKind::Known { identity, .. } = &caller.0 {
        for a in actions {
            policy::authorize(identity, &a)
                .map_err(|d| KvError::PermissionDenied(d.to_string()))?;
        }
    }
    Ok(caller.clone())
}

impl Caller {
    /// The prefix a scan of `requested` must read (see [`policy::scan_prefix`]).
    pub fn scan_prefix<'a>(&'a self, requested: &'a [u8]) -> Result<&'a [u8], KvError> {
        match &self.0 {
            CallerKind::Open => Ok(requested),
            CallerKind::Known { identity, .. } => policy::scan_prefix(identity, requested)
                .map_err(|d| KvError::PermissionDenied(d.to_string())),
        }
    }

    /// `msg` as a request to another node that carries this caller's proof.
    pub fn onward<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let CallerKind::Known { onward, .. } = &self.0 {
            let md = req.metadata_mut();
            match onward {
                Onward::Bearer(v) => {
                    md.insert(AUTHORIZATION, v.clone());
                }
                Onward::OnBehalfOf(v) => {
                    md.insert(meta::ON_BEHALF_OF, v.clone());
                }
                Onward::PeerCertificate => {}
            }
        }
        req
    }

    /// Marks `request` (built in this process, e.g. a batch item) as made by this caller.
    pub fn attach<T>(&self, request: &mut Request<T>) {
        request.extensions_mut().insert(self.clone());
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    fn auth_with(text: &str, is_peer: PeerCheck) -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().expect("ok");
        let path = dir.path().join("t.toml");
        std::fs::write(&path, text).expect("ok");
        let s = AuthSettings {
            tokens_file: Some(path),
            require_identity: false,
        };
        let a = Auth::new(&s, is_peer).expect("ok");
        (dir, a)
    }

    fn file() -> String {
        let h: String = Sha256::digest(b"tok")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!(
            "[[token]]\nname = \"app\"\nsha256 = \"{h}\"\nrole = \"readonly\"\n\
             [[token]]\nname = \"svc\"\ncert_name = \"svc.local\"\nrole = \"readwrite\"\n"
        )
    }

    fn md(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().expect("ok"));
        }
        m
    }

    fn name_of(c: &Caller) -> Option<String> {
        match &c.0 {
            CallerKind::Known { identity, .. } => Some(identity.name.clone()),
            CallerKind::Open => None,
        }
    }

    #[test]
    fn off_without_tokens_or_tls() {
        let a = Auth::new(&AuthSettings::default(), no_peers()).expect("ok");
        let c = a
            .identify(&md(&[("authorization", "Bearer junk")]), None)
            .expect("ok");
        assert!(matches!(c.0, CallerKind::Open));
    }

    #[test]
    fn certificates_map_to_roles() {
        let (_d, a) = auth_with(&file(), no_peers());
        let svc = ["svc.local".to_string()];
        assert_eq!(
            name_of(&a.identify(&md(&[]), Some(&svc)).expect("ok")).as_deref(),
            Some("svc")
        );
        let admin = ["admin".to_string()];
        assert_eq!(
            name_of(&a.identify(&md(&[]), Some(&admin)).expect("ok")).as_deref(),
            Some("admin")
        );
        assert!(a.identify(&md(&[]), Some(&["other".to_string()])).is_err());
        // A presented token decides, even with a certificate.
        let c = a
            .identify(&md(&[("authorization", "Bearer tok")]), Some(&admin))
            .expect("ok");
        assert_eq!(name_of(&c).as_deref(), Some("app"));
        assert!(
            a.identify(&md(&[("authorization", "Bearer bad")]), Some(&admin))
                .is_err()
        );
    }

    #[test]
    fn on_behalf_of_only_from_peers() {
        let (_d, a) = auth_with(&file(), no_peers());
        let m = md(&[(meta::ON_BEHALF_OF, "svc")]);
        assert!(a.identify(&m, None).is_err());
        assert!(a.identify(&m, Some(&["node-1".to_string()])).is_err());
        let (_d2, b) = auth_with(
            &file(),
            Arc::new(|n: &[String]| n.iter().any(|x| x == "node-1")),
        );
        let c = b.identify(&m, Some(&["node-1".to_string()])).expect("ok");
        assert_eq!(name_of(&c).as_deref(), Some("svc"));
        assert!(b.identify(&m, Some(&["node-2".to_string()])).is_err());
        // The forwarded request carries the same claim onward.
        let fwd = c.onward(());
        assert_eq!(fwd.metadata().get(meta::ON_BEHALF_OF).expect("ok"), "svc");
        assert!(fwd.metadata().get(AUTHORIZATION).is_none());
    }

    #[test]
    fn bearer_tokens_are_forwarded_unchanged_and_never_printed() {
        let (_d, a) = auth_with(&file(), no_peers());
        assert!(a.identify(&md(&[]), None).is_err());
        assert!(a.identify(&md(&[("authorization", "tok")]), None).is_err());
        let c = a
            .identify(&md(&[("authorization", "Bearer tok")]), None)
            .expect("ok");
        let fwd = c.onward(1u8);
        assert_eq!(fwd.metadata().get(AUTHORIZATION).expect("ok"), "Bearer tok");
        assert!(!format!("{c:?}").contains("tok"));
    }

    #[test]
    fn with_tls_and_no_tokens_file_only_certificates_with_a_role_get_in() {
        let s = AuthSettings {
            tokens_file: None,
            require_identity: true,
        };
        let a =
            Auth::new(&s, Arc::new(|n: &[String]| n.iter().any(|x| x == "node-1"))).expect("ok");
        assert!(a.enabled());
        assert!(a.identify(&md(&[]), None).is_err());
        assert!(
            a.identify(&md(&[("authorization", "Bearer tok")]), None)
                .is_err()
        );
        assert!(
            a.identify(&md(&[]), Some(&["stranger".to_string()]))
                .is_err()
        );
        let admin = a
            .identify(&md(&[]), Some(&["admin".to_string()]))
            .expect("ok");
        assert_eq!(name_of(&admin).as_deref(), Some("admin"));
        // A node's certificate: status, and nothing else.
        let node = a
            .identify(&md(&[]), Some(&["node-1".to_string()]))
            .expect("ok");
        let mut r = Request::new(());
        node.attach(&mut r);
        assert!(authorize(&r, [Action::Status]).is_ok());
        assert!(matches!(
            authorize(&r, [Action::Get { key: b"k" }]),
            Err(KvError::PermissionDenied(_))
        ));
        assert!(matches!(
            authorize(&r, [Action::MemberRemove]),
            Err(KvError::PermissionDenied(_))
        ));
        // Its requests onward carry no claim: its certificate proves it again.
        let fwd = node.onward(());
        assert!(fwd.metadata().get(AUTHORIZATION).is_none());
        assert!(fwd.metadata().get(meta::ON_BEHALF_OF).is_none());
    }

    #[test]
    fn unauthenticated_requests_are_refused_by_authorize() {
        let r = Request::new(());
        assert!(matches!(
            authorize(&r, [Action::Status]),
            Err(KvError::Unauthenticated(_))
        ));
    }
}
