//! The QSPN messages as they travel (qspn.md §7, §8.1): plain data, serde, no logic.
//!
//! Field sets follow qspn.md §7.1–7.2; the encoding is the daemon's own (`wire`), not the
//! reference's JSON-GLib one (§7.6, interoperability with the Vala binaries is not a goal).
//! Addresses travel as positions, low level first, like the reference's `Naddr.pos`.

use serde::{Deserialize, Serialize};

pub use crate::addr::HCoord;

/// An instance's id of one of its qspn arcs (qspn.md §2.3): random in `1..2^31−2`, private to
/// the instance, opaque to everybody else.
pub type ArcId = u32;

/// A path cost (qspn.md §5): `Null` (the destination is the sender itself) < any real cost
/// (microseconds of round-trip time) < `Dead` (the path no longer exists). The derived `Ord`
/// gives exactly that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Cost {
    Null,
    Real(u64),
    Dead,
}

/// An eldership value (qspn.md §6.1): lower = older. [`NULL_ELDERSHIP`] is younger than every
/// real one (qspn.md §19: the testsuite's −1 compared as eldest by mistake).
pub type Eldership = u32;
pub const NULL_ELDERSHIP: Eldership = u32::MAX;

/// The fingerprint of a g-node (qspn.md §6.2): the id of its eldest member, its elderships at
/// levels `level..l−1` and the seed elderships of the chain that gave the id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint {
    pub id: u64,
    pub level: u8,
    pub elderships: Vec<Eldership>,
    pub elderships_seed: Vec<Eldership>,
}

/// One advertised path (qspn.md §7.2), in the sender's view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtpPath {
    /// Last = the destination; the sender itself is not included.
    pub hops: Vec<HCoord>,
    /// Same length as `hops`; `arcs[0]` = the sender's id of its arc to `hops[0]`.
    pub arcs: Vec<ArcId>,
    /// The sender's total cost to the destination.
    pub cost: Cost,
    pub fingerprint: Fingerprint,
    pub nodes_inside: u32,
    /// `l` entries: receivers outside the sender's level-`i` g-node drop the path.
    pub ignore_outside: Vec<bool>,
}

/// An Extended Tracer Packet (qspn.md §7.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtpMessage {
    /// The sender's address, low level first (may hold virtual positions).
    pub node_address: Vec<u32>,
    /// `l+1` entries: the sender's fingerprints of levels `0..=l`.
    pub fingerprints: Vec<Fingerprint>,
    /// `l+1` entries.
    pub nodes_inside: Vec<u32>,
    /// G-nodes this ETP already traversed, in the sender's view, the sender excluded.
    pub hops: Vec<HCoord>,
    pub p_list: Vec<EtpPath>,
}

/// Why a `get_full_etp` was refused (qspn.md §8.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// `QspnBootstrapInProgressError`: ask again after my bootstrap (I will flood then).
    BootstrapInProgress,
    /// `QspnNotAcceptedError`: the arc is not (yet) one of my qspn arcs.
    NotAccepted,
}

/// The remote methods of one QSPN instance (qspn.md §8.1), as messages between two identities.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QspnMessage {
    /// Request: the requester's current address, low level first.
    GetFullEtp {
        requesting_address: Vec<u32>,
    },
    /// The reply to `GetFullEtp`.
    FullEtp(Result<EtpMessage, Refusal>),
    SendEtp {
        etp: EtpMessage,
        is_full: bool,
    },
    GotPrepareDestroy,
    GotDestroy,
}
