//! Types shared by the eBPF programs (kernel side) and the control plane (user side).
//!
//! Every type is `#[repr(C)]` with explicit, zeroed padding: the kernel hashes and compares
//! map keys byte by byte, so an uninitialised padding byte would make two equal MACs
//! different keys.
#![no_std]

/// Name of the classifier's neighbour map (source MAC → mark).
pub const NEIGHBOURS_MAP: &str = "NTK_NEIGHBOURS";
/// Name of the classifier's per-CPU counter array.
pub const STATS_MAP: &str = "NTK_STATS";
/// Name of the classifier's settings array (index 0: the mark mask it was loaded with).
pub const CONFIG_MAP: &str = "NTK_CONFIG";
/// Name of the classifier program.
pub const CLASSIFY_PROG: &str = "classify";
/// Name of the global holding the mark mask (set at load time).
pub const MARK_MASK_GLOBAL: &str = "NTK_MARK_MASK";
/// Name of the fast-path program: `classify`, then forwarding in TC (see `docs/DESIGN.md`).
pub const FASTPATH_PROG: &str = "fastpath";
/// Name of the fast path's per-CPU counter array (one [`FastPathCounters`] per slot).
pub const FP_STATS_MAP: &str = "NTK_FP_STATS";
/// Name of the LPM trie of addresses the fast path never forwards to or from (NAT-covered
/// ranges, local addresses): key [`LpmKeyV4`], value one of the `EXCLUDE_*` kinds.
pub const EXCLUDE_MAP: &str = "NTK_EXCLUDE";
/// Capacity of the exclusion trie.
pub const MAX_EXCLUDED: u32 = 16_384;
/// Index in the settings array of the fast-path flag (1: the pinned program is `fastpath`).
pub const CONFIG_FAST_PATH: u32 = 1;
/// Entries of the settings array.
pub const CONFIG_ENTRIES: u32 = 2;

/// Exclusion kind: a NAT-covered range (anonymizing SNAT or NETMAP).
pub const EXCLUDE_NAT: u32 = 1;
/// Exclusion kind: a local address of the namespace.
pub const EXCLUDE_LOCAL: u32 = 2;

/// Key of the exclusion trie (`struct bpf_lpm_trie_key_u8` with 4 bytes of data).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LpmKeyV4 {
    pub prefix_len: u32,
    /// Network byte order.
    pub addr: [u8; 4],
}

/// Fast-path outcome indices into [`FastPathCounters::packets`].
pub mod fp {
    /// Forwarded in TC (`bpf_redirect_neigh`).
    pub const FORWARDED: usize = 0;
    /// Handed to the stack: TTL ≤ 1.
    pub const TTL: usize = 1;
    /// Handed to the stack: the table answered unreachable, blackhole or prohibit.
    pub const ROUTE: usize = 2;
    /// Handed to the stack: not forwarded by the table (local destination, or no matching
    /// prefix so the stack's later rules decide).
    pub const NOT_FWDED: usize = 3;
    /// Handed to the stack: a fragment.
    pub const FRAGMENT: usize = 4;
    /// Handed to the stack: IP options (IHL > 5) or not IPv4 version 4.
    pub const OPTIONS: usize = 5;
    /// Handed to the stack: larger than the egress MTU.
    pub const MTU: usize = 6;
    /// Handed to the stack: destination or source in an excluded range (NAT or local).
    pub const EXCLUDED: usize = 7;
    /// Handed to the stack: not addressed to this host (other MAC, multicast, broadcast).
    pub const NOT_HOST: usize = 8;
    /// Handed to the stack: anything else (header not linear, lookup error, redirect error).
    pub const OTHER: usize = 9;
    /// Handed to the stack: the neighbour's table is not active (no `fwmark` rule yet, so the
    /// stack would not look it up either); user space marks it with `table` 0.
    pub const INACTIVE: usize = 10;
    /// Number of outcomes.
    pub const N: usize = 11;
    /// Short names, in index order (for `show-tables`).
    pub const NAMES: [&str; N] = [
        "forwarded",
        "ttl",
        "route",
        "not-fwded",
        "fragment",
        "options",
        "mtu",
        "excluded",
        "not-host",
        "other",
        "inactive",
    ];
}

/// Per-CPU fast-path counters of one neighbour slot (packets per outcome).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FastPathCounters {
    pub packets: [u64; fp::N],
}

/// Capacity of the neighbour map. A system has one entry per distinct neighbour MAC of the
/// identities living in one namespace; 4 096 leaves room far beyond qspnclient's 51. The
/// kernel allocates the per-CPU counter arrays (two, `STATS_SLOTS` entries each) one
/// element at a time under a global lock when the classifier is loaded: at 65 536 that was
/// 1.3 s of a daemon's start (55 % of its CPU), and 49 daemons starting on 2 CPUs queued
/// for it (BENCHMARKS.md, "Convergence").
pub const MAX_NEIGHBOURS: u32 = 4_096;
/// Slots of the counter array: two reserved slots plus one per neighbour.
pub const STATS_SLOTS: u32 = MAX_NEIGHBOURS + FIRST_NEIGHBOUR_SLOT;

/// Counter slot of IPv4 frames whose source MAC is not in the map.
pub const SLOT_MISS: u32 = 0;
/// Counter slot of frames the classifier does not look at (not IPv4, too short for an IPv4
/// header, or a group source MAC, which no neighbour can have).
pub const SLOT_IGNORED: u32 = 1;
/// First slot that user space hands out to neighbour entries.
pub const FIRST_NEIGHBOUR_SLOT: u32 = 2;

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// Shortest frame that can carry an IPv4 packet (Ethernet header + minimal IPv4 header).
pub const MIN_IPV4_FRAME: usize = ETH_HLEN + 20;
/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;

/// Key of the neighbour map: an Ethernet source MAC.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MacKey {
    pub addr: [u8; 6],
    /// Always zero (see the module comment).
    pub _pad: [u8; 2],
}

impl MacKey {
    pub const fn new(addr: [u8; 6]) -> Self {
        Self { addr, _pad: [0; 2] }
    }
}

/// Value of the neighbour map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NeighbourEntry {
    /// Mark to set, already confined to the mark mask by user space.
    pub mark: u32,
    /// Routing table the mark selects. `classify` ignores it; `fastpath` looks the frame up in
    /// it, and hands the frame to the stack when it is 0 (the table's rule is not active).
    pub table: u32,
    /// Index into the counter array.
    pub slot: u32,
    /// Always zero.
    pub _pad: u32,
}

/// Per-CPU packet and byte counters of one slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data, `#[repr(C)]`, no implicit padding (explicit `_pad` fields).
    unsafe impl aya::Pod for super::MacKey {}
    unsafe impl aya::Pod for super::NeighbourEntry {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::LpmKeyV4 {}
    unsafe impl aya::Pod for super::FastPathCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<MacKey>(), 8);
        assert_eq!(size_of::<NeighbourEntry>(), 16);
        assert_eq!(size_of::<Counters>(), 16);
        assert_eq!(size_of::<LpmKeyV4>(), 8);
        assert_eq!(size_of::<FastPathCounters>(), 8 * fp::N);
    }
}
