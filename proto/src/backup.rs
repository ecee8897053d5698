//! The backup file: one consistent snapshot per shard of a live cluster, with checksums.
//!
//! Written by `ringkv backup save`, checked by `ringkv backup verify`, read by `ringkv-server
//! restore`. It lives in this crate because client and server must agree on it byte for byte.
//!
//! Layout (integers little-endian):
//! - magic `RKVBACK1`;
//! - header: `u32` format version, `u32` cluster-id length, cluster id (UTF-8), `u32` shard
//!   count, `u32` ring vnodes, `u64` creation time (ms since the Unix epoch);
//! - for each shard in order `0..shards`: `u32` shard id, `u64` section length, then the
//!   shard's snapshot file (format `RKVSNAP1`: magic, `u32` meta length, meta, records of
//!   `u32` length + bytes pairs, end marker `u32::MAX`, `u64` xxh3 of the bytes before it);
//! - end marker `u32::MAX`, then the `u64` xxh3 of every byte before it.
//!
//! Invariants: [`verify`] checks the outer checksum, every section's own checksum and framing,
//! and that every shard appears exactly once in order, before a reader acts on any of it; every
//! length read from the file is bounded, so a corrupt or hostile file cannot make a reader
//! allocate without limit.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

use xxhash_rust::xxh3::Xxh3;

use crate::checksum::{HashingReader, HashingWriter, trailer_matches};

const MAGIC: &[u8; 8] = b"RKVBACK1";
const SNAPSHOT_MAGIC: &[u8; 8] = b"RKVSNAP1";
pub const FORMAT_VERSION: u32 = 1;
const END_MARKER: u32 = u32::MAX;
const CLUSTER_ID_BYTES_MAX: u32 = 1024;
const SHARDS_MAX: u32 = 1024;
const SNAPSHOT_META_BYTES_MAX: u32 = 16 * 1024 * 1024;
const RECORD_BYTES_MAX: u32 = 1024 * 1024;

/// Why a backup file was refused. None of these is retriable: the file itself is wrong.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot read the backup: {0}")]
    Io(#[from] io::Error),
    #[error("corrupt backup: {0}")]
    Corrupt(String),
}

fn corrupt(what: impl Into<String>) -> BackupError {
    BackupError::Corrupt(what.into())
}

/// Which cluster a backup came from, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub cluster_id: String,
    pub shards: u32,
    pub ring_vnodes: u32,
    pub created_unix_ms: u64,
}

/// Where one shard's snapshot sits in the file, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub shard: u32,
    /// Offset of the snapshot's first byte in the backup file.
    pub offset: u64,
    pub len: u64,
    /// Records in the snapshot (user keys plus deduplication and cluster records).
    pub records: u64,
}

/// A verified backup's contents.
#[derive(Debug, Clone)]
pub struct Summary {
    pub header: Header,
    pub sections: Vec<Section>,
    pub bytes: u64,
}

/// Writes a backup file section by section; [`Writer::finish`] seals it with the checksum.
pub struct Writer<W: Write> {
    out: HashingWriter<W>,
    next_shard: u32,
    shards: u32,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, header: &Header) -> io::Result<Self> {
        let mut out = HashingWriter::new(out);
        out.write_all(MAGIC)?;
        out.write_all(&FORMAT_VERSION.to_le_bytes())?;
        out.write_all(&(header.cluster_id.len() as u32).to_le_bytes())?;
        out.write_all(header.cluster_id.as_bytes())?;
        out.write_all(&header.shards.to_le_bytes())?;
        out.write_all(&header.ring_vnodes.to_le_bytes())?;
        out.write_all(&header.created_unix_ms.to_le_bytes())?;
        Ok(Writer {
            out,
            next_shard: 0,
            shards: header.shards,
        })
    }

    /// Appends the next shard's snapshot (`len` bytes read from `snapshot`).
    pub fn add_shard(&mut self, snapshot: &mut impl Read, len: u64) -> io::Result<()> {
        if self.next_shard >= self.shards {
            return Err(io::Error::other("more sections than shards"));
        }
        self.out.write_all(&self.next_shard.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        let copied = io::copy(&mut snapshot.take(len), &mut self.out)?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "shard {} snapshot ended after {copied} of {len} bytes",
                    self.next_shard
                ),
            ));
        }
        self.next_shard += 1;
        Ok(())
    }

    /// Writes the end marker and checksum; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.next_shard != self.shards {
            return Err(io::Error::other(format!(
                "{} of {} shards written",
                self.next_shard, self.shards
            )));
        }
        self.out.write_all(&END_MARKER.to_le_bytes())?;
        let sum = self.out.hasher.digest();
        let mut inner = self.out.inner;
        inner.write_all(&sum.to_le_bytes())?;
        inner.flush()?;
        Ok(inner)
    }
}

fn read_u32(r: &mut impl Read, what: &str) -> Result<u32, BackupError> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)
        .map_err(|_| corrupt(format!("truncated at {what}")))?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read, what: &str) -> Result<u64, BackupError> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)
        .map_err(|_| corrupt(format!("truncated at {what}")))?;
    Ok(u64::from_le_bytes(b))
}

fn skip(r: &mut impl Read, n: u64, what: &str) -> Result<(), BackupError> {
    let skipped = io::copy(&mut r.take(n), &mut io::sink())?;
    if skipped != n {
        return Err(corrupt(format!("truncated in {what}")));
    }
    Ok(())
}

/// Checks the whole file and returns what it holds. Nothing in an unverified file may be used.
pub fn verify(file: &mut File) -> Result<Summary, BackupError> {
    let len = file.metadata()?.len();
    if len < (MAGIC.len() + 4 + 4 + 4 + 4 + 8 + 4 + 8) as u64 {
        return Err(corrupt("file too short"));
    }
    // 1. The outer checksum over everything but its own 8 bytes.
    if !trailer_matches(file)? {
        return Err(corrupt(
            "checksum mismatch (the file was changed or truncated)",
        ));
    }
    // 2. Header and sections.
    file.seek(SeekFrom::Start(0))?;
    let mut r = BufReader::with_capacity(1 << 20, (&*file).take(len - 8));
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| corrupt("no header"))?;
    if &magic != MAGIC {
        return Err(corrupt("not a RingKV backup (bad magic)"));
    }
    let version = read_u32(&mut r, "format version")?;
    if version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format version {version}, this binary reads {FORMAT_VERSION}"
        )));
    }
    let id_len = read_u32(&mut r, "cluster id")?;
    if id_len == 0 || id_len > CLUSTER_ID_BYTES_MAX {
        return Err(corrupt("bad cluster id length"));
    }
    let mut id = vec![0u8; id_len as usize];
    r.read_exact(&mut id)
        .map_err(|_| corrupt("truncated at cluster id"))?;
    let cluster_id = String::from_utf8(id).map_err(|_| corrupt("cluster id is not UTF-8"))?;
    let shards = read_u32(&mut r, "shard count")?;
    if shards == 0 || shards > SHARDS_MAX {
        return Err(corrupt(format!("bad shard count {shards}")));
    }
    let ring_vnodes = read_u32(&mut r, "ring vnodes")?;
    let created_unix_ms = read_u64(&mut r, "creation time")?;
    let mut offset = (8 + 4 + 4 + id_len + 4 + 4 + 8) as u64;
    let mut sections = Vec::with_capacity(shards as usize);
    for expect in 0..shards {
        let shard = read_u32(&mut r, "section header")?;
        if shard != expect {
            return Err(corrupt(format!(
                "section for shard {shard} where shard {expect} was expected"
            )));
        }
        let sec_len = read_u64(&mut r, "section length")?;
        offset += 12;
        if sec_len > len - offset {
            return Err(corrupt(format!(
                "shard {shard}: section longer than the file"
            )));
        }
        let records =
            check_snapshot(&mut (&mut r).take(sec_len), sec_len).map_err(|e| match e {
                BackupError::Corrupt(m) => corrupt(format!("shard {shard}: {m}")),
                other => other,
            })?;
        sections.push(Section {
            shard,
            offset,
            len: sec_len,
            records,
        });
        offset += sec_len;
    }
    if read_u32(&mut r, "end marker")? != END_MARKER {
        return Err(corrupt("more sections than shards"));
    }
    Ok(Summary {
        header: Header {
            cluster_id,
            shards,
            ring_vnodes,
            created_unix_ms,
        },
        sections,
        bytes: len,
    })
}

/// Checks one embedded snapshot (its own checksum and framing); returns its record count.
fn check_snapshot(r: &mut impl Read, len: u64) -> Result<u64, BackupError> {
    if len < 8 + 4 + 4 + 8 {
        return Err(corrupt("snapshot too short"));
    }
    let mut hasher = Xxh3::new();
    let mut body = HashingReader {
        inner: r.take(len - 8),
        hasher: &mut hasher,
    };
    let mut magic = [0u8; 8];
    body.read_exact(&mut magic)
        .map_err(|_| corrupt("snapshot has no header"))?;
    if &magic != SNAPSHOT_MAGIC {
        return Err(corrupt("snapshot has a bad magic"));
    }
    let meta_len = read_u32(&mut body, "snapshot meta")?;
    if meta_len > SNAPSHOT_META_BYTES_MAX {
        return Err(corrupt("snapshot meta too large"));
    }
    skip(&mut body, meta_len as u64, "snapshot meta")?;
    let mut records = 0u64;
    loop {
        let klen = read_u32(&mut body, "record")?;
        if klen == END_MARKER {
            break;
        }
        if klen > RECORD_BYTES_MAX {
            return Err(corrupt("record key too large"));
        }
        skip(&mut body, klen as u64, "record key")?;
        let vlen = read_u32(&mut body, "record value")?;
        if vlen > RECORD_BYTES_MAX {
            return Err(corrupt("record value too large"));
        }
        skip(&mut body, vlen as u64, "record value")?;
        records += 1;
    }
    // Nothing may follow the end marker but the checksum.
    let mut extra = [0u8; 1];
    if body.read(&mut extra)? != 0 {
        return Err(corrupt("bytes after the snapshot's end marker"));
    }
    let want = read_u64(r, "snapshot checksum")?;
    if hasher.digest() != want {
        return Err(corrupt("snapshot checksum mismatch"));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal snapshot in the `RKVSNAP1` framing with `n` records.
    fn snapshot(n: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(SNAPSHOT_MAGIC);
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(b"met");
        for i in 0..n {
            let k = format!("dkey{i}");
            v.extend_from_slice(&(k.len() as u32).to_le_bytes());
            v.extend_from_slice(k.as_bytes());
            v.extend_from_slice(&4u32.to_le_bytes());
            v.extend_from_slice(b"vvvv");
        }
        v.extend_from_slice(&END_MARKER.to_le_bytes());
        let sum = xxhash_rust::xxh3::xxh3_64(&v);
        v.extend_from_slice(&sum.to_le_bytes());
        v
    }

    fn backup(shards: u32) -> Vec<u8> {
        let header = Header {
            cluster_id: "c1".into(),
            shards,
            ring_vnodes: 64,
            created_unix_ms: 7,
        };
        let mut w = Writer::new(Vec::new(), &header).expect("writer");
        for s in 0..shards {
            let snap = snapshot(s + 1);
            w.add_shard(&mut snap.as_slice(), snap.len() as u64)
                .expect("add");
        }
        w.finish().expect("finish")
    }

    fn verify_bytes(bytes: &[u8]) -> Result<Summary, BackupError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b");
        std::fs::write(&path, bytes).expect("write");
        verify(&mut File::open(&path).expect("open"))
    }

    #[test]
    fn a_written_backup_verifies_with_its_sections() {
        let bytes = backup(3);
        let s = verify_bytes(&bytes).expect("valid");
        assert_eq!(s.header.cluster_id, "c1");
        assert_eq!(s.header.shards, 3);
        assert_eq!(
            s.sections.iter().map(|x| x.records).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        // Each section's bytes are exactly the snapshot that was added.
        let sec = &s.sections[1];
        let got = &bytes[sec.offset as usize..(sec.offset + sec.len) as usize];
        assert_eq!(got, snapshot(2).as_slice());
    }

    #[test]
    fn every_single_flipped_byte_is_refused() {
        let bytes = backup(2);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                verify_bytes(&b).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn truncation_and_missing_shards_are_refused() {
        let bytes = backup(2);
        for cut in [0, 7, 20, bytes.len() / 2, bytes.len() - 1] {
            assert!(verify_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let header = Header {
            cluster_id: "c1".into(),
            shards: 2,
            ring_vnodes: 64,
            created_unix_ms: 7,
        };
        let mut w = Writer::new(Vec::new(), &header).expect("writer");
        let snap = snapshot(1);
        w.add_shard(&mut snap.as_slice(), snap.len() as u64)
            .expect("add");
        assert!(
            w.finish().is_err(),
            "a backup missing a shard must not be sealed"
        );
    }
}
