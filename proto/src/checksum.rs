//! Checksumming adapters for RingKV's file formats (snapshots, backups): a writer and a reader
//! that feed every byte passing through them into an xxh3 hasher.
//!
//! [`trailer_matches`] checks a file whose last 8 bytes are the little-endian xxh3 of all the
//! bytes before them (both formats end that way).
//!
//! Invariant: the hasher sees exactly the bytes the inner writer accepted (or the inner reader
//! returned), in order, so the digest matches what is on disk.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

use xxhash_rust::xxh3::Xxh3;

/// The xxh3 digest of one buffer (the framing checksum of write-ahead-log records).
pub fn digest(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// A writer that hashes what it writes.
pub struct HashingWriter<W> {
    pub inner: W,
    pub hasher: Xxh3,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Xxh3::new(),
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what it reads into a borrowed hasher.
pub struct HashingReader<'h, R> {
    pub inner: R,
    pub hasher: &'h mut Xxh3,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Whether the last 8 bytes of `file` (little-endian) are the xxh3 of every byte before them.
/// The file must be at least 8 bytes long; leaves the position anywhere.
pub fn trailer_matches(file: &mut File) -> io::Result<bool> {
    let len = file.metadata()?.len();
    if len < 8 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Xxh3::new();
    let mut reader = BufReader::with_capacity(1 << 20, (&*file).take(len - 8));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    file.seek(SeekFrom::Start(len - 8))?;
    let mut sum = [0u8; 8];
    file.read_exact(&mut sum)?;
    Ok(hasher.digest() == u64::from_le_bytes(sum))
}
