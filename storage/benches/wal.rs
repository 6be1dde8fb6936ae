//! WAL append throughput: group commit (a batch of records, one write, one fdatasync) against one
//! fdatasync per record, at several batch sizes, on the real disk. Run with
//! `cargo bench -p storage --bench wal`; compare the two lines of each batch size, measured side by
//! side in one run (the machine is shared, absolute numbers are noisy).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use storage::{StdFs, SyncPolicy, Wal, WalOptions, GROUP_ZERO};

const RECORD_BYTES: usize = 128;

fn open_wal(dir: &std::path::Path) -> Wal {
    let options = WalOptions {
        sync: SyncPolicy::Always,
        ..WalOptions::default()
    };
    Wal::open(StdFs::shared(), dir, options)
        .expect("open wal")
        .0
}

fn wal_appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_append");
    group.sample_size(10);
    let record = vec![0xA5u8; RECORD_BYTES];
    for batch in [1usize, 8, 64, 256] {
        let records = vec![record.clone(); batch];
        group.throughput(Throughput::Elements(batch as u64));
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = open_wal(dir.path());
        group.bench_with_input(
            BenchmarkId::new("group_commit", batch),
            &records,
            |b, records| b.iter(|| wal.append(GROUP_ZERO, records).expect("append")),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = open_wal(dir.path());
        group.bench_with_input(
            BenchmarkId::new("fsync_per_record", batch),
            &records,
            |b, records| {
                b.iter(|| {
                    for record in records {
                        wal.append(GROUP_ZERO, std::slice::from_ref(record))
                            .expect("append");
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, wal_appends);
criterion_main!(benches);
