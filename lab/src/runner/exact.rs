//! The comparisons of a kernel check against one snapshot of a namespace (its links,
//! addresses, routes and rules read over rtnetlink, its nftables ruleset): the exact forms
//! (addresses per interface, rules in order, NAT rules, table main, identity namespaces,
//! links) and the tables of the spec's listing format. Pure functions: each returns what
//! differs, one message per difference, empty when the expectation holds.
use std::collections::{BTreeMap, BTreeSet};

use ntkplane::{
    addr::Ipv4Prefix,
    kernel::rtnl::PROTO_NTK,
    mac::MacAddr,
    plan::{KRoute, MAIN_TABLE},
};

use crate::{
    expect::{self, list, set_diff, RuleItem},
    listing::ExpectedTable,
    readback::{render_route, Kernel},
    scenario::LinkExpect,
};

/// `addresses = { DEV = [...] }`: every listed interface has exactly these IPv4 addresses.
pub fn addresses(kernel: &Kernel, want: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (dev, list_) in want {
        if !kernel.links.contains_key(dev) {
            out.push(format!("{dev}: no such interface"));
            continue;
        }
        let got: BTreeSet<(std::net::Ipv4Addr, u8)> = kernel
            .addresses
            .iter()
            .filter(|a| &a.dev == dev)
            .map(|a| (a.local, a.prefix_len))
            .collect();
        let want: BTreeSet<(std::net::Ipv4Addr, u8)> = list_
            .iter()
            .filter_map(|a| expect::parse_address(a).ok())
            .collect();
        if got != want {
            let show = |s: &BTreeSet<(std::net::Ipv4Addr, u8)>| -> BTreeSet<String> {
                s.iter().map(|(a, l)| format!("{a}/{l}")).collect()
            };
            let (g, w) = (show(&got), show(&want));
            out.push(format!(
                "{dev}: got {}, expected {} ({})",
                list(&g),
                list(&w),
                set_diff(&g, &w)
            ));
        }
    }
    out
}

/// `rules = [...]`: the namespace's rules, in priority order, are exactly these (an inner
/// array: that many consecutive rules, in any order among themselves).
pub fn rules(kernel: &Kernel, want: &[RuleItem]) -> Vec<String> {
    let mut got = kernel.rules.clone();
    got.sort_by_key(|r| r.priority);
    let texts: Vec<String> = got.iter().map(expect::rule_text).collect();
    let mut ok = true;
    let mut at = 0;
    for item in want {
        let n = item.texts().len();
        let Some(slice) = got.get(at..at + n) else {
            ok = false;
            break;
        };
        let mut left: Vec<_> = item
            .texts()
            .iter()
            .filter_map(|t| expect::parse_rule(t).ok())
            .collect();
        for r in slice {
            match left.iter().position(|w| expect::same_rule(r, w)) {
                Some(p) => {
                    left.remove(p);
                }
                None => ok = false,
            }
        }
        at += n;
    }
    if !ok || at != got.len() {
        let shown: Vec<String> = want
            .iter()
            .map(|i| match i {
                RuleItem::One(t) => rule_canon(t),
                RuleItem::AnyOrder(v) => {
                    format!(
                        "{{{}}}",
                        v.iter()
                            .map(|t| rule_canon(t))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            })
            .collect();
        return vec![format!("got {}, expected {}", list(&texts), list(&shown))];
    }
    vec![]
}

/// An expected rule in the canonical spelling.
fn rule_canon(t: &str) -> String {
    expect::parse_rule(t).map_or_else(|_| t.to_string(), |r| expect::rule_text(&r))
}

/// `nat = [...]`: the NAT rules of the ruleset, in order, are exactly these.
pub fn nat(ruleset: &str, want: &[String]) -> Vec<String> {
    let got = expect::nat_rules(ruleset);
    let want: Vec<String> = want.iter().map(|w| expect::normalize_nat(w)).collect();
    if got == want {
        return vec![];
    }
    let quote = |v: &[String]| list(v.iter().map(|r| format!("'{r}'")));
    vec![format!("got {}, expected {}", quote(&got), quote(&want))]
}

/// `main = """…"""`: table main holds exactly these routes.
pub fn main_table(kernel: &Kernel, text: &str) -> Vec<String> {
    let got: BTreeSet<String> = kernel
        .routes
        .iter()
        .filter(|r| r.table == MAIN_TABLE)
        .map(|r| expect::route_text(&expect::route_key(r)))
        .collect();
    let want: BTreeSet<String> = expect::parse_main(text)
        .unwrap_or_default()
        .iter()
        .map(|r| expect::route_text(&expect::route_key(r)))
        .collect();
    if got == want {
        return vec![];
    }
    vec![format!(
        "got {}, expected {} ({})",
        list(&got),
        list(&want),
        set_diff(&got, &want)
    )]
}

/// `namespaces = [...]`: the system's identity namespaces are exactly these labels.
pub fn namespaces(got: &BTreeSet<String>, want: &[String]) -> Vec<String> {
    let want: BTreeSet<String> = want.iter().cloned().collect();
    if *got == want {
        return vec![];
    }
    vec![format!(
        "got {}, expected {} ({})",
        list(got),
        list(&want),
        set_diff(got, &want)
    )]
}

/// `links = { DEV = {…} }`: each link exists and has the stated admin state, kind, macvlan
/// mode, MAC and classifier attachment (`tcx` names the programs on a link's TCX ingress).
pub fn links(
    kernel: &Kernel,
    want: &BTreeMap<String, LinkExpect>,
    tcx: impl Fn(&str) -> Result<Vec<String>, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (dev, w) in want {
        let Some(l) = kernel.links.get(dev) else {
            out.push(format!("{dev}: no such interface"));
            continue;
        };
        let state = |up: bool| if up { "up" } else { "down" };
        if let Some(up) = w.up {
            if l.up != up {
                out.push(format!("{dev}: {}, expected {}", state(l.up), state(up)));
            }
        }
        if let Some(k) = &w.kind {
            if l.kind.as_deref() != Some(k.as_str()) {
                out.push(format!(
                    "{dev}: kind {}, expected {k}",
                    l.kind.as_deref().unwrap_or("none")
                ));
            }
        }
        if let Some(m) = &w.mode {
            if l.macvlan_mode.as_deref() != Some(m.as_str()) {
                out.push(format!(
                    "{dev}: macvlan mode {}, expected {m}",
                    l.macvlan_mode.as_deref().unwrap_or("none")
                ));
            }
        }
        if let Some(m) = &w.mac {
            let want: Option<MacAddr> = m.parse().ok();
            if l.mac != want {
                out.push(format!(
                    "{dev}: MAC {}, expected {m}",
                    l.mac.map_or("none".into(), |m| m.to_string())
                ));
            }
        }
        if let Some(c) = w.classifier {
            match tcx(dev) {
                Err(e) => out.push(format!("{dev}: {e}")),
                Ok(progs) => {
                    let n = progs
                        .iter()
                        .filter(|p| CLASSIFIERS.contains(&p.as_str()))
                        .count();
                    if (c && n != 1) || (!c && n != 0) {
                        out.push(format!(
                            "{dev}: the classifier is attached {n} times to its TCX ingress (programs {}), expected {}",
                            list(&progs),
                            if c { "once" } else { "not at all" }
                        ));
                    }
                }
            }
        }
    }
    out
}

/// The classifier's program name (`ebpf/`: `#[classifier] fn classify`).
pub const CLASSIFIER: &str = "classify";
/// The names the classifier's program has: `classify`, or `fastpath` (classify, then forward
/// in TC) when the daemon runs the fast path.
pub const CLASSIFIERS: [&str; 2] = [CLASSIFIER, "fastpath"];

/// The namespace's tables against the expected ones: every route one of the listed values
/// (the routes of protocol ntk, or with `exact` every route of the listed tables), no other
/// route; and, unless `subset`, the same set of ntkplane's tables (those holding routes of
/// protocol ntk, main aside: it holds the daemon's link routes to its neighbours).
pub fn tables(
    kernel: &Kernel,
    want: &BTreeMap<u32, ExpectedTable>,
    exact: bool,
    subset: bool,
) -> Vec<String> {
    let mut errors = Vec::new();
    if !subset {
        let got: BTreeSet<u32> = kernel
            .routes
            .iter()
            .filter(|r| r.protocol == PROTO_NTK && r.table != MAIN_TABLE)
            .map(|r| r.table)
            .collect();
        let want: BTreeSet<u32> = want.keys().copied().collect();
        if got != want {
            errors.push(format!("tables {got:?}, expected {want:?}"));
        }
    }
    for (id, t) in want {
        let mut got: BTreeMap<Ipv4Prefix, Vec<KRoute>> = BTreeMap::new();
        for r in kernel
            .routes
            .iter()
            .filter(|r| r.table == *id && (exact || r.protocol == PROTO_NTK))
        {
            match r.kroute() {
                Some(k) => got.entry(r.dst).or_default().push(k),
                None => errors.push(format!(
                    "table {id}: {} not expected",
                    render_route(r, false)
                )),
            }
        }
        for (p, alts) in &t.routes {
            let alts: Vec<KRoute> = alts.iter().map(KRoute::from).collect();
            match got.get(p).map(Vec::as_slice) {
                None | Some([]) => errors.push(format!("table {id}: {p} missing")),
                Some([r]) if !alts.contains(r) => {
                    errors.push(format!("table {id}: {p} is {r:?}, expected {alts:?}"))
                }
                Some([_]) => {}
                Some(many) => errors.push(format!("table {id}: {p} has {} routes", many.len())),
            }
        }
        for p in got.keys().filter(|p| !t.routes.contains_key(p)) {
            let which = kernel
                .routes
                .iter()
                .filter(|r| r.table == *id && r.dst == *p && (exact || r.protocol == PROTO_NTK))
                .map(|r| render_route(r, false))
                .collect::<Vec<_>>();
            errors.push(format!("table {id}: {} not expected", which.join(" | ")));
        }
    }
    errors
}

/// Whether a `fwmark ID lookup ID` rule exists for each table, as expected: (table, what
/// differs).
pub fn fwmark_rules(kernel: &Kernel, want: &BTreeMap<u32, bool>) -> Vec<(u32, String)> {
    want.iter()
        .filter_map(|(id, w)| {
            let has = kernel
                .rules
                .iter()
                .any(|r| r.table == *id && r.action == 1 && r.fwmark.is_some());
            match (has, *w) {
                (true, false) => {
                    Some((*id, format!("table {id} has a fwmark rule, expected none")))
                }
                (false, true) => Some((*id, format!("no fwmark rule for table {id}"))),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntkplane::kernel::rtnl::{AddressEntry, Link, RuleEntry};

    fn kernel() -> Kernel {
        let link = |index: u32, name: &str, up: bool| Link {
            index,
            name: name.into(),
            up,
            mac: None,
            mtu: None,
            kind: None,
            macvlan_mode: None,
        };
        let addr = |dev: &str, a: &str, l: u8| AddressEntry {
            index: 2,
            dev: dev.into(),
            local: a.parse().unwrap(),
            peer: None,
            prefix_len: l,
            broadcast: None,
            scope: 0,
            flags: 0x80,
            label: None,
            protocol: 0,
        };
        let rule = |priority: u32, table: u32, mark: Option<u32>| RuleEntry {
            priority,
            table,
            action: 1,
            protocol: 15,
            invert: false,
            src: None,
            dst: None,
            tos: 0,
            fwmark: mark.map(|m| (m, u32::MAX)),
            iif: None,
            oif: None,
            goto: None,
            suppress_prefixlen: None,
        };
        Kernel {
            links: [
                ("lo".to_string(), link(1, "lo", true)),
                ("eth1".to_string(), link(2, "eth1", true)),
            ]
            .into(),
            addresses: vec![
                addr("lo", "127.0.0.1", 8),
                addr("eth1", "169.254.69.30", 32),
                addr("eth1", "10.0.0.18", 32),
            ],
            routes: vec![
                expect::parse_route(
                    "169.254.96.141 dev eth1 proto ntk scope link src 169.254.69.30",
                    254,
                )
                .unwrap(),
                expect::parse_route("unreachable 10.0.0.0/29 proto ntk", 251).unwrap(),
                expect::parse_route("unreachable 10.0.0.0/29 proto ntk", 250).unwrap(),
                expect::parse_route("10.0.0.41 via 169.254.110.188 dev eth1", 251).unwrap(),
            ],
            rules: vec![
                rule(32766, 254, None),
                rule(0, 255, None),
                rule(32764, 250, Some(250)),
                rule(32764, 249, Some(249)),
                rule(32765, 251, None),
                rule(32767, 253, None),
            ],
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn addresses_are_a_set_per_interface() {
        let k = kernel();
        let want = |v: &[&str]| BTreeMap::from([("eth1".to_string(), s(v))]);
        assert!(addresses(&k, &want(&["10.0.0.18", "169.254.69.30/32"])).is_empty());
        let e = addresses(&k, &want(&["10.0.0.18/32"]));
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("unexpected [169.254.69.30/32]"), "{e:?}");
        let e = addresses(&k, &BTreeMap::from([("eth7".to_string(), s(&[]))]));
        assert!(e[0].contains("no such interface"));
    }

    #[test]
    fn rules_in_order_with_groups() {
        let k = kernel();
        let one = |t: &str| RuleItem::One(t.into());
        let fw = RuleItem::AnyOrder(s(&["fwmark 249 lookup 249", "fwmark 250 lookup 250"]));
        let good = [
            one("local"),
            fw.clone(),
            one("lookup 251"),
            one("main"),
            one("default"),
        ];
        assert!(rules(&k, &good).is_empty());
        // The fwmark rules after lookup 251, or one missing: not the order.
        let late = [
            one("local"),
            one("lookup 251"),
            fw,
            one("main"),
            one("default"),
        ];
        let e = rules(&k, &late);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("got [local, fwmark 250 lookup 250, fwmark 249 lookup 249, lookup 251, main, default], expected [local, lookup 251, {"),
            "{e:?}"
        );
        assert_eq!(rules(&k, &good[..4]).len(), 1, "default left out");
    }

    #[test]
    fn main_is_a_set_of_routes() {
        let k = kernel();
        assert!(main_table(
            &k,
            "169.254.96.141 src 169.254.69.30 dev eth1 scope link proto ntk\n"
        )
        .is_empty());
        let e = main_table(&k, "169.254.96.141 dev eth1 scope link src 169.254.69.30");
        assert!(
            e[0].contains("missing [169.254.96.141 dev eth1 scope link src"),
            "{e:?}"
        );
        assert!(main_table(&k, "").len() == 1);
    }

    #[test]
    fn tables_of_every_owner_or_ntk_only() {
        let k = kernel();
        let want = crate::listing::parse_tables(
            "table 251\n unreachable: .0/29\ntable 250\n unreachable: .0/29\n",
        )
        .unwrap();
        assert!(tables(&k, &want, false, false).is_empty());
        let e = tables(&k, &want, true, false);
        assert_eq!(
            e,
            ["table 251: 10.0.0.41 via 169.254.110.188 dev eth1 not expected"]
        );
        let with = crate::listing::parse_tables(
            "table 251\n unreachable: .0/29\n via 169.254.110.188 dev eth1: .41/32\ntable 250\n unreachable: .0/29\n",
        )
        .unwrap();
        assert!(tables(&k, &with, true, false).is_empty());
        let only = crate::listing::parse_tables("table 250\n unreachable: .0/29\n").unwrap();
        assert_eq!(
            tables(&k, &only, false, false).len(),
            1,
            "table 251 not listed"
        );
        assert!(tables(&k, &only, false, true).is_empty(), "subset");
    }

    #[test]
    fn fwmark_rules_both_ways() {
        let k = kernel();
        assert!(fwmark_rules(&k, &BTreeMap::from([(250, true), (248, false)])).is_empty());
        let e = fwmark_rules(&k, &BTreeMap::from([(250, false), (248, true)]));
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn links_and_the_classifier() {
        let k = kernel();
        let want = BTreeMap::from([(
            "eth1".to_string(),
            LinkExpect {
                up: Some(true),
                classifier: Some(true),
                ..Default::default()
            },
        )]);
        assert!(links(&k, &want, |_| Ok(vec!["classify".into()])).is_empty());
        assert!(links(&k, &want, |_| Ok(vec!["fastpath".into()])).is_empty());
        let e = links(&k, &want, |_| {
            Ok(vec!["classify".into(), "fastpath".into()])
        });
        assert!(e[0].contains("attached 2 times"), "{e:?}");
        let e = links(&k, &want, |_| Ok(vec![]));
        assert!(e[0].contains("attached 0 times"), "{e:?}");
        let down = BTreeMap::from([(
            "lo".to_string(),
            LinkExpect {
                up: Some(false),
                ..Default::default()
            },
        )]);
        assert_eq!(links(&k, &down, |_| Ok(vec![])), ["lo: up, expected down"]);
    }

    #[test]
    fn nat_and_namespaces() {
        let rs = "table ip ntkplane {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip daddr 10.0.0.64/27 snat to 10.0.0.18\n\t}\n}\n";
        assert!(nat(rs, &s(&["ip daddr 10.0.0.64/27  snat to 10.0.0.18"])).is_empty());
        assert_eq!(nat(rs, &s(&[])).len(), 1);
        let got: BTreeSet<String> = ["migr01".to_string()].into();
        assert!(namespaces(&got, &s(&["migr01"])).is_empty());
        assert!(namespaces(&got, &s(&[]))[0].contains("unexpected [migr01]"));
    }
}
