//! `ringkv-server dev`: a local cluster for development, as child processes of this binary on
//! 127.0.0.1 (client ports `base_port..`, peer ports `peer_base_port..`, admin ports
//! `admin_base_port..`).
//!
//! It waits until every shard has a leader that every node agrees on, prints the endpoints
//! and example commands, and on Ctrl-C/SIGTERM (or when a child dies) stops every child with
//! SIGTERM, then SIGKILL after a grace period. Each child's log goes to `DATA_DIR/node-N.log`.
//!
//! With `--tls`, every port speaks TLS only: a CA, one certificate per node and the admin
//! client certificate are generated into `DATA_DIR/certs` on the first run (kept and reused
//! after, so the printed CLI flags stay valid), and the example commands carry the flags.
//! It never overwrites certificate files: a set that does not fit `--nodes` is an error that
//! says which files are missing.

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ringkv_proto::pb::StatusRequest;
use ringkv_proto::pb::cluster_client::ClusterClient;

#[derive(clap::Args, Debug, Clone)]
pub struct DevArgs {
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    #[arg(long, default_value_t = 8)]
    pub shards: u32,
    /// Data of all nodes (node-1/, node-2/, ...); reused across runs (delete it to start fresh).
    #[arg(long, default_value = "ringkv-dev-data")]
    pub data_dir: PathBuf,
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    #[arg(long, default_value_t = 8001)]
    pub admin_base_port: u16,
    /// First peer (Raft) port; node i listens on `peer_base_port + i - 1`. Explicit because
    /// the default peer port (client port + 1000) is the admin port here.
    #[arg(long, default_value_t = 7101)]
    pub peer_base_port: u16,
    /// How long to wait for every shard to elect a leader.
    #[arg(long, default_value_t = 30)]
    pub ready_timeout_secs: u64,
    /// TLS on every port, with a CA and certificates generated into DATA_DIR/certs (kept
    /// across runs); prints the CLI flags that use them.
    #[arg(long)]
    pub tls: bool,
}

/// The certificates of a `--tls` dev cluster of `nodes` nodes in `dir`: reused when every
/// file is there, generated when none is, an error otherwise (never overwritten).
fn dev_certs(dir: &std::path::Path, nodes: u64) -> anyhow::Result<()> {
    let mut wanted = vec![
        "ca.pem".to_string(),
        "client.pem".into(),
        "client.key".into(),
    ];
    for i in 1..=nodes {
        wanted.push(format!("node-{i}.pem"));
        wanted.push(format!("node-{i}.key"));
    }
    let missing: Vec<&String> = wanted.iter().filter(|f| !dir.join(f).exists()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if missing.len() < wanted.len() {
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        anyhow::bail!(
            "{} holds certificates for another cluster size (missing: {}); delete the directory \
             to generate a new set",
            dir.display(),
            names.join(", ")
        );
    }
    let n = u32::try_from(nodes).context("--nodes")?;
    let set = crate::tls::certs::generate(n, &[])?;
    crate::tls::certs::write(dir, &set, false)?;
    Ok(())
}

const STOP_GRACE: Duration = Duration::from_secs(10);

struct Children(Vec<(u64, Child)>);

impl Children {
    fn stop(&mut self) {
        for (_, c) in &self.0 {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        for (id, c) in &mut self.0 {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!("node {id} did not stop within {STOP_GRACE:?}; killing it");
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

pub async fn run(
    args: DevArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 9 {
        anyhow::bail!("--nodes must be 1..=9");
    }
    fs::create_dir_all(&args.data_dir)?;
    let exe = std::env::current_exe().context("locating this binary")?;
    let addr = |i: u64| format!("127.0.0.1:{}", args.base_port as u64 + i - 1);
    let peer_addr = |i: u64| format!("127.0.0.1:{}", args.peer_base_port as u64 + i - 1);
    let peers: Vec<String> = (1..=args.nodes)
        .map(|i| format!("{i}={}@{}", addr(i), peer_addr(i)))
        .collect();
    let peers = peers.join(",");
    let certs = args.data_dir.join("certs");
    let tls = if args.tls {
        dev_certs(&certs, args.nodes)?;
        // The dev cluster's own status checks go in as the admin client.
        let files = crate::tls::config::TlsFiles {
            cert: certs.join("client.pem"),
            key: certs.join("client.key"),
            ca: certs.join("ca.pem"),
        };
        Some(crate::tls::config::Tls::load(&files)?)
    } else {
        None
    };
    let mut children = Children(Vec::new());
    for i in 1..=args.nodes {
        let log_path = args.data_dir.join(format!("node-{i}.log"));
        let log = File::options().create(true).append(true).open(&log_path)?;
        let mut cmd = Command::new(&exe);
        if args.tls {
            cmd.arg("--tls-cert")
                .arg(certs.join(format!("node-{i}.pem")))
                .arg("--tls-key")
                .arg(certs.join(format!("node-{i}.key")))
                .arg("--tls-ca")
                .arg(certs.join("ca.pem"));
        }
        let child = cmd
            .arg("--id")
            .arg(i.to_string())
            .arg("--listen")
            .arg(addr(i))
            .arg("--peer-listen")
            .arg(peer_addr(i))
            .arg("--peers")
            .arg(&peers)
            .arg("--data-dir")
            .arg(args.data_dir.join(format!("node-{i}")))
            .arg("--shards")
            .arg(args.shards.to_string())
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{}", args.admin_base_port as u64 + i - 1))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {i}"))?;
        children.0.push((i, child));
    }
    let endpoints: Vec<String> = (1..=args.nodes).map(addr).collect();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.ready_timeout_secs);
    loop {
        if all_shards_led(tls.as_ref(), &endpoints, args.shards).await {
            break;
        }
        for (id, c) in &mut children.0 {
            if let Ok(Some(status)) = c.try_wait() {
                anyhow::bail!(
                    "node {id} exited with {status}; see {}/node-{id}.log",
                    args.data_dir.display()
                );
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "not every shard had a leader within {}s; see the logs in {}",
                args.ready_timeout_secs,
                args.data_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let eps = endpoints.join(",");
    let tls_flags = if args.tls {
        format!(
            " --cacert {0}/ca.pem --cert {0}/client.pem --key {0}/client.key",
            certs.display()
        )
    } else {
        String::new()
    };
    println!(
        "RingKV dev cluster ready in {:.1}s: {} nodes, {} shards",
        started.elapsed().as_secs_f64(),
        args.nodes,
        args.shards
    );
    for (i, ep) in endpoints.iter().enumerate() {
        println!(
            "  node {}: {ep}  (log: {}/node-{}.log)",
            i + 1,
            args.data_dir.display(),
            i + 1
        );
    }
    if args.tls {
        println!(
            "TLS on every port; certificates in {} (client flags:{tls_flags})",
            certs.display()
        );
    }
    println!("Try:");
    println!("  cargo run --release --bin ringkv -- --endpoints {eps}{tls_flags} put hello world");
    println!("  cargo run --release --bin ringkv -- --endpoints {eps}{tls_flags} get hello");
    println!("  cargo run --release --bin ringkv -- --endpoints {eps}{tls_flags} status");
    println!(
        "Ctrl-C stops the cluster (data stays in {}).",
        args.data_dir.display()
    );

    let watch = async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for (id, c) in &mut children.0 {
                if let Ok(Some(status)) = c.try_wait() {
                    return (*id, status);
                }
            }
        }
    };
    tokio::select! {
        _ = shutdown => println!("stopping the cluster"),
        (id, status) = watch => eprintln!("node {id} exited with {status}; stopping the cluster"),
    }
    tokio::task::block_in_place(|| children.stop());
    Ok(())
}

/// Whether every node answers and reports the same leader for every shard.
async fn all_shards_led(
    tls: Option<&crate::tls::config::Tls>,
    endpoints: &[String],
    shards: u32,
) -> bool {
    let mut leaders: Option<Vec<Option<u64>>> = None;
    for ep in endpoints {
        let Ok(endpoint) = crate::tls::config::endpoint(tls, ep) else {
            return false;
        };
        let Ok(channel) = endpoint
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
        else {
            return false;
        };
        let mut c = ClusterClient::new(channel);
        let mut request = tonic::Request::new(StatusRequest {});
        request.set_timeout(Duration::from_secs(2));
        let Ok(resp) = c.status(request).await else {
            return false;
        };
        let s = resp.into_inner();
        if s.shards.len() != shards as usize {
            return false;
        }
        let view: Vec<Option<u64>> = s.shards.iter().map(|sh| sh.leader).collect();
        if view.iter().any(Option::is_none) {
            return false;
        }
        match &leaders {
            None => leaders = Some(view),
            Some(l) if *l != view => return false,
            Some(_) => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certs_are_made_once_reused_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        dev_certs(&certs, 2).expect("generated");
        let ca = fs::read(certs.join("ca.pem")).expect("ca");
        dev_certs(&certs, 2).expect("reused");
        assert_eq!(fs::read(certs.join("ca.pem")).expect("ca"), ca);
        // A set for 2 nodes does not fit 3: an error naming what is missing, nothing written.
        let e = dev_certs(&certs, 3).expect_err("another size");
        assert!(e.to_string().contains("node-3.pem"), "{e}");
        assert!(!certs.join("node-3.pem").exists());
        assert_eq!(fs::read(certs.join("ca.pem")).expect("ca"), ca);
    }
}
