//! The client's routing table: the ring it routes by (learned from a node's status, replaced
//! when a node answers `RingChanged`), the node it last saw lead each group, where to try next
//! when no leader is known, and the open connections.
//!
//! Kept apart from the retry loop (`client.rs`) so that the choice of node is a function of
//! this state alone, under one lock. Every map here is bounded by the ring: at most one entry
//! per group (`ring::MAX_SHARDS`) or per node address the client was given, found on the ring
//! or redirected to.

use std::collections::BTreeMap;

use ringleader_protocol::connection::Connection;
use ringleader_protocol::ring::Ring;
use ringleader_protocol::{GroupId, NodeStatus, ONLY_GROUP};

pub(crate) struct Routing {
    /// The ring requests are routed by; `None` until a node's status gave one (until then
    /// every request goes with epoch 0 and the node routes it: the behaviour of a client
    /// before sharding).
    ring: Option<Ring>,
    /// Per group: the address believed to lead it.
    leaders: BTreeMap<GroupId, String>,
    /// Per group: how many times a node was picked for it with no leader known (the next
    /// candidate to try).
    next_candidate: BTreeMap<GroupId, usize>,
    /// Per group: how many stale or session reads were sent to it (spreads them over its
    /// replicas, round-robin).
    next_read: BTreeMap<GroupId, usize>,
    /// One pipelined connection per address.
    pub(crate) connections: BTreeMap<String, Connection>,
}

impl Routing {
    pub(crate) fn new() -> Self {
        Routing {
            ring: None,
            leaders: BTreeMap::new(),
            next_candidate: BTreeMap::new(),
            next_read: BTreeMap::new(),
            connections: BTreeMap::new(),
        }
    }

    pub(crate) fn ring(&self) -> Option<&Ring> {
        self.ring.as_ref()
    }

    /// Whether the ring has more than one shard: then requests go to each group's replicas
    /// (found on the ring), and stale and session reads are spread over them. A one-shard ring
    /// is routed as the client always did: over the configured endpoints, reads to the leader.
    pub(crate) fn sharded(&self) -> bool {
        self.ring
            .as_ref()
            .is_some_and(|ring| ring.shards().len() > 1)
    }

    /// Routes by `ring` from now on. A ring of another epoch invalidates what was learned
    /// under the old one (placement and leaders may have moved).
    pub(crate) fn install(&mut self, ring: Ring) {
        if self
            .ring
            .as_ref()
            .is_some_and(|old| old.epoch() == ring.epoch())
        {
            return;
        }
        self.leaders.clear();
        self.next_candidate.clear();
        self.next_read.clear();
        self.ring = Some(ring);
    }

    /// Installs the ring of `status` (if valid) and caches the leaders the node reported for
    /// the groups it hosts. Returns the ring error, if the node's ring is not one.
    pub(crate) fn learn(
        &mut self,
        status: &NodeStatus,
    ) -> Result<(), ringleader_protocol::ring::RingError> {
        let ring = Ring::new(status.ring.clone())?;
        self.install(ring.clone());
        for group in &status.groups {
            let addr = group
                .leader
                .and_then(|leader| ring.spec().nodes.get(&leader));
            if let Some(addr) = addr {
                self.leaders.insert(group.group, addr.clone());
            }
        }
        Ok(())
    }

    /// The group holding `key` on the ring (group 0 while no ring is known).
    pub(crate) fn group_for_key(&self, key: &[u8]) -> GroupId {
        self.ring
            .as_ref()
            .map_or(ONLY_GROUP, |ring| ring.shard_for_key(key))
    }

    /// The epoch requests are sent with: the ring's, or 0 (let the node route) without one.
    pub(crate) fn epoch(&self) -> u64 {
        self.ring.as_ref().map_or(0, Ring::epoch)
    }

    /// The addresses that may serve `group`, best first: on a sharded ring, the preferred
    /// leader then the other replicas in ring-walk order; else the configured endpoints.
    pub(crate) fn candidates(&self, group: GroupId, endpoints: &[String]) -> Vec<String> {
        if self.sharded() {
            if let Some((ring, shard)) = self
                .ring
                .as_ref()
                .and_then(|ring| Some((ring, ring.shard(group)?)))
            {
                let nodes = &ring.spec().nodes;
                let order = std::iter::once(shard.preferred_leader).chain(
                    shard
                        .replicas
                        .iter()
                        .copied()
                        .filter(|node| *node != shard.preferred_leader),
                );
                let addrs: Vec<String> =
                    order.filter_map(|node| nodes.get(&node).cloned()).collect();
                if !addrs.is_empty() {
                    return addrs;
                }
            }
        }
        endpoints.to_vec()
    }

    /// The node to send the next request for `group` to: for a stale or session read on a
    /// sharded ring (`spread_read`), the next replica round-robin; else the cached leader;
    /// else the next candidate in turn.
    pub(crate) fn target(
        &mut self,
        group: GroupId,
        spread_read: bool,
        endpoints: &[String],
    ) -> String {
        let candidates = self.candidates(group, endpoints);
        debug_assert!(
            !candidates.is_empty(),
            "the client has at least one endpoint"
        );
        if spread_read && self.sharded() {
            let turn = self.next_read.entry(group).or_insert(0);
            let addr = candidates[*turn % candidates.len()].clone();
            *turn = turn.wrapping_add(1);
            return addr;
        }
        if let Some(leader) = self.leaders.get(&group) {
            return leader.clone();
        }
        let turn = self.next_candidate.entry(group).or_insert(0);
        let addr = candidates[*turn % candidates.len()].clone();
        *turn = turn.wrapping_add(1);
        addr
    }

    /// `addr` leads `group` (it said so, or served what only a leader serves).
    pub(crate) fn set_leader(&mut self, group: GroupId, addr: String) {
        self.leaders.insert(group, addr);
    }

    /// The leader of `group` is unknown.
    pub(crate) fn clear_leader(&mut self, group: GroupId) {
        self.leaders.remove(&group);
    }

    /// `addr` failed: it leads no group as far as the client knows, and its connection is
    /// dropped if asked.
    pub(crate) fn forget(&mut self, addr: &str, drop_connection: bool) {
        self.leaders.retain(|_, leader| leader != addr);
        if drop_connection {
            self.connections.remove(addr);
        }
    }
}
