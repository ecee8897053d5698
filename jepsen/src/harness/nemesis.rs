//! The nemesis: a seeded schedule of faults alternating with healthy periods, and the code that
//! applies and heals each fault for real (signals to processes, packet filters between
//! namespaces). Every fault actually applied is recorded with its start and end times.
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
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::PartitionOneWay => "partition-one-way",
        }
    }
}

/// Parses `--nemesis` (`none`, `all`, or a comma list).
pub fn parse_kinds(spec: &str) -> Result<Vec<FaultKind>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match part {
            "none" => {}
            "all" => out.extend([
                FaultKind::Kill,
                FaultKind::Pause,
                FaultKind::Partition,
                FaultKind::PartitionOneWay,
            ]),
            "kill" => out.push(FaultKind::Kill),
            "pause" => out.push(FaultKind::Pause),
            "partition" => out.push(FaultKind::Partition),
            "partition-one-way" => out.push(FaultKind::PartitionOneWay),
            other => {
                return Err(format!(
                    "unknown nemesis {other:?} (kill, pause, partition, partition-one-way, all, none)"
                ));
            }
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

/// Heals everything: restarts killed nodes, resumes paused ones, removes every cut.
pub fn heal_all(db: &mut Db, net: &mut Net) -> Result<(), HarnessError> {
    for id in 1..=db.len() {
        if db.is_paused(id) {
            db.resume(id)?;
        }
        if !db.is_running(id) {
            db.restart(id)?;
        }
    }
    net.heal()
}
