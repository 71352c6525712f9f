//! An in-memory network for tests: several [`Neighborhood`] machines whose NICs are plugged
//! into broadcast segments. Broadcasts reach every other NIC on the segment, unicasts the NIC
//! with the destination address; every datagram goes through the real codec
//! ([`crate::wire::encode`]/[`crate::wire::decode`]) and arrives after a fixed latency.
use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashSet},
    net::{Ipv4Addr, SocketAddrV4},
};

use super::{Config, Neighborhood, Output};
use crate::wire::{decode, encode, Auth, Decoded, Mac, Message, NetworkKey, PORT};

struct Plug {
    sys: usize,
    nic: String,
    addr: Ipv4Addr,
    /// The broadcast domains the NIC hears (a radio may hear two that do not hear each other).
    segments: Vec<u32>,
    up: bool,
    mac: Mac,
}

/// A datagram in flight: (arrival µs, order sent, destination plug, source plug, bytes).
type InFlight = (u64, u64, usize, usize, Vec<u8>);

/// Systems, segments, a clock and a queue of datagrams in flight.
pub struct Segments {
    pub systems: Vec<Neighborhood>,
    /// Each system's authentication, if it has a network key.
    auths: Vec<Option<Auth>>,
    keys: Vec<Option<NetworkKey>>,
    plugs: Vec<Plug>,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    pub now_us: u64,
    /// One-way delay of every datagram.
    pub latency_us: u64,
    /// How often every machine gets `on_tick`.
    pub tick_us: u64,
    /// (from system, to system) pairs whose datagrams are lost.
    pub cut: HashSet<(usize, usize)>,
    /// Every output that is not a datagram, per system, in order.
    pub events: Vec<Vec<Output>>,
    /// Datagrams each system's decoder dropped, per reason.
    pub drops: Vec<BTreeMap<&'static str, u64>>,
    /// Kernel host routes per system: (nic, peer) → src, as the outputs left them.
    pub routes: Vec<BTreeMap<(String, Ipv4Addr), Ipv4Addr>>,
}

impl Default for Segments {
    fn default() -> Self {
        Segments {
            systems: Vec::new(),
            auths: Vec::new(),
            keys: Vec::new(),
            plugs: Vec::new(),
            queue: BinaryHeap::new(),
            order: 0,
            now_us: 0,
            latency_us: 250,
            tick_us: 10_000,
            cut: HashSet::new(),
            events: Vec::new(),
            drops: Vec::new(),
            routes: Vec::new(),
        }
    }
}

impl Segments {
    pub fn add_system(&mut self, cfg: Config) -> usize {
        self.add_keyed_system(cfg, None)
    }

    /// A system whose datagrams are authenticated with `key` (docs/PROTOCOL.md §5).
    pub fn add_keyed_system(&mut self, cfg: Config, key: Option<&NetworkKey>) -> usize {
        let seed = cfg.seed ^ 0x5eed;
        self.auths.push(key.map(|k| Auth::new(k, seed)));
        self.keys.push(key.cloned());
        self.systems.push(Neighborhood::new(cfg));
        self.events.push(Vec::new());
        self.drops.push(BTreeMap::new());
        self.routes.push(BTreeMap::new());
        self.systems.len() - 1
    }

    /// Plugs a NIC of `sys` into `segments` and starts managing it.
    pub fn plug(&mut self, sys: usize, nic: &str, mac: Mac, addr: Ipv4Addr, segments: &[u32]) {
        self.plugs.push(Plug {
            sys,
            nic: nic.to_owned(),
            addr,
            segments: segments.to_vec(),
            up: true,
            mac,
        });
        let out = self.systems[sys]
            .add_nic(nic, mac, addr, self.now_us)
            .expect("test NICs are distinct");
        self.dispatch(sys, out);
    }

    /// Stops managing a NIC and unplugs it. `link_up`: the NIC still sends what the machine
    /// says on the way out (its `RemoveArc`s); otherwise the link is down first.
    pub fn unplug(&mut self, sys: usize, nic: &str, link_up: bool) {
        if !link_up {
            self.set_up(sys, nic, false);
        }
        let out = self.systems[sys].remove_nic(nic, link_up);
        self.dispatch(sys, out);
        self.set_up(sys, nic, false);
    }

    /// The daemon of `sys` restarts: a fresh machine (new id and seed in `cfg`), a fresh
    /// authentication state with the same key, the same NICs and addresses.
    pub fn restart(&mut self, sys: usize, cfg: Config) {
        let seed = cfg.seed ^ 0x5eed;
        self.auths[sys] = self.keys[sys].as_ref().map(|k| Auth::new(k, seed));
        self.systems[sys] = Neighborhood::new(cfg);
        let nics: Vec<(String, Mac, Ipv4Addr)> = self
            .plugs
            .iter()
            .filter(|p| p.sys == sys && p.up)
            .map(|p| (p.nic.clone(), p.mac, p.addr))
            .collect();
        // The kernel state of the old daemon goes with it.
        self.routes[sys].clear();
        for (nic, mac, addr) in nics {
            let out = self.systems[sys]
                .add_nic(&nic, mac, addr, self.now_us)
                .expect("test NICs are distinct");
            self.dispatch(sys, out);
        }
    }

    fn set_up(&mut self, sys: usize, nic: &str, up: bool) {
        for p in self
            .plugs
            .iter_mut()
            .filter(|p| p.sys == sys && p.nic == nic)
        {
            p.up = up;
        }
    }

    /// Runs the network until `until_us`.
    pub fn run_until(&mut self, until_us: u64) {
        let tick = self.tick_us.max(1);
        let mut next_tick = self.now_us - self.now_us % tick + tick;
        loop {
            let next_dgram = self.queue.peek().map(|Reverse(d)| d.0);
            let t = match next_dgram {
                Some(d) if d <= next_tick => d,
                _ => next_tick,
            };
            if t > until_us {
                break;
            }
            self.now_us = t;
            if next_dgram == Some(t) {
                let Some(Reverse((_, _, to, from, dgram))) = self.queue.pop() else {
                    break;
                };
                self.deliver(to, from, &dgram);
            } else {
                for sys in 0..self.systems.len() {
                    let out = self.systems[sys].on_tick(t);
                    self.dispatch(sys, out);
                }
                next_tick += tick;
            }
        }
        self.now_us = until_us;
    }

    /// Runs for `us` more.
    pub fn run_for(&mut self, us: u64) {
        self.run_until(self.now_us + us);
    }

    /// The available arcs of `sys` as (my NIC, peer id), sorted.
    pub fn arcs(&self, sys: usize) -> Vec<(String, u32)> {
        let mut v: Vec<_> = self.systems[sys]
            .current_arcs()
            .into_iter()
            .map(|(k, _)| (k.nic().to_owned(), k.peer_id()))
            .collect();
        v.sort();
        v
    }

    fn deliver(&mut self, to: usize, from: usize, dgram: &[u8]) {
        let (Some(dst), Some(src)) = (self.plugs.get(to), self.plugs.get(from)) else {
            return;
        };
        if !dst.up {
            return;
        }
        let (sys, nic) = (dst.sys, dst.nic.clone());
        let from = SocketAddrV4::new(src.addr, PORT);
        match decode(dgram, self.auths[sys].as_mut(), from, self.now_us / 1000) {
            Ok(Decoded::Message { sender, msg }) => {
                let out = self.systems[sys].on_message(&nic, from, sender, &msg, self.now_us);
                self.dispatch(sys, out);
            }
            Ok(Decoded::Respond { reply, .. }) => self.send(sys, &nic, None, &reply),
            Ok(Decoded::Consumed { .. }) => {}
            Err(d) => *self.drops[sys].entry(d.as_str()).or_default() += 1,
        }
    }

    /// Carries out outputs a test obtained by calling a machine directly.
    pub fn deliver_outputs(&mut self, sys: usize, out: Vec<Output>) {
        self.dispatch(sys, out);
    }

    fn dispatch(&mut self, sys: usize, out: Vec<Output>) {
        for o in out {
            let (nic, to, msg) = match o {
                Output::Broadcast { nic, msg } => (nic, None, msg),
                Output::Unicast { nic, to, msg } => (nic, Some(to), msg),
                Output::AddNeighbourRoute { nic, peer, src } => {
                    self.routes[sys].insert((nic.clone(), peer), src);
                    self.events[sys].push(Output::AddNeighbourRoute { nic, peer, src });
                    continue;
                }
                Output::RemoveNeighbourRoute { nic, peer, src } => {
                    self.routes[sys].remove(&(nic.clone(), peer));
                    self.events[sys].push(Output::RemoveNeighbourRoute { nic, peer, src });
                    continue;
                }
                other => {
                    self.events[sys].push(other);
                    continue;
                }
            };
            self.send(sys, &nic, to, &msg);
        }
    }

    /// Puts a datagram from `sys`'s `nic` in flight: to `to`, or broadcast.
    fn send(&mut self, sys: usize, nic: &str, to: Option<Ipv4Addr>, msg: &Message) {
        let id = self.systems[sys].node_id();
        let Some(from) = self
            .plugs
            .iter()
            .position(|p| p.sys == sys && p.nic == nic && p.up)
        else {
            return;
        };
        let segments = self.plugs[from].segments.clone();
        let dgram = encode(id, msg, self.auths[sys].as_mut()).expect("machine messages encode");
        let targets: Vec<usize> = (0..self.plugs.len())
            .filter(|&i| {
                let p = &self.plugs[i];
                i != from
                    && p.up
                    && p.segments.iter().any(|s| segments.contains(s))
                    && to.is_none_or(|a| a == p.addr)
                    && !self.cut.contains(&(sys, p.sys))
            })
            .collect();
        for t in targets {
            self.order += 1;
            self.queue.push(Reverse((
                self.now_us + self.latency_us,
                self.order,
                t,
                from,
                dgram.clone(),
            )));
        }
    }
}
