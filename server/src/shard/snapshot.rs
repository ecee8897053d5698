//! Snapshot files: one immutable, checksummed file per snapshot of a shard.
//!
//! Format: magic `RKVSNAP1`, `u32` meta length, encoded [`SnapshotMeta`], then records of
//! `u32` key length, key, `u32` value length, value (raw state-machine tree entries), an end
//! marker `u32::MAX`, and last the `u64` xxh3 of every byte before it.
//!
//! The magic's last byte is the format version: a file of another version (`RKVSNAP2`, written
//! by a newer release) is refused with [`SnapshotFormatError::UnsupportedVersion`] before its
//! checksum is read (a newer format may place it elsewhere), never read as this format or as
//! an empty snapshot; any other damage is [`SnapshotFormatError::Corrupt`]. Both travel inside
//! the `io::Error` (kind `InvalidData`) openraft's storage traits require; [`format_error`]
//! gets them back.
//!
//! Invariants: a file is written to a temporary name, fsynced, renamed, and its directory
//! fsynced before anyone is told it exists; a file whose checksum or framing is wrong is
//! refused as a whole before any of it is installed; record sizes are bounded so a corrupt or
//! hostile file cannot make the reader allocate without limit.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ringkv_proto::checksum::{HashingWriter, trailer_matches};

use crate::codec::{decode, encode};
use crate::typ::SnapshotMeta;

const MAGIC: &[u8; 8] = b"RKVSNAP1";
/// The magic without its version byte.
const MAGIC_FAMILY: &[u8; 7] = b"RKVSNAP";
const END_MARKER: u32 = u32::MAX;
/// Larger than any legal key or value (plus its prefix); anything bigger is corruption.
const RECORD_BYTES_MAX: u32 = 1024 * 1024;
const META_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// A snapshot on disk: its path and an open handle (which keeps it readable even if a newer
/// snapshot replaces the name while it is being sent).
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub file: File,
}

impl SnapshotFile {
    pub fn open(path: PathBuf) -> io::Result<Self> {
        let file = File::open(&path)?;
        Ok(SnapshotFile { path, file })
    }

    pub fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

/// Writes a snapshot of `records` to `dir/name` durably (temp file, fsync, rename, dir fsync).
pub fn write<I>(dir: &Path, name: &str, meta: &SnapshotMeta, records: I) -> io::Result<PathBuf>
where
    I: IntoIterator<Item = io::Result<(Vec<u8>, Vec<u8>)>>,
{
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let file = File::create(&tmp)?;
    let mut w = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    w.write_all(MAGIC)?;
    let meta_bytes = encode(meta)?;
    w.write_all(&(meta_bytes.len() as u32).to_le_bytes())?;
    w.write_all(&meta_bytes)?;
    for record in records {
        let (k, v) = record?;
        w.write_all(&(k.len() as u32).to_le_bytes())?;
        w.write_all(&k)?;
        w.write_all(&(v.len() as u32).to_le_bytes())?;
        w.write_all(&v)?;
    }
    w.write_all(&END_MARKER.to_le_bytes())?;
    let sum = w.hasher.digest();
    let mut inner = w.inner;
    inner.write_all(&sum.to_le_bytes())?;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(path)
}

/// fsyncs a directory so a rename or create inside it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Why a snapshot file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotFormatError {
    /// A snapshot of a format version this binary does not read (a newer release wrote it).
    #[error(
        "snapshot format version {found:?} is not one this binary reads (it reads \"1\"): written by a newer release"
    )]
    UnsupportedVersion { found: String },
    /// Damaged or not a snapshot: bad magic, framing or checksum.
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
}

impl From<SnapshotFormatError> for io::Error {
    fn from(e: SnapshotFormatError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// The snapshot format error inside `e`, if it is one.
pub fn format_error(e: &io::Error) -> Option<&SnapshotFormatError> {
    e.get_ref()?.downcast_ref()
}

fn corrupt(what: impl Into<String>) -> io::Error {
    SnapshotFormatError::Corrupt(what.into()).into()
}

/// Checks a file's first 8 bytes: this format, another version of it, or not a snapshot.
fn check_magic(magic: &[u8; 8]) -> Result<(), SnapshotFormatError> {
    if magic == MAGIC {
        Ok(())
    } else if magic.starts_with(MAGIC_FAMILY) {
        Err(SnapshotFormatError::UnsupportedVersion {
            found: String::from_utf8_lossy(&magic[MAGIC_FAMILY.len()..]).into_owned(),
        })
    } else {
        Err(SnapshotFormatError::Corrupt("bad magic".into()))
    }
}

/// Reads and checks the magic at the file's start.
fn read_magic(r: &mut impl Read) -> io::Result<()> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| corrupt("no header"))?;
    Ok(check_magic(&magic)?)
}

/// Checks the whole file (framing and checksum) and returns its meta. Reads from the start.
pub fn verify(file: &mut File) -> io::Result<SnapshotMeta> {
    file.seek(SeekFrom::Start(0))?;
    // The version first: another format's checksum may not be where this one's is.
    read_magic(file)?;
    let len = file.metadata()?.len();
    if len < (MAGIC.len() + 4 + 4 + 8) as u64 {
        return Err(corrupt("file too short"));
    }
    if !trailer_matches(file)? {
        return Err(corrupt("checksum mismatch"));
    }
    // Framing: walk every record.
    let mut reader = Reader::open(file)?;
    let meta = reader.meta.clone();
    while reader.next_record()?.is_some() {}
    Ok(meta)
}

/// Sequential reader over a snapshot's records. Call [`verify`] first: this reader checks
/// framing but not the checksum.
pub struct Reader<'a> {
    inner: BufReader<&'a File>,
    pub meta: SnapshotMeta,
}

impl<'a> Reader<'a> {
    pub fn open(file: &'a mut File) -> io::Result<Self> {
        file.seek(SeekFrom::Start(0))?;
        let mut inner = BufReader::with_capacity(1 << 20, &*file);
        read_magic(&mut inner)?;
        let meta_len = read_u32(&mut inner)?;
        if meta_len > META_BYTES_MAX {
            return Err(corrupt("meta too large"));
        }
        let mut meta_bytes = vec![0u8; meta_len as usize];
        inner
            .read_exact(&mut meta_bytes)
            .map_err(|_| corrupt("truncated meta"))?;
        let meta = decode(&meta_bytes)?;
        Ok(Reader { inner, meta })
    }

    /// The next record, or `None` at the end marker.
    pub fn next_record(&mut self) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let klen = read_u32(&mut self.inner)?;
        if klen == END_MARKER {
            return Ok(None);
        }
        if klen > RECORD_BYTES_MAX {
            return Err(corrupt("key too large"));
        }
        let mut k = vec![0u8; klen as usize];
        self.inner
            .read_exact(&mut k)
            .map_err(|_| corrupt("truncated key"))?;
        let vlen = read_u32(&mut self.inner)?;
        if vlen > RECORD_BYTES_MAX {
            return Err(corrupt("value too large"));
        }
        let mut v = vec![0u8; vlen as usize];
        self.inner
            .read_exact(&mut v)
            .map_err(|_| corrupt("truncated value"))?;
        Ok(Some((k, v)))
    }
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)
        .map_err(|_| corrupt("truncated record"))?;
    Ok(u32::from_le_bytes(b))
}

/// The newest snapshot file in `dir` (names sort by index), if any.
pub fn newest(dir: &Path) -> io::Result<Option<PathBuf>> {
    if !dir.exists() {
        return Ok(None);
    }
    let mut best: Option<PathBuf> = None;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let is_snap = path.extension().is_some_and(|e| e == "snap");
        if is_snap
            && best
                .as_ref()
                .is_none_or(|b| path.file_name() > b.file_name())
        {
            best = Some(path);
        }
    }
    Ok(best)
}

/// Removes every snapshot and temp file in `dir` except `keep`.
pub fn remove_others(dir: &Path, keep: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path != keep && path.is_file() {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// The canonical file name of a snapshot covering the log up to `index`.
pub fn file_name(index: u64) -> String {
    format!("snap-{index:020}.snap")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
        }
    }

    #[test]
    fn round_trip_and_detects_a_flipped_byte() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let recs: Vec<io::Result<(Vec<u8>, Vec<u8>)>> = (0..100u32)
            .map(|i| Ok((i.to_be_bytes().to_vec(), vec![7u8; i as usize])))
            .collect();
        let path = write(dir.path(), &file_name(5), &meta(), recs)?;
        let mut f = File::open(&path)?;
        verify(&mut f)?;
        let mut r = Reader::open(&mut f)?;
        let mut n: u32 = 0;
        while let Some((k, v)) = r.next_record()? {
            assert_eq!(k, n.to_be_bytes());
            assert_eq!(v.len(), n as usize);
            n += 1;
        }
        assert_eq!(n, 100);

        let mut bytes = fs::read(&path)?;
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        fs::write(&path, bytes)?;
        let err = verify(&mut File::open(&path)?).err();
        assert!(matches!(
            err.as_ref().and_then(format_error),
            Some(SnapshotFormatError::Corrupt(_))
        ));
        assert!(err.is_some_and(|e| e.to_string().contains("checksum")));
        Ok(())
    }

    /// A file of another format version (or not a snapshot at all) is refused with a typed
    /// error, by `verify` and by `Reader::open` alike, however sound the rest of it is.
    #[test]
    fn another_format_version_or_magic_is_refused_by_kind() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let recs = [Ok((b"k".to_vec(), b"v".to_vec()))];
        let path = write(dir.path(), &file_name(1), &meta(), recs)?;
        let good = fs::read(&path)?;
        let with_magic = |magic: &[u8; 8]| -> io::Result<File> {
            let mut bytes = good.clone();
            bytes[..8].copy_from_slice(magic);
            // A valid checksum over the changed header: only the version can be refused.
            let body = bytes.len() - 8;
            let sum = xxhash_rust::xxh3::xxh3_64(&bytes[..body]);
            bytes[body..].copy_from_slice(&sum.to_le_bytes());
            fs::write(&path, bytes)?;
            File::open(&path)
        };
        for (magic, expected) in [
            (
                b"RKVSNAP2",
                SnapshotFormatError::UnsupportedVersion { found: "2".into() },
            ),
            (
                b"RKVSNAP\xff",
                SnapshotFormatError::UnsupportedVersion {
                    found: "\u{fffd}".into(),
                },
            ),
            (
                b"NOTASNAP",
                SnapshotFormatError::Corrupt("bad magic".into()),
            ),
        ] {
            let err = verify(&mut with_magic(magic)?).err();
            assert_eq!(err.as_ref().and_then(format_error), Some(&expected));
            assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::InvalidData));
            let err = Reader::open(&mut with_magic(magic)?).err();
            assert_eq!(err.as_ref().and_then(format_error), Some(&expected));
        }
        // A newer format need not keep this one's checksum: its version is what is reported.
        let mut newer = good.clone();
        newer[..8].copy_from_slice(b"RKVSNAP2");
        newer.extend_from_slice(b"a longer trailer");
        fs::write(&path, newer)?;
        let err = verify(&mut File::open(&path)?).err();
        assert!(matches!(
            err.as_ref().and_then(format_error),
            Some(SnapshotFormatError::UnsupportedVersion { .. })
        ));
        // The same file with this version's magic reads.
        let mut f = with_magic(MAGIC)?;
        verify(&mut f)?;
        Ok(())
    }
}
