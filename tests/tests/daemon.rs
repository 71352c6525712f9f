//! The daemon and its client, driven as a user would: `ntkplane run` in a namespace that
//! plays the system, commands through the control socket, state read back over rtnetlink
//! (rendered as `ip` prints it) and with `nft`.

use ntkplane_integration::{
    daemon::Instance,
    lab::{require_root, veth, End, Ns},
    readback::{
        addresses_text, full_dump, ntk_rules, ntk_tables_in, routes_text, rules_text, table,
    },
};

fn system() -> (Ns, Ns) {
    let sys = Ns::new("sys");
    let peer = Ns::new("peer");
    veth(
        End(&sys, "eth1", "00:16:3e:ec:a3:e1", "192.0.2.1/32"),
        End(&peer, "eth1", "00:16:3e:5b:78:d5", "192.0.2.2/32"),
    );
    (sys, peer)
}

const GAMMA: &str = "00:16:3E:5B:78:D5";
const PATH_TO_GAMMA: &str = r#"[{"arc":0,"hops":[{"lvl":0,"pos":0}],"cost":10000}]"#;

#[test]
fn commands_bad_input_crash_restart_and_quit() {
    require_root();
    let (sys, _peer) = system();
    let before_run = full_dump(&sys);
    let mut d = Instance::new(&sys);
    d.start();
    assert!(d.state_file().exists());

    // Startup state: own addresses, ntk all unreachable, SNAT.
    let addrs = addresses_text(&sys.name, Some("eth1"));
    for a in [
        "169.254.96.141/32",
        "10.0.0.23/32",
        "10.0.0.87/32",
        "10.0.0.63/32",
        "10.0.0.51/32",
        "10.0.0.41/32",
    ] {
        assert!(addrs.contains(a), "{a}: {addrs}");
    }
    assert!(routes_text(&sys.name, Some(251)).contains("unreachable 10.0.0.0/29 proto ntk"));
    assert!(sys
        .sh("nft list table ip ntkplane")
        .contains("ip daddr 10.0.0.64/27 snat to 10.0.0.23"));

    // γ: identity arc, qspn arc (table 250), first ETP, a path.
    assert!(d
        .ok(&["add-identity-arc", "0", "eth1", GAMMA, "169.254.94.223"])
        .contains("arc: 0"));
    assert!(d
        .ok(&["add-qspn-arc", "0", "eth1", GAMMA])
        .contains("table: 250"));
    assert!(
        !rules_text(&sys.name).contains("lookup 250"),
        "no rule before the neighbour is known"
    );
    d.ok(&["set-neighbour", "0", "0", "2.1.1.0"]);
    d.ok(&["set-paths", "0", "0,0", PATH_TO_GAMMA]);
    assert!(rules_text(&sys.name).contains("fwmark 0xfa lookup 250 proto ntk"));
    let ntk = routes_text(&sys.name, Some(251));
    assert!(
        ntk.contains("10.0.0.22 via 169.254.94.223 dev eth1 proto ntk src 10.0.0.23"),
        "{ntk}"
    );
    // γ is the g-node (0,0): every path to it contains it, so its prefixes are unreachable
    // in γ's own table (never bounce a packet back where it came from).
    let t250 = routes_text(&sys.name, Some(250));
    assert!(
        t250.contains("unreachable 10.0.0.22 proto ntk") && t250.lines().count() == 18,
        "{t250}"
    );
    let tables = d.ok(&["--json", "show-tables"]);
    assert!(
        tables.contains("\"name\": \"ntk_from_00:16:3E:5B:78:D5\""),
        "{tables}"
    );

    // Bad input: an error naming the problem, non-zero exit, kernel and state untouched.
    let dump = full_dump(&sys);
    let state = std::fs::read_to_string(d.state_file()).unwrap();
    for (args, msg) in [
        (
            vec!["add-qspn-arc", "0", "eth1", GAMMA],
            "already a qspn arc",
        ),
        (
            vec!["add-qspn-arc", "7", "eth1", GAMMA],
            "no identity with index 7",
        ),
        (
            vec![
                "add-identity-arc",
                "0",
                "eth9",
                "02:00:00:00:00:09",
                "169.254.1.1",
            ],
            "no managed interface 'eth9'",
        ),
        (
            vec![
                "add-identity-arc",
                "0",
                "eth1",
                "02:00:00:00:00:09",
                "10.1.1.1",
            ],
            "not a link-local address",
        ),
        (
            vec!["set-neighbour", "0", "3", "2.1.1.0"],
            "identity 0 has no arc 3",
        ),
        (
            vec!["set-neighbour", "0", "0", "2.1.9.0"],
            "position 9 at level 1",
        ),
        (
            vec![
                "set-paths",
                "0",
                "0,0",
                r#"[{"arc":5,"hops":[{"lvl":0,"pos":0}],"cost":1}]"#,
            ],
            "no such arc",
        ),
        (vec!["remove-arc", "0", "4"], "identity 0 has no arc 4"),
        // The lifecycle, out of order or with unknown ids.
        (
            vec!["enter-net-phase-1", "0", "4958850"],
            "no prepared operation 4958850",
        ),
        (
            vec!["migrate-phase-2", "0", "262359"],
            "no prepared operation 262359",
        ),
        (
            vec![
                "prepare-migrate-phase-1",
                "0",
                "0",
                "1",
                "2.0",
                "0.2.0",
                "2",
                "3",
                "1",
                "4",
                "3",
                "3",
                "262359",
                "null",
            ],
            "host address has 2 positions, levels l-1..h need 3",
        ),
        (
            vec![
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
                "1",
                "3",
                "262359",
                "null",
            ],
            "connectivity position (must be virtual): position 1 is not valid at level 0",
        ),
        (
            vec![
                "prepare-enter-net-phase-1",
                "5",
                "0",
                "1",
                "2.0.1",
                "0.0.0",
                "2",
                "3",
                "1",
                "4",
                "2",
                "1",
                "[0]",
                "11",
                "null",
            ],
            "no identity with index 5",
        ),
        (
            vec![
                "prepare-enter-net-phase-1",
                "0",
                "0",
                "1",
                "2.0.1",
                "0.0.0",
                "2",
                "3",
                "1",
                "4",
                "2",
                "1",
                "[7]",
                "11",
                "null",
            ],
            "identity 0 has no arc 7",
        ),
        (
            vec!["remove-identity", "0"],
            "identity 0 is the main identity",
        ),
        (
            vec!["remove-outer-arcs", "0"],
            "identity 0 is not a connectivity identity",
        ),
        (vec!["check-connectivity", "3"], "no identity with index 3"),
        (
            vec![
                "neighbour-migrated",
                "0",
                "9",
                "02:00:00:00:00:09",
                "169.254.1.1",
            ],
            "identity 0 has no arc 9",
        ),
        (vec!["etp", "0", "{not json"], "feed:"),
    ] {
        let (code, _, err) = d.client(&args);
        assert_ne!(code, 0, "{args:?} was accepted");
        assert!(err.contains(msg), "{args:?}: '{err}' does not name '{msg}'");
    }
    // Malformed MAC: refused by the client before anything is sent.
    let (code, _, err) = d.client(&["add-qspn-arc", "0", "eth1", "00:16:3E:5B:78"]);
    assert_ne!(code, 0);
    assert!(err.contains("malformed MAC"), "{err}");
    // Non-JSON and oversized socket input.
    {
        use std::io::{BufRead, BufReader, Write};
        let sock = d.run_dir.join(format!("{}.sock", d.name));
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.write_all(b"this is not json\n").unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains("\"ok\":false") && line.contains("malformed request"),
            "{line}"
        );
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        let _ = s.write_all(&vec![b'x'; (1 << 20) + 10]);
        let _ = s.write_all(b"\n");
        let mut line = String::new();
        let _ = BufReader::new(s).read_line(&mut line);
        assert!(line.contains("longer than"), "{line}");
    }
    assert_eq!(
        full_dump(&sys),
        dump,
        "a refused command changed the kernel"
    );
    assert_eq!(
        std::fs::read_to_string(d.state_file()).unwrap(),
        state,
        "a refused command changed the state"
    );

    // A prepared entry (no kernel effect) refuses a phase 2 before its phase 1, a phase 1 of
    // the other kind, and a second preparation under the same id.
    d.ok(&[
        "prepare-enter-net-phase-1",
        "0",
        "0",
        "1",
        "2.0.1",
        "0.0.0",
        "2",
        "3",
        "1",
        "4",
        "2",
        "1",
        "[]",
        "11",
        "12",
    ]);
    let state = std::fs::read_to_string(d.state_file()).unwrap();
    for (args, msg) in [
        (
            vec!["enter-net-phase-2", "0", "11"],
            "no identity is waiting for phase 2 of operation 11",
        ),
        (
            vec!["migrate-phase-1", "0", "11"],
            "operation 11 was prepared as enter_net, not migrate",
        ),
        (
            vec!["enter-net-phase-1", "3", "11"],
            "operation 11 was prepared for identity 0, not 3",
        ),
        (
            vec![
                "prepare-enter-net-phase-1",
                "0",
                "0",
                "1",
                "2.0.1",
                "0.0.0",
                "2",
                "3",
                "1",
                "4",
                "2",
                "1",
                "[]",
                "11",
                "null",
            ],
            "operation 11 is already prepared",
        ),
    ] {
        let (code, _, err) = d.client(&args);
        assert_ne!(code, 0, "{args:?} was accepted");
        assert!(err.contains(msg), "{args:?}: '{err}' does not name '{msg}'");
    }
    assert_eq!(
        full_dump(&sys),
        dump,
        "prepare or a refused phase changed the kernel"
    );
    assert_eq!(std::fs::read_to_string(d.state_file()).unwrap(), state);

    // A second daemon on the same instance is refused.
    let (code, _, err) = {
        let out = d
            .cmd()
            .args([
                "run",
                "--netns",
                &d.netns,
                "--topology",
                "4.2.2.2",
                "--address",
                "2.1.1.1",
                "--interface",
                "eth1",
                "--rt-tables-dir",
                "none",
            ])
            .arg("--state-dir")
            .arg(&d.state_dir)
            .output()
            .unwrap();
        (
            out.status.code(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_ne!(code, Some(0));
    assert!(err.contains("already runs"), "{err}");

    // kill -9, then restart: the kernel converges to the persisted state, nothing doubled.
    d.kill9();
    assert!(
        d.pins().join("default/link-eth1").exists(),
        "pins gone with the process"
    );
    d.start();
    assert_eq!(full_dump(&sys), dump, "restart changed the kernel state");
    assert!(d.ok(&["show-identities"]).contains("address=2.1.1.1"));

    // quit: everything ntkplane installed is gone.
    let (code, _, err) = d.client(&["quit"]);
    assert_eq!(code, 0, "{err}");
    assert!(d.wait_exit(), "daemon did not exit cleanly");
    assert_eq!(full_dump(&sys), before_run, "quit left state behind");
    assert!(!d.pins().exists(), "pins left behind");
    assert!(!d.state_file().exists(), "state left behind");
    assert!(
        !d.run_dir.join(format!("{}.sock", d.name)).exists(),
        "socket left behind"
    );
}

// ---- Bootstrap (qspn.md §13.2): a node that enters another network together with its
// only neighbour. A (`3·1·0·1`, the daemon) and B (`3·1·0·0`, a plain namespace) form the
// level-1 g-node `3·1·0·`; it enters the host g-node `2·1·` (g = 1, h = 2) at once real at
// position 0: A₁ = `2·1·0·1`, B₁ = `2·1·0·0`. A₁'s only arc is the internal one towards B.

const A_MAC: &str = "00:16:3E:1A:C4:45";
const A_LL: &str = "169.254.253.216";
const B_MAC: &str = "00:16:3E:2D:8D:DE";
const B_LL: &str = "169.254.119.176";

fn pair() -> (Ns, Ns) {
    let sys = Ns::new("bsys");
    let peer = Ns::new("bpeer");
    veth(
        End(&sys, "eth1", A_MAC, "192.0.2.1/32"),
        End(&peer, "eth1", B_MAC, &format!("{B_LL}/32")),
    );
    (sys, peer)
}

fn hc(lvl: usize, pos: u32) -> ntkplane::addr::HCoord {
    ntkplane::addr::HCoord { lvl, pos }
}

/// A path through B (arc 0): B's coordinate (0,0) first, then `hops`.
fn via_b(
    dest: ntkplane::addr::HCoord,
    hops: &[ntkplane::addr::HCoord],
    cost: u64,
) -> (ntkplane::addr::HCoord, Vec<ntkplane::fwd::Path>) {
    let mut all = vec![hc(0, 0)];
    all.extend_from_slice(hops);
    (
        dest,
        vec![ntkplane::fwd::Path {
            arc: 0,
            hops: all,
            cost,
        }],
    )
}

/// The `etp` feed of A₁: B₁ known on arc 0, and these paths.
fn feed(paths: &[(ntkplane::addr::HCoord, Vec<ntkplane::fwd::Path>)]) -> String {
    serde_json::json!({
        "neighbours": [{"arc": 0, "address": "2.1.0.0"}],
        "paths": paths.iter().map(|(d, p)| serde_json::json!({"dest": d, "paths": p})).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Starts (or restarts) the daemon as A (3·1·0·1) with this bootstrap timeout.
fn start_a(d: &mut Instance, timeout_ms: &str) {
    d.start_with(&[
        "--topology",
        "4.2.2.2",
        "--address",
        "3.1.0.1",
        "--interface",
        &format!("eth1={A_LL}"),
        "--serve-anonymous",
        "--bootstrap-timeout-ms",
        timeout_ms,
    ]);
}

/// Starts the daemon as A with this bootstrap timeout, makes B a known qspn neighbour, and
/// enters `2·1·` with B (internal arc). Returns when A₁ (identity 1) exists.
fn enter_with_b(d: &mut Instance, timeout_ms: &str) {
    start_a(d, timeout_ms);
    d.ok(&["add-identity-arc", "0", "eth1", B_MAC, B_LL]);
    assert!(d
        .ok(&["add-qspn-arc", "0", "eth1", B_MAC])
        .contains("table: 250"));
    d.ok(&["set-neighbour", "0", "0", "3.1.0.0"]);
    d.ok(&["etp", "0", &feed_old()]);
    d.ok(&[
        "prepare-enter-net-phase-1",
        "0",
        "1",
        "2",
        "2.1",
        "0.0",
        "2",
        "3",
        "0",
        "4",
        "2",
        "1",
        "[]",
        "77",
        "null",
        "--pseudo",
        "eth1=02:00:00:00:0A:01@169.254.10.1",
    ]);
    let r = d.json(&[
        "enter-net-phase-1",
        "0",
        "77",
        "--internal",
        "0=02:00:00:00:0B:01@169.254.11.1",
    ]);
    assert_eq!(r["identity"], 1);
}

/// A₀'s feed before the entry: B known, the path to it.
fn feed_old() -> String {
    let (d, p) = via_b(hc(0, 0), &[], 10);
    serde_json::json!({
        "neighbours": [{"arc": 0, "address": "3.1.0.0"}],
        "paths": [{"dest": d, "paths": p}],
    })
    .to_string()
}

/// A₁ in `show-identities`.
fn a1(d: &Instance) -> serde_json::Value {
    let ids = d.json(&["show-identities"]);
    let ids = ids.as_array().unwrap();
    assert_eq!(
        ids.len(),
        1,
        "the old identity was dismissed (E13): {ids:?}"
    );
    assert_eq!(ids[0]["index"], 1);
    assert_eq!(ids[0]["address"], "2.1.0.1");
    ids[0].clone()
}

/// What forwarding-state.md gives for A₁ out of bootstrap knowing `paths`, from an input
/// written out here: table id → routes.
fn expected(
    paths: &[(ntkplane::addr::HCoord, Vec<ntkplane::fwd::Path>)],
) -> std::collections::BTreeMap<
    u32,
    std::collections::BTreeMap<ntkplane::addr::Ipv4Prefix, ntkplane::plan::KRoute>,
> {
    use ntkplane::{addr, fwd};
    let t =
        addr::Topology::parse_with_base("4.2.2.2", addr::topology::DEFAULT_BASE.parse().unwrap())
            .unwrap();
    let input = fwd::IdentityInput {
        topology: &t,
        subnet_level: 0,
        address: addr::NtkAddress::parse("2.1.0.1", &t).unwrap(),
        main: true,
        serve_anonymous: true,
        anonymizer: true,
        bootstrap_level: None,
        interfaces: vec![fwd::Interface {
            name: "eth1".into(),
            linklocal: A_LL.parse().unwrap(),
        }],
        arcs: vec![fwd::Arc {
            id: 0,
            dev: "eth1".into(),
            peer_mac: B_MAC.parse().unwrap(),
            peer_linklocal: B_LL.parse().unwrap(),
            qspn: Some(fwd::QspnArc {
                table: 250,
                neighbour: Some(hc(0, 0)),
            }),
        }],
        paths: paths.iter().cloned().collect(),
    };
    fwd::compute(&input)
        .unwrap()
        .tables
        .into_iter()
        .map(|(id, t)| {
            (
                id,
                t.routes
                    .iter()
                    .map(|(p, r)| (*p, ntkplane::plan::KRoute::from(r)))
                    .collect(),
            )
        })
        .collect()
}

/// The kernel's ntk tables in `sys` equal `want`, table by table, route by route; every
/// forwarding table has its fwmark rule.
fn assert_tables(
    sys: &Ns,
    want: &std::collections::BTreeMap<
        u32,
        std::collections::BTreeMap<ntkplane::addr::Ipv4Prefix, ntkplane::plan::KRoute>,
    >,
) {
    // Table main (254) holds the daemon's link routes to neighbours: not a forwarding table.
    let tables: std::collections::BTreeSet<u32> = ntk_tables_in(&sys.name)
        .into_iter()
        .filter(|t| *t != 254)
        .collect();
    assert_eq!(tables, want.keys().copied().collect(), "tables");
    for (id, routes) in want {
        assert_eq!(&table(sys, *id), routes, "table {id}");
    }
    let rules = ntk_rules(sys);
    assert!(
        rules.iter().any(|r| r.table == 250 && r.fwmark.is_some()),
        "{rules:?}"
    );
}

fn ntk_route(sys: &Ns, prefix: &str) -> String {
    sys.sh(&format!("ip route show table 251 {prefix}"))
}

/// Test 1: B's ETP carries a path to `2·1·1·` (level h−1 = 1): A₁ processes it and leaves
/// the bootstrap at once (the timeout is a minute), and every destination with a path is
/// routed in `ntk` (and B's table) as forwarding-state.md computes it.
#[test]
fn bootstrap_ends_on_a_path_to_level_h_minus_1_from_the_inner_neighbour() {
    require_root();
    let (sys, _peer) = pair();
    let mut d = Instance::new(&sys);
    enter_with_b(&mut d, "60000");
    let id = a1(&d);
    assert_eq!(id["bootstrap"], true, "{id}");
    assert_eq!(
        id["bootstrap_levels"],
        serde_json::json!({"guest": 1, "host": 2})
    );
    let why = id["bootstrap_waiting_for"].as_str().unwrap();
    assert!(
        why.contains("outside the moving g-node") && why.contains("level-1 destination"),
        "{why}"
    );
    assert!(id["bootstrap_for_ms"].as_u64().unwrap() < 60_000, "{id}");
    assert!(id["bootstrap_gives_up_in_ms"].as_u64().unwrap() > 0, "{id}");
    // Only the g-node's own destination is routed meanwhile.
    assert!(ntk_route(&sys, "10.0.0.20/32").contains(&format!("via {B_LL} dev eth1")));
    assert!(ntk_route(&sys, "10.0.0.22/31").starts_with("unreachable"));

    // B's ETP with a path of level ≥ g but none of level h−1: ignored.
    let own = via_b(hc(0, 0), &[], 10);
    let far = via_b(hc(2, 0), &[hc(2, 0)], 30);
    d.ok(&["etp", "1", &feed(&[own.clone(), far])]);
    assert_eq!(a1(&d)["bootstrap"], true);
    assert!(ntk_route(&sys, "10.0.0.16/30").starts_with("unreachable"));

    // B's full ETP: 2·1·1· (level 1 = h−1), 2·0·· and 3··· through it.
    let all = [
        own,
        via_b(hc(1, 1), &[hc(1, 1)], 20),
        via_b(hc(2, 0), &[hc(1, 1), hc(2, 0)], 30),
        via_b(hc(3, 3), &[hc(1, 1), hc(3, 3)], 40),
    ];
    d.ok(&["etp", "1", &feed(&all)]);
    let id = a1(&d);
    assert_eq!(id["bootstrap"], false, "{id}");
    assert!(id["bootstrap_waiting_for"].is_null() && id["bootstrap_for_ms"].is_null());
    assert_tables(&sys, &expected(&all));
    for p in [
        "10.0.0.20/32",
        "10.0.0.22/31",
        "10.0.0.86/31",
        "10.0.0.16/30",
        "10.0.0.24/29",
    ] {
        let r = ntk_route(&sys, p);
        assert!(
            r.contains(&format!("via {B_LL} dev eth1")) && r.contains("src 10.0.0.21"),
            "{p}: {r}"
        );
    }
    // Every path goes through B: B's own table sends nothing back to it.
    assert!(table(&sys, 250)
        .values()
        .all(|r| !matches!(r, ntkplane::plan::KRoute::Via { .. })));
}

/// Test 2: B knows nothing from outside. A₁ stays in bootstrap (also across a daemon
/// restart: the start is persisted) until the give-up wait is over, which the daemon's timer
/// notices with no command arriving; its tables are then those of an isolated network.
#[test]
fn bootstrap_ends_after_the_timeout_without_news_from_outside() {
    require_root();
    let (sys, _peer) = pair();
    let mut d = Instance::new(&sys);
    let t0 = std::time::Instant::now();
    enter_with_b(&mut d, "5000");
    let own = via_b(hc(0, 0), &[], 10);
    d.ok(&["etp", "1", &feed(std::slice::from_ref(&own))]);
    let id = a1(&d);
    assert_eq!(id["bootstrap"], true, "{id}");
    let isolated = expected(std::slice::from_ref(&own));
    assert_tables(&sys, &isolated); // bootstrap or not: nothing of level ≥ g is known

    // kill -9 and restart: the bootstrap keeps its start.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = a1(&d)["bootstrap_for_ms"].as_u64().unwrap();
    d.kill9();
    start_a(&mut d, "5000");
    let id = a1(&d);
    let elapsed = t0.elapsed().as_millis() as u64;
    assert!(
        elapsed < 5_000,
        "setup too slow for this test: {elapsed} ms"
    );
    assert_eq!(id["bootstrap"], true, "{id}");
    let since = id["bootstrap_for_ms"].as_u64().unwrap();
    assert!(since > before && since <= elapsed, "{before} → {since}");
    let left = id["bootstrap_gives_up_in_ms"].as_u64().unwrap();
    assert!(since + left == 5_000, "{id}");

    // No command until well after the deadline: the timer ends it and persists.
    std::thread::sleep(std::time::Duration::from_millis(left + 1_000));
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.state_file()).unwrap()).unwrap();
    let persisted = &state["identities"]["1"];
    assert!(
        persisted["bootstrap_level"].is_null() && persisted["bootstrap"].is_null(),
        "{persisted}"
    );
    assert_tables(&sys, &isolated);
    assert_eq!(a1(&d)["bootstrap"], false);

    // Out of bootstrap, a later path counts at once.
    let far = via_b(hc(2, 0), &[hc(1, 1), hc(2, 0)], 30);
    d.ok(&["etp", "1", &feed(&[own.clone(), far.clone()])]);
    assert_tables(&sys, &expected(&[own, far]));
    assert!(ntk_route(&sys, "10.0.0.16/30").contains(&format!("via {B_LL} dev eth1")));
}
