//! The forwarding benchmark's lab: sender → router → sink namespaces over veth, a
//! `sendmmsg` UDP blaster, and the router configurations compared (classification and
//! remapping variants).
//!
//! The sink's subnet is routed on the router **only in table 249**, looked up by
//! `ip rule pref 100 fwmark 249 lookup 249` (except in `none`, whose rule looks it up for
//! every packet). A classifier that fails to mark the sender's packets therefore forwards
//! nothing, and the benchmark reports it as failed instead of fast. For the remapping
//! variants the sender aims at a mapped address; without the rewrite there is no route.
use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use aya::{
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf,
};
use ntkplane::{
    addr::Ipv4Prefix,
    classifier::{Classifier, ClassifierConfig, EBPF_OBJECT},
    mac::MacAddr,
    plan::nat::NatState,
};

use crate::lab::Ns;

/// The table (and mark) holding the sink's route on the router.
pub const TABLE: u32 = 249;
const SENDER_MAC: &str = "02:aa:00:00:00:01";
const ROUTER_IN_MAC: &str = "02:aa:00:00:00:02";
const ROUTER_OUT_MAC: &str = "02:aa:00:00:00:03";
const SINK_MAC: &str = "02:aa:00:00:00:04";
const SINK: Ipv4Addr = Ipv4Addr::new(10, 99, 2, 2);
/// The discard port; the sink drops it at ingress (netdev hook), after counting.
const PORT: u16 = 9;
/// Frames of a 64-byte UDP payload: 14 + 20 + 8 + 64 = 106 bytes.
pub const PAYLOAD: usize = 64;

/// What the router does with the sender's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// No classification: every packet looks up table 249.
    None,
    /// ntkplane's `classify` TC program and its neighbour map.
    Ebpf,
    /// ntkplane's `fastpath` TC program: classify, then forward in TC (FIB lookup in the
    /// neighbour's table, `bpf_redirect_neigh`).
    Fastpath,
    /// One nftables rule `meta mark set ether saddr map @m`.
    NftMap,
    /// One `iptables-legacy -t mangle -m mac --mac-source … -j MARK` rule per neighbour.
    IptLegacy,
    /// The same rules through iptables-nft (Debian's `iptables`; the reference's way).
    IptNft,
    /// Remapping, no NAT: the sender aims at the sink's real address (the remap baseline).
    RemapNone,
    /// `iptables -t nat … -j NETMAP` per mapped range (the reference's way).
    RemapIptNetmap,
    /// ntkplane's nftables table: prefix maps, `dnat ip prefix to ip daddr map @pre0`.
    RemapNftMaps,
}

impl Variant {
    pub const CLASSIFY: [Variant; 6] = [
        Variant::None,
        Variant::Ebpf,
        Variant::Fastpath,
        Variant::NftMap,
        Variant::IptLegacy,
        Variant::IptNft,
    ];
    pub const REMAP: [Variant; 3] = [
        Variant::RemapNone,
        Variant::RemapIptNetmap,
        Variant::RemapNftMaps,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::Ebpf => "ebpf",
            Variant::Fastpath => "fastpath",
            Variant::NftMap => "nft-map",
            Variant::IptLegacy => "ipt-legacy",
            Variant::IptNft => "ipt-nft",
            Variant::RemapNone => "remap-none",
            Variant::RemapIptNetmap => "remap-ipt-netmap",
            Variant::RemapNftMaps => "remap-nft-maps",
        }
    }

    fn is_remap(self) -> bool {
        Variant::REMAP.contains(&self)
    }
}

/// The i-th synthetic neighbour MAC (never the sender's).
pub fn neighbour_mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
}

/// The mark of the i-th synthetic neighbour: distinct, never [`TABLE`].
fn neighbour_mark(i: u32) -> u32 {
    1000 + i
}

/// The mapped range `i` (10.200.i.0/24 → the sink's 10.99.2.0/24).
fn mapped(i: u32) -> Ipv4Prefix {
    format!("10.{}.{}.0/24", 200 + i / 256, i % 256)
        .parse()
        .unwrap()
}

/// The anonymizing range of the node's real nft table (the SNAT rule every node installs).
pub const ANON_RANGE: &str = "172.16.0.0/12";
/// The router's own address the SNAT rewrites to.
const ROUTER_GLOBAL: Ipv4Addr = Ipv4Addr::new(10, 99, 2, 1);

/// How the sender produces traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generator {
    /// A UDP socket and `sendmmsg`: the sender's own stack costs about as much as the router.
    Udp,
    /// `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` of an `XDP_TX` program on the
    /// sender's veth (as xdp-trafficgen does): a few tens of ns per frame on the sender, so
    /// the router (and the sink's drop) limit the rate.
    Live,
}

/// The live-frame generator's loaded programs: `bench_tx` (run on the sender's veth) and
/// `bench_pass` attached to the router's ingress veth (its NAPI path receives XDP frames).
struct LiveGen {
    tx: Ebpf,
    _pass: Ebpf,
    s0: u32,
    frame: Vec<u8>,
}

/// The router's `ip rule`s for the classification variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rules {
    /// One `fwmark N lookup N` per neighbour, the sender's in the middle: a real node.
    PerNeighbour,
    /// Only the sender's rule (the benchmark before issue 16's last step): the stack's rule
    /// walk costs nothing, the most favourable case for the non-fast-path variants.
    Single,
}

/// One sender → router → sink chain configured for one variant. Everything lives in its
/// three namespaces (and the classifier's maps, freed with it), so dropping it leaves
/// nothing behind.
pub struct Chain {
    pub variant: Variant,
    /// Neighbour MACs (classification) or mapped ranges (remapping) on the router.
    pub entries: u32,
    /// The router also has the node's real nft table (the anonymizer's SNAT rule), so
    /// conntrack and the NAT hooks run on every packet, as on every real node.
    pub nat_table: bool,
    live: Option<LiveGen>,
    pub sender: Ns,
    pub router: Ns,
    pub sink: Ns,
    /// Where the sender aims.
    pub target: SocketAddrV4,
    _classifier: Option<Classifier>,
}

impl Chain {
    pub fn new(variant: Variant, entries: u32) -> Chain {
        Chain::build(variant, entries, false, Generator::Udp, Rules::PerNeighbour)
    }

    pub fn build(
        variant: Variant,
        entries: u32,
        nat_table: bool,
        gen: Generator,
        rules: Rules,
    ) -> Chain {
        let sender = Ns::new("bs");
        let router = Ns::new("br");
        let sink = Ns::new("bk");
        crate::lab::veth(
            crate::lab::End(&sender, "s0", SENDER_MAC, "10.99.1.2/24"),
            crate::lab::End(&router, "r0", ROUTER_IN_MAC, "10.99.1.1/24"),
        );
        crate::lab::veth(
            crate::lab::End(&router, "r1", ROUTER_OUT_MAC, "10.99.2.1/24"),
            crate::lab::End(&sink, "k0", SINK_MAC, "10.99.2.2/24"),
        );
        // Permanent neighbours: no ARP in the measured path.
        sender.sh(&format!(
            "ip route add default via 10.99.1.1 && \
             ip neigh replace 10.99.1.1 lladdr {ROUTER_IN_MAC} dev s0 nud permanent"
        ));
        router.sh(&format!(
            "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 && \
             ip neigh replace 10.99.2.2 lladdr {SINK_MAC} dev r1 nud permanent && \
             ip neigh replace 10.99.1.2 lladdr {SENDER_MAC} dev r0 nud permanent"
        ));
        sink.sh(
            "nft -f - <<'EOF'\n\
             table netdev bench {\n  chain in {\n    type filter hook ingress device k0 priority 0;\n    udp dport 9 counter drop\n  }\n}\nEOF",
        );
        let mut target = SocketAddrV4::new(SINK, PORT);
        let mut classifier = None;
        if variant.is_remap() {
            target = remap(&router, variant, entries);
        } else {
            // Move the sink's subnet out of `main`: only table 249 reaches it.
            router.sh(&format!(
                "ip route del 10.99.2.0/24 dev r1 && ip route add 10.99.2.0/24 dev r1 table {TABLE}"
            ));
            match (variant, rules) {
                (Variant::None, _) => router.sh(&format!("ip rule add pref 100 lookup {TABLE}")),
                (_, Rules::Single) => router.sh(&format!(
                    "ip rule add pref 100 fwmark {TABLE} lookup {TABLE}"
                )),
                (_, Rules::PerNeighbour) => {
                    router_rules(&router, entries);
                    String::new()
                }
            };
            classifier = classify(&router, variant, entries);
        }
        if nat_table {
            let s = NatState {
                snat: Some((ANON_RANGE.parse().unwrap(), ROUTER_GLOBAL)),
                ..Default::default()
            };
            nft(&router, &s.render());
        }
        if let Some(c) = classifier.as_mut().filter(|c| c.fast_path()) {
            // What the daemon puts there: the NAT-covered range, the router's own addresses.
            let mut ex = std::collections::BTreeMap::new();
            if nat_table {
                ex.insert(
                    (Ipv4Addr::new(172, 16, 0, 0), 12),
                    ntkplane_common::EXCLUDE_NAT,
                );
            }
            for a in [Ipv4Addr::new(10, 99, 1, 1), ROUTER_GLOBAL] {
                ex.insert((a, 32), ntkplane_common::EXCLUDE_LOCAL);
            }
            c.set_excluded(&ex).expect("fill the exclusion trie");
        }
        let live = (gen == Generator::Live).then(|| live_gen(&sender, &router, target));
        Chain {
            variant,
            entries,
            nat_table,
            live,
            sender,
            router,
            sink,
            target,
            _classifier: classifier,
        }
    }

    /// Packets the sink's interface has received so far.
    pub fn sink_packets(&self) -> u64 {
        self.sink
            .netns()
            .run(|| {
                // thread-self: /proc/self/net would show the process leader's namespace.
                let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
                rx_packets(&dev, "k0")
            })
            .unwrap()
            .expect("k0 in /proc/net/dev")
    }

    /// The variant's name, with `+nat` when the node's nft table is present.
    pub fn label(&self) -> String {
        if self.nat_table {
            format!("{}+nat", self.variant.name())
        } else {
            self.variant.name().to_string()
        }
    }

    /// A UDP socket in the sender's namespace, connected to the target.
    pub fn sender_socket(&self) -> UdpSocket {
        let target = self.target;
        self.sender
            .netns()
            .run(move || {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                s.connect(target)?;
                Ok::<_, std::io::Error>(s)
            })
            .unwrap()
            .expect("sender socket")
    }
}

/// The router's `ip rule`s as a real node with `n` neighbours has them: one
/// `fwmark N lookup N` per neighbour table, all at one priority (the daemon's
/// `PRIO_FWMARK`), so the kernel walks them in insertion order until the packet's mark
/// matches. The sender's rule is the middle one: the average position of a neighbour's rule.
/// (The other neighbours' tables stay empty: their rules never match the sender's packets.)
fn router_rules(router: &Ns, n: u32) {
    let mid = n / 2;
    let mut batch = String::new();
    for i in 1..n {
        if i == mid {
            batch += &format!("rule add pref 100 fwmark {TABLE} lookup {TABLE}\n");
        }
        let m = neighbour_mark(i);
        batch += &format!("rule add pref 100 fwmark {m} lookup {m}\n");
    }
    if mid == 0 || mid >= n {
        batch += &format!("rule add pref 100 fwmark {TABLE} lookup {TABLE}\n");
    }
    let path = std::env::temp_dir().join(format!("{}.iprules", router.name));
    std::fs::write(&path, batch).unwrap();
    router.sh(&format!("ip -batch {}", path.display()));
    let _ = std::fs::remove_file(&path);
}

/// Installs the classification variant on the router; the sender's MAC is the last of the
/// `n` entries, so linear rule lists are walked to the end.
fn classify(router: &Ns, variant: Variant, n: u32) -> Option<Classifier> {
    let entries: Vec<(String, u32)> = (1..n)
        .map(|i| (neighbour_mac(i).to_string(), neighbour_mark(i)))
        .chain(std::iter::once((SENDER_MAC.to_string(), TABLE)))
        .collect();
    match variant {
        Variant::None => None,
        Variant::Ebpf | Variant::Fastpath => {
            let mut c = Classifier::load(
                router.netns(),
                ClassifierConfig {
                    fast_path: variant == Variant::Fastpath,
                    ..Default::default()
                },
            )
            .expect("load classify");
            c.attach("r0").expect("attach classify to r0");
            for (mac, mark) in &entries {
                c.insert(mac.parse().unwrap(), *mark, *mark)
                    .expect("insert neighbour");
            }
            Some(c)
        }
        Variant::NftMap => {
            let elems: Vec<String> = entries.iter().map(|(m, k)| format!("{m} : {k}")).collect();
            nft(
                router,
                &format!(
                    "table ip bench {{\n  map m {{\n    type ether_addr : mark\n    elements = {{ {} }}\n  }}\n  \
                     chain pre {{\n    type filter hook prerouting priority mangle;\n    meta mark set ether saddr map @m\n  }}\n}}\n",
                    elems.join(", ")
                ),
            );
            None
        }
        Variant::IptLegacy | Variant::IptNft => {
            let mut rules = String::from("*mangle\n");
            for (mac, mark) in &entries {
                rules +=
                    &format!("-A PREROUTING -m mac --mac-source {mac} -j MARK --set-mark {mark}\n");
            }
            rules += "COMMIT\n";
            let tool = if variant == Variant::IptLegacy {
                "iptables-legacy-restore"
            } else {
                "iptables-nft-restore"
            };
            restore(router, tool, &rules);
            None
        }
        _ => unreachable!("not a classification variant"),
    }
}

/// Installs the remapping variant: `n` mapped ranges, the one the sender uses last.
/// Returns the sender's target (a mapped address, or the real one for the baseline).
fn remap(router: &Ns, variant: Variant, n: u32) -> SocketAddrV4 {
    let real: Ipv4Prefix = "10.99.2.0/24".parse().unwrap();
    let last = mapped(n - 1);
    let mapped_sink = SocketAddrV4::new(
        Ipv4Addr::from(u32::from(last.addr()) | (u32::from(SINK) & 0xff)),
        PORT,
    );
    match variant {
        Variant::RemapNone => return SocketAddrV4::new(SINK, PORT),
        Variant::RemapIptNetmap => {
            let mut rules = String::from("*nat\n");
            for i in 0..n {
                let m = mapped(i);
                rules += &format!("-A PREROUTING -d {m} -j NETMAP --to {real}\n");
                rules += &format!("-A POSTROUTING -s {real} -d 10.0.0.0/8 -j NETMAP --to {m}\n");
            }
            rules += "COMMIT\n";
            restore(router, "iptables-restore", &rules);
        }
        Variant::RemapNftMaps => {
            let mut s = NatState::default();
            for i in 0..n {
                s.pre.insert((mapped(i), real));
            }
            // The gateway's source rewrite for the subnet's own traffic, as ntkplane
            // installs it (it does not match the benchmark's flow, like in the iptables
            // variant).
            s.post
                .insert((real, "10.0.0.0/8".parse().unwrap(), mapped(n - 1)));
            nft(router, &s.render());
        }
        _ => unreachable!("not a remapping variant"),
    }
    mapped_sink
}

fn nft(ns: &Ns, script: &str) {
    let path = std::env::temp_dir().join(format!("{}.nft", ns.name));
    std::fs::write(&path, script).unwrap();
    ns.sh(&format!("nft -f {}", path.display()));
    let _ = std::fs::remove_file(path);
}

fn restore(ns: &Ns, tool: &str, rules: &str) {
    let path = std::env::temp_dir().join(format!("{}.rules", ns.name));
    std::fs::write(&path, rules).unwrap();
    ns.sh(&format!("{tool} < {}", path.display()));
    let _ = std::fs::remove_file(path);
}

/// `rx_packets` of `iface` in a `/proc/net/dev` listing.
pub fn rx_packets(dev: &str, iface: &str) -> Option<u64> {
    dev.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        if name.trim() != iface {
            return None;
        }
        rest.split_whitespace().nth(1)?.parse().ok()
    })
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Sends 64-byte datagrams on the connected socket with `sendmmsg` (batches of 64) for
/// `dur`; returns (datagrams the kernel accepted, time actually spent).
///
/// Send errors (an ICMP error queued on the socket when a variant does not forward) are
/// ignored: the sink's counter is what tells.
pub fn blast(sock: &UdpSocket, dur: Duration) -> (u64, Duration) {
    const BATCH: usize = 64;
    let buf = [0x5au8; PAYLOAD];
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: mmsghdr is plain data; zeroed means no name, no control data.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| {
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = &mut iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let fd = sock.as_raw_fd();
    let t0 = Instant::now();
    let mut sent = 0u64;
    while t0.elapsed() < dur {
        // SAFETY: msgs holds BATCH valid headers pointing at `iov`/`buf`, alive here.
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0) };
        if r > 0 {
            sent += r as u64;
        }
    }
    (sent, t0.elapsed())
}

/// One measurement: blast for `dur` on `cpu`, count what reached the sink.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub sent: u64,
    pub received: u64,
    pub pps: f64,
}

pub fn measure(chain: &Chain, dur: Duration, cpu: usize) -> Sample {
    if let Some(g) = &chain.live {
        return measure_live(chain, g, dur, cpu);
    }
    let sock = chain.sender_socket();
    let before = chain.sink_packets();
    let (sent, took) = std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_cpu(cpu);
            blast(&sock, dur)
        })
        .join()
        .unwrap()
    });
    // Let the last batches drain through the softirq before reading the counter.
    std::thread::sleep(Duration::from_millis(50));
    let received = chain.sink_packets() - before;
    Sample {
        sent,
        received,
        pps: received as f64 / took.as_secs_f64(),
    }
}

/// Confirms, before measuring, that the chain forwards by its variant's path: a few
/// packets reach the sink. The variant's failure is reported by the caller.
pub fn forwards(chain: &Chain) -> bool {
    let s = measure(chain, Duration::from_millis(50), 0);
    s.sent > 0 && s.received * 10 >= s.sent * 9
}

/// An Ethernet frame of the benchmark's flow (sender → `target`, 64-byte UDP payload).
fn bench_frame(target: SocketAddrV4) -> Vec<u8> {
    let mac = |m: &str| m.parse::<MacAddr>().unwrap().0;
    let mut f = Vec::with_capacity(14 + 28 + PAYLOAD);
    f.extend_from_slice(&mac(ROUTER_IN_MAC));
    f.extend_from_slice(&mac(SENDER_MAC));
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + 8 + PAYLOAD) as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 99, 1, 2]);
    ip[16..20].copy_from_slice(&target.ip().octets());
    let c = crate::fastlab::ip_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&target.port().to_be_bytes());
    f.extend_from_slice(&((8 + PAYLOAD) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x5a; PAYLOAD]);
    f
}

fn live_gen(sender: &Ns, router: &Ns, target: SocketAddrV4) -> LiveGen {
    let load = |name: &str| {
        let mut e = Ebpf::load(EBPF_OBJECT).expect("load the eBPF object");
        let p: &mut Xdp = e.program_mut(name).unwrap().try_into().unwrap();
        p.load().unwrap_or_else(|err| panic!("load {name}: {err}"));
        e
    };
    let mut tx = load("bench_tx");
    let frame = bench_frame(target);
    let mut hdr: aya::maps::Array<_, [u8; 36]> =
        aya::maps::Array::try_from(tx.map_mut("BENCH_HDR").expect("BENCH_HDR")).unwrap();
    hdr.set(0, <[u8; 36]>::try_from(&frame[..36]).unwrap(), 0)
        .expect("write BENCH_HDR");
    let mut pass = load("bench_pass");
    router
        .netns()
        .run(|| {
            let p: &mut Xdp = pass.program_mut("bench_pass").unwrap().try_into().unwrap();
            p.attach("r0", XdpMode::default())
                .expect("attach bench_pass to r0");
        })
        .unwrap();
    let s0 = sender
        .netns()
        .run(|| {
            let n = std::ffi::CString::new("s0").unwrap();
            // SAFETY: a NUL-terminated string.
            unsafe { libc::if_nametoindex(n.as_ptr()) }
        })
        .unwrap();
    assert!(s0 != 0, "s0 not found");
    LiveGen {
        tx,
        _pass: pass,
        s0,
        frame,
    }
}

/// Frames per `BPF_PROG_TEST_RUN` call of the live generator (one call takes ≤ 0.3 s even
/// at the slowest variant's rate, so the duration is kept).
const LIVE_CHUNK: u32 = 8192;

fn measure_live(chain: &Chain, g: &LiveGen, dur: Duration, cpu: usize) -> Sample {
    let before = chain.sink_packets();
    let prog: &Xdp = g.tx.program("bench_tx").unwrap().try_into().unwrap();
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let mut md = [0u8; 24];
    md[4..8].copy_from_slice(&(g.frame.len() as u32).to_ne_bytes());
    md[12..16].copy_from_slice(&g.s0.to_ne_bytes());
    let (sent, took) = chain
        .sender
        .netns()
        .run(|| {
            pin_to_cpu(cpu);
            let t0 = Instant::now();
            let mut sent = 0u64;
            while t0.elapsed() < dur {
                prog.test_run(TestRunOptions {
                    data_in: Some(&g.frame),
                    ctx_in: Some(&md),
                    repeat: LIVE_CHUNK,
                    attrs: TestRunAttrs::new().xdp_live_frames(64),
                    ..Default::default()
                })
                .expect("BPF_PROG_TEST_RUN (live frames)");
                sent += u64::from(LIVE_CHUNK);
            }
            (sent, t0.elapsed())
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let received = chain.sink_packets() - before;
    Sample {
        sent,
        received,
        pps: received as f64 / took.as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_packets_reads_the_named_interface() {
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs\n    lo: 10 2 0 0\n    k0: 6360 60 0 0 0\n";
        assert_eq!(rx_packets(dev, "k0"), Some(60));
        assert_eq!(rx_packets(dev, "lo"), Some(2));
        assert_eq!(rx_packets(dev, "k1"), None);
    }

    #[test]
    fn mapped_ranges_are_distinct_and_never_the_real_subnet() {
        let all: std::collections::BTreeSet<_> = (0..300).map(mapped).collect();
        assert_eq!(all.len(), 300);
        assert!(!all.contains(&"10.99.2.0/24".parse().unwrap()));
    }
}
