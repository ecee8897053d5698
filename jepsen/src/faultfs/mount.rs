//! A fault filesystem mounted on a directory, and the handle the harness controls it with:
//! capacity (ENOSPC), EIO injection, and power cuts.
//!
//! Power cut, chosen design: the caller first stops every process using the mount (the
//! harness SIGKILLs the node and waits for it to exit); [`FaultFs::power_cut`] then unmounts
//! (ending the FUSE session, so the kernel drops every cached page, dentry and inode of it and
//! no request from the dead process can still land), reverts the model to its durable state,
//! and mounts a fresh session over the same in-memory state. Reverting under a live mount
//! would let the kernel serve pages cached from the lost state; direct IO everywhere would
//! avoid that but not cached dentries and attributes.
//!
//! Invariants: at most one session is live; every mount this handle made is unmounted by
//! [`FaultFs::unmount`] or `Drop` (also on panic), lazily if still busy after a bounded wait;
//! every wait is bounded. The session's threads live in the calling process, so the harness
//! (not a helper program) owns the mount.
//!
//! It does not work without root and `/dev/fuse` (the mount syscall is made directly, no
//! `fusermount`), and does not survive the harness process: a killed harness leaves the mount
//! to be unmounted by hand (`umount -l DIR`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, Session};

use super::FaultFsError;
use super::fuse::FaultFsFuse;
use super::model::Model;

/// How long unmounting may wait for the mount to become idle before detaching it lazily.
const UNMOUNT_WAIT: Duration = Duration::from_secs(10);
/// How long the session's threads may take to end after the unmount.
const SESSION_END_WAIT: Duration = Duration::from_secs(10);

struct Live {
    thread: JoinHandle<std::io::Result<()>>,
}

/// One mounted fault filesystem.
pub struct FaultFs {
    mountpoint: PathBuf,
    model: Arc<Mutex<Model>>,
    live: Option<Live>,
}

/// Whether this machine can mount one: root and `/dev/fuse`. `Err` names what is missing.
pub fn prerequisites() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (mounts through /dev/fuse directly)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse does not exist (load the fuse module, or run the container with --device /dev/fuse)".into());
    }
    Ok(())
}

impl FaultFs {
    /// Mounts an empty fault filesystem on `mountpoint` (an existing directory).
    pub fn mount(mountpoint: &Path) -> Result<FaultFs, FaultFsError> {
        prerequisites().map_err(FaultFsError::Unsupported)?;
        let mut fs = FaultFs {
            mountpoint: mountpoint.to_path_buf(),
            model: Arc::new(Mutex::new(Model::new())),
            live: None,
        };
        fs.start_session()?;
        Ok(fs)
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    fn start_session(&mut self) -> Result<(), FaultFsError> {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("ringkv-faultfs".into()),
            MountOption::Subtype("faultfs".into()),
            MountOption::NoAtime,
        ];
        config.n_threads = Some(2);
        let fs = FaultFsFuse {
            model: self.model.clone(),
        };
        let session = Session::new(fs, &self.mountpoint, &config)
            .map_err(|e| FaultFsError::Mount(self.mountpoint.clone(), e))?;
        let thread = std::thread::Builder::new()
            .name("faultfs".into())
            .spawn(move || session.run())
            .map_err(|e| FaultFsError::Mount(self.mountpoint.clone(), e))?;
        self.live = Some(Live { thread });
        Ok(())
    }

    /// Unmounts (retrying while busy, then detaching lazily) and waits for the session to end.
    fn stop_session(&mut self) -> Result<(), FaultFsError> {
        let Some(live) = self.live.take() else {
            return Ok(());
        };
        // Unmount here rather than through fuser's one-shot unmounter, so EBUSY can be retried:
        // a killed process's files may be released a moment after it is reaped.
        let deadline = Instant::now() + UNMOUNT_WAIT;
        let mut detached = false;
        loop {
            match nix::mount::umount(&self.mountpoint) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) => break,
                Err(nix::errno::Errno::EBUSY) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => {
                    // Busy past the deadline (or another error): detach, so nothing is left
                    // mounted; the session ends when the last user lets go.
                    let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
                    detached = true;
                    break;
                }
            }
        }
        if detached {
            return Err(FaultFsError::Busy(self.mountpoint.clone()));
        }
        // Unmounted. The session's threads end when the kernel closes the connection; if that
        // takes too long (something still references the old superblock), leave them behind
        // (they hold nothing but the model's lock, briefly, per request) rather than fail.
        let deadline = Instant::now() + SESSION_END_WAIT;
        while !live.thread.is_finished() {
            if Instant::now() >= deadline {
                eprintln!(
                    "warning: fault filesystem session on {} still running {SESSION_END_WAIT:?} after the unmount; left behind",
                    self.mountpoint.display()
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = live.thread.join();
        Ok(())
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The power goes out: everything not fsynced is lost. Every process using the mount must
    /// have exited first (their files are gone with the session).
    pub fn power_cut(&mut self) -> Result<(), FaultFsError> {
        self.stop_session()?;
        self.model().power_cut();
        self.start_session()
    }

    /// Makes every directory's entries durable (not file data), like a journal commit.
    pub fn sync_all_dirs(&self) {
        self.model().sync_all_dirs();
    }

    /// Caps allocated bytes (`None`: unlimited). Writes that need pages past it get ENOSPC.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.model().faults.capacity_bytes = bytes;
    }

    pub fn capacity(&self) -> Option<u64> {
        self.model().faults.capacity_bytes
    }

    /// Bytes allocated now.
    pub fn used_bytes(&self) -> u64 {
        self.model().used_bytes()
    }

    /// The next `n` writes (write, fallocate) answer EIO.
    pub fn fail_next_writes(&self, n: u64) {
        self.model().faults.eio_writes = n;
    }

    /// The next `n` syncs (fsync, fdatasync, directory fsync) answer EIO.
    pub fn fail_next_syncs(&self, n: u64) {
        self.model().faults.eio_syncs = n;
    }

    /// Every write, truncate and sync answers EIO while on.
    pub fn set_eio(&self, on: bool) {
        self.model().faults.eio_all = on;
    }

    /// Removes every injected fault (capacity and EIO).
    pub fn clear_faults(&self) {
        self.model().faults = Default::default();
    }

    /// Unmounts now, reporting a failure (`Drop` does the same silently).
    pub fn unmount(mut self) -> Result<(), FaultFsError> {
        self.stop_session()
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        let _ = self.stop_session();
    }
}
