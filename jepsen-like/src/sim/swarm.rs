//! Swarm testing: each seed draws its own mix of faults and parameters, so a range of seeds
//! covers many mixes instead of one (FoundationDB's simulator and TigerBeetle's VOPR do the
//! same; Groce et al., "Swarm Testing", ISSTA 2012). A fault that is always on can hide a bug
//! that another fault would show: a cluster that is always partitioned somewhere rarely runs long
//! enough in one configuration for a slow bug to surface.
//!
//! What a seed draws ([`SwarmPlan`]): which of the enabled nemeses run, how often faults come,
//! and each node's clock rate within the stated drift bound. Everything comes from the seed, so
//! `sim --seed S` replays the same mix; the report prints it.

use std::fmt;
use std::time::Duration;

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::sim::Nemesis;

/// The rhythms a seed can draw: a track's quiet phase between two faults, in simulated ms, for
/// a run of up to [`TRACKS_PER_RHYTHM`] nemeses.
const QUIET_CHOICES_MS: [(u64, u64); 3] = [(500, 2_500), (1_000, 5_000), (2_000, 8_000)];
/// The rhythm when swarm testing is off.
pub const DEFAULT_QUIET_MS: (u64, u64) = (1_000, 5_000);
/// Each nemesis beyond this many stretches every track's quiet phase in proportion, so that the
/// cluster as a whole sees about as many faults with ten nemeses as with three: otherwise it
/// would almost never be whole, every operation would time out, and the run would test nothing
/// but the timeouts (and leave the checker thousands of unknown outcomes to place).
pub const TRACKS_PER_RHYTHM: usize = 3;

/// One seed's draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmPlan {
    /// The nemeses this run injects (a subset of those enabled, or all of them without swarm).
    pub nemeses: Vec<Nemesis>,
    /// Length of each track's quiet phase between two faults, in simulated ms.
    pub quiet_ms: (u64, u64),
    /// Each node's tick length (node `i + 1` at index `i`): the node's clock rate. Within
    /// `±clock_drift_percent` of the nominal tick.
    pub node_ticks: Vec<Duration>,
}

impl SwarmPlan {
    /// Draws the plan of a run from `rng`. With `swarm` off every enabled nemesis runs at the
    /// default rhythm; clock rates are drawn either way (`clock_drift_percent` 0 keeps them
    /// exact).
    pub fn draw(
        rng: &mut ChaCha8Rng,
        enabled: &[Nemesis],
        swarm: bool,
        nodes: usize,
        nominal_tick: Duration,
        clock_drift_percent: u32,
    ) -> SwarmPlan {
        let (nemeses, quiet_ms) = if swarm && !enabled.is_empty() {
            let mut chosen: Vec<Nemesis> = enabled
                .iter()
                .copied()
                .filter(|_| rng.random_bool(0.5))
                .collect();
            if chosen.is_empty() {
                chosen.extend(enabled.choose(rng).copied());
            }
            let quiet = *QUIET_CHOICES_MS.choose(rng).unwrap_or(&DEFAULT_QUIET_MS);
            (chosen, quiet)
        } else {
            (enabled.to_vec(), DEFAULT_QUIET_MS)
        };
        let stretch = nemeses.len().div_ceil(TRACKS_PER_RHYTHM).max(1) as u64;
        let quiet_ms = (quiet_ms.0 * stretch, quiet_ms.1 * stretch);
        let bound_permille = i64::from(clock_drift_percent) * 10;
        let node_ticks = (0..nodes)
            .map(|_| {
                let drift_permille = rng.random_range(-bound_permille..=bound_permille);
                let micros = nominal_tick.as_micros() as i64 * (1_000 + drift_permille) / 1_000;
                Duration::from_micros(micros.max(1) as u64)
            })
            .collect();
        SwarmPlan {
            nemeses,
            quiet_ms,
            node_ticks,
        }
    }
}

impl fmt::Display for SwarmPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nemeses: Vec<&str> = self.nemeses.iter().map(|n| n.name()).collect();
        let ticks: Vec<String> = self
            .node_ticks
            .iter()
            .enumerate()
            .map(|(i, tick)| format!("n{} {:.1}", i + 1, tick.as_secs_f64() * 1_000.0))
            .collect();
        write!(
            f,
            "nemeses [{}], a fault every {}–{} ms per nemesis, tick ms: {}",
            nemeses.join(","),
            self.quiet_ms.0,
            self.quiet_ms.1,
            ticks.join(" ")
        )
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn draw(seed: u64, swarm: bool, drift: u32) -> SwarmPlan {
        SwarmPlan::draw(
            &mut ChaCha8Rng::seed_from_u64(seed),
            &Nemesis::ALL,
            swarm,
            5,
            Duration::from_millis(50),
            drift,
        )
    }

    #[test]
    fn seeds_draw_many_mixes_and_replay_theirs() {
        let mixes: std::collections::BTreeSet<Vec<Nemesis>> =
            (0..100).map(|seed| draw(seed, true, 10).nemeses).collect();
        assert!(mixes.len() > 50, "only {} mixes in 100 seeds", mixes.len());
        assert!(mixes.iter().all(|m| !m.is_empty()));
        assert_eq!(draw(42, true, 10), draw(42, true, 10));
        assert_eq!(draw(42, false, 0).nemeses, Nemesis::ALL.to_vec());
    }

    #[test]
    fn clock_rates_stay_within_the_drift_bound() {
        for seed in 0..200 {
            for tick in draw(seed, true, 10).node_ticks {
                assert!(
                    (45_000..=55_000).contains(&tick.as_micros()),
                    "seed {seed}: {tick:?}"
                );
            }
            assert!(draw(seed, true, 0)
                .node_ticks
                .iter()
                .all(|t| *t == Duration::from_millis(50)));
        }
        let spread: Vec<Duration> = draw(3, true, 10).node_ticks;
        assert!(spread.windows(2).any(|w| w[0] != w[1]), "no drift drawn");
    }
}
