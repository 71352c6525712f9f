//! The protocol runtime: the daemon's Netsukuku protocols between real hosts. One thread in
//! the system's default namespace, with its own tokio runtime, owns the protocol sockets
//! (one per managed NIC), the Neighborhood machine (discovery, arcs, RTT cost, liveness) and
//! one QSPN instance per identity of the model; both are pure (`crate::neighborhood`,
//! `crate::qspn`) and this file only carries their messages, timers and results.
//!
//! What it learns reaches the model through the writer, as the feed commands do
//! (`add-identity-arc` for a discovered arc, `add-qspn-arc` in `--qspn-arcs auto`,
//! `remove-arc` for a dead one, `etp` with each instance's paths), so protocol-learnt state
//! is validated, persisted and reconciled exactly like a command's. The writer publishes
//! every model it commits; the runtime follows it: an identity that appears gets its QSPN
//! instance (a copy of its previous identity's when it was born by entering or migrating,
//! qspn.md §13.2, else a new network), one whose address changes is made real or
//! connectivity (§13.3, §13.4), one that goes takes its instance with it; a qspn arc that
//! appears (from `add-qspn-arc`, typed or automatic) becomes an arc of its identity's
//! instance once the real arc under it is measured; one that disappears is removed.
//!
//! Identities talk over the real arcs: each system announces its identities on every real
//! arc (`IdentityAnnounce`: NodeID, MAC and link-local of the identity's interface on that
//! NIC), and QSPN messages of every identity travel between the real NICs' link-locals,
//! demultiplexed by (source, destination) identity NodeIDs (`peers`, docs/PROTOCOL.md).
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
    peers::{update_naddr, Peers, RealArc},
    retry::{Backoff, Next},
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
        bootstrap::{BootstrapArgs, InternalArc},
        engine::{Params, Qspn},
        event::{Output as QOut, Timer},
        msg::{ArcId, Cost, Fingerprint, QspnMessage},
    },
    system::{Identity, System},
    wire::{self, Message, PeerIdentity},
};

/// How often every real arc is told our identities again (besides at once on a change): a
/// lost announcement only delays the QSPN messages of a new identity by this much.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

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
    /// `--arc-cost`: (NIC, neighbour MAC) → the real arc's cost in µs, instead of its RTT
    /// (qspnclient's `add_real_arc` cost; the lab gives its graphs' costs this way, so that
    /// QSPN chooses among the same costs as the path solver). No tie breaker is added.
    pub pinned: BTreeMap<(String, MacAddr), u64>,
    /// The network key (`--network-key FILE`), already read.
    pub key: Option<wire::NetworkKey>,
    pub timers: neighborhood::Timers,
    /// Unicast reliability: when an unanswered call is sent again, and given up.
    pub retry: Backoff,
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
            pinned: BTreeMap::new(),
            key: None,
            timers: neighborhood::Timers::default(),
            retry: Backoff::default(),
            debounce: Duration::from_millis(20),
            arc_backoff: Duration::from_secs(2),
        }
    }
}

/// `--arc-cost NIC=MAC=US`.
pub fn parse_arc_cost(s: &str) -> Result<(String, MacAddr, u64), String> {
    let mut it = s.splitn(3, '=');
    let (Some(nic), Some(mac), Some(us)) = (it.next(), it.next(), it.next()) else {
        return Err("expected NIC=MAC=MICROSECONDS".into());
    };
    if nic.is_empty() {
        return Err("empty NIC name".into());
    }
    let mac: MacAddr = mac.parse().map_err(|e| format!("{e}"))?;
    let us: u64 = us
        .parse()
        .ok()
        .filter(|u| *u > 0)
        .ok_or_else(|| format!("'{us}' is not a positive number of microseconds"))?;
    Ok((nic.to_string(), mac, us))
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
        /// When it was read from the socket: a probe reply's RTT ends there, not after the
        /// datagrams queued before it (docs/PROTOCOL.md §6.1).
        at: Instant,
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
    /// The identity that calls, and its QSPN arc.
    idx: u32,
    arc: ArcId,
    msg: QspnMessage,
    /// Where and what it was last sent; `None` while the peer identity is not resolved
    /// (its announcement not arrived yet): each retry tries again.
    sent: Option<(String, SocketAddrV4, Vec<u8>)>,
    /// Sends so far (tries, resolved or not), the first one's time.
    sends: u32,
    first_at: Instant,
    next_at: Instant,
    /// `GetFullEtp` (answered by `FullEtp`) or `SendEtp` (answered by `Ack`).
    full_etp: bool,
}

/// One identity's QSPN instance and what ties it to the model.
struct Inst {
    qspn: Qspn,
    /// The identity's NodeID on the wire (random per instance).
    wid: u32,
    /// QSPN arc id ↔ the identity arc's index in the model.
    model_of: BTreeMap<ArcId, u32>,
    arc_of: BTreeMap<u32, ArcId>,
    backoff: BTreeMap<u32, Instant>,
    paths_dirty: Option<Instant>,
    /// An `etp` is with the writer: the next waits for its answer, so that under load the
    /// changes of many ETPs go in one apply instead of queueing one apply each.
    etp_in_flight: bool,
    last_feed: Option<Feed>,
    /// The address and connectivity levels the instance was last given (low level first),
    /// to see the model's `make_real` / connectivity changes.
    address: Vec<u32>,
    connectivity: Option<(usize, usize)>,
}

impl Inst {
    fn unmap(&mut self, k: u32, a: ArcId) {
        self.arc_of.remove(&k);
        self.model_of.remove(&a);
    }
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
    /// The system's NodeID on the wire (random per start).
    node_id: u32,
    /// Topology (low level first), for new instances.
    gsizes: Vec<u32>,
    /// Identity index → its QSPN instance.
    insts: BTreeMap<u32, Inst>,
    /// What the neighbours announced of their identities, per real arc.
    peers: Peers,
    /// What we last announced on each real arc.
    announced: BTreeMap<RealArc, Vec<PeerIdentity>>,
    /// The identity arcs this runtime asked the writer for (identity, NIC, peer MAC) → the
    /// real arc they rest on, until a published model shows them. An arc that goes down
    /// while its `add-identity-arc` is still on its way is not in the model yet, so
    /// `identity_arcs_on` misses it; when it lands, `follow_model` removes it.
    added: BTreeMap<(u32, String, MacAddr), RealArc>,
    /// (identity, arc index) → the peer identity the arc was first resolved to (its real arc
    /// and NodeID). An identity arc leads to an identity, not to a MAC: when the peer
    /// migrates, its old identity takes a pseudo-interface and a new identity takes the MAC,
    /// and the arc keeps leading to the old one (until `neighbour-migrated` re-keys it to the
    /// pseudo MAC and a new arc takes the MAC), as identity arcs did in the reference.
    bound: BTreeMap<(u32, u32), (RealArc, u32)>,
    next_announce: Instant,
    calls: HashMap<u32, Call>,
    next_call: u32,
    /// `SendEtp` calls already processed (source identity, call), to answer a retransmission
    /// with an `Ack` without processing it twice.
    seen: VecDeque<(u32, u32)>,
    timers: BTreeMap<(Instant, u64), (u32, Timer)>,
    timer_seq: u64,
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

/// xorshift64*: tie-breaker seeds, call ids and fingerprints need no more.
fn next_rand(rng: &mut u64) -> u64 {
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// A new identity's level-0 fingerprint. Its eldership, the same at every level, is the
/// time it was made (seconds since 2026-01-01): qspnclient's commands carried elderships
/// (the order of arrival in each g-node), the model keeps none (they have no kernel
/// effect). With all elderships equal every member of a g-node took itself for the eldest,
/// so members advertised it with different fingerprints and neighbours took it for split
/// (S2: ε₂ ignored λ₁'s g-node 2·1·). With arrival times a newcomer is the youngest, as in
/// the reference, so a g-node's fingerprint does not change when someone joins it; equal
/// ones go to the smaller id (`qspn::fingerprint::construct`).
fn new_fingerprint(rng: &mut u64, levels: usize) -> Fingerprint {
    const BASE_2026: u64 = 1_767_225_600;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let e = now
        .saturating_sub(BASE_2026)
        .min(u64::from(crate::qspn::msg::NULL_ELDERSHIP) - 1) as u32;
    Fingerprint {
        id: next_rand(rng) >> 1,
        level: 0,
        elderships: vec![e; levels],
        elderships_seed: vec![],
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
    // The Neighborhood's datagrams (`HereIAm` … `ProbeReply`) are handled before QSPN's: a
    // probe answered after a backlog of ETPs measures the backlog, and under load that made
    // arc costs halve and double again, each change a network-wide QSPN round.
    let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
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
    if model.identities.is_empty() {
        let _ = ready.send(Err("the model has no identity".into()));
        return;
    }
    let t = model.topology();
    let gsizes: Vec<u32> = (0..t.levels()).map(|l| t.gsize(l)).collect();
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
        let (tx, ntx) = (tx.clone(), ntx.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                match s.recv_from(&mut buf).await {
                    Ok((n, SocketAddr::V4(from))) => {
                        let bytes = buf[..n].to_vec();
                        let to = if wire::is_neighbourhood(&bytes) {
                            &ntx
                        } else {
                            &tx
                        };
                        if to
                            .send(In::Datagram {
                                nic: nic.clone(),
                                from,
                                bytes,
                                at: Instant::now(),
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
        gsizes,
        insts: BTreeMap::new(),
        peers: Peers::default(),
        announced: BTreeMap::new(),
        added: BTreeMap::new(),
        bound: BTreeMap::new(),
        next_announce: Instant::now(),
        calls: HashMap::new(),
        next_call: (rng >> 32) as u32,
        seen: VecDeque::new(),
        timers: BTreeMap::new(),
        timer_seq: 0,
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
    // The identities' instances (the main one: a network of its own until arcs come).
    r.follow_model().await;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // In this order (the tick before datagrams: a flood must not starve the timers).
            biased;
            _ = stop.changed() => break,
            Ok(()) = model_rx.changed() => {
                let m = model_rx.borrow_and_update().clone();
                r.model = m;
                r.follow_model().await;
            }
            _ = tick.tick() => r.tick().await,
            Some(i) = nrx.recv() => r.input(i).await,
            Some(i) = rx.recv() => r.input(i).await,
        }
    }
    tracing::info!("protocols stopped");
}

impl Runtime {
    async fn input(&mut self, i: In) {
        match i {
            In::Datagram {
                nic,
                from,
                bytes,
                at,
            } => {
                let at_us = at.saturating_duration_since(self.started).as_micros() as u64;
                self.datagram(&nic, from, &bytes, at_us).await
            }
            In::Answer(req, resp) => self.answer(req, resp),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The Neighborhood's clock: RTTs between veth ends are tens of µs.
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn rand(&mut self) -> u64 {
        next_rand(&mut self.rng)
    }

    /// The main identity's index (the one in the default namespace).
    fn main_idx(&self) -> Option<u32> {
        self.model
            .identities
            .iter()
            .find(|(_, i)| i.is_main())
            .map(|(k, _)| *k)
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
        if let Request::Etp { identity, .. } = &req {
            if let Some(i) = self.insts.get_mut(identity) {
                i.etp_in_flight = false;
            }
        }
        if resp.ok {
            return;
        }
        let err = resp.error.unwrap_or_default();
        match &req {
            // Declared already (a scenario's static `add-identity-arc`, or typed): fine.
            Request::AddIdentityArc { .. } if err.contains("already") => {}
            Request::AddQspnArc { .. } if err.contains("already") => {}
            Request::Etp { identity, .. } => {
                tracing::warn!(identity, "protocol: the model refused the paths: {err}");
                // Try again with what the instance knows then.
                if let Some(i) = self.insts.get_mut(identity) {
                    i.last_feed = None;
                    i.paths_dirty = Some(Instant::now() + Duration::from_secs(1));
                }
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
            let (idx, t) = e.remove();
            let Some(i) = self.insts.get_mut(&idx) else {
                continue; // the identity went
            };
            let o = i.qspn.on_timer(t);
            self.qspn_out(idx, o).await;
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
            let since_first = now.saturating_duration_since(c.first_at).as_millis() as u64;
            let Next::Resend { after_ms } = self.opts.retry.next(c.sends, since_first) else {
                let (idx, arc, full_etp) = (c.idx, c.arc, c.full_etp);
                self.calls.remove(&k);
                count(&self.counters, "call_failed");
                tracing::debug!(idx, arc, "protocol: a call over the arc went unanswered");
                // A `GetFullEtp` without an answer is QSPN's transport error (§8.3: the arc
                // goes). An unacknowledged `SendEtp` is not: whether the neighbour is alive
                // is the Neighborhood's call (its probes), and dropping the arc on a busy
                // machine only makes both ends flood again (seen on a 7×7 grid on 2 CPUs).
                if let Some(i) = self.insts.get_mut(&idx) {
                    if full_etp && i.model_of.contains_key(&arc) {
                        let o = i.qspn.on_request_failed(arc);
                        self.qspn_out(idx, o).await;
                    }
                }
                continue;
            };
            c.sends += 1;
            c.next_at = now + Duration::from_millis(after_ms);
            match c.sent.clone() {
                Some((nic, to, bytes)) => {
                    count(&self.counters, "resent");
                    self.send_bytes(&nic, to, &bytes).await
                }
                // Not sent yet (the peer identity unknown until its announcement).
                None => self.transmit(k).await,
            }
        }
        // Arcs waiting out a backoff.
        if self
            .insts
            .values()
            .any(|i| i.backoff.values().any(|t| *t <= now))
        {
            for i in self.insts.values_mut() {
                i.backoff.retain(|_, t| *t > now);
            }
            self.follow_model().await;
        }
        if now >= self.next_announce {
            self.next_announce = now + ANNOUNCE_EVERY;
            self.announced.clear();
            self.announce().await;
        }
        let due: Vec<u32> = self
            .insts
            .iter()
            .filter(|(_, i)| {
                !i.etp_in_flight && i.paths_dirty.is_some_and(|t| now >= t + self.opts.debounce)
            })
            .map(|(k, _)| *k)
            .collect();
        for idx in due {
            if let Some(i) = self.insts.get_mut(&idx) {
                i.paths_dirty = None;
            }
            self.push_feed(idx);
        }
    }

    /// An instance's paths to the writer, when they differ from the last ones sent.
    fn push_feed(&mut self, idx: u32) {
        let Some(inst) = self.insts.get(&idx) else {
            return;
        };
        let paths: BTreeMap<_, Vec<PathIn>> = inst
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
        let neighbours: Vec<(ArcId, Vec<u32>)> = inst
            .qspn
            .arcs()
            .filter_map(|a| Some((a, inst.qspn.neighbour_address(a)?.to_vec())))
            .collect();
        let feed = feed_of(&paths, &neighbours, |a| inst.model_of.get(&a).copied());
        if inst.last_feed.as_ref() == Some(&feed) {
            return;
        }
        // `monitor`: each destination whose paths changed, with how many there are now.
        let count_of = |f: Option<&Feed>| -> BTreeMap<crate::addr::HCoord, Vec<crate::fwd::Path>> {
            f.map(|f| f.paths.iter().map(|d| (d.dest, d.paths.clone())).collect())
                .unwrap_or_default()
        };
        let (before, after) = (count_of(inst.last_feed.as_ref()), count_of(Some(&feed)));
        for d in before
            .keys()
            .chain(after.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            if before.get(d) != after.get(d) {
                self.events.emit(Event::PathChanged {
                    identity: idx,
                    lvl: d.lvl,
                    pos: d.pos,
                    paths: after.get(d).map_or(0, Vec::len),
                });
            }
        }
        count(&self.counters, "etp_applied");
        if let Some(i) = self.insts.get_mut(&idx) {
            i.last_feed = Some(feed.clone());
            i.etp_in_flight = true;
        }
        self.submit(Request::Etp {
            identity: idx,
            feed,
        });
    }

    /// The model changed (or a backoff ended, or an announcement resolved an identity arc):
    /// instances follow the identities, their arcs the identities' qspn arcs, and every real
    /// arc is told our identities if they changed.
    async fn follow_model(&mut self) {
        let model = self.model.clone();
        self.bound.retain(|(i, k), _| {
            model
                .identities
                .get(i)
                .is_some_and(|id| id.arcs.contains_key(k))
        });
        self.follow_identities().await;
        let idxs: Vec<u32> = self.insts.keys().copied().collect();
        for idx in idxs {
            self.follow_arcs(idx).await;
        }
        self.announce().await;
        if !self.opts.declared_arcs {
            self.drop_added_arcs_without_a_link();
            self.learn_identity_arcs();
        }
    }

    /// Instances for new identities, none for gone ones, and the address changes of the
    /// others (qspn.md §13.3 `make_real`, §13.4 `make_connectivity`).
    async fn follow_identities(&mut self) {
        let model = self.model.clone();
        // New ones first: one born by entering or migrating copies its previous identity's
        // instance as it was before that one was made connectivity, or went (an entry's old
        // identity is dismissed in the same model change that creates the new one).
        for (idx, id) in &model.identities {
            if !self.insts.contains_key(idx) {
                self.create_instance(*idx, id).await;
            }
        }
        let gone: Vec<u32> = self
            .insts
            .keys()
            .filter(|k| !model.identities.contains_key(k))
            .copied()
            .collect();
        for idx in gone {
            tracing::info!(idx, "protocol: identity gone, its QSPN instance too");
            self.insts.remove(&idx);
            self.calls.retain(|_, c| c.idx != idx);
            self.timers.retain(|_, (i, _)| *i != idx);
        }
        for (idx, id) in &model.identities {
            let Some(inst) = self.insts.get_mut(idx) else {
                continue;
            };
            let new = id.address.positions().to_vec();
            if inst.address == new && inst.connectivity == id.connectivity {
                continue;
            }
            let update = update_naddr(&inst.address, &new);
            let o = match id.connectivity {
                Some((from, to)) if inst.connectivity != id.connectivity => {
                    tracing::info!(idx, from, to, "protocol: identity made connectivity");
                    inst.qspn.make_connectivity(from, to, &update)
                }
                _ => {
                    tracing::info!(idx, address = %id.address, "protocol: identity made real");
                    let fp = new_fingerprint(&mut self.rng, new.len());
                    inst.qspn.make_real(&update, None, fp)
                }
            };
            inst.address = new;
            inst.connectivity = id.connectivity;
            self.qspn_out(*idx, o).await;
        }
    }

    /// The instance of a new identity: born by entering or migrating (it has a previous
    /// identity with an instance and is in bootstrap), a copy of that one's knowledge inside
    /// the moving g-node, its internal arcs inheriting the previous arcs' ids and external
    /// arcs queued for the bootstrap task (qspn.md §13.2); otherwise a network of its own.
    async fn create_instance(&mut self, idx: u32, id: &Identity) {
        let l = self.gsizes.len();
        let fp = new_fingerprint(&mut self.rng, l);
        let params = Params::new(self.gsizes.clone(), self.rand());
        let my = id.address.positions().to_vec();
        // The previous identity: `copy_of`, or (an entry's old identity is dismissed in the
        // same model change, which clears `copy_of`) the pending operation that made it.
        let previous = id.copy_of.or_else(|| {
            self.model
                .ops
                .values()
                .find(|p| p.new_identity == Some(idx))
                .map(|p| p.prepare.old)
        });
        let prev = previous
            .filter(|_| id.bootstrap_level.is_some())
            .and_then(|p| Some((p, self.insts.get(&p)?)));
        let (qspn, outs, mapped) = match prev {
            Some((p, prev)) => {
                let g = id.bootstrap_level.unwrap_or(0);
                let h = id.bootstrap.map_or(l, |b| b.host_level);
                let mut internal = Vec::new();
                let mut mapped = Vec::new();
                let mut external = Vec::new();
                for (k, a) in &id.arcs {
                    let Some(q) = &a.qspn else {
                        continue;
                    };
                    match (&q.neighbour, prev.arc_of.get(k)) {
                        (Some(nb), Some(pa)) => {
                            internal.push(InternalArc {
                                prev_arc: *pa,
                                cost: prev.qspn.arc_cost(*pa).unwrap_or(Cost::Real(1)),
                                peer_naddr: nb.positions().to_vec(),
                            });
                            mapped.push((*k, *pa));
                        }
                        _ => {
                            if let Some(c) = self.cost_of(&a.nic, a.peer_mac) {
                                external.push((*k, c));
                            }
                        }
                    }
                }
                tracing::info!(
                    idx,
                    previous = p,
                    guest = g,
                    host = h,
                    internal = internal.len(),
                    external = external.len(),
                    "protocol: QSPN instance of a new identity (bootstrap)"
                );
                let (q, o) = Qspn::enter_net(
                    params,
                    BootstrapArgs {
                        internal_arcs: internal,
                        external_arcs: external.iter().map(|(_, c)| *c).collect(),
                        my_naddr: my.clone(),
                        my_fp: fp,
                        guest_gnode_level: g,
                        host_gnode_level: h,
                        previous: &prev.qspn,
                        update_internal_fingerprints: None,
                    },
                );
                mapped.extend(
                    external
                        .iter()
                        .map(|(k, _)| *k)
                        .zip(q.external_arc_ids().iter().copied()),
                );
                (q, o, mapped)
            }
            None => {
                tracing::info!(idx, address = %id.address, "protocol: QSPN instance (a network of its own)");
                let (q, o) = Qspn::create_net(params, my.clone(), fp);
                (q, o, vec![])
            }
        };
        let mut inst = Inst {
            qspn,
            wid: 1 + (self.rand() as u32 % 0x7fff_fffd),
            model_of: BTreeMap::new(),
            arc_of: BTreeMap::new(),
            backoff: BTreeMap::new(),
            paths_dirty: None,
            etp_in_flight: false,
            last_feed: None,
            address: my,
            connectivity: id.connectivity,
        };
        for (k, a) in mapped {
            inst.arc_of.insert(k, a);
            inst.model_of.insert(a, k);
        }
        self.insts.insert(idx, inst);
        self.qspn_out(idx, outs).await;
    }

    /// The instance's arcs follow the identity's qspn arcs in the model.
    async fn follow_arcs(&mut self, idx: u32) {
        let Ok(id) = self.model.identity(idx) else {
            return;
        };
        let qspn_arcs: BTreeMap<u32, (String, MacAddr)> = id
            .arcs
            .iter()
            .filter(|(_, a)| a.qspn.is_some())
            .map(|(k, a)| (*k, (a.nic.clone(), a.peer_mac)))
            .collect();
        let Some(inst) = self.insts.get(&idx) else {
            return;
        };
        let gone: Vec<(u32, ArcId)> = inst
            .arc_of
            .iter()
            .filter(|(k, _)| !qspn_arcs.contains_key(k))
            .map(|(k, a)| (*k, *a))
            .collect();
        for (k, a) in gone {
            self.unmap(idx, k, a);
            if let Some(i) = self.insts.get_mut(&idx) {
                let o = i.qspn.arc_remove(a);
                self.qspn_out(idx, o).await;
            }
        }
        let now = Instant::now();
        for (k, (nic, mac)) in qspn_arcs {
            let Some(inst) = self.insts.get(&idx) else {
                return;
            };
            if inst.arc_of.contains_key(&k) || inst.backoff.get(&k).is_some_and(|t| *t > now) {
                continue;
            }
            let Some(c) = self.cost_of(&nic, mac) else {
                continue; // not measured (yet): the arc joins QSPN when it is
            };
            let Some(inst) = self.insts.get_mut(&idx) else {
                return;
            };
            let (a, o) = inst.qspn.arc_add(c);
            inst.arc_of.insert(k, a);
            inst.model_of.insert(a, k);
            tracing::info!(idx, arc = k, qspn_arc = a, ?c, "protocol: qspn arc added");
            if let Cost::Real(us) = c {
                self.events.emit(Event::ArcUp {
                    identity: idx,
                    arc: k,
                    cost: us,
                });
            }
            self.qspn_out(idx, o).await;
        }
    }

    /// The real arc an identity arc `(nic, peer_mac)` rests on: the peer's real MAC, or the
    /// real arc its pseudo-interface was announced on.
    fn real_arc_of(&self, nic: &str, peer_mac: MacAddr) -> Option<RealArc> {
        let direct = (nic.to_string(), peer_mac);
        if self.phys.contains_key(&direct) {
            return Some(direct);
        }
        self.peers
            .resolve(nic, peer_mac, self.phys.keys())
            .map(|(r, _)| r)
    }

    /// The QSPN cost of an identity arc: its real arc's measured cost, with that arc's tie
    /// breaker.
    fn cost_of(&self, nic: &str, peer_mac: MacAddr) -> Option<Cost> {
        let p = self.phys.get(&self.real_arc_of(nic, peer_mac)?)?;
        Some(Cost::Real(p.cost_us + p.seed_us))
    }

    fn unmap(&mut self, idx: u32, k: u32, a: ArcId) {
        if let Some(i) = self.insts.get_mut(&idx) {
            i.unmap(k, a);
        }
        self.calls.retain(|_, c| !(c.idx == idx && c.arc == a));
    }

    /// Whether the peer identity an arc is bound to is still announced on its real arc.
    fn binding_holds(&self, (real, wid): &(RealArc, u32)) -> bool {
        self.phys.contains_key(real) && self.peers.on_arc(real).iter().any(|p| p.node_id == *wid)
    }

    /// The peer identity of identity arc `k` of identity `idx`: the one it is bound to while
    /// that one is announced, else (bound now) the one announced with the arc's peer MAC.
    fn peer_of(&mut self, idx: u32, k: u32) -> Option<(RealArc, u32)> {
        if let Some(b) = self.bound.get(&(idx, k)) {
            if self.binding_holds(b) {
                return Some(b.clone());
            }
        }
        let arc = self.model.identity(idx).ok()?.arcs.get(&k)?;
        let b = self
            .peers
            .resolve(&arc.nic, arc.peer_mac, self.phys.keys())?;
        self.bound.insert((idx, k), b.clone());
        Some(b)
    }

    /// Where identity `idx`'s QSPN arc `a` goes on the wire: (NIC, the peer system's real
    /// link-local, the peer identity's NodeID).
    fn route_of(&mut self, idx: u32, a: ArcId) -> Option<(String, SocketAddrV4, u32)> {
        let k = *self.insts.get(&idx)?.model_of.get(&a)?;
        let (real, dst) = self.peer_of(idx, k)?;
        let p = self.phys.get(&real)?;
        Some((real.0, SocketAddrV4::new(p.peer_ll, self.opts.port), dst))
    }

    /// The identity arc of identity `idx` a message from peer identity `src` over `real`
    /// came over: the one bound to that identity, else one towards its announced MAC that
    /// is not bound to another identity still announced (then bound to `src`).
    fn arc_from(&mut self, idx: u32, real: &RealArc, src: u32) -> Option<u32> {
        let b = (real.clone(), src);
        if let Some(((_, k), _)) = self.bound.iter().find(|((i, _), v)| *i == idx && **v == b) {
            return Some(*k);
        }
        let mac = self.peers.mac_of(real, src)?;
        let k = self
            .model
            .identity(idx)
            .ok()?
            .arcs
            .iter()
            .find_map(|(k, a)| {
                let free = self
                    .bound
                    .get(&(idx, *k))
                    .is_none_or(|other| !self.binding_holds(other));
                (a.nic == real.0 && a.peer_mac == mac && free).then_some(*k)
            })?;
        self.bound.insert((idx, k), b);
        Some(k)
    }

    async fn call(&mut self, idx: u32, a: ArcId, msg: QspnMessage) {
        if !self
            .insts
            .get(&idx)
            .is_some_and(|i| i.model_of.contains_key(&a))
        {
            return;
        }
        self.next_call = self.next_call.wrapping_add(1);
        let call = self.next_call;
        let full_etp = matches!(msg, QspnMessage::GetFullEtp { .. });
        let now = Instant::now();
        self.calls.insert(
            call,
            Call {
                idx,
                arc: a,
                msg,
                sent: None,
                sends: 1,
                first_at: now,
                next_at: now + Duration::from_millis(self.opts.retry.delay_ms(1)),
                full_etp,
            },
        );
        self.transmit(call).await;
    }

    /// Sends call `call` if its peer identity is resolved (else its next retry tries again).
    async fn transmit(&mut self, call: u32) {
        let Some((idx, arc, msg)) = self.calls.get(&call).map(|c| (c.idx, c.arc, c.msg.clone()))
        else {
            return;
        };
        let Some((nic, to, dst)) = self.route_of(idx, arc) else {
            count(&self.counters, "call_unresolved");
            return;
        };
        let Some(src) = self.insts.get(&idx).map(|i| i.wid) else {
            return;
        };
        let m = Message::Qspn {
            src,
            dst,
            call,
            msg,
        };
        if let Some(bytes) = self.send(&nic, to, &m).await {
            if let Some(c) = self.calls.get_mut(&call) {
                c.sent = Some((nic, to, bytes));
            }
        }
    }

    async fn qspn_out(&mut self, idx: u32, outs: Vec<QOut>) {
        // Iterative: handling an output may produce more (a failed send, a refused arc).
        let mut queue: VecDeque<QOut> = outs.into();
        while let Some(o) = queue.pop_front() {
            match o {
                QOut::RequestFullEtp { arc } => {
                    let requesting_address = self
                        .insts
                        .get(&idx)
                        .map(|i| i.qspn.my_naddr().to_vec())
                        .unwrap_or_default();
                    self.call(idx, arc, QspnMessage::GetFullEtp { requesting_address })
                        .await;
                }
                QOut::SendEtp { arcs, etp, is_full } => {
                    for a in arcs {
                        self.call(
                            idx,
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
                    let Some(k) = self
                        .insts
                        .get(&idx)
                        .and_then(|i| i.model_of.get(&arc).copied())
                    else {
                        continue;
                    };
                    tracing::info!(
                        idx,
                        arc = k,
                        bad_link,
                        "protocol: QSPN dropped the arc; offered again after {:?}",
                        self.opts.arc_backoff
                    );
                    self.unmap(idx, k, arc);
                    if let Some(i) = self.insts.get_mut(&idx) {
                        i.backoff.insert(k, Instant::now() + self.opts.arc_backoff);
                        i.paths_dirty.get_or_insert_with(Instant::now);
                    }
                }
                QOut::Timer { after_ms, timer } => {
                    self.timer_seq += 1;
                    self.timers.insert(
                        (
                            Instant::now() + Duration::from_millis(after_ms),
                            self.timer_seq,
                        ),
                        (idx, timer),
                    );
                }
                QOut::Signal(s) => tracing::debug!(idx, ?s, "qspn"),
                QOut::PathsChanged => {
                    if let Some(i) = self.insts.get_mut(&idx) {
                        i.paths_dirty.get_or_insert_with(Instant::now);
                    }
                }
                // Identity dismissal (qspn.md §13.7) is the model's (`remove-identity`): the
                // neighbours' arcs to a dismissed identity go with their own commands.
                other => tracing::debug!(idx, ?other, "qspn: output not carried out"),
            }
        }
    }

    /// Our identities with an interface on `nic`, as announced there.
    fn my_identities_on(&self, nic: &str) -> Vec<PeerIdentity> {
        let Some(n) = self.model.config.nics.iter().find(|n| n.name == nic) else {
            return vec![];
        };
        self.model
            .identities
            .iter()
            .filter_map(|(k, id)| {
                let inst = self.insts.get(k)?;
                let (mac, ll) = if id.is_main() {
                    (n.mac, n.linklocal)
                } else {
                    let h = id.handled.iter().find(|h| h.nic == nic)?;
                    (h.mac, h.linklocal)
                };
                Some(PeerIdentity {
                    node_id: inst.wid,
                    mac: mac.0,
                    linklocal: ll,
                    main: id.is_main(),
                })
            })
            .collect()
    }

    /// Tells every real arc our identities, where they changed since the last time.
    async fn announce(&mut self) {
        let arcs: Vec<(RealArc, Ipv4Addr)> = self
            .phys
            .iter()
            .map(|(k, p)| (k.clone(), p.peer_ll))
            .collect();
        for (arc, ll) in arcs {
            let ids = self.my_identities_on(&arc.0);
            if self.announced.get(&arc) == Some(&ids) {
                continue;
            }
            let m = Message::IdentityAnnounce {
                identities: ids.clone(),
            };
            let to = SocketAddrV4::new(ll, self.opts.port);
            self.send(&arc.0, to, &m).await;
            self.announced.insert(arc, ids);
        }
    }

    /// `--real-arcs auto`: every pair (our identity, a peer identity) on a real arc is an
    /// identity arc (the reference's Identities module); `add-identity-arc` through the
    /// writer, answered "already" when it is.
    fn learn_identity_arcs(&mut self) {
        let mut added = Vec::new();
        for arc in self.phys.keys() {
            for p in self.peers.on_arc(arc) {
                let mac = MacAddr(p.mac);
                for (k, id) in &self.model.identities {
                    if !self.insts.contains_key(k)
                        || (!id.is_main() && !id.handled.iter().any(|h| h.nic == arc.0))
                        || id
                            .arcs
                            .values()
                            .any(|a| a.nic == arc.0 && a.peer_mac == mac)
                    {
                        continue;
                    }
                    added.push(((*k, arc.0.clone(), mac), arc.clone()));
                    self.submit(Request::AddIdentityArc {
                        identity: *k,
                        nic: arc.0.clone(),
                        peer_mac: mac,
                        peer_linklocal: p.linklocal,
                    });
                }
            }
        }
        self.added.extend(added);
    }

    /// The identity arcs this runtime added: shown by the model now, they are the model's
    /// (removed with their real arc by `ArcRemoved`); shown on a real arc that went down
    /// meanwhile, they go now. Declared arcs (`--real-arcs declared`) are never added here.
    fn drop_added_arcs_without_a_link(&mut self) {
        let model = self.model.clone();
        let mut remove = Vec::new();
        self.added.retain(|(idx, nic, mac), real| {
            let Some(id) = model.identities.get(idx) else {
                return false; // the identity went
            };
            let Some(k) = id
                .arcs
                .iter()
                .find(|(_, a)| a.nic == *nic && a.peer_mac == *mac)
                .map(|(k, _)| *k)
            else {
                return true; // still on its way
            };
            if !self.phys.contains_key(real) {
                remove.push((*idx, k));
            }
            false
        });
        for (identity, arc) in remove {
            tracing::info!(
                identity,
                arc,
                "protocol: an arc added as its link went down goes"
            );
            self.submit(Request::RemoveArc { identity, arc });
        }
    }

    /// The identity arcs (identity, arc index) resting on real arc `key`.
    fn identity_arcs_on(&self, key: &RealArc) -> Vec<(u32, u32)> {
        let macs: Vec<MacAddr> = std::iter::once(key.1)
            .chain(self.peers.on_arc(key).iter().map(|p| MacAddr(p.mac)))
            .collect();
        self.model
            .identities
            .iter()
            .flat_map(|(i, id)| {
                id.arcs
                    .iter()
                    .filter(|(_, a)| a.nic == key.0 && macs.contains(&a.peer_mac))
                    .map(move |(k, _)| (*i, *k))
            })
            .collect()
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
                    let (cost_us, seed_us) = match self.opts.pinned.get(&(nic.clone(), mac)) {
                        Some(c) => (*c, 0),
                        None => (cost_us, self.rand() % 1000),
                    };
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
                    if let (false, Some(main)) = (self.opts.declared_arcs, self.main_idx()) {
                        self.added
                            .insert((main, nic.clone(), mac), (nic.clone(), mac));
                        self.submit(Request::AddIdentityArc {
                            identity: main,
                            nic: nic.clone(),
                            peer_mac: mac,
                            peer_linklocal: ll,
                        });
                        if self.opts.auto_qspn {
                            self.submit(Request::AddQspnArc {
                                identity: main,
                                nic,
                                peer_mac: mac,
                            });
                        }
                    }
                    // Already qspn arcs in the model (declared before discovery)? And the
                    // new neighbour is told our identities.
                    Box::pin(self.follow_model()).await;
                }
                N::ArcChanged { arc, cost_us } => {
                    let key = (arc.nic().to_string(), MacAddr(arc.peer_mac()));
                    if self.opts.pinned.contains_key(&key) {
                        continue; // its cost is the declared one
                    }
                    let Some(p) = self.phys.get_mut(&key) else {
                        continue;
                    };
                    p.cost_us = cost_us;
                    let p_cost = p.cost_us + p.seed_us;
                    let cost = Cost::Real(p_cost);
                    tracing::info!(nic = key.0, mac = %key.1, cost_us, "protocol: arc cost changed");
                    count(&self.counters, "arc_cost_changed");
                    if let Ok(mut st) = self.counters.lock() {
                        st.arcs.insert((key.0.clone(), key.1.to_string()), cost_us);
                    }
                    for (idx, k) in self.identity_arcs_on(&key) {
                        self.events.emit(Event::ArcCost {
                            identity: idx,
                            arc: k,
                            cost: p_cost,
                        });
                        let Some(i) = self.insts.get_mut(&idx) else {
                            continue;
                        };
                        if let Some(a) = i.arc_of.get(&k).copied() {
                            let o = i.qspn.arc_changed(a, cost);
                            Box::pin(self.qspn_out(idx, o)).await;
                        }
                    }
                }
                N::ArcRemoving { arc, .. } | N::ArcRemoved { arc } => {
                    let key = (arc.nic().to_string(), MacAddr(arc.peer_mac()));
                    if !self.phys.contains_key(&key) {
                        continue;
                    }
                    tracing::info!(nic = key.0, mac = %key.1, "protocol: arc down");
                    if let Ok(mut st) = self.counters.lock() {
                        st.arcs.remove(&(key.0.clone(), key.1.to_string()));
                    }
                    let on = self.identity_arcs_on(&key);
                    self.phys.remove(&key);
                    self.peers.forget(&key);
                    self.announced.remove(&key);
                    for (idx, k) in on {
                        self.events.emit(Event::ArcDown {
                            identity: idx,
                            arc: k,
                        });
                        let a = self.insts.get(&idx).and_then(|i| i.arc_of.get(&k).copied());
                        if let Some(a) = a {
                            self.unmap(idx, k, a);
                            if let Some(i) = self.insts.get_mut(&idx) {
                                let o = i.qspn.arc_remove(a);
                                Box::pin(self.qspn_out(idx, o)).await;
                            }
                        }
                        // A declared arc stays declared (its qspn arc returns with the
                        // neighbour, in follow_model).
                        if !self.opts.declared_arcs {
                            self.submit(Request::RemoveArc {
                                identity: idx,
                                arc: k,
                            });
                        }
                    }
                }
            }
        }
    }

    /// The real arc a datagram came over: (NIC, the peer's link-local).
    fn real_arc_from(&self, nic: &str, from: SocketAddrV4) -> Option<RealArc> {
        self.phys
            .iter()
            .find(|((n, _), p)| n == nic && p.peer_ll == *from.ip())
            .map(|(k, _)| k.clone())
    }

    async fn datagram(&mut self, nic: &str, from: SocketAddrV4, bytes: &[u8], at_us: u64) {
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
                dst,
                call,
                msg,
            } => self.qspn_message(nic, from, src, dst, call, msg).await,
            Message::Ack { call } => {
                if let Some(c) = self.calls.get(&call) {
                    if !c.full_etp {
                        self.calls.remove(&call);
                    }
                }
            }
            Message::IdentityAnnounce { identities } => {
                let Some(real) = self.real_arc_from(nic, from) else {
                    count(&self.counters, "dropped_not_an_arc");
                    return;
                };
                if self.peers.learn(real.clone(), identities) {
                    count(&self.counters, "identities_learnt");
                    // Answered with ours (the peer may be new to us as we to it), and the
                    // identity arcs it resolves join QSPN.
                    self.announced.remove(&real);
                    self.follow_model().await;
                }
            }
            Message::ChallengeRequest { .. } | Message::ChallengeReply { .. } => {}
            other => {
                let o = self.neigh.on_message(nic, from, sender, &other, at_us);
                self.neigh_out(o).await;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn qspn_message(
        &mut self,
        nic: &str,
        from: SocketAddrV4,
        src: u32,
        dst: u32,
        call: u32,
        msg: QspnMessage,
    ) {
        // The real arc it came over, the identity it is for (dst), the peer identity (src,
        // from its announcement on that arc), and so the identity arc and the QSPN arc.
        let Some(real) = self.real_arc_from(nic, from) else {
            count(&self.counters, "dropped_not_an_arc");
            return;
        };
        let Some(idx) = self
            .insts
            .iter()
            .find(|(_, i)| i.wid == dst)
            .map(|(k, _)| *k)
        else {
            count(&self.counters, "dropped_unknown_identity");
            return;
        };
        if self.peers.mac_of(&real, src).is_none() {
            count(&self.counters, "dropped_unknown_peer_identity");
            return;
        }
        let k = self.arc_from(idx, &real, src);
        let Some(a) = k.and_then(|k| self.insts.get(&idx)?.arc_of.get(&k).copied()) else {
            // Not (yet) one of our qspn arcs. A request for a full ETP gets no answer: the
            // caller asks again (qspn.md §8.1's wait for the arc, on the caller's side). An
            // ETP is acknowledged and left: when this side makes the arc a QSPN arc, it asks
            // the peer for its full ETP and sends its own (§11.1), which carries everything
            // these updates did. Unacknowledged, each would be sent again for the whole
            // retry window: most of the 7×7 grid's traffic while its daemons started.
            if matches!(msg, QspnMessage::SendEtp { .. }) {
                self.send(nic, from, &Message::Ack { call }).await;
                count(&self.counters, "etp_before_arc");
            } else {
                count(&self.counters, "dropped_not_qspn_arc");
            }
            return;
        };
        let Some(inst) = self.insts.get_mut(&idx) else {
            return;
        };
        let me = inst.wid;
        match msg {
            QspnMessage::GetFullEtp { requesting_address } => {
                let (reply, o) = inst.qspn.on_get_full_etp(a, &requesting_address);
                let m = Message::Qspn {
                    src: me,
                    dst: src,
                    call,
                    msg: QspnMessage::FullEtp(reply),
                };
                self.send(nic, from, &m).await;
                self.qspn_out(idx, o).await;
            }
            QspnMessage::FullEtp(reply) => {
                let Some(c) = self.calls.get(&call) else {
                    return; // an answer to a call already answered
                };
                if !c.full_etp || c.arc != a || c.idx != idx {
                    count(&self.counters, "dropped_unexpected_reply");
                    return;
                }
                self.calls.remove(&call);
                let o = inst.qspn.on_full_etp(a, reply);
                self.qspn_out(idx, o).await;
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
                let Some(inst) = self.insts.get_mut(&idx) else {
                    return;
                };
                let o = inst.qspn.on_send_etp(a, etp, is_full);
                self.qspn_out(idx, o).await;
            }
            QspnMessage::GotPrepareDestroy | QspnMessage::GotDestroy => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arc_costs_parse() {
        let mac: MacAddr = "00:16:3E:EC:A3:E1".parse().unwrap();
        assert_eq!(
            parse_arc_cost("eth1=00:16:3E:EC:A3:E1=10000"),
            Ok(("eth1".into(), mac, 10000))
        );
        for bad in [
            "eth1=00:16:3E:EC:A3:E1",
            "=00:16:3E:EC:A3:E1=1",
            "eth1=00:16:3E:EC:A3=1",
            "eth1=00:16:3E:EC:A3:E1=0",
            "eth1=00:16:3E:EC:A3:E1=-5",
            "eth1=00:16:3E:EC:A3:E1=ten",
        ] {
            assert!(parse_arc_cost(bad).is_err(), "{bad}");
        }
    }
}
