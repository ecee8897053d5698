//! The consistent-hash ring: key → shard.
//!
//! Each shard owns `vnodes` points on a 64-bit ring (xxh3 of the shard id and point number); a
//! key belongs to the shard of the first point at or clockwise after `xxh3(key)`. When a key
//! contains a non-empty `{tag}`, only the tag is hashed (Redis Cluster style), so related keys
//! (`order:{42}:lines`, `order:{42}:state`) land on one shard.
//!
//! Invariants: pure and deterministic (no I/O, no randomness); the same `(shards, vnodes)` gives
//! the same mapping on every node and every client, in every version. Changing the hash or the
//! point naming is an on-disk format change.

use xxhash_rust::xxh3::xxh3_64;

/// Default number of virtual points per shard.
pub const DEFAULT_VNODES: u32 = 64;

/// A consistent-hash ring over `shard_count` shards.
#[derive(Debug, Clone)]
pub struct Ring {
    points: Vec<(u64, u32)>,
    shard_count: u32,
    vnodes: u32,
}

impl Ring {
    /// Builds the ring. `shard_count` and `vnodes` must be at least 1 (callers validate flags;
    /// zero is clamped to 1 so this never panics).
    pub fn new(shard_count: u32, vnodes: u32) -> Self {
        let shard_count = shard_count.max(1);
        let vnodes = vnodes.max(1);
        let mut points = Vec::with_capacity((shard_count * vnodes) as usize);
        for shard in 0..shard_count {
            for vnode in 0..vnodes {
                let mut name = [0u8; 8];
                name[..4].copy_from_slice(&shard.to_be_bytes());
                name[4..].copy_from_slice(&vnode.to_be_bytes());
                points.push((xxh3_64(&name), shard));
            }
        }
        // Ties (astronomically unlikely) are broken by shard id so the order is total.
        points.sort_unstable();
        Ring {
            points,
            shard_count,
            vnodes,
        }
    }

    /// The number of shards.
    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// Virtual points per shard.
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// The shard that owns `key`.
    pub fn shard_for(&self, key: &[u8]) -> u32 {
        let h = xxh3_64(hash_part(key));
        let i = self.points.partition_point(|&(p, _)| p < h);
        match self.points.get(i).or_else(|| self.points.first()) {
            Some(&(_, shard)) => shard,
            None => 0,
        }
    }
}

/// The part of `key` that is hashed: the content of the first `{...}` if it is non-empty,
/// otherwise the whole key.
pub fn hash_part(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hash_tags_follow_redis_rules() {
        assert_eq!(hash_part(b"order:{42}:lines"), b"42");
        assert_eq!(hash_part(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_part(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_part(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_part(b"plain"), b"plain");
        assert_eq!(hash_part(b"open{only"), b"open{only");
    }

    #[test]
    fn keys_spread_evenly_over_shards() {
        let ring = Ring::new(8, DEFAULT_VNODES);
        let mut counts = [0u32; 8];
        let n = 100_000;
        for i in 0..n {
            counts[ring.shard_for(format!("key-{i}").as_bytes()) as usize] += 1;
        }
        let mean = n as f64 / 8.0;
        for (shard, &c) in counts.iter().enumerate() {
            let ratio = c as f64 / mean;
            assert!(
                (0.6..1.4).contains(&ratio),
                "shard {shard} holds {c} keys, mean {mean}"
            );
        }
    }

    #[test]
    fn adding_a_shard_moves_about_one_share_of_keys() {
        let before = Ring::new(8, DEFAULT_VNODES);
        let after = Ring::new(9, DEFAULT_VNODES);
        let n = 50_000;
        let moved = (0..n)
            .filter(|i| {
                let k = format!("key-{i}");
                before.shard_for(k.as_bytes()) != after.shard_for(k.as_bytes())
            })
            .count();
        let share = moved as f64 / n as f64;
        // Ideal is 1/9 ≈ 0.111; anything far above means the ring is not consistent.
        assert!(share < 0.2, "{share} of keys moved");
        assert!(
            share > 0.05,
            "{share} of keys moved: new shard owns too little"
        );
    }

    proptest! {
        #[test]
        fn mapping_is_stable_and_in_range(key in proptest::collection::vec(any::<u8>(), 0..64),
                                          shards in 1u32..32) {
            let ring = Ring::new(shards, 16);
            let s = ring.shard_for(&key);
            prop_assert!(s < shards);
            prop_assert_eq!(s, Ring::new(shards, 16).shard_for(&key));
        }

        #[test]
        fn tagged_keys_share_a_shard(tag in "[a-z0-9]{1,12}", a in "[a-z]{0,8}", b in "[a-z]{0,8}") {
            let ring = Ring::new(8, DEFAULT_VNODES);
            let k1 = format!("{a}{{{tag}}}x");
            let k2 = format!("{{{tag}}}{b}");
            prop_assert_eq!(ring.shard_for(k1.as_bytes()), ring.shard_for(k2.as_bytes()));
        }
    }
}
