//! The arc cost: smoothing of the measured RTTs and the rule that decides when a change is
//! worth reporting (neighborhood.md §6.1 steps 4–5, example §6.3).

/// The memorised value `m` and the official cost `c`, in µs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Smoothed {
    memorised: i64,
    official: i64,
}

impl Smoothed {
    /// The first successful measurement: both values are the RTT (§6.1 step 4).
    pub fn first(rtt_us: u64) -> Smoothed {
        let v = i64::try_from(rtt_us).unwrap_or(i64::MAX);
        Smoothed {
            memorised: v,
            official: v,
        }
    }

    pub fn official_us(&self) -> u64 {
        self.official.max(0) as u64
    }

    pub fn memorised_us(&self) -> u64 {
        self.memorised.max(0) as u64
    }

    /// One later measurement (§6.1 step 5): increases are believed by a tenth, decreases by a
    /// third (integer division truncating towards zero, as in the reference); the official
    /// cost follows only when the memorised value leaves `[c/2, 2c]`. Returns the new official
    /// cost when it changed.
    pub fn observe(&mut self, rtt_us: u64) -> Option<u64> {
        let rtt = i64::try_from(rtt_us).unwrap_or(i64::MAX);
        let delta = rtt.saturating_sub(self.memorised);
        let delta = if delta > 0 { delta / 10 } else { delta / 3 };
        self.memorised = self.memorised.saturating_add(delta);
        // `m < 0.5·c` and `m > 2·c`, without rounding: 2m < c, m > 2c.
        let m = i128::from(self.memorised);
        let c = i128::from(self.official);
        if 2 * m < c || m > 2 * c {
            self.official = self.memorised;
            return Some(self.official_us());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::Smoothed;

    /// neighborhood.md §6.3, row by row.
    #[test]
    fn smoothing_table() {
        let mut s = Smoothed::first(2000);
        let want = [2300, 2570, 2813, 3031, 3227, 3404, 3563, 3706, 3835, 3951];
        for m in want {
            assert_eq!(s.observe(5000), None);
            assert_eq!(s.memorised_us(), m);
            assert_eq!(s.official_us(), 2000);
        }
        assert_eq!(s.observe(5000), Some(4055));
        assert_eq!((s.memorised_us(), s.official_us()), (4055, 4055));

        let mut s = Smoothed::first(2000);
        for m in [1634, 1390, 1227, 1118, 1046] {
            assert_eq!(s.observe(900), None);
            assert_eq!(s.memorised_us(), m);
            assert_eq!(s.official_us(), 2000);
        }
        assert_eq!(s.observe(900), Some(998));
        assert_eq!((s.memorised_us(), s.official_us()), (998, 998));
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let mut s = Smoothed::first(u64::MAX);
        s.observe(0);
        s.observe(u64::MAX);
        let mut s = Smoothed::first(0);
        assert!(s.observe(u64::MAX).is_some());
    }
}
