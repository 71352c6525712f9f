//! The fast path's differential lab: sender → router → sink over veth, where the router's
//! forwarding for the sender lives in the sender's table (reached by `fwmark`), with one
//! destination range per case the fast path must get right (direct, via, unreachable,
//! blackhole, NAT-covered, local), and frames crafted for each case.
use std::net::Ipv4Addr;

use crate::lab::{veth, End, Ns};

pub const SENDER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x16, 0x00, 0x01];
pub const ROUTER_IN_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x16, 0x00, 0x02];
pub const ROUTER_OUT_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x16, 0x00, 0x03];
pub const SINK_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x16, 0x00, 0x04];
pub const STRANGER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x16, 0x00, 0x09];
/// The sender's mark and table on the router.
pub const MARK: u32 = 250;
/// Egress MTU towards the sink (the ingress side keeps 1500).
pub const OUT_MTU: u32 = 1400;

pub const SENDER_IP: Ipv4Addr = Ipv4Addr::new(10, 251, 1, 2);
pub const ROUTER_IN_IP: Ipv4Addr = Ipv4Addr::new(10, 251, 1, 1);
pub const ROUTER_OUT_IP: Ipv4Addr = Ipv4Addr::new(10, 251, 2, 1);
pub const SINK_IP: Ipv4Addr = Ipv4Addr::new(10, 251, 2, 2);
/// Routed via the sink (gateway route).
pub const VIA_DST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 5);
/// `unreachable 10.78.0.0/16` in the sender's table.
pub const UNREACHABLE_DST: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 5);
/// `blackhole 10.79.0.0/16` in the sender's table.
pub const BLACKHOLE_DST: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 5);
/// Routed via the sink, but covered by an anonymizing SNAT rule.
pub const SNAT_DST: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 5);
/// Covered by a NETMAP (prefix DNAT to 10.77.0.0/16) rule.
pub const NETMAP_DST: Ipv4Addr = Ipv4Addr::new(10, 81, 0, 5);
/// Not in the sender's table at all: the stack's later rules decide (main: unreachable).
pub const UNROUTED_DST: Ipv4Addr = Ipv4Addr::new(10, 82, 0, 5);

/// The NAT-covered and local prefixes the control plane puts into the exclusion trie.
pub fn exclusions() -> std::collections::BTreeMap<(Ipv4Addr, u8), u32> {
    use ntkplane_common::{EXCLUDE_LOCAL, EXCLUDE_NAT};
    [
        ((Ipv4Addr::new(10, 80, 0, 0), 16), EXCLUDE_NAT),
        ((Ipv4Addr::new(10, 81, 0, 0), 16), EXCLUDE_NAT),
        ((ROUTER_IN_IP, 32), EXCLUDE_LOCAL),
        ((ROUTER_OUT_IP, 32), EXCLUDE_LOCAL),
    ]
    .into_iter()
    .collect()
}

pub struct FastLab {
    pub sender: Ns,
    pub router: Ns,
    pub sink: Ns,
}

pub fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Builds the three namespaces. The router routes the sender's traffic from table
/// [`MARK`] (`fwmark MARK lookup MARK`) and has the anonymizer-like SNAT and a NETMAP rule.
pub fn fast_lab() -> FastLab {
    let sender = Ns::new("fs");
    let router = Ns::new("fr");
    let sink = Ns::new("fk");
    veth(
        End(
            &sender,
            "s0",
            &mac_text(SENDER_MAC),
            &format!("{SENDER_IP}/24"),
        ),
        End(
            &router,
            "r0",
            &mac_text(ROUTER_IN_MAC),
            &format!("{ROUTER_IN_IP}/24"),
        ),
    );
    veth(
        End(
            &router,
            "r1",
            &mac_text(ROUTER_OUT_MAC),
            &format!("{ROUTER_OUT_IP}/24"),
        ),
        End(&sink, "k0", &mac_text(SINK_MAC), &format!("{SINK_IP}/24")),
    );
    sender.sh(&format!(
        "ip route add default via {ROUTER_IN_IP} && ip neigh replace {ROUTER_IN_IP} lladdr {} dev s0 nud permanent",
        mac_text(ROUTER_IN_MAC)
    ));
    sink.sh(&format!(
        "ip route add default via {ROUTER_OUT_IP} && sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.k0.rp_filter=0"
    ));
    router.sh(&format!(
        "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.r0.rp_filter=0 \
           net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.r0.send_redirects=0 \
         && ip link set r1 mtu {OUT_MTU} \
         && ip neigh replace {SINK_IP} lladdr {sink} dev r1 nud permanent \
         && ip route add 10.251.2.0/24 dev r1 table {MARK} \
         && ip route add 10.77.0.0/16 via {SINK_IP} dev r1 table {MARK} \
         && ip route add unreachable 10.78.0.0/16 table {MARK} \
         && ip route add blackhole 10.79.0.0/16 table {MARK} \
         && ip route add 10.80.0.0/16 via {SINK_IP} dev r1 table {MARK} \
         && ip route add 10.81.0.0/16 via {SINK_IP} dev r1 table {MARK} \
         && ip route add unreachable 10.82.0.0/16 \
         && ip rule add pref 100 fwmark {MARK} table {MARK} \
         && nft -f - <<'EOF'
table ip fastlab {{
  chain pre {{ type nat hook prerouting priority dstnat; policy accept;
    ip daddr 10.81.0.0/16 dnat ip prefix to 10.77.0.0/16
  }}
  chain post {{ type nat hook postrouting priority srcnat; policy accept;
    ip daddr 10.80.0.0/16 snat to {ROUTER_OUT_IP}
  }}
}}
EOF",
        sink = mac_text(SINK_MAC)
    ));
    FastLab {
        sender,
        router,
        sink,
    }
}

/// What to put into a crafted IPv4/UDP frame.
#[derive(Clone, Debug)]
pub struct Spec {
    pub src_mac: [u8; 6],
    pub dst: Ipv4Addr,
    pub ttl: u8,
    /// Bytes of IP options (a multiple of 4; NOPs).
    pub options: usize,
    /// More-fragments flag set (a first fragment).
    pub more_fragments: bool,
    pub dont_fragment: bool,
    /// UDP payload bytes.
    pub payload: usize,
    /// Distinguishes frames (IP id).
    pub id: u16,
}

impl Spec {
    pub fn to(dst: Ipv4Addr, id: u16) -> Spec {
        Spec {
            src_mac: SENDER_MAC,
            dst,
            ttl: 64,
            options: 0,
            more_fragments: false,
            dont_fragment: true,
            payload: 64,
            id,
        }
    }
}

pub fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame from `spec.src_mac` to the router's ingress MAC carrying IPv4/UDP from
/// the sender to `spec.dst` (UDP port 9, checksum 0).
pub fn ipv4_frame(spec: &Spec) -> Vec<u8> {
    assert_eq!(spec.options % 4, 0);
    let ihl = 20 + spec.options;
    let tot = ihl + 8 + spec.payload;
    let mut f = Vec::with_capacity(14 + tot);
    f.extend_from_slice(&ROUTER_IN_MAC);
    f.extend_from_slice(&spec.src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = vec![0u8; ihl];
    ip[0] = 0x40 | (ihl / 4) as u8;
    ip[2..4].copy_from_slice(&(tot as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&spec.id.to_be_bytes());
    let flags = (u16::from(spec.dont_fragment) << 14) | (u16::from(spec.more_fragments) << 13);
    ip[6..8].copy_from_slice(&flags.to_be_bytes());
    ip[8] = spec.ttl;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&SENDER_IP.octets());
    ip[16..20].copy_from_slice(&spec.dst.octets());
    for b in &mut ip[20..] {
        *b = 1; // NOP
    }
    let c = ip_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&9u16.to_be_bytes());
    f.extend_from_slice(&((8 + spec.payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend((0..spec.payload).map(|i| i as u8));
    f
}

/// One differential case: a frame and what the fast path must do with it.
pub struct Case {
    pub name: &'static str,
    pub spec: Spec,
    /// Expected fast-path outcome (`ntkplane_common::fp::*`); `None`: the source MAC is
    /// unknown (nothing counted per neighbour).
    pub outcome: Option<usize>,
}

/// Every case the issue lists: via, direct, unreachable, blackhole, TTL 1, fragment, IP
/// options, over-MTU, NAT ranges, local destination, unknown source MAC.
pub fn cases() -> Vec<Case> {
    use ntkplane_common::fp;
    let mut id = 100;
    let mut next = || {
        id += 1;
        id
    };
    let mut v = vec![
        Case {
            name: "via",
            spec: Spec::to(VIA_DST, next()),
            outcome: Some(fp::FORWARDED),
        },
        Case {
            name: "direct",
            spec: Spec::to(SINK_IP, next()),
            outcome: Some(fp::FORWARDED),
        },
        Case {
            name: "unreachable",
            spec: Spec::to(UNREACHABLE_DST, next()),
            outcome: Some(fp::ROUTE),
        },
        Case {
            name: "blackhole",
            spec: Spec::to(BLACKHOLE_DST, next()),
            outcome: Some(fp::ROUTE),
        },
        Case {
            name: "not in the table (later rules decide)",
            spec: Spec::to(UNROUTED_DST, next()),
            outcome: Some(fp::NOT_FWDED),
        },
        Case {
            name: "TTL 1",
            spec: Spec {
                ttl: 1,
                ..Spec::to(VIA_DST, next())
            },
            outcome: Some(fp::TTL),
        },
        Case {
            name: "TTL 2 (forwarded, leaves with 1)",
            spec: Spec {
                ttl: 2,
                ..Spec::to(VIA_DST, next())
            },
            outcome: Some(fp::FORWARDED),
        },
        Case {
            name: "fragment (MF)",
            spec: Spec {
                more_fragments: true,
                dont_fragment: false,
                ..Spec::to(VIA_DST, next())
            },
            outcome: Some(fp::FRAGMENT),
        },
        Case {
            name: "IP options",
            spec: Spec {
                options: 4,
                ..Spec::to(VIA_DST, next())
            },
            outcome: Some(fp::OPTIONS),
        },
        Case {
            name: "over the egress MTU, DF",
            spec: Spec {
                payload: 1420,
                ..Spec::to(VIA_DST, next())
            },
            outcome: Some(fp::MTU),
        },
        Case {
            name: "over the egress MTU, no DF",
            spec: Spec {
                payload: 1420,
                dont_fragment: false,
                ..Spec::to(VIA_DST, next())
            },
            outcome: Some(fp::MTU),
        },
        Case {
            name: "exactly the egress MTU",
            spec: Spec {
                payload: OUT_MTU as usize - 28,
                ..Spec::to(VIA_DST, next())
            },
            outcome: Some(fp::FORWARDED),
        },
        Case {
            name: "anonymizing SNAT range",
            spec: Spec::to(SNAT_DST, next()),
            outcome: Some(fp::EXCLUDED),
        },
        Case {
            name: "NETMAP range",
            spec: Spec::to(NETMAP_DST, next()),
            outcome: Some(fp::EXCLUDED),
        },
        Case {
            name: "local address of the router",
            spec: Spec::to(ROUTER_OUT_IP, next()),
            outcome: Some(fp::EXCLUDED),
        },
        Case {
            name: "unknown source MAC",
            spec: Spec {
                src_mac: STRANGER_MAC,
                ..Spec::to(VIA_DST, next())
            },
            outcome: None,
        },
    ];
    v.shrink_to_fit();
    v
}
