//! Packets behave as the installed tables say (issue: kernel dataplane, must-show 2).
//!
//! One L2 segment joins the node under test with namespaces that play its neighbours,
//! using the MACs and link-locals of scenarios.md, so the classifier marks their frames
//! exactly as on the real systems.
use std::time::Duration;

use ntkplane::kernel::Reconciler;
use ntkplane_integration::{
    lab::{recv, require_root, udp_socket, Ns, Segment},
    readback::route_get_in,
    scenarios::{desired, eps2_s2c, lambda1_s2d},
};
use ntkplane_lab::icmp::{ping, Answer};

/// ε₂ under test, β₂ and λ₁ as neighbours.
struct EpsLab {
    _seg: Segment,
    node: Ns,
    beta2: Ns,
    lambda1: Ns,
    r: Reconciler,
}

fn eps_lab() -> EpsLab {
    let seg = Segment::new();
    let node = Ns::new("eps");
    let beta2 = Ns::new("b2");
    let lambda1 = Ns::new("l1");
    seg.plug(&node, "eth1", "00:16:3e:3c:14:33");
    seg.plug(&beta2, "eth1", "00:16:3e:ec:a3:e1");
    seg.plug(&lambda1, "eth1", "00:16:3e:06:3e:90");
    // β₂: its link-local and global, and routes to ε₂ like its own ntkplane would have.
    beta2.sh(
        "ip addr add 169.254.96.141/32 dev eth1 && ip addr add 10.0.0.19/32 dev lo \
         && ip route add 169.254.163.36 dev eth1 src 169.254.96.141 \
         && ip route add 10.0.0.0/24 via 169.254.163.36 dev eth1 src 10.0.0.19",
    );
    // λ₁: owns addresses inside 2·1 (global .21 and anonymizing .85 of δ's block serve as
    // "somewhere behind λ"), routes back to ε₂.
    lambda1.sh(
        "ip addr add 169.254.109.22/32 dev eth1 && ip addr add 10.0.0.21/32 dev lo && ip addr add 10.0.0.85/32 dev lo \
         && ip route add 169.254.163.36 dev eth1 src 169.254.109.22 \
         && ip route add 10.0.0.0/24 via 169.254.163.36 dev eth1",
    );
    let mut r = Reconciler::new(node.netns(), u32::MAX, None).unwrap();
    r.apply(&desired(&eps2_s2c())).unwrap();
    EpsLab {
        _seg: seg,
        node,
        beta2,
        lambda1,
        r,
    }
}

#[test]
fn via_unreachable_blackhole_and_anonymizer() {
    require_root();
    let lab = eps_lab();
    let beta_mac = "00:16:3E:EC:A3:E1".parse().unwrap();

    // `via`: β₂ → 10.0.0.21 (2·1, table 249: via λ₁). The source is untouched.
    let rx = udp_socket(&lab.lambda1, "10.0.0.21:7000");
    let tx = udp_socket(&lab.beta2, "10.0.0.19:0");
    tx.send_to(b"global", "10.0.0.21:7000").unwrap();
    let (from, msg) = recv(&rx).expect("forwarded via λ₁");
    assert_eq!(
        (from.ip().to_string(), msg.as_str()),
        ("10.0.0.19".into(), "global")
    );
    assert!(
        lab.r
            .classifier()
            .counters(beta_mac)
            .unwrap()
            .unwrap()
            .packets
            >= 1,
        "β₂'s frames were marked"
    );

    // Anonymizing destination: the anonymizer rewrites the source to ε₂'s global address.
    let rx = udp_socket(&lab.lambda1, "10.0.0.85:7000");
    tx.send_to(b"anonymous", "10.0.0.85:7000").unwrap();
    let (from, msg) = recv(&rx).expect("forwarded via λ₁");
    assert_eq!(
        (from.ip().to_string(), msg.as_str()),
        ("10.0.0.17".into(), "anonymous")
    );

    // `unreachable` (3·0 in table 249): ICMP destination unreachable back to β₂, from ε₂.
    let src = Some("10.0.0.19".parse().unwrap());
    let a = ping(
        &lab.beta2.name,
        src,
        "10.0.0.1".parse().unwrap(),
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(
        matches!(a, Answer::Unreachable { .. }),
        "expected ICMP unreachable, got: {a}"
    );

    // `blackhole` (10.0.0.40/32 in table 249): dropped without a word.
    let before = lab
        .r
        .classifier()
        .counters(beta_mac)
        .unwrap()
        .unwrap()
        .packets;
    let a = ping(
        &lab.beta2.name,
        src,
        "10.0.0.40".parse().unwrap(),
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(a, Answer::Timeout, "blackholed: no answer at all");
    assert!(
        lab.r
            .classifier()
            .counters(beta_mac)
            .unwrap()
            .unwrap()
            .packets
            > before,
        "the ping reached ε₂"
    );

    // The same blackholed address from an unmarked source is routed by `ntk` (.40/32 via β₃).
    let ntk = route_get_in(
        &lab.node.name,
        "10.0.0.40".parse().unwrap(),
        Some("169.254.109.22".parse().unwrap()),
        Some("eth1"),
        Some(0),
    );
    assert_eq!(
        ntk.gateway,
        Some("169.254.27.218".parse().unwrap()),
        "{ntk:?}"
    );
}

#[test]
fn netmap_of_an_autonomous_subnet_gateway() {
    require_root();
    let seg = Segment::new();
    let node = Ns::new("lam");
    let eps2 = Ns::new("e2");
    let rho = Ns::new("rho");
    seg.plug(&node, "eth1", "00:16:3e:06:3e:90");
    seg.plug(&eps2, "eth1", "00:16:3e:3c:14:33");
    seg.plug(&rho, "eth1", "02:00:5e:00:00:41");
    eps2.sh(
        "ip addr add 169.254.163.36/32 dev eth1 && ip addr add 10.0.0.17/32 dev lo \
         && ip route add 169.254.109.22 dev eth1 src 169.254.163.36 \
         && ip route add 10.0.0.0/24 via 169.254.109.22 dev eth1 src 10.0.0.17",
    );
    // ρ, static (DettagliOperazioni11): only its internal level-1 address.
    rho.sh(
        "ip addr add 169.254.110.188/32 dev eth1 && ip addr add 10.0.0.41/32 dev lo \
         && ip route add 169.254.109.22 dev eth1 src 169.254.110.188 \
         && ip route add 10.0.0.0/25 via 169.254.109.22 dev eth1 src 10.0.0.41",
    );
    let mut r = Reconciler::new(node.netns(), u32::MAX, None).unwrap();
    r.apply(&desired(&lambda1_s2d())).unwrap();
    // The subnet's own routing on λ, not ntkplane's (it must survive re-applies).
    node.sh("ip route add 169.254.110.188 dev eth1 src 169.254.109.22 \
         && ip route add 10.0.0.41/32 via 169.254.110.188 dev eth1 src 10.0.0.40 table 251");
    assert_eq!(r.apply(&desired(&lambda1_s2d())).unwrap().total(), 0);

    // ε₂ → ρ's global alias 10.0.0.23: arrives at 10.0.0.41; the reply comes back from .23.
    let rx = udp_socket(&rho, "10.0.0.41:7000");
    let tx = udp_socket(&eps2, "10.0.0.17:0");
    tx.send_to(b"hello rho", "10.0.0.23:7000").unwrap();
    let (from, msg) = recv(&rx).expect("ρ reached through λ's NETMAP");
    assert_eq!(
        (from.ip().to_string(), msg.as_str()),
        ("10.0.0.17".into(), "hello rho")
    );
    rx.send_to(b"reply", from).unwrap();
    let (from, msg) = recv(&tx).expect("reply mapped back");
    assert_eq!(
        (from.ip().to_string(), msg.as_str()),
        ("10.0.0.23".into(), "reply")
    );

    // A new flow from ρ to a global address leaves with ρ's global alias as source.
    let rx = udp_socket(&eps2, "10.0.0.17:7001");
    let tx = udp_socket(&rho, "10.0.0.41:0");
    tx.send_to(b"from rho", "10.0.0.17:7001").unwrap();
    let (from, _) = recv(&rx).expect("ρ's packet forwarded");
    assert_eq!(from.ip().to_string(), "10.0.0.23");
}
