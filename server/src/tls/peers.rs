//! Which certificates may speak Raft to this node: the peer check of every Raft RPC.
//!
//! A caller on the peer port has already presented a certificate the cluster CA signed (the
//! listener requires one). It is served only when one of that certificate's names (SAN DNS,
//! SAN IP, CN; see `tls::names`) is on the peer list:
//! - with `--peer-allowed-names a,b,c`: exactly those names;
//! - otherwise the hosts of every `--peers` entry (client and peer addresses), plus the hosts
//!   of every member record the shards know (nodes added later with `ringkv member add`).
//!
//! Invariants: no certificate (plaintext or TLS without one) is refused as unauthenticated, a
//! certificate with no listed name as permission denied, each with its kind in the status
//! metadata ([`ringkv_proto::meta::KIND_PEER_UNAUTHENTICATED`],
//! [`ringkv_proto::meta::KIND_PEER_NOT_ALLOWED`]); a refusal never reaches openraft. Refusals
//! are logged as warnings (the repeat limiter caps them per callsite).
//!
//! The sender id of every message (`from`) must be the caller's own
//! ([`PeerCheck::check_sender`]), so one node's certificate cannot speak, vote or send a
//! snapshot as another node:
//! - a certificate naming `node-N` (as `ringkv-server certs` issues them) speaks only as N;
//! - otherwise, when the shards' membership records the sender, one of the certificate's
//!   names must be a host of that record (with `--peer-allowed-names` this rule is not applied:
//!   names there are not tied to members).
//!
//! What it does not do: verify the certificate (rustls did, against the CA), bind a sender
//! the membership does not record yet and whose certificate names no `node-N` (the peer list
//! alone admits it), or authorize clients.

use std::collections::BTreeSet;

use ringkv_proto::meta;
use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::shard::Shards;
use crate::tls::names::caller_cert_names;
use crate::typ::Node;

/// The host of `HOST:PORT` (brackets of an IPv6 literal removed).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The peer list of one node.
pub struct PeerCheck {
    /// `--peer-allowed-names`, or the hosts of `--peers`.
    fixed: BTreeSet<String>,
    /// Whether `fixed` is an explicit list (then member records do not add names).
    explicit: bool,
    shards: Shards,
}

fn hosts_of(node: &Node) -> [String; 2] {
    [
        host_of(&node.addr).to_string(),
        host_of(&node.peer_addr()).to_string(),
    ]
}

fn refusal(code: tonic::Code, kind: &'static str, message: String) -> Status {
    let mut s = Status::new(code, message);
    s.metadata_mut()
        .insert(meta::ERROR_KIND, MetadataValue::from_static(kind));
    s
}

impl PeerCheck {
    /// The peer list from `--peer-allowed-names` (when given) or the `--peers` members.
    pub fn new<'a>(
        allowed: Option<&[String]>,
        peers: impl IntoIterator<Item = &'a Node>,
        shards: Shards,
    ) -> PeerCheck {
        let (fixed, explicit) = match allowed {
            Some(names) => (names.iter().cloned().collect(), true),
            None => (peers.into_iter().flat_map(hosts_of).collect(), false),
        };
        PeerCheck {
            fixed,
            explicit,
            shards,
        }
    }

    /// Whether any of a verified certificate's `names` is on the peer list now (the caller is
    /// a node of this cluster).
    pub fn allows_any(&self, names: &[String]) -> bool {
        names.iter().any(|n| self.allows(n))
    }

    /// Whether `name` is on the peer list now.
    fn allows(&self, name: &str) -> bool {
        if self.fixed.contains(name) {
            return true;
        }
        if self.explicit {
            return false;
        }
        self.shards.iter().any(|shard| {
            let m = shard.metrics().membership_config;
            m.membership()
                .nodes()
                .any(|(_, n)| hosts_of(n).iter().any(|h| h == name))
        })
    }

    /// `Ok` when the certificate `names` may send as node `from` (see the module note).
    pub fn check_sender(
        &self,
        names: &[String],
        from: u64,
        rpc: &'static str,
    ) -> Result<(), Status> {
        // Looked up only for a certificate without `node-N` names: no membership is read on
        // the Raft path for the certificates `ringkv-server certs` issues.
        let record = || match self.explicit {
            true => None,
            false => self.shards.iter().find_map(|shard| {
                let m = shard.metrics().membership_config;
                m.membership()
                    .nodes()
                    .find(|(id, _)| **id == from)
                    .map(|(_, n)| hosts_of(n))
            }),
        };
        match sender_matches(names, from, record) {
            Ok(()) => Ok(()),
            Err(why) => {
                tracing::warn!(rpc, from, names = ?names, "Raft call refused: {why}");
                Err(refusal(
                    tonic::Code::PermissionDenied,
                    meta::KIND_PEER_NOT_ALLOWED,
                    format!("a peer speaks only as itself: {why}"),
                ))
            }
        }
    }

    /// `Ok` with the certificate's names when the caller of `request` presented a certificate
    /// with a name on the list.
    pub fn check<T>(
        &self,
        request: &tonic::Request<T>,
        rpc: &'static str,
    ) -> Result<Vec<String>, Status> {
        let remote = request.remote_addr();
        let names = match caller_cert_names(request) {
            Ok(Some(names)) => names,
            Ok(None) => {
                tracing::warn!(rpc, remote = ?remote, "Raft call without a client certificate refused");
                return Err(refusal(
                    tonic::Code::Unauthenticated,
                    meta::KIND_PEER_UNAUTHENTICATED,
                    "Raft calls need a peer certificate from the cluster CA".into(),
                ));
            }
            Err(e) => {
                tracing::warn!(rpc, remote = ?remote, error = %e, "Raft call with an unreadable certificate refused");
                return Err(refusal(
                    tonic::Code::Unauthenticated,
                    meta::KIND_PEER_UNAUTHENTICATED,
                    e.to_string(),
                ));
            }
        };
        if names.iter().any(|n| self.allows(n)) {
            return Ok(names);
        }
        tracing::warn!(rpc, remote = ?remote, names = ?names,
            "Raft call refused: no name of the peer's certificate is on the peer list");
        Err(refusal(
            tonic::Code::PermissionDenied,
            meta::KIND_PEER_NOT_ALLOWED,
            format!(
                "certificate names {names:?} are not on this node's peer list (--peers hosts or --peer-allowed-names)"
            ),
        ))
    }
}

/// The node ids a certificate names as `node-N`.
fn node_ids(names: &[String]) -> Vec<u64> {
    names
        .iter()
        .filter_map(|n| n.strip_prefix("node-")?.parse().ok())
        .collect()
}

/// Whether a certificate with `names` may send as node `from`, whose member record has the
/// hosts `record()` (when the membership has one; asked only when the certificate names no
/// `node-N`); the reason when not.
fn sender_matches(
    names: &[String],
    from: u64,
    record: impl FnOnce() -> Option<[String; 2]>,
) -> Result<(), String> {
    let ids = node_ids(names);
    if !ids.is_empty() {
        return match ids.contains(&from) {
            true => Ok(()),
            false => Err(format!(
                "the certificate is node {ids:?}'s, the message says it is from node {from}"
            )),
        };
    }
    match record() {
        Some(hosts) if !names.iter().any(|n| hosts.contains(n)) => Err(format!(
            "the message says it is from node {from}, whose hosts {hosts:?} are none of the \
             certificate's names {names:?}"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_node_certificate_speaks_only_as_its_node() {
        let node2 = names(&["node-2", "localhost", "127.0.0.1"]);
        let unread = || -> Option<[String; 2]> { panic!("no membership read for node-N") };
        assert!(sender_matches(&node2, 2, unread).is_ok());
        let err = sender_matches(&node2, 3, unread).expect_err("node 2 as node 3");
        assert!(err.contains("node [2]") && err.contains("node 3"), "{err}");
        // Even a sender the membership does not record yet.
        assert!(sender_matches(&node2, 7, unread).is_err());
        assert!(sender_matches(&names(&["node-x", "node-"]), 1, || None).is_ok());
    }

    #[test]
    fn other_certificates_must_name_a_host_of_the_senders_record() {
        let cert = names(&["db-1.example"]);
        let record = |a: &str, b: &str| {
            let hosts = [a.to_string(), b.to_string()];
            move || Some(hosts)
        };
        assert!(sender_matches(&cert, 1, record("db-1.example", "10.0.0.1")).is_ok());
        let err = sender_matches(&cert, 2, record("db-2.example", "10.0.0.2"))
            .expect_err("db-1 as node 2");
        assert!(err.contains("db-2.example"), "{err}");
        assert!(
            sender_matches(&cert, 9, || None).is_ok(),
            "unrecorded: the list decides"
        );
    }

    #[test]
    fn hosts_come_without_port_or_brackets() {
        assert_eq!(host_of("10.0.0.1:7001"), "10.0.0.1");
        assert_eq!(host_of("node-1.ringkv:7001"), "node-1.ringkv");
        assert_eq!(host_of("[::1]:7001"), "::1");
    }
}
