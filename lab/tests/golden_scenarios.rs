//! Golden tests: the forwarding state of every checkpoint of `shared/spec/scenarios.md`,
//! compared route by route with the spec's listings (copied verbatim into
//! `lab/src/scenario-listings.txt`, parsed by `listing`), plus the rules, marks, addresses and NAT the spec lists.
//!
//! Each checkpoint is described as the graph of identities of the network at that moment
//! (addresses, MACs, link-locals, qspn arcs with their costs); the paths each identity
//! knows come from the lab's path solver (`ntkplane_lab::paths`), the rest from `fwd::compute`.
use std::collections::{BTreeMap, BTreeSet};

use ntkplane::{
    addr::{Ipv4Prefix, NtkAddress, Topology},
    fwd::{
        compute,
        state::{PRIO_FWMARK, PRIO_NTK},
        Arc, ForwardingState, IdentityInput, Interface, QspnArc, Route, Rule, NTK_TABLE,
    },
    mac::MacAddr,
};
use ntkplane_lab::{
    listing::{section, ExpectedTable, SCENARIO_LISTINGS},
    network::{InputOptions, Network},
    seed,
};

// ---------------------------------------------------------------------------------------
// Identity graphs.

fn topo() -> Topology {
    "4.2.2.2".parse().unwrap()
}

/// Options of one identity's computation.
#[derive(Default)]
struct Opts {
    subnet_level: usize,
    /// Peer MACs whose neighbour is not known yet (no ETP received).
    unknown: &'static [&'static str],
}

/// Computes the forwarding state of identity `me` of `net`, with the table ids the spec's
/// listing gives for each neighbour MAC, and checks tables, rules and marks against it.
fn check(network: &Network, me: &str, listing: &str, opts: Opts) -> ForwardingState {
    let expected = section(SCENARIO_LISTINGS, listing);
    let by_name: BTreeMap<String, u32> = expected
        .iter()
        .map(|(id, tbl)| (tbl.name.clone(), *id))
        .collect();
    let table = |mac: MacAddr| {
        *by_name
            .get(&format!("ntk_from_{mac}"))
            .unwrap_or_else(|| panic!("{listing}: the spec lists no table for {mac}"))
    };
    let options = InputOptions {
        subnet_level: opts.subnet_level,
        serve_anonymous: true,
        anonymizer: true,
        unknown: opts.unknown.iter().map(|m| m.parse().unwrap()).collect(),
    };
    let input = network
        .input(me, table, &options)
        .expect("identity in the network");
    let my_main = input.main;
    let st = compute(&input).unwrap();
    compare(listing, &st, &expected);

    // Rules: `ntk` for the main identity, `fwmark T` for every table whose neighbour is known.
    let mut want_rules = BTreeSet::new();
    if my_main {
        want_rules.insert(Rule {
            priority: PRIO_NTK,
            fwmark: None,
            table: NTK_TABLE,
        });
    }
    for a in &input.arcs {
        let q = a.qspn.as_ref().unwrap();
        if q.neighbour.is_some() {
            want_rules.insert(Rule {
                priority: PRIO_FWMARK,
                fwmark: Some(q.table),
                table: q.table,
            });
        }
    }
    assert_eq!(st.rules, want_rules, "{listing}: rules");
    // Marks: peer MAC → table id, for every forwarding table of the listing.
    let want_marks: BTreeMap<String, u32> = expected
        .iter()
        .filter(|(id, _)| **id != NTK_TABLE)
        .map(|(id, tbl)| (tbl.name.trim_start_matches("ntk_from_").to_string(), *id))
        .collect();
    let got_marks: BTreeMap<String, u32> = st
        .marks
        .iter()
        .map(|(m, id)| (m.to_string(), *id))
        .collect();
    assert_eq!(got_marks, want_marks, "{listing}: marks");
    st
}

fn compare(listing: &str, st: &ForwardingState, expected: &BTreeMap<u32, ExpectedTable>) {
    let mut errors = Vec::new();
    let got_ids: Vec<u32> = st.tables.keys().copied().collect();
    let want_ids: Vec<u32> = expected.keys().copied().collect();
    if got_ids != want_ids {
        errors.push(format!("tables {got_ids:?}, spec lists {want_ids:?}"));
    }
    for (id, want) in expected {
        let Some(got) = st.tables.get(id) else {
            continue;
        };
        if got.name != want.name {
            errors.push(format!(
                "table {id} named {}, spec says {}",
                got.name, want.name
            ));
        }
        for (p, alts) in &want.routes {
            match got.routes.get(p) {
                None => errors.push(format!("table {id}: {p} missing")),
                Some(r) if !alts.contains(r) => {
                    errors.push(format!("table {id}: {p} is {r:?}, spec: {alts:?}"))
                }
                _ => {}
            }
        }
        for p in got.routes.keys().filter(|p| !want.routes.contains_key(p)) {
            errors.push(format!("table {id}: {p} not in the spec"));
        }
    }
    assert!(errors.is_empty(), "{listing}:\n  {}", errors.join("\n  "));
}

/// A main identity right after `enter_net_phase_1` (still in bootstrap at guest level 0): one
/// qspn arc (table 250) whose neighbour is not known yet, no paths.
fn just_entered<'a>(
    t: &'a Topology,
    subnet_level: usize,
    address: NtkAddress,
    my_ll: &str,
    peer_mac: MacAddr,
    peer_ll: &str,
) -> IdentityInput<'a> {
    IdentityInput {
        topology: t,
        subnet_level,
        address,
        main: true,
        serve_anonymous: true,
        anonymizer: true,
        bootstrap_level: Some(1),
        interfaces: vec![Interface {
            name: "eth1".into(),
            linklocal: my_ll.parse().unwrap(),
        }],
        arcs: vec![Arc {
            id: 0,
            dev: "eth1".into(),
            peer_mac,
            peer_linklocal: peer_ll.parse().unwrap(),
            qspn: Some(QspnArc {
                table: 250,
                neighbour: None,
            }),
        }],
        paths: BTreeMap::new(),
    }
}

fn addresses(st: &ForwardingState, dev: &str) -> Vec<String> {
    st.addresses
        .iter()
        .filter(|a| a.dev == dev)
        .map(|a| a.addr.to_string())
        .collect()
}

fn snat_to(st: &ForwardingState) -> Option<String> {
    st.snat.map(|s| {
        assert_eq!(s.daddr.to_string(), "10.0.0.64/27");
        s.to.to_string()
    })
}

// ---------------------------------------------------------------------------------------
// S0: the base network (scenarios.md §3).

#[test]
fn s0_every_system() {
    let net = seed::s0();
    let a = check(&net, "alpha1", "S0 alpha", Opts::default());
    assert_eq!(
        addresses(&a, "eth1"),
        [
            "169.254.69.30",
            "10.0.0.18",
            "10.0.0.82",
            "10.0.0.58",
            "10.0.0.50",
            "10.0.0.40"
        ]
    );
    assert_eq!(addresses(&a, "lo"), ["10.0.0.32"]);
    assert_eq!(snat_to(&a).as_deref(), Some("10.0.0.18"));
    let b = check(&net, "beta1", "S0 beta", Opts::default());
    assert_eq!(
        addresses(&b, "eth1")[1..],
        [
            "10.0.0.23",
            "10.0.0.87",
            "10.0.0.63",
            "10.0.0.51",
            "10.0.0.41"
        ]
    );
    assert_eq!(snat_to(&b).as_deref(), Some("10.0.0.23"));
    let g = check(&net, "gamma0", "S0 gamma", Opts::default());
    assert_eq!(
        addresses(&g, "eth1")[1..],
        [
            "10.0.0.22",
            "10.0.0.86",
            "10.0.0.62",
            "10.0.0.50",
            "10.0.0.40"
        ]
    );
    let d = check(&net, "delta1", "S0 delta", Opts::default());
    assert_eq!(
        addresses(&d, "eth1")[1..],
        [
            "10.0.0.21",
            "10.0.0.85",
            "10.0.0.61",
            "10.0.0.49",
            "10.0.0.41"
        ]
    );
    assert_eq!(snat_to(&d).as_deref(), Some("10.0.0.21"));
    let m = check(&net, "mu2", "S0 mu", Opts::default());
    assert_eq!(
        addresses(&m, "eth1")[1..],
        [
            "10.0.0.20",
            "10.0.0.84",
            "10.0.0.60",
            "10.0.0.48",
            "10.0.0.40"
        ]
    );
    // Main routes: one host route per neighbour link-local.
    let routes: Vec<String> = b
        .neighbour_routes
        .iter()
        .map(|r| format!("{} dev {} src {}", r.dst, r.dev, r.src))
        .collect();
    assert_eq!(
        routes,
        [
            "169.254.69.30 dev eth1 src 169.254.96.141",
            "169.254.94.223 dev eth1 src 169.254.96.141"
        ]
    );
}

#[test]
fn s0_eps_alone() {
    let net = seed::network(
        &[(
            "eps0",
            "3.1.0.0",
            "eth1",
            "00:16:3E:3C:14:33",
            "169.254.163.36",
            true,
        )],
        &[],
    );
    let e = check(&net, "eps0", "S0 eps", Opts::default());
    assert_eq!(
        addresses(&e, "eth1")[1..],
        [
            "10.0.0.28",
            "10.0.0.92",
            "10.0.0.60",
            "10.0.0.48",
            "10.0.0.40"
        ]
    );
    assert_eq!(snat_to(&e).as_deref(), Some("10.0.0.28"));
    assert!(e.marks.is_empty() && e.neighbour_routes.is_empty());
}

// ---------------------------------------------------------------------------------------
// S1: migration for entry, case 1 (scenarios.md §4).

/// S1-A: ε₁ `2·1·1·2` right after `enter_net_phase_1`: β₁ not known yet.
#[test]
fn s1_a_eps_after_phase_1() {
    let t = topo();
    let eps = NtkAddress::parse("2.1.1.2", &t).unwrap();
    let beta: MacAddr = "00:16:3E:EC:A3:E1".parse().unwrap();
    let input = just_entered(&t, 0, eps, "169.254.163.36", beta, "169.254.96.141");
    let st = compute(&input).unwrap();
    let want =
        ".0/29 .64/29 .8/29 .72/29 .24/29 .88/29 .16/30 .80/30 .56/30 .20/31 .84/31 .60/31 .48/31 \
                .22/32 .86/32 .62/32 .50/32 .40/32 .23/32 .87/32 .63/32 .51/32 .41/32";
    let want: BTreeSet<Ipv4Prefix> = want
        .split_whitespace()
        .map(|p| format!("10.0.0{p}").parse().unwrap())
        .collect();
    for id in [251, 250] {
        let tbl = &st.tables[&id];
        assert_eq!(
            tbl.routes.keys().copied().collect::<BTreeSet<_>>(),
            want,
            "table {id}"
        );
        assert!(
            tbl.routes.values().all(|r| *r == Route::Unreachable),
            "table {id}: all unreachable"
        );
    }
    assert_eq!(st.rules.len(), 1, "only `lookup 251`: {:?}", st.rules);
    assert_eq!(st.marks.get(&beta), Some(&250));
    assert_eq!(
        addresses(&st, "eth1"),
        ["169.254.163.36"],
        "link-local only"
    );
    assert_eq!(snat_to(&st), None, "no SNAT while virtual");
}

#[test]
fn s1_b_eps_and_beta() {
    let net = seed::s1_b();
    let e = check(&net, "eps1", "S1-B eps", Opts::default());
    assert_eq!(
        addresses(&e, "eth1"),
        ["169.254.163.36"],
        "ε₁ is still virtual: no own IPs"
    );
    check(&net, "beta1", "S1-B beta", Opts::default());
}

#[test]
fn s1_c_every_system() {
    let net = seed::s1_c();
    let e = check(&net, "eps1", "S1-C eps", Opts::default());
    assert_eq!(
        addresses(&e, "eth1"),
        [
            "169.254.163.36",
            "10.0.0.23",
            "10.0.0.87",
            "10.0.0.63",
            "10.0.0.51",
            "10.0.0.41"
        ]
    );
    assert_eq!(snat_to(&e).as_deref(), Some("10.0.0.23"));
    let b2 = check(&net, "beta2", "S1-C beta default", Opts::default());
    assert_eq!(
        addresses(&b2, "eth1")[1..],
        [
            "10.0.0.19",
            "10.0.0.83",
            "10.0.0.59",
            "10.0.0.51",
            "10.0.0.41"
        ]
    );
    assert_eq!(snat_to(&b2).as_deref(), Some("10.0.0.19"));
    let b1 = check(&net, "beta1", "S1-C beta migr01", Opts::default());
    assert_eq!(
        addresses(&b1, "migr01_eth1"),
        ["169.254.27.218"],
        "connectivity identity: link-local only"
    );
    assert!(!b1.tables.contains_key(&251) && b1.snat.is_none() && b1.netmap.is_empty());
    let routes: Vec<String> = b1
        .neighbour_routes
        .iter()
        .map(|r| format!("{} dev {}", r.dst, r.dev))
        .collect();
    assert_eq!(
        routes,
        [
            "169.254.94.223 dev migr01_eth1",
            "169.254.163.36 dev migr01_eth1"
        ]
    );
    check(&net, "gamma0", "S1-C gamma", Opts::default());
    check(&net, "alpha1", "S1-C alpha", Opts::default());
}

// ---------------------------------------------------------------------------------------
// S2: migration for entry, case 2, with λ as autonomous-subnet gateway (scenarios.md §5).

/// S2-A: λ₀ `1·1·0·0` alone, `-s 1`.
#[test]
fn s2_a_lambda_after_init() {
    let t = topo();
    let input = IdentityInput {
        topology: &t,
        subnet_level: 1,
        address: NtkAddress::parse("1.1.0.0", &t).unwrap(),
        main: true,
        serve_anonymous: true,
        anonymizer: true,
        bootstrap_level: None,
        interfaces: vec![Interface {
            name: "eth1".into(),
            linklocal: "169.254.109.22".parse().unwrap(),
        }],
        arcs: vec![],
        paths: BTreeMap::new(),
    };
    let st = compute(&input).unwrap();
    let want: Vec<String> =
        ".0/29 .64/29 .16/29 .80/29 .24/29 .88/29 .8/30 .72/30 .56/30 .14/31 .78/31 .62/31 .50/31"
            .split_whitespace()
            .map(|p| format!("10.0.0{p}"))
            .collect();
    let mut want_sorted: Vec<Ipv4Prefix> = want.iter().map(|p| p.parse().unwrap()).collect();
    want_sorted.sort();
    let ntk = &st.tables[&251];
    assert_eq!(ntk.routes.keys().copied().collect::<Vec<_>>(), want_sorted);
    assert!(ntk.routes.values().all(|r| *r == Route::Unreachable));
    assert_eq!(
        addresses(&st, "eth1")[1..],
        [
            "10.0.0.12",
            "10.0.0.76",
            "10.0.0.60",
            "10.0.0.48",
            "10.0.0.40"
        ]
    );
    assert_eq!(snat_to(&st).as_deref(), Some("10.0.0.12"));
    let nm: Vec<String> = st
        .netmap
        .iter()
        .map(|r| format!("{} {}", r.daddr, r.to).replace("10.0.0", ""))
        .collect();
    assert_eq!(
        nm,
        [
            ".48/31 .40/31",
            ".48/30 .48/31",
            ".60/31 .40/31",
            ".56/29 .60/31",
            ".12/31 .40/31",
            ".0/27 .12/31",
            ".76/31 .40/31",
            ".64/27 .12/31"
        ]
    );
}

/// S2-B: λ₁ `2·1·2·0` right after `enter_net_phase_1`.
#[test]
fn s2_b_lambda_after_phase_1() {
    let t = topo();
    let eps: MacAddr = "00:16:3E:3C:14:33".parse().unwrap();
    let input = just_entered(
        &t,
        1,
        NtkAddress::parse("2.1.2.0", &t).unwrap(),
        "169.254.109.22",
        eps,
        "169.254.163.36",
    );
    let st = compute(&input).unwrap();
    let want: BTreeSet<Ipv4Prefix> = ".0/29 .64/29 .8/29 .72/29 .24/29 .88/29 .16/30 .80/30 .56/30 .20/31 .84/31 .60/31 .48/31 .22/31 .86/31 .62/31 .50/31"
        .split_whitespace()
        .map(|p| format!("10.0.0{p}").parse().unwrap())
        .collect();
    for id in [251, 250] {
        assert_eq!(
            st.tables[&id]
                .routes
                .keys()
                .copied()
                .collect::<BTreeSet<_>>(),
            want
        );
        assert!(st.tables[&id]
            .routes
            .values()
            .all(|r| *r == Route::Unreachable));
    }
    assert_eq!(
        addresses(&st, "eth1"),
        ["169.254.109.22", "10.0.0.40"],
        "only internal level 1 stays"
    );
    assert!(st.snat.is_none() && st.netmap.is_empty(), "no NAT at all");
    assert_eq!(st.rules.len(), 1);
}

#[test]
fn s2_c_eps_both_namespaces() {
    let net = seed::s2_final();
    let e2 = check(&net, "eps2", "S2-C eps default", Opts::default());
    assert_eq!(
        addresses(&e2, "eth1"),
        [
            "169.254.163.36",
            "10.0.0.17",
            "10.0.0.81",
            "10.0.0.57",
            "10.0.0.49",
            "10.0.0.41"
        ]
    );
    assert_eq!(snat_to(&e2).as_deref(), Some("10.0.0.17"));
    let e1 = check(&net, "eps1", "S2-C eps migr02", Opts::default());
    // `.40/32` belongs to D(2·1·3·1) although the docs omit it (lifecycle.md §18 item 11).
    assert!(e1.tables[&247]
        .routes
        .contains_key(&"10.0.0.40/32".parse().unwrap()));
    let routes: Vec<String> = e1
        .neighbour_routes
        .iter()
        .map(|r| r.dst.to_string())
        .collect();
    assert_eq!(routes, ["169.254.42.4", "169.254.109.22"]);
}

#[test]
fn s2_d_lambda_final() {
    let net = seed::s2_final();
    let l = check(
        &net,
        "lambda1",
        "S2-D lambda",
        Opts {
            subnet_level: 1,
            ..Default::default()
        },
    );
    assert_eq!(
        addresses(&l, "eth1")[1..],
        [
            "10.0.0.22",
            "10.0.0.86",
            "10.0.0.62",
            "10.0.0.50",
            "10.0.0.40"
        ]
    );
    assert_eq!(snat_to(&l).as_deref(), Some("10.0.0.22"));
    let nm: Vec<String> = l
        .netmap
        .iter()
        .map(|r| format!("{} {}", r.daddr, r.to).replace("10.0.0", ""))
        .collect();
    assert_eq!(
        nm,
        [
            ".50/31 .40/31",
            ".48/30 .50/31",
            ".62/31 .40/31",
            ".56/29 .62/31",
            ".22/31 .40/31",
            ".0/27 .22/31",
            ".86/31 .40/31",
            ".64/27 .22/31"
        ]
    );
}
