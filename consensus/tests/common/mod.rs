//! A simulated cluster shared by the rule tests, the golden scenarios and the randomized tests.
//!
//! Each node is a real `Raft` plus what a server would keep around it: a "disk" holding exactly
//! what `Ready` handed out for persistence, and a state machine (a hash chain over applied
//! entries). The network is a queue of messages the test delivers explicitly, in order or at
//! random, subject to partitions. A crash drops the `Raft` and the state machine; a restart
//! rebuilds them from the disk only, so anything not persisted is lost, as on a real machine.
//!
//! A `Checker` watches every step for Raft's safety properties (Raft Figure 3): election safety,
//! log matching, leader completeness and state machine safety, plus linearizable read indexes.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::collections::{BTreeMap, BTreeSet};

use consensus::{
    Config, Entry, EntryPayload, HardState, Index, Message, NodeId, ProposeError, Raft, ReadError,
    ReadMode, ReadPath, ReadState, Ready, Restored, Role, Snapshot, SnapshotMeta, Term,
};

/// splitmix64, for the harness's own choices (network faults, random actions).
#[derive(Clone, Debug)]
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> TestRng {
        TestRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// What a node's disk holds: only what a `Ready` asked to persist.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

impl Disk {
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        self.entries.retain(|e| e.index < first.index);
        if let Some(last) = self.entries.last() {
            assert_eq!(last.index + 1, first.index, "Ready left a gap in the log");
        }
        self.entries.extend_from_slice(entries);
    }
}

/// The application: a hash chain over applied entries, enough to compare replicas exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    pub applied_index: Index,
    pub applied_term: Term,
    pub hash: u64,
}

impl StateMachine {
    fn encode(&self) -> Vec<u8> {
        [self.applied_index, self.applied_term, self.hash]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    fn decode(data: &[u8]) -> StateMachine {
        let word = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&data[i * 8..i * 8 + 8]);
            u64::from_le_bytes(bytes)
        };
        StateMachine {
            applied_index: word(0),
            applied_term: word(1),
            hash: word(2),
        }
    }
}

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    hash
}

fn chain(prev: u64, entry: &Entry) -> u64 {
    let mut h = fnv1a(prev ^ 0xcbf2_9ce4_8422_2325, &entry.index.to_le_bytes());
    h = fnv1a(h, &entry.term.to_le_bytes());
    match &entry.payload {
        EntryPayload::Noop => fnv1a(h, b"noop"),
        EntryPayload::Command(bytes) => fnv1a(h, bytes),
    }
}

pub struct Node {
    pub config: Config,
    pub raft: Option<Raft>,
    pub disk: Disk,
    pub sm: StateMachine,
}

/// Safety bookkeeping across the whole run.
#[derive(Debug, Default)]
pub struct Checker {
    /// Election Safety: the one leader seen in each term.
    leaders: BTreeMap<Term, NodeId>,
    /// State Machine Safety: the chain hash after applying each index, as first seen anywhere.
    applied_hash: BTreeMap<Index, u64>,
    /// Committed entries: index -> (entry term, an upper bound on the term it committed in).
    committed: BTreeMap<Index, (Term, Term)>,
    /// Linearizable reads: (node, request id) -> the highest committed index when requested.
    reads: BTreeMap<(NodeId, u64), Index>,
}

impl Checker {
    pub fn max_committed(&self) -> Index {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }
}

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    /// In-flight messages, oldest first.
    pub network: Vec<Message>,
    /// When set, a message is delivered only within one group.
    groups: Option<Vec<BTreeSet<NodeId>>>,
    /// Process each node's Ready right after every input (off to model slow disks).
    pub auto_ready: bool,
    /// After every input, send at once what a leader need not persist first
    /// (`take_messages_to_send_now`), as a driver with an asynchronous log writer does.
    pub send_early: bool,
    /// Readies being written (`begin_write`), with the role and term when they were taken.
    pub writing: BTreeMap<NodeId, (Ready, (Role, Term))>,
    /// Human-readable effects (applies, role changes) for the golden scenarios.
    pub events: Vec<String>,
    pub checker: Checker,
    pub read_results: Vec<(NodeId, ReadState)>,
}

impl Cluster {
    /// Nodes 1..=n with default config adjusted by `configure`.
    pub fn new(n: u64, configure: impl Fn(&mut Config)) -> Cluster {
        let voters: Vec<NodeId> = (1..=n).collect();
        let mut nodes = BTreeMap::new();
        for &id in &voters {
            let mut config = Config::new(id, voters.clone());
            configure(&mut config);
            config.id = id;
            let raft = Raft::new(config.clone(), Restored::default()).expect("valid config");
            nodes.insert(
                id,
                Node {
                    config,
                    raft: Some(raft),
                    disk: Disk::default(),
                    sm: StateMachine::default(),
                },
            );
        }
        Cluster {
            nodes,
            network: Vec::new(),
            groups: None,
            auto_ready: true,
            send_early: false,
            writing: BTreeMap::new(),
            events: Vec::new(),
            checker: Checker::default(),
            read_results: Vec::new(),
        }
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn raft(&self, id: NodeId) -> &Raft {
        self.nodes[&id].raft.as_ref().expect("node is up")
    }

    pub fn raft_mut(&mut self, id: NodeId) -> &mut Raft {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.raft.as_mut())
            .expect("node is up")
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.raft.is_some())
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.as_ref().is_some_and(|r| r.role() == Role::Leader))
            .map(|(&id, _)| id)
            .collect()
    }

    /// The leader with the highest term, if any node believes it leads.
    pub fn leader(&self) -> Option<NodeId> {
        self.leaders()
            .into_iter()
            .max_by_key(|&id| self.raft(id).term())
    }

    fn after_input(&mut self, id: NodeId) {
        if self.send_early {
            self.send_now(id);
        }
        if self.auto_ready {
            self.handle_ready(id);
        }
    }

    /// Sends what node `id` may send before persisting (see `Raft::take_messages_to_send_now`).
    pub fn send_now(&mut self, id: NodeId) {
        if let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
            let messages = raft.take_messages_to_send_now();
            self.network.extend(messages);
        }
    }

    /// Runs the driver loop once for `id`: persist, send, apply, advance (repeated while ready).
    /// A write begun by `begin_write` completes first.
    pub fn handle_ready(&mut self, id: NodeId) {
        self.finish_write(id);
        loop {
            let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) else {
                return;
            };
            if !raft.has_ready() {
                return;
            }
            let before = (raft.role(), raft.term());
            let ready = raft.ready();
            self.complete_ready(id, ready, before);
        }
    }

    /// Takes node `id`'s Ready and holds it, as an asynchronous log writer does while its fsync
    /// runs: inputs keep arriving, and early messages keep leaving, until `finish_write`.
    pub fn begin_write(&mut self, id: NodeId) {
        if self.writing.contains_key(&id) {
            return;
        }
        if self.send_early {
            self.send_now(id);
        }
        let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) else {
            return;
        };
        if raft.has_ready() {
            let before = (raft.role(), raft.term());
            let ready = raft.ready();
            self.writing.insert(id, (ready, before));
        }
    }

    /// Completes the write `begin_write` started for `id`, if any: persist, send, apply, advance.
    pub fn finish_write(&mut self, id: NodeId) {
        if let Some((ready, before)) = self.writing.remove(&id) {
            self.complete_ready(id, ready, before);
        }
    }

    fn complete_ready(&mut self, id: NodeId, ready: Ready, before: (Role, Term)) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        // 1. Persist.
        if let Some(hs) = ready.hard_state {
            assert!(
                hs.term >= node.disk.hard_state.term,
                "n{id}: term went backwards"
            );
            assert!(
                hs.commit >= node.disk.hard_state.commit,
                "n{id}: commit regressed"
            );
            node.disk.hard_state = hs;
        }
        if let Some(snapshot) = &ready.snapshot {
            node.disk.snapshot = Some(snapshot.clone());
            node.disk.entries.clear();
        }
        node.disk.append(&ready.entries);
        // 2. Send.
        self.network.extend(ready.messages);
        // 3. Apply.
        if let Some(snapshot) = &ready.snapshot {
            let sm = StateMachine::decode(&snapshot.data);
            if let Some(&hash) = self.checker.applied_hash.get(&sm.applied_index) {
                assert_eq!(
                    hash, sm.hash,
                    "n{id}: snapshot state differs from applied state"
                );
            }
            self.events.push(format!(
                "n{id} installed snapshot {}@{}",
                sm.applied_index, sm.applied_term
            ));
            node.sm = sm;
        }
        for entry in &ready.committed_entries {
            assert_eq!(
                node.sm.applied_index + 1,
                entry.index,
                "n{id}: applied out of order"
            );
            let hash = chain(node.sm.hash, entry);
            let recorded = *self.checker.applied_hash.entry(entry.index).or_insert(hash);
            assert_eq!(
                recorded, hash,
                "n{id}: State Machine Safety violated at index {}",
                entry.index
            );
            node.sm = StateMachine {
                applied_index: entry.index,
                applied_term: entry.term,
                hash,
            };
            self.events.push(format!("n{id} applied {entry}"));
        }
        for read in &ready.read_states {
            if let Some(required) = self.checker.reads.remove(&(id, read.request_id)) {
                assert!(
                    read.index >= required,
                    "n{id}: read {} at index {} misses committed index {required}",
                    read.request_id,
                    read.index
                );
            }
            self.read_results.push((id, *read));
            let path = match read.served {
                ReadPath::Quorum => String::new(),
                ReadPath::Lease { remaining_ticks } => {
                    format!(" by lease ({remaining_ticks} ticks left)")
                }
            };
            self.events.push(format!(
                "n{id} read {} ready at index {}{path}",
                read.request_id, read.index
            ));
        }
        // 4. Acknowledge.
        let raft = self
            .nodes
            .get_mut(&id)
            .and_then(|n| n.raft.as_mut())
            .expect("up");
        raft.advance();
        let after = (raft.role(), raft.term());
        if before != after {
            self.events
                .push(format!("n{id} is {:?} at term {}", after.0, after.1));
        }
    }

    pub fn handle_all_ready(&mut self) {
        for id in self.ids() {
            self.handle_ready(id);
        }
    }

    fn role_term(&self, id: NodeId) -> Option<(Role, Term)> {
        self.nodes[&id].raft.as_ref().map(|r| (r.role(), r.term()))
    }

    /// Runs `input` on node `id`, then its Ready, recording role changes caused by the input.
    fn with_node<T>(&mut self, id: NodeId, input: impl FnOnce(&mut Raft) -> T) -> Option<T> {
        let before = self.role_term(id)?;
        let out = input(self.nodes.get_mut(&id)?.raft.as_mut()?);
        let after = self.role_term(id)?;
        if before != after {
            self.events
                .push(format!("n{id} is {:?} at term {}", after.0, after.1));
        }
        self.after_input(id);
        Some(out)
    }

    pub fn tick(&mut self, id: NodeId) {
        self.with_node(id, |r| r.tick());
    }

    pub fn tick_all(&mut self) {
        for id in self.ids() {
            self.tick(id);
        }
    }

    pub fn campaign(&mut self, id: NodeId) {
        self.with_node(id, |r| r.campaign());
    }

    pub fn propose(&mut self, id: NodeId, command: &str) -> Result<Index, ProposeError> {
        let bytes = command.as_bytes().to_vec();
        self.with_node(id, |r| r.propose(bytes))
            .unwrap_or(Err(ProposeError::NotLeader { leader_hint: None }))
    }

    /// A ReadIndex read on node `id`.
    pub fn read_index(&mut self, id: NodeId, request_id: u64) -> Result<(), ReadError> {
        self.read_with(id, request_id, ReadMode::ReadIndex)
    }

    pub fn read_with(
        &mut self,
        id: NodeId,
        request_id: u64,
        mode: ReadMode,
    ) -> Result<(), ReadError> {
        self.read_batch(id, request_id..=request_id, mode)
    }

    /// Registers reads `request_ids` on node `id` back to back, before its next Ready (as a
    /// server does with requests that arrive together). Stops at the first refusal.
    pub fn read_batch(
        &mut self,
        id: NodeId,
        request_ids: std::ops::RangeInclusive<u64>,
        mode: ReadMode,
    ) -> Result<(), ReadError> {
        let required = self.checker.max_committed();
        for request_id in request_ids.clone() {
            self.checker.reads.insert((id, request_id), required);
        }
        self.with_node(id, |r| {
            request_ids
                .into_iter()
                .try_for_each(|request_id| r.read_index(request_id, mode))
        })
        .unwrap_or(Err(ReadError::NotLeader { leader_hint: None }))
    }

    pub fn transfer(&mut self, id: NodeId, to: NodeId) -> String {
        match self.with_node(id, |r| r.transfer_leadership(to)) {
            Some(Ok(())) => "ok".to_string(),
            Some(Err(e)) => e.to_string(),
            None => "node is down".to_string(),
        }
    }

    /// Checkpoints node `id`'s state machine and compacts its log there.
    pub fn compact(&mut self, id: NodeId) -> String {
        let Some(node) = self.nodes.get_mut(&id) else {
            return "no such node".into();
        };
        let Some(raft) = node.raft.as_mut() else {
            return "node is down".into();
        };
        let sm = node.sm.clone();
        if sm.applied_index == 0 {
            return "nothing applied".into();
        }
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_index: sm.applied_index,
                last_term: sm.applied_term,
                voters: node.config.voters.clone(),
            },
            data: sm.encode(),
        };
        match raft.compact(snapshot.clone()) {
            Ok(()) => {
                if node
                    .disk
                    .snapshot
                    .as_ref()
                    .is_none_or(|s| s.meta.last_index < sm.applied_index)
                {
                    // A server's disk keeps the same tail behind the snapshot as its memory does
                    // (the restart then exercises `restore` with entries below the snapshot).
                    let tail = node.config.compaction_tail_entries;
                    node.disk
                        .entries
                        .retain(|e| e.index > sm.applied_index.saturating_sub(tail));
                    node.disk.snapshot = Some(snapshot);
                }
                format!("compacted to {}", sm.applied_index)
            }
            Err(e) => e.to_string(),
        }
    }

    pub fn crash(&mut self, id: NodeId) {
        // A write in flight is lost with the process.
        self.writing.remove(&id);
        if let Some(node) = self.nodes.get_mut(&id) {
            node.raft = None;
            node.sm = StateMachine::default();
        }
    }

    pub fn restart(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.raft.is_some() {
            return;
        }
        let restored = Restored {
            hard_state: node.disk.hard_state,
            snapshot: node.disk.snapshot.clone(),
            entries: node.disk.entries.clone(),
            applied_index: 0,
        };
        node.sm = node
            .disk
            .snapshot
            .as_ref()
            .map(|s| StateMachine::decode(&s.data))
            .unwrap_or_default();
        // A new life: the host draws a new boot id each time a node starts.
        node.config.boot_id += 1;
        node.raft = Some(Raft::new(node.config.clone(), restored).expect("valid config"));
        self.after_input(id);
    }

    pub fn partition(&mut self, groups: Vec<BTreeSet<NodeId>>) {
        self.groups = Some(groups);
    }

    pub fn heal(&mut self) {
        self.groups = None;
    }

    pub fn connected(&self, a: NodeId, b: NodeId) -> bool {
        match &self.groups {
            None => true,
            Some(groups) => groups.iter().any(|g| g.contains(&a) && g.contains(&b)),
        }
    }

    /// Delivers one message (if the destination is up and reachable). Returns whether it arrived.
    pub fn deliver(&mut self, msg: Message) -> bool {
        if !self.is_up(msg.to) || !self.connected(msg.from, msg.to) {
            return false;
        }
        let to = msg.to;
        self.with_node(to, |r| r.step(msg));
        true
    }

    /// Delivers queued messages in order, including the ones they cause, until none are left.
    /// Returns one line per message (marked when dropped). Panics past `limit` messages.
    pub fn deliver_all(&mut self, limit: usize) -> Vec<String> {
        let mut lines = Vec::new();
        while !self.network.is_empty() {
            if lines.len() >= limit {
                let tail = lines[lines.len() - 20..].join("\n");
                panic!("network did not quiesce; last messages:\n{tail}");
            }
            let msg = self.network.remove(0);
            let line = msg.to_string();
            if self.deliver(msg) {
                lines.push(line);
            } else {
                lines.push(format!("{line} (dropped)"));
            }
        }
        lines
    }

    /// Delivers only the messages queued right now (their effects stay queued): one network hop.
    pub fn deliver_round(&mut self) -> Vec<String> {
        let batch = std::mem::take(&mut self.network);
        let mut lines = Vec::new();
        for msg in batch {
            let line = msg.to_string();
            if self.deliver(msg) {
                lines.push(line);
            } else {
                lines.push(format!("{line} (dropped)"));
            }
        }
        lines
    }

    /// Delivers everything, silently.
    pub fn settle(&mut self) {
        self.deliver_all(100_000);
    }

    /// Checks every safety property; call after each step. Returns a description on violation.
    pub fn check(&mut self) -> Result<(), String> {
        let ids = self.ids();
        // Election Safety.
        for &id in &ids {
            let Some(raft) = self.nodes[&id].raft.as_ref() else {
                continue;
            };
            if raft.role() == Role::Leader {
                let first = *self.checker.leaders.entry(raft.term()).or_insert(id);
                if first != id {
                    return Err(format!(
                        "two leaders in term {}: n{first} and n{id}",
                        raft.term()
                    ));
                }
            }
        }
        // Record newly committed entries, with an upper bound on the term they committed in.
        for &id in &ids {
            let Some(raft) = self.nodes[&id].raft.as_ref() else {
                continue;
            };
            let log = raft.log();
            for index in log.first_index()..=log.commit_index() {
                let Some(entry_term) = log.term(index) else {
                    continue;
                };
                let (recorded_term, _) = *self
                    .checker
                    .committed
                    .entry(index)
                    .or_insert((entry_term, raft.term()));
                if recorded_term != entry_term {
                    return Err(format!(
                        "n{id} committed {index}@{entry_term} but {index}@{recorded_term} was committed before"
                    ));
                }
            }
        }
        // Leader Completeness: a leader holds every entry committed in earlier terms.
        for &id in &ids {
            let Some(raft) = self.nodes[&id].raft.as_ref() else {
                continue;
            };
            if raft.role() != Role::Leader {
                continue;
            }
            let log = raft.log();
            for (&index, &(entry_term, commit_term)) in &self.checker.committed {
                if commit_term > raft.term() || index < log.first_index() {
                    continue;
                }
                if log.term(index) != Some(entry_term) {
                    return Err(format!(
                        "leader n{id} (term {}) lacks committed entry {index}@{entry_term}",
                        raft.term()
                    ));
                }
            }
        }
        // Log Matching: same index and term imply identical logs up to there.
        for (i, &a) in ids.iter().enumerate() {
            for &b in &ids[i + 1..] {
                let (Some(ra), Some(rb)) = (&self.nodes[&a].raft, &self.nodes[&b].raft) else {
                    continue;
                };
                let (la, lb) = (ra.log(), rb.log());
                let low = la.first_index().max(lb.first_index());
                let high = la.last_index().min(lb.last_index());
                let mut matched = false;
                for index in (low..=high).rev() {
                    let (ea, eb) = (la.entry(index), lb.entry(index));
                    if !matched {
                        matched = ea.is_some() && ea.map(|e| e.term) == eb.map(|e| e.term);
                    }
                    if matched && ea != eb {
                        return Err(format!(
                            "Log Matching violated between n{a} and n{b} at index {index}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// One line per node (or only `only`), from `describe` for a running node, "down" otherwise.
    fn node_lines(&self, only: Option<NodeId>, describe: impl Fn(&Raft) -> String) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(id, _)| only.is_none_or(|o| o == **id))
            .map(|(id, node)| match &node.raft {
                Some(raft) => format!("n{id}: {}", describe(raft)),
                None => format!("n{id}: down"),
            })
            .collect()
    }

    /// One line per node: role, term, vote, commit, applied, log bounds; leaders add progress.
    pub fn status_lines(&self, only: Option<NodeId>) -> Vec<String> {
        self.node_lines(only, |raft| {
            let s = raft.status();
            let vote = s.vote.map_or("-".to_string(), |v| v.to_string());
            let leader = s.leader.map_or("-".to_string(), |v| v.to_string());
            let mut line = format!(
                "{:?} term={} vote={vote} leader={leader} commit={} applied={} log={}..{}",
                s.role, s.term, s.commit_index, s.applied_index, s.first_index, s.last_index
            )
            .to_lowercase();
            for (peer, p) in &s.progress {
                let state = match p.state {
                    consensus::ReplicationState::Probe => "probe".to_string(),
                    consensus::ReplicationState::Replicate => "replicate".to_string(),
                    consensus::ReplicationState::Snapshot { pending_index } => {
                        format!("snapshot({pending_index})")
                    }
                };
                line.push_str(&format!(
                    " | n{peer} match={} next={} {state} heard={}",
                    p.match_index, p.next_index, p.last_heard_ticks
                ));
            }
            line
        })
    }

    /// One line per node with its whole retained log.
    pub fn log_lines(&self, only: Option<NodeId>) -> Vec<String> {
        self.node_lines(only, |raft| {
            let entries: Vec<String> = raft.log().entries().iter().map(|e| e.to_string()).collect();
            format!("[{}]", entries.join(" "))
        })
    }
}
