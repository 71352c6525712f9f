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
        self.observe_beyond(rtt_us, 0)
    }

    /// [`observe`](Self::observe), where the official cost also follows only when the
    /// memorised value is at least `min_change_us` away from it (ntkplane's choice,
    /// docs/PROTOCOL.md §6.2): the reference measured every 28–30 s over LAN-to-WAN links;
    /// ntkplane probes every second, and between hosts tens of µs apart the RTT halves or
    /// doubles with the hosts' load alone, each time a network-wide QSPN round.
    pub fn observe_beyond(&mut self, rtt_us: u64, min_change_us: u64) -> Option<u64> {
        let rtt = i64::try_from(rtt_us).unwrap_or(i64::MAX);
        let delta = rtt.saturating_sub(self.memorised);
        let delta = if delta > 0 { delta / 10 } else { delta / 3 };
        self.memorised = self.memorised.saturating_add(delta);
        // `m < 0.5·c` and `m > 2·c`, without rounding: 2m < c, m > 2c.
        let m = i128::from(self.memorised);
        let c = i128::from(self.official);
        if (2 * m < c || m > 2 * c) && (m - c).unsigned_abs() >= u128::from(min_change_us) {
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

    /// Noise at LAN scale (50 µs ↔ ms spikes) is not reported under a 1 ms floor; a real
    /// change above it is, exactly as without the floor once it is beyond it.
    #[test]
    fn changes_below_the_floor_are_not_reported() {
        let mut s = Smoothed::first(50);
        // A 5 ms spike moves the memorised value to 545 µs: doubled, but 495 µs away.
        assert_eq!(s.observe_beyond(5_000, 1_000), None);
        assert_eq!(s.memorised_us(), 545);
        for _ in 0..10 {
            assert_eq!(s.observe_beyond(50, 1_000), None);
        }
        assert_eq!(s.official_us(), 50);
        // Without the floor the same spike is a change.
        let mut t = Smoothed::first(50);
        assert_eq!(t.observe(5_000), Some(545));
        // A lasting rise to 20 ms is reported once the memorised value is 1 ms away.
        let mut r = Smoothed::first(50);
        let first = (0..20).find_map(|_| r.observe_beyond(20_000, 1_000));
        assert_eq!(first, Some(2045));
        // The floor also holds downwards, and 0 is §6.1 unchanged.
        let mut d = Smoothed::first(3_000);
        assert_eq!(d.observe_beyond(900, 1_000), None); // 2300: not halved
        let got: Vec<_> = (0..5)
            .filter_map(|_| d.observe_beyond(900, 1_000))
            .collect();
        assert_eq!(got, [1_316]);
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
