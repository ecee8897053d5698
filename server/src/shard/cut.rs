//! A consistent cut of a live sled tree while writes go on: snapshots without stopping apply.
//!
//! Dumping a large shard takes seconds; apply must not wait that long. At the cut (taken in
//! order with apply) a [`Cut`] starts. From then on, before each apply batch is written, apply
//! records the value every key of the batch had at the cut, the first time the key is touched
//! ([`Cut::record`]). The dumper walks the live tree in key order ([`Cut::records`]): for a key
//! with a recorded pre-image it emits that (or nothing, if the key did not exist at the cut),
//! otherwise the live value; after the walk it emits the pre-images of keys that existed at the
//! cut but were deleted before the walk reached them. The result is exactly the tree as of the
//! cut.
//!
//! Invariants:
//! - a batch's pre-images are recorded before the batch is written (same thread), so any
//!   post-cut value the walk can see already has its pre-image recorded;
//! - recording and the walk's per-key step take the same lock, and each recorded key notes
//!   whether the walk had already passed it: a key walked before its first post-cut write was
//!   emitted with its live (then unchanged) value and is not emitted again;
//! - memory grows with the keys written during the dump, not with the shard's size.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Mutex;

/// What a key held at the cut, and whether the walk had passed it when it was first changed.
struct PreImage {
    value: Option<Vec<u8>>,
    walked_past: bool,
}

#[derive(Default)]
struct State {
    pre: HashMap<Vec<u8>, PreImage>,
    /// The last key the walk emitted or skipped (keys sort as sled orders them).
    last_walked: Option<Vec<u8>>,
}

/// The pre-image log of one cut.
#[derive(Default)]
pub struct Cut {
    state: Mutex<State>,
}

fn poisoned() -> io::Error {
    io::Error::other("snapshot cut lock poisoned")
}

impl Cut {
    pub fn new() -> Self {
        Cut::default()
    }

    /// Records the current value of each of `keys` not recorded yet. Call before writing a
    /// batch that changes them.
    pub fn record<'k>(
        &self,
        tree: &sled::Tree,
        keys: impl Iterator<Item = &'k [u8]>,
    ) -> io::Result<()> {
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        for k in keys {
            if st.pre.contains_key(k) {
                continue;
            }
            let value = tree.get(k).map_err(io::Error::other)?.map(|v| v.to_vec());
            let walked_past = st.last_walked.as_deref().is_some_and(|w| k <= w);
            st.pre.insert(k.to_vec(), PreImage { value, walked_past });
        }
        Ok(())
    }

    /// Keys recorded so far (written during the dump).
    pub fn recorded(&self) -> usize {
        self.state.lock().map(|s| s.pre.len()).unwrap_or(0)
    }

    /// The tree's records as of the cut, except keys for which `skip` holds.
    pub fn records<'a, F>(&'a self, tree: &sled::Tree, skip: F) -> CutRecords<'a, F>
    where
        F: Fn(&[u8]) -> bool,
    {
        CutRecords {
            cut: self,
            walk: tree.iter(),
            seen: HashSet::new(),
            leftovers: None,
            skip,
        }
    }
}

/// Iterator over a cut's records (see [`Cut::records`]).
pub struct CutRecords<'a, F> {
    cut: &'a Cut,
    walk: sled::Iter,
    /// Keys emitted from their pre-image during the walk.
    seen: HashSet<Vec<u8>>,
    leftovers: Option<std::vec::IntoIter<(Vec<u8>, Vec<u8>)>>,
    skip: F,
}

impl<F: Fn(&[u8]) -> bool> Iterator for CutRecords<'_, F> {
    type Item = io::Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(rest) = &mut self.leftovers {
            return rest.next().map(Ok);
        }
        loop {
            let (k, v) = match self.walk.next() {
                Some(Ok(kv)) => kv,
                Some(Err(e)) => return Some(Err(io::Error::other(e))),
                None => break,
            };
            let mut st = match self.cut.state.lock() {
                Ok(s) => s,
                Err(_) => return Some(Err(poisoned())),
            };
            match &mut st.last_walked {
                Some(w) => {
                    w.clear();
                    w.extend_from_slice(&k);
                }
                None => st.last_walked = Some(k.to_vec()),
            }
            if (self.skip)(&k) {
                continue;
            }
            if let Some(p) = st.pre.get(&k[..]) {
                let value = p.value.clone();
                drop(st);
                self.seen.insert(k.to_vec());
                match value {
                    Some(v) => return Some(Ok((k.to_vec(), v))),
                    // Created after the cut.
                    None => continue,
                }
            }
            return Some(Ok((k.to_vec(), v.to_vec())));
        }
        // Keys that existed at the cut but were gone when the walk got there.
        let st = match self.cut.state.lock() {
            Ok(s) => s,
            Err(_) => return Some(Err(poisoned())),
        };
        let rest: Vec<(Vec<u8>, Vec<u8>)> = st
            .pre
            .iter()
            .filter(|(k, p)| !p.walked_past && !self.seen.contains(*k) && !(self.skip)(k))
            .filter_map(|(k, p)| p.value.clone().map(|v| (k.clone(), v)))
            .collect();
        drop(st);
        let mut rest = rest.into_iter();
        let first = rest.next();
        self.leftovers = Some(rest);
        first.map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// Applies `(key, Some(value) | None)` writes the way apply does: record, then write.
    fn write(tree: &sled::Tree, cut: Option<&Cut>, batch: &[(u8, Option<u8>)]) {
        let keys: Vec<Vec<u8>> = batch.iter().map(|(k, _)| vec![*k]).collect();
        if let Some(c) = cut {
            c.record(tree, keys.iter().map(|k| k.as_slice()))
                .expect("record");
        }
        let mut b = sled::Batch::default();
        for (k, v) in batch {
            match v {
                Some(v) => b.insert(vec![*k], vec![*v]),
                None => b.remove(vec![*k]),
            }
        }
        tree.apply_batch(b).expect("batch");
    }

    fn contents(tree: &sled::Tree) -> BTreeMap<Vec<u8>, Vec<u8>> {
        tree.iter()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("iter"))
            .collect()
    }

    proptest! {
        /// Whatever is written while the walk runs (before, between and after its steps), the
        /// records are exactly the tree as of the cut, each key once.
        #[test]
        fn the_records_are_the_tree_at_the_cut(
            before in prop::collection::vec((0u8..40, prop::option::of(any::<u8>())), 0..60),
            during in prop::collection::vec(
                prop::collection::vec((0u8..40, prop::option::of(any::<u8>())), 1..4), 0..40),
            steps_between in prop::collection::vec(0usize..3, 0..40),
        ) {
            let db = sled::Config::new().temporary(true).open().expect("sled");
            let tree = db.open_tree("t").expect("tree");
            write(&tree, None, &before);
            let expected = contents(&tree);
            let cut = Cut::new();
            let mut out = Vec::new();
            {
                let mut it = cut.records(&tree, |_| false);
                let mut during = during.iter();
                for n in steps_between {
                    if let Some(batch) = during.next() {
                        write(&tree, Some(&cut), batch);
                    }
                    for _ in 0..n {
                        if let Some(r) = it.next() {
                            out.push(r.expect("record"));
                        }
                    }
                }
                for batch in during {
                    write(&tree, Some(&cut), batch);
                }
                for r in it {
                    out.push(r.expect("record"));
                }
            }
            let n = out.len();
            let got: BTreeMap<Vec<u8>, Vec<u8>> = out.into_iter().collect();
            prop_assert_eq!(n, got.len(), "a key was emitted twice");
            prop_assert_eq!(got, expected);
        }
    }
}
