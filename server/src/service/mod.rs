//! Client-facing gRPC services: `Kv` (reads and writes, forwarded to shard leaders) and
//! `Cluster` (status); `Kv`'s `Batch` runs several requests through the unary handlers at once.
//! [`ttl`] holds what TTLs add to `Kv` (touch, persist, ttl, and what reads see of expired
//! keys), [`txn`] single-shard transactions. Every client request is admitted by [`admission`] (count, class and time) before any work.
//! Services validate input and map errors through the one table in [`error`]; they never touch
//! sled directly (reads go through the shard's state machine).

pub mod admission;
pub mod batch;
pub mod cluster;
pub mod error;
pub mod kv;
pub mod limits;
pub mod ttl;
pub mod txn;
