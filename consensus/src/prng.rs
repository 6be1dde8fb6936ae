//! The seeded random numbers behind election timeouts.
//!
//! Raft §5.2 breaks split votes with randomized timeouts. Determinism matters more to us than
//! entropy: the same `Config::seed` and the same inputs give the same elections, so a failing
//! simulation seed replays exactly. Seeds must differ between nodes (the harness and the server
//! derive them from the node id), otherwise identical nodes would keep splitting the vote.

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to spread timeouts.
#[derive(Clone, Debug)]
pub(crate) struct Prng {
    state: u64,
}

impl Prng {
    pub(crate) fn new(seed: u64) -> Prng {
        Prng { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `[low, high)`; `low` when the range is empty.
    pub(crate) fn in_range(&mut self, low: u32, high: u32) -> u32 {
        if high <= low {
            return low;
        }
        low + (self.next_u64() % u64::from(high - low)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prng_is_deterministic_and_stays_in_range() {
        let mut a = Prng::new(7);
        let mut b = Prng::new(7);
        for _ in 0..1000 {
            let x = a.in_range(10, 20);
            assert_eq!(x, b.in_range(10, 20));
            assert!((10..20).contains(&x));
        }
    }
}
