//! Consistency levels as the history records them, and which promise each level makes.
//!
//! ringleader lets every request choose its level (issue 15): reads are `linearizable`,
//! `lease`, `session` or `stale`; writes are acknowledged at `majority`, `all` or `leader`.
//! Each level promises something different, so each checker looks only at the operations
//! whose level promises what it checks: linearizability ([`Level::promises_linearizability`]),
//! the session guarantees ([`Level::promises_session`], `crate::session`), fresh-enough stale
//! reads (`crate::staleness`). A history without levels (older files, the public histories)
//! is taken as all linearizable reads and majority writes, which is what ringleader served
//! before the levels existed.

use std::fmt;
use std::str::FromStr;

/// The level an operation asked for: a read level or a write acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Read: the leader confirms it still leads (ReadIndex) before answering.
    Linearizable,
    /// Read: the leader answers alone while its lease holds.
    Lease,
    /// Read: any replica that applied the client's session position.
    Session,
    /// Read: any replica's local state.
    Stale,
    /// Write: acknowledged once committed.
    Majority,
    /// Write: acknowledged once every replica applied it.
    All,
    /// Write: acknowledged once durable on the leader alone (may be lost).
    Leader,
}

impl Level {
    /// Every level, reads first, in a fixed order.
    pub const ALL: [Level; 7] = [
        Level::Linearizable,
        Level::Lease,
        Level::Session,
        Level::Stale,
        Level::Majority,
        Level::All,
        Level::Leader,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Level::Linearizable => "linearizable",
            Level::Lease => "lease",
            Level::Session => "session",
            Level::Stale => "stale",
            Level::Majority => "majority",
            Level::All => "all",
            Level::Leader => "leader",
        }
    }

    /// A read level (as opposed to a write acknowledgement).
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Level::Linearizable | Level::Lease | Level::Session | Level::Stale
        )
    }

    /// Whether an operation at this level must be linearizable: linearizable and lease reads,
    /// majority and all writes. A leader-acknowledged write may be lost (the checker sees it as
    /// possibly never having happened); session and stale reads promise less.
    pub fn promises_linearizability(self) -> bool {
        matches!(
            self,
            Level::Linearizable | Level::Lease | Level::Majority | Level::All
        )
    }

    /// Whether an operation at this level keeps the session guarantees (read-your-writes,
    /// monotonic reads, monotonic writes, writes-follow-reads) for its client: every read level
    /// but `stale`, every write acknowledgement but `leader` (a lost leader-acknowledged write
    /// is the documented anomaly of that level).
    pub fn promises_session(self) -> bool {
        !matches!(self, Level::Stale | Level::Leader)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(name: &str) -> Result<Level, String> {
        Level::ALL
            .into_iter()
            .find(|level| level.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Level::ALL.iter().map(|l| l.name()).collect();
                format!("unknown level {name:?} (expected {})", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_promises_are_as_documented() {
        for level in Level::ALL {
            assert_eq!(level.name().parse::<Level>(), Ok(level));
        }
        assert!("eventual".parse::<Level>().is_err());
        let linearizable: Vec<Level> = Level::ALL
            .into_iter()
            .filter(|l| l.promises_linearizability())
            .collect();
        assert_eq!(
            linearizable,
            [
                Level::Linearizable,
                Level::Lease,
                Level::Majority,
                Level::All
            ]
        );
        assert!(!Level::Stale.promises_session() && !Level::Leader.promises_session());
        assert!(Level::Session.promises_session() && !Level::Session.promises_linearizability());
    }
}
