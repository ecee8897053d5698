//! The service error type and the one table that maps it to gRPC statuses.
//!
//! Each variant tells the caller what to do: fix the input, retry at the leader, retry later,
//! or treat the write's outcome as unknown. The kind travels in metadata
//! (`ringkv_proto::meta::ERROR_KIND`) so clients never parse messages; an overload refusal also
//! carries when to retry (`ringkv_proto::meta::RETRY_AFTER_MS`).

use std::time::Duration;

use ringkv_proto::meta;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::service::admission::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// Input rejected; nothing was written. Do not retry.
    #[error("{0}")]
    Invalid(String),
    /// Retry at the named leader; nothing was written.
    #[error("node does not lead shard {shard}; leader is node {leader_id} at {leader_addr}")]
    NotLeader {
        shard: u32,
        leader_id: u64,
        leader_addr: String,
    },
    /// Retry later; nothing was written.
    #[error("shard {shard} has no reachable leader: {reason}")]
    NoLeader { shard: u32, reason: String },
    /// Retry later with backoff, not before `retry_after`; nothing was written.
    #[error("overloaded: {message}")]
    Overloaded {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The write may or may not take effect.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// Retry on another node; nothing was written.
    #[error("node is shutting down")]
    ShuttingDown,
    /// A node of the shard is out of disk space; nothing was written. Retry once space is
    /// freed.
    #[error("{0}; writes are refused until space is freed (reads are served)")]
    DiskFull(#[from] crate::storage::space::DiskFull),
    /// The shard is out of service on this node (storage error or stopped group).
    #[error("internal error: {0}")]
    Internal(String),
    /// The call proved no valid identity; nothing was done. Never names a credential.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller's role or prefix does not allow the request; nothing was done.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A member of the shard (`node`) cannot apply this kind of command yet; nothing was
    /// written. Retry once every node runs a version that has it.
    #[error("{message}; upgrade every node first (nothing was written)")]
    Unsupported { node: u64, message: String },
}

impl From<Refusal> for KvError {
    fn from(r: Refusal) -> KvError {
        KvError::Overloaded {
            message: r.to_string(),
            retry_after: Some(r.retry_after),
        }
    }
}

impl From<KvError> for Status {
    fn from(e: KvError) -> Status {
        let (code, kind) = match &e {
            KvError::Invalid(_) => (Code::InvalidArgument, meta::KIND_INVALID),
            KvError::NotLeader { .. } => (Code::FailedPrecondition, meta::KIND_NOT_LEADER),
            KvError::NoLeader { .. } => (Code::Unavailable, meta::KIND_NO_LEADER),
            KvError::Overloaded { .. } => (Code::ResourceExhausted, meta::KIND_OVERLOADED),
            KvError::OutcomeUnknown(_) => (Code::Unknown, meta::KIND_OUTCOME_UNKNOWN),
            KvError::ShuttingDown => (Code::Unavailable, meta::KIND_SHUTTING_DOWN),
            KvError::DiskFull(_) => (Code::ResourceExhausted, meta::KIND_DISK_FULL),
            KvError::Internal(_) => (Code::Internal, meta::KIND_INTERNAL),
            KvError::Unauthenticated(_) => (Code::Unauthenticated, meta::KIND_UNAUTHENTICATED),
            KvError::PermissionDenied(_) => (Code::PermissionDenied, meta::KIND_PERMISSION_DENIED),
            KvError::Unsupported { .. } => {
                (Code::FailedPrecondition, meta::KIND_FEATURE_UNSUPPORTED)
            }
        };
        let mut status = Status::new(code, e.to_string());
        let md = status.metadata_mut();
        md.insert(meta::ERROR_KIND, MetadataValue::from_static(kind));
        if let KvError::Overloaded {
            retry_after: Some(after),
            ..
        } = &e
        {
            let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
            md.insert(meta::RETRY_AFTER_MS, MetadataValue::from(ms));
        }
        if let KvError::Unsupported { node, .. } = &e {
            md.insert(meta::LACKING_NODE_ID, MetadataValue::from(*node));
        }
        if let KvError::DiskFull(full) = &e {
            md.insert(meta::FULL_NODE_ID, MetadataValue::from(full.node));
        }
        if let KvError::NotLeader {
            leader_id,
            leader_addr,
            ..
        } = &e
        {
            md.insert(meta::LEADER_ID, MetadataValue::from(*leader_id));
            if let Ok(v) = leader_addr.parse() {
                md.insert(meta::LEADER_ADDR, v);
            }
        }
        status
    }
}
