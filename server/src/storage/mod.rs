//! Node-wide storage plumbing shared by every shard: the write-ahead log that holds every
//! shard's Raft log (group commit across shards), the sled database with the flush
//! coordinator that makes state-machine writes durable when a snapshot needs them, the
//! fail-stop latch both trip when a write or sync fails, the disk-space check that refuses
//! writes before a full disk can fail them, durable directory entries, and sled's files.

pub mod dirs;
pub mod flush;
pub mod health;
pub mod sled_files;
pub mod space;
pub mod wal;
