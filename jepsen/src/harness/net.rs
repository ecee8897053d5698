//! Real network faults: every node runs in its own network namespace, joined to the harness
//! (in the root namespace) by a veth pair on a bridge. Cutting a link installs a packet filter
//! DROP rule inside the receiving node's namespace, so nodes see real timeouts and connection
//! failures; healing flushes the rules. A rule matches the sending node's address, not a port,
//! so a cut covers every port of the receiver: the client port (forwarded requests, status) and
//! the peer port (Raft) alike. Clients in the root namespace always reach every node, as in
//! Jepsen, where partitions split the servers from each other.
//!
//! Names and the subnet derive from a per-run id, so concurrent runs do not collide; `Drop`
//! removes everything this run created, also after a failure.

use std::collections::BTreeSet;
use std::process::Command;

use super::HarnessError;

/// The namespaces and bridge of one run.
pub struct Net {
    run: u32,
    nodes: usize,
    bridge: String,
    /// Directed cuts in force: (from, to) node ids (1-based).
    cuts: BTreeSet<(usize, usize)>,
    created: bool,
}

fn sh(args: &[&str]) -> Result<(), HarnessError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| HarnessError::Net(format!("{}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(HarnessError::Net(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl Net {
    /// Creates `nodes` namespaces on a new bridge. Needs root, `ip` (iproute2) and `iptables`.
    pub fn create(run: u32, nodes: usize) -> Result<Net, HarnessError> {
        let net = Net {
            run,
            nodes,
            bridge: format!("rkb{run}"),
            cuts: BTreeSet::new(),
            created: true,
        };
        let br = net.bridge.clone();
        sh(&["ip", "link", "add", &br, "type", "bridge"])?;
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", net.gateway()),
            "dev",
            &br,
        ])?;
        sh(&["ip", "link", "set", &br, "up"])?;
        for id in 1..=nodes {
            let ns = net.ns(id);
            let (outer, inner) = (format!("rkv{run}o{id}"), format!("rkv{run}i{id}"));
            sh(&["ip", "netns", "add", &ns])?;
            sh(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            sh(&["ip", "link", "set", &inner, "netns", &ns])?;
            sh(&["ip", "link", "set", &outer, "master", &br, "up"])?;
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{}/24", net.ip(id)),
                "dev",
                &inner,
            ])?;
            sh(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", &inner, "up",
            ])?;
            sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
            sh(&["ip", "netns", "exec", &ns, "iptables", "-F", "INPUT"])?;
        }
        Ok(net)
    }

    /// The subnet 10.<a>.<b>.0/24 of this run.
    fn prefix(&self) -> String {
        format!("10.{}.{}", 100 + (self.run >> 8) % 100, self.run & 0xff)
    }

    fn gateway(&self) -> String {
        format!("{}.254", self.prefix())
    }

    /// Node `id`'s address.
    pub fn ip(&self, id: usize) -> String {
        format!("{}.{id}", self.prefix())
    }

    /// Node `id`'s namespace name.
    pub fn ns(&self, id: usize) -> String {
        format!("rkv{}n{id}", self.run)
    }

    /// Drops every packet from `from` to `to` (one direction).
    pub fn cut(&mut self, from: usize, to: usize) -> Result<(), HarnessError> {
        if from == to || !self.cuts.insert((from, to)) {
            return Ok(());
        }
        let ns = self.ns(to);
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "iptables",
            "-A",
            "INPUT",
            "-s",
            &self.ip(from),
            "-j",
            "DROP",
        ])
    }

    /// Cuts both directions between every node of `a` and every node of `b`.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) -> Result<(), HarnessError> {
        for &x in a {
            for &y in b {
                self.cut(x, y)?;
                self.cut(y, x)?;
            }
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<(), HarnessError> {
        for id in 1..=self.nodes {
            sh(&[
                "ip",
                "netns",
                "exec",
                &self.ns(id),
                "iptables",
                "-F",
                "INPUT",
            ])?;
        }
        self.cuts.clear();
        Ok(())
    }

    /// The directed cuts in force.
    pub fn cuts(&self) -> Vec<(usize, usize)> {
        self.cuts.iter().copied().collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if !self.created {
            return;
        }
        for id in 1..=self.nodes {
            let _ = sh(&["ip", "link", "del", &format!("rkv{}o{id}", self.run)]);
            let _ = sh(&["ip", "netns", "del", &self.ns(id)]);
        }
        let _ = sh(&["ip", "link", "del", &self.bridge]);
    }
}
