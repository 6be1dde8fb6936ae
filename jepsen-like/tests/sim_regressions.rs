//! Bugs the simulation found, pinned to the seed that found them.
//!
//! Seed 197 (five nodes, every nemesis, 1000 operations): a client whose first write never
//! arrived (it timed out during an election) could never write again. The client released the
//! timed-out sequence number, its next write said "everything before 2 is acknowledged", and the
//! state machine, holding no session for that client, answered `SessionExpired` to every later
//! write: the run ended as a cluster that "did not recover" (docs/testing.md, "What it found").
//! Fixed by explicit session registration (`Command::RegisterSession`) and by the client
//! registering anew after `SessionExpired`.

use jepsen_like::sim::{run, Floors, SimOptions};

#[test]
fn seed_197_every_client_keeps_writing() {
    let report = run(&SimOptions {
        ops: 1000,
        ..SimOptions::new(197)
    })
    .expect("the simulation could not run");
    println!("{}", report.summary());
    assert!(
        report.passed(),
        "{}\n{}",
        report.summary(),
        report.fault_log()
    );
    let shortfalls = report.floor_shortfalls(&Floors::default());
    assert!(shortfalls.is_empty(), "{}", shortfalls.join("\n"));
    // The symptom itself: every client still writes in the last quarter of the workload and,
    // with the session the workload left it, after the heal.
    for phase in report.phases.iter().skip(report.phases.len() - 2) {
        for (process, &writes) in &phase.ok_writes_by_process {
            assert!(
                writes > 0,
                "{}: client {process} made no successful write (a client stuck on \
                 SessionExpired?)\n{}",
                phase.name,
                report.summary()
            );
        }
    }
    // And no session was left to expire for good: each renewal was followed by writes (above),
    // and renewals stay rare.
    assert!(
        report.counts.sessions_renewed <= 5,
        "{} sessions renewed",
        report.counts.sessions_renewed
    );
}
