use super::*;
use crate::fwd::network::{fixed_tables, InputOptions};

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
}

/// β at S0 built through commands equals the forwarding state the pure core computes for the
/// same network (the state the golden tests check against scenarios.md).
#[test]
fn beta_at_s0_through_commands() {
    let mut s = System::init(config(), "2.1.1.1").unwrap();
    let (alpha, gamma) = (mac("00:16:3E:FD:E2:AA"), mac("00:16:3E:5B:78:D5"));
    assert_eq!(
        s.add_identity_arc(0, "eth1", alpha, ip("169.254.69.30")),
        Ok(0)
    );
    assert_eq!(
        s.add_identity_arc(0, "eth1", gamma, ip("169.254.94.223")),
        Ok(1)
    );
    // γ became a qspn neighbour first (entr02), α later (entr04).
    assert_eq!(s.add_qspn_arc(0, "eth1", gamma), Ok(250));
    assert_eq!(s.add_qspn_arc(0, "eth1", alpha), Ok(249));
    s.set_neighbour(0, 0, "2.0.1.0").unwrap();
    s.set_neighbour(0, 1, "2.1.1.0").unwrap();

    let net = crate::fwd::seed::s0();
    let ids = BTreeMap::from([(gamma, 250), (alpha, 249)]);
    let opts = InputOptions {
        serve_anonymous: true,
        anonymizer: true,
        ..Default::default()
    };
    let input = net.input("beta1", fixed_tables(&ids), &opts).unwrap();
    for (dest, paths) in &input.paths {
        s.set_paths(0, *dest, paths.clone()).unwrap();
    }
    let want = KernelState::from_forwarding(&fwd::compute(&input).unwrap(), u32::MAX);
    let got = s.desired().unwrap();
    assert_eq!(got.keys().collect::<Vec<_>>(), [&None]);
    assert_eq!(got[&None].state, want);
    assert_eq!(got[&None].interfaces, ["eth1"]);
    assert_eq!(got[&None].table_names[&250], "ntk_from_00:16:3E:5B:78:D5");
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
