//! Netsukuku between real hosts (`run --paths protocol`): daemons that find each other on
//! veth links, measure their arcs and run QSPN, with no feed command at all. Real
//! namespaces, real datagrams, real pings; cleaned up on drop.
//!
//! The ring A–B–C–D–A, topology 2·2 (A 0.0, B 0.1, C 1.0, D 1.1): A knows B as a level-0
//! destination and {C, D} as the level-1 g-node (1,1).
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use ntkplane::{
    addr::{report::AddrReport, NtkAddress, Topology},
    fwd::tables::NTK_TABLE,
};
use ntkplane_integration::{
    daemon::Instance,
    lab::{must, require_root, Ns},
    metrics::scrape,
};
use ntkplane_lab::icmp::{Answer, Pinger};

const TOPOLOGY: &str = "2.2";
/// `/metrics` inside a test namespace.
const METRICS: &str = "127.0.0.1:9618";

/// Fast timers, so that a test takes seconds (defaults: docs/PROTOCOL.md).
const FAST: &[&str] = &[
    "--paths",
    "protocol",
    "--qspn-arcs",
    "auto",
    "--announce-ms",
    "300",
    "--probe-ms",
    "200",
    "--dead-after-ms",
    "1000",
];

fn global(address: &str) -> Ipv4Addr {
    let t = Topology::parse_with_base(TOPOLOGY, "10.0.0.0/8".parse().unwrap()).unwrap();
    let n = NtkAddress::parse(address, &t).unwrap();
    AddrReport::new(&t, &n, 0, false).unwrap().global.unwrap()
}

struct Node {
    ns: Ns,
    daemon: Instance,
    address: &'static str,
}

/// A veth pair `a:ia — b:ib`, both ends up, no address (the daemons give the link-locals).
fn link(a: &Node, ia: &str, b: &Node, ib: &str) {
    must(std::process::Command::new("ip").args([
        "link", "add", ia, "netns", &a.ns.name, "type", "veth", "peer", "name", ib, "netns",
        &b.ns.name,
    ]));
    a.ns.sh(&format!("ip link set {ia} up"));
    b.ns.sh(&format!("ip link set {ib} up"));
}

fn node(tag: &str, address: &'static str) -> Node {
    let ns = Ns::new(tag);
    let daemon = Instance::new(&ns);
    Node {
        ns,
        daemon,
        address,
    }
}

fn start(n: &mut Node, nics: &[&str], extra: &[&str]) {
    let mut opts = vec!["--topology", TOPOLOGY, "--address", n.address];
    for nic in nics {
        opts.push("--interface");
        opts.push(nic);
    }
    opts.extend_from_slice(FAST);
    opts.extend_from_slice(extra);
    n.daemon.start_with(&opts);
}

/// Pings `to` from `from` (sourced from `from`'s global address) until a reply comes or
/// `within` passes; returns when the first reply came.
fn reaches(from: &Node, to: &Node, within: Duration) -> Option<Duration> {
    let mut p = Pinger::open(&from.ns.name, Some(global(from.address))).unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if let Ok(Answer::Reply { from: f }) =
            p.echo(global(to.address), Duration::from_millis(200))
        {
            assert_eq!(f, global(to.address));
            return Some(t0.elapsed());
        }
    }
    None
}

fn ring(tag: &str) -> [Node; 4] {
    let mut n = [
        node(&format!("{tag}a"), "0.0"),
        node(&format!("{tag}b"), "0.1"),
        node(&format!("{tag}c"), "1.0"),
        node(&format!("{tag}d"), "1.1"),
    ];
    for i in 0..4 {
        let j = (i + 1) % 4;
        link(&n[i], "eth0", &n[j], "eth1");
    }
    for x in n.iter_mut() {
        start(x, &["eth0", "eth1"], &["--metrics", METRICS]);
    }
    n
}

#[test]
fn a_ring_converges_without_a_feed_and_routes_around_a_cut_link() {
    require_root();
    let n = ring("ntktpr");
    // Every node reaches every other, through the tables QSPN's paths made.
    for a in &n {
        for b in &n {
            if a.address != b.address {
                let t = reaches(a, b, Duration::from_secs(20));
                assert!(
                    t.is_some(),
                    "{} does not reach {} after 20 s; A's status: {}",
                    a.address,
                    b.address,
                    n[0].daemon.ok(&["status"])
                );
            }
        }
    }
    // A's /metrics: its two arcs with their measured cost, datagrams both ways.
    let m = scrape(&n[0].ns, METRICS);
    let costs: Vec<_> = m
        .iter()
        .filter(|(k, _)| k.starts_with("ntkplane_arc_cost_microseconds{"))
        .collect();
    assert_eq!(costs.len(), 2, "A's arcs in /metrics: {m:?}");
    assert!(costs.iter().all(|(_, v)| **v > 0.0), "{costs:?}");
    for kind in ["rx", "tx"] {
        let k = format!("ntkplane_protocol_datagrams_total{{kind=\"{kind}\"}}");
        assert!(m.get(&k).copied().unwrap_or(0.0) > 0.0, "{k}: {m:?}");
    }
    // A's route to g-node (1,1) (C and D: 10.0.0.2/31) goes through an arc.
    let routes = n[0].ns.sh(&format!("ip route show table {NTK_TABLE}"));
    assert!(
        routes.lines().any(|l| l.starts_with("10.0.0.2/31 via ")),
        "A's ntk table: {routes}"
    );
    // Cut B–C, a link between the two level-1 g-nodes (B's eth0 down: C's end loses its
    // carrier too). Cutting A–B instead would split g-node 0 (A and B reach each other only
    // through it): QSPN then reports a split, it does not route around it.
    n[1].ns.sh("ip link set eth0 down");
    // The carrier loss removes the arc from the model (and its table)...
    let t0 = Instant::now();
    loop {
        let arcs = n[1].daemon.ok(&["show-arcs", "0"]);
        if !arcs.contains("eth0") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the arc on the cut link is still in the model: {arcs}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("arc removed after {:?}", t0.elapsed());
    // ... and C's g-node (1,1)... from B, g-node (1,1) is C and D: routed through A now.
    loop {
        let routes = n[1].ns.sh(&format!("ip route show table {NTK_TABLE}"));
        if routes
            .lines()
            .any(|l| l.starts_with("10.0.0.2/31 via ") && l.contains(" dev eth1 "))
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "B's route to g-node (1,1) does not go through A (eth1): {routes}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("rerouted after {:?}", t0.elapsed());
    for (a, b) in [(1, 2), (2, 1), (1, 3), (0, 2)] {
        assert!(
            reaches(&n[a], &n[b], Duration::from_secs(10)).is_some(),
            "{} does not reach {} around the cut link; tables:\n{}",
            n[a].address,
            n[b].address,
            n[a].ns.sh("ip route show table all | grep -v local")
        );
    }
}

/// A key file of 32 random bytes, written as 64 hex digits.
fn key_file(name: &str, byte: u8) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(name);
    std::fs::write(&p, format!("{}\n", format!("{byte:02x}").repeat(32))).unwrap();
    p
}

#[test]
fn systems_with_different_network_keys_exchange_no_route() {
    require_root();
    let k1 = key_file(&format!("ntktpk1-{}", std::process::id()), 0x11);
    let k2 = key_file(&format!("ntktpk2-{}", std::process::id()), 0x22);
    let mut a = node("ntktpka", "0.0");
    let mut b = node("ntktpkb", "0.1");
    let mut c = node("ntktpkc", "1.0");
    link(&a, "eth0", &b, "eth0");
    link(&b, "eth1", &c, "eth0");
    // A and B share key 1; C has key 2.
    start(&mut a, &["eth0"], &["--network-key", k1.to_str().unwrap()]);
    start(
        &mut b,
        &["eth0", "eth1"],
        &["--network-key", k1.to_str().unwrap()],
    );
    start(
        &mut c,
        &["eth0"],
        &["--network-key", k2.to_str().unwrap(), "--metrics", METRICS],
    );
    assert!(
        reaches(&a, &b, Duration::from_secs(20)).is_some(),
        "same key: A and B converge"
    );
    // B and C: 5 s of announcements and probes, and nothing gets through.
    std::thread::sleep(Duration::from_secs(5));
    assert!(reaches(&b, &c, Duration::from_secs(1)).is_none());
    let arcs_b = b.daemon.ok(&["show-arcs", "0"]);
    assert!(!arcs_b.contains("eth1"), "no arc between B and C: {arcs_b}");
    let status = c.daemon.json(&["status"]);
    let dropped = status["protocol"]["dropped_bad_mac"].as_u64().unwrap_or(0);
    assert!(
        dropped > 0,
        "C counted B's datagrams as failing the HMAC: {status}"
    );
    let tables = c.ns.sh(&format!("ip route show table {NTK_TABLE}"));
    assert!(
        !tables.contains(" via "),
        "C learnt no route from B: {tables}"
    );
    let _ = std::fs::remove_file(k1);
    let _ = std::fs::remove_file(k2);
}

/// A NIC's MAC in a test namespace.
fn mac_of(n: &Node, nic: &str) -> String {
    n.ns.sh(&format!("cat /sys/class/net/{nic}/address"))
        .trim()
        .to_string()
}

/// `--real-arcs declared` (qspnclient's `add_real_arc`, what the lab runs in protocol mode):
/// A discovers B and C, but only the arc a command declared carries an identity arc and QSPN;
/// a dead declared arc keeps its declaration and its qspn arc comes back with the neighbour.
#[test]
fn declared_real_arcs_use_only_the_declared_neighbours() {
    require_root();
    let mut a = node("ntktpda", "0.0");
    let mut b = node("ntktpdb", "0.1");
    let mut c = node("ntktpdc", "1.0");
    link(&a, "eth0", &b, "eth0");
    link(&a, "eth1", &c, "eth0");
    let declared = [
        "--paths",
        "protocol",
        "--real-arcs",
        "declared",
        "--announce-ms",
        "300",
        "--probe-ms",
        "200",
        "--dead-after-ms",
        "1000",
        "--topology",
        TOPOLOGY,
    ];
    let run = |n: &mut Node, nics: &[&str]| {
        let mut opts = declared.to_vec();
        opts.extend(["--address", n.address]);
        for nic in nics {
            opts.extend(["--interface", nic]);
        }
        n.daemon.start_with(&opts);
    };
    run(&mut a, &["eth0=169.254.1.1", "eth1=169.254.1.2"]);
    run(&mut b, &["eth0=169.254.2.1"]);
    run(&mut c, &["eth0=169.254.3.1"]);
    // Discovery runs (announcements, probes) but declares nothing.
    std::thread::sleep(Duration::from_secs(2));
    let arcs = a.daemon.ok(&["show-arcs", "0"]);
    assert!(
        !arcs.contains("eth0") && !arcs.contains("eth1"),
        "no arc declared, none in the model: {arcs}"
    );
    let status = a.daemon.json(&["status"]);
    assert!(
        status["protocol"]["rx"].as_u64().unwrap_or(0) > 0,
        "A heard its neighbours: {status}"
    );
    // A and B declare their arc (the lab's `add-identity-arc` + `add-qspn-arc` steps).
    let (mac_a, mac_b) = (mac_of(&a, "eth0"), mac_of(&b, "eth0"));
    a.daemon
        .ok(&["add-identity-arc", "0", "eth0", &mac_b, "169.254.2.1"]);
    a.daemon.ok(&["add-qspn-arc", "0", "eth0", &mac_b]);
    b.daemon
        .ok(&["add-identity-arc", "0", "eth0", &mac_a, "169.254.1.1"]);
    b.daemon.ok(&["add-qspn-arc", "0", "eth0", &mac_a]);
    assert!(
        reaches(&a, &b, Duration::from_secs(20)).is_some(),
        "A reaches B over the declared arc; A: {}",
        a.daemon.ok(&["status"])
    );
    let arcs = a.daemon.ok(&["show-arcs", "0"]);
    assert!(
        arcs.contains("eth0") && !arcs.contains("eth1"),
        "only the declared arc: {arcs}"
    );
    assert!(
        reaches(&a, &c, Duration::from_secs(2)).is_none(),
        "C, discovered but not declared, is no arc of A"
    );
    // B's link goes down long enough for the arc to die; the declaration stays.
    b.ns.sh("ip link set eth0 down");
    std::thread::sleep(Duration::from_secs(2));
    let arcs = a.daemon.ok(&["show-arcs", "0"]);
    assert!(arcs.contains("eth0"), "the declaration stays: {arcs}");
    b.ns.sh("ip link set eth0 up");
    assert!(
        reaches(&a, &b, Duration::from_secs(20)).is_some(),
        "the qspn arc comes back with B; A: {}",
        a.daemon.ok(&["status"])
    );
}

/// Waits until `n`'s `show-arcs IDX` lists an arc to `mac` whose QSPN neighbour is `address`
/// (the peer identity's ETP reached this identity over that identity arc).
fn wait_neighbour(n: &Node, idx: &str, mac: &str, address: &str, within: Duration) {
    let want = format!("\"peer_mac\":\"{mac}\"");
    let known = format!("\"neighbour\":\"{address}\"");
    let t0 = Instant::now();
    loop {
        let arcs = n.daemon.ok(&["show-arcs", idx]);
        if arcs
            .lines()
            .any(|l| l.contains(&want) && l.contains(&known))
        {
            return;
        }
        assert!(
            t0.elapsed() < within,
            "{}: identity {idx} has no arc to {mac} with neighbour {address}: {arcs}\nstatus: {}",
            n.address,
            n.daemon.ok(&["status"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Identity arcs to a peer's connectivity identity (S1's migration of β, two real daemons):
/// β migrates, its old identity β₁ becomes a connectivity identity in `migr01` on a macvlan
/// with its own MAC and link-local, and a new identity β₂ takes the NIC. α declares what the
/// reference's Identities module told it (`neighbour-migrated`: its arc now leads to β₁'s
/// pseudo-interface; a new arc to β₂) and each of α's two identity arcs gets the QSPN of
/// its own peer identity: β₁'s from the namespace's instance, β₂'s from the new instance's
/// bootstrap — all carried on the real NICs, told apart by the identities' NodeIDs.
#[test]
fn identity_arcs_reach_a_peers_connectivity_identity() {
    require_root();
    const A: &str = "00:16:3E:FD:E2:AA";
    const B: &str = "00:16:3E:EC:A3:E1";
    const B1: &str = "00:16:3E:EE:AF:D1";
    let mut a = node("ntktpia", "2.0.1.0");
    let mut b = node("ntktpib", "2.1.1.1");
    link(&a, "eth1", &b, "eth1");
    for (n, mac) in [(&a, A), (&b, B)] {
        n.ns.sh(&format!(
            "ip link set eth1 down && ip link set eth1 address {mac} && ip link set eth1 up"
        ));
    }
    let run = |n: &mut Node, ll: &str| {
        let iface = format!("eth1={ll}");
        n.daemon.start_with(&[
            "--paths",
            "protocol",
            "--real-arcs",
            "declared",
            "--announce-ms",
            "300",
            "--probe-ms",
            "200",
            "--dead-after-ms",
            "5000",
            "--topology",
            "4.2.2.2",
            "--address",
            n.address,
            "--interface",
            &iface,
            "--serve-anonymous",
        ]);
    };
    run(&mut a, "169.254.69.30");
    run(&mut b, "169.254.96.141");
    a.daemon
        .ok(&["add-identity-arc", "0", "eth1", B, "169.254.96.141"]);
    a.daemon.ok(&["add-qspn-arc", "0", "eth1", B]);
    b.daemon
        .ok(&["add-identity-arc", "0", "eth1", A, "169.254.69.30"]);
    b.daemon.ok(&["add-qspn-arc", "0", "eth1", A]);
    wait_neighbour(&a, "0", B, "2.1.1.1", Duration::from_secs(20));
    wait_neighbour(&b, "0", A, "2.0.1.0", Duration::from_secs(20));

    // β migrates as a single node into 2·0·1·, real at once (no previous operation).
    b.daemon.ok(&[
        "prepare-migrate-phase-1",
        "0",
        "0",
        "1",
        "2.0.1",
        "0.2.0",
        "2",
        "3",
        "1",
        "4",
        "3",
        "3",
        "262359",
        "null",
        "--pseudo",
        &format!("eth1={B1}@169.254.27.218"),
    ]);
    b.daemon.ok(&["migrate-phase-1", "0", "262359"]);
    // α: only the neighbour migrated; then the qspn arc to β₂, which took the MAC.
    let arcs = a.daemon.ok(&["show-arcs", "0"]);
    let arc = arcs
        .lines()
        .find(|l| l.contains(B))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("α has no arc to β: {arcs}"))
        .trim()
        .to_string();
    a.daemon
        .ok(&["neighbour-migrated", "0", &arc, B1, "169.254.27.218"]);
    a.daemon.ok(&["add-qspn-arc", "0", "eth1", B]);

    // α's arc to β₁'s pseudo-interface: β₁ (connectivity, virtual 2·1·1·3) speaks QSPN on it.
    wait_neighbour(&a, "0", B1, "2.1.1.3", Duration::from_secs(20));
    // α's new arc to β₂ (2·0·1·1): β₂'s bootstrap asked α for real ETPs.
    wait_neighbour(&a, "0", B, "2.0.1.1", Duration::from_secs(20));
    // And β's two identities know α over their own arcs.
    wait_neighbour(&b, "0", A, "2.0.1.0", Duration::from_secs(20));
    wait_neighbour(&b, "1", A, "2.0.1.0", Duration::from_secs(20));
    let status = a.daemon.json(&["status"]);
    assert!(
        status["protocol"]["identities_learnt"]
            .as_u64()
            .unwrap_or(0)
            >= 2,
        "α learnt β's identities twice (before and after the migration): {status}"
    );
}
