//! The pure core of the fault filesystem: an in-memory tree of directories and files with two
//! states, *current* (what every operation changes at once, what reads see) and *durable*
//! (what a power cut leaves), in the manner of LazyFS.
//!
//! Durability rules (strict, like a disk with no ordering promises beyond fsync):
//! - `fsync`/`fdatasync` of a file makes that file's data, size and mode durable, nothing else.
//! - `fsync` of a directory makes that directory's entries durable (names created, removed or
//!   renamed inside it), not the contents of the files they name.
//! - A file fsync does NOT make its (new) directory entry durable; a file whose directory was
//!   never synced since its creation vanishes at a power cut, however often it was synced.
//! - A power cut rebuilds the current state from the durable one by walking durable entries
//!   from the root: a durable entry naming a file that was never synced yields an empty file;
//!   an inode no durable entry reaches is gone.
//!
//! Invariants: inode numbers are never reused (the kernel may still hold old ones); the page
//! counter `used_pages` equals the allocated pages of every live file; an operation refused
//! (ENOSPC, EIO, a bad name) changes nothing. Only pages written since the last sync are
//! copied at the next sync (a dirty set per file), and synced pages are shared, not copied.
//!
//! It does not do I/O, know about FUSE, or model torn writes, sector atomicity, hard links,
//! symlinks, xattrs or permissions (the harness runs as root). A rename across directories
//! needs both directories synced; syncing only one can leave the file under both names after
//! a power cut, which a journaling file system would not do.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

use super::faults::{Faults, IoKind};
use super::pages::{PAGE_BYTES, Pages, span};

pub type Ino = u64;
/// The root directory's inode (FUSE's convention).
pub const ROOT: Ino = 1;
const NAME_BYTES_MAX: usize = 255;

/// Why an operation was refused; [`super::fuse`] maps these to errno values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("no space left on device")]
    NoSpace,
    #[error("input/output error (injected)")]
    Io,
    #[error("invalid argument")]
    Invalid,
    #[error("name too long")]
    NameTooLong,
    #[error("operation not supported")]
    Unsupported,
}

/// A file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// What `stat` reports.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub pages: u64,
    pub perm: u16,
    pub nlink: u32,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

#[derive(Debug, Clone, Default)]
struct FileData {
    pages: Pages,
    size: u64,
    /// Page indexes changed since the last sync.
    dirty: BTreeSet<u64>,
}

#[derive(Debug, Clone)]
enum Body {
    File(FileData),
    Dir {
        parent: Ino,
        entries: BTreeMap<OsString, Ino>,
    },
}

#[derive(Debug, Clone)]
struct Inode {
    body: Body,
    perm: u16,
    nlink: u32,
    open: u32,
    mtime: SystemTime,
    ctime: SystemTime,
}

impl Inode {
    fn kind(&self) -> Kind {
        match self.body {
            Body::File(_) => Kind::File,
            Body::Dir { .. } => Kind::Dir,
        }
    }
}

/// A file as of its last sync.
#[derive(Debug, Clone, Default)]
struct DurableFile {
    pages: Pages,
    size: u64,
    perm: u16,
}

/// The state a power cut leaves.
#[derive(Debug, Clone, Default)]
struct Durable {
    files: HashMap<Ino, DurableFile>,
    /// A directory's entries as of its last sync: name → (inode, kind).
    dirs: HashMap<Ino, BTreeMap<OsString, (Ino, Kind)>>,
}

/// The whole file system: current state, durable state, and the faults in force.
#[derive(Debug)]
pub struct Model {
    inodes: HashMap<Ino, Inode>,
    durable: Durable,
    next_ino: Ino,
    used_pages: u64,
    pub faults: Faults,
    /// Power cuts so far.
    pub power_cuts: u64,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

fn dir_inode(parent: Ino, perm: u16) -> Inode {
    let now = SystemTime::now();
    Inode {
        body: Body::Dir {
            parent,
            entries: BTreeMap::new(),
        },
        perm,
        nlink: 2,
        open: 0,
        mtime: now,
        ctime: now,
    }
}

fn check_name(name: &OsStr) -> Result<(), FsError> {
    if name.len() > NAME_BYTES_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == "." || name == ".." {
        return Err(FsError::Invalid);
    }
    Ok(())
}

impl Model {
    /// An empty file system whose (empty) root is durable.
    pub fn new() -> Model {
        let mut durable = Durable::default();
        durable.dirs.insert(ROOT, BTreeMap::new());
        Model {
            inodes: HashMap::from([(ROOT, dir_inode(ROOT, 0o755))]),
            durable,
            next_ino: ROOT + 1,
            used_pages: 0,
            faults: Faults::default(),
            power_cuts: 0,
        }
    }

    /// Bytes allocated by live files (what a disk would count as used).
    pub fn used_bytes(&self) -> u64 {
        self.used_pages * PAGE_BYTES
    }

    fn inode(&self, ino: Ino) -> Result<&Inode, FsError> {
        self.inodes.get(&ino).ok_or(FsError::NotFound)
    }

    fn inode_mut(&mut self, ino: Ino) -> Result<&mut Inode, FsError> {
        self.inodes.get_mut(&ino).ok_or(FsError::NotFound)
    }

    fn entries(&self, dir: Ino) -> Result<&BTreeMap<OsString, Ino>, FsError> {
        match &self.inode(dir)?.body {
            Body::Dir { entries, .. } => Ok(entries),
            Body::File(_) => Err(FsError::NotDir),
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> Result<&mut BTreeMap<OsString, Ino>, FsError> {
        let inode = self.inode_mut(dir)?;
        inode.mtime = SystemTime::now();
        match &mut inode.body {
            Body::Dir { entries, .. } => Ok(entries),
            Body::File(_) => Err(FsError::NotDir),
        }
    }

    fn file_mut(&mut self, ino: Ino) -> Result<&mut FileData, FsError> {
        let inode = self.inode_mut(ino)?;
        inode.mtime = SystemTime::now();
        match &mut inode.body {
            Body::File(f) => Ok(f),
            Body::Dir { .. } => Err(FsError::IsDir),
        }
    }

    fn file(&self, ino: Ino) -> Result<&FileData, FsError> {
        match &self.inode(ino)?.body {
            Body::File(f) => Ok(f),
            Body::Dir { .. } => Err(FsError::IsDir),
        }
    }

    pub fn attr(&self, ino: Ino) -> Result<Attr, FsError> {
        let inode = self.inode(ino)?;
        let (size, pages) = match &inode.body {
            Body::File(f) => (f.size, f.pages.len()),
            Body::Dir { entries, .. } => (entries.len() as u64, 0),
        };
        Ok(Attr {
            ino,
            kind: inode.kind(),
            size,
            pages,
            perm: inode.perm,
            nlink: inode.nlink,
            mtime: inode.mtime,
            ctime: inode.ctime,
        })
    }

    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr, FsError> {
        let ino = *self.entries(parent)?.get(name).ok_or(FsError::NotFound)?;
        self.attr(ino)
    }

    /// The entries of a directory, `.` and `..` first.
    pub fn list(&self, dir: Ino) -> Result<Vec<(Ino, Kind, OsString)>, FsError> {
        let inode = self.inode(dir)?;
        let Body::Dir { parent, entries } = &inode.body else {
            return Err(FsError::NotDir);
        };
        let mut out = vec![
            (dir, Kind::Dir, OsString::from(".")),
            (*parent, Kind::Dir, OsString::from("..")),
        ];
        for (name, &ino) in entries {
            let kind = self.inode(ino).map(Inode::kind).unwrap_or(Kind::File);
            out.push((ino, kind, name.clone()));
        }
        Ok(out)
    }

    /// One page of room is needed to create anything while a capacity is set.
    fn check_room_for_entry(&self) -> Result<(), FsError> {
        if self.faults.fits(self.used_pages, 1) {
            Ok(())
        } else {
            Err(FsError::NoSpace)
        }
    }

    fn add_entry(&mut self, parent: Ino, name: &OsStr, inode: Inode) -> Result<Attr, FsError> {
        check_name(name)?;
        if self.entries(parent)?.contains_key(name) {
            return Err(FsError::Exists);
        }
        self.check_room_for_entry()?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let is_dir = matches!(inode.body, Body::Dir { .. });
        self.inodes.insert(ino, inode);
        self.entries_mut(parent)?.insert(name.to_os_string(), ino);
        if is_dir {
            self.inode_mut(parent)?.nlink += 1;
        }
        self.attr(ino)
    }

    /// Creates an empty regular file.
    pub fn create(&mut self, parent: Ino, name: &OsStr, perm: u16) -> Result<Attr, FsError> {
        let now = SystemTime::now();
        let inode = Inode {
            body: Body::File(FileData::default()),
            perm,
            nlink: 1,
            open: 0,
            mtime: now,
            ctime: now,
        };
        self.add_entry(parent, name, inode)
    }

    pub fn mkdir(&mut self, parent: Ino, name: &OsStr, perm: u16) -> Result<Attr, FsError> {
        self.add_entry(parent, name, dir_inode(parent, perm))
    }

    /// Drops an inode's link; frees it when nothing links or opens it any more.
    fn unlink_inode(&mut self, ino: Ino) {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        inode.ctime = SystemTime::now();
        inode.nlink = match inode.body {
            Body::Dir { .. } => 0,
            Body::File(_) => inode.nlink.saturating_sub(1),
        };
        self.free_if_unused(ino);
    }

    fn free_if_unused(&mut self, ino: Ino) {
        let unused = self
            .inodes
            .get(&ino)
            .is_some_and(|i| i.nlink == 0 && i.open == 0 && ino != ROOT);
        if unused
            && let Some(inode) = self.inodes.remove(&ino)
            && let Body::File(f) = inode.body
        {
            self.used_pages -= f.pages.len();
        }
    }

    pub fn unlink(&mut self, parent: Ino, name: &OsStr) -> Result<(), FsError> {
        let ino = *self.entries(parent)?.get(name).ok_or(FsError::NotFound)?;
        if self.inode(ino)?.kind() == Kind::Dir {
            return Err(FsError::IsDir);
        }
        self.entries_mut(parent)?.remove(name);
        self.unlink_inode(ino);
        Ok(())
    }

    pub fn rmdir(&mut self, parent: Ino, name: &OsStr) -> Result<(), FsError> {
        let ino = *self.entries(parent)?.get(name).ok_or(FsError::NotFound)?;
        if !self.entries(ino)?.is_empty() {
            return Err(FsError::NotEmpty);
        }
        self.entries_mut(parent)?.remove(name);
        let p = self.inode_mut(parent)?;
        p.nlink = p.nlink.saturating_sub(1);
        self.unlink_inode(ino);
        Ok(())
    }

    /// Whether `ancestor` is `dir` or above it.
    fn is_ancestor(&self, ancestor: Ino, mut dir: Ino) -> bool {
        for _ in 0..4096 {
            if dir == ancestor {
                return true;
            }
            match self.inodes.get(&dir).map(|i| &i.body) {
                Some(Body::Dir { parent, .. }) if *parent != dir => dir = *parent,
                _ => return false,
            }
        }
        false
    }

    /// Moves `name` in `parent` to `new_name` in `new_parent`, replacing a compatible target.
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), FsError> {
        check_name(new_name)?;
        let ino = *self.entries(parent)?.get(name).ok_or(FsError::NotFound)?;
        let kind = self.inode(ino)?.kind();
        let target = self.entries(new_parent)?.get(new_name).copied();
        if target == Some(ino) {
            return Ok(());
        }
        if kind == Kind::Dir && self.is_ancestor(ino, new_parent) {
            return Err(FsError::Invalid);
        }
        if let Some(t) = target {
            if no_replace {
                return Err(FsError::Exists);
            }
            match (kind, self.inode(t)?.kind()) {
                (Kind::File, Kind::Dir) => return Err(FsError::IsDir),
                (Kind::Dir, Kind::File) => return Err(FsError::NotDir),
                (Kind::Dir, Kind::Dir) if !self.entries(t)?.is_empty() => {
                    return Err(FsError::NotEmpty);
                }
                _ => {}
            }
        }
        self.entries_mut(parent)?.remove(name);
        if let Some(t) = self
            .entries_mut(new_parent)?
            .insert(new_name.to_os_string(), ino)
        {
            if kind == Kind::Dir {
                let p = self.inode_mut(new_parent)?;
                p.nlink = p.nlink.saturating_sub(1);
            }
            self.unlink_inode(t);
        }
        if kind == Kind::Dir {
            let p = self.inode_mut(parent)?;
            p.nlink = p.nlink.saturating_sub(1);
            self.inode_mut(new_parent)?.nlink += 1;
            if let Body::Dir { parent: p, .. } = &mut self.inode_mut(ino)?.body {
                *p = new_parent;
            }
        }
        self.inode_mut(ino)?.ctime = SystemTime::now();
        Ok(())
    }

    pub fn open(&mut self, ino: Ino) -> Result<(), FsError> {
        self.inode_mut(ino)?.open += 1;
        Ok(())
    }

    pub fn release(&mut self, ino: Ino) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.open = i.open.saturating_sub(1);
        }
        self.free_if_unused(ino);
    }

    pub fn read(&self, ino: Ino, offset: u64, len: u64) -> Result<Vec<u8>, FsError> {
        let f = self.file(ino)?;
        let end = (offset.saturating_add(len)).min(f.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        Ok(f.pages.read(offset, end - offset))
    }

    pub fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) -> Result<u64, FsError> {
        let needed = self
            .file(ino)?
            .pages
            .missing(span(offset, data.len() as u64));
        if self.faults.take_eio(IoKind::Write) {
            return Err(FsError::Io);
        }
        if !self.faults.fits(self.used_pages, needed) {
            return Err(FsError::NoSpace);
        }
        let f = self.file_mut(ino)?;
        let before = f.pages.len();
        let touched = f.pages.write(offset, data);
        f.dirty.extend(touched);
        f.size = f.size.max(offset + data.len() as u64);
        let after = f.pages.len();
        self.used_pages += after - before;
        Ok(data.len() as u64)
    }

    /// Sets the size (`truncate`, `set_len`): shrinking frees pages, growing leaves a hole.
    pub fn set_size(&mut self, ino: Ino, size: u64) -> Result<(), FsError> {
        self.file(ino)?;
        if self.faults.eio_all {
            return Err(FsError::Io);
        }
        let f = self.file_mut(ino)?;
        let before = f.pages.len();
        if size < f.size {
            let changed = f.pages.truncate(size);
            f.dirty.extend(changed);
        }
        f.size = size;
        let after = f.pages.len();
        self.used_pages -= before - after;
        Ok(())
    }

    pub fn set_perm(&mut self, ino: Ino, perm: u16) -> Result<(), FsError> {
        let i = self.inode_mut(ino)?;
        i.perm = perm;
        i.ctime = SystemTime::now();
        Ok(())
    }

    /// `fallocate`: mode 0 reserves pages and extends the size, `keep_size` reserves only,
    /// `punch` (with `keep_size`) frees the range. Space is taken now or refused now.
    pub fn fallocate(
        &mut self,
        ino: Ino,
        offset: u64,
        len: u64,
        keep_size: bool,
        punch: bool,
    ) -> Result<(), FsError> {
        if len == 0 {
            return Err(FsError::Invalid);
        }
        let needed = self.file(ino)?.pages.missing(span(offset, len));
        if self.faults.take_eio(IoKind::Write) {
            return Err(FsError::Io);
        }
        if punch {
            if !keep_size {
                return Err(FsError::Unsupported);
            }
            let f = self.file_mut(ino)?;
            let before = f.pages.len();
            let changed = f.pages.punch(offset, len);
            f.dirty.extend(changed);
            let after = f.pages.len();
            self.used_pages -= before - after;
            return Ok(());
        }
        if !self.faults.fits(self.used_pages, needed) {
            return Err(FsError::NoSpace);
        }
        let f = self.file_mut(ino)?;
        let added = f.pages.reserve(span(offset, len));
        let count = added.len() as u64;
        f.dirty.extend(added);
        if !keep_size {
            f.size = f.size.max(offset + len);
        }
        self.used_pages += count;
        Ok(())
    }

    /// `fsync`/`fdatasync` of a file: its data, size and mode become durable.
    pub fn sync_file(&mut self, ino: Ino) -> Result<(), FsError> {
        if self.faults.take_eio(IoKind::Sync) {
            return Err(FsError::Io);
        }
        let perm = self.inode(ino)?.perm;
        let Some(Inode {
            body: Body::File(f),
            ..
        }) = self.inodes.get_mut(&ino)
        else {
            return self.sync_dir(ino);
        };
        let d = self.durable.files.entry(ino).or_default();
        for index in std::mem::take(&mut f.dirty) {
            d.pages.set(index, f.pages.get(index).cloned());
        }
        d.size = f.size;
        d.perm = perm;
        Ok(())
    }

    /// `fsync` of a directory: its entries become durable.
    pub fn sync_dir(&mut self, ino: Ino) -> Result<(), FsError> {
        let entries = self.entries(ino)?;
        let snapshot = entries
            .iter()
            .map(|(name, &child)| {
                let kind = self.inode(child).map(Inode::kind).unwrap_or(Kind::File);
                (name.clone(), (child, kind))
            })
            .collect();
        let perm = self.inode(ino)?.perm;
        self.durable.dirs.insert(ino, snapshot);
        self.durable.files.entry(ino).or_default().perm = perm;
        self.collect_durable_garbage();
        Ok(())
    }

    /// Makes every directory's current entries durable (not file contents): what a journaling
    /// file system's periodic commit or `sync(2)` would have done by now. The harness calls it
    /// only when asked to (see `--sync-dirs-after-start`).
    pub fn sync_all_dirs(&mut self) {
        let dirs: Vec<Ino> = self
            .inodes
            .iter()
            .filter(|(_, i)| i.kind() == Kind::Dir)
            .map(|(ino, _)| *ino)
            .collect();
        for ino in dirs {
            let _ = self.sync_dir(ino);
        }
    }

    /// Called for a directory sync from outside (EIO check first).
    pub fn sync_dir_checked(&mut self, ino: Ino) -> Result<(), FsError> {
        if self.faults.take_eio(IoKind::Sync) {
            return Err(FsError::Io);
        }
        self.sync_dir(ino)
    }

    /// Inodes the durable tree reaches from the root, with their kind.
    fn durable_reachable(&self) -> Vec<(Ino, Kind, Ino)> {
        let mut out = vec![(ROOT, Kind::Dir, ROOT)];
        let mut seen = BTreeSet::from([ROOT]);
        let mut i = 0;
        while i < out.len() {
            let (dir, kind, _) = out[i];
            i += 1;
            if kind != Kind::Dir {
                continue;
            }
            for &(child, child_kind) in self
                .durable
                .dirs
                .get(&dir)
                .into_iter()
                .flatten()
                .map(|(_, v)| v)
            {
                if seen.insert(child) {
                    out.push((child, child_kind, dir));
                }
            }
        }
        out
    }

    /// Forgets durable snapshots that can never matter again: of inodes that are gone from
    /// the current state and that the durable tree no longer reaches. (A live inode's snapshot
    /// stays: a later directory sync may make its entry durable.)
    fn collect_durable_garbage(&mut self) {
        let reach: BTreeSet<Ino> = self.durable_reachable().iter().map(|r| r.0).collect();
        let live = &self.inodes;
        let keep = |ino: &Ino| reach.contains(ino) || live.contains_key(ino);
        self.durable.files.retain(|ino, _| keep(ino));
        self.durable.dirs.retain(|ino, _| keep(ino));
    }

    /// The power goes out: the current state becomes the durable one.
    pub fn power_cut(&mut self) {
        let reach = self.durable_reachable();
        let mut inodes = HashMap::new();
        let now = SystemTime::now();
        self.used_pages = 0;
        for &(ino, kind, parent) in &reach {
            let durable_file = self.durable.files.get(&ino).cloned().unwrap_or_default();
            let perm = match (durable_file.perm, kind) {
                (0, Kind::Dir) => 0o755,
                (0, Kind::File) => 0o644,
                (p, _) => p,
            };
            let body = match kind {
                Kind::File => {
                    self.used_pages += durable_file.pages.len();
                    Body::File(FileData {
                        pages: durable_file.pages,
                        size: durable_file.size,
                        dirty: BTreeSet::new(),
                    })
                }
                Kind::Dir => Body::Dir {
                    parent,
                    entries: self
                        .durable
                        .dirs
                        .get(&ino)
                        .into_iter()
                        .flatten()
                        .map(|(name, (child, _))| (name.clone(), *child))
                        .collect(),
                },
            };
            inodes.insert(
                ino,
                Inode {
                    body,
                    perm,
                    nlink: 0,
                    open: 0,
                    mtime: now,
                    ctime: now,
                },
            );
        }
        // Link counts from the rebuilt entries: a file one per name, a directory two (its
        // name and its `.`) plus one per subdirectory (their `..`).
        let mut links: HashMap<Ino, u32> = HashMap::from([(ROOT, 2)]);
        for inode in inodes.values() {
            let Body::Dir { entries, .. } = &inode.body else {
                continue;
            };
            for child in entries.values() {
                let kind = inodes.get(child).map(Inode::kind);
                *links.entry(*child).or_default() += if kind == Some(Kind::Dir) { 2 } else { 1 };
            }
        }
        for (&ino, inode) in inodes.iter() {
            if let Body::Dir { parent, .. } = &inode.body
                && ino != ROOT
            {
                *links.entry(*parent).or_default() += 1;
            }
        }
        for (ino, inode) in inodes.iter_mut() {
            inode.nlink = links.get(ino).copied().unwrap_or(1);
        }
        self.inodes = inodes;
        self.power_cuts += 1;
    }

    /// A file system check for tests: the page counter matches the pages of live files.
    pub fn pages_consistent(&self) -> bool {
        let sum: u64 = self
            .inodes
            .values()
            .map(|i| match &i.body {
                Body::File(f) => f.pages.len(),
                Body::Dir { .. } => 0,
            })
            .sum();
        sum == self.used_pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn synced_file_in_synced_dir_survives_and_the_rest_goes() {
        let mut m = Model::new();
        let a = m.create(ROOT, name("a"), 0o644).expect("op").ino;
        m.write(a, 0, b"durable").expect("op");
        m.sync_file(a).expect("op");
        m.sync_dir(ROOT).expect("op");
        m.write(a, 7, b" and not").expect("op");
        let b = m.create(ROOT, name("b"), 0o644).expect("op").ino;
        m.write(b, 0, b"synced, entry not").expect("op");
        m.sync_file(b).expect("op");
        m.power_cut();
        assert_eq!(m.read(a, 0, 100).expect("op"), b"durable");
        assert_eq!(
            m.lookup(ROOT, name("b")).expect_err("op"),
            FsError::NotFound
        );
        assert!(m.pages_consistent());
    }

    #[test]
    fn unsynced_rename_and_unlink_revert() {
        let mut m = Model::new();
        let a = m.create(ROOT, name("a"), 0o644).expect("op").ino;
        m.write(a, 0, b"x").expect("op");
        m.sync_file(a).expect("op");
        m.sync_dir(ROOT).expect("op");
        m.rename(ROOT, name("a"), ROOT, name("b"), false)
            .expect("op");
        m.power_cut();
        assert!(m.lookup(ROOT, name("a")).is_ok());
        assert!(m.lookup(ROOT, name("b")).is_err());
        m.unlink(ROOT, name("a")).expect("op");
        assert_eq!(m.used_bytes(), 0);
        m.power_cut();
        assert_eq!(m.read(a, 0, 1).expect("op"), b"x");
        assert_eq!(m.used_bytes(), PAGE_BYTES);
    }

    #[test]
    fn capacity_refuses_and_unlink_frees() {
        let mut m = Model::new();
        m.faults.capacity_bytes = Some(2 * PAGE_BYTES);
        let a = m.create(ROOT, name("a"), 0o644).expect("op").ino;
        m.write(a, 0, &[1u8; 8192]).expect("op");
        assert_eq!(m.write(a, 8192, b"y"), Err(FsError::NoSpace));
        assert_eq!(
            m.create(ROOT, name("b"), 0o644).expect_err("op"),
            FsError::NoSpace
        );
        m.unlink(ROOT, name("a")).expect("op");
        assert!(m.create(ROOT, name("b"), 0o644).is_ok());
        assert!(m.pages_consistent());
    }

    #[test]
    fn a_new_directory_and_its_files_vanish_unless_the_parent_is_synced() {
        let mut m = Model::new();
        let d = m.mkdir(ROOT, name("d"), 0o755).expect("op").ino;
        let f = m.create(d, name("f"), 0o644).expect("op").ino;
        m.write(f, 0, b"z").expect("op");
        m.sync_file(f).expect("op");
        m.sync_dir(d).expect("op");
        m.power_cut();
        assert!(m.lookup(ROOT, name("d")).is_err());
        let d = m.mkdir(ROOT, name("d"), 0o755).expect("op").ino;
        let f = m.create(d, name("f"), 0o644).expect("op").ino;
        m.write(f, 0, b"z").expect("op");
        m.sync_file(f).expect("op");
        m.sync_dir(d).expect("op");
        m.sync_dir(ROOT).expect("op");
        m.power_cut();
        assert_eq!(
            m.read(m.lookup(d, name("f")).expect("op").ino, 0, 9)
                .expect("op"),
            b"z"
        );
    }
}
