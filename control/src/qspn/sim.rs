//! A pure in-memory simulator of QSPN instances joined by arcs (no I/O, virtual time):
//! it carries every [`Output`] the way a runtime would — `RequestFullEtp` → the peer's
//! `on_get_full_etp` → `on_full_etp`; `SendEtp` → the peers' `on_send_etp`; timers in
//! virtual time order — through one FIFO queue. Messages take no virtual time; timers are
//! fired only when no message is in flight.
use std::collections::{BTreeMap, VecDeque};

use super::engine::{Params, Qspn};
use super::event::{Output, Signal, Timer};
use super::msg::{ArcId, Cost, EtpMessage, Fingerprint, Refusal};

/// An arc between two instances: `(node, that node's arc id)` at each end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub a: usize,
    pub arc_a: ArcId,
    pub b: usize,
    pub arc_b: ArcId,
    pub alive: bool,
}

#[derive(Clone, Debug)]
enum Msg {
    Request {
        from: usize,
        arc: ArcId,
    },
    Reply {
        to: usize,
        arc: ArcId,
        reply: Result<EtpMessage, Refusal>,
    },
    Etp {
        to: usize,
        arc: ArcId,
        etp: EtpMessage,
        is_full: bool,
    },
    PrepareDestroy {
        to: usize,
        arc: ArcId,
    },
    Destroy {
        to: usize,
        arc: ArcId,
    },
}

/// The run did not reach quiescence within the step bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonConvergence {
    pub steps: usize,
    pub in_flight: usize,
}

/// The simulated network.
pub struct Sim {
    pub gsizes: Vec<u32>,
    pub nodes: Vec<Qspn>,
    pub links: Vec<Link>,
    queue: VecDeque<Msg>,
    timers: BTreeMap<(u64, u64), (usize, Timer)>,
    seq: u64,
    /// Virtual time, ms.
    pub now: u64,
    last_activity: u64,
    /// Timers further than this after the last message are not fired by `run` (so the
    /// periodic full ETP does not keep a run alive forever).
    pub horizon_ms: u64,
    /// Every signal: (node, virtual time, signal).
    pub signals: Vec<(usize, u64, Signal)>,
    /// Every `ArcRemoved`: (node, arc, bad_link).
    pub arcs_removed: Vec<(usize, ArcId, bool)>,
    /// Number of `on_send_etp` deliveries (for "no forward" checks).
    pub etps_delivered: usize,
}

impl Sim {
    pub fn new(gsizes: Vec<u32>) -> Self {
        Self {
            gsizes,
            nodes: Vec::new(),
            links: Vec::new(),
            queue: VecDeque::new(),
            timers: BTreeMap::new(),
            seq: 0,
            now: 0,
            last_activity: 0,
            horizon_ms: 60_000,
            signals: Vec::new(),
            arcs_removed: Vec::new(),
            etps_delivered: 0,
        }
    }

    /// A new network of one node (`create_net`); returns its index.
    pub fn add_node(&mut self, naddr: Vec<u32>, fp: Fingerprint) -> usize {
        let i = self.nodes.len();
        let p = Params::new(self.gsizes.clone(), 0x5EED_0000 + i as u64);
        let (q, out) = Qspn::create_net(p, naddr, fp);
        self.nodes.push(q);
        self.handle(i, out);
        i
    }

    /// Adds an already built instance (e.g. from `enter_net`) with its first outputs.
    pub fn add_instance(&mut self, q: Qspn, out: Vec<Output>) -> usize {
        let i = self.nodes.len();
        self.nodes.push(q);
        self.handle(i, out);
        i
    }

    /// Joins `a` and `b`; `cost_ab` is `a`'s measurement of its arc, `cost_ba` `b`'s.
    pub fn link(&mut self, a: usize, b: usize, cost_ab: u64, cost_ba: u64) -> usize {
        let (arc_a, out_a) = self.nodes[a].arc_add(Cost::Real(cost_ab));
        let (arc_b, out_b) = self.nodes[b].arc_add(Cost::Real(cost_ba));
        self.links.push(Link {
            a,
            arc_a,
            b,
            arc_b,
            alive: true,
        });
        self.handle(a, out_a);
        self.handle(b, out_b);
        self.links.len() - 1
    }

    /// Joins `a` (existing arc id `arc_a`, e.g. inherited) and `b` (existing `arc_b`).
    pub fn link_existing(&mut self, a: usize, arc_a: ArcId, b: usize, arc_b: ArcId) -> usize {
        self.links.push(Link {
            a,
            arc_a,
            b,
            arc_b,
            alive: true,
        });
        self.links.len() - 1
    }

    /// Removes a link at both ends (`arc_remove`).
    pub fn unlink(&mut self, l: usize) {
        let k = self.links[l];
        if !k.alive {
            return;
        }
        self.links[l].alive = false;
        let out = self.nodes[k.a].arc_remove(k.arc_a);
        self.handle(k.a, out);
        let out = self.nodes[k.b].arc_remove(k.arc_b);
        self.handle(k.b, out);
    }

    /// Changes `node`'s measurement of link `l`.
    pub fn set_cost(&mut self, l: usize, node: usize, cost: u64) {
        let k = self.links[l];
        let arc = if k.a == node { k.arc_a } else { k.arc_b };
        let out = self.nodes[node].arc_changed(arc, Cost::Real(cost));
        self.handle(node, out);
    }

    /// The link holding `node`'s arc `arc`.
    pub fn link_of(&self, node: usize, arc: ArcId) -> Option<usize> {
        self.links.iter().position(|k| {
            k.alive && ((k.a == node && k.arc_a == arc) || (k.b == node && k.arc_b == arc))
        })
    }

    /// `node`'s arc id towards `peer` (first alive link).
    pub fn arc_to(&self, node: usize, peer: usize) -> Option<ArcId> {
        self.links.iter().find_map(|k| match k {
            k if k.alive && k.a == node && k.b == peer => Some(k.arc_a),
            k if k.alive && k.b == node && k.a == peer => Some(k.arc_b),
            _ => None,
        })
    }

    fn peer(&self, node: usize, arc: ArcId) -> Option<(usize, ArcId)> {
        let l = self.link_of(node, arc)?;
        let k = self.links[l];
        Some(if k.a == node {
            (k.b, k.arc_b)
        } else {
            (k.a, k.arc_a)
        })
    }

    /// Carries out `node`'s outputs.
    pub fn handle(&mut self, node: usize, out: Vec<Output>) {
        for o in out {
            match o {
                Output::RequestFullEtp { arc } => {
                    self.queue.push_back(Msg::Request { from: node, arc })
                }
                Output::SendEtp { arcs, etp, is_full } => {
                    for arc in arcs {
                        if let Some((to, parc)) = self.peer(node, arc) {
                            self.queue.push_back(Msg::Etp {
                                to,
                                arc: parc,
                                etp: etp.clone(),
                                is_full,
                            });
                        }
                    }
                }
                Output::SendPrepareDestroy { arcs } => {
                    for arc in arcs {
                        if let Some((to, parc)) = self.peer(node, arc) {
                            self.queue.push_back(Msg::PrepareDestroy { to, arc: parc });
                        }
                    }
                }
                Output::SendDestroy { arcs } => {
                    for arc in arcs {
                        if let Some((to, parc)) = self.peer(node, arc) {
                            self.queue.push_back(Msg::Destroy { to, arc: parc });
                        }
                    }
                }
                Output::ArcRemoved { arc, bad_link } => {
                    self.arcs_removed.push((node, arc, bad_link));
                    // The runtime drops the identity arc: the peer loses it too.
                    if let Some(l) = self.link_of(node, arc) {
                        self.links[l].alive = false;
                        let k = self.links[l];
                        let (p, parc) = if k.a == node {
                            (k.b, k.arc_b)
                        } else {
                            (k.a, k.arc_a)
                        };
                        let out = self.nodes[p].arc_remove(parc);
                        self.handle(p, out);
                    }
                }
                Output::Timer { after_ms, timer } => {
                    self.seq += 1;
                    self.timers
                        .insert((self.now + after_ms, self.seq), (node, timer));
                }
                Output::Signal(s) => self.signals.push((node, self.now, s)),
                Output::PathsChanged => {}
            }
        }
    }

    fn deliver(&mut self, m: Msg) {
        match m {
            Msg::Request { from, arc } => {
                if !self.nodes[from].arcs().any(|a| a == arc) {
                    return;
                }
                match self.peer(from, arc) {
                    None => {
                        let out = self.nodes[from].on_request_failed(arc);
                        self.handle(from, out);
                    }
                    Some((to, parc)) => {
                        let addr = self.nodes[from].my_naddr().to_vec();
                        let (reply, out) = self.nodes[to].on_get_full_etp(parc, &addr);
                        self.handle(to, out);
                        self.queue.push_back(Msg::Reply {
                            to: from,
                            arc,
                            reply,
                        });
                    }
                }
            }
            Msg::Reply { to, arc, reply } => {
                let out = self.nodes[to].on_full_etp(arc, reply);
                self.handle(to, out);
            }
            Msg::Etp {
                to,
                arc,
                etp,
                is_full,
            } => {
                self.etps_delivered += 1;
                let out = self.nodes[to].on_send_etp(arc, etp, is_full);
                self.handle(to, out);
            }
            Msg::PrepareDestroy { to, arc } => {
                let out = self.nodes[to].got_prepare_destroy(arc);
                self.handle(to, out);
            }
            Msg::Destroy { to, arc } => {
                let out = self.nodes[to].got_destroy(arc);
                self.handle(to, out);
            }
        }
    }

    /// Delivers messages and fires due timers until nothing is in flight and no timer is
    /// due within `horizon_ms` of the last message; at most `max_steps` deliveries/timers.
    pub fn run(&mut self, max_steps: usize) -> Result<usize, NonConvergence> {
        let mut steps = 0;
        loop {
            if steps >= max_steps {
                return Err(NonConvergence {
                    steps,
                    in_flight: self.queue.len(),
                });
            }
            if let Some(m) = self.queue.pop_front() {
                self.last_activity = self.now;
                self.deliver(m);
                steps += 1;
                continue;
            }
            let Some((&(t, s), _)) = self.timers.iter().next() else {
                return Ok(steps);
            };
            if t > self.last_activity + self.horizon_ms {
                return Ok(steps);
            }
            let (node, timer) = self.timers.remove(&(t, s)).expect("present");
            self.now = self.now.max(t);
            let out = self.nodes[node].on_timer(timer);
            self.handle(node, out);
            steps += 1;
        }
    }

    /// Advances virtual time to `t` firing every timer due until then (and delivering the
    /// messages they cause), then runs to quiescence.
    pub fn run_until(&mut self, t: u64, max_steps: usize) -> Result<usize, NonConvergence> {
        let mut steps = 0;
        while let Some((&(tt, s), _)) = self.timers.iter().next() {
            if tt > t {
                break;
            }
            let (node, timer) = self.timers.remove(&(tt, s)).expect("present");
            self.now = self.now.max(tt);
            let out = self.nodes[node].on_timer(timer);
            self.handle(node, out);
            while let Some(m) = self.queue.pop_front() {
                self.deliver(m);
                steps += 1;
                if steps >= max_steps {
                    return Err(NonConvergence {
                        steps,
                        in_flight: self.queue.len(),
                    });
                }
            }
        }
        self.now = self.now.max(t);
        self.last_activity = self.now;
        Ok(steps + self.run(max_steps.saturating_sub(steps))?)
    }

    /// ETPs delivered since the last call (a mark for "who sent what" checks).
    pub fn etps_delivered_since_mark(&mut self) -> usize {
        std::mem::take(&mut self.etps_delivered)
    }

    /// Signals of `node` (in order).
    pub fn signals_of(&self, node: usize) -> Vec<Signal> {
        self.signals
            .iter()
            .filter(|(n, _, _)| *n == node)
            .map(|(_, _, s)| s.clone())
            .collect()
    }
}
