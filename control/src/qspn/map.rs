//! The map update of one round (qspn.md §10, Vala `update_map`): merge candidates into the
//! stored paths, filter, select, decide what to advertise and which signals to emit.
use std::collections::{BTreeMap, BTreeSet};

use super::cost::important_variation;
use super::event::Signal;
use super::fingerprint::{elder_cmp, same};
use super::msg::{ArcId, Cost, Fingerprint, HCoord};
use super::path::{eldest_fp, evaluate, sort_by_total, NodePath};
use super::select::{mch_ratio, select, Ctx};

pub type Dests = BTreeMap<HCoord, Vec<NodePath>>;

/// Inputs of one map update besides the map and the candidates.
pub struct MapCtx<'a> {
    pub arc_costs: &'a BTreeMap<ArcId, Cost>,
    /// `Vn`: max-distinct g-nodes of the neighbours with known address.
    pub vn: BTreeSet<HCoord>,
    pub max_paths: usize,
    pub mch_base: f64,
    pub bootstrap_complete: bool,
    /// §10.2 `a_changed`: stored paths through it count as changed.
    pub a_changed: Option<ArcId>,
}

/// A split to debounce (§10.6): destination, eldest fingerprint, the other one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitCandidate {
    pub d: HCoord,
    pub fe: Fingerprint,
    pub f: Fingerprint,
}

/// What one round produced.
#[derive(Debug, Default)]
pub struct MapResult {
    /// Changed paths to advertise (§10.5), `cost` = my total cost (Dead for removed ones).
    pub p: Vec<NodePath>,
    pub signals: Vec<Signal>,
    /// §10.6 `B`: destinations for a first-detection split flood.
    pub b: BTreeSet<HCoord>,
    pub splits: Vec<SplitCandidate>,
    /// The stored map changed (any path, flag or order).
    pub changed: bool,
}

/// `Z` for levels `0..=max_lvl` (§10.4, Vala `my_gnode_neighbors`; levels per §18.4): for
/// every stored path to a destination of level ≥ `i`, its first level-`i` hop.
pub fn adjacent_gnodes(dests: &Dests, max_lvl: usize) -> BTreeSet<HCoord> {
    let mut z = BTreeSet::new();
    for (d, paths) in dests {
        for p in paths {
            for i in 0..=max_lvl.min(d.lvl) {
                if let Some(h) = p.hops.iter().find(|h| h.lvl == i) {
                    z.insert(*h);
                }
            }
        }
    }
    z
}

/// `nodes_inside` of a known destination (§4), 0 if unknown.
pub fn nodes_of(dests: &Dests, g: &HCoord) -> u32 {
    dests
        .get(g)
        .and_then(|ps| evaluate(g.lvl, ps))
        .map_or(0, |(_, n)| n)
}

/// Paths `get_paths_to` shows (§14): level 0 all, level > 0 only exposed ones.
pub fn shown<'a>(d: &HCoord, paths: &'a [NodePath]) -> impl Iterator<Item = &'a NodePath> {
    let lvl = d.lvl;
    paths.iter().filter(move |p| lvl == 0 || p.exposed)
}

fn hops_at(p: &NodePath, lvl: usize) -> usize {
    p.hops.iter().filter(|h| h.lvl == lvl).count()
}

fn count_relevant(old: u32, new: u32) -> bool {
    // Outside [0.9·old, 1.1·old], in integers.
    let (o, n) = (old as u64 * 10, new as u64 * 10);
    n < o - old as u64 || n > o + old as u64
}

/// §10: updates `dests` with candidates `q` (all destinations they name) and re-evaluates
/// also the destinations in `extra` (e.g. those reached through a changed arc). Candidates
/// that repeat an earlier candidate's route are ignored (a peer cannot inflate the map).
/// A destination that disappears does not make other destinations be re-evaluated: paths
/// through it keep their stale hop until their own destination is (§10.3, §16.5: that is
/// what keeps a connectivity identity's routes working while a neighbour's coordinate
/// changes).
pub fn update_map(
    dests: &mut Dests,
    q: Vec<NodePath>,
    extra: BTreeSet<HCoord>,
    ctx: &MapCtx,
) -> MapResult {
    let mut res = MapResult::default();
    let mut groups: BTreeMap<HCoord, Vec<NodePath>> = BTreeMap::new();
    for p in q {
        let Some(d) = p.dest() else { continue };
        let g = groups.entry(d).or_default();
        if !g.iter().any(|x| x.same_route(&p)) {
            g.push(p);
        }
    }
    for d in extra {
        groups.entry(d).or_default();
    }
    // §10.1 order: by level, then by fewer hops at that level in the cheapest candidate
    // (or stored path when there is no candidate).
    let key = |d: &HCoord, cands: &Vec<NodePath>, dests: &Dests| {
        let best = cands
            .iter()
            .min_by_key(|p| p.total(ctx.arc_costs))
            .or_else(|| dests.get(d).and_then(|v| v.first()));
        (d.lvl, best.map_or(usize::MAX, |p| hops_at(p, d.lvl)), *d)
    };
    let mut order: Vec<_> = groups.iter().map(|(d, c)| key(d, c, dests)).collect();
    order.sort();
    for (_, _, d) in order {
        let cands = groups.remove(&d).unwrap_or_default();
        update_one(dests, d, cands, ctx, &mut res);
    }
    res
}

/// One destination (§10.2–10.6).
fn update_one(
    dests: &mut Dests,
    d: HCoord,
    mut qd: Vec<NodePath>,
    ctx: &MapCtx,
    res: &mut MapResult,
) {
    let m: Vec<NodePath> = dests.get(&d).cloned().unwrap_or_default();
    // §10.2 merge; the flag = "changed" (V) for stored paths.
    let mut o: Vec<(NodePath, bool)> = Vec::with_capacity(m.len() + qd.len());
    for p in &m {
        let changed_arc = ctx.a_changed == Some(p.arc());
        if let Some(i) = qd.iter().position(|q| q.same_route(p)) {
            let mut q = qd.remove(i);
            let relevant = !same(&q.fingerprint, &p.fingerprint)
                || important_variation(p.cost, q.cost)
                || count_relevant(p.nodes_inside, q.nodes_inside);
            if relevant {
                q.exposed = p.exposed;
                o.push((q, true));
            } else {
                o.push((p.clone(), changed_arc));
            }
        } else {
            o.push((p.clone(), changed_arc));
        }
    }
    o.extend(qd.into_iter().map(|q| (q, false)));
    o.sort_by_key(|(p, _)| p.total(ctx.arc_costs));
    // §10.3 hop-known filter.
    o.retain(|(p, _)| {
        p.hops[..p.hops.len() - 1]
            .iter()
            .all(|h| dests.contains_key(h))
    });
    // §10.4 selection.
    let known = !m.is_empty();
    let mch = if known && ctx.bootstrap_complete {
        let gws: BTreeSet<ArcId> = shown(&d, &m).map(|p| p.arc()).collect();
        mch_ratio(ctx.mch_base, nodes_of(dests, &d), gws.len())
    } else {
        ctx.mch_base
    };
    let nodes = |g: &HCoord| nodes_of(dests, g);
    let sctx = Ctx {
        max_paths: ctx.max_paths,
        mch,
        vn: ctx.vn.clone(),
        z: adjacent_gnodes(dests, d.lvl),
        dest_nodes: (d.lvl > 0 && known).then(|| nodes_of(dests, &d)),
        nodes_of: &nodes,
        arc_costs: ctx.arc_costs,
    };
    let changed: Vec<NodePath> = o
        .iter()
        .filter(|(_, c)| *c)
        .map(|(p, _)| p.clone())
        .collect();
    let mut kept = select(o.into_iter().map(|(p, _)| p).collect(), &sctx);
    // §10.5 exposure: level 0 always; level > 0 iff the path carries the eldest fingerprint
    // (re-evaluated for every kept path, §19 recommendation; docs/QSPN.md).
    let valid_fp = if d.lvl > 0 {
        eldest_fp(&kept).cloned()
    } else {
        None
    };
    let is_valid =
        |p: &NodePath| d.lvl == 0 || valid_fp.as_ref().is_some_and(|v| same(v, &p.fingerprint));
    let mut sig_new = Vec::new();
    let mut sig_rem = Vec::new();
    let mut sig_chg = Vec::new();
    let advert = |p: &NodePath, c: Cost| {
        let mut a = p.clone();
        a.cost = c;
        a
    };
    for p in kept.iter_mut() {
        let now = is_valid(p);
        match m.iter().find(|s| s.same_route(p)) {
            None => {
                res.p.push(advert(p, p.total(ctx.arc_costs)));
                if now {
                    sig_new.push(Signal::PathAdded(p.view(ctx.arc_costs)));
                }
            }
            Some(s) => {
                let was = s.exposed || d.lvl == 0;
                let chg = changed.iter().any(|c| c.same_route(p));
                if chg {
                    res.p.push(advert(p, p.total(ctx.arc_costs)));
                }
                let v = p.view(ctx.arc_costs);
                match (was, now) {
                    (true, true) if chg => sig_chg.push(Signal::PathChanged(v)),
                    (true, false) => sig_chg.push(Signal::PathRemoved(v)),
                    (false, true) => sig_chg.push(Signal::PathAdded(v)),
                    _ => {}
                }
            }
        }
        p.exposed = now;
    }
    for s in &m {
        if !kept.iter().any(|p| p.same_route(s)) {
            res.p.push(advert(s, Cost::Dead));
            if s.exposed || d.lvl == 0 {
                let mut v = s.view(ctx.arc_costs);
                v.cost = Cost::Dead;
                sig_rem.push(Signal::PathRemoved(v));
            }
        }
    }
    // §10.6 split bookkeeping.
    if d.lvl > 0 && kept.len() > 1 {
        let before: BTreeSet<u64> = m.iter().map(|p| p.fingerprint.id).collect();
        let mut after: Vec<&Fingerprint> = Vec::new();
        for p in &kept {
            if !after.iter().any(|f| f.id == p.fingerprint.id) {
                after.push(&p.fingerprint);
            }
        }
        if after.len() > 1 {
            if after.iter().any(|f| !before.contains(&f.id)) {
                res.b.insert(d);
            }
            after.sort_by(|a, b| elder_cmp(a, b));
            for f in &after[1..] {
                res.splits.push(SplitCandidate {
                    d,
                    fe: after[0].clone(),
                    f: (*f).clone(),
                });
            }
        }
    }
    sort_by_total(&mut kept, ctx.arc_costs);
    if m.is_empty() && !kept.is_empty() {
        res.signals.push(Signal::DestinationAdded(d));
    }
    res.signals.extend(sig_new);
    res.signals.extend(sig_rem);
    res.signals.extend(sig_chg);
    if !m.is_empty() && kept.is_empty() {
        res.signals.push(Signal::DestinationRemoved(d));
    }
    if kept != m {
        res.changed = true;
    }
    if kept.is_empty() {
        dests.remove(&d);
    } else {
        dests.insert(d, kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qspn::path::tests::{fp, h, np};

    fn ctx(costs: &BTreeMap<ArcId, Cost>) -> MapCtx<'_> {
        MapCtx {
            arc_costs: costs,
            vn: BTreeSet::new(),
            max_paths: 5,
            mch_base: 0.6,
            bootstrap_complete: true,
            a_changed: None,
        }
    }

    #[test]
    fn new_destination_then_irrelevant_then_dead() {
        let costs: BTreeMap<_, _> = [(1, Cost::Real(100))].into();
        let mut dests = Dests::new();
        let intr = np(&[h(0, 1)], &[1], Cost::Null, fp(7, 0, &[]), 1);
        let r = update_map(
            &mut dests,
            vec![intr.clone()],
            BTreeSet::new(),
            &ctx(&costs),
        );
        assert!(r.changed);
        assert_eq!(r.signals[0], Signal::DestinationAdded(h(0, 1)));
        assert!(matches!(r.signals[1], Signal::PathAdded(_)));
        assert_eq!(r.p.len(), 1);
        assert_eq!(r.p[0].cost, Cost::Real(100));
        // The same again: nothing.
        let r = update_map(
            &mut dests,
            vec![intr.clone()],
            BTreeSet::new(),
            &ctx(&costs),
        );
        assert!(!r.changed && r.p.is_empty() && r.signals.is_empty());
        // Count 1 → 2 is relevant (beyond ±10 %).
        let mut c2 = intr.clone();
        c2.nodes_inside = 2;
        let r = update_map(&mut dests, vec![c2], BTreeSet::new(), &ctx(&costs));
        assert!(matches!(r.signals[..], [Signal::PathChanged(_)]));
        assert_eq!(r.p.len(), 1);
        // Dead: removed.
        let mut dead = intr.clone();
        dead.cost = Cost::Dead;
        let r = update_map(&mut dests, vec![dead], BTreeSet::new(), &ctx(&costs));
        assert!(matches!(
            r.signals[..],
            [Signal::PathRemoved(_), Signal::DestinationRemoved(_)]
        ));
        assert_eq!(r.p[0].cost, Cost::Dead);
        assert!(dests.is_empty());
    }

    #[test]
    fn unknown_intermediate_hop_is_filtered_but_no_cascade() {
        let costs: BTreeMap<_, _> = [(1, Cost::Real(100))].into();
        let mut dests = Dests::new();
        let far = np(
            &[h(0, 1), h(1, 1)],
            &[1, 5],
            Cost::Real(10),
            fp(8, 1, &[]),
            3,
        );
        // (0,1) unknown → dropped; processing order puts (0,1) first when both come.
        let r = update_map(&mut dests, vec![far.clone()], BTreeSet::new(), &ctx(&costs));
        assert!(dests.is_empty() && !r.changed);
        let intr = np(&[h(0, 1)], &[1], Cost::Null, fp(7, 0, &[]), 1);
        update_map(
            &mut dests,
            vec![far.clone(), intr.clone()],
            BTreeSet::new(),
            &ctx(&costs),
        );
        assert_eq!(dests.len(), 2);
        // Killing (0,1) leaves (1,1) alone (stale hop, §16.5) until (1,1) is re-evaluated.
        let mut dead = intr;
        dead.cost = Cost::Dead;
        let r = update_map(&mut dests, vec![dead], BTreeSet::new(), &ctx(&costs));
        assert_eq!(dests.len(), 1);
        assert_eq!(r.p.len(), 1);
        let r = update_map(&mut dests, vec![], [h(1, 1)].into(), &ctx(&costs));
        assert!(dests.is_empty());
        assert!(r.signals.contains(&Signal::DestinationRemoved(h(1, 1))));
    }

    #[test]
    fn exposure_follows_the_eldest_fingerprint_and_split_bookkeeping() {
        let costs: BTreeMap<_, _> = [(1, Cost::Real(10)), (2, Cost::Real(10))].into();
        let mut dests = Dests::new();
        let n1 = np(&[h(0, 1)], &[1], Cost::Null, fp(1, 0, &[]), 1);
        let n2 = np(&[h(0, 2)], &[2], Cost::Null, fp(2, 0, &[]), 1);
        let young = np(
            &[h(0, 1), h(1, 1)],
            &[1, 5],
            Cost::Real(1),
            fp(20, 1, &[5]),
            3,
        );
        let old = np(
            &[h(0, 2), h(1, 1)],
            &[2, 6],
            Cost::Real(50),
            fp(10, 1, &[1]),
            3,
        );
        let r = update_map(
            &mut dests,
            vec![n1, n2, young.clone()],
            BTreeSet::new(),
            &ctx(&costs),
        );
        assert!(r.b.is_empty());
        assert!(dests[&h(1, 1)][0].exposed);
        let r = update_map(&mut dests, vec![old], BTreeSet::new(), &ctx(&costs));
        // The elder fingerprint arrives: the younger path is hidden, the elder one shown.
        let ps = &dests[&h(1, 1)];
        assert_eq!(ps.len(), 2);
        assert!(!ps[0].exposed && ps[1].exposed);
        assert!(r.b.contains(&h(1, 1)));
        assert_eq!(r.splits.len(), 1);
        assert_eq!((r.splits[0].fe.id, r.splits[0].f.id), (10, 20));
        assert!(r
            .signals
            .iter()
            .any(|s| matches!(s, Signal::PathRemoved(_))));
        assert!(r.signals.iter().any(|s| matches!(s, Signal::PathAdded(_))));
    }

    #[test]
    fn a_changed_marks_paths_changed() {
        let mut costs: BTreeMap<_, _> = [(1, Cost::Real(100))].into();
        let mut dests = Dests::new();
        let intr = np(&[h(0, 1)], &[1], Cost::Null, fp(7, 0, &[]), 1);
        update_map(&mut dests, vec![intr], BTreeSet::new(), &ctx(&costs));
        costs.insert(1, Cost::Real(300));
        let mut c = ctx(&costs);
        c.a_changed = Some(1);
        let r = update_map(&mut dests, vec![], [h(0, 1)].into(), &c);
        assert_eq!(r.p.len(), 1);
        assert_eq!(r.p[0].cost, Cost::Real(300));
        assert!(matches!(r.signals[..], [Signal::PathChanged(_)]));
    }
}
