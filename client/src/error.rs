//! The client's error type. Each variant tells the caller what happened to a write:
//! [`Error::Invalid`], [`Error::Unavailable`], [`Error::Overloaded`] and [`Error::DiskFull`]
//! mean it certainly took no effect;
//! [`Error::OutcomeUnknown`] means it may or may not have (never retry it blindly with a new
//! identity: read the key to find out). [`Error::Tls`] is definite too: nothing was sent.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The request was rejected as invalid; nothing was written. Do not retry.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No node could serve the request in time; nothing was written. Retry later.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The cluster refused the request as overloaded, before doing anything: nothing was
    /// written. Retry no sooner than `retry_after` (the server's hint, when it gave one), with
    /// jitter; the client already retried within its request timeout.
    #[error("overloaded: {message}")]
    Overloaded {
        retry_after: Option<Duration>,
        message: String,
    },
    /// The write may or may not have taken effect.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// A node of the shard (`node`, when the server named it) is out of disk space, so the
    /// write was refused; nothing was written. Retrying succeeds only once space is freed on
    /// that node (it then accepts writes again by itself). Reads are still served.
    #[error("disk full: {message}")]
    DiskFull { node: Option<u64>, message: String },
    /// The server did not accept this client's credentials (none, or a wrong token); nothing
    /// was done. Not retried: the same credentials fail the same way.
    #[error("{0}")]
    Unauthenticated(String),
    /// The client's identity may not do this (its role or key prefix); nothing was done. Not
    /// retried. The message is the server's, e.g. `permission denied: role readonly cannot put
    /// order:{42}:state`.
    #[error("{0}")]
    PermissionDenied(String),
    /// A node (`node`, when the server named it) runs a version that cannot do this yet (a
    /// TTL on a cluster that is being upgraded); nothing was written. Not retried: upgrade
    /// every node, then try again.
    #[error("unsupported: {message}")]
    Unsupported { node: Option<u64>, message: String },
    /// TLS could not be set up, or the server and this client do not trust each other (or do
    /// not both speak TLS); nothing was sent. Retrying does not help: fix the files or flags.
    #[error("TLS: {message}")]
    Tls {
        failure: TlsFailure,
        message: String,
    },
}

/// What went wrong with TLS (see [`Error::Tls`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// A TLS file of the client is missing, unreadable or not PEM (or only one of cert/key).
    Config,
    /// The server's certificate is not signed by the CA in `--cacert`, or does not name the
    /// host dialed.
    UntrustedServer,
    /// The server refused this client's certificate (or wants one).
    ClientRefused,
    /// The client speaks TLS, the server plaintext.
    ServerSpeaksPlaintext,
    /// The client speaks plaintext, the server TLS.
    ServerSpeaksTls,
    /// Any other failed handshake.
    Handshake,
}

impl Error {
    /// True when the operation certainly took no effect.
    pub fn is_definite(&self) -> bool {
        !matches!(self, Error::OutcomeUnknown(_))
    }
}
