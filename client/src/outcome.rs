//! Outcome classification: what one failed attempt tells the client about its request.
//!
//! [`classify`] turns a failed attempt's `Status` into a [`Failure`] using typed facts only:
//! the RingKV error kind a server attached ([`meta::ERROR_KIND`]), the leader hint, the gRPC
//! code, and, when no RingKV server answered, whether the error chain shows the connection
//! was never established ([`never_connected`]: tonic's `ConnectError` or an `io::Error` of kind
//! `ConnectionRefused`, found by downcasting). No decision reads an error's message text.
//!
//! Invariants:
//! - A write is [`Failure::Definite`] only when the server said so with its kind, or when the
//!   request provably never left this client (no connection). Any other failure of a write
//!   without a RingKV kind is [`Failure::Unknown`]: the request may have reached a leader.
//! - A read is never `Unknown`: it changes nothing, so a failed read can always be retried.
//!
//! An overload refusal ([`meta::KIND_OVERLOADED`]) is definite and carries the server's
//! retry-after hint ([`meta::RETRY_AFTER_MS`]) when it sent a valid one.
//!
//! It does not decide what to do next (redirect, back off, give up): the retry loop in
//! `client.rs` does, and an attempt that timed out without any answer is classified there.

use std::time::Duration;

use ringkv_proto::meta;
use tonic::{Code, Status};

/// How one failed attempt bears on the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Retry at this address: right away, or after a pause if this request already tried it.
    Redirect(String),
    /// Certainly not executed; retry after a pause, elsewhere.
    Definite(String),
    /// May have executed.
    Unknown(String),
    /// Give up now.
    Invalid(String),
    /// Certainly not executed: the node refused it as overloaded. Retry no sooner than
    /// `retry_after` when the server gave one.
    Overloaded {
        retry_after: Option<Duration>,
        message: String,
    },
    /// Give up now: a node of the shard (named when the server said which) is out of disk
    /// space; nothing was written, and retrying helps only once space is freed.
    DiskFull { node: Option<u64>, message: String },
    /// Give up now: the credentials were not accepted (nothing done).
    Unauthenticated(String),
    /// Give up now: the identity may not do this (nothing done).
    PermissionDenied(String),
    /// Give up now: a node (named when the server said which) cannot do this yet (nothing
    /// done).
    Unsupported { node: Option<u64>, message: String },
}

impl Failure {
    /// The client error of a failure that ends the request at once, whatever came before.
    pub(crate) fn refusal(&self) -> Option<crate::error::Error> {
        match self {
            Failure::Unauthenticated(m) => Some(crate::error::Error::Unauthenticated(m.clone())),
            Failure::PermissionDenied(m) => Some(crate::error::Error::PermissionDenied(m.clone())),
            Failure::Unsupported { node, message } => Some(crate::error::Error::Unsupported {
                node: *node,
                message: message.clone(),
            }),
            _ => None,
        }
    }
}

/// Classifies a failed attempt at a read (`is_write` false) or a write.
pub(crate) fn classify(s: &Status, is_write: bool) -> Failure {
    let kind = s
        .metadata()
        .get(meta::ERROR_KIND)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let msg = s.message().to_string();
    match kind {
        meta::KIND_INVALID => Failure::Invalid(msg),
        meta::KIND_NOT_LEADER => match s
            .metadata()
            .get(meta::LEADER_ADDR)
            .and_then(|v| v.to_str().ok())
        {
            Some(addr) => Failure::Redirect(addr.to_string()),
            None => Failure::Definite(msg),
        },
        meta::KIND_NO_LEADER | meta::KIND_SHUTTING_DOWN | meta::KIND_INTERNAL => {
            Failure::Definite(msg)
        }
        meta::KIND_OVERLOADED => Failure::Overloaded {
            retry_after: s
                .metadata()
                .get(meta::RETRY_AFTER_MS)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis),
            message: msg,
        },
        meta::KIND_DISK_FULL => Failure::DiskFull {
            node: s
                .metadata()
                .get(meta::FULL_NODE_ID)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            message: msg,
        },
        meta::KIND_OUTCOME_UNKNOWN => Failure::Unknown(msg),
        meta::KIND_UNAUTHENTICATED => Failure::Unauthenticated(msg),
        meta::KIND_PERMISSION_DENIED => Failure::PermissionDenied(msg),
        meta::KIND_FEATURE_UNSUPPORTED => Failure::Unsupported {
            node: s
                .metadata()
                .get(meta::LACKING_NODE_ID)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            message: msg,
        },
        // No kind, or one this client does not know: a transport failure or a foreign server.
        _ => without_kind(s, is_write, msg),
    }
}

/// A failure that carries no RingKV kind.
fn without_kind(s: &Status, is_write: bool, msg: String) -> Failure {
    if s.code() == Code::InvalidArgument || s.code() == Code::OutOfRange {
        return Failure::Invalid(msg);
    }
    // The server has no such method (a version before it): it ran nothing.
    if s.code() == Code::Unimplemented {
        return Failure::Unsupported {
            node: None,
            message: format!("the node does not have this RPC (an older version): {msg}"),
        };
    }
    let described = format!("{:?}: {msg}", s.code());
    if !is_write || never_connected(s) {
        Failure::Definite(described)
    } else {
        Failure::Unknown(described)
    }
}

/// True when the error chain shows the connection to the node was never established, so the
/// request was never sent: tonic wraps every failure of its connector (TCP connect refused or
/// timed out, address resolution) in `tonic::ConnectError`; a refused connect also shows as
/// `io::ErrorKind::ConnectionRefused` further down.
pub(crate) fn never_connected(s: &Status) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = src {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        src = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::io;

    use bytes::Bytes;
    use ringkv_proto::pb::PutRequest;
    use ringkv_proto::pb::kv_client::KvClient;
    use tokio::io::AsyncReadExt;
    use tonic::metadata::MetadataValue;
    use tonic::transport::Endpoint;

    use super::*;
    use crate::{Client, ClientOptions, Error};

    fn status(code: Code, kind: Option<&'static str>, leader: Option<&'static str>) -> Status {
        let mut s = Status::new(code, "the message");
        if let Some(k) = kind {
            s.metadata_mut()
                .insert(meta::ERROR_KIND, MetadataValue::from_static(k));
        }
        if let Some(l) = leader {
            s.metadata_mut()
                .insert(meta::LEADER_ADDR, MetadataValue::from_static(l));
        }
        s
    }

    fn both(s: &Status) -> [Failure; 2] {
        [classify(s, false), classify(s, true)]
    }

    fn definite() -> Failure {
        Failure::Definite("the message".into())
    }

    #[test]
    fn kind_invalid_gives_up_for_reads_and_writes() {
        let s = status(Code::InvalidArgument, Some(meta::KIND_INVALID), None);
        assert_eq!(
            both(&s),
            [0, 1].map(|_| Failure::Invalid("the message".into()))
        );
        // The kind decides, not the code.
        let s = status(Code::FailedPrecondition, Some(meta::KIND_INVALID), None);
        assert_eq!(classify(&s, true), Failure::Invalid("the message".into()));
    }

    #[test]
    fn kind_not_leader_redirects_to_the_hinted_leader() {
        let s = status(
            Code::FailedPrecondition,
            Some(meta::KIND_NOT_LEADER),
            Some("10.0.0.2:7000"),
        );
        assert_eq!(
            both(&s),
            [0, 1].map(|_| Failure::Redirect("10.0.0.2:7000".into()))
        );
    }

    #[test]
    fn kind_not_leader_without_a_hint_is_definite() {
        let s = status(Code::FailedPrecondition, Some(meta::KIND_NOT_LEADER), None);
        assert_eq!(both(&s), [definite(), definite()]);
    }

    #[test]
    fn kinds_that_were_not_applied_are_definite_even_for_writes() {
        for kind in [
            meta::KIND_NO_LEADER,
            meta::KIND_SHUTTING_DOWN,
            meta::KIND_INTERNAL,
        ] {
            // Codes that would be unknown without the kind.
            for code in [Code::Unavailable, Code::Internal, Code::ResourceExhausted] {
                let s = status(code, Some(kind), None);
                assert_eq!(both(&s), [definite(), definite()], "{kind} with {code:?}");
            }
        }
    }

    #[test]
    fn kind_overloaded_is_definite_and_carries_the_retry_after_hint() {
        let overloaded = |retry_after| Failure::Overloaded {
            retry_after,
            message: "the message".into(),
        };
        for code in [Code::ResourceExhausted, Code::Unavailable, Code::Internal] {
            let mut s = status(code, Some(meta::KIND_OVERLOADED), None);
            assert_eq!(both(&s), [0, 1].map(|_| overloaded(None)), "{code:?}");
            s.metadata_mut()
                .insert(meta::RETRY_AFTER_MS, MetadataValue::from_static("75"));
            assert_eq!(
                both(&s),
                [0, 1].map(|_| overloaded(Some(Duration::from_millis(75))))
            );
            // A hint that is not a number is no hint; the refusal stays definite.
            s.metadata_mut()
                .insert(meta::RETRY_AFTER_MS, MetadataValue::from_static("soon"));
            assert_eq!(classify(&s, true), overloaded(None));
        }
    }

    #[test]
    fn kind_disk_full_gives_up_naming_the_node() {
        let mut s = status(Code::ResourceExhausted, Some(meta::KIND_DISK_FULL), None);
        assert_eq!(
            both(&s),
            [0, 1].map(|_| Failure::DiskFull {
                node: None,
                message: "the message".into()
            })
        );
        s.metadata_mut()
            .insert(meta::FULL_NODE_ID, MetadataValue::from_static("2"));
        assert_eq!(
            classify(&s, true),
            Failure::DiskFull {
                node: Some(2),
                message: "the message".into()
            }
        );
    }

    #[test]
    fn kind_outcome_unknown_is_unknown_even_for_reads() {
        let s = status(Code::Unavailable, Some(meta::KIND_OUTCOME_UNKNOWN), None);
        assert_eq!(
            both(&s),
            [0, 1].map(|_| Failure::Unknown("the message".into()))
        );
    }

    #[test]
    fn no_kind_with_an_invalid_code_gives_up() {
        for code in [Code::InvalidArgument, Code::OutOfRange] {
            let s = status(code, None, None);
            assert_eq!(
                both(&s),
                [0, 1].map(|_| Failure::Invalid("the message".into())),
                "{code:?}"
            );
        }
    }

    #[test]
    fn no_kind_on_a_read_is_definite() {
        for code in [
            Code::Unavailable,
            Code::Unknown,
            Code::Internal,
            Code::Cancelled,
        ] {
            let s = status(code, None, None);
            assert_eq!(
                classify(&s, false),
                Failure::Definite(format!("{code:?}: the message"))
            );
        }
    }

    #[test]
    fn no_kind_on_a_write_that_never_connected_is_definite() {
        // As tonic builds it: its connector's error around the socket's.
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let s = Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(s.code(), Code::Unavailable);
        assert!(matches!(classify(&s, true), Failure::Definite(_)));
        // A connect that timed out (no refusal anywhere): still never sent.
        let timed_out = io::Error::from(io::ErrorKind::TimedOut);
        let s = Status::from_error(Box::new(tonic::ConnectError(Box::new(timed_out))));
        assert!(matches!(classify(&s, true), Failure::Definite(_)));
        // A refusal found deeper in some other error chain.
        let s = Status::from_error(Box::new(Wrapped(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        ))));
        assert!(matches!(classify(&s, true), Failure::Definite(_)));
    }

    #[test]
    fn no_kind_on_a_write_after_connecting_is_unknown() {
        // An unknown kind is no kind: it must not be taken for a definite answer.
        let s = status(Code::Unavailable, Some("some_future_kind"), None);
        assert_eq!(
            classify(&s, true),
            Failure::Unknown("Unavailable: the message".into())
        );
        for code in [
            Code::Unavailable,
            Code::Unknown,
            Code::Internal,
            Code::Cancelled,
        ] {
            let s = status(code, None, None);
            assert!(
                matches!(classify(&s, true), Failure::Unknown(_)),
                "{code:?}"
            );
        }
        // A broken connection, its text naming a refusal: text decides nothing.
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "Connection refused");
        let s = Status::from_error(Box::new(Wrapped(reset)));
        assert!(matches!(classify(&s, true), Failure::Unknown(_)));
        assert!(matches!(classify(&s, false), Failure::Definite(_)));
    }

    #[derive(Debug)]
    struct Wrapped(io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "wrapped")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// A loopback address nobody listens on (bound once by us, then released).
    fn dead_addr() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        addr.to_string()
    }

    /// A listener that takes every connection, reads until `marker` arrives (the request was
    /// sent), then drops the connection without answering. Connections that never send the
    /// marker are dropped after a short idle time. Runs until the test's runtime ends.
    async fn hang_up_after(marker: &'static [u8]) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while seen.len() < 1 << 20 {
                        let read =
                            tokio::time::timeout(Duration::from_millis(500), sock.read(&mut buf));
                        match read.await {
                            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
                            _ => break,
                        }
                        if seen.windows(marker.len()).any(|w| w == marker) {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn put_request(key: &'static [u8]) -> PutRequest {
        PutRequest {
            header: None,
            key: Bytes::from_static(key),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        }
    }

    fn quick_client(addr: String) -> Client {
        let mut opts = ClientOptions::new(vec![addr]);
        opts.request_timeout = Duration::from_secs(5);
        opts.attempt_timeout = Duration::from_secs(2);
        opts.max_attempts = 2;
        Client::new(opts).expect("client")
    }

    #[tokio::test]
    async fn a_refused_connection_makes_a_write_definite() {
        let addr = dead_addr();
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy();
        let status = KvClient::new(channel)
            .put(put_request(b"refused-key"))
            .await
            .expect_err("nobody listens");
        assert!(never_connected(&status), "{status:?}");
        assert!(
            matches!(classify(&status, true), Failure::Definite(_)),
            "{status:?}"
        );
        // Through the public API: the write certainly took no effect.
        let err = quick_client(addr)
            .put("refused-key", "v")
            .await
            .expect_err("nobody listens");
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_connection_lost_after_the_request_was_sent_makes_a_write_unknown() {
        const MARKER: &[u8] = b"reset-after-sent-key";
        let addr = hang_up_after(MARKER).await;
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy();
        let status = tokio::time::timeout(
            Duration::from_secs(10),
            KvClient::new(channel).put(put_request(MARKER)),
        )
        .await
        .expect("the call ends when the connection drops")
        .expect_err("nobody answers");
        assert!(!never_connected(&status), "{status:?}");
        assert!(
            matches!(classify(&status, true), Failure::Unknown(_)),
            "{status:?}"
        );
        assert!(
            matches!(classify(&status, false), Failure::Definite(_)),
            "{status:?}"
        );
        // Through the public API: the write may have taken effect.
        let err = quick_client(addr)
            .put(Bytes::from_static(MARKER), "v")
            .await
            .expect_err("nobody answers");
        assert!(matches!(err, Error::OutcomeUnknown(_)), "{err:?}");
    }
}
