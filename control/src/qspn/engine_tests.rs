//! Unit tests of the engine's procedures (qspn.md §8, §11, §13.1) without the simulator.
use super::engine::{Params, Qspn};
use super::event::{Output, Signal, Timer};
use super::msg::{Cost, EtpMessage, EtpPath, Fingerprint, HCoord, Refusal};
use super::sim_tests::fp0;

fn h(lvl: usize, pos: u32) -> HCoord {
    HCoord { lvl, pos }
}

fn node(addr: Vec<u32>, id: u64) -> Qspn {
    let (q, out) = Qspn::create_net(Params::new(vec![4, 4, 2], id), addr, fp0(id, 3, id as u32));
    assert_eq!(
        out,
        vec![Output::Timer {
            after_ms: 1,
            timer: Timer::BootstrapComplete
        }]
    );
    q
}

fn etp_from(addr: Vec<u32>, id: u64) -> EtpMessage {
    let q = node(addr, id);
    q.full_etp()
}

#[test]
fn create_net_own_data() {
    let q = node(vec![1, 2, 0], 7);
    assert!(q.is_bootstrap_complete());
    assert_eq!(q.fingerprint(0).id, 7);
    for i in 1..=3 {
        assert_eq!(q.fingerprint(i).id, 7);
        assert_eq!(q.fingerprint(i).level as usize, i);
        assert_eq!(q.nodes_inside(i), 1);
    }
    assert!(q.paths().is_empty());
    // Out-of-range queries clamp instead of panicking.
    assert_eq!(q.fingerprint(99).level, 3);
}

#[test]
fn bootstrap_complete_then_periodic() {
    let mut q = node(vec![1, 2, 0], 7);
    let out = q.on_timer(Timer::BootstrapComplete);
    assert_eq!(out[0], Output::Signal(Signal::BootstrapComplete));
    let Output::Timer { after_ms, timer } = out[1].clone() else {
        panic!("{out:?}")
    };
    assert_eq!(after_ms, 600_000);
    // No arcs: no ETP, but the timer is re-armed.
    let out = q.on_timer(timer.clone());
    assert!(matches!(
        out[..],
        [Output::Timer {
            after_ms: 600_000,
            ..
        }]
    ));
    // With an arc: a full ETP to it.
    let (a, _) = q.arc_add(Cost::Real(10));
    let out = q.on_timer(timer);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::SendEtp { arcs, is_full: true, .. } if arcs == &vec![a])));
    // After stop_operations the chain is stale.
    q.stop_operations();
    assert!(q.on_timer(Timer::Periodic { epoch: 1 }).is_empty());
}

#[test]
fn arc_ids_are_in_range_and_unique() {
    let mut q = node(vec![1, 2, 0], 7);
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let (a, out) = q.arc_add(Cost::Real(1));
        assert!((1..=0x7FFF_FFFE).contains(&a));
        assert!(ids.insert(a));
        assert_eq!(out, vec![Output::RequestFullEtp { arc: a }]);
    }
    assert_eq!(q.arcs().count(), 200);
}

#[test]
fn arc_add_full_etp_reply_then_full_etp_to_new_arc() {
    let mut q = node(vec![1, 2, 0], 7);
    let (a, _) = q.arc_add(Cost::Real(10));
    let out = q.on_full_etp(a, Ok(etp_from(vec![2, 2, 0], 8)));
    let sigs: Vec<_> = out
        .iter()
        .filter_map(|o| {
            if let Output::Signal(s) = o {
                Some(s.clone())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(sigs[0], Signal::DestinationAdded(h(0, 2)));
    assert!(matches!(sigs[1], Signal::PathAdded(_)));
    assert!(sigs.contains(&Signal::ChangedNodesInside(1)));
    assert!(out.contains(&Output::PathsChanged));
    // No other arc: no forward; a full ETP to the new arc.
    let sends: Vec<_> = out
        .iter()
        .filter(|o| matches!(o, Output::SendEtp { .. }))
        .collect();
    assert_eq!(sends.len(), 1);
    let Output::SendEtp { arcs, etp, is_full } = sends[0] else {
        unreachable!()
    };
    assert_eq!((arcs.clone(), *is_full), (vec![a], true));
    assert_eq!(etp.p_list.len(), 1);
    assert_eq!(etp.p_list[0].cost, Cost::Real(10));
    assert_eq!(q.neighbour_address(a), Some(&[2, 2, 0][..]));
    assert_eq!(q.nodes_inside(1), 2);
    // A reply nobody asked for is ignored.
    assert!(q.on_full_etp(a, Ok(etp_from(vec![2, 2, 0], 8))).is_empty());
}

#[test]
fn refusals_and_failures() {
    let mut q = node(vec![1, 2, 0], 7);
    let (a, _) = q.arc_add(Cost::Real(10));
    // Bootstrap refusal: give up silently.
    assert!(q
        .on_full_etp(a, Err(Refusal::BootstrapInProgress))
        .is_empty());
    assert!(q.arcs().any(|x| x == a));
    let (b, _) = q.arc_add(Cost::Real(10));
    let out = q.on_full_etp(b, Err(Refusal::NotAccepted));
    assert!(out.contains(&Output::ArcRemoved {
        arc: b,
        bad_link: false
    }));
    let (c, _) = q.arc_add(Cost::Real(10));
    let out = q.on_request_failed(c);
    assert!(out.contains(&Output::ArcRemoved {
        arc: c,
        bad_link: true
    }));
    assert_eq!(q.arcs().collect::<Vec<_>>(), vec![a]);
}

#[test]
fn invalid_etp_removes_the_arc() {
    let mut q = node(vec![1, 2, 0], 7);
    let (a, _) = q.arc_add(Cost::Real(10));
    q.on_full_etp(a, Ok(etp_from(vec![2, 2, 0], 8)));
    let mut bad = etp_from(vec![2, 2, 0], 8);
    bad.hops = vec![h(2, 1), h(0, 1)];
    let out = q.on_send_etp(a, bad, false);
    assert!(out.contains(&Output::ArcRemoved {
        arc: a,
        bad_link: false
    }));
    assert!(out.contains(&Output::Signal(Signal::DestinationRemoved(h(0, 2)))));
    assert!(q.paths().is_empty());
    assert_eq!(q.arcs().count(), 0);
    // An ETP over an arc I do not have is ignored.
    assert!(q
        .on_send_etp(a, etp_from(vec![2, 2, 0], 8), false)
        .is_empty());
}

#[test]
fn get_full_etp_reply_excludes_the_requester() {
    let mut q = node(vec![1, 2, 0], 7);
    let (a, _) = q.arc_add(Cost::Real(10));
    q.on_full_etp(a, Ok(etp_from(vec![2, 2, 0], 8)));
    let (b, _) = q.arc_add(Cost::Real(10));
    // The requester on b is (1,3): the level-0 path to (0,2) is below its level → excluded.
    let (r, out) = q.on_get_full_etp(b, &[0, 3, 0]);
    let r = r.unwrap();
    assert!(r.p_list.is_empty());
    assert!(out.contains(&Output::PathsChanged));
    assert_eq!(q.neighbour_address(b), Some(&[0, 3, 0][..]));
    // A requester at level 0 gets it; the requester itself is excluded.
    let (r, _) = q.on_get_full_etp(b, &[3, 2, 0]);
    assert_eq!(r.unwrap().p_list.len(), 1);
    let (r, _) = q.on_get_full_etp(a, &[2, 2, 0]);
    assert!(r.unwrap().p_list.is_empty());
    // My own address or a wrong length: not accepted.
    assert_eq!(
        q.on_get_full_etp(b, &[1, 2, 0]).0,
        Err(Refusal::NotAccepted)
    );
    assert_eq!(q.on_get_full_etp(b, &[1, 2]).0, Err(Refusal::NotAccepted));
}

#[test]
fn forward_goes_to_other_arcs_only_when_something_changed() {
    let mut q = node(vec![1, 2, 0], 7);
    let (a, _) = q.arc_add(Cost::Real(10));
    q.on_full_etp(a, Ok(etp_from(vec![2, 2, 0], 8)));
    let (b, _) = q.arc_add(Cost::Real(10));
    q.on_full_etp(b, Ok(etp_from(vec![3, 2, 0], 9)));
    // A new neighbour's ETP arrives on a: it carries a path to (1,1).
    let mut m = etp_from(vec![2, 2, 0], 8);
    m.p_list.push(EtpPath {
        hops: vec![h(1, 1)],
        arcs: vec![55],
        cost: Cost::Real(5),
        fingerprint: Fingerprint {
            level: 1,
            ..fp0(20, 3, 0)
        },
        nodes_inside: 3,
        ignore_outside: vec![false, false, true],
    });
    let out = q.on_send_etp(a, m.clone(), false);
    let fwd: Vec<_> = out
        .iter()
        .filter_map(|o| {
            if let Output::SendEtp { arcs, etp, .. } = o {
                Some((arcs.clone(), etp.clone()))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(fwd.len(), 1);
    assert_eq!(fwd[0].0, vec![b]);
    assert_eq!(fwd[0].1.hops, vec![h(0, 2)]);
    assert_eq!(fwd[0].1.p_list.len(), 1);
    assert_eq!(fwd[0].1.p_list[0].hops, vec![h(0, 2), h(1, 1)]);
    assert_eq!(fwd[0].1.p_list[0].cost, Cost::Real(15));
    // The same ETP again: nothing relevant, no forward.
    let out = q.on_send_etp(a, m, false);
    assert!(
        !out.iter().any(|o| matches!(o, Output::SendEtp { .. })),
        "{out:?}"
    );
}

#[test]
fn arc_changed_sends_update_and_gathers() {
    let mut q = node(vec![1, 2, 0], 7);
    let (a, _) = q.arc_add(Cost::Real(10));
    q.on_full_etp(a, Ok(etp_from(vec![2, 2, 0], 8)));
    let out = q.arc_changed(a, Cost::Real(100));
    assert!(out.iter().any(|o| matches!(o, Output::SendEtp { etp, is_full: false, .. } if etp.p_list[0].cost == Cost::Real(100))));
    assert!(out.contains(&Output::RequestFullEtp { arc: a }));
    assert_eq!(q.paths()[&h(0, 2)][0].cost, Cost::Real(100));
    // The gathered reply changes nothing: no update.
    let out = q.on_full_etp(a, Ok(etp_from(vec![2, 2, 0], 8)));
    assert!(
        !out.iter().any(|o| matches!(o, Output::SendEtp { .. })),
        "{out:?}"
    );
    // Unknown arc: nothing.
    assert!(q.arc_changed(999, Cost::Real(1)).is_empty());
}

/// A forward is not sent to a neighbour that would drop it whole as cyclic (§9 step 4 at the
/// receiver): here one whose level-1 g-node the ETP already crossed. The receiver's own check
/// stays (a forward it does get is processed as before).
#[test]
fn forward_skips_neighbours_that_would_find_it_cyclic() {
    let mut q = node(vec![1, 2, 0], 7);
    // a: (2,2,0), same level-1 g-node (a level-0 neighbour).
    let (a, _) = q.arc_add(Cost::Real(10));
    q.on_full_etp(a, Ok(etp_from(vec![2, 2, 0], 8)));
    // b: (1,1,0), in level-1 g-node 1.
    let (b, _) = q.arc_add(Cost::Real(10));
    q.on_full_etp(b, Ok(etp_from(vec![1, 1, 0], 9)));
    // c: (3,2,0), another level-0 neighbour.
    let (c, _) = q.arc_add(Cost::Real(10));
    q.on_full_etp(c, Ok(etp_from(vec![3, 2, 0], 10)));
    // An ETP from a that came through level-1 g-node 1, with a path to (1,3).
    let mut m = etp_from(vec![2, 2, 0], 8);
    m.hops = vec![h(1, 1)];
    m.p_list.push(EtpPath {
        hops: vec![h(1, 3)],
        arcs: vec![55],
        cost: Cost::Real(5),
        fingerprint: Fingerprint {
            level: 1,
            ..fp0(20, 3, 0)
        },
        nodes_inside: 3,
        ignore_outside: vec![false, false, true],
    });
    assert!(q.keeps(c, &[h(0, 2), h(1, 1)]));
    assert!(!q.keeps(b, &[h(0, 2), h(1, 1)]));
    let out = q.on_send_etp(a, m, false);
    let sent: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::SendEtp { arcs, etp, .. } => Some((arcs.clone(), etp.hops.clone())),
            _ => None,
        })
        .collect();
    // To c only: b would see its own g-node (1,1) in the hops.
    assert_eq!(sent, vec![(vec![c], vec![h(0, 2), h(1, 1)])]);
    // What b would have done with it: drop it whole, changing nothing.
    let mut nb = node(vec![1, 1, 0], 9);
    let (x, _) = nb.arc_add(Cost::Real(10));
    nb.on_full_etp(x, Ok(etp_from(vec![1, 2, 0], 7)));
    let before = nb.paths();
    let mut fwd = q.full_etp();
    fwd.hops = vec![h(0, 2), h(1, 1)];
    let out = nb.on_send_etp(x, fwd, false);
    assert!(!out.iter().any(|o| matches!(o, Output::SendEtp { .. })));
    assert_eq!(nb.paths(), before);
    // A neighbour whose address is not known yet gets everything.
    let (d, _) = q.arc_add(Cost::Real(10));
    assert!(q.keeps(d, &[h(1, 1)]));
}

/// ntkplane's addition to §9 step 9: a neighbour that moved at its own level is asked for a
/// full ETP, which replaces the paths learnt through it under its old coordinate.
#[test]
fn a_neighbour_that_moved_is_asked_for_a_full_etp() {
    let through_it = |from: Vec<u32>| {
        let mut m = etp_from(from, 8);
        m.p_list.push(EtpPath {
            hops: vec![h(1, 1)],
            arcs: vec![55],
            cost: Cost::Real(5),
            fingerprint: Fingerprint {
                level: 1,
                ..fp0(20, 3, 0)
            },
            nodes_inside: 3,
            ignore_outside: vec![false, false, true],
        });
        m
    };
    let first_hops = |q: &Qspn| -> Vec<Vec<HCoord>> {
        q.paths()
            .get(&h(1, 1))
            .map(|ps| ps.iter().map(|p| p.hops.clone()).collect())
            .unwrap_or_default()
    };
    let mut q = node(vec![1, 2, 0], 7);
    let (a, _) = q.arc_add(Cost::Real(10));
    q.on_full_etp(a, Ok(through_it(vec![2, 2, 0])));
    assert_eq!(first_hops(&q), vec![vec![h(0, 2), h(1, 1)]]);
    // It moves from (0,2) to (0,3): its next update says so, and it is asked for all.
    let out = q.on_send_etp(a, etp_from(vec![3, 2, 0], 8), false);
    assert!(out.contains(&Output::RequestFullEtp { arc: a }), "{out:?}");
    q.on_full_etp(a, Ok(through_it(vec![3, 2, 0])));
    assert_eq!(first_hops(&q), vec![vec![h(0, 3), h(1, 1)]]);
    // From where it is now: no request.
    let out = q.on_send_etp(a, etp_from(vec![3, 2, 0], 8), false);
    assert!(!out.contains(&Output::RequestFullEtp { arc: a }), "{out:?}");
}

#[test]
fn a_virtual_g_node_seen_from_outside_never_gives_its_id_upward() {
    // Me 1·2·0 (id 7, eldership 7). My neighbour 0·5·0 sits at virtual position 5 of level 1
    // (gsize 4): a connectivity g-node, older (eldership 3) and with a smaller id. Its
    // members take it for null (§6.4); so must I, or we disagree on g-node 0·'s eldest.
    let mut q = node(vec![1, 2, 0], 7);
    let (a, _) = q.arc_add(Cost::Real(10));
    q.on_full_etp(a, Ok(etp_from(vec![0, 5, 0], 3)));
    assert!(q.paths().contains_key(&h(1, 5)), "{:?}", q.paths());
    assert_eq!(q.fingerprint(2).id, 7);
}
