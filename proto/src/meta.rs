//! Metadata keys (lowercase ASCII) that RingKV puts on gRPC statuses and responses.
//!
//! Every error status from a RingKV server carries [`ERROR_KIND`], so a client can tell a
//! definite failure from an unknown outcome without parsing messages.

/// The error kind, one of the `KIND_*` values below.
pub const ERROR_KIND: &str = "x-ringkv-error";
/// The id of the shard's leader, when known.
pub const LEADER_ID: &str = "x-ringkv-leader-id";
/// The client address of the shard's leader, when known.
pub const LEADER_ADDR: &str = "x-ringkv-leader-addr";
/// With [`KIND_OVERLOADED`]: milliseconds the client should wait before retrying (a decimal
/// integer; add jitter).
pub const RETRY_AFTER_MS: &str = "x-ringkv-retry-after-ms";
/// With [`KIND_DISK_FULL`]: the id of the node that is out of disk space.
pub const FULL_NODE_ID: &str = "x-ringkv-full-node-id";
/// On a request one node forwards to another for a client identified by its certificate: the
/// client's identity name. Accepted only from a cluster node; anyone else sending it is refused
/// as unauthenticated.
pub const ON_BEHALF_OF: &str = "x-ringkv-on-behalf-of";

/// Input rejected; nothing was written. Do not retry.
pub const KIND_INVALID: &str = "invalid";
/// This node does not lead the shard; retry at the leader (definitely not applied).
pub const KIND_NOT_LEADER: &str = "not_leader";
/// No leader is known right now; retry later (definitely not applied).
pub const KIND_NO_LEADER: &str = "no_leader";
/// Too much in flight; retry later with backoff (definitely not applied).
pub const KIND_OVERLOADED: &str = "overloaded";
/// The write may or may not have been applied.
pub const KIND_OUTCOME_UNKNOWN: &str = "outcome_unknown";
/// The node is shutting down; retry elsewhere (definitely not applied).
pub const KIND_SHUTTING_DOWN: &str = "shutting_down";
/// A node of the shard is out of disk space; nothing was written. Retrying helps only once
/// space is freed (the node named in [`FULL_NODE_ID`] accepts writes again by itself).
pub const KIND_DISK_FULL: &str = "disk_full";
/// A storage or internal error; the shard is out of service on this node.
pub const KIND_INTERNAL: &str = "internal";
/// The call proved no identity, or an invalid one (a wrong token, an unknown certificate);
/// nothing was done. Do not retry with the same credentials.
pub const KIND_UNAUTHENTICATED: &str = "unauthenticated";
/// The caller's role or prefix does not allow the request; nothing was done. Do not retry.
pub const KIND_PERMISSION_DENIED: &str = "permission_denied";
/// A Raft call without a peer certificate (TLS is on): refused before it reached Raft.
pub const KIND_PEER_UNAUTHENTICATED: &str = "peer_unauthenticated";
/// A Raft call whose certificate (from the cluster CA) names no host on the peer list.
pub const KIND_PEER_NOT_ALLOWED: &str = "peer_not_allowed";
/// A command kind (TTL, ...) that a member of the shard cannot apply yet (it runs an older
/// version): nothing was written; upgrade every node, then retry.
pub const KIND_FEATURE_UNSUPPORTED: &str = "feature_unsupported";
/// The node the `feature_unsupported` refusal names (its id, ASCII decimal).
pub const LACKING_NODE_ID: &str = "x-ringkv-lacking-node-id";
