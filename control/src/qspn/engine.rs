//! The QSPN instance as a pure state machine (qspn.md §4, §11, §13.1, §14): inputs are
//! method calls, outputs are [`Output`]s the runtime carries out. No I/O, no clock, no
//! threads; timers are requested with [`Output::Timer`] and come back through
//! [`Qspn::on_timer`].
//!
//! Asynchronous procedures of the reference (which gather full ETPs from several arcs and
//! process them together) are split at their requests: each `RequestFullEtp` remembers why
//! it was sent (per arc, FIFO) and each reply is processed **as it arrives** through
//! [`Qspn::on_full_etp`], with its own map update and, if anything changed, its own update
//! ETP. That is correct because every reply is a full ETP of one gateway, processed exactly
//! like one received by `send_etp` (§9 step 10 only touches that arc's paths), and the
//! relevance rule of §10.2 makes the later rounds no-ops when nothing new arrives.
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::event::{Output, Signal, Timer};
use super::fingerprint::{construct_with, same};
use super::ignore::ignore_outside;
use super::map::{shown, update_map, Dests, MapCtx, MapResult};
use super::msg::{ArcId, Cost, EtpMessage, EtpPath, Fingerprint, HCoord, Refusal};
use super::path::{evaluate, NodePath, PathView};
use super::revise::{is_mine, revise};
use super::validate::{check, coord};

/// Instance parameters (qspn.md §3).
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Low level first; `l = gsizes.len()`.
    pub gsizes: Vec<u32>,
    /// 5 in the reference.
    pub max_paths: usize,
    /// 0.6 in the reference.
    pub max_common_hops_ratio: f64,
    /// 600 000 in the reference.
    pub periodic_full_ms: u64,
    /// Seed of the arc-id PRNG (§2.3).
    pub seed: u64,
}

impl Params {
    /// The reference values (§3) for `gsizes` (low level first).
    pub fn new(gsizes: Vec<u32>, seed: u64) -> Self {
        Self {
            gsizes,
            max_paths: 5,
            max_common_hops_ratio: 0.6,
            periodic_full_ms: 600_000,
            seed,
        }
    }
}

/// §3 constants (ms).
pub const BOOTSTRAP_COMPLETE_MS: u64 = 1;
pub const SPLIT_FLOOD_MS: u64 = 500;
pub const SPLIT_THRESHOLD_MS: u64 = 10_000;

/// Why a `RequestFullEtp` was sent on an arc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// §11.1: the arc was just added.
    ArcAdd,
    /// §11.2/§11.3: gathering full ETPs after a cost change or a removal.
    Gather,
    /// §13.2: the bootstrap task's request on a queued arc.
    BootQueue,
    /// §13.2: the requests of the bootstrap exit, before the final broadcast.
    BootExit,
}

#[derive(Clone, Debug)]
pub(crate) struct ArcState {
    pub cost: Cost,
    pub naddr: Option<Vec<u32>>,
    pub pending: VecDeque<Purpose>,
}

/// One QSPN instance (one identity).
#[derive(Clone, Debug)]
pub struct Qspn {
    pub(crate) p: Params,
    pub(crate) l: usize,
    pub(crate) my_naddr: Vec<u32>,
    pub(crate) my_fp0: Fingerprint,
    pub(crate) fps: Vec<Fingerprint>,
    pub(crate) nodes: Vec<u32>,
    pub(crate) arcs: BTreeMap<ArcId, ArcState>,
    /// Arc costs by id, kept in step with `arcs` (NodePath::total reads it).
    pub(crate) arc_costs: BTreeMap<ArcId, Cost>,
    pub(crate) dests: Dests,
    pub(crate) rng: u64,
    /// `l` when not in bootstrap (§4).
    pub(crate) guest_level: usize,
    pub(crate) periodic_epoch: u64,
    /// §12.2 debounces running: (d, eldest id, other id).
    pub(crate) pending_split: BTreeSet<(HCoord, u64, u64)>,
    /// Connectivity levels (§4): both 0 for a main identity.
    pub(crate) conn_from: usize,
    pub(crate) conn_to: usize,
    /// §13.7/§19: `got_prepare_destroy` is propagated only once.
    pub(crate) prepare_destroy_seen: bool,
    /// §13.2: `host_gnode_level` (`l` for `create_net`).
    pub(crate) host_level: usize,
    /// §13.3 normative fix: the guest level given at construction, kept after the bootstrap.
    pub(crate) orig_guest_level: usize,
    /// §13.2 `queued_arcs`.
    pub(crate) queued: VecDeque<ArcId>,
    /// §13.2: a bootstrap request is outstanding.
    pub(crate) boot_busy: bool,
    /// §13.2 exit: requests still outstanding before the final broadcast.
    pub(crate) exit_pending: usize,
    /// §13.2: the ids given to `BootstrapArgs::external_arcs`, same order.
    pub(crate) external_ids: Vec<ArcId>,
    /// §12.2 threshold calculator: a constant (qspnclient), [`SPLIT_THRESHOLD_MS`] unless set.
    pub(crate) split_threshold_ms: u64,
    pub(crate) out: Vec<Output>,
}

fn splitmix64(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Qspn {
    pub(crate) fn blank(p: Params, my_naddr: Vec<u32>, my_fp: Fingerprint) -> Self {
        let l = p.gsizes.len();
        let rng = p.seed;
        let mut q = Self {
            l,
            my_naddr,
            fps: vec![my_fp.clone(); l + 1],
            nodes: vec![1; l + 1],
            my_fp0: my_fp,
            arcs: BTreeMap::new(),
            arc_costs: BTreeMap::new(),
            dests: Dests::new(),
            rng,
            guest_level: l,
            periodic_epoch: 0,
            pending_split: BTreeSet::new(),
            conn_from: 0,
            conn_to: 0,
            prepare_destroy_seen: false,
            split_threshold_ms: SPLIT_THRESHOLD_MS,
            host_level: l,
            orig_guest_level: l,
            queued: VecDeque::new(),
            boot_busy: false,
            exit_pending: 0,
            external_ids: Vec::new(),
            out: Vec::new(),
            p,
        };
        q.update_own(false);
        q
    }

    /// §13.1: a new network. `my_naddr` low level first, `my_naddr.len()` must equal
    /// `p.gsizes.len()` (a local precondition, not peer data).
    pub fn create_net(p: Params, my_naddr: Vec<u32>, my_fp: Fingerprint) -> (Self, Vec<Output>) {
        assert_eq!(
            my_naddr.len(),
            p.gsizes.len(),
            "address levels ≠ topology levels"
        );
        let mut q = Self::blank(p, my_naddr, my_fp);
        q.out.push(Output::Timer {
            after_ms: BOOTSTRAP_COMPLETE_MS,
            timer: Timer::BootstrapComplete,
        });
        let out = q.take();
        (q, out)
    }

    /// The outputs of the call; `PathsChanged` at most once, last (the runtime re-reads the
    /// queries after everything else of the call).
    pub(crate) fn take(&mut self) -> Vec<Output> {
        let mut out = std::mem::take(&mut self.out);
        let n = out.len();
        out.retain(|o| *o != Output::PathsChanged);
        if out.len() != n {
            out.push(Output::PathsChanged);
        }
        out
    }

    pub(crate) fn signal(&mut self, s: Signal) {
        self.out.push(Output::Signal(s));
    }

    pub(crate) fn new_arc_id(&mut self) -> ArcId {
        loop {
            // 1 ..= 2^31 − 2 (§2.3).
            let id = (splitmix64(&mut self.rng) % 0x7FFF_FFFE) as u32 + 1;
            if !self.arcs.contains_key(&id) {
                return id;
            }
        }
    }

    // ------------------------------------------------------------------ own g-node data

    pub(crate) fn is_virtual(&self, lvl: usize) -> bool {
        match (self.my_naddr.get(lvl), self.p.gsizes.get(lvl)) {
            (Some(&p), Some(&g)) => p >= g,
            _ => false,
        }
    }

    /// §6.3/§6.4 (Vala `update_clusters`). Returns whether anything changed; signals
    /// `changed_fp`/`changed_nodes_inside` when `emit`.
    pub(crate) fn update_own(&mut self, emit: bool) -> bool {
        let l = self.l;
        let mut fps = Vec::with_capacity(l + 1);
        let mut nodes = Vec::with_capacity(l + 1);
        fps.push(self.my_fp0.clone());
        nodes.push(u32::from(!self.is_virtual(0)));
        for i in 1..=l {
            let mut others: Vec<(&Fingerprint, bool)> = Vec::new();
            let mut sum: u32 = 0;
            let gsize = self.p.gsizes.get(i - 1).copied().unwrap_or(u32::MAX);
            for (d, ps) in self
                .dests
                .range(HCoord { lvl: i - 1, pos: 0 }..HCoord { lvl: i, pos: 0 })
            {
                if let Some((f, n)) = evaluate(d.lvl, ps) {
                    // A virtual position is a connectivity g-node: null eldership (§6.4).
                    others.push((f, d.pos >= gsize));
                    // A level-0 destination counts 1, a connectivity node 0 (§6.4).
                    sum = sum.saturating_add(if i == 1 { n.min(1) } else { n });
                }
            }
            fps.push(construct_with(&fps[i - 1], others, self.is_virtual(i - 1)));
            let mut n = nodes[i - 1].saturating_add(sum);
            if i < l && self.is_virtual(i) {
                n = 0;
            }
            nodes.push(n);
        }
        let mut changed = false;
        for i in 1..=l {
            if !same(&fps[i], &self.fps[i]) {
                changed = true;
                if emit {
                    self.signal(Signal::ChangedFp(i));
                }
            }
            if nodes[i] != self.nodes[i] {
                changed = true;
                if emit {
                    self.signal(Signal::ChangedNodesInside(i));
                }
            }
        }
        changed |= fps[0] != self.fps[0] || nodes[0] != self.nodes[0];
        self.fps = fps;
        self.nodes = nodes;
        changed
    }

    // ------------------------------------------------------------------ ETP building

    fn etp_path(&self, p: &NodePath) -> EtpPath {
        EtpPath {
            hops: p.hops.clone(),
            arcs: p.arcs.clone(),
            cost: p.cost,
            fingerprint: p.fingerprint.clone(),
            nodes_inside: p.nodes_inside,
            ignore_outside: ignore_outside(p, self.l, &self.dests, &self.arc_costs),
        }
    }

    /// An ETP from me with `hops` and paths `ps` (whose `cost` is already my total cost).
    pub(crate) fn etp(&self, hops: Vec<HCoord>, ps: &[NodePath]) -> EtpMessage {
        EtpMessage {
            node_address: self.my_naddr.clone(),
            fingerprints: self.fps.clone(),
            nodes_inside: self.nodes.clone(),
            hops,
            p_list: ps.iter().map(|p| self.etp_path(p)).collect(),
        }
    }

    /// Every stored path, advertised with my total cost, filtered by `keep`.
    fn advertised(&self, keep: impl Fn(&HCoord, &NodePath) -> bool) -> Vec<NodePath> {
        let mut v = Vec::new();
        for (d, ps) in &self.dests {
            for p in ps {
                if keep(d, p) {
                    let mut a = p.clone();
                    a.cost = p.total(&self.arc_costs);
                    v.push(a);
                }
            }
        }
        v
    }

    /// §7.5 `prepare_full_etp`.
    pub(crate) fn full_etp(&self) -> EtpMessage {
        let ps = self.advertised(|_, _| true);
        self.etp(vec![], &ps)
    }

    pub(crate) fn send(&mut self, arcs: Vec<ArcId>, etp: EtpMessage, is_full: bool) {
        if !arcs.is_empty() {
            self.out.push(Output::SendEtp { arcs, etp, is_full });
        }
    }

    /// Whether the neighbour on `arc` would keep an ETP from me whose hop list (my view) is
    /// `hops`, rather than drop it whole as cyclic (its §9 steps 3–4, computed here from its
    /// address: hops of a level ≥ my coordinate's in its view mean the same g-nodes to both
    /// of us). An arc whose neighbour's address is not known yet keeps everything.
    pub(crate) fn keeps(&self, arc: ArcId, hops: &[HCoord]) -> bool {
        let Some(n) = self.arcs.get(&arc).and_then(|a| a.naddr.as_deref()) else {
            return true;
        };
        let Some(me) = coord(n, &self.my_naddr) else {
            return true;
        };
        !std::iter::once(&me)
            .chain(hops.iter().filter(|h| h.lvl >= me.lvl))
            .any(|h| is_mine(n, h))
    }

    /// The arcs a forward of an ETP received over `from` with revised hops `hops` goes to:
    /// all others, except those whose neighbour would drop it as cyclic (on a grid, most
    /// forwards back into g-nodes the ETP already crossed; sending them only cost both ends).
    pub(crate) fn forward_arcs(&self, from: ArcId, hops: &[HCoord]) -> Vec<ArcId> {
        self.all_arcs_but(Some(from))
            .into_iter()
            .filter(|a| self.keeps(*a, hops))
            .collect()
    }

    pub(crate) fn all_arcs_but(&self, but: Option<ArcId>) -> Vec<ArcId> {
        self.arcs
            .keys()
            .copied()
            .filter(|a| Some(*a) != but)
            .collect()
    }

    // ------------------------------------------------------------------ map rounds

    fn vn(&self) -> BTreeSet<HCoord> {
        self.arcs
            .values()
            .filter_map(|a| a.naddr.as_ref().and_then(|n| coord(&self.my_naddr, n)))
            .collect()
    }

    /// One map update (§10) plus what follows it in every procedure: signals, split
    /// bookkeeping (§10.6, §12), own g-node data (§6.3). Returns (P, own data changed).
    pub(crate) fn round(
        &mut self,
        q: Vec<NodePath>,
        extra: BTreeSet<HCoord>,
        a_changed: Option<ArcId>,
    ) -> (Vec<NodePath>, bool) {
        let ctx = MapCtx {
            arc_costs: &self.arc_costs,
            vn: self.vn(),
            max_paths: self.p.max_paths,
            mch_base: self.p.max_common_hops_ratio,
            bootstrap_complete: self.is_bootstrap_complete(),
            a_changed,
        };
        let mut dests = std::mem::take(&mut self.dests);
        let r: MapResult = update_map(&mut dests, q, extra, &ctx);
        self.dests = dests;
        for s in r.signals {
            self.signal(s);
        }
        self.split_bookkeeping(r.b, r.splits);
        let own = self.update_own(true);
        if r.changed || own {
            self.out.push(Output::PathsChanged);
        }
        (r.p, own)
    }

    /// Processes a validated ETP received over `arc` (§9 + §10). Returns the revised hop
    /// list (None when the ETP was dropped as cyclic), P and whether own data changed.
    pub(crate) fn process(
        &mut self,
        arc: ArcId,
        m: &EtpMessage,
        is_full: bool,
    ) -> (Option<Vec<HCoord>>, Vec<NodePath>, bool) {
        let Some(st) = self.arcs.get_mut(&arc) else {
            return (None, vec![], false);
        };
        // §9 step 2: store the neighbour's address even if the ETP is then dropped.
        let old = st.naddr.replace(m.node_address.clone());
        if old.as_deref() != Some(&m.node_address[..]) {
            self.out.push(Output::PathsChanged);
        }
        // The neighbour moved at its own level (it became a connectivity identity, or was made
        // real elsewhere): what it advertised from its old position is stored under its old
        // coordinate, and it will not advertise those paths again (they did not change for
        // it). Its full ETP replaces them (§9 step 10). ntkplane's addition to §9 step 9,
        // which only kills the path to the old coordinate itself (docs/QSPN.md).
        let moved = old.as_deref().is_some_and(|o| {
            o.len() == m.node_address.len()
                && coord(&self.my_naddr, &m.node_address)
                    .is_some_and(|v| o[v.lvl] != m.node_address[v.lvl])
        });
        if moved && !is_full {
            self.request(arc, Purpose::Gather);
        }
        let via: Vec<NodePath> = self
            .dests
            .values()
            .flatten()
            .filter(|p| p.arc() == arc)
            .cloned()
            .collect();
        let Some(r) = revise(&self.my_naddr, arc, old.as_deref(), m, is_full, &via) else {
            return (None, vec![], false);
        };
        let Some(q) = r.q else {
            return (None, vec![], false);
        };
        let (p, own) = self.round(q, BTreeSet::new(), None);
        (Some(r.hops), p, own)
    }

    // ------------------------------------------------------------------ arcs (§11.1–11.3)

    /// §11.1. The id is drawn from the instance's PRNG (§2.3).
    pub fn arc_add(&mut self, cost: Cost) -> (ArcId, Vec<Output>) {
        let id = self.new_arc_id();
        self.arcs.insert(
            id,
            ArcState {
                cost,
                naddr: None,
                pending: VecDeque::new(),
            },
        );
        self.arc_costs.insert(id, cost);
        if self.is_bootstrap_complete() {
            self.request(id, Purpose::ArcAdd);
        } else {
            // §13.2: new arcs are only queued for the bootstrap task.
            self.queued.push_back(id);
            if !self.boot_busy {
                self.boot_next();
            }
        }
        (id, self.take())
    }

    pub(crate) fn request(&mut self, arc: ArcId, why: Purpose) {
        if let Some(st) = self.arcs.get_mut(&arc) {
            st.pending.push_back(why);
            self.out.push(Output::RequestFullEtp { arc });
        }
    }

    pub(crate) fn gather_all(&mut self) {
        let arcs: Vec<ArcId> = self.arcs.keys().copied().collect();
        for a in arcs {
            self.request(a, Purpose::Gather);
        }
    }

    /// An update ETP (§7.5) to all arcs if the round changed anything.
    pub(crate) fn publish_update(&mut self, p: &[NodePath], own: bool) {
        if !p.is_empty() || own {
            let etp = self.etp(vec![], p);
            let arcs = self.all_arcs_but(None);
            self.send(arcs, etp, false);
        }
    }

    /// §11.2: the arc's cost changed. The paths through it are re-evaluated at once (their
    /// total cost changed: they count as changed, §10.2 `a_changed`); then full ETPs are
    /// requested from all arcs, each processed as it arrives.
    pub fn arc_changed(&mut self, arc: ArcId, cost: Cost) -> Vec<Output> {
        let Some(st) = self.arcs.get_mut(&arc) else {
            return vec![];
        };
        st.cost = cost;
        self.arc_costs.insert(arc, cost);
        if !self.is_bootstrap_complete() {
            return self.take();
        }
        let extra: BTreeSet<HCoord> = self
            .dests
            .iter()
            .filter(|(_, ps)| ps.iter().any(|p| p.arc() == arc))
            .map(|(d, _)| *d)
            .collect();
        if !extra.is_empty() {
            self.out.push(Output::PathsChanged);
        }
        let (p, own) = self.round(vec![], extra, Some(arc));
        self.publish_update(&p, own);
        self.gather_all();
        self.take()
    }

    /// §11.3: the arc is gone. Its paths are withdrawn at once (Dead copies through the
    /// normal map update, which also drops paths whose intermediate hop vanished) and the
    /// update ETP carrying the Dead copies is sent right away; then full ETPs are requested
    /// from the remaining arcs, each processed as it arrives (docs/QSPN.md).
    pub fn arc_remove(&mut self, arc: ArcId) -> Vec<Output> {
        self.remove_arc_inner(arc);
        self.take()
    }

    pub(crate) fn remove_arc_inner(&mut self, arc: ArcId) {
        let Some(st) = self.arcs.remove(&arc) else {
            return;
        };
        self.arc_costs.remove(&arc);
        // §13.2/§18.2: out of the bootstrap queue and the arc list.
        self.queued.retain(|a| *a != arc);
        if st.naddr.is_some() {
            self.out.push(Output::PathsChanged);
        }
        let dead: Vec<NodePath> = self
            .dests
            .values()
            .flatten()
            .filter(|p| p.arc() == arc)
            .map(|p| {
                let mut d = p.clone();
                d.cost = Cost::Dead;
                d
            })
            .collect();
        let (p, own) = self.round(dead, BTreeSet::new(), None);
        if self.is_bootstrap_complete() {
            self.publish_update(&p, own);
            self.gather_all();
        }
        // Requests still outstanding on the arc will never be answered.
        for why in st.pending {
            self.abandon(why);
        }
    }

    /// A request of purpose `why` ended without a usable answer: let its procedure go on.
    pub(crate) fn abandon(&mut self, why: Purpose) {
        match why {
            Purpose::BootQueue => {
                self.boot_busy = false;
                self.boot_next();
            }
            Purpose::BootExit => self.exit_done_one(),
            Purpose::ArcAdd | Purpose::Gather => {}
        }
    }

    /// The engine drops an arc on its own (§8.3, §7.3): as `arc_remove`, plus `ArcRemoved`.
    pub(crate) fn drop_arc(&mut self, arc: ArcId, bad_link: bool) {
        if self.arcs.contains_key(&arc) {
            self.remove_arc_inner(arc);
            self.out.push(Output::ArcRemoved { arc, bad_link });
        }
    }

    // ------------------------------------------------------------------ remote methods

    /// §8.1 `get_full_etp` from the neighbour on `arc`: stores its address and answers with
    /// my paths to destinations of level ≥ its coordinate's level that avoid it (§7.5).
    pub fn on_get_full_etp(
        &mut self,
        arc: ArcId,
        requesting_address: &[u32],
    ) -> (Result<EtpMessage, Refusal>, Vec<Output>) {
        if !self.is_bootstrap_complete() {
            return (Err(Refusal::BootstrapInProgress), self.take());
        }
        let Some(b) = coord(&self.my_naddr, requesting_address) else {
            return (Err(Refusal::NotAccepted), self.take());
        };
        let Some(st) = self.arcs.get_mut(&arc) else {
            return (Err(Refusal::NotAccepted), self.take());
        };
        if st.naddr.as_deref() != Some(requesting_address) {
            st.naddr = Some(requesting_address.to_vec());
            self.out.push(Output::PathsChanged);
        }
        let ps = self.advertised(|d, p| d.lvl >= b.lvl && !p.hops.contains(&b));
        let etp = self.etp(vec![], &ps);
        (Ok(etp), self.take())
    }

    /// The answer to one of my `RequestFullEtp` on `arc` (§8.3 reactions; §11.1/§11.2/§11.3
    /// and §13.2 continuations). Replies nobody asked for are ignored. Each reply is processed
    /// on its own as it arrives (see the module doc).
    pub fn on_full_etp(&mut self, arc: ArcId, reply: Result<EtpMessage, Refusal>) -> Vec<Output> {
        let Some(why) = self
            .arcs
            .get_mut(&arc)
            .and_then(|st| st.pending.pop_front())
        else {
            return vec![];
        };
        let ok = match reply {
            // The neighbour will flood when its bootstrap ends: give up for this round.
            Err(Refusal::BootstrapInProgress) => None,
            Err(Refusal::NotAccepted) => {
                self.drop_arc(arc, false);
                None
            }
            Ok(m) => {
                if check(&m, &self.my_naddr, &self.p.gsizes).is_ok() {
                    Some(m)
                } else {
                    self.drop_arc(arc, false);
                    None
                }
            }
        };
        match (why, ok) {
            (Purpose::ArcAdd, Some(m)) => {
                let (hops, p, own) = self.process(arc, &m, true);
                let hops = hops.unwrap_or_default();
                let others = self.forward_arcs(arc, &hops);
                if (!p.is_empty() || own) && !others.is_empty() {
                    let etp = self.etp(hops, &p);
                    self.send(others, etp, false);
                }
                let full = self.full_etp();
                self.send(vec![arc], full, true);
            }
            (Purpose::Gather, Some(m)) => {
                let (_, p, own) = self.process(arc, &m, true);
                self.publish_update(&p, own);
            }
            (Purpose::BootQueue, ok) => self.boot_reply(arc, ok),
            (Purpose::BootExit, ok) => {
                if let Some(m) = ok {
                    self.process(arc, &m, true);
                }
                self.exit_done_one();
            }
            (Purpose::ArcAdd | Purpose::Gather, None) => {}
        }
        self.take()
    }

    /// A transport error on a request over `arc` (§8.3): the arc is removed, bad link.
    pub fn on_request_failed(&mut self, arc: ArcId) -> Vec<Output> {
        let why = self
            .arcs
            .get_mut(&arc)
            .and_then(|st| st.pending.pop_front());
        self.drop_arc(arc, true);
        if let Some(why) = why {
            self.abandon(why);
        }
        self.take()
    }

    /// §11.4: an ETP received over `arc`; invalid (§7.3) → the arc is removed.
    pub fn on_send_etp(&mut self, arc: ArcId, etp: EtpMessage, is_full: bool) -> Vec<Output> {
        if !self.arcs.contains_key(&arc) {
            return vec![];
        }
        if check(&etp, &self.my_naddr, &self.p.gsizes).is_err() {
            self.drop_arc(arc, false);
            return self.take();
        }
        if !self.is_bootstrap_complete() {
            // §13.2: only a member of the moving g-node that knows the host g-node's
            // level-(h−1) destinations ends the bootstrap this way; nothing is forwarded.
            let inside =
                coord(&self.my_naddr, &etp.node_address).is_some_and(|v| v.lvl < self.guest_level);
            let knows = etp
                .p_list
                .iter()
                .any(|p| p.hops.last().is_some_and(|h| h.lvl + 1 == self.host_level));
            if inside && knows {
                self.process(arc, &etp, is_full);
                self.exit_bootstrap();
            }
            return self.take();
        }
        let (hops, p, own) = self.process(arc, &etp, is_full);
        if let Some(hops) = hops {
            let others = self.forward_arcs(arc, &hops);
            if (!p.is_empty() || own) && !others.is_empty() {
                let fwd = self.etp(hops, &p);
                self.send(others, fwd, false);
            }
        }
        self.take()
    }

    // ------------------------------------------------------------------ timers

    pub fn on_timer(&mut self, t: Timer) -> Vec<Output> {
        match t {
            Timer::BootstrapComplete => {
                self.signal(Signal::BootstrapComplete);
                self.start_periodic();
            }
            Timer::Periodic { epoch }
                if epoch == self.periodic_epoch && self.is_bootstrap_complete() =>
            {
                if !self.arcs.is_empty() {
                    let full = self.full_etp();
                    let arcs = self.all_arcs_but(None);
                    self.send(arcs, full, true);
                }
                self.out.push(Output::Timer {
                    after_ms: self.p.periodic_full_ms,
                    timer: Timer::Periodic { epoch },
                });
            }
            Timer::SplitFlood { dests } => self.split_flood(&dests),
            Timer::SplitDebounce { d, fe, f } => self.split_signal(d, fe, f),
            Timer::RemoveIdentity => self.on_remove_identity(),
            Timer::BootstrapGiveUp => {
                if !self.is_bootstrap_complete() {
                    self.exit_bootstrap();
                }
            }
            Timer::PresenceNotified => self.signal(Signal::PresenceNotified),
            Timer::ConnectivityNotice { lvl, old_pos } => self.connectivity_notice(lvl, old_pos),
            Timer::Periodic { .. } => {}
        }
        self.take()
    }

    pub(crate) fn start_periodic(&mut self) {
        self.periodic_epoch += 1;
        self.out.push(Output::Timer {
            after_ms: self.p.periodic_full_ms,
            timer: Timer::Periodic {
                epoch: self.periodic_epoch,
            },
        });
    }

    // ------------------------------------------------------------------ split (§12)

    fn split_bookkeeping(&mut self, b: BTreeSet<HCoord>, splits: Vec<super::map::SplitCandidate>) {
        if !b.is_empty() {
            self.out.push(Output::Timer {
                after_ms: SPLIT_FLOOD_MS,
                timer: Timer::SplitFlood {
                    dests: b.into_iter().collect(),
                },
            });
        }
        for s in splits {
            let key = (s.d, s.fe.id, s.f.id);
            if self.pending_split.insert(key) {
                self.out.push(Output::Timer {
                    after_ms: self.split_threshold_ms,
                    timer: Timer::SplitDebounce {
                        d: s.d,
                        fe: s.fe.id,
                        f: s.f.id,
                    },
                });
            }
        }
    }

    /// §12.1: all my paths to `dests`, to all arcs.
    fn split_flood(&mut self, dests: &[HCoord]) {
        if self.arcs.is_empty() {
            return;
        }
        let ps = self.advertised(|d, _| dests.contains(d));
        if ps.is_empty() {
            return;
        }
        let etp = self.etp(vec![], &ps);
        let arcs = self.all_arcs_but(None);
        self.send(arcs, etp, false);
    }

    /// §12.2: after the debounce, if `d` still has a path with the eldest fingerprint, every
    /// arc towards a neighbour inside `d` whose cheapest path to `d` reports `f` is signalled.
    fn split_signal(&mut self, d: HCoord, fe: u64, f: u64) {
        self.pending_split.remove(&(d, fe, f));
        let Some(ps) = self.dests.get(&d) else { return };
        if !ps.iter().any(|p| p.fingerprint.id == fe) {
            return;
        }
        let mut sigs = Vec::new();
        for (arc, st) in &self.arcs {
            let inside = st.naddr.as_ref().and_then(|n| coord(&self.my_naddr, n)) == Some(d);
            if !inside {
                continue;
            }
            if let Some(p) = ps.iter().find(|p| p.arc() == *arc) {
                if p.fingerprint.id == f {
                    sigs.push(Signal::GnodeSplitted {
                        arc: *arc,
                        d,
                        fp: p.fingerprint.clone(),
                    });
                }
            }
        }
        for s in sigs {
            self.signal(s);
        }
    }

    // ------------------------------------------------------------------ queries (§14)

    /// Every known destination with its paths as `get_paths_to` shows them (§14): level 0
    /// all kept paths, level > 0 only the exposed ones (eldest fingerprint); ascending total
    /// cost. During a bootstrap, destinations of level ≥ the guest level are left out.
    pub fn paths(&self) -> BTreeMap<HCoord, Vec<PathView>> {
        let mut m = BTreeMap::new();
        for (d, ps) in &self.dests {
            if d.lvl >= self.guest_level {
                continue;
            }
            let mut v: Vec<PathView> = shown(d, ps).map(|p| p.view(&self.arc_costs)).collect();
            v.sort_by_key(|p| p.cost);
            if !v.is_empty() {
                m.insert(*d, v);
            }
        }
        m
    }

    pub fn neighbour_address(&self, arc: ArcId) -> Option<&[u32]> {
        self.arcs.get(&arc).and_then(|a| a.naddr.as_deref())
    }

    pub fn arcs(&self) -> impl Iterator<Item = ArcId> + '_ {
        self.arcs.keys().copied()
    }

    /// Sets the split debounce (§12.2, default [`SPLIT_THRESHOLD_MS`]).
    pub fn set_split_threshold_ms(&mut self, ms: u64) {
        self.split_threshold_ms = ms;
    }

    pub fn arc_cost(&self, arc: ArcId) -> Option<Cost> {
        self.arc_costs.get(&arc).copied()
    }

    pub fn is_bootstrap_complete(&self) -> bool {
        self.guest_level == self.l
    }

    /// My fingerprint at level `lvl` (`0..=l`; larger values read level `l`).
    pub fn fingerprint(&self, lvl: usize) -> &Fingerprint {
        &self.fps[lvl.min(self.l)]
    }

    /// My nodes_inside at level `lvl` (`0..=l`; larger values read level `l`).
    pub fn nodes_inside(&self, lvl: usize) -> u32 {
        self.nodes[lvl.min(self.l)]
    }

    /// My current address, low level first.
    pub fn my_naddr(&self) -> &[u32] {
        &self.my_naddr
    }

    /// The number of levels `l`.
    pub fn levels(&self) -> usize {
        self.l
    }

    /// Known destinations of level `lvl` (§14 `get_known_destinations`).
    pub fn known_destinations(&self, lvl: usize) -> Vec<HCoord> {
        self.dests
            .keys()
            .filter(|d| d.lvl == lvl)
            .copied()
            .collect()
    }

    /// All kept paths to `d` (advertised ones, exposed or not), ascending total cost.
    pub fn all_paths_to(&self, d: &HCoord) -> Vec<PathView> {
        self.dests
            .get(d)
            .map(|ps| ps.iter().map(|p| p.view(&self.arc_costs)).collect())
            .unwrap_or_default()
    }
}
