//! The client commands against one real node: `--json` on every command, binary keys and values
//! (`--hex`, `--base64`, `-` for stdin), and `get | head` ending quietly.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout:?}"))
}

/// Runs `ringleader ARGS` with `stdin` piped in; returns (exit code, stdout bytes, stderr).
fn cli_stdin(args: &[&str], endpoints: &str, stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = Command::new(BINARY)
        .args(args)
        .env("RINGLEADER_ENDPOINTS", endpoints)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        output.stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// One node in `dir`, leading; it dies with the guard. Returns the endpoints argument.
async fn single_node(dir: &std::path::Path) -> (KillOnDrop, String) {
    let base = free_ports(1);
    let node = KillOnDrop(serve(dir, base, 1, 1, &[]));
    let endpoints = vec![addr(base, 1)];
    wait_for_leader(&endpoints, 0, Duration::from_secs(10)).await;
    (node, endpoints.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_on_every_client_command() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, e) = single_node(dir.path()).await;

    // --json on every client command.
    let (code, stdout, stderr) = cli(&["put", "k", "v1", "--json"], &e);
    assert_eq!(code, 0, "{stderr}");
    let put = json(&stdout);
    assert_eq!(put["key"], "k");
    let version = put["version"].as_u64().unwrap();
    let (code, stdout, _) = cli(&["get", "k", "--json"], &e);
    assert_eq!(code, 0);
    let got = json(&stdout);
    assert_eq!(
        (got["found"].clone(), got["value"].clone()),
        (true.into(), "v1".into())
    );
    assert_eq!(got["version"], version);
    let (code, stdout, _) = cli(&["cas", "k", "v2", "--expect-version", "1", "--json"], &e);
    assert_eq!(code, 1);
    assert_eq!(json(&stdout)["swapped"], false);
    assert_eq!(json(&stdout)["current_version"], version);
    let (code, stdout, _) = cli(&["cas", "k", "v2", "--expect-value", "v1", "--json"], &e);
    assert_eq!(code, 0);
    assert_eq!(json(&stdout)["swapped"], true);
    let (code, stdout, _) = cli(&["delete", "k", "--json"], &e);
    assert_eq!((code, json(&stdout)["existed"].clone()), (0, true.into()));
    let (code, stdout, _) = cli(&["get", "k", "--json"], &e);
    assert_eq!((code, json(&stdout)["found"].clone()), (1, false.into()));
    let (code, stdout, _) = cli(&["status", "--json"], &e);
    assert_eq!(
        (code, json(&stdout)["health"].clone()),
        (0, "healthy".into())
    );
}

/// A one-shot `put` costs one log entry: its session opens with the write, in the same entry,
/// not with a registration entry first (two entries, and a round trip, before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_put_is_one_log_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, e) = single_node(dir.path()).await;
    let commit_index = || {
        let (code, stdout, stderr) = cli(&["status", "--json"], &e);
        assert_eq!(code, 0, "{stderr}");
        let status = json(&stdout);
        status["commit_index"]
            .as_u64()
            .unwrap_or_else(|| panic!("a commit index in {status}"))
    };
    let before = commit_index();
    for i in 0..3 {
        let (code, stdout, stderr) = cli(&["put", &format!("k{i}"), "v", "--json"], &e);
        assert_eq!(code, 0, "{stderr}");
        // The write's version is its entry's index: right after the one before.
        assert_eq!(json(&stdout)["version"], before + 1 + i);
    }
    assert_eq!(commit_index(), before + 3, "three puts, three entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_keys_and_values_from_hex_base64_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, e) = single_node(dir.path()).await;
    // Hex and base64 arguments, a key and a hex value from stdin, raw bytes out.
    let (code, _, stderr) = cli(&["put", "--hex", "00ff", "dead00beef"], &e);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, _) = cli(&["get", "--base64", "AP8="], &e);
    assert_eq!((code, stdout.as_str()), (0, "3q0Avu8=\n"));
    let (code, stdout, _) = cli_stdin(&["get", "-"], &e, &[0x00, 0xff]);
    assert_eq!((code, stdout), (0, vec![0xde, 0xad, 0x00, 0xbe, 0xef]));
    let (code, _, stderr) = cli_stdin(&["put", "--hex", "01", "-"], &e, b"cafe\n");
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, _) = cli(&["get", "--hex", "01"], &e);
    assert_eq!((code, stdout.as_str()), (0, "cafe\n"));
    let (code, stdout, _) = cli(&["get", "--hex", "00ff", "--json"], &e);
    assert_eq!(code, 0);
    assert_eq!(json(&stdout)["value"], "dead00beef");
    let (code, _, stderr) = cli(&["put", "--hex", "0g", "v"], &e);
    assert_eq!(code, 2);
    assert!(stderr.contains("not hex"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, e) = single_node(dir.path()).await;
    // `get | head -c 10`: the reader goes away; the command ends quietly.
    let big: Vec<u8> = (0..=255u8).cycle().take(1_000_000).collect();
    assert_eq!(cli_stdin(&["put", "big", "-"], &e, &big).0, 0);
    let mut get = Command::new(BINARY)
        .args(["get", "big"])
        .env("RINGLEADER_ENDPOINTS", &e)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 10];
    get.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    drop(get.stdout.take());
    let output = get.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(output.status.code(), Some(0));
}
