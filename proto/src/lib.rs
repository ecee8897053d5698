//! `ringkv-proto`: the wire contract shared by server, client and harness.
//!
//! - [`pb`]: generated protobuf/gRPC code for the client API (`Kv`, `Cluster`) and the internal
//!   Raft transport (`Raft`).
//! - [`ring`]: the consistent-hash ring that maps a key to its shard. It lives here because the
//!   mapping is part of the contract: the client routes a key to its shard's leader by computing
//!   the same ring the servers use.
//! - [`meta`]: the metadata keys that carry error kinds and leader hints.
//! - [`backup`]: the backup file format, written by the CLI and read by the server's restore.
//! - [`checksum`]: xxh3-hashing reader and writer shared by the snapshot and backup formats.

pub mod backup;
pub mod checksum;
pub mod meta;
pub mod ring;

/// Generated code for package `ringkv.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("ringkv.v1");
}
