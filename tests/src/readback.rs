//! Reading a namespace back the way an administrator would: `ip -j`, `nft -j`, `bpftool`.
//! The readers are the lab's (`ntkplane_lab::readback`); here they panic on error, as
//! tests want.
use std::collections::{BTreeMap, BTreeSet};

use ntkplane::{addr::Ipv4Prefix, plan::KRoute};
use ntkplane_lab::readback as rb;

use crate::lab::Ns;

/// Output of `sh -c cmd` inside the named namespace.
pub fn sh_in(netns: &str, cmd: &str) -> String {
    rb::sh_in(netns, cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// `ip -j route show table N` as prefix → route.
pub fn table(ns: &Ns, id: u32) -> BTreeMap<Ipv4Prefix, KRoute> {
    table_in(&ns.name, id)
}

/// [`table`] in a namespace given by name (an identity namespace a daemon created).
pub fn table_in(netns: &str, id: u32) -> BTreeMap<Ipv4Prefix, KRoute> {
    rb::table_in(netns, id).unwrap_or_else(|e| panic!("{e}"))
}

/// `ip -j rule` entries with protocol ntk, as (priority, fwmark, table).
pub fn ntk_rules(ns: &Ns) -> Vec<(u64, Option<String>, String)> {
    ntk_rules_in(&ns.name)
}

/// [`ntk_rules`] in a namespace given by name.
pub fn ntk_rules_in(netns: &str) -> Vec<(u64, Option<String>, String)> {
    rb::ntk_rules_in(netns).unwrap_or_else(|e| panic!("{e}"))
}

/// Table ids holding routes of protocol ntk.
pub fn ntk_tables_in(netns: &str) -> BTreeSet<u32> {
    rb::ntk_tables_in(netns).unwrap_or_else(|e| panic!("{e}"))
}

/// The classifier's MAC → mark entries, read from its pinned map with `bpftool`.
pub fn pinned_marks(pin_dir: &std::path::Path) -> BTreeMap<String, u32> {
    rb::pinned_marks(pin_dir).unwrap_or_else(|e| panic!("{e}"))
}

/// Everything a cleanup must restore, as text: addresses, routes of all tables, rules, the
/// whole nft ruleset.
pub fn full_dump(ns: &Ns) -> String {
    // IPv4 only: ntkplane manages no IPv6, whose link-local DAD flags change on their own.
    [
        "ip -4 -j addr show",
        "ip -4 -j route show table all",
        "ip -4 -j rule show",
        "nft -j list ruleset",
    ]
    .iter()
    .map(|c| format!("== {c}\n{}", ns.sh(c)))
    .collect()
}
