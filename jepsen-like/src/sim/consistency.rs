//! Which consistency levels a simulated run's workload uses ([`Consistency`]): one read level
//! or write acknowledgement for every operation, or a mix drawn per operation from the seed.
//!
//! The default, [`Consistency::Linearizable`], is what the workload did before the levels
//! existed (linearizable reads, majority writes) and draws nothing extra from the workload's
//! random generator, so every seed of the existing tests keeps its meaning. Every other choice
//! also makes the workload write fresh keys that are never overwritten, at each write
//! acknowledgement it uses, and read them back after the heal: that is how the report counts
//! acknowledged writes that were lost ([`crate::sim::LostWrites`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use ringleader_client::{ReadLevel, WriteAck};

use crate::levels::Level;

/// The levels a run's workload uses (`ringleader sim --consistency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Linearizable reads, majority writes: the default.
    #[default]
    Linearizable,
    /// Lease reads, majority writes.
    Lease,
    /// Session reads, majority writes.
    Session,
    /// Stale reads (no `max_staleness`), majority writes.
    Stale,
    /// Linearizable reads, writes acknowledged by every replica.
    All,
    /// Linearizable reads, puts acknowledged by the leader alone (compare-and-sets, which the
    /// leader cannot acknowledge before applying, at `majority`).
    Leader,
    /// Each read draws one of the four read levels, each write one of the three
    /// acknowledgements (a compare-and-set `majority` or `all`), from the seed.
    Mix,
}

impl Consistency {
    pub const ALL: [Consistency; 7] = [
        Consistency::Linearizable,
        Consistency::Lease,
        Consistency::Session,
        Consistency::Stale,
        Consistency::All,
        Consistency::Leader,
        Consistency::Mix,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Lease => "lease",
            Consistency::Session => "session",
            Consistency::Stale => "stale",
            Consistency::All => "all",
            Consistency::Leader => "leader",
            Consistency::Mix => "mix",
        }
    }

    /// Whether this is the default, under which the workload behaves as it did before the
    /// levels (and writes no keys of its own for the lost-write count).
    pub fn is_default(self) -> bool {
        self == Consistency::Linearizable
    }

    /// The level of the next read; draws from `rng` only for [`Consistency::Mix`].
    pub fn read_level(self, rng: &mut ChaCha8Rng) -> Level {
        match self {
            Consistency::Linearizable | Consistency::All | Consistency::Leader => {
                Level::Linearizable
            }
            Consistency::Lease => Level::Lease,
            Consistency::Session => Level::Session,
            Consistency::Stale => Level::Stale,
            Consistency::Mix => match rng.random_range(0..4u32) {
                0 => Level::Linearizable,
                1 => Level::Lease,
                2 => Level::Session,
                _ => Level::Stale,
            },
        }
    }

    /// The acknowledgement of the next write (`cas`: a compare-and-set, never `leader`);
    /// draws from `rng` only for [`Consistency::Mix`].
    pub fn write_level(self, rng: &mut ChaCha8Rng, cas: bool) -> Level {
        match self {
            Consistency::Linearizable
            | Consistency::Lease
            | Consistency::Session
            | Consistency::Stale => Level::Majority,
            Consistency::All => Level::All,
            Consistency::Leader if cas => Level::Majority,
            Consistency::Leader => Level::Leader,
            Consistency::Mix => match rng.random_range(0..if cas { 2u32 } else { 3 }) {
                0 => Level::Majority,
                1 => Level::All,
                _ => Level::Leader,
            },
        }
    }

    /// The write acknowledgements this choice uses (for the lost-write count).
    pub fn write_levels(self) -> Vec<Level> {
        match self {
            Consistency::All => vec![Level::All],
            Consistency::Leader => vec![Level::Leader],
            Consistency::Mix => vec![Level::Majority, Level::All, Level::Leader],
            _ => vec![Level::Majority],
        }
    }
}

/// The client library's read level for a read `level` (stale reads without a bound).
pub fn read_level(level: Level) -> ReadLevel {
    match level {
        Level::Lease => ReadLevel::Lease,
        Level::Session => ReadLevel::Session,
        Level::Stale => ReadLevel::Stale {
            max_staleness: None::<Duration>,
        },
        _ => ReadLevel::Linearizable,
    }
}

/// The client library's acknowledgement for a write `level`.
pub fn write_ack(level: Level) -> WriteAck {
    match level {
        Level::All => WriteAck::All,
        Level::Leader => WriteAck::Leader,
        _ => WriteAck::Majority,
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Consistency {
    type Err = String;

    fn from_str(name: &str) -> Result<Consistency, String> {
        Consistency::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Consistency::ALL.iter().map(|c| c.name()).collect();
                format!(
                    "unknown consistency {name:?} (expected {})",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn fixed_levels_draw_nothing_and_mix_draws_every_level() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let before = rng.clone();
        for c in Consistency::ALL {
            assert_eq!(c.name().parse::<Consistency>(), Ok(c));
            if c != Consistency::Mix {
                c.read_level(&mut rng);
                c.write_level(&mut rng, false);
            }
        }
        assert_eq!(rng, before, "only mix draws from the workload's generator");
        let mut drawn = std::collections::BTreeSet::new();
        for _ in 0..200 {
            drawn.insert(Consistency::Mix.read_level(&mut rng));
            drawn.insert(Consistency::Mix.write_level(&mut rng, false));
            assert_ne!(Consistency::Mix.write_level(&mut rng, true), Level::Leader);
        }
        assert_eq!(drawn.len(), Level::ALL.len());
        assert!("eventual".parse::<Consistency>().is_err());
    }
}
