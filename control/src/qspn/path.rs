//! Stored paths (qspn.md §2.2) and the per-destination derived data (§4).
use std::collections::BTreeMap;

use super::cost;
use super::fingerprint::elder_cmp;
use super::msg::{ArcId, Cost, Fingerprint, HCoord};

/// A path stored by this instance towards a destination (§2.2, Vala `NodePath`).
/// Invariant (kept by construction in `revise`): `hops` and `arcs` are non-empty and of the
/// same length; `arcs[0]` is my own arc id to the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePath {
    pub hops: Vec<HCoord>,
    pub arcs: Vec<ArcId>,
    /// Cost advertised by the gateway (gateway → destination); `Null` for the intrinsic path.
    pub cost: Cost,
    pub fingerprint: Fingerprint,
    pub nodes_inside: u32,
    /// §10.5: a `path_added` was signalled and no `path_removed` since (levels > 0 only;
    /// level-0 paths are always "exposed").
    pub exposed: bool,
}

impl NodePath {
    /// My arc to the gateway.
    pub fn arc(&self) -> ArcId {
        self.arcs.first().copied().unwrap_or(0)
    }
    /// The destination (last hop).
    pub fn dest(&self) -> Option<HCoord> {
        self.hops.last().copied()
    }
    /// Same path (§2.2, Vala `hops_arcs_equal`).
    pub fn same_route(&self, o: &NodePath) -> bool {
        self.hops == o.hops && self.arcs == o.arcs
    }
    /// Total cost = arc cost ⊕ advertised (§2.2); an arc unknown to `arc_costs` is Dead.
    pub fn total(&self, arc_costs: &BTreeMap<ArcId, Cost>) -> Cost {
        let a = arc_costs.get(&self.arc()).copied().unwrap_or(Cost::Dead);
        cost::add(a, self.cost)
    }
    pub fn view(&self, arc_costs: &BTreeMap<ArcId, Cost>) -> PathView {
        PathView {
            arc: self.arc(),
            hops: self.hops.clone(),
            arcs: self.arcs.clone(),
            cost: self.total(arc_costs),
            nodes_inside: self.nodes_inside,
        }
    }
}

/// A path as the queries and signals show it (§14): local arc, hops, the arc ids along it
/// (equality = same `arcs`), total cost, the count it reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathView {
    pub arc: ArcId,
    pub hops: Vec<HCoord>,
    pub arcs: Vec<ArcId>,
    /// Total cost: my arc's cost ⊕ the cost advertised by the gateway.
    pub cost: Cost,
    pub nodes_inside: u32,
}

/// The eldest fingerprint among `paths` (§4; `None` if empty).
pub fn eldest_fp(paths: &[NodePath]) -> Option<&Fingerprint> {
    paths
        .iter()
        .map(|p| &p.fingerprint)
        .min_by(|a, b| elder_cmp(a, b))
}

/// Derived (fingerprint, nodes_inside) of a destination (§4, Vala `Destination.evaluate`):
/// level 0 → the cheapest path's; level > 0 → the eldest fingerprint and the count of the
/// cheapest path carrying it. `paths` must be sorted by ascending total cost.
pub fn evaluate(lvl: usize, paths: &[NodePath]) -> Option<(&Fingerprint, u32)> {
    let first = paths.first()?;
    if lvl == 0 {
        return Some((&first.fingerprint, first.nodes_inside));
    }
    let fe = eldest_fp(paths)?;
    let p = paths.iter().find(|p| p.fingerprint.id == fe.id)?;
    Some((fe, p.nodes_inside))
}

/// Sorts by ascending total cost; stable (ties keep their order, §10.2).
pub fn sort_by_total(paths: &mut [NodePath], arc_costs: &BTreeMap<ArcId, Cost>) {
    paths.sort_by_key(|p| p.total(arc_costs));
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn h(lvl: usize, pos: u32) -> HCoord {
        HCoord { lvl, pos }
    }
    pub fn fp(id: u64, level: u8, seed: &[u32]) -> Fingerprint {
        Fingerprint {
            id,
            level,
            elderships: vec![],
            elderships_seed: seed.to_vec(),
        }
    }
    pub fn np(hops: &[HCoord], arcs: &[ArcId], cost: Cost, f: Fingerprint, n: u32) -> NodePath {
        NodePath {
            hops: hops.to_vec(),
            arcs: arcs.to_vec(),
            cost,
            fingerprint: f,
            nodes_inside: n,
            exposed: false,
        }
    }

    #[test]
    fn evaluate_level0_and_higher() {
        let a = np(&[h(1, 1)], &[1], Cost::Null, fp(5, 1, &[3]), 4);
        let b = np(
            &[h(0, 1), h(1, 1)],
            &[2, 9],
            Cost::Real(5),
            fp(6, 1, &[1]),
            7,
        );
        let c = np(
            &[h(0, 2), h(1, 1)],
            &[3, 9],
            Cost::Real(9),
            fp(6, 1, &[1]),
            8,
        );
        let v = vec![a.clone(), b, c];
        let (f, n) = evaluate(1, &v).unwrap();
        assert_eq!((f.id, n), (6, 7));
        let (f, n) = evaluate(0, &v).unwrap();
        assert_eq!((f.id, n), (5, 4));
        assert!(evaluate(0, &[]).is_none());
        let mut costs = BTreeMap::new();
        costs.insert(1, Cost::Real(10));
        assert_eq!(a.total(&costs), Cost::Real(10));
        assert_eq!(v[1].total(&costs), Cost::Dead);
    }
}
