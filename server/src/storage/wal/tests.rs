use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;

use super::record::{RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, read_record};
use super::*;
use crate::shard::log_store::LogStore;
use crate::typ::TypeConfig;
use crate::typ::{Entry, LogId, Vote};
use openraft::RaftLogReader;
use openraft::storage::RaftLogStorage;
use openraft::type_config::TypeConfigExt;

fn entry(term: u64, index: u64) -> Entry {
    openraft::testing::blank_ent::<TypeConfig>(term, 1, index)
}

fn log_id(term: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, 1, index)
}

async fn append(store: &mut LogStore, entries: Vec<Entry>) -> io::Result<()> {
    let (tx, rx) = TypeConfig::oneshot();
    let cb = IOFlushed::<TypeConfig>::signal(tx);
    store.append(entries, cb).await?;
    rx.await.map_err(io::Error::other)?
}

async fn indexes(store: &mut LogStore) -> io::Result<Vec<u64>> {
    Ok(store
        .try_get_log_entries(0..u64::MAX)
        .await?
        .iter()
        .map(|e| e.index())
        .collect())
}

mod format;
mod power_cut;

/// The sequence a segment's file name gives it.
fn sequence_of(path: &Path) -> io::Result<u64> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not a segment: {}", path.display())))
}

/// The records of a (version-2) segment: (offset, batch start, bytes), up to the first bad one.
fn records(path: &Path) -> io::Result<Vec<(usize, usize, usize)>> {
    let data = fs::read(path)?;
    let sequence = sequence_of(path)?;
    let mut found = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES;
    while let Some(r) = read_record(&data, sequence, pos) {
        found.push((pos, r.batch_start, r.next - pos));
        pos = r.next;
    }
    Ok(found)
}

/// Whether the record at `at` (of [`records`]) of `path` is a mark.
fn is_mark(path: &Path, (at, _, bytes): (usize, usize, usize)) -> io::Result<bool> {
    let data = fs::read(path)?;
    let body = &data[at + RECORD_HEADER_BYTES..at + bytes];
    Ok(matches!(
        crate::codec::decode::<Record<Vec<Entry>>>(body)?,
        Record::Mark
    ))
}

/// Zeroes the mark that ends `path` (asserting there is one): the segment as a crash left it
/// before the writer marked its last batch.
fn erase_last_mark(path: &Path) -> io::Result<()> {
    let last = *records(path)?.last().ok_or(io::ErrorKind::NotFound)?;
    assert!(is_mark(path, last)?, "the segment ends in a mark");
    let (at, _, bytes) = last;
    let mut data = fs::read(path)?;
    data[at..at + bytes].fill(0);
    fs::write(path, data)
}

/// Where the records of a segment end (the rest is unused space).
fn data_end(path: &Path) -> io::Result<usize> {
    Ok(records(path)?
        .last()
        .map_or(SEGMENT_HEADER_BYTES, |(at, _, bytes)| at + bytes))
}

fn segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    Ok(v)
}

#[tokio::test]
async fn replay_rebuilds_entries_vote_committed_truncation_and_purge() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let wal = Wal::open(dir.path(), &StorageHealth::default())?;
        let mut a = LogStore::open(&wal, 0)?;
        let mut b = LogStore::open(&wal, 7)?;
        append(&mut a, (1..=10).map(|i| entry(1, i)).collect()).await?;
        append(&mut b, (1..=3).map(|i| entry(2, i)).collect()).await?;
        a.truncate_after(Some(log_id(1, 8))).await?;
        append(&mut a, vec![entry(3, 9)]).await?;
        a.purge(log_id(1, 4)).await?;
        a.save_committed(Some(log_id(3, 9))).await?;
        b.save_vote(&Vote::new(5, 2)).await?;
    }
    let wal = Wal::open(dir.path(), &StorageHealth::default())?;
    let mut a = LogStore::open(&wal, 0)?;
    let mut b = LogStore::open(&wal, 7)?;
    assert_eq!(indexes(&mut a).await?, (5..=9).collect::<Vec<_>>());
    let state = a.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
    assert_eq!(state.last_log_id, Some(log_id(3, 9)));
    assert_eq!(a.read_committed().await?, Some(log_id(3, 9)));
    assert_eq!(indexes(&mut b).await?, vec![1, 2, 3]);
    assert_eq!(b.read_vote().await?, Some(Vote::new(5, 2)));
    Ok(())
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_everything_before_it_kept() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let wal = Wal::open(dir.path(), &StorageHealth::default())?;
        let mut a = LogStore::open(&wal, 0)?;
        append(&mut a, (1..=5).map(|i| entry(1, i)).collect()).await?;
    }
    // A record cut short by a crash, after the good ones, in the segment's unused space.
    let last = segments(dir.path())?.pop().ok_or(io::ErrorKind::NotFound)?;
    let end = data_end(&last)?;
    assert!(
        fs::metadata(&last)?.len() > end as u64,
        "the newest segment is sized ahead of its records"
    );
    let mut torn = Vec::new();
    frame(&mut torn, b"0123456789");
    torn.truncate(torn.len() - 3);
    OpenOptions::new()
        .write(true)
        .open(&last)?
        .write_all_at(&torn, end as u64)?;
    {
        let wal = Wal::open(dir.path(), &StorageHealth::default())?;
        let mut a = LogStore::open(&wal, 0)?;
        assert_eq!(indexes(&mut a).await?, vec![1, 2, 3, 4, 5]);
    }
    assert_eq!(
        fs::metadata(&last)?.len(),
        end as u64,
        "cut at the torn record"
    );
    Ok(())
}

#[tokio::test]
async fn damage_before_the_newest_segment_is_refused() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let wal = Wal::open(dir.path(), &StorageHealth::default())?;
        let mut a = LogStore::open(&wal, 0)?;
        append(&mut a, (1..=5).map(|i| entry(1, i)).collect()).await?;
        append(&mut a, (6..=7).map(|i| entry(1, i)).collect()).await?;
    }
    // Damage in the middle of the newest segment (good records after it): refused.
    let first = segments(dir.path())?
        .into_iter()
        .find(|p| fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        .ok_or(io::ErrorKind::NotFound)?;
    let mut good = fs::read(&first)?;
    good.truncate(data_end(&first)?);
    let mut bytes = good.clone();
    bytes[SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + 1] ^= 0xff;
    fs::write(&first, &bytes)?;
    let err = Wal::open(dir.path(), &StorageHealth::default())
        .err()
        .ok_or(io::ErrorKind::Other)?;
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    // Damage at the very end of a segment that is no longer the newest: refused too.
    fs::write(&first, &good)?;
    drop(Wal::open(dir.path(), &StorageHealth::default())?);
    let mut bytes = good;
    let n = bytes.len();
    bytes[n - 2] ^= 0xff;
    fs::write(&first, bytes)?;
    let err = Wal::open(dir.path(), &StorageHealth::default())
        .err()
        .ok_or(io::ErrorKind::Other)?;
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    Ok(())
}

#[tokio::test]
async fn full_segments_rotate_and_purged_ones_are_removed() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let wal = Wal::open_with(dir.path(), 512, &StorageHealth::default())?;
        let mut a = LogStore::open(&wal, 0)?;
        let mut b = LogStore::open(&wal, 1)?;
        b.save_vote(&Vote::new(3, 1)).await?;
        for i in 1..=200 {
            append(&mut a, vec![entry(1, i)]).await?;
        }
        let newest = segments(dir.path())?.pop().ok_or(io::ErrorKind::NotFound)?;
        let sequence = sequence_of(&newest)?;
        assert!(sequence > 3, "segments rotate");
        a.purge(log_id(1, 150)).await?;
        // One more durable write lets the writer act on the now-durable purge.
        append(&mut a, vec![entry(1, 201)]).await?;
        let left = segments(dir.path())?;
        assert!(
            left.len() < 10,
            "purged segments are removed ({} left)",
            left.len()
        );
        // A full segment is cut to its last record; only the newest has unused space.
        for p in &left[..left.len() - 1] {
            assert_eq!(
                fs::metadata(p)?.len(),
                data_end(p)? as u64,
                "{}",
                p.display()
            );
        }
    }
    let wal = Wal::open_with(dir.path(), 512, &StorageHealth::default())?;
    let mut a = LogStore::open(&wal, 0)?;
    let mut b = LogStore::open(&wal, 1)?;
    assert_eq!(indexes(&mut a).await?, (151..=201).collect::<Vec<_>>());
    assert_eq!(b.read_vote().await?, Some(Vote::new(3, 1)));
    Ok(())
}

/// A shard that wrote once and never again (so never snapshots or purges) does not keep
/// every later segment: its live entries are copied forward, old segments go as the busy
/// shard purges, and replay still finds both shards' logs intact.
#[tokio::test]
async fn an_idle_shard_does_not_pin_the_log() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let health = StorageHealth::default();
    {
        let wal = Wal::open_with(dir.path(), 4096, &health)?;
        let mut idle = LogStore::open(&wal, 3)?;
        let mut busy = LogStore::open(&wal, 0)?;
        append(&mut idle, vec![entry(1, 1), entry(1, 2)]).await?;
        let mut most = 0;
        for i in 1..=1500 {
            append(&mut busy, vec![entry(1, i)]).await?;
            if i % 20 == 0 {
                busy.purge(log_id(1, i - 10)).await?;
            }
            most = most.max(segments(dir.path())?.len());
        }
        assert!(
            most <= 6,
            "at most a few segments at any time, not one per 4 KiB written ({most})"
        );
        let stats = wal.stats();
        assert!(stats.rewrites > 0, "{stats:?}");
        assert!(stats.segments <= 6, "{stats:?}");
        wal.flush().await?;
    }
    let wal = Wal::open_with(dir.path(), 4096, &health)?;
    let mut idle = LogStore::open(&wal, 3)?;
    let mut busy = LogStore::open(&wal, 0)?;
    assert_eq!(indexes(&mut idle).await?, vec![1, 2]);
    assert_eq!(indexes(&mut busy).await?, (1491..=1500).collect::<Vec<_>>());
    Ok(())
}

/// A test can hold the writer before it writes a batch of at least `n` bytes, until it
/// says go (so it can queue records behind a write that is about to fail).
static WRITE_GATE: Mutex<Option<(usize, std::sync::mpsc::Receiver<()>)>> = Mutex::new(None);

pub(super) fn write_gate(bytes: usize) {
    let gate = match WRITE_GATE.lock() {
        Ok(mut g) if g.as_ref().is_some_and(|(n, _)| bytes >= *n) => g.take(),
        _ => None,
    };
    if let Some((_, go)) = gate {
        let _ = go.recv_timeout(std::time::Duration::from_secs(10));
    }
}

fn big_entry(index: u64, value_bytes: usize) -> Entry {
    let mut e = entry(1, index);
    e.payload = openraft::EntryPayload::Normal(crate::shard::command::Command {
        client_id: 1,
        sequence: index,
        acked_below: 0,
        stamped_ms: 0,
        op: crate::shard::command::Op::Put {
            key: bytes::Bytes::from_static(b"k"),
            value: bytes::Bytes::from(vec![7u8; value_bytes]),
        },
    });
    e
}

/// Fail-stop on a real write error (`EFBIG` from the kernel: the file size limit is set
/// inside the segment's allocation, in a child process of this test): the failed batch is not
/// acknowledged, and neither is anything queued behind it, although writing that would
/// succeed (it would land over the failed batch).
#[tokio::test]
async fn nothing_queued_behind_a_failed_write_is_written_or_acknowledged() -> io::Result<()> {
    if !in_child(
        "storage::wal::tests::nothing_queued_behind_a_failed_write_is_written_or_acknowledged",
    )? {
        return Ok(());
    }
    let disk = tempfile::tempdir()?;
    let dir = disk.path().join("wal");
    let health = StorageHealth::default();
    let wal = Wal::open_with(&dir, 1024 * 1024, &health)?;
    let mut a = LogStore::open(&wal, 0)?;
    let mut b = LogStore::open(&wal, 1)?;
    for i in 1..=4 {
        append(&mut a, vec![big_entry(i, 40 * 1024)]).await?;
    }
    // Writes past 200 KiB of any file now fail; the next batch runs past that.
    limit_file_size(200 * 1024)?;
    let (go, wait) = std::sync::mpsc::channel();
    *WRITE_GATE.lock().map_err(|_| io::Error::other("gate"))? = Some((150 * 1024, wait));
    let (tx, failing) = TypeConfig::oneshot();
    let big: Vec<Entry> = (5..=9).map(|i| big_entry(i, 40 * 1024)).collect();
    a.append(big, IOFlushed::<TypeConfig>::signal(tx)).await?;
    // The writer holds that batch at the gate; queue a small record behind it.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (tx, behind) = TypeConfig::oneshot();
    b.append(vec![entry(1, 1)], IOFlushed::<TypeConfig>::signal(tx))
        .await?;
    go.send(()).map_err(io::Error::other)?;
    let failed = failing.await.map_err(io::Error::other)?;
    assert!(failed.is_err(), "the write past the size limit fails");
    let behind = behind.await.map_err(io::Error::other)?;
    assert!(
        behind.is_err(),
        "a record queued behind a failed write is never acknowledged"
    );
    let reason = health.failure().unwrap_or_default().to_string();
    assert!(reason.contains("too large"), "{reason}");
    drop((a, b, wal));
    limit_file_size(nix::sys::resource::RLIM_INFINITY)?;
    let wal = Wal::open_with(&dir, 1024 * 1024, &StorageHealth::default())?;
    let mut b = LogStore::open(&wal, 1)?;
    assert_eq!(
        indexes(&mut b).await?,
        Vec::<u64>::new(),
        "nothing behind the failure reached the disk"
    );
    Ok(())
}

/// Env var that marks the child process of [`in_child`].
const CHILD_ENV: &str = "RINGKV_TEST_WAL_CHILD";

/// Runs the test named `test` again in a child process of this test binary and asserts it
/// passed there (`Ok(false)`: the caller is done), or, in that child, returns `Ok(true)`: the
/// caller runs its body. Lets a test change process-wide limits without touching others.
fn in_child(test: &str) -> io::Result<bool> {
    if std::env::var_os(CHILD_ENV).is_some() {
        // Writes past the limit then fail with EFBIG instead of killing the process with
        // SIGXFSZ; threads started from here on (the log's writer) inherit the mask.
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGXFSZ);
        set.thread_block().map_err(io::Error::from)?;
        return Ok(true);
    }
    let out = std::process::Command::new(std::env::current_exe()?)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the child run failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "the child ran no test (wrong name?):\n{text}"
    );
    Ok(false)
}

/// In an [`in_child`] process: from now on, writing past `bytes` of any file fails with
/// `EFBIG`.
fn limit_file_size(bytes: u64) -> io::Result<()> {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    assert!(
        std::env::var_os(CHILD_ENV).is_some(),
        "only in a child process"
    );
    setrlimit(Resource::RLIMIT_FSIZE, bytes, RLIM_INFINITY).map_err(io::Error::from)
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop: a real filesystem
/// that answers `ENOSPC` when full. `None` (after saying why) where mounting is not
/// possible; under `CI=true` that is a failure, never a skip.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let why = "cannot mount a tmpfs (needs root)";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("skipped: {why}");
            return None;
        }
        Some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Fail-stop on a real write error (`EFBIG` past a file size limit, in a child process):
/// the failure names the file, trips the health latch, and nothing is accepted or written
/// after it; a restart replays every acknowledged entry and nothing refused.
#[tokio::test]
async fn a_failed_write_stops_the_log_for_good() -> io::Result<()> {
    if !in_child("storage::wal::tests::a_failed_write_stops_the_log_for_good")? {
        return Ok(());
    }
    let disk = tempfile::tempdir()?;
    let dir = disk.path().join("wal");
    let health = StorageHealth::default();
    let mut acked = 0;
    {
        let wal = Wal::open_with(&dir, 400 * 1024, &health)?;
        let mut a = LogStore::open(&wal, 0)?;
        limit_file_size(100 * 1024)?;
        let mut failed = None;
        for i in 1..=500u64 {
            match append(&mut a, vec![big_entry(i, 8 * 1024)]).await {
                Ok(()) => acked = i,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let err = failed.ok_or_else(|| io::Error::other("the write error was never noticed"))?;
        let reason = health.failure().unwrap_or_default().to_string();
        assert!(
            reason.contains(".wal"),
            "the failure names the file: {reason}"
        );
        assert!(reason.contains("too large"), "{reason} / {err}");
        // Nothing after the failure is accepted, let alone written.
        assert!(append(&mut a, vec![entry(1, acked + 2)]).await.is_err());
        assert!(a.save_vote(&Vote::new(9, 1)).await.is_err());
        assert!(wal.flush().await.is_err());
    }
    limit_file_size(nix::sys::resource::RLIM_INFINITY)?;
    let wal = Wal::open_with(&dir, 400 * 1024, &StorageHealth::default())?;
    let mut a = LogStore::open(&wal, 0)?;
    let got = indexes(&mut a).await?;
    assert!(acked > 10, "some entries were acknowledged first ({acked})");
    assert!(
        got.len() as u64 >= acked && got.len() as u64 <= acked + 1,
        "replay holds every acknowledged entry and at most the batch that hit the failure: {acked} acked, {} replayed",
        got.len()
    );
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        a.read_vote().await?,
        None,
        "the refused vote never reached the disk"
    );
    Ok(())
}

/// A full disk is not a failure: the segment after the current one is allocated ahead, so
/// `ENOSPC` shows when that allocation fails, while the current segment still has room. The
/// log reports the shortage (the node then refuses new writes), keeps writing inside what is
/// allocated, holds a batch that does not fit (unacknowledged, unwritten) instead of failing
/// it, and goes on by itself once space returns. Nothing acknowledged is lost.
#[tokio::test]
async fn a_full_disk_holds_writes_until_space_returns() -> io::Result<()> {
    let Some(disk) = SmallDisk::mount("1m") else {
        return Ok(());
    };
    let dir = disk.dir.path().join("wal");
    let health = StorageHealth::default();
    let wal = Wal::open_with(&dir, 192 * 1024, &health)?;
    let mut a = LogStore::open(&wal, 0)?;
    assert!(
        health.space_short().is_none(),
        "the next segment is allocated at open"
    );
    // Leave 64 KiB free: the next spare segment cannot be allocated.
    let free = nix::sys::statvfs::statvfs(disk.dir.path()).map_err(io::Error::from)?;
    let free_bytes = free.blocks_available() * free.fragment_size();
    fs::write(
        disk.dir.path().join("ballast"),
        vec![0u8; (free_bytes - 64 * 1024) as usize],
    )?;
    let mut acked = 0u64;
    let mut held = None;
    for i in 1..=200u64 {
        let (tx, mut rx) = TypeConfig::oneshot();
        a.append(
            vec![big_entry(i, 8 * 1024)],
            IOFlushed::<TypeConfig>::signal(tx),
        )
        .await?;
        match tokio::time::timeout(std::time::Duration::from_secs(3), &mut rx).await {
            Ok(r) => {
                r.map_err(io::Error::other)??;
                acked = i;
            }
            Err(_) => {
                held = Some((i, rx));
                break;
            }
        }
    }
    let (held_index, held) = held.ok_or_else(|| io::Error::other("no write was ever held"))?;
    assert!(
        acked * 8 * 1024 > 192 * 1024,
        "the first segment filled and the spare became the second ({acked} acked)"
    );
    let short = health.space_short().unwrap_or_default();
    assert!(
        short.contains("No space left"),
        "the shortage is reported: {short:?}"
    );
    assert!(
        health.failure().is_none(),
        "a full disk is not a storage failure"
    );
    // Space returns: the held batch is written and acknowledged without a restart.
    fs::remove_file(disk.dir.path().join("ballast"))?;
    tokio::time::timeout(std::time::Duration::from_secs(10), held)
        .await
        .map_err(|_| io::Error::other("the held write never went on after space returned"))?
        .map_err(io::Error::other)??;
    for _ in 0..100 {
        if health.space_short().is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        health.space_short().is_none(),
        "the shortage clears by itself"
    );
    append(&mut a, vec![big_entry(held_index + 1, 8 * 1024)]).await?;
    drop((a, wal));
    let wal = Wal::open_with(&dir, 192 * 1024, &StorageHealth::default())?;
    let mut a = LogStore::open(&wal, 0)?;
    assert_eq!(
        indexes(&mut a).await?,
        (1..=held_index + 1).collect::<Vec<_>>()
    );
    Ok(())
}

/// What the writer made durable, recorded for the tests that simulate a power cut.
#[derive(Clone, Debug)]
pub(super) enum Event {
    /// A sync of `path` returned; `bytes` are its first `synced_end` bytes right after.
    Synced { path: PathBuf, bytes: Vec<u8> },
    /// `path` was removed.
    Removed(PathBuf),
}

/// Directories whose writers record [`Event`]s, with the events so far.
static RECORDERS: Mutex<Vec<(PathBuf, Vec<Event>)>> = Mutex::new(Vec::new());

/// Starts recording the events of the log in `dir`.
fn record_events(dir: &Path) {
    if let Ok(mut r) = RECORDERS.lock() {
        r.push((dir.to_path_buf(), Vec::new()));
    }
}

/// The events recorded for `dir` so far (taken when `stop`).
fn recorded_events(dir: &Path, stop: bool) -> Vec<Event> {
    let Ok(mut r) = RECORDERS.lock() else {
        return Vec::new();
    };
    let Some(i) = r.iter().position(|(d, _)| d == dir) else {
        return Vec::new();
    };
    if stop { r.remove(i).1 } else { r[i].1.clone() }
}

fn record_event(path: &Path, event: impl FnOnce() -> Event) {
    let Ok(mut r) = RECORDERS.lock() else {
        return;
    };
    if let Some((_, events)) = r.iter_mut().find(|(dir, _)| path.starts_with(dir)) {
        events.push(event());
    }
}

/// Called by the writer after each sync that returned (`path` is durable up to `synced_end`).
pub(super) fn synced(path: &Path, synced_end: u64) {
    record_event(path, || {
        let mut bytes = fs::read(path).unwrap_or_default();
        bytes.truncate(synced_end as usize);
        Event::Synced {
            path: path.to_path_buf(),
            bytes,
        }
    });
}

/// Called by the writer after it removed a segment.
pub(super) fn removed(path: &Path) {
    record_event(path, || Event::Removed(path.to_path_buf()));
}
