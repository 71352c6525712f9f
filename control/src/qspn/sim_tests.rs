//! Scenario tests through the simulator (qspn.md §16).
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::event::Signal;
use super::msg::{Cost, Fingerprint, HCoord};
use super::sim::Sim;

fn h(lvl: usize, pos: u32) -> HCoord {
    HCoord { lvl, pos }
}

pub(crate) fn fp0(id: u64, l: usize, eldership: u32) -> Fingerprint {
    Fingerprint {
        id,
        level: 0,
        elderships: vec![eldership; l],
        elderships_seed: vec![],
    }
}

/// §16.1 chain: returns (sim, [α, β, γ, δ, μ]).
fn chain() -> (Sim, [usize; 5]) {
    let mut s = Sim::new(vec![2, 2, 2, 4]);
    let al = s.add_node(vec![0, 1, 0, 2], fp0(1, 4, 0));
    let be = s.add_node(vec![1, 1, 1, 2], fp0(2, 4, 1));
    let ga = s.add_node(vec![0, 1, 1, 2], fp0(3, 4, 2));
    let de = s.add_node(vec![1, 0, 1, 2], fp0(4, 4, 3));
    let mu = s.add_node(vec![0, 0, 1, 2], fp0(5, 4, 4));
    s.link(al, be, 10000, 10000);
    s.link(be, ga, 10000, 11000);
    s.link(ga, de, 11000, 10000);
    s.link(de, mu, 11000, 10000);
    s.run(100_000).expect("converges");
    assert!(s.arcs_removed.is_empty());
    (s, [al, be, ga, de, mu])
}

/// (destination, hops, arcs as (node, peer) pairs, total cost).
type Row = (HCoord, Vec<HCoord>, Vec<(usize, usize)>, u64);

fn check_table(s: &Sim, node: usize, rows: &[Row]) {
    let paths = s.nodes[node].paths();
    assert_eq!(paths.len(), rows.len(), "node {node}: {paths:?}");
    for (d, hops, arcs, cost) in rows {
        let ps = paths
            .get(d)
            .unwrap_or_else(|| panic!("node {node} lacks {d:?}: {paths:?}"));
        assert_eq!(ps.len(), 1, "node {node} {d:?}: {ps:?}");
        let p = &ps[0];
        assert_eq!(&p.hops, hops, "node {node} {d:?}");
        let want: Vec<_> = arcs
            .iter()
            .map(|(x, y)| s.arc_to(*x, *y).unwrap())
            .collect();
        assert_eq!(p.arcs, want, "node {node} {d:?}");
        assert_eq!(p.arc, want[0]);
        assert_eq!(p.cost, Cost::Real(*cost), "node {node} {d:?}");
    }
}

#[test]
fn worked_example_16_1_path_tables() {
    let (s, [al, be, ga, de, mu]) = chain();
    check_table(&s, al, &[(h(2, 1), vec![h(2, 1)], vec![(al, be)], 10000)]);
    check_table(
        &s,
        be,
        &[
            (h(0, 0), vec![h(0, 0)], vec![(be, ga)], 10000),
            (
                h(1, 0),
                vec![h(0, 0), h(1, 0)],
                vec![(be, ga), (ga, de)],
                21000,
            ),
            (h(2, 0), vec![h(2, 0)], vec![(be, al)], 10000),
        ],
    );
    check_table(
        &s,
        ga,
        &[
            (h(0, 1), vec![h(0, 1)], vec![(ga, be)], 11000),
            (h(1, 0), vec![h(1, 0)], vec![(ga, de)], 11000),
            (
                h(2, 0),
                vec![h(0, 1), h(2, 0)],
                vec![(ga, be), (be, al)],
                21000,
            ),
        ],
    );
    check_table(
        &s,
        de,
        &[
            (h(0, 0), vec![h(0, 0)], vec![(de, mu)], 11000),
            (h(1, 1), vec![h(1, 1)], vec![(de, ga)], 10000),
            (
                h(2, 0),
                vec![h(1, 1), h(2, 0)],
                vec![(de, ga), (be, al)],
                31000,
            ),
        ],
    );
    check_table(
        &s,
        mu,
        &[
            (h(0, 1), vec![h(0, 1)], vec![(mu, de)], 10000),
            (
                h(1, 1),
                vec![h(0, 1), h(1, 1)],
                vec![(mu, de), (de, ga)],
                20000,
            ),
            (
                h(2, 0),
                vec![h(0, 1), h(1, 1), h(2, 0)],
                vec![(mu, de), (de, ga), (be, al)],
                41000,
            ),
        ],
    );
    // Counts at β: levels 1..4 = 2, 4, 5, 5.
    let n: Vec<u32> = (1..=4).map(|i| s.nodes[be].nodes_inside(i)).collect();
    assert_eq!(n, vec![2, 4, 5, 5]);
    // One network: every node has the same level-4 fingerprint (network id).
    let ids: BTreeSet<u64> = s.nodes.iter().map(|q| q.fingerprint(4).id).collect();
    assert_eq!(ids.len(), 1);
    // Neighbour addresses are known on both ends.
    let a = s.arc_to(be, al).unwrap();
    assert_eq!(s.nodes[be].neighbour_address(a), Some(&[0, 1, 0, 2][..]));
}

#[test]
fn worked_example_16_2_periodic_full_etp_changes_nothing() {
    let (mut s, [_, _, _, de, _]) = chain();
    let before: Vec<_> = s.nodes.iter().map(|q| q.paths()).collect();
    let sig_before = s.signals.len();
    s.etps_delivered_since_mark();
    // Fire the periodic full ETPs (600 s).
    s.run_until(600_010, 100_000).expect("converges");
    let after: Vec<_> = s.nodes.iter().map(|q| q.paths()).collect();
    assert_eq!(before, after);
    // Nothing relevant: no path signal anywhere, in particular at δ.
    let path_sigs = s.signals[sig_before..]
        .iter()
        .filter(|(_, _, sg)| !matches!(sg, Signal::BootstrapComplete))
        .count();
    assert_eq!(path_sigs, 0, "{:?}", &s.signals[sig_before..]);
    let _ = de;
    // Each of the 8 arc ends sent one full ETP and nobody forwarded anything.
    assert_eq!(s.etps_delivered_since_mark(), 8);
}

/// §16.2 directly: γ's full ETP given to δ changes nothing at δ and is not forwarded.
#[test]
fn worked_example_16_2_direct() {
    let (mut s, [_, _, ga, de, _]) = chain();
    let etp = s.nodes[ga].full_etp();
    assert_eq!(etp.nodes_inside, vec![1, 2, 4, 5, 5]);
    assert_eq!(etp.p_list.len(), 3);
    let io: Vec<Vec<bool>> = etp
        .p_list
        .iter()
        .map(|p| p.ignore_outside.clone())
        .collect();
    let (f, t) = (false, true);
    assert!(io.contains(&vec![f, t, t, t]));
    assert!(io.contains(&vec![f, f, t, t]));
    assert!(io.contains(&vec![f, f, f, t]));
    let before = s.nodes[de].paths();
    let arc = s.arc_to(de, ga).unwrap();
    let out = s.nodes[de].on_send_etp(arc, etp, true);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(s.nodes[de].paths(), before);
}

#[test]
fn worked_example_16_3_failure_of_gamma_delta() {
    let (mut s, [al, be, ga, de, mu]) = chain();
    let mark = s.signals.len();
    let l = s.links.iter().position(|k| k.a == ga && k.b == de).unwrap();
    s.unlink(l);
    s.run(100_000).expect("converges");
    let sig = |n: usize| -> Vec<Signal> {
        s.signals[mark..]
            .iter()
            .filter(|(x, _, _)| *x == n)
            .map(|(_, _, sg)| sg.clone())
            .collect()
    };
    // γ: (1,0) removed.
    assert!(sig(ga).contains(&Signal::DestinationRemoved(h(1, 0))));
    assert_eq!(
        s.nodes[ga].paths().keys().copied().collect::<Vec<_>>(),
        vec![h(0, 1), h(2, 0)]
    );
    let n: Vec<u32> = (1..=4).map(|i| s.nodes[ga].nodes_inside(i)).collect();
    assert_eq!(n, vec![2, 2, 3, 3]);
    // β: (1,0) removed.
    assert!(sig(be).contains(&Signal::DestinationRemoved(h(1, 0))));
    assert_eq!(
        s.nodes[be].paths().keys().copied().collect::<Vec<_>>(),
        vec![h(0, 0), h(2, 0)]
    );
    // α: same route, count 4 → 2: exactly one path_changed.
    let a = sig(al);
    let changed = a
        .iter()
        .filter(|x| matches!(x, Signal::PathChanged(_)))
        .count();
    assert_eq!(changed, 1, "{a:?}");
    assert!(!a
        .iter()
        .any(|x| matches!(x, Signal::PathRemoved(_) | Signal::DestinationRemoved(_))));
    assert_eq!(s.nodes[al].paths()[&h(2, 1)][0].nodes_inside, 2);
    // δ and μ: (1,1) and (2,0) removed.
    for n in [de, mu] {
        let sg = sig(n);
        assert!(
            sg.contains(&Signal::DestinationRemoved(h(1, 1))),
            "{n}: {sg:?}"
        );
        assert!(
            sg.contains(&Signal::DestinationRemoved(h(2, 0))),
            "{n}: {sg:?}"
        );
        assert_eq!(s.nodes[n].paths().len(), 1);
    }
}

/// Nodes reachable from `from` through nodes whose address has `prefix_from` positions
/// equal to `from`'s at levels `> lvl` (i.e. inside `from`'s level-`(lvl+1)` g-node).
pub(crate) fn reachable_inside(s: &Sim, from: usize, lvl: usize) -> BTreeSet<usize> {
    let my = s.nodes[from].my_naddr().to_vec();
    let inside = |m: usize| s.nodes[m].my_naddr()[lvl + 1..] == my[lvl + 1..];
    let mut seen = BTreeSet::from([from]);
    let mut q = VecDeque::from([from]);
    while let Some(n) = q.pop_front() {
        for k in s.links.iter().filter(|k| k.alive) {
            let m = if k.a == n {
                k.b
            } else if k.b == n {
                k.a
            } else {
                continue;
            };
            if inside(m) && seen.insert(m) {
                q.push_back(m);
            }
        }
    }
    seen
}

/// Every node's destination set equals the coordinates of the nodes it can reach without
/// leaving the g-node that contains both (QSPN paths never re-enter a g-node they left, so
/// with internally connected g-nodes this is exactly what must be known).
pub(crate) fn assert_destinations_match_reachability(s: &Sim) {
    for n in 0..s.nodes.len() {
        let my = s.nodes[n].my_naddr();
        let mut want = BTreeSet::new();
        for m in 0..s.nodes.len() {
            let Some(c) = super::validate::coord(my, s.nodes[m].my_naddr()) else {
                continue;
            };
            if reachable_inside(s, n, c.lvl).contains(&m) {
                want.insert(c);
            }
        }
        let got: BTreeSet<HCoord> = s.nodes[n].paths().keys().copied().collect();
        assert_eq!(got, want, "node {n} at {my:?}");
    }
}

/// Every shown path is acyclic in g-nodes and reaches its destination.
pub(crate) fn assert_paths_sane(s: &Sim) {
    for q in &s.nodes {
        for (d, ps) in q.paths() {
            for p in ps {
                assert_eq!(p.hops.last(), Some(&d));
                let set: BTreeSet<_> = p.hops.iter().collect();
                assert_eq!(set.len(), p.hops.len(), "cyclic {p:?}");
                assert!(p.hops.windows(2).all(|w| w[0].lvl <= w[1].lvl));
                assert!(q.arcs().any(|a| a == p.arc));
            }
        }
    }
}

fn grid(rows: u32, cols: u32) -> (Sim, BTreeMap<(u32, u32), usize>) {
    // Flat-ish topology: level 0 = column, level 1 = row, level 2 = 1 network.
    let mut s = Sim::new(vec![cols, rows, 2]);
    let mut at = BTreeMap::new();
    for r in 0..rows {
        for c in 0..cols {
            let id = (r * cols + c) as u64;
            let n = s.add_node(vec![c, r, 0], fp0(100 + id, 3, id as u32));
            at.insert((r, c), n);
        }
    }
    for r in 0..rows {
        for c in 0..cols {
            let n = at[&(r, c)];
            if c + 1 < cols {
                s.link(
                    n,
                    at[&(r, c + 1)],
                    1000 + 10 * r as u64,
                    1000 + 10 * r as u64,
                );
            }
            if r + 1 < rows {
                s.link(n, at[&(r + 1, c)], 1500 + 7 * c as u64, 1500 + 7 * c as u64);
            }
        }
    }
    (s, at)
}

#[test]
fn grid_3x3_converges_and_survives_a_cut() {
    let (mut s, at) = grid(3, 3);
    s.run(1_000_000).expect("converges");
    assert_destinations_match_reachability(&s);
    assert_paths_sane(&s);
    // Every node counts all 9 at the top level.
    for q in &s.nodes {
        assert_eq!(q.nodes_inside(3), 9);
    }
    // Cut arcs between rows (the rows, level-1 g-nodes, stay connected inside):
    // (0,1)–(1,1), then (1,2)–(2,2).
    let (a, b) = (at[&(0, 1)], at[&(1, 1)]);
    let l = s.links.iter().position(|k| k.a == a && k.b == b).unwrap();
    s.unlink(l);
    s.run(1_000_000).expect("converges after cut");
    assert_destinations_match_reachability(&s);
    assert_paths_sane(&s);
    let (a, b) = (at[&(1, 2)], at[&(2, 2)]);
    let l = s.links.iter().position(|k| k.a == a && k.b == b).unwrap();
    s.unlink(l);
    s.run(1_000_000).expect("converges after cut");
    assert_destinations_match_reachability(&s);
    assert_paths_sane(&s);
    for q in &s.nodes {
        assert_eq!(q.nodes_inside(3), 9);
    }
    assert!(s.arcs_removed.is_empty(), "{:?}", s.arcs_removed);
}

#[test]
fn cost_change_reroutes() {
    // Triangle at level 0: a–b cheap, a–c, b–c.
    let mut s = Sim::new(vec![4, 2]);
    let a = s.add_node(vec![0, 0], fp0(1, 2, 0));
    let b = s.add_node(vec![1, 0], fp0(2, 2, 1));
    let c = s.add_node(vec![2, 0], fp0(3, 2, 2));
    let ab = s.link(a, b, 100, 100);
    s.link(a, c, 1000, 1000);
    s.link(b, c, 100, 100);
    s.run(100_000).unwrap();
    let best = |s: &Sim| s.nodes[a].paths()[&h(0, 2)][0].clone();
    assert_eq!(best(&s).hops, vec![h(0, 1), h(0, 2)]);
    assert_eq!(best(&s).cost, Cost::Real(200));
    s.set_cost(ab, a, 5000);
    s.run(100_000).unwrap();
    assert_eq!(best(&s).hops, vec![h(0, 2)]);
    assert_eq!(best(&s).cost, Cost::Real(1000));
    // Both paths are kept (two gateways, disjoint).
    assert_eq!(s.nodes[a].paths()[&h(0, 2)].len(), 2);
}

/// §12 / §16.7 on the 3×3 grid: cutting (1,1)–(1,2) splits row 1 (a level-1 g-node whose
/// eldest member is (1,0)); the island {(1,2)} gets a new level-1 fingerprint; the row-0 and
/// row-2 nodes next to it see two fingerprints for row 1, flood (500 ms) and after the
/// threshold signal `gnode_splitted` for their arc towards the island; the island then runs
/// `exit_network(1)` and the rest of the network is consistent again.
#[test]
fn split_detection_and_exit_network() {
    let (mut s, at) = grid(3, 3);
    s.run(1_000_000).expect("converges");
    let (a, b) = (at[&(1, 1)], at[&(1, 2)]);
    let l = s.links.iter().position(|k| k.a == a && k.b == b).unwrap();
    let mark = s.signals.len();
    s.unlink(l);
    s.run(1_000_000).expect("converges after cut");
    let island = at[&(1, 2)];
    assert_ne!(
        s.nodes[island].fingerprint(1).id,
        s.nodes[at[&(1, 0)]].fingerprint(1).id
    );
    let splits: Vec<(usize, Signal)> = s.signals[mark..]
        .iter()
        .filter(|(_, _, sg)| matches!(sg, Signal::GnodeSplitted { .. }))
        .map(|(n, _, sg)| (*n, sg.clone()))
        .collect();
    let mut who: Vec<usize> = splits.iter().map(|(n, _)| *n).collect();
    who.sort();
    who.dedup();
    assert_eq!(who, vec![at[&(0, 2)], at[&(2, 2)]], "{splits:?}");
    for (n, sg) in &splits {
        let Signal::GnodeSplitted { arc, d, fp } = sg else {
            unreachable!()
        };
        assert_eq!(*d, h(1, 1));
        assert_eq!(fp.id, s.nodes[island].fingerprint(1).id);
        assert_eq!(s.arc_to(*n, island), Some(*arc));
    }
    // The island leaves.
    let out = s.nodes[island].exit_network(1);
    s.handle(island, out);
    s.run(1_000_000).expect("converges after exit");
    assert!(s.nodes[island].paths().is_empty());
    assert_eq!(s.nodes[island].arcs().count(), 0);
    let t = s.now + 600_001;
    s.run_until(t, 1_000_000)
        .expect("converges after a periodic round");
    assert_destinations_match_reachability(&s);
    assert_paths_sane(&s);
    for (i, q) in s.nodes.iter().enumerate() {
        if i != island {
            assert_eq!(q.nodes_inside(3), 8, "node {i}");
        }
    }
}

/// §16.7 (testsuite `check_gnode_split`): level-1 g-node `:3:0` = chain 430–530–630–730
/// (430 eldest), attached to `:0:0` by 500–530 and 300–730 and to `:1:0` by 210–430;
/// `:1:0` reaches `:0:0` by 210–300. Removing 430–530 leaves {430} and {530, 630, 730};
/// 300 and 500 signal `gnode_splitted` for their arc to the younger island, 210 does not;
/// the island runs `exit_network(1)` and keeps only its 2 level-0 destinations.
#[test]
fn worked_example_16_7_split() {
    let mut s = Sim::new(vec![8, 4, 2]);
    // "abc" = positions a (level 0), b (level 1), c (level 2).
    let node = |s: &mut Sim, a: u32, b: u32, c: u32, e0: u32| {
        let naddr = vec![a, b, c];
        let f = super::prop_tests::fp_at(u64::from(a * 100 + b * 10 + c), &naddr, e0);
        s.add_node(naddr, f)
    };
    let n430 = node(&mut s, 4, 3, 0, 0);
    let n530 = node(&mut s, 5, 3, 0, 1);
    let n630 = node(&mut s, 6, 3, 0, 2);
    let n730 = node(&mut s, 7, 3, 0, 3);
    let n500 = node(&mut s, 5, 0, 0, 0);
    let n300 = node(&mut s, 3, 0, 0, 1);
    let n210 = node(&mut s, 2, 1, 0, 0);
    let cut = s.link(n430, n530, 1000, 1000);
    s.link(n530, n630, 1000, 1000);
    s.link(n630, n730, 1000, 1000);
    s.link(n500, n530, 1000, 1000);
    s.link(n300, n730, 1000, 1000);
    s.link(n210, n430, 1000, 1000);
    s.link(n210, n300, 1000, 1000);
    s.link(n500, n300, 1000, 1000);
    s.run(1_000_000).unwrap();
    assert_destinations_match_reachability(&s);
    let mark = s.signals.len();
    s.unlink(cut);
    s.run(1_000_000).unwrap();
    assert_eq!(s.nodes[n530].fingerprint(1).id, 530);
    assert_eq!(s.nodes[n430].fingerprint(1).id, 430);
    let splits: Vec<(usize, Signal)> = s.signals[mark..]
        .iter()
        .filter(|(_, _, sg)| matches!(sg, Signal::GnodeSplitted { .. }))
        .map(|(n, _, sg)| (*n, sg.clone()))
        .collect();
    let mut who: Vec<usize> = splits.iter().map(|(n, _)| *n).collect();
    who.sort();
    who.dedup();
    assert_eq!(who, vec![n500, n300], "{splits:?}");
    for (n, sg) in &splits {
        let Signal::GnodeSplitted { arc, d, fp } = sg else {
            unreachable!()
        };
        assert_eq!((*d, fp.id), (h(1, 3), 530));
        let peer = if *n == n500 { n530 } else { n730 };
        assert_eq!(s.arc_to(*n, peer), Some(*arc));
    }
    for n in [n530, n630, n730] {
        let out = s.nodes[n].exit_network(1);
        s.handle(n, out);
    }
    s.run(1_000_000).unwrap();
    for n in [n530, n630, n730] {
        let keys: Vec<HCoord> = s.nodes[n].paths().keys().copied().collect();
        assert_eq!(keys.len(), 2, "{n}: {keys:?}");
        assert!(keys.iter().all(|k| k.lvl == 0));
    }
    assert_paths_sane(&s);
}

#[test]
fn grid_5x5_converges() {
    let (mut s, at) = grid(5, 5);
    let steps = s.run(5_000_000).expect("converges");
    assert_destinations_match_reachability(&s);
    assert_paths_sane(&s);
    assert!(s.arcs_removed.is_empty());
    let (a, b) = (at[&(2, 3)], at[&(3, 3)]);
    let l = s.links.iter().position(|k| k.a == a && k.b == b).unwrap();
    s.unlink(l);
    let steps2 = s.run(5_000_000).expect("converges after cut");
    assert_destinations_match_reachability(&s);
    assert_paths_sane(&s);
    assert!(steps < 200_000 && steps2 < 200_000, "{steps} {steps2}");
}
