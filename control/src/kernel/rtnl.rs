//! The one place that talks rtnetlink: links, addresses, routes and rules of the namespace
//! the connection was opened in.
//!
//! Everything ntkplane creates carries protocol `ntk` (RTPROT_NTK = 15, reserved for
//! Netsukuku by the kernel UAPI): routes and rules via their protocol field, addresses via
//! IFA_PROTO. Observation returns only those objects, so cleanup after a crash finds all of
//! ntkplane's state and nothing else.
//!
//! The general readers ([`Rtnl::all_routes`], [`Rtnl::all_addresses`], [`Rtnl::all_rules`],
//! [`Rtnl::route_get`]) return every IPv4 object whatever its protocol, with numeric ids:
//! they are for read-back (the lab, the tests), not for the reconciler.
use std::{collections::BTreeMap, net::Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage, AddressProtocol},
    link::{InfoData, InfoMacVlan, LinkAttribute, LinkFlags, LinkInfo},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType},
    rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage},
    AddressFamily,
};
use rtnetlink::{Handle, IpVersion, LinkUnspec, RouteMessageBuilder};

use crate::{
    addr::Ipv4Prefix,
    mac::MacAddr,
    plan::{KRoute, KRule},
};

/// RTPROT_NTK.
pub const PROTO_NTK: u8 = 15;

#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("netlink {what}: {source}")]
    Request {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("no interface named '{0}' in this namespace")]
    NoSuchLink(String),
    #[error("netlink {0}: no answer")]
    Empty(String),
}

fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> RtnlError {
    let what = what.into();
    move |source| RtnlError::Request { what, source }
}

#[derive(Clone, Debug)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Administratively up (IFF_UP).
    pub up: bool,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    /// The link kind (`veth`, `macvlan`, `bridge`, …) when the kernel reports one.
    pub kind: Option<String>,
    /// The mode of a macvlan (`vepa`, `bridge`, `private`, …).
    pub macvlan_mode: Option<String>,
}

/// An IPv4 route as the kernel reports it, whatever its protocol and type. Kinds, protocols
/// and scopes are the kernel's numbers (RTN_*, RTPROT_*, RT_SCOPE_*).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    pub table: u32,
    pub dst: Ipv4Prefix,
    /// RTN_*: 1 unicast, 2 local, 3 broadcast, 6 blackhole, 7 unreachable, 8 prohibit, …
    pub kind: u8,
    pub protocol: u8,
    pub scope: u8,
    pub tos: u8,
    /// rtm_flags (RTNH_F_ONLINK, RTNH_F_LINKDOWN, …).
    pub flags: u32,
    /// Source prefix (`from`), for policy routes with a source.
    pub src: Option<(Ipv4Addr, u8)>,
    pub gateway: Option<Ipv4Addr>,
    /// Output device (its name, or `ifN` when unknown).
    pub dev: Option<String>,
    pub prefsrc: Option<Ipv4Addr>,
    pub metric: Option<u32>,
}

impl RouteEntry {
    /// The route as ntkplane models it, if it is of a kind ntkplane installs.
    pub fn kroute(&self) -> Option<KRoute> {
        Some(match RouteType::from(self.kind) {
            RouteType::Unreachable => KRoute::Unreachable,
            RouteType::BlackHole => KRoute::Blackhole,
            RouteType::Unicast => {
                let dev = self.dev.clone()?;
                match self.gateway {
                    Some(gw) => KRoute::Via {
                        gw,
                        dev,
                        src: self.prefsrc,
                    },
                    None => KRoute::Link {
                        dev,
                        src: self.prefsrc?,
                    },
                }
            }
            _ => return None,
        })
    }
}

/// The route a notification announced ([`crate::kernel::events`]), as ntkplane models it,
/// with interface indexes resolved by `names` (`ifN` when unknown, as in a dump).
pub fn kroute_of(
    s: &crate::kernel::events::RouteSeen,
    names: &BTreeMap<u32, String>,
) -> Option<KRoute> {
    RouteEntry {
        table: 0,
        dst: Ipv4Prefix::host(Ipv4Addr::UNSPECIFIED),
        kind: s.kind,
        protocol: s.protocol,
        scope: 0,
        tos: 0,
        flags: 0,
        src: None,
        gateway: s.gateway,
        dev: s
            .oif
            .map(|i| names.get(&i).cloned().unwrap_or_else(|| format!("if{i}"))),
        prefsrc: s.prefsrc,
        metric: None,
    }
    .kroute()
}

/// Whether the notified route `s` is `r` (what `kroute_of(s, names) == Some(r)` says, without
/// building the route: most notifications are ntkplane's own writes coming back).
pub fn kroute_is(
    s: &crate::kernel::events::RouteSeen,
    names: &BTreeMap<u32, String>,
    r: &KRoute,
) -> bool {
    let dev_is = |dev: &str| s.oif.and_then(|i| names.get(&i)).map(String::as_str) == Some(dev);
    let kind = RouteType::from(s.kind);
    match r {
        KRoute::Unreachable => kind == RouteType::Unreachable,
        KRoute::Blackhole => kind == RouteType::BlackHole,
        KRoute::Via { gw, dev, src } => {
            kind == RouteType::Unicast && s.gateway == Some(*gw) && s.prefsrc == *src && dev_is(dev)
        }
        KRoute::Link { dev, src } => {
            kind == RouteType::Unicast
                && s.gateway.is_none()
                && s.prefsrc == Some(*src)
                && dev_is(dev)
        }
    }
}

/// An IPv4 address as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressEntry {
    /// Index and name of the device.
    pub index: u32,
    pub dev: String,
    pub local: Ipv4Addr,
    /// The peer address of a point-to-point address (IFA_ADDRESS when it differs).
    pub peer: Option<Ipv4Addr>,
    pub prefix_len: u8,
    pub broadcast: Option<Ipv4Addr>,
    /// RT_SCOPE_*: 0 global, 200 site, 253 link, 254 host.
    pub scope: u8,
    /// IFA_F_* (secondary, noprefixroute, permanent, …).
    pub flags: u32,
    pub label: Option<String>,
    /// IFA_PROTO (0 when none: addresses added by an administrator).
    pub protocol: u8,
}

/// An IPv4 policy-routing rule as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleEntry {
    pub priority: u32,
    /// The table looked up (0 for rules whose action is not a lookup).
    pub table: u32,
    /// FR_ACT_*: 1 lookup, 2 goto, 3 nop, 6 blackhole, 7 unreachable, 8 prohibit.
    pub action: u8,
    pub protocol: u8,
    /// `not`: the selector is inverted.
    pub invert: bool,
    pub src: Option<(Ipv4Addr, u8)>,
    pub dst: Option<(Ipv4Addr, u8)>,
    pub tos: u8,
    /// (mark, mask).
    pub fwmark: Option<(u32, u32)>,
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub goto: Option<u32>,
    pub suppress_prefixlen: Option<u32>,
}

/// A netlink connection in the current thread's namespace. Must be created inside a tokio
/// runtime running on that thread (see [`crate::kernel::in_netns`]).
pub struct Rtnl {
    h: Handle,
    links: BTreeMap<String, Link>,
}

impl Rtnl {
    pub async fn connect() -> Result<Self, RtnlError> {
        let (conn, h, _) =
            rtnetlink::new_connection_with_strict_check().map_err(RtnlError::Connect)?;
        tokio::spawn(conn);
        let mut r = Rtnl {
            h,
            links: BTreeMap::new(),
        };
        r.refresh_links().await?;
        Ok(r)
    }

    pub async fn refresh_links(&mut self) -> Result<(), RtnlError> {
        let msgs: Vec<_> = self
            .h
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(req("link dump"))?;
        self.links.clear();
        for m in msgs {
            let mut name = None;
            let (mut mac, mut mtu, mut kind, mut macvlan_mode) = (None, None, None, None);
            for a in &m.attributes {
                match a {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::Address(b) if b.len() == 6 => {
                        mac = Some(MacAddr(b[..6].try_into().unwrap()))
                    }
                    LinkAttribute::Mtu(v) => mtu = Some(*v),
                    LinkAttribute::LinkInfo(infos) => {
                        for i in infos {
                            match i {
                                LinkInfo::Kind(k) => kind = Some(k.to_string()),
                                LinkInfo::Data(InfoData::MacVlan(d)) => {
                                    macvlan_mode = d.iter().find_map(|x| match x {
                                        InfoMacVlan::Mode(m) => Some(m.to_string()),
                                        _ => None,
                                    })
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let Some(name) = name {
                let up = m.header.flags.contains(LinkFlags::Up);
                self.links.insert(
                    name.clone(),
                    Link {
                        index: m.header.index,
                        name,
                        up,
                        mac,
                        mtu,
                        kind,
                        macvlan_mode,
                    },
                );
            }
        }
        Ok(())
    }

    pub fn links(&self) -> &BTreeMap<String, Link> {
        &self.links
    }

    pub fn index(&self, name: &str) -> Result<u32, RtnlError> {
        self.links
            .get(name)
            .map(|l| l.index)
            .ok_or_else(|| RtnlError::NoSuchLink(name.into()))
    }

    fn name_of(&self, index: u32) -> String {
        self.links
            .values()
            .find(|l| l.index == index)
            .map_or_else(|| format!("if{index}"), |l| l.name.clone())
    }

    /// Sets `name` administratively up.
    pub async fn set_up(&mut self, name: &str) -> Result<(), RtnlError> {
        self.set_admin(name, true).await
    }

    /// Sets `name` administratively down.
    pub async fn set_down(&mut self, name: &str) -> Result<(), RtnlError> {
        self.set_admin(name, false).await
    }

    async fn set_admin(&mut self, name: &str, up: bool) -> Result<(), RtnlError> {
        let i = self.index(name)?;
        let link = LinkUnspec::new_with_index(i);
        let msg = if up { link.up() } else { link.down() }.build();
        self.h.link().set(msg).execute().await.map_err(req(format!(
            "set {name} {}",
            if up { "up" } else { "down" }
        )))?;
        if let Some(l) = self.links.get_mut(name) {
            l.up = up;
        }
        Ok(())
    }

    /// Creates macvlan `name` on the lower device `lower` (a NIC of this namespace), directly
    /// inside the namespace `target` (an identity's pseudo-interface), optionally with a fixed
    /// MAC. Mode: the kernel default used by `ip` (VEPA), as in the reference.
    pub async fn add_macvlan(
        &self,
        name: &str,
        lower: &str,
        mac: Option<MacAddr>,
        target: &std::fs::File,
    ) -> Result<(), RtnlError> {
        use std::os::fd::AsRawFd;
        let idx = self.index(lower)?;
        let mut b =
            rtnetlink::LinkMacVlan::new(name, idx, netlink_packet_route::link::MacVlanMode::Vepa);
        if let Some(m) = mac {
            b = b.address(m.0.to_vec());
        }
        let msg = b.setns_by_fd(target.as_raw_fd()).build();
        self.h
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(req(format!("add macvlan {name} on {lower}")))
    }

    /// Deletes a link of this namespace (an identity's pseudo-interface).
    pub async fn del_link(&self, name: &str) -> Result<(), RtnlError> {
        let i = self.index(name)?;
        self.h
            .link()
            .del(i)
            .execute()
            .await
            .map_err(req(format!("delete link {name}")))
    }

    /// ntkplane's IPv4 addresses: (device, address); all are /32.
    pub async fn addresses(&self) -> Result<Vec<(String, Ipv4Addr)>, RtnlError> {
        Ok(self
            .all_addresses()
            .await?
            .into_iter()
            .filter(|a| a.protocol == PROTO_NTK)
            .map(|a| (a.dev, a.local))
            .collect())
    }

    /// Every IPv4 address of every device, whatever its protocol, in the kernel's dump order.
    pub async fn all_addresses(&self) -> Result<Vec<AddressEntry>, RtnlError> {
        let msgs: Vec<AddressMessage> = self
            .h
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(req("address dump"))?;
        let mut out = Vec::new();
        for m in msgs {
            if m.header.family != AddressFamily::Inet {
                continue;
            }
            let (mut local, mut address, mut broadcast, mut label) = (None, None, None, None);
            let (mut flags, mut protocol) = (u32::from(m.header.flags.bits()), 0);
            for a in &m.attributes {
                match a {
                    AddressAttribute::Local(std::net::IpAddr::V4(v)) => local = Some(*v),
                    AddressAttribute::Address(std::net::IpAddr::V4(v)) => address = Some(*v),
                    AddressAttribute::Broadcast(v) => broadcast = Some(*v),
                    AddressAttribute::Label(l) => label = Some(l.clone()),
                    AddressAttribute::Flags(f) => flags = f.bits(),
                    AddressAttribute::Protocol(p) => protocol = u8::from(*p),
                    _ => {}
                }
            }
            let Some(local) = local.or(address) else {
                continue;
            };
            out.push(AddressEntry {
                index: m.header.index,
                dev: self.name_of(m.header.index),
                local,
                peer: address.filter(|a| *a != local),
                prefix_len: m.header.prefix_len,
                broadcast,
                scope: m.header.scope.into(),
                flags,
                label,
                protocol,
            });
        }
        Ok(out)
    }

    pub async fn add_address(&self, dev: &str, addr: Ipv4Addr) -> Result<(), RtnlError> {
        let i = self.index(dev)?;
        let mut r = self.h.address().add(i, addr.into(), 32).replace();
        r.message_mut()
            .attributes
            .push(AddressAttribute::Protocol(AddressProtocol::Other(
                PROTO_NTK,
            )));
        r.execute()
            .await
            .map_err(req(format!("add {addr}/32 dev {dev}")))
    }

    pub async fn del_address(&self, dev: &str, addr: Ipv4Addr) -> Result<(), RtnlError> {
        let i = self.index(dev)?;
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = 32;
        m.header.index = i;
        m.attributes.push(AddressAttribute::Local(addr.into()));
        m.attributes.push(AddressAttribute::Address(addr.into()));
        self.h
            .address()
            .del(m)
            .execute()
            .await
            .map_err(req(format!("del {addr}/32 dev {dev}")))
    }

    /// ntkplane's routes, in every table: ((table, prefix), route).
    pub async fn routes(&self) -> Result<Vec<((u32, Ipv4Prefix), KRoute)>, RtnlError> {
        // Strict-check dump filtered by the kernel on protocol; table 0 = all tables.
        let q = RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(0)
            .protocol(RouteProtocol::Ntk)
            .kind(RouteType::Unspec)
            .scope(RouteScope::Universe)
            .build();
        let mut q = q;
        q.header.scope = RouteScope::Universe;
        let msgs: Vec<RouteMessage> = self
            .h
            .route()
            .get(q)
            .execute()
            .try_collect()
            .await
            .map_err(req("route dump"))?;
        let mut out = Vec::new();
        for m in msgs {
            if m.header.protocol != RouteProtocol::Ntk {
                continue;
            }
            if let Some(r) = self.parse_route(&m) {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn parse_route(&self, m: &RouteMessage) -> Option<((u32, Ipv4Prefix), KRoute)> {
        let e = self.route_entry(m)?;
        let route = e.kroute()?;
        Some(((e.table, e.dst), route))
    }

    fn route_entry(&self, m: &RouteMessage) -> Option<RouteEntry> {
        let mut table = m.header.table as u32;
        let mut dst = Ipv4Addr::UNSPECIFIED;
        let (mut gw, mut oif, mut prefsrc, mut src, mut metric) = (None, None, None, None, None);
        for a in &m.attributes {
            match a {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                RouteAttribute::Source(RouteAddress::Inet(s)) => {
                    src = Some((*s, m.header.source_prefix_length))
                }
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::PrefSource(RouteAddress::Inet(s)) => prefsrc = Some(*s),
                RouteAttribute::Priority(p) => metric = Some(*p),
                _ => {}
            }
        }
        Some(RouteEntry {
            table,
            dst: Ipv4Prefix::new(dst, m.header.destination_prefix_length).ok()?,
            kind: m.header.kind.into(),
            protocol: m.header.protocol.into(),
            scope: m.header.scope.into(),
            tos: m.header.tos,
            flags: m.header.flags.bits(),
            src,
            gateway: gw,
            dev: oif.map(|i| self.name_of(i)),
            prefsrc,
            metric,
        })
    }

    /// Every IPv4 route of every table, whatever its protocol and type, in the kernel's
    /// dump order.
    pub async fn all_routes(&self) -> Result<Vec<RouteEntry>, RtnlError> {
        // Strict-check dump of table 0 (all tables), no protocol or type filter.
        let mut q = RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(0)
            .protocol(RouteProtocol::Unspec)
            .kind(RouteType::Unspec)
            .build();
        q.header.scope = RouteScope::Universe;
        let msgs: Vec<RouteMessage> = self
            .h
            .route()
            .get(q)
            .execute()
            .try_collect()
            .await
            .map_err(req("route dump"))?;
        Ok(msgs.iter().filter_map(|m| self.route_entry(m)).collect())
    }

    /// The kernel's route lookup for `dst` (`ip route get`): optionally as if the packet
    /// came from `from`, arrived on `iif` and carried `mark`.
    pub async fn route_get(
        &self,
        dst: Ipv4Addr,
        from: Option<Ipv4Addr>,
        iif: Option<&str>,
        mark: Option<u32>,
    ) -> Result<RouteEntry, RtnlError> {
        let mut q = RouteMessage::default();
        q.header.address_family = AddressFamily::Inet;
        q.header.destination_prefix_length = 32;
        q.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        if let Some(s) = from {
            q.header.source_prefix_length = 32;
            q.attributes
                .push(RouteAttribute::Source(RouteAddress::Inet(s)));
        }
        if let Some(dev) = iif {
            q.attributes.push(RouteAttribute::Iif(self.index(dev)?));
        }
        if let Some(m) = mark {
            q.attributes.push(RouteAttribute::Mark(m));
        }
        let what = format!("route get {dst}");
        let msgs: Vec<RouteMessage> = self
            .h
            .route()
            .get(q)
            .execute()
            .try_collect()
            .await
            .map_err(req(what.clone()))?;
        msgs.iter()
            .find_map(|m| self.route_entry(m))
            .ok_or(RtnlError::Empty(what))
    }

    /// Adds or changes (NLM_F_REPLACE) the route of `(table, prefix)`.
    pub async fn replace_route(
        &self,
        table: u32,
        prefix: Ipv4Prefix,
        route: &KRoute,
    ) -> Result<(), RtnlError> {
        let b = RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(table)
            .destination_prefix(prefix.addr(), prefix.prefix_len())
            .protocol(RouteProtocol::Ntk);
        let msg = match route {
            KRoute::Unreachable => b.kind(RouteType::Unreachable).build(),
            KRoute::Blackhole => b.kind(RouteType::BlackHole).build(),
            KRoute::Via { gw, dev, src } => {
                let mut b = b.gateway(*gw).output_interface(self.index(dev)?);
                if let Some(s) = src {
                    b = b.pref_source(*s);
                }
                b.build()
            }
            KRoute::Link { dev, src } => b
                .output_interface(self.index(dev)?)
                .pref_source(*src)
                .scope(RouteScope::Link)
                .build(),
        };
        self.h
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(req(format!("replace {prefix} table {table} ({route:?})")))
    }

    pub async fn del_route(&self, table: u32, prefix: Ipv4Prefix) -> Result<(), RtnlError> {
        // Kind and protocol must be Unspec, or the kernel matches them too (see the notes).
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(table)
            .destination_prefix(prefix.addr(), prefix.prefix_len())
            .kind(RouteType::Unspec)
            .protocol(RouteProtocol::Unspec)
            .scope(RouteScope::NoWhere)
            .build();
        self.h
            .route()
            .del(msg)
            .execute()
            .await
            .map_err(req(format!("del {prefix} table {table}")))
    }

    /// ntkplane's rules, with the messages needed to delete them.
    pub async fn rules(&self) -> Result<Vec<(KRule, RuleMessage)>, RtnlError> {
        let msgs: Vec<RuleMessage> = self
            .h
            .rule()
            .get(IpVersion::V4)
            .execute()
            .try_collect()
            .await
            .map_err(req("rule dump"))?;
        let mut out = Vec::new();
        for m in msgs {
            let mut proto = None;
            let (mut prio, mut mark, mut mask, mut table) = (0, None, None, m.header.table as u32);
            for a in &m.attributes {
                match a {
                    RuleAttribute::Protocol(p) => proto = Some(u8::from(*p)),
                    RuleAttribute::Priority(p) => prio = *p,
                    RuleAttribute::FwMark(v) => mark = Some(*v),
                    RuleAttribute::FwMask(v) => mask = Some(*v),
                    RuleAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if proto != Some(PROTO_NTK) {
                continue;
            }
            let fwmark = mark.map(|m| (m, mask.unwrap_or(u32::MAX)));
            out.push((
                KRule {
                    priority: prio,
                    fwmark,
                    table,
                },
                m,
            ));
        }
        Ok(out)
    }

    /// Every IPv4 rule, whatever its protocol, in priority order (the kernel's).
    pub async fn all_rules(&self) -> Result<Vec<RuleEntry>, RtnlError> {
        let msgs: Vec<RuleMessage> = self
            .h
            .rule()
            .get(IpVersion::V4)
            .execute()
            .try_collect()
            .await
            .map_err(req("rule dump"))?;
        let mut out = Vec::new();
        for m in msgs {
            let mut e = RuleEntry {
                priority: 0,
                table: m.header.table as u32,
                action: m.header.action.into(),
                protocol: 0,
                invert: m.header.flags.contains(RuleFlags::Invert),
                src: None,
                dst: None,
                tos: m.header.tos,
                fwmark: None,
                iif: None,
                oif: None,
                goto: None,
                suppress_prefixlen: None,
            };
            let (mut mark, mut mask) = (None, None);
            for a in &m.attributes {
                match a {
                    RuleAttribute::Priority(p) => e.priority = *p,
                    RuleAttribute::Table(t) => e.table = *t,
                    RuleAttribute::Protocol(p) => e.protocol = u8::from(*p),
                    RuleAttribute::Source(std::net::IpAddr::V4(v)) => {
                        e.src = Some((*v, m.header.src_len))
                    }
                    RuleAttribute::Destination(std::net::IpAddr::V4(v)) => {
                        e.dst = Some((*v, m.header.dst_len))
                    }
                    RuleAttribute::FwMark(v) => mark = Some(*v),
                    RuleAttribute::FwMask(v) => mask = Some(*v),
                    RuleAttribute::Iifname(n) => e.iif = Some(n.clone()),
                    RuleAttribute::Oifname(n) => e.oif = Some(n.clone()),
                    RuleAttribute::Goto(g) => e.goto = Some(*g),
                    // The kernel reports -1 when unset.
                    RuleAttribute::SuppressPrefixLen(l) if *l != u32::MAX => {
                        e.suppress_prefixlen = Some(*l)
                    }
                    _ => {}
                }
            }
            if mark.is_some() || mask.is_some() {
                e.fwmark = Some((mark.unwrap_or(0), mask.unwrap_or(u32::MAX)));
            }
            out.push(e);
        }
        Ok(out)
    }

    pub async fn add_rule(&self, r: &KRule) -> Result<(), RtnlError> {
        // The action must be set: the default (Unspec) makes every lookup reaching the rule
        // fail with EINVAL (see the notes).
        let mut a = self
            .h
            .rule()
            .add()
            .v4()
            .table_id(r.table)
            .priority(r.priority)
            .action(RuleAction::ToTable);
        if let Some((mark, mask)) = r.fwmark {
            a = a.fw_mark(mark);
            a.message_mut().attributes.push(RuleAttribute::FwMask(mask));
        }
        a.message_mut()
            .attributes
            .push(RuleAttribute::Protocol(RouteProtocol::Ntk));
        a.execute().await.map_err(req(format!("add rule {r:?}")))
    }

    pub async fn del_rule(&self, msg: RuleMessage) -> Result<(), RtnlError> {
        let what = format!("del rule {:?}", msg.attributes);
        self.h.rule().del(msg).execute().await.map_err(req(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::events::RouteSeen;

    #[test]
    fn a_notified_route_is_what_it_converts_to() {
        let names: BTreeMap<u32, String> = [(2, "eth1".to_string()), (3, "eth2".into())].into();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let seen = |kind: u8, gw: Option<&str>, oif: Option<u32>, src: Option<&str>| RouteSeen {
            kind,
            protocol: PROTO_NTK,
            gateway: gw.map(ip),
            oif,
            prefsrc: src.map(ip),
        };
        let notified = [
            seen(7, None, None, None),
            seen(6, None, None, None),
            seen(1, Some("169.254.0.2"), Some(2), None),
            seen(1, Some("169.254.0.2"), Some(3), Some("10.0.0.1")),
            seen(1, None, Some(2), Some("169.254.0.1")),
            seen(1, Some("169.254.0.2"), Some(9), None),
            seen(8, None, None, None),
        ];
        let routes = [
            KRoute::Unreachable,
            KRoute::Blackhole,
            KRoute::Via {
                gw: ip("169.254.0.2"),
                dev: "eth1".into(),
                src: None,
            },
            KRoute::Via {
                gw: ip("169.254.0.2"),
                dev: "eth2".into(),
                src: Some(ip("10.0.0.1")),
            },
            KRoute::Link {
                dev: "eth1".into(),
                src: ip("169.254.0.1"),
            },
        ];
        for s in &notified {
            for r in &routes {
                assert_eq!(
                    kroute_is(s, &names, r),
                    kroute_of(s, &names).as_ref() == Some(r),
                    "{s:?} {r:?}"
                );
            }
        }
    }
}
