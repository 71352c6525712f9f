//! Disjoint path selection (qspn.md §10.4, docs PercorsiDisgiunti; Vala `update_map`,
//! `get_mch_ratio`).
use std::collections::{BTreeMap, BTreeSet};

use super::msg::{ArcId, Cost, HCoord};
use super::path::NodePath;

/// `mch_ratio(x, v)` (§10.4): the common-hops threshold for a destination of `x` nodes
/// already reached through `v` distinct gateways.
pub fn mch_ratio(base: f64, nodes: u32, gateways: usize) -> f64 {
    let lambda = match gateways {
        0 | 1 => 0.45,
        2 => 0.35,
        3 => 0.27,
        4 => 0.20,
        5 => 0.15,
        6 => 0.12,
        7 => 0.10,
        _ => 0.08,
    };
    let gamma = match nodes {
        0..=9 => 1.0,
        10..=24 => 0.9,
        25..=74 => 0.8,
        75..=249 => 0.6,
        250..=749 => 0.3,
        750..=2999 => 0.1,
        _ => 0.0001,
    };
    let eps = base * lambda;
    (base - eps) * gamma + eps
}

/// At most this many distinct fingerprints per destination make a path mandatory (§10.4
/// step 2, first rule). Two are what a split shows; the bound keeps a peer inventing
/// fingerprints from growing the kept list without limit (docs/QSPN.md "Bounds").
pub const MAX_MANDATORY_FPS: usize = 4;

/// What the selection needs besides the candidates.
pub struct Ctx<'a> {
    pub max_paths: usize,
    pub mch: f64,
    /// `Vn`: the max-distinct g-nodes of the neighbours with known address.
    pub vn: BTreeSet<HCoord>,
    /// `Z`: g-nodes adjacent to my g-nodes, levels `0..=d.lvl` (§18.4: docs).
    pub z: BTreeSet<HCoord>,
    /// `nodes_inside(d)` if `d.lvl > 0` and `d` is known, else `None`.
    pub dest_nodes: Option<u32>,
    /// `nodes_inside(g)` of a known destination `g` (0 if unknown).
    pub nodes_of: &'a dyn Fn(&HCoord) -> u32,
    pub arc_costs: &'a BTreeMap<ArcId, Cost>,
}

/// `common/total` of candidate `p1` against kept path `p2` (§10.4 step 3); `None` when
/// `total = 0` (the test is skipped).
pub fn common_ratio(p1: &NodePath, p2: &NodePath, ctx: &Ctx) -> Option<f64> {
    let (mut common, mut total) = (0u64, 0u64);
    let n = p2.hops.len();
    for idx in 0..n.saturating_sub(1) {
        let g = &p2.hops[idx];
        let w = (1.5 * f64::from((ctx.nodes_of)(g)).sqrt()).floor() as u64;
        total += w;
        if p1.hops.contains(g) {
            let in_ = p1.arcs.contains(&p2.arcs[idx]);
            let out = p2.arcs.get(idx + 1).is_some_and(|a| p1.arcs.contains(a));
            common += match (in_, out) {
                (true, true) => w,
                (false, false) => 0,
                _ => w.div_ceil(2),
            };
        }
    }
    if let Some(nd) = ctx.dest_nodes {
        let mut w = (0.75 * f64::from(nd).sqrt()).floor() as u64;
        w = w.saturating_sub(1);
        if w > 0 {
            total += w;
            if p2.arcs.last().is_some_and(|a| p1.arcs.contains(a)) {
                common += w;
            }
        }
    }
    (total > 0).then(|| common as f64 / total as f64)
}

/// §10.4: keeps mandatory paths (first of each fingerprint, first avoiding each neighbour's
/// g-node, first through each adjacent g-node) and up to `max_paths` others that are
/// disjoint enough from every kept one. `o` must be sorted by ascending total cost; the
/// result keeps that order. Dead paths are never kept.
pub fn select(o: Vec<NodePath>, ctx: &Ctx) -> Vec<NodePath> {
    let mut fps: BTreeSet<u64> = BTreeSet::new();
    let mut vn = ctx.vn.clone();
    let mut z = ctx.z.clone();
    let mut r: Vec<NodePath> = Vec::new();
    for p1 in o {
        if p1.total(ctx.arc_costs) == Cost::Dead {
            break;
        }
        let mut mandatory = fps.len() < MAX_MANDATORY_FPS && fps.insert(p1.fingerprint.id);
        let avoid: Vec<HCoord> = vn
            .iter()
            .filter(|g| !p1.hops.contains(g))
            .copied()
            .collect();
        if !avoid.is_empty() {
            mandatory = true;
            for g in avoid {
                vn.remove(&g);
            }
        }
        let through: Vec<HCoord> = z.iter().filter(|g| p1.hops.contains(g)).copied().collect();
        if !through.is_empty() {
            mandatory = true;
            for g in through {
                z.remove(&g);
            }
        }
        if mandatory {
            r.push(p1);
        } else if r.len() < ctx.max_paths {
            let too_close = r
                .iter()
                .any(|p2| common_ratio(&p1, p2, ctx).is_some_and(|x| x > ctx.mch));
            if !too_close {
                r.push(p1);
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qspn::path::tests::{fp, h, np};

    #[test]
    fn mch_examples() {
        assert!((mch_ratio(0.6, 5, 1) - 0.6).abs() < 1e-9);
        assert!((mch_ratio(0.6, 100, 2) - 0.444).abs() < 1e-9);
        assert!((mch_ratio(0.6, 5000, 9) - (0.6 * 0.92 * 0.0001 + 0.048)).abs() < 1e-9);
    }

    /// §16.6 (docs PercorsiDisgiunti), flat network, mch = 0.7.
    #[test]
    fn worked_example_16_6() {
        // Nodes at level 0: B=1, C=2, D=3, E=4, F=5, G=6 (destination).
        let (b, c, d, e, f, g) = (h(0, 1), h(0, 2), h(0, 3), h(0, 4), h(0, 5), h(0, 6));
        // Arc ids: A→B 1, B→C 2, C→G 3, B→D 4, D→G 5, B→E 6, E→F 7, F→G 8, E→D 9, D→E 10.
        let f0 = fp(60, 0, &[]);
        let mk =
            |hops: &[HCoord], arcs: &[u32], c: u64| np(hops, arcs, Cost::Real(c), f0.clone(), 1);
        let p1 = mk(&[b, c, g], &[1, 2, 3], 150);
        let p2 = mk(&[b, d, g], &[1, 4, 5], 160);
        let p3 = mk(&[b, e, f, g], &[1, 6, 7, 8], 170);
        let p4 = mk(&[b, e, d, g], &[1, 6, 9, 5], 180);
        let p5 = mk(&[b, d, e, f, g], &[1, 4, 10, 7, 8], 190);
        let mut costs = BTreeMap::new();
        costs.insert(1, Cost::Real(0));
        let nodes = |_: &HCoord| 1u32;
        let ctx = Ctx {
            max_paths: 5,
            mch: 0.7,
            vn: [b].into(),
            z: [b].into(),
            dest_nodes: None,
            nodes_of: &nodes,
            arc_costs: &costs,
        };
        assert_eq!(common_ratio(&p2, &p1, &ctx), Some(0.5));
        assert_eq!(common_ratio(&p4, &p2, &ctx), Some(1.0));
        let r = select(vec![p1.clone(), p2.clone(), p3.clone(), p4, p5], &ctx);
        assert_eq!(r, vec![p1, p2, p3]);
    }

    #[test]
    fn dead_stops_and_max_paths_bounds_non_mandatory() {
        let f0 = fp(60, 0, &[]);
        let mut costs = BTreeMap::new();
        for a in 1..=10 {
            costs.insert(a, Cost::Real(a as u64));
        }
        // Ten one-hop-gateway paths to (0,9) through distinct arcs and distinct first hops
        // (total 0 → the ratio test is skipped), no Vn/Z: only max_paths bounds them.
        let o: Vec<NodePath> = (1..=10u32)
            .map(|a| {
                np(
                    &[h(0, a), h(0, 20)],
                    &[a, 100 + a],
                    Cost::Real(0),
                    f0.clone(),
                    1,
                )
            })
            .collect();
        let zero = |_: &HCoord| 0u32;
        let ctx = Ctx {
            max_paths: 3,
            mch: 0.6,
            vn: BTreeSet::new(),
            z: BTreeSet::new(),
            dest_nodes: None,
            nodes_of: &zero,
            arc_costs: &costs,
        };
        // The first is mandatory (new fingerprint); it counts in |R| < max_paths.
        assert_eq!(select(o.clone(), &ctx).len(), 3);
        // A Dead one stops the scan.
        let mut o2 = o.clone();
        o2[1].cost = Cost::Dead;
        assert_eq!(select(o2, &ctx).len(), 1);
        // Mandatory beyond max_paths: every path avoids a different neighbour g-node.
        let ctx2 = Ctx {
            vn: (1..=10).map(|a| h(0, a)).collect(),
            max_paths: 0,
            ..ctx
        };
        // p1 avoids all but (0,1): removes 9; p2 avoids (0,1): mandatory; rest not.
        assert_eq!(select(o, &ctx2).len(), 2);
    }

    #[test]
    fn invented_fingerprints_are_not_all_mandatory() {
        let costs: BTreeMap<ArcId, Cost> = (1..=20).map(|a| (a, Cost::Real(1))).collect();
        let zero = |_: &HCoord| 0u32;
        let ctx = Ctx {
            max_paths: 0,
            mch: 0.6,
            vn: BTreeSet::new(),
            z: BTreeSet::new(),
            dest_nodes: None,
            nodes_of: &zero,
            arc_costs: &costs,
        };
        let o: Vec<NodePath> = (1..=20u32)
            .map(|a| {
                np(
                    &[h(0, a), h(0, 30)],
                    &[a, 99],
                    Cost::Real(0),
                    fp(u64::from(a), 0, &[]),
                    1,
                )
            })
            .collect();
        assert_eq!(select(o, &ctx).len(), MAX_MANDATORY_FPS);
    }

    #[test]
    fn destination_weight_counts_shared_last_arc() {
        let f1 = fp(60, 1, &[]);
        let costs = BTreeMap::new();
        let nodes = |_: &HCoord| 0u32;
        let ctx = Ctx {
            max_paths: 5,
            mch: 0.6,
            vn: BTreeSet::new(),
            z: BTreeSet::new(),
            dest_nodes: Some(100), // floor(0.75·10) − 1 = 6
            nodes_of: &nodes,
            arc_costs: &costs,
        };
        let p1 = np(&[h(0, 1), h(1, 1)], &[1, 9], Cost::Real(0), f1.clone(), 1);
        let p2 = np(&[h(0, 2), h(1, 1)], &[2, 9], Cost::Real(0), f1.clone(), 1);
        let p3 = np(&[h(0, 2), h(1, 1)], &[2, 8], Cost::Real(0), f1, 1);
        assert_eq!(common_ratio(&p1, &p2, &ctx), Some(1.0));
        assert_eq!(common_ratio(&p1, &p3, &ctx), Some(0.0));
    }
}
