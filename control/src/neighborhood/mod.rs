//! Neighbourhood of one system (neighborhood.md §2–§10, HEAD behaviour with the §15
//! recommendations): discovery of neighbour systems on every managed NIC, the arc handshake,
//! host routes, cost (RTT) measurement and liveness. A pure state machine: the runtime feeds
//! it NIC changes, received messages and clock ticks (monotonic microseconds) and carries out
//! the [`Output`]s it returns; it owns no socket and no clock (docs/PROTOCOL.md §6).
mod arc;
mod cost;
mod output;
pub mod segment;
mod timers;

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
};

use tracing::debug;

pub use arc::ArcKey;
pub use cost::Smoothed;
pub use output::Output;
pub use timers::{Config, Timers};

use arc::{ArcState, Phase, Prober};

use crate::wire::{Mac, Message, SplitMix64};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NicError {
    /// §8: a NIC name is bound to one MAC and a MAC to one name for as long as it is managed.
    #[error("NIC {name} is already managed with MAC {}", crate::mac::MacAddr(*.managed_mac))]
    NameTaken { name: String, managed_mac: Mac },
    #[error("MAC {} is already managed as NIC {managed_name}", crate::mac::MacAddr(*.mac))]
    MacTaken { mac: Mac, managed_name: String },
}

#[derive(Clone, Debug)]
struct Nic {
    mac: Mac,
    addr: Ipv4Addr,
    next_announce_us: u64,
}

/// The neighbourhood state machine of one system.
pub struct Neighborhood {
    cfg: Config,
    rng: SplitMix64,
    next_call: u32,
    nics: BTreeMap<String, Nic>,
    arcs: Vec<ArcState>,
}

/// What rules R1–R5 (§5.2) say about a (NIC, id, MAC, address) heard.
enum Fit {
    /// Breaks R1–R4: ignore the message.
    Conflict(&'static str),
    /// The arc exists already (index in `arcs`).
    Existing(usize),
    New,
}

fn ms(v: u64) -> u64 {
    v.saturating_mul(1000)
}

impl Neighborhood {
    pub fn new(cfg: Config) -> Neighborhood {
        let mut rng = SplitMix64::new(cfg.seed);
        let next_call = rng.next_u32();
        Neighborhood {
            cfg,
            rng,
            next_call,
            nics: BTreeMap::new(),
            arcs: Vec::new(),
        }
    }

    pub fn node_id(&self) -> u32 {
        self.cfg.node_id
    }

    /// Starts managing a NIC whose link-local address the runtime has assigned (§3, §8):
    /// announces at once. The same name and MAC again is a no-op.
    pub fn add_nic(
        &mut self,
        name: &str,
        mac: Mac,
        addr: Ipv4Addr,
        now_us: u64,
    ) -> Result<Vec<Output>, NicError> {
        if let Some(n) = self.nics.get(name) {
            if n.mac == mac {
                return Ok(Vec::new());
            }
            return Err(NicError::NameTaken {
                name: name.to_owned(),
                managed_mac: n.mac,
            });
        }
        if let Some((other, _)) = self.nics.iter().find(|(_, n)| n.mac == mac) {
            return Err(NicError::MacTaken {
                mac,
                managed_name: other.clone(),
            });
        }
        self.nics.insert(
            name.to_owned(),
            Nic {
                mac,
                addr,
                next_announce_us: now_us,
            },
        );
        let mut out = Vec::new();
        self.announce_due(now_us, &mut out);
        Ok(out)
    }

    /// Stops managing a NIC (§8): every arc on it is removed at once. `link_up`: whether the
    /// NIC can still carry the `RemoveArc` broadcasts (false when the link went down).
    pub fn remove_nic(&mut self, name: &str, link_up: bool) -> Vec<Output> {
        let mut out = Vec::new();
        if self.nics.contains_key(name) {
            while let Some(i) = self.arcs.iter().position(|a| a.key.nic() == name) {
                self.remove_my_arc(i, link_up, &mut out);
            }
            self.nics.remove(name);
        }
        out
    }

    /// The user's decision to drop an arc (§7.2, e.g. QSPN found it bad). Idempotent.
    pub fn remove_arc(&mut self, arc: &ArcKey, still_usable: bool) -> Vec<Output> {
        let mut out = Vec::new();
        if let Some(i) = self.arcs.iter().position(|a| a.key == *arc) {
            self.remove_my_arc(i, still_usable, &mut out);
        }
        out
    }

    /// A unicast `CanYouExport` with this call could not be sent (transport error): the
    /// handshake fails and its arc and route go (§5.2 step 2, §15.3).
    pub fn on_call_failed(&mut self, call: u32) -> Vec<Output> {
        let mut out = Vec::new();
        if let Some(i) = self
            .arcs
            .iter()
            .position(|a| matches!(a.phase, Phase::Calling { call: c, .. } if c == call))
        {
            debug!(
                call,
                "neighbourhood: can_you_export failed, dropping the half-made arc"
            );
            self.remove_my_arc(i, false, &mut out);
        }
        out
    }

    /// The available arcs (exported and measured: §2 `current_arcs`) with their costs.
    pub fn current_arcs(&self) -> Vec<(ArcKey, u64)> {
        self.arcs
            .iter()
            .filter_map(|a| Some((a.key.clone(), a.cost?.official_us())))
            .collect()
    }

    /// Every arc, handshaking ones included: (key, exported, official cost if measured), for
    /// status reports.
    pub fn all_arcs(&self) -> Vec<(ArcKey, bool, Option<u64>)> {
        self.arcs
            .iter()
            .map(|a| (a.key.clone(), a.exported(), a.cost.map(|c| c.official_us())))
            .collect()
    }

    /// The arc on `nic` towards a neighbour NIC address, whatever its phase (the runtime's
    /// `is_from_unicast`, §14: a NIC address identifies a NIC pair by rule R2).
    pub fn find_arc(&self, nic: &str, peer_addr: Ipv4Addr) -> Option<&ArcKey> {
        self.arcs
            .iter()
            .map(|a| &a.key)
            .find(|k| k.nic() == nic && k.peer_addr() == peer_addr)
    }

    /// The next time `on_tick` has something to do.
    pub fn next_wakeup_us(&self) -> Option<u64> {
        let t = &self.cfg.timers;
        let nics = self.nics.values().map(|n| n.next_announce_us);
        let arcs = self.arcs.iter().map(|a| match &a.phase {
            Phase::Awaiting { since_us } => since_us.saturating_add(ms(t.handshake_ms)),
            Phase::Calling {
                since_us,
                retry_at_us,
                ..
            } => (*retry_at_us).min(since_us.saturating_add(ms(t.handshake_ms))),
            Phase::Exported(p) => p
                .next_at_us
                .min(p.last_reply_us.saturating_add(ms(t.dead_after_ms))),
        });
        nics.chain(arcs).min()
    }

    /// Announcements, probes, retries and timeouts due at `now_us`.
    pub fn on_tick(&mut self, now_us: u64) -> Vec<Output> {
        let mut out = Vec::new();
        self.announce_due(now_us, &mut out);
        let t = self.cfg.timers;
        let mut i = 0;
        while i < self.arcs.len() {
            let key = self.arcs[i].key.clone();
            let (to, nic) = (key.peer_addr(), key.nic().to_owned());
            let next_probe = self.jittered(t.probe_ms);
            match &mut self.arcs[i].phase {
                Phase::Awaiting { since_us } => {
                    if now_us.saturating_sub(*since_us) >= ms(t.handshake_ms) {
                        debug!(
                            ?key,
                            "neighbourhood: handshake not completed, dropping the arc"
                        );
                        self.remove_my_arc(i, false, &mut out);
                        continue;
                    }
                }
                Phase::Calling {
                    call,
                    i_can,
                    since_us,
                    retry_at_us,
                } => {
                    if now_us.saturating_sub(*since_us) >= ms(t.handshake_ms) {
                        debug!(
                            ?key,
                            "neighbourhood: no reply to can_you_export, dropping the arc"
                        );
                        self.remove_my_arc(i, false, &mut out);
                        continue;
                    }
                    if now_us >= *retry_at_us {
                        *retry_at_us = now_us.saturating_add(ms(t.probe_ms));
                        let msg = Message::CanYouExport {
                            call: *call,
                            i_can: *i_can,
                        };
                        out.push(Output::Unicast { nic, to, msg });
                    }
                }
                Phase::Exported(p) => {
                    if now_us.saturating_sub(p.last_reply_us) >= ms(t.dead_after_ms) {
                        debug!(?key, "neighbourhood: no probe reply, the arc is dead");
                        self.remove_my_arc(i, false, &mut out);
                        continue;
                    }
                    if now_us >= p.next_at_us {
                        p.next_at_us = now_us.saturating_add(next_probe);
                        let seq = p.send(now_us);
                        out.push(Output::Unicast {
                            nic,
                            to,
                            msg: Message::Probe { seq },
                        });
                    }
                }
            }
            i += 1;
        }
        out
    }

    /// A message received on `nic` from `from`, whose header named `sender` as its
    /// NeighborhoodNodeID. Messages that are not the neighbourhood's, not addressed to me, or
    /// inconsistent are ignored (logged at debug).
    pub fn on_message(
        &mut self,
        nic: &str,
        from: SocketAddrV4,
        sender: u32,
        msg: &Message,
        now_us: u64,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(me) = self.nics.get(nic).cloned() else {
            return out;
        };
        // No arc is ever made with oneself (§2), nor answered to.
        if sender == self.cfg.node_id {
            return out;
        }
        let src = *from.ip();
        match *msg {
            Message::HereIAm {
                node_id,
                mac,
                nic_addr,
            } => {
                // §4: the announced address is the one it came from, the id the header's.
                if node_id != sender || nic_addr != src {
                    debug!(nic, %src, sender, "neighbourhood: inconsistent here_i_am ignored");
                    return out;
                }
                self.heard_here_i_am(nic, &me, node_id, mac, nic_addr, now_us, &mut out);
            }
            Message::RequestArc {
                dest_id,
                dest_mac,
                dest_addr,
                its_id,
                its_mac,
                its_addr,
            } => {
                if (dest_id, dest_mac, dest_addr) != (self.cfg.node_id, me.mac, me.addr)
                    || its_id != sender
                    || its_addr != src
                {
                    return out;
                }
                self.heard_request_arc(nic, &me, its_id, its_mac, its_addr, now_us, &mut out);
            }
            Message::CanYouExport { call, i_can } => {
                if let Some(i) = self.unicast_arc(nic, src, sender) {
                    self.heard_can_you_export(i, call, i_can, now_us, &mut out);
                }
            }
            Message::CanYouExportReply { call, can } => {
                if let Some(i) = self.unicast_arc(nic, src, sender) {
                    self.heard_export_reply(i, call, can, now_us, &mut out);
                }
            }
            Message::RemoveArc {
                dest_id,
                dest_mac,
                dest_addr,
                its_id,
                its_mac,
                its_addr,
            } => {
                // §7.2: addressed to me, for the arc (its MAC, my receiving NIC), consistent.
                if (dest_id, dest_mac, dest_addr) != (self.cfg.node_id, me.mac, me.addr)
                    || its_id != sender
                {
                    return out;
                }
                if let Some(i) = self.arcs.iter().position(|a| {
                    a.key.nic() == nic
                        && a.key.peer_mac() == its_mac
                        && a.key.peer_id() == its_id
                        && a.key.peer_addr() == its_addr
                }) {
                    self.remove_my_arc(i, false, &mut out);
                }
            }
            Message::Probe { seq } => {
                // Answer over any known arc (the peer may export before I do); never a
                // stranger, so that the daemon is no reflector.
                if self.unicast_arc(nic, src, sender).is_some() {
                    out.push(Output::Unicast {
                        nic: nic.to_owned(),
                        to: src,
                        msg: Message::ProbeReply { seq },
                    });
                }
            }
            Message::ProbeReply { seq } => {
                if let Some(i) = self.unicast_arc(nic, src, sender) {
                    self.heard_probe_reply(i, seq, now_us, &mut out);
                }
            }
            // Not the neighbourhood's.
            Message::IdentityAnnounce { .. }
            | Message::Qspn { .. }
            | Message::Ack { .. }
            | Message::ChallengeRequest { .. }
            | Message::ChallengeReply { .. } => {}
        }
        out
    }

    // --- §5.2, one step per message ---

    #[allow(clippy::too_many_arguments)]
    fn heard_here_i_am(
        &mut self,
        nic: &str,
        me: &Nic,
        id: u32,
        mac: Mac,
        addr: Ipv4Addr,
        now_us: u64,
        out: &mut Vec<Output>,
    ) {
        match self.fit(nic, id, mac, addr) {
            Fit::Conflict(rule) => {
                debug!(nic, id, %addr, rule, "neighbourhood: here_i_am ignored");
            }
            // R5: the periodic re-announcement of a known neighbour.
            Fit::Existing(_) => {}
            Fit::New => {
                self.create_arc(
                    nic,
                    me,
                    id,
                    mac,
                    addr,
                    Phase::Awaiting { since_us: now_us },
                    out,
                );
                out.push(Output::Broadcast {
                    nic: nic.to_owned(),
                    msg: Message::RequestArc {
                        dest_id: id,
                        dest_mac: mac,
                        dest_addr: addr,
                        its_id: self.cfg.node_id,
                        its_mac: me.mac,
                        its_addr: me.addr,
                    },
                });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn heard_request_arc(
        &mut self,
        nic: &str,
        me: &Nic,
        id: u32,
        mac: Mac,
        addr: Ipv4Addr,
        now_us: u64,
        out: &mut Vec<Output>,
    ) {
        let i_can = self.exported_count() < self.cfg.max_arcs;
        let call = self.next_call();
        let calling = Phase::Calling {
            call,
            i_can,
            since_us: now_us,
            retry_at_us: now_us.saturating_add(ms(self.cfg.timers.probe_ms)),
        };
        match self.fit(nic, id, mac, addr) {
            Fit::Conflict(rule) => {
                debug!(nic, id, %addr, rule, "neighbourhood: request_arc ignored");
                return;
            }
            Fit::Existing(i) => match self.arcs[i].phase {
                // A call is out (a repeated request): nothing new.
                Phase::Calling { .. } => return,
                // Exported here, but the peer asks again: it lost its side of the arc (a
                // handshake it gave up under load, a restart of its machine, a silent
                // removal). HEAD ignores this and the arc stays one-sided for good — my
                // probes are still answered over its new, unexported arc. Tell it again that
                // I export: its `can_you_export` answer exports its side; my phase stays.
                Phase::Exported(_) => {
                    out.push(Output::Unicast {
                        nic: nic.to_owned(),
                        to: addr,
                        msg: Message::CanYouExport { call, i_can: true },
                    });
                    return;
                }
                // Both ends heard each other: reuse the arc I made (§11.1).
                Phase::Awaiting { .. } => self.arcs[i].phase = calling,
            },
            Fit::New => self.create_arc(nic, me, id, mac, addr, calling, out),
        }
        out.push(Output::Unicast {
            nic: nic.to_owned(),
            to: addr,
            msg: Message::CanYouExport { call, i_can },
        });
    }

    fn heard_can_you_export(
        &mut self,
        i: usize,
        call: u32,
        peer_can: bool,
        now_us: u64,
        out: &mut Vec<Output>,
    ) {
        let (nic, to) = (
            self.arcs[i].key.nic().to_owned(),
            self.arcs[i].key.peer_addr(),
        );
        let can = self.arcs[i].exported() || self.exported_count() < self.cfg.max_arcs;
        out.push(Output::Unicast {
            nic,
            to,
            msg: Message::CanYouExportReply { call, can },
        });
        if can && peer_can {
            self.export(i, now_us);
        } else {
            // §15.3: a refused handshake leaves nothing behind; a later announcement retries.
            debug!(key = ?self.arcs[i].key, can, peer_can, "neighbourhood: export refused");
            self.remove_my_arc(i, false, out);
        }
    }

    fn heard_export_reply(
        &mut self,
        i: usize,
        call: u32,
        can: bool,
        now_us: u64,
        out: &mut Vec<Output>,
    ) {
        let Phase::Calling {
            call: mine, i_can, ..
        } = self.arcs[i].phase
        else {
            return; // exported meanwhile by the peer's own call, or a stale reply
        };
        if call != mine {
            return;
        }
        // `i_can` was true when the call went out; other arcs may have been exported since.
        let still_can = i_can && self.exported_count() < self.cfg.max_arcs;
        if still_can && can {
            self.export(i, now_us);
        } else {
            debug!(key = ?self.arcs[i].key, still_can, can, "neighbourhood: export refused");
            self.remove_my_arc(i, false, out);
        }
    }

    fn heard_probe_reply(&mut self, i: usize, seq: u32, now_us: u64, out: &mut Vec<Output>) {
        let min_change_us = self.cfg.timers.min_cost_change_us;
        let a = &mut self.arcs[i];
        let Phase::Exported(p) = &mut a.phase else {
            return;
        };
        let Some(rtt) = p.reply(seq, now_us) else {
            return;
        };
        match &mut a.cost {
            None => {
                let c = Smoothed::first(rtt);
                a.cost = Some(c);
                out.push(Output::ArcAdded {
                    arc: a.key.clone(),
                    cost_us: c.official_us(),
                });
            }
            Some(c) => {
                if let Some(cost_us) = c.observe_beyond(rtt, min_change_us) {
                    out.push(Output::ArcChanged {
                        arc: a.key.clone(),
                        cost_us,
                    });
                }
            }
        }
    }

    // --- helpers ---

    /// Rules R1–R5 of §5.2 for a neighbour (id, MAC, address) heard on `nic`.
    fn fit(&self, nic: &str, id: u32, mac: Mac, addr: Ipv4Addr) -> Fit {
        for (i, a) in self.arcs.iter().enumerate() {
            let k = &a.key;
            if k.peer_mac() == mac {
                if k.peer_id() != id {
                    return Fit::Conflict("R1: that MAC belongs to another neighbour");
                }
                if k.peer_addr() != addr {
                    return Fit::Conflict("R2: that MAC has another address");
                }
                if k.nic() != nic {
                    return Fit::Conflict("R3: that MAC is reached from another NIC");
                }
                return Fit::Existing(i);
            }
        }
        if self
            .arcs
            .iter()
            .any(|a| a.key.nic() == nic && a.key.peer_id() == id)
        {
            return Fit::Conflict("R4: that neighbour already has an arc on this NIC");
        }
        Fit::New
    }

    #[allow(clippy::too_many_arguments)]
    fn create_arc(
        &mut self,
        nic: &str,
        me: &Nic,
        id: u32,
        mac: Mac,
        addr: Ipv4Addr,
        phase: Phase,
        out: &mut Vec<Output>,
    ) {
        self.arcs.push(ArcState {
            key: ArcKey::new(nic, mac, id, addr, me.addr),
            phase,
            cost: None,
        });
        out.push(Output::AddNeighbourRoute {
            nic: nic.to_owned(),
            peer: addr,
            src: me.addr,
        });
    }

    /// Idempotent (§15.4): exporting an exported arc keeps its one prober.
    fn export(&mut self, i: usize, now_us: u64) {
        if !self.arcs[i].exported() {
            self.arcs[i].phase = Phase::Exported(Prober::new(now_us));
        }
    }

    /// §7.1, in its order.
    fn remove_my_arc(&mut self, i: usize, still_usable: bool, out: &mut Vec<Output>) {
        if i >= self.arcs.len() {
            return;
        }
        let a = self.arcs.remove(i);
        let k = a.key;
        if a.cost.is_some() {
            out.push(Output::ArcRemoving {
                arc: k.clone(),
                still_usable,
            });
        }
        out.push(Output::RemoveNeighbourRoute {
            nic: k.nic().to_owned(),
            peer: k.peer_addr(),
            src: k.my_addr(),
        });
        if still_usable {
            if let Some(me) = self.nics.get(k.nic()) {
                out.push(Output::Broadcast {
                    nic: k.nic().to_owned(),
                    msg: Message::RemoveArc {
                        dest_id: k.peer_id(),
                        dest_mac: k.peer_mac(),
                        dest_addr: k.peer_addr(),
                        its_id: self.cfg.node_id,
                        its_mac: me.mac,
                        its_addr: me.addr,
                    },
                });
            }
        }
        if a.cost.is_some() {
            out.push(Output::ArcRemoved { arc: k });
        }
    }

    /// The arc a unicast came by: my receiving NIC, the sender's address and id.
    fn unicast_arc(&self, nic: &str, src: Ipv4Addr, sender: u32) -> Option<usize> {
        self.arcs.iter().position(|a| {
            a.key.nic() == nic && a.key.peer_addr() == src && a.key.peer_id() == sender
        })
    }

    fn exported_count(&self) -> usize {
        self.arcs.iter().filter(|a| a.exported()).count()
    }

    fn next_call(&mut self) -> u32 {
        self.next_call = self.next_call.wrapping_add(1);
        self.next_call
    }

    /// `period_ms` ± `jitter_pct` %, in µs.
    fn jittered(&mut self, period_ms: u64) -> u64 {
        let p = ms(period_ms);
        let j = p / 100 * self.cfg.timers.jitter_pct.min(100);
        self.rng.range(p - j, p.saturating_add(j))
    }

    fn announce_due(&mut self, now_us: u64, out: &mut Vec<Output>) {
        let id = self.cfg.node_id;
        let period = self.cfg.timers.announce_ms;
        let names: Vec<String> = self
            .nics
            .iter()
            .filter(|(_, n)| now_us >= n.next_announce_us)
            .map(|(k, _)| k.clone())
            .collect();
        for name in names {
            let next = now_us.saturating_add(self.jittered(period));
            if let Some(n) = self.nics.get_mut(&name) {
                n.next_announce_us = next;
                out.push(Output::Broadcast {
                    nic: name,
                    msg: Message::HereIAm {
                        node_id: id,
                        mac: n.mac,
                        nic_addr: n.addr,
                    },
                });
            }
        }
    }
}
