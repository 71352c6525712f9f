//! When an unanswered unicast call (`GetFullEtp`, `SendEtp`) is sent again, and when it is
//! given up.
//!
//! The delay doubles from `first_ms` up to `max_ms`, and the call is given up once
//! `give_up_ms` have passed since its first send. A fixed period (the first runtime resent
//! every 250 ms, 40 times) multiplies the traffic exactly when the machine is too busy to
//! answer in time: on the 7×7 grid on 2 CPUs most of the ~1 M datagrams were resends of
//! calls whose answer was merely late. Doubling keeps the first resend quick (a datagram
//! really lost costs 250 ms) and bounds a call to a handful of sends over the same window.

/// The resend schedule of one kind of call (docs/PROTOCOL.md, "Timers").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first resend.
    pub first_ms: u64,
    /// The delay doubles up to this.
    pub max_ms: u64,
    /// No resend once this long has passed since the first send: the call is given up.
    pub give_up_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        // The same 10 s window as the fixed 250 ms × 40 it replaces; 8 sends instead of 41.
        Backoff {
            first_ms: 250,
            max_ms: 2_000,
            give_up_ms: 10_000,
        }
    }
}

/// What to do with a call whose resend time came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Send it again now, and look at it again after this many ms.
    Resend { after_ms: u64 },
    /// Its window is over: give it up (the caller's transport error).
    GiveUp,
}

impl Backoff {
    /// The wait after send number `sent` (1: the first send).
    pub fn delay_ms(&self, sent: u32) -> u64 {
        let doublings = sent.saturating_sub(1).min(32);
        self.first_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms.max(self.first_ms))
    }

    /// A call sent `sent` times, the first `since_first_ms` ago, whose resend time came.
    pub fn next(&self, sent: u32, since_first_ms: u64) -> Next {
        if since_first_ms >= self.give_up_ms {
            return Next::GiveUp;
        }
        Next::Resend {
            after_ms: self.delay_ms(sent.saturating_add(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends (ms since the first) of one call that is never answered, until given up.
    fn schedule(b: Backoff) -> Vec<u64> {
        let mut at = vec![0];
        let mut t = b.delay_ms(1);
        loop {
            match b.next(at.len() as u32, t) {
                Next::GiveUp => return at,
                Next::Resend { after_ms } => {
                    at.push(t);
                    t += after_ms;
                }
            }
        }
    }

    #[test]
    fn the_delay_doubles_up_to_the_cap() {
        let b = Backoff::default();
        let d: Vec<u64> = (1..=7).map(|n| b.delay_ms(n)).collect();
        assert_eq!(d, [250, 500, 1000, 2000, 2000, 2000, 2000]);
    }

    #[test]
    fn default_window_is_ten_seconds_in_eight_sends() {
        assert_eq!(
            schedule(Backoff::default()),
            [0, 250, 750, 1750, 3750, 5750, 7750, 9750]
        );
    }

    #[test]
    fn a_fixed_period_is_a_cap_equal_to_the_first_delay() {
        let b = Backoff {
            first_ms: 100,
            max_ms: 100,
            give_up_ms: 450,
        };
        assert_eq!(schedule(b), [0, 100, 200, 300, 400]);
    }

    #[test]
    fn a_cap_below_the_first_delay_is_the_first_delay() {
        let b = Backoff {
            first_ms: 300,
            max_ms: 10,
            give_up_ms: 1_000,
        };
        assert_eq!(b.delay_ms(1), 300);
        assert_eq!(b.delay_ms(9), 300);
    }

    #[test]
    fn huge_counts_and_delays_saturate() {
        let b = Backoff {
            first_ms: u64::MAX / 2,
            max_ms: u64::MAX,
            give_up_ms: u64::MAX,
        };
        assert_eq!(b.delay_ms(u32::MAX), u64::MAX);
        assert_eq!(b.next(u32::MAX, 0), Next::Resend { after_ms: u64::MAX });
    }

    #[test]
    fn given_up_exactly_at_the_window() {
        let b = Backoff::default();
        assert_eq!(b.next(3, 9_999), Next::Resend { after_ms: 2_000 });
        assert_eq!(b.next(3, 10_000), Next::GiveUp);
    }
}
