//! The reconciler against the real kernel: apply a seed checkpoint, read it back as an
//! administrator would, re-apply (nothing to do), converge to another state, repair what
//! is broken behind its back, and clean up to exactly the state before.
use std::collections::BTreeSet;

use ntkplane::{
    kernel::Reconciler,
    plan::{KRoute, KRule, KernelState, MAIN_TABLE},
};
use ntkplane_integration::{
    lab::{require_root, veth, End, Ns},
    readback::{addresses_text, full_dump, ntk_rules, routes_text, table},
    scenarios::{desired, eps2_s2c, lambda1_s2d},
};

/// A node with `eth1` (MAC of ε) towards a peer namespace.
fn node() -> (Ns, Ns) {
    let node = Ns::new("n");
    let peer = Ns::new("p");
    veth(
        End(&node, "eth1", "00:16:3e:3c:14:33", "192.0.2.1/32"),
        End(&peer, "eth1", "00:16:3e:ec:a3:e1", "192.0.2.2/32"),
    );
    // The fixture address is not ntkplane's: it must survive everything.
    (node, peer)
}

fn assert_kernel_matches(ns: &Ns, want: &KernelState) {
    for id in want.tables() {
        let got = table(ns, id);
        let exp: std::collections::BTreeMap<_, _> = want
            .routes
            .iter()
            .filter(|((t, _), _)| *t == id)
            .map(|((_, p), r)| (*p, r.clone()))
            .collect();
        if id == MAIN_TABLE {
            // main also holds the kernel's own routes; ours must all be there.
            for (p, r) in &exp {
                assert_eq!(got.get(p), Some(r), "table main: {p}");
            }
        } else {
            assert_eq!(got, exp, "table {id} differs");
        }
    }
    let rules: BTreeSet<KRule> = ntk_rules(ns).into_iter().collect();
    let want_rules: BTreeSet<KRule> = want.rules.iter().copied().collect();
    assert_eq!(rules, want_rules, "rules of protocol ntk");
}

#[test]
fn applies_eps_after_s2_and_reads_it_back() {
    require_root();
    let (node, _peer) = node();
    let st = eps2_s2c();
    let d = desired(&st);
    let mut r = Reconciler::new(node.netns(), u32::MAX, None).unwrap();
    let rep = r.apply(&d).unwrap();
    assert!(rep.total() > 0);
    assert_eq!(rep.attached, 1);

    assert_kernel_matches(&node, &d.state);
    // Spot checks in the admin's own words (iproute2's format, read over rtnetlink).
    let t249 = table(&node, 249);
    assert_eq!(t249[&"10.0.0.40/32".parse().unwrap()], KRoute::Blackhole);
    let ntk = routes_text(&node.name, Some(251));
    assert!(
        ntk.contains("10.0.0.20/30 via 169.254.109.22 dev eth1 proto ntk src 10.0.0.17"),
        "{ntk}"
    );
    assert!(ntk.contains("unreachable 10.0.0.0/29 proto ntk"), "{ntk}");
    let addrs = addresses_text(&node.name, Some("eth1"));
    for a in [
        "169.254.163.36/32",
        "10.0.0.41/32",
        "10.0.0.49/32",
        "10.0.0.57/32",
        "10.0.0.17/32",
        "10.0.0.81/32",
        "192.0.2.1/32",
    ] {
        assert!(addrs.contains(a), "{a} missing: {addrs}");
    }
    assert!(addresses_text(&node.name, Some("lo")).contains("10.0.0.32/32"));
    let main = routes_text(&node.name, Some(MAIN_TABLE));
    assert!(
        main.contains("169.254.109.22 dev eth1 proto ntk scope link src 169.254.163.36"),
        "{main}"
    );
    // NAT, read back with nft -j.
    let nft = node.sh("nft -j list table ip ntkplane");
    let v: serde_json::Value = serde_json::from_str(&nft).unwrap();
    let text = v.to_string();
    assert!(
        text.contains("\"snat\"") && text.contains("10.0.0.17"),
        "{nft}"
    );
    // Marks in the BPF map.
    let marks: Vec<(String, u32)> = r
        .classifier()
        .entries()
        .unwrap()
        .into_iter()
        .map(|(m, e)| (m.to_string(), e.mark))
        .collect();
    assert_eq!(
        marks,
        [
            ("00:16:3E:06:3E:90".to_string(), 248),
            ("00:16:3E:EC:A3:E1".to_string(), 249),
            ("00:16:3E:EE:AF:D1".to_string(), 250)
        ]
    );
    r.cleanup().unwrap();
}

#[test]
fn second_apply_does_nothing_and_other_states_converge_exactly() {
    require_root();
    let (node, _peer) = node();
    let mut r = Reconciler::new(node.netns(), u32::MAX, None).unwrap();
    let a = desired(&eps2_s2c());
    r.apply(&a).unwrap();
    let again = r.apply(&a).unwrap();
    assert_eq!(again.total(), 0, "re-apply performed {:?}", again.ops);

    // State B over state A: exactly B.
    let b = desired(&lambda1_s2d());
    let rep = r.apply(&b).unwrap();
    assert!(rep.ops.len() > 10);
    assert_eq!(r.observe().unwrap(), b.state, "observed state after A → B");
    assert_kernel_matches(&node, &b.state);
    for gone in [248, 249] {
        let left = table(&node, gone);
        let want: BTreeSet<_> = b
            .state
            .routes
            .keys()
            .filter(|(t, _)| *t == gone)
            .map(|(_, p)| *p)
            .collect();
        assert_eq!(
            left.keys().copied().collect::<BTreeSet<_>>(),
            want,
            "table {gone}"
        );
    }
    assert!(node
        .sh("nft list table ip ntkplane")
        .contains("dnat ip prefix to ip daddr map @pre0"));
    assert_eq!(r.apply(&b).unwrap().total(), 0);
    r.cleanup().unwrap();
}

#[test]
fn repairs_what_is_removed_behind_its_back() {
    require_root();
    let (node, _peer) = node();
    let mut r = Reconciler::new(node.netns(), u32::MAX, None).unwrap();
    let d = desired(&eps2_s2c());
    r.apply(&d).unwrap();
    node.sh(
        "ip route del 10.0.0.20/30 table 251 && ip route change unreachable 10.0.0.16/32 table 249 \
         && ip rule del pref 32764 fwmark 0xf8 && ip addr del 10.0.0.17/32 dev eth1 \
         && nft delete table ip ntkplane && ip route flush table 250",
    );
    let n250 = d.state.routes.keys().filter(|(t, _)| *t == 250).count();
    let rep = r.apply(&d).unwrap();
    // 1 route + 1 changed route + 1 rule + 1 address + NAT + the flushed table.
    assert_eq!(rep.ops.len(), 5 + n250, "{:?}", rep.ops);
    assert_eq!(r.observe().unwrap(), d.state);
    assert_kernel_matches(&node, &d.state);
    assert_eq!(r.apply(&d).unwrap().total(), 0);
    r.cleanup().unwrap();
}

#[test]
fn cleanup_leaves_the_namespace_as_it_was() {
    require_root();
    let (node, _peer) = node();
    // Something that is not ntkplane's, in a table ntkplane uses: it must survive.
    node.sh("ip route add 10.0.0.41/32 via 192.0.2.2 dev eth1 onlink table 251 && ip rule add pref 1000 fwmark 7 table 7");
    let before = full_dump(&node);
    assert_eq!(tcx_programs(&node), 0);
    let pins = std::path::PathBuf::from(ntkplane::classifier::BPFFS)
        .join("ntkplane")
        .join(&node.name);
    let mut r = Reconciler::pinned(node.netns(), u32::MAX, None, &pins).unwrap();
    r.apply(&desired(&lambda1_s2d())).unwrap();
    assert_ne!(full_dump(&node), before);
    assert_eq!(tcx_programs(&node), 1);
    assert!(pins.join("link-eth1").exists());
    assert!(
        table(&node, 251).contains_key(&"10.0.0.41/32".parse().unwrap()),
        "foreign route kept"
    );
    let rep = r.cleanup().unwrap();
    assert!(rep.detached == 1 && rep.ops.len() > 20);
    assert_eq!(
        full_dump(&node),
        before,
        "kernel state after cleanup differs from before apply"
    );
    assert!(r.classifier().entries().unwrap().is_empty());
    assert_eq!(r.classifier().attached().count(), 0);
}

/// Number of TCX programs on `eth1` ingress (bpftool here is too old to show TCX links).
fn tcx_programs(ns: &Ns) -> usize {
    use aya::programs::{SchedClassifier, TcAttachType};
    ns.netns()
        .run(|| SchedClassifier::query_tcx("eth1", TcAttachType::Ingress))
        .unwrap()
        .map(|(_, progs)| progs.len())
        .unwrap_or(0)
}

#[test]
fn nat_element_changes_touch_only_elements() {
    require_root();
    let (node, _peer) = node();
    let mut r = Reconciler::new(node.netns(), u32::MAX, None).unwrap();
    let with_anon = desired(&lambda1_s2d());
    r.apply(&with_anon).unwrap();
    let handle = |ns: &Ns| -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&ns.sh("nft -j list table ip ntkplane")).unwrap();
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|o| o["table"]["handle"].as_u64())
            .unwrap()
    };
    let h0 = handle(&node);
    // Without serve-anonymous one prerouting element goes (range4): same structure.
    let mut without = with_anon.clone();
    without
        .state
        .nat
        .pre
        .retain(|(d, _)| d.to_string() != "10.0.0.86/31");
    assert_eq!(without.state.nat.skeleton(), with_anon.state.nat.skeleton());
    r.apply(&without).unwrap();
    assert_eq!(
        handle(&node),
        h0,
        "the table was rebuilt for an element change"
    );
    let text = node.sh("nft list table ip ntkplane");
    assert!(
        !text.contains("10.0.0.86/31") && text.contains("10.0.0.22/31 : 10.0.0.40/31"),
        "{text}"
    );
    assert_eq!(r.observe().unwrap().nat, without.state.nat);
    // A structural change (no SNAT any more) rebuilds the table.
    let mut no_snat = without.clone();
    no_snat.state.nat.snat = None;
    r.apply(&no_snat).unwrap();
    assert_eq!(r.observe().unwrap().nat, no_snat.state.nat);
    let text = node.sh("nft list table ip ntkplane");
    assert!(
        !text.contains("snat to") && text.contains("snat ip prefix to"),
        "{text}"
    );
    r.cleanup().unwrap();
}
