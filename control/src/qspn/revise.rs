//! Turning a received (validated) ETP into candidate paths (qspn.md §9, Vala `revise_etp`).
use super::msg::{ArcId, Cost, EtpMessage, HCoord};
use super::path::NodePath;
use super::validate::coord;

/// The result of §9 for one ETP received over one arc.
#[derive(Clone, Debug, PartialEq)]
pub struct Revised {
    /// The sender's coordinate (max distinct g-node) in my view.
    pub v: HCoord,
    /// The received hop list after the grouping rule (`v` first): the hops of a forward.
    pub hops: Vec<HCoord>,
    /// `None` when the hop list is cyclic for me (§9 step 4): the ETP is dropped entirely.
    pub q: Option<Vec<NodePath>>,
}

/// Is `h` one of my own g-nodes (§2.1)?
pub fn is_mine(my: &[u32], h: &HCoord) -> bool {
    my.get(h.lvl) == Some(&h.pos)
}

/// §9 steps 1, 3–11. `old_addr`: the neighbour address stored for `arc` before this ETP
/// (step 2's bookkeeping is the caller's: it stores `m.node_address`). `via_arc`: my stored
/// paths whose first arc is `arc` (for the Dead copies of a full ETP, step 10).
/// `None` only if `m.node_address` has no coordinate for me (validation rejects that).
pub fn revise<'a>(
    my: &[u32],
    arc: ArcId,
    old_addr: Option<&[u32]>,
    m: &EtpMessage,
    is_full: bool,
    via_arc: impl IntoIterator<Item = &'a NodePath>,
) -> Option<Revised> {
    let v = coord(my, &m.node_address)?;
    let k = v.lvl;
    // Step 3: grouping rule on the ETP's hops.
    let mut hops = vec![v];
    hops.extend(m.hops.iter().copied().filter(|h| h.lvl >= k));
    // Hops are non-decreasing (validated), so "drop leading lvl<k" = "drop all lvl<k".
    // Step 4: acyclic rule on the ETP.
    if hops.iter().any(|h| is_mine(my, h)) {
        return Some(Revised { v, hops, q: None });
    }
    let l = my.len();
    let mut q = Vec::new();
    for p in &m.p_list {
        // Step 5.
        if p.ignore_outside.get(k).copied().unwrap_or(false) {
            continue;
        }
        // Step 6: grouping on the path; hops and arcs stay paired.
        let mut ph = vec![v];
        let mut pa = vec![arc];
        for (h, a) in p.hops.iter().zip(&p.arcs) {
            if h.lvl >= k {
                ph.push(*h);
                pa.push(*a);
            }
        }
        // Step 7: acyclic rule (also drops a path whose destination is one of my g-nodes).
        if ph.iter().any(|h| is_mine(my, h)) {
            continue;
        }
        q.push(NodePath {
            hops: ph,
            arcs: pa,
            cost: p.cost,
            fingerprint: p.fingerprint.clone(),
            nodes_inside: p.nodes_inside,
            exposed: false,
        });
    }
    // Step 8: intrinsic path (k < l: validated address length).
    let fp = m.fingerprints.get(k).cloned()?;
    let ni = m.nodes_inside.get(k).copied().unwrap_or(0);
    q.push(NodePath {
        hops: vec![v],
        arcs: vec![arc],
        cost: Cost::Null,
        fingerprint: fp.clone(),
        nodes_inside: ni,
        exposed: false,
    });
    // Step 9: the neighbour changed position at its own level.
    if let Some(old) = old_addr {
        if old.len() == l && old[k] != m.node_address[k] {
            let old_v = HCoord {
                lvl: k,
                pos: old[k],
            };
            if !is_mine(my, &old_v) {
                q.push(NodePath {
                    hops: vec![old_v],
                    arcs: vec![arc],
                    cost: Cost::Dead,
                    fingerprint: fp,
                    nodes_inside: ni,
                    exposed: false,
                });
            }
        }
    }
    // Step 10: what a full ETP does not offer any more is gone.
    if is_full {
        let mut dead = Vec::new();
        for s in via_arc {
            if s.arc() == arc && !q.iter().any(|x| x.same_route(s)) {
                let mut d = s.clone();
                d.cost = Cost::Dead;
                d.exposed = false;
                dead.push(d);
            }
        }
        q.extend(dead);
    }
    Some(Revised {
        v,
        hops,
        q: Some(q),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qspn::msg::{EtpPath, Fingerprint};
    use crate::qspn::path::tests::{fp, h, np};

    fn fpl(id: u64, level: u8) -> Fingerprint {
        fp(id, level, &[])
    }

    /// §16.2: γ's full ETP processed by δ.
    #[test]
    fn worked_example_16_2() {
        let gamma = vec![0, 1, 1, 2];
        let delta = vec![1, 0, 1, 2];
        let (a_gb, a_gd, a_ba, a_dg) = (11, 12, 13, 21);
        let fps: Vec<_> = (0..5).map(|i| fpl(100 + i, i as u8)).collect();
        let m = EtpMessage {
            node_address: gamma.clone(),
            fingerprints: fps.clone(),
            nodes_inside: vec![1, 2, 4, 5, 5],
            hops: vec![],
            p_list: vec![
                EtpPath {
                    hops: vec![h(0, 1)],
                    arcs: vec![a_gb],
                    cost: Cost::Real(11000),
                    fingerprint: fpl(1, 0),
                    nodes_inside: 1,
                    ignore_outside: vec![false, true, true, true],
                },
                EtpPath {
                    hops: vec![h(1, 0)],
                    arcs: vec![a_gd],
                    cost: Cost::Real(11000),
                    fingerprint: fpl(2, 1),
                    nodes_inside: 2,
                    ignore_outside: vec![false, false, true, true],
                },
                EtpPath {
                    hops: vec![h(0, 1), h(2, 0)],
                    arcs: vec![a_gb, a_ba],
                    cost: Cost::Real(21000),
                    fingerprint: fpl(3, 2),
                    nodes_inside: 1,
                    ignore_outside: vec![false, false, false, true],
                },
            ],
        };
        let stored = [
            np(&[h(1, 1)], &[a_dg], Cost::Null, fpl(101, 1), 2),
            np(
                &[h(1, 1), h(2, 0)],
                &[a_dg, a_ba],
                Cost::Real(21000),
                fpl(3, 2),
                1,
            ),
        ];
        let r = revise(&delta, a_dg, Some(&gamma), &m, true, &stored).unwrap();
        assert_eq!(r.v, h(1, 1));
        assert_eq!(r.hops, vec![h(1, 1)]);
        let q = r.q.unwrap();
        assert_eq!(q.len(), 2, "{q:?}");
        assert_eq!(q[0].hops, vec![h(1, 1), h(2, 0)]);
        assert_eq!(q[0].arcs, vec![a_dg, a_ba]);
        assert_eq!(q[1].hops, vec![h(1, 1)]);
        assert_eq!(q[1].cost, Cost::Null);
        assert_eq!(q[1].fingerprint.id, 101);
        assert_eq!(q[1].nodes_inside, 2);
        // Both stored paths are offered again: no Dead copies.
        assert!(q.iter().all(|p| p.cost != Cost::Dead));
    }

    fn bare(addr: Vec<u32>, hops: Vec<HCoord>) -> EtpMessage {
        EtpMessage {
            node_address: addr,
            fingerprints: (0..4).map(|i| fpl(i, i as u8)).collect(),
            nodes_inside: vec![1; 4],
            hops,
            p_list: vec![],
        }
    }

    #[test]
    fn cyclic_hop_list_drops_the_etp() {
        let my = vec![0, 0, 0];
        // Sender 1·0·0 → v = (0,1); hops contain (1,0)? no: (1,0) is mine (my[1] = 0).
        let r = revise(
            &my,
            5,
            None,
            &bare(vec![1, 0, 0], vec![h(1, 0)]),
            false,
            &[],
        )
        .unwrap();
        assert!(r.q.is_none());
        let r = revise(
            &my,
            5,
            None,
            &bare(vec![1, 0, 0], vec![h(1, 1)]),
            false,
            &[],
        )
        .unwrap();
        assert_eq!(r.hops, vec![h(0, 1), h(1, 1)]);
        assert_eq!(r.q.unwrap().len(), 1);
        // Grouping: hops below k are dropped. Sender 0·1·0 → v = (1,1), k = 1.
        let r = revise(
            &my,
            5,
            None,
            &bare(vec![0, 1, 0], vec![h(0, 0), h(2, 1)]),
            false,
            &[],
        )
        .unwrap();
        assert_eq!(r.hops, vec![h(1, 1), h(2, 1)]);
    }

    #[test]
    fn position_change_gives_dead_intrinsic() {
        // §16.5: γ (1·1·0 → low first [0,1,1]) sees β change from 1·1·1 to 1·1·2.
        let my = vec![0, 1, 1];
        let r = revise(
            &my,
            5,
            Some(&[1, 1, 1]),
            &bare(vec![2, 1, 1], vec![]),
            false,
            &[],
        )
        .unwrap();
        let q = r.q.unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!((q[0].hops.clone(), q[0].cost), (vec![h(0, 2)], Cost::Null));
        assert_eq!((q[1].hops.clone(), q[1].cost), (vec![h(0, 1)], Cost::Dead));
    }

    #[test]
    fn full_etp_dead_copies_only_for_this_arc() {
        let my = vec![0, 0, 0];
        let stored = [
            np(&[h(0, 1), h(1, 1)], &[5, 7], Cost::Real(3), fpl(9, 1), 1),
            np(&[h(0, 2), h(1, 1)], &[6, 7], Cost::Real(3), fpl(9, 1), 1),
        ];
        let r = revise(&my, 5, None, &bare(vec![1, 0, 0], vec![]), true, &stored).unwrap();
        let q = r.q.unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(q[1].cost, Cost::Dead);
        assert_eq!(q[1].arcs, vec![5, 7]);
        // Not full: no dead copies.
        let r = revise(&my, 5, None, &bare(vec![1, 0, 0], vec![]), false, &stored).unwrap();
        assert_eq!(r.q.unwrap().len(), 1);
    }
}
