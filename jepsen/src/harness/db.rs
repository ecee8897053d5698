//! DB control: the real `ringkv-server` binary, one process per node, each inside its network
//! namespace with a fresh data directory; SIGKILL, restart, SIGSTOP and SIGCONT, and (when the
//! run has storage faults) power cuts and a full disk on each node's own fault filesystem
//! ([`crate::faultfs`]) mounted on its data directory. Every node's output goes to
//! `<out>/node-N.log` (appended across restarts). `Drop` kills every process this run started
//! and then unmounts every fault filesystem, so nothing outlives the harness.
//!
//! Nodes enter their network namespace with `nsenter --net` (only the network namespace), not
//! `ip netns exec`, which would also give each node a private copy of the mount table: a copy
//! would keep another node's fault filesystem mounted (and its session alive) after the
//! harness unmounts it for a power cut.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::HarnessError;
use super::net::Net;
use crate::faultfs::FaultFs;

/// Client port every node listens on inside its namespace.
pub const PORT: u16 = 7001;
/// Peer (Raft) port every node listens on inside its namespace (`--peer-listen`). Partitions
/// cut by source address (see `net.rs`), so they cut this port as well as the client port.
pub const PEER_PORT: u16 = 7101;

struct Node {
    child: Option<Child>,
    paused: bool,
}

/// How the nodes run.
#[derive(Debug, Clone, Default)]
pub struct DbOptions {
    /// Put every node's data directory on its own fault filesystem.
    pub faultfs: bool,
    /// Extra environment of every server process (test-only fault hooks).
    pub env: Vec<(String, String)>,
    /// TLS on every port, with certificates `ringkv-server certs` writes into `<out>/certs`.
    pub tls: bool,
    /// Start every node under libfaketime with its wall-clock offset in `<out>/clock/node-<id>`
    /// (re-read within a second; monotonic time not faked), for the `clock` nemesis.
    pub faketime: bool,
}

/// libfaketime, as Debian's `faketime` package installs it.
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Bytes a full disk still takes after [`Db::fill_disk`]: a few pages, so the node meets
/// ENOSPC within its next writes rather than in the middle of its first one.
const DISK_FULL_SLACK_BYTES: u64 = 16 * 1024;

/// The cluster under test.
pub struct Db {
    bin: PathBuf,
    out: PathBuf,
    shards: u32,
    nodes: Vec<Node>,
    peers: String,
    addrs: Vec<String>,
    /// Every node's `--peer-listen`, node 1 first.
    peer_addrs: Vec<String>,
    namespaces: Vec<String>,
    env: Vec<(String, String)>,
    /// With the clock nemesis: each node's offset file (`FAKETIME_TIMESTAMP_FILE`).
    clock_files: Vec<PathBuf>,
    /// With TLS: the directory of the CA, the node and the admin client certificates.
    tls_dir: Option<PathBuf>,
    /// Node `id`'s fault filesystem at `disks[id - 1]` (empty without storage faults). Declared
    /// last: fields drop after `Drop::drop` has killed every process, so unmounting finds the
    /// mounts idle.
    disks: Vec<FaultFs>,
}

impl Db {
    /// Starts `n` nodes on `net`.
    pub fn start(
        bin: &Path,
        out: &Path,
        net: &Net,
        n: usize,
        shards: u32,
        options: DbOptions,
    ) -> Result<Db, HarnessError> {
        let addrs: Vec<String> = (1..=n).map(|id| format!("{}:{PORT}", net.ip(id))).collect();
        let peer_addrs: Vec<String> = (1..=n)
            .map(|id| format!("{}:{PEER_PORT}", net.ip(id)))
            .collect();
        let peers = addrs
            .iter()
            .zip(&peer_addrs)
            .enumerate()
            .map(|(i, (a, p))| format!("{}={a}@{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut db = Db {
            bin: bin.to_path_buf(),
            out: out.to_path_buf(),
            shards,
            nodes: (0..n)
                .map(|_| Node {
                    child: None,
                    paused: false,
                })
                .collect(),
            peers,
            addrs,
            peer_addrs,
            namespaces: (1..=n).map(|id| net.ns(id)).collect(),
            env: options.env,
            clock_files: Vec::new(),
            tls_dir: None,
            disks: Vec::new(),
        };
        if options.tls {
            db.tls_dir = Some(db.make_certs(net, n)?);
        }
        if options.faketime {
            let dir = out.join("clock");
            std::fs::create_dir_all(&dir)
                .map_err(|e| HarnessError::Db(format!("{}: {e}", dir.display())))?;
            db.clock_files = (1..=n).map(|id| dir.join(format!("node-{id}"))).collect();
            db.reset_clocks()?;
        }
        if options.faultfs {
            for id in 1..=n {
                let dir = db.data_dir(id);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| HarnessError::Db(format!("{}: {e}", dir.display())))?;
                let disk = FaultFs::mount(&dir).map_err(|e| HarnessError::Db(e.to_string()))?;
                db.disks.push(disk);
            }
        }
        for id in 1..=n {
            db.spawn(id)?;
        }
        Ok(db)
    }

    /// Writes a new CA and certificates for the `n` nodes (each named by its address) and the
    /// admin client into `<out>/certs`, replacing an earlier run's.
    fn make_certs(&self, net: &Net, n: usize) -> Result<PathBuf, HarnessError> {
        let dir = self.out.join("certs");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| HarnessError::Db(format!("{}: {e}", dir.display())))?;
        }
        let hosts: Vec<String> = (1..=n).map(|id| net.ip(id).to_string()).collect();
        let out = Command::new(&self.bin)
            .args([
                "certs",
                "--nodes",
                &n.to_string(),
                "--hosts",
                &hosts.join(","),
            ])
            .arg("--out")
            .arg(&dir)
            .output()
            .map_err(|e| HarnessError::Db(format!("ringkv-server certs: {e}")))?;
        if !out.status.success() {
            return Err(HarnessError::Db(format!(
                "ringkv-server certs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(dir)
    }

    /// The clients' TLS files (the CA and the admin certificate), with TLS.
    pub fn client_tls(&self) -> Option<ringkv_client::TlsOptions> {
        self.tls_dir.as_ref().map(|d| ringkv_client::TlsOptions {
            ca: d.join("ca.pem"),
            cert: Some(d.join("client.pem")),
            key: Some(d.join("client.key")),
        })
    }

    fn data_dir(&self, id: usize) -> PathBuf {
        self.out.join("data").join(format!("node-{id}"))
    }

    /// Whether the data directories are on fault filesystems.
    pub fn has_disks(&self) -> bool {
        !self.disks.is_empty()
    }

    fn disk(&mut self, id: usize) -> Result<&mut FaultFs, HarnessError> {
        self.disks.get_mut(id - 1).ok_or_else(|| {
            HarnessError::Usage("storage faults need the nodes on fault filesystems".into())
        })
    }

    /// Cuts the power of `ids` at once: SIGKILL them all, then drop every write each one had
    /// not fsynced. They stay down until [`Db::restart`].
    pub fn power_cut(&mut self, ids: &[usize]) -> Result<(), HarnessError> {
        for &id in ids {
            self.kill(id)?;
        }
        for &id in ids {
            self.disk(id)?
                .power_cut()
                .map_err(|e| HarnessError::Db(format!("power cut of node {id}: {e}")))?;
        }
        Ok(())
    }

    /// Fills node `id`'s disk: its capacity becomes what it uses now plus a few pages.
    /// Returns the capacity set.
    pub fn fill_disk(&mut self, id: usize) -> Result<u64, HarnessError> {
        let disk = self.disk(id)?;
        let capacity = disk.used_bytes() + DISK_FULL_SLACK_BYTES;
        disk.set_capacity(Some(capacity));
        Ok(capacity)
    }

    /// Makes every directory entry on every node's disk durable (see
    /// [`FaultFs::sync_all_dirs`]).
    pub fn sync_all_dirs(&self) {
        for d in &self.disks {
            d.sync_all_dirs();
        }
    }

    /// Removes every disk fault (capacity and EIO) from every node.
    pub fn restore_disks(&mut self) {
        for d in &self.disks {
            d.clear_faults();
        }
    }

    /// Notices nodes that exited on their own (a server stopping on a storage error, or a
    /// crash): they count as killed from now on, so healing restarts them. Returns them with
    /// how they exited.
    pub fn reap_exited(&mut self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                node.paused = false;
                out.push((i + 1, status.to_string()));
            }
        }
        out
    }

    /// Client endpoints, node 1 first.
    pub fn endpoints(&self) -> Vec<String> {
        self.addrs.clone()
    }

    pub fn log_path(&self, id: usize) -> PathBuf {
        self.out.join(format!("node-{id}.log"))
    }

    fn spawn(&mut self, id: usize) -> Result<(), HarnessError> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .map_err(|e| HarnessError::Db(format!("node {id} log: {e}")))?;
        let err_log = log
            .try_clone()
            .map_err(|e| HarnessError::Db(e.to_string()))?;
        let data = self.data_dir(id);
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.namespaces[id - 1]))
            .arg("--")
            .arg(&self.bin)
            .args([
                "--id",
                &id.to_string(),
                "--listen",
                &self.addrs[id - 1],
                "--peer-listen",
                &self.peer_addrs[id - 1],
                "--peers",
                &self.peers,
            ])
            .args(self.security_args(id))
            .arg("--data-dir")
            .arg(&data)
            .args(["--shards", &self.shards.to_string()])
            .env(
                "RUST_LOG",
                "info,openraft=warn,openraft::core::heartbeat=error",
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(self.faketime_env(id))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|e| HarnessError::Db(format!("starting node {id}: {e}")))?;
        self.nodes[id - 1] = Node {
            child: Some(child),
            paused: false,
        };
        Ok(())
    }

    /// The environment that puts node `id` under libfaketime (none without the clock nemesis).
    fn faketime_env(&self, id: usize) -> Vec<(String, String)> {
        let Some(file) = self.clock_files.get(id - 1) else {
            return Vec::new();
        };
        vec![
            ("LD_PRELOAD".into(), FAKETIME_LIB.into()),
            ("FAKETIME_TIMESTAMP_FILE".into(), file.display().to_string()),
            ("FAKETIME_CACHE_DURATION".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ]
    }

    /// Sets node `id`'s wall-clock offset (libfaketime syntax: `+1h`, `-1h`, `+0`); it takes
    /// effect within a second, without a restart.
    pub fn set_clock_offset(&self, id: usize, offset: &str) -> Result<(), HarnessError> {
        let file = self.clock_files.get(id - 1).ok_or_else(|| {
            HarnessError::Db("the nodes were not started under libfaketime".into())
        })?;
        std::fs::write(file, format!("{offset}\n"))
            .map_err(|e| HarnessError::Db(format!("{}: {e}", file.display())))
    }

    /// Sets every node's clock right (no-op without the clock nemesis).
    pub fn reset_clocks(&self) -> Result<(), HarnessError> {
        for id in 1..=self.clock_files.len() {
            self.set_clock_offset(id, "+0")?;
        }
        Ok(())
    }

    /// Node `id`'s TLS flags, or `--insecure`: plaintext on purpose, as the nodes listen only
    /// inside the network namespaces this run created (a non-loopback address needs TLS or
    /// --insecure).
    fn security_args(&self, id: usize) -> Vec<String> {
        match &self.tls_dir {
            None => vec!["--insecure".into()],
            Some(d) => vec![
                "--tls-cert".into(),
                d.join(format!("node-{id}.pem")).display().to_string(),
                "--tls-key".into(),
                d.join(format!("node-{id}.key")).display().to_string(),
                "--tls-ca".into(),
                d.join("ca.pem").display().to_string(),
            ],
        }
    }

    fn signal(&self, id: usize, sig: Signal) -> Result<(), HarnessError> {
        let Some(child) = self.nodes[id - 1].child.as_ref() else {
            return Ok(());
        };
        kill(Pid::from_raw(child.id() as i32), sig)
            .map_err(|e| HarnessError::Db(format!("{sig} to node {id}: {e}")))
    }

    pub fn is_running(&self, id: usize) -> bool {
        self.nodes[id - 1].child.is_some()
    }

    pub fn is_paused(&self, id: usize) -> bool {
        self.nodes[id - 1].paused
    }

    /// SIGKILL: a crash, no cleanup.
    pub fn kill(&mut self, id: usize) -> Result<(), HarnessError> {
        if self.nodes[id - 1].paused {
            self.signal(id, Signal::SIGCONT)?;
        }
        if let Some(mut c) = self.nodes[id - 1].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.nodes[id - 1].paused = false;
        Ok(())
    }

    /// Starts a killed node again on its data directory.
    pub fn restart(&mut self, id: usize) -> Result<(), HarnessError> {
        if self.is_running(id) {
            return Ok(());
        }
        self.spawn(id)
    }

    /// SIGSTOP: the process freezes with its sockets open.
    pub fn pause(&mut self, id: usize) -> Result<(), HarnessError> {
        self.signal(id, Signal::SIGSTOP)?;
        self.nodes[id - 1].paused = true;
        Ok(())
    }

    pub fn resume(&mut self, id: usize) -> Result<(), HarnessError> {
        self.signal(id, Signal::SIGCONT)?;
        self.nodes[id - 1].paused = false;
        Ok(())
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        for id in 1..=self.nodes.len() {
            let _ = self.kill(id);
        }
    }
}
