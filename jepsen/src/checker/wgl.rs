//! The search: Wing–Gong with Lowe's memoization, over one partition (one key).
//!
//! Operations become call and return entries in a doubly linked list ordered by time (calls
//! before returns at equal times: intervals are closed). The search walks the list trying to
//! linearize the earliest calls first; a linearized operation leaves the list; reaching the
//! return of an operation not yet linearized means the current prefix cannot be extended, so it
//! backtracks. A memo of (set of linearized operations, model state) pairs already explored
//! prunes repeated work. Unknown-outcome operations return at +∞: they may be linearized any
//! time after their call, and reaching their (last-sorted) returns means every completed
//! operation has been linearized, so the rest may simply never have happened.
//!
//! Bounded: a deadline, a shared cancel flag (another partition already failed) and a memory
//! cap on the memo all end the search with `Unknown`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use rustc_hash::FxHashSet;

use super::model::Model;

/// One operation of the partition, prepared for the model.
#[derive(Debug, Clone)]
pub struct Entry<O> {
    /// The operation's id in the history.
    pub id: usize,
    pub call: u64,
    /// `None`: unknown outcome.
    pub ret: Option<u64>,
    pub op: O,
}

/// How the search ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Linearizable,
    NotLinearizable,
    Unknown(String),
}

/// The search's answer with what an explanation needs.
#[derive(Debug, Clone)]
pub struct SearchResult {
    pub outcome: Outcome,
    /// History ids of the longest linearizable prefix found, in linearization order.
    pub longest_prefix: Vec<usize>,
    /// The operation whose return could not be reached at the deepest point (history id).
    pub stuck: Option<usize>,
    pub steps: u64,
}

/// Shared bounds of one check.
pub struct Bounds<'a> {
    pub deadline: Option<Instant>,
    pub cancel: &'a AtomicBool,
    /// Bytes the memos of all partitions may use together.
    pub memo_bytes_max: u64,
    pub memo_bytes: &'a AtomicU64,
}

const NIL: usize = usize::MAX;

struct List {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl List {
    /// Removes node `i` (not the head).
    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Puts node `i` back where it was.
    fn relink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = i;
        if n != NIL {
            self.prev[n] = i;
        }
    }
}

/// Checks one partition.
pub fn search<M: Model>(model: &M, entries: &[Entry<M::Op>], bounds: &Bounds) -> SearchResult {
    let n = entries.len();
    // Node 0 is the head; node 1 + 2k is op k's call, 2 + 2k its return.
    let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    for (k, e) in entries.iter().enumerate() {
        order.push((e.call, 0, 1 + 2 * k));
        order.push((e.ret.unwrap_or(u64::MAX), 1, 2 + 2 * k));
    }
    order.sort_unstable();
    let mut list = List {
        next: vec![NIL; 2 * n + 1],
        prev: vec![NIL; 2 * n + 1],
    };
    let mut last = 0;
    for &(_, _, node) in &order {
        list.next[last] = node;
        list.prev[node] = last;
        last = node;
    }

    let words = n.div_ceil(64).max(1);
    let entry_bytes = (words * 8 + std::mem::size_of::<M::State>() + 48) as u64;
    let mut linearized = vec![0u64; words];
    let mut memo: FxHashSet<(Vec<u64>, M::State)> = FxHashSet::default();
    let mut memo_local_bytes = 0u64;
    let mut state = model.init();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut longest: Vec<usize> = Vec::new();
    let mut stuck = None;
    let mut steps = 0u64;

    // Every exit returns the memo's bytes to the shared budget.
    let finish = |outcome: Outcome, longest: Vec<usize>, stuck, steps, mem: u64| {
        bounds.memo_bytes.fetch_sub(mem, Ordering::Relaxed);
        SearchResult {
            outcome,
            longest_prefix: longest,
            stuck,
            steps,
        }
    };

    let mut node = list.next[0];
    while list.next[0] != NIL {
        steps += 1;
        if steps.is_multiple_of(4096) {
            if bounds.cancel.load(Ordering::Relaxed) {
                return finish(
                    Outcome::Unknown("cancelled: another key already failed".into()),
                    longest,
                    stuck,
                    steps,
                    memo_local_bytes,
                );
            }
            if bounds.deadline.is_some_and(|d| Instant::now() > d) {
                return finish(
                    Outcome::Unknown("time limit reached".into()),
                    longest,
                    stuck,
                    steps,
                    memo_local_bytes,
                );
            }
        }
        if node == NIL {
            // Cannot happen: a return entry always follows its call. Treat defensively.
            return finish(
                Outcome::Unknown("internal: ran off the end of the history".into()),
                longest,
                stuck,
                steps,
                memo_local_bytes,
            );
        }
        let k = (node - 1) / 2;
        let is_call = node % 2 == 1;
        if is_call {
            let e = &entries[k];
            if let Some(next_state) = model.step(&state, &e.op) {
                linearized[k / 64] |= 1 << (k % 64);
                let fresh = memo.insert((linearized.clone(), next_state.clone()));
                if fresh {
                    memo_local_bytes += entry_bytes;
                    let total =
                        bounds.memo_bytes.fetch_add(entry_bytes, Ordering::Relaxed) + entry_bytes;
                    if total > bounds.memo_bytes_max {
                        return finish(
                            Outcome::Unknown(format!(
                                "memory limit reached ({} MiB of search memo)",
                                bounds.memo_bytes_max >> 20
                            )),
                            longest,
                            stuck,
                            steps,
                            memo_local_bytes,
                        );
                    }
                    stack.push((node, std::mem::replace(&mut state, next_state)));
                    list.unlink(node);
                    list.unlink(node + 1);
                    if stack.len() > longest.len() {
                        longest = stack
                            .iter()
                            .map(|&(c, _)| entries[(c - 1) / 2].id)
                            .collect();
                        stuck = None;
                    }
                    node = list.next[0];
                    continue;
                }
                linearized[k / 64] &= !(1 << (k % 64));
            }
            node = list.next[node];
        } else {
            if entries[k].ret.is_none() {
                // Only unknown-outcome returns remain: every completed op is linearized.
                return finish(
                    Outcome::Linearizable,
                    longest,
                    stuck,
                    steps,
                    memo_local_bytes,
                );
            }
            if stack.len() == longest.len() && stuck.is_none() {
                stuck = Some(entries[k].id);
            }
            let Some((call_node, prev_state)) = stack.pop() else {
                return finish(
                    Outcome::NotLinearizable,
                    longest,
                    stuck,
                    steps,
                    memo_local_bytes,
                );
            };
            let pk = (call_node - 1) / 2;
            linearized[pk / 64] &= !(1 << (pk % 64));
            state = prev_state;
            list.relink(call_node + 1);
            list.relink(call_node);
            node = list.next[call_node];
        }
    }
    finish(
        Outcome::Linearizable,
        longest,
        stuck,
        steps,
        memo_local_bytes,
    )
}
