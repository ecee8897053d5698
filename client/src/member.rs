//! `ringkv member add|remove|list`: change and show which nodes replicate every shard.
//!
//! `add` and `remove` drive each shard's leader one idempotent step at a time (see the
//! server's `membership` module) until every shard reports the change done, printing each new
//! state of each shard; a refusal (reused id, address in use, last voter) stops at once with
//! exit 2; shards still pending at the deadline make it exit 3, and running the same command
//! again continues where it stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ringkv_client::{Client, Error, MemberChange, StatusResponse};
use serde_json::json;

use crate::status::gather;

/// Pause between rounds over the pending shards.
const ROUND_PAUSE: Duration = Duration::from_millis(500);

#[derive(clap::Subcommand, Debug)]
pub enum MemberCommand {
    /// Add node ID (started with `--join`) at ADDR to every shard: learner, catch up, voter.
    /// ADDR is its client address (`--listen`).
    Add {
        id: u64,
        addr: String,
        /// Where the node serves Raft (its `--peer-listen`), HOST:PORT. Default: ADDR's port
        /// plus 1000.
        #[arg(long)]
        peer_addr: Option<String>,
        /// Give up (exit 3) if the node is not a voter of every shard by then.
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
    },
    /// Remove node ID from every shard, moving its leaderships away first. The id is retired.
    Remove {
        id: u64,
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
    },
    /// Show voters and learners of every shard, as its leader sees them.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(client: &Client, cmd: MemberCommand) -> ExitCode {
    match cmd {
        MemberCommand::Add {
            id,
            addr,
            peer_addr,
            wait_secs,
        } => {
            let add = MemberChange::Add {
                addr,
                peer_addr: peer_addr.unwrap_or_default(),
            };
            change(client, id, &add, wait_secs).await
        }
        MemberCommand::Remove { id, wait_secs } => {
            change(client, id, &MemberChange::Remove, wait_secs).await
        }
        MemberCommand::List { json } => list(client, json).await,
    }
}

/// The shard count, from any node that answers.
async fn shard_count(client: &Client) -> Result<u32, ExitCode> {
    let views = gather(client).await;
    match views.values().flatten().map(|v| v.shard_count).max() {
        Some(n) if n > 0 => Ok(n),
        _ => {
            if let Some(code) = crate::status::refused(client).await {
                return Err(code);
            }
            eprintln!(
                "ringkv: no node answered ({})",
                client.endpoints().join(",")
            );
            Err(ExitCode::from(3))
        }
    }
}

async fn change(client: &Client, id: u64, what: &MemberChange, wait_secs: u64) -> ExitCode {
    let shards = match shard_count(client).await {
        Ok(n) => n,
        Err(code) => return code,
    };
    let verb = match what {
        MemberChange::Add { .. } => "add",
        MemberChange::Remove => "remove",
    };
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    let mut pending: BTreeSet<u32> = (0..shards).collect();
    let mut said: BTreeMap<u32, String> = BTreeMap::new();
    while !pending.is_empty() {
        for shard in pending.clone() {
            let line = match client.member_step(shard, id, what).await {
                Ok(r) => {
                    if r.done {
                        pending.remove(&shard);
                    }
                    r.detail
                }
                Err(Error::Invalid(m)) => {
                    eprintln!("ringkv: cannot {verb} node {id}: shard {shard}: {m}");
                    return ExitCode::from(2);
                }
                Err(e @ (Error::Unauthenticated(_) | Error::PermissionDenied(_))) => {
                    return crate::exit_for(&e);
                }
                Err(e) => format!("waiting: {e}"),
            };
            if said.get(&shard) != Some(&line) {
                println!("shard {shard}: {line}");
                said.insert(shard, line);
            }
        }
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "ringkv: node {id}: {verb} not complete after {wait_secs} s on shards {:?}; run the same command again to continue",
                pending
            );
            return ExitCode::from(3);
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    }
    match what {
        MemberChange::Add { addr, .. } => {
            println!("node {id} at {addr} is a voter of all {shards} shards")
        }
        MemberChange::Remove => {
            println!("node {id} is removed from all {shards} shards; its id is retired")
        }
    }
    ExitCode::SUCCESS
}

/// For each shard, the view of its leader (highest term), else of any replica.
fn authoritative<'a>(
    answers: &[&'a StatusResponse],
    shard: u32,
) -> Option<(u64, &'a ringkv_proto::pb::ShardStatus)> {
    answers
        .iter()
        .filter_map(|a| {
            a.shards
                .iter()
                .find(|s| s.shard == shard)
                .map(|s| (a.node_id, s))
        })
        .max_by_key(|(_, s)| (s.role == "leader", s.term, s.applied_index))
}

async fn list(client: &Client, as_json: bool) -> ExitCode {
    let views = gather(client).await;
    let answers: Vec<&StatusResponse> = views.values().flatten().collect();
    let Some(shards) = answers.iter().map(|a| a.shard_count).max() else {
        if let Some(code) = crate::status::refused(client).await {
            return code;
        }
        eprintln!(
            "ringkv: no node answered ({})",
            client.endpoints().join(",")
        );
        return ExitCode::from(3);
    };
    let mut nodes: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let mut rows = Vec::new();
    for shard in 0..shards {
        let Some((from, s)) = authoritative(&answers, shard) else {
            continue;
        };
        rows.push((shard, from, s));
    }
    for a in &answers {
        for n in &a.nodes {
            nodes
                .entry(n.id)
                .or_insert_with(|| (n.addr.clone(), n.peer_addr.clone()));
        }
    }
    if as_json {
        let out = json!({
            "nodes": nodes.iter().map(|(id, (addr, peer_addr))| {
                json!({"id": id, "addr": addr, "peer_addr": peer_addr})
            }).collect::<Vec<_>>(),
            "shards": rows.iter().map(|(shard, from, s)| json!({
                "shard": shard,
                "leader": s.leader,
                "term": s.term,
                "voters": s.voters,
                "learners": s.learners,
                "seen_by": from,
            })).collect::<Vec<_>>(),
        });
        println!("{out}");
        return ExitCode::SUCCESS;
    }
    for (id, (addr, peer_addr)) in &nodes {
        if peer_addr.is_empty() {
            println!("node {id}\t{addr}");
        } else {
            println!("node {id}\t{addr}\tpeer {peer_addr}");
        }
    }
    println!(
        "{:<6} {:<7} {:<6} {:<16} LEARNERS",
        "SHARD", "LEADER", "TERM", "VOTERS"
    );
    let ids = |v: &[u64]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        }
    };
    for (shard, _, s) in &rows {
        println!(
            "{:<6} {:<7} {:<6} {:<16} {}",
            shard,
            s.leader
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into()),
            s.term,
            ids(&s.voters),
            ids(&s.learners)
        );
    }
    ExitCode::SUCCESS
}
