//! The authorization decision: may this identity do this action? Pure: no I/O, no state.
//!
//! The table:
//! - `admin`: every action.
//! - `readwrite`: get, put, delete, compare-and-swap and scan of keys within its prefix, and
//!   status.
//! - `readonly`: get and scan of keys within its prefix, and status.
//! - `node` (a cluster node's certificate, never a tokens-file entry): status only.
//! - Membership changes and backups: admin only (a backup is every key of a shard).
//! - Status is allowed to every authenticated identity (clients route with it); it names
//!   nodes and shards, never keys.
//!
//! Prefixes: a key is within a prefix when it starts with it. A scan names a key prefix too;
//! [`scan_prefix`] clips it to the identity's prefix: the keys starting with both prefixes are
//! exactly the keys starting with the longer one when one extends the other, and none
//! otherwise. A scan whose prefix is disjoint from the identity's is refused (not answered
//! empty), so a caller learns it asked outside its range instead of seeing a silently empty
//! result. The clipped scan can never return a key outside the identity's prefix, whatever
//! shards, limits or forwarding do with it afterwards, because every part of the scan uses the
//! clipped prefix.
//!
//! It does not authenticate anyone ([`super::tokens`] and [`super`] do) and does not know
//! about batches: a batch is authorized item by item by its caller.

use std::fmt;

use super::identity::{Identity, Role, escape_key};

/// Every client RPC, with the keys it touches. A new RPC needs a new variant here before its
/// handler can authorize (and so serve) anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    Get {
        key: &'a [u8],
    },
    Put {
        key: &'a [u8],
    },
    Delete {
        key: &'a [u8],
    },
    Cas {
        key: &'a [u8],
    },
    /// The keys starting with `prefix`.
    Scan {
        prefix: &'a [u8],
    },
    Status,
    MemberAdd,
    MemberRemove,
    Backup,
}

impl Action<'_> {
    /// The verb of a refusal message.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Get { .. } => "get",
            Action::Put { .. } => "put",
            Action::Delete { .. } => "delete",
            Action::Cas { .. } => "compare-and-swap",
            Action::Scan { .. } => "scan",
            Action::Status => "read status",
            Action::MemberAdd => "add members",
            Action::MemberRemove => "remove members",
            Action::Backup => "take backups",
        }
    }

    /// The key (or scan prefix) the action touches, when it touches keys.
    fn key(&self) -> Option<&[u8]> {
        match *self {
            Action::Get { key }
            | Action::Put { key }
            | Action::Delete { key }
            | Action::Cas { key } => Some(key),
            Action::Scan { prefix } => Some(prefix),
            Action::Status | Action::MemberAdd | Action::MemberRemove | Action::Backup => None,
        }
    }

    fn is_read(&self) -> bool {
        matches!(self, Action::Get { .. } | Action::Scan { .. })
    }
}

/// Why an action was refused; its message names the role, the action and the key (escaped),
/// never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Denied {
    pub role: Role,
    pub verb: &'static str,
    /// The refused key (or scan prefix), escaped; `None` for actions without keys.
    pub key: Option<String>,
    /// When the role allows the action but not on this key: the identity's prefix, escaped.
    pub outside: Option<String>,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "role {} cannot {}", self.role, self.verb)?;
        if let Some(k) = &self.key {
            write!(f, " {k}")?;
        }
        if let Some(p) = &self.outside {
            write!(f, " (outside its prefix {p})")?;
        }
        Ok(())
    }
}

fn role_allows(role: Role, action: &Action<'_>) -> bool {
    match role {
        Role::Admin => true,
        Role::Readwrite => matches!(
            action,
            Action::Get { .. }
                | Action::Put { .. }
                | Action::Delete { .. }
                | Action::Cas { .. }
                | Action::Scan { .. }
                | Action::Status
        ),
        Role::Readonly => action.is_read() || matches!(action, Action::Status),
        Role::Node => matches!(action, Action::Status),
    }
}

/// May `id` do `action`? A scan is allowed when its clipped range is not empty (see
/// [`scan_prefix`], which the scan handler must use for the keys it reads).
pub fn authorize(id: &Identity, action: &Action<'_>) -> Result<(), Denied> {
    let denied = |outside: Option<String>| Denied {
        role: id.role,
        verb: action.verb(),
        key: action.key().map(escape_key),
        outside,
    };
    if !role_allows(id.role, action) {
        return Err(denied(None));
    }
    match (action, &id.prefix) {
        (Action::Scan { prefix }, Some(p)) => {
            if clip(prefix, p).is_none() {
                return Err(denied(Some(escape_key(p))));
            }
        }
        (_, Some(p)) => {
            if let Some(key) = action.key()
                && !key.starts_with(p)
            {
                return Err(denied(Some(escape_key(p))));
            }
        }
        (_, None) => {}
    }
    Ok(())
}

/// The prefix a scan of `requested` by `id` must read: `requested` clipped to the identity's
/// prefix. Refused like [`authorize`] when the two are disjoint or the role cannot scan.
pub fn scan_prefix<'a>(id: &'a Identity, requested: &'a [u8]) -> Result<&'a [u8], Denied> {
    authorize(id, &Action::Scan { prefix: requested })?;
    match &id.prefix {
        None => Ok(requested),
        Some(p) => clip(requested, p).ok_or_else(|| Denied {
            role: id.role,
            verb: "scan",
            key: Some(escape_key(requested)),
            outside: Some(escape_key(p)),
        }),
    }
}

/// The prefix whose keys are exactly the keys starting with both `a` and `b`, if any key
/// does: the longer of the two when it extends the shorter.
fn clip<'a>(a: &'a [u8], b: &'a [u8]) -> Option<&'a [u8]> {
    if a.starts_with(b) {
        Some(a)
    } else if b.starts_with(a) {
        Some(b)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    fn id(role: Role, prefix: Option<&[u8]>) -> Identity {
        Identity {
            name: "t".into(),
            role,
            prefix: prefix.map(Bytes::copy_from_slice),
        }
    }

    fn all_actions(key: &[u8]) -> Vec<Action<'_>> {
        vec![
            Action::Get { key },
            Action::Put { key },
            Action::Delete { key },
            Action::Cas { key },
            Action::Scan { prefix: key },
            Action::Status,
            Action::MemberAdd,
            Action::MemberRemove,
            Action::Backup,
        ]
    }

    #[test]
    fn role_table() {
        let k = b"order:1".as_slice();
        for (role, allowed) in [
            (Role::Admin, vec![true; 9]),
            (
                Role::Readwrite,
                vec![true, true, true, true, true, true, false, false, false],
            ),
            (
                Role::Readonly,
                vec![true, false, false, false, true, true, false, false, false],
            ),
            (
                Role::Node,
                vec![false, false, false, false, false, true, false, false, false],
            ),
        ] {
            for prefix in [None, Some(b"order:".as_slice())] {
                let who = id(role, prefix);
                for (a, want) in all_actions(k).iter().zip(&allowed) {
                    assert_eq!(authorize(&who, a).is_ok(), *want, "{role} {a:?} {prefix:?}");
                }
            }
        }
    }

    #[test]
    fn prefix_limits_keys_but_not_status() {
        let who = id(Role::Readwrite, Some(b"order:"));
        assert!(authorize(&who, &Action::Put { key: b"order:9" }).is_ok());
        let e = authorize(&who, &Action::Put { key: b"user:9" }).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "role readwrite cannot put user:9 (outside its prefix order:)"
        );
        assert!(authorize(&who, &Action::Status).is_ok());
        let admin = id(Role::Admin, Some(b"order:"));
        assert!(authorize(&admin, &Action::Get { key: b"user:1" }).is_err());
        assert!(authorize(&admin, &Action::Backup).is_ok());
    }

    #[test]
    fn refusal_message_names_role_verb_and_key() {
        let who = id(Role::Readonly, None);
        let e = authorize(
            &who,
            &Action::Put {
                key: b"order:{42}:state",
            },
        )
        .expect_err("refused");
        assert_eq!(e.to_string(), "role readonly cannot put order:{42}:state");
        let e = authorize(&who, &Action::MemberRemove).expect_err("refused");
        assert_eq!(e.to_string(), "role readonly cannot remove members");
    }

    #[test]
    fn scans_are_clipped() {
        let who = id(Role::Readonly, Some(b"order:"));
        assert_eq!(scan_prefix(&who, b"").expect("ok"), b"order:");
        assert_eq!(scan_prefix(&who, b"ord").expect("ok"), b"order:");
        assert_eq!(scan_prefix(&who, b"order:7").expect("ok"), b"order:7");
        assert!(scan_prefix(&who, b"user:").is_err());
        let all = id(Role::Readonly, None);
        assert_eq!(scan_prefix(&all, b"x").expect("ok"), b"x");
    }

    proptest! {
        /// Whatever the identity's and the scan's prefixes, a key the clipped scan reads is
        /// within the identity's prefix, and every key within both is read.
        #[test]
        fn clipped_scans_never_leave_the_prefix(
            mine in proptest::collection::vec(0u8..4, 0..4),
            asked in proptest::collection::vec(0u8..4, 0..5),
            key in proptest::collection::vec(0u8..4, 0..7),
        ) {
            let who = id(Role::Readonly, Some(&mine));
            match scan_prefix(&who, &asked) {
                Ok(clipped) => {
                    let read = key.starts_with(clipped);
                    if read {
                        prop_assert!(key.starts_with(&mine));
                        prop_assert!(key.starts_with(&asked));
                    }
                    if key.starts_with(&mine) && key.starts_with(&asked) {
                        prop_assert!(read);
                    }
                }
                Err(_) => prop_assert!(!(key.starts_with(&mine) && key.starts_with(&asked))),
            }
        }
    }
}
