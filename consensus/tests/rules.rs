//! One deterministic test per Raft rule, on an in-memory network driven message by message.
//! Every test also runs the harness's safety checker after each phase.

mod common;

use std::collections::BTreeSet;

use common::Cluster;
use consensus::{
    Config, EntryPayload, Message, MessageBody, ProposeError, ReadError, ReadMode, ReadPath, Role,
};

fn groups(spec: &[&[u64]]) -> Vec<BTreeSet<u64>> {
    spec.iter().map(|g| g.iter().copied().collect()).collect()
}

fn classic(config: &mut Config) {
    config.pre_vote = false;
    config.check_quorum = false;
}

/// Elects `id` and lets the noop commit everywhere.
fn elect(cluster: &mut Cluster, id: u64) {
    cluster.campaign(id);
    cluster.settle();
    assert_eq!(cluster.raft(id).role(), Role::Leader);
    cluster.check().unwrap();
}

fn tick_and_settle(cluster: &mut Cluster, ticks: usize) {
    for _ in 0..ticks {
        cluster.tick_all();
        cluster.settle();
        cluster.check().unwrap();
    }
}

#[test]
fn a_candidate_with_a_majority_becomes_the_only_leader() {
    let mut cluster = Cluster::new(3, classic);
    elect(&mut cluster, 1);
    for id in [2, 3] {
        assert_eq!(cluster.raft(id).role(), Role::Follower);
        assert_eq!(cluster.raft(id).leader(), Some(1));
        assert_eq!(cluster.raft(id).term(), 1);
    }
    // The leader's noop committed and was applied everywhere.
    for id in 1..=3 {
        assert_eq!(cluster.nodes[&id].sm.applied_index, 1);
    }
}

#[test]
fn split_votes_are_resolved_by_randomized_timeouts() {
    let mut cluster = Cluster::new(4, classic);
    // 1 and 2 campaign at once; 3 hears only 1 and 4 hears only 2: two votes each, no quorum of 3.
    cluster.partition(groups(&[&[1, 3], &[2, 4]]));
    cluster.campaign(1);
    cluster.campaign(2);
    cluster.settle();
    assert!(cluster.leaders().is_empty(), "a 2-2 split elects nobody");
    cluster.heal();
    tick_and_settle(&mut cluster, 40);
    let leaders = cluster.leaders();
    assert_eq!(
        leaders.len(),
        1,
        "exactly one leader after the timeouts diverge"
    );
    assert!(cluster.raft(leaders[0]).term() >= 2);
}

#[test]
fn replication_commits_and_applies_everywhere_in_order() {
    let mut cluster = Cluster::new(3, |c| c.max_entries_per_append = 2);
    elect(&mut cluster, 1);
    for i in 0..5 {
        let index = cluster.propose(1, &format!("put k{i}=v")).unwrap();
        assert_eq!(index, 2 + i);
    }
    cluster.settle();
    cluster.check().unwrap();
    let leader_sm = cluster.nodes[&1].sm.clone();
    assert_eq!(leader_sm.applied_index, 6);
    for id in [2, 3] {
        assert_eq!(cluster.nodes[&id].sm, leader_sm);
    }
    assert_eq!(
        cluster.propose(2, "nope"),
        Err(ProposeError::NotLeader {
            leader_hint: Some(1)
        })
    );
}

#[test]
fn conflicting_suffix_is_replaced_with_one_round_of_backtracking() {
    let mut cluster = Cluster::new(3, classic);
    elect(&mut cluster, 1);
    // The old leader, cut off, piles up entries nobody else has.
    cluster.partition(groups(&[&[1], &[2, 3]]));
    for i in 0..20 {
        cluster.propose(1, &format!("lost{i}")).unwrap();
    }
    cluster.settle();
    elect(&mut cluster, 2);
    for i in 0..3 {
        cluster.propose(2, &format!("kept{i}")).unwrap();
    }
    cluster.settle();
    cluster.heal();
    // n2's next heartbeat tells n1 of term 2; the append that follows hits the conflict.
    let mut rejects = 0;
    for _ in 0..6 {
        cluster.tick(2);
        let lines = cluster.deliver_all(1000);
        rejects += lines.iter().filter(|l| l.contains("reject=")).count();
        cluster.check().unwrap();
    }
    assert_eq!(cluster.raft(1).role(), Role::Follower);
    assert_eq!(
        cluster.raft(1).log().entries(),
        cluster.raft(2).log().entries()
    );
    assert!(
        rejects <= 2,
        "20 conflicting entries must be skipped by term, not one by one ({rejects} rejects)"
    );
    assert!(cluster
        .raft(1)
        .log()
        .entries()
        .iter()
        .all(|e| e.payload != EntryPayload::Command(b"lost0".to_vec())));
}

/// Raft Figure 8: an entry from an old term stored on a majority is not committed by counting.
#[test]
fn figure_8_old_term_entries_do_not_commit_by_counting() {
    let mut cluster = Cluster::new(5, |c| {
        classic(c);
        c.max_entries_per_append = 1;
    });
    elect(&mut cluster, 1); // term 1, noop 1@1 everywhere
                            // (a) n1 replicates 2@1 to n2 only.
    cluster.partition(groups(&[&[1, 2], &[3, 4, 5]]));
    cluster.propose(1, "x").unwrap();
    cluster.settle();
    // (b) n1 crashes; n5 is elected in term 2 by n3, n4 but its noop 2@2 reaches nobody.
    cluster.crash(1);
    cluster.partition(groups(&[&[2], &[3, 4, 5]]));
    cluster.campaign(5);
    cluster.deliver_round(); // RequestVote
    cluster.deliver_round(); // votes: n5 leads term 2
    assert_eq!(cluster.raft(5).role(), Role::Leader);
    cluster.network.clear(); // its appends are lost
    cluster.crash(5);
    // (c) n1 restarts and is elected in term 3 by n2, n3; it re-replicates 2@1 to n3.
    cluster.restart(1);
    cluster.partition(groups(&[&[1, 2, 3], &[4, 5]]));
    cluster.campaign(1);
    cluster.settle();
    if cluster.raft(1).role() != Role::Leader {
        cluster.campaign(1); // the first attempt met n3 at term 2
        cluster.deliver_round();
        cluster.deliver_round();
    }
    assert_eq!(cluster.raft(1).role(), Role::Leader);
    let term = cluster.raft(1).term();
    while cluster.raft(3).log().last_index() < 2 {
        assert!(!cluster.network.is_empty());
        cluster.deliver_round();
    }
    // n1 now learns n3 holds 2@1 (one entry per append, so 3@3 is not there yet).
    cluster.network.retain(|m| m.to == 1);
    cluster.deliver_round();
    cluster.check().unwrap();
    for id in [1, 2, 3] {
        assert_eq!(cluster.raft(id).log().term(2), Some(1), "2@1 on n{id}");
    }
    assert_eq!(
        cluster.raft(1).log().commit_index(),
        1,
        "2@1 is on a majority but is from term 1 < {term}: it must not commit by counting"
    );
    // (d) n1 crashes before its term-3 entry spreads; n5 wins term 4 and overwrites index 2.
    cluster.crash(1);
    cluster.network.clear();
    cluster.restart(5);
    cluster.partition(groups(&[&[2, 3, 4, 5]]));
    for _ in 0..3 {
        if cluster.raft(5).role() != Role::Leader {
            cluster.campaign(5);
            cluster.settle();
        }
    }
    assert_eq!(cluster.raft(5).role(), Role::Leader);
    cluster.settle();
    cluster.check().unwrap();
    for id in [3, 4, 5] {
        assert_eq!(cluster.raft(id).log().term(2), Some(2), "n{id} holds 2@2");
        assert!(cluster.nodes[&id].sm.applied_index >= 2);
    }
}

#[test]
fn pre_vote_keeps_a_partitioned_node_from_disrupting_the_leader() {
    let mut cluster = Cluster::new(3, |c| {
        c.pre_vote = true;
        c.check_quorum = true;
    });
    elect(&mut cluster, 1);
    cluster.partition(groups(&[&[1, 2], &[3]]));
    tick_and_settle(&mut cluster, 100);
    assert_eq!(
        cluster.raft(3).term(),
        1,
        "pre-votes never win, so the term stays"
    );
    assert_ne!(cluster.raft(3).role(), Role::Leader);
    cluster.heal();
    tick_and_settle(&mut cluster, 50);
    assert_eq!(cluster.raft(1).role(), Role::Leader);
    assert_eq!(
        cluster.raft(1).term(),
        1,
        "the healthy leader was never deposed"
    );
    assert_eq!(cluster.raft(3).leader(), Some(1));
}

#[test]
fn leader_stickiness_ignores_an_inflated_term_vote_request() {
    // Without PreVote the isolated node inflates its term; CheckQuorum stickiness makes the
    // others ignore its RequestVote while they hear from the leader.
    let mut cluster = Cluster::new(3, |c| {
        c.pre_vote = false;
        c.check_quorum = true;
    });
    elect(&mut cluster, 1);
    cluster.partition(groups(&[&[1, 2], &[3]]));
    tick_and_settle(&mut cluster, 60);
    let inflated = cluster.raft(3).term();
    assert!(inflated > 2);
    cluster.heal();
    cluster.tick(3);
    cluster.tick(3); // keep ticking only n3: its RequestVote reaches n1 and n2
    for _ in 0..30 {
        cluster.tick(3);
    }
    let lines = cluster.deliver_all(1000);
    assert!(lines.iter().any(|l| l.starts_with("3->2 RequestVote")));
    assert_eq!(
        cluster.raft(2).term(),
        1,
        "n2 heard the leader recently: vote ignored"
    );
    assert_eq!(cluster.raft(1).role(), Role::Leader);
}

#[test]
fn check_quorum_makes_an_isolated_leader_step_down() {
    let mut cluster = Cluster::new(3, |c| c.check_quorum = true);
    elect(&mut cluster, 1);
    tick_and_settle(&mut cluster, 30);
    assert_eq!(
        cluster.raft(1).role(),
        Role::Leader,
        "connected: stays leader"
    );
    cluster.partition(groups(&[&[1], &[2, 3]]));
    for _ in 0..20 {
        cluster.tick(1);
        cluster.settle();
    }
    assert_eq!(cluster.raft(1).role(), Role::Follower);
    assert_eq!(cluster.raft(1).leader(), None);
}

#[test]
fn read_index_waits_for_the_noop_and_a_heartbeat_quorum() {
    let mut cluster = Cluster::new(3, |c| c.pre_vote = false);
    cluster.campaign(1);
    cluster.deliver_round();
    cluster.deliver_round();
    assert_eq!(cluster.raft(1).role(), Role::Leader);
    assert_eq!(cluster.read_index(1, 7), Err(ReadError::LeaderNotReady));
    cluster.settle();
    cluster.propose(1, "put x=1").unwrap();
    cluster.settle();
    assert_eq!(
        cluster.read_index(2, 8),
        Err(ReadError::NotLeader {
            leader_hint: Some(1)
        })
    );
    cluster.partition(groups(&[&[1], &[2, 3]]));
    cluster.read_index(1, 9).unwrap();
    cluster.settle();
    assert!(
        cluster.read_results.is_empty(),
        "no quorum confirmed leadership"
    );
    cluster.heal();
    cluster.read_index(1, 10).unwrap();
    assert!(
        cluster.read_results.is_empty(),
        "needs the heartbeat round first"
    );
    cluster.settle();
    let ids: Vec<u64> = cluster
        .read_results
        .iter()
        .map(|(_, r)| r.request_id)
        .collect();
    assert_eq!(
        ids,
        vec![9, 10],
        "one later confirmation releases both, in order"
    );
    assert!(cluster.read_results.iter().all(|(_, r)| r.index == 2));
}

#[test]
fn lease_reads_answer_immediately_only_while_the_lease_holds() {
    let mut cluster = Cluster::new(3, |c| c.check_quorum = true);
    tick_and_settle(&mut cluster, 40);
    let leader = cluster.leader().expect("a leader");
    tick_and_settle(&mut cluster, 3);
    cluster.read_with(leader, 1, ReadMode::Lease).unwrap();
    assert_eq!(cluster.read_results.len(), 1, "lease held: no round trip");
    let lease = cluster.read_results[0].1.served;
    let ReadPath::Lease { remaining_ticks } = lease else {
        panic!("served by {lease:?}, not the lease");
    };
    // The last acknowledged heartbeat left at most one heartbeat interval ago.
    let config = cluster.raft(leader).config().clone();
    assert!(remaining_ticks <= config.lease_ticks());
    assert!(remaining_ticks + u64::from(config.heartbeat_interval_ticks) >= config.lease_ticks());
    assert_eq!(
        cluster.raft(leader).status().lease_remaining_ticks,
        Some(remaining_ticks)
    );
    cluster.read_results.clear();
    // A ReadIndex read waits for its round even while the lease holds.
    cluster.read_index(leader, 2).unwrap();
    assert!(
        cluster.read_results.is_empty(),
        "ReadIndex skipped its round"
    );
    cluster.settle();
    assert_eq!(cluster.read_results.len(), 1);
    assert_eq!(cluster.read_results[0].1.served, ReadPath::Quorum);
    cluster.read_results.clear();

    let others: Vec<u64> = cluster.ids().into_iter().filter(|&i| i != leader).collect();
    cluster.partition(groups(&[&[leader], &others]));
    for _ in 0..9 {
        cluster.tick(leader);
        cluster.network.clear();
    }
    assert_eq!(cluster.raft(leader).role(), Role::Leader);
    assert_eq!(cluster.raft(leader).lease_remaining_ticks(), None);
    cluster.read_with(leader, 3, ReadMode::Lease).unwrap();
    assert!(
        cluster.read_results.is_empty(),
        "acks older than the lease must not answer a read"
    );
    // It fell back to a round, which completes once the partition heals.
    cluster.heal();
    cluster.settle();
    assert_eq!(cluster.read_results.len(), 1);
    assert_eq!(cluster.read_results[0].1.request_id, 3);
    assert_eq!(cluster.read_results[0].1.served, ReadPath::Quorum);
}

#[test]
fn lease_reads_take_a_round_where_leases_are_not_usable() {
    for configure in [
        (|c: &mut Config| c.allow_lease_reads = false) as fn(&mut Config),
        |c: &mut Config| c.check_quorum = false,
    ] {
        let mut cluster = Cluster::new(3, configure);
        elect(&mut cluster, 1);
        tick_and_settle(&mut cluster, 3);
        assert_eq!(cluster.raft(1).lease_remaining_ticks(), None);
        cluster.read_with(1, 1, ReadMode::Lease).unwrap();
        assert!(cluster.read_results.is_empty(), "served without a round");
        cluster.settle();
        assert_eq!(cluster.read_results.len(), 1);
        assert_eq!(cluster.read_results[0].1.served, ReadPath::Quorum);
    }
}

#[test]
fn reads_registered_together_share_one_heartbeat_round() {
    let mut cluster = Cluster::new(3, |c| c.check_quorum = true);
    elect(&mut cluster, 1);
    cluster.network.clear();
    // 100 reads between two Readys: the round goes out when the Ready is built, once.
    cluster.read_batch(1, 1..=100, ReadMode::ReadIndex).unwrap();
    let rounds: Vec<&Message> = cluster
        .network
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
        .collect();
    let mut to: Vec<u64> = rounds.iter().map(|m| m.to).collect();
    to.sort_unstable();
    assert_eq!(to, vec![2, 3], "one heartbeat per peer, not one per read");
    for heartbeat in &rounds {
        assert!(
            matches!(
                heartbeat.body,
                MessageBody::Heartbeat {
                    read_ctx: Some(_),
                    ..
                }
            ),
            "the round carries the newest read's context: {heartbeat}"
        );
    }
    assert_eq!(cluster.network.len(), 2, "nothing but the round was sent");
    assert!(
        cluster.read_results.is_empty(),
        "no quorum has answered yet"
    );
    // One peer's acknowledgement makes a quorum with the leader: all 100 are released, in order.
    let heartbeat = cluster.network.remove(0);
    cluster.network.clear();
    cluster.deliver(heartbeat);
    let ack = cluster.network.remove(0);
    cluster.deliver(ack);
    let ids: Vec<u64> = cluster
        .read_results
        .iter()
        .map(|(_, r)| r.request_id)
        .collect();
    assert_eq!(ids, (1..=100).collect::<Vec<u64>>());
    assert!(cluster
        .read_results
        .iter()
        .all(|(_, r)| r.served == ReadPath::Quorum));
}

#[test]
fn a_lost_read_round_is_recovered_by_the_periodic_heartbeat() {
    let mut cluster = Cluster::new(3, |c| {
        c.check_quorum = true;
        c.heartbeat_interval_ticks = 2;
    });
    elect(&mut cluster, 1);
    cluster.network.clear();
    cluster.read_batch(1, 1..=3, ReadMode::ReadIndex).unwrap();
    assert_eq!(cluster.network.len(), 2);
    cluster.network.clear(); // the round is lost
    cluster.settle();
    assert!(cluster.read_results.is_empty());
    // The next heartbeat interval, and no new read_index call.
    cluster.tick(1);
    cluster.tick(1);
    assert!(cluster.network.iter().all(|m| matches!(
        m.body,
        MessageBody::Heartbeat {
            read_ctx: Some(3),
            ..
        }
    )));
    cluster.settle();
    let ids: Vec<u64> = cluster
        .read_results
        .iter()
        .map(|(_, r)| r.request_id)
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
    // With nothing pending, heartbeats carry no context again.
    cluster.tick(1);
    cluster.tick(1);
    assert!(cluster
        .network
        .iter()
        .all(|m| matches!(m.body, MessageBody::Heartbeat { read_ctx: None, .. })));
}

#[test]
fn followers_report_their_applied_index_to_the_leader() {
    let mut cluster = Cluster::new(3, |c| c.check_quorum = true);
    elect(&mut cluster, 1);
    cluster.partition(groups(&[&[1, 2], &[3]]));
    let index = cluster.propose(1, "put x=1").unwrap();
    cluster.settle();
    // Followers apply an entry after their answer to the append that committed it, so the
    // next heartbeat's answer is what carries it.
    tick_and_settle(&mut cluster, 2);
    let status = cluster.raft(1).status();
    assert_eq!(status.applied_index, index);
    assert_eq!(status.progress[&2].applied_index, index);
    assert!(
        status.progress[&3].applied_index < index,
        "n3 never got the entry"
    );
    cluster.heal();
    tick_and_settle(&mut cluster, 4);
    assert_eq!(cluster.raft(1).status().progress[&3].applied_index, index);
    // A claim beyond the leader's log is refused.
    let term = cluster.raft(1).term();
    cluster.deliver(Message {
        from: 2,
        to: 1,
        term,
        body: MessageBody::HeartbeatResponse {
            sent_tick: 0,
            read_ctx: None,
            applied_index: index + 100,
            follower_tick: 0,
            follower_boot: 0,
        },
    });
    assert_eq!(cluster.raft(1).status().progress[&2].applied_index, index);
}

#[test]
fn a_restarted_node_refuses_votes_for_an_election_timeout_even_if_it_never_serves_leases() {
    // The vote fence protects the *leader's* lease, so it does not depend on this node's
    // `allow_lease_reads`.
    let mut cluster = Cluster::new(3, |c| {
        c.check_quorum = true;
        c.allow_lease_reads = false;
    });
    elect(&mut cluster, 1);
    let term = cluster.raft(1).term();
    cluster.crash(3);
    cluster.restart(3);
    let (last_index, last_term) = (cluster.raft(2).log().last_index(), term);
    let vote_request = Message {
        from: 2,
        to: 3,
        term: term + 1,
        body: MessageBody::RequestVote {
            last_index,
            last_term,
            leadership_transfer: false,
        },
    };
    cluster.network.clear();
    cluster.deliver(vote_request.clone());
    assert_eq!(
        cluster.raft(3).term(),
        term,
        "n3 adopted the candidate's term"
    );
    assert!(
        cluster.network.is_empty(),
        "n3 answered: {:?}",
        cluster.network
    );
    // Once an election timeout has passed, it votes again (with PreVote, a campaign of its own
    // in the meantime changes no term).
    let timeout = cluster.raft(3).config().election_timeout_ticks;
    for _ in 0..timeout {
        cluster.tick(3);
    }
    cluster.network.clear();
    cluster.deliver(vote_request);
    assert_eq!(cluster.raft(3).term(), term + 1);
    assert!(
        cluster
            .network
            .iter()
            .any(|m| m.to == 2
                && matches!(m.body, MessageBody::RequestVoteResponse { granted: true }))
    );
}

#[test]
fn leadership_transfer_hands_over_and_refuses_proposals_meanwhile() {
    let mut cluster = Cluster::new(3, |c| c.check_quorum = true);
    elect(&mut cluster, 1);
    // A lagging target is first brought up to date.
    cluster.partition(groups(&[&[1, 2], &[3]]));
    cluster.propose(1, "put a=1").unwrap();
    cluster.settle();
    cluster.heal();
    assert_eq!(cluster.transfer(1, 3), "ok");
    assert_eq!(
        cluster.propose(1, "put b=2"),
        Err(ProposeError::TransferInProgress)
    );
    cluster.settle();
    assert_eq!(cluster.raft(3).role(), Role::Leader);
    assert_eq!(cluster.raft(1).role(), Role::Follower);
    assert_eq!(cluster.raft(3).term(), 2);
    cluster.check().unwrap();

    // A transfer to an unreachable node is abandoned after an election timeout.
    cluster.partition(groups(&[&[1, 3], &[2]]));
    assert_eq!(cluster.transfer(3, 2), "ok");
    assert_eq!(
        cluster.propose(3, "x"),
        Err(ProposeError::TransferInProgress)
    );
    for _ in 0..10 {
        cluster.tick(3);
        cluster.settle();
    }
    assert!(cluster.propose(3, "x").is_ok());
}

#[test]
fn a_follower_behind_compaction_gets_an_install_snapshot() {
    let mut cluster = Cluster::new(3, |c| c.compaction_tail_entries = 0);
    elect(&mut cluster, 1);
    cluster.crash(3);
    for i in 0..10 {
        cluster.propose(1, &format!("put k{i}=v")).unwrap();
    }
    cluster.settle();
    assert_eq!(cluster.compact(1), "compacted to 11");
    assert_eq!(cluster.raft(1).log().first_index(), 12);
    cluster.restart(3);
    let mut lines = Vec::new();
    for _ in 0..5 {
        cluster.tick_all();
        lines.extend(cluster.deliver_all(1000));
    }
    assert!(lines.iter().any(|l| l.starts_with("1->3 InstallSnapshot")));
    cluster.propose(1, "put after=1").unwrap();
    cluster.settle();
    cluster.check().unwrap();
    assert_eq!(cluster.nodes[&3].sm, cluster.nodes[&1].sm);
    assert_eq!(cluster.nodes[&3].sm.applied_index, 12);
    assert_eq!(cluster.raft(3).log().first_index(), 12);
}

/// Node 3 misses the entries after `missed_after`; the leader then compacts at index 11 keeping
/// a tail of 5 entries (6..=11 minus the offset: entries 7..=11 are retained). Returns every
/// message line delivered while node 3 catches up.
fn catch_up_after_compaction_with_tail(missed_after: u64) -> (Cluster, Vec<String>) {
    let mut cluster = Cluster::new(3, |c| c.compaction_tail_entries = 5);
    elect(&mut cluster, 1);
    for i in 2..=11 {
        if i == missed_after + 1 {
            cluster.crash(3);
        }
        assert_eq!(cluster.propose(1, &format!("put k{i}=v")), Ok(i));
        cluster.settle();
    }
    assert_eq!(cluster.compact(1), "compacted to 11");
    assert_eq!(cluster.raft(1).log().snapshot_index(), 11);
    assert_eq!(
        cluster.raft(1).log().first_index(),
        7,
        "the tail behind the snapshot is retained"
    );
    cluster.restart(3);
    assert_eq!(cluster.raft(3).log().last_index(), missed_after);
    let mut lines = Vec::new();
    for _ in 0..5 {
        cluster.tick_all();
        lines.extend(cluster.deliver_all(1000));
    }
    cluster.propose(1, "put after=1").unwrap();
    lines.extend(cluster.deliver_all(1000));
    cluster.check().unwrap();
    assert_eq!(cluster.nodes[&3].sm, cluster.nodes[&1].sm);
    assert_eq!(cluster.nodes[&3].sm.applied_index, 12);
    (cluster, lines)
}

#[test]
fn a_follower_within_the_compaction_tail_catches_up_by_append_entries() {
    // Node 3 holds 1..=6: it missed 7..=11, all covered by the leader's snapshot at 11 but
    // still in the retained tail (the offset, 6, is its last entry).
    let (cluster, lines) = catch_up_after_compaction_with_tail(6);
    assert!(
        !lines.iter().any(|l| l.contains("InstallSnapshot")),
        "no snapshot needed within the tail:\n{}",
        lines.join("\n")
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("1->3 AppendEntries") && l.contains("prev=6@")));
    assert_eq!(
        cluster.raft(3).log().first_index(),
        1,
        "nothing was replaced"
    );
}

#[test]
fn a_follower_behind_the_compaction_tail_gets_an_install_snapshot() {
    // Node 3 holds 1..=5: it needs entry 6, which is at the offset and no longer retained.
    let (cluster, lines) = catch_up_after_compaction_with_tail(5);
    assert!(
        lines.iter().any(|l| l.starts_with("1->3 InstallSnapshot")),
        "{}",
        lines.join("\n")
    );
    assert_eq!(cluster.raft(3).log().first_index(), 12);
}

#[test]
fn a_leader_restarted_with_its_compaction_tail_still_serves_it() {
    let (mut cluster, _) = catch_up_after_compaction_with_tail(6);
    // The harness's disk keeps the same tail the leader's memory does: restart node 1 from it.
    cluster.crash(1);
    cluster.restart(1);
    let log = cluster.raft(1).log();
    assert_eq!(log.snapshot_index(), 11);
    assert!(
        log.first_index() <= 8,
        "tail restored: {}",
        log.first_index()
    );
    assert_eq!(
        log.term(log.first_index() - 1),
        Some(1),
        "offset term known"
    );
    assert_eq!(log.last_index(), 12);
    assert_eq!(cluster.nodes[&1].sm, cluster.nodes[&3].sm);
}

#[test]
fn a_single_node_cluster_elects_itself_and_commits_alone() {
    let mut cluster = Cluster::new(1, |_| {});
    for _ in 0..20 {
        cluster.tick(1);
    }
    assert_eq!(cluster.raft(1).role(), Role::Leader);
    let index = cluster.propose(1, "put x=1").unwrap();
    assert_eq!(cluster.nodes[&1].sm.applied_index, index);
    cluster.read_index(1, 5).unwrap();
    assert_eq!(cluster.read_results.len(), 1);
    // Restart from disk: everything committed is re-applied.
    cluster.crash(1);
    cluster.restart(1);
    assert_eq!(cluster.nodes[&1].sm.applied_index, index);
}

#[test]
fn appends_in_flight_per_follower_are_bounded() {
    let mut cluster = Cluster::new(3, |c| {
        c.max_inflight_appends = 3;
        c.max_entries_per_append = 1;
    });
    elect(&mut cluster, 1);
    cluster.propose(1, "warm").unwrap();
    cluster.settle(); // followers are now in the replicate state
    for i in 0..10 {
        cluster.propose(1, &format!("e{i}")).unwrap();
    }
    let to_two = cluster
        .network
        .iter()
        .filter(|m| m.to == 2 && m.to_string().contains("AppendEntries"))
        .count();
    assert_eq!(to_two, 3);
    cluster.settle();
    assert_eq!(cluster.nodes[&2].sm.applied_index, 12);
}

#[test]
fn uncommitted_command_bytes_are_bounded_and_freed_by_commit() {
    let mut cluster = Cluster::new(3, |c| c.max_uncommitted_bytes = 100);
    elect(&mut cluster, 1);
    let sixty = format!("put k={}", "v".repeat(54));
    assert_eq!(sixty.len(), 60);
    cluster.propose(1, &sixty).unwrap();
    assert_eq!(
        cluster.propose(1, &sixty),
        Err(ProposeError::BytesBackpressure {
            uncommitted_bytes: 60
        }),
        "60 + 60 bytes would pass the 100-byte budget"
    );
    cluster.settle();
    // Committing gave the bytes back.
    cluster.propose(1, &sixty).unwrap();
    cluster.settle();
    // A command larger than the whole budget still goes through when nothing is uncommitted.
    let large = format!("put big={}", "v".repeat(200));
    cluster.propose(1, &large).unwrap();
    assert!(matches!(
        cluster.propose(1, "put k=v"),
        Err(ProposeError::BytesBackpressure { .. })
    ));
    cluster.settle();
    cluster.check().unwrap();
    assert_eq!(cluster.nodes[&3].sm.applied_index, 4);
}

#[test]
fn a_repairing_node_neither_votes_nor_campaigns_until_its_log_is_resent() {
    let mut cluster = Cluster::new(3, classic);
    elect(&mut cluster, 1);
    for i in 0..3 {
        cluster.propose(1, &format!("w{i}")).unwrap();
    }
    cluster.settle();
    let committed = cluster.raft(1).log().commit_index();
    // Node 2 cut its log at damage: it once acknowledged entries up to three beyond what it holds
    // now (the harness cannot cut a log, so the gap is the leader's next three entries instead).
    cluster.raft_mut(2).start_repair(committed + 3);
    assert!(cluster.raft(2).is_repairing());
    // The leader goes away: node 3 campaigns, but node 2 refuses to vote, and never campaigns.
    cluster.partition(groups(&[&[1], &[2, 3]]));
    tick_and_settle(&mut cluster, 80);
    assert!(
        cluster.leaders().iter().all(|&id| id == 1),
        "no leader may be elected with a repairing node's vote: {:?}",
        cluster.leaders()
    );
    assert_eq!(cluster.raft(2).role(), Role::Follower);
    // The old leader returns and re-sends the missing entries; the repair ends, voting resumes.
    cluster.heal();
    tick_and_settle(&mut cluster, 40);
    let leader = cluster.leader().expect("a leader once healed");
    for i in 0..3 {
        cluster.propose(leader, &format!("again{i}")).unwrap();
    }
    cluster.settle();
    assert!(
        !cluster.raft(2).is_repairing(),
        "the log reached the index again"
    );
    let old = leader;
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != old).collect();
    cluster.partition(groups(&[&[old], &rest]));
    tick_and_settle(&mut cluster, 80);
    assert!(
        cluster.leaders().iter().any(|id| rest.contains(id)),
        "with the repair over, the other two elect a leader"
    );
}

#[test]
fn an_abandoned_ready_is_forgotten_and_replication_resumes() {
    let mut cluster = Cluster::new(3, classic);
    elect(&mut cluster, 1);
    let before = cluster.raft(1).log().last_index();
    // The leader's disk is full: the Ready holding its new entry cannot be persisted.
    cluster.auto_ready = false;
    let index = cluster.propose(1, "lost").unwrap();
    let ready = cluster.raft_mut(1).ready();
    assert_eq!(ready.entries.last().map(|e| e.index), Some(index));
    cluster.raft_mut(1).abandon_ready();
    drop(ready); // nothing of it is sent or applied
    cluster.auto_ready = true;
    assert_eq!(
        cluster.raft(1).log().last_index(),
        before,
        "the unpersisted entry is gone"
    );
    assert_eq!(
        cluster.raft(1).role(),
        Role::Leader,
        "a full disk does not depose the leader"
    );
    // Space is back: the next proposal takes the same index and commits everywhere.
    let again = cluster.propose(1, "kept").unwrap();
    assert_eq!(again, index);
    tick_and_settle(&mut cluster, 5);
    for id in 1..=3 {
        assert_eq!(cluster.raft(id).log().commit_index(), index, "node {id}");
        let entry = cluster.raft(id).log().entry(index).unwrap();
        assert_eq!(
            entry.payload,
            EntryPayload::Command(b"kept".to_vec()),
            "node {id}"
        );
    }

    // A follower's disk is full: the entries it received are dropped and sent again.
    cluster.auto_ready = false;
    cluster.propose(1, "to follower").unwrap();
    cluster.handle_ready(1);
    cluster.deliver_round();
    let follower_ready = cluster.raft_mut(2).ready();
    assert!(!follower_ready.entries.is_empty());
    cluster.raft_mut(2).abandon_ready();
    drop(follower_ready);
    assert_eq!(cluster.raft(2).log().last_index(), index);
    cluster.handle_ready(3);
    cluster.auto_ready = true;
    tick_and_settle(&mut cluster, 10);
    let last = cluster.raft(1).log().last_index();
    assert_eq!(last, index + 1);
    assert_eq!(
        cluster.raft(2).log().last_index(),
        last,
        "re-sent to the follower"
    );
    assert_eq!(cluster.raft(2).log().commit_index(), last);
}

/// How stale node `id`'s applied state may be, in its ticks.
fn staleness(cluster: &Cluster, id: u64) -> Option<u64> {
    let raft = cluster.raft(id);
    raft.staleness_bound_ticks(raft.status().applied_index)
}

#[test]
fn a_followers_staleness_bound_counts_from_a_moment_it_dated_itself() {
    let mut cluster = Cluster::new(3, |_| {});
    elect(&mut cluster, 1);
    tick_and_settle(&mut cluster, 4);
    let fresh = staleness(&cluster, 2).expect("a follower that hears its leader is bounded");
    assert!(
        fresh <= 4,
        "fresh after a heartbeat exchange: {fresh} ticks"
    );
    // Silence from the leader: the bound grows tick by tick.
    for _ in 0..5 {
        cluster.tick(2);
    }
    assert_eq!(staleness(&cluster, 2), Some(fresh + 5));
    // A heartbeat held in the network while the follower ticks 6 times, then delivered: it
    // vouches only for the leader's state when it was produced, so the bound stays at least 6.
    cluster.settle();
    tick_and_settle(&mut cluster, 2);
    cluster.tick(1);
    cluster.tick(1);
    let held: Vec<Message> = cluster
        .network
        .drain(..)
        .filter(|m| m.to == 2 && matches!(m.body, MessageBody::Heartbeat { .. }))
        .collect();
    assert!(!held.is_empty(), "the leader sent node 2 a heartbeat");
    for _ in 0..6 {
        cluster.tick(2);
    }
    for heartbeat in held {
        cluster.deliver(heartbeat);
    }
    let late = staleness(&cluster, 2).expect("still bounded");
    assert!(
        late >= 6,
        "a late heartbeat must not look fresh: {late} ticks"
    );
    cluster.check().unwrap();
}

#[test]
fn a_leader_cut_off_from_its_quorum_knows_its_state_grows_stale() {
    let mut cluster = Cluster::new(3, |_| {});
    elect(&mut cluster, 1);
    tick_and_settle(&mut cluster, 4);
    let fresh = staleness(&cluster, 1).expect("a leader heard by a quorum is bounded");
    assert!(fresh <= 2, "{fresh}");
    cluster.partition(groups(&[&[1], &[2, 3]]));
    for _ in 0..6 {
        cluster.tick(1);
        cluster.settle();
    }
    assert_eq!(cluster.raft(1).role(), Role::Leader, "not yet stepped down");
    let stale = staleness(&cluster, 1).expect("bounded");
    assert!(stale >= 6, "no quorum for 6 ticks: {stale}");
}

#[test]
fn a_restarted_follower_ignores_ticks_echoed_from_its_previous_life() {
    let mut cluster = Cluster::new(3, |_| {});
    elect(&mut cluster, 1);
    tick_and_settle(&mut cluster, 6);
    assert!(staleness(&cluster, 2).is_some());
    let old_life_ticks = 8;
    cluster.crash(2);
    cluster.restart(2);
    // The leader still holds a tick of node 2's previous life, and node 2's answers are lost:
    // every heartbeat echoes that old tick, while node 2's new life counts past it.
    let mut echoed_old = false;
    for _ in 0..2 * old_life_ticks {
        cluster.tick(1);
        cluster.tick(2);
        while !cluster.network.is_empty() {
            let message = cluster.network.remove(0);
            if message.from == 2 {
                continue; // lost
            }
            echoed_old |= message.to == 2
                && matches!(
                    message.body,
                    MessageBody::Heartbeat {
                        freshness: Some(_),
                        ..
                    }
                );
            cluster.deliver(message);
        }
    }
    assert!(echoed_old, "the leader echoed a tick of the previous life");
    assert!(cluster.raft(2).status().applied_index > 0);
    assert_eq!(
        staleness(&cluster, 2),
        None,
        "no tick of this life was echoed yet"
    );
    // Once the leader has an answer of this life, the bound is back.
    cluster.settle();
    tick_and_settle(&mut cluster, 4);
    assert!(
        staleness(&cluster, 2).is_some(),
        "{:?}",
        cluster.status_lines(None)
    );
}

/// The messages `id` may send before persisting, taken as an asynchronous driver takes them.
fn taken_early(cluster: &mut Cluster, id: u64) -> Vec<Message> {
    cluster.raft_mut(id).take_messages_to_send_now()
}

#[test]
fn a_leader_sends_appends_before_its_own_write_and_counts_itself_only_once_durable() {
    let mut cluster = Cluster::new(3, classic);
    elect(&mut cluster, 1);
    cluster.auto_ready = false;
    let index = cluster.propose(1, "early").unwrap();
    // The appends leave at once, and the leader's write of the entry starts (a Ready not yet
    // advanced).
    let early = taken_early(&mut cluster, 1);
    let ready = cluster.raft_mut(1).ready();
    assert_eq!(ready.entries.last().map(|e| e.index), Some(index));
    assert!(
        !cluster.raft(1).has_ready(),
        "one Ready in flight at a time"
    );
    let carrying: Vec<u64> = early
        .iter()
        .filter(|m| {
            matches!(&m.body, MessageBody::AppendEntries { entries, .. }
                if entries.iter().any(|e| e.index == index))
        })
        .map(|m| m.to)
        .collect();
    assert_eq!(carrying, vec![2, 3], "both followers get the entry early");
    assert!(
        ready.messages.iter().all(|m| !matches!(
            &m.body,
            MessageBody::AppendEntries { entries, .. } if !entries.is_empty()
        )),
        "taken once: the Ready does not repeat them"
    );
    // One follower persists and acknowledges: with the leader's own write still running, one
    // acknowledgement is not a quorum of durable logs.
    cluster.network.extend(early);
    cluster.deliver_round();
    cluster.handle_ready(2);
    let acks: Vec<Message> = std::mem::take(&mut cluster.network)
        .into_iter()
        .filter(|m| m.from == 2)
        .collect();
    assert!(!acks.is_empty());
    for ack in acks {
        cluster.deliver(ack);
    }
    assert!(
        cluster.raft(1).log().commit_index() < index,
        "the leader's own log counts only once its write is durable"
    );
    // The leader's write completes: now it is a quorum.
    cluster
        .nodes
        .get_mut(&1)
        .unwrap()
        .disk
        .append(&ready.entries);
    cluster.raft_mut(1).advance();
    assert_eq!(cluster.raft(1).log().commit_index(), index);
    cluster.auto_ready = true;
    tick_and_settle(&mut cluster, 3);
}

#[test]
fn followers_commit_an_early_sent_entry_without_the_leaders_disk() {
    let mut cluster = Cluster::new(3, classic);
    elect(&mut cluster, 1);
    cluster.auto_ready = false;
    let index = cluster.propose(1, "both followers").unwrap();
    let early = taken_early(&mut cluster, 1);
    let _stuck = cluster.raft_mut(1).ready();
    cluster.network.extend(early);
    cluster.deliver_round();
    cluster.handle_ready(2);
    cluster.handle_ready(3);
    cluster.deliver_round();
    assert_eq!(
        cluster.raft(1).log().commit_index(),
        index,
        "two durable followers are a quorum of three (thesis §10.2.1)"
    );
}

#[test]
fn votes_and_acknowledgements_never_leave_before_the_write() {
    let mut cluster = Cluster::new(3, classic);
    cluster.auto_ready = false;
    cluster.campaign(1);
    assert!(
        taken_early(&mut cluster, 1).is_empty(),
        "a vote request waits for the durable term and self-vote"
    );
    cluster.handle_ready(1);
    cluster.deliver_round();
    for follower in [2, 3] {
        assert!(
            taken_early(&mut cluster, follower).is_empty(),
            "a granted vote waits for the durable vote"
        );
    }
    cluster.handle_all_ready();
    cluster.auto_ready = true;
    cluster.settle();
    assert_eq!(cluster.raft(1).role(), Role::Leader);
    cluster.auto_ready = false;
    cluster.propose(1, "x").unwrap();
    cluster.send_now(1);
    cluster.deliver_round();
    assert!(
        taken_early(&mut cluster, 2).is_empty(),
        "an append acknowledgement promises a durable entry: it waits"
    );
}

#[test]
fn heartbeats_leave_while_the_leaders_write_is_in_flight() {
    let mut cluster = Cluster::new(3, classic);
    elect(&mut cluster, 1);
    cluster.auto_ready = false;
    cluster.propose(1, "slow disk").unwrap();
    taken_early(&mut cluster, 1);
    let _stuck = cluster.raft_mut(1).ready();
    let mut heartbeats = 0;
    for _ in 0..10 {
        cluster.raft_mut(1).tick();
        heartbeats += taken_early(&mut cluster, 1)
            .iter()
            .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
            .count();
    }
    assert!(
        heartbeats >= 2,
        "heartbeats flow during a slow fsync: {heartbeats}"
    );
}

#[test]
fn a_leader_that_cannot_persist_entries_it_already_sent_steps_down_and_they_survive() {
    let mut cluster = Cluster::new(3, classic);
    elect(&mut cluster, 1);
    let term = cluster.raft(1).term();
    cluster.auto_ready = false;
    let index = cluster.propose(1, "sent then disk full").unwrap();
    let early = taken_early(&mut cluster, 1);
    let _lost = cluster.raft_mut(1).ready();
    cluster.network.extend(early);
    cluster.deliver_round();
    cluster.handle_ready(2);
    cluster.handle_ready(3);
    // The leader's disk is full: its write of the entry fails.
    let abandoned = cluster.raft_mut(1).abandon_ready();
    assert_eq!(abandoned.dropped_from, Some(index));
    assert!(abandoned.stepped_down);
    assert_eq!(cluster.raft(1).role(), Role::Follower);
    assert_eq!(
        cluster.raft(1).term(),
        term,
        "stays in its term: it can no longer write another entry at that index in it"
    );
    assert!(
        cluster.raft_mut(1).propose(b"reuse".to_vec()).is_err(),
        "no longer accepts proposals"
    );
    cluster.network.clear(); // the followers' acknowledgements reach no leader
    cluster.auto_ready = true;
    for _ in 0..60 {
        cluster.tick_all();
        cluster.settle();
        cluster.check().unwrap();
    }
    let leader = cluster.leader().expect("a new leader");
    assert!(cluster.raft(leader).term() > term);
    for id in 1..=3 {
        let entry = cluster.raft(id).log().entry(index).expect("entry kept");
        assert_eq!(
            entry.payload,
            EntryPayload::Command(b"sent then disk full".to_vec()),
            "node {id}: the followers' copy committed under the next leader"
        );
        assert!(cluster.raft(id).log().commit_index() >= index);
    }
}

#[test]
fn proposals_between_two_batches_reach_each_follower_in_one_append() {
    let mut cluster = Cluster::new(3, classic);
    elect(&mut cluster, 1);
    cluster.auto_ready = false;
    let first = cluster.propose(1, "a").unwrap();
    for command in ["b", "c", "d", "e"] {
        cluster.propose(1, command).unwrap();
    }
    let appends: Vec<(u64, Vec<u64>)> = taken_early(&mut cluster, 1)
        .into_iter()
        .filter_map(|m| match m.body {
            MessageBody::AppendEntries { entries, .. } => {
                Some((m.to, entries.iter().map(|e| e.index).collect()))
            }
            _ => None,
        })
        .collect();
    let all: Vec<u64> = (first..first + 5).collect();
    assert_eq!(appends, vec![(2, all.clone()), (3, all)]);
    cluster.auto_ready = true;
    tick_and_settle(&mut cluster, 3);
    assert_eq!(cluster.raft(3).log().commit_index(), first + 4);
}
