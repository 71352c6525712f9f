//! What one network namespace must contain, as kernel objects, and the ordered list of
//! operations that turns an observed namespace into it. Pure: no kernel access here.
//!
//! The model is keyed the way the kernel keys its objects (a route by table and prefix, an
//! address by device and address, a rule by priority, selector and table), so a diff is a
//! set difference and re-applying an unchanged state yields no operation.
pub mod diff;
pub mod nat;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use serde::{Deserialize, Serialize};

pub use diff::{diff, Op};
pub use nat::NatState;

use crate::{
    addr::Ipv4Prefix,
    fwd::{ForwardingState, Route},
    mac::MacAddr,
};

/// Table `main`, where the direct routes to neighbour link-locals live.
pub const MAIN_TABLE: u32 = 254;

/// A route as the kernel holds it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum KRoute {
    Unreachable,
    Blackhole,
    /// `via <gw> dev <dev> [src <src>]`
    Via {
        gw: Ipv4Addr,
        dev: String,
        src: Option<Ipv4Addr>,
    },
    /// `dev <dev> scope link src <src>`: a direct route to a neighbour's link-local.
    Link {
        dev: String,
        src: Ipv4Addr,
    },
}

impl From<&Route> for KRoute {
    fn from(r: &Route) -> Self {
        match r {
            Route::Unreachable => KRoute::Unreachable,
            Route::Blackhole => KRoute::Blackhole,
            Route::Via { gw, dev, src } => KRoute::Via {
                gw: *gw,
                dev: dev.clone(),
                src: *src,
            },
        }
    }
}

/// `ip rule [fwmark M/mask] lookup T pref P`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KRule {
    pub priority: u32,
    /// (mark, mask)
    pub fwmark: Option<(u32, u32)>,
    pub table: u32,
}

/// The kernel objects ntkplane owns in one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelState {
    /// (device, address), all /32.
    pub addresses: BTreeSet<(String, Ipv4Addr)>,
    /// (table, prefix) → route.
    pub routes: BTreeMap<(u32, Ipv4Prefix), KRoute>,
    pub rules: BTreeSet<KRule>,
    /// Classifier entries: source MAC → mark.
    pub marks: BTreeMap<MacAddr, u32>,
    pub nat: NatState,
}

impl KernelState {
    /// The kernel form of one identity's forwarding state. `mark_mask` is the part of the
    /// packet mark ntkplane owns: rules match only those bits.
    pub fn from_forwarding(st: &ForwardingState, mark_mask: u32) -> Self {
        let mut k = KernelState::default();
        for a in &st.addresses {
            k.addresses.insert((a.dev.clone(), a.addr));
        }
        for t in st.tables.values() {
            for (p, r) in &t.routes {
                k.routes.insert((t.id, *p), r.into());
            }
        }
        for n in &st.neighbour_routes {
            k.routes.insert(
                (MAIN_TABLE, Ipv4Prefix::host(n.dst)),
                KRoute::Link {
                    dev: n.dev.clone(),
                    src: n.src,
                },
            );
        }
        for r in &st.rules {
            k.rules.insert(KRule {
                priority: r.priority,
                fwmark: r.fwmark.map(|m| (m, mark_mask)),
                table: r.table,
            });
        }
        k.marks = st.marks.clone();
        k.nat = NatState::new(st.snat, &st.netmap);
        k
    }

    /// Merges another namespace-part into this one (several identities never share a
    /// namespace, but tests and the lab compose states).
    pub fn merge(&mut self, other: KernelState) {
        self.addresses.extend(other.addresses);
        self.routes.extend(other.routes);
        self.rules.extend(other.rules);
        self.marks.extend(other.marks);
        if !other.nat.is_empty() {
            self.nat = other.nat;
        }
    }

    /// What the namespace holds once `ops` (a [`diff`] against this state) are done: the
    /// kernel view a reconciler keeps between observations. `apply_ops(diff(d, self))`
    /// makes `self` equal to `d` (tested below), so a cache kept this way costs the size of
    /// the change, not a copy of the whole state.
    pub fn apply_ops(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::AddAddress { dev, addr } => {
                    self.addresses.insert((dev.clone(), *addr));
                }
                Op::DelAddress { dev, addr } => {
                    self.addresses.remove(&(dev.clone(), *addr));
                }
                Op::ReplaceRoute {
                    table,
                    prefix,
                    route,
                } => {
                    self.routes.insert((*table, *prefix), route.clone());
                }
                Op::DelRoute { table, prefix } => {
                    self.routes.remove(&(*table, *prefix));
                }
                Op::AddRule(r) => {
                    self.rules.insert(*r);
                }
                Op::DelRule(r) => {
                    self.rules.remove(r);
                }
                Op::SetMark { mac, mark } => {
                    self.marks.insert(*mac, *mark);
                }
                Op::DelMark { mac } => {
                    self.marks.remove(mac);
                }
                Op::SetNat(n) => self.nat = n.clone(),
            }
        }
    }

    /// The part of this state a [`diff`] restricted to route `keys` looks at: those routes
    /// (where held), and every address, rule, mark and the NAT (small, and cheap to compare).
    /// Diffing two restrictions to the same keys gives exactly the operations of the full
    /// diff that concern those keys and the small sets, in the full diff's order.
    pub fn restricted<'a>(&self, keys: impl IntoIterator<Item = &'a (u32, Ipv4Prefix)>) -> Self {
        KernelState {
            addresses: self.addresses.clone(),
            routes: keys
                .into_iter()
                .filter_map(|k| self.routes.get(k).map(|r| (*k, r.clone())))
                .collect(),
            rules: self.rules.clone(),
            marks: self.marks.clone(),
            nat: self.nat.clone(),
        }
    }

    /// Every table id holding a route.
    pub fn tables(&self) -> BTreeSet<u32> {
        self.routes.keys().map(|(t, _)| *t).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Ipv4Prefix {
        s.parse().unwrap()
    }
    fn via(gw: &str, dev: &str) -> KRoute {
        KRoute::Via {
            gw: gw.parse().unwrap(),
            dev: dev.into(),
            src: None,
        }
    }

    /// Two states that differ in every kind of object.
    fn pair() -> (KernelState, KernelState) {
        let mut a = KernelState::default();
        a.addresses
            .insert(("eth1".into(), "10.0.0.1".parse().unwrap()));
        a.routes
            .insert((250, p("10.1.0.0/16")), KRoute::Unreachable);
        a.routes
            .insert((250, p("10.2.0.0/16")), via("169.254.0.2", "eth1"));
        a.routes.insert(
            (MAIN_TABLE, p("169.254.0.2/32")),
            KRoute::Link {
                dev: "eth1".into(),
                src: "169.254.0.1".parse().unwrap(),
            },
        );
        a.rules.insert(KRule {
            priority: 32764,
            fwmark: Some((250, u32::MAX)),
            table: 250,
        });
        a.marks.insert("02:00:00:00:00:01".parse().unwrap(), 250);
        let mut b = KernelState::default();
        b.addresses
            .insert(("eth1".into(), "10.0.0.2".parse().unwrap()));
        b.routes
            .insert((250, p("10.1.0.0/16")), via("169.254.0.3", "eth1"));
        b.routes.insert((251, p("10.3.0.0/16")), KRoute::Blackhole);
        b.rules.insert(KRule {
            priority: 32764,
            fwmark: Some((251, u32::MAX)),
            table: 251,
        });
        b.marks.insert("02:00:00:00:00:02".parse().unwrap(), 251);
        b.nat.snat = Some((p("10.0.0.0/24"), "10.0.0.2".parse().unwrap()));
        (a, b)
    }

    #[test]
    fn applying_a_diff_reaches_the_desired_state() {
        let (a, b) = pair();
        for (want, have) in [
            (&a, &b),
            (&b, &a),
            (&a, &KernelState::default()),
            (&KernelState::default(), &b),
        ] {
            let mut k = have.clone();
            k.apply_ops(&diff(want, &k));
            assert_eq!(&k, want);
            assert!(diff(want, &k).is_empty(), "a second diff finds nothing");
        }
    }

    #[test]
    fn a_restricted_diff_is_the_full_diff_of_those_keys() {
        let (a, b) = pair();
        let keys = [(250, p("10.1.0.0/16")), (251, p("10.3.0.0/16"))];
        let part = diff(&a.restricted(&keys), &b.restricted(&keys));
        let full: Vec<Op> = diff(&a, &b)
            .into_iter()
            .filter(|o| match o {
                Op::ReplaceRoute { table, prefix, .. } | Op::DelRoute { table, prefix } => {
                    keys.contains(&(*table, *prefix))
                }
                _ => true,
            })
            .collect();
        assert_eq!(part, full);
        assert!(part
            .iter()
            .any(|o| matches!(o, Op::DelRoute { table: 251, .. })));
        assert!(!part.iter().any(|o| matches!(
            o,
            Op::ReplaceRoute {
                table: MAIN_TABLE,
                ..
            }
        )));
    }
}

/// The desired content of one namespace (what the reconciler converges it to).
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// Interfaces ntkplane manages here: up, the spec's sysctls, the classifier attached.
    pub interfaces: Vec<String>,
    pub state: KernelState,
    /// Table names for the rt_tables file.
    pub table_names: std::collections::BTreeMap<u32, String>,
}
