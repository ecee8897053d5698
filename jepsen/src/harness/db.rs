//! DB control: the real `ringkv-server` binary, one process per node, each inside its network
//! namespace with a fresh data directory; SIGKILL, restart, SIGSTOP and SIGCONT. Every node's
//! output goes to `<out>/node-N.log` (appended across restarts). `Drop` kills every process
//! this run started, so nothing outlives the harness.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::HarnessError;
use super::net::Net;

/// Client port every node listens on inside its namespace.
pub const PORT: u16 = 7001;

struct Node {
    child: Option<Child>,
    paused: bool,
}

/// The cluster under test.
pub struct Db {
    bin: PathBuf,
    out: PathBuf,
    shards: u32,
    nodes: Vec<Node>,
    peers: String,
    addrs: Vec<String>,
    namespaces: Vec<String>,
}

impl Db {
    /// Starts `n` nodes on `net`.
    pub fn start(
        bin: &Path,
        out: &Path,
        net: &Net,
        n: usize,
        shards: u32,
    ) -> Result<Db, HarnessError> {
        let addrs: Vec<String> = (1..=n).map(|id| format!("{}:{PORT}", net.ip(id))).collect();
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
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
            namespaces: (1..=n).map(|id| net.ns(id)).collect(),
        };
        for id in 1..=n {
            db.spawn(id)?;
        }
        Ok(db)
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
        let data = self.out.join("data").join(format!("node-{id}"));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespaces[id - 1]])
            .arg(&self.bin)
            .args([
                "--id",
                &id.to_string(),
                "--listen",
                &self.addrs[id - 1],
                "--peers",
                &self.peers,
            ])
            .arg("--data-dir")
            .arg(&data)
            .args(["--shards", &self.shards.to_string()])
            .env(
                "RUST_LOG",
                "info,openraft=warn,openraft::core::heartbeat=error",
            )
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
