//! A full disk for real: a node whose data directory is a small tmpfs fills it with large
//! writes. The write that does not fit is refused with "disk full on node ...", the node stays up
//! and keeps serving reads, writes succeed again as soon as space is freed (no restart), and after
//! a `kill -9` every acknowledged write is still there. Needs root to mount the tmpfs: without it
//! the test says so and passes without checking anything (`storage/tests/disk_full.rs` and
//! `server/node/tests/disk_full.rs` check the same behaviour through fault injection anywhere).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ringleader_client::Error;

/// A tmpfs mounted for the test, unmounted (after its users are gone) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .ok()?
            .success();
        mounted.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn start(data: &Path, listen: &str, log: &Path) -> Child {
    Command::new(BINARY)
        .args(["serve", "--listen", listen])
        .arg("--dir")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("start ringleader serve")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tmpfs_refuses_writes_keeps_the_node_up_and_recovers_when_space_is_freed() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let Some(tmpfs) = Tmpfs::mount(&scratch.path().join("disk"), "4m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    // Room that can be given back later, as an operator deleting a file would.
    let filler = tmpfs.0.join("filler");
    std::fs::write(&filler, vec![7u8; 1536 * 1024]).expect("filler");
    let data = tmpfs.0.join("node");
    let listen = addr(free_ports(1), 1);
    let log = scratch.path().join("node.log");
    let mut node = KillOnDrop(start(&data, &listen, &log));

    let client = client(vec![listen.clone()], Duration::from_secs(10));
    let mut acknowledged = Vec::new();
    let value = vec![b'v'; 256 * 1024];
    let mut refused = None;
    for i in 0..40 {
        let key = format!("big-{i}");
        match client.put(key.clone(), value.clone()).await {
            Ok(_) => acknowledged.push(key),
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    let refused = refused.expect("4 MiB cannot hold 40 values of 256 KiB");
    assert!(
        matches!(refused, Error::DiskFull { .. }),
        "typed disk-full error: {refused}"
    );
    assert!(
        acknowledged.len() >= 4,
        "some writes fit: {}",
        acknowledged.len()
    );
    assert!(
        node.0.try_wait().expect("wait").is_none(),
        "the node is still running"
    );

    // Reads still work, and the CLI says what happened, once, with exit 2.
    let first = client
        .get(acknowledged[0].clone())
        .await
        .expect("read on a full disk");
    assert_eq!(first.map(|v| v.value.len()), Some(value.len()));
    let mut put = Command::new(BINARY)
        .args(["put", "one-more", "-", "--endpoints", &listen])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ringleader put");
    {
        use std::io::Write;
        let mut stdin = put.stdin.take().expect("stdin");
        stdin.write_all(&value).expect("value on stdin");
    }
    let output = put.wait_with_output().expect("put finishes");
    let (code, stderr) = (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr.matches("disk full").count(),
        1,
        "said once: {stderr}"
    );
    assert!(stderr.contains("disk full on node"), "{stderr}");

    // Space comes back: writes resume without a restart.
    std::fs::remove_file(&filler).expect("free space");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.put("after-space-freed", "yes").await {
            Ok(_) => break,
            Err(Error::DiskFull { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(other) => panic!("writes did not resume once space was freed: {other}"),
        }
    }
    acknowledged.push("after-space-freed".into());

    // kill -9 and restart from the same tmpfs: every acknowledged write is there.
    kill_9(&mut node.0);
    let _restarted = KillOnDrop(start(&data, &listen, &scratch.path().join("node-2.log")));
    let client = common::client(vec![listen], Duration::from_secs(10));
    for key in &acknowledged {
        assert!(
            client.get(key.clone()).await.expect("read").is_some(),
            "acknowledged {key} lost"
        );
    }
    drop(_restarted);
    drop(node);
    drop(tmpfs);
}
