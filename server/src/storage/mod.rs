//! Node-wide storage plumbing shared by every shard: the write-ahead log that holds every
//! shard's Raft log (group commit across shards), and the sled database with the flush
//! coordinator that makes state-machine writes durable when a snapshot needs them.

pub mod flush;
pub mod wal;
