//! The fault filesystem against a real FUSE mount in a temporary directory, driven only through
//! std::fs (plus `fallocate`, `flock` and `statvfs`, which std lacks): what survives a power cut
//! and what does not, ENOSPC at the capacity and space coming back, EIO on demand, and
//! `fallocate` taking its space up front.
//!
//! Needs root and /dev/fuse. With `CI=true` a missing prerequisite fails the test; elsewhere
//! the test prints "skipped: <reason>" and passes.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ringkv_jepsen::faultfs::{self, FaultFs};

const ENOSPC: i32 = 28;
const EIO: i32 = 5;

/// A mount and its directory; fields drop in order, so the mount goes before the directory
/// (also when a test fails).
struct Mounted {
    fs: FaultFs,
    dir: tempfile::TempDir,
}

/// A mount in a fresh temp dir, or `None` (skipped) when this machine cannot mount one.
fn mount() -> Option<Mounted> {
    if let Err(reason) = faultfs::prerequisites() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but the fault filesystem cannot run here: {reason}"
        );
        eprintln!("skipped: {reason}");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultFs::mount(dir.path()).expect("mount the fault filesystem");
    Some(Mounted { fs, dir })
}

fn sync_dir(dir: &Path) {
    File::open(dir)
        .expect("open dir")
        .sync_all()
        .expect("fsync dir");
}

fn read(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    File::open(path)
        .expect("open")
        .read_to_end(&mut v)
        .expect("read");
    v
}

fn free_bytes(dir: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(dir).expect("statvfs");
    s.blocks_available() * s.fragment_size()
}

#[test]
fn synced_data_survives_a_power_cut_and_unsynced_writes_do_not() {
    let Some(mut m) = mount() else { return };
    let (fs, dir) = (&mut m.fs, &m.dir);
    let path = dir.path().join("log");
    let mut f = File::create(&path).expect("create");
    f.write_all(b"synced").expect("write");
    f.sync_data().expect("fdatasync");
    sync_dir(dir.path());
    f.write_all(b" and lost").expect("write");
    f.write_at(b"S", 0).expect("overwrite");
    drop(f);
    // Read once so the kernel caches the new bytes: the power cut must not serve them.
    assert_eq!(read(&path), b"Synced and lost");
    fs.power_cut().expect("power cut");
    assert_eq!(read(&path), b"synced");
    assert_eq!(fs::metadata(&path).expect("stat").len(), 6);

    // A truncation that was not synced comes back too.
    let f = OpenOptions::new().write(true).open(&path).expect("open");
    f.set_len(2).expect("truncate");
    drop(f);
    fs.power_cut().expect("power cut");
    assert_eq!(read(&path), b"synced");
}

#[test]
fn unsynced_creates_renames_and_unlinks_are_undone() {
    let Some(mut m) = mount() else { return };
    let (fs, dir) = (&mut m.fs, &m.dir);
    let d = dir.path();
    fs::write(d.join("a"), b"a").expect("write a");
    File::open(d.join("a"))
        .expect("open")
        .sync_all()
        .expect("fsync");
    sync_dir(d);
    fs::rename(d.join("a"), d.join("b")).expect("rename");
    fs::write(d.join("new"), b"new").expect("write new");
    fs::create_dir(d.join("sub")).expect("mkdir");
    fs.power_cut().expect("power cut");
    let mut names: Vec<String> = fs::read_dir(d)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a"]);
    assert_eq!(read(&d.join("a")), b"a");

    // Synced renames and unlinks stay done.
    fs::rename(d.join("a"), d.join("b")).expect("rename");
    sync_dir(d);
    fs.power_cut().expect("power cut");
    assert!(!d.join("a").exists() && d.join("b").exists());
    fs::remove_file(d.join("b")).expect("unlink");
    fs.power_cut().expect("power cut");
    assert!(d.join("b").exists(), "an unsynced unlink is undone");
    fs::remove_file(d.join("b")).expect("unlink");
    sync_dir(d);
    fs.power_cut().expect("power cut");
    assert!(!d.join("b").exists());
}

#[test]
fn a_file_fsync_without_a_directory_fsync_loses_a_new_file() {
    let Some(mut m) = mount() else { return };
    let (fs, dir) = (&mut m.fs, &m.dir);
    let path = dir.path().join("segment");
    let mut f = File::create(&path).expect("create");
    f.write_all(b"records").expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    fs.power_cut().expect("power cut");
    assert!(!path.exists(), "the entry was never made durable");

    // With the directory synced (before or after the data), it survives.
    let mut f = File::create(&path).expect("create");
    sync_dir(dir.path());
    f.write_all(b"records").expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    fs.power_cut().expect("power cut");
    assert_eq!(read(&path), b"records");

    // A new directory needs its parent synced, and its own entries need it synced.
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).expect("mkdir");
    fs::write(sub.join("f"), b"f").expect("write");
    File::open(sub.join("f"))
        .expect("open")
        .sync_all()
        .expect("fsync");
    sync_dir(dir.path());
    fs.power_cut().expect("power cut");
    assert!(sub.is_dir() && !sub.join("f").exists());
}

#[test]
fn writes_past_the_capacity_get_enospc_and_unlink_gives_space_back() {
    let Some(m) = mount() else { return };
    let (fs, dir) = (&m.fs, &m.dir);
    let d = dir.path();
    fs.set_capacity(Some(fs.used_bytes() + 256 * 1024));
    assert_eq!(
        free_bytes(d),
        256 * 1024,
        "statfs reports the remaining space"
    );
    fs::write(d.join("big"), vec![7u8; 256 * 1024]).expect("fill to the capacity");
    assert_eq!(free_bytes(d), 0);
    let err = fs::write(d.join("more"), b"x").expect_err("past the capacity");
    assert_eq!(err.raw_os_error(), Some(ENOSPC), "{err}");
    let mut f = OpenOptions::new()
        .append(true)
        .open(d.join("big"))
        .expect("open");
    let err = f.write_all(&[1u8; 4096]).expect_err("past the capacity");
    assert_eq!(err.raw_os_error(), Some(ENOSPC), "{err}");
    drop(f);
    // Overwriting allocated bytes needs no new space.
    OpenOptions::new()
        .write(true)
        .open(d.join("big"))
        .expect("open")
        .write_at(b"overwrite", 0)
        .expect("overwrite in place");
    fs::remove_file(d.join("big")).expect("unlink");
    assert_eq!(free_bytes(d), 256 * 1024);
    fs::write(d.join("more"), vec![1u8; 100 * 1024]).expect("space came back");
    fs.set_capacity(None);
    fs::write(d.join("big"), vec![7u8; 1024 * 1024]).expect("unlimited again");
}

#[test]
fn eio_on_demand() {
    let Some(m) = mount() else { return };
    let (fs, dir) = (&m.fs, &m.dir);
    let path = dir.path().join("f");
    let mut f = File::create(&path).expect("create");
    fs.fail_next_writes(1);
    let err = f.write_all(b"x").expect_err("injected");
    assert_eq!(err.raw_os_error(), Some(EIO), "{err}");
    f.write_all(b"ok").expect("the next write succeeds");
    fs.fail_next_syncs(2);
    let err = f.sync_data().expect_err("injected");
    assert_eq!(err.raw_os_error(), Some(EIO), "{err}");
    let err = File::open(dir.path())
        .expect("open dir")
        .sync_all()
        .expect_err("injected");
    assert_eq!(err.raw_os_error(), Some(EIO), "{err}");
    f.sync_data().expect("the next sync succeeds");
    fs.set_eio(true);
    assert_eq!(
        f.write_all(b"y").map_err(|e| e.raw_os_error()),
        Err(Some(EIO))
    );
    assert_eq!(f.sync_all().map_err(|e| e.raw_os_error()), Err(Some(EIO)));
    fs.set_eio(false);
    f.write_all(b"!").expect("write after eio off");
    assert_eq!(read(&path), b"ok!");
}

#[test]
fn fallocate_takes_its_space_up_front_and_sparse_files_cost_little() {
    use nix::fcntl::{FallocateFlags, fallocate};
    let Some(mut m) = mount() else { return };
    let (fs, dir) = (&mut m.fs, &m.dir);
    let d = dir.path();
    let f = File::create(d.join("prealloc")).expect("create");
    fs.set_capacity(Some(fs.used_bytes() + 1024 * 1024));
    fallocate(f.as_raw_fd(), FallocateFlags::empty(), 0, 768 * 1024).expect("fallocate");
    assert_eq!(
        f.metadata().expect("stat").len(),
        768 * 1024,
        "mode 0 extends the size"
    );
    assert_eq!(free_bytes(d), 256 * 1024);
    let err = fallocate(
        f.as_raw_fd(),
        FallocateFlags::empty(),
        768 * 1024,
        512 * 1024,
    )
    .expect_err("past the capacity");
    assert_eq!(err as i32, ENOSPC);
    // The reserved range takes writes although the rest of the disk fills up.
    fs::write(d.join("filler"), vec![0u8; 256 * 1024]).expect("fill");
    f.write_all_at(&[9u8; 64 * 1024], 100 * 1024)
        .expect("writes into reserved space");
    fs.set_capacity(None);

    // A 64 MiB sparse file costs one page.
    let used = fs.used_bytes();
    let s = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(d.join("sparse"))
        .expect("create");
    s.set_len(64 * 1024 * 1024).expect("set_len");
    s.write_all_at(b"end", 64 * 1024 * 1024 - 3).expect("write");
    assert_eq!(fs.used_bytes() - used, 4096);
    let mut middle = [1u8; 16];
    s.read_exact_at(&mut middle, 32 * 1024 * 1024)
        .expect("read a hole");
    assert_eq!(middle, [0u8; 16]);
    s.sync_all().expect("fsync");
    sync_dir(d);
    drop((f, s));
    fs.power_cut().expect("power cut");
    let s = File::open(d.join("sparse")).expect("open");
    assert_eq!(s.metadata().expect("stat").len(), 64 * 1024 * 1024);
    let mut end = [0u8; 3];
    s.read_exact_at(&mut end, 64 * 1024 * 1024 - 3)
        .expect("read");
    assert_eq!(&end, b"end");
}

#[test]
fn locks_are_granted_and_directories_listed() {
    use nix::fcntl::{Flock, FlockArg};
    let Some(m) = mount() else { return };
    let dir = &m.dir;
    let d = dir.path();
    fs::create_dir_all(d.join("a/b/c")).expect("mkdir -p");
    fs::write(d.join("a/b/c/conf"), b"conf").expect("write");
    let f = File::create(d.join("a/db")).expect("create");
    let lock = Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e);
    let lock = lock.expect("flock");
    let again = File::open(d.join("a/db")).expect("open");
    assert!(
        Flock::lock(again, FlockArg::LockExclusiveNonblock).is_err(),
        "a second exclusive lock is refused"
    );
    drop(lock);
    let mut names: Vec<String> = fs::read_dir(d.join("a"))
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["b", "db"]);
    fs::remove_dir_all(d.join("a")).expect("rm -r");
    assert!(fs::read_dir(d).expect("read_dir").next().is_none());
    assert!(fs::remove_dir(d.join("missing")).is_err());
}
