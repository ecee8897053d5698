//! Node-wide storage plumbing shared by every shard: the sled database and the flush
//! coordinator that makes writes durable in groups.

pub mod flush;
