//! Property tests: random topologies converge without panics and with acyclic paths;
//! arbitrary (malformed) ETPs never panic an instance.
use std::collections::BTreeSet;

use proptest::prelude::*;

use super::engine::{Params, Qspn};
use super::msg::{Cost, EtpMessage, EtpPath, Fingerprint, HCoord};
use super::sim::Sim;
use super::sim_tests::{assert_destinations_match_reachability, assert_paths_sane, fp0};

const GS: [u32; 3] = [3, 3, 2];

/// Are all g-nodes (levels 1..l−1) internally connected over alive links?
fn gnodes_connected(s: &Sim) -> bool {
    let n = s.nodes.len();
    for lvl in 1..GS.len() {
        for a in 0..n {
            let pre = s.nodes[a].my_naddr()[lvl..].to_vec();
            let members: BTreeSet<usize> = (0..n)
                .filter(|&m| s.nodes[m].my_naddr()[lvl..] == pre[..])
                .collect();
            let mut seen = BTreeSet::from([a]);
            let mut stack = vec![a];
            while let Some(x) = stack.pop() {
                for k in s.links.iter().filter(|k| k.alive) {
                    let y = if k.a == x {
                        k.b
                    } else if k.b == x {
                        k.a
                    } else {
                        continue;
                    };
                    if members.contains(&y) && seen.insert(y) {
                        stack.push(y);
                    }
                }
            }
            if seen != members {
                return false;
            }
        }
    }
    true
}

/// `chain`: first link the nodes in address order (high level first), so that every g-node
/// is a contiguous, connected segment; then the random edges.
/// With connected g-nodes, every node counts its whole connected component at level l
/// and agrees with its component on the network fingerprint.
fn assert_counts(s: &Sim) {
    for n in 0..s.nodes.len() {
        let comp = super::sim_tests::reachable_inside(s, n, GS.len() - 1);
        assert_eq!(
            s.nodes[n].nodes_inside(GS.len()) as usize,
            comp.len(),
            "node {n}"
        );
        for m in comp {
            assert_eq!(
                s.nodes[n].fingerprint(GS.len()).id,
                s.nodes[m].fingerprint(GS.len()).id
            );
        }
    }
}

/// Runs to quiescence, then through one round of periodic full ETPs: a gateway's
/// alternative that the receiver's selection had discarded (§10.4) is only offered again by
/// a full ETP (docs/QSPN.md "Recovery after a removal").
fn settle(s: &mut Sim) -> bool {
    let t = s.now + 600_001;
    s.run(2_000_000).is_ok() && s.run_until(t, 2_000_000).is_ok()
}

/// A level-0 fingerprint with consistent elderships: level 0 = `e0` (the node's own),
/// level `k ≥ 1` = a function of the node's level-`k` g-node only (the positions at levels
/// `≥ k`), as every member of a g-node must report the same eldership for it.
pub(crate) fn fp_at(id: u64, naddr: &[u32], e0: u32) -> Fingerprint {
    let mut e = vec![e0];
    for k in 1..naddr.len() {
        e.push(naddr[k..].iter().rev().fold(0u32, |acc, p| acc * 10 + p));
    }
    Fingerprint {
        id,
        level: 0,
        elderships: e,
        elderships_seed: vec![],
    }
}

fn build(addrs: &[usize], edges: &[(usize, usize, u64, u64)], chain: bool) -> Sim {
    let mut s = Sim::new(GS.to_vec());
    for (i, &a) in addrs.iter().enumerate() {
        let naddr = vec![(a % 3) as u32, ((a / 3) % 3) as u32, (a / 9) as u32];
        let f = fp_at(1000 + i as u64, &naddr, i as u32);
        s.add_node(naddr, f);
    }
    let mut seen = BTreeSet::new();
    if chain {
        for i in 1..addrs.len() {
            seen.insert((i - 1, i));
            s.link(i - 1, i, 300 + 17 * i as u64, 300 + 13 * i as u64);
        }
    }
    for &(x, y, c1, c2) in edges {
        let (x, y) = (x % addrs.len(), y % addrs.len());
        if x != y && seen.insert((x.min(y), x.max(y))) {
            s.link(x, y, 100 + c1, 100 + c2);
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        // Regressions are not written outside src/qspn (the seed is printed on failure).
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_topologies_converge(
        addrs in proptest::sample::subsequence((0..18usize).collect::<Vec<_>>(), 2..9),
        edges in proptest::collection::vec((0..9usize, 0..9usize, 0..5000u64, 0..5000u64), 1..16),
        cut in 0..16usize,
        chain in any::<bool>(),
    ) {
        let mut s = build(&addrs, &edges, chain);
        prop_assert!(settle(&mut s), "no convergence");
        assert_paths_sane(&s);
        // Every ETP the engines produced passed the receivers' §7.3 validation.
        prop_assert!(s.arcs_removed.is_empty(), "{:?}", s.arcs_removed);
        if chain {
            prop_assert!(gnodes_connected(&s));
        }
        if gnodes_connected(&s) {
            assert_destinations_match_reachability(&s);
            assert_counts(&s);
        }
        if !s.links.is_empty() {
            let l = cut % s.links.len();
            s.unlink(l);
            prop_assert!(settle(&mut s), "no convergence after cut");
            assert_paths_sane(&s);
            prop_assert!(s.arcs_removed.is_empty(), "{:?}", s.arcs_removed);
            if gnodes_connected(&s) {
                assert_destinations_match_reachability(&s);
            }
            // A cost change on an alive link (both directions, ×4 or ÷4).
            if let Some(l) = (0..s.links.len()).map(|i| (i + cut) % s.links.len()).find(|&i| s.links[i].alive) {
                let k = s.links[l];
                let up = cut % 2 == 0;
                for (node, arc) in [(k.a, k.arc_a), (k.b, k.arc_b)] {
                    let Some(Cost::Real(c)) = s.nodes[node].arc_cost(arc) else { unreachable!() };
                    s.set_cost(l, node, if up { c * 4 } else { (c / 4).max(1) });
                }
                prop_assert!(settle(&mut s), "no convergence after a cost change");
                assert_paths_sane(&s);
                prop_assert!(s.arcs_removed.is_empty(), "{:?}", s.arcs_removed);
                if gnodes_connected(&s) {
                    assert_destinations_match_reachability(&s);
                }
            }
        }
    }

    #[test]
    fn arbitrary_etps_never_panic(
        addr in proptest::collection::vec(0..8u32, 0..5),
        fps in proptest::collection::vec((0..4u64, 0..5u8, proptest::collection::vec(0..5u32, 0..6)), 0..6),
        counts in proptest::collection::vec(0..10u32, 0..6),
        hops in proptest::collection::vec((0..4usize, 0..8u32), 0..5),
        paths in proptest::collection::vec(
            (proptest::collection::vec((0..4usize, 0..8u32), 0..5),
             proptest::collection::vec(1..6u32, 0..5),
             0..3u8, 0..5u8,
             proptest::collection::vec(any::<bool>(), 0..5)),
            0..6),
        is_full in any::<bool>(),
    ) {
        let (mut q, _) = Qspn::create_net(Params::new(GS.to_vec(), 1), vec![0, 0, 0], fp0(1, 3, 0));
        let (a, _) = q.arc_add(Cost::Real(10));
        let mk_fp = |(id, level, e): &(u64, u8, Vec<u32>)| Fingerprint {
            id: *id, level: *level, elderships: e.clone(), elderships_seed: e.clone(),
        };
        let m = EtpMessage {
            node_address: addr,
            fingerprints: fps.iter().map(mk_fp).collect(),
            nodes_inside: counts,
            hops: hops.iter().map(|&(lvl, pos)| HCoord { lvl, pos }).collect(),
            p_list: paths.iter().map(|(hs, arcs, cost, lvl, io)| EtpPath {
                hops: hs.iter().map(|&(lvl, pos)| HCoord { lvl, pos }).collect(),
                arcs: arcs.clone(),
                cost: match cost { 0 => Cost::Null, 1 => Cost::Dead, _ => Cost::Real(7) },
                fingerprint: Fingerprint { id: 9, level: *lvl, elderships: vec![], elderships_seed: vec![] },
                nodes_inside: 1,
                ignore_outside: io.clone(),
            }).collect(),
        };
        let _ = q.on_send_etp(a, m.clone(), is_full);
        let _ = q.paths();
        let (b, _) = q.arc_add(Cost::Real(10));
        let _ = q.on_full_etp(b, Ok(m));
        let _ = q.on_get_full_etp(b, &[1, 0, 0]);
        for p in q.paths().values().flatten() {
            prop_assert!(!p.hops.is_empty());
        }
    }
}

/// Directed shortest distances from `from` (cost of `x → y` = x's measurement).
fn dijkstra(n: usize, edges: &[(usize, usize, u64)], from: usize) -> Vec<Option<u64>> {
    let mut dist = vec![None; n];
    let mut done = vec![false; n];
    dist[from] = Some(0);
    for _ in 0..n {
        let Some(u) = (0..n)
            .filter(|&i| !done[i] && dist[i].is_some())
            .min_by_key(|&i| dist[i])
        else {
            break;
        };
        done[u] = true;
        for &(x, y, c) in edges {
            if x == u {
                let nd = dist[u].unwrap() + c;
                if dist[y].is_none_or(|d| nd < d) {
                    dist[y] = Some(nd);
                }
            }
        }
    }
    dist
}

/// In a flat network (every node in one level-1 g-node) without cost changes, each
/// node's cheapest path to every other node costs exactly the directed shortest distance;
/// also after cutting an arc.
fn check_flat_costs(s: &Sim) -> Result<(), TestCaseError> {
    let n = s.nodes.len();
    let mut edges = Vec::new();
    for k in s.links.iter().filter(|k| k.alive) {
        let ca = s.nodes[k.a].arc_cost(k.arc_a).unwrap();
        let cb = s.nodes[k.b].arc_cost(k.arc_b).unwrap();
        let (Cost::Real(ca), Cost::Real(cb)) = (ca, cb) else {
            unreachable!()
        };
        edges.push((k.a, k.b, ca));
        edges.push((k.b, k.a, cb));
    }
    for x in 0..n {
        let dist = dijkstra(n, &edges, x);
        let paths = s.nodes[x].paths();
        for (y, d) in dist.iter().enumerate() {
            if y == x {
                continue;
            }
            let c = HCoord {
                lvl: 0,
                pos: s.nodes[y].my_naddr()[0],
            };
            let got = paths.get(&c).map(|ps| ps[0].cost);
            prop_assert_eq!(got, d.map(Cost::Real), "{} → {}", x, y);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn flat_networks_find_shortest_paths(
        n in 2..9usize,
        edges in proptest::collection::vec((0..9usize, 0..9usize, 1..1000u64, 1..1000u64), 1..20),
        cut in 0..20usize,
    ) {
        let mut s = Sim::new(vec![16, 2]);
        for i in 0..n {
            s.add_node(vec![i as u32, 0], fp0(500 + i as u64, 2, i as u32));
        }
        let mut seen = BTreeSet::new();
        for &(x, y, c1, c2) in &edges {
            let (x, y) = (x % n, y % n);
            if x != y && seen.insert((x.min(y), x.max(y))) {
                s.link(x, y, c1, c2);
            }
        }
        prop_assert!(settle(&mut s));
        check_flat_costs(&s)?;
        assert_destinations_match_reachability(&s);
        if !s.links.is_empty() {
            let l = cut % s.links.len();
            s.unlink(l);
            prop_assert!(settle(&mut s));
            check_flat_costs(&s)?;
            assert_destinations_match_reachability(&s);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// A node enters a random (chained, so g-nodes are connected) network with `enter_net`
    /// (g = 0, h = 1: a free level-0 position in an existing level-1 g-node) and arcs to
    /// one member of that g-node plus random others; after its bootstrap everybody agrees
    /// with reachability again.
    #[test]
    fn a_node_enters_a_random_network(
        addrs in proptest::sample::subsequence((0..18usize).collect::<Vec<_>>(), 2..8),
        edges in proptest::collection::vec((0..8usize, 0..8usize, 0..5000u64, 0..5000u64), 0..10),
        host in 0..8usize,
        extra in proptest::collection::vec(0..8usize, 0..3),
    ) {
        let mut s = build(&addrs, &edges, true);
        prop_assert!(settle(&mut s));
        let n = s.nodes.len();
        let host = host % n;
        let hn = s.nodes[host].my_naddr().to_vec();
        // A free level-0 position in the host's level-1 g-node, if any.
        let taken: BTreeSet<u32> = s
            .nodes
            .iter()
            .filter(|q| q.my_naddr()[1..] == hn[1..])
            .map(|q| q.my_naddr()[0])
            .collect();
        let Some(free) = (0..GS[0]).find(|p| !taken.contains(p)) else { return Ok(()) };
        let mut my = hn.clone();
        my[0] = free;
        let my_fp = fp_at(4243, &my, 50);
        let (prev, _) = Qspn::create_net(Params::new(GS.to_vec(), 4242), vec![0, 0, 2], fp0(4242, 3, 0));
        let mut peers = vec![host];
        for e in extra {
            if !peers.contains(&(e % n)) {
                peers.push(e % n);
            }
        }
        let (q, out) = Qspn::enter_net(
            Params::new(GS.to_vec(), 4243),
            super::bootstrap::BootstrapArgs {
                internal_arcs: vec![],
                external_arcs: vec![Cost::Real(700); peers.len()],
                my_naddr: my,
                my_fp,
                guest_gnode_level: 0,
                host_gnode_level: 1,
                previous: &prev,
                update_internal_fingerprints: None,
            },
        );
        let ext = q.external_arc_ids().to_vec();
        let me = s.add_instance(q, out);
        for (i, &p) in peers.iter().enumerate() {
            let (pa, out) = s.nodes[p].arc_add(Cost::Real(650));
            s.link_existing(me, ext[i], p, pa);
            s.handle(p, out);
        }
        prop_assert!(settle(&mut s));
        prop_assert!(s.nodes[me].is_bootstrap_complete());
        prop_assert!(s.signals_of(me).contains(&super::event::Signal::PresenceNotified));
        assert_paths_sane(&s);
        prop_assert!(s.arcs_removed.is_empty(), "{:?}", s.arcs_removed);
        assert_destinations_match_reachability(&s);
        assert_counts(&s);
    }
}
