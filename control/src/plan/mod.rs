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

    /// Every table id holding a route.
    pub fn tables(&self) -> BTreeSet<u32> {
        self.routes.keys().map(|(t, _)| *t).collect()
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
