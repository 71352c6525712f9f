//! What a QSPN instance knows, in the words of the forwarding model: the `etp` feed
//! (neighbour addresses per identity arc, paths per destination). Pure.
//!
//! The runtime hands the result to the writer as a `Request::Etp`, so protocol-learnt paths
//! take exactly the road the feed commands take (model → validate → persist → reconcile).
use std::collections::BTreeMap;

use crate::{
    addr::{HCoord, NtkAddress},
    daemon::proto::{DestPaths, Feed, KnownNeighbour},
    fwd::Path,
    qspn::msg::{ArcId, Cost},
};

/// One path as the QSPN instance reports it (total cost: arc ⊕ advertised).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathIn {
    pub arc: ArcId,
    pub hops: Vec<HCoord>,
    pub cost: Cost,
}

/// The feed for one identity. `model_arc` maps a QSPN arc id to the identity arc's index in
/// the model; paths over arcs the model does not know (a race with a removal) are left out,
/// and so are dead ones. A total cost is never `Null` (the arc's own cost is real); should
/// one be, it counts as 0 µs.
pub fn feed_of(
    paths: &BTreeMap<HCoord, Vec<PathIn>>,
    neighbours: &[(ArcId, Vec<u32>)],
    model_arc: impl Fn(ArcId) -> Option<u32>,
) -> Feed {
    let neighbours = neighbours
        .iter()
        .filter_map(|(a, pos)| {
            Some(KnownNeighbour {
                arc: model_arc(*a)?,
                address: NtkAddress::from_low_first(pos.clone()).to_string(),
            })
        })
        .collect();
    let paths = paths
        .iter()
        .filter_map(|(dest, ps)| {
            let ps: Vec<Path> = ps
                .iter()
                .filter_map(|p| {
                    let cost = match p.cost {
                        Cost::Real(c) => c,
                        Cost::Null => 0,
                        Cost::Dead => return None,
                    };
                    Some(Path {
                        arc: model_arc(p.arc)?,
                        hops: p.hops.clone(),
                        cost,
                    })
                })
                .collect();
            (!ps.is_empty()).then_some(DestPaths {
                dest: *dest,
                paths: ps,
            })
        })
        .collect();
    Feed { neighbours, paths }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(lvl: usize, pos: u32) -> HCoord {
        HCoord { lvl, pos }
    }

    #[test]
    fn arcs_are_renamed_dead_and_unknown_ones_dropped() {
        let mut paths = BTreeMap::new();
        paths.insert(
            h(0, 1),
            vec![
                PathIn {
                    arc: 77,
                    hops: vec![h(0, 1)],
                    cost: Cost::Real(1000),
                },
                PathIn {
                    arc: 99, // not in the model: left out
                    hops: vec![h(0, 1)],
                    cost: Cost::Real(10),
                },
            ],
        );
        paths.insert(
            h(1, 0),
            vec![PathIn {
                arc: 77,
                hops: vec![h(0, 1), h(1, 0)],
                cost: Cost::Dead,
            }],
        );
        let f = feed_of(
            &paths,
            &[(77, vec![1, 0, 1, 2]), (99, vec![0, 0, 0, 0])],
            |a| (a == 77).then_some(3),
        );
        assert_eq!(
            f.neighbours,
            vec![KnownNeighbour {
                arc: 3,
                address: "2.1.0.1".into()
            }]
        );
        assert_eq!(
            f.paths.len(),
            1,
            "the destination with only a dead path is gone"
        );
        assert_eq!(f.paths[0].dest, h(0, 1));
        assert_eq!(
            f.paths[0].paths,
            vec![Path {
                arc: 3,
                hops: vec![h(0, 1)],
                cost: 1000
            }]
        );
    }
}
