//! Fixtures for cluster-level tests: real `ringkv-server` processes on loopback ports chosen by
//! the OS, with fresh data directories, SIGKILL/SIGTERM/restart, and condition waits with
//! deadlines. Every child is killed when the [`Cluster`] is dropped, so a failing test leaves
//! no process behind. On failure, each node's log is printed to help the reader.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ringkv_client::{Client, ClientOptions, StatusResponse};
use tempfile::TempDir;

/// Path of a workspace binary (`ringkv-server`, `ringkv`), brought up to date once per test
/// process with `cargo build` (a no-op when fresh), so `cargo test -p ringkv-tests` never runs
/// a stale binary. `RINGKV_RINGKV_SERVER_BIN` / `RINGKV_RINGKV_BIN` (`RINGKV_<NAME>_BIN`)
/// override the path and skip the build (CI sets them to the binaries it built before the suite).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let env = format!("RINGKV_{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Ok(p) = std::env::var(&env) {
        return PathBuf::from(p);
    }
    // Integration tests run from target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = profile_dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        // All workspace binaries at once: the same feature set `cargo test --workspace` and
        // nextest build with, so this is a no-op right after them (a `-p` build would unify
        // features differently and recompile dependencies).
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--bins"]);
        // Not the variables cargo sets for this test process (its package's name, version,
        // manifest dir, OUT_DIR, ...): build scripts that watch them (ring's does) would see
        // them change and rebuild, with every crate that depends on them.
        for (k, _) in std::env::vars_os() {
            let Some(k) = k.to_str() else { continue };
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_MANIFEST_")
                || k.starts_with("CARGO_BIN_")
                || k.starts_with("CARGO_CRATE_")
                || matches!(
                    k,
                    "OUT_DIR" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR"
                )
            {
                cmd.env_remove(k);
            }
        }
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status();
        assert!(status.is_ok_and(|s| s.success()), "building {name} failed");
        built.push(name.to_string());
    }
    assert!(path.exists(), "{} not found; set {env}", path.display());
    path
}

/// Where [`free_port`] looks: below Linux's ephemeral range (32768–60999), which the kernel
/// draws the local ports of outgoing connections from, and clear of the old-data fixtures'
/// fixed ports (27101–27113).
pub const TEST_PORTS: std::ops::Range<u16> = 20_000..27_000;

/// A free loopback port, outside the ephemeral range: a port the OS picked (`bind :0`) could
/// be taken by one of the cluster's own outgoing connections between the check and the node's
/// bind (seen: a node's admin port taken while its peers dialled it at start-up). Random
/// candidates of [`TEST_PORTS`] are tried until one binds; the listener is closed before the
/// node binds it. A port is handed out once per process: the bind check alone cannot see a
/// port handed out before but not bound yet (seen: one node's peer and admin ports drawn
/// equal, so it refused to start).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let span = u64::from(TEST_PORTS.end - TEST_PORTS.start);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for attempt in 0u64..10_000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(attempt);
        let port = TEST_PORTS.start + (h.finish() % span) as u16;
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {TEST_PORTS:?}");
}

/// Keeps a node's port while the node is down: a socket bound to it but not listening.
///
/// A restarted node whose port was taken in the meantime could not listen (seen: "Address
/// already in use" on restart, when [`free_port`] still drew from the ephemeral range that
/// outgoing connections use; another test's [`free_port`] can still pick it). Nobody else can
/// bind a port a socket holds, and as nothing listens, connections to the port are still
/// refused, exactly as for a dead node. Dropped just before the node starts.
pub struct PortHold {
    /// Kept only to be dropped (closed) when the node starts.
    _sockets: Vec<socket2::Socket>,
}

impl PortHold {
    /// Binds each of `addrs` that is free (one already taken is left alone: nothing to hold).
    pub fn new(addrs: &[&str]) -> PortHold {
        let mut held = Vec::new();
        for addr in addrs {
            let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
                continue;
            };
            let Ok(s) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            else {
                continue;
            };
            if s.set_reuse_address(true).is_ok() && s.bind(&addr.into()).is_ok() {
                held.push(s);
            }
        }
        PortHold { _sockets: held }
    }
}

pub struct Node {
    pub id: u64,
    /// The client address (`--listen`).
    pub addr: String,
    /// The peer (Raft) address (`--peer-listen`).
    pub peer_addr: String,
    /// The admin HTTP endpoint (`--admin-listen`).
    pub admin: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Started with `--join` through this address instead of `--peers`.
    pub join: Option<String>,
    child: Option<Child>,
    /// The node's ports, held while it is not running (see [`PortHold`]).
    hold: Option<PortHold>,
    starts: u32,
    /// Extra environment of the process from its next start on ([`Cluster::set_env`]).
    env: Vec<(String, String)>,
}

impl Node {
    fn hold_ports(&mut self) {
        self.hold = Some(PortHold::new(&[&self.addr, &self.peer_addr, &self.admin]));
    }

    /// This node's entry in `--peers`: `ID=ADDR`, with `@PEER_ADDR` unless that is the default.
    fn peers_entry(&self) -> String {
        if default_peer_addr(&self.addr).as_deref() == Some(self.peer_addr.as_str()) {
            format!("{}={}", self.id, self.addr)
        } else {
            format!("{}={}@{}", self.id, self.addr, self.peer_addr)
        }
    }
}

/// The peer address a node on client address `addr` gets by default (port + 1000), as data
/// written by versions before peer listeners records it.
pub fn default_peer_addr(addr: &str) -> Option<String> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?.checked_add(1000)?;
    Some(format!("{host}:{port}"))
}

/// A fresh loopback address, `127.0.0.1:PORT` (see [`free_port`]).
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A cluster of real server processes.
pub struct Cluster {
    _dir: TempDir,
    pub nodes: BTreeMap<u64, Node>,
    peers: String,
    pub shards: u32,
    extra_args: Vec<String>,
    /// The bearer token the harness's own clients send (nodes started with --auth-tokens).
    pub token: Option<String>,
    /// With TLS: the directory `ringkv-server certs` wrote the cluster's files into.
    tls: Option<PathBuf>,
}

/// Writes a new CA, `nodes` node certificates and the admin client certificate into `dir`
/// with `ringkv-server certs` (the names of every node: `node-I`, `localhost`, `127.0.0.1`).
pub fn make_certs(dir: &Path, nodes: u64) {
    let out = Command::new(binary("ringkv-server"))
        .args(["certs", "--nodes", &nodes.to_string(), "--out"])
        .arg(dir)
        .output()
        .expect("run ringkv-server certs");
    assert!(
        out.status.success(),
        "certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// Starts `n` nodes with `shards` shards.
    pub fn start(n: u64, shards: u32) -> Cluster {
        Self::start_with(n, shards, &[])
    }

    pub fn start_with(n: u64, shards: u32, extra_args: &[&str]) -> Cluster {
        let mut c = Self::prepare(n, shards, extra_args);
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    /// Starts `n` nodes with TLS on every port: a new CA and certificates for `n` nodes (and
    /// the admin client) in the cluster's temporary directory.
    pub fn start_tls(n: u64, shards: u32, extra_args: &[&str]) -> Cluster {
        let mut c = Self::prepare_tls(n, shards, extra_args);
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    /// [`Cluster::prepare`] with TLS (see [`Cluster::start_tls`]).
    pub fn prepare_tls(n: u64, shards: u32, extra_args: &[&str]) -> Cluster {
        let mut c = Self::prepare(n, shards, extra_args);
        let dir = c._dir.path().join("certs");
        // Two spare node certificates, for nodes that join later.
        make_certs(&dir, n + 2);
        c.tls = Some(dir);
        c
    }

    /// The directory of the cluster's TLS files (`ca.pem`, `node-I.pem`, `client.pem`, keys).
    pub fn tls_dir(&self) -> Option<&Path> {
        self.tls.as_deref()
    }

    /// Client options for every node: with TLS, the CA and the admin client certificate.
    pub fn client_options(&self, endpoints: Vec<String>) -> ClientOptions {
        let mut o = ClientOptions::new(endpoints);
        o.tls = self.tls.as_ref().map(|d| ringkv_client::TlsOptions {
            ca: d.join("ca.pem"),
            cert: Some(d.join("client.pem")),
            key: Some(d.join("client.key")),
        });
        o.token = self.token.clone();
        o
    }

    /// The CLI's TLS flags for this cluster (empty without TLS).
    pub fn cli_tls_args(&self) -> Vec<String> {
        match &self.tls {
            None => Vec::new(),
            Some(d) => [
                "--cacert",
                "ca.pem",
                "--cert",
                "client.pem",
                "--key",
                "client.key",
            ]
            .chunks(2)
            .flat_map(|p| [p[0].to_string(), d.join(p[1]).display().to_string()])
            .collect(),
        }
    }

    /// Lays out `n` nodes (addresses, data directories) without starting them. Every node
    /// gets a free client port and a free peer port (named in `--peers` with `@`).
    pub fn prepare(n: u64, shards: u32, extra_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let addrs: BTreeMap<u64, (String, String)> =
            (1..=n).map(|id| (id, (free_addr(), free_addr()))).collect();
        Self::lay_out(dir, &addrs, shards, extra_args)
    }

    /// Lays out nodes on existing data directories `dir/node-<id>` (e.g. unpacked from a
    /// fixture) at the fixed gRPC addresses their membership records, without starting them.
    /// Their peer ports are the defaults (client port + 1000), which is what membership
    /// records written before peer listeners mean. Admin ports are picked freely (no data
    /// names them).
    pub fn prepare_on(
        dir: TempDir,
        addrs: &BTreeMap<u64, String>,
        shards: u32,
        extra_args: &[&str],
    ) -> Cluster {
        let addrs: BTreeMap<u64, (String, String)> = addrs
            .iter()
            .map(|(id, a)| {
                let peer = default_peer_addr(a).expect("fixture port has a default peer port");
                (*id, (a.clone(), peer))
            })
            .collect();
        Self::lay_out(dir, &addrs, shards, extra_args)
    }

    /// Lays out nodes at (client, peer) addresses on `dir/node-<id>`.
    fn lay_out(
        dir: TempDir,
        addrs: &BTreeMap<u64, (String, String)>,
        shards: u32,
        extra_args: &[&str],
    ) -> Cluster {
        let mut nodes = BTreeMap::new();
        for (&id, (addr, peer_addr)) in addrs {
            nodes.insert(
                id,
                Node {
                    id,
                    addr: addr.clone(),
                    peer_addr: peer_addr.clone(),
                    admin: format!("127.0.0.1:{}", free_port()),
                    data_dir: dir.path().join(format!("node-{id}")),
                    log: dir.path().join(format!("node-{id}.log")),
                    join: None,
                    child: None,
                    hold: None,
                    starts: 0,
                    env: Vec::new(),
                },
            );
        }
        for n in nodes.values_mut() {
            n.hold_ports();
        }
        let peers = nodes
            .values()
            .map(Node::peers_entry)
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            _dir: dir,
            nodes,
            peers,
            shards,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            token: None,
            tls: None,
        }
    }

    /// The `--peers` value of the nodes laid out at the start.
    pub fn peers(&self) -> &str {
        &self.peers
    }

    /// Starts a new, empty node `id` with `--join` through node `via`; returns its client
    /// address. It becomes a member only when `ringkv member add` adds it (with
    /// `--peer-addr` [`Cluster::peer_addr`]).
    pub fn join(&mut self, id: u64, via: u64) -> String {
        assert!(!self.nodes.contains_key(&id), "node {id} exists");
        let via = self.addr(via);
        let root = self.nodes[&1]
            .data_dir
            .parent()
            .expect("root")
            .to_path_buf();
        let addr = free_addr();
        self.nodes.insert(
            id,
            Node {
                id,
                addr: addr.clone(),
                peer_addr: free_addr(),
                admin: format!("127.0.0.1:{}", free_port()),
                data_dir: root.join(format!("node-{id}")),
                log: root.join(format!("node-{id}.log")),
                join: Some(via),
                child: None,
                hold: None,
                starts: 0,
                env: Vec::new(),
            },
        );
        self.spawn(id);
        addr
    }

    /// SIGKILLs node `id` (if running) and drops it from the cluster's node list.
    pub fn forget(&mut self, id: u64) {
        self.kill(id);
        self.nodes.remove(&id);
    }

    /// Sets an environment variable for node `id`'s next starts (e.g. `LD_PRELOAD` of
    /// libfaketime to move its wall clock).
    pub fn set_env(&mut self, id: u64, key: &str, value: &str) {
        let node = self.nodes.get_mut(&id).expect("node id");
        node.env.retain(|(k, _)| k != key);
        node.env.push((key.to_string(), value.to_string()));
    }

    /// Starts node `id` (laid out by [`Cluster::prepare`] or stopped before).
    pub fn spawn(&mut self, id: u64) {
        let bin = binary("ringkv-server");
        let peers = self.peers.clone();
        let shards = self.shards.to_string();
        let mut extra = self.extra_args.clone();
        if let Some(d) = &self.tls {
            for (flag, file) in [
                ("--tls-cert", format!("node-{id}.pem")),
                ("--tls-key", format!("node-{id}.key")),
                ("--tls-ca", "ca.pem".to_string()),
            ] {
                extra.push(flag.to_string());
                extra.push(d.join(file).display().to_string());
            }
        }
        let node = self.nodes.get_mut(&id).expect("node id");
        node.starts += 1;
        node.hold = None;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let (membership_flag, membership_value) = match &node.join {
            Some(via) => ("--join", via.clone()),
            None => ("--peers", peers),
        };
        let child = Command::new(bin)
            .args([
                "--id",
                &id.to_string(),
                "--listen",
                &node.addr,
                "--peer-listen",
                &node.peer_addr,
                membership_flag,
                &membership_value,
                "--admin-listen",
                &node.admin,
            ])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--shards", &shards])
            .args(&extra)
            .env(
                "RUST_LOG",
                "info,openraft=warn,openraft::core::heartbeat=error",
            )
            .envs(node.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log clone"))
            .stderr(log)
            .spawn()
            .expect("spawn ringkv-server");
        node.child = Some(child);
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].addr.clone()
    }

    /// Node `id`'s peer (Raft) address.
    pub fn peer_addr(&self, id: u64) -> String {
        self.nodes[&id].peer_addr.clone()
    }

    pub fn admin_addr(&self, id: u64) -> String {
        self.nodes[&id].admin.clone()
    }

    pub fn client(&self) -> Client {
        Client::new(self.client_options(self.endpoints())).expect("client")
    }

    /// A client that talks only to `id` (serializable reads are then served by that node).
    pub fn client_of(&self, id: u64) -> Client {
        Client::new(self.client_options(vec![self.addr(id)])).expect("client")
    }

    /// SIGHUP: a node re-reads its auth tokens file.
    pub fn hangup(&self, id: u64) {
        self.signal(id, Signal::SIGHUP);
    }

    /// SIGKILL, no cleanup: a crash.
    pub fn kill(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut(&id)
            && let Some(mut c) = n.child.take()
        {
            let _ = c.kill();
            let _ = c.wait();
            n.hold_ports();
        }
    }

    /// SIGSTOP: the process freezes with its sockets open (a long GC pause, a stuck VM).
    pub fn pause(&self, id: u64) {
        self.signal(id, Signal::SIGSTOP);
    }

    /// SIGCONT after [`Cluster::pause`].
    pub fn resume(&self, id: u64) {
        self.signal(id, Signal::SIGCONT);
    }

    fn signal(&self, id: u64, sig: Signal) {
        let c = self.nodes[&id].child.as_ref().expect("node running");
        kill(Pid::from_raw(c.id() as i32), sig).expect("signal");
    }

    /// SIGTERM and wait for a clean exit (panics after 20 s).
    pub fn stop(&mut self, id: u64) -> std::process::ExitStatus {
        let mut c = self
            .nodes
            .get_mut(&id)
            .and_then(|n| n.child.take())
            .expect("node running");
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.hold_ports();
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("node {id} did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `timeout`) for node `id` to exit by itself; its status, or `None` if it
    /// is still running then.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let node = self.nodes.get_mut(&id)?;
        loop {
            let status = node.child.as_mut()?.try_wait().ok().flatten();
            if let Some(status) = status {
                node.child = None;
                node.hold_ports();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn restart(&mut self, id: u64) {
        self.spawn(id);
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.child.is_some())
    }

    /// Each running node's status (None when it does not answer).
    pub async fn statuses(&self) -> BTreeMap<u64, Option<StatusResponse>> {
        let client = self.client();
        let mut out = BTreeMap::new();
        for n in self.nodes.values() {
            let s = if n.child.is_some() {
                client.status_of(&n.addr).await.ok()
            } else {
                None
            };
            out.insert(n.id, s);
        }
        out
    }

    /// Waits until every running node answers and all agree on a leader (a running node) for
    /// every shard; returns shard → leader.
    pub async fn wait_for_leaders(&self, timeout: Duration) -> Result<Vec<u64>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.agreed_leaders().await {
                Ok(l) => return Ok(l),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "no agreed leader for every shard within {timeout:?}: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node agrees on a leader for each shard and node `id` leads
    /// at least one of them (the balancer hands shards to their preferred nodes a few hundred
    /// ms after the start, one at a time), so that stopping `id` takes leaders with it.
    /// Returns shard → leader at that moment.
    pub async fn wait_until_leads(&self, id: u64, timeout: Duration) -> Vec<u64> {
        let leads = self
            .wait_until(&format!("node {id} leads a shard"), timeout, || async {
                self.agreed_leaders_public()
                    .await
                    .is_some_and(|l| l.contains(&id))
            })
            .await;
        assert_eq!(leads, Ok(()));
        self.agreed_leaders_public()
            .await
            .expect("the leaders are agreed")
    }

    /// Shard → leader when every running node agrees right now.
    pub async fn agreed_leaders_public(&self) -> Option<Vec<u64>> {
        self.agreed_leaders().await.ok()
    }

    async fn agreed_leaders(&self) -> Result<Vec<u64>, String> {
        let mut agreed: Option<Vec<u64>> = None;
        let statuses = self.statuses().await;
        for (&id, s) in &statuses {
            if !self.is_running(id) {
                continue;
            }
            let s = s
                .as_ref()
                .ok_or_else(|| format!("node {id} does not answer"))?;
            let view: Vec<u64> = s
                .shards
                .iter()
                .map(|sh| {
                    sh.leader
                        .filter(|l| self.is_running(*l))
                        .ok_or(format!("node {id}: shard {} has no live leader", sh.shard))
                })
                .collect::<Result<_, _>>()?;
            if view.len() != self.shards as usize {
                return Err(format!("node {id} reports {} shards", view.len()));
            }
            match &agreed {
                None => agreed = Some(view),
                Some(a) if *a != view => return Err(format!("nodes disagree: {a:?} vs {view:?}")),
                Some(_) => {}
            }
        }
        let agreed = agreed.ok_or_else(|| "no node running".to_string())?;
        // A node may still name the leader it voted for before a restart; only a leader that
        // itself reports the leader role counts.
        for (shard, leader) in agreed.iter().enumerate() {
            let role = statuses
                .get(leader)
                .and_then(|s| s.as_ref())
                .and_then(|s| s.shards.iter().find(|sh| sh.shard as usize == shard))
                .map(|sh| sh.role.as_str());
            if role != Some("leader") {
                return Err(format!(
                    "shard {shard}: node {leader} is named leader but reports role {role:?}"
                ));
            }
        }
        Ok(agreed)
    }

    /// Waits until `cond` holds, polling every 50 ms.
    pub async fn wait_until<F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: F,
    ) -> Result<(), String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("timed out after {timeout:?} waiting for {what}"))
    }

    /// Prints every node's log (call before failing an assertion).
    pub fn dump_logs(&self) {
        for n in self.nodes.values() {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("----- node {} log (last {} lines) -----", n.id, tail.len());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for n in self.nodes.values_mut() {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Asserts that no key of `keys` exists. Each was written by exactly one put, which the client
/// answered as certainly not applied (a definite failure: `Error::is_definite`), so finding
/// any of them means a write reported as failed took effect. Reads are linearizable.
pub async fn assert_definite_failures_absent(client: &Client, keys: &[String], context: &str) {
    for k in keys {
        let got = client
            .get(k.clone(), ringkv_client::ReadConsistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("{context}: read of {k}: {e}"));
        assert!(
            got.is_none(),
            "{context}: {k} was answered \"definitely failed\" but is present: {got:?}"
        );
    }
    eprintln!(
        "{context}: all {} writes answered as definitely failed are absent",
        keys.len()
    );
}

/// The end of a run of writes under a planned disturbance (rolling restarts, rotations): no
/// write failed except as retriable (`Error::Unavailable`), every acknowledged `(key, value)`
/// reads back (linearizable), and no failed write took effect
/// ([`assert_definite_failures_absent`]).
pub async fn assert_writes_kept(
    client: &Client,
    acked: &[(String, String)],
    failed: &[(String, ringkv_client::Error)],
    context: &str,
) {
    let unretriable: Vec<&ringkv_client::Error> = failed
        .iter()
        .map(|(_, e)| e)
        .filter(|e| !matches!(e, ringkv_client::Error::Unavailable(_)))
        .collect();
    assert!(
        unretriable.is_empty(),
        "{context}: requests failed other than as retriable: {unretriable:?}"
    );
    for (k, v) in acked {
        let got = client
            .get(k.clone(), ringkv_client::ReadConsistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("{context}: read of {k}: {e}"));
        assert_eq!(
            got.map(|g| g.value),
            Some(bytes::Bytes::from(v.clone())),
            "{context}: {k} lost"
        );
    }
    let keys: Vec<String> = failed.iter().map(|(k, _)| k.clone()).collect();
    assert_definite_failures_absent(client, &keys, context).await;
}

/// The sum of `metric`'s samples whose labels include every pair of `labels`, as node `admin`
/// serves them on `/metrics` (counters, gauges and untyped samples; 0 if there are none).
pub async fn metric_sum(admin: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::{Scrape, Value};
    let (code, body) = http_get(admin, "/metrics").await.expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Untyped(v) | Value::Gauge(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Runs the `ringkv` CLI against `endpoints`; returns (exit code, stdout, stderr).
pub fn cli(endpoints: &[String], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary("ringkv"))
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .args(["--timeout-ms", "8000"])
        .args(args)
        .output()
        .expect("run ringkv");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the `ringkv` CLI against `endpoints` with `stdin` as its input (e.g. `ringkv txn`);
/// returns (exit code, stdout, stderr).
pub fn cli_with_stdin(endpoints: &[String], args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(binary("ringkv"))
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .args(["--timeout-ms", "8000"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ringkv");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("ringkv");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A plain HTTP/1.1 GET (no client library needed for the admin endpoint): (status, body).
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no header end"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        Ok((
            status,
            if chunked {
                dechunk(body)
            } else {
                body.to_string()
            },
        ))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| std::io::Error::other("admin request timed out"))?
}

/// Decodes a chunked HTTP/1.1 body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Whether this is a CI run (`CI=true`): there every prerequisite of the suite (the history
/// corpus, Chromium, root) is installed, and a check that cannot run is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Records that a check cannot run because `reason` (a missing prerequisite). In CI
/// ([`in_ci`]) that fails the test, so a skip never hides a check that did not run; elsewhere
/// it prints `skipped: {reason}` to stderr, which nextest shows for the tests that can skip
/// (`success-output` in `.config/nextest.toml`), and the caller skips the check.
#[track_caller]
pub fn skip(reason: &str) {
    assert!(
        !in_ci(),
        "missing prerequisite in CI (CI=true), not skipping: {reason}"
    );
    eprintln!("skipped: {reason}");
}

/// The DOM of `url` after headless Chromium ran its scripts for `settle_ms`, or `None` when
/// Chromium is not installed (a [`skip`]: it fails the test in CI).
#[track_caller]
pub fn chromium_dom(url: &str, settle_ms: u64, screenshot: Option<&Path>) -> Option<String> {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        skip("chromium not installed (apt-get install chromium)");
        return None;
    };
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = Command::new(&chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1400",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--virtual-time-budget={settle_ms}"));
    if let Some(png) = screenshot {
        let shot = Command::new(&chromium)
            .args(cmd.get_args())
            .arg(format!("--screenshot={}", png.display()))
            .arg(url)
            .output()
            .expect("chromium screenshot");
        assert!(shot.status.success(), "screenshot failed");
    }
    let out = cmd
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}
