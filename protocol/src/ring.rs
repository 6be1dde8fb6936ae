//! The consistent-hash ring: which shard (Raft group) a key is in, and which nodes replicate it.
//!
//! The ring lives in the protocol crate so that the node and the client library compute the same
//! placement from the same data, a [`RingSpec`] (nodes, virtual nodes, shards, replicas, and an
//! epoch that a later issue bumps when the ring changes). Everything here is a pure function of
//! the spec: the same spec gives the same [`Ring`] on every machine, forever. That is why the hash
//! is xxh3 (specified, stable across releases and platforms) and never `std`'s `DefaultHasher`,
//! and why tests pin concrete values.
//!
//! The rules (decided for issue 16):
//!
//! - **Keys to shards.** A key's hash is [`key_hash`] (xxh3-64 of its bytes). The 64-bit hash
//!   space is cut into `S` equal contiguous [`HashRange`]s; shard (group) `i` holds the hashes of
//!   range `i`, and the last range ends at `u64::MAX`. With `S = 1` every key is in group 0, the
//!   single group of an unsharded cluster, so its data directory stays valid.
//! - **Node tokens (virtual nodes).** Node `n` has `vnodes_per_node` tokens; token `j` is xxh3-64
//!   of `n` (8 bytes, little-endian) followed by `j` (4 bytes, little-endian). The ring walk from
//!   a hash `h` finds the first token `>= h`, wrapping past `u64::MAX` to the smallest token
//!   ([`Ring::node_for_hash`]). Many tokens per node even out the arcs each node owns (see
//!   [`DEFAULT_VNODES`]), and adding or removing a node moves only the arcs next to its own tokens.
//! - **Placement.** Shard `i`'s replicas are the first `R` distinct nodes met walking the ring from
//!   the start of its range, in walk order.
//! - **Preferred leaders.** For each shard in group order, the preferred leader is the replica
//!   that is already the preferred leader of the fewest shards (ties: walk order), which spreads
//!   leadership evenly over the nodes.
//!
//! Token collisions (two tokens with the same value) are harmless: tokens are ordered by value,
//! then by node id, so the walk stays deterministic.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::message::GroupId;

/// Virtual nodes per node unless the spec says otherwise.
///
/// Chosen by the load test (`tests/ring.rs`): with 100,000 keys (`b"key{i}"`) on 3 to 16 nodes,
/// the worst ratio of the most loaded node's keys to the mean was 1.159 with 256 tokens per
/// node, 1.093 with 512, 1.072 with 1024, 1.058 with 2048 and 1.043 with 4096 (`vnodes_table`).
/// A node's share varies by roughly `1/sqrt(vnodes)`; 2048 keeps the bound of 1.10 with margin,
/// at 16 bytes and one hash per token (32 KiB per node, built once per ring).
pub const DEFAULT_VNODES: u32 = 2048;

/// Replicas per shard unless the spec says otherwise (capped by the number of nodes in
/// [`RingSpec::new`]).
pub const DEFAULT_REPLICAS: u32 = 3;

/// The most shards a ring may have: a spec may arrive from the network (a redirect carries the
/// current ring), and each shard costs a [`Shard`] entry and, on a node, a Raft group.
pub const MAX_SHARDS: u32 = 1 << 16;

/// The most tokens (nodes × virtual nodes per node) a ring may have: 16 bytes each, so the
/// ring's token table stays within 16 MiB whatever a spec from the network says.
pub const MAX_RING_TOKENS: u64 = 1 << 20;

/// The ring's definition: all a node or a client needs to compute the same placement. Data with
/// an epoch: a ring changes only by a new spec with a higher epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingSpec {
    /// 1 for a fresh cluster; bumps when the ring changes. 0 is not a ring's epoch: it is what
    /// a request routed without a ring carries.
    pub epoch: u64,
    /// Node id to the address the node listens on (for clients and peers).
    pub nodes: BTreeMap<u64, String>,
    /// Tokens per node on the ring, at least 1 ([`DEFAULT_VNODES`]).
    pub vnodes_per_node: u32,
    /// `S >= 1`: the shards are groups `0..S`.
    pub shards: u32,
    /// `R` in `1..=nodes.len()`: replicas per shard.
    pub replicas: u32,
}

impl RingSpec {
    /// A fresh cluster's spec (epoch 1) with [`DEFAULT_VNODES`] and [`DEFAULT_REPLICAS`] replicas,
    /// or one per node when there are fewer nodes than that.
    pub fn new(nodes: BTreeMap<u64, String>, shards: u32) -> RingSpec {
        let replicas = u32::try_from(nodes.len())
            .unwrap_or(u32::MAX)
            .min(DEFAULT_REPLICAS);
        RingSpec {
            epoch: 1,
            nodes,
            vnodes_per_node: DEFAULT_VNODES,
            shards,
            replicas,
        }
    }
}

/// Why a [`RingSpec`] does not make a ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The spec names no nodes.
    #[error("the ring has no nodes")]
    NoNodes,
    /// `replicas` is 0.
    #[error("a shard needs at least one replica (replicas = 0)")]
    NoReplicas,
    /// More replicas per shard than distinct nodes to hold them.
    #[error("{replicas} replicas per shard need as many distinct nodes, the ring has {nodes}")]
    TooManyReplicas {
        /// The spec's `replicas`.
        replicas: u32,
        /// The number of nodes in the spec.
        nodes: usize,
    },
    /// `shards` is 0.
    #[error("the ring needs at least one shard (shards = 0)")]
    NoShards,
    /// More shards than [`MAX_SHARDS`].
    #[error("{shards} shards is more than the limit of {max}")]
    TooManyShards {
        /// The spec's `shards`.
        shards: u32,
        /// [`MAX_SHARDS`].
        max: u32,
    },
    /// `vnodes_per_node` is 0.
    #[error("a node needs at least one token on the ring (vnodes_per_node = 0)")]
    NoVnodes,
    /// Nodes × virtual nodes is more than [`MAX_RING_TOKENS`].
    #[error(
        "{nodes} nodes x {vnodes_per_node} virtual nodes is more than the limit of {max} tokens"
    )]
    TooManyTokens {
        /// The number of nodes in the spec.
        nodes: usize,
        /// The spec's `vnodes_per_node`.
        vnodes_per_node: u32,
        /// [`MAX_RING_TOKENS`].
        max: u64,
    },
    /// Epoch 0, which means "no ring" in a request header.
    #[error("a ring's epoch starts at 1 (0 means a request routed without a ring)")]
    ZeroEpoch,
}

/// A contiguous range of key hashes, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HashRange {
    /// The first hash in the range.
    pub start: u64,
    /// The last hash in the range (included, so the last range can end at `u64::MAX`).
    pub end_inclusive: u64,
}

impl HashRange {
    /// Whether `hash` is in the range.
    pub fn contains(&self, hash: u64) -> bool {
        self.start <= hash && hash <= self.end_inclusive
    }
}

impl fmt::Display for HashRange {
    /// `0x<start>-0x<end>`, both as 16 hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:016x}-0x{:016x}", self.start, self.end_inclusive)
    }
}

/// One shard: a range of key hashes, served by one Raft group on `replicas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// The Raft group serving the shard (its index, `0..S`).
    pub group: GroupId,
    /// The key hashes it holds.
    pub range: HashRange,
    /// The nodes holding a replica, in ring-walk order from the start of the range; distinct.
    pub replicas: Vec<u64>,
    /// The replica that should lead it, so that leadership spreads evenly; one of `replicas`.
    pub preferred_leader: u64,
}

/// A ring built from a [`RingSpec`]: the token table and the placement of every shard.
/// Cloning is cheap (the tables are shared).
#[derive(Clone)]
pub struct Ring {
    inner: Arc<RingInner>,
}

struct RingInner {
    spec: RingSpec,
    /// Token values, ascending; `token_nodes[i]` owns `tokens[i]`. Two arrays rather than pairs so
    /// the walk's binary search touches only the values.
    tokens: Vec<u64>,
    token_nodes: Vec<u64>,
    /// Indexed by group id.
    shards: Vec<Shard>,
}

impl fmt::Debug for Ring {
    /// The spec only: the token table is large and follows from it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("spec", &self.inner.spec)
            .finish_non_exhaustive()
    }
}

/// Two rings are equal when their specs are: the rest follows from the spec.
impl PartialEq for Ring {
    fn eq(&self, other: &Ring) -> bool {
        self.inner.spec == other.inner.spec
    }
}

impl Eq for Ring {}

/// A key's position on the ring: xxh3-64 of its bytes. Stable forever (the placement of stored
/// data depends on it).
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Token `vnode` of `node`: xxh3-64 of the node id (8 bytes LE) then the vnode index (4 bytes LE).
fn token(node: u64, vnode: u32) -> u64 {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&node.to_le_bytes());
    bytes[8..].copy_from_slice(&vnode.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// The first hash of range `index` out of `shards`: `ceil(index * 2^64 / shards)`, the smallest
/// hash that [`Ring::shard_for_hash`]'s multiply-shift puts in shard `index`, so that the ranges
/// and the lookup agree exactly.
fn range_start(index: u32, shards: u32) -> u64 {
    debug_assert!(shards >= 1 && index < shards);
    let start = (u128::from(index) << 64).div_ceil(u128::from(shards));
    // index < shards, so start < 2^64.
    u64::try_from(start).unwrap_or(u64::MAX)
}

fn hash_range(index: u32, shards: u32) -> HashRange {
    let start = range_start(index, shards);
    let end_inclusive = if index + 1 == shards {
        u64::MAX
    } else {
        range_start(index + 1, shards) - 1
    };
    HashRange {
        start,
        end_inclusive,
    }
}

impl Ring {
    /// Builds the ring of `spec`, or says why the spec is not a ring.
    pub fn new(spec: RingSpec) -> Result<Ring, RingError> {
        validate(&spec)?;
        let mut pairs: Vec<(u64, u64)> =
            Vec::with_capacity(spec.nodes.len() * spec.vnodes_per_node as usize);
        for &node in spec.nodes.keys() {
            for vnode in 0..spec.vnodes_per_node {
                pairs.push((token(node, vnode), node));
            }
        }
        // By value, then node id: a collision between two nodes' tokens still orders the same.
        pairs.sort_unstable();
        let (tokens, token_nodes) = pairs.into_iter().unzip();
        let mut inner = RingInner {
            spec,
            tokens,
            token_nodes,
            shards: Vec::new(),
        };
        inner.shards = place_shards(&inner);
        Ok(Ring {
            inner: Arc::new(inner),
        })
    }

    /// The spec the ring was built from.
    pub fn spec(&self) -> &RingSpec {
        &self.inner.spec
    }

    /// The ring's epoch.
    pub fn epoch(&self) -> u64 {
        self.inner.spec.epoch
    }

    /// The group (shard) holding `key`.
    pub fn shard_for_key(&self, key: &[u8]) -> GroupId {
        self.shard_for_hash(key_hash(key))
    }

    /// The group (shard) whose range holds `hash`: `floor(hash * S / 2^64)`.
    pub fn shard_for_hash(&self, hash: u64) -> GroupId {
        let shards = u128::from(self.inner.spec.shards);
        let group = ((u128::from(hash) * shards) >> 64) as u64;
        debug_assert!(self
            .inner
            .shards
            .get(group as usize)
            .is_some_and(|shard| shard.range.contains(hash)));
        group
    }

    /// The shard served by `group`, if the ring has it.
    pub fn shard(&self, group: GroupId) -> Option<&Shard> {
        usize::try_from(group)
            .ok()
            .and_then(|index| self.inner.shards.get(index))
    }

    /// All shards, in group order (`shards()[i].group == i`).
    pub fn shards(&self) -> &[Shard] {
        &self.inner.shards
    }

    /// The groups `node` holds a replica of, ascending (empty for a node not in the ring).
    pub fn groups_on(&self, node: u64) -> Vec<GroupId> {
        self.inner
            .shards
            .iter()
            .filter(|shard| shard.replicas.contains(&node))
            .map(|shard| shard.group)
            .collect()
    }

    /// The node owning `hash`: the owner of the first token `>= hash`, wrapping around past
    /// `u64::MAX` to the smallest token.
    pub fn node_for_hash(&self, hash: u64) -> u64 {
        let inner = &self.inner;
        let index = inner.tokens.partition_point(|&token| token < hash);
        // A valid spec has at least one token, so index 0 exists when wrapping.
        inner.token_nodes[if index == inner.tokens.len() {
            0
        } else {
            index
        }]
    }
}

fn validate(spec: &RingSpec) -> Result<(), RingError> {
    if spec.epoch == 0 {
        return Err(RingError::ZeroEpoch);
    }
    if spec.nodes.is_empty() {
        return Err(RingError::NoNodes);
    }
    if spec.replicas == 0 {
        return Err(RingError::NoReplicas);
    }
    if spec.replicas as usize > spec.nodes.len() {
        return Err(RingError::TooManyReplicas {
            replicas: spec.replicas,
            nodes: spec.nodes.len(),
        });
    }
    if spec.shards == 0 {
        return Err(RingError::NoShards);
    }
    if spec.shards > MAX_SHARDS {
        return Err(RingError::TooManyShards {
            shards: spec.shards,
            max: MAX_SHARDS,
        });
    }
    if spec.vnodes_per_node == 0 {
        return Err(RingError::NoVnodes);
    }
    let tokens = (spec.nodes.len() as u64).saturating_mul(u64::from(spec.vnodes_per_node));
    if tokens > MAX_RING_TOKENS {
        return Err(RingError::TooManyTokens {
            nodes: spec.nodes.len(),
            vnodes_per_node: spec.vnodes_per_node,
            max: MAX_RING_TOKENS,
        });
    }
    Ok(())
}

/// Every shard's range, replicas (the first R distinct nodes walking from the range's start) and
/// preferred leader (the replica preferred by the fewest shards so far, ties in walk order).
fn place_shards(inner: &RingInner) -> Vec<Shard> {
    let spec = &inner.spec;
    let replicas_wanted = spec.replicas as usize;
    let token_count = inner.tokens.len();
    let mut preferred_counts: BTreeMap<u64, u32> = spec.nodes.keys().map(|&n| (n, 0)).collect();
    let mut shards = Vec::with_capacity(spec.shards as usize);
    for index in 0..spec.shards {
        let range = hash_range(index, spec.shards);
        let first = inner.tokens.partition_point(|&token| token < range.start);
        let mut replicas = Vec::with_capacity(replicas_wanted);
        for step in 0..token_count {
            let node = inner.token_nodes[(first + step) % token_count];
            if !replicas.contains(&node) {
                replicas.push(node);
                if replicas.len() == replicas_wanted {
                    break;
                }
            }
        }
        // Every node has a token and R <= nodes, so one lap finds R distinct nodes.
        debug_assert_eq!(replicas.len(), replicas_wanted);
        // min_by_key keeps the first of equal minimums: ties go to walk order.
        let preferred_leader = replicas
            .iter()
            .copied()
            .min_by_key(|node| preferred_counts.get(node).copied().unwrap_or(0))
            .unwrap_or_default();
        if let Some(count) = preferred_counts.get_mut(&preferred_leader) {
            *count += 1;
        }
        shards.push(Shard {
            group: GroupId::from(index),
            range,
            replicas,
            preferred_leader,
        });
    }
    shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_tile_the_hash_space_and_agree_with_the_lookup() {
        for shards in [1u32, 2, 3, 7, 16, 1000, MAX_SHARDS] {
            let mut expected_start = 0u64;
            for index in 0..shards {
                let range = hash_range(index, shards);
                assert_eq!(range.start, expected_start, "shards {shards} index {index}");
                assert!(range.start <= range.end_inclusive);
                expected_start = range.end_inclusive.wrapping_add(1);
                for hash in [range.start, range.end_inclusive] {
                    let group = ((u128::from(hash) * u128::from(shards)) >> 64) as u64;
                    assert_eq!(group, u64::from(index), "shards {shards} hash {hash:#x}");
                }
            }
            assert_eq!(hash_range(shards - 1, shards).end_inclusive, u64::MAX);
        }
    }

    /// Checked against the C reference (libxxhash 0.8, `XXH3_64bits` of the 12 bytes).
    #[test]
    fn token_values_are_pinned() {
        assert_eq!(token(1, 0), 0x1ae5_c641_2588_0f18);
    }

    #[test]
    fn range_display_is_hex() {
        assert_eq!(
            hash_range(0, 4).to_string(),
            "0x0000000000000000-0x3fffffffffffffff"
        );
        assert_eq!(
            hash_range(1, 4).to_string(),
            "0x4000000000000000-0x7fffffffffffffff"
        );
    }
}
