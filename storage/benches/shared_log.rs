//! Group commit across Raft groups: what one fsync buys when many groups share the WAL.
//! `shared_batch/N` appends one entry (128 B) and a hard state for each of N groups with ONE
//! `SharedLog::append_batch` (one write, one fsync: N group writes per fsync);
//! `batch_per_group/N` appends the same N group writes one `append_batch` each (N fsyncs), as N
//! separate logs would. The throughput is in group writes per second. The WAL syncs every
//! batch (`SyncPolicy::Always`) on the real disk (a temporary directory, not /dev/shm), so the
//! fsync dominates. Run with `cargo bench -p storage --bench shared_log`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use storage::{
    codec, GroupId, GroupWrite, HardState, SharedLog, StdFs, StoredEntryRef, SyncPolicy, WalOptions,
};

const PAYLOAD_BYTES: usize = 128;

fn open_log(dir: &std::path::Path, groups: u64) -> SharedLog {
    let options = WalOptions {
        sync: SyncPolicy::Always,
        ..WalOptions::default()
    };
    let hosted: Vec<GroupId> = (0..groups).collect();
    SharedLog::open(StdFs::shared(), dir, options, &hosted)
        .expect("open shared log")
        .0
}

fn shared_log_batches(c: &mut Criterion) {
    let mut bench = c.benchmark_group("shared_log_append");
    bench.sample_size(10);
    bench.warm_up_time(std::time::Duration::from_millis(500));
    bench.measurement_time(std::time::Duration::from_secs(3));
    let payload = vec![0xA5u8; PAYLOAD_BYTES];
    for groups in [1u64, 8, 64] {
        bench.throughput(Throughput::Elements(groups));
        let hard_state = HardState {
            term: 1,
            vote: Some(1),
            commit: 0,
        };

        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open_log(dir.path(), groups);
        let mut next_index = 1u64;
        bench.bench_function(BenchmarkId::new("shared_batch", groups), |b| {
            b.iter(|| {
                let entries: Vec<[StoredEntryRef<codec::Bytes<'_>>; 1]> = (0..groups)
                    .map(|_| {
                        [StoredEntryRef {
                            index: next_index,
                            term: 1,
                            payload: codec::Bytes(&payload),
                        }]
                    })
                    .collect();
                let batch: Vec<GroupWrite<'_, codec::Bytes<'_>>> = entries
                    .iter()
                    .zip(0..groups)
                    .map(|(entries, group)| GroupWrite {
                        group,
                        hard_state: Some(hard_state),
                        entries,
                    })
                    .collect();
                log.append_batch(&batch).expect("append");
                next_index += 1;
            })
        });
        drop(log);

        if groups == 1 {
            continue; // the same as shared_batch/1
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open_log(dir.path(), groups);
        let mut next_index = 1u64;
        bench.bench_function(BenchmarkId::new("batch_per_group", groups), |b| {
            b.iter(|| {
                for group in 0..groups {
                    let entries = [StoredEntryRef {
                        index: next_index,
                        term: 1,
                        payload: codec::Bytes(&payload),
                    }];
                    log.append_batch(&[GroupWrite {
                        group,
                        hard_state: Some(hard_state),
                        entries: &entries,
                    }])
                    .expect("append");
                }
                next_index += 1;
            })
        });
    }
    bench.finish();
}

criterion_group!(benches, shared_log_batches);
criterion_main!(benches);
