//! Identity lifecycle pieces of qspn.md §12.3 and §13.4–13.7 (connectivity identities,
//! dismissal, leaving a split g-node).
use super::engine::Qspn;
use super::event::{Output, Signal, Timer};
use super::msg::ArcId;
use super::validate::coord;

/// §13.7: wait before `remove_identity`.
pub const PREPARE_DESTROY_MS: u64 = 10_000;

impl Qspn {
    /// The coordinate level of the neighbour on `arc`, if its address is known.
    pub(crate) fn neighbour_level(&self, arc: ArcId) -> Option<usize> {
        self.neighbour_address(arc)
            .and_then(|n| coord(&self.my_naddr, n))
            .map(|c| c.lvl)
    }

    /// `(connectivity_from_level, connectivity_to_level)` (§4; `(0, 0)` for a main identity).
    pub fn connectivity_levels(&self) -> (usize, usize) {
        (self.conn_from, self.conn_to)
    }

    /// Is this a connectivity identity (§13.4)?
    pub fn is_connectivity(&self) -> bool {
        self.conn_from > 0
    }

    /// §13.7 `prepare_destroy`: `GotPrepareDestroy` to the arcs inside my connectivity
    /// g-node (neighbour coordinate level `< from−1`).
    pub fn prepare_destroy(&mut self) -> Vec<Output> {
        self.prepare_destroy_seen = true;
        let lim = self.conn_from.saturating_sub(1);
        let arcs: Vec<ArcId> = self
            .arcs()
            .filter(|a| self.neighbour_level(*a).is_some_and(|lv| lv < lim))
            .collect();
        if !arcs.is_empty() {
            self.out.push(Output::SendPrepareDestroy { arcs });
        }
        self.take()
    }

    /// §13.7 `got_prepare_destroy` over `arc`: ignored by a main identity; otherwise
    /// propagated **once** (§19) and `remove_identity` signalled 10 s later.
    pub fn got_prepare_destroy(&mut self, _arc: ArcId) -> Vec<Output> {
        if !self.is_connectivity() || self.prepare_destroy_seen {
            return vec![];
        }
        let mut out = self.prepare_destroy();
        out.push(Output::Timer {
            after_ms: PREPARE_DESTROY_MS,
            timer: Timer::RemoveIdentity,
        });
        out
    }

    /// §13.7 `destroy`: `GotDestroy` to the arcs with known neighbour address whose
    /// coordinate level is ≥ `from−1` (all of them for a main identity).
    pub fn destroy(&mut self) -> Vec<Output> {
        let lim = self.conn_from.saturating_sub(1);
        let arcs: Vec<ArcId> = self
            .arcs()
            .filter(|a| self.neighbour_level(*a).is_some_and(|lv| lv >= lim))
            .collect();
        if !arcs.is_empty() {
            self.out.push(Output::SendDestroy { arcs });
        }
        self.take()
    }

    /// §13.7 `got_destroy` over `arc`: the arc is removed, `arc_removed(arc, false)`.
    pub fn got_destroy(&mut self, arc: ArcId) -> Vec<Output> {
        self.drop_arc(arc, false);
        self.take()
    }

    /// §13.7 `stop_operations`: the periodic full ETP stops (a later `Periodic` timer is
    /// stale).
    pub fn stop_operations(&mut self) {
        self.periodic_epoch += 1;
    }

    pub(crate) fn on_remove_identity(&mut self) {
        self.signal(Signal::RemoveIdentity);
    }
}
