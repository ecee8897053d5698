//! Property: a power cut at any point of a real log's life loses nothing that was synced,
//! and replay never takes a torn write for damage.
//!
//! The real [`Wal`] (small segments, so it rotates) takes random appends across a few shards
//! in random batches (records queued without a waiter, then one flush: one batch). The writer
//! records every sync that returned, with the file's bytes up to that point, and every
//! removal ([`Event`]). The cut comes after a random number of those events: every file holds
//! what its last sync before the cut made durable, and the write in flight at the cut (the
//! next event's bytes past that) survives in a random way: not at all, a random prefix, random
//! 512-byte or 4 KiB pages of it (the others zero), a prefix then garbage, or all of it.
//! Replay must then succeed, hold every entry of every batch synced before the cut, in order,
//! and nothing that was not appended before it; a second replay must agree.
//!
//! Repro of a failure: proptest prints the input and keeps it under `proptest-regressions/`;
//! `PROPTEST_RNG_SEED=<n>` fixes the seed of a run.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::codec::encode;

const SEGMENT_BYTES: u64 = 16 * 1024;

/// One append: (shard, entries, value bytes of each).
type Append = (u32, u8, u16);

/// How the cut falls.
#[derive(Clone, Debug)]
struct Cut {
    /// Where: the share of the recorded events that are durable (of `u16::MAX`).
    at: u16,
    /// What of the write in flight survives: 0 nothing, 1 a prefix, 2 pages, 3 a prefix then
    /// garbage, 4 all of it.
    mode: u8,
    prefix: u32,
    pages: u64,
    page_bytes: usize,
    garbage_seed: u64,
    /// Whether a file created or removed in flight keeps (or loses) its directory entry.
    dir_entry_kept: bool,
    /// Whether the newest file keeps its zero-filled reservation past the data.
    zero_pad: bool,
}

fn cut() -> impl Strategy<Value = Cut> {
    (
        any::<u16>(),
        0u8..5,
        any::<u32>(),
        any::<u64>(),
        prop_oneof![Just(512usize), Just(4096usize)],
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(at, mode, prefix, pages, page_bytes, garbage_seed, dir_entry_kept, zero_pad)| Cut {
                at,
                mode,
                prefix,
                pages,
                page_bytes,
                garbage_seed,
                dir_entry_kept,
                zero_pad,
            },
        )
}

impl Cut {
    /// What survives of `unsynced`, written at file offset `at`.
    fn survives(&self, at: usize, unsynced: &[u8]) -> Vec<u8> {
        let prefix = self.prefix as usize % (unsynced.len() + 1);
        match self.mode {
            0 => Vec::new(),
            1 => unsynced[..prefix].to_vec(),
            2 => unsynced
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let page = (at + i) / self.page_bytes;
                    if self.pages >> (page % 64) & 1 == 1 {
                        *b
                    } else {
                        0
                    }
                })
                .collect(),
            3 => {
                let mut x = self.garbage_seed | 1;
                let mut kept = unsynced.to_vec();
                for b in &mut kept[prefix..] {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                kept
            }
            _ => unsynced.to_vec(),
        }
    }
}

fn entry_of(shard: u32, index: u64, value_bytes: u16) -> Entry {
    let mut e = entry(1, index);
    e.payload = openraft::EntryPayload::Normal(crate::shard::command::Command {
        client_id: u64::from(shard),
        sequence: index,
        acked_below: 0,
        stamped_ms: 0,
        op: crate::shard::command::Op::Put {
            key: bytes::Bytes::from(format!("{shard}/{index}")),
            value: bytes::Bytes::from(vec![(shard as u8) ^ (index as u8); value_bytes as usize]),
        },
    });
    e
}

/// Entries per shard after each batch, and the events that made the batch durable.
struct Written {
    model: BTreeMap<u32, Vec<Entry>>,
    /// Per batch: the index of its first event, the index past its last one (a batch that
    /// starts a segment first closes the full one and heads the next, then syncs its own
    /// records), and the entries per shard once it is in.
    batches: Vec<(usize, usize, BTreeMap<u32, usize>)>,
}

/// Runs the log in `dir` through `batches`, each one write and sync.
fn write(dir: &Path, batches: &[Vec<Append>]) -> Result<Written, TestCaseError> {
    let mut written = Written {
        model: BTreeMap::new(),
        batches: Vec::new(),
    };
    let wal = Wal::open_with(dir, SEGMENT_BYTES, &StorageHealth::default())?;
    for batch in batches {
        for &(shard, n, value_bytes) in batch {
            let held = written.model.entry(shard).or_default();
            let entries: Vec<Entry> = (0..u64::from(n))
                .map(|i| entry_of(shard, held.len() as u64 + 1 + i, value_bytes))
                .collect();
            held.extend(entries.iter().cloned());
            let record = Record::Append {
                shard,
                entries: &entries[..],
            };
            let mut queued = Queued::new(shard, &record)?;
            queued.max_index = entries.last().map(|e| e.index());
            // No waiter: the writer leaves it queued until the flush below.
            wal.change(&*wal.shard(shard)?, queued, |l| l.append(entries))?;
        }
        let first = recorded_events(dir, false).len();
        futures::executor::block_on(wal.flush())?;
        let past = recorded_events(dir, false).len();
        let counts = written.model.iter().map(|(s, v)| (*s, v.len())).collect();
        written.batches.push((first, past, counts));
    }
    Ok(written)
}

fn name(path: &Path) -> PathBuf {
    PathBuf::from(path.file_name().unwrap_or_default())
}

/// The files after a cut that leaves `events[..durable]` durable and `events[durable]` (if
/// any) in flight.
fn after_cut(
    events: &[Event],
    durable: usize,
    cut: &Cut,
) -> Result<BTreeMap<PathBuf, Vec<u8>>, TestCaseError> {
    let mut files: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    for event in &events[..durable] {
        match event {
            Event::Synced { path, bytes } => {
                files.insert(name(path), bytes.clone());
            }
            Event::Removed(path) => {
                files.remove(&name(path));
            }
        }
    }
    match events.get(durable) {
        Some(Event::Synced { path, bytes }) => {
            let held = files.remove(&name(path));
            let created = held.is_none();
            let mut content = held.unwrap_or_default();
            prop_assert!(bytes.starts_with(&content), "segments only grow");
            let unsynced = &bytes[content.len()..];
            let survives = cut.survives(content.len(), unsynced);
            content.extend_from_slice(&survives);
            if !(created && cut.mode == 0 && !cut.dir_entry_kept) {
                files.insert(name(path), content);
            }
        }
        Some(Event::Removed(path)) if !cut.dir_entry_kept => {
            files.remove(&name(path));
        }
        _ => {}
    }
    if cut.zero_pad
        && let Some((_, newest)) = files.iter_mut().next_back()
    {
        newest.resize(newest.len().max(SEGMENT_BYTES as usize), 0);
    }
    Ok(files)
}

/// Every shard's entries after replaying `dir`, encoded (to compare).
fn replay(dir: &Path) -> Result<BTreeMap<u32, Vec<Vec<u8>>>, TestCaseError> {
    let wal = Wal::open_with(dir, SEGMENT_BYTES, &StorageHealth::default())
        .map_err(|e| TestCaseError::fail(format!("replay refused a power cut: {e}")))?;
    let shards = lock(&wal.shared.shards)?;
    let mut out = BTreeMap::new();
    for (shard, log) in shards.iter() {
        let log = lock(log)?;
        let entries = log
            .entries()
            .iter()
            .map(encode)
            .collect::<io::Result<_>>()?;
        out.insert(*shard, entries);
    }
    Ok(out)
}

fn power_cut(batches: &[Vec<Append>], cut: &Cut) -> Result<(), TestCaseError> {
    let root = tempfile::tempdir()?;
    let dir = root.path().join("wal");
    record_events(&dir);
    let written = write(&dir, batches);
    let events = recorded_events(&dir, true);
    let written = written?;
    for (first, past, _) in &written.batches {
        prop_assert!(
            first < past
                && events[*first..*past]
                    .iter()
                    .all(|e| matches!(e, Event::Synced { .. })),
            "a batch is made durable by syncs"
        );
    }
    let durable = cut.at as usize * (events.len() + 1) / (usize::from(u16::MAX) + 1);
    let crashed = root.path().join("crashed");
    fs::create_dir_all(&crashed)?;
    for (file, bytes) in after_cut(&events, durable, cut)? {
        fs::write(crashed.join(file), bytes)?;
    }
    // Entries each shard must hold (batches synced before the cut) and may hold (the batch
    // in flight at the cut too).
    let none = BTreeMap::new();
    let synced = written
        .batches
        .iter()
        .rfind(|(_, past, _)| *past <= durable)
        .map_or(&none, |(_, _, counts)| counts);
    let appended = written
        .batches
        .iter()
        .find(|(first, past, _)| (*first..*past).contains(&durable))
        .map_or(synced, |(_, _, counts)| counts);
    let got = replay(&crashed)?;
    for (shard, entries) in &got {
        let model = written.model.get(shard).map_or(&[][..], |m| &m[..]);
        let must = synced.get(shard).copied().unwrap_or(0);
        let may = appended.get(shard).copied().unwrap_or(0);
        prop_assert!(
            (must..=may).contains(&entries.len()),
            "shard {shard}: {} entries replayed, {must} synced, {may} appended by the cut \
             (cut after {durable} of {} events)",
            entries.len(),
            events.len()
        );
        for (i, e) in entries.iter().enumerate() {
            prop_assert_eq!(e, &encode(&model[i])?, "shard {} entry {}", shard, i + 1);
        }
    }
    for (shard, must) in synced {
        prop_assert!(*must == 0 || got.contains_key(shard), "shard {shard} lost");
    }
    prop_assert_eq!(replay(&crashed)?, got, "a second replay agrees");
    Ok(())
}

/// A crash between a batch's write and its sync, a restart, then a power cut. The restart
/// replayed the batch from the page cache and from then on held its entries (a leader counts
/// them toward a majority), so the cut must not take them back.
#[test]
fn a_power_cut_after_a_restart_keeps_what_the_restart_replayed() -> Result<(), TestCaseError> {
    let root = tempfile::tempdir()?;
    let dir = root.path().join("wal");
    record_events(&dir);
    let written = write(&dir, &[vec![(0, 3, 100)], vec![(0, 3, 100)]]);
    let first_life = recorded_events(&dir, false);
    let written = written?;
    // The crash came before the second batch's sync: the disk holds what the syncs before it
    // made durable, the page cache (the files in `dir`) holds everything.
    let (crash, _, _) = written.batches[1];
    let restarted = replay(&dir)?;
    prop_assert_eq!(
        restarted.get(&0).map(Vec::len),
        Some(6),
        "the restart replays both"
    );
    let events = recorded_events(&dir, true);
    let durable: Vec<Event> = first_life[..crash]
        .iter()
        .chain(&events[first_life.len()..])
        .cloned()
        .collect();
    let nothing_in_flight = Cut {
        at: 0,
        mode: 0,
        prefix: 0,
        pages: 0,
        page_bytes: 512,
        garbage_seed: 0,
        dir_entry_kept: false,
        zero_pad: false,
    };
    let crashed = root.path().join("crashed");
    fs::create_dir_all(&crashed)?;
    for (file, bytes) in after_cut(&durable, durable.len(), &nothing_in_flight)? {
        fs::write(crashed.join(file), bytes)?;
    }
    let after = replay(&crashed)?;
    let counts = |r: &BTreeMap<u32, Vec<Vec<u8>>>| -> Vec<(u32, usize)> {
        r.iter().map(|(s, e)| (*s, e.len())).collect()
    };
    prop_assert_eq!(
        counts(&after),
        counts(&restarted),
        "entries per shard after the cut"
    );
    prop_assert_eq!(after, restarted, "the power cut changed replayed entries");
    Ok(())
}

fn batches() -> impl Strategy<Value = Vec<Vec<Append>>> {
    let append = (0u32..3, 1u8..4, 0u16..1500);
    proptest::collection::vec(proptest::collection::vec(append, 1..6), 1..24)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_power_cut_keeps_every_synced_entry_and_replays(batches in batches(), cut in cut()) {
        power_cut(&batches, &cut)?;
    }
}
