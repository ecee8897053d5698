//! One shard's state machine on sled, with generation trees for atomic snapshot install.
//!
//! The live data sits in tree `sm/<shard>/<generation>`; the node-wide tree `sm-gen` names the
//! live generation of each shard. Installing a snapshot fills a fresh generation, makes it
//! durable, flips the pointer with one insert, makes that durable, then drops the old tree: a
//! crash at any point leaves either the old state or the new one, never a mix. Trees of other
//! generations found at start-up are leftovers of an interrupted install and are dropped.
//!
//! Applied writes collect in a [`WriteBuffer`] and reach the tree in large atomic batches, one
//! background flush at a time; reads look through the buffer first (see
//! [`crate::shard::buffer`]).
//!
//! Invariants:
//! - Data, `applied` and `membership` of one apply call reach the tree in one atomic batch (a
//!   flush holds whole apply calls); every responder is answered after its call's writes are
//!   readable in the buffer, exactly once. Durability comes from the write-ahead log: the tree
//!   may lag it and is caught up by re-applying the log at start-up.
//! - A snapshot is a consistent cut: the cut is taken in order with apply (openraft calls
//!   `try_create_snapshot_builder` on the apply worker) after the buffer is drained into the
//!   tree, its meta comes from that moment, and
//!   the dump then runs beside apply, whose buffer flushes record pre-images meanwhile (see
//!   [`crate::shard::cut`]); apply pauses only for the cut itself (draining the buffer, a
//!   flush and two reads).
//!   Deduplication records are part of it.
//! - At most one dump runs at a time, and an install waits for a running dump (the dump walks
//!   the live generation an install would drop).
//! - Readers take a clone of the live tree handle and never hold it across an install.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};

use crate::codec::{decode, encode};
use crate::shard::apply::{
    self, ApplyBatch, KEY_APPLIED, KEY_MEMBERSHIP, META_PREFIX, apply_command,
};
use crate::shard::buffer::{Layer, WriteBuffer, overlay};
use crate::shard::command::CommandResponse;
use crate::shard::cut::Cut;
use crate::shard::record::{self, Record};
use crate::shard::snapshot::{self, SnapshotFile};
use crate::storage::flush::FlushCoordinator;
use crate::typ::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};

/// Where snapshots from a leader are received (below the shard's snapshot directory) until
/// they are installed (moved out) or declined (removed).
pub const INCOMING_DIR: &str = "incoming";

/// Entries per sled batch while installing a snapshot.
const INSTALL_BATCH_RECORDS: usize = 4096;
/// The write buffer is flushed to the tree once it holds this many keys... (A flush is one
/// burst of CPU on a blocking thread; at 4,096 keys, about 50 ms of it raised the put p99 at
/// 256 clients to 67-88 ms against 50-55 ms at 1,024, for the same throughput.)
const BUFFER_FLUSH_KEYS: usize = 1024;
/// ...or this many key and value bytes.
const BUFFER_FLUSH_BYTES: usize = 4 * 1024 * 1024;

fn sled_err(e: sled::Error) -> io::Error {
    io::Error::other(e)
}

struct Inner {
    db: sled::Db,
    shard: u32,
    generations: sled::Tree,
    live: RwLock<(u64, sled::Tree)>,
    snap_dir: PathBuf,
    flush: FlushCoordinator,
    snapshots_built: AtomicU64,
    snapshots_installed: AtomicU64,
    observers: OnceLock<Observers>,
    /// The cut of the snapshot being dumped, if any: apply records pre-images into it.
    cut: Mutex<Option<Arc<Cut>>>,
    /// Held by a snapshot dump, and by an install while it runs.
    dumping: Arc<tokio::sync::Mutex<()>>,
    /// Applied writes not yet in the tree.
    buffer: WriteBuffer,
    /// The background flush of the buffer's frozen layer, if one was started and not yet
    /// awaited (only the apply worker starts and awaits it).
    flush_task: Mutex<Option<tokio::task::JoinHandle<io::Result<()>>>>,
}

/// Where a state machine reports how long apply batches and snapshot builds take (the
/// node's metrics; absent in tools such as restore).
#[derive(Clone)]
pub struct Observers {
    pub apply_batch_seconds: prometheus::Histogram,
    pub buffer_flush_seconds: prometheus::Histogram,
    pub snapshot_build_seconds: prometheus::Histogram,
}

/// A shard's state machine; clones share it.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

/// The first key after every key that starts with `prefix` (`None`: no such key).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn tree_name(shard: u32, generation: u64) -> String {
    format!("sm/{shard}/{generation}")
}

impl StateMachine {
    pub fn open(
        db: &sled::Db,
        shard: u32,
        snap_dir: PathBuf,
        flush: FlushCoordinator,
    ) -> io::Result<Self> {
        let generations = db.open_tree("sm-gen").map_err(sled_err)?;
        let generation = match generations.get(shard.to_be_bytes()).map_err(sled_err)? {
            Some(b) => u64::from_be_bytes(
                b.as_ref()
                    .try_into()
                    .map_err(|_| io::Error::other("bad generation record"))?,
            ),
            None => 0,
        };
        let live_name = tree_name(shard, generation);
        let prefix = format!("sm/{shard}/");
        for name in db.tree_names() {
            let n = String::from_utf8_lossy(&name);
            if n.starts_with(&prefix) && n != live_name {
                tracing::warn!(shard, tree = %n, "dropping leftover state-machine generation");
                db.drop_tree(&name).map_err(sled_err)?;
            }
        }
        let tree = db.open_tree(&live_name).map_err(sled_err)?;
        let buffer = WriteBuffer::default();
        apply::index_dedup(&buffer, &tree)?;
        std::fs::create_dir_all(&snap_dir)?;
        // Snapshots half-received when the node stopped, or received but never installed:
        // nothing refers to them any more.
        match std::fs::remove_dir_all(snap_dir.join(INCOMING_DIR)) {
            Ok(()) => tracing::info!(shard, "removed snapshot files received but not installed"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(StateMachine {
            inner: Arc::new(Inner {
                db: db.clone(),
                shard,
                generations,
                live: RwLock::new((generation, tree)),
                snap_dir,
                flush,
                snapshots_built: AtomicU64::new(0),
                snapshots_installed: AtomicU64::new(0),
                observers: OnceLock::new(),
                cut: Mutex::new(None),
                dumping: Arc::new(tokio::sync::Mutex::new(())),
                buffer,
                flush_task: Mutex::new(None),
            }),
        })
    }

    /// Starts reporting apply and snapshot timings to `observers` (first call wins).
    pub fn observe(&self, observers: Observers) {
        let _ = self.inner.observers.set(observers);
    }

    /// Snapshots built and installed by this replica since the process started.
    pub fn snapshot_counts(&self) -> (u64, u64) {
        (
            self.inner.snapshots_built.load(Ordering::Relaxed),
            self.inner.snapshots_installed.load(Ordering::Relaxed),
        )
    }

    fn tree(&self) -> io::Result<(u64, sled::Tree)> {
        let guard = self
            .inner
            .live
            .read()
            .map_err(|_| io::Error::other("state machine lock poisoned"))?;
        Ok(guard.clone())
    }

    /// A raw key's applied value: the buffer's if it holds the key, else the tree's.
    fn read(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        // The buffer before the tree handle: a flush moves data from one to the other only in
        // that direction, so nothing is missed in between.
        if let Some(value) = self.inner.buffer.lookup(key)? {
            return Ok(value);
        }
        let (_, tree) = self.tree()?;
        Ok(tree.get(key).map_err(sled_err)?.map(|v| v.to_vec()))
    }

    /// Reads a key's record from the local replica (no consistency check, and no expiry
    /// check: callers decide both, see [`Record::live_at`]).
    pub fn get(&self, key: &[u8]) -> io::Result<Option<Record>> {
        match self.read(&apply::data_key(key))? {
            Some(b) => Ok(Some(record::decode(&b)?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` raw records in `[start, end)` (`end` None: to the end), in key order,
    /// through the buffer.
    fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let buffered = self.inner.buffer.range(start, end)?;
        let buffered = buffered.range(start, end);
        let (_, tree) = self.tree()?;
        let stored = match end {
            Some(end) => tree.range(start..end),
            None => tree.range(start..),
        }
        .map(|item| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(sled_err)
        });
        overlay(buffered, stored, limit)
    }

    /// Up to `limit` records of keys starting with `prefix`, in key order, from the local
    /// replica (expired ones included: callers decide, see [`Record::live_at`]).
    pub fn scan(&self, prefix: &[u8], limit: usize) -> io::Result<Vec<(Vec<u8>, Record)>> {
        let start = apply::data_key(prefix);
        let end = prefix_end(&start);
        self.range(&start, end.as_deref(), limit)?
            .into_iter()
            .map(|(k, v)| Ok((k[1..].to_vec(), record::decode(&v)?)))
            .collect()
    }

    /// Up to `limit` expiry index entries with deadlines up to `clock_ms`, earliest first:
    /// (user key, deadline). Some may be stale (see [`crate::shard::record`]).
    pub fn due_expiries(&self, clock_ms: u64, limit: usize) -> io::Result<Vec<(Vec<u8>, u64)>> {
        let start = [record::EXPIRY_PREFIX];
        let end = record::expiry_bound(clock_ms);
        self.range(&start, Some(&end), limit)?
            .into_iter()
            .map(|(k, _)| record::parse_expiry_key(&k).map(|(d, key)| (key.to_vec(), d)))
            .collect()
    }

    /// The feature bits enabled on this shard as applied here (see [`crate::features`]).
    pub fn features(&self) -> io::Result<u64> {
        apply::decode_features(self.read(apply::KEY_FEATURES)?.as_deref())
    }

    /// Whether `node_id` was removed from the cluster (an [`Op::Retire`] record was applied).
    ///
    /// [`Op::Retire`]: crate::shard::command::Op::Retire
    pub fn is_retired(&self, node_id: u64) -> io::Result<bool> {
        Ok(self.read(&apply::retired_key(node_id))?.is_some())
    }

    /// Number of user keys held locally (walks the tree; for tests and status).
    pub fn key_count(&self) -> io::Result<u64> {
        Ok(self.scan(&[], usize::MAX)?.len() as u64)
    }

    /// Cluster time as applied here (see [`crate::shard::clock`]).
    pub fn clock_ms(&self) -> io::Result<u64> {
        match self.read(apply::KEY_CLOCK)? {
            Some(b) => apply::decode_clock(Some(&b)),
            None => apply::decode_clock(self.read(apply::KEY_CLOCK_LEGACY)?.as_deref()),
        }
    }

    /// The applied log id and membership as of the last apply call.
    fn read_meta(&self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let applied = match self.read(KEY_APPLIED)? {
            Some(b) => decode::<Option<LogId>>(&b)?,
            None => None,
        };
        let membership = match self.read(KEY_MEMBERSHIP)? {
            Some(b) => decode(&b)?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    /// Waits for the background flush started last, if any; its error is this call's.
    async fn finish_flush(&self) -> io::Result<()> {
        let task = self
            .inner
            .flush_task
            .lock()
            .map_err(|_| io::Error::other("state machine lock poisoned"))?
            .take();
        match task {
            Some(t) => t.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }

    /// Freezes the buffer's active layer and writes it to the tree in the background, after
    /// the previous flush has finished (flushes reach the tree in order, one at a time).
    async fn start_flush(&self) -> io::Result<()> {
        self.finish_flush().await?;
        let Some(layer) = self.inner.buffer.freeze()? else {
            return Ok(());
        };
        let me = self.clone();
        let task = tokio::task::spawn_blocking(move || me.write_layer(&layer));
        *self
            .inner
            .flush_task
            .lock()
            .map_err(|_| io::Error::other("state machine lock poisoned"))? = Some(task);
        Ok(())
    }

    /// Everything applied so far is in the tree once this returns (not yet durable: see
    /// [`FlushCoordinator`]).
    pub async fn drain_buffer(&self) -> io::Result<()> {
        self.start_flush().await?;
        self.finish_flush().await
    }

    /// Writes a frozen layer to the tree in one atomic batch, then lets reads go there.
    fn write_layer(&self, layer: &Layer) -> io::Result<()> {
        let started = std::time::Instant::now();
        let (_, tree) = self.tree()?;
        if let Some(cut) = self.active_cut() {
            cut.record(&tree, layer.keys())?;
        }
        tree.apply_batch(layer.to_batch()).map_err(sled_err)?;
        self.inner.buffer.flushed()?;
        if let Some(o) = self.inner.observers.get() {
            o.buffer_flush_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// The active cut, if a snapshot is being dumped.
    fn active_cut(&self) -> Option<Arc<Cut>> {
        self.inner.cut.lock().ok().and_then(|c| c.clone())
    }

    fn set_cut(&self, cut: Option<Arc<Cut>>) {
        match self.inner.cut.lock() {
            Ok(mut c) => *c = cut,
            Err(e) => *e.into_inner() = cut,
        }
    }

    /// Takes a cut (in order with apply): the meta as of now, and pre-image recording from now.
    async fn prepare(&self) -> io::Result<Prepared> {
        // Everything applied so far must be in the tree, and on disk, before the snapshot may
        // replace the log.
        self.drain_buffer().await?;
        self.inner.flush.flush().await?;
        let (_, tree) = self.tree()?;
        let (applied, membership) = self.read_meta()?;
        let cut = Arc::new(Cut::new());
        self.set_cut(Some(cut.clone()));
        Ok(Prepared {
            tree,
            meta: SnapshotMeta {
                last_log_id: applied,
                last_membership: membership,
            },
            cut,
        })
    }

    /// Dumps the tree as of the cut into a snapshot file (runs beside apply).
    fn dump(&self, p: &Prepared) -> io::Result<Snapshot> {
        let index = p.meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
        let started = std::time::Instant::now();
        let records = p.cut.records(&p.tree, |k| k.starts_with(META_PREFIX));
        let path = snapshot::write(
            &self.inner.snap_dir,
            &snapshot::file_name(index),
            &p.meta,
            records,
        )?;
        snapshot::remove_others(&self.inner.snap_dir, &path)?;
        self.inner.snapshots_built.fetch_add(1, Ordering::Relaxed);
        if let Some(o) = self.inner.observers.get() {
            o.snapshot_build_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        tracing::info!(
            shard = self.inner.shard,
            index,
            elapsed_ms = started.elapsed().as_millis() as u64,
            written_meanwhile = p.cut.recorded(),
            "snapshot built"
        );
        Ok(Snapshot {
            meta: p.meta.clone(),
            snapshot: SnapshotFile::open(path)?,
        })
    }

    /// Replaces the whole state with the snapshot's (see the module note on generations).
    pub fn install(&self, meta: &SnapshotMeta, mut file: SnapshotFile) -> io::Result<()> {
        let file_meta = snapshot::verify(&mut file.file)?;
        if file_meta != *meta {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot meta does not match its file",
            ));
        }
        let (old_gen, old_tree) = self.tree()?;
        let new_gen = old_gen + 1;
        let name = tree_name(self.inner.shard, new_gen);
        // A leftover from an interrupted install of the same generation number.
        self.inner.db.drop_tree(name.as_bytes()).map_err(sled_err)?;
        let tree = self.inner.db.open_tree(&name).map_err(sled_err)?;
        let mut reader = snapshot::Reader::open(&mut file.file)?;
        let mut batch = sled::Batch::default();
        let mut n = 0usize;
        while let Some((k, v)) = reader.next_record()? {
            batch.insert(k, v);
            n += 1;
            if n.is_multiple_of(INSTALL_BATCH_RECORDS) {
                tree.apply_batch(std::mem::take(&mut batch))
                    .map_err(sled_err)?;
            }
        }
        batch.insert(KEY_APPLIED, encode(&meta.last_log_id)?);
        batch.insert(KEY_MEMBERSHIP, encode(&meta.last_membership)?);
        tree.apply_batch(batch).map_err(sled_err)?;
        self.inner.db.flush().map_err(sled_err)?;
        // The flip: one insert, made durable before the old generation goes away.
        self.inner
            .generations
            .insert(self.inner.shard.to_be_bytes(), &new_gen.to_be_bytes())
            .map_err(sled_err)?;
        self.inner.db.flush().map_err(sled_err)?;
        {
            let mut live = self
                .inner
                .live
                .write()
                .map_err(|_| io::Error::other("state machine lock poisoned"))?;
            *live = (new_gen, tree);
            // Writes buffered for the old generation are superseded by the snapshot.
            self.inner.buffer.clear()?;
            apply::index_dedup(&self.inner.buffer, &live.1)?;
        }
        drop(old_tree);
        self.inner
            .db
            .drop_tree(tree_name(self.inner.shard, old_gen).as_bytes())
            .map_err(sled_err)?;
        // Keep the installed file as this shard's current snapshot.
        let index = meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
        let dest = self.inner.snap_dir.join(snapshot::file_name(index));
        if file.path != dest {
            std::fs::rename(&file.path, &dest)?;
        }
        snapshot::sync_dir(&self.inner.snap_dir)?;
        snapshot::remove_others(&self.inner.snap_dir, &dest)?;
        self.inner
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            shard = self.inner.shard,
            index,
            records = n,
            "snapshot installed"
        );
        Ok(())
    }

    /// Directory where this shard's snapshots (and received partial snapshots) live.
    pub fn snapshot_dir(&self) -> &std::path::Path {
        &self.inner.snap_dir
    }
}

/// A cut taken in order with apply, to be dumped.
struct Prepared {
    tree: sled::Tree,
    meta: SnapshotMeta,
    cut: Arc<Cut>,
}

/// Builds a snapshot from a cut; `build_snapshot` runs beside apply (openraft spawns it).
/// Dropping the builder, used or not, ends the cut and releases the dump lock.
pub struct SnapshotBuilder {
    sm: StateMachine,
    prepared: Option<io::Result<Prepared>>,
    _dumping: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for SnapshotBuilder {
    fn drop(&mut self) {
        self.sm.set_cut(None);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let prepared = self
            .prepared
            .take()
            .unwrap_or_else(|| Err(io::Error::other("snapshot builder used twice")))?;
        let sm = self.sm.clone();
        let built = tokio::task::spawn_blocking(move || sm.dump(&prepared))
            .await
            .map_err(io::Error::other)?;
        self.sm.set_cut(None);
        built
    }
}

impl StateMachine {
    async fn builder(&self, dumping: tokio::sync::OwnedMutexGuard<()>) -> SnapshotBuilder {
        SnapshotBuilder {
            sm: self.clone(),
            prepared: Some(self.prepare().await),
            _dumping: dumping,
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        self.read_meta()
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let started = std::time::Instant::now();
        // The stream is drained before staging: the staged writes read the buffer and tree
        // through borrows that must not be held across an await.
        let mut batch = Vec::new();
        while let Some(item) = entries.try_next().await? {
            batch.push(item);
        }
        let (_, tree) = self.tree()?;
        let mut ab = ApplyBatch::new(&tree, &self.inner.buffer);
        let mut responders = Vec::new();
        let mut last_applied = None;
        let mut membership = None;
        for (entry, responder) in batch {
            let log_id = entry.log_id();
            let response = match entry.payload {
                EntryPayload::Blank => CommandResponse::None,
                EntryPayload::Normal(ref cmd) => apply_command(&mut ab, log_id.index(), cmd)?,
                EntryPayload::Membership(ref m) => {
                    membership = Some(StoredMembership::new(Some(log_id), m.clone()));
                    CommandResponse::None
                }
            };
            last_applied = Some(log_id);
            if let Some(r) = responder {
                responders.push((r, response));
            }
        }
        if last_applied.is_none() {
            return Ok(());
        }
        ab.put(KEY_APPLIED, encode(&last_applied)?);
        if let Some(m) = membership {
            ab.put(KEY_MEMBERSHIP, encode(&m)?);
        }
        self.inner.buffer.merge(ab.into_layer())?;
        drop(tree);
        if let Some(o) = self.inner.observers.get() {
            o.apply_batch_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        for (responder, response) in responders {
            responder.send(response);
        }
        let (keys, bytes) = self.inner.buffer.active_size()?;
        if keys >= BUFFER_FLUSH_KEYS || bytes >= BUFFER_FLUSH_BYTES {
            self.start_flush().await?;
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<SnapshotBuilder> {
        // A dump still running: refuse (openraft asks again later) rather than stall apply.
        let dumping = self.inner.dumping.clone().try_lock_owned().ok()?;
        Some(self.builder(dumping).await)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let dumping = self.inner.dumping.clone().lock_owned().await;
        self.builder(dumping).await
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        // A running dump walks the generation the install would drop: wait for it. A flush
        // in flight writes to that generation too.
        let _dumping = self.inner.dumping.clone().lock_owned().await;
        self.finish_flush().await?;
        let me = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || me.install(&meta, snapshot))
            .await
            .map_err(io::Error::other)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let Some(path) = snapshot::newest(&self.inner.snap_dir)? else {
            return Ok(None);
        };
        let mut file = SnapshotFile::open(path)?;
        let meta = snapshot::Reader::open(&mut file.file)?.meta;
        Ok(Some(Snapshot {
            meta,
            snapshot: file,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_at_the_next_key_past_all_its_extensions() {
        assert_eq!(prefix_end(b"dab"), Some(b"dac".to_vec()));
        assert_eq!(prefix_end(b"da\xff"), Some(b"db".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
