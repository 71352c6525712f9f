//! `ignore_outside` of an outgoing path (qspn.md §7.4, Vala `set_ignore_outside_for_sending`).
use std::collections::BTreeMap;

use super::msg::{ArcId, Cost, HCoord};
use super::path::NodePath;

/// Element `i` true: receivers outside my level-`i` g-node must drop `p`. `p` is in my view
/// (`arcs[0]` = my arc); `dests` is my map after the round's update.
pub fn ignore_outside(
    p: &NodePath,
    l: usize,
    dests: &BTreeMap<HCoord, Vec<NodePath>>,
    arc_costs: &BTreeMap<ArcId, Cost>,
) -> Vec<bool> {
    let mut out = vec![false; l];
    let Some(d) = p.dest() else { return out };
    for (i, slot) in out.iter_mut().enumerate().skip(1) {
        if d.lvl < i {
            // The destination is inside my level-i g-node.
            *slot = true;
            continue;
        }
        // Where the path leaves my level-i g-node.
        let Some(j) = p.hops.iter().position(|h| h.lvl >= i) else {
            continue;
        };
        let (Some(h), Some(exit_arc)) = (p.hops.get(j), p.arcs.get(j)) else {
            continue;
        };
        let Some(paths) = dests.get(h) else {
            continue; // unknown exit hop (dead paths): false
        };
        // Best stored way to reach that exit arc.
        let best = paths
            .iter()
            .filter(|b| b.arcs.last() == Some(exit_arc))
            .min_by_key(|b| b.total(arc_costs));
        if let Some(b) = best {
            // §18.6: prefix of length j+1 (the code's fix of the docs' typo).
            let is_prefix =
                b.hops.len() == j + 1 && b.hops[..] == p.hops[..=j] && b.arcs[..] == p.arcs[..=j];
            *slot = !is_prefix;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qspn::path::tests::{fp, h, np};

    /// §16.2: γ's ignore_outside for P1, P2, P3; §16.3: the Dead copy after losing γ–δ.
    #[test]
    fn worked_examples_16_2_and_16_3() {
        let (a_gb, a_gd, a_ba) = (11, 12, 13);
        let p1 = np(&[h(0, 1)], &[a_gb], Cost::Null, fp(1, 0, &[]), 1);
        let p2 = np(&[h(1, 0)], &[a_gd], Cost::Null, fp(2, 1, &[]), 2);
        let p3 = np(
            &[h(0, 1), h(2, 0)],
            &[a_gb, a_ba],
            Cost::Real(10000),
            fp(3, 2, &[]),
            1,
        );
        let mut dests = BTreeMap::new();
        dests.insert(h(0, 1), vec![p1.clone()]);
        dests.insert(h(1, 0), vec![p2.clone()]);
        dests.insert(h(2, 0), vec![p3.clone()]);
        let costs: BTreeMap<_, _> = [(a_gb, Cost::Real(11000)), (a_gd, Cost::Real(11000))].into();
        let (f, t) = (false, true);
        assert_eq!(ignore_outside(&p1, 4, &dests, &costs), vec![f, t, t, t]);
        assert_eq!(ignore_outside(&p2, 4, &dests, &costs), vec![f, f, t, t]);
        assert_eq!(ignore_outside(&p3, 4, &dests, &costs), vec![f, f, f, t]);
        dests.remove(&h(1, 0));
        let mut dead = p2.clone();
        dead.cost = Cost::Dead;
        assert_eq!(ignore_outside(&dead, 4, &dests, &costs), vec![f, f, t, t]);
    }

    #[test]
    fn not_the_best_way_to_the_exit_arc() {
        // Two ways to exit arc 9 into (1,1): via (0,1) [cheaper] and via (0,2).
        let via1 = np(
            &[h(0, 1), h(1, 1)],
            &[1, 9],
            Cost::Real(1),
            fp(5, 1, &[]),
            2,
        );
        let via2 = np(
            &[h(0, 2), h(1, 1)],
            &[2, 9],
            Cost::Real(50),
            fp(5, 1, &[]),
            2,
        );
        let far = np(
            &[h(0, 2), h(1, 1), h(2, 0)],
            &[2, 9, 7],
            Cost::Real(60),
            fp(6, 2, &[]),
            2,
        );
        let mut dests = BTreeMap::new();
        dests.insert(h(1, 1), vec![via1.clone(), via2.clone()]);
        let costs: BTreeMap<_, _> = [(1, Cost::Real(1)), (2, Cost::Real(1))].into();
        assert_eq!(
            ignore_outside(&via1, 3, &dests, &costs),
            vec![false, false, true]
        );
        assert_eq!(
            ignore_outside(&via2, 3, &dests, &costs),
            vec![false, true, true]
        );
        assert_eq!(
            ignore_outside(&far, 3, &dests, &costs),
            vec![false, true, false]
        );
    }
}
