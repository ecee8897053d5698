//! The nemesis: a seeded schedule of faults alternating with healthy periods, and the code that
//! applies and heals each fault for real (signals to processes, packet filters between
//! namespaces, power cuts and full disks on the nodes' fault filesystems). Every fault actually
//! applied is recorded with its start and end times.
//!
//! The schedule is a pure function of (seed, kinds, duration), so the same seed repeats the
//! same faults in the same order; targets that depend on the cluster's state at the time
//! (the leader of a shard) are chosen when applied, from a seeded generator too.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::HarnessError;
use super::db::Db;
use super::net::Net;

/// Kinds of faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL a node; restart it at heal.
    Kill,
    /// SIGSTOP a node; SIGCONT at heal.
    Pause,
    /// Cut a node off from the others both ways (random node, or a shard's leader), or a
    /// majorities ring (two nodes cut from each other, a third still talking to both).
    Partition,
    /// Cut one direction only: a node stops hearing from the others but still talks to them.
    PartitionOneWay,
    /// Power loss of one node, a majority, or every node at once: SIGKILL, and every write not
    /// fsynced is lost; restarted at heal.
    Power,
    /// One node's (or every node's) disk is full: its capacity becomes about what it uses, so
    /// writes meet ENOSPC; capacity comes back at heal, and nodes that exited are restarted.
    DiskFull,
    /// One node's wall clock jumps an hour ahead or back (libfaketime; its monotonic clock
    /// is untouched, as on a real machine whose time is stepped); set right at heal.
    Clock,
}

/// Every kind, in `--nemesis all`.
pub const ALL: [FaultKind; 7] = [
    FaultKind::Kill,
    FaultKind::Pause,
    FaultKind::Partition,
    FaultKind::PartitionOneWay,
    FaultKind::Power,
    FaultKind::DiskFull,
    FaultKind::Clock,
];

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::PartitionOneWay => "partition-one-way",
            FaultKind::Power => "power",
            FaultKind::DiskFull => "disk-full",
            FaultKind::Clock => "clock",
        }
    }

    /// Whether this kind needs the nodes started under libfaketime.
    pub fn needs_faketime(self) -> bool {
        self == FaultKind::Clock
    }

    /// Whether this kind needs the nodes' data directories on fault filesystems.
    pub fn needs_faultfs(self) -> bool {
        matches!(self, FaultKind::Power | FaultKind::DiskFull)
    }
}

/// Parses `--nemesis` (`none`, `all`, or a comma list).
pub fn parse_kinds(spec: &str) -> Result<Vec<FaultKind>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match part {
            "none" => {}
            "all" => out.extend(ALL),
            other => match ALL.iter().find(|k| k.name() == other) {
                Some(k) => out.push(*k),
                None => {
                    return Err(format!(
                        "unknown nemesis {other:?} (kill, pause, partition, partition-one-way, power, disk-full, clock, all, none)"
                    ));
                }
            },
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// One planned fault: applied at `start_ms`, healed at `end_ms` (ms since the run began).
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub kind: FaultKind,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Alternates heal and fault periods over `duration_ms`; cycles through `kinds` in a seeded
/// order so every kind occurs when the run is long enough.
pub fn schedule(
    seed: u64,
    kinds: &[FaultKind],
    duration_ms: u64,
    fault_ms: u64,
    heal_ms: u64,
) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order = kinds.to_vec();
    order.shuffle(&mut rng);
    let mut plan = Vec::new();
    if order.is_empty() {
        return plan;
    }
    let mut t = heal_ms;
    let mut i = 0;
    while t + fault_ms <= duration_ms {
        let jitter = rng.random_range(0..=fault_ms / 4);
        plan.push(Planned {
            kind: order[i % order.len()],
            start_ms: t,
            end_ms: t + fault_ms - jitter,
        });
        i += 1;
        if i.is_multiple_of(order.len()) {
            order.shuffle(&mut rng);
        }
        t += fault_ms + heal_ms;
    }
    plan
}

/// A fault as applied.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub kind: FaultKind,
    /// What exactly: nodes and links.
    pub detail: String,
    pub nodes: Vec<usize>,
    pub start_ns: u64,
    pub end_ns: Option<u64>,
}

/// Applies one fault. `leaders` is the current shard → leader map when known.
pub fn apply(
    kind: FaultKind,
    rng: &mut StdRng,
    db: &mut Db,
    net: &mut Net,
    leaders: &[u64],
) -> Result<(String, Vec<usize>), HarnessError> {
    let n = db.len();
    let random_node = |rng: &mut StdRng| rng.random_range(1..=n);
    // Half the time aim at a shard's leader: the interesting victim.
    let victim = |rng: &mut StdRng| -> (usize, String) {
        if !leaders.is_empty() && rng.random_bool(0.5) {
            let shard = rng.random_range(0..leaders.len());
            let node = leaders[shard] as usize;
            if (1..=n).contains(&node) {
                return (node, format!("leader of shard {shard}"));
            }
        }
        let node = random_node(rng);
        (node, "random node".to_string())
    };
    match kind {
        FaultKind::Kill => {
            let (node, why) = victim(rng);
            db.kill(node)?;
            Ok((format!("SIGKILL node {node} ({why})"), vec![node]))
        }
        FaultKind::Pause => {
            let (node, why) = victim(rng);
            db.pause(node)?;
            Ok((format!("SIGSTOP node {node} ({why})"), vec![node]))
        }
        // A majorities ring ("bridge"): cut the two neighbours of one node from each other, so
        // every node sees a majority, but a different one.
        FaultKind::Partition if n >= 3 && rng.random_bool(1.0 / 3.0) => {
            let bridge = random_node(rng);
            let others: Vec<usize> = (1..=n).filter(|&x| x != bridge).collect();
            let (left, right) = others.split_at(others.len() / 2);
            net.partition(left, right)?;
            Ok((
                format!(
                    "majorities ring: {left:?} and {right:?} cut from each other, node {bridge} still sees both"
                ),
                others,
            ))
        }
        FaultKind::Partition => {
            let (node, why) = victim(rng);
            let others: Vec<usize> = (1..=n).filter(|&x| x != node).collect();
            net.partition(&[node], &others)?;
            Ok((
                format!("isolate node {node} ({why}) from {others:?} both ways"),
                vec![node],
            ))
        }
        FaultKind::Power => {
            let nodes: Vec<usize> = match rng.random_range(0..3) {
                0 => vec![victim(rng).0],
                1 => {
                    let mut all: Vec<usize> = (1..=n).collect();
                    all.shuffle(rng);
                    all.truncate(n / 2 + 1);
                    all.sort_unstable();
                    all
                }
                _ => (1..=n).collect(),
            };
            db.power_cut(&nodes)?;
            let what = match nodes.len() {
                1 => format!("node {}", nodes[0]),
                k if k == n => format!("every node {nodes:?}"),
                _ => format!("a majority {nodes:?}"),
            };
            Ok((format!("power cut: {what} (unsynced writes lost)"), nodes))
        }
        FaultKind::DiskFull => {
            let nodes: Vec<usize> = if rng.random_bool(1.0 / 3.0) {
                (1..=n).collect()
            } else {
                vec![victim(rng).0]
            };
            let mut caps = Vec::new();
            for &node in &nodes {
                caps.push(format!("node {node} at {} KiB", db.fill_disk(node)? / 1024));
            }
            Ok((format!("disk full: {}", caps.join(", ")), nodes))
        }
        FaultKind::Clock => {
            let (node, why) = victim(rng);
            let offset = if rng.random_bool(0.5) { "+1h" } else { "-1h" };
            db.set_clock_offset(node, offset)?;
            Ok((
                format!("wall clock of node {node} ({why}) set {offset}"),
                vec![node],
            ))
        }
        FaultKind::PartitionOneWay => {
            let (node, why) = victim(rng);
            for other in (1..=n).filter(|&x| x != node) {
                net.cut(other, node)?;
            }
            Ok((
                format!("node {node} ({why}) hears nobody but still sends (one-way cut)"),
                vec![node],
            ))
        }
    }
}

/// Heals everything: gives disks their space back, sets clocks right, restarts killed nodes and nodes that
/// exited on their own, resumes paused ones, removes every cut. Returns the nodes that had
/// exited on their own, with how.
pub fn heal_all(db: &mut Db, net: &mut Net) -> Result<Vec<(usize, String)>, HarnessError> {
    db.restore_disks();
    db.reset_clocks()?;
    let exited = db.reap_exited();
    for id in 1..=db.len() {
        if db.is_paused(id) {
            db.resume(id)?;
        }
        if !db.is_running(id) {
            db.restart(id)?;
        }
    }
    net.heal()?;
    Ok(exited)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_includes_the_storage_faults_and_names_round_trip() {
        let all = parse_kinds("all").expect("all");
        assert!(all.contains(&FaultKind::Power) && all.contains(&FaultKind::DiskFull));
        assert_eq!(all.len(), ALL.len());
        let some = parse_kinds("power, disk-full,power").expect("list");
        assert_eq!(some, [FaultKind::Power, FaultKind::DiskFull]);
        assert!(some.iter().all(|k| k.needs_faultfs()));
        assert!(!FaultKind::Kill.needs_faultfs());
        assert!(parse_kinds("powr").is_err());
        for k in ALL {
            assert_eq!(parse_kinds(k.name()).expect("name"), [k]);
        }
    }
}
