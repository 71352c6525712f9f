//! The bootstrap of an identity created by entering or migrating (qspn.md §13.2), decided
//! from what the feed says. The identity was created by phase 1 with its moving g-node (guest
//! level `g`) inside a host g-node (level `h > g`); until the bootstrap ends, its tables use
//! only the paths towards destinations of level `< g` (lifecycle.md §2.3). It ends:
//!
//! * when a neighbour in the host g-node but outside the moving one is known (coordinate
//!   level `g ≤ lvl < h`): the reply the bootstrap task processes. A neighbour inside the moving
//!   g-node (`lvl < g`) or outside the host g-node (`lvl ≥ h`) does not end it;
//! * when the identity knows a path (via a qspn arc) to a destination of level `h−1`: an ETP
//!   from a neighbour inside the moving g-node that carries knowledge from outside, which QSPN
//!   processes, ending the bootstrap;
//! * otherwise, `timeout_ms` (qspn.md §3: 10 000 ms) after it began: the moving g-node is then
//!   an isolated network until an outside arc appears.
//!
//! Time is the caller's: every function that needs it takes `now_ms`, milliseconds on a clock
//! of the caller's choosing (the daemon uses wall-clock milliseconds since the UNIX epoch, so
//! that the start time it persists keeps its meaning across a restart). Pure: no clock read.
use serde::{Deserialize, Serialize};

use super::{Identity, System};

/// qspn.md §3 "bootstrap give-up wait": how long a new identity waits for an ETP from outside
/// its moving g-node before it leaves the bootstrap anyway.
pub const BOOTSTRAP_TIMEOUT_MS: u64 = 10_000;

/// What the model keeps of a bootstrap besides its guest level (`Identity::bootstrap_level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// `h`: the level of the host g-node the moving g-node went into.
    pub host_level: usize,
    /// When the bootstrap began (phase 1), in ms on the caller's clock.
    pub since_ms: u64,
}

/// Why an identity is still in bootstrap, and for how long it has been (`show-identities`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootstrapStatus {
    pub guest_level: usize,
    pub host_level: usize,
    /// Time spent in bootstrap so far.
    pub elapsed_ms: u64,
    /// Time left before it ends by the timeout.
    pub remaining_ms: u64,
    /// What would end it earlier, in words.
    pub waiting_for: String,
}

impl Identity {
    /// Whether what the identity knows ends its bootstrap (the first two rules above).
    fn told_from_outside(&self, levels: usize) -> bool {
        let Some(g) = self.bootstrap_level else {
            return false;
        };
        let h = self.bootstrap.map_or(levels, |b| b.host_level);
        let outside_neighbour = self.arcs.values().any(|a| {
            a.qspn
                .as_ref()
                .and_then(|q| q.neighbour.as_ref())
                .and_then(|nb| self.address.coord_of(nb))
                .is_some_and(|c| g <= c.lvl && c.lvl < h)
        });
        let path_from_outside = self
            .paths
            .iter()
            .filter(|(d, _)| d.lvl + 1 == h)
            .flat_map(|(_, ps)| ps)
            .any(|p| self.arcs.get(&p.arc).is_some_and(|a| a.qspn.is_some()));
        outside_neighbour || path_from_outside
    }

    fn end_bootstrap(&mut self) {
        self.bootstrap_level = None;
        self.bootstrap = None;
    }
}

impl System {
    /// Ends identity `idx`'s bootstrap if what it knows now says so (qspn.md §13.2: a known
    /// neighbour at coordinate level `g ≤ lvl < h`, or a path to a level-`h−1` destination).
    /// Returns whether it ended now. Run after every change of neighbours, paths or address.
    pub(super) fn end_bootstrap_if_told(&mut self, idx: u32) -> bool {
        let levels = self.topology().levels();
        match self.identities.get_mut(&idx) {
            Some(id) if id.told_from_outside(levels) => {
                id.end_bootstrap();
                true
            }
            _ => false,
        }
    }

    /// The bootstrap of every identity that began it `timeout_ms` or more before `now_ms` ends
    /// (qspn.md §13.2: no ETP from outside came; the moving g-node is an isolated network until
    /// an outside arc appears). Returns the identities whose bootstrap ended.
    pub fn expire_bootstraps(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<u32> {
        let mut ended = Vec::new();
        for (idx, id) in &mut self.identities {
            if id
                .bootstrap
                .is_some_and(|b| now_ms >= b.since_ms.saturating_add(timeout_ms))
            {
                id.end_bootstrap();
                ended.push(*idx);
            }
        }
        ended
    }

    /// The earliest time at which [`System::expire_bootstraps`] ends some bootstrap.
    pub fn next_bootstrap_deadline(&self, timeout_ms: u64) -> Option<u64> {
        self.identities
            .values()
            .filter_map(|id| id.bootstrap)
            .map(|b| b.since_ms.saturating_add(timeout_ms))
            .min()
    }

    /// After loading a persisted state: an identity in bootstrap with no recorded start (a
    /// state written before the start was recorded) starts now, its host level unknown and
    /// taken as `l` (then only the neighbour rule, `lvl ≥ g`, and paths to level `l−1` end it
    /// early); a start in the future (the clock went back) is moved to now. Returns whether
    /// anything changed.
    pub fn resume_bootstraps(&mut self, now_ms: u64) -> bool {
        let levels = self.topology().levels();
        let mut changed = false;
        for id in self.identities.values_mut() {
            if id.bootstrap_level.is_none() {
                continue;
            }
            match &mut id.bootstrap {
                None => {
                    id.bootstrap = Some(Bootstrap {
                        host_level: levels,
                        since_ms: now_ms,
                    });
                    changed = true;
                }
                Some(b) if b.since_ms > now_ms => {
                    b.since_ms = now_ms;
                    changed = true;
                }
                Some(_) => {}
            }
        }
        changed
    }

    /// Why identity `idx` is still in bootstrap, and since when; `None` when it is not.
    pub fn bootstrap_status(
        &self,
        idx: u32,
        now_ms: u64,
        timeout_ms: u64,
    ) -> Option<BootstrapStatus> {
        let id = self.identities.get(&idx)?;
        let g = id.bootstrap_level?;
        let (h, since) = id
            .bootstrap
            .map_or((self.topology().levels(), now_ms), |b| {
                (b.host_level, b.since_ms)
            });
        let elapsed_ms = now_ms.saturating_sub(since);
        let levels = if h == g + 1 {
            format!("level {g}")
        } else {
            format!("levels {g}..{}", h - 1)
        };
        Some(BootstrapStatus {
            guest_level: g,
            host_level: h,
            elapsed_ms,
            remaining_ms: timeout_ms.saturating_sub(elapsed_ms),
            waiting_for: format!(
                "an ETP from outside the moving g-node (a neighbour at coordinate {levels}) \
                 or a path to a level-{} destination",
                h - 1
            ),
        })
    }
}
