//! Identities born by entering a network or migrating (qspn.md §13.2) and the bootstrap
//! task, plus `make_real` (§13.3, with the normative fix).
use std::collections::{BTreeSet, VecDeque};

use super::engine::{ArcState, Params, Purpose, Qspn};
use super::event::{Output, Signal, Timer};
use super::msg::{ArcId, Cost, EtpMessage, Fingerprint};
use super::validate::coord;

/// §13.2 bootstrap give-up wait.
pub const BOOTSTRAP_GIVE_UP_MS: u64 = 10_000;
/// §13.2 presence delay after the final broadcast.
pub const PRESENCE_MS: u64 = 1_000;

/// An internal arc of a new identity (towards a neighbour that moves with it, §13.2).
#[derive(Clone, Debug, PartialEq)]
pub struct InternalArc {
    /// The previous identity's id of the corresponding old arc: the new arc **inherits** it
    /// (§2.3), so the copied paths stay valid.
    pub prev_arc: ArcId,
    pub cost: Cost,
    /// The internal neighbour's new address, low level first.
    pub peer_naddr: Vec<u32>,
}

/// Arguments of [`Qspn::enter_net`] (identical for an entry and a migration, §13.2).
pub struct BootstrapArgs<'a> {
    pub internal_arcs: Vec<InternalArc>,
    /// Costs of the external arcs; their ids are drawn by the new instance and returned by
    /// [`Qspn::external_arc_ids`] in the same order.
    pub external_arcs: Vec<Cost>,
    pub my_naddr: Vec<u32>,
    pub my_fp: Fingerprint,
    /// `g`: level of the moving g-node.
    pub guest_gnode_level: usize,
    /// `h > g`: level of the host g-node.
    pub host_gnode_level: usize,
    pub previous: &'a Qspn,
    /// Rewrites the elderships of levels ≥ g in copied fingerprints (`None` = unchanged).
    pub update_internal_fingerprints: Option<&'a dyn Fn(&Fingerprint) -> Fingerprint>,
}

impl Qspn {
    /// §13.2 `enter_net` / `migration`: a new identity in bootstrap. Copies the previous
    /// identity's destinations below the guest level through the internal arcs (paths whose
    /// arc has no internal match are dropped, HEAD), then starts the bootstrap task:
    /// `RequestFullEtp` on the first external arc (or the give-up timer if there is none).
    /// Out-of-range levels are clamped (`1 ≤ h ≤ l`, `g < h`).
    pub fn enter_net(p: Params, a: BootstrapArgs) -> (Self, Vec<Output>) {
        assert_eq!(
            a.my_naddr.len(),
            p.gsizes.len(),
            "address levels ≠ topology levels"
        );
        let l = p.gsizes.len();
        let h = a.host_gnode_level.clamp(1, l.max(1));
        let g = a.guest_gnode_level.min(h - 1);
        let mut q = Self::blank(p, a.my_naddr, a.my_fp);
        // 1. Connectivity levels (HEAD: `to` clamped to ≤ g).
        q.conn_from = a.previous.conn_from;
        q.conn_to = a.previous.conn_to.min(g);
        if q.conn_to < q.conn_from {
            q.conn_from = 0;
            q.conn_to = 0;
        }
        // 2. Arcs.
        for ia in a.internal_arcs {
            if ia.prev_arc == 0 || q.arcs.contains_key(&ia.prev_arc) || ia.peer_naddr.len() != l {
                continue;
            }
            q.arcs.insert(
                ia.prev_arc,
                ArcState {
                    cost: ia.cost,
                    naddr: Some(ia.peer_naddr),
                    pending: VecDeque::new(),
                },
            );
            q.arc_costs.insert(ia.prev_arc, ia.cost);
        }
        for cost in a.external_arcs {
            let id = q.new_arc_id();
            q.arcs.insert(
                id,
                ArcState {
                    cost,
                    naddr: None,
                    pending: VecDeque::new(),
                },
            );
            q.arc_costs.insert(id, cost);
            q.external_ids.push(id);
            q.queued.push_back(id);
        }
        // 3. Copy the destinations inside the moving g-node.
        let upd = a.update_internal_fingerprints;
        for (d, ps) in a
            .previous
            .dests
            .range(..super::msg::HCoord { lvl: g, pos: 0 })
        {
            let mut kept: Vec<_> = ps
                .iter()
                .filter(|p| q.arcs.contains_key(&p.arc()) && !q.external_ids.contains(&p.arc()))
                .cloned()
                .map(|mut p| {
                    if let Some(f) = upd {
                        p.fingerprint = f(&p.fingerprint);
                    }
                    p
                })
                .collect();
            super::path::sort_by_total(&mut kept, &q.arc_costs);
            if !kept.is_empty() {
                q.dests.insert(*d, kept);
            }
        }
        // 4. Own g-node data; 5. bootstrap.
        q.update_own(false);
        q.guest_level = g;
        q.orig_guest_level = g;
        q.host_level = h;
        if !q.dests.is_empty() {
            q.out.push(Output::PathsChanged);
        }
        q.boot_next();
        let out = q.take();
        (q, out)
    }

    /// The ids of `BootstrapArgs::external_arcs`, same order.
    pub fn external_arc_ids(&self) -> &[ArcId] {
        &self.external_ids
    }

    /// `(guest_gnode_level, host_gnode_level)`; the guest level is `l` once the bootstrap
    /// is complete.
    pub fn gnode_levels(&self) -> (usize, usize) {
        (self.guest_level, self.host_level)
    }

    /// The bootstrap task's next step (§13.2): ask the first queued arc, or, with an empty
    /// queue, arm the give-up timer.
    pub(crate) fn boot_next(&mut self) {
        if self.is_bootstrap_complete() || self.boot_busy {
            return;
        }
        if let Some(a) = self.queued.pop_front() {
            self.boot_busy = true;
            self.request(a, Purpose::BootQueue);
        } else {
            self.out.push(Output::Timer {
                after_ms: BOOTSTRAP_GIVE_UP_MS,
                timer: Timer::BootstrapGiveUp,
            });
        }
    }

    /// A (validated, or `None`) reply to the bootstrap task's request on `arc`.
    pub(crate) fn boot_reply(&mut self, arc: ArcId, ok: Option<EtpMessage>) {
        self.boot_busy = false;
        if self.is_bootstrap_complete() {
            // The give-up timer ended the bootstrap meanwhile: an ordinary full ETP.
            if let Some(m) = ok {
                let (_, p, own) = self.process(arc, &m, true);
                self.publish_update(&p, own);
            }
            return;
        }
        if let Some(m) = ok {
            let v = coord(&self.my_naddr, &m.node_address);
            // Only a neighbour in the host g-node, outside the moving one, can tell me
            // about the network I am entering.
            if v.is_some_and(|v| v.lvl >= self.guest_level && v.lvl < self.host_level) {
                self.process(arc, &m, true);
                self.exit_bootstrap();
                return;
            }
        }
        self.boot_next();
    }

    /// §13.2 exit (Vala `exit_bootstrap_phase`): complete, ask every arc for a full ETP
    /// (processed without forwarding), then broadcast my full ETP and, 1 s later, signal
    /// `presence_notified`.
    pub(crate) fn exit_bootstrap(&mut self) {
        self.guest_level = self.l;
        self.queued.clear();
        self.boot_busy = false;
        self.signal(Signal::BootstrapComplete);
        self.start_periodic();
        self.out.push(Output::PathsChanged);
        let arcs: Vec<ArcId> = self.arcs().collect();
        self.exit_pending = arcs.len();
        if arcs.is_empty() {
            self.finish_exit();
        }
        for a in arcs {
            self.request(a, Purpose::BootExit);
        }
    }

    pub(crate) fn exit_done_one(&mut self) {
        if self.exit_pending > 0 {
            self.exit_pending -= 1;
            if self.exit_pending == 0 {
                self.finish_exit();
            }
        }
    }

    fn finish_exit(&mut self) {
        let arcs = self.all_arcs_but(None);
        if !arcs.is_empty() {
            let full = self.full_etp();
            self.send(arcs, full, true);
        }
        self.out.push(Output::Timer {
            after_ms: PRESENCE_MS,
            timer: Timer::PresenceNotified,
        });
    }

    /// §13.3 `make_real` (c230e8e2), with the normative fix: the tests use the guest level
    /// given at construction. `update_naddr` rewrites my address and those of the internal
    /// neighbours (coordinate level < g, judged with my old address); destinations below g
    /// get their fingerprints rewritten; my level-0 fingerprint becomes `new_fp` (the count
    /// follows from the address, §6.4). After the bootstrap, an empty ETP goes to the
    /// neighbours with unknown address or coordinate level ≥ g. An `update_naddr` that
    /// changes the number of levels is ignored (local misuse, no panic).
    pub fn make_real(
        &mut self,
        update_naddr: &dyn Fn(&[u32]) -> Vec<u32>,
        update_internal_fingerprints: Option<&dyn Fn(&Fingerprint) -> Fingerprint>,
        new_fp: Fingerprint,
    ) -> Vec<Output> {
        let new_my = update_naddr(&self.my_naddr);
        if new_my.len() != self.l {
            return vec![];
        }
        let g = self.orig_guest_level;
        let mut notify = Vec::new();
        let old_my = self.my_naddr.clone();
        for (a, st) in self.arcs.iter_mut() {
            match st.naddr.as_ref().and_then(|n| coord(&old_my, n)) {
                Some(c) if c.lvl < g => {
                    let n = update_naddr(st.naddr.as_deref().unwrap_or(&[]));
                    if n.len() == old_my.len() {
                        st.naddr = Some(n);
                    }
                }
                _ => notify.push(*a),
            }
        }
        self.my_naddr = new_my;
        if let Some(f) = update_internal_fingerprints {
            for (_, ps) in self
                .dests
                .range_mut(..super::msg::HCoord { lvl: g, pos: 0 })
            {
                for p in ps.iter_mut() {
                    p.fingerprint = f(&p.fingerprint);
                }
            }
        }
        self.my_fp0 = new_fp;
        self.update_own(true);
        self.out.push(Output::PathsChanged);
        if self.is_bootstrap_complete() && !notify.is_empty() {
            let etp = self.etp(vec![], &[]);
            self.send(notify, etp, false);
        }
        self.take()
    }

    /// §13.4 `make_connectivity(from, to, update_naddr)` (HEAD: the null eldership and the
    /// zero count follow from the virtual position). Internal arcs (neighbour coordinate
    /// level `< from−1`) get their stored address rewritten, as does mine; 50 ms later the
    /// connectivity notice goes out. Calls violating `0 < from ≤ to ≤ l` are ignored.
    pub fn make_connectivity(
        &mut self,
        from: usize,
        to: usize,
        update_naddr: &dyn Fn(&[u32]) -> Vec<u32>,
    ) -> Vec<Output> {
        if !(0 < from && from <= to && to <= self.l) {
            return vec![];
        }
        let new_my = update_naddr(&self.my_naddr);
        if new_my.len() != self.l {
            return vec![];
        }
        let lvl = from - 1;
        let old_pos = self.my_naddr[lvl];
        let old_my = self.my_naddr.clone();
        for st in self.arcs.values_mut() {
            let inside = st
                .naddr
                .as_ref()
                .and_then(|n| coord(&old_my, n))
                .is_some_and(|c| c.lvl < lvl);
            if inside {
                let n = update_naddr(st.naddr.as_deref().unwrap_or(&[]));
                if n.len() == old_my.len() {
                    st.naddr = Some(n);
                }
            }
        }
        self.my_naddr = new_my;
        self.conn_from = from;
        self.conn_to = to;
        self.update_own(true);
        self.out.push(Output::PathsChanged);
        self.out.push(Output::Timer {
            after_ms: super::lifecycle::CONNECTIVITY_NOTICE_MS,
            timer: Timer::ConnectivityNotice { lvl, old_pos },
        });
        self.take()
    }

    /// The §13.4 notice: `{hops [(lvl, old_pos)], no paths}` to every neighbour with known
    /// address outside the moving g-node (coordinate, with my new address, at level `lvl`
    /// and position ≠ `old_pos`, or at a higher level).
    pub(crate) fn connectivity_notice(&mut self, lvl: usize, old_pos: u32) {
        let arcs: Vec<ArcId> = self
            .arcs
            .iter()
            .filter(|(_, st)| {
                st.naddr
                    .as_ref()
                    .and_then(|n| coord(&self.my_naddr, n))
                    .is_some_and(|c| (c.lvl == lvl && c.pos != old_pos) || c.lvl > lvl)
            })
            .map(|(a, _)| *a)
            .collect();
        let hops = vec![super::msg::HCoord { lvl, pos: old_pos }];
        let etp = self.etp(hops, &[]);
        self.send(arcs, etp, false);
    }

    /// The arcs that are still queued for the bootstrap task (for logs/tests).
    pub fn queued_arcs(&self) -> BTreeSet<ArcId> {
        self.queued.iter().copied().collect()
    }
}
