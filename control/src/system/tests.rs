use super::*;
use crate::system::lifecycle::*;

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}
fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn config() -> Config {
    Config {
        topology: "4.2.2.2".into(),
        base: "10.0.0.0/8".parse().unwrap(),
        subnet_level: 0,
        serve_anonymous: true,
        anonymizer: true,
        mark_mask: u32::MAX,
        nics: vec![Nic {
            name: "eth1".into(),
            mac: mac("00:16:3E:EC:A3:E1"),
            linklocal: ip("169.254.96.141"),
        }],
    }
}

#[test]
fn init_validates_and_names_the_problem() {
    assert!(System::init(config(), "2.1.1.1").is_ok());
    assert_eq!(
        System::init(config(), "2.1.1.2").unwrap_err(),
        SystemError::VirtualFirstAddress("2.1.1.2".into())
    );
    assert!(matches!(
        System::init(config(), "2.1.1"),
        Err(SystemError::Address(_))
    ));
    let mut c = config();
    c.topology = "4.3.2.2".into();
    assert_eq!(
        System::init(c, "2.1.1.1").unwrap_err().to_string(),
        "gsize 3 at level 2 is not a power of two"
    );
    let mut c = config();
    c.subnet_level = 4;
    assert!(matches!(
        System::init(c, "2.1.1.1"),
        Err(SystemError::SubnetLevel {
            level: 4,
            levels: 4
        })
    ));
    let mut c = config();
    c.nics.clear();
    assert_eq!(
        System::init(c, "2.1.1.1").unwrap_err(),
        SystemError::NoInterface
    );
    let mut c = config();
    c.nics.push(c.nics[0].clone());
    assert_eq!(
        System::init(c, "2.1.1.1").unwrap_err(),
        SystemError::DuplicateNic("eth1".into())
    );
    let mut c = config();
    c.nics[0].linklocal = ip("10.1.1.1");
    assert_eq!(
        System::init(c, "2.1.1.1").unwrap_err(),
        SystemError::NotLinkLocal(ip("10.1.1.1"))
    );
    let mut c = config();
    c.nics[0].mac = mac("FF:FF:FF:FF:FF:FF");
    assert!(matches!(
        System::init(c, "2.1.1.1"),
        Err(SystemError::BadMac(_))
    ));
    // Issue 19: a mark mask that cannot hold the table ids is refused at init, not at the
    // first add-qspn-arc.
    let mut c = config();
    c.mark_mask = 0xf;
    assert_eq!(
        System::init(c, "2.1.1.1").unwrap_err(),
        SystemError::MarkMaskTooNarrow(0xf)
    );
    let mut c = config();
    c.mark_mask = 0xff;
    assert!(System::init(c, "2.1.1.1").is_ok());
}

/// Issue 19: a hop outside the topology (level 2^64−1) is refused, not persisted.
#[test]
fn a_path_hop_outside_the_topology_is_refused() {
    let mut s = System::init(config(), "2.1.1.1").unwrap();
    s.add_identity_arc(0, "eth1", mac("00:16:3E:5B:78:D5"), ip("169.254.94.223"))
        .unwrap();
    let before = s.clone();
    let d = HCoord { lvl: 0, pos: 0 };
    for hop in [
        HCoord {
            lvl: usize::MAX,
            pos: 0,
        },
        HCoord { lvl: 1, pos: 4 },
    ] {
        let e = s
            .set_paths(
                0,
                d,
                vec![Path {
                    arc: 0,
                    hops: vec![hop, d],
                    cost: 1,
                }],
            )
            .unwrap_err();
        assert_eq!(e, SystemError::BadHop { dest: d, hop });
    }
    assert_eq!(s, before);
}

#[test]
fn refused_commands_change_nothing() {
    let mut s = System::init(config(), "2.1.1.1").unwrap();
    let gamma = mac("00:16:3E:5B:78:D5");
    s.add_identity_arc(0, "eth1", gamma, ip("169.254.94.223"))
        .unwrap();
    let before = s.clone();
    let checks: Vec<SystemError> = vec![
        s.add_identity_arc(0, "eth1", gamma, ip("169.254.94.223"))
            .unwrap_err(),
        s.add_identity_arc(0, "eth9", gamma, ip("169.254.94.223"))
            .unwrap_err(),
        s.add_identity_arc(7, "eth1", mac("02:00:00:00:00:01"), ip("169.254.1.1"))
            .unwrap_err(),
        s.add_identity_arc(0, "eth1", mac("01:00:5E:00:00:01"), ip("169.254.1.1"))
            .unwrap_err(),
        s.add_qspn_arc(0, "eth1", mac("02:00:00:00:00:09"))
            .unwrap_err(),
        s.set_neighbour(0, 0, "2.1.1.0").unwrap_err(),
        s.set_neighbour(0, 5, "2.1.1.0").unwrap_err(),
        s.set_paths(0, HCoord { lvl: 9, pos: 0 }, vec![])
            .unwrap_err(),
        s.set_paths(
            0,
            HCoord { lvl: 0, pos: 0 },
            vec![Path {
                arc: 3,
                hops: vec![HCoord { lvl: 0, pos: 0 }],
                cost: 1,
            }],
        )
        .unwrap_err(),
        s.set_paths(
            0,
            HCoord { lvl: 0, pos: 0 },
            vec![Path {
                arc: 0,
                hops: vec![HCoord { lvl: 1, pos: 0 }],
                cost: 1,
            }],
        )
        .unwrap_err(),
        s.remove_arc(0, 9).unwrap_err(),
    ];
    assert_eq!(s, before, "a refused command changed the model");
    let text: Vec<String> = checks.iter().map(ToString::to_string).collect();
    assert_eq!(
        text[0],
        "identity 0 already has an arc to 00:16:3E:5B:78:D5 on eth1 (arc 0)"
    );
    assert_eq!(text[1], "no managed interface 'eth9'");
    assert_eq!(text[2], "no identity with index 7");
    assert_eq!(text[5], "arc 0 of identity 0 is not a qspn arc");
    // And the same model, with paths, serialises and comes back identical (the persisted form).
    s.add_qspn_arc(0, "eth1", gamma).unwrap();
    s.set_neighbour(0, 0, "2.1.1.0").unwrap();
    let d = HCoord { lvl: 0, pos: 0 };
    s.set_paths(
        0,
        d,
        vec![Path {
            arc: 0,
            hops: vec![d],
            cost: 10,
        }],
    )
    .unwrap();
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<System>(&json).unwrap(), s);
}

#[test]
fn removing_a_qspn_arc_releases_its_table_and_paths() {
    let mut s = System::init(config(), "2.1.1.1").unwrap();
    let gamma = mac("00:16:3E:5B:78:D5");
    s.add_identity_arc(0, "eth1", gamma, ip("169.254.94.223"))
        .unwrap();
    assert_eq!(s.add_qspn_arc(0, "eth1", gamma), Ok(250));
    assert!(matches!(
        s.add_qspn_arc(0, "eth1", gamma),
        Err(SystemError::AlreadyQspn { .. })
    ));
    s.set_neighbour(0, 0, "2.1.1.0").unwrap();
    let d = HCoord { lvl: 0, pos: 0 };
    s.set_paths(
        0,
        d,
        vec![Path {
            arc: 0,
            hops: vec![d],
            cost: 10,
        }],
    )
    .unwrap();
    let k = &s.desired().unwrap()[&None].state;
    assert!(k.rules.iter().any(|r| r.table == 250));
    assert_eq!(k.marks.get(&gamma), Some(&250));
    s.remove_arc(0, 0).unwrap();
    assert!(s.identity(0).unwrap().paths.is_empty());
    assert_eq!(s.tables.get(gamma), None, "id 250 released");
    let k = &s.desired().unwrap()[&None].state;
    assert!(k.marks.is_empty() && !k.tables().contains(&250) && k.rules.len() == 1);
}

fn prep(kind: OpKind, old: u32, g: usize, h: usize, host: &[u32], p: (u32, u32, u32)) -> Prepare {
    Prepare {
        kind,
        old,
        guest_level: g,
        host_level: h,
        host_addr: host.to_vec(),
        pos1: p.0,
        pos2: p.1,
        conn_pos: p.2,
        external_arcs: vec![],
        prev_op: None,
        pseudo: BTreeMap::from([(
            "eth1".to_string(),
            (mac("00:16:3E:EE:AF:D1"), ip("169.254.27.218")),
        )]),
    }
}

fn eps_alone() -> System {
    let mut c = config();
    c.nics[0].mac = mac("00:16:3E:3C:14:33");
    c.nics[0].linklocal = ip("169.254.163.36");
    System::init(c, "3.1.0.0").unwrap()
}

/// S1 on ε (lifecycle.md §7.1, `entr05`): case 1 with a pending migration.
#[test]
fn enter_case_1_then_phase_2() {
    let mut s = eps_alone();
    let beta = mac("00:16:3E:EC:A3:E1");
    s.add_identity_arc(0, "eth1", beta, ip("169.254.96.141"))
        .unwrap();
    let mut p = prep(OpKind::Enter, 0, 0, 1, &[2, 1, 1], (2, 1, 2));
    p.external_arcs = vec![0];
    p.prev_op = Some(262359);
    p.pseudo.insert(
        "eth1".into(),
        (mac("02:00:00:00:05:01"), ip("169.254.133.31")),
    );
    s.prepare(4958850, p).unwrap();
    assert_eq!(s.phase_1(OpKind::Enter, 0, 4958850, &[], 0), Ok(1));
    // Before E13 both identities exist: the old one in entr01 with its pseudo-interface.
    let d = s.desired().unwrap();
    assert_eq!(
        d.keys().cloned().collect::<Vec<_>>(),
        [None, Some("entr01".into())]
    );
    assert_eq!(d[&Some("entr01".into())].interfaces, ["entr01_eth1"]);
    let old = s.identity(0).unwrap();
    assert_eq!(old.address.to_string(), "3.1.0.2");
    assert_eq!(old.connectivity, Some((1, 4)));
    assert_eq!(s.dismiss_flagged(), Ok(vec![0]));
    let new = s.identity(1).unwrap();
    assert_eq!(new.address.to_string(), "2.1.1.2", "virtual until phase 2");
    assert!(new.is_main() && new.bootstrap_level == Some(0));
    let d = s.desired().unwrap();
    assert_eq!(d.len(), 1);
    let k = &d[&None].state;
    assert_eq!(k.marks, BTreeMap::from([(beta, 250)]));
    assert_eq!(k.rules.len(), 1, "no fwmark rule before β's first ETP");
    assert_eq!(k.routes.keys().filter(|(t, _)| *t == 250).count(), 23);
    assert!(k
        .routes
        .iter()
        .filter(|((t, _), _)| *t == 250 || *t == 251)
        .all(|(_, r)| *r == crate::plan::KRoute::Unreachable));
    // Phase 2: only the new identity's index is waiting; wrong kind/identity/op are refused.
    let before = s.clone();
    assert_eq!(
        s.phase_2(OpKind::Migrate, 0, 4958850),
        Err(SystemError::WrongKind {
            op: 4958850,
            prepared: OpKind::Enter,
            called: OpKind::Migrate
        })
    );
    assert_eq!(
        s.phase_2(OpKind::Enter, 3, 4958850),
        Err(SystemError::WrongIdentity {
            op: 4958850,
            prepared: 0,
            called: 3
        })
    );
    assert_eq!(
        s.phase_2(OpKind::Enter, 0, 1),
        Err(SystemError::UnknownOp(1))
    );
    assert_eq!(
        s.phase_1(OpKind::Enter, 0, 4958850, &[], 0),
        Err(SystemError::PhaseOneDone(4958850))
    );
    assert_eq!(s, before);
    // β's first ETP ends the bootstrap; phase 2 makes the address real: own IPs and SNAT.
    s.set_neighbour(1, 0, "2.1.1.1").unwrap();
    assert_eq!(s.identity(1).unwrap().bootstrap_level, None);
    assert_eq!(s.phase_2(OpKind::Enter, 0, 4958850), Ok(1));
    assert_eq!(s.identity(1).unwrap().address.to_string(), "2.1.1.1");
    assert!(s.ops.is_empty());
    s.set_neighbour(1, 0, "2.0.1.1").unwrap(); // β has migrated meanwhile
    let k = &s.desired().unwrap()[&None].state;
    assert!(k.addresses.contains(&("eth1".into(), ip("10.0.0.23"))));
    assert!(k.rules.iter().any(|r| r.table == 250));
    assert_eq!(
        s.phase_2(OpKind::Enter, 0, 4958850),
        Err(SystemError::UnknownOp(4958850))
    );
}

/// β₁ at S1-B migrating as a single node (§9.1, `migr01`): every qspn arc follows the new
/// identity with the same id and no rule; the old identity keeps them in migr01.
fn beta_s1b() -> System {
    let mut s = System::init(config(), "2.1.1.1").unwrap();
    let (alpha, gamma, eps) = (
        mac("00:16:3E:FD:E2:AA"),
        mac("00:16:3E:5B:78:D5"),
        mac("00:16:3E:3C:14:33"),
    );
    s.add_identity_arc(0, "eth1", gamma, ip("169.254.94.223"))
        .unwrap();
    s.add_identity_arc(0, "eth1", alpha, ip("169.254.69.30"))
        .unwrap();
    s.add_identity_arc(0, "eth1", eps, ip("169.254.163.36"))
        .unwrap();
    assert_eq!(s.add_qspn_arc(0, "eth1", gamma), Ok(250));
    assert_eq!(s.add_qspn_arc(0, "eth1", alpha), Ok(249));
    assert_eq!(s.add_qspn_arc(0, "eth1", eps), Ok(248));
    s.set_neighbour(0, 0, "2.1.1.0").unwrap();
    s.set_neighbour(0, 1, "2.0.1.0").unwrap();
    s.set_neighbour(0, 2, "2.1.1.2").unwrap();
    s
}

#[test]
fn migrate_single_node_then_outer_arcs_and_dismissal() {
    let mut s = beta_s1b();
    let before = s.clone();
    // Bad preparations are refused with the field named, and change nothing.
    let mut bad = prep(OpKind::Migrate, 0, 0, 1, &[2, 0], (2, 1, 3));
    assert_eq!(
        s.prepare(1, bad.clone()),
        Err(SystemError::HostAddress { given: 2, want: 3 })
    );
    bad.host_addr = vec![2, 0, 1];
    bad.conn_pos = 1;
    assert!(matches!(
        s.prepare(1, bad.clone()),
        Err(SystemError::Position { lvl: 0, pos: 1, .. })
    ));
    bad.conn_pos = 3;
    bad.external_arcs = vec![0];
    assert_eq!(
        s.prepare(1, bad.clone()),
        Err(SystemError::ArcListOnMigrate)
    );
    bad.external_arcs.clear();
    bad.pseudo.clear();
    assert_eq!(s.prepare(1, bad), Err(SystemError::NoPseudo("eth1".into())));
    assert_eq!(
        s.phase_1(OpKind::Migrate, 0, 262359, &[], 0),
        Err(SystemError::UnknownOp(262359))
    );
    assert_eq!(s, before);

    s.prepare(
        262359,
        prep(OpKind::Migrate, 0, 0, 1, &[2, 0, 1], (2, 1, 3)),
    )
    .unwrap();
    assert_eq!(
        s.prepare(
            262359,
            prep(OpKind::Migrate, 0, 0, 1, &[2, 0, 1], (2, 1, 3))
        ),
        Err(SystemError::DuplicateOp(262359))
    );
    assert_eq!(s.phase_1(OpKind::Migrate, 0, 262359, &[], 0), Ok(1));
    let (b1, b2) = (s.identity(0).unwrap(), s.identity(1).unwrap());
    assert_eq!(b1.address.to_string(), "2.1.1.3");
    assert_eq!(b1.netns.as_deref(), Some("migr01"));
    assert_eq!(
        b1.connectivity,
        Some((1, 2)),
        "to-level: coordinate of 2·0·1·x from 2·1·1·1"
    );
    assert_eq!(
        b2.address.to_string(),
        "2.0.1.1",
        "prev_op null: phase 2 at once"
    );
    assert!(b2.is_main() && b2.copy_of == Some(0));
    assert!(b2
        .arcs
        .values()
        .all(|a| a.qspn.as_ref().is_some_and(|q| q.neighbour.is_none())));
    let d = s.desired().unwrap();
    let (def, m1) = (&d[&None].state, &d[&Some("migr01".into())].state);
    assert_eq!(
        def.marks.values().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([248, 249, 250])
    );
    assert_eq!(
        def.marks, m1.marks,
        "external arcs: same ids in both namespaces"
    );
    assert_eq!(
        def.rules.len(),
        1,
        "M8: rules withdrawn until β₂'s first ETP per neighbour"
    );
    assert_eq!(m1.rules.len(), 3);
    assert!(d[&Some("migr01".into())].interfaces == ["migr01_eth1"]);

    // Outer arcs: α₁ (2·0·1·0) is at coordinate level 2 from 2·1·1·3.
    assert_eq!(s.remove_outer_arcs(1), Err(SystemError::NotConnectivity(1)));
    assert_eq!(s.remove_outer_arcs(0), Ok(vec![1]));
    assert_eq!(
        s.tables.get(mac("00:16:3E:FD:E2:AA")),
        Some(249),
        "β₂ still uses 249"
    );
    let c = s.check_connectivity(0).unwrap();
    assert!(c.removable, "{c:?}");
    // Dismissal: the main identity cannot be dismissed; the connectivity one goes and its
    // ids stay while β₂ uses them.
    assert_eq!(s.dismiss(1), Err(SystemError::DismissMain(1)));
    assert_eq!(s.dismiss(0), Ok(vec![0]));
    assert_eq!(s.identity(1).unwrap().copy_of, None);
    assert_eq!(s.tables.all().count(), 3);
    assert_eq!(s.desired().unwrap().len(), 1);
}

/// γ when β₁ moved to migr01 (identities.md §7.3): the table is re-keyed with the same id,
/// and a new identity arc towards β₂ takes the previous MAC.
#[test]
fn neighbour_migrated_rekeys_with_the_same_id() {
    let mut c = config();
    c.nics[0].mac = mac("00:16:3E:5B:78:D5");
    let mut s = System::init(c, "2.1.1.0").unwrap();
    let (b, d) = (mac("00:16:3E:EC:A3:E1"), mac("00:16:3E:1A:C4:45"));
    s.add_identity_arc(0, "eth1", b, ip("169.254.96.141"))
        .unwrap();
    s.add_identity_arc(0, "eth1", d, ip("169.254.253.216"))
        .unwrap();
    assert_eq!(s.add_qspn_arc(0, "eth1", b), Ok(250));
    assert_eq!(s.add_qspn_arc(0, "eth1", d), Ok(249));
    s.set_neighbour(0, 0, "2.1.1.1").unwrap();
    let moved = mac("00:16:3E:EE:AF:D1");
    assert!(matches!(
        s.neighbour_migrated(0, 0, d, ip("169.254.1.1")),
        Err(SystemError::DuplicateArc { .. })
    ));
    assert_eq!(
        s.neighbour_migrated(0, 0, moved, ip("169.254.27.218")),
        Ok(2)
    );
    assert_eq!(s.tables.get(moved), Some(250));
    assert_eq!(s.tables.get(b), None);
    let a = &s.identity(0).unwrap().arcs;
    assert_eq!(
        (a[&0].peer_mac, a[&2].peer_mac, a[&2].qspn.is_none()),
        (moved, b, true)
    );
    assert_eq!(s.add_qspn_arc(0, "eth1", b), Ok(248));
    let k = &s.desired().unwrap()[&None].state;
    assert_eq!(k.marks, BTreeMap::from([(moved, 250), (d, 249), (b, 248)]));
    assert!(
        k.rules.iter().any(|r| r.table == 250),
        "neighbour still known: rule kept"
    );
}

/// An internal arc (both ends move in the same operation, §7.2): the new identity keeps the
/// table and knows the peer's new address; the old identity gets a new id for the peer's new
/// MAC; the persisted form round-trips with a pending operation.
#[test]
fn internal_arc_in_a_gnode_entry() {
    let mut c = config();
    c.nics[0].mac = mac("00:16:3E:1A:C4:45");
    let mut s = System::init(c, "3.1.0.1").unwrap();
    let (mu, gamma) = (mac("00:16:3E:2D:8D:DE"), mac("00:16:3E:5B:78:D5"));
    s.add_identity_arc(0, "eth1", mu, ip("169.254.119.176"))
        .unwrap();
    s.add_identity_arc(0, "eth1", gamma, ip("169.254.94.223"))
        .unwrap();
    assert_eq!(s.add_qspn_arc(0, "eth1", mu), Ok(250));
    s.set_neighbour(0, 0, "3.1.0.0").unwrap();
    let mut p = prep(OpKind::Enter, 0, 1, 2, &[2, 1], (2, 0, 2));
    p.external_arcs = vec![1];
    p.prev_op = Some(7);
    s.prepare(8191409, p).unwrap();
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<System>(&json).unwrap(), s);
    let moved = PeerMoved {
        arc: 0,
        mac: mac("00:16:3E:DF:23:F5"),
        linklocal: ip("169.254.242.91"),
    };
    let ext = PeerMoved { arc: 1, ..moved };
    assert_eq!(
        s.phase_1(OpKind::Enter, 0, 8191409, &[ext], 0),
        Err(SystemError::InternalAndExternal(1))
    );
    assert_eq!(s.phase_1(OpKind::Enter, 0, 8191409, &[moved], 0), Ok(1));
    let (old, new) = (s.identity(0).unwrap(), s.identity(1).unwrap());
    assert_eq!(old.address.to_string(), "3.1.2.1");
    assert_eq!(new.address.to_string(), "2.1.2.1");
    assert_eq!(
        old.arcs[&0].qspn.as_ref().unwrap().table,
        249,
        "new id for μ's new MAC"
    );
    assert_eq!(new.arcs[&0].qspn.as_ref().unwrap().table, 250);
    assert_eq!(
        new.arcs[&0]
            .qspn
            .as_ref()
            .unwrap()
            .neighbour
            .as_ref()
            .unwrap()
            .to_string(),
        "2.1.2.0"
    );
    assert_eq!(new.arcs[&1].qspn.as_ref().unwrap().table, 248);
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<System>(&json).unwrap(), s);
    s.dismiss_flagged().unwrap();
    assert_eq!(
        s.tables.get(mac("00:16:3E:DF:23:F5")),
        None,
        "released with the old identity"
    );
    // Phase 2: the whole g-node takes position 0 at level 1, μ with δ.
    assert_eq!(s.phase_2(OpKind::Enter, 0, 8191409), Ok(1));
    let new = s.identity(1).unwrap();
    assert_eq!(new.address.to_string(), "2.1.0.1");
    assert_eq!(
        new.arcs[&0]
            .qspn
            .as_ref()
            .unwrap()
            .neighbour
            .as_ref()
            .unwrap()
            .to_string(),
        "2.1.0.0",
        "the internal neighbour moved with the identity"
    );
}

// ---- Bootstrap (qspn.md §13.2) of an identity whose only neighbour moved with it.

const A_MAC: &str = "00:16:3E:1A:C4:45";
const A_LL: &str = "169.254.253.216";
const B_MAC: &str = "00:16:3E:2D:8D:DE";
const B_LL: &str = "169.254.119.176";
/// When phase 1 runs, in ms on the test's clock.
const T0: u64 = 1_000_000;

fn hc(lvl: usize, pos: u32) -> HCoord {
    HCoord { lvl, pos }
}

/// A path through B (arc 0): B's coordinate first, then the given hops.
fn via_b(dest: HCoord, hops: &[HCoord], cost: u64) -> (HCoord, Vec<Path>) {
    let mut all = vec![hc(0, 0)];
    all.extend_from_slice(hops);
    if dest != hc(0, 0) {
        assert_eq!(all.last(), Some(&dest));
    }
    (
        dest,
        vec![Path {
            arc: 0,
            hops: all,
            cost,
        }],
    )
}

/// A (`3·1·0·1`) and its only neighbour B (`3·1·0·0`) form the level-1 g-node `3·1·0·`; it
/// enters another network as a whole (g = 1) into the host g-node `2·1·` (h = 2), at once
/// real at position 0 (no pending migration): A₁ = `2·1·0·1` (index 1), B₁ = `2·1·0·0`.
/// A₁'s only arc is the internal one towards B; the old identity is dismissed (E13).
fn pair_entered() -> System {
    let mut c = config();
    c.nics[0].mac = mac(A_MAC);
    c.nics[0].linklocal = ip(A_LL);
    let mut s = System::init(c, "3.1.0.1").unwrap();
    s.add_identity_arc(0, "eth1", mac(B_MAC), ip(B_LL)).unwrap();
    assert_eq!(s.add_qspn_arc(0, "eth1", mac(B_MAC)), Ok(250));
    s.set_neighbour(0, 0, "3.1.0.0").unwrap();
    let (d, p) = via_b(hc(0, 0), &[], 10);
    s.set_paths(0, d, p).unwrap();
    s.prepare(77, prep(OpKind::Enter, 0, 1, 2, &[2, 1], (2, 0, 2)))
        .unwrap();
    let moved = PeerMoved {
        arc: 0,
        mac: mac("02:00:00:00:0B:01"),
        linklocal: ip("169.254.11.1"),
    };
    assert_eq!(s.phase_1(OpKind::Enter, 0, 77, &[moved], T0), Ok(1));
    assert_eq!(s.dismiss_flagged(), Ok(vec![0]));
    let a1 = s.identity(1).unwrap();
    assert_eq!(a1.address.to_string(), "2.1.0.1");
    assert_eq!(
        a1.arcs[&0].qspn.as_ref().unwrap().neighbour,
        Some(NtkAddress::parse("2.1.0.0", &s.topology()).unwrap()),
        "B₁ took the real position at level h−1 with A₁ (2·1·2·0 → 2·1·0·0)"
    );
    assert_eq!(a1.bootstrap_level, Some(1));
    assert_eq!(
        a1.bootstrap,
        Some(Bootstrap {
            host_level: 2,
            since_ms: T0
        })
    );
    s
}

/// What forwarding-state.md computes for A₁ knowing `paths` and out of bootstrap, from an
/// input written out here (not taken from the model).
fn a1_expected(paths: &[(HCoord, Vec<Path>)]) -> KernelState {
    let t = Topology::parse_with_base("4.2.2.2", "10.0.0.0/8".parse().unwrap()).unwrap();
    let input = IdentityInput {
        topology: &t,
        subnet_level: 0,
        address: NtkAddress::parse("2.1.0.1", &t).unwrap(),
        main: true,
        serve_anonymous: true,
        anonymizer: true,
        bootstrap_level: None,
        interfaces: vec![Interface {
            name: "eth1".into(),
            linklocal: ip(A_LL),
        }],
        arcs: vec![Arc {
            id: 0,
            dev: "eth1".into(),
            peer_mac: mac(B_MAC),
            peer_linklocal: ip(B_LL),
            qspn: Some(QspnArc {
                table: 250,
                neighbour: Some(hc(0, 0)),
            }),
        }],
        paths: paths.iter().cloned().collect(),
    };
    KernelState::from_forwarding(&fwd::compute(&input).unwrap(), u32::MAX)
}

fn b1() -> Vec<(u32, String)> {
    vec![(0, "2.1.0.0".to_string())]
}

fn route(k: &KernelState, table: u32, prefix: &str) -> crate::plan::KRoute {
    k.routes[&(table, prefix.parse().unwrap())].clone()
}

fn via_b_route(src: &str) -> crate::plan::KRoute {
    crate::plan::KRoute::Via {
        gw: ip(B_LL),
        dev: "eth1".into(),
        src: Some(ip(src)),
    }
}

/// Test 1: B's ETP carries a path to a level h−1 = 1 destination (`2·1·1·`, the host
/// g-node's other half): A₁ processes it and leaves the bootstrap, and every destination
/// with a path is routed as forwarding-state.md computes it.
#[test]
fn bootstrap_ends_on_a_path_to_level_h_minus_1_from_inside() {
    let mut s = pair_entered();
    let st = s
        .bootstrap_status(1, T0 + 1_500, BOOTSTRAP_TIMEOUT_MS)
        .unwrap();
    assert_eq!(
        (
            st.guest_level,
            st.host_level,
            st.elapsed_ms,
            st.remaining_ms
        ),
        (1, 2, 1_500, 8_500)
    );
    assert!(
        st.waiting_for.contains("level 1") && st.waiting_for.contains("level-1 destination"),
        "{}",
        st.waiting_for
    );
    // An ETP from B (inside the moving g-node) with paths of level ≥ g but none of level
    // h−1 = 1: ignored, still in bootstrap, level ≥ 1 unreachable.
    let own = via_b(hc(0, 0), &[], 10);
    let far = via_b(hc(2, 0), &[hc(2, 0)], 30);
    s.etp(1, &b1(), &[own.clone(), far.clone()]).unwrap();
    assert_eq!(s.identity(1).unwrap().bootstrap_level, Some(1));
    let k = &s.desired().unwrap()[&None].state;
    assert_eq!(route(k, 251, "10.0.0.20/32"), via_b_route("10.0.0.21"));
    assert_eq!(
        route(k, 251, "10.0.0.16/30"),
        crate::plan::KRoute::Unreachable
    );
    // The full ETP: (1,1) = 2·1·1· is of level h−1: bootstrap over.
    let near = via_b(hc(1, 1), &[hc(1, 1)], 20);
    let far = via_b(hc(2, 0), &[hc(1, 1), hc(2, 0)], 30);
    let top = via_b(hc(3, 3), &[hc(1, 1), hc(3, 3)], 40);
    let all = [own, near, far, top];
    s.etp(1, &b1(), &all).unwrap();
    let id = s.identity(1).unwrap();
    assert_eq!((id.bootstrap_level, id.bootstrap), (None, None));
    assert_eq!(
        s.bootstrap_status(1, T0 + 2_000, BOOTSTRAP_TIMEOUT_MS),
        None
    );
    assert_eq!(s.next_bootstrap_deadline(BOOTSTRAP_TIMEOUT_MS), None);
    let got = s.desired().unwrap();
    assert_eq!(got.len(), 1);
    let k = &got[&None].state;
    assert_eq!(*k, a1_expected(&all));
    // The same, written out: ntk routes every destination with a path via B (src: own
    // global, anonymizing → own global too, internal k → own internal k) …
    for (prefix, src) in [
        ("10.0.0.20/32", "10.0.0.21"), // (0,0) B₁ global
        ("10.0.0.22/31", "10.0.0.21"), // (1,1) 2·1·1· global
        ("10.0.0.86/31", "10.0.0.21"), // (1,1) anonymizing
        ("10.0.0.16/30", "10.0.0.21"), // (2,0) 2·0·· global
        ("10.0.0.24/29", "10.0.0.21"), // (3,3) 3··· global
    ] {
        assert_eq!(route(k, 251, prefix), via_b_route(src), "ntk {prefix}");
    }
    // … the other destinations are unreachable (no path) …
    for prefix in ["10.0.0.0/29", "10.0.0.8/29", "10.0.0.64/29"] {
        assert_eq!(
            route(k, 251, prefix),
            crate::plan::KRoute::Unreachable,
            "ntk {prefix}"
        );
    }
    // … and B's own table (fwmark rule on) routes nothing back through B: every path
    // contains B's coordinate (0,0); its level-0 internal prefix is a blackhole.
    assert!(k.rules.iter().any(|r| r.table == 250));
    let t250: Vec<_> = k.routes.iter().filter(|((t, _), _)| *t == 250).collect();
    assert_eq!(t250.len(), 18);
    assert!(t250.iter().all(|(_, r)| matches!(
        r,
        crate::plan::KRoute::Unreachable | crate::plan::KRoute::Blackhole
    )));
    assert_eq!(
        route(k, 250, "10.0.0.22/31"),
        crate::plan::KRoute::Unreachable
    );
}

/// Test 2: B knows nothing from outside: A₁ leaves the bootstrap only when the give-up wait
/// (10 s) is over, and its tables are those of an isolated network (its g-node only).
#[test]
fn bootstrap_ends_after_the_timeout_without_news_from_outside() {
    let mut s = pair_entered();
    let own = via_b(hc(0, 0), &[], 10);
    s.etp(1, &b1(), std::slice::from_ref(&own)).unwrap();
    assert_eq!(s.identity(1).unwrap().bootstrap_level, Some(1));
    assert_eq!(
        s.next_bootstrap_deadline(BOOTSTRAP_TIMEOUT_MS),
        Some(T0 + 10_000)
    );
    let before = s.clone();
    assert_eq!(
        s.expire_bootstraps(T0 + 9_999, BOOTSTRAP_TIMEOUT_MS),
        Vec::<u32>::new()
    );
    assert_eq!(s, before, "nothing changes before the deadline");
    assert_eq!(
        s.expire_bootstraps(T0 + 10_001, BOOTSTRAP_TIMEOUT_MS),
        vec![1]
    );
    let id = s.identity(1).unwrap();
    assert_eq!((id.bootstrap_level, id.bootstrap), (None, None));
    assert_eq!(
        s.expire_bootstraps(T0 + 20_000, BOOTSTRAP_TIMEOUT_MS),
        Vec::<u32>::new()
    );
    let k = &s.desired().unwrap()[&None].state;
    assert_eq!(*k, a1_expected(std::slice::from_ref(&own)));
    assert_eq!(route(k, 251, "10.0.0.20/32"), via_b_route("10.0.0.21"));
    let routed = k
        .routes
        .iter()
        .filter(|((t, _), r)| *t == 251 && matches!(r, crate::plan::KRoute::Via { .. }))
        .count();
    assert_eq!(
        routed, 5,
        "only B₁'s prefixes (global, anonymizing, internal 1, 2, 3)"
    );
    assert_eq!(
        route(k, 251, "10.0.0.22/31"),
        crate::plan::KRoute::Unreachable
    );
    // Out of bootstrap, any later path counts at once (an outside arc appeared).
    let far = via_b(hc(2, 0), &[hc(1, 1), hc(2, 0)], 30);
    s.etp(1, &b1(), &[own.clone(), far.clone()]).unwrap();
    let k = &s.desired().unwrap()[&None].state;
    assert_eq!(*k, a1_expected(&[own, far]));
    assert_eq!(route(k, 251, "10.0.0.16/30"), via_b_route("10.0.0.21"));
}

/// §13.2's neighbour rule: a neighbour outside the host g-node (coordinate level ≥ h) does
/// not end the bootstrap, one in the host g-node outside the moving one (g ≤ level < h) does.
#[test]
fn bootstrap_ends_on_a_neighbour_in_the_host_gnode_only() {
    let mut s = pair_entered();
    let (c_far, c_near) = (mac("02:00:00:00:0C:01"), mac("02:00:00:00:0C:02"));
    for (m, ll) in [(c_far, "169.254.12.1"), (c_near, "169.254.12.2")] {
        s.add_identity_arc(1, "eth1", m, ip(ll)).unwrap();
        s.add_qspn_arc(1, "eth1", m).unwrap();
    }
    s.set_neighbour(1, 1, "2.0.1.0").unwrap(); // coordinate (2,0): outside the host g-node
    assert_eq!(s.identity(1).unwrap().bootstrap_level, Some(1));
    s.set_neighbour(1, 2, "2.1.1.0").unwrap(); // coordinate (1,1)
    assert_eq!(s.identity(1).unwrap().bootstrap_level, None);
}

/// The bootstrap's start is persisted; a state written before it was recorded, or a start
/// in the future (clock set back), restarts the wait at load.
#[test]
fn bootstrap_start_survives_persistence_and_resumes_sensibly() {
    let mut s = pair_entered();
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("\"since_ms\":1000000"), "{json}");
    assert_eq!(serde_json::from_str::<System>(&json).unwrap(), s);
    assert!(!s.resume_bootstraps(T0 + 5_000), "a recorded start is kept");
    // Written before this field existed: no `bootstrap` key.
    let old = json.replace("\"bootstrap\":{\"host_level\":2,\"since_ms\":1000000},", "");
    assert_ne!(old, json);
    let mut o: System = serde_json::from_str(&old).unwrap();
    assert_eq!(o.identity(1).unwrap().bootstrap, None);
    assert!(o.resume_bootstraps(T0 + 5_000));
    assert_eq!(
        o.identity(1).unwrap().bootstrap,
        Some(Bootstrap {
            host_level: 4,
            since_ms: T0 + 5_000
        })
    );
    // A start in the future: moved to now.
    assert!(s.resume_bootstraps(T0 - 1));
    assert_eq!(s.identity(1).unwrap().bootstrap.unwrap().since_ms, T0 - 1);
}
