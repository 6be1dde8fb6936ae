//! `status --json` shaped for many groups (issue 14): every node of a real 3-node cluster lists
//! the groups it hosts, exactly group 0 today, and the node's top-level figures are group 0's.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_lists_exactly_group_0_per_node_matching_the_top_level_fields() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(3);
    let _nodes: Vec<KillOnDrop> = (1..=3)
        .map(|id| KillOnDrop(serve(dir.path(), base, id, 3, &[])))
        .collect();
    let endpoints: Vec<String> = (1..=3).map(|id| addr(base, id)).collect();
    wait_for_leader(&endpoints, 0, Duration::from_secs(20)).await;
    // A write, so that the applied indexes compared are not all zero.
    client(endpoints.clone(), Duration::from_secs(5))
        .put("k", "v")
        .await
        .unwrap();

    let (code, stdout, stderr) = cli(&["status", "--json"], &endpoints.join(","));
    let doc: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout:?} {stderr}"));
    let nodes = doc["nodes"].as_array().expect("a nodes array");
    assert_eq!(nodes.len(), 3, "{doc:#}");
    for node in nodes {
        // Every endpoint answers (a node that cannot answer has no figures to compare).
        assert_eq!(node["up"], true, "{doc:#} (exit code {code})");
        let groups = node["groups"].as_array().expect("a groups array per node");
        assert_eq!(groups.len(), 1, "exactly one group: {node:#}");
        let group = &groups[0];
        assert_eq!(group["group"], 0, "{node:#}");
        for field in ["role", "term", "applied_index", "commit_index"] {
            assert!(!group[field].is_null(), "group 0 has {field}: {node:#}");
            assert_eq!(group[field], node[field], "{field} of {node:#}");
        }
        // Null on a follower that has not heard from the leader yet: compared, not required.
        assert_eq!(group["leader"], node["leader"], "leader of {node:#}");
        // The data directory is server-side detail: it left the wire status (protocol 6).
        assert!(node.get("data_dir").is_none(), "{node:#}");
    }
    let leaders: Vec<&serde_json::Value> = nodes
        .iter()
        .filter(|n| n["groups"][0]["role"] == "leader")
        .collect();
    assert!(!leaders.is_empty(), "one node leads group 0: {doc:#}");
}
