//! The daemon's model driven by commands equals the pure core's forwarding state for the same
//! network, with the paths from the lab's path solver.
use std::{collections::BTreeMap, net::Ipv4Addr};

use ntkplane::{
    fwd,
    mac::MacAddr,
    plan::KernelState,
    system::{Config, Nic, System},
};
use ntkplane_lab::{
    network::{fixed_tables, InputOptions},
    seed,
};

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

    let net = seed::s0();
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
