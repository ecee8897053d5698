//! The on-disk format: a record's checksum covers its place and length, a bad record is a
//! torn tail only when no later batch follows it, version-1 segments still replay, and an
//! unknown version is refused by name.

use super::*;
use crate::storage::wal::record::{
    LEGACY_HEADER_BYTES, legacy_frame, legacy_torn_tail, read_legacy_record, seal, segment_header,
};
use crate::storage::wal::replay::ReplayError;

/// Segments of these tests: small, so rewriting one by hand is cheap.
const SEGMENT_BYTES: u64 = 64 * 1024;

fn open(dir: &Path) -> io::Result<Wal> {
    Wal::open_with(dir, SEGMENT_BYTES, &StorageHealth::default())
}

/// Opens the log in `dir` and returns why it refused.
fn refusal(dir: &Path) -> io::Result<ReplayError> {
    let err = match open(dir) {
        Ok(_) => return Err(io::Error::other("the damaged log was accepted")),
        Err(e) => e,
    };
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    let text = err.to_string();
    let inner = err
        .into_inner()
        .ok_or_else(|| io::Error::other(format!("no typed cause: {text}")))?;
    inner
        .downcast::<ReplayError>()
        .map(|e| *e)
        .map_err(|e| io::Error::other(format!("another cause: {e}")))
}

/// Asserts `refused` is damage at `offset` of `path`, and that its message says so and what
/// to do.
fn assert_damaged(refused: &ReplayError, path: &Path, at: usize) {
    let ReplayError::Damaged {
        path: p, offset, ..
    } = refused
    else {
        panic!("not damage: {refused}");
    };
    assert_eq!((p.as_path(), *offset), (path, at as u64), "{refused}");
    let text = refused.to_string();
    for part in [
        path.display().to_string(),
        format!("at byte {at}"),
        "same --id".to_string(),
        "A node lost its disk".to_string(),
        "restore from a backup".to_string(),
    ] {
        assert!(text.contains(&part), "{part:?} missing from: {text}");
    }
}

/// A log in `dir` written as four batches of one entry each (equal-sized records), in one
/// segment, and closed (so a mark follows them); returns that segment.
async fn four_batches(dir: &Path) -> io::Result<PathBuf> {
    {
        let wal = open(dir)?;
        let mut a = LogStore::open(&wal, 0)?;
        for i in 1..=4 {
            append(&mut a, vec![entry(1, i)]).await?;
        }
    }
    let segment = segments(dir)?.pop().ok_or(io::ErrorKind::NotFound)?;
    let mut found = records(&segment)?;
    assert_eq!(
        found.len(),
        5,
        "one record a batch, then the close's mark: {found:?}"
    );
    let mark = found.pop().ok_or(io::ErrorKind::NotFound)?;
    assert!(
        is_mark(&segment, mark)? && mark.0 == mark.1,
        "a batch of its own"
    );
    for (at, batch_start, bytes) in &found {
        assert_eq!(at, batch_start, "each record begins its batch");
        assert_eq!(*bytes, found[0].2, "equal-sized records");
    }
    Ok(segment)
}

/// Applies `change` to the bytes of record `n` (of [`records`]) of `path`; returns its offset.
fn change_record(path: &Path, n: usize, change: impl FnOnce(&mut [u8])) -> io::Result<usize> {
    let (at, _, bytes) = records(path)?[n];
    let mut data = fs::read(path)?;
    change(&mut data[at..at + bytes]);
    fs::write(path, data)?;
    Ok(at)
}

async fn replayed(dir: &Path) -> io::Result<Vec<u64>> {
    let wal = open(dir)?;
    let mut a = LogStore::open(&wal, 0)?;
    indexes(&mut a).await
}

#[tokio::test]
async fn a_flipped_byte_in_synced_data_is_refused_with_file_and_offset() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let segment = four_batches(dir.path()).await?;
    for n in [0, 2] {
        let good = fs::read(&segment)?;
        let at = change_record(&segment, n, |r| r[RECORD_HEADER_BYTES + 2] ^= 0x10)?;
        assert_damaged(&refusal(dir.path())?, &segment, at);
        fs::write(&segment, good)?;
    }
    Ok(())
}

/// The newest data batch is followed by the mark of a clean close (or of a second idle), so
/// damage to it is refused like damage anywhere else.
#[tokio::test]
async fn a_flip_in_the_newest_data_batch_before_a_mark_is_refused() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let segment = four_batches(dir.path()).await?;
    let at = change_record(&segment, 3, |r| r[RECORD_HEADER_BYTES + 2] ^= 0x10)?;
    assert_damaged(&refusal(dir.path())?, &segment, at);
    Ok(())
}

/// An idle log marks its last batch by itself: a crash while it is idle leaves a segment
/// whose last data batch is followed by a later one.
#[tokio::test]
async fn an_idle_log_marks_its_last_batch() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let wal = open(dir.path())?;
    let mut a = LogStore::open(&wal, 0)?;
    append(&mut a, vec![entry(1, 1)]).await?;
    append(&mut a, vec![entry(1, 2)]).await?;
    let segment = segments(dir.path())?.pop().ok_or(io::ErrorKind::NotFound)?;
    let started = std::time::Instant::now();
    let found = loop {
        let found = records(&segment)?;
        if let Some(last) = found.last()
            && is_mark(&segment, *last)?
        {
            break found;
        }
        assert!(
            started.elapsed() < writer::MARK_IDLE * 10,
            "no mark after {:?} idle: {found:?}",
            started.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(found.len(), 3, "the batches, then one mark: {found:?}");
    // The crash: the files as they are now, while the log is still open.
    let crashed = tempfile::tempdir()?;
    for path in segments(dir.path())? {
        fs::copy(
            &path,
            crashed.path().join(path.file_name().unwrap_or_default()),
        )?;
    }
    drop((a, wal));
    let copy = segments(crashed.path())?
        .pop()
        .ok_or(io::ErrorKind::NotFound)?;
    let at = change_record(&copy, 1, |r| r[RECORD_HEADER_BYTES + 2] ^= 0x10)?;
    assert_damaged(&refusal(crashed.path())?, &copy, at);
    Ok(())
}

/// A crash within a second of the last batch leaves no mark after it: damage to it then
/// looks exactly like a torn write, and is cut.
#[tokio::test]
async fn the_same_flip_in_the_newest_batch_alone_is_cut_as_torn() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let segment = four_batches(dir.path()).await?;
    erase_last_mark(&segment)?;
    let at = change_record(&segment, 3, |r| r[RECORD_HEADER_BYTES + 2] ^= 0x10)?;
    assert_eq!(replayed(dir.path()).await?, vec![1, 2, 3]);
    assert_eq!(
        fs::metadata(&segment)?.len(),
        at as u64,
        "cut at the bad record"
    );
    assert_eq!(
        replayed(dir.path()).await?,
        vec![1, 2, 3],
        "and it stays cut"
    );
    Ok(())
}

/// Queues `entries` of shard 0 one record each, then writes them as one batch.
async fn one_batch(wal: &Wal, entries: Vec<Entry>) -> io::Result<()> {
    let log = wal.shard(0)?;
    for e in entries {
        let record = Record::Append {
            shard: 0,
            entries: std::slice::from_ref(&e),
        };
        let mut queued = Queued::new(0, &record)?;
        queued.max_index = Some(e.index());
        wal.change(&log, queued, |l| l.append([e]))?;
    }
    wal.flush().await
}

/// Page writeback can persist a later page of an unsynced batch before an earlier one: intact
/// records of the bad record's own batch after it do not make it damage.
#[tokio::test]
async fn a_bad_record_followed_only_by_its_own_batch_is_cut_as_torn() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let wal = open(dir.path())?;
        one_batch(&wal, vec![entry(1, 1)]).await?;
        one_batch(&wal, (2..=4).map(|i| entry(1, i)).collect()).await?;
    }
    let segment = segments(dir.path())?.pop().ok_or(io::ErrorKind::NotFound)?;
    erase_last_mark(&segment)?;
    let found = records(&segment)?;
    let batches: Vec<usize> = found.iter().map(|r| r.1).collect();
    let second = found[1].0;
    assert_eq!(
        batches,
        vec![found[0].0, second, second, second],
        "{found:?}"
    );
    change_record(&segment, 1, |r| r[RECORD_HEADER_BYTES + 2] ^= 0x10)?;
    assert_eq!(replayed(dir.path()).await?, vec![1]);
    assert_eq!(
        fs::metadata(&segment)?.len(),
        second as u64,
        "cut at the bad record"
    );
    Ok(())
}

/// An intact record must begin a batch or continue the one before it (the premise of the
/// torn-tail rule); one that says otherwise is refused.
#[tokio::test]
async fn a_record_claiming_another_batch_is_refused() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let segment = four_batches(dir.path()).await?;
    let found = records(&segment)?;
    let sequence = sequence_of(&segment)?;
    let at = change_record(&segment, 2, |r| {
        // Sealed again as if batch 1 (two records back) had gone on to here.
        let (at, first) = (found[2].0 as u64, found[0].0 as u64);
        let _ = seal(r, sequence, at, first);
    })?;
    let data = fs::read(&segment)?;
    let r = read_record(&data, sequence, at).ok_or(io::ErrorKind::InvalidData)?;
    assert_eq!(r.batch_start, found[0].0, "intact, claiming batch 1");
    assert_damaged(&refusal(dir.path())?, &segment, at);
    Ok(())
}

#[tokio::test]
async fn a_changed_length_is_detected() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let segment = four_batches(dir.path()).await?;
    let good = fs::read(&segment)?;
    for delta in [1u32, u32::MAX] {
        // One byte longer or shorter: the checksum covers the length, so the record is bad
        // even where the bytes it now spans would otherwise verify.
        let at = change_record(&segment, 1, |r| {
            let len = u32::from_le_bytes([r[0], r[1], r[2], r[3]]).wrapping_add(delta);
            r[..4].copy_from_slice(&len.to_le_bytes());
        })?;
        let data = fs::read(&segment)?;
        assert!(read_record(&data, sequence_of(&segment)?, at).is_none());
        assert_damaged(&refusal(dir.path())?, &segment, at);
        fs::write(&segment, &good)?;
    }
    Ok(())
}

#[tokio::test]
async fn a_record_copied_to_another_place_is_detected() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let segment = four_batches(dir.path()).await?;
    // Batch 2's record over batch 3's (same size): intact bytes, wrong place.
    let found = records(&segment)?;
    let mut data = fs::read(&segment)?;
    let (from, _, bytes) = found[1];
    let (to, _, _) = found[2];
    data.copy_within(from..from + bytes, to);
    fs::write(&segment, &data)?;
    assert!(read_record(&data, sequence_of(&segment)?, to).is_none());
    assert_damaged(&refusal(dir.path())?, &segment, to);
    // And into another segment at the same offset.
    let mut record = Vec::new();
    frame(&mut record, b"some body");
    seal(&mut record, 7, 32, 32)?;
    let mut other = vec![0u8; 32];
    other.extend_from_slice(&record);
    assert!(read_record(&other, 7, 32).is_some());
    assert!(read_record(&other, 8, 32).is_none(), "another segment");
    let mut moved = vec![0u8; 48];
    moved.extend_from_slice(&record);
    assert!(read_record(&moved, 7, 48).is_none(), "another offset");
    Ok(())
}

/// A log written by two starts; the second start's segment begins with both shards'
/// checkpoints (its head batch) and holds one batch more when `then_write`, else nothing
/// after the head (its close's mark erased: a crash right after the segment was made).
/// Returns it.
async fn second_start(dir: &Path, then_write: bool) -> io::Result<PathBuf> {
    {
        let wal = open(dir)?;
        let mut a = LogStore::open(&wal, 0)?;
        let mut b = LogStore::open(&wal, 1)?;
        append(&mut a, vec![entry(1, 1), entry(1, 2)]).await?;
        b.save_vote(&Vote::new(4, 2)).await?;
    }
    {
        let wal = open(dir)?;
        if then_write {
            let mut b = LogStore::open(&wal, 1)?;
            append(&mut b, vec![entry(4, 1)]).await?;
        }
    }
    let segment = segments(dir)?.pop().ok_or(io::ErrorKind::NotFound)?;
    if !then_write {
        erase_last_mark(&segment)?;
    }
    let found = records(&segment)?;
    let head = found.iter().filter(|r| r.1 == 0).count();
    assert_eq!(head, 2, "{found:?}");
    assert_eq!(found.len() > 2, then_write, "{found:?}");
    Ok(segment)
}

/// The head of a segment (header and checkpoints) torn by a crash while the segment was
/// created: cut to nothing when only head records follow the bad header, refused when a
/// later batch does (the head had been synced).
#[tokio::test]
async fn a_bad_header_is_torn_only_without_a_later_batch() -> io::Result<()> {
    for how in ["flipped", "zeroed", "garbage"] {
        let bad_header = |path: &Path| -> io::Result<()> {
            let mut data = fs::read(path)?;
            match how {
                "flipped" => data[20] ^= 0xff,
                "zeroed" => data[..SEGMENT_HEADER_BYTES].fill(0),
                // A torn write: the first field survives, garbage from the magic on through
                // every checkpoint (read as version 1, that looks like damage).
                _ => {
                    let head = records(path)?;
                    let (last, _, bytes) = head[1];
                    for (i, b) in data[4..last + bytes].iter_mut().enumerate() {
                        *b = (i as u8).wrapping_mul(37) | 1;
                    }
                }
            }
            fs::write(path, data)
        };
        let dir = tempfile::tempdir()?;
        let segment = second_start(dir.path(), true).await?;
        bad_header(&segment)?;
        assert_damaged(&refusal(dir.path())?, &segment, 0);

        let dir = tempfile::tempdir()?;
        let segment = second_start(dir.path(), false).await?;
        bad_header(&segment)?;
        assert_eq!(replayed(dir.path()).await?, vec![1, 2]);
        assert_eq!(fs::metadata(&segment)?.len(), 0, "cut to nothing");
        assert_eq!(replayed(dir.path()).await?, vec![1, 2], "and stays so");
    }
    Ok(())
}

#[tokio::test]
async fn a_segment_under_another_name_is_refused() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let segment = four_batches(dir.path()).await?;
    let renamed = segment.with_file_name(format!("{:020}.wal", 9));
    fs::rename(&segment, &renamed)?;
    assert_damaged(&refusal(dir.path())?, &renamed, 0);
    Ok(())
}

#[tokio::test]
async fn an_unknown_version_is_refused_by_name() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let segment = four_batches(dir.path()).await?;
    let mut data = fs::read(&segment)?;
    // An intact header of version 3 (bytes 0..32 keep their layout in every version).
    data[12..16].copy_from_slice(&3u32.to_le_bytes());
    let sum = ringkv_proto::checksum::digest(&data[..24]);
    data[24..32].copy_from_slice(&sum.to_le_bytes());
    fs::write(&segment, &data)?;
    let refused = refusal(dir.path())?;
    let ReplayError::UnsupportedVersion { path, version } = &refused else {
        panic!("not a version refusal: {refused}");
    };
    assert_eq!((path.as_path(), *version), (segment.as_path(), 3));
    let text = refused.to_string();
    for part in [
        segment.display().to_string(),
        "format version 3".into(),
        "reads versions 1".into(),
        "and 2".into(),
    ] {
        assert!(text.contains(&part), "{part:?} missing from: {text}");
    }
    // A torn header is no version: the same bytes failing the checksum are a bad header.
    data[24] ^= 1;
    fs::write(&segment, &data)?;
    assert_damaged(&refusal(dir.path())?, &segment, 0);
    Ok(())
}

/// A segment of the release before versions (no header, `len | xxh3(body) | body` records),
/// written by hand.
fn legacy_segment(records: &[Record<Vec<Entry>>], zero_tail_bytes: usize) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    for r in records {
        legacy_frame(&mut data, &crate::codec::encode(r)?);
    }
    data.resize(data.len() + zero_tail_bytes, 0);
    Ok(data)
}

#[tokio::test]
async fn a_version_1_log_replays_and_is_continued_in_version_2() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let closed = legacy_segment(
        &[
            Record::Checkpoint {
                shard: 1,
                vote: Some(Vote::new(2, 3)),
                committed: None,
                purged: None,
            },
            Record::Append {
                shard: 0,
                entries: (1..=3).map(|i| entry(1, i)).collect(),
            },
        ],
        0,
    )?;
    let newest = legacy_segment(
        &[
            Record::Checkpoint {
                shard: 0,
                vote: None,
                committed: Some(log_id(1, 2)),
                purged: None,
            },
            Record::Append {
                shard: 0,
                entries: vec![entry(1, 4)],
            },
            Record::Append {
                shard: 1,
                entries: vec![entry(2, 1)],
            },
        ],
        4096,
    )?;
    let mut torn = newest.clone();
    let end = newest.len() - 4096;
    // The previous release's torn tail: a record cut short in the unused space.
    let mut partial = Vec::new();
    legacy_frame(&mut partial, b"never acknowledged");
    torn[end..end + partial.len() - 3].copy_from_slice(&partial[..partial.len() - 3]);
    fs::write(dir.path().join(format!("{:020}.wal", 1)), &closed)?;
    fs::write(dir.path().join(format!("{:020}.wal", 2)), &torn)?;
    {
        let wal = open(dir.path())?;
        let mut a = LogStore::open(&wal, 0)?;
        let mut b = LogStore::open(&wal, 1)?;
        assert_eq!(indexes(&mut a).await?, vec![1, 2, 3, 4]);
        assert_eq!(a.read_committed().await?, Some(log_id(1, 2)));
        assert_eq!(indexes(&mut b).await?, vec![1]);
        assert_eq!(b.read_vote().await?, Some(Vote::new(2, 3)));
        append(&mut a, vec![entry(1, 5)]).await?;
    }
    assert_eq!(
        fs::metadata(dir.path().join(format!("{:020}.wal", 2)))?.len(),
        end as u64,
        "the version-1 torn tail was cut"
    );
    let current = segments(dir.path())?.pop().ok_or(io::ErrorKind::NotFound)?;
    assert_eq!(sequence_of(&current)?, 3);
    assert_eq!(
        &fs::read(&current)?[..SEGMENT_HEADER_BYTES],
        &segment_header(3)
    );
    assert_eq!(replayed(dir.path()).await?, vec![1, 2, 3, 4, 5]);
    // Damage in a version-1 segment with data after it is still refused.
    let mut damaged = closed.clone();
    damaged[LEGACY_HEADER_BYTES + 1] ^= 0xff;
    let first = dir.path().join(format!("{:020}.wal", 1));
    fs::write(&first, damaged)?;
    assert_damaged(&refusal(dir.path())?, &first, 0);
    Ok(())
}

/// The release before versions, reading a version-2 segment with the code it ran (the same
/// functions, kept for version 1), refuses it instead of cutting it as a torn tail.
#[tokio::test]
async fn the_previous_release_would_refuse_a_version_2_segment() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let segment = four_batches(dir.path()).await?;
    let data = fs::read(&segment)?;
    assert!(read_legacy_record(&data, 0).is_none());
    assert!(!legacy_torn_tail(&data, 0), "refused, not cut");
    Ok(())
}
