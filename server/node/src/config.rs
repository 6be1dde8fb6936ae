//! A node's configuration: its identity and peers, where its data lives, its Raft timings,
//! limits and budgets. Built from the command line (`ringleader serve`) or by the simulation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use consensus::NodeId;
use ringleader_protocol::ring::{HashRange, Ring, RingError, RingSpec};
use ringleader_protocol::{GroupId, Limits};
use storage::{SharedFs, WalOptions};

use crate::faults::TransportFaults;
use crate::log_writer::WriterMode;
use crate::planted::PlantedBug;
use crate::replica::ReplicaConfig;

/// Everything a node needs to start.
#[derive(Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Every node's address, this node's included.
    pub peers: BTreeMap<NodeId, String>,
    /// The shards and where they live (see `ringleader_protocol::ring`). Its nodes are
    /// `peers`. [`NodeConfig::new`] makes one shard replicated on every node: the cluster of
    /// the single-group releases.
    pub ring: RingSpec,
    pub data_dir: PathBuf,
    pub fs: SharedFs,
    pub wal: WalOptions,
    pub limits: Limits,
    /// The length of one Raft tick.
    pub tick: Duration,
    pub election_timeout_ticks: u32,
    pub heartbeat_interval_ticks: u32,
    /// Take a snapshot (and compact the log) after this many applied entries.
    pub snapshot_every_entries: u64,
    /// Or after this many bytes of applied commands, whichever comes first: Raft keeps the log
    /// since the last snapshot in memory, so with large values a count alone would let it grow
    /// to gigabytes. Default 64 MiB.
    pub snapshot_every_bytes: u64,
    /// Entries a snapshot keeps behind it, in memory and on disk, so that a follower at most
    /// this far behind is sent entries instead of the whole snapshot (Raft's
    /// `compaction_tail_entries`). Default 5 000, as etcd.
    pub log_tail_entries: u64,
    /// And at most this many bytes of commands kept in memory (Raft's
    /// `compaction_tail_bytes`). Default 32 MiB.
    pub log_tail_bytes: u64,
    /// Seeds Raft's election timer.
    pub seed: u64,
    /// Differs every time the node starts (the binary draws it from the clock and process id;
    /// the simulation counts starts). Raft tells its own ticks of this life from a previous
    /// one's by it, for the staleness bounds of receipts (`consensus::Freshness`).
    pub boot_id: u64,
    /// A deliberate bug from the catalogue in [`crate::planted`], for proving that the
    /// jepsen-like simulation catches it. Ignored (the correct code runs) unless the crate is
    /// built with the `planted-bugs` feature; never set outside tests.
    pub planted_bug: PlantedBug,
    /// Connection budgets, timeouts and the cluster secret (see [`crate::budget`]).
    pub net: crate::budget::NetConfig,
    /// The simulation's fault seam between Raft and the peer transport (see [`crate::faults`]);
    /// `None` in production.
    pub transport_faults: Option<Arc<dyn TransportFaults>>,
    /// Where the log writer runs: its own thread (the default), or inline on the node's task
    /// (the simulation, whose disk has no latency and whose runs must be deterministic).
    pub log_writer: WriterMode,
}

impl NodeConfig {
    /// A single-node or static-cluster configuration with the default timings: 50 ms ticks,
    /// elections after 0.5–1 s of silence, heartbeats every 100 ms.
    pub fn new(
        id: NodeId,
        peers: BTreeMap<NodeId, String>,
        data_dir: PathBuf,
        fs: SharedFs,
    ) -> Self {
        let ring = RingSpec {
            replicas: u32::try_from(peers.len()).unwrap_or(u32::MAX),
            ..RingSpec::new(peers.clone(), 1)
        };
        NodeConfig {
            id,
            ring,
            peers,
            data_dir,
            fs,
            wal: WalOptions::default(),
            limits: Limits::default(),
            tick: Duration::from_millis(50),
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            snapshot_every_entries: 10_000,
            snapshot_every_bytes: 64 << 20,
            log_tail_entries: consensus::DEFAULT_COMPACTION_TAIL_ENTRIES,
            log_tail_bytes: 32 << 20,
            seed: id,
            boot_id: 0,
            planted_bug: PlantedBug::None,
            net: crate::budget::NetConfig::default(),
            transport_faults: None,
            log_writer: WriterMode::Thread,
        }
    }

    /// This node's own address.
    pub fn addr(&self) -> String {
        self.peers.get(&self.id).cloned().unwrap_or_default()
    }

    /// Shards the key space into `shards` groups of `replicas` replicas each (on the nodes of
    /// `peers`), with the default virtual nodes, at epoch 1.
    pub fn with_shards(mut self, shards: u32, replicas: u32) -> NodeConfig {
        self.ring = RingSpec {
            shards,
            replicas,
            ..RingSpec::new(self.peers.clone(), shards)
        };
        self
    }

    /// The ring this node's spec describes; an error if the spec is not a ring, or its nodes
    /// are not `peers`.
    pub fn build_ring(&self) -> Result<Ring, RingError> {
        debug_assert_eq!(
            self.ring.nodes, self.peers,
            "the ring's nodes are the peers"
        );
        Ring::new(self.ring.clone())
    }

    /// What the replica of `group` on this node is configured with: the shard's replicas as
    /// its voters, the node's timings, and an election timer seeded apart from the other
    /// groups' (so that the groups of a node do not all campaign at the same tick).
    pub fn replica(&self, ring: &Ring, group: GroupId) -> ReplicaConfig {
        let shard = ring.shard(group);
        debug_assert!(shard.is_some(), "only the ring's groups have replicas");
        let voters = shard.map(|shard| shard.replicas.as_slice()).unwrap_or(&[]);
        ReplicaConfig {
            group,
            id: self.id,
            peers: voters
                .iter()
                .filter_map(|node| Some((*node, self.peers.get(node)?.clone())))
                .collect(),
            range: shard.map(|shard| shard.range).unwrap_or(HashRange {
                start: 0,
                end_inclusive: u64::MAX,
            }),
            epoch: ring.epoch(),
            // With one shard there is nothing to spread: no preference (a single group's
            // leadership is not moved about).
            preferred_leader: shard
                .filter(|_| ring.shards().len() > 1)
                .map(|shard| shard.preferred_leader),
            election_timeout_ticks: self.election_timeout_ticks,
            heartbeat_interval_ticks: self.heartbeat_interval_ticks,
            snapshot_every_entries: self.snapshot_every_entries,
            snapshot_every_bytes: self.snapshot_every_bytes,
            log_tail_entries: self.log_tail_entries,
            log_tail_bytes: self.log_tail_bytes,
            // Group 0 keeps the node's seed (the simulation's seeds replay as before).
            seed: self
                .seed
                .wrapping_add(group.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            boot_id: self.boot_id,
            planted_bug: self.planted_bug,
            tick_ms: self.tick.as_millis() as u64,
        }
    }
}
