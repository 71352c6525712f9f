//! What the machine asks the runtime to do, and the events it reports (neighborhood.md §3,
//! §9). Returned in order: the runtime carries them out in that order (e.g. a reply goes out
//! before the host route it travels on is removed).
use std::net::Ipv4Addr;

use super::arc::ArcKey;
use crate::wire::Message;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Radar broadcast on one NIC.
    Broadcast {
        nic: String,
        msg: Message,
    },
    /// Unicast to a neighbour NIC address through one of my NICs.
    Unicast {
        nic: String,
        to: Ipv4Addr,
        msg: Message,
    },
    /// `ip route add <peer> dev <nic> src <src>` (§3 `add_neighbor`).
    AddNeighbourRoute {
        nic: String,
        peer: Ipv4Addr,
        src: Ipv4Addr,
    },
    /// `ip route del <peer> dev <nic> src <src>` (§3 `remove_neighbor`).
    RemoveNeighbourRoute {
        nic: String,
        peer: Ipv4Addr,
        src: Ipv4Addr,
    },
    /// The first measurement of an exported arc succeeded (`arc_added`, §9).
    ArcAdded {
        arc: ArcKey,
        cost_us: u64,
    },
    /// The official cost changed by the 0.5×/2× rule (`arc_changed`, §6.1).
    ArcChanged {
        arc: ArcKey,
        cost_us: u64,
    },
    /// The arc is going; its host route is still there until the next output (§7.1 step 1).
    ArcRemoving {
        arc: ArcKey,
        still_usable: bool,
    },
    ArcRemoved {
        arc: ArcKey,
    },
}
