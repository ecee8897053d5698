//! Errors of the Raft transport, both sides, and the one place they are mapped.
//!
//! Sending side: openraft's backoff is decided by the error kind this module gives it. A peer
//! that is down, refuses the envelope, or whose Raft group has stopped is `Unreachable`
//! (openraft backs off); a call that timed out or broke mid-way is a `NetworkError` (openraft
//! retries soon). `map_status` decides from the gRPC code alone, never from a message.
//!
//! Receiving side: a local Raft that failed (openraft's `Fatal`: stopped, panicked, storage
//! error) is answered with `fatal_status`: `UNAVAILABLE` (so the sender treats the peer as
//! unreachable) carrying the RingKV error kind in [`meta::ERROR_KIND`] (`shutting_down` for a
//! stopped Raft, `internal` otherwise). The failure never travels as text in the reply body.
//!
//! Compatibility: versions before this one sent a remote Raft's failure as text in the reply
//! body (`Reply::Err`); such a reply still decodes and means `Unreachable`, as it always did.
//!
//! This module does not retry or back off itself; openraft does.

use openraft::error::{Fatal, Infallible, NetworkError, RPCError, RaftError, Unreachable};
use ringkv_proto::meta;
use tonic::{Code, Status};

use crate::typ::TypeConfig;

/// A transport failure found on this side, or a peer's failure it reported.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// An older peer reported its Raft failed, as text in the reply body.
    #[error("the peer's Raft failed: {0}")]
    RemoteRaft(String),
    /// A request on an append stream went unanswered for the RPC's deadline.
    #[error("no append reply within {ttl_ms} ms")]
    ReplyTimeout { ttl_ms: u128 },
    /// An append request could not be encoded, so the stream ended early.
    #[error("could not encode an append request")]
    Encode,
}

/// Why a received snapshot was refused (answered `INVALID_ARGUMENT`; the file is removed).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotRefusal {
    /// The stream broke or the sender ended it with an error.
    #[error("snapshot stream failed: {0}")]
    Stream(#[from] Status),
    #[error("second head in snapshot stream")]
    SecondHead,
    #[error("snapshot longer than the announced {announced_bytes} bytes")]
    Longer { announced_bytes: u64 },
    #[error("snapshot stream ended after {written_bytes} of {announced_bytes} bytes")]
    Shorter {
        written_bytes: u64,
        announced_bytes: u64,
    },
    /// The file's checksum or framing is wrong.
    #[error("snapshot file invalid: {0}")]
    Invalid(std::io::Error),
    #[error("snapshot meta differs from its head")]
    MetaDiffers,
    /// Writing or reading the received file here failed.
    #[error("snapshot file: {0}")]
    Io(#[from] std::io::Error),
}

/// openraft should back off before trying this peer again.
pub(crate) fn unreachable(e: impl std::error::Error + 'static) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&e))
}

/// openraft may retry this peer soon.
pub(crate) fn network(e: impl std::error::Error + 'static) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&e))
}

/// A failed call's status as openraft's error, by code: a deadline, a cancellation or a
/// broken call may succeed on a retry; anything else (down, refused, stopped) means the peer
/// cannot serve this shard now.
pub(crate) fn map_status(s: Status) -> RPCError<TypeConfig> {
    match s.code() {
        Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Internal => network(s),
        _ => unreachable(s),
    }
}

/// The status that answers a call whose Raft failed on this node.
pub(crate) fn fatal_status(f: &Fatal<TypeConfig>) -> Status {
    let kind = match f {
        Fatal::Stopped => meta::KIND_SHUTTING_DOWN,
        Fatal::Panicked | Fatal::StorageError(_) => meta::KIND_INTERNAL,
    };
    let mut s = Status::unavailable(format!("shard out of service on this node: {f}"));
    s.metadata_mut().insert(
        meta::ERROR_KIND,
        tonic::metadata::MetadataValue::from_static(kind),
    );
    s
}

/// The status for an error of an openraft call that has no API error of its own.
pub(crate) fn raft_error_status(e: &RaftError<TypeConfig, Infallible>) -> Status {
    match e {
        RaftError::APIError(never) => match *never {},
        RaftError::Fatal(f) => fatal_status(f),
    }
}

#[cfg(test)]
mod tests {
    use openraft::{ErrorSubject, ErrorVerb, StorageError};

    use super::*;

    fn kind(s: &Status) -> Option<&str> {
        s.metadata()
            .get(meta::ERROR_KIND)
            .and_then(|v| v.to_str().ok())
    }

    fn storage_fatal() -> Fatal<TypeConfig> {
        Fatal::StorageError(StorageError::from_io_error(
            ErrorSubject::Store,
            ErrorVerb::Write,
            std::io::Error::other("disk gone"),
        ))
    }

    #[test]
    fn a_failed_raft_is_answered_unavailable_with_its_kind() {
        let cases = [
            (Fatal::Stopped, meta::KIND_SHUTTING_DOWN),
            (Fatal::Panicked, meta::KIND_INTERNAL),
            (storage_fatal(), meta::KIND_INTERNAL),
        ];
        for (fatal, expected) in cases {
            let s = fatal_status(&fatal);
            assert_eq!(s.code(), Code::Unavailable, "{fatal}");
            assert_eq!(kind(&s), Some(expected), "{fatal}");
            let s = raft_error_status(&RaftError::Fatal(fatal.clone()));
            assert_eq!((s.code(), kind(&s)), (Code::Unavailable, Some(expected)));
        }
    }

    #[test]
    fn the_sender_backs_off_from_a_failed_raft_as_it_did_from_the_text_reply() {
        for fatal in [Fatal::Stopped, Fatal::Panicked, storage_fatal()] {
            assert!(
                matches!(map_status(fatal_status(&fatal)), RPCError::Unreachable(_)),
                "{fatal}"
            );
        }
        assert!(matches!(
            unreachable(TransportError::RemoteRaft("raft stopped".into())),
            RPCError::Unreachable(_)
        ));
    }

    #[test]
    fn statuses_map_by_code() {
        let retry_soon = [
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Unknown,
            Code::Internal,
        ];
        for code in retry_soon {
            assert!(
                matches!(map_status(Status::new(code, "")), RPCError::Network(_)),
                "{code:?}"
            );
        }
        let back_off = [
            Code::Unavailable,
            Code::FailedPrecondition,
            Code::InvalidArgument,
            Code::Unimplemented,
            Code::ResourceExhausted,
        ];
        for code in back_off {
            assert!(
                matches!(map_status(Status::new(code, "")), RPCError::Unreachable(_)),
                "{code:?}"
            );
        }
    }
}
