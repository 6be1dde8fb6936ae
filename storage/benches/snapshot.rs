//! What a snapshot costs, and what of it the node's event loop pays: cutting it (a clone of the
//! state machine, whose map is persistent: O(1), on the loop), encoding it
//! (`StateMachine::to_snapshot`) and saving the bytes (`SnapshotStore::save`: write and
//! fdatasync), both done by the log writer off the loop. Run with `cargo bench -p storage --bench
//! snapshot`; compare the lines of each size, measured side by side in one run.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use storage::kv::{Command, Proposal, StateMachine};
use storage::snapshot::SnapshotStore;
use storage::{SnapshotPoint, StdFs};

const VALUE_BYTES: usize = 256;

fn machine_with(keys: u64) -> StateMachine {
    let mut machine = StateMachine::new();
    for index in 1..=keys {
        let proposal = Proposal {
            session: None,
            command: Command::Put {
                key: format!("key-{index:012}").into_bytes(),
                value: vec![0x5A; VALUE_BYTES],
            },
        };
        machine.apply(index, &proposal);
    }
    machine
}

fn snapshot_halves(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    for keys in [10_000u64, 100_000] {
        let machine = machine_with(keys);
        let bytes = machine.to_snapshot().expect("encode");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("encode_off_the_loop", keys),
            &machine,
            |b, machine| b.iter(|| machine.to_snapshot().expect("encode")),
        );
        group.bench_with_input(
            BenchmarkId::new("cut_on_the_loop", keys),
            &machine,
            |b, machine| b.iter(|| machine.clone()),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(StdFs::shared(), dir.path()).expect("open");
        let mut last_index = 0;
        group.bench_with_input(
            BenchmarkId::new("save_off_the_loop", keys),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    last_index += 1;
                    let point = SnapshotPoint {
                        last_index,
                        last_term: 1,
                    };
                    store.save(point, bytes).expect("save");
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, snapshot_halves);
criterion_main!(benches);
