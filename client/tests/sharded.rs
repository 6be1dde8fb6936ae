//! The client on a sharded cluster of real nodes, in process: five nodes, eight shards of three
//! replicas. The client routes each key to its shard's leader (no node forwards for it), while a
//! client pinned to one node is forwarded for the shards that node does not host; what one
//! client writes another reads; a scan covers every shard in key order; sessions are per group,
//! and each group applies a resent write once.

use std::collections::BTreeMap;
use std::time::Duration;

use ringleader_client::{Client, ClientConfig, Error, ReadLevel, Ring, TokioConnector, WriteAck};
use ringleader_node::{NodeConfig, RunningNode};
use ringleader_protocol::connection::Connection;
use ringleader_protocol::{Header, Limits, Request, Response, Session};
use storage::StdFs;

const NODES: u64 = 5;
const SHARDS: u32 = 8;
const REPLICAS: u32 = 3;

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// A running cluster; its nodes stop when it is dropped with the runtime.
struct Cluster {
    _dir: tempfile::TempDir,
    _nodes: BTreeMap<u64, RunningNode>,
    peers: BTreeMap<u64, String>,
}

async fn start_cluster() -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let peers: BTreeMap<u64, String> = (1..=NODES).map(|id| (id, free_addr())).collect();
    let mut nodes = BTreeMap::new();
    for id in 1..=NODES {
        let mut config = NodeConfig::new(
            id,
            peers.clone(),
            dir.path().join(format!("node-{id}")),
            StdFs::shared(),
        )
        .with_shards(SHARDS, REPLICAS);
        // Short ticks: elections in a few tens of milliseconds.
        config.tick = Duration::from_millis(10);
        config.net.cluster_secret = Some(
            ringleader_node::auth::ClusterSecret::from_bytes(
                b"the sharded client test cluster's shared secret".to_vec(),
            )
            .expect("a long enough secret"),
        );
        let node = ringleader_node::start(TokioConnector, config)
            .await
            .expect("node starts");
        nodes.insert(id, node);
    }
    Cluster {
        _dir: dir,
        _nodes: nodes,
        peers,
    }
}

impl Cluster {
    fn client(&self) -> Client {
        Client::new(ClientConfig::new(self.peers.values().cloned().collect())).expect("client")
    }

    fn pinned(&self, node: u64) -> Client {
        let mut config = ClientConfig::new(vec![self.peers[&node].clone()]);
        config.pinned = true;
        Client::new(config).expect("client")
    }
}

fn key(i: usize) -> String {
    format!("key-{i:03}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_goes_straight_to_each_keys_leader_and_a_pinned_client_is_forwarded() {
    let cluster = start_cluster().await;
    let writer = cluster.client();
    let keys = 80;
    for i in 0..keys {
        let written = writer
            .put_with(key(i), format!("value {i}"), WriteAck::Majority)
            .await
            .unwrap_or_else(|e| panic!("put {}: {e}", key(i)));
        let receipt = written.receipt.expect("a write has a receipt");
        assert_eq!(
            receipt.forwarded_by,
            None,
            "{} went to its group's leader, not through another node",
            key(i)
        );
    }
    let ring: Ring = writer.ring().expect("the client learned the ring");
    assert_eq!(ring.shards().len(), SHARDS as usize);
    let groups_written: std::collections::BTreeSet<u64> = (0..keys)
        .map(|i| ring.shard_for_key(key(i).as_bytes()))
        .collect();
    assert_eq!(
        groups_written.len(),
        SHARDS as usize,
        "every shard was written"
    );

    // Another client reads what the first wrote, from each key's leader.
    let reader = cluster.client();
    for i in 0..keys {
        let read = reader
            .read(key(i), ReadLevel::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("get {}: {e}", key(i)));
        assert_eq!(
            read.value.map(|v| v.value),
            Some(format!("value {i}").into_bytes())
        );
        assert_eq!(read.receipt.and_then(|r| r.forwarded_by), None);
    }

    // A client pinned to node 1 is forwarded for the shards node 1 does not host.
    let pinned = cluster.pinned(1);
    let hosted = ring.groups_on(1);
    let mut forwarded = 0;
    for i in 0..keys {
        let group = ring.shard_for_key(key(i).as_bytes());
        if hosted.contains(&group) {
            continue; // node 1 answers these itself, or redirects (an error when pinned)
        }
        let written = pinned
            .put_with(key(i), "via node 1", WriteAck::Majority)
            .await
            .unwrap_or_else(|e| panic!("pinned put {}: {e}", key(i)));
        assert_eq!(written.receipt.and_then(|r| r.forwarded_by), Some(1));
        forwarded += 1;
    }
    assert!(forwarded > 0, "node 1 hosts every shard: {hosted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_returns_the_keys_of_every_shard_in_order_cut_at_the_limit() {
    let cluster = start_cluster().await;
    let client = cluster.client();
    let keys = 60;
    for i in 0..keys {
        client.put(key(i), format!("value {i}")).await.expect("put");
    }
    client.put("other-prefix", "x").await.expect("put");
    let expected: Vec<Vec<u8>> = (0..keys).map(|i| key(i).into_bytes()).collect();

    let all = client
        .scan("key-", 1000, ReadLevel::Linearizable)
        .await
        .expect("scan");
    let scanned: Vec<Vec<u8>> = all.entries.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(scanned, expected, "every key of the prefix, in key order");
    assert!(!all.truncated);
    assert_eq!(all.entries[7].1.value, b"value 7");

    let cut = client
        .scan("key-", 25, ReadLevel::Linearizable)
        .await
        .expect("scan");
    let scanned: Vec<Vec<u8>> = cut.entries.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(scanned, expected[..25], "the first 25 keys over all shards");
    assert!(cut.truncated);

    assert_eq!(
        client.scan("key-", 0, ReadLevel::Linearizable).await,
        Err(Error::Invalid("a scan's limit must be at least 1".into()))
    );
}

/// The client opens one session per group it writes to; each group applies a resent write
/// (same session, same sequence number: an answer that was lost) once, and knows only its own
/// sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_per_group_and_each_group_applies_a_resent_write_once() {
    let cluster = start_cluster().await;
    let client = cluster.client();
    client.put(key(0), "first").await.expect("put");
    let ring = client.ring().expect("ring");
    let g1 = ring.shard_for_key(key(0).as_bytes());
    let other = (1..)
        .map(key)
        .find(|k| ring.shard_for_key(k.as_bytes()) != g1)
        .expect("a key in another group");
    let g2 = ring.shard_for_key(other.as_bytes());
    client.put(other.as_str(), "second").await.expect("put");
    assert!(client.client_id_in(g1).is_some() && client.client_id_in(g2).is_some());
    assert!(client.session_position_in(g1) > 0 && client.session_position_in(g2) > 0);

    // The protocol underneath: a session registered in each group, a write resent in each.
    for (group, k) in [(g1, key(0)), (g2, other.clone())] {
        let written = client
            .put_with(k.as_str(), "again", WriteAck::Majority)
            .await
            .expect("put");
        let leader = written.receipt.expect("receipt").node;
        let connection = Connection::open(
            &TokioConnector,
            &cluster.peers[&leader],
            Limits::default().max_frame_bytes,
        )
        .await
        .expect("connect to the leader");
        let header = Header {
            group,
            epoch: ring.epoch(),
        };
        let client_id = match connection
            .call_in(header, Request::RegisterSession)
            .await
            .expect("answer")
        {
            (Response::SessionRegistered { client_id }, _) => client_id,
            other => panic!("registering in group {group}: {other:?}"),
        };
        let put = |value: &str| Request::Put {
            key: k.clone().into_bytes(),
            value: value.into(),
            session: Some(Session {
                client_id,
                seq: 1,
                first_unacked_seq: 1,
                opened_after: None,
            }),
            ack: WriteAck::Majority,
        };
        let first = connection
            .call_in(header, put("once"))
            .await
            .expect("answer");
        let resent = connection
            .call_in(header, put("twice?"))
            .await
            .expect("answer");
        assert!(matches!(first.0, Response::Written { .. }), "{first:?}");
        assert_eq!(first.0, resent.0, "the resend got the first outcome");
        let value = client.get(k.as_str()).await.expect("get").expect("a value");
        assert_eq!(value.value, b"once", "applied once in group {group}");
    }
}

/// Figures, not a check: the mean put latency of a client that routes by the ring and of one
/// pinned to node 1 (forwarded for the shards node 1 does not host), 400 sequential puts, twice
/// each.
/// Run: `cargo test -p ringleader-client --release --test sharded -- --ignored --nocapture`
#[ignore = "a measurement; run it by hand (see the doc comment)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_routed_and_forwarded_put_latency() {
    let cluster = start_cluster().await;
    let routed = cluster.client();
    let pinned = cluster.pinned(1);
    // Warm up: elections, sessions in every group, the ring.
    for i in 0..64 {
        routed.put(key(i), "warm").await.expect("put");
    }
    let ring = routed.ring().expect("ring");
    let hosted = ring.groups_on(1);
    let remote: Vec<String> = (0..)
        .map(key)
        .filter(|k| !hosted.contains(&ring.shard_for_key(k.as_bytes())))
        .take(400)
        .collect();
    for k in remote.iter().take(16) {
        pinned.put(k.as_str(), "warm").await.expect("put");
    }
    // Alternated, twice, so that neither order nor the machine's other load favours one.
    let rounds = [
        ("routed", &routed),
        ("pinned to node 1", &pinned),
        ("pinned to node 1", &pinned),
        ("routed", &routed),
    ];
    for (name, client) in rounds {
        let started = std::time::Instant::now();
        let mut forwarded = 0;
        for k in &remote {
            let written = client
                .put_with(k.as_str(), "v", WriteAck::Majority)
                .await
                .expect("put");
            forwarded += usize::from(written.receipt.and_then(|r| r.forwarded_by).is_some());
        }
        let mean_us = started.elapsed().as_micros() / remote.len() as u128;
        println!(
            "{name}: {} puts to shards node 1 does not host, mean {mean_us} us, {forwarded} forwarded",
            remote.len()
        );
    }
}
