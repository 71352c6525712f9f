//! Reading a namespace back as the daemon reads it: rtnetlink (numeric table ids), `/proc/sys`
//! from inside the namespace, the classifier's pinned map through aya, and `nft` for
//! nftables. The readers are the lab's (`ntkplane_lab::readback`); here they panic on error,
//! as tests want. Text readers render iproute2's line format, tables as numbers.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ntkplane::{
    addr::Ipv4Prefix,
    kernel::rtnl::{Link, RouteEntry},
    plan::{KRoute, KRule},
};
use ntkplane_lab::readback as rb;

use crate::lab::Ns;

fn must<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Output of `sh -c cmd` inside the named namespace (for `nft`).
pub fn sh_in(netns: &str, cmd: &str) -> String {
    must(rb::sh_in(netns, cmd))
}

/// Table `id` as prefix → route (every protocol).
pub fn table(ns: &Ns, id: u32) -> BTreeMap<Ipv4Prefix, KRoute> {
    table_in(&ns.name, id)
}

/// [`table`] in a namespace given by name (an identity namespace a daemon created).
pub fn table_in(netns: &str, id: u32) -> BTreeMap<Ipv4Prefix, KRoute> {
    must(rb::table_in(netns, id))
}

/// ntkplane's rules (protocol ntk).
pub fn ntk_rules(ns: &Ns) -> Vec<KRule> {
    ntk_rules_in(&ns.name)
}

/// [`ntk_rules`] in a namespace given by name.
pub fn ntk_rules_in(netns: &str) -> Vec<KRule> {
    must(rb::ntk_rules_in(netns))
}

/// Table ids holding routes of protocol ntk.
pub fn ntk_tables_in(netns: &str) -> BTreeSet<u32> {
    must(rb::ntk_tables_in(netns))
}

/// The classifier's MAC → mark entries, read from its pinned map.
pub fn pinned_marks(pin_dir: &std::path::Path) -> BTreeMap<String, u32> {
    must(rb::pinned_marks(pin_dir))
}

/// IPv4 addresses as `ip -4 -o addr show [dev DEV]` prints them (lifetimes left out).
pub fn addresses_text(netns: &str, dev: Option<&str>) -> String {
    rb::addresses_text(&must(rb::addresses_in(netns)), dev)
}

/// Routes as `ip route show table ID` (`None`: `table all`, with `table N` on each line
/// but main's) prints them.
pub fn routes_text(netns: &str, table: Option<u32>) -> String {
    rb::routes_text(&must(rb::routes_in(netns)), table)
}

/// Rules as `ip rule show` prints them.
pub fn rules_text(netns: &str) -> String {
    rb::rules_text(&must(rb::rules_in(netns)))
}

/// The namespace's links by name (kind, macvlan mode, MAC, admin state, MTU).
pub fn links_in(netns: &str) -> BTreeMap<String, Link> {
    must(rb::links_in(netns))
}

/// A sysctl of the namespace (`net/ipv4/ip_forward`), trimmed.
pub fn sysctl_in(netns: &str, key: &str) -> String {
    must(rb::sysctl_in(netns, key))
}

/// The kernel's route lookup (`ip route get DST from SRC iif DEV mark M`).
pub fn route_get_in(
    netns: &str,
    dst: Ipv4Addr,
    from: Option<Ipv4Addr>,
    iif: Option<&str>,
    mark: Option<u32>,
) -> RouteEntry {
    must(rb::route_get_in(netns, dst, from, iif, mark))
}

/// Everything a cleanup must restore, as text: links, IPv4 addresses, routes of all tables,
/// rules, the whole nft ruleset (`nft -j`).
pub fn dump_in(netns: &str) -> String {
    // IPv4 only: ntkplane manages no IPv6, whose link-local DAD flags change on their own.
    format!(
        "{}== nft -j list ruleset\n{}",
        must(rb::kernel_in(netns)).dump(),
        sh_in(netns, "nft -j list ruleset")
    )
}

/// [`dump_in`] of a test namespace.
pub fn full_dump(ns: &Ns) -> String {
    dump_in(&ns.name)
}
