use std::net::{Ipv4Addr, SocketAddrV4};

use super::{segment::Segments, Config, Neighborhood, NicError, Output};
use crate::wire::{Message, NetworkKey, PORT};

fn ip(a: u8, b: u8) -> Ipv4Addr {
    Ipv4Addr::new(169, 254, a, b)
}

fn mac(a: u8, b: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, a, b]
}

const S: u64 = 1_000_000;

fn count(events: &[Output], f: impl Fn(&Output) -> bool) -> usize {
    events.iter().filter(|o| f(o)).count()
}

fn added(e: &[Output]) -> usize {
    count(e, |o| matches!(o, Output::ArcAdded { .. }))
}

fn removed(e: &[Output]) -> usize {
    count(e, |o| matches!(o, Output::ArcRemoved { .. }))
}

/// neighborhood.md §11.1: B listens first, A's announcement starts the handshake; each end
/// gets its host route, exports, and reports the arc after its first probe reply, with the
/// measured RTT (two latencies) as the cost.
#[test]
fn two_systems_on_one_segment() {
    let mut n = Segments::default();
    let a = n.add_system(Config::new(111, 1));
    let b = n.add_system(Config::new(222, 2));
    n.plug(b, "eth0", mac(0xbb, 0), ip(2, 2), &[0]);
    n.plug(a, "eth0", mac(0xaa, 0), ip(1, 1), &[0]);
    n.run_for(50_000);
    assert_eq!(
        n.events[b].first(),
        Some(&Output::AddNeighbourRoute {
            nic: "eth0".into(),
            peer: ip(1, 1),
            src: ip(2, 2)
        })
    );
    assert_eq!(
        n.events[a].first(),
        Some(&Output::AddNeighbourRoute {
            nic: "eth0".into(),
            peer: ip(2, 2),
            src: ip(1, 1)
        })
    );
    for (s, peer, peer_addr) in [(a, 222, ip(2, 2)), (b, 111, ip(1, 1))] {
        let Some(Output::ArcAdded { arc, cost_us }) = n.events[s].get(1) else {
            panic!("no ArcAdded: {:?}", n.events[s]);
        };
        assert_eq!(
            (arc.peer_id(), arc.peer_addr(), arc.nic()),
            (peer, peer_addr, "eth0")
        );
        assert_eq!(*cost_us, 2 * n.latency_us);
    }
    // Announcements and probes go on; nothing else happens (R5, one prober per arc).
    n.run_for(60 * S);
    for s in [a, b] {
        assert_eq!(n.events[s].len(), 2, "{:?}", n.events[s]);
        assert_eq!(n.arcs(s).len(), 1);
        assert_eq!(n.routes[s].len(), 1);
    }
}

/// Delivers the datagrams in `out_a`/`out_b` crosswise between two one-NIC machines until
/// nothing more is said; returns the other outputs of each.
fn exchange(
    a: &mut Neighborhood,
    b: &mut Neighborhood,
    mut out_a: Vec<Output>,
    mut out_b: Vec<Output>,
    now: u64,
) -> (Vec<Output>, Vec<Output>) {
    let (mut ev_a, mut ev_b) = (vec![], vec![]);
    let (addr_a, addr_b) = (from(ip(1, 1)), from(ip(2, 2)));
    while !out_a.is_empty() || !out_b.is_empty() {
        let (mut next_a, mut next_b) = (vec![], vec![]);
        for o in out_a.drain(..) {
            match o {
                Output::Broadcast { msg, .. } | Output::Unicast { msg, .. } => {
                    next_b.extend(b.on_message("eth0", addr_a, a.node_id(), &msg, now))
                }
                other => ev_a.push(other),
            }
        }
        for o in out_b.drain(..) {
            match o {
                Output::Broadcast { msg, .. } | Output::Unicast { msg, .. } => {
                    next_a.extend(a.on_message("eth0", addr_b, b.node_id(), &msg, now))
                }
                other => ev_b.push(other),
            }
        }
        (out_a, out_b) = (next_a, next_b);
    }
    (ev_a, ev_b)
}

/// Both ends hear each other's announcement at once: each reuses the arc it made on
/// `HereIAm`, both call `CanYouExport`, and the export is idempotent: one arc, one route and
/// one prober per side (§11.1 last paragraph, §15.4).
#[test]
fn simultaneous_announcements_make_one_arc() {
    let mut a = machine();
    let mut b = Neighborhood::new(Config::new(222, 2));
    let out_a = vec![Output::Broadcast {
        nic: "eth0".into(),
        msg: Message::HereIAm {
            node_id: 111,
            mac: mac(0xaa, 0),
            nic_addr: ip(1, 1),
        },
    }];
    let out_b = b.add_nic("eth0", mac(0xbb, 0), ip(2, 2), 0).unwrap();
    let (ev_a, ev_b) = exchange(&mut a, &mut b, out_a, out_b, 0);
    for ev in [&ev_a, &ev_b] {
        assert_eq!(ev.len(), 1, "one route: {ev:?}");
        assert!(matches!(ev[0], Output::AddNeighbourRoute { .. }));
    }
    // One probe per side per period, and both arcs come up.
    let (pa, pb) = (a.on_tick(1_000), b.on_tick(1_000));
    let probes = |o: &[Output]| {
        count(o, |o| {
            matches!(
                o,
                Output::Unicast {
                    msg: Message::Probe { .. },
                    ..
                }
            )
        })
    };
    assert_eq!((probes(&pa), probes(&pb)), (1, 1));
    let (ev_a, ev_b) = exchange(&mut a, &mut b, pa, pb, 1_400);
    assert_eq!((added(&ev_a), added(&ev_b)), (1, 1));
}

/// neighborhood.md §11.2 (testsuite `test_count_arcs`).
#[test]
fn arc_counts_three_systems_two_segments() {
    let mut n = Segments::default();
    let ids = [123, 456, 789];
    let s: Vec<usize> = ids
        .iter()
        .map(|&id| n.add_system(Config::new(id, u64::from(id))))
        .collect();
    for (i, &sys) in s.iter().enumerate() {
        let k = i as u8 + 1;
        n.plug(sys, "eth0", mac(k, 0), ip(k, 0), &[0]);
    }
    // Radio: 123 and 789 each hear only 456, which hears both.
    n.plug(s[0], "wlan0", mac(1, 1), ip(1, 1), &[1]);
    n.plug(s[1], "wlan0", mac(2, 1), ip(2, 1), &[1, 2]);
    n.plug(s[2], "wlan0", mac(3, 1), ip(3, 1), &[2]);
    n.run_for(30 * S);
    let e = |v: &[(&str, u32)]| {
        v.iter()
            .map(|(n, i)| (n.to_string(), *i))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        n.arcs(s[0]),
        e(&[("eth0", 456), ("eth0", 789), ("wlan0", 456)])
    );
    assert_eq!(
        n.arcs(s[1]),
        e(&[("eth0", 123), ("eth0", 789), ("wlan0", 123), ("wlan0", 789)])
    );
    assert_eq!(
        n.arcs(s[2]),
        e(&[("eth0", 123), ("eth0", 456), ("wlan0", 456)])
    );
}

/// neighborhood.md §11.3 (`test_collision`): four NICs of two systems on one segment pair
/// up one-to-one.
#[test]
fn two_nics_on_one_segment_pair_one_to_one() {
    let mut n = Segments::default();
    let x = n.add_system(Config::new(12, 12));
    let y = n.add_system(Config::new(45, 45));
    n.plug(x, "eth0", mac(12, 0), ip(12, 0), &[0]);
    n.plug(x, "eth1", mac(12, 1), ip(12, 1), &[0]);
    n.plug(y, "eth0", mac(45, 0), ip(45, 0), &[0]);
    n.plug(y, "eth1", mac(45, 1), ip(45, 1), &[0]);
    n.run_for(60 * S);
    for s in [x, y] {
        let arcs = n.systems[s].current_arcs();
        assert_eq!(arcs.len(), 2, "system {s}: {arcs:?}");
        let mut nics: Vec<_> = arcs.iter().map(|(k, _)| k.nic().to_owned()).collect();
        let mut macs: Vec<_> = arcs.iter().map(|(k, _)| k.peer_mac()).collect();
        nics.dedup();
        macs.sort();
        macs.dedup();
        assert_eq!((nics.len(), macs.len()), (2, 2), "not one-to-one: {arcs:?}");
    }
}

/// `test_no_self_arc`: one system, two NICs on one segment.
#[test]
fn no_arc_with_oneself() {
    let mut n = Segments::default();
    let x = n.add_system(Config::new(12, 12));
    n.plug(x, "eth0", mac(12, 0), ip(12, 0), &[0]);
    n.plug(x, "eth1", mac(12, 1), ip(12, 1), &[0]);
    n.run_for(20 * S);
    assert!(n.events[x].is_empty(), "{:?}", n.events[x]);
}

fn pair() -> (Segments, usize, usize) {
    let mut n = Segments::default();
    let a = n.add_system(Config::new(111, 1));
    let b = n.add_system(Config::new(222, 2));
    n.plug(b, "eth0", mac(0xbb, 0), ip(2, 2), &[0]);
    n.plug(a, "eth0", mac(0xaa, 0), ip(1, 1), &[0]);
    n.run_for(S);
    assert_eq!((n.arcs(a).len(), n.arcs(b).len()), (1, 1));
    (n, a, b)
}

/// No probe reply for `dead_after_ms` (3 s) removes the arc, without telling the peer.
#[test]
fn silent_arc_dies_after_dead_after() {
    let (mut n, a, b) = pair();
    let cut_at = n.now_us;
    n.cut.insert((b, a));
    n.run_for(2_500_000);
    assert_eq!(n.arcs(a).len(), 1, "removed before dead_after");
    n.run_for(2 * S);
    assert!(n.arcs(a).is_empty());
    let tail: Vec<_> = n.events[a][2..].to_vec();
    assert!(
        matches!(
            tail.as_slice(),
            [
                Output::ArcRemoving {
                    still_usable: false,
                    ..
                },
                Output::RemoveNeighbourRoute { .. },
                Output::ArcRemoved { .. }
            ]
        ),
        "{tail:?}"
    );
    assert!(n.routes[a].is_empty());
    // B's probes went unanswered too.
    assert!(n.arcs(b).is_empty());
    assert!(n.now_us - cut_at < 5 * S);
}

/// A probe RTT that doubles is reported (`ArcChanged`, §6.1 rule).
#[test]
fn cost_change_is_reported() {
    let (mut n, a, _) = pair();
    n.latency_us = 5_000; // RTT 500 µs → 10 000 µs
    n.run_for(3 * S);
    let changed: Vec<_> = n.events[a]
        .iter()
        .filter_map(|o| match o {
            Output::ArcChanged { cost_us, .. } => Some(*cost_us),
            _ => None,
        })
        .collect();
    assert!(!changed.is_empty() && changed[0] > 1_000, "{changed:?}");
}

/// `remove_arc` by A reaches B as a `RemoveArc` broadcast (§7.1 step 4, §7.2 row 2); the
/// next announcement makes the arc again (the reference behaves the same).
#[test]
fn remove_arc_from_the_peer() {
    let (mut n, a, b) = pair();
    let key = n.systems[a].current_arcs()[0].0.clone();
    let out = n.systems[a].remove_arc(&key, true);
    assert!(matches!(
        out.as_slice(),
        [
            Output::ArcRemoving {
                still_usable: true,
                ..
            },
            Output::RemoveNeighbourRoute { .. },
            Output::Broadcast {
                msg: Message::RemoveArc { .. },
                ..
            },
            Output::ArcRemoved { .. }
        ]
    ));
    // Idempotent.
    assert!(n.systems[a].remove_arc(&key, true).is_empty());
    // The pump carries A's outputs.
    let sys_out = out;
    n.deliver_outputs(a, sys_out);
    n.run_for(20_000);
    assert!(n.arcs(b).is_empty());
    assert_eq!(removed(&n.events[b]), 1);
    assert!(n.routes[b].is_empty());
    // B did not broadcast back (is_still_usable = false on its side): A saw nothing more.
    n.run_for(10 * S);
    assert_eq!((n.arcs(a).len(), n.arcs(b).len()), (1, 1));
}

/// One-sided arc: B forgets the arc silently (as after a handshake it gave up under load)
/// while A keeps it exported, and A's probes are still answered. B's next `request_arc` (on
/// A's announcement) makes A say again that it exports, and B's side is exported again.
#[test]
fn a_one_sided_arc_is_made_whole_on_the_next_announcement() {
    // Announcements every second: B makes a new (unexported) arc and answers A's probes
    // long before A's liveness (3 s) would give A's arc up — the one-sided state.
    let fast = |id, seed| {
        let mut c = Config::new(id, seed);
        c.timers.announce_ms = 1_000;
        c
    };
    let mut n = Segments::default();
    let a = n.add_system(fast(111, 1));
    let b = n.add_system(fast(222, 2));
    n.plug(b, "eth0", mac(0xbb, 0), ip(2, 2), &[0]);
    n.plug(a, "eth0", mac(0xaa, 0), ip(1, 1), &[0]);
    n.run_for(S);
    assert_eq!(n.systems[b].current_arcs().len(), 1);
    let key = n.systems[b].current_arcs()[0].0.clone();
    let out = n.systems[b].remove_arc(&key, false);
    n.deliver_outputs(b, out);
    assert!(n.systems[b].current_arcs().is_empty());
    n.run_for(10 * S);
    assert_eq!(n.systems[a].current_arcs().len(), 1, "A's arc stayed");
    assert_eq!(
        n.systems[b].current_arcs().len(),
        1,
        "B's side exported and measured again"
    );
}

/// `remove_nic` with the link up tells the peers; with the link down they find out by
/// liveness.
#[test]
fn remove_nic_removes_all_its_arcs() {
    let (mut n, a, b) = pair();
    n.unplug(a, "eth0", true);
    assert!(n.routes[a].is_empty() && n.arcs(a).is_empty());
    n.run_for(20_000);
    assert!(n.arcs(b).is_empty(), "B was told by RemoveArc");

    let (mut n, a, b) = pair();
    n.unplug(a, "eth0", false);
    assert!(n.arcs(a).is_empty());
    n.run_for(S);
    assert_eq!(n.arcs(b).len(), 1, "nothing was sent");
    n.run_for(4 * S);
    assert!(n.arcs(b).is_empty(), "B's probes went unanswered");
}

/// `max_arcs` bounds exported arcs; refused handshakes leave no arc and no route behind
/// (§5.3, §15.3).
#[test]
fn max_arcs_and_refusal_cleanup() {
    let mut n = Segments::default();
    let mut cfg = Config::new(111, 1);
    cfg.max_arcs = 1;
    let a = n.add_system(cfg);
    let b = n.add_system(Config::new(222, 2));
    let c = n.add_system(Config::new(333, 3));
    n.plug(a, "eth0", mac(1, 0), ip(1, 0), &[0]);
    n.plug(b, "eth0", mac(2, 0), ip(2, 0), &[0]);
    n.plug(c, "eth0", mac(3, 0), ip(3, 0), &[0]);
    n.run_for(30 * S + 500_000);
    assert_eq!(n.arcs(a).len(), 1);
    let with_a = [b, c]
        .iter()
        .filter(|&&s| n.arcs(s).iter().any(|(_, id)| *id == 111))
        .count();
    assert_eq!(with_a, 1);
    // The refused side keeps its arc to the other non-limited system only.
    assert_eq!(n.arcs(b).len() + n.arcs(c).len(), 3);
    assert_eq!(n.routes[a].len(), 1, "{:?}", n.routes[a]);
}

fn machine() -> Neighborhood {
    let mut m = Neighborhood::new(Config::new(111, 1));
    let out = m.add_nic("eth0", mac(0xaa, 0), ip(1, 1), 0).unwrap();
    assert!(matches!(
        out.as_slice(),
        [Output::Broadcast {
            msg: Message::HereIAm { node_id: 111, .. },
            ..
        }]
    ));
    m
}

fn from(a: Ipv4Addr) -> SocketAddrV4 {
    SocketAddrV4::new(a, PORT)
}

fn request_from_222() -> Message {
    Message::RequestArc {
        dest_id: 111,
        dest_mac: mac(0xaa, 0),
        dest_addr: ip(1, 1),
        its_id: 222,
        its_mac: mac(0xbb, 0),
        its_addr: ip(2, 2),
    }
}

#[test]
fn failed_call_drops_the_half_made_arc() {
    let mut m = machine();
    let out = m.on_message("eth0", from(ip(2, 2)), 222, &request_from_222(), 10);
    let call = out
        .iter()
        .find_map(|o| match o {
            Output::Unicast {
                msg: Message::CanYouExport { call, i_can: true },
                ..
            } => Some(*call),
            _ => None,
        })
        .expect("can_you_export");
    assert_eq!(m.all_arcs().len(), 1);
    assert!(!m.all_arcs()[0].1, "not exported during the handshake");
    assert!(m.on_call_failed(call.wrapping_add(1)).is_empty());
    assert_eq!(
        m.on_call_failed(call),
        vec![Output::RemoveNeighbourRoute {
            nic: "eth0".into(),
            peer: ip(2, 2),
            src: ip(1, 1)
        }]
    );
    assert!(m.find_arc("eth0", ip(2, 2)).is_none());
}

#[test]
fn unanswered_handshake_is_retried_then_dropped() {
    let mut m = machine();
    m.on_message("eth0", from(ip(2, 2)), 222, &request_from_222(), 0);
    let retries = (1..=30)
        .flat_map(|t| m.on_tick(t * 100_000))
        .filter(|o| {
            matches!(
                o,
                Output::Unicast {
                    msg: Message::CanYouExport { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(retries, 2, "resent every probe_ms until handshake_ms");
    assert!(m.find_arc("eth0", ip(2, 2)).is_none());
}

#[test]
fn foreign_and_inconsistent_messages_are_ignored() {
    let mut m = machine();
    let b = from(ip(2, 2));
    let here = Message::HereIAm {
        node_id: 222,
        mac: mac(0xbb, 0),
        nic_addr: ip(2, 2),
    };
    let cases: Vec<(&str, SocketAddrV4, u32, Message)> = vec![
        ("eth9", b, 222, here.clone()),                   // unmanaged NIC
        ("eth0", b, 111, here.clone()),                   // my own id
        ("eth0", b, 333, here.clone()),                   // header id ≠ announced id
        ("eth0", from(ip(9, 9)), 222, here.clone()),      // source ≠ announced address
        ("eth0", b, 222, Message::Probe { seq: 1 }),      // no arc: not a reflector
        ("eth0", b, 222, Message::ProbeReply { seq: 1 }), // nothing outstanding
        (
            "eth0",
            b,
            222,
            Message::CanYouExport {
                call: 1,
                i_can: true,
            },
        ),
        (
            "eth0",
            b,
            222,
            Message::CanYouExportReply { call: 1, can: true },
        ),
        ("eth0", b, 222, Message::Ack { call: 1 }),
        (
            "eth0",
            b,
            222,
            Message::IdentityAnnounce { identities: vec![] },
        ),
    ];
    for (nic, f, sender, msg) in &cases {
        let out = m.on_message(nic, *f, *sender, msg, 5);
        assert!(out.is_empty(), "{msg:?} from {sender}: {out:?}");
    }
    // A request addressed to someone else.
    let Message::RequestArc { .. } = request_from_222() else {
        unreachable!()
    };
    let mut other = request_from_222();
    if let Message::RequestArc { dest_id, .. } = &mut other {
        *dest_id = 999;
    }
    assert!(m.on_message("eth0", b, 222, &other, 5).is_empty());

    // Now an arc exists; a RemoveArc with a wrong address for the peer leaves it.
    assert!(!m.on_message("eth0", b, 222, &here, 5).is_empty());
    let bad_remove = Message::RemoveArc {
        dest_id: 111,
        dest_mac: mac(0xaa, 0),
        dest_addr: ip(1, 1),
        its_id: 222,
        its_mac: mac(0xbb, 0),
        its_addr: ip(7, 7),
    };
    assert!(m.on_message("eth0", b, 222, &bad_remove, 6).is_empty());
    assert!(m.find_arc("eth0", ip(2, 2)).is_some());
    // R1: the same MAC claimed by another id on another address is ignored.
    let impostor = Message::HereIAm {
        node_id: 333,
        mac: mac(0xbb, 0),
        nic_addr: ip(3, 3),
    };
    assert!(m
        .on_message("eth0", from(ip(3, 3)), 333, &impostor, 7)
        .is_empty());
}

#[test]
fn nic_rules() {
    let mut m = machine();
    assert_eq!(m.add_nic("eth0", mac(0xaa, 0), ip(1, 1), 1), Ok(vec![]));
    assert!(matches!(
        m.add_nic("eth0", mac(0xcc, 0), ip(1, 2), 1),
        Err(NicError::NameTaken { .. })
    ));
    assert!(matches!(
        m.add_nic("eth1", mac(0xaa, 0), ip(1, 2), 1),
        Err(NicError::MacTaken { .. })
    ));
    assert!(m.remove_nic("eth7", true).is_empty());
}

#[test]
fn announcements_are_periodic() {
    let mut m = machine();
    let mut at = vec![];
    for t in 1..=120 {
        let now = t * 100_000;
        if !m.on_tick(now).is_empty() {
            at.push(now);
        }
    }
    assert!(at.len() == 2, "two more in 12 s at 5 s ± 10 %: {at:?}");
    assert!((4_500_000..=5_500_000).contains(&at[0]));
    assert!(m.next_wakeup_us().is_some());
}

fn keyed_pair(ka: Option<&NetworkKey>, kb: Option<&NetworkKey>) -> (Segments, usize, usize) {
    let mut n = Segments::default();
    let a = n.add_keyed_system(Config::new(111, 1), ka);
    let b = n.add_keyed_system(Config::new(222, 2), kb);
    n.plug(b, "eth0", mac(0xbb, 0), ip(2, 2), &[0]);
    n.plug(a, "eth0", mac(0xaa, 0), ip(1, 1), &[0]);
    (n, a, b)
}

/// With a shared key the challenge exchange (by broadcast, before any host route exists)
/// precedes everything; the arc then forms on the next announcements.
#[test]
fn keyed_systems_form_arcs() {
    let k = NetworkKey::from_contents(&[9; 32]).unwrap();
    let (mut n, a, b) = keyed_pair(Some(&k), Some(&k));
    n.run_for(12 * S);
    assert_eq!((n.arcs(a).len(), n.arcs(b).len()), (1, 1));
    for s in [a, b] {
        let d = &n.drops[s];
        assert!(
            d.keys().all(|r| *r == "challenge_pending"),
            "unexpected drops: {d:?}"
        );
    }
    n.run_for(30 * S);
    assert_eq!((added(&n.events[a]), removed(&n.events[a])), (1, 0));
}

/// Different keys, or a key on one side only: nothing is ever exchanged.
#[test]
fn different_keys_never_talk() {
    let k1 = NetworkKey::from_contents(&[1; 32]).unwrap();
    let k2 = NetworkKey::from_contents(&[2; 32]).unwrap();
    for (ka, kb, ra, rb) in [
        (Some(&k1), Some(&k2), "bad_mac", "bad_mac"),
        (Some(&k1), None, "auth_missing", "auth_unexpected"),
    ] {
        let (mut n, a, b) = keyed_pair(ka, kb);
        n.run_for(20 * S);
        assert!(n.events[a].is_empty() && n.events[b].is_empty());
        assert!(
            n.drops[a].get(ra).is_some_and(|c| *c > 0),
            "{:?}",
            n.drops[a]
        );
        assert!(
            n.drops[b].get(rb).is_some_and(|c| *c > 0),
            "{:?}",
            n.drops[b]
        );
    }
}

/// A keyed neighbour restarts with a new id and a new index: the old arc dies by liveness
/// (R1 keeps the new id off the old MAC until then), the challenge admits the new index, and
/// a new arc forms.
#[test]
fn keyed_neighbour_restart() {
    let k = NetworkKey::from_contents(&[9; 32]).unwrap();
    let (mut n, a, b) = keyed_pair(Some(&k), Some(&k));
    n.run_for(12 * S);
    assert_eq!(n.arcs(a), vec![("eth0".to_string(), 222)]);
    n.restart(b, Config::new(333, 33));
    n.run_for(20 * S);
    assert_eq!(n.arcs(a), vec![("eth0".to_string(), 333)]);
    assert_eq!(n.arcs(b), vec![("eth0".to_string(), 111)]);
    assert_eq!(n.routes[a].len(), 1);
}
