//! Everything the daemons say to each other (docs/PROTOCOL.md §3): one enum, one datagram
//! format. Plain data; the postcard encoding of this enum *is* the body of a datagram, so the
//! variant order is part of the protocol: append new variants, never reorder or remove
//! (a receiver that does not know a variant drops the datagram as malformed).
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::qspn::msg::{EtpMessage, EtpPath, Fingerprint, QspnMessage};

/// A MAC address as it travels (6 raw bytes).
pub type Mac = [u8; 6];

/// One identity of the peer on an arc (identities.md): its NodeID, and the MAC/link-local of
/// the pseudo-interface it uses on this arc (for the main identity: the real NIC's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerIdentity {
    pub node_id: u32,
    pub mac: Mac,
    pub linklocal: Ipv4Addr,
    pub main: bool,
}

/// A datagram's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    // --- neighbourhood (neighborhood.md §4) ---
    /// Radar broadcast on one NIC: the sender's id, that NIC's MAC and address.
    HereIAm {
        node_id: u32,
        mac: Mac,
        nic_addr: Ipv4Addr,
    },
    /// Radar broadcast on the NIC where `HereIAm` was heard, addressed to the announcer.
    RequestArc {
        dest_id: u32,
        dest_mac: Mac,
        dest_addr: Ipv4Addr,
        its_id: u32,
        its_mac: Mac,
        its_addr: Ipv4Addr,
    },
    /// Unicast over the new arc; answered by `CanYouExportReply` with the same `call`.
    CanYouExport {
        call: u32,
        i_can: bool,
    },
    CanYouExportReply {
        call: u32,
        can: bool,
    },
    /// Radar broadcast (the host route is already gone): "forget our arc".
    RemoveArc {
        dest_id: u32,
        dest_mac: Mac,
        dest_addr: Ipv4Addr,
        its_id: u32,
        its_mac: Mac,
        its_addr: Ipv4Addr,
    },
    /// Unicast over an arc: RTT measurement and liveness (ntkplane's replacement for `ping`
    /// and `nop`, neighborhood.md §6.1–6.2). The reply echoes `seq`.
    Probe {
        seq: u32,
    },
    ProbeReply {
        seq: u32,
    },
    // --- identities ---
    /// The sender's identities on this arc and their pseudo-interfaces.
    IdentityAnnounce {
        identities: Vec<PeerIdentity>,
    },
    // --- QSPN (qspn.md §8), identity-aware: source and destination identity NodeIDs ---
    Qspn {
        src: u32,
        dst: u32,
        call: u32,
        msg: QspnMessage,
    },
    /// Acknowledges a unicast `Qspn` with the same `call` (the runtime retransmits until then).
    Ack {
        call: u32,
    },
    // --- authentication (RFC 8967 §4.3), only ever with a network key ---
    /// "Prove that your current index is fresh", to the sender whose index is `index`:
    /// answered by an authenticated `ChallengeReply` echoing the nonce. Both travel by
    /// broadcast on the NIC (there may be no host route yet), so they name their addressee.
    ChallengeRequest {
        nonce: [u8; 16],
        index: u64,
    },
    /// `index`: the challenger's index (from the request's trailer).
    ChallengeReply {
        nonce: [u8; 16],
        index: u64,
    },
}

/// Caps on the lists inside a message, checked after decoding (docs/PROTOCOL.md §4). The
/// datagram size already bounds every allocation (see `codec`); these keep the state machines
/// from being fed absurd but small-enough lists.
pub mod limits {
    /// Identities of one system on one arc.
    pub const IDENTITIES: usize = 64;
    /// Levels of a topology (+1 for the per-level lists that hold `l+1` entries).
    pub const LEVELS: usize = 33;
    /// Hops of a path or of an ETP.
    pub const HOPS: usize = 1024;
    /// Paths in one ETP.
    pub const PATHS: usize = 4096;
}

impl Message {
    /// The metrics label of the variant.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::HereIAm { .. } => "here_i_am",
            Message::RequestArc { .. } => "request_arc",
            Message::CanYouExport { .. } => "can_you_export",
            Message::CanYouExportReply { .. } => "can_you_export_reply",
            Message::RemoveArc { .. } => "remove_arc",
            Message::Probe { .. } => "probe",
            Message::ProbeReply { .. } => "probe_reply",
            Message::IdentityAnnounce { .. } => "identity_announce",
            Message::Qspn { .. } => "qspn",
            Message::Ack { .. } => "ack",
            Message::ChallengeRequest { .. } => "challenge_request",
            Message::ChallengeReply { .. } => "challenge_reply",
        }
    }

    /// Whether every list is within [`limits`].
    pub fn within_limits(&self) -> bool {
        match self {
            Message::IdentityAnnounce { identities } => identities.len() <= limits::IDENTITIES,
            Message::Qspn { msg, .. } => qspn_within_limits(msg),
            _ => true,
        }
    }
}

fn qspn_within_limits(m: &QspnMessage) -> bool {
    match m {
        QspnMessage::GetFullEtp { requesting_address } => {
            requesting_address.len() <= limits::LEVELS
        }
        QspnMessage::FullEtp(Ok(etp)) | QspnMessage::SendEtp { etp, .. } => etp_within_limits(etp),
        QspnMessage::FullEtp(Err(_)) | QspnMessage::GotPrepareDestroy | QspnMessage::GotDestroy => {
            true
        }
    }
}

fn etp_within_limits(e: &EtpMessage) -> bool {
    e.node_address.len() <= limits::LEVELS
        && e.fingerprints.len() <= limits::LEVELS
        && e.fingerprints.iter().all(fingerprint_within_limits)
        && e.nodes_inside.len() <= limits::LEVELS
        && e.hops.len() <= limits::HOPS
        && e.p_list.len() <= limits::PATHS
        && e.p_list.iter().all(path_within_limits)
}

fn path_within_limits(p: &EtpPath) -> bool {
    p.hops.len() <= limits::HOPS
        && p.arcs.len() <= limits::HOPS
        && fingerprint_within_limits(&p.fingerprint)
        && p.ignore_outside.len() <= limits::LEVELS
}

fn fingerprint_within_limits(f: &Fingerprint) -> bool {
    f.elderships.len() <= limits::LEVELS && f.elderships_seed.len() <= limits::LEVELS
}
