//! The machine's periods and its configuration (docs/PROTOCOL.md §6). ntkplane runs faster
//! than the reference (neighborhood.md §10: `here_i_am` every 60 s, a measurement every
//! 28–30 s, liveness left to the RPC layer): its probes are one tiny datagram, and a dead arc
//! must be noticed in seconds, not at the next TCP timeout.

/// Periods in milliseconds (configuration); the machine's clock is in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// `HereIAm` on every NIC: at once, then every `announce_ms` (±10 %).
    pub announce_ms: u64,
    /// A probe on every exported arc: at once after the export, then every `probe_ms`
    /// (±`jitter_pct` %, so that neighbours do not probe in lockstep; §15.1's reason).
    pub probe_ms: u64,
    pub jitter_pct: u64,
    /// An exported arc with no probe reply for this long is dead (ntkplane's liveness rule,
    /// replacing the reference's failed `nop`, neighborhood.md §6.1 step 2).
    pub dead_after_ms: u64,
    /// A handshake (`RequestArc` … `CanYouExportReply`) not finished after this long is given
    /// up and its arc and route removed (neighborhood.md §15.3); `CanYouExport` is resent
    /// every `probe_ms` meanwhile (it travels by UDP).
    pub handshake_ms: u64,
    /// Besides neighborhood.md §6.1's halving or doubling, an official cost change is
    /// reported only when the smoothed RTT moved at least this much (µs; 0: §6.1 alone).
    /// 1 ms: below it a change is within the random 0–999 µs tie breaker every arc's cost
    /// carries anyway (qspn.md §3), and on a LAN it is the hosts' load, not the link.
    pub min_cost_change_us: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            announce_ms: 5_000,
            probe_ms: 1_000,
            jitter_pct: 10,
            dead_after_ms: 3_000,
            handshake_ms: 3_000,
            min_cost_change_us: 1_000,
        }
    }
}

/// One system's neighbourhood settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// This system's NeighborhoodNodeID, random in `1..2^31−2` (neighborhood.md §2).
    pub node_id: u32,
    /// Exported arcs at most (neighborhood.md §5.3; the reference passes 1000).
    pub max_arcs: usize,
    pub timers: Timers,
    /// Seeds jitter and call ids; the runtime takes it from the OS RNG.
    pub seed: u64,
}

impl Config {
    pub fn new(node_id: u32, seed: u64) -> Config {
        Config {
            node_id,
            max_arcs: 1000,
            timers: Timers::default(),
            seed,
        }
    }
}
