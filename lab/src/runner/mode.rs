//! Where a lab run's paths come from (`ntkplane-lab run --paths protocol|feed`), and the one
//! thing that changes with it for checks: in protocol mode the daemons learn paths from each
//! other, so a check is compared again until it holds or the convergence bound passes (the
//! last comparison is the one recorded). Scenario files do not know the mode.
use std::time::{Duration, Instant};

/// `--paths` of the lab: what the daemons are started with, and whether feed steps run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PathsMode {
    /// Neighbour discovery and QSPN inside the daemons (`ntkplane run --paths protocol`);
    /// a scenario's `feed` steps are skipped.
    #[default]
    Protocol,
    /// The path solver's feeds (`feed` steps send `etp` to every daemon-held identity).
    Feed,
}

impl PathsMode {
    /// The daemon's `--paths` value.
    pub fn daemon_arg(self) -> &'static str {
        match self {
            PathsMode::Protocol => "protocol",
            PathsMode::Feed => "feed",
        }
    }

    /// The daemon's other options in this mode. Protocol: `--real-arcs declared`, because
    /// a lab segment joins systems that are not all meant to be neighbours (S1's six
    /// systems share one bridge, its graph has four arcs): as with qspnclient's
    /// `add_real_arc`, the scenario's `add-identity-arc` steps say which arcs are used.
    pub fn daemon_extra(self) -> &'static [&'static str] {
        match self {
            // Liveness is not what the scenarios check, and a loaded 2-CPU machine delays
            // probe answers by seconds: an arc that dies mid-scenario would take its paths.
            PathsMode::Protocol => &["--real-arcs", "declared", "--dead-after-ms", "20000"],
            PathsMode::Feed => &[],
        }
    }

    /// Whether the timeline's `feed` steps are sent (only the solver produces them).
    pub fn feeds(self) -> bool {
        self == PathsMode::Feed
    }
}

/// How long a check may wait for convergence, and how often it is compared meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Converge {
    pub bound: Duration,
    pub every: Duration,
}

impl Converge {
    /// Feed mode: the state is the feed's as soon as the command returned; compared once.
    pub const ONCE: Converge = Converge {
        bound: Duration::ZERO,
        every: Duration::ZERO,
    };

    pub fn for_mode(mode: PathsMode, bound: Duration) -> Converge {
        match mode {
            PathsMode::Feed => Converge::ONCE,
            PathsMode::Protocol => Converge {
                bound,
                every: Duration::from_millis(250),
            },
        }
    }

    /// Runs `compare` (its failures: empty = the check holds) until it holds, the bound
    /// passed or `stop()`; the last failures and how many comparisons were made.
    pub fn settle<F>(
        &self,
        mut compare: impl FnMut() -> Vec<F>,
        stop: impl Fn() -> bool,
    ) -> (Vec<F>, u32) {
        let t0 = Instant::now();
        let mut tries = 0;
        loop {
            let failures = compare();
            tries += 1;
            if failures.is_empty() || t0.elapsed() >= self.bound || stop() {
                return (failures, tries);
            }
            std::thread::sleep(self.every.min(self.bound.saturating_sub(t0.elapsed())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_mode_compares_once() {
        let mut n = 0;
        let (f, tries) = Converge::ONCE.settle(
            || {
                n += 1;
                vec!["differs"]
            },
            || false,
        );
        assert_eq!((f, tries, n), (vec!["differs"], 1, 1));
    }

    #[test]
    fn protocol_mode_compares_until_the_check_holds() {
        let c = Converge {
            bound: Duration::from_secs(5),
            every: Duration::from_millis(1),
        };
        let mut n = 0;
        let (f, tries) = c.settle(
            || {
                n += 1;
                if n < 4 {
                    vec!["not yet"]
                } else {
                    vec![]
                }
            },
            || false,
        );
        assert!(f.is_empty());
        assert_eq!(tries, 4);
    }

    #[test]
    fn the_bound_ends_the_wait_with_the_last_failures() {
        let c = Converge {
            bound: Duration::from_millis(30),
            every: Duration::from_millis(5),
        };
        let mut n = 0;
        let t0 = Instant::now();
        let (f, tries) = c.settle(
            || {
                n += 1;
                vec![n]
            },
            || false,
        );
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert!(tries >= 2);
        assert_eq!(f, vec![n], "the last comparison is the one reported");
    }

    #[test]
    fn a_stop_ends_the_wait() {
        let c = Converge::for_mode(PathsMode::Protocol, Duration::from_secs(60));
        let (f, tries) = c.settle(|| vec![()], || true);
        assert_eq!((f.len(), tries), (1, 1));
    }

    #[test]
    fn the_modes() {
        assert_eq!(PathsMode::default(), PathsMode::Protocol);
        assert!(!PathsMode::Protocol.feeds());
        assert!(PathsMode::Feed.feeds());
        assert_eq!(PathsMode::Feed.daemon_arg(), "feed");
        assert_eq!(PathsMode::Protocol.daemon_arg(), "protocol");
    }
}
