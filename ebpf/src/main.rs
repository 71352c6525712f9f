//! ntkplane eBPF programs.
//!
//! `classify` replaces qspnclient's per-neighbour
//! `iptables -t mangle -A PREROUTING -m mac --mac-source <MAC> -j MARK --set-mark <N>`
//! with one hash lookup per packet, whatever the number of neighbours.
//!
//! `fastpath` does what `classify` does and then, for a plain IPv4 unicast frame from a known
//! neighbour, forwards it in TC: `bpf_fib_lookup` in that neighbour's table (`DIRECT|TBID`),
//! TTL decrement, `bpf_redirect_neigh` to the next hop the lookup returned. Everything
//! unusual is handed to the stack exactly as `classify` would (mark set, `TCX_NEXT`).
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::generated::{bpf_fib_lookup, bpf_redirect_neigh},
    bindings::xdp_action,
    macros::{classifier, map, xdp},
    maps::{lpm_trie::Key, HashMap, LpmTrie, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use ntkplane_common::{
    fp, Counters, FastPathCounters, LpmKeyV4, MacKey, NeighbourEntry, CONFIG_ENTRIES, ETH_HLEN,
    ETH_P_IP, MAX_EXCLUDED, MAX_NEIGHBOURS, MIN_IPV4_FRAME, SLOT_IGNORED, SLOT_MISS, STATS_SLOTS,
};

/// Source MAC → mark. Filled by the control plane, one entry per qspn-arc neighbour.
#[map(name = "NTK_NEIGHBOURS")]
static NTK_NEIGHBOURS: HashMap<MacKey, NeighbourEntry> =
    HashMap::with_max_entries(MAX_NEIGHBOURS, 0);

/// Per-CPU counters: slot 0 misses, slot 1 ignored frames, then one slot per neighbour.
#[map(name = "NTK_STATS")]
static NTK_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(STATS_SLOTS, 0);

/// Load-time settings, written by user space for whoever adopts the pinned objects later
/// (index 0: the mark mask, 1: whether the program is `fastpath`). The packet path reads the
/// constant global below instead.
#[map(name = "NTK_CONFIG")]
static NTK_CONFIG: aya_ebpf::maps::Array<u32> =
    aya_ebpf::maps::Array::with_max_entries(CONFIG_ENTRIES, 0);

/// Per-CPU fast-path outcome counters, one entry per neighbour slot (same slots as `NTK_STATS`).
#[map(name = "NTK_FP_STATS")]
static NTK_FP_STATS: PerCpuArray<FastPathCounters> = PerCpuArray::with_max_entries(STATS_SLOTS, 0);

/// Addresses the fast path never forwards to or from (NAT-covered ranges, local addresses),
/// filled by the control plane. Value: the kind (`EXCLUDE_*`), informational.
#[map(name = "NTK_EXCLUDE")]
static NTK_EXCLUDE: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(MAX_EXCLUDED, 0);

/// Bits of `skb->mark` the classifier owns. Set at load time; bits outside it are preserved
/// so that ntkplane coexists with other users of the mark (WireGuard, Docker, firewalld).
#[no_mangle]
static NTK_MARK_MASK: u32 = 0xffff_ffff;

/// `TCX_NEXT` / `TC_ACT_UNSPEC`: let the next TCX program (or the default action) decide.
/// The classifier never drops or redirects.
const TCX_NEXT: i32 = -1;

const _: () = assert!(core::mem::size_of::<LpmKeyV4>() == 8);

#[classifier]
pub fn classify(ctx: TcContext) -> i32 {
    classify_frame(&ctx);
    TCX_NEXT
}

#[classifier]
pub fn fastpath(ctx: TcContext) -> i32 {
    let Some(entry) = classify_frame(&ctx) else {
        return TCX_NEXT;
    };
    let (verdict, outcome) = forward(&ctx, &entry);
    if let Some(c) = NTK_FP_STATS.get_ptr_mut(entry.slot) {
        // SAFETY: per-CPU slot; the index is a constant-bounded outcome.
        unsafe {
            if outcome < fp::N {
                (*c).packets[outcome] += 1;
            }
        }
    }
    verdict
}

/// `struct bpf_fib_lookup` as of Linux 6.10 (64 bytes; the `tbid` member overlays the VLAN
/// fields, `mark` overlays `smac[0..4]`). aya-ebpf-bindings 0.2.0 predates `mark`.
#[repr(C)]
struct FibParams {
    family: u8,
    l4_protocol: u8,
    sport: u16,
    dport: u16,
    tot_len: u16,
    ifindex: u32,
    tos: u32,
    ipv4_src: [u32; 4],
    ipv4_dst: [u32; 4],
    tbid: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
}

/// `struct bpf_redir_neigh`.
#[repr(C)]
struct RedirNeigh {
    nh_family: u32,
    ipv4_nh: [u32; 4],
}

const AF_INET: u8 = 2;
const BPF_FIB_LOOKUP_DIRECT: u32 = 1;
const BPF_FIB_LOOKUP_TBID: u32 = 8;
const BPF_FIB_LOOKUP_SKIP_NEIGH: u32 = 4;
const PACKET_HOST: u32 = 0;
const TC_ACT_REDIRECT: i32 = 7;

/// Forwards the frame in TC when nothing about it is unusual; returns the verdict and the
/// outcome to count.
#[inline(always)]
fn forward(ctx: &TcContext, entry: &NeighbourEntry) -> (i32, usize) {
    if entry.table == 0 {
        return (TCX_NEXT, fp::INACTIVE);
    }
    // SAFETY: `ctx.skb.skb` is the context pointer handed to us by the kernel.
    let skb = unsafe { &*ctx.skb.skb };
    if skb.pkt_type != PACKET_HOST {
        return (TCX_NEXT, fp::NOT_HOST);
    }
    let data = ctx.data();
    if data + MIN_IPV4_FRAME > ctx.data_end() {
        return (TCX_NEXT, fp::OTHER);
    }
    let ip = (data + ETH_HLEN) as *mut u8;
    // SAFETY: bounds checked above (20 bytes of IPv4 header after the Ethernet header).
    let (vihl, tos, tot_len, frag, ttl, proto, src, dst) = unsafe {
        (
            *ip,
            *ip.add(1),
            u16::from_be_bytes([*ip.add(2), *ip.add(3)]),
            u16::from_be_bytes([*ip.add(6), *ip.add(7)]),
            *ip.add(8),
            *ip.add(9),
            core::ptr::read_unaligned(ip.add(12) as *const u32),
            core::ptr::read_unaligned(ip.add(16) as *const u32),
        )
    };
    if vihl != 0x45 {
        return (TCX_NEXT, fp::OPTIONS);
    }
    // MF set or a non-zero offset.
    if frag & 0x3fff != 0 {
        return (TCX_NEXT, fp::FRAGMENT);
    }
    if ttl <= 1 {
        return (TCX_NEXT, fp::TTL);
    }
    let d = dst.to_ne_bytes();
    // Multicast, limited broadcast, class E: never unicast forwarding.
    if d[0] >= 224 {
        return (TCX_NEXT, fp::NOT_HOST);
    }
    // NAT-covered or local, as destination or as source (a NETMAP'd subnet's own hosts, the
    // replies conntrack must rewrite): the stack must see it.
    if NTK_EXCLUDE.get(Key::new(32, d)).is_some()
        || NTK_EXCLUDE.get(Key::new(32, src.to_ne_bytes())).is_some()
    {
        return (TCX_NEXT, fp::EXCLUDED);
    }
    let mut p = FibParams {
        family: AF_INET,
        l4_protocol: proto,
        sport: 0,
        dport: 0,
        tot_len,
        ifindex: skb.ifindex,
        tos: tos as u32,
        ipv4_src: [src, 0, 0, 0],
        ipv4_dst: [dst, 0, 0, 0],
        tbid: entry.table,
        smac: [0; 6],
        dmac: [0; 6],
    };
    // SAFETY: `p` is a 64-byte `struct bpf_fib_lookup` on our stack.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.skb.skb as *mut _,
            &mut p as *mut FibParams as *mut _,
            core::mem::size_of::<FibParams>() as i32,
            BPF_FIB_LOOKUP_DIRECT | BPF_FIB_LOOKUP_TBID | BPF_FIB_LOOKUP_SKIP_NEIGH,
        )
    };
    match rc {
        0 => {}
        1..=3 => return (TCX_NEXT, fp::ROUTE),
        4 => return (TCX_NEXT, fp::NOT_FWDED),
        8 => return (TCX_NEXT, fp::MTU),
        _ => return (TCX_NEXT, fp::OTHER),
    }
    // Re-check the bounds: the verifier forgets them across a helper call.
    let data = ctx.data();
    if data + MIN_IPV4_FRAME > ctx.data_end() {
        return (TCX_NEXT, fp::OTHER);
    }
    let ip = (data + ETH_HLEN) as *mut u8;
    // TTL − 1 with the incremental checksum update of ip_decrease_ttl() (RFC 1624).
    // SAFETY: bounds checked just above.
    unsafe {
        *ip.add(8) = ttl - 1;
        let csum = ip.add(10) as *mut u16;
        let mut check = core::ptr::read_unaligned(csum) as u32;
        check += u16::to_be(0x0100) as u32;
        check += (check >= 0xffff) as u32;
        core::ptr::write_unaligned(csum, check as u16);
    }
    let mut nh = RedirNeigh {
        nh_family: AF_INET as u32,
        ipv4_nh: [p.ipv4_dst[0], 0, 0, 0],
    };
    // SAFETY: `nh` is a `struct bpf_redir_neigh` on our stack.
    let r = unsafe {
        bpf_redirect_neigh(
            p.ifindex,
            &mut nh as *mut RedirNeigh as *mut _,
            core::mem::size_of::<RedirNeigh>() as i32,
            0,
        )
    };
    if r == TC_ACT_REDIRECT as i64 {
        // Leave the egress interface and next hop in the BPF scratch area: tests read them
        // back through BPF_PROG_TEST_RUN's context (no packet is sent there).
        // SAFETY: `cb` is the program's scratch space in `__sk_buff`, writable in TC.
        unsafe {
            (*ctx.skb.skb).cb[0] = p.ifindex;
            (*ctx.skb.skb).cb[1] = p.ipv4_dst[0];
        }
        (TC_ACT_REDIRECT, fp::FORWARDED)
    } else {
        // Only bad arguments make it fail (TC_ACT_SHOT), and ours are fixed: count, don't drop.
        (TCX_NEXT, fp::OTHER)
    }
}

/// Sets the mark of a frame from a known neighbour and counts the frame; returns the
/// neighbour's entry when there is one.
#[inline(always)]
fn classify_frame(ctx: &TcContext) -> Option<NeighbourEntry> {
    let len = ctx.len();
    if (len as usize) < MIN_IPV4_FRAME {
        count(SLOT_IGNORED, len);
        return None;
    }
    // Source MAC (bytes 6..12) and EtherType (12..14) in one 8-byte load.
    let Ok(hdr) = ctx.load::<[u8; 8]>(6) else {
        count(SLOT_IGNORED, len);
        return None;
    };
    let ethertype = u16::from_be_bytes([hdr[6], hdr[7]]);
    // The I/G bit set means a group address: no neighbour can send from it.
    if ethertype != ETH_P_IP || hdr[0] & 1 != 0 {
        count(SLOT_IGNORED, len);
        return None;
    }
    let key = MacKey::new([hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], hdr[5]]);
    // SAFETY: the value is only read; a concurrent update from user space replaces the
    // whole entry, and a torn read of `mark` is impossible for an aligned u32.
    match unsafe { NTK_NEIGHBOURS.get(key) } {
        Some(entry) => {
            // SAFETY: read of a constant global (patched by the loader).
            let mask = unsafe { core::ptr::read_volatile(&NTK_MARK_MASK) };
            // SAFETY: `ctx.skb.skb` is the context pointer handed to us by the kernel.
            let old = unsafe { (*ctx.skb.skb).mark };
            ctx.set_mark((old & !mask) | (entry.mark & mask));
            count(entry.slot, len);
            Some(*entry)
        }
        None => {
            count(SLOT_MISS, len);
            None
        }
    }
}

#[inline(always)]
fn count(slot: u32, len: u32) {
    if let Some(c) = NTK_STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, never shared with another CPU while we run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len as u64;
        }
    }
}

/// Benchmark traffic generator (never loaded by the daemon): run with `BPF_PROG_TEST_RUN`
/// and `BPF_F_TEST_XDP_LIVE_FRAMES` on the sender's veth, each frame is transmitted to the
/// peer as is, so the sender costs a few tens of ns per frame and the router limits the rate.
///
/// The frames' pages come back to the generator's page pool after the router changed them
/// in place (MACs, TTL, NAT), and the kernel does not reset their data: the pristine
/// Ethernet + IPv4 header is copied back from `BENCH_HDR` every time.
#[xdp]
pub fn bench_tx(ctx: XdpContext) -> u32 {
    let Some(h) = BENCH_HDR.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let data = ctx.data();
    if data + BENCH_HDR_LEN > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: bounds checked above; the map value is BENCH_HDR_LEN bytes.
    unsafe { core::ptr::copy_nonoverlapping(h.as_ptr(), data as *mut u8, BENCH_HDR_LEN) };
    xdp_action::XDP_TX
}

const BENCH_HDR_LEN: usize = 36;

/// The benchmark generator's pristine frame header (Ethernet + IPv4 + 2 bytes), index 0.
#[map(name = "BENCH_HDR")]
static BENCH_HDR: aya_ebpf::maps::Array<[u8; BENCH_HDR_LEN]> =
    aya_ebpf::maps::Array::with_max_entries(1, 0);

/// Benchmark helper (never loaded by the daemon): attached to the router's ingress veth it
/// enables that veth's NAPI receive path, which frames sent by `bench_tx` need; every frame
/// goes on to the stack (and TC ingress).
#[xdp]
pub fn bench_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
