//! Applied writes not yet in sled: a shard state machine's write buffer.
//!
//! Every applied entry is already durable in the write-ahead log, so the state machine need
//! not write each apply call to sled. It pays to wait: each sled `apply_batch` seals and writes
//! one of sled's IO buffers (a `pwrite` plus `sync_file_range`), and every key is a tree insert.
//! Apply therefore merges its writes into this buffer, and the buffer goes to sled in large
//! atomic batches, where a key rewritten many times is written once and a deduplication record
//! created and acknowledged meanwhile is never written at all. After a crash sled holds the
//! state as of its last batch, `m:applied` included, and openraft re-applies the rest from the
//! log.
//!
//! Layers, newest first: `active` (apply merges into it), `flushing` (frozen, being written to
//! sled by one background task), then the sled tree. A read asks them in that order; the first
//! that holds the key, as a value or as a tombstone, answers.
//!
//! Invariants:
//! - `flushing` is cleared only after its batch is in sled, and a layer is frozen only while no
//!   other is flushing, so the layers over sled always equal the applied state.
//! - A slot marked `fresh` holds a key that no older layer nor sled held when the slot was
//!   created; deleting it drops the slot instead of leaving a tombstone.
//! - The index of stored keys (deduplication records), when present, equals the tree's keys of
//!   its prefix as they will be once the flushing layer is written: it is built from the tree
//!   with nothing flushing, and changed only when a layer is frozen, by that layer's slots.
//! - Raft log entries are purged only after a snapshot, and a snapshot first drains the buffer
//!   into sled, so every buffered write can still be re-applied from the log.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A buffered key: its newest value, or a tombstone.
#[derive(Clone, Debug)]
pub struct Slot {
    pub value: Option<Vec<u8>>,
    /// No older layer nor sled held the key when this slot was created.
    fresh: bool,
}

/// Writes over older state, newest per key.
#[derive(Default, Debug)]
pub struct Layer {
    slots: BTreeMap<Vec<u8>, Slot>,
    /// Key and value bytes held (for the flush threshold).
    bytes: usize,
}

fn slot_bytes(key: &[u8], slot: &Slot) -> usize {
    key.len() + slot.value.as_ref().map_or(0, Vec::len)
}

impl Layer {
    pub fn get(&self, key: &[u8]) -> Option<&Slot> {
        self.slots.get(key)
    }

    /// Records a write (`None` deletes). `fresh` says no older layer nor sled holds the key.
    pub fn write(&mut self, key: &[u8], value: Option<Vec<u8>>, fresh: bool) {
        match self.slots.get_mut(key) {
            Some(slot) if value.is_none() && slot.fresh => {
                self.bytes -= slot_bytes(key, slot);
                self.slots.remove(key);
            }
            Some(slot) => {
                self.bytes -= slot_bytes(key, slot);
                slot.value = value;
                self.bytes += slot_bytes(key, slot);
            }
            None if value.is_none() && fresh => {}
            None => {
                let slot = Slot { value, fresh };
                self.bytes += slot_bytes(key, &slot);
                self.slots.insert(key.to_vec(), slot);
            }
        }
    }

    /// Writes every slot of a newer layer over this one.
    pub fn absorb(&mut self, newer: Layer) {
        for (key, slot) in newer.slots {
            self.write(&key, slot.value, slot.fresh);
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.slots.keys().map(Vec::as_slice)
    }

    /// Slots with keys in `[start, end)` (`end` `None`: no upper bound), in key order.
    pub fn range<'a>(
        &'a self,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Slot)> + 'a {
        let upper = match end {
            Some(e) => Bound::Excluded(e.to_vec()),
            None => Bound::Unbounded,
        };
        self.slots
            .range::<Vec<u8>, _>((Bound::Included(start.to_vec()), upper))
    }

    /// The layer as one sled batch (atomic when applied).
    pub fn to_batch(&self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, slot) in &self.slots {
            match &slot.value {
                Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                None => batch.remove(k.as_slice()),
            }
        }
        batch
    }
}

fn poisoned() -> io::Error {
    io::Error::other("state machine buffer lock poisoned")
}

/// Which keys of one prefix the tree holds, kept exactly so that a lookup of such a key that
/// misses the buffer need not ask sled. For deduplication records: nearly every write looks up
/// a record that does not exist (its own, before executing) and scans the records it may now
/// delete, and a sled lookup or scan costs a tree descent; the records that reach sled at all
/// are few (most are created and deleted inside the buffer).
struct StoredIndex {
    prefix: u8,
    /// The prefix's keys in the tree as it will be once the `flushing` layer is written.
    keys: BTreeSet<Vec<u8>>,
}

/// The two buffered layers of one shard (see the module note).
#[derive(Default)]
pub struct WriteBuffer {
    active: RwLock<Layer>,
    flushing: Mutex<Option<Arc<Layer>>>,
    /// `None`: not indexed (every miss asks sled).
    index: Mutex<Option<StoredIndex>>,
}

impl WriteBuffer {
    fn active(&self) -> io::Result<RwLockReadGuard<'_, Layer>> {
        self.active.read().map_err(|_| poisoned())
    }

    fn active_mut(&self) -> io::Result<RwLockWriteGuard<'_, Layer>> {
        self.active.write().map_err(|_| poisoned())
    }

    fn flushing(&self) -> io::Result<MutexGuard<'_, Option<Arc<Layer>>>> {
        self.flushing.lock().map_err(|_| poisoned())
    }

    fn index(&self) -> io::Result<MutexGuard<'_, Option<StoredIndex>>> {
        self.index.lock().map_err(|_| poisoned())
    }

    /// Starts indexing the keys that begin with `prefix`: `stored` must be every such key the
    /// tree holds now, with nothing frozen or being flushed (at open, after an install).
    pub fn index_stored(
        &self,
        prefix: u8,
        stored: impl IntoIterator<Item = io::Result<Vec<u8>>>,
    ) -> io::Result<()> {
        let keys = stored.into_iter().collect::<io::Result<BTreeSet<_>>>()?;
        if keys.iter().any(|k| k.first() != Some(&prefix)) {
            return Err(io::Error::other("indexed key outside its prefix"));
        }
        *self.index()? = Some(StoredIndex { prefix, keys });
        Ok(())
    }

    /// `Some(held)` when `key` is indexed: whether the tree holds it (once the flushing layer
    /// is written; the caller has asked the buffer first). `None`: ask the tree.
    pub fn stored_holds(&self, key: &[u8]) -> io::Result<Option<bool>> {
        Ok(match &*self.index()? {
            Some(ix) if key.first() == Some(&ix.prefix) => Some(ix.keys.contains(key)),
            _ => None,
        })
    }

    /// `Some(keys)` when `[start, end)` lies inside the indexed prefix: the tree's keys in it
    /// (as [`stored_holds`](Self::stored_holds)). `None`: ask the tree.
    pub fn stored_range(&self, start: &[u8], end: &[u8]) -> io::Result<Option<Vec<Vec<u8>>>> {
        Ok(match &*self.index()? {
            Some(ix)
                if start.first() == Some(&ix.prefix)
                    && end.first() == Some(&ix.prefix)
                    && start <= end =>
            {
                Some(
                    ix.keys
                        .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
                        .cloned()
                        .collect(),
                )
            }
            _ => None,
        })
    }

    /// The buffered state of `key`: `None` if no layer holds it (ask sled), else its value or
    /// `Some(None)` for a tombstone.
    pub fn lookup(&self, key: &[u8]) -> io::Result<Option<Option<Vec<u8>>>> {
        if let Some(slot) = self.active()?.get(key) {
            return Ok(Some(slot.value.clone()));
        }
        let flushing = self.flushing()?.clone();
        Ok(flushing.and_then(|l| l.get(key).map(|s| s.value.clone())))
    }

    /// The buffered slots with keys in `[start, end)`, newest layer winning, in key order.
    /// Tombstones are included: they hide sled's older values.
    pub fn range(&self, start: &[u8], end: Option<&[u8]>) -> io::Result<Layer> {
        // Active first: a slot that moves to `flushing` meanwhile is then still seen, and one
        // written to active after this read is newer than the caller needs.
        let mut merged = Layer::default();
        let newer: Vec<(Vec<u8>, Slot)> = self
            .active()?
            .range(start, end)
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        if let Some(older) = self.flushing()?.clone() {
            for (k, s) in older.range(start, end) {
                merged.slots.insert(k.clone(), s.clone());
            }
        }
        for (k, s) in newer {
            merged.slots.insert(k, s);
        }
        Ok(merged)
    }

    /// Merges one apply call's writes into the active layer.
    pub fn merge(&self, staged: Layer) -> io::Result<()> {
        self.active_mut()?.absorb(staged);
        Ok(())
    }

    /// Keys and bytes in the active layer.
    pub fn active_size(&self) -> io::Result<(usize, usize)> {
        let a = self.active()?;
        Ok((a.len(), a.bytes()))
    }

    /// Moves the active layer to `flushing` and returns it, or `None` if it is empty. The caller
    /// must have seen the previous flush finish.
    pub fn freeze(&self) -> io::Result<Option<Arc<Layer>>> {
        let mut flushing = self.flushing()?;
        if flushing.is_some() {
            return Err(io::Error::other(
                "state machine buffer frozen while a flush is in flight",
            ));
        }
        let mut active = self.active_mut()?;
        if active.is_empty() {
            return Ok(None);
        }
        let layer = Arc::new(std::mem::take(&mut *active));
        // The index describes the tree with this layer written: a key the layer holds is read
        // from the layer until then, and the index answers only after the buffer missed.
        if let Some(ix) = &mut *self.index()? {
            let end = ix.prefix.checked_add(1).map(|e| [e]);
            for (k, slot) in layer.range(&[ix.prefix], end.as_ref().map(|e| e.as_slice())) {
                match slot.value {
                    Some(_) => ix.keys.insert(k.clone()),
                    None => ix.keys.remove(k),
                };
            }
        }
        *flushing = Some(layer.clone());
        Ok(Some(layer))
    }

    /// The frozen layer is in sled now: reads may go there.
    pub fn flushed(&self) -> io::Result<()> {
        *self.flushing()? = None;
        Ok(())
    }

    /// Forgets every buffered write and the index (a snapshot install replaced the whole
    /// state; [`index_stored`](Self::index_stored) indexes the new tree).
    pub fn clear(&self) -> io::Result<()> {
        *self.active_mut()? = Layer::default();
        *self.flushing()? = None;
        *self.index()? = None;
        Ok(())
    }
}

/// Up to `limit` live records of buffered slots laid over stored records, both in key order:
/// on a tie the slot wins, and a tombstone hides the stored record.
pub fn overlay<'a>(
    buffered: impl Iterator<Item = (&'a Vec<u8>, &'a Slot)>,
    stored: impl Iterator<Item = io::Result<(Vec<u8>, Vec<u8>)>>,
    limit: usize,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut buffered = buffered.peekable();
    let mut stored = stored.peekable();
    let mut out = Vec::new();
    while out.len() < limit {
        if let Some(Err(_)) = stored.peek()
            && let Some(Err(e)) = stored.next()
        {
            return Err(e);
        }
        let stored_key = match stored.peek() {
            Some(Ok((k, _))) => Some(k.as_slice()),
            _ => None,
        };
        let take_buffered = match (buffered.peek(), stored_key) {
            (Some((bk, _)), Some(sk)) => bk.as_slice() <= sk,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_buffered {
            let Some((k, slot)) = buffered.next() else {
                break;
            };
            if stored_key == Some(k.as_slice()) {
                stored.next();
            }
            if let Some(v) = &slot.value {
                out.push((k.clone(), v.clone()));
            }
        } else if let Some(item) = stored.next() {
            out.push(item?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn a_fresh_key_deleted_leaves_no_tombstone_and_an_old_one_does() {
        let mut l = Layer::default();
        l.write(b"new", v("x"), true);
        l.write(b"new", None, false);
        assert!(l.get(b"new").is_none());
        l.write(b"old", v("x"), false);
        l.write(b"old", None, false);
        assert!(matches!(l.get(b"old"), Some(Slot { value: None, .. })));
        // A delete of a key nobody holds, known to be absent: nothing to record.
        l.write(b"gone", None, true);
        assert!(l.get(b"gone").is_none());
        assert_eq!(l.len(), 1);
        assert_eq!(l.bytes(), 3);
    }

    #[test]
    fn absorbing_keeps_the_older_layers_knowledge_of_absence() {
        let mut active = Layer::default();
        active.write(b"c1", v("resp"), true);
        // A later apply call deletes it without knowing it was fresh.
        let mut staged = Layer::default();
        staged.write(b"c1", None, false);
        staged.write(b"k", v("v2"), false);
        active.absorb(staged);
        assert!(active.get(b"c1").is_none());
        assert_eq!(active.get(b"k").and_then(|s| s.value.clone()), v("v2"));
    }

    #[test]
    fn a_scan_lays_the_buffer_over_the_tree() -> io::Result<()> {
        let stored: Vec<(Vec<u8>, Vec<u8>)> = ["a", "b", "c", "e"]
            .iter()
            .map(|k| (k.as_bytes().to_vec(), b"old".to_vec()))
            .collect();
        let mut l = Layer::default();
        l.write(b"b", None, false); // hides a stored key
        l.write(b"c", v("new"), false); // replaces one
        l.write(b"d", v("new"), true); // adds one
        l.write(b"f", None, false); // hides nothing
        let all = overlay(l.range(b"", None), stored.clone().into_iter().map(Ok), 10)?;
        let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, [&b"a"[..], b"c", b"d", b"e"]);
        assert_eq!(all[1].1, b"new");
        let two = overlay(l.range(b"", None), stored.into_iter().map(Ok), 2)?;
        assert_eq!(two.len(), 2);
        let failing = vec![Err(io::Error::other("disk"))];
        assert!(overlay(l.range(b"", None), failing.into_iter(), 10).is_err());
        Ok(())
    }

    #[test]
    fn reads_see_the_newest_layer_and_a_frozen_layer_until_it_is_flushed() -> io::Result<()> {
        let b = WriteBuffer::default();
        let mut s = Layer::default();
        s.write(b"a", v("1"), false);
        s.write(b"b", v("1"), false);
        b.merge(s)?;
        let frozen = b.freeze()?.ok_or_else(|| io::Error::other("empty"))?;
        assert_eq!(frozen.len(), 2);
        let mut s = Layer::default();
        s.write(b"a", v("2"), false);
        s.write(b"b", None, false);
        b.merge(s)?;
        assert_eq!(b.lookup(b"a")?, Some(v("2")));
        assert_eq!(b.lookup(b"b")?, Some(None));
        assert!(b.freeze().is_err(), "a second freeze while one is flushing");
        let r = b.range(b"a", None)?;
        assert_eq!(r.len(), 2);
        assert_eq!(r.get(b"a").and_then(|s| s.value.clone()), v("2"));
        b.flushed()?;
        assert_eq!(b.lookup(b"a")?, Some(v("2")));
        assert_eq!(b.lookup(b"zz")?, None);
        Ok(())
    }
}
