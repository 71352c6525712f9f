//! §16.4 (bootstrap of an entering node), §16.5 (connectivity identity) and the dismissal
//! procedures (§13.7), through the simulator.
use std::collections::BTreeMap;

use super::bootstrap::{BootstrapArgs, InternalArc};
use super::engine::{Params, Qspn};
use super::event::{Output, Signal, Timer};
use super::lifecycle::check_connectivity_of;
use super::map::Dests;
use super::msg::{Cost, HCoord, Refusal};
use super::path::tests::{fp, np};
use super::sim::Sim;
use super::sim_tests::{assert_paths_sane, fp0};

fn h(lvl: usize, pos: u32) -> HCoord {
    HCoord { lvl, pos }
}

fn sigs(s: &Sim, from: usize, node: usize) -> Vec<Signal> {
    s.signals[from..]
        .iter()
        .filter(|(n, _, _)| *n == node)
        .map(|(_, _, sg)| sg.clone())
        .collect()
}

/// §16.4: β₀ `1·0·1·0` alone enters G_γ (γ `2·1·1·0` – δ `2·1·0·1`) as β₁ `2·1·1·2`
/// (virtual at level 0), g = 0, h = 1; make_real turns it into `2·1·1·1` right away.
#[test]
fn worked_example_16_4_bootstrap_of_an_entering_node() {
    let gs = vec![2, 2, 2, 4];
    let mut s = Sim::new(gs.clone());
    let ga = s.add_node(vec![0, 1, 1, 2], fp0(3, 4, 2));
    let de = s.add_node(vec![1, 0, 1, 2], fp0(4, 4, 3));
    let b0 = s.add_node(vec![0, 1, 0, 1], fp0(2, 4, 1));
    s.link(ga, de, 11000, 10000);
    s.run(100_000).unwrap();
    let mark = s.signals.len();
    let (b1, out) = Qspn::enter_net(
        Params::new(gs.clone(), 99),
        BootstrapArgs {
            internal_arcs: vec![],
            external_arcs: vec![Cost::Real(10000)],
            my_naddr: vec![2, 1, 1, 2],
            my_fp: fp0(20, 4, 9),
            guest_gnode_level: 0,
            host_gnode_level: 1,
            previous: &s.nodes[b0],
            update_internal_fingerprints: None,
        },
    );
    assert!(!b1.is_bootstrap_complete());
    let ext = b1.external_arc_ids()[0];
    assert_eq!(out, vec![Output::RequestFullEtp { arc: ext }]);
    // In bootstrap: get_full_etp refused, queries above the guest level hidden.
    let mut probe = b1.clone();
    assert_eq!(
        probe.on_get_full_etp(ext, &[0, 1, 1, 2]).0,
        Err(Refusal::BootstrapInProgress)
    );
    let b1 = s.add_instance(b1, out);
    // γ declares the arc (its request to β₁ will be refused: β₁ is in bootstrap).
    let (g_arc, out) = s.nodes[ga].arc_add(Cost::Real(11000));
    s.link_existing(b1, ext, ga, g_arc);
    s.handle(ga, out);
    // Phase 2 right after creation: the virtual position becomes real (no notice yet).
    let out = s.nodes[b1].make_real(
        &|a: &[u32]| {
            let mut v = a.to_vec();
            v[0] = 1;
            v
        },
        None,
        fp0(20, 4, 9),
    );
    assert!(!out.iter().any(|o| matches!(o, Output::SendEtp { .. })));
    s.handle(b1, out);
    s.run(100_000).unwrap();
    assert!(s.nodes[b1].is_bootstrap_complete());
    let sb = sigs(&s, mark, b1);
    let pos = |x: &Signal| sb.iter().position(|y| y == x);
    assert!(
        pos(&Signal::DestinationAdded(h(0, 0))) < pos(&Signal::BootstrapComplete),
        "{sb:?}"
    );
    assert!(sb.contains(&Signal::PresenceNotified), "{sb:?}");
    // β₁ knows γ and δ's g-node through γ.
    let p = s.nodes[b1].paths();
    assert_eq!(
        p.keys().copied().collect::<Vec<_>>(),
        vec![h(0, 0), h(1, 0)]
    );
    assert_eq!(p[&h(0, 0)][0].arc, ext);
    // γ: destination (0,1) (β₁'s real position); nothing at (0,2).
    let sg = sigs(&s, mark, ga);
    assert!(sg.contains(&Signal::DestinationAdded(h(0, 1))), "{sg:?}");
    assert!(!sg.contains(&Signal::DestinationAdded(h(0, 2))), "{sg:?}");
    assert_eq!(
        s.nodes[ga].neighbour_address(g_arc),
        Some(&[1, 1, 1, 2][..])
    );
    // δ: γ's g-node now counts 2.
    assert_eq!(s.nodes[de].paths()[&h(1, 1)][0].nodes_inside, 2);
    assert_eq!(s.nodes[de].nodes_inside(4), 3);
    assert_paths_sane(&s);
}

/// §13.2: no external neighbour answers → after 10 s the bootstrap ends anyway.
#[test]
fn bootstrap_gives_up_after_10_s() {
    let (b0, _) = Qspn::create_net(Params::new(vec![2, 2], 1), vec![0, 0], fp0(1, 2, 0));
    let (mut b1, out) = Qspn::enter_net(
        Params::new(vec![2, 2], 2),
        BootstrapArgs {
            internal_arcs: vec![],
            external_arcs: vec![Cost::Real(5)],
            my_naddr: vec![2, 1],
            my_fp: fp0(2, 2, 0),
            guest_gnode_level: 0,
            host_gnode_level: 2,
            previous: &b0,
            update_internal_fingerprints: None,
        },
    );
    let a = b1.external_arc_ids()[0];
    assert_eq!(out, vec![Output::RequestFullEtp { arc: a }]);
    let out = b1.on_full_etp(a, Err(Refusal::BootstrapInProgress));
    assert_eq!(
        out,
        vec![Output::Timer {
            after_ms: 10_000,
            timer: Timer::BootstrapGiveUp
        }]
    );
    let out = b1.on_timer(Timer::BootstrapGiveUp);
    assert!(b1.is_bootstrap_complete());
    assert!(out.contains(&Output::Signal(Signal::BootstrapComplete)));
    assert!(out.contains(&Output::RequestFullEtp { arc: a }));
    // The exit request fails: the arc goes, then the (empty) broadcast and presence timer.
    let out = b1.on_request_failed(a);
    assert!(out.contains(&Output::ArcRemoved {
        arc: a,
        bad_link: true
    }));
    assert!(out.contains(&Output::Timer {
        after_ms: 1_000,
        timer: Timer::PresenceNotified
    }));
}

/// §13.2: a migrating identity copies the paths inside the moving g-node through its
/// internal arcs (inherited ids) and answers for them during the bootstrap.
#[test]
fn migration_copies_internal_paths() {
    let gs = vec![2, 2, 2];
    let mut s = Sim::new(gs.clone());
    // x `0·0·0`, y `0·0·1`: a level-1 g-node `0·0·` moving as a whole (g = 1).
    let x = s.add_node(vec![0, 0, 0], fp0(1, 3, 0));
    let y = s.add_node(vec![1, 0, 0], fp0(2, 3, 1));
    let z = s.add_node(vec![0, 1, 0], fp0(3, 3, 2));
    s.link(x, y, 100, 100);
    s.link(y, z, 100, 100);
    s.run(100_000).unwrap();
    let axy = s.arc_to(x, y).unwrap();
    let (xn, out) = Qspn::enter_net(
        Params::new(gs.clone(), 7),
        BootstrapArgs {
            internal_arcs: vec![InternalArc {
                prev_arc: axy,
                cost: Cost::Real(120),
                peer_naddr: vec![1, 1, 1],
            }],
            external_arcs: vec![],
            my_naddr: vec![0, 1, 1],
            my_fp: fp0(1, 3, 0),
            guest_gnode_level: 1,
            host_gnode_level: 3,
            previous: &s.nodes[x],
            update_internal_fingerprints: Some(&|f| {
                let mut f = f.clone();
                f.elderships_seed.push(42);
                f
            }),
        },
    );
    assert!(out.contains(&Output::PathsChanged));
    assert!(out.contains(&Output::Timer {
        after_ms: 10_000,
        timer: Timer::BootstrapGiveUp
    }));
    // Level 0 (inside the moving g-node) is copied, rebound to the inherited arc id; the
    // level-1 destination (z's g-node) is not.
    let p = xn.paths();
    assert_eq!(p.keys().copied().collect::<Vec<_>>(), vec![h(0, 1)]);
    assert_eq!(p[&h(0, 1)][0].arc, axy);
    assert_eq!(p[&h(0, 1)][0].cost, Cost::Real(120));
    assert_eq!(xn.neighbour_address(axy), Some(&[1, 1, 1][..]));
    assert_eq!(xn.all_paths_to(&h(0, 1)).len(), 1);
    assert_eq!(xn.gnode_levels(), (1, 3));
}

/// §16.5 (topology 2·2·2): β `1·1·1` migrates into `0·1·` as β_B `0·1·2`; the old identity
/// becomes the connectivity identity β_i `1·1·2` (from 1, to 2).
#[test]
fn worked_example_16_5_connectivity_identity() {
    let gs = vec![2, 2, 2];
    let mut s = Sim::new(gs.clone());
    let al = s.add_node(vec![0, 1, 0], fp0(1, 3, 0));
    let be = s.add_node(vec![1, 1, 1], fp0(2, 3, 1));
    let ga = s.add_node(vec![0, 1, 1], fp0(3, 3, 2));
    let de = s.add_node(vec![1, 0, 1], fp0(4, 3, 3));
    let mu = s.add_node(vec![0, 0, 1], fp0(5, 3, 4));
    s.link(al, be, 1000, 1000);
    s.link(be, ga, 1000, 1000);
    s.link(ga, de, 1000, 1000);
    s.link(de, mu, 1000, 1000);
    s.run(100_000).unwrap();
    assert_eq!(s.nodes[al].paths()[&h(2, 1)][0].nodes_inside, 4);
    let g_path_20 = s.nodes[ga].paths()[&h(2, 0)][0].clone();
    // β_B: enter 0·1· (g = 0, h = 1) with arcs to α and γ.
    let (bb, out) = Qspn::enter_net(
        Params::new(gs.clone(), 77),
        BootstrapArgs {
            internal_arcs: vec![],
            external_arcs: vec![Cost::Real(1000), Cost::Real(1000)],
            my_naddr: vec![2, 1, 0],
            my_fp: fp0(6, 3, 5),
            guest_gnode_level: 0,
            host_gnode_level: 1,
            previous: &s.nodes[be],
            update_internal_fingerprints: None,
        },
    );
    let (bb_al, bb_ga) = (bb.external_arc_ids()[0], bb.external_arc_ids()[1]);
    // β_i: the old identity, now 1·1·2.
    let mark = s.signals.len();
    let out_i = s.nodes[be].make_connectivity(1, 2, &|a: &[u32]| {
        let mut v = a.to_vec();
        v[0] = 2;
        v
    });
    assert!(out_i.contains(&Output::Timer {
        after_ms: 50,
        timer: Timer::ConnectivityNotice { lvl: 0, old_pos: 1 }
    }));
    s.handle(be, out_i);
    assert_eq!(s.nodes[be].nodes_inside(0), 0);
    assert_eq!(s.nodes[be].connectivity_levels(), (1, 2));
    // Fire the notice only (β_B is not linked yet).
    s.run_until(s.now + 60, 100_000).unwrap();
    let sg = sigs(&s, mark, ga);
    assert!(sg.contains(&Signal::DestinationRemoved(h(0, 1))), "{sg:?}");
    assert!(sg.contains(&Signal::DestinationAdded(h(0, 2))), "{sg:?}");
    // γ keeps its route to (2,0) through β_i (stale first hop, same gateway).
    assert_eq!(s.nodes[ga].paths()[&h(2, 0)][0].arcs, g_path_20.arcs);
    // α: same route, β_i's level-2 g-node now counts 3.
    let sa = sigs(&s, mark, al);
    assert!(
        sa.iter().any(|x| matches!(x, Signal::PathChanged(_))),
        "{sa:?}"
    );
    assert_eq!(s.nodes[al].paths()[&h(2, 1)][0].nodes_inside, 3);
    // β_B joins: arcs to α and γ.
    let bb = s.add_instance(bb, out);
    let (a1, o1) = s.nodes[al].arc_add(Cost::Real(1000));
    s.link_existing(bb, bb_al, al, a1);
    s.handle(al, o1);
    let (a2, o2) = s.nodes[ga].arc_add(Cost::Real(1000));
    s.link_existing(bb, bb_ga, ga, a2);
    s.handle(ga, o2);
    let mark2 = s.signals.len();
    s.run(200_000).unwrap();
    assert!(s.nodes[bb].is_bootstrap_complete());
    assert!(sigs(&s, mark2, bb).contains(&Signal::PresenceNotified));
    // β_i: remove_outer_arcs (α's coordinate is at level 2 ≥ to).
    let out = s.nodes[be].remove_outer_arcs();
    let removed: Vec<_> = out
        .iter()
        .filter_map(|o| {
            if let Output::ArcRemoved { arc, .. } = o {
                Some(*arc)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(removed.len(), 1);
    s.handle(be, out);
    s.run(200_000).unwrap();
    // α routes 1· through β_B; γ routes 0· through β_B.
    assert_eq!(s.nodes[al].paths()[&h(2, 1)][0].arc, a1);
    assert_eq!(s.nodes[ga].paths()[&h(2, 0)][0].arc, a2);
    // β_i still bridges γ's side of the moving g-node: it may go if every destination of
    // levels 0..1 it knows is reached through each adjacent level-0 g-node.
    assert!(s.nodes[be].check_connectivity());
    // Dismissal: destroy tells γ, which drops the arc.
    let out = s.nodes[be].destroy();
    assert!(matches!(&out[..], [Output::SendDestroy { arcs }] if arcs.len() == 1));
    s.handle(be, out);
    s.run(200_000).unwrap();
    assert_eq!(s.nodes[ga].arcs().count(), 2);
    assert_paths_sane(&s);
}

#[test]
fn check_connectivity_on_maps() {
    // Connectivity identity at level 0 (from 1, to 2). Level-0 destinations (0,0), (0,3);
    // adjacent level-0 g-nodes = first level-0 hops = {(0,0), (0,3)}.
    let f = fp(1, 0, &[]);
    let mut d = Dests::new();
    d.insert(
        h(0, 0),
        vec![np(&[h(0, 0)], &[1], Cost::Null, f.clone(), 1)],
    );
    d.insert(
        h(0, 3),
        vec![np(&[h(0, 3)], &[2], Cost::Null, f.clone(), 1)],
    );
    // (0,0) is not reached through (0,3) → false.
    assert!(!check_connectivity_of(&d, 1, 2));
    d.get_mut(&h(0, 0)).unwrap().push(np(
        &[h(0, 3), h(0, 0)],
        &[2, 9],
        Cost::Real(5),
        f.clone(),
        1,
    ));
    d.get_mut(&h(0, 3)).unwrap().push(np(
        &[h(0, 0), h(0, 3)],
        &[1, 9],
        Cost::Real(5),
        f.clone(),
        1,
    ));
    assert!(check_connectivity_of(&d, 1, 2));
    // Empty levels are skipped; nothing below `to` → true.
    assert!(check_connectivity_of(&Dests::new(), 1, 2));
    let _ = BTreeMap::<u8, u8>::new();
}

#[test]
fn prepare_destroy_propagates_once() {
    let gs = vec![2, 2, 2];
    let (mut q, _) = Qspn::create_net(Params::new(gs.clone(), 1), vec![1, 1, 1], fp0(1, 3, 0));
    // A main identity ignores it.
    assert!(q.got_prepare_destroy(5).is_empty());
    let (a, _) = q.arc_add(Cost::Real(1));
    // Neighbour inside my level-1 g-node (coordinate level 0 < from−1 = 1 with from = 2).
    let _ = q.on_get_full_etp(a, &[0, 1, 1]);
    q.make_connectivity(2, 3, &|x: &[u32]| {
        let mut v = x.to_vec();
        v[1] = 3;
        v
    });
    let out = q.got_prepare_destroy(a);
    assert!(
        out.contains(&Output::SendPrepareDestroy { arcs: vec![a] }),
        "{out:?}"
    );
    assert!(out.contains(&Output::Timer {
        after_ms: 10_000,
        timer: Timer::RemoveIdentity
    }));
    assert!(q.got_prepare_destroy(a).is_empty());
    assert_eq!(
        q.on_timer(Timer::RemoveIdentity),
        vec![Output::Signal(Signal::RemoveIdentity)]
    );
    // got_destroy removes the arc.
    let out = q.got_destroy(a);
    assert!(out.contains(&Output::ArcRemoved {
        arc: a,
        bad_link: false
    }));
}

fn boot(gs: &[u32], my: Vec<u32>, g: usize, hl: usize, n_ext: usize) -> Qspn {
    let (prev, _) = Qspn::create_net(
        Params::new(gs.to_vec(), 1),
        vec![0; gs.len()],
        fp0(1, gs.len(), 0),
    );
    let (q, _) = Qspn::enter_net(
        Params::new(gs.to_vec(), 2),
        BootstrapArgs {
            internal_arcs: vec![],
            external_arcs: vec![Cost::Real(10); n_ext],
            my_naddr: my,
            my_fp: fp0(2, gs.len(), 5),
            guest_gnode_level: g,
            host_gnode_level: hl,
            previous: &prev,
            update_internal_fingerprints: None,
        },
    );
    q
}

/// §13.2: in bootstrap, a send_etp from outside the moving g-node is ignored; from inside it
/// ends the bootstrap only if it carries a path to a level-(h−1) destination.
#[test]
fn bootstrap_send_etp_filter() {
    let gs = [2, 2, 2];
    // Moving g-node of level 1 (g = 1), host of level 2 (h = 2); me `0·1·1` → [1,1,0].
    let mut q = boot(&gs, vec![1, 1, 0], 1, 2, 1);
    let a = q.external_arc_ids()[0];
    let neighbour = |addr: Vec<u32>, with_h1: bool| {
        let (n, _) = Qspn::create_net(Params::new(gs.to_vec(), 3), addr, fp0(3, 3, 1));
        let mut m = n.full_etp();
        if with_h1 {
            m.p_list.push(super::msg::EtpPath {
                hops: vec![h(1, 0)],
                arcs: vec![9],
                cost: Cost::Real(1),
                fingerprint: super::msg::Fingerprint {
                    level: 1,
                    ..fp0(8, 3, 0)
                },
                nodes_inside: 1,
                ignore_outside: vec![false, false, true],
            });
        }
        m
    };
    // Outside (coordinate level 1 ≥ g): ignored.
    let out = q.on_send_etp(a, neighbour(vec![1, 0, 0], true), false);
    assert!(out.is_empty(), "{out:?}");
    assert!(!q.is_bootstrap_complete());
    // Inside (level 0) without knowledge of the host g-node: ignored.
    let out = q.on_send_etp(a, neighbour(vec![0, 1, 0], false), false);
    assert!(out.is_empty(), "{out:?}");
    // Inside with a path to a level-1 destination: processed, bootstrap ends, no forward.
    let out = q.on_send_etp(a, neighbour(vec![0, 1, 0], true), false);
    assert!(q.is_bootstrap_complete());
    assert!(out.contains(&Output::Signal(Signal::BootstrapComplete)));
    assert!(out.contains(&Output::RequestFullEtp { arc: a }));
    assert!(!out.iter().any(|o| matches!(o, Output::SendEtp { .. })));
    assert!(q.paths().contains_key(&h(1, 0)));
    // Replies come per arc in request order: first the bootstrap task's own request (sent
    // at construction), then the exit's; after that, the final broadcast and the timer.
    let out = q.on_full_etp(a, Err(Refusal::BootstrapInProgress));
    assert!(out.is_empty(), "{out:?}");
    let out = q.on_full_etp(a, Err(Refusal::BootstrapInProgress));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::SendEtp { is_full: true, .. })));
    assert!(out.contains(&Output::Timer {
        after_ms: 1_000,
        timer: Timer::PresenceNotified
    }));
}

/// §13.2: arcs added in bootstrap are queued; removed ones leave queue and arc list (§18.2);
/// cost changes only swap the cost.
#[test]
fn bootstrap_arc_events() {
    let gs = [2, 2, 2];
    let mut q = boot(&gs, vec![2, 1, 0], 0, 1, 1);
    let a = q.external_arc_ids()[0];
    let (b, out) = q.arc_add(Cost::Real(3));
    assert!(out.is_empty(), "{out:?}"); // a is being asked: b waits in the queue
    assert_eq!(q.queued_arcs(), [b].into());
    assert!(q.arc_changed(b, Cost::Real(4)).is_empty());
    assert_eq!(q.arc_cost(b), Some(Cost::Real(4)));
    let out = q.arc_remove(b);
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::SendEtp { .. } | Output::RequestFullEtp { .. })));
    assert!(q.queued_arcs().is_empty());
    assert_eq!(q.arcs().collect::<Vec<_>>(), vec![a]);
    // Removing the arc being asked moves the task on: empty queue → give-up timer.
    let out = q.arc_remove(a);
    assert!(out.contains(&Output::Timer {
        after_ms: 10_000,
        timer: Timer::BootstrapGiveUp
    }));
    // A reply from a neighbour outside [g, h) does not end the bootstrap.
    let (c, out) = q.arc_add(Cost::Real(3));
    assert_eq!(out, vec![Output::RequestFullEtp { arc: c }]);
    let (far, _) = Qspn::create_net(Params::new(gs.to_vec(), 3), vec![0, 0, 1], fp0(3, 3, 1));
    let out = q.on_full_etp(c, Ok(far.full_etp()));
    assert!(!q.is_bootstrap_complete());
    assert!(out.contains(&Output::Timer {
        after_ms: 10_000,
        timer: Timer::BootstrapGiveUp
    }));
}

/// §13.3 normative fix: after the bootstrap, make_real rewrites only internal neighbours
/// (coordinate level < the original guest level) and notifies every other neighbour.
#[test]
fn make_real_after_bootstrap_uses_the_original_guest_level() {
    let gs = [2, 2, 2];
    // g = 1, h = 2; me `0·2·1` (virtual at level h−1 = 1) → [1,2,0].
    let mut q = boot(&gs, vec![1, 2, 0], 1, 2, 0);
    let (inner, _) = q.arc_add(Cost::Real(1));
    let (outer, _) = q.arc_add(Cost::Real(1));
    let (unknown, _) = q.arc_add(Cost::Real(1));
    q.on_timer(Timer::BootstrapGiveUp);
    assert!(q.is_bootstrap_complete());
    let _ = q.on_get_full_etp(inner, &[0, 2, 0]);
    let _ = q.on_get_full_etp(outer, &[0, 0, 0]);
    let out = q.make_real(
        &|a: &[u32]| {
            let mut v = a.to_vec();
            if v[1] == 2 {
                v[1] = 1;
            }
            v
        },
        None,
        fp0(2, 3, 5),
    );
    assert_eq!(q.my_naddr(), &[1, 1, 0]);
    assert_eq!(q.neighbour_address(inner), Some(&[0, 1, 0][..]));
    assert_eq!(q.neighbour_address(outer), Some(&[0, 0, 0][..]));
    let sent: Vec<_> = out
        .iter()
        .filter_map(|o| {
            if let Output::SendEtp { arcs, etp, .. } = o {
                Some((arcs.clone(), etp.clone()))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(sent.len(), 1);
    let mut want = vec![outer, unknown];
    want.sort();
    let mut got = sent[0].0.clone();
    got.sort();
    assert_eq!(got, want);
    assert!(sent[0].1.p_list.is_empty() && sent[0].1.hops.is_empty());
    assert_eq!(sent[0].1.node_address, vec![1, 1, 0]);
}
