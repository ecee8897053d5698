//! Checksumming adapters for RingKV's file formats (snapshots, backups): a writer and a reader
//! that feed every byte passing through them into an xxh3 hasher.
//!
//! Invariant: the hasher sees exactly the bytes the inner writer accepted (or the inner reader
//! returned), in order, so the digest matches what is on disk.

use std::io::{self, Read, Write};

use xxhash_rust::xxh3::Xxh3;

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
