//! What the engine hands back to its runtime: outputs, timers, signals (qspn.md §15).
use super::msg::{ArcId, EtpMessage, Fingerprint, HCoord};
use super::path::PathView;

/// Timers the runtime arms for the engine (`Output::Timer`) and gives back to `on_timer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Timer {
    /// §13.1: `qspn_bootstrap_complete` ~1 ms after `create_net`.
    BootstrapComplete,
    /// §11.5: the periodic full ETP (every `periodic_full_ms`). `epoch` lets a restarted
    /// chain make older ones stale.
    Periodic { epoch: u64 },
    /// §12.1: first-detection split flood, 500 ms after the detection.
    SplitFlood { dests: Vec<HCoord> },
    /// §12.2: split debounce for destination `d`, eldest fingerprint id `fe`, other `f`.
    SplitDebounce { d: HCoord, fe: u64, f: u64 },
    /// §13.2: bootstrap give-up wait (10 s).
    BootstrapGiveUp,
    /// §13.2: `presence_notified` 1 s after the final broadcast.
    PresenceNotified,
    /// §13.4: the connectivity notice 50 ms after `make_connectivity` (`lvl` = from−1,
    /// `old_pos` = my old position there).
    ConnectivityNotice { lvl: usize, old_pos: u32 },
    /// §13.7: `remove_identity` 10 s after `got_prepare_destroy`.
    RemoveIdentity,
}

/// Signals (qspn.md §15), for logs and events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    DestinationAdded(HCoord),
    DestinationRemoved(HCoord),
    PathAdded(PathView),
    PathChanged(PathView),
    PathRemoved(PathView),
    ChangedFp(usize),
    ChangedNodesInside(usize),
    GnodeSplitted {
        arc: ArcId,
        d: HCoord,
        fp: Fingerprint,
    },
    BootstrapComplete,
    PresenceNotified,
    RemoveIdentity,
}

/// What the runtime must do after a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `GetFullEtp` (my current address) on `arc`; give the answer to `on_full_etp`, a
    /// transport error to `on_request_failed`.
    RequestFullEtp {
        arc: ArcId,
    },
    /// Send `SendEtp` on each arc (broadcast or unicast is the runtime's choice, §8.2).
    SendEtp {
        arcs: Vec<ArcId>,
        etp: EtpMessage,
        is_full: bool,
    },
    /// Send `GotPrepareDestroy` on each arc (§13.7).
    SendPrepareDestroy {
        arcs: Vec<ArcId>,
    },
    /// Send `GotDestroy` on each arc (§13.7).
    SendDestroy {
        arcs: Vec<ArcId>,
    },
    /// The engine dropped an arc on its own (§15).
    ArcRemoved {
        arc: ArcId,
        bad_link: bool,
    },
    /// Call `on_timer(timer)` after `after_ms`.
    Timer {
        after_ms: u64,
        timer: Timer,
    },
    Signal(Signal),
    /// `paths()` or the neighbour addresses changed: re-read them.
    PathsChanged,
}
