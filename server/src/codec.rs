//! Binary encoding of everything RingKV stores or sends that is not a protobuf: log entries,
//! votes, snapshot metadata and openraft RPC bodies, as MessagePack (`rmp-serde`).
//!
//! Invariant: a decode failure is corruption (or a foreign peer), reported as
//! `io::ErrorKind::InvalidData`; callers treat it as fatal for storage, never as "absent".

use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes `value` compactly.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> io::Result<Vec<u8>> {
    rmp_serde::to_vec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Decodes bytes written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
