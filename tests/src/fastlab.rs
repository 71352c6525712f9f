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
           net.ipv4.icmp_ratelimit=0 \
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

/// An `AF_PACKET` socket on one interface of a namespace (it keeps that namespace).
pub struct PacketSocket {
    fd: std::os::fd::OwnedFd,
    ifindex: i32,
}

const ETH_P_ALL: u16 = 0x0003;
const PACKET_OUTGOING: u8 = 4;

impl PacketSocket {
    pub fn open(ns: &Ns, ifname: &str) -> PacketSocket {
        use std::os::fd::FromRawFd;
        let name = std::ffi::CString::new(ifname).unwrap();
        ns.netns()
            .run(|| {
                // SAFETY: plain socket calls on values we own.
                unsafe {
                    let ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
                    assert!(ifindex > 0, "no interface {ifname}");
                    let fd = libc::socket(
                        libc::AF_PACKET,
                        libc::SOCK_RAW,
                        i32::from(ETH_P_ALL.to_be()),
                    );
                    assert!(
                        fd >= 0,
                        "AF_PACKET socket: {}",
                        std::io::Error::last_os_error()
                    );
                    let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
                    let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                    sll.sll_family = libc::AF_PACKET as u16;
                    sll.sll_protocol = ETH_P_ALL.to_be();
                    sll.sll_ifindex = ifindex;
                    let r = libc::bind(
                        std::os::fd::AsRawFd::as_raw_fd(&fd),
                        &sll as *const _ as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    );
                    assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
                    let tv = libc::timeval {
                        tv_sec: 0,
                        tv_usec: 20_000,
                    };
                    libc::setsockopt(
                        std::os::fd::AsRawFd::as_raw_fd(&fd),
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        &tv as *const _ as *const libc::c_void,
                        std::mem::size_of::<libc::timeval>() as u32,
                    );
                    PacketSocket { fd, ifindex }
                }
            })
            .unwrap()
    }

    /// Sends one complete Ethernet frame out of the interface.
    pub fn send(&self, frame: &[u8]) {
        use std::os::fd::AsRawFd;
        // SAFETY: a zeroed sockaddr_ll is valid; the frame outlives the call.
        unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = self.ifindex;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&frame[..6]);
            let r = libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(
                r,
                frame.len() as isize,
                "sendto: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    /// Every frame received (not sent) on the interface until 20 ms pass without one.
    pub fn drain(&self) -> Vec<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: buffers are ours and sized as passed.
            let (n, pkttype) = unsafe {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                let n = libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                    &mut sll as *mut _ as *mut libc::sockaddr,
                    &mut len,
                );
                (n, sll.sll_pkttype)
            };
            if n < 0 {
                return out;
            }
            if pkttype != PACKET_OUTGOING {
                out.push(buf[..n as usize].to_vec());
            }
        }
    }
}

/// One frame at the sink: (destination MAC, source MAC, TTL, source, destination,
/// flags+offset, total length).
pub type SinkFrame = ([u8; 6], [u8; 6], u8, Ipv4Addr, Ipv4Addr, u16, u16);

/// What one frame did, as seen from outside the router: the frames that reached the sink
/// for it, and the ICMP errors that came back to the sender about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub at_sink: Vec<SinkFrame>,
    /// (ICMP type, code, from, next-hop MTU field).
    pub icmp_errors: Vec<(u8, u8, Ipv4Addr, u16)>,
}

fn ipv4_id(ip: &[u8]) -> Option<u16> {
    (ip.len() >= 20 && ip[0] >> 4 == 4).then(|| u16::from_be_bytes([ip[4], ip[5]]))
}

/// Sends `frame` (IP id `id`) from the sender and collects what it caused.
pub fn observe(
    tx: &PacketSocket,
    sink: &PacketSocket,
    back: &PacketSocket,
    frame: &[u8],
    id: u16,
) -> Seen {
    let _ = sink.drain();
    let _ = back.drain();
    tx.send(frame);
    std::thread::sleep(std::time::Duration::from_millis(60));
    let ip4 = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    let mut seen = Seen {
        at_sink: vec![],
        icmp_errors: vec![],
    };
    for f in sink.drain() {
        if f.len() < 34 || f[12..14] != [0x08, 0x00] || ipv4_id(&f[14..]) != Some(id) {
            continue;
        }
        let ip = &f[14..];
        seen.at_sink.push((
            f[0..6].try_into().unwrap(),
            f[6..12].try_into().unwrap(),
            ip[8],
            ip4(&ip[12..16]),
            ip4(&ip[16..20]),
            u16::from_be_bytes([ip[6], ip[7]]),
            u16::from_be_bytes([ip[2], ip[3]]),
        ));
    }
    for f in back.drain() {
        if f.len() < 14 + 20 + 8 + 20 || f[12..14] != [0x08, 0x00] || f[14 + 9] != 1 {
            continue;
        }
        let ip = &f[14..];
        let ihl = usize::from(ip[0] & 0xf) * 4;
        let icmp = &ip[ihl..];
        if icmp.len() < 28 || !matches!(icmp[0], 3 | 11 | 12) || ipv4_id(&icmp[8..]) != Some(id) {
            continue;
        }
        seen.icmp_errors.push((
            icmp[0],
            icmp[1],
            ip4(&ip[12..16]),
            u16::from_be_bytes([icmp[6], icmp[7]]),
        ));
    }
    seen
}
