//! `ringkv-server`: a RingKV node.
//!
//! Layout (one concept per module): [`config`], [`identity`] and [`cluster_uuid`] (what a
//! node is, and which cluster it belongs to), [`node`] (wiring and shutdown), [`shard`] (one Raft group: log store, state machine, snapshots,
//! commands), [`storage`] (the node-wide flush coordinator), [`network`] (Raft transport),
//! [`router`] and [`service`] (client API), [`balancer`] (leader spreading), [`admin`] and
//! [`metrics`] (the operator's HTTP endpoint), [`dev`] (a local cluster for development),
//! [`membership`] (add and remove nodes), [`auth`] (who a client is and what it may do), [`tls`] (who is on the other end of a connection),
//! [`backup`] and [`restore`] (consistent copies of a
//! live cluster, and seeding a new cluster's data directories from one).

pub mod admin;
pub mod auth;
pub mod backup;
pub mod balancer;
pub mod cluster_uuid;
pub mod codec;
pub mod config;
pub mod config_file;
pub mod dev;
pub mod features;
pub mod identity;
pub mod join;
pub mod lifecycle;
pub mod log_limit;
pub mod membership;
pub mod metrics;
pub mod network;
pub mod node;
pub mod raft_runtime;
pub mod readmit;
pub mod restore;
pub mod router;
pub mod service;
pub mod shard;
pub mod storage;
pub mod tls;
pub mod typ;
