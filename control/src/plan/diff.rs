//! The ordered operations from an observed namespace to the desired one.
//!
//! Order (lifecycle.md ordering rules, forwarding-state.md §11):
//! 1. addresses are added before anything uses them (routes' `src`, SNAT, NETMAP);
//! 2. direct routes to neighbour link-locals exist before any `via` uses them;
//! 3. rules that must go are deleted before their table changes (rule → flush → unmark);
//! 4. marks are set, then tables are filled (replace: a route changes in place);
//! 5. a table is complete before its rule is added;
//! 6. NAT follows the addresses it is based on (after additions, before removals);
//! 7. then stale table routes, stale marks, stale direct routes (no `via` uses them any
//!    more), and stale addresses last.
use serde::Serialize;

use super::{KRoute, KRule, KernelState, NatState, MAIN_TABLE};
use crate::{addr::Ipv4Prefix, mac::MacAddr};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    AddAddress {
        dev: String,
        addr: std::net::Ipv4Addr,
    },
    DelAddress {
        dev: String,
        addr: std::net::Ipv4Addr,
    },
    /// Add or change in place (NLM_F_REPLACE).
    ReplaceRoute {
        table: u32,
        prefix: Ipv4Prefix,
        route: KRoute,
    },
    DelRoute {
        table: u32,
        prefix: Ipv4Prefix,
    },
    AddRule(KRule),
    DelRule(KRule),
    SetMark {
        mac: MacAddr,
        mark: u32,
    },
    DelMark {
        mac: MacAddr,
    },
    /// Replace ntkplane's nftables table as a whole (one atomic transaction); an empty
    /// state deletes the table.
    SetNat(NatState),
}

/// Operations turning `observed` into `desired`; empty when they are equal.
pub fn diff(desired: &KernelState, observed: &KernelState) -> Vec<Op> {
    let mut ops = Vec::new();
    let is_main = |t: u32| t == MAIN_TABLE;

    // 1. addresses
    for (dev, addr) in desired.addresses.difference(&observed.addresses) {
        ops.push(Op::AddAddress {
            dev: dev.clone(),
            addr: *addr,
        });
    }
    // 2. direct routes (table main), added or changed
    let changed = |k: &(u32, Ipv4Prefix), r: &KRoute| observed.routes.get(k) != Some(r);
    for (k, r) in desired
        .routes
        .iter()
        .filter(|(k, r)| is_main(k.0) && changed(k, r))
    {
        ops.push(Op::ReplaceRoute {
            table: k.0,
            prefix: k.1,
            route: r.clone(),
        });
    }
    // 3. rules that go
    for r in observed.rules.difference(&desired.rules) {
        ops.push(Op::DelRule(*r));
    }
    // 4. marks, then table routes
    for (mac, mark) in &desired.marks {
        if observed.marks.get(mac) != Some(mark) {
            ops.push(Op::SetMark {
                mac: *mac,
                mark: *mark,
            });
        }
    }
    for (k, r) in desired
        .routes
        .iter()
        .filter(|(k, r)| !is_main(k.0) && changed(k, r))
    {
        ops.push(Op::ReplaceRoute {
            table: k.0,
            prefix: k.1,
            route: r.clone(),
        });
    }
    // 5. stale routes of tables (before new rules: a rule never points at leftovers)
    for k in observed
        .routes
        .keys()
        .filter(|k| !is_main(k.0) && !desired.routes.contains_key(k))
    {
        ops.push(Op::DelRoute {
            table: k.0,
            prefix: k.1,
        });
    }
    for r in desired.rules.difference(&observed.rules) {
        ops.push(Op::AddRule(*r));
    }
    // 6. NAT
    if desired.nat != observed.nat {
        ops.push(Op::SetNat(desired.nat.clone()));
    }
    // 7. removals
    for mac in observed
        .marks
        .keys()
        .filter(|m| !desired.marks.contains_key(m))
    {
        ops.push(Op::DelMark { mac: *mac });
    }
    for k in observed
        .routes
        .keys()
        .filter(|k| is_main(k.0) && !desired.routes.contains_key(k))
    {
        ops.push(Op::DelRoute {
            table: k.0,
            prefix: k.1,
        });
    }
    for (dev, addr) in observed.addresses.difference(&desired.addresses) {
        ops.push(Op::DelAddress {
            dev: dev.clone(),
            addr: *addr,
        });
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn p(s: &str) -> Ipv4Prefix {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn via(gw: &str) -> KRoute {
        KRoute::Via {
            gw: ip(gw),
            dev: "eth1".into(),
            src: None,
        }
    }
    fn pos(ops: &[Op], f: impl Fn(&Op) -> bool) -> usize {
        ops.iter().position(f).expect("op present")
    }

    fn sample() -> KernelState {
        let mut k = KernelState::default();
        k.addresses.insert(("eth1".into(), ip("10.0.0.26")));
        k.routes.insert(
            (MAIN_TABLE, p("169.254.96.141/32")),
            KRoute::Link {
                dev: "eth1".into(),
                src: ip("169.254.69.30"),
            },
        );
        k.routes
            .insert((250, p("10.0.0.0/29")), via("169.254.96.141"));
        k.routes.insert((250, p("10.0.0.8/29")), KRoute::Blackhole);
        k.rules.insert(KRule {
            priority: 32764,
            fwmark: Some((250, u32::MAX)),
            table: 250,
        });
        k.marks.insert("00:16:3E:EC:A3:E1".parse().unwrap(), 250);
        k.nat.snat = Some((p("10.0.0.64/27"), ip("10.0.0.26")));
        k
    }

    #[test]
    fn equal_states_need_nothing() {
        assert!(diff(&sample(), &sample()).is_empty());
        assert!(diff(&KernelState::default(), &KernelState::default()).is_empty());
    }

    #[test]
    fn building_from_nothing_follows_the_safe_order() {
        let ops = diff(&sample(), &KernelState::default());
        let addr = pos(&ops, |o| matches!(o, Op::AddAddress { .. }));
        let direct = pos(&ops, |o| {
            matches!(
                o,
                Op::ReplaceRoute {
                    table: MAIN_TABLE,
                    ..
                }
            )
        });
        let mark = pos(&ops, |o| matches!(o, Op::SetMark { .. }));
        let route = pos(&ops, |o| matches!(o, Op::ReplaceRoute { table: 250, .. }));
        let rule = pos(&ops, |o| matches!(o, Op::AddRule(_)));
        let nat = pos(&ops, |o| matches!(o, Op::SetNat(_)));
        assert!(
            addr < direct && direct < route,
            "direct route before any via: {ops:?}"
        );
        assert!(
            mark < rule && route < rule,
            "table complete before its rule"
        );
        assert!(addr < nat, "addresses before SNAT");
        assert_eq!(ops.len(), 7);
    }

    #[test]
    fn tearing_down_follows_the_reverse_order() {
        let ops = diff(&KernelState::default(), &sample());
        let rule = pos(&ops, |o| matches!(o, Op::DelRule(_)));
        let route = pos(&ops, |o| matches!(o, Op::DelRoute { table: 250, .. }));
        let mark = pos(&ops, |o| matches!(o, Op::DelMark { .. }));
        let nat = pos(&ops, |o| matches!(o, Op::SetNat(s) if s.is_empty()));
        let direct = pos(&ops, |o| {
            matches!(
                o,
                Op::DelRoute {
                    table: MAIN_TABLE,
                    ..
                }
            )
        });
        let addr = pos(&ops, |o| matches!(o, Op::DelAddress { .. }));
        assert!(rule < route && route < mark, "rule → flush → unmark");
        assert!(nat < addr, "SNAT goes before the address it uses");
        assert!(route < direct, "no via left when the direct route goes");
        assert_eq!(addr, ops.len() - 1);
    }

    #[test]
    fn a_changed_route_is_replaced_in_place() {
        let mut want = sample();
        want.routes
            .insert((250, p("10.0.0.0/29")), KRoute::Unreachable);
        let ops = diff(&want, &sample());
        assert_eq!(
            ops,
            vec![Op::ReplaceRoute {
                table: 250,
                prefix: p("10.0.0.0/29"),
                route: KRoute::Unreachable
            }]
        );
    }

    #[test]
    fn neighbour_mac_swap_rekeys_table_mark_and_rule() {
        // α when β₁ moves (DettagliOperazioni8): …EC:A3:E1 (250) replaced by …EE:AF:D1 (250).
        let mut want = sample();
        want.marks.clear();
        want.marks.insert("00:16:3E:EE:AF:D1".parse().unwrap(), 250);
        let ops = diff(&want, &sample());
        assert_eq!(ops.len(), 2);
        assert!(matches!(ops[0], Op::SetMark { mark: 250, .. }));
        assert!(matches!(ops[1], Op::DelMark { .. }));
    }
}
