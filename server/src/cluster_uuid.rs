//! The cluster's UUID: random, chosen once per bootstrap (and once per restore), kept in every
//! member's identity file (`ringkv.json`) and carried in every Raft envelope.
//!
//! The cluster *id* (`--cluster-id`) is a name an operator picks, often the default `ringkv`,
//! and a restored cluster keeps it. The UUID tells two clusters of the same name apart: a node
//! refuses Raft messages stamped with another cluster's UUID, so a restored copy, or a test
//! cluster pointed at production addresses, can never append to, vote in or install a
//! snapshot on the other.
//!
//! How members learn it:
//! - the node that bootstraps a new cluster (the first of `--peers`) chooses it just before it
//!   initializes the shards, and writes it durably first;
//! - `restore` of the first node of `--peers` chooses a new one (or takes `--cluster-uuid`);
//! - every other node starts without one and adopts the UUID of the first envelope it
//!   receives that carries one, writing it durably before it acts on that message. Its peers
//!   have already proven they belong (the cluster id matches, and with TLS their certificate
//!   is on the peer list), so first contact is the cluster's own.
//!
//! Invariants: once known, a node's UUID never changes (adoption happens at most once, under a
//! lock, persisted before it is visible); an envelope with another non-empty UUID is refused;
//! an envelope without one (a peer that has not learned it yet, or an older version) is not
//! checked, as an empty client cluster id is not. A cluster bootstrapped by a version without
//! UUIDs keeps running without one.
//!
//! What it does not do: authenticate anyone (certificates do), or check client requests
//! (clients name the cluster by id).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::identity;

/// What an envelope's UUID means to this node.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It matches ours, or one side does not know a UUID yet (not checked).
    Accept,
    /// This node had none and has now adopted (and persisted) the sender's.
    Adopted,
}

/// Why an envelope's UUID was refused, or a UUID could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum UuidError {
    /// Another cluster's message. Not retryable: the sender belongs elsewhere.
    #[error("message from cluster UUID {theirs}: this node belongs to cluster UUID {ours}")]
    Foreign { theirs: String, ours: String },
    /// The text is not a UUID. Not retryable.
    #[error("{0:?} is not a cluster UUID")]
    Malformed(String),
    /// Writing the identity file failed; the UUID was not adopted. Retryable (the next
    /// message tries again) once the disk is writable.
    #[error("recording the cluster UUID failed: {0}")]
    Persist(String),
}

/// A new random UUID in its usual text form.
pub fn generate() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// `text` in canonical form if it is a UUID.
pub fn parse(text: &str) -> Result<String, UuidError> {
    uuid::Uuid::parse_str(text)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| UuidError::Malformed(text.to_string()))
}

/// This node's view of the cluster UUID, shared by the transport (both sides) and `Status`.
pub struct ClusterUuid {
    known: OnceLock<String>,
    /// Serializes adoption and its write of the identity file.
    adopting: Mutex<()>,
    data_dir: PathBuf,
}

impl ClusterUuid {
    /// The UUID as read from the identity file (empty: not known yet).
    pub fn new(data_dir: &Path, recorded: &str) -> ClusterUuid {
        let known = OnceLock::new();
        if !recorded.is_empty() {
            let _ = known.set(recorded.to_string());
        }
        ClusterUuid {
            known,
            adopting: Mutex::new(()),
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// The UUID to stamp on outgoing envelopes; empty while not known.
    pub fn get(&self) -> &str {
        self.known.get().map_or("", String::as_str)
    }

    /// Records `uuid` (this node bootstraps the cluster, or adopts a peer's) durably, then
    /// makes it visible. A node that already has one keeps it: the result says whether
    /// `uuid` is (now) this node's.
    pub fn record(&self, uuid: &str) -> Result<Verdict, UuidError> {
        let uuid = parse(uuid)?;
        let _guard = self
            .adopting
            .lock()
            .map_err(|_| UuidError::Persist("lock poisoned".into()))?;
        if let Some(ours) = self.known.get() {
            return if *ours == uuid {
                Ok(Verdict::Accept)
            } else {
                Err(UuidError::Foreign {
                    theirs: uuid,
                    ours: ours.clone(),
                })
            };
        }
        let mut id = identity::read(&self.data_dir)
            .map_err(|e| UuidError::Persist(e.to_string()))?
            .ok_or_else(|| UuidError::Persist("the identity file is missing".into()))?;
        id.cluster_uuid = uuid.clone();
        identity::write(&self.data_dir, &id).map_err(|e| UuidError::Persist(e.to_string()))?;
        let _ = self.known.set(uuid.clone());
        tracing::info!(cluster_uuid = %uuid, "recorded the cluster UUID");
        Ok(Verdict::Adopted)
    }

    /// Checks an incoming envelope's UUID, adopting it when this node has none yet.
    pub fn check(&self, theirs: &str) -> Result<Verdict, UuidError> {
        if theirs.is_empty() {
            return Ok(Verdict::Accept);
        }
        match self.known.get() {
            Some(ours) if ours == theirs => Ok(Verdict::Accept),
            Some(ours) => Err(UuidError::Foreign {
                theirs: theirs.to_string(),
                ours: ours.clone(),
            }),
            None => self.record(theirs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{FORMAT_VERSION, Identity};

    fn dir_with_identity(uuid: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        identity::write(
            dir.path(),
            &Identity {
                format_version: FORMAT_VERSION,
                cluster_id: "ringkv".into(),
                node_id: 2,
                shards: 4,
                ring_vnodes: 16,
                incarnation: 7,
                accepts_unrecorded: false,
                cluster_uuid: uuid.into(),
            },
        )
        .expect("write identity");
        dir
    }

    #[test]
    fn a_node_without_a_uuid_adopts_the_first_one_durably_and_then_refuses_others() {
        let dir = dir_with_identity("");
        let u = ClusterUuid::new(dir.path(), "");
        let (a, b) = (generate(), generate());
        assert_eq!(u.check("").expect("empty"), Verdict::Accept);
        assert_eq!(u.check(&a).expect("adopt"), Verdict::Adopted);
        assert_eq!(u.get(), a);
        assert_eq!(u.check(&a).expect("same"), Verdict::Accept);
        assert!(matches!(u.check(&b), Err(UuidError::Foreign { .. })));
        // Persisted: a restart reads it back.
        let id = identity::read(dir.path()).expect("read").expect("identity");
        assert_eq!(id.cluster_uuid, a);
        // An envelope without a UUID is still not checked.
        assert_eq!(u.check("").expect("empty"), Verdict::Accept);
    }

    #[test]
    fn a_known_uuid_is_never_replaced() {
        let a = generate();
        let dir = dir_with_identity(&a);
        let u = ClusterUuid::new(dir.path(), &a);
        assert!(matches!(
            u.record(&generate()),
            Err(UuidError::Foreign { .. })
        ));
        assert_eq!(u.get(), a);
    }

    #[test]
    fn malformed_uuids_are_refused_and_not_recorded() {
        let dir = dir_with_identity("");
        let u = ClusterUuid::new(dir.path(), "");
        assert!(matches!(
            u.check("not-a-uuid"),
            Err(UuidError::Malformed(_))
        ));
        assert_eq!(u.get(), "");
    }

    #[test]
    fn a_failed_write_does_not_adopt() {
        let dir = tempfile::tempdir().expect("tempdir");
        // No identity file at all: recording fails, nothing becomes visible.
        let u = ClusterUuid::new(dir.path(), "");
        assert!(matches!(u.check(&generate()), Err(UuidError::Persist(_))));
        assert_eq!(u.get(), "");
    }
}
