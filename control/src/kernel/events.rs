//! What the kernel's rtnetlink notifications say about a namespace: the watcher gathers them
//! ([`Touched`]), and the reconciler brings its cached view of the kernel up to date from
//! them instead of observing the whole namespace again. A command then costs what it
//! changes: its own writes come back as notifications that match the cache (nothing to do),
//! and a change made behind ntkplane's back names the one route it touched.
//!
//! Pure: bytes in, facts out (the watcher does the I/O, the reconciler the resolution of
//! interface indexes).
use std::{collections::HashMap, net::Ipv4Addr};

use crate::addr::Ipv4Prefix;

/// nlmsghdr types (linux/rtnetlink.h).
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
/// rtattr types of a route.
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
const RTA_TABLE: u16 = 15;
const AF_INET: u8 = 2;
const NLMSG_HDRLEN: usize = 16;
const RTMSG_LEN: usize = 12;

/// A route as a notification announced it (interfaces by index: resolving them needs the
/// namespace's links, which the reconciler has).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteSeen {
    /// RTN_* (1 unicast, 6 blackhole, 7 unreachable, …).
    pub kind: u8,
    /// RTPROT_* (15: ntkplane's).
    pub protocol: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub prefsrc: Option<Ipv4Addr>,
}

/// What happened to a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notified {
    /// Added or changed (RTM_NEWROUTE).
    Added(RouteSeen),
    /// Deleted (RTM_DELROUTE). The kernel does not notify the routes it flushes with a link
    /// or an address: those come as link and address notifications.
    Deleted(RouteSeen),
}

/// Everything notified in one namespace since it was last taken.
#[derive(Debug, Default)]
pub struct Touched {
    /// The last notification of each IPv4 route key. Later notifications replace earlier
    /// ones: the kernel sends them in the order it made the changes.
    pub routes: HashMap<(u32, Ipv4Prefix), Notified>,
    pub rules: bool,
    pub addresses: bool,
    pub links: bool,
    /// Something changed in nftables.
    pub nft: bool,
    /// The socket overflowed (ENOBUFS): notifications were lost, only a full observation
    /// tells what the kernel holds.
    pub lost: bool,
}

impl Touched {
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
            && !(self.rules || self.addresses || self.links || self.nft || self.lost)
    }

    /// Adds what came later (`other`) to this.
    pub fn merge(&mut self, other: Touched) {
        self.routes.extend(other.routes);
        self.rules |= other.rules;
        self.addresses |= other.addresses;
        self.links |= other.links;
        self.nft |= other.nft;
        self.lost |= other.lost;
    }

    /// Records the rtnetlink notifications of one `recv` (one or more netlink messages).
    /// A truncated or malformed message ends the buffer and counts as lost notifications.
    pub fn absorb(&mut self, buf: &[u8]) {
        let mut off = 0;
        while off + NLMSG_HDRLEN <= buf.len() {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            if len < NLMSG_HDRLEN || off + len > buf.len() {
                self.lost = true;
                return;
            }
            let body = &buf[off + NLMSG_HDRLEN..off + len];
            match kind {
                RTM_NEWLINK | RTM_DELLINK => self.links = true,
                RTM_NEWADDR | RTM_DELADDR => self.addresses = true,
                RTM_NEWRULE | RTM_DELRULE => self.rules = true,
                RTM_NEWROUTE | RTM_DELROUTE => match parse_route(body) {
                    Ok(Some((key, seen))) => {
                        let n = if kind == RTM_NEWROUTE {
                            Notified::Added(seen)
                        } else {
                            Notified::Deleted(seen)
                        };
                        self.routes.insert(key, n);
                    }
                    Ok(None) => {}
                    Err(()) => self.lost = true,
                },
                _ => {}
            }
            off += align4(len);
        }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The key and content of an IPv4 route message body (rtmsg + attributes); `Ok(None)` for
/// another family.
#[allow(clippy::type_complexity)]
fn parse_route(body: &[u8]) -> Result<Option<((u32, Ipv4Prefix), RouteSeen)>, ()> {
    if body.len() < RTMSG_LEN {
        return Err(());
    }
    if body[0] != AF_INET {
        return Ok(None);
    }
    let dst_len = body[1];
    let mut table = u32::from(body[4]);
    let mut seen = RouteSeen {
        kind: body[7],
        protocol: body[5],
        gateway: None,
        oif: None,
        prefsrc: None,
    };
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut off = RTMSG_LEN;
    while off + 4 <= body.len() {
        let alen = u16::from_ne_bytes(body[off..off + 2].try_into().unwrap()) as usize;
        let atype = u16::from_ne_bytes(body[off + 2..off + 4].try_into().unwrap()) & 0x3fff;
        if alen < 4 || off + alen > body.len() {
            return Err(());
        }
        let v = &body[off + 4..off + alen];
        let ip = || <[u8; 4]>::try_from(v).map(Ipv4Addr::from).map_err(|_| ());
        let u32v = || {
            <[u8; 4]>::try_from(v)
                .map(u32::from_ne_bytes)
                .map_err(|_| ())
        };
        match atype {
            RTA_DST => dst = ip()?,
            RTA_GATEWAY => seen.gateway = Some(ip()?),
            RTA_PREFSRC => seen.prefsrc = Some(ip()?),
            RTA_OIF => seen.oif = Some(u32v()?),
            RTA_TABLE => table = u32v()?,
            _ => {}
        }
        off += align4(alen);
    }
    let prefix = Ipv4Prefix::new(dst, dst_len).map_err(|_| ())?;
    Ok(Some(((table, prefix), seen)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One netlink route notification as the kernel builds it.
    fn route_msg(
        kind: u16,
        table: u32,
        dst: &str,
        len: u8,
        rtn: u8,
        proto: u8,
        gw: Option<&str>,
    ) -> Vec<u8> {
        let mut attrs = Vec::new();
        let mut attr = |t: u16, v: &[u8]| {
            attrs.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
            attrs.extend_from_slice(&t.to_ne_bytes());
            attrs.extend_from_slice(v);
        };
        attr(RTA_TABLE, &table.to_ne_bytes());
        attr(RTA_DST, &dst.parse::<Ipv4Addr>().unwrap().octets());
        if let Some(g) = gw {
            attr(RTA_GATEWAY, &g.parse::<Ipv4Addr>().unwrap().octets());
            attr(RTA_OIF, &7u32.to_ne_bytes());
        }
        let table8 = if table < 256 { table as u8 } else { 252 };
        let body = [
            &[AF_INET, len, 0, 0, table8, proto, 0, rtn][..],
            &0u32.to_ne_bytes(),
            &attrs,
        ]
        .concat();
        let total = NLMSG_HDRLEN + body.len();
        [
            &(total as u32).to_ne_bytes()[..],
            &kind.to_ne_bytes(),
            &0u16.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            &body,
        ]
        .concat()
    }

    fn key(table: u32, p: &str) -> (u32, Ipv4Prefix) {
        (table, p.parse().unwrap())
    }

    #[test]
    fn route_notifications_name_the_key_and_the_route() {
        let mut t = Touched::default();
        let buf = [
            route_msg(
                RTM_NEWROUTE,
                1000,
                "10.1.0.0",
                16,
                1,
                15,
                Some("169.254.0.2"),
            ),
            route_msg(RTM_NEWROUTE, 250, "10.2.0.0", 16, 7, 15, None),
        ]
        .concat();
        t.absorb(&buf);
        assert!(!t.lost && !t.rules && !t.links);
        assert_eq!(
            t.routes[&key(1000, "10.1.0.0/16")],
            Notified::Added(RouteSeen {
                kind: 1,
                protocol: 15,
                gateway: Some("169.254.0.2".parse().unwrap()),
                oif: Some(7),
                prefsrc: None
            })
        );
        assert!(matches!(t.routes[&key(250, "10.2.0.0/16")], Notified::Added(s) if s.kind == 7));
    }

    #[test]
    fn the_last_notification_of_a_key_wins() {
        let mut t = Touched::default();
        t.absorb(&route_msg(RTM_NEWROUTE, 250, "10.2.0.0", 16, 7, 15, None));
        t.absorb(&route_msg(RTM_DELROUTE, 250, "10.2.0.0", 16, 7, 15, None));
        assert!(matches!(
            t.routes[&key(250, "10.2.0.0/16")],
            Notified::Deleted(_)
        ));
        let mut later = Touched::default();
        later.absorb(&route_msg(RTM_NEWROUTE, 250, "10.2.0.0", 16, 6, 3, None));
        t.merge(later);
        assert!(
            matches!(t.routes[&key(250, "10.2.0.0/16")], Notified::Added(s) if s.protocol == 3)
        );
    }

    #[test]
    fn other_objects_are_flags_and_garbage_is_a_loss() {
        let mut t = Touched::default();
        assert!(t.is_empty());
        let mut m = route_msg(RTM_NEWROUTE, 250, "10.2.0.0", 16, 7, 15, None);
        m[4..6].copy_from_slice(&RTM_NEWRULE.to_ne_bytes());
        t.absorb(&m);
        assert!(t.rules && t.routes.is_empty() && !t.lost);
        let m = route_msg(RTM_NEWROUTE, 250, "10.2.0.0", 16, 7, 15, None);
        t.absorb(&m[..m.len() - 3]);
        assert!(t.lost, "a truncated message is reported");
        let mut bad = Touched::default();
        let mut m = route_msg(RTM_NEWROUTE, 250, "10.2.0.1", 16, 7, 15, None);
        bad.absorb(&m);
        assert!(
            bad.lost,
            "a prefix with host bits is not a route the kernel holds"
        );
        m = route_msg(RTM_DELADDR, 0, "0.0.0.0", 0, 0, 0, None);
        bad.absorb(&m);
        assert!(bad.addresses);
    }
}
