//! Crash tests on turmoil's simulated disk: power loss drops every write not fsynced (and may tear
//! the last one at block boundaries); a full disk refuses a write. In every case the records the
//! WAL acknowledged survive, and the log reopens valid.

use std::path::Path;
use std::sync::{Arc, Mutex};

use storage::fs::SimFs;
use storage::{SyncPolicy, Wal, WalOptions, GROUP_ZERO};

const DIR: &str = "/data/wal";

fn payload(i: u64) -> Vec<u8> {
    let len = 20 + (i * 37 % 300) as usize;
    (0..len)
        .map(|j| ((i as usize * 13 + j) % 251 + 1) as u8)
        .collect()
}

fn options(sync: SyncPolicy) -> WalOptions {
    WalOptions {
        segment_max_bytes: 4096,
        max_record_bytes: 1 << 16,
        sync,
        repair: false,
    }
}

/// What the host saw: acknowledged (durable) records, then records appended without a sync.
#[derive(Default)]
struct Observed {
    acknowledged: Vec<Vec<u8>>,
    unsynced: Vec<Vec<u8>>,
    recovered: Option<Vec<Vec<u8>>>,
}

/// Runs one crash; returns (unsynced records written, unsynced records that survived).
fn run_crash_scenario(seed: u64) -> (usize, usize) {
    let mut builder = turmoil::Builder::new();
    builder.rng_seed(seed).fs().block_size(512);
    let mut sim = builder.build();
    let observed = Arc::new(Mutex::new(Observed::default()));
    let phase_two = Arc::new(Mutex::new(false));
    let (host_observed, host_phase) = (observed.clone(), phase_two.clone());
    sim.host("node", move || {
        let observed = host_observed.clone();
        let phase_two = host_phase.clone();
        async move {
            if *phase_two.lock().unwrap() {
                let (_, recovered) =
                    Wal::open(SimFs::shared(), Path::new(DIR), options(SyncPolicy::Always))?;
                observed.lock().unwrap().recovered =
                    Some(recovered.records.into_iter().map(|r| r.payload).collect());
            } else {
                let (mut durable, _) =
                    Wal::open(SimFs::shared(), Path::new(DIR), options(SyncPolicy::Always))?;
                for batch in 0..(5 + seed % 7) {
                    let records: Vec<Vec<u8>> =
                        (0..=(batch % 4)).map(|i| payload(batch * 10 + i)).collect();
                    durable.append(GROUP_ZERO, &records)?;
                    observed.lock().unwrap().acknowledged.extend(records);
                }
                drop(durable);
                // Then writes that nobody syncs: a crash may keep any prefix of them, torn or not.
                let (mut lazy, _) =
                    Wal::open(SimFs::shared(), Path::new(DIR), options(SyncPolicy::Never))?;
                for batch in 0..(1 + seed % 5) {
                    let records = vec![payload(1000 + batch), payload(2000 + batch)];
                    lazy.append(GROUP_ZERO, &records)?;
                    observed.lock().unwrap().unsynced.extend(records);
                }
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let done = observed.clone();
    sim.client("wait-write", async move {
        while done.lock().unwrap().unsynced.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Ok(())
    });
    sim.run().unwrap();
    sim.crash("node");
    *phase_two.lock().unwrap() = true;
    sim.bounce("node");
    let done = observed.clone();
    sim.client("wait-recover", async move {
        while done.lock().unwrap().recovered.is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Ok(())
    });
    sim.run().unwrap();

    let observed = observed.lock().unwrap();
    let recovered = observed.recovered.as_ref().unwrap();
    let acknowledged = &observed.acknowledged;
    assert!(
        recovered.len() >= acknowledged.len(),
        "seed {seed}: lost acknowledged records"
    );
    assert_eq!(
        &recovered[..acknowledged.len()],
        &acknowledged[..],
        "seed {seed}"
    );
    let extra = &recovered[acknowledged.len()..];
    assert_eq!(
        extra,
        &observed.unsynced[..extra.len()],
        "seed {seed}: only a prefix of unsynced records may survive"
    );
    (observed.unsynced.len(), extra.len())
}

#[test]
fn crash_loses_only_unacknowledged_records() {
    let outcomes: Vec<(usize, usize)> = (0..40).map(run_crash_scenario).collect();
    // The scenario is not vacuous: some crashes lost unsynced records, and some kept a few.
    assert!(
        outcomes.iter().any(|&(written, kept)| kept < written),
        "no crash lost anything"
    );
    assert!(
        outcomes.iter().any(|&(_, kept)| kept > 0),
        "no crash kept an unsynced record"
    );
}

#[test]
fn full_disk_refuses_the_write_and_the_log_stays_valid() {
    let mut builder = turmoil::Builder::new();
    builder.rng_seed(7).fs().capacity(6 * 1024);
    let mut sim = builder.build();
    let accepted = Arc::new(Mutex::new((
        Vec::<Vec<u8>>::new(),
        false,
        None::<Vec<Vec<u8>>>,
    )));
    let host_state = accepted.clone();
    sim.host("node", move || {
        let state = host_state.clone();
        async move {
            let reopened = state.lock().unwrap().1;
            let (mut wal, recovered) =
                Wal::open(SimFs::shared(), Path::new(DIR), options(SyncPolicy::Always))?;
            if reopened {
                state.lock().unwrap().2 =
                    Some(recovered.records.into_iter().map(|r| r.payload).collect());
            } else {
                let mut full = false;
                for i in 0..200 {
                    let record = vec![(i % 250 + 1) as u8; 700];
                    match wal.append(GROUP_ZERO, std::slice::from_ref(&record)) {
                        Ok(_) => state.lock().unwrap().0.push(record),
                        Err(error) => {
                            assert!(error.is_disk_full(), "expected ENOSPC, got {error}");
                            full = true;
                            break;
                        }
                    }
                }
                assert!(full, "the disk should have filled up");
                // A smaller record that fits is still accepted after the refusal.
                if wal.append(GROUP_ZERO, &[vec![9u8; 16]]).is_ok() {
                    state.lock().unwrap().0.push(vec![9u8; 16]);
                }
                state.lock().unwrap().1 = true;
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let wait = accepted.clone();
    sim.client("wait-fill", async move {
        while !wait.lock().unwrap().1 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Ok(())
    });
    sim.run().unwrap();
    sim.crash("node");
    sim.bounce("node");
    let wait = accepted.clone();
    sim.client("wait-reopen", async move {
        while wait.lock().unwrap().2.is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Ok(())
    });
    sim.run().unwrap();
    let state = accepted.lock().unwrap();
    assert!(!state.0.is_empty());
    assert_eq!(
        state.2.as_ref().unwrap(),
        &state.0,
        "every accepted record, and nothing else, after reopen"
    );
}
