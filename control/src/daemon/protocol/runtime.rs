//! The protocol runtime: the daemon's Netsukuku protocols between real hosts. One thread in
//! the system's default namespace, with its own tokio runtime, owns the protocol sockets
//! (one per managed NIC), the Neighborhood machine (discovery, arcs, RTT cost, liveness) and
//! the QSPN instance of the main identity; both are pure (`crate::neighborhood`,
//! `crate::qspn`) and this file only carries their messages, timers and results.
//!
//! What it learns reaches the model through the writer, as the feed commands do
//! (`add-identity-arc` for a discovered arc, `add-qspn-arc` in `--qspn-arcs auto`,
//! `remove-arc` for a dead one, `etp` with the instance's paths), so protocol-learnt state
//! is validated, persisted and reconciled exactly like a command's. The writer publishes
//! every model it commits; the runtime follows it: a qspn arc that appears in the model
//! (from `add-qspn-arc`, typed or automatic) becomes an arc of the QSPN instance once the
//! Neighborhood measured its cost; one that disappears is removed from the instance.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{oneshot, watch};

use super::{
    feed::{feed_of, PathIn},
    link,
};
use crate::{
    daemon::{
        events::{Event, Events},
        proto::{Feed, Request, Response},
        server::Msg,
    },
    mac::MacAddr,
    neighborhood::{self, Neighborhood},
    netns::Netns,
    qspn::{
        engine::{Params, Qspn},
        event::{Output as QOut, Timer},
        msg::{ArcId, Cost, QspnMessage},
    },
    system::System,
    wire::{self, Message},
};

/// The main identity's index in the model.
const MAIN: u32 = 0;

/// `ntkplane run` options of the protocols.
#[derive(Clone, Debug)]
pub struct Options {
    pub port: u16,
    /// Every discovered main-identity arc becomes a qspn arc (a static mesh: every neighbour
    /// is in our network). Off: qspnclient's way, a person or the hooking logic types
    /// `add-qspn-arc`.
    pub auto_qspn: bool,
    /// `--real-arcs declared`: a discovered arc is not made an identity arc (nor a qspn arc)
    /// by the runtime, and a dead one does not remove the declared identity arc; commands
    /// declare the arcs in use, as qspnclient's `add_real_arc` did. The runtime still
    /// measures every neighbour and carries QSPN over the declared arcs it measured.
    pub declared_arcs: bool,
    /// The network key (`--network-key FILE`), already read.
    pub key: Option<wire::NetworkKey>,
    pub timers: neighborhood::Timers,
    /// Unicast reliability: a call is sent again every `retry` until answered, `tries` times.
    pub retry: Duration,
    pub tries: u32,
    /// How long path changes are gathered before they go to the writer as one `etp`.
    pub debounce: Duration,
    /// After QSPN dropped an arc on its own (a neighbour that did not answer, a bad ETP),
    /// how long before the arc is offered to it again.
    pub arc_backoff: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 60269,
            auto_qspn: false,
            declared_arcs: false,
            key: None,
            timers: neighborhood::Timers::default(),
            retry: Duration::from_millis(250),
            tries: 40,
            debounce: Duration::from_millis(20),
            arc_backoff: Duration::from_secs(2),
        }
    }
}

/// What the runtime shows `status` and `/metrics`: its counters (datagrams in/out, drops by
/// reason, ETPs, unanswered calls) and the measured cost of each arc.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub counters: BTreeMap<String, u64>,
    /// (NIC, peer MAC) → smoothed RTT in µs.
    pub arcs: BTreeMap<(String, String), u64>,
}

pub type Shared = Arc<Mutex<Status>>;

fn count(c: &Shared, what: &str) {
    if let Ok(mut m) = c.lock() {
        *m.counters.entry(what.to_string()).or_default() += 1;
    }
}

/// What the runtime thread gets from its tasks.
enum In {
    Datagram {
        nic: String,
        from: SocketAddrV4,
        bytes: Vec<u8>,
    },
    /// The writer's answer to a request the runtime submitted.
    Answer(Request, Response),
}

/// A physical arc the Neighborhood made available (exported and measured).
#[derive(Clone, Debug)]
struct Phys {
    peer_ll: Ipv4Addr,
    cost_us: u64,
    /// qspnclient's tie breaker: a random 0..999 µs fixed per arc (qspn.md §3).
    seed_us: u64,
}

/// A unicast call waiting for its answer.
struct Call {
    nic: String,
    to: SocketAddrV4,
    bytes: Vec<u8>,
    tries_left: u32,
    next_at: Instant,
    arc: ArcId,
    /// `GetFullEtp` (answered by `FullEtp`) or `SendEtp` (answered by `Ack`).
    full_etp: bool,
}

struct Runtime {
    opts: Options,
    started: Instant,
    /// Per NIC: (unicast socket on the link-local, broadcast socket on the wildcard).
    socks: BTreeMap<String, (Arc<tokio::net::UdpSocket>, Arc<tokio::net::UdpSocket>)>,
    nic_up: BTreeMap<String, bool>,
    neigh: Neighborhood,
    auth: Option<wire::Auth>,
    /// (NIC, peer MAC) → the available physical arc.
    phys: BTreeMap<(String, MacAddr), Phys>,
    /// The main identity's NodeID on the wire (random per start).
    node_id: u32,
    qspn: Qspn,
    /// QSPN arc id ↔ the identity arc's index in the model.
    model_of: BTreeMap<ArcId, u32>,
    arc_of: BTreeMap<u32, ArcId>,
    backoff: BTreeMap<u32, Instant>,
    calls: HashMap<u32, Call>,
    next_call: u32,
    /// `SendEtp` calls already processed (source identity, call), to answer a retransmission
    /// with an `Ack` without processing it twice.
    seen: VecDeque<(u32, u32)>,
    timers: BTreeMap<(Instant, u64), Timer>,
    timer_seq: u64,
    paths_dirty: Option<Instant>,
    /// An `etp` is with the writer: the next waits for its answer, so that under load the
    /// changes of many ETPs go in one apply instead of queueing one apply each.
    etp_in_flight: bool,
    last_feed: Option<Feed>,
    model: Arc<System>,
    writer: mpsc::Sender<Msg>,
    answers: tokio::sync::mpsc::UnboundedSender<In>,
    counters: Shared,
    events: Events,
    rng: u64,
}

/// A running protocol thread.
pub struct Handle {
    pub status: Shared,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Handle {
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the protocol thread in `netns` (the system's default namespace). It stops when
/// `stop` turns true. Errors binding the sockets are returned (the daemon does not start
/// without the protocol it was asked to run).
pub fn spawn(
    opts: Options,
    netns: Netns,
    model: watch::Receiver<Arc<System>>,
    writer: mpsc::Sender<Msg>,
    stop: watch::Receiver<bool>,
    events: Events,
) -> Result<Handle, String> {
    let counters: Shared = Arc::default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let c = counters.clone();
    let thread = std::thread::Builder::new()
        .name("protocol".into())
        .spawn(move || {
            if let Err(e) = netns.enter() {
                let _ = ready_tx.send(Err(e.to_string()));
                return;
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                    return;
                }
            };
            rt.block_on(run(opts, model, writer, stop, c, events, ready_tx));
        })
        .map_err(|e| format!("protocol thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(Handle {
            status: counters,
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err("the protocol thread ended at start".into()),
    }
}

fn random_u64() -> u64 {
    u64::from_le_bytes(crate::daemon::random_bytes::<8>())
}

async fn run(
    opts: Options,
    mut model_rx: watch::Receiver<Arc<System>>,
    writer: mpsc::Sender<Msg>,
    mut stop: watch::Receiver<bool>,
    counters: Shared,
    events: Events,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let model = model_rx.borrow_and_update().clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut socks = BTreeMap::new();
    for nic in &model.config.nics {
        match link::bind_pair(&nic.name, nic.linklocal, opts.port) {
            Ok((u, b)) => {
                socks.insert(nic.name.clone(), (Arc::new(u), Arc::new(b)));
            }
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        }
    }
    let auth = opts.key.as_ref().map(|k| wire::Auth::new(k, random_u64()));
    let rng = random_u64() | 1;
    let node_id = 1 + (rng as u32 % 0x7fff_fffd);
    let main = match model.identity(MAIN) {
        Ok(m) => m.clone(),
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let t = model.topology();
    let params = Params::new(
        (0..t.levels()).map(|l| t.gsize(l)).collect(),
        rng.rotate_left(17),
    );
    let fp = crate::qspn::msg::Fingerprint {
        id: rng >> 1,
        level: 0,
        elderships: vec![0; t.levels()],
        elderships_seed: vec![],
    };
    let (qspn, first) = Qspn::create_net(params, main.address.positions().to_vec(), fp);
    let neigh = Neighborhood::new(neighborhood::Config {
        node_id,
        max_arcs: 1000,
        timers: opts.timers,
        seed: rng.rotate_left(5),
    });
    // One receiving task per socket.
    let all: Vec<_> = socks
        .iter()
        .flat_map(|(n, (u, b))| [(n.clone(), u.clone()), (n.clone(), b.clone())])
        .collect();
    for (nic, s) in all {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                match s.recv_from(&mut buf).await {
                    Ok((n, SocketAddr::V4(from))) => {
                        let bytes = buf[..n].to_vec();
                        if tx
                            .send(In::Datagram {
                                nic: nic.clone(),
                                from,
                                bytes,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(nic, "protocol socket: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    let mut r = Runtime {
        started: Instant::now(),
        socks,
        nic_up: BTreeMap::new(),
        neigh,
        auth,
        phys: BTreeMap::new(),
        node_id,
        qspn,
        model_of: BTreeMap::new(),
        arc_of: BTreeMap::new(),
        backoff: BTreeMap::new(),
        calls: HashMap::new(),
        next_call: (rng >> 32) as u32,
        seen: VecDeque::new(),
        timers: BTreeMap::new(),
        timer_seq: 0,
        paths_dirty: None,
        etp_in_flight: false,
        last_feed: None,
        model,
        writer,
        answers: tx,
        counters,
        events,
        rng,
        opts,
    };
    let _ = ready.send(Ok(()));
    tracing::info!(
        node_id,
        port = r.opts.port,
        auto_qspn = r.opts.auto_qspn,
        authenticated = r.auth.is_some(),
        "protocols started"
    );
    r.qspn_out(first).await;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Ok(()) = model_rx.changed() => {
                let m = model_rx.borrow_and_update().clone();
                r.model = m;
                r.follow_model().await;
            }
            Some(i) = rx.recv() => match i {
                In::Datagram { nic, from, bytes } => r.datagram(&nic, from, &bytes).await,
                In::Answer(req, resp) => r.answer(req, resp),
            },
            _ = tick.tick() => r.tick().await,
        }
    }
    tracing::info!("protocols stopped");
}

impl Runtime {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The Neighborhood's clock: RTTs between veth ends are tens of µs.
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn rand(&mut self) -> u64 {
        // xorshift64*: tie-breaker seeds and call ids need no more.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Hands a request to the writer; the answer comes back as `In::Answer`.
    fn submit(&self, req: Request) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(Msg::Protocol(req.clone(), tx)).is_err() {
            return;
        }
        let answers = self.answers.clone();
        tokio::spawn(async move {
            // Always an answer (an `etp` in flight must end even if the writer is gone).
            let resp = rx
                .await
                .unwrap_or_else(|_| Response::err("the daemon is stopping"));
            let _ = answers.send(In::Answer(req, resp));
        });
    }

    fn answer(&mut self, req: Request, resp: Response) {
        if matches!(req, Request::Etp { .. }) {
            self.etp_in_flight = false;
        }
        if resp.ok {
            return;
        }
        let err = resp.error.unwrap_or_default();
        match &req {
            // Declared already (a scenario's static `add-identity-arc`, or typed): fine.
            Request::AddIdentityArc { .. } if err.contains("already") => {}
            Request::AddQspnArc { .. } if err.contains("already") => {}
            Request::Etp { .. } => {
                tracing::warn!("protocol: the model refused the paths: {err}");
                // Try again with what the instance knows then.
                self.last_feed = None;
                self.paths_dirty = Some(Instant::now() + Duration::from_secs(1));
            }
            _ => tracing::warn!(?req, "protocol: the model refused: {err}"),
        }
    }

    async fn send(&mut self, nic: &str, to: SocketAddrV4, msg: &Message) -> Option<Vec<u8>> {
        let bytes = match wire::encode(self.node_id, msg, self.auth.as_mut()) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(nic, %to, "protocol: cannot encode: {e}");
                count(&self.counters, "tx_error");
                return None;
            }
        };
        self.send_bytes(nic, to, &bytes).await;
        Some(bytes)
    }

    async fn send_bytes(&self, nic: &str, to: SocketAddrV4, bytes: &[u8]) {
        // Everything leaves from the link-local socket, so that every datagram's source is
        // the NIC's link-local (the neighbourhood checks it against the announced address).
        let Some((s, _)) = self.socks.get(nic) else {
            return;
        };
        if !self.nic_up.get(nic).copied().unwrap_or(false) {
            return;
        }
        match s.send_to(bytes, to).await {
            Ok(_) => count(&self.counters, "tx"),
            Err(e) => {
                tracing::debug!(nic, %to, "protocol send: {e}");
                count(&self.counters, "tx_error");
            }
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        let now_us = self.now_us();
        // Carriers: a NIC that goes down takes its arcs with it at once (no liveness wait).
        let nics: Vec<_> = self.model.config.nics.clone();
        for nic in nics {
            let up = self
                .socks
                .get(&nic.name)
                .is_some_and(|(u, _)| link::carrier(u.as_ref(), &nic.name));
            let was = self.nic_up.insert(nic.name.clone(), up).unwrap_or(false);
            if up && !was {
                tracing::info!(nic = nic.name, "protocol: NIC up");
                match self
                    .neigh
                    .add_nic(&nic.name, nic.mac.0, nic.linklocal, now_us)
                {
                    Ok(o) => self.neigh_out(o).await,
                    Err(e) => tracing::warn!(nic = nic.name, "protocol: {e}"),
                }
            } else if !up && was {
                tracing::info!(nic = nic.name, "protocol: NIC down: its arcs go");
                let o = self.neigh.remove_nic(&nic.name, false);
                self.neigh_out(o).await;
            }
        }
        let o = self.neigh.on_tick(now_us);
        self.neigh_out(o).await;
        // QSPN's timers.
        while let Some(e) = self.timers.first_entry() {
            if e.key().0 > now {
                break;
            }
            let t = e.remove();
            let o = self.qspn.on_timer(t);
            self.qspn_out(o).await;
        }
        // Calls not answered yet.
        let due: Vec<u32> = self
            .calls
            .iter()
            .filter(|(_, c)| c.next_at <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            let Some(c) = self.calls.get_mut(&k) else {
                continue;
            };
            if c.tries_left == 0 {
                let (arc, full_etp) = (c.arc, c.full_etp);
                self.calls.remove(&k);
                count(&self.counters, "call_failed");
                tracing::debug!(arc, "protocol: a call over the arc went unanswered");
                // A `GetFullEtp` without an answer is QSPN's transport error (§8.3: the arc
                // goes). An unacknowledged `SendEtp` is not: whether the neighbour is alive
                // is the Neighborhood's call (its probes), and dropping the arc on a busy
                // machine only makes both ends flood again (seen on a 7×7 grid on 2 CPUs).
                if full_etp && self.model_of.contains_key(&arc) {
                    let o = self.qspn.on_request_failed(arc);
                    self.qspn_out(o).await;
                }
                continue;
            }
            c.tries_left -= 1;
            c.next_at = now + self.opts.retry;
            let (nic, to, bytes) = (c.nic.clone(), c.to, c.bytes.clone());
            self.send_bytes(&nic, to, &bytes).await;
        }
        // Arcs waiting out a backoff.
        if self.backoff.values().any(|t| *t <= now) {
            self.backoff.retain(|_, t| *t > now);
            self.follow_model().await;
        }
        if !self.etp_in_flight
            && self
                .paths_dirty
                .is_some_and(|t| now >= t + self.opts.debounce)
        {
            self.paths_dirty = None;
            self.push_feed();
        }
    }

    /// The instance's paths to the writer, when they differ from the last ones sent.
    fn push_feed(&mut self) {
        let paths: BTreeMap<_, Vec<PathIn>> = self
            .qspn
            .paths()
            .into_iter()
            .map(|(d, ps)| {
                (
                    d,
                    ps.into_iter()
                        .map(|p| PathIn {
                            arc: p.arc,
                            hops: p.hops,
                            cost: p.cost,
                        })
                        .collect(),
                )
            })
            .collect();
        let neighbours: Vec<(ArcId, Vec<u32>)> = self
            .qspn
            .arcs()
            .filter_map(|a| Some((a, self.qspn.neighbour_address(a)?.to_vec())))
            .collect();
        let feed = feed_of(&paths, &neighbours, |a| self.model_of.get(&a).copied());
        if self.last_feed.as_ref() == Some(&feed) {
            return;
        }
        // `monitor`: each destination whose paths changed, with how many there are now.
        let count_of = |f: Option<&Feed>| -> BTreeMap<crate::addr::HCoord, Vec<crate::fwd::Path>> {
            f.map(|f| f.paths.iter().map(|d| (d.dest, d.paths.clone())).collect())
                .unwrap_or_default()
        };
        let (before, after) = (count_of(self.last_feed.as_ref()), count_of(Some(&feed)));
        for d in before
            .keys()
            .chain(after.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            if before.get(d) != after.get(d) {
                self.events.emit(Event::PathChanged {
                    identity: MAIN,
                    lvl: d.lvl,
                    pos: d.pos,
                    paths: after.get(d).map_or(0, Vec::len),
                });
            }
        }
        self.last_feed = Some(feed.clone());
        count(&self.counters, "etp_applied");
        self.etp_in_flight = true;
        self.submit(Request::Etp {
            identity: MAIN,
            feed,
        });
    }

    /// The model changed (or a backoff ended): the QSPN instance's arcs follow the model's
    /// qspn arcs of the main identity.
    async fn follow_model(&mut self) {
        let Ok(main) = self.model.identity(MAIN) else {
            return;
        };
        let qspn_arcs: BTreeMap<u32, (String, MacAddr)> = main
            .arcs
            .iter()
            .filter(|(_, a)| a.qspn.is_some())
            .map(|(k, a)| (*k, (a.nic.clone(), a.peer_mac)))
            .collect();
        let gone: Vec<(u32, ArcId)> = self
            .arc_of
            .iter()
            .filter(|(k, _)| !qspn_arcs.contains_key(k))
            .map(|(k, a)| (*k, *a))
            .collect();
        for (k, a) in gone {
            self.unmap(k, a);
            let o = self.qspn.arc_remove(a);
            self.qspn_out(o).await;
        }
        let now = Instant::now();
        for (k, key) in qspn_arcs {
            if self.arc_of.contains_key(&k) || self.backoff.get(&k).is_some_and(|t| *t > now) {
                continue;
            }
            let Some(p) = self.phys.get(&key) else {
                continue; // not measured (yet): the arc joins QSPN when it is
            };
            let cost = Cost::Real(p.cost_us + p.seed_us);
            let (a, o) = self.qspn.arc_add(cost);
            self.arc_of.insert(k, a);
            self.model_of.insert(a, k);
            tracing::info!(arc = k, qspn_arc = a, ?cost, "protocol: qspn arc added");
            self.events.emit(Event::ArcUp {
                identity: MAIN,
                arc: k,
                cost: p.cost_us + p.seed_us,
            });
            self.qspn_out(o).await;
        }
    }

    fn unmap(&mut self, k: u32, a: ArcId) {
        self.arc_of.remove(&k);
        self.model_of.remove(&a);
        self.calls.retain(|_, c| c.arc != a);
    }

    /// The physical arc (NIC, peer link-local) of a QSPN arc.
    fn route_of(&self, a: ArcId) -> Option<(String, SocketAddrV4)> {
        let k = self.model_of.get(&a)?;
        let arc = self.model.identity(MAIN).ok()?.arcs.get(k)?;
        let p = self.phys.get(&(arc.nic.clone(), arc.peer_mac))?;
        Some((
            arc.nic.clone(),
            SocketAddrV4::new(p.peer_ll, self.opts.port),
        ))
    }

    async fn call(&mut self, a: ArcId, msg: QspnMessage) {
        let Some((nic, to)) = self.route_of(a) else {
            return;
        };
        self.next_call = self.next_call.wrapping_add(1);
        let call = self.next_call;
        let full_etp = matches!(msg, QspnMessage::GetFullEtp { .. });
        let m = Message::Qspn {
            src: self.node_id,
            dst: 0,
            call,
            msg,
        };
        let Some(bytes) = self.send(&nic, to, &m).await else {
            return;
        };
        self.calls.insert(
            call,
            Call {
                nic,
                to,
                bytes,
                tries_left: self.opts.tries,
                next_at: Instant::now() + self.opts.retry,
                arc: a,
                full_etp,
            },
        );
    }

    async fn qspn_out(&mut self, outs: Vec<QOut>) {
        // Iterative: handling an output may produce more (a failed send, a refused arc).
        let mut queue: VecDeque<QOut> = outs.into();
        while let Some(o) = queue.pop_front() {
            match o {
                QOut::RequestFullEtp { arc } => {
                    let requesting_address = self.qspn_address();
                    self.call(arc, QspnMessage::GetFullEtp { requesting_address })
                        .await;
                }
                QOut::SendEtp { arcs, etp, is_full } => {
                    for a in arcs {
                        self.call(
                            a,
                            QspnMessage::SendEtp {
                                etp: etp.clone(),
                                is_full,
                            },
                        )
                        .await;
                    }
                }
                QOut::ArcRemoved { arc, bad_link } => {
                    if let Some(k) = self.model_of.get(&arc).copied() {
                        tracing::info!(
                            arc = k,
                            bad_link,
                            "protocol: QSPN dropped the arc; offered again after {:?}",
                            self.opts.arc_backoff
                        );
                        self.unmap(k, arc);
                        self.backoff
                            .insert(k, Instant::now() + self.opts.arc_backoff);
                        self.paths_dirty.get_or_insert_with(Instant::now);
                    }
                }
                QOut::Timer { after_ms, timer } => {
                    self.timer_seq += 1;
                    self.timers.insert(
                        (
                            Instant::now() + Duration::from_millis(after_ms),
                            self.timer_seq,
                        ),
                        timer,
                    );
                }
                QOut::Signal(s) => tracing::debug!(?s, "qspn"),
                QOut::PathsChanged => {
                    self.paths_dirty.get_or_insert_with(Instant::now);
                }
                // Identity dismissal (qspn.md §13.7) is for the connectivity identities the
                // runtime does not run yet.
                other => tracing::debug!(?other, "qspn: output not carried out"),
            }
        }
    }

    fn qspn_address(&self) -> Vec<u32> {
        self.model
            .identity(MAIN)
            .map(|m| m.address.positions().to_vec())
            .unwrap_or_default()
    }

    async fn neigh_out(&mut self, outs: Vec<neighborhood::Output>) {
        use neighborhood::Output as N;
        for o in outs {
            match o {
                N::Broadcast { nic, msg } => {
                    let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, self.opts.port);
                    self.send(&nic, to, &msg).await;
                }
                N::Unicast { nic, to, msg } => {
                    let to = SocketAddrV4::new(to, self.opts.port);
                    self.send(&nic, to, &msg).await;
                }
                // The route to a neighbour's link-local is the model's (its identity arc's
                // direct route); before that, the device-bound socket reaches it on-link.
                N::AddNeighbourRoute { .. } | N::RemoveNeighbourRoute { .. } => {}
                N::ArcAdded { arc, cost_us } => {
                    let (nic, mac, ll) = (
                        arc.nic().to_string(),
                        MacAddr(arc.peer_mac()),
                        arc.peer_addr(),
                    );
                    let seed_us = self.rand() % 1000;
                    tracing::info!(nic, %mac, %ll, cost_us, "protocol: arc up");
                    if let Ok(mut st) = self.counters.lock() {
                        st.arcs.insert((nic.clone(), mac.to_string()), cost_us);
                    }
                    self.phys.insert(
                        (nic.clone(), mac),
                        Phys {
                            peer_ll: ll,
                            cost_us,
                            seed_us,
                        },
                    );
                    if !self.opts.declared_arcs {
                        self.submit(Request::AddIdentityArc {
                            identity: MAIN,
                            nic: nic.clone(),
                            peer_mac: mac,
                            peer_linklocal: ll,
                        });
                    }
                    if self.opts.auto_qspn && !self.opts.declared_arcs {
                        self.submit(Request::AddQspnArc {
                            identity: MAIN,
                            nic,
                            peer_mac: mac,
                        });
                    }
                    // Already a qspn arc in the model (declared before discovery)?
                    self.follow_model().await;
                }
                N::ArcChanged { arc, cost_us } => {
                    let key = (arc.nic().to_string(), MacAddr(arc.peer_mac()));
                    let Some(p) = self.phys.get_mut(&key) else {
                        continue;
                    };
                    p.cost_us = cost_us;
                    let p_cost = p.cost_us + p.seed_us;
                    let cost = Cost::Real(p_cost);
                    tracing::info!(nic = key.0, mac = %key.1, cost_us, "protocol: arc cost changed");
                    if let Ok(mut st) = self.counters.lock() {
                        st.arcs.insert((key.0.clone(), key.1.to_string()), cost_us);
                    }
                    if let Some(k) = self.model_arc_on(&key) {
                        self.events.emit(Event::ArcCost {
                            identity: MAIN,
                            arc: k,
                            cost: p_cost,
                        });
                    }
                    if let Some(a) = self.qspn_arc_on(&key) {
                        let o = self.qspn.arc_changed(a, cost);
                        Box::pin(self.qspn_out(o)).await;
                    }
                }
                N::ArcRemoving { arc, .. } | N::ArcRemoved { arc } => {
                    let key = (arc.nic().to_string(), MacAddr(arc.peer_mac()));
                    if self.phys.remove(&key).is_none() {
                        continue;
                    }
                    tracing::info!(nic = key.0, mac = %key.1, "protocol: arc down");
                    if let Ok(mut st) = self.counters.lock() {
                        st.arcs.remove(&(key.0.clone(), key.1.to_string()));
                    }
                    if let Some(k) = self.model_arc_on(&key) {
                        self.events.emit(Event::ArcDown {
                            identity: MAIN,
                            arc: k,
                        });
                    }
                    if let Some(a) = self.qspn_arc_on(&key) {
                        if let Some(k) = self.model_of.get(&a).copied() {
                            self.unmap(k, a);
                        }
                        let o = self.qspn.arc_remove(a);
                        Box::pin(self.qspn_out(o)).await;
                    }
                    // A declared arc stays declared (its qspn arc returns with the
                    // neighbour, in follow_model).
                    if let Some(k) = self.model_arc_on(&key).filter(|_| !self.opts.declared_arcs) {
                        self.submit(Request::RemoveArc {
                            identity: MAIN,
                            arc: k,
                        });
                    }
                }
            }
        }
    }

    fn model_arc_on(&self, key: &(String, MacAddr)) -> Option<u32> {
        let main = self.model.identity(MAIN).ok()?;
        main.arcs
            .iter()
            .find(|(_, a)| a.nic == key.0 && a.peer_mac == key.1)
            .map(|(k, _)| *k)
    }

    fn qspn_arc_on(&self, key: &(String, MacAddr)) -> Option<ArcId> {
        self.arc_of.get(&self.model_arc_on(key)?).copied()
    }

    async fn datagram(&mut self, nic: &str, from: SocketAddrV4, bytes: &[u8]) {
        count(&self.counters, "rx");
        let now_ms = self.now_ms();
        let (sender, msg) = match wire::decode(bytes, self.auth.as_mut(), from, now_ms) {
            Ok(wire::Decoded::Message { sender, msg }) => (sender, msg),
            Ok(wire::Decoded::Respond { reply, dropped, .. }) => {
                // The authentication layer answers by itself (a challenge, its reply).
                if let Some(why) = dropped {
                    count(&self.counters, &format!("dropped_{}", why.as_str()));
                }
                count(&self.counters, "challenge");
                // By broadcast on the NIC it came from: a new neighbour may have no route to
                // us yet; the challenge names its addressee, the others drop it.
                if let Ok(b) = wire::encode(self.node_id, &reply, self.auth.as_mut()) {
                    let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, self.opts.port);
                    self.send_bytes(nic, to, &b).await;
                }
                return;
            }
            Ok(wire::Decoded::Consumed { .. }) => return,
            Err(why) => {
                tracing::debug!(nic, %from, reason = why.as_str(), "protocol: datagram dropped");
                count(&self.counters, &format!("dropped_{}", why.as_str()));
                return;
            }
        };
        match msg {
            Message::Qspn {
                src,
                dst: _,
                call,
                msg,
            } => self.qspn_message(nic, from, src, call, msg).await,
            Message::Ack { call } => {
                if let Some(c) = self.calls.get(&call) {
                    if !c.full_etp {
                        self.calls.remove(&call);
                    }
                }
            }
            Message::IdentityAnnounce { .. }
            | Message::ChallengeRequest { .. }
            | Message::ChallengeReply { .. } => {}
            other => {
                let o = self
                    .neigh
                    .on_message(nic, from, sender, &other, self.now_us());
                self.neigh_out(o).await;
            }
        }
    }

    async fn qspn_message(
        &mut self,
        nic: &str,
        from: SocketAddrV4,
        src: u32,
        call: u32,
        msg: QspnMessage,
    ) {
        // The identity arc it came over: (NIC, the peer's link-local) names the physical arc,
        // the main identity's arc on it the QSPN arc.
        let key = self
            .phys
            .iter()
            .find(|((n, _), p)| n == nic && p.peer_ll == *from.ip())
            .map(|(k, _)| k.clone());
        let Some(a) = key.as_ref().and_then(|k| self.qspn_arc_on(k)) else {
            // Not (yet) one of our qspn arcs: no answer, the caller tries again
            // (qspn.md §8.1's wait for the arc, on the caller's side).
            count(&self.counters, "dropped_not_qspn_arc");
            return;
        };
        match msg {
            QspnMessage::GetFullEtp { requesting_address } => {
                let (reply, o) = self.qspn.on_get_full_etp(a, &requesting_address);
                let m = Message::Qspn {
                    src: self.node_id,
                    dst: src,
                    call,
                    msg: QspnMessage::FullEtp(reply),
                };
                self.send(nic, from, &m).await;
                self.qspn_out(o).await;
            }
            QspnMessage::FullEtp(reply) => {
                let Some(c) = self.calls.get(&call) else {
                    return; // an answer to a call already answered
                };
                if !c.full_etp || c.arc != a {
                    count(&self.counters, "dropped_unexpected_reply");
                    return;
                }
                self.calls.remove(&call);
                let o = self.qspn.on_full_etp(a, reply);
                self.qspn_out(o).await;
            }
            QspnMessage::SendEtp { etp, is_full } => {
                let ack = Message::Ack { call };
                self.send(nic, from, &ack).await;
                if self.seen.contains(&(src, call)) {
                    return;
                }
                if self.seen.len() >= 1024 {
                    self.seen.pop_front();
                }
                self.seen.push_back((src, call));
                count(&self.counters, "etp_received");
                let o = self.qspn.on_send_etp(a, etp, is_full);
                self.qspn_out(o).await;
            }
            QspnMessage::GotPrepareDestroy | QspnMessage::GotDestroy => {}
        }
    }
}
