//! Identity lifecycle pieces of qspn.md §12.3 and §13.4–13.7 (connectivity identities,
//! dismissal, leaving a split g-node).
use super::engine::Qspn;
use super::event::{Output, Signal, Timer};
use super::map::{adjacent_gnodes, Dests};
use super::msg::{ArcId, Cost, HCoord};
use super::validate::coord;

/// §13.7: wait before `remove_identity`.
pub const PREPARE_DESTROY_MS: u64 = 10_000;
/// §13.4: delay of the connectivity notice.
pub const CONNECTIVITY_NOTICE_MS: u64 = 50;

/// §13.6 on a map: `i = from−1`, `j = to`; skip empty levels; `X` = destinations of levels
/// `i..j−1`, `Y` = level-`i` g-nodes adjacent to mine (as `Z` of §10.4); true iff every
/// `x ∈ X` has, for every `y ∈ Y` with `x ≠ y`, a stored path through `y`.
pub fn check_connectivity_of(dests: &Dests, from: usize, to: usize) -> bool {
    let mut i = from.saturating_sub(1);
    let j = to;
    loop {
        if j <= i {
            return true;
        }
        if dests.keys().any(|d| d.lvl == i) {
            break;
        }
        i += 1;
    }
    let y: Vec<HCoord> = adjacent_gnodes(dests, i)
        .into_iter()
        .filter(|g| g.lvl == i)
        .collect();
    dests
        .iter()
        .filter(|(x, _)| x.lvl >= i && x.lvl < j)
        .all(|(x, ps)| {
            y.iter()
                .filter(|g| *g != x)
                .all(|g| ps.iter().any(|p| p.hops.contains(g)))
        })
}

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

    /// §13.5 `remove_outer_arcs` (connectivity identities only; a main identity ignores
    /// it): every arc whose neighbour's coordinate level is ≥ `connectivity_to_level`, or
    /// whose neighbour address is unknown (HEAD), is removed as by `arc_remove` and reported
    /// with `ArcRemoved { bad_link: false }`.
    pub fn remove_outer_arcs(&mut self) -> Vec<Output> {
        if !self.is_connectivity() {
            return vec![];
        }
        let to = self.conn_to;
        let outer: Vec<ArcId> = self
            .arcs()
            .filter(|a| self.neighbour_level(*a).is_none_or(|lv| lv >= to))
            .collect();
        for arc in outer {
            self.drop_arc(arc, false);
        }
        self.take()
    }

    /// §13.6 `check_connectivity`: may this connectivity identity be dismissed without
    /// splitting its g-nodes of levels `from..to`? (Locking is the caller's business.)
    /// A main identity answers false.
    pub fn check_connectivity(&self) -> bool {
        self.is_connectivity() && check_connectivity_of(&self.dests, self.conn_from, self.conn_to)
    }

    /// Deletes every destination of level ≥ `lvl` (`path_removed` for each shown path,
    /// `destination_removed`). Returns whether anything was deleted.
    pub(crate) fn wipe_levels(&mut self, lvl: usize) -> bool {
        let gone: Vec<HCoord> = self
            .dests
            .keys()
            .filter(|d| d.lvl >= lvl)
            .copied()
            .collect();
        for d in &gone {
            if let Some(ps) = self.dests.remove(d) {
                for p in ps.iter().filter(|p| d.lvl == 0 || p.exposed) {
                    let mut v = p.view(&self.arc_costs);
                    v.cost = Cost::Dead;
                    self.signal(Signal::PathRemoved(v));
                }
                self.signal(Signal::DestinationRemoved(*d));
            }
        }
        !gone.is_empty()
    }

    /// §12.3 `exit_network(lvl)`: my level-`lvl` g-node is the younger island of a split
    /// g-node and becomes a network of its own. Destinations of level ≥ `lvl` are deleted,
    /// a full ETP goes to the arcs that stay (neighbour inside my level-`lvl` g-node or
    /// address unknown), every other arc is removed (`ArcRemoved`, not a bad link).
    pub fn exit_network(&mut self, lvl: usize) -> Vec<Output> {
        let lvl = lvl.min(self.l);
        let mut changed = self.wipe_levels(lvl);
        changed |= self.update_own(true);
        let (keep, drop): (Vec<ArcId>, Vec<ArcId>) = self
            .arcs()
            .partition(|a| self.neighbour_level(*a).is_none_or(|lv| lv < lvl));
        if !keep.is_empty() {
            let full = self.full_etp();
            self.send(keep, full, true);
        }
        for arc in drop {
            self.arcs.remove(&arc);
            self.arc_costs.remove(&arc);
            self.out.push(Output::ArcRemoved {
                arc,
                bad_link: false,
            });
            changed = true;
        }
        // Paths below `lvl` never go through an arc towards a neighbour at level ≥ `lvl`
        // (hops are non-decreasing), so nothing else refers to the removed arcs.
        changed |= self.wipe_levels(lvl);
        changed |= self.update_own(true);
        if changed {
            self.out.push(Output::PathsChanged);
        }
        self.take()
    }

    pub(crate) fn on_remove_identity(&mut self) {
        self.signal(Signal::RemoveIdentity);
    }
}
