//! Deterministic command execution over staged writes.
//!
//! [`ApplyBatch`] stages one apply call's writes while letting later commands of the same call
//! read them, over the shard's write buffer and sled tree (see [`crate::shard::buffer`]). [`apply_command`] executes one
//! [`Command`]: at-most-once deduplication by `(client_id, sequence)`, the mutation, and the
//! expiry of idle clients' records.
//!
//! Key layout of a state-machine tree:
//! - `d` + user key → the key's record: version, expiry if it has a TTL, value (see
//!   [`crate::shard::record`]);
//! - `e` + deadline + user key → empty: the expiry index (see [`crate::shard::record`]);
//! - `c` + client id + sequence (big-endian) → encoded response of that write;
//! - `w` + client id → acknowledged watermark and last-seen time (8 + 8 bytes);
//! - `r` + node id (big-endian) → empty: a node id removed from the cluster, never reusable;
//! - `t:clock` → cluster time (the largest leader stamp applied), in snapshots like the data;
//! - `t:features` → the feature bits enabled on this shard (8 bytes; absent: none);
//! - `m:applied`, `m:membership` → state-machine metadata (not in snapshots: their meta says
//!   it); `m:clock` is where releases before cluster time kept the clock (read, not written).
//!
//! Invariants: the outcome depends only on the tree's state before the batch and the commands
//! (never on how entries were split into batches, a clock or randomness); a key's version is
//! the log index of the write that produced its value, so it grows with every value write (a
//! touch or persist changes only the TTL and keeps it); a key whose deadline is not after the
//! command's cluster time is absent to every command, whether or not its record was removed.

use std::collections::BTreeMap;
use std::io;

use bytes::Bytes;

use crate::codec::{decode, encode};
use crate::shard::buffer::{Layer, WriteBuffer};
use crate::shard::command::{
    Command, CommandResponse, Expected, Op, TtlChange, Txn, TxnOp, TxnOpResult, Versioned,
};
use crate::shard::record::{self, Expiry, Record, expiry_key};

pub const KEY_APPLIED: &[u8] = b"m:applied";
pub const KEY_MEMBERSHIP: &[u8] = b"m:membership";
/// Cluster time. Outside `m:` so snapshots, backups and restores carry it, and replicas built
/// from a snapshot expire exactly what replicas built from the log do.
pub const KEY_CLOCK: &[u8] = b"t:clock";
/// Where the clock lived before it moved into snapshots.
pub const KEY_CLOCK_LEGACY: &[u8] = b"m:clock";
/// The feature bits enabled on the shard (see [`crate::features`]), in snapshots.
pub const KEY_FEATURES: &[u8] = b"t:features";
pub const META_PREFIX: &[u8] = b"m:";
pub const DATA_PREFIX: u8 = b'd';
const DEDUP_PREFIX: u8 = b'c';
const WATERMARK_PREFIX: u8 = b'w';
const RETIRED_PREFIX: u8 = b'r';

/// A client silent this long (by leader-stamped time) loses its deduplication records. Clients
/// stop retrying a write long before this (see the client's request deadline).
pub const DEDUP_TTL_MS: u64 = 10 * 60 * 1000;
/// Idle-client expiry runs when the log index is a multiple of this.
const EXPIRY_EVERY: u64 = 1024;

pub fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(DATA_PREFIX);
    k.extend_from_slice(key);
    k
}

fn dedup_key(client: u64, seq: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = DEDUP_PREFIX;
    k[1..9].copy_from_slice(&client.to_be_bytes());
    k[9..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The record saying `node_id` was removed from the cluster.
pub fn retired_key(node_id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = RETIRED_PREFIX;
    k[1..].copy_from_slice(&node_id.to_be_bytes());
    k
}

fn watermark_key(client: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = WATERMARK_PREFIX;
    k[1..].copy_from_slice(&client.to_be_bytes());
    k
}

fn u64_pair(bytes: &[u8]) -> io::Result<(u64, u64)> {
    if bytes.len() != 16 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad watermark record",
        ));
    }
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&bytes[..8]);
    b.copy_from_slice(&bytes[8..]);
    Ok((u64::from_be_bytes(a), u64::from_be_bytes(b)))
}

fn pair_bytes(a: u64, b: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..].copy_from_slice(&b.to_be_bytes());
    out
}

/// Indexes the deduplication records `tree` holds in `buffer` (nothing may be buffered): at
/// open and after a snapshot install.
pub fn index_dedup(buffer: &WriteBuffer, tree: &sled::Tree) -> io::Result<()> {
    let stored = tree
        .scan_prefix([DEDUP_PREFIX])
        .keys()
        .map(|k| k.map(|k| k.to_vec()).map_err(io::Error::other));
    buffer.index_stored(DEDUP_PREFIX, stored)
}

/// One apply call's staged writes, readable by later commands of the same call, over the
/// shard's write buffer and sled tree.
pub struct ApplyBatch<'a> {
    tree: &'a sled::Tree,
    buffer: &'a WriteBuffer,
    staged: Layer,
}

impl<'a> ApplyBatch<'a> {
    pub fn new(tree: &'a sled::Tree, buffer: &'a WriteBuffer) -> Self {
        ApplyBatch {
            tree,
            buffer,
            staged: Layer::default(),
        }
    }

    pub fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        if let Some(slot) = self.staged.get(key) {
            return Ok(slot.value.clone());
        }
        if let Some(value) = self.buffer.lookup(key)? {
            return Ok(value);
        }
        if self.buffer.stored_holds(key)? == Some(false) {
            return Ok(None);
        }
        Ok(self
            .tree
            .get(key)
            .map_err(io::Error::other)?
            .map(|v| v.to_vec()))
    }

    pub fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.staged.write(key, Some(value), false);
    }

    /// Like [`put`](Self::put), for a key the caller has just seen absent.
    fn put_new(&mut self, key: &[u8], value: Vec<u8>) {
        self.staged.write(key, Some(value), true);
    }

    pub fn remove(&mut self, key: &[u8]) {
        self.staged.write(key, None, false);
    }

    /// Keys in `[start, end)` as seen through the staged writes and the buffer (and the buffer's
    /// index of stored keys, or else the tree).
    fn keys_in(&self, start: &[u8], end: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        // The buffer before the tree: a background flush moves a layer from the one to the
        // other, and read in this order the layer is seen in at least one of them (read the
        // other way round, a flush finishing in between would hide it, and replicas whose
        // flushes happen at other moments would remove different keys).
        let buffered = self.buffer.range(start, Some(end))?;
        let mut keys: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
        match self.buffer.stored_range(start, end)? {
            Some(stored) => keys.extend(stored.into_iter().map(|k| (k, true))),
            None => {
                for k in self.tree.range(start..end).keys() {
                    keys.insert(k.map_err(io::Error::other)?.to_vec(), true);
                }
            }
        }
        for (k, slot) in buffered.range(start, Some(end)) {
            keys.insert(k.clone(), slot.value.is_some());
        }
        for (k, slot) in self.staged.range(start, Some(end)) {
            keys.insert(k.clone(), slot.value.is_some());
        }
        Ok(keys
            .into_iter()
            .filter(|(_, live)| *live)
            .map(|(k, _)| k)
            .collect())
    }

    /// The staged writes, to be merged into the write buffer.
    pub fn into_layer(self) -> Layer {
        self.staged
    }
}

/// Applies one client command at log `index`.
pub fn apply_command(
    ab: &mut ApplyBatch<'_>,
    index: u64,
    cmd: &Command,
) -> io::Result<CommandResponse> {
    let clock = advance_clock(ab, cmd.stamped_ms)?;
    let response = if cmd.client_id == 0 {
        execute(ab, index, clock, &cmd.op)?
    } else {
        let wkey = watermark_key(cmd.client_id);
        let (low, _) = match ab.get(&wkey)? {
            Some(b) => u64_pair(&b)?,
            None => (0, 0),
        };
        let dkey = dedup_key(cmd.client_id, cmd.sequence);
        if let Some(prev) = ab.get(&dkey)? {
            // A retry of a write that was already applied: answer as the first time.
            decode(&prev)?
        } else if cmd.sequence < low {
            CommandResponse::Expired
        } else {
            let resp = execute(ab, index, clock, &cmd.op)?;
            // Usually acknowledged (and deleted) a few entries later: a fresh record that never
            // needs to reach sled.
            ab.put_new(&dkey, encode(&kept_for_retries(&resp))?);
            let acked = cmd.acked_below.min(cmd.sequence);
            let mut new_low = low;
            if acked > low {
                for k in ab.keys_in(
                    &dedup_key(cmd.client_id, low),
                    &dedup_key(cmd.client_id, acked),
                )? {
                    ab.remove(&k);
                }
                new_low = acked;
            }
            ab.put(&wkey, pair_bytes(new_low, clock).to_vec());
            resp
        }
    };
    if index.is_multiple_of(EXPIRY_EVERY) {
        expire_idle_clients(ab, clock)?;
    }
    Ok(response)
}

/// Bytes of get values a transaction's deduplication record keeps at most; beyond, its gets'
/// values are left out of the record (a retry's answer says so), so the record stays well
/// below the size at which sled moves a node to a blob file of its own (`storage::sled_files`).
pub const TXN_KEPT_GET_BYTES_MAX: usize = 64 * 1024;

/// The form of `resp` the deduplication record keeps: `resp` itself, except a transaction
/// whose gets return more than [`TXN_KEPT_GET_BYTES_MAX`], whose gets are kept as
/// [`TxnOpResult::GetElided`]. Deterministic: it depends on the response only.
fn kept_for_retries(resp: &CommandResponse) -> std::borrow::Cow<'_, CommandResponse> {
    let CommandResponse::Txn {
        succeeded,
        results,
        version,
    } = resp
    else {
        return std::borrow::Cow::Borrowed(resp);
    };
    let get_bytes: usize = results
        .iter()
        .map(|r| match r {
            TxnOpResult::Get { current: Some(v) } => v.value.len(),
            _ => 0,
        })
        .sum();
    if get_bytes <= TXN_KEPT_GET_BYTES_MAX {
        return std::borrow::Cow::Borrowed(resp);
    }
    std::borrow::Cow::Owned(CommandResponse::Txn {
        succeeded: *succeeded,
        results: results
            .iter()
            .map(|r| match r {
                TxnOpResult::Get { .. } => TxnOpResult::GetElided,
                other => other.clone(),
            })
            .collect(),
        version: *version,
    })
}

/// Decodes a clock record.
pub fn decode_clock(bytes: Option<&[u8]>) -> io::Result<u64> {
    match bytes {
        None => Ok(0),
        Some(b) => <[u8; 8]>::try_from(b)
            .map(u64::from_be_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad clock record")),
    }
}

fn advance_clock(ab: &mut ApplyBatch<'_>, stamped_ms: u64) -> io::Result<u64> {
    let stored = ab.get(KEY_CLOCK)?;
    let now = match &stored {
        Some(b) => decode_clock(Some(b))?,
        None => decode_clock(ab.get(KEY_CLOCK_LEGACY)?.as_deref())?,
    };
    // The clock never goes backwards, even when a stamp is behind (a leader that anchored on
    // a clock it had not fully applied yet).
    let next = now.max(stamped_ms);
    if next != now || stored.is_none() {
        ab.put(KEY_CLOCK, next.to_be_bytes().to_vec());
    }
    Ok(next)
}

fn expire_idle_clients(ab: &mut ApplyBatch<'_>, clock: u64) -> io::Result<()> {
    let clients = ab.keys_in(&[WATERMARK_PREFIX], &[WATERMARK_PREFIX + 1])?;
    for wkey in clients {
        let Some(rec) = ab.get(&wkey)? else { continue };
        let (_, last_seen) = u64_pair(&rec)?;
        if last_seen.saturating_add(DEDUP_TTL_MS) < clock {
            let mut client = [0u8; 8];
            client.copy_from_slice(&wkey[1..9]);
            let client = u64::from_be_bytes(client);
            for k in ab.keys_in(&dedup_key(client, 0), &dedup_key(client, u64::MAX))? {
                ab.remove(&k);
            }
            ab.remove(&dedup_key(client, u64::MAX));
            ab.remove(&wkey);
        }
    }
    Ok(())
}

/// The live record of `key` at cluster time `clock` (an expired one is absent).
fn live(ab: &ApplyBatch<'_>, dk: &[u8], clock: u64) -> io::Result<Option<Record>> {
    Ok(match ab.get(dk)? {
        Some(b) => Some(record::decode(&b)?).filter(|r| r.live_at(clock)),
        None => None,
    })
}

/// Writes `key`'s record, indexing its deadline when it has one.
fn write_record(
    ab: &mut ApplyBatch<'_>,
    key: &[u8],
    dk: &[u8],
    version: u64,
    expiry: Option<Expiry>,
    value: &[u8],
) {
    ab.put(dk, record::encode(version, expiry, value));
    if let Some(e) = expiry {
        ab.put(&expiry_key(e.deadline_ms, key), Vec::new());
    }
}

/// The expiry a TTL-aware write gives the key, whose live record (if any) is `current`.
fn expiry_for(ttl: TtlChange, current: Option<&Record>, clock: u64) -> Option<Expiry> {
    match ttl {
        TtlChange::Set(ttl_ms) => Some(Expiry {
            deadline_ms: clock.saturating_add(ttl_ms),
            ttl_ms,
        }),
        TtlChange::Keep => current.and_then(|r| r.expiry),
    }
}

/// The stored features enabled on the shard.
pub fn decode_features(bytes: Option<&[u8]>) -> io::Result<u64> {
    decode_clock(bytes)
}

fn execute(
    ab: &mut ApplyBatch<'_>,
    index: u64,
    clock: u64,
    op: &Op,
) -> io::Result<CommandResponse> {
    match op {
        Op::Retire { node_id } => {
            ab.put(&retired_key(*node_id), Vec::new());
            return Ok(CommandResponse::None);
        }
        Op::EnableFeatures { bits } => {
            let have = decode_features(ab.get(KEY_FEATURES)?.as_deref())?;
            ab.put(KEY_FEATURES, (have | bits).to_be_bytes().to_vec());
            return Ok(CommandResponse::None);
        }
        Op::Expire { keys } => {
            for (key, deadline) in keys {
                ab.remove(&expiry_key(*deadline, key));
                let dk = data_key(key);
                if let Some(b) = ab.get(&dk)? {
                    let r = record::decode(&b)?;
                    if r.expiry.is_some_and(|e| e.deadline_ms == *deadline) && *deadline <= clock {
                        ab.remove(&dk);
                    }
                }
            }
            return Ok(CommandResponse::None);
        }
        _ => {}
    }
    let key = op.key();
    let dk = data_key(key);
    Ok(match op {
        Op::Put { value, .. } => {
            // No read: a deadline the key had is left in the index, and the expiry entry that
            // meets it finds the record without one.
            ab.put(&dk, record::encode(index, None, value));
            CommandResponse::Put { version: index }
        }
        Op::PutTtl { value, ttl, .. } => {
            let current = match ttl {
                TtlChange::Keep => live(ab, &dk, clock)?,
                TtlChange::Set(_) => None,
            };
            let expiry = expiry_for(*ttl, current.as_ref(), clock);
            write_record(ab, key, &dk, index, expiry, value);
            CommandResponse::WithTtl {
                response: Box::new(CommandResponse::Put { version: index }),
                ttl_ms: expiry.map(|e| e.ttl_ms),
            }
        }
        Op::Delete { .. } => {
            let stored = ab.get(&dk)?;
            let existed = match &stored {
                Some(b) => record::decode(b)?.live_at(clock),
                None => false,
            };
            if stored.is_some() {
                ab.remove(&dk);
            }
            CommandResponse::Delete { existed }
        }
        Op::Cas {
            expected,
            new_value,
            ..
        } => cas(
            ab,
            index,
            clock,
            key,
            &dk,
            expected,
            new_value.as_ref(),
            None,
        )?,
        Op::CasTtl {
            expected,
            new_value,
            ttl,
            ..
        } => cas(
            ab,
            index,
            clock,
            key,
            &dk,
            expected,
            new_value.as_ref(),
            Some(*ttl),
        )?,
        Op::Touch { ttl_ms, .. } => match live(ab, &dk, clock)? {
            None => CommandResponse::Touch {
                found: false,
                ttl_ms: None,
            },
            Some(r) => match ttl_ms.or(r.expiry.map(|e| e.ttl_ms)) {
                None => CommandResponse::Touch {
                    found: true,
                    ttl_ms: None,
                },
                Some(ttl_ms) => {
                    let expiry = expiry_for(TtlChange::Set(ttl_ms), None, clock);
                    let v = &r.versioned;
                    write_record(ab, key, &dk, v.version, expiry, &v.value);
                    CommandResponse::Touch {
                        found: true,
                        ttl_ms: Some(ttl_ms),
                    }
                }
            },
        },
        Op::Persist { .. } => match live(ab, &dk, clock)? {
            None => CommandResponse::Persist {
                found: false,
                had_ttl: false,
            },
            Some(r) => {
                let had_ttl = r.expiry.is_some();
                if had_ttl {
                    let v = &r.versioned;
                    ab.put(&dk, record::encode(v.version, None, &v.value));
                }
                CommandResponse::Persist {
                    found: true,
                    had_ttl,
                }
            }
        },
        Op::Txn { txn, .. } => run_txn(ab, index, clock, txn)?,
        Op::Retire { .. } | Op::Expire { .. } | Op::EnableFeatures { .. } => CommandResponse::None,
    })
}

/// Whether `current` (a live record's value and version, or absence) matches `expected`.
fn holds_for(expected: &Expected, current: Option<&Versioned>) -> bool {
    match (expected, current) {
        (Expected::Value(v), Some(cur)) => cur.value == *v,
        (Expected::Value(_), None) => false,
        (Expected::Absent, cur) | (Expected::Version(0), cur) => cur.is_none(),
        (Expected::Version(n), Some(cur)) => cur.version == *n,
        (Expected::Version(_), None) => false,
    }
}

/// A transaction: the compares against the live records at `clock`, then one branch's ops in
/// order through the batch (so a get sees a put before it).
fn run_txn(
    ab: &mut ApplyBatch<'_>,
    index: u64,
    clock: u64,
    txn: &Txn,
) -> io::Result<CommandResponse> {
    let mut succeeded = true;
    for (key, expected) in &txn.compare {
        let current = live(ab, &data_key(key), clock)?;
        if !holds_for(expected, current.as_ref().map(|r| &r.versioned)) {
            succeeded = false;
            break;
        }
    }
    let branch = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    let mut results = Vec::with_capacity(branch.len());
    for op in branch {
        let dk = data_key(op.key());
        results.push(match op {
            TxnOp::Put { key, value, ttl_ms } => {
                let expiry = ttl_ms.map(|ms| Expiry {
                    deadline_ms: clock.saturating_add(ms),
                    ttl_ms: ms,
                });
                write_record(ab, key, &dk, index, expiry, value);
                TxnOpResult::Put {
                    version: index,
                    ttl_ms: *ttl_ms,
                }
            }
            TxnOp::Delete { .. } => {
                let existed = live(ab, &dk, clock)?.is_some();
                if ab.get(&dk)?.is_some() {
                    ab.remove(&dk);
                }
                TxnOpResult::Delete { existed }
            }
            TxnOp::Get { .. } => TxnOpResult::Get {
                current: live(ab, &dk, clock)?.map(|r| r.versioned),
            },
        });
    }
    Ok(CommandResponse::Txn {
        succeeded,
        results,
        version: index,
    })
}

/// A compare-and-swap; `ttl` is `None` for [`Op::Cas`] (the written value has no TTL).
#[allow(clippy::too_many_arguments)]
fn cas(
    ab: &mut ApplyBatch<'_>,
    index: u64,
    clock: u64,
    key: &[u8],
    dk: &[u8],
    expected: &Expected,
    new_value: Option<&Bytes>,
    ttl: Option<TtlChange>,
) -> io::Result<CommandResponse> {
    let current = live(ab, dk, clock)?;
    let holds = holds_for(expected, current.as_ref().map(|r| &r.versioned));
    let mut new_version = 0;
    let mut written_ttl_ms = None;
    if holds {
        match new_value {
            Some(v) => {
                let expiry = ttl.and_then(|t| expiry_for(t, current.as_ref(), clock));
                write_record(ab, key, dk, index, expiry, v);
                new_version = index;
                written_ttl_ms = expiry.map(|e| e.ttl_ms);
            }
            None => ab.remove(dk),
        }
    }
    let response = CommandResponse::Cas {
        succeeded: holds,
        current: current.map(|r| r.versioned),
        new_version,
    };
    Ok(match ttl {
        None => response,
        Some(_) => CommandResponse::WithTtl {
            response: Box::new(response),
            ttl_ms: written_ttl_ms,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(client: u64, seq: u64, acked: u64, op: Op) -> Command {
        Command {
            client_id: client,
            sequence: seq,
            acked_below: acked,
            stamped_ms: 1000,
            op,
        }
    }

    fn put(k: &str, v: &str) -> Op {
        Op::Put {
            key: Bytes::from(k.to_owned()),
            value: Bytes::from(v.to_owned()),
        }
    }

    fn run(tree: &sled::Tree, index: u64, c: &Command) -> io::Result<CommandResponse> {
        let buffer = WriteBuffer::default();
        let mut ab = ApplyBatch::new(tree, &buffer);
        let r = apply_command(&mut ab, index, c)?;
        tree.apply_batch(ab.into_layer().to_batch())
            .map_err(io::Error::other)?;
        Ok(r)
    }

    fn tree() -> io::Result<(tempfile::TempDir, sled::Tree)> {
        let dir = tempfile::tempdir()?;
        let db = sled::open(dir.path()).map_err(io::Error::other)?;
        let t = db.open_tree("t").map_err(io::Error::other)?;
        Ok((dir, t))
    }

    #[test]
    fn a_retried_write_applies_once_and_answers_the_same() -> io::Result<()> {
        let (_d, t) = tree()?;
        assert_eq!(
            run(&t, 1, &cmd(7, 1, 1, put("k", "a")))?,
            CommandResponse::Put { version: 1 }
        );
        // Another client's write in between.
        run(&t, 2, &cmd(8, 1, 1, put("k", "b")))?;
        // The retry of (7, 1) must not overwrite "b" and must answer version 1 again.
        assert_eq!(
            run(&t, 3, &cmd(7, 1, 1, put("k", "a")))?,
            CommandResponse::Put { version: 1 }
        );
        let v = record::decode(
            &t.get(data_key(b"k"))
                .map_err(io::Error::other)?
                .unwrap_or_default(),
        )?;
        assert_eq!(v.versioned.value, Bytes::from_static(b"b"));
        Ok(())
    }

    #[test]
    fn acknowledged_sequences_are_forgotten_and_refused_as_expired() -> io::Result<()> {
        let (_d, t) = tree()?;
        run(&t, 1, &cmd(7, 1, 1, put("k", "a")))?;
        run(&t, 2, &cmd(7, 2, 2, put("k", "b")))?; // acks 1
        assert!(t.get(dedup_key(7, 1)).map_err(io::Error::other)?.is_none());
        assert_eq!(
            run(&t, 3, &cmd(7, 1, 1, put("k", "a")))?,
            CommandResponse::Expired
        );
        Ok(())
    }

    #[test]
    fn cas_compares_value_version_and_absence() -> io::Result<()> {
        let (_d, t) = tree()?;
        let k = Bytes::from_static(b"order");
        let cas = |e: Expected, n: Option<&'static str>| Op::Cas {
            key: k.clone(),
            expected: e,
            new_value: n.map(|s: &'static str| Bytes::from_static(s.as_bytes())),
        };
        let r = run(&t, 1, &cmd(0, 0, 0, cas(Expected::Absent, Some("created"))))?;
        assert!(matches!(
            r,
            CommandResponse::Cas {
                succeeded: true,
                new_version: 1,
                ..
            }
        ));
        let r = run(
            &t,
            2,
            &cmd(
                0,
                0,
                0,
                cas(Expected::Value(Bytes::from_static(b"paid")), Some("x")),
            ),
        )?;
        assert!(matches!(
            r,
            CommandResponse::Cas {
                succeeded: false,
                ..
            }
        ));
        let r = run(
            &t,
            3,
            &cmd(0, 0, 0, cas(Expected::Version(1), Some("paid"))),
        )?;
        assert!(matches!(
            r,
            CommandResponse::Cas {
                succeeded: true,
                new_version: 3,
                ..
            }
        ));
        let r = run(
            &t,
            4,
            &cmd(0, 0, 0, cas(Expected::Version(1), Some("shipped"))),
        )?;
        match r {
            CommandResponse::Cas {
                succeeded: false,
                current: Some(cur),
                ..
            } => {
                assert_eq!(cur.version, 3);
                assert_eq!(cur.value, Bytes::from_static(b"paid"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let r = run(
            &t,
            5,
            &cmd(
                0,
                0,
                0,
                cas(Expected::Value(Bytes::from_static(b"paid")), None),
            ),
        )?;
        assert!(matches!(
            r,
            CommandResponse::Cas {
                succeeded: true,
                ..
            }
        ));
        assert!(
            t.get(data_key(b"order"))
                .map_err(io::Error::other)?
                .is_none()
        );
        Ok(())
    }

    /// Writes whatever the buffer holds to the tree, as the state machine's flush does.
    fn flush(t: &sled::Tree, buffer: &WriteBuffer) -> io::Result<()> {
        if let Some(layer) = buffer.freeze()? {
            t.apply_batch(layer.to_batch()).map_err(io::Error::other)?;
            buffer.flushed()?;
        }
        Ok(())
    }

    /// Every record of `t`, in key order.
    fn contents(t: &sled::Tree) -> io::Result<Vec<(sled::IVec, sled::IVec)>> {
        t.iter().collect::<Result<_, _>>().map_err(io::Error::other)
    }

    /// A buffer that indexes the deduplication records `t` holds.
    fn indexed_buffer(t: &sled::Tree) -> io::Result<WriteBuffer> {
        let buffer = WriteBuffer::default();
        index_dedup(&buffer, t)?;
        Ok(buffer)
    }

    #[test]
    fn buffering_flush_points_and_the_dedup_index_do_not_change_the_outcome() -> io::Result<()> {
        // Two clients with several writes in flight (watermarks trail their sequences, so
        // dedup records die in the staged layer, in the buffer and in the tree), retries of
        // writes still in flight (answered from their records wherever those live), puts,
        // deletes and CAS on few keys; applied once per call straight to the tree, and through
        // the buffer in calls of varied size with flushes at varied points, with and without
        // the index of stored dedup records (rebuilt from the tree at some flush points, as a
        // restart or a snapshot install does).
        let mut cmds: Vec<Command> = Vec::new();
        for i in 0..400u64 {
            let client = 1 + i % 2;
            let seq = 1 + i / 2;
            let key = format!("k{}", i % 5);
            let op = match i % 7 {
                3 => Op::Delete {
                    key: Bytes::from(key),
                },
                5 => Op::Cas {
                    key: Bytes::from(key),
                    expected: Expected::Absent,
                    new_value: Some(Bytes::from(format!("c{i}"))),
                },
                // TTLs that run out within the run, touches, and expiry entries (fresh and
                // stale): deadlines met inside a batch, across flushes and after restarts.
                1 if i % 3 == 0 => Op::PutTtl {
                    key: Bytes::from(key),
                    value: Bytes::from(format!("t{i}")),
                    ttl: TtlChange::Set(30 + i % 50),
                },
                6 if i % 2 == 0 => Op::Touch {
                    key: Bytes::from(key),
                    ttl_ms: (i % 4 == 0).then_some(40),
                },
                2 if i % 5 == 0 => Op::Expire {
                    keys: (0..5u64)
                        .map(|k| (Bytes::from(format!("k{k}")), 1_000 + i * 10 - k * 7))
                        .collect(),
                },
                _ => put(&key, &format!("v{i}")),
            };
            let mut c = cmd(client, seq, seq.saturating_sub(3).max(1), op);
            c.stamped_ms = 1_000 + i * 10;
            cmds.push(c);
            if i % 11 == 10 {
                // The same client's previous write again: its record is not yet acknowledged.
                let again = cmds[cmds.len() - 3].clone();
                cmds.push(again);
            }
        }
        let (_d1, t1) = tree()?;
        let mut want = Vec::new();
        for (i, c) in cmds.iter().enumerate() {
            want.push(run(&t1, i as u64 + 1, c)?);
        }
        let retried = cmds
            .iter()
            .enumerate()
            .filter(|(i, c)| {
                cmds[..*i]
                    .iter()
                    .any(|p| p.client_id == c.client_id && p.sequence == c.sequence)
            })
            .count();
        assert!(retried >= 30, "only {retried} retries");
        for indexed in [false, true] {
            for seed in [1u64, 7, 42] {
                let (_d2, t2) = tree()?;
                let mut buffer = if indexed {
                    indexed_buffer(&t2)?
                } else {
                    WriteBuffer::default()
                };
                let mut got = Vec::new();
                let mut rng = seed;
                let mut next = || {
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    rng >> 33
                };
                let mut i = 0usize;
                let mut rebuilt = 0;
                while i < cmds.len() {
                    let n = (1 + next() % 9) as usize;
                    let mut ab = ApplyBatch::new(&t2, &buffer);
                    for (j, c) in cmds.iter().enumerate().skip(i).take(n) {
                        got.push(apply_command(&mut ab, j as u64 + 1, c)?);
                    }
                    buffer.merge(ab.into_layer())?;
                    if next() % 4 == 0 {
                        flush(&t2, &buffer)?;
                        if indexed && next() % 3 == 0 {
                            buffer = indexed_buffer(&t2)?;
                            rebuilt += 1;
                        }
                    }
                    i += n;
                }
                flush(&t2, &buffer)?;
                assert!(!indexed || rebuilt > 0, "seed {seed}: index never rebuilt");
                assert_eq!(
                    got, want,
                    "responses differ (seed {seed}, indexed {indexed})"
                );
                assert_eq!(
                    contents(&t1)?,
                    contents(&t2)?,
                    "trees differ (seed {seed}, indexed {indexed})"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn the_dedup_index_answers_for_records_in_the_tree_only() -> io::Result<()> {
        // A record flushed to the tree is found through the index; one deleted in a later
        // flush is gone from it; keys outside the prefix are never answered by the index.
        let (_d, t) = tree()?;
        let buffer = indexed_buffer(&t)?;
        let first = cmd(9, 1, 0, put("a", "1"));
        let mut ab = ApplyBatch::new(&t, &buffer);
        let r1 = apply_command(&mut ab, 1, &first)?;
        buffer.merge(ab.into_layer())?;
        flush(&t, &buffer)?;
        assert_eq!(buffer.stored_holds(&dedup_key(9, 1))?, Some(true));
        assert_eq!(buffer.stored_holds(&dedup_key(9, 2))?, Some(false));
        assert_eq!(buffer.stored_holds(&data_key(b"a"))?, None);
        // The retry is answered from the tree's record.
        let mut ab = ApplyBatch::new(&t, &buffer);
        assert_eq!(apply_command(&mut ab, 2, &first)?, r1);
        // Acknowledging sequence 1 deletes its record; once flushed, the index forgets it.
        apply_command(&mut ab, 3, &cmd(9, 2, 2, put("b", "2")))?;
        buffer.merge(ab.into_layer())?;
        flush(&t, &buffer)?;
        assert_eq!(buffer.stored_holds(&dedup_key(9, 1))?, Some(false));
        assert!(t.get(dedup_key(9, 1)).map_err(io::Error::other)?.is_none());
        assert_eq!(
            buffer.stored_range(&dedup_key(9, 0), &dedup_key(9, u64::MAX))?,
            Some(vec![dedup_key(9, 2).to_vec()])
        );
        Ok(())
    }

    #[test]
    fn batching_does_not_change_the_outcome() -> io::Result<()> {
        // Same commands, applied one per batch and all in one batch: identical trees.
        let cmds: Vec<Command> = (0..50u64)
            .map(|i| {
                cmd(
                    1 + i % 3,
                    1 + i / 3,
                    1 + i / 3,
                    put(&format!("k{}", i % 7), &format!("v{i}")),
                )
            })
            .collect();
        let (_d1, t1) = tree()?;
        for (i, c) in cmds.iter().enumerate() {
            run(&t1, i as u64 + 1, c)?;
        }
        let (_d2, t2) = tree()?;
        let buffer = WriteBuffer::default();
        let mut ab = ApplyBatch::new(&t2, &buffer);
        for (i, c) in cmds.iter().enumerate() {
            apply_command(&mut ab, i as u64 + 1, c)?;
        }
        t2.apply_batch(ab.into_layer().to_batch())
            .map_err(io::Error::other)?;
        assert_eq!(contents(&t1)?, contents(&t2)?);
        Ok(())
    }

    fn at(stamp: u64, op: Op) -> Command {
        Command {
            client_id: 0,
            sequence: 0,
            acked_below: 0,
            stamped_ms: stamp,
            op,
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_owned())
    }

    fn stored(t: &sled::Tree, key: &str) -> io::Result<Option<Record>> {
        t.get(data_key(key.as_bytes()))
            .map_err(io::Error::other)?
            .map(|v| record::decode(&v))
            .transpose()
    }

    #[test]
    fn a_key_with_a_ttl_is_absent_to_commands_once_its_deadline_passed() -> io::Result<()> {
        let (_d, t) = tree()?;
        let put_ttl = Op::PutTtl {
            key: b("s"),
            value: b("v"),
            ttl: TtlChange::Set(1_000),
        };
        let r = run(&t, 1, &at(10_000, put_ttl))?;
        assert_eq!(
            r,
            CommandResponse::WithTtl {
                response: Box::new(CommandResponse::Put { version: 1 }),
                ttl_ms: Some(1_000)
            }
        );
        let rec = stored(&t, "s")?.expect("record");
        assert_eq!(
            rec.expiry,
            Some(Expiry {
                deadline_ms: 11_000,
                ttl_ms: 1_000
            })
        );
        // Just before the deadline the key is there; at it, a CAS expecting absence holds
        // although no expiry entry removed the record yet.
        let absent = |stamp| {
            at(
                stamp,
                Op::Cas {
                    key: b("s"),
                    expected: Expected::Absent,
                    new_value: None,
                },
            )
        };
        assert!(matches!(
            run(&t, 2, &absent(10_999))?,
            CommandResponse::Cas {
                succeeded: false,
                ..
            }
        ));
        assert!(matches!(
            run(&t, 3, &absent(11_000))?,
            CommandResponse::Cas {
                succeeded: true,
                ..
            }
        ));
        Ok(())
    }

    #[test]
    fn touch_persist_keep_and_expire_follow_the_record_not_the_index() -> io::Result<()> {
        let (_d, t) = tree()?;
        let put_ttl = |ttl| Op::PutTtl {
            key: b("s"),
            value: b("v"),
            ttl,
        };
        run(&t, 1, &at(1_000, put_ttl(TtlChange::Set(500))))?;
        // A touch at 1,200 restarts the TTL: deadline 1,700, version unchanged.
        let touch = |ttl_ms| Op::Touch {
            key: b("s"),
            ttl_ms,
        };
        assert_eq!(
            run(&t, 2, &at(1_200, touch(None)))?,
            CommandResponse::Touch {
                found: true,
                ttl_ms: Some(500)
            }
        );
        let rec = stored(&t, "s")?.expect("record");
        assert_eq!(rec.versioned.version, 1);
        assert_eq!(rec.expiry.map(|e| e.deadline_ms), Some(1_700));
        // The expiry of the first deadline (1,500) finds the record moved on: only the stale
        // index entry goes.
        run(
            &t,
            3,
            &at(
                1_600,
                Op::Expire {
                    keys: vec![(b("s"), 1_500)],
                },
            ),
        )?;
        assert!(stored(&t, "s")?.is_some());
        assert!(
            t.get(expiry_key(1_500, b"s"))
                .map_err(io::Error::other)?
                .is_none()
        );
        // Keep keeps the deadline; a plain put clears it (the index entry stays, stale).
        run(&t, 4, &at(1_650, put_ttl(TtlChange::Keep)))?;
        assert_eq!(
            stored(&t, "s")?
                .and_then(|r| r.expiry)
                .map(|e| e.deadline_ms),
            Some(1_700)
        );
        run(&t, 5, &at(1_660, put("s", "plain")))?;
        assert_eq!(stored(&t, "s")?.and_then(|r| r.expiry), None);
        let expire_1700 = Op::Expire {
            keys: vec![(b("s"), 1_700)],
        };
        run(&t, 6, &at(1_800, expire_1700.clone()))?;
        assert_eq!(
            stored(&t, "s")?.map(|r| r.versioned.value),
            Some(b("plain"))
        );
        // Persist removes a TTL; an expiry entry of the old deadline removes nothing.
        run(&t, 7, &at(1_900, put_ttl(TtlChange::Set(100))))?;
        assert_eq!(
            run(&t, 8, &at(1_950, Op::Persist { key: b("s") }))?,
            CommandResponse::Persist {
                found: true,
                had_ttl: true
            }
        );
        run(
            &t,
            9,
            &at(
                2_100,
                Op::Expire {
                    keys: vec![(b("s"), 2_000)],
                },
            ),
        )?;
        assert!(stored(&t, "s")?.is_some());
        // A due key is removed, with its index entry; not before its deadline.
        run(&t, 10, &at(3_000, put_ttl(TtlChange::Set(100))))?;
        let expire_3100 = Op::Expire {
            keys: vec![(b("s"), 3_100)],
        };
        // An entry stamped before the deadline (clock 3,050) removes nothing.
        run(&t, 11, &at(3_050, expire_3100.clone()))?;
        assert!(stored(&t, "s")?.is_some());
        run(&t, 12, &at(3_100, expire_3100))?;
        assert!(stored(&t, "s")?.is_none());
        // Touch and persist of an absent (or expired) key find nothing and write nothing.
        assert_eq!(
            run(&t, 13, &at(3_200, touch(Some(1_000))))?,
            CommandResponse::Touch {
                found: false,
                ttl_ms: None
            }
        );
        assert!(stored(&t, "s")?.is_none());
        Ok(())
    }

    #[test]
    fn enabled_features_accumulate() -> io::Result<()> {
        let (_d, t) = tree()?;
        run(&t, 1, &at(1, Op::EnableFeatures { bits: 1 }))?;
        run(&t, 2, &at(2, Op::EnableFeatures { bits: 4 }))?;
        let got = decode_features(t.get(KEY_FEATURES).map_err(io::Error::other)?.as_deref())?;
        assert_eq!(got, 5);
        Ok(())
    }

    #[test]
    fn a_transaction_runs_one_branch_in_order_under_one_version() -> io::Result<()> {
        let (_d, t) = tree()?;
        run(&t, 1, &at(1_000, put("order:{1}:state", "new")))?;
        run(
            &t,
            2,
            &at(
                1_000,
                Op::PutTtl {
                    key: b("order:{1}:hold"),
                    value: b("h"),
                    ttl: TtlChange::Set(100),
                },
            ),
        )?;
        let pay = |stamp| {
            at(
                stamp,
                Op::Txn {
                    key: b("order:{1}:state"),
                    txn: Box::new(Txn {
                        compare: vec![
                            (b("order:{1}:state"), Expected::Value(b("new"))),
                            (b("order:{1}:hold"), Expected::Absent),
                        ],
                        success: vec![
                            TxnOp::Put {
                                key: b("order:{1}:state"),
                                value: b("paid"),
                                ttl_ms: None,
                            },
                            TxnOp::Get {
                                key: b("order:{1}:state"),
                            },
                            TxnOp::Delete {
                                key: b("order:{1}:lines"),
                            },
                            TxnOp::Put {
                                key: b("order:{1}:stock"),
                                value: b("reserved"),
                                ttl_ms: Some(60_000),
                            },
                        ],
                        failure: vec![TxnOp::Get {
                            key: b("order:{1}:hold"),
                        }],
                    }),
                },
            )
        };
        // The hold is still live at 1,050: the compares fail, the failure branch reads it.
        match run(&t, 3, &pay(1_050))? {
            CommandResponse::Txn {
                succeeded: false,
                results,
                version: 3,
            } => assert!(matches!(
                &results[..],
                [TxnOpResult::Get { current: Some(_) }]
            )),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            stored(&t, "order:{1}:state")?.map(|r| r.versioned.value),
            Some(b("new"))
        );
        // At 1,100 the hold has expired (no expiry entry yet): the success branch runs, and
        // its get sees its own put; every write gets version 4.
        match run(&t, 4, &pay(1_100))? {
            CommandResponse::Txn {
                succeeded: true,
                results,
                version: 4,
            } => assert_eq!(
                results,
                vec![
                    TxnOpResult::Put {
                        version: 4,
                        ttl_ms: None
                    },
                    TxnOpResult::Get {
                        current: Some(Versioned {
                            value: b("paid"),
                            version: 4
                        })
                    },
                    TxnOpResult::Delete { existed: false },
                    TxnOpResult::Put {
                        version: 4,
                        ttl_ms: Some(60_000)
                    },
                ]
            ),
            other => panic!("{other:?}"),
        }
        let stock = stored(&t, "order:{1}:stock")?.expect("stock");
        assert_eq!(stock.versioned.version, 4);
        assert_eq!(stock.expiry.map(|e| e.deadline_ms), Some(61_100));
        Ok(())
    }

    #[test]
    fn a_retried_transaction_keeps_its_outcome_but_not_large_read_values() -> io::Result<()> {
        let (_d, t) = tree()?;
        let big = Bytes::from(vec![b'x'; 40 * 1024]);
        for (i, k) in ["big:{1}:a", "big:{1}:b", "small:{1}:a"].iter().enumerate() {
            let value = if k.starts_with("big") {
                big.clone()
            } else {
                b("s")
            };
            run(
                &t,
                i as u64 + 1,
                &cmd(0, 0, 0, Op::Put { key: b(k), value }),
            )?;
        }
        let txn = |keys: &[&str]| Op::Txn {
            key: b(keys[0]),
            txn: Box::new(Txn {
                compare: vec![],
                success: keys
                    .iter()
                    .map(|k| TxnOp::Get { key: b(k) })
                    .chain([TxnOp::Put {
                        key: b("w:{1}"),
                        value: b("1"),
                        ttl_ms: None,
                    }])
                    .collect(),
                failure: vec![],
            }),
        };
        // 80 KiB of reads: the first answer has them, a retry gets the outcome without them.
        let first = run(&t, 10, &cmd(5, 1, 1, txn(&["big:{1}:a", "big:{1}:b"])))?;
        let retry = run(&t, 11, &cmd(5, 1, 1, txn(&["big:{1}:a", "big:{1}:b"])))?;
        match (&first, &retry) {
            (
                CommandResponse::Txn { results: a, .. },
                CommandResponse::Txn {
                    results: r,
                    version: 10,
                    succeeded: true,
                },
            ) => {
                assert!(matches!(a[0], TxnOpResult::Get { current: Some(_) }));
                assert_eq!(r[0], TxnOpResult::GetElided);
                assert_eq!(r[1], TxnOpResult::GetElided);
                assert_eq!(
                    r[2],
                    TxnOpResult::Put {
                        version: 10,
                        ttl_ms: None
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        // Small reads are kept whole.
        let first = run(&t, 12, &cmd(5, 2, 2, txn(&["small:{1}:a"])))?;
        assert_eq!(run(&t, 13, &cmd(5, 2, 2, txn(&["small:{1}:a"])))?, first);
        Ok(())
    }
}
