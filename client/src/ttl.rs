//! Per-key TTL in the client: puts and compare-and-swaps that set or keep a TTL, `touch`,
//! `persist` and `ttl`.
//!
//! TTLs run on the cluster's clock (cluster time, advanced only by a shard's leader), not on
//! this machine's: a key given 30 s lives at least 30 s of its shard's time from the moment the
//! write took effect, and reads show it absent once they have passed.
//!
//! A node of a version before TTLs ignores the TTL fields of a put (proto3 skips unknown
//! fields) and answers without the TTL echo: such an answer is reported as
//! [`Error::Unsupported`], and the value it wrote has no TTL. A cluster refuses TTL commands
//! (`feature_unsupported`, nothing written) until every member of the shard can apply them.
//! Upgrade every node before using TTLs.

use std::time::Duration;

use bytes::Bytes;
use ringkv_proto::pb::{
    CompareAndSwapRequest, PersistRequest, PutRequest, TouchRequest, TtlRequest,
};

use crate::client::{CasOutcome, Client, Expect, ReadConsistency, Versioned};
use crate::error::Error;

/// What a write does to the key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key gets none (a plain put; any TTL it had is cleared, as in Redis).
    Clear,
    /// The key expires this long after the write.
    Set(Duration),
    /// The key keeps the TTL it has (none if it has none).
    Keep,
}

impl Ttl {
    /// The wire fields: (ttl_ms, keep_ttl).
    fn wire(self) -> Result<(u64, bool), Error> {
        match self {
            Ttl::Clear => Ok((0, false)),
            Ttl::Keep => Ok((0, true)),
            Ttl::Set(d) => match u64::try_from(d.as_millis()) {
                Ok(ms) if ms > 0 => Ok((ms, false)),
                _ => Err(Error::Invalid(format!(
                    "a TTL must be at least 1 ms (got {d:?})"
                ))),
            },
        }
    }

    fn asked(self) -> bool {
        self != Ttl::Clear
    }
}

/// A key's time to live as `ttl` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTtl {
    /// Cluster time left before the key expires; `None`: it has no TTL.
    pub remaining: Option<Duration>,
    /// The TTL it was given (or last touched with); `None`: none.
    pub ttl: Option<Duration>,
}

/// The wire TTL (ms, -1 none) as a duration.
fn duration(ms: i64) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}

/// An answer to a write that asked for a TTL but came back without the echo: an older node.
fn ignored_ttl() -> Error {
    Error::Unsupported {
        node: None,
        message: "the node that took this write runs a version without TTLs and ignored the \
                  TTL: the value was written without one; upgrade every node"
            .into(),
    }
}

impl Client {
    /// Writes a key with a TTL (or keeping or clearing it); returns the new version and the
    /// key's TTL after the write.
    pub async fn put_with_ttl(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ttl: Ttl,
    ) -> Result<(u64, Option<Duration>), Error> {
        let (key, value) = (key.into(), value.into());
        let (ttl_ms, keep_ttl) = ttl.wire()?;
        let r = self
            .write(&key, |c, header| {
                let req = PutRequest {
                    header,
                    key: key.clone(),
                    value: value.clone(),
                    ttl_ms,
                    keep_ttl,
                };
                async move { c.put(req).await }
            })
            .await?;
        if ttl.asked() && r.ttl_ms == 0 {
            return Err(ignored_ttl());
        }
        Ok((r.version, duration(r.ttl_ms)))
    }

    /// Compare-and-swap whose written value gets `ttl` (see [`Client::cas`]).
    pub async fn cas_with_ttl(
        &self,
        key: impl Into<Bytes>,
        expect: Expect,
        new_value: Option<Bytes>,
        ttl: Ttl,
    ) -> Result<CasOutcome, Error> {
        let key = key.into();
        let expected = expect.to_wire();
        let (ttl_ms, keep_ttl) = ttl.wire()?;
        let r = self
            .write(&key, |c, header| {
                let req = CompareAndSwapRequest {
                    header,
                    key: key.clone(),
                    expected: Some(expected.clone()),
                    new_value: new_value.clone(),
                    ttl_ms,
                    keep_ttl,
                };
                async move { c.compare_and_swap(req).await }
            })
            .await?;
        if ttl.asked() && r.ttl_ms == 0 {
            return Err(ignored_ttl());
        }
        Ok(CasOutcome {
            succeeded: r.succeeded,
            current: r.found.then_some(Versioned {
                value: r.current_value,
                version: r.current_version,
            }),
            new_version: r.new_version,
        })
    }

    /// Restarts a live key's TTL: `ttl`, or the one it has. `Ok(None)`: the key is absent;
    /// `Ok(Some(t))`: its TTL now (`None`: it has none). A key with more than half of that
    /// TTL left is not rewritten (sliding sessions cost a write per half TTL).
    pub async fn touch(
        &self,
        key: impl Into<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<Option<Option<Duration>>, Error> {
        let key = key.into();
        let ttl_ms = match ttl {
            None => None,
            Some(d) => Some(Ttl::Set(d).wire()?.0),
        };
        let r = self
            .write(&key, |c, header| {
                let req = c.request(TouchRequest {
                    header,
                    key: key.clone(),
                    ttl_ms,
                });
                let mut kv = c.kv;
                async move { kv.touch(req).await }
            })
            .await?;
        Ok(r.found.then_some(duration(r.ttl_ms)))
    }

    /// Removes a key's TTL. `Ok(None)`: the key is absent; `Ok(Some(had_ttl))` otherwise.
    pub async fn persist(&self, key: impl Into<Bytes>) -> Result<Option<bool>, Error> {
        let key = key.into();
        let r = self
            .write(&key, |c, header| {
                let req = c.request(PersistRequest {
                    header,
                    key: key.clone(),
                });
                let mut kv = c.kv;
                async move { kv.persist(req).await }
            })
            .await?;
        Ok(r.found.then_some(r.had_ttl))
    }

    /// A key's remaining time to live; `Ok(None)` when it is absent.
    pub async fn ttl(
        &self,
        key: impl Into<Bytes>,
        consistency: ReadConsistency,
    ) -> Result<Option<KeyTtl>, Error> {
        let key = key.into();
        let req = TtlRequest {
            header: self.header(0, 0),
            key: key.clone(),
            serializable: consistency == ReadConsistency::Serializable,
        };
        let r = self
            .call(Some(&key), false, |c| {
                let req = c.request(req.clone());
                let mut kv = c.kv;
                async move { kv.ttl(req).await }
            })
            .await?;
        Ok(r.found.then_some(KeyTtl {
            remaining: duration(r.remaining_ms),
            ttl: duration(r.ttl_ms),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_travel_as_whole_ms_and_zero_is_refused() {
        assert_eq!(Ttl::Clear.wire().ok(), Some((0, false)));
        assert_eq!(Ttl::Keep.wire().ok(), Some((0, true)));
        assert_eq!(
            Ttl::Set(Duration::from_millis(1500)).wire().ok(),
            Some((1500, false))
        );
        assert!(Ttl::Set(Duration::from_micros(10)).wire().is_err());
        assert_eq!(duration(-1), None);
        assert_eq!(duration(250), Some(Duration::from_millis(250)));
    }
}
