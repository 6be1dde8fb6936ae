//! A sharded cluster of real processes (issue 16): 5 nodes, 8 shards of 3 replicas. Every node
//! leads at least one shard once leadership settles on the ring's preferences; `status --json`
//! shows every shard with its range, replicas, leader and keys, and each node's groups with
//! their range and epoch; any node accepts any key (a pinned client's request for a shard its
//! node does not host is forwarded, and the receipt says by whom); `scan` fans out to every
//! shard and merges in key order; a node restarted with another shard count refuses to start.

mod common;

use std::time::{Duration, Instant};

use common::*;

const NODES: u64 = 5;

fn status_json(endpoints: &str) -> serde_json::Value {
    let (_, stdout, stderr) = cli(&["status", "--json"], endpoints);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout:?} {stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_eight_shards_spread_leadership_route_forward_and_scan() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(NODES as u16);
    let shape = ["--shards", "8", "--replicas", "3", "--tick-ms", "20"];
    let mut nodes: Vec<KillOnDrop> = (1..=NODES)
        .map(|id| KillOnDrop(serve(dir.path(), base, id, NODES, &shape)))
        .collect();
    let endpoint_list: Vec<String> = (1..=NODES).map(|id| addr(base, id)).collect();
    let endpoints = endpoint_list.join(",");

    // Every shard gets a leader, and every node leads at least one (the preferred-leader
    // hand-over runs every four election timeouts: a few seconds at most).
    let deadline = Instant::now() + Duration::from_secs(40);
    let doc = loop {
        let doc = status_json(&endpoints);
        let shards_led = doc["shards"].as_array().is_some_and(|shards| {
            shards.len() == 8 && shards.iter().all(|s| !s["leader"].is_null())
        });
        let every_node_leads = doc["nodes"].as_array().is_some_and(|nodes| {
            nodes.len() == NODES as usize
                && nodes
                    .iter()
                    .all(|n| n["leads"].as_array().is_some_and(|led| !led.is_empty()))
        });
        if shards_led && every_node_leads && doc["health"] == "healthy" {
            break doc;
        }
        assert!(
            Instant::now() < deadline,
            "leadership did not spread: {doc:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(doc["epoch"], 1, "{doc:#}");
    for shard in doc["shards"].as_array().unwrap() {
        assert_eq!(
            shard["replicas"].as_array().map(Vec::len),
            Some(3),
            "{shard:#}"
        );
        assert!(
            shard["range"].as_str().is_some_and(|r| r.starts_with("0x")),
            "{shard:#}"
        );
    }
    for node in doc["nodes"].as_array().unwrap() {
        for group in node["groups"].as_array().unwrap() {
            assert_eq!(group["epoch"], 1, "{group:#}");
            assert!(
                group["range"].is_string() && group["keys"].is_u64(),
                "{group:#}"
            );
        }
    }

    // Writes through the routing client land in every shard.
    let writer = client(endpoint_list.clone(), Duration::from_secs(10));
    for i in 0..60 {
        writer
            .put(format!("key{i:02}"), format!("v{i}"))
            .await
            .unwrap();
    }
    let doc = status_json(&endpoints);
    let keys: u64 = doc["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["keys"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(keys, 60, "every key in exactly one shard: {doc:#}");
    assert!(
        doc["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["keys"].as_u64() > Some(0)),
        "60 keys hash into all 8 shards: {doc:#}"
    );

    // Any node accepts any key: pinned to node 1, a key of a shard node 1 holds no replica of
    // is forwarded (the receipt says node 1 forwarded it); a key of a shard it leads is served
    // there; a key of a shard it follows is answered with a redirect naming the leader (a
    // replica redirects rather than forwards, so a routing client learns the leader).
    let doc = status_json(&endpoints);
    let node_1 = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == 1)
        .expect("node 1 answered")
        .clone();
    let role_on_1 = |group: u64| {
        node_1["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == group)
            .map(|g| g["role"].as_str().unwrap_or_default().to_string())
    };
    let ring = writer.ring().expect("the client learned the ring");
    let (mut forwarded, mut served, mut redirected) = (0, 0, 0);
    for i in 0..60 {
        let key = format!("key{i:02}");
        let group = ring.shard_for_key(key.as_bytes());
        let (code, stdout, stderr) = cli(&["get", &key, "--pin", "--json"], &addr(base, 1));
        match role_on_1(group).as_deref() {
            None => {
                assert_eq!(code, 0, "{key}: {stdout} {stderr}");
                let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
                assert_eq!(answer["value"], format!("v{i}"), "{answer:#}");
                assert_eq!(answer["receipt"]["forwarded_by"], 1, "{answer:#}");
                assert_ne!(answer["receipt"]["node"], 1, "{answer:#}");
                forwarded += 1;
            }
            Some("leader") => {
                assert_eq!(code, 0, "{key}: {stdout} {stderr}");
                let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
                assert_eq!(answer["receipt"]["node"], 1, "{answer:#}");
                assert!(answer["receipt"]["forwarded_by"].is_null(), "{answer:#}");
                served += 1;
            }
            Some(_) => {
                assert_eq!(code, 2, "{key}: {stdout} {stderr}");
                assert!(stderr.contains("is not the leader"), "{stderr}");
                redirected += 1;
            }
        }
    }
    assert!(
        forwarded > 0 && served > 0,
        "forwarded {forwarded}, served {served}, redirected {redirected}"
    );

    // Scan: every shard, merged in key order, cut at the limit.
    let (code, stdout, stderr) = cli(&["scan", "key", "--limit", "1000"], &endpoints);
    assert_eq!(code, 0, "{stderr}");
    let listed: Vec<&str> = stdout.lines().collect();
    let expected: Vec<String> = (0..60).map(|i| format!("key{i:02}\tv{i}")).collect();
    assert_eq!(listed, expected);
    let (_, stdout, stderr) = cli(&["scan", "key", "--limit", "7"], &endpoints);
    assert_eq!(stdout.lines().count(), 7);
    assert!(stderr.contains("more keys"), "{stderr}");

    // Node 5's data directory keeps its ring: started with another shard count, it refuses.
    drop(nodes.pop());
    let mut wrong = serve(
        dir.path(),
        base,
        NODES,
        NODES,
        &["--shards", "16", "--replicas", "3"],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = wrong.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "a node with another ring kept running"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let logs: String = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("serve-{NODES}-"))
        })
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
        .collect();
    assert!(
        logs.contains("8 shards") && logs.contains("16 shards"),
        "{logs}"
    );
}
