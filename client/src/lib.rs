//! `ringkv-client`: the async Rust client for RingKV, and the `ringkv` CLI.
//!
//! [`Client`] routes each key to its shard's leader directly (it computes the same
//! consistent-hash ring as the servers and learns leaders from status and from hints in
//! answers), retries within a bounded deadline, and classifies every failure strictly: a write
//! is reported [`Error::OutcomeUnknown`] whenever any attempt might have reached a leader and no
//! later attempt settled it.
//!
//! Requests waiting for the same node travel together in one `Batch` RPC (see
//! [`ClientOptions::batch_requests`]); each still gets its own answer and classification.
//!
//! Retries are paced with full jitter and bounded by a per-client budget (about a tenth of
//! requests; `retry.rs`), so a failing cluster does not get a retry storm on top.
//!
//! Retries of one write reuse its `(client_id, sequence)`, which the state machine applies at
//! most once, so a retry can never apply a write twice.

mod admin;
mod batcher;
mod client;
mod error;
mod leader_watch;
mod outcome;
mod retry;
mod tls;
mod ttl;
mod txn;

pub use admin::MemberChange;
pub use client::{
    CasOutcome, Client, ClientOptions, Expect, KeyValue, ReadConsistency, ScanPage, Versioned,
};
pub use error::{Error, TlsFailure};
pub use ringkv_proto::pb::{MemberChangeResponse, StatusResponse};
pub use tls::TlsOptions;
pub use ttl::{KeyTtl, Ttl};
pub use txn::{Txn, TxnOpResult, TxnOutcome};
