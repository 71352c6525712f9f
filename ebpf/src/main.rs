//! ntkplane eBPF programs.
//!
//! `classify` replaces qspnclient's per-neighbour
//! `iptables -t mangle -A PREROUTING -m mac --mac-source <MAC> -j MARK --set-mark <N>`
//! with one hash lookup per packet, whatever the number of neighbours.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{classifier, map},
    maps::{HashMap, PerCpuArray},
    programs::TcContext,
};
use ntkplane_common::{
    Counters, MacKey, NeighbourEntry, ETH_P_IP, MAX_NEIGHBOURS, MIN_IPV4_FRAME, SLOT_IGNORED,
    SLOT_MISS, STATS_SLOTS,
};

/// Source MAC → mark. Filled by the control plane, one entry per qspn-arc neighbour.
#[map(name = "NTK_NEIGHBOURS")]
static NTK_NEIGHBOURS: HashMap<MacKey, NeighbourEntry> =
    HashMap::with_max_entries(MAX_NEIGHBOURS, 0);

/// Per-CPU counters: slot 0 misses, slot 1 ignored frames, then one slot per neighbour.
#[map(name = "NTK_STATS")]
static NTK_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(STATS_SLOTS, 0);

/// Load-time settings, written by user space for whoever adopts the pinned objects later
/// (index 0: the mark mask). The packet path reads the constant global below instead.
#[map(name = "NTK_CONFIG")]
static NTK_CONFIG: aya_ebpf::maps::Array<u32> = aya_ebpf::maps::Array::with_max_entries(1, 0);

/// Bits of `skb->mark` the classifier owns. Set at load time; bits outside it are preserved
/// so that ntkplane coexists with other users of the mark (WireGuard, Docker, firewalld).
#[no_mangle]
static NTK_MARK_MASK: u32 = 0xffff_ffff;

/// `TCX_NEXT` / `TC_ACT_UNSPEC`: let the next TCX program (or the default action) decide.
/// The classifier never drops or redirects.
const TCX_NEXT: i32 = -1;

#[classifier]
pub fn classify(ctx: TcContext) -> i32 {
    classify_frame(&ctx);
    TCX_NEXT
}

#[inline(always)]
fn classify_frame(ctx: &TcContext) {
    let len = ctx.len();
    if (len as usize) < MIN_IPV4_FRAME {
        count(SLOT_IGNORED, len);
        return;
    }
    // Source MAC (bytes 6..12) and EtherType (12..14) in one 8-byte load.
    let Ok(hdr) = ctx.load::<[u8; 8]>(6) else {
        count(SLOT_IGNORED, len);
        return;
    };
    let ethertype = u16::from_be_bytes([hdr[6], hdr[7]]);
    // The I/G bit set means a group address: no neighbour can send from it.
    if ethertype != ETH_P_IP || hdr[0] & 1 != 0 {
        count(SLOT_IGNORED, len);
        return;
    }
    let key = MacKey::new([hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], hdr[5]]);
    // SAFETY: the value is only read; a concurrent update from user space replaces the
    // whole entry, and a torn read of `mark` is impossible for an aligned u32.
    match unsafe { NTK_NEIGHBOURS.get(&key) } {
        Some(entry) => {
            // SAFETY: read of a constant global (patched by the loader).
            let mask = unsafe { core::ptr::read_volatile(&NTK_MARK_MASK) };
            // SAFETY: `ctx.skb.skb` is the context pointer handed to us by the kernel.
            let old = unsafe { (*ctx.skb.skb).mark };
            ctx.set_mark((old & !mask) | (entry.mark & mask));
            count(entry.slot, len);
        }
        None => count(SLOT_MISS, len),
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
