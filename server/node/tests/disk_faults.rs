//! A full disk refuses writes and nothing else: the write that hits `ENOSPC` is answered with a
//! typed `DiskFull` error (and certainly not applied), the node keeps serving reads, status and
//! heartbeats, and writes succeed again once space is back, with no restart. A follower whose
//! disk fills falls behind and catches up. (A failed fsync is different: the node stops.)
//! Faults come from `storage::fault::FaultyFs` over the real disk; `server/tests/tmpfs_full.rs`
//! does the same on a real full tmpfs.
//!
//! A slow disk delays only what waits for it: the leader's writer thread sits in a long fsync
//! while the node goes on heartbeating, answering status and saving snapshots off its loop, so
//! no follower starts an election and the writes complete once the fsyncs do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ringleader_client::{
    Client, ClientConfig, Error, GroupStatus, NodeStatus, TokioConnector, ONLY_GROUP,
};
use ringleader_node::NodeConfig;
use ringleader_node::RunningNode;
use storage::fault::{DiskFault, FaultyFs};
use storage::StdFs;

/// A node's view of group 0, the only group a node hosts until sharding (a status without it
/// fails the test).
fn group0(status: &NodeStatus) -> &GroupStatus {
    status
        .group(ONLY_GROUP)
        .unwrap_or_else(|| panic!("node {} reports no group 0: {status:?}", status.id))
}

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

async fn start_cluster(
    dir: &std::path::Path,
    nodes: u64,
) -> (
    BTreeMap<u64, RunningNode>,
    BTreeMap<u64, Arc<DiskFault>>,
    Vec<String>,
) {
    start_cluster_with(dir, nodes, |_| {}).await
}

async fn start_cluster_with(
    dir: &std::path::Path,
    nodes: u64,
    configure: impl Fn(&mut NodeConfig),
) -> (
    BTreeMap<u64, RunningNode>,
    BTreeMap<u64, Arc<DiskFault>>,
    Vec<String>,
) {
    let peers: BTreeMap<u64, String> = (1..=nodes).map(|id| (id, free_addr())).collect();
    let mut running = BTreeMap::new();
    let mut faults = BTreeMap::new();
    for id in 1..=nodes {
        let (fs, fault) = FaultyFs::wrap(StdFs::shared());
        let mut config = NodeConfig::new(id, peers.clone(), dir.join(format!("node-{id}")), fs);
        config.tick = Duration::from_millis(10);
        config.net.cluster_secret = Some(
            ringleader_node::auth::ClusterSecret::from_bytes(
                b"the disk-full test cluster's shared secret".to_vec(),
            )
            .expect("a long enough secret"),
        );
        configure(&mut config);
        let node = ringleader_node::start(TokioConnector, config)
            .await
            .expect("node starts");
        running.insert(id, node);
        faults.insert(id, fault);
    }
    (running, faults, peers.into_values().collect())
}

fn client(endpoints: Vec<String>) -> Client<TokioConnector> {
    let mut config = ClientConfig::new(endpoints);
    config.request_timeout = Duration::from_secs(5);
    Client::new(config).expect("client")
}

/// Retries a write until it succeeds (the node refuses writes for a moment after a full disk).
async fn put_eventually(client: &Client<TokioConnector>, key: &str, value: &str) -> u64 {
    for _ in 0..100 {
        match client.put(key, value).await {
            Ok(version) => return version,
            Err(Error::DiskFull { .. }) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(other) => panic!("put {key}: {other}"),
        }
    }
    panic!("writes never resumed after space came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_serving_reads_and_recovers_without_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut nodes, faults, endpoints) = start_cluster(dir.path(), 1).await;
    let client = client(endpoints.clone());
    client
        .put("kept", "before")
        .await
        .expect("put before the disk fills");

    faults[&1].set_full(true);
    match client.put("refused", "x").await {
        Err(Error::DiskFull { node, message }) => {
            assert_eq!(node, endpoints[0]);
            assert!(message.contains("not applied"), "{message}");
        }
        other => panic!("expected DiskFull, got {other:?}"),
    }
    // A second write while the disk is still full is refused too, and the node is still up.
    assert!(matches!(
        client.put("refused-2", "y").await,
        Err(Error::DiskFull { .. })
    ));
    let read = client.get("kept").await.expect("reads work on a full disk");
    assert_eq!(read.map(|v| v.value), Some(b"before".to_vec()));
    assert_eq!(
        client.get("refused").await.expect("read"),
        None,
        "certainly not applied"
    );
    let status = client
        .status_of(&endpoints[0])
        .await
        .expect("status on a full disk");
    assert_eq!(group0(&status).role, "leader");

    faults[&1].set_full(false);
    put_eventually(&client, "after", "space is back").await;
    assert_eq!(client.get("refused-2").await.expect("read"), None);

    // Everything acknowledged is on disk: a restart finds it, and nothing refused.
    nodes.remove(&1).expect("node").shutdown().await;
    // (On a fresh port: the old listener may linger for a moment after shutdown.)
    let (_node, _fault, endpoints) = restart_single(dir.path(), &free_addr()).await;
    let client = client_for(endpoints);
    assert_eq!(
        client.get("kept").await.unwrap().map(|v| v.value),
        Some(b"before".to_vec())
    );
    assert_eq!(
        client.get("after").await.unwrap().map(|v| v.value),
        Some(b"space is back".to_vec())
    );
    assert_eq!(client.get("refused").await.unwrap(), None);
}

async fn restart_single(
    dir: &std::path::Path,
    addr: &str,
) -> (RunningNode, Arc<DiskFault>, Vec<String>) {
    let (fs, fault) = FaultyFs::wrap(StdFs::shared());
    let peers: BTreeMap<u64, String> = [(1, addr.to_string())].into();
    let mut config = NodeConfig::new(1, peers, dir.join("node-1"), fs);
    config.tick = Duration::from_millis(10);
    let node = ringleader_node::start(TokioConnector, config)
        .await
        .expect("restart");
    (node, fault, vec![addr.to_string()])
}

fn client_for(endpoints: Vec<String>) -> Client<TokioConnector> {
    client(endpoints)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_full_disk_falls_behind_is_reported_lagging_and_catches_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, faults, endpoints) = start_cluster(dir.path(), 3).await;
    let client = client(endpoints.clone());
    put_eventually(&client, "first", "1").await;
    let leader = wait_leader(&client, &endpoints).await;
    let follower = (1..=3u64).find(|&id| id != leader).expect("a follower");

    faults[&follower].set_full(true);
    for i in 0..50 {
        client
            .put(format!("k{i}"), "v")
            .await
            .expect("the other two are a quorum");
    }
    let behind = client
        .status_of(&endpoints[(follower - 1) as usize])
        .await
        .expect("status");
    let leading = client
        .status_of(&endpoints[(leader - 1) as usize])
        .await
        .expect("status");
    assert!(
        group0(&behind).applied_index < group0(&leading).commit_index,
        "the full follower cannot keep up"
    );
    // The leader's status says so: the follower is lagging (the group is degraded).
    let lagging = |status: &ringleader_client::NodeStatus| {
        group0(status)
            .replicas
            .iter()
            .any(|r| r.node == follower && r.lagging)
    };
    let mut reported = false;
    for _ in 0..100 {
        let leading = client
            .status_of(&endpoints[(leader - 1) as usize])
            .await
            .unwrap();
        assert!(
            group0(&leading)
                .replicas
                .iter()
                .all(|r| r.node == follower || !r.lagging),
            "only the full follower lags: {:?}",
            group0(&leading).replicas
        );
        if lagging(&leading) {
            reported = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reported,
        "the leader never reported the stuck follower as lagging"
    );

    faults[&follower].set_full(false);
    for _ in 0..200 {
        let caught_up = client
            .status_of(&endpoints[(follower - 1) as usize])
            .await
            .unwrap();
        let leading = client
            .status_of(&endpoints[(leader - 1) as usize])
            .await
            .unwrap();
        if group0(&caught_up).applied_index == group0(&leading).commit_index
            && group0(&caught_up).digest == group0(&leading).digest
            && !lagging(&leading)
        {
            drop(nodes);
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the follower never caught up (and stopped lagging) once space was back");
}

async fn wait_leader(client: &Client<TokioConnector>, endpoints: &[String]) -> u64 {
    for _ in 0..200 {
        for endpoint in endpoints {
            if let Ok(status) = client.status_of(endpoint).await {
                if group0(&status).role == "leader" {
                    return status.id;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_fsync_on_the_leader_costs_no_election_and_snapshots_are_saved_off_the_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Elections after 100-200 ms of silence; snapshots every few entries.
    let (nodes, faults, endpoints) = start_cluster_with(dir.path(), 3, |config| {
        config.snapshot_every_entries = 4;
    })
    .await;
    let client = client(endpoints.clone());
    put_eventually(&client, "first", "1").await;
    let leader = wait_leader(&client, &endpoints).await;
    let leader_endpoint = endpoints[(leader - 1) as usize].clone();
    let term_before = group0(&client.status_of(&leader_endpoint).await.expect("status")).term;

    // Every fsync of the leader now takes 600 ms: three to six election timeouts.
    faults[&leader].set_sync_delay(Duration::from_millis(600));
    let mut writes = Vec::new();
    for i in 0..8 {
        let client = client.clone();
        writes.push(tokio::spawn(async move {
            client.put(format!("slow-{i}"), "v").await
        }));
    }
    // While the leader's writer sits in fsyncs (snapshot saves among them), the node answers
    // status at once and every node keeps the same leader in the same term.
    let stall_ends = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < stall_ends {
        for endpoint in &endpoints {
            let status = client
                .status_of(endpoint)
                .await
                .expect("status during the stall");
            let group = group0(&status);
            assert_eq!(
                (group.term, group.leader),
                (term_before, Some(leader)),
                "node {}: a slow fsync on the leader caused an election",
                status.id
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for write in writes {
        write
            .await
            .expect("task")
            .expect("the write completes once its fsync does");
    }
    faults[&leader].set_sync_delay(Duration::ZERO);
    let status = client.status_of(&leader_endpoint).await.expect("status");
    assert!(
        group0(&status).snapshot_index > 0,
        "the leader saved snapshots during the stall: {:?}",
        group0(&status)
    );
    drop(nodes);
}
