//! The stored form of a user key (`d` + key in a state-machine tree) and the expiry index.
//!
//! A record is an 8-byte big-endian version word, then, when the word's top bit
//! ([`TTL_FLAG`]) is set, the expiry (deadline and TTL, 8 bytes each, ms of cluster time),
//! then the value bytes. Versions are log indexes, far below 2^63, so records written before
//! TTLs existed (no flag) read unchanged; a record with the flag is written only once every
//! member of the shard can read it (see [`crate::features`]).
//!
//! The expiry index holds `e` + deadline (8 bytes, big-endian) + user key for each deadline a
//! key was given, so the leader finds due keys in deadline order. An entry may outlive the TTL
//! it names (a later plain put or touch does not remove it, saving a read per write); the
//! expiry entry that meets it checks the record's own deadline before removing anything, and
//! removes the index entry either way.
//!
//! Whether a key is live is decided against a cluster time passed in ([`Record::live_at`]);
//! nothing here reads a clock.

use std::io;

use bytes::Bytes;

use crate::shard::command::Versioned;

/// Set in a record's version word when an expiry follows it.
pub const TTL_FLAG: u64 = 1 << 63;
/// First byte of an expiry index key.
pub const EXPIRY_PREFIX: u8 = b'e';

/// When a key expires: at `deadline_ms` of cluster time; `ttl_ms` is the TTL it was given
/// (what a touch without a new TTL restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub deadline_ms: u64,
    pub ttl_ms: u64,
}

/// A stored user key: value, version and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub versioned: Versioned,
    pub expiry: Option<Expiry>,
}

impl Record {
    /// Whether the key exists at cluster time `clock_ms` (its deadline, if any, is later).
    pub fn live_at(&self, clock_ms: u64) -> bool {
        self.expiry.is_none_or(|e| e.deadline_ms > clock_ms)
    }
}

/// Encodes a record.
pub fn encode(version: u64, expiry: Option<Expiry>, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + value.len());
    match expiry {
        None => v.extend_from_slice(&version.to_be_bytes()),
        Some(e) => {
            v.extend_from_slice(&(version | TTL_FLAG).to_be_bytes());
            v.extend_from_slice(&e.deadline_ms.to_be_bytes());
            v.extend_from_slice(&e.ttl_ms.to_be_bytes());
        }
    }
    v.extend_from_slice(value);
    v
}

fn u64_at(bytes: &[u8], at: usize) -> io::Result<u64> {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "stored record too short"))
}

/// Decodes a record; a short one is corruption.
pub fn decode(bytes: &[u8]) -> io::Result<Record> {
    let word = u64_at(bytes, 0)?;
    let (expiry, value_at) = if word & TTL_FLAG == 0 {
        (None, 8)
    } else {
        let e = Expiry {
            deadline_ms: u64_at(bytes, 8)?,
            ttl_ms: u64_at(bytes, 16)?,
        };
        (Some(e), 24)
    };
    Ok(Record {
        versioned: Versioned {
            version: word & !TTL_FLAG,
            value: Bytes::copy_from_slice(&bytes[value_at..]),
        },
        expiry,
    })
}

/// The index key of `key` expiring at `deadline_ms`.
pub fn expiry_key(deadline_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.push(EXPIRY_PREFIX);
    k.extend_from_slice(&deadline_ms.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// The first index key past every deadline up to and including `deadline_ms`.
pub fn expiry_bound(deadline_ms: u64) -> Vec<u8> {
    match deadline_ms.checked_add(1) {
        Some(next) => {
            let mut k = vec![EXPIRY_PREFIX];
            k.extend_from_slice(&next.to_be_bytes());
            k
        }
        None => vec![EXPIRY_PREFIX + 1],
    }
}

/// The deadline and user key of an index key.
pub fn parse_expiry_key(k: &[u8]) -> io::Result<(u64, &[u8])> {
    if k.first() != Some(&EXPIRY_PREFIX) || k.len() < 9 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad expiry index key",
        ));
    }
    Ok((u64_at(k, 1)?, &k[9..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_old_ones_read_unchanged() -> io::Result<()> {
        // Written before TTLs: version then value.
        let mut old = 42u64.to_be_bytes().to_vec();
        old.extend_from_slice(b"v");
        let r = decode(&old)?;
        assert_eq!((r.versioned.version, r.expiry), (42, None));
        assert_eq!(encode(42, None, b"v"), old);
        let e = Expiry {
            deadline_ms: 9_000,
            ttl_ms: 3_000,
        };
        let r = decode(&encode(7, Some(e), b"value"))?;
        assert_eq!(r.versioned.version, 7);
        assert_eq!(r.versioned.value, Bytes::from_static(b"value"));
        assert_eq!(r.expiry, Some(e));
        assert!(r.live_at(8_999));
        assert!(!r.live_at(9_000));
        // Truncated records are corruption, never a shorter value.
        assert!(decode(&encode(7, Some(e), b"")[..20]).is_err());
        assert!(decode(&[0; 7]).is_err());
        Ok(())
    }

    #[test]
    fn index_keys_sort_by_deadline_and_parse_back() -> io::Result<()> {
        let a = expiry_key(255, b"zz");
        let b = expiry_key(256, b"aa");
        assert!(a < b);
        assert!(b < expiry_bound(256) && expiry_bound(255) <= b);
        assert_eq!(parse_expiry_key(&b)?, (256, &b"aa"[..]));
        assert!(parse_expiry_key(b"e123").is_err());
        Ok(())
    }
}
