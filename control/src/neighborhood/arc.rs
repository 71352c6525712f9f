//! An arc: one of my NICs paired with one neighbour NIC (neighborhood.md §2), and the phase
//! of its life (handshake, exported and probed).
use std::{
    collections::VecDeque,
    hash::{Hash, Hasher},
    net::Ipv4Addr,
};

use super::cost::Smoothed;
use crate::wire::Mac;

/// Names an arc: (my NIC, neighbour MAC), unique by rule (§2). It also carries the neighbour's
/// id and NIC address and my NIC address, which the rules R1/R2 make functions of the MAC;
/// equality and hashing look at the name only.
#[derive(Clone, Debug)]
pub struct ArcKey {
    nic: String,
    peer_mac: Mac,
    peer_id: u32,
    peer_addr: Ipv4Addr,
    my_addr: Ipv4Addr,
}

impl ArcKey {
    pub(crate) fn new(
        nic: &str,
        peer_mac: Mac,
        peer_id: u32,
        peer_addr: Ipv4Addr,
        my_addr: Ipv4Addr,
    ) -> ArcKey {
        ArcKey {
            nic: nic.to_owned(),
            peer_mac,
            peer_id,
            peer_addr,
            my_addr,
        }
    }
    /// My NIC's name.
    pub fn nic(&self) -> &str {
        &self.nic
    }
    pub fn peer_mac(&self) -> Mac {
        self.peer_mac
    }
    /// The neighbour's NeighborhoodNodeID.
    pub fn peer_id(&self) -> u32 {
        self.peer_id
    }
    /// The neighbour NIC's link-local address.
    pub fn peer_addr(&self) -> Ipv4Addr {
        self.peer_addr
    }
    /// My NIC's link-local address.
    pub fn my_addr(&self) -> Ipv4Addr {
        self.my_addr
    }
}

impl PartialEq for ArcKey {
    fn eq(&self, o: &Self) -> bool {
        self.nic == o.nic && self.peer_mac == o.peer_mac
    }
}
impl Eq for ArcKey {}
impl Hash for ArcKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.nic.hash(h);
        self.peer_mac.hash(h);
    }
}

/// Probes remembered per arc: a reply to an older one no longer counts.
pub(crate) const PROBES_IN_FLIGHT: usize = 8;

#[derive(Clone, Debug)]
pub(crate) enum Phase {
    /// Made on hearing `HereIAm` (or on `RequestArc`, just before calling): waiting for the
    /// announcer's `CanYouExport` (§5.2 step 1).
    Awaiting { since_us: u64 },
    /// I am the announcer and asked `CanYouExport` (§5.2 step 2), resent until answered.
    Calling {
        call: u32,
        i_can: bool,
        since_us: u64,
        retry_at_us: u64,
    },
    /// Exported: probed for cost and liveness (§6).
    Exported(Prober),
}

#[derive(Clone, Debug)]
pub(crate) struct Prober {
    pub next_seq: u32,
    pub next_at_us: u64,
    pub last_reply_us: u64,
    /// (seq, sent at), oldest first, at most [`PROBES_IN_FLIGHT`].
    pub sent: VecDeque<(u32, u64)>,
}

impl Prober {
    pub fn new(now_us: u64) -> Prober {
        Prober {
            next_seq: 1,
            next_at_us: now_us,
            // Liveness counts from the export: no reply for `dead_after` since then is death.
            last_reply_us: now_us,
            sent: VecDeque::with_capacity(PROBES_IN_FLIGHT),
        }
    }

    /// Records a probe sent now; returns its seq.
    pub fn send(&mut self, now_us: u64) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        if self.sent.len() == PROBES_IN_FLIGHT {
            self.sent.pop_front();
        }
        self.sent.push_back((seq, now_us));
        seq
    }

    /// The RTT of the reply `seq` received now, if it answers a remembered probe.
    pub fn reply(&mut self, seq: u32, now_us: u64) -> Option<u64> {
        let at = self.sent.iter().position(|(s, _)| *s == seq)?;
        let (_, sent_us) = self.sent.remove(at)?;
        self.last_reply_us = now_us;
        // A zero RTT (coarse clock) would read as "free": one µs is the floor.
        Some(now_us.saturating_sub(sent_us).max(1))
    }
}

#[derive(Clone, Debug)]
pub(crate) struct ArcState {
    pub key: ArcKey,
    pub phase: Phase,
    /// Set by the first successful measurement: the arc is then *available* (§2).
    pub cost: Option<Smoothed>,
}

impl ArcState {
    pub fn exported(&self) -> bool {
        matches!(self.phase, Phase::Exported(_))
    }
}
