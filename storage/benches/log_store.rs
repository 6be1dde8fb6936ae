//! The CPU cost of turning a Raft `Ready`'s entries into WAL records. `node_path` does it the way
//! the node does: each entry's payload (the consensus crate's `EntryPayload`, mirrored here by
//! [`Payload`]) is borrowed ([`PayloadRef`], as server/node/src/mapping.rs does) and encoded
//! straight into its record by `LogStore::append_borrowed`. `encode_then_append` is the node's
//! path before that: each payload encoded into a buffer, then into the record. The WAL does not sync (`SyncPolicy::Never`) and lives in /dev/shm
//! when there is one, so the encoding and copying dominate, not the disk. Run with
//! `cargo bench -p storage --bench log_store`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde::Serialize;
use storage::{codec, LogStore, StdFs, StoredEntry, StoredEntryRef, SyncPolicy, WalOptions};

/// Entries per append (one Raft `Ready`).
const BATCH_ENTRIES: usize = 64;

/// Mirrors `consensus::EntryPayload` (same serde shape), which storage cannot depend on.
#[derive(Serialize)]
enum Payload {
    #[allow(dead_code)]
    Noop,
    Command(Vec<u8>),
}

/// [`Payload`] borrowed, its command serialized in one piece (same bytes).
#[derive(Serialize)]
#[serde(rename = "Payload")]
enum PayloadRef<'a> {
    Noop,
    Command(codec::Bytes<'a>),
}

fn open_store(dir: &std::path::Path) -> LogStore {
    let options = WalOptions {
        sync: SyncPolicy::Never,
        ..WalOptions::default()
    };
    LogStore::open(StdFs::shared(), dir, options)
        .expect("open log store")
        .0
}

fn scratch_dir() -> tempfile::TempDir {
    match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").expect("tempdir in /dev/shm"),
        false => tempfile::tempdir().expect("tempdir"),
    }
}

fn log_store_appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_store_append");
    group.sample_size(20);
    group.warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(3));
    for payload_bytes in [128usize, 4 * 1024, 64 * 1024] {
        let payloads: Vec<Payload> = (0..BATCH_ENTRIES)
            .map(|_| Payload::Command(vec![0xA5; payload_bytes]))
            .collect();
        group.throughput(Throughput::Bytes((BATCH_ENTRIES * payload_bytes) as u64));
        let dir = scratch_dir();
        let mut store = open_store(dir.path());
        let mut next_index = 1u64;
        group.bench_with_input(
            BenchmarkId::new("encode_then_append", payload_bytes),
            &payloads,
            |b, payloads| {
                b.iter(|| {
                    let entries = payloads
                        .iter()
                        .map(|payload| {
                            let index = next_index;
                            next_index += 1;
                            Ok(StoredEntry {
                                index,
                                term: 1,
                                payload: codec::encode(payload, "entry payload")?,
                            })
                        })
                        .collect::<storage::Result<Vec<_>>>()
                        .expect("encode");
                    store.append(None, &entries).expect("append");
                })
            },
        );
        let dir = scratch_dir();
        let mut store = open_store(dir.path());
        let mut next_index = 1u64;
        group.bench_with_input(
            BenchmarkId::new("node_path", payload_bytes),
            &payloads,
            |b, payloads| {
                b.iter(|| {
                    let entries: Vec<StoredEntryRef<PayloadRef<'_>>> = payloads
                        .iter()
                        .map(|payload| {
                            let index = next_index;
                            next_index += 1;
                            StoredEntryRef {
                                index,
                                term: 1,
                                payload: match payload {
                                    Payload::Noop => PayloadRef::Noop,
                                    Payload::Command(bytes) => {
                                        PayloadRef::Command(codec::Bytes(bytes))
                                    }
                                },
                            }
                        })
                        .collect();
                    store.append_borrowed(None, &entries).expect("append");
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, log_store_appends);
criterion_main!(benches);
