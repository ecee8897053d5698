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
//! What it does not do: verify the certificate (rustls did, against the CA), check that the
//! sender id in the envelope is the node the certificate names, or authorize clients.

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

    /// `Ok` when the caller of `request` presented a certificate with a name on the list.
    pub fn check<T>(&self, request: &tonic::Request<T>, rpc: &'static str) -> Result<(), Status> {
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
            return Ok(());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_without_port_or_brackets() {
        assert_eq!(host_of("10.0.0.1:7001"), "10.0.0.1");
        assert_eq!(host_of("node-1.ringkv:7001"), "node-1.ringkv");
        assert_eq!(host_of("[::1]:7001"), "::1");
    }
}
