//! Reading a namespace's kernel state back, for the lab's checks and the integration tests,
//! the way the daemon reads it: rtnetlink through [`ntkplane::kernel::rtnl`] (numeric table
//! ids, so names in `/etc/iproute2/rt_tables.d` change nothing), `/proc/sys` from a thread
//! inside the namespace, the classifier's pinned map through aya. Where a check matches
//! text, the objects are rendered here in iproute2's own line format, every table as a
//! number (`table 251`, `lookup 254`: main, local and default too), IPv4 only.
//! Errors are strings naming the namespace.
//!
//! Only `nft` is still run as a command ([`sh_in`]): the daemon drives nftables with it too.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::Ipv4Addr,
    path::Path,
    process::Command,
};

use ntkplane::{
    addr::Ipv4Prefix,
    kernel::{
        in_netns,
        rtnl::{AddressEntry, Link, RouteEntry, Rtnl, RtnlError, RuleEntry},
        sysctl,
    },
    netns::Netns,
    plan::{KRoute, KRule, MAIN_TABLE},
};

/// Output of `sh -c cmd` inside the named namespace (the scenarios' `shell` steps, `nft`).
pub fn sh_in(netns: &str, cmd: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "sh", "-c", cmd])
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("cannot run ip netns exec: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "[{netns}] {cmd}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `f` on a netlink connection opened inside `netns`.
fn rtnl_in<T: Send>(
    netns: &str,
    f: impl AsyncFnOnce(&Rtnl) -> Result<T, RtnlError> + Send,
) -> Result<T, String> {
    in_netns(&Netns::named(netns), |rt| {
        rt.block_on(async {
            let r = Rtnl::connect().await?;
            f(&r).await
        })
    })
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("[{netns}] {e}"))
}

/// A namespace's links, IPv4 addresses, routes (every table) and rules, read at once.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub links: BTreeMap<String, Link>,
    pub addresses: Vec<AddressEntry>,
    pub routes: Vec<RouteEntry>,
    pub rules: Vec<RuleEntry>,
}

impl Kernel {
    /// The text the `contains`/`absent` checks search: what `ip -4 -o addr show`,
    /// `ip -4 route show table all` and `ip -4 rule show` print, tables as numbers.
    pub fn text(&self) -> String {
        addresses_text(&self.addresses, None)
            + &routes_text(&self.routes, None)
            + &rules_text(&self.rules)
    }

    /// Everything a cleanup must restore, as text: links, then [`Kernel::text`].
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for l in self.links.values() {
            let _ = writeln!(s, "{}", render_link(l));
        }
        s + &self.text()
    }
}

/// [`Kernel`] of the named namespace.
pub fn kernel_in(netns: &str) -> Result<Kernel, String> {
    rtnl_in(netns, async |r: &Rtnl| {
        Ok(Kernel {
            links: r.links().clone(),
            addresses: r.all_addresses().await?,
            routes: r.all_routes().await?,
            rules: r.all_rules().await?,
        })
    })
}

/// The namespace's links by name.
pub fn links_in(netns: &str) -> Result<BTreeMap<String, Link>, String> {
    rtnl_in(netns, async |r: &Rtnl| Ok(r.links().clone()))
}

/// The namespace's IPv4 addresses.
pub fn addresses_in(netns: &str) -> Result<Vec<AddressEntry>, String> {
    rtnl_in(netns, async |r: &Rtnl| r.all_addresses().await)
}

/// The namespace's IPv4 routes, every table and protocol.
pub fn routes_in(netns: &str) -> Result<Vec<RouteEntry>, String> {
    rtnl_in(netns, async |r: &Rtnl| r.all_routes().await)
}

/// The namespace's IPv4 rules.
pub fn rules_in(netns: &str) -> Result<Vec<RuleEntry>, String> {
    rtnl_in(netns, async |r: &Rtnl| r.all_rules().await)
}

/// The kernel's route lookup (`ip route get DST [from SRC] [iif DEV] [mark M]`).
pub fn route_get_in(
    netns: &str,
    dst: Ipv4Addr,
    from: Option<Ipv4Addr>,
    iif: Option<&str>,
    mark: Option<u32>,
) -> Result<RouteEntry, String> {
    rtnl_in(netns, async |r: &Rtnl| {
        r.route_get(dst, from, iif, mark).await
    })
}

/// A sysctl of the namespace (`net/ipv4/ip_forward`), read from `/proc/sys` by a thread
/// inside it.
pub fn sysctl_in(netns: &str, key: &str) -> Result<String, String> {
    Netns::named(netns)
        .run(|| sysctl::read(key))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("[{netns}] /proc/sys/{key}: {e}"))
}

/// Table `id` as prefix → route, every route whatever its protocol; an error names a route
/// ntkplane's model cannot express.
pub fn table_in(netns: &str, id: u32) -> Result<BTreeMap<Ipv4Prefix, KRoute>, String> {
    let mut out = BTreeMap::new();
    for r in routes_in(netns)?.iter().filter(|r| r.table == id) {
        let k = r.kroute().ok_or_else(|| {
            format!(
                "[{netns}] table {id}: unexpected route {}",
                render_route(r, true)
            )
        })?;
        out.insert(r.dst, k);
    }
    Ok(out)
}

/// A route keyed by (table, prefix).
type TableRoute = ((u32, Ipv4Prefix), KRoute);

/// ntkplane's routes (protocol ntk), every table.
fn ntk_routes_in(netns: &str) -> Result<Vec<TableRoute>, String> {
    rtnl_in(netns, async |r: &Rtnl| r.routes().await)
}

/// [`table_in`] restricted to ntkplane's routes (protocol ntk): what an administrator added
/// to the same table is not the daemon's state.
pub fn ntk_table_in(netns: &str, id: u32) -> Result<BTreeMap<Ipv4Prefix, KRoute>, String> {
    Ok(ntk_routes_in(netns)?
        .into_iter()
        .filter(|((t, _), _)| *t == id)
        .map(|((_, p), r)| (p, r))
        .collect())
}

/// Table ids holding routes of protocol ntk (main included: the daemon's link routes).
pub fn ntk_tables_in(netns: &str) -> Result<BTreeSet<u32>, String> {
    Ok(ntk_routes_in(netns)?
        .into_iter()
        .map(|((t, _), _)| t)
        .collect())
}

/// ntkplane's rules (protocol ntk), in priority order.
pub fn ntk_rules_in(netns: &str) -> Result<Vec<KRule>, String> {
    rtnl_in(netns, async |r: &Rtnl| {
        Ok(r.rules().await?.into_iter().map(|(k, _)| k).collect())
    })
}

/// `nft list ruleset` of the namespace: nft run from a thread inside it (no `ip netns exec`,
/// so that `during` windows can sample it often).
pub fn nft_ruleset_in(netns: &str) -> Result<String, String> {
    let out = Netns::named(netns)
        .run(|| {
            Command::new("nft")
                .args(["list", "ruleset"])
                .env("LC_ALL", "C")
                .output()
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "[{netns}] nft list ruleset: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The labels of the identity namespaces of daemon instance `instance` that exist on the
/// host (`<instance>-<label>`, e.g. `migr01`).
pub fn identity_namespaces(instance: &str) -> BTreeSet<String> {
    let prefix = format!("{instance}-");
    std::fs::read_dir(ntkplane::netns::NETNS_RUN_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

/// The names of the programs attached to `iface`'s TCX ingress in `netns`, in their order
/// (the kernel's BPF_PROG_QUERY through aya).
pub fn tcx_ingress_in(netns: &str, iface: &str) -> Result<Vec<String>, String> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let (_, progs) = Netns::named(netns)
        .run(|| SchedClassifier::query_tcx(iface, TcAttachType::Ingress))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("[{netns}] {iface}: TCX ingress query: {e}"))?;
    Ok(progs
        .iter()
        .map(|p| p.name_as_str().unwrap_or("?").to_string())
        .collect())
}

/// The classifier's MAC → mark entries, read from its pinned map (MACs in upper case).
pub fn pinned_marks(pin_dir: &Path) -> Result<BTreeMap<String, u32>, String> {
    Ok(ntkplane::classifier::pinned_entries(pin_dir)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(mac, e)| (mac.to_string(), e.mark))
        .collect())
}

// ---- Rendering, in iproute2's line format (tables as numbers) ----

/// RTN_* names, as iproute2 prints route types.
pub(crate) fn route_type(t: u8) -> String {
    match t {
        0 => "none".into(),
        1 => "unicast".into(),
        2 => "local".into(),
        3 => "broadcast".into(),
        4 => "anycast".into(),
        5 => "multicast".into(),
        6 => "blackhole".into(),
        7 => "unreachable".into(),
        8 => "prohibit".into(),
        9 => "throw".into(),
        10 => "nat".into(),
        11 => "xresolve".into(),
        n => n.to_string(),
    }
}

/// RTPROT_* names (iproute2's built-in `rt_protos`).
pub(crate) fn protocol(p: u8) -> String {
    match p {
        0 => "unspec".into(),
        1 => "redirect".into(),
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        8 => "gated".into(),
        9 => "ra".into(),
        10 => "mrt".into(),
        11 => "zebra".into(),
        12 => "bird".into(),
        13 => "dnrouted".into(),
        14 => "xorp".into(),
        15 => "ntk".into(),
        16 => "dhcp".into(),
        18 => "keepalived".into(),
        42 => "babel".into(),
        186 => "bgp".into(),
        187 => "isis".into(),
        188 => "ospf".into(),
        189 => "rip".into(),
        192 => "eigrp".into(),
        n => n.to_string(),
    }
}

/// RT_SCOPE_* names.
pub(crate) fn scope(s: u8) -> String {
    match s {
        0 => "global".into(),
        200 => "site".into(),
        253 => "link".into(),
        254 => "host".into(),
        255 => "nowhere".into(),
        n => n.to_string(),
    }
}

const RTN_UNICAST: u8 = 1;
const RTPROT_KERNEL: u8 = 2;
const RTPROT_BOOT: u8 = 3;

/// `addr` or `addr/len` (iproute2 leaves out `/32`).
fn host_or_prefix(a: Ipv4Addr, len: u8) -> String {
    if len == 32 {
        a.to_string()
    } else {
        format!("{a}/{len}")
    }
}

/// One route as `ip route show` prints it. `with_table`: as in `ip route show table all`
/// (`table N` for every table but main); without: as in `ip route show table N`.
pub fn render_route(r: &RouteEntry, with_table: bool) -> String {
    let mut w: Vec<String> = Vec::new();
    if r.kind != RTN_UNICAST {
        w.push(route_type(r.kind));
    }
    w.push(match r.dst.prefix_len() {
        0 => "default".into(),
        l => host_or_prefix(r.dst.addr(), l),
    });
    if let Some((a, l)) = r.src {
        w.push(format!("from {}", host_or_prefix(a, l)));
    }
    if r.tos != 0 {
        w.push(format!("tos {:#x}", r.tos));
    }
    if let Some(g) = r.gateway {
        w.push(format!("via {g}"));
    }
    if let Some(d) = &r.dev {
        w.push(format!("dev {d}"));
    }
    if with_table && r.table != MAIN_TABLE {
        w.push(format!("table {}", r.table));
    }
    if r.protocol != RTPROT_BOOT {
        w.push(format!("proto {}", protocol(r.protocol)));
    }
    if r.scope != 0 {
        w.push(format!("scope {}", scope(r.scope)));
    }
    if let Some(s) = r.prefsrc {
        w.push(format!("src {s}"));
    }
    if let Some(m) = r.metric {
        w.push(format!("metric {m}"));
    }
    for (bit, name) in [
        (0x1, "dead"),
        (0x4, "onlink"),
        (0x2, "pervasive"),
        (0x8, "offload"),
        (0x40, "trap"),
        (0x10, "linkdown"),
        (0x20, "unresolved"),
    ] {
        if r.flags & bit != 0 {
            w.push(name.into());
        }
    }
    w.join(" ")
}

/// Routes, one per line: `table: None` all tables as `ip route show table all`; `Some(id)`
/// only table `id` as `ip route show table ID` (main: `ip route show`).
pub fn routes_text(routes: &[RouteEntry], table: Option<u32>) -> String {
    routes
        .iter()
        .filter(|r| table.is_none_or(|t| r.table == t))
        .map(|r| render_route(r, table.is_none()) + "\n")
        .collect()
}

/// One address as `ip -4 -o addr show` prints it (lifetimes left out):
/// `2: eth1    inet 10.0.0.40/32 scope global eth1`.
pub fn render_address(a: &AddressEntry) -> String {
    let mut s = format!("{}: {}    inet {}", a.index, a.dev, a.local);
    if let Some(p) = a.peer {
        let _ = write!(s, " peer {p}");
    }
    let _ = write!(s, "/{}", a.prefix_len);
    if let Some(b) = a.broadcast {
        let _ = write!(s, " brd {b}");
    }
    let _ = write!(s, " scope {}", scope(a.scope));
    for (bit, name) in [
        (0x1, "secondary"),
        (0x200, "noprefixroute"),
        (0x400, "autojoin"),
    ] {
        if a.flags & bit != 0 {
            let _ = write!(s, " {name}");
        }
    }
    if a.flags & 0x80 == 0 {
        s += " dynamic";
    }
    let _ = write!(s, " {}", a.label.as_deref().unwrap_or(&a.dev));
    s
}

/// Addresses, one per line, optionally of one device only (`ip -4 -o addr show dev D`).
pub fn addresses_text(addrs: &[AddressEntry], dev: Option<&str>) -> String {
    addrs
        .iter()
        .filter(|a| dev.is_none_or(|d| a.dev == d))
        .map(|a| render_address(a) + "\n")
        .collect()
}

/// One rule as `ip rule show` prints it: `32764:\tfrom all fwmark 0xfa lookup 250 proto ntk`.
pub fn render_rule(r: &RuleEntry) -> String {
    let mut w: Vec<String> = Vec::new();
    if r.invert {
        w.push("not".into());
    }
    w.push(match r.src {
        Some((a, l)) => format!("from {}", host_or_prefix(a, l)),
        None => "from all".into(),
    });
    if let Some((a, l)) = r.dst {
        w.push(format!("to {}", host_or_prefix(a, l)));
    }
    if r.tos != 0 {
        w.push(format!("tos {:#x}", r.tos));
    }
    if let Some((mark, mask)) = r.fwmark {
        let hex = |v: u32| {
            if v == 0 {
                "0".into()
            } else {
                format!("{v:#x}")
            }
        };
        w.push(if mask == u32::MAX {
            format!("fwmark {}", hex(mark))
        } else {
            format!("fwmark {}/{}", hex(mark), hex(mask))
        });
    }
    if let Some(i) = &r.iif {
        w.push(format!("iif {i}"));
    }
    if let Some(o) = &r.oif {
        w.push(format!("oif {o}"));
    }
    if r.table != 0 {
        w.push(format!("lookup {}", r.table));
    }
    if let Some(l) = r.suppress_prefixlen {
        w.push(format!("suppress_prefixlength {l}"));
    }
    match r.action {
        1 => {}
        2 => w.push(format!("goto {}", r.goto.unwrap_or(0))),
        3 => w.push("nop".into()),
        a => w.push(route_type(a)),
    }
    // iproute2 leaves out unspec and kernel (the default rules).
    if r.protocol != 0 && r.protocol != RTPROT_KERNEL {
        w.push(format!("proto {}", protocol(r.protocol)));
    }
    format!("{}:\t{}", r.priority, w.join(" "))
}

/// Rules, one per line.
pub fn rules_text(rules: &[RuleEntry]) -> String {
    rules.iter().map(|r| render_rule(r) + "\n").collect()
}

/// One link, for dumps: `3: eth1 veth up mtu 1500 00:16:3E:3C:14:33`.
pub fn render_link(l: &Link) -> String {
    let mut s = format!("{}: {}", l.index, l.name);
    if let Some(k) = &l.kind {
        let _ = write!(s, " {k}");
    }
    if let Some(m) = &l.macvlan_mode {
        let _ = write!(s, " mode {m}");
    }
    s += if l.up { " up" } else { " down" };
    if let Some(m) = l.mtu {
        let _ = write!(s, " mtu {m}");
    }
    if let Some(m) = l.mac {
        let _ = write!(s, " {m}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(table: u32, dst: &str, kind: u8, protocol: u8, scope: u8) -> RouteEntry {
        RouteEntry {
            table,
            dst: dst.parse().unwrap(),
            kind,
            protocol,
            scope,
            tos: 0,
            flags: 0,
            src: None,
            gateway: None,
            dev: None,
            prefsrc: None,
            metric: None,
        }
    }

    #[test]
    fn routes_render_as_iproute2_with_numeric_tables() {
        let via = RouteEntry {
            gateway: Some("169.254.110.188".parse().unwrap()),
            dev: Some("eth1".into()),
            prefsrc: Some("10.0.0.9".parse().unwrap()),
            ..route(251, "10.0.0.41/32", 1, 15, 0)
        };
        assert_eq!(
            render_route(&via, true),
            "10.0.0.41 via 169.254.110.188 dev eth1 table 251 proto ntk src 10.0.0.9"
        );
        assert_eq!(
            render_route(&via, false),
            "10.0.0.41 via 169.254.110.188 dev eth1 proto ntk src 10.0.0.9"
        );
        assert_eq!(
            render_route(&route(250, "10.0.0.0/29", 7, 15, 0), true),
            "unreachable 10.0.0.0/29 table 250 proto ntk"
        );
        assert_eq!(
            render_route(&route(249, "10.0.0.40/32", 6, 15, 0), true),
            "blackhole 10.0.0.40 table 249 proto ntk"
        );
        // An administrator's route in main (proto boot, not printed), table main left out.
        let link = RouteEntry {
            dev: Some("migr02_eth1".into()),
            ..route(254, "169.254.42.4/32", 1, 3, 253)
        };
        assert_eq!(
            render_route(&link, true),
            "169.254.42.4 dev migr02_eth1 scope link"
        );
        let local = RouteEntry {
            dev: Some("lo".into()),
            prefsrc: Some("127.0.0.1".parse().unwrap()),
            ..route(255, "127.0.0.0/8", 2, 2, 254)
        };
        assert_eq!(
            render_route(&local, true),
            "local 127.0.0.0/8 dev lo table 255 proto kernel scope host src 127.0.0.1"
        );
        let default = RouteEntry {
            gateway: Some("192.0.2.9".parse().unwrap()),
            dev: Some("eth0".into()),
            metric: Some(20),
            flags: 4,
            ..route(254, "0.0.0.0/0", 1, 4, 0)
        };
        assert_eq!(
            render_route(&default, true),
            "default via 192.0.2.9 dev eth0 proto static metric 20 onlink"
        );
        let text = routes_text(&[via.clone(), link.clone(), local], Some(254));
        assert_eq!(text, "169.254.42.4 dev migr02_eth1 scope link\n");
    }

    #[test]
    fn addresses_render_as_ip_o_addr() {
        let a = AddressEntry {
            index: 2,
            dev: "eth1".into(),
            local: "10.0.0.40".parse().unwrap(),
            peer: None,
            prefix_len: 32,
            broadcast: None,
            scope: 0,
            flags: 0x80,
            label: Some("eth1".into()),
            protocol: 15,
        };
        assert_eq!(
            render_address(&a),
            "2: eth1    inet 10.0.0.40/32 scope global eth1"
        );
        assert!(render_address(&a).contains("inet 10.0.0.40/32 scope global eth1"));
        let b = AddressEntry {
            local: "192.0.2.1".parse().unwrap(),
            prefix_len: 24,
            broadcast: Some("192.0.2.255".parse().unwrap()),
            flags: 0x81,
            label: Some("eth1:x".into()),
            ..a.clone()
        };
        assert_eq!(
            render_address(&b),
            "2: eth1    inet 192.0.2.1/24 brd 192.0.2.255 scope global secondary eth1:x"
        );
        let lo = AddressEntry {
            index: 1,
            dev: "lo".into(),
            scope: 254,
            ..a.clone()
        };
        assert_eq!(addresses_text(&[a, lo], Some("lo")).lines().count(), 1);
    }

    #[test]
    fn rules_render_as_ip_rule() {
        let r = RuleEntry {
            priority: 32764,
            table: 250,
            action: 1,
            protocol: 15,
            invert: false,
            src: None,
            dst: None,
            tos: 0,
            fwmark: Some((0xfa, u32::MAX)),
            iif: None,
            oif: None,
            goto: None,
            suppress_prefixlen: None,
        };
        assert_eq!(
            render_rule(&r),
            "32764:\tfrom all fwmark 0xfa lookup 250 proto ntk"
        );
        let masked = RuleEntry {
            priority: 1000,
            table: 7,
            protocol: 0,
            fwmark: Some((7, 0xff)),
            ..r.clone()
        };
        assert_eq!(
            render_rule(&masked),
            "1000:\tfrom all fwmark 0x7/0xff lookup 7"
        );
        let sel = RuleEntry {
            priority: 1003,
            table: 9,
            protocol: 0,
            fwmark: None,
            invert: true,
            src: Some(("1.2.3.0".parse().unwrap(), 24)),
            dst: Some(("5.0.0.0".parse().unwrap(), 8)),
            iif: Some("d0".into()),
            ..r.clone()
        };
        assert_eq!(
            render_rule(&sel),
            "1003:\tnot from 1.2.3.0/24 to 5.0.0.0/8 iif d0 lookup 9"
        );
        let main = RuleEntry {
            priority: 32766,
            table: 254,
            protocol: 2,
            fwmark: None,
            ..r.clone()
        };
        assert_eq!(render_rule(&main), "32766:\tfrom all lookup 254");
        let unreachable = RuleEntry {
            priority: 1004,
            table: 0,
            action: 7,
            protocol: 0,
            fwmark: None,
            ..r
        };
        assert_eq!(render_rule(&unreachable), "1004:\tfrom all unreachable");
    }
}
