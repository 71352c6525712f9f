//! Scenarios S1 and S2 (scenarios.md §4 and §5: migration for entry, cases 1 and 2) driven
//! through real daemons — α, β, γ, ε, then λ (gateway of a level-1 subnet), each in its own
//! namespace on one L2 segment — with the client, as an operator would. After each
//! checkpoint the kernel of every system (and of the identity namespaces) is read back over
//! rtnetlink and from the pinned classifier map and compared route by route with the spec's
//! listings. The facts QSPN would have produced (neighbour addresses,
//! paths) are fed from the reference network with `ntkplane etp`.
//!
//! Also: `kill -9` of β's daemon in the middle of the migration (identity namespace alive,
//! outer arc not yet removed): the pinned classifier keeps counting γ's packets while no
//! daemon runs, a restarted daemon converges with no duplicate or leftover object; `quit`
//! leaves every system namespace as before `run`, identity namespaces and pins gone. The
//! chained dismissal of S3 (β₃ in migr01 and β₁ in migr02) closes the story.
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use ntkplane::{mac::MacAddr, plan::KRoute};
use ntkplane_integration::{
    daemon::Instance,
    lab::{require_root, Ns, Segment},
    readback::{
        addresses_text, dump_in, full_dump, links_in, ntk_rules_in, pinned_marks, routes_text,
        sh_in, sysctl_in, table_in,
    },
};
use ntkplane_lab::{
    feed::feed_for,
    icmp::{Answer, Pinger},
    listing::{section, SCENARIO_LISTINGS},
    network::Network,
    runner::{compare_marks, compare_tables},
    seed,
};
use serde_json::Value;

struct Sys {
    ns: Ns,
    d: Instance,
    before: String,
}

impl Sys {
    fn new(seg: &Segment, tag: &str, mac: &str) -> Sys {
        let ns = Ns::new(tag);
        seg.plug(&ns, "eth1", mac);
        let before = full_dump(&ns);
        let d = Instance::new(&ns);
        Sys { ns, d, before }
    }

    fn start(&mut self, address: &str, ll: &str) {
        self.start_opts(address, ll, &[]);
    }

    fn start_opts(&mut self, address: &str, ll: &str, extra: &[&str]) {
        let iface = format!("eth1={ll}");
        let mut opts = vec![
            "--topology",
            "4.2.2.2",
            "--address",
            address,
            "--interface",
            &iface,
            "--serve-anonymous",
        ];
        opts.extend_from_slice(extra);
        self.d.start_with(&opts);
    }

    fn arc(&self, idx: u32, mac: &str) -> String {
        self.arc_to(idx, mac)
            .unwrap_or_else(|| panic!("{}: identity {idx} has no arc to {mac}", self.ns.name))
            .to_string()
    }

    fn run(&self, args: &[&str]) -> Value {
        self.d.json(args)
    }

    /// The namespace of identity-namespace `label` (`None`: the system's).
    fn netns(&self, label: Option<&str>) -> String {
        label.map_or_else(|| self.ns.name.clone(), |l| self.d.identity_netns(l))
    }

    /// The kernel of this system's namespace `label` against listing `name` (see [`check`]).
    fn check(&self, label: Option<&str>, name: &str, marks: &[(&str, u32)]) {
        check(&self.netns(label), &self.pins(label), name, marks);
    }

    fn pins(&self, label: Option<&str>) -> PathBuf {
        self.d.pins().join(label.unwrap_or("default"))
    }

    /// The daemon's arc index towards `mac` for identity `idx`.
    fn arc_to(&self, idx: u32, mac: &str) -> Option<u32> {
        let arcs = self.run(&["show-arcs", &idx.to_string()]);
        let want: MacAddr = mac.parse().unwrap();
        arcs.as_object().unwrap().iter().find_map(|(k, a)| {
            (a["peer_mac"].as_str()?.parse::<MacAddr>().ok()? == want).then(|| k.parse().unwrap())
        })
    }

    /// Feeds identity `idx` what QSPN would know as `name` in `net`.
    fn feed(&self, net: &Network, name: &str, idx: u32) {
        let arcs = self.run(&["show-arcs", &idx.to_string()]);
        let by_mac: BTreeMap<MacAddr, u32> = arcs
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, a)| {
                (
                    a["peer_mac"].as_str().unwrap().parse().unwrap(),
                    k.parse().unwrap(),
                )
            })
            .collect();
        let f = feed_for(net, name, |m| by_mac.get(&m).copied()).unwrap();
        self.run(&["etp", &idx.to_string(), &serde_json::to_string(&f).unwrap()]);
    }
}

/// The kernel of `netns` against listing `name`: the same tables (no more, no fewer), every
/// route one of the listed values, a fwmark rule for every forwarding table, and the marks
/// (the lab runner's comparison).
fn check(netns: &str, pins: &std::path::Path, name: &str, marks: &[(&str, u32)]) {
    let want = section(SCENARIO_LISTINGS, name);
    let marks: BTreeMap<String, u32> = marks.iter().map(|(m, v)| (m.to_string(), *v)).collect();
    let errors: Vec<String> = [compare_tables(netns, &want), compare_marks(pins, &marks)]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(
        errors.is_empty(),
        "{name} ({netns}):\n  {}",
        errors.join("\n  ")
    );
}

fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

const A: &str = "00:16:3E:FD:E2:AA";
const B: &str = "00:16:3E:EC:A3:E1";
const B1_MIGR01: &str = "00:16:3E:EE:AF:D1";
const G: &str = "00:16:3E:5B:78:D5";
const D: &str = "00:16:3E:1A:C4:45";
const E: &str = "00:16:3E:3C:14:33";
const L: &str = "00:16:3E:06:3E:90";
const E1_MIGR02: &str = "00:16:3E:3B:9F:45";
const B1_MIGR02: &str = "00:16:3E:BD:34:98";
const G0_MIGR02: &str = "00:16:3E:AF:4C:2A";

#[test]
fn s1_then_s2_entries_and_migrations() {
    require_root();
    let seg = Segment::new();
    let mut alpha = Sys::new(&seg, "a", A);
    let mut beta = Sys::new(&seg, "b", B);
    let mut gamma = Sys::new(&seg, "g", G);
    let mut eps = Sys::new(&seg, "e", E);
    alpha.start("2.0.1.0", "169.254.69.30");
    beta.start("2.1.1.1", "169.254.96.141");
    gamma.start("2.1.1.0", "169.254.94.223");
    eps.start("3.1.0.0", "169.254.163.36");

    // S0: G_γ (α, β, γ; δ and μ are in the network but run no daemon here), ε alone.
    alpha.run(&["add-identity-arc", "0", "eth1", B, "169.254.96.141"]);
    beta.run(&["add-identity-arc", "0", "eth1", G, "169.254.94.223"]);
    beta.run(&["add-identity-arc", "0", "eth1", A, "169.254.69.30"]);
    gamma.run(&["add-identity-arc", "0", "eth1", B, "169.254.96.141"]);
    gamma.run(&["add-identity-arc", "0", "eth1", D, "169.254.253.216"]);
    alpha.run(&["add-qspn-arc", "0", "eth1", B]);
    beta.run(&["add-qspn-arc", "0", "eth1", G]);
    beta.run(&["add-qspn-arc", "0", "eth1", A]);
    gamma.run(&["add-qspn-arc", "0", "eth1", B]);
    gamma.run(&["add-qspn-arc", "0", "eth1", D]);
    let s0 = seed::s0();
    alpha.feed(&s0, "alpha1", 0);
    beta.feed(&s0, "beta1", 0);
    gamma.feed(&s0, "gamma0", 0);
    alpha.check(None, "S0 alpha", &[(B, 250)]);
    beta.check(None, "S0 beta", &[(G, 250), (A, 249)]);
    gamma.check(None, "S0 gamma", &[(B, 250), (D, 249)]);
    eps.check(None, "S0 eps", &[]);

    // ε meets β; ε enters G_γ at 2·1·1·2 waiting for migration 262359.
    assert_eq!(
        eps.run(&["add-identity-arc", "0", "eth1", B, "169.254.96.141"])["arc"],
        0
    );
    let b_to_e = beta.run(&["add-identity-arc", "0", "eth1", E, "169.254.163.36"])["arc"]
        .as_u64()
        .unwrap()
        .to_string();
    let prep = eps.run(&[
        "prepare-enter-net-phase-1",
        "0",
        "0",
        "1",
        "2.1.1",
        "0.0.0",
        "2",
        "3",
        "1",
        "4",
        "2",
        "1",
        "[0]",
        "4958850",
        "262359",
        "--pseudo",
        "eth1=02:00:00:E5:00:05@169.254.133.31",
    ]);
    assert_eq!(prep["pseudo"]["eth1"][1], "169.254.133.31");
    assert_eq!(
        eps.run(&["enter-net-phase-1", "0", "4958850"])["identity"],
        1
    );
    // β saw ε's old identity move to entr01's pseudo-interface, then its dismissal.
    let b_to_e1 = beta.run(&[
        "neighbour-migrated",
        "0",
        &b_to_e,
        "02:00:00:E5:00:05",
        "169.254.133.31",
    ])["arc"]
        .as_u64()
        .unwrap()
        .to_string();
    beta.run(&["remove-arc", "0", &b_to_e]);

    // S1-A: entr01 created and removed inside the command; ntk and 250 all unreachable.
    assert!(
        !netns_exists(&eps.d.identity_netns("entr01")),
        "entr01 must be gone (E13)"
    );
    let e = eps.netns(None);
    for t in [251, 250] {
        let routes = table_in(&e, t);
        assert_eq!(routes.len(), 23, "S1-A table {t}");
        assert!(
            routes.values().all(|r| *r == KRoute::Unreachable),
            "S1-A table {t}"
        );
    }
    assert_eq!(ntk_rules_in(&e).len(), 1, "S1-A: only `lookup 251`");
    assert_eq!(
        pinned_marks(&eps.pins(None)),
        BTreeMap::from([(B.to_string(), 250)])
    );
    assert!(
        !addresses_text(&e, Some("eth1")).contains("10.0.0."),
        "no own IP yet"
    );
    assert!(
        sh_in(&e, "nft list ruleset").is_empty() || !sh_in(&e, "nft list ruleset").contains("snat")
    );

    // S1-B: β adds ε₁ as a qspn arc; first ETPs both ways.
    assert_eq!(beta.run(&["add-qspn-arc", "0", "eth1", E])["table"], 248);
    let _ = b_to_e1;
    let s1b = seed::s1_b();
    alpha.feed(&s1b, "alpha1", 0);
    beta.feed(&s1b, "beta1", 0);
    gamma.feed(&s1b, "gamma0", 0);
    eps.feed(&s1b, "eps1", 1);
    eps.check(None, "S1-B eps", &[(B, 250)]);
    beta.check(None, "S1-B beta", &[(G, 250), (A, 249), (E, 248)]);

    // β migrates as a single node: 2·1·1·1 → 2·0·1·2 → 2·0·1·1, old identity in migr01.
    beta.run(&[
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
        &format!("eth1={B1_MIGR01}@169.254.27.218"),
    ]);
    assert_eq!(beta.run(&["migrate-phase-1", "0", "262359"])["identity"], 1);
    assert!(netns_exists(&beta.d.identity_netns("migr01")));
    // α, γ, ε: only the neighbour migrated (re-key to β₁'s new MAC, same id); then the
    // qspn arcs towards β₂, which inherited the MAC …EC:A3:E1.
    for (sys, idx) in [(&alpha, 0), (&gamma, 0), (&eps, 1)] {
        let i = idx.to_string();
        let arc = sys.arc_to(idx, B).unwrap().to_string();
        sys.run(&["neighbour-migrated", &i, &arc, B1_MIGR01, "169.254.27.218"]);
        sys.run(&["add-qspn-arc", &i, "eth1", B]);
    }
    eps.run(&["enter-net-phase-2", "0", "4958850"]);

    // kill -9 in the middle of the migration (before the outer-arc removal): the pinned
    // classifier keeps counting γ's packets; a restart converges to the persisted state.
    let s1c = seed::s1_c();
    beta.feed(&s1c, "beta2", 1);
    beta.feed(&s1c, "beta1", 0);
    gamma.feed(&s1c, "gamma0", 0);
    let dump = |s: &Sys, l: Option<&str>| dump_in(&s.netns(l));
    let (def_before, m1_before) = (dump(&beta, None), dump(&beta, Some("migr01")));
    let counted = |s: &Sys| -> u64 {
        let t = s.run(&["show-tables"]);
        t.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["netns"] == "default" && r["name"] == format!("ntk_from_{G}"))
            .map(|r| r["packets"].as_u64().unwrap_or(0))
            .sum()
    };
    let before_kill = counted(&beta);
    beta.d.kill9();
    let mut pinger = Pinger::open(&gamma.ns.name, None).unwrap();
    let answers: Vec<Answer> = (0..5)
        .map(|_| {
            let a = pinger
                .echo("169.254.96.141".parse().unwrap(), Duration::from_secs(1))
                .unwrap();
            std::thread::sleep(Duration::from_millis(50));
            a
        })
        .collect();
    assert!(
        answers.iter().any(|a| matches!(a, Answer::Reply { .. })),
        "γ → β₂ link-local while β's daemon is down: {answers:?}"
    );
    beta.start("2.1.1.1", "169.254.96.141"); // the persisted state wins over the options
    let after = counted(&beta);
    assert!(
        after >= before_kill + 5,
        "classifier stopped while the daemon was down: {before_kill} → {after}"
    );
    assert_eq!(
        dump(&beta, None),
        def_before,
        "restart changed the default namespace"
    );
    assert_eq!(
        dump(&beta, Some("migr01")),
        m1_before,
        "restart changed migr01"
    );
    let ids = beta.run(&["show-identities"]);
    assert_eq!(ids.as_array().unwrap().len(), 2);

    // presence_notified: β₁ (2·1·1·3, to-level 2) drops its outer arc to α₁; α is told.
    assert_eq!(
        beta.run(&["remove-outer-arcs", "0"])["removed_arcs"],
        serde_json::json!([1])
    );
    let a_to_b1 = alpha.arc_to(0, B1_MIGR01).unwrap().to_string();
    alpha.run(&["remove-arc", "0", &a_to_b1]);

    // S1-C: quiescent.
    alpha.feed(&s1c, "alpha1", 0);
    beta.feed(&s1c, "beta2", 1);
    beta.feed(&s1c, "beta1", 0);
    gamma.feed(&s1c, "gamma0", 0);
    eps.feed(&s1c, "eps1", 1);
    eps.check(None, "S1-C eps", &[(B1_MIGR01, 250), (B, 249)]);
    beta.check(None, "S1-C beta default", &[(G, 250), (A, 249), (E, 248)]);
    beta.check(Some("migr01"), "S1-C beta migr01", &[(G, 250), (E, 248)]);
    gamma.check(None, "S1-C gamma", &[(B1_MIGR01, 250), (D, 249), (B, 248)]);
    alpha.check(None, "S1-C alpha", &[(B, 249)]);
    let m1 = beta.netns(Some("migr01"));
    let links = links_in(&m1);
    let pseudo = &links["migr01_eth1"];
    assert_eq!(
        (pseudo.kind.as_deref(), pseudo.macvlan_mode.as_deref()),
        (Some("macvlan"), Some("vepa"))
    );
    assert_eq!(
        pseudo.mac.map(|m| m.to_string()).as_deref(),
        Some(B1_MIGR01)
    );
    assert_eq!(sysctl_in(&m1, "net/ipv4/conf/migr01_eth1/arp_ignore"), "1");
    assert_eq!(sysctl_in(&m1, "net/ipv4/ip_forward"), "1");
    let c = beta.run(&["check-connectivity", "0"]);
    assert!(c["message"].as_str().unwrap().contains("removed"), "{c}");

    // ---- S2 (scenarios.md §5): λ (gateway of a level-1 subnet) enters with its g-node
    // (case 2, `entr`), the level-1 g-node {ε₁, β₁, γ₀} migrates 2·1·1· → 2·0·2· → 2·0·0·.
    let mut lambda = Sys::new(&seg, "l", L);
    lambda.start_opts("1.1.0.0", "169.254.109.22", &["--subnet-level", "1"]);
    assert!(sh_in(&lambda.netns(None), "nft list table ip ntkplane").contains("dnat ip prefix to"));
    lambda.run(&["add-identity-arc", "0", "eth1", E, "169.254.163.36"]);
    eps.run(&["add-identity-arc", "1", "eth1", L, "169.254.109.22"]);
    lambda.run(&[
        "prepare-enter-net-phase-1",
        "0",
        "1",
        "2",
        "2.1",
        "0.0",
        "2",
        "3",
        "1",
        "4",
        "2",
        "1",
        "[0]",
        "7730381",
        "5211907",
        "--pseudo",
        "eth1=02:00:00:1A:00:06@169.254.6.6",
    ]);
    assert_eq!(
        lambda.run(&["enter-net-phase-1", "0", "7730381"])["identity"],
        1
    );
    let e_to_l = eps.arc(1, L);
    eps.run(&[
        "neighbour-migrated",
        "1",
        &e_to_l,
        "02:00:00:1A:00:06",
        "169.254.6.6",
    ]);
    eps.run(&["remove-arc", "1", &e_to_l]);
    // S2-B: internal level 1 kept (.40), every other own address, SNAT and NETMAP gone.
    let l = lambda.netns(None);
    let addrs = addresses_text(&l, Some("eth1"));
    assert!(
        addrs.contains("10.0.0.40/32") && addrs.matches("10.0.0.").count() == 1,
        "{addrs}"
    );
    assert!(
        !sh_in(&l, "nft list ruleset").contains("ntkplane"),
        "S2-B: no NAT at all"
    );
    for t in [251, 250] {
        let routes = table_in(&l, t);
        assert_eq!(routes.len(), 17, "S2-B table {t}");
        assert!(routes.values().all(|r| *r == KRoute::Unreachable));
    }
    assert_eq!(
        pinned_marks(&lambda.pins(None)),
        BTreeMap::from([(E.to_string(), 250)])
    );
    assert!(!netns_exists(&lambda.d.identity_netns("entr01")));

    assert_eq!(eps.run(&["add-qspn-arc", "1", "eth1", L])["table"], 248);
    for (sys, idx, mac, ll) in [
        (&eps, "1", E1_MIGR02, "169.254.241.153"),
        (&beta, "0", B1_MIGR02, "169.254.42.4"),
        (&gamma, "0", G0_MIGR02, "169.254.24.198"),
    ] {
        sys.run(&[
            "prepare-migrate-phase-1",
            idx,
            "1",
            "2",
            "2.0",
            "0.2",
            "2",
            "3",
            "0",
            "4",
            "3",
            "3",
            "5211907",
            "null",
            "--pseudo",
            &format!("eth1={mac}@{ll}"),
        ]);
    }
    // Internal arcs: the peers' old identities answer on their migr02 pseudo-interfaces.
    let moved = |arc: String, mac: &str, ll: &str| format!("{arc}={mac}@{ll}");
    let e_b = moved(eps.arc(1, B1_MIGR01), B1_MIGR02, "169.254.42.4");
    assert_eq!(
        eps.run(&["migrate-phase-1", "1", "5211907", "--internal", &e_b])["identity"],
        2
    );
    let b_e = moved(beta.arc(0, E), E1_MIGR02, "169.254.241.153");
    let b_g = moved(beta.arc(0, G), G0_MIGR02, "169.254.24.198");
    let r = beta.run(&[
        "migrate-phase-1",
        "0",
        "5211907",
        "--internal",
        &b_e,
        "--internal",
        &b_g,
    ]);
    assert_eq!(r["identity"], 2);
    let g_b = moved(gamma.arc(0, B1_MIGR01), B1_MIGR02, "169.254.42.4");
    assert_eq!(
        gamma.run(&["migrate-phase-1", "0", "5211907", "--internal", &g_b])["identity"],
        1
    );
    // Outside the moving g-node: β₂ (towards γ₀ and ε₁) and λ₁ (towards ε₁).
    for (sys, idx, peer, mac, ll) in [
        (&beta, 1, G, G0_MIGR02, "169.254.24.198"),
        (&beta, 1, E, E1_MIGR02, "169.254.241.153"),
        (&lambda, 1, E, E1_MIGR02, "169.254.241.153"),
    ] {
        let i = idx.to_string();
        sys.run(&["neighbour-migrated", &i, &sys.arc(idx, peer), mac, ll]);
        sys.run(&["add-qspn-arc", &i, "eth1", peer]);
    }
    lambda.run(&["enter-net-phase-2", "0", "7730381"]);
    // presence_notified: ε₁ and γ₀ (migr02, to-level 2) drop their arcs to β₂; β₂ is told.
    assert_eq!(
        eps.run(&["remove-outer-arcs", "1"])["removed_arcs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        gamma.run(&["remove-outer-arcs", "0"])["removed_arcs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for mac in [E1_MIGR02, G0_MIGR02] {
        beta.run(&["remove-arc", "1", &beta.arc(1, mac)]);
    }

    // S2-C / S2-D, quiescent.
    let s2 = seed::s2_final();
    alpha.feed(&s2, "alpha1", 0);
    for (sys, name, idx) in [
        (&beta, "beta2", 1),
        (&beta, "beta3", 2),
        (&beta, "beta1", 0),
        (&gamma, "gamma1", 1),
        (&gamma, "gamma0", 0),
        (&eps, "eps2", 2),
        (&eps, "eps1", 1),
        (&lambda, "lambda1", 1),
    ] {
        sys.feed(&s2, name, idx);
    }
    eps.check(
        None,
        "S2-C eps default",
        &[(B1_MIGR01, 250), (B, 249), (L, 248)],
    );
    eps.check(
        Some("migr02"),
        "S2-C eps migr02",
        &[(B1_MIGR02, 247), (L, 248)],
    );
    lambda.check(None, "S2-D lambda", &[(E1_MIGR02, 250), (E, 249)]);
    let addrs = addresses_text(&l, Some("eth1"));
    for a in [".40/", ".50/", ".62/", ".22/", ".86/"] {
        assert!(
            addrs.contains(&format!("10.0.0{a}")),
            "S2-D λ address {a}: {addrs}"
        );
    }
    let nat = sh_in(&l, "nft list table ip ntkplane");
    assert!(
        nat.contains("snat to 10.0.0.22") && nat.contains("10.0.0.50/31"),
        "{nat}"
    );
    assert!(
        !nat.contains("10.0.0.48/31 :"),
        "NETMAP of the old address left: {nat}"
    );
    let m2 = eps.netns(Some("migr02"));
    let main = routes_text(&m2, Some(ntkplane::plan::MAIN_TABLE));
    assert!(main.contains("169.254.42.4 dev migr02_eth1"), "{main}");
    assert!(!main.contains("169.254.96.141"), "outer arc's route left");
    let ids = beta.run(&["show-identities"]);
    let nss: Vec<&str> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["netns"].as_str().unwrap())
        .collect();
    assert_eq!(nss.len(), 3, "β: β₂ default, β₃ migr01, β₁ migr02: {nss:?}");

    // Dismissal (S3 outline): β₃ in migr01 was copied from β₁ in migr02: both go.
    let gone = beta.run(&["remove-identity", "2"]);
    assert_eq!(gone["removed_identities"], serde_json::json!([2, 0]));
    assert!(
        !netns_exists(&beta.d.identity_netns("migr01"))
            && !netns_exists(&beta.d.identity_netns("migr02"))
    );

    // quit: every system namespace as before `run`, identity namespaces and pins gone.
    for s in [&mut alpha, &mut beta, &mut gamma, &mut eps, &mut lambda] {
        s.d.ok(&["quit"]);
        assert!(s.d.wait_exit(), "daemon did not exit cleanly");
        assert_eq!(full_dump(&s.ns), s.before, "{}: not restored", s.ns.name);
        assert!(!s.d.pins().exists(), "{} pins left", s.d.name);
    }
    assert!(
        !netns_exists(&beta.d.identity_netns("migr01")),
        "migr01 left behind"
    );
}
