//! `ringkv status`: every reachable node's view, merged into one table (or JSON).
//!
//! For each shard the reported leader is the one claimed in the highest term any reachable
//! node knows of. Nodes named by the cluster but absent from `--endpoints` are asked too.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use ringkv_client::{Client, Error, StatusResponse};
use serde_json::json;

/// Every reachable node's status, keyed by address (`None`: no answer). Starts from the
/// endpoints and also asks every node the answers name.
pub async fn gather(client: &Client) -> BTreeMap<String, Option<StatusResponse>> {
    let mut views: BTreeMap<String, Option<StatusResponse>> = BTreeMap::new();
    let mut to_ask: BTreeSet<String> = client.endpoints().iter().cloned().collect();
    while let Some(ep) = to_ask.pop_first() {
        if views.contains_key(&ep) {
            continue;
        }
        let view = client.status_of(&ep).await.ok();
        if let Some(v) = &view {
            for n in &v.nodes {
                if !views.contains_key(&n.addr) {
                    to_ask.insert(n.addr.clone());
                }
            }
        }
        views.insert(ep, view);
    }
    views
}

/// When no node answered: the refusal (exit 4) if the first endpoint refused this client's
/// credentials, else `None`.
pub async fn refused(client: &Client) -> Option<ExitCode> {
    let first = client.endpoints().first()?;
    match client.status_of(first).await {
        Err(e @ (Error::Unauthenticated(_) | Error::PermissionDenied(_))) => {
            Some(crate::exit_for(&e))
        }
        _ => None,
    }
}

pub async fn run(client: &Client, as_json: bool) -> ExitCode {
    let views = gather(client).await;
    let answers: Vec<&StatusResponse> = views.values().flatten().collect();
    if answers.is_empty() {
        if let Some(code) = refused(client).await {
            return code;
        }
        eprintln!(
            "ringkv: no node answered ({})",
            client.endpoints().join(",")
        );
        return ExitCode::from(3);
    }
    let mut nodes: BTreeMap<u64, String> = BTreeMap::new();
    for a in &answers {
        for n in &a.nodes {
            nodes.entry(n.id).or_insert_with(|| n.addr.clone());
        }
    }
    let by_node: BTreeMap<u64, &StatusResponse> = answers.iter().map(|a| (a.node_id, *a)).collect();
    let shard_count = answers.iter().map(|a| a.shard_count).max().unwrap_or(0);
    let mut shards = Vec::new();
    let mut leads: BTreeMap<u64, u32> = BTreeMap::new();
    for s in 0..shard_count {
        let mut best: Option<(u64, Option<u64>)> = None;
        let mut replicas = Vec::new();
        for (id, a) in &by_node {
            if let Some(st) = a.shards.iter().find(|x| x.shard == s) {
                if best.is_none_or(|(t, _)| st.term > t)
                    || best.is_some_and(|(t, l)| st.term == t && l.is_none())
                {
                    best = Some((st.term, st.leader));
                }
                replicas.push(json!({
                    "node": id, "role": st.role, "term": st.term,
                    "last_log_index": st.last_log_index, "committed_index": st.committed_index,
                    "applied_index": st.applied_index,
                }));
            }
        }
        let (term, leader) = best.unwrap_or((0, None));
        if let Some(l) = leader {
            *leads.entry(l).or_default() += 1;
        }
        shards.push(json!({ "shard": s, "leader": leader, "term": term, "replicas": replicas }));
    }
    let node_rows: Vec<_> = nodes
        .iter()
        .map(|(id, addr)| {
            let reachable = by_node.contains_key(id);
            json!({ "id": id, "addr": addr, "reachable": reachable, "leader_of": leads.get(id).copied().unwrap_or(0) })
        })
        .collect();
    let cluster_id = answers
        .first()
        .map(|a| a.cluster_id.clone())
        .unwrap_or_default();
    // Nodes that have not learned the UUID yet report none; any that do report the same one.
    let cluster_uuid = answers
        .iter()
        .map(|a| a.cluster_uuid.clone())
        .find(|u| !u.is_empty())
        .unwrap_or_default();
    if as_json {
        let out = json!({ "cluster_id": cluster_id, "cluster_uuid": cluster_uuid, "nodes": node_rows, "shards": shards });
        println!("{out}");
    } else {
        if cluster_uuid.is_empty() {
            println!("cluster {cluster_id}");
        } else {
            println!("cluster {cluster_id} (uuid {cluster_uuid})");
        }
        println!("{:<6} {:<22} {:<10} LEADS", "NODE", "ADDRESS", "REACHABLE");
        for n in &node_rows {
            println!(
                "{:<6} {:<22} {:<10} {}",
                n["id"].to_string(),
                n["addr"].as_str().unwrap_or(""),
                n["reachable"].to_string(),
                n["leader_of"]
            );
        }
        println!();
        println!(
            "{:<6} {:<7} {:<6} REPLICAS (node:role applied/last, lag behind the newest log)",
            "SHARD", "LEADER", "TERM"
        );
        // Colour only on a terminal, and never when NO_COLOR is set (no-color.org).
        let colour = std::io::IsTerminal::is_terminal(&std::io::stdout())
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let paint = |text: String, code: &str| {
            if colour {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text
            }
        };
        for s in &shards {
            let reps: Vec<String> = s["replicas"]
                .as_array()
                .map(|a| {
                    let newest = a
                        .iter()
                        .filter_map(|r| r["last_log_index"].as_u64())
                        .max()
                        .unwrap_or(0);
                    a.iter()
                        .map(|r| {
                            let role = r["role"].as_str().unwrap_or("?");
                            let lag =
                                newest.saturating_sub(r["applied_index"].as_u64().unwrap_or(0));
                            let text = format!(
                                "{}:{} {}/{} lag {lag}",
                                r["node"], role, r["applied_index"], r["last_log_index"]
                            );
                            match role {
                                "leader" => paint(text, "32"),
                                "follower" if lag > 100 => paint(text, "33"),
                                "follower" => text,
                                _ => paint(text, "31"),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let leader = if s["leader"].is_null() {
                paint("-".to_string(), "31")
            } else {
                s["leader"].to_string()
            };
            println!(
                "{:<6} {:<7} {:<6} {}",
                s["shard"].to_string(),
                leader,
                s["term"].to_string(),
                reps.join("  ")
            );
        }
    }
    ExitCode::SUCCESS
}
