//! The ntkplane daemon: owns one system's dataplane. Commands arrive on a Unix socket as
//! JSON lines and are serialized (one writer per system); each is applied to a copy of the
//! model, validated, persisted, then the kernel is reconciled to the new model.
pub mod dataplane;
pub mod events;
pub mod host;
pub mod http;
pub mod lock;
pub mod metrics;
pub mod persist;
pub mod proto;
pub mod protocol;
pub mod reply;
pub mod server;
pub mod watch;

use std::{
    collections::BTreeMap,
    io::Read,
    os::unix::{fs::PermissionsExt, net::UnixListener},
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use std::{collections::BTreeSet, net::Ipv4Addr};

use self::proto::{Request, Response};
use crate::{
    mac::MacAddr,
    netns::Netns,
    system::{Handled, OpKind, PeerMoved, Prepare, System},
};

/// How long the serve loop sleeps when no client is waiting (also the timer's resolution).
const POLL: Duration = Duration::from_millis(20);

/// The model's clock: wall-clock milliseconds since the UNIX epoch read once at start, then
/// advanced by the monotonic clock (a wall-clock step while the daemon runs does not move it).
/// Times it gives are persisted (a bootstrap's start), so they keep their meaning across a
/// restart.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall0_ms: u64,
    mono0: Instant,
}

impl Clock {
    pub fn new() -> Self {
        let wall0_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        Clock {
            wall0_ms,
            mono0: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.wall0_ms + self.mono0.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// M5: how long a migration waits, between preparing the old identity's namespace and
/// withdrawing the old addresses, for the neighbours to move their routes (Vala: 300 ms).
pub const M5_WAIT: Duration = Duration::from_millis(300);

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> (8 * (i % 16))) as u8 ^ (i as u8).wrapping_mul(151);
        }
    }
    b
}

/// Where a daemon instance keeps its files.
#[derive(Clone, Debug)]
pub struct Paths {
    pub instance: String,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub pin_root: PathBuf,
    pub rt_tables_dir: Option<PathBuf>,
}

/// Longest instance name: it names files, sockets and namespaces (`<instance>-migr01`).
pub const MAX_INSTANCE: usize = 32;

/// `sun_path` holds 108 bytes, the last one a NUL.
const MAX_SOCKET_PATH: usize = 107;

/// An instance name is 1 to [`MAX_INSTANCE`] characters of `A-Z a-z 0-9 _ -`, not starting
/// with `-`: it is used as a file name, a namespace name prefix and a socket name.
pub fn check_instance(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.is_empty()
        || name.len() > MAX_INSTANCE
        || name.starts_with('-')
        || !name.chars().all(ok_char)
    {
        return Err(format!(
            "instance name '{name}': expected 1 to {MAX_INSTANCE} characters of A-Z a-z 0-9 _ - (not starting with -)"
        ));
    }
    Ok(())
}

impl Paths {
    /// The instance name is valid and the socket path fits in a Unix socket address.
    pub fn check(&self) -> Result<(), DaemonError> {
        check_instance(&self.instance).map_err(DaemonError::Invalid)?;
        let sock = self.socket();
        let len = sock.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(DaemonError::Invalid(format!(
                "socket path {} is {len} bytes, longer than the {MAX_SOCKET_PATH} a Unix socket allows: use a shorter --run-dir or --instance",
                sock.display()
            )));
        }
        Ok(())
    }
    /// The instance lock (held by the running daemon).
    pub fn lock(&self) -> PathBuf {
        self.run_dir.join(format!("{}.lock", self.instance))
    }
    pub fn new(instance: &str) -> Self {
        Paths {
            instance: instance.into(),
            state_dir: PathBuf::from("/var/lib/ntkplane"),
            run_dir: PathBuf::from("/run/ntkplane"),
            pin_root: PathBuf::from(crate::classifier::BPFFS).join("ntkplane"),
            rt_tables_dir: Some(PathBuf::from("/etc/iproute2/rt_tables.d")),
        }
    }
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join(format!("{}.sock", self.instance))
    }
    pub fn state(&self) -> PathBuf {
        self.state_dir.join(&self.instance).join("state.json")
    }
    /// The `run` options the state was created with.
    pub fn start_args(&self) -> PathBuf {
        self.state_dir.join(&self.instance).join("args.json")
    }
    /// The system namespace's settings before the first `run` ([`host::HostSettings`]).
    pub fn host_settings(&self) -> PathBuf {
        self.state_dir.join(&self.instance).join("host.json")
    }
    pub fn pins(&self, ns: &Option<String>) -> PathBuf {
        self.pin_root
            .join(&self.instance)
            .join(ns.as_deref().unwrap_or("default"))
    }
    pub fn rt_tables(&self) -> Option<PathBuf> {
        self.rt_tables_dir
            .as_ref()
            .map(|d| d.join(format!("{}.conf", self.instance)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("a daemon already runs for instance '{0}' (it holds {1})")]
    AlreadyRunning(String, String),
    #[error("network namespace {netns} is already owned by {holder} (lock {lock})")]
    NetnsOwned {
        netns: String,
        holder: String,
        lock: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    System(#[from] crate::system::SystemError),
    #[error(transparent)]
    Kernel(#[from] crate::kernel::KernelError),
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> DaemonError {
    move |e| DaemonError::Io(format!("{what}: {e}"))
}

pub struct Daemon {
    paths: Paths,
    /// The namespace that plays the system's default namespace.
    system_netns: Netns,
    system: System,
    /// The seam to the kernel (the real one, or a fake in tests).
    kernel: Box<dyn dataplane::Dataplane>,
    clock: Clock,
    /// qspn.md §13.2's give-up wait ([`crate::system::BOOTSTRAP_TIMEOUT_MS`] unless changed
    /// with `run --bootstrap-timeout-ms`, for tests).
    bootstrap_timeout_ms: u64,
    /// The instance lock and the namespace owner lock, held while the daemon lives.
    _locks: Vec<lock::Lock>,
    /// The control socket, bound at start (a start that cannot serve fails).
    listener: Option<UnixListener>,
    /// Drift: watchers per namespace, what they reported, the repairs done, the namespaces
    /// that could not be repaired (namespace → error), and the periodic checks' timing.
    watchers: BTreeMap<Option<String>, watch::Watcher>,
    drift_tx: Option<std::sync::mpsc::Sender<server::Msg>>,
    dirty: BTreeSet<Option<String>>,
    dirty_since: Option<Instant>,
    repairs: u64,
    failures: BTreeMap<String, String>,
    timing: Timing,
    /// The desired content of every namespace as last reconciled (what repairs converge to
    /// without recomputing the model), and the one a command computed for its own pass.
    desired: Option<std::sync::Arc<DesiredAll>>,
    primed: Option<DesiredAll>,
    /// The event stream (`monitor`): anything that holds the daemon can emit into it.
    events: events::Events,
    /// What the daemon counts for `/metrics`.
    metrics: metrics::Metrics,
    /// `run --metrics`: bound before the start, served by the socket thread.
    metrics_listener: Option<std::net::TcpListener>,
    /// `run --paths protocol`: the protocols' options; their thread runs while `serve` does.
    protocol: Option<protocol::Options>,
    protocol_status: Option<protocol::Shared>,
    /// Every committed model, for the protocol runtime to follow.
    model_tx: Option<tokio::sync::watch::Sender<std::sync::Arc<System>>>,
}

/// How often the daemon looks for drift.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// After an rtnetlink/nftables event, how long to wait for the burst to end.
    pub debounce: Duration,
    /// The cheap check (nft table, classifier links and entries).
    pub check: Duration,
    /// The full resync of routes, rules and addresses (BIRD's scan time).
    pub resync: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            debounce: Duration::from_millis(100),
            check: Duration::from_secs(2),
            resync: Duration::from_secs(60),
        }
    }
}

impl Daemon {
    /// Starts: refuses a second daemon on the instance, loads the persisted model (or creates
    /// it with `init`), and reconciles the kernel to it (adopting pinned BPF objects).
    ///
    /// `args` are the `run` options (flag → value) that `init` builds the model from; a
    /// restart whose options differ from the persisted ones is refused, naming the
    /// differences, unless `discard` (then the persisted state is dropped first). A first
    /// start that fails after touching the kernel removes everything it installed.
    /// Bootstraps keep their persisted start: one whose timeout passed while no daemon ran
    /// ends now (qspn.md §13.2; QSPN's own timer does not wait for the daemon).
    pub fn start(
        paths: Paths,
        system_netns: Netns,
        bootstrap_timeout_ms: u64,
        args: &BTreeMap<String, String>,
        discard: bool,
        init: impl FnOnce() -> Result<System, DaemonError>,
    ) -> Result<Self, DaemonError> {
        paths.check()?;
        let locks = Self::take_ownership(&paths, &system_netns)?;
        if discard {
            persist::remove(&paths.state()).map_err(io_err("state"))?;
            persist::remove(&paths.start_args()).map_err(io_err("start arguments"))?;
            tracing::warn!(state = %paths.state().display(), "persisted state discarded (--discard-state)");
        }
        let clock = Clock::new();
        let persisted = persist::load(&paths.state()).map_err(io_err("state"))?;
        let fresh = persisted.is_none();
        if !fresh {
            Self::check_start_args(&paths, args)?;
        }
        let system = match persisted {
            Some(mut s) => {
                tracing::info!(state = %paths.state().display(), "restarting from the persisted state");
                let now = clock.now_ms();
                let resumed = s.resume_bootstraps(now);
                let ended = s.expire_bootstraps(now, bootstrap_timeout_ms);
                if !ended.is_empty() {
                    tracing::info!(identities = ?ended, "bootstrap timed out while no daemon ran");
                }
                if resumed || !ended.is_empty() {
                    persist::save(&paths.state(), &s).map_err(io_err("state"))?;
                }
                s
            }
            None => {
                let s = init()?;
                persist::save(&paths.state(), &s).map_err(io_err("state"))?;
                s
            }
        };
        if !paths.start_args().exists() {
            let text = serde_json::to_string_pretty(args).expect("serializable");
            persist::write_private(&paths.start_args(), text.as_bytes())
                .map_err(io_err("start arguments"))?;
        }
        let kernel = Box::new(dataplane::RealDataplane::new(
            paths.clone(),
            system_netns.clone(),
            system.config.mark_mask,
        ));
        let mut d = Daemon {
            paths,
            system_netns,
            system,
            kernel,
            clock,
            bootstrap_timeout_ms,
            _locks: locks,
            listener: None,
            watchers: BTreeMap::new(),
            drift_tx: None,
            dirty: BTreeSet::new(),
            dirty_since: None,
            repairs: 0,
            failures: BTreeMap::new(),
            desired: None,
            primed: None,
            timing: Timing::default(),
            events: events::Events::new(),
            metrics: metrics::Metrics::default(),
            metrics_listener: None,
            protocol: None,
            protocol_status: None,
            model_tx: None,
        };
        let late = d.record_host_settings().and_then(|()| {
            match d.reconcile_best_effort().and_then(|()| d.finish_dismissals()) {
                // A restart whose state the kernel partly refuses still starts: what could
                // be installed is, the rest is reported in `status` and retried at every
                // resync (a restart must never be wedged by one object).
                Err(DaemonError::Kernel(e)) if !fresh => {
                    tracing::error!("restart: the kernel refused part of the state (retried at the next resync): {e}");
                    d.failures.insert("start".into(), e.to_string());
                    Ok(())
                }
                other => other,
            }
        });
        let late = late.and_then(|()| d.bind());
        if let Err(e) = late {
            if !fresh {
                // The state and the kernel are the previous run's: kept for the next start.
                return Err(e);
            }
            tracing::error!("start failed ({e}): removing everything it installed");
            let cleanup = d.shutdown();
            // The model was built from the options and served no command: nothing is lost
            // by dropping it even when part of the cleanup failed (the next start rebuilds it).
            for p in [
                d.paths.state(),
                d.paths.start_args(),
                d.paths.host_settings(),
            ] {
                let _ = persist::remove(&p);
            }
            let _ = std::fs::remove_dir(d.paths.state_dir.join(&d.paths.instance));
            return Err(match cleanup {
                Ok(()) => e,
                Err(c) => DaemonError::Io(format!("{e}; and the cleanup failed: {c}")),
            });
        }
        Ok(d)
    }

    /// A restart's options must be the ones the persisted state was created with.
    fn check_start_args(paths: &Paths, args: &BTreeMap<String, String>) -> Result<(), DaemonError> {
        let text = match std::fs::read_to_string(paths.start_args()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(paths.start_args().display())(e)),
        };
        let old: BTreeMap<String, String> = serde_json::from_str(&text)
            .map_err(|e| DaemonError::Io(format!("{}: {e}", paths.start_args().display())))?;
        let keys: BTreeSet<&String> = old.keys().chain(args.keys()).collect();
        let diffs: Vec<String> = keys
            .into_iter()
            .filter(|k| old.get(*k) != args.get(*k))
            .map(|k| {
                format!(
                    "{k} {} (persisted) vs {} (given)",
                    old.get(k).map_or("unset", String::as_str),
                    args.get(k).map_or("unset", String::as_str)
                )
            })
            .collect();
        if diffs.is_empty() {
            return Ok(());
        }
        Err(DaemonError::Invalid(format!(
            "the options differ from the persisted state in {}: {}; restart with the persisted options, or add --discard-state to start afresh",
            paths.state().display(),
            diffs.join(", ")
        )))
    }

    /// The instance lock first (one daemon per instance, also for simultaneous starts), then
    /// the system namespace's owner lock (one instance per namespace): before anything else.
    fn take_ownership(paths: &Paths, netns: &Netns) -> Result<Vec<lock::Lock>, DaemonError> {
        let who = format!("instance {} (pid {})", paths.instance, std::process::id());
        let inst = match lock::take(&paths.lock(), &who) {
            Ok(l) => l,
            Err(lock::LockError::Held { path, .. }) => {
                return Err(DaemonError::AlreadyRunning(
                    paths.instance.clone(),
                    path.display().to_string(),
                ))
            }
            Err(lock::LockError::Io(e)) => return Err(DaemonError::Io(format!("lock: {e}"))),
        };
        let p = lock::netns_lock_path(netns).map_err(io_err("system namespace"))?;
        let owner = match lock::take(&p, &who) {
            Ok(l) => l,
            Err(lock::LockError::Held { path, holder }) => {
                return Err(DaemonError::NetnsOwned {
                    netns: match netns {
                        Netns::Current => "(current)".into(),
                        Netns::Named(n) => n.clone(),
                    },
                    holder,
                    lock: path.display().to_string(),
                })
            }
            Err(lock::LockError::Io(e)) => return Err(DaemonError::Io(format!("lock: {e}"))),
        };
        Ok(vec![inst, owner])
    }

    /// Sets how often drift is looked for (`run --resync-interval`).
    /// Runs the protocols (`run --paths protocol`) while serving.
    pub fn set_protocol(&mut self, o: protocol::Options) {
        self.protocol = Some(o);
    }

    /// Hands the committed model to the protocol runtime (when there is one).
    fn publish(&self) {
        if let Some(tx) = &self.model_tx {
            tx.send_replace(std::sync::Arc::new(self.system.clone()));
        }
    }

    pub fn set_timing(&mut self, t: Timing) {
        self.timing = t;
    }

    /// A daemon over any dataplane, with no lock, no socket and no host settings: for the
    /// unit tests of the daemon's ordering and failure paths over [`dataplane::FakeDataplane`].
    /// The state is persisted under `paths` as usual.
    pub fn over(paths: Paths, system: System, kernel: Box<dyn dataplane::Dataplane>) -> Self {
        Daemon {
            paths,
            system_netns: Netns::Current,
            system,
            kernel,
            clock: Clock::new(),
            bootstrap_timeout_ms: crate::system::BOOTSTRAP_TIMEOUT_MS,
            _locks: vec![],
            listener: None,
            watchers: BTreeMap::new(),
            drift_tx: None,
            dirty: BTreeSet::new(),
            dirty_since: None,
            repairs: 0,
            failures: BTreeMap::new(),
            desired: None,
            primed: None,
            timing: Timing::default(),
            events: events::Events::new(),
            metrics: metrics::Metrics::default(),
            metrics_listener: None,
            protocol: None,
            protocol_status: None,
            model_tx: None,
        }
    }

    /// The event hub: `emit` into it to reach every `monitor` (protocol code, too).
    pub fn events(&self) -> &events::Events {
        &self.events
    }

    /// Serves `/metrics` on `listener` (bound by the caller, in the system's namespace, so
    /// that a bad address fails the start before the kernel is touched).
    pub fn set_metrics_listener(&mut self, listener: std::net::TcpListener) {
        self.metrics_listener = Some(listener);
    }

    /// One namespace's full apply, timed and counted for the metrics.
    fn apply_ns(
        &mut self,
        ns: &Option<String>,
        d: &crate::plan::Desired,
    ) -> Result<crate::kernel::Report, crate::kernel::KernelError> {
        self.counted(|k| k.apply(ns, d))
    }

    /// One apply-like pass of the dataplane (`f`), timed and counted for the metrics.
    fn counted(
        &mut self,
        f: impl FnOnce(
            &mut dyn dataplane::Dataplane,
        ) -> Result<crate::kernel::Report, crate::kernel::KernelError>,
    ) -> Result<crate::kernel::Report, crate::kernel::KernelError> {
        let t0 = Instant::now();
        let r = f(self.kernel.as_mut());
        self.metrics
            .applied(t0.elapsed(), r.as_ref().map_err(|_| ()));
        r
    }

    /// The `/metrics` text: the daemon's counters, and what the kernel holds now (routes per
    /// table from one rtnetlink dump of each namespace, the classifiers' BPF counters).
    pub fn metrics_text(&mut self) -> String {
        let mut snap = metrics::Snapshot {
            identities: self.system.identities.len(),
            ..Default::default()
        };
        for ns in self.open_namespaces() {
            let name = ns
                .as_deref()
                .map_or_else(|| "default".into(), |l| self.netns_name(l));
            for (table, n) in self.kernel.route_counts(&ns).unwrap_or_default() {
                snap.routes.insert((name.clone(), table), n);
            }
            if let Some(c) = self.kernel.classifier_counters(&ns) {
                snap.classifiers.insert(name, c);
            }
        }
        snap.protocol = self
            .protocol_status
            .as_ref()
            .and_then(|c| c.lock().ok().map(|m| (m.counters.clone(), m.arcs.clone())));
        self.metrics.render(&snap)
    }

    /// Brings the dataplane to the model (what `start` does after loading the state).
    pub fn converge(&mut self) -> Result<(), DaemonError> {
        self.reconcile()?;
        self.finish_dismissals()
    }

    /// The kernel name of an identity namespace: instance-prefixed, so that several
    /// simulated systems can share one kernel.
    fn netns_name(&self, label: &str) -> String {
        format!("{}-{}", self.paths.instance, label)
    }

    /// The pseudo-interfaces of the identities that live in namespace `label`.
    fn handled_in(&self, label: &str) -> Vec<Handled> {
        self.system
            .identities
            .values()
            .filter(|i| i.netns.as_deref() == Some(label))
            .flat_map(|i| i.handled.clone())
            .collect()
    }

    fn open_namespaces(&self) -> BTreeSet<Option<String>> {
        self.kernel.open_namespaces().into_iter().collect()
    }

    fn reconcile(&mut self) -> Result<(), DaemonError> {
        self.reconcile_with(None)
    }

    /// The desired content of every namespace, the rt_tables names gathered in the
    /// default namespace's (one rt_tables file per system).
    fn desired_all(&self) -> Result<DesiredAll, DaemonError> {
        Ok(with_table_names(self.system.desired()?))
    }

    /// What repairs converge to: the desired content of the last reconcile pass (the model
    /// changes only through passes), computed when there was none.
    fn desired_cached(&mut self) -> Result<std::sync::Arc<DesiredAll>, DaemonError> {
        if let Some(d) = &self.desired {
            return Ok(d.clone());
        }
        let d = std::sync::Arc::new(self.desired_all()?);
        self.desired = Some(d.clone());
        Ok(d)
    }

    /// Brings the namespaces `which` back to the model: [`Check::Resync`] observes
    /// everything, [`Check::Events`] looks at what the rtnetlink events named, and
    /// [`Check::Cheap`] at what sends no event ([`crate::kernel::Reconciler::check_cheap`]).
    /// Each repair is logged at `warn` and counted; a namespace that cannot be repaired is
    /// reported in `status` and tried again next time.
    fn repair(&mut self, which: &BTreeSet<Option<String>>, check: Check) {
        let desired = match self.desired_cached() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("repair: {e}");
                return;
            }
        };
        for ns in which {
            let Some(d) = desired.get(ns) else {
                continue;
            };
            if !self.open_namespaces().contains(ns) {
                continue;
            }
            let name = ns.clone().unwrap_or_else(|| "default".into());
            let result = match check {
                Check::Resync => self.counted(|k| k.resync(ns, d)),
                Check::Events => {
                    let touched = self.watchers.get(ns).map(|w| w.take()).unwrap_or_default();
                    self.counted(|k| k.repair(ns, d, &touched))
                }
                Check::Cheap => self.kernel.check_cheap(ns, d),
            };
            match result {
                Ok(rep) => {
                    for op in &rep.ops {
                        tracing::warn!(
                            netns = name,
                            ?op,
                            "repaired: changed behind ntkplane's back"
                        );
                        self.events.emit(events::Event::Repair {
                            netns: name.clone(),
                            kind: metrics::op_kind(op).into(),
                            detail: metrics::op_detail(op),
                        });
                    }
                    for (kind, n) in [
                        ("classifier-attach", rep.attached),
                        ("classifier-detach", rep.detached),
                        ("sysctl", rep.sysctls),
                        ("link-up", rep.links_up),
                    ] {
                        if n > 0 {
                            self.events.emit(events::Event::Repair {
                                netns: name.clone(),
                                kind: kind.into(),
                                detail: format!("{n} put back"),
                            });
                        }
                    }
                    self.metrics.repaired(&rep);
                    if rep.attached + rep.detached + rep.sysctls + rep.links_up > 0 {
                        tracing::warn!(
                            netns = name,
                            attached = rep.attached,
                            dead_links = rep.detached,
                            sysctls = rep.sysctls,
                            links_up = rep.links_up,
                            "repaired: classifier links, sysctls or link state"
                        );
                    }
                    self.repairs += rep.total() as u64;
                    self.failures.remove(&name);
                }
                Err(e) => {
                    tracing::error!(
                        netns = name,
                        "repair failed (retried at the next check): {e}"
                    );
                    self.events.emit(events::Event::RepairFailed {
                        netns: name.clone(),
                        error: e.to_string(),
                    });
                    self.failures.insert(name, e.to_string());
                }
            }
        }
    }

    /// One watcher per owned namespace (started and stopped as namespaces come and go).
    fn sync_watchers(&mut self) {
        let Some(tx) = self.drift_tx.clone() else {
            return;
        };
        let open = self.open_namespaces();
        self.watchers.retain(|ns, _| open.contains(ns));
        let missing: Vec<Option<String>> = open
            .into_iter()
            .filter(|k| !self.watchers.contains_key(k))
            .collect();
        for ns in missing {
            let tx = tx.clone();
            let key = ns.clone();
            let Some(netns) = self.kernel.netns(&ns) else {
                continue;
            };
            match watch::watch(netns, move || {
                tx.send(server::Msg::Drift(key.clone())).is_ok()
            }) {
                Ok(w) => {
                    self.watchers.insert(ns, w);
                }
                Err(e) => tracing::error!("{e}"),
            }
        }
    }

    fn reconcile_with(&mut self, pause: Option<Duration>) -> Result<(), DaemonError> {
        self.reconcile_pass(pause, true)
    }

    /// Best effort (start, resync, revert): a namespace that fails does not keep the others
    /// from being brought to the model; the first error is returned, every one logged.
    fn reconcile_best_effort(&mut self) -> Result<(), DaemonError> {
        self.reconcile_pass(None, false)
    }

    /// `strict` (commands): the first failure stops the pass, so that the ordering (new
    /// namespaces before the old ones are rewritten) is never run past a failed step.
    fn reconcile_pass(&mut self, pause: Option<Duration>, strict: bool) -> Result<(), DaemonError> {
        let desired = match self.primed.take() {
            Some(d) => d,
            None => self.desired_all()?,
        };
        let desired = std::sync::Arc::new(desired);
        self.desired = Some(desired.clone());
        let mut errors: Vec<DaemonError> = Vec::new();
        let failed = |e: DaemonError, errors: &mut Vec<DaemonError>| -> Result<(), DaemonError> {
            if strict {
                return Err(e);
            }
            tracing::error!("reconcile: {e}");
            errors.push(e);
            Ok(())
        };
        let open = self.open_namespaces();
        let fresh: Vec<Option<String>> = desired
            .keys()
            .filter(|k| !open.contains(*k))
            .cloned()
            .collect();
        let mut order: Vec<Option<String>> = fresh.clone();
        order.extend(desired.keys().filter(|k| !fresh.contains(k)).cloned());
        for (i, ns) in order.into_iter().enumerate() {
            if i == fresh.len() && !fresh.is_empty() {
                if let Some(p) = pause {
                    self.kernel.pause(p);
                }
            }
            let d = &desired[&ns];
            if !open.contains(&ns) {
                let handled = ns
                    .as_deref()
                    .map(|l| self.handled_in(l))
                    .unwrap_or_default();
                if let Err(e) = self.kernel.provision(&ns, &handled) {
                    failed(e, &mut errors)?;
                    continue;
                }
            }
            // What the events said since the last repair first: the diff then also puts
            // back what changed behind ntkplane's back.
            if let Some(w) = self.watchers.get(&ns) {
                let touched = w.take();
                if let Err(e) = self.kernel.absorb(&ns, &touched) {
                    failed(e.into(), &mut errors)?;
                }
            }
            if let Err(e) = self.apply_ns(&ns, d) {
                failed(e.into(), &mut errors)?;
            }
        }
        let gone: Vec<String> = self
            .open_namespaces()
            .into_iter()
            .flatten()
            .chain(self.kernel.existing_namespaces())
            .filter(|l| !desired.contains_key(&Some(l.clone())))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for label in gone {
            if let Err(e) = self.kernel.remove_namespace(&label) {
                failed(e, &mut errors)?;
            }
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Records the system namespace's settings ntkplane is about to change, unless a
    /// previous run already did (a crash and restart keeps the values from before the first).
    fn record_host_settings(&self) -> Result<(), DaemonError> {
        let path = self.paths.host_settings();
        if host::HostSettings::load(&path)
            .map_err(DaemonError::Io)?
            .is_some()
        {
            return Ok(());
        }
        let ifaces: Vec<String> = self
            .system
            .config
            .nics
            .iter()
            .map(|n| n.name.clone())
            .collect();
        host::HostSettings::record(&self.system_netns, &ifaces)
            .and_then(|h| h.save(&path))
            .map_err(|e| DaemonError::Io(format!("host settings: {e}")))
    }

    /// Removes everything ntkplane installed, restores the settings recorded before the
    /// first `run`, and removes the persisted state. Every step is attempted even when one
    /// fails; then the failures are returned together (and the state is kept, so that the
    /// next `run` and `quit` can finish the job).
    pub fn shutdown(&mut self) -> Result<(), DaemonError> {
        let mut errors: Vec<String> = Vec::new();
        // Connectivity identities first (lifecycle.md §17), then the system namespace.
        let labels: BTreeSet<String> = self
            .open_namespaces()
            .into_iter()
            .flatten()
            .chain(self.kernel.existing_namespaces())
            .collect();
        for label in labels {
            if let Err(e) = self.kernel.remove_namespace(&label) {
                errors.push(format!("namespace {}: {e}", self.netns_name(&label)));
            }
        }
        for ns in self.open_namespaces() {
            if let Err(e) = self.kernel.close(&ns) {
                errors.push(format!(
                    "cleanup of {}: {e}",
                    ns.as_deref().unwrap_or("the system namespace")
                ));
            }
        }
        match host::HostSettings::load(&self.paths.host_settings()) {
            Ok(Some(h)) => errors.extend(h.restore(&self.system_netns)),
            Ok(None) => {}
            Err(e) => errors.push(format!("host settings: {e}")),
        }
        let _ = std::fs::remove_dir(self.paths.pin_root.join(&self.paths.instance));
        let _ = std::fs::remove_dir(&self.paths.pin_root);
        if !errors.is_empty() {
            for e in &errors {
                tracing::error!("quit: {e}");
            }
            return Err(DaemonError::Io(format!(
                "quit: {} step(s) failed (state kept in {}): {}",
                errors.len(),
                self.paths.state().display(),
                errors.join("; ")
            )));
        }
        persist::remove(&self.paths.state()).map_err(io_err("state"))?;
        persist::remove(&self.paths.host_settings()).map_err(io_err("host settings"))?;
        persist::remove(&self.paths.start_args()).map_err(io_err("start arguments"))?;
        if let Some(l) = self.listener.take() {
            drop(l);
            let _ = std::fs::remove_file(self.paths.socket());
        }
        let _ = std::fs::remove_dir(self.paths.state_dir.join(&self.paths.instance));
        Ok(())
    }

    /// The timer of qspn.md §13.2: ends the bootstraps whose timeout passed and brings the
    /// kernel to the new state. Run by the serve loop between clients and before every
    /// command. A state that cannot be persisted is applied all the same (the persisted start
    /// times give the same result at the next start); a kernel error is logged, and the next
    /// command's reconciliation retries.
    pub fn expire_bootstraps(&mut self) {
        let now = self.clock.now_ms();
        let timeout = self.bootstrap_timeout_ms;
        if self
            .system
            .next_bootstrap_deadline(timeout)
            .is_none_or(|t| t > now)
        {
            return;
        }
        let mut next = self.system.clone();
        let ended = next.expire_bootstraps(now, timeout);
        if let Err(e) = persist::save(&self.paths.state(), &next) {
            tracing::warn!(%e, "bootstrap timeout: cannot persist the state");
        }
        self.system = next;
        for identity in &ended {
            self.events.emit(events::Event::Identity {
                step: events::IdentityStep::BootstrapOver,
                identity: *identity,
                op_id: None,
            });
        }
        tracing::info!(
            identities = ?ended,
            timeout_ms = timeout,
            "bootstrap over: no ETP from outside the moving g-node (qspn.md §13.2)"
        );
        if let Err(e) = self.reconcile() {
            tracing::error!(%e, "bootstrap timeout: kernel");
        }
    }

    /// How long the serve loop may sleep: until the next bootstrap deadline, at most [`POLL`].
    fn idle_wait(&self) -> Duration {
        let now = self.clock.now_ms();
        self.system
            .next_bootstrap_deadline(self.bootstrap_timeout_ms)
            .map_or(POLL, |t| {
                POLL.min(Duration::from_millis(t.saturating_sub(now)))
            })
    }

    /// Applies one command.
    pub fn handle(&mut self, req: &Request) -> Response {
        self.expire_bootstraps();
        let now_ms = self.clock.now_ms();
        if let Some(r) = self.already_discovered(req) {
            return r;
        }
        match req {
            Request::CheckConnectivity { identity } => {
                return match self.system.check_connectivity(*identity) {
                    Ok(c) => Response::ok(data(reply::Connectivity {
                        removable: c.removable,
                        message: if c.removable {
                            "This identity can be removed."
                        } else {
                            "This identity CANNOT be removed."
                        }
                        .into(),
                        needed_for: c.needed_for,
                    })),
                    Err(e) => Response::err(e),
                }
            }
            Request::ShowIdentities {} => return Response::ok(self.show_identities()),
            Request::ShowArcs { identity } => {
                return match self.system.identity(*identity) {
                    Ok(id) => Response::ok(data(&id.arcs)),
                    Err(e) => Response::err(e),
                }
            }
            Request::ShowTables {} => return self.show_tables(),
            Request::Status {} => return Response::ok(self.status()),
            Request::Quit {} => return Response::ok(data(reply::Done {})),
            Request::Monitor {} => {
                return Response::err("monitor is a stream: the control socket serves it")
            }
            _ => {}
        }
        let mut next = self.system.clone();
        let result = model_step(&self.system, &mut next, req, now_ms)
            .expect("every other request changes the model");
        let data = match result.and_then(|d| next.desired().map(|n| (d, n))) {
            Ok((d, desired)) => {
                self.primed = Some(with_table_names(desired));
                d
            }
            Err(e) => return Response::err(e),
        };
        // The kernel first, then the disk: a command whose kernel apply fails is not
        // persisted; the model goes back to what it was and the kernel is brought back to it,
        // so one object the kernel refuses never wedges later commands or a restart.
        let previous = std::mem::replace(&mut self.system, next);
        let migrating = matches!(req, Request::MigratePhase1 { .. });
        if let Err(e) = self.reconcile_with(migrating.then_some(M5_WAIT)) {
            return self.revert(previous, format!("kernel: {e}"));
        }
        if let Err(e) = persist::save(&self.paths.state(), &self.system) {
            return self.revert(previous, format!("cannot persist the state: {e}"));
        }
        match self.finish_dismissals() {
            Ok(()) => Response::ok(data),
            Err(e) => Response::err(format!("kernel: {e}")),
        }
    }

    /// In protocol mode a scenario's or a person's `add-identity-arc` for an arc the
    /// Neighborhood already made (same NIC, MAC and link-local) is a static declaration of
    /// it, like a babeld `neighbour` line: it answers with the index discovery gave the arc.
    /// So does `add-qspn-arc` for an arc `--qspn-arcs auto` already made a qspn arc. (With
    /// `--paths feed` both stay errors: the commands are the only source.)
    fn already_discovered(&self, req: &Request) -> Option<Response> {
        self.protocol.as_ref()?;
        let arc_on = |identity: u32, nic: &str, mac: MacAddr| {
            self.system
                .identity(identity)
                .ok()?
                .arcs
                .iter()
                .find(|(_, a)| a.nic == nic && a.peer_mac == mac)
                .map(|(k, a)| (*k, a.clone()))
        };
        match req {
            Request::AddIdentityArc {
                identity,
                nic,
                peer_mac,
                peer_linklocal,
            } => {
                let (arc, a) = arc_on(*identity, nic, *peer_mac)?;
                (a.peer_linklocal == *peer_linklocal)
                    .then(|| Response::ok(data(reply::ArcAdded { arc })))
            }
            Request::AddQspnArc {
                identity,
                nic,
                peer_mac,
            } => {
                let (_, a) = arc_on(*identity, nic, *peer_mac)?;
                let t = a.qspn?.table;
                Some(Response::ok(data(reply::QspnArcAdded {
                    table: t,
                    mark: t,
                })))
            }
            _ => None,
        }
    }

    /// A command that could not be completed: the model is `previous` again and the kernel
    /// is brought back to it (best effort: what cannot be undone is logged).
    fn revert(&mut self, previous: System, error: String) -> Response {
        tracing::warn!("command failed ({error}): reverting the model and the kernel");
        self.system = previous;
        if let Err(e) = self.reconcile_best_effort() {
            tracing::error!("cannot bring the kernel back to the previous state: {e}");
            return Response::err(format!(
                "{error} (the command was not applied; bringing the kernel back failed too: {e})"
            ));
        }
        Response::err(format!("{error} (the command was not applied)"))
    }

    /// E13: identities flagged for dismissal go once the state that created them reached
    /// the kernel (also run at start, after a crash between the two).
    fn finish_dismissals(&mut self) -> Result<(), DaemonError> {
        if self.system.flagged().is_empty() {
            return Ok(());
        }
        let mut next = self.system.clone();
        let gone = next.dismiss_flagged()?;
        persist::save(&self.paths.state(), &next).map_err(io_err("state"))?;
        self.system = next;
        tracing::info!(?gone, "identities dismissed");
        for identity in &gone {
            self.events.emit(events::Event::Identity {
                step: events::IdentityStep::Dismissed,
                identity: *identity,
                op_id: None,
            });
        }
        self.reconcile()
    }

    fn show_identities(&self) -> serde_json::Value {
        let now = self.clock.now_ms();
        let rows: Vec<reply::IdentityRow> = self
            .system
            .identities
            .iter()
            .map(|(i, id)| {
                let b = self
                    .system
                    .bootstrap_status(*i, now, self.bootstrap_timeout_ms);
                reply::IdentityRow {
                    index: *i,
                    address: id.address.to_string(),
                    kind: if id.is_main() {
                        reply::IdentityKind::Main
                    } else {
                        reply::IdentityKind::Connectivity
                    },
                    netns: id
                        .netns
                        .as_deref()
                        .map_or_else(|| "default".into(), |l| self.netns_name(l)),
                    connectivity: id.connectivity,
                    copy_of: id.copy_of,
                    bootstrap: id.bootstrap_level.is_some(),
                    bootstrap_levels: b.as_ref().map(|b| reply::BootstrapLevels {
                        guest: b.guest_level,
                        host: b.host_level,
                    }),
                    bootstrap_for_ms: b.as_ref().map(|b| b.elapsed_ms),
                    bootstrap_gives_up_in_ms: b.as_ref().map(|b| b.remaining_ms),
                    bootstrap_waiting_for: b.map(|b| b.waiting_for),
                }
            })
            .collect();
        data(rows)
    }

    /// Each table as desired, next to what the kernel holds (routes in it, its rule): a
    /// difference is drift the daemon has not repaired yet, or could not.
    fn show_tables(&mut self) -> Response {
        let desired = match self.system.desired() {
            Ok(d) => d,
            Err(e) => return Response::err(e),
        };
        let mut out = Vec::new();
        for (ns, d) in &desired {
            let observed = self.kernel.observe(ns);
            for (id, name) in &d.table_names {
                let routes = d.state.routes.keys().filter(|(t, _)| t == id).count();
                let mac = name.strip_prefix("ntk_from_").and_then(|m| m.parse().ok());
                let packets = mac.and_then(|m| self.kernel.packets(ns, m));
                out.push(reply::TableRow {
                    netns: ns.clone().unwrap_or_else(|| "default".into()),
                    table: *id,
                    name: name.clone(),
                    routes,
                    rule: d.state.rules.iter().any(|r| r.table == *id),
                    kernel_routes: observed
                        .as_ref()
                        .map(|k| k.routes.keys().filter(|(t, _)| t == id).count()),
                    kernel_rule: observed
                        .as_ref()
                        .map(|k| k.rules.iter().any(|r| r.table == *id)),
                    packets,
                    fast_path: mac.and_then(|m| self.kernel.fast_path_counters(ns, m)),
                });
            }
        }
        Response::ok(data(out))
    }

    fn status(&mut self) -> serde_json::Value {
        let mut drift = 0;
        let mut failures = self.failures.clone();
        match self.desired_all() {
            Ok(desired) => {
                for (ns, d) in &desired {
                    let name = ns.clone().unwrap_or_else(|| "default".into());
                    let open = self.open_namespaces().contains(ns);
                    match open.then(|| self.kernel.drift(ns, d)) {
                        Some(Ok(n)) => drift += n,
                        Some(Err(e)) => {
                            failures.insert(name, e.to_string());
                        }
                        None => drift += 1,
                    }
                }
            }
            Err(e) => {
                failures.insert("model".into(), e.to_string());
            }
        }
        data(reply::Status {
            dataplane_matches: drift == 0 && failures.is_empty(),
            drift,
            repairs: self.repairs,
            failures,
            instance: self.paths.instance.clone(),
            topology: self.system.config.topology.clone(),
            identities: self.system.identities.len(),
            namespaces: self
                .open_namespaces()
                .into_iter()
                .map(|k| k.unwrap_or_else(|| "default".into()))
                .collect(),
            tables: self.system.tables.all().count(),
            pending_operations: self
                .system
                .ops
                .iter()
                .map(|(op, p)| reply::PendingOp {
                    op_id: *op,
                    kind: p.prepare.kind,
                    identity: p.prepare.old,
                    waiting_phase_2: p.new_identity,
                })
                .collect(),
            fast_path: crate::kernel::reconcile::fast_path_status(
                self.kernel.fast_path_running().into_iter(),
            ),
            protocol: self
                .protocol_status
                .as_ref()
                .and_then(|c| c.lock().ok().map(|m| m.counters.clone())),
        })
    }

    /// Binds the control socket (0600). A socket file left by a dead daemon is replaced: the
    /// instance lock says no daemon runs.
    fn bind(&mut self) -> Result<(), DaemonError> {
        let sock = self.paths.socket();
        std::fs::create_dir_all(&self.paths.run_dir)
            .map_err(io_err(self.paths.run_dir.display()))?;
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).map_err(io_err(sock.display()))?;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(sock.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err(sock.display()))?;
        tracing::info!(socket = %sock.display(), "listening");
        self.listener = Some(listener);
        Ok(())
    }

    /// Serves the control socket until `quit`, SIGTERM or SIGINT (which shut down as `quit`
    /// does). This thread is the single writer: it applies the requests one at a time, and
    /// runs the bootstrap timer between them; the socket side runs on a thread of its own
    /// ([`server`]), so no client can hold up another or the signals.
    pub fn serve(&mut self) -> Result<(), DaemonError> {
        let sock = self.paths.socket();
        if self.listener.is_none() {
            self.bind()?;
        }
        let listener = self.listener.take().expect("bound");
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let io = std::thread::Builder::new()
            .name("control".into())
            .spawn({
                let tx = tx.clone();
                let stop_rx = stop_rx.clone();
                let extras = server::Extras {
                    events: self.events.clone(),
                    metrics: self.metrics_listener.take(),
                };
                move || server::run(listener, tx, stop_rx, extras)
            })
            .map_err(io_err("control thread"))?;
        self.drift_tx = Some(tx.clone());
        let proto = match self.protocol.clone() {
            None => None,
            Some(o) => {
                let (mtx, mrx) =
                    tokio::sync::watch::channel(std::sync::Arc::new(self.system.clone()));
                self.model_tx = Some(mtx);
                match protocol::spawn(
                    o,
                    self.system_netns.clone(),
                    mrx,
                    tx.clone(),
                    stop_rx.clone(),
                    self.events.clone(),
                ) {
                    Ok(h) => {
                        self.protocol_status = Some(h.status.clone());
                        Some(h)
                    }
                    Err(e) => {
                        let _ = stop_tx.send(true);
                        let _ = io.join();
                        let _ = std::fs::remove_file(&sock);
                        return Err(DaemonError::Io(format!("protocols: {e}")));
                    }
                }
            }
        };
        drop(tx);
        self.sync_watchers();
        let mut last_check = Instant::now();
        let mut last_resync = Instant::now();
        let result = loop {
            let now = Instant::now();
            let mut wait = self
                .idle_wait()
                .min((last_check + self.timing.check).saturating_duration_since(now))
                .min((last_resync + self.timing.resync).saturating_duration_since(now));
            if let Some(t) = self.dirty_since {
                wait = wait.min((t + self.timing.debounce).saturating_duration_since(now));
            }
            match rx.recv_timeout(wait) {
                Ok(server::Msg::Request(Request::Quit {}, to)) => {
                    tracing::info!("quit");
                    self.events.emit(events::Event::Shutdown {
                        reason: "quit".into(),
                    });
                    self.watchers.clear();
                    let r = self.shutdown();
                    let _ = to.send(match &r {
                        Ok(()) => Response::ok(data(reply::Done {})),
                        Err(e) => Response::err(e),
                    });
                    break r;
                }
                Ok(server::Msg::Request(req, to)) => {
                    if !matches!(
                        req,
                        Request::Status {} | Request::ShowTables {} | Request::ShowIdentities {}
                    ) {
                        tracing::info!(?req, "command");
                    }
                    let resp = self.handle(&req);
                    self.announce(&req, &resp);
                    let _ = to.send(resp);
                    self.sync_watchers();
                    self.publish();
                }
                Ok(server::Msg::Protocol(req, to)) => {
                    tracing::debug!(?req, "protocol");
                    let resp = self.handle(&req);
                    self.announce(&req, &resp);
                    let _ = to.send(resp);
                    self.sync_watchers();
                    self.publish();
                }
                Ok(server::Msg::Drift(ns)) => {
                    self.dirty.insert(ns);
                    self.dirty_since.get_or_insert_with(Instant::now);
                }
                Ok(server::Msg::Metrics(to)) => {
                    let _ = to.send(self.metrics_text());
                }
                Ok(server::Msg::Stop(why)) => {
                    tracing::info!("{why}: shutting down");
                    self.events
                        .emit(events::Event::Shutdown { reason: why.into() });
                    self.watchers.clear();
                    break self.shutdown();
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => self.expire_bootstraps(),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(DaemonError::Io("the control thread ended".into()))
                }
            }
            let now = Instant::now();
            if now >= last_resync + self.timing.resync {
                if self.failures.contains_key("start") {
                    match self
                        .reconcile_best_effort()
                        .and_then(|()| self.finish_dismissals())
                    {
                        Ok(()) => {
                            tracing::warn!("resync: the state refused at restart is now installed");
                            self.failures.remove("start");
                        }
                        Err(e) => {
                            self.failures.insert("start".into(), e.to_string());
                        }
                    }
                    self.sync_watchers();
                }
                let all = self.open_namespaces();
                self.repair(&all, Check::Resync);
                last_resync = now;
                last_check = now;
                self.dirty.clear();
                self.dirty_since = None;
            }
            if self
                .dirty_since
                .is_some_and(|t| now >= t + self.timing.debounce)
            {
                let which = std::mem::take(&mut self.dirty);
                self.dirty_since = None;
                self.repair(&which, Check::Events);
            }
            if now >= last_check + self.timing.check {
                let all = self.open_namespaces();
                self.repair(&all, Check::Cheap);
                last_check = now;
            }
        };
        self.drift_tx = None;
        let _ = stop_tx.send(true);
        let _ = io.join();
        if let Some(h) = proto {
            h.join();
        }
        let _ = std::fs::remove_file(&sock);
        result
    }
}

impl Daemon {
    /// The events of a handled request: a command that changes the model (applied or
    /// refused), and the lifecycle step it is when it was applied.
    fn announce(&self, req: &Request, resp: &Response) {
        if matches!(
            req,
            Request::CheckConnectivity { .. }
                | Request::ShowIdentities {}
                | Request::ShowArcs { .. }
                | Request::ShowTables {}
                | Request::Status {}
                | Request::Quit {}
                | Request::Monitor {}
        ) {
            return;
        }
        self.events
            .emit(events::Event::command(req, resp.ok, resp.error.clone()));
        if let (true, Some((step, identity, op_id))) = (resp.ok, events::IdentityStep::of(req)) {
            self.events.emit(events::Event::Identity {
                step,
                identity,
                op_id,
            });
        }
    }
}

/// What a request that changes the model does to it: `next` (a copy of `system`) is changed,
/// and the reply's data returned; `None` for the requests that only read (and `quit`). Pure:
/// no kernel, no disk (the fuzz target drives it).
/// The desired content of every namespace.
type DesiredAll = BTreeMap<Option<String>, crate::plan::Desired>;

/// `desired` with the rt_tables names gathered in the default namespace's (one rt_tables
/// file per system).
fn with_table_names(mut desired: DesiredAll) -> DesiredAll {
    let names: BTreeMap<u32, String> = desired
        .values()
        .flat_map(|d| d.table_names.clone())
        .collect();
    if let Some(d) = desired.get_mut(&None) {
        d.table_names = names;
    }
    desired
}

/// What a repair looks at.
#[derive(Clone, Copy, Debug)]
enum Check {
    /// Everything, observed (the periodic resync).
    Resync,
    /// What the rtnetlink and nftables events named.
    Events,
    /// What sends no event: the classifier and the nft table.
    Cheap,
}

pub fn model_step(
    system: &System,
    next: &mut System,
    req: &Request,
    now_ms: u64,
) -> Option<Result<serde_json::Value, crate::system::SystemError>> {
    Some(match req {
        Request::AddIdentityArc {
            identity,
            nic,
            peer_mac,
            peer_linklocal,
        } => next
            .add_identity_arc(*identity, nic, *peer_mac, *peer_linklocal)
            .map(|arc| data(reply::ArcAdded { arc })),
        Request::AddQspnArc {
            identity,
            nic,
            peer_mac,
        } => next
            .add_qspn_arc(*identity, nic, *peer_mac)
            .map(|t| data(reply::QspnArcAdded { table: t, mark: t })),
        Request::SetNeighbour {
            identity,
            arc,
            address,
        } => next
            .set_neighbour(*identity, *arc, address)
            .map(|_| data(reply::Done {})),
        Request::SetPaths {
            identity,
            dest,
            paths,
        } => next
            .set_paths(*identity, *dest, paths.0.clone())
            .map(|_| data(reply::Done {})),
        Request::RemovePaths { identity, dest } => next
            .set_paths(*identity, *dest, vec![])
            .map(|_| data(reply::Done {})),
        Request::RemoveArc { identity, arc } => next
            .remove_arc(*identity, *arc)
            .map(|_| data(reply::Done {})),
        Request::Etp { identity, feed } => {
            let nb: Vec<(u32, String)> = feed
                .neighbours
                .iter()
                .map(|n| (n.arc, n.address.clone()))
                .collect();
            let ps: Vec<_> = feed
                .paths
                .iter()
                .map(|d| (d.dest, d.paths.clone()))
                .collect();
            next.etp(*identity, &nb, &ps).map(|_| data(reply::Done {}))
        }
        Request::PrepareEnterNetPhase1 {
            args,
            arcs,
            op_id,
            prev_op_id,
            pseudo,
        } => {
            let p = with_pseudo(
                system,
                args.to_prepare(OpKind::Enter, arcs.0.clone(), *prev_op_id, pseudo),
            );
            next.prepare(*op_id, p.clone())
                .map(|_| data(reply::Prepared { pseudo: p.pseudo }))
        }
        Request::PrepareMigratePhase1 {
            args,
            op_id,
            prev_op_id,
            pseudo,
        } => {
            let p = with_pseudo(
                system,
                args.to_prepare(OpKind::Migrate, vec![], *prev_op_id, pseudo),
            );
            next.prepare(*op_id, p.clone())
                .map(|_| data(reply::Prepared { pseudo: p.pseudo }))
        }
        Request::EnterNetPhase1 {
            identity,
            op_id,
            internal,
        }
        | Request::MigratePhase1 {
            identity,
            op_id,
            internal,
        } => {
            let kind = if matches!(req, Request::EnterNetPhase1 { .. }) {
                OpKind::Enter
            } else {
                OpKind::Migrate
            };
            let moved: Vec<PeerMoved> = internal.iter().map(|m| m.0).collect();
            next.phase_1(kind, *identity, *op_id, &moved, now_ms)
                .map(|identity| data(reply::IdentityIndex { identity }))
        }
        Request::EnterNetPhase2 { identity, op_id } => next
            .phase_2(OpKind::Enter, *identity, *op_id)
            .map(|identity| data(reply::IdentityIndex { identity })),
        Request::MigratePhase2 { identity, op_id } => next
            .phase_2(OpKind::Migrate, *identity, *op_id)
            .map(|identity| data(reply::IdentityIndex { identity })),
        Request::NeighbourMigrated {
            identity,
            arc,
            peer_mac,
            peer_linklocal,
        } => next
            .neighbour_migrated(*identity, *arc, *peer_mac, *peer_linklocal)
            .map(|arc| data(reply::ArcAdded { arc })),
        Request::RemoveOuterArcs { identity } => next
            .remove_outer_arcs(*identity)
            .map(|removed_arcs| data(reply::ArcsRemoved { removed_arcs })),
        Request::RemoveIdentity { identity } => next
            .dismiss(*identity)
            .map(|removed_identities| data(reply::IdentitiesRemoved { removed_identities })),
        Request::CheckConnectivity { .. }
        | Request::ShowIdentities {}
        | Request::ShowArcs { .. }
        | Request::ShowTables {}
        | Request::Status {}
        | Request::Quit {}
        | Request::Monitor {} => return None,
    })
}

/// Fills in the pseudo-interfaces not given: a random locally administered MAC and a
/// random link-local not used by this system.
fn with_pseudo(system: &System, mut p: Prepare) -> Prepare {
    let Ok(old) = system.identity(p.old) else {
        return p; // prepare() names the unknown identity
    };
    let mut used: BTreeSet<Ipv4Addr> = system
        .identities
        .values()
        .flat_map(|i| i.handled.iter().map(|h| h.linklocal))
        .chain(
            system
                .ops
                .values()
                .flat_map(|o| o.prepare.pseudo.values().map(|(_, l)| *l)),
        )
        .collect();
    for h in &old.handled {
        p.pseudo.entry(h.nic.clone()).or_insert_with(|| {
            let ll = loop {
                let [a, b] = random_bytes::<2>();
                let ll = Ipv4Addr::new(169, 254, 1 + a % 254, 1 + b % 254);
                if used.insert(ll) {
                    break ll;
                }
            };
            let mut m = random_bytes::<6>();
            m[0] = (m[0] & 0xfc) | 0x02; // unicast, locally administered
            (MacAddr(m), ll)
        });
    }
    p
}

/// A reply's `data`: every reply type serializes.
fn data(reply: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(reply).expect("reply types serialize to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        mac::MacAddr,
        system::{Config, Nic},
    };

    fn scratch_paths(tag: &str) -> Paths {
        let dir = std::env::temp_dir().join(format!(
            "ntkplane-daemon-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Paths {
            instance: "t".into(),
            state_dir: dir.join("state"),
            run_dir: dir.join("run"),
            pin_root: dir.join("pins"),
            rt_tables_dir: None,
        }
    }

    fn faked(tag: &str) -> (Daemon, dataplane::FakeDataplane) {
        faked_with(tag, "00:16:3E:EC:A3:E1", "169.254.96.141", "2.1.1.1")
    }

    fn faked_with(
        tag: &str,
        mac: &str,
        ll: &str,
        address: &str,
    ) -> (Daemon, dataplane::FakeDataplane) {
        let system = System::init(
            Config {
                topology: "4.2.2.2".into(),
                base: "10.0.0.0/8".parse().unwrap(),
                subnet_level: 0,
                serve_anonymous: true,
                anonymizer: true,
                mark_mask: u32::MAX,
                nics: vec![Nic {
                    name: "eth1".into(),
                    mac: mac.parse().unwrap(),
                    linklocal: ll.parse().unwrap(),
                }],
            },
            address,
        )
        .unwrap();
        let fake = dataplane::FakeDataplane::default();
        let handles = dataplane::FakeDataplane {
            log: fake.log.clone(),
            refuse: fake.refuse.clone(),
            held: fake.held.clone(),
            ..Default::default()
        };
        let mut d = Daemon::over(scratch_paths(tag), system, Box::new(fake));
        d.converge().unwrap();
        (d, handles)
    }

    fn ok(d: &mut Daemon, req: Request) -> serde_json::Value {
        let r = d.handle(&req);
        d.announce(&req, &r);
        assert!(r.ok, "{req:?}: {:?}", r.error);
        r.data
    }

    /// Protocol mode: declaring an arc discovery already made answers with its index (and a
    /// qspn arc with its table); feed mode keeps refusing the duplicate.
    #[test]
    fn a_declared_arc_that_discovery_made_is_answered_with_its_index() {
        let gamma: MacAddr = "00:16:3E:EC:A3:E1".parse().unwrap();
        let add = |ll: &str| Request::AddIdentityArc {
            identity: 0,
            nic: "eth1".into(),
            peer_mac: gamma,
            peer_linklocal: ll.parse().unwrap(),
        };
        let qspn = Request::AddQspnArc {
            identity: 0,
            nic: "eth1".into(),
            peer_mac: gamma,
        };
        let (mut d, _) = faked("declared");
        ok(&mut d, add("169.254.94.223"));
        assert!(
            !d.handle(&add("169.254.94.223")).ok,
            "feed mode: a duplicate"
        );
        d.set_protocol(protocol::Options::default());
        let again = ok(&mut d, add("169.254.94.223"));
        assert_eq!(again["arc"], 0);
        assert!(
            !d.handle(&add("169.254.1.1")).ok,
            "another link-local is another arc: refused"
        );
        let t = ok(&mut d, qspn.clone());
        assert_eq!(ok(&mut d, qspn)["table"], t["table"]);
        assert_eq!(d.system.identity(0).unwrap().arcs.len(), 1);
    }

    /// The daemon's ordering over the fake: a migration's new namespace is provisioned and
    /// applied first, then the M5 pause, then the existing namespace is rewritten.
    #[test]
    fn migration_new_namespace_first_then_m5_pause() {
        let (mut d, fake) = faked("m5");
        let mut rx = d.events().subscribe();
        assert_eq!(
            *fake.log.lock().unwrap(),
            ["provision default", "apply default"]
        );
        let gamma: MacAddr = "00:16:3E:5B:78:D5".parse().unwrap();
        ok(
            &mut d,
            Request::AddIdentityArc {
                identity: 0,
                nic: "eth1".into(),
                peer_mac: gamma,
                peer_linklocal: "169.254.94.223".parse().unwrap(),
            },
        );
        ok(
            &mut d,
            Request::PrepareMigratePhase1 {
                args: proto::PrepareArgs {
                    identity: 0,
                    guest_level: 0,
                    host_level: 1,
                    host_addr: proto::Dotted(vec![2, 0, 1]),
                    host_elderships: String::new(),
                    pos1: 2,
                    pos1_eldership: 0,
                    pos2: 1,
                    pos2_eldership: 0,
                    conn_pos: 3,
                    conn_pos_eldership: 0,
                },
                op_id: 7,
                prev_op_id: proto::OpRef(None),
                pseudo: vec![],
            },
        );
        fake.log.lock().unwrap().clear();
        ok(
            &mut d,
            Request::MigratePhase1 {
                identity: 0,
                op_id: 7,
                internal: vec![],
            },
        );
        // The monitor's view: each command, and the lifecycle steps among them.
        let steps: Vec<events::Event> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|s| s.event)
            .filter(|e| matches!(e, events::Event::Identity { .. }))
            .collect();
        assert_eq!(
            steps,
            [
                events::Event::Identity {
                    step: events::IdentityStep::PrepareMigrate,
                    identity: 0,
                    op_id: Some(7)
                },
                events::Event::Identity {
                    step: events::IdentityStep::MigratePhase1,
                    identity: 0,
                    op_id: Some(7)
                }
            ]
        );
        let log = fake.log.lock().unwrap().clone();
        let at = |e: &str| {
            log.iter()
                .position(|x| x == e)
                .unwrap_or_else(|| panic!("no '{e}' in {log:?}"))
        };
        assert!(at("provision migr01") < at("apply migr01"), "{log:?}");
        assert!(at("apply migr01") < at("pause 300ms"), "{log:?}");
        assert!(at("pause 300ms") < at("apply default"), "{log:?}");

        // A best-effort pass (start, resync): the system namespace refusing does not keep
        // the identity namespace from being brought to the model.
        fake.log.lock().unwrap().clear();
        *fake.refuse.lock().unwrap() = Some(None);
        assert!(d.reconcile_best_effort().is_err());
        let log = fake.log.lock().unwrap().clone();
        assert_eq!(log, ["apply default", "apply migr01"]);
        // A command's pass stops at the first failure.
        fake.log.lock().unwrap().clear();
        assert!(d.reconcile().is_err());
        assert_eq!(*fake.log.lock().unwrap(), ["apply default"]);
        *fake.refuse.lock().unwrap() = None;
    }

    /// Issue 19, finding 2 over the fake: what changed behind the daemon's back is found by
    /// `status`, repaired by the next pass, and counted.
    #[test]
    fn drift_is_reported_repaired_and_counted() {
        let (mut d, fake) = faked("drift");
        let status = |d: &mut Daemon| serde_json::from_value::<reply::Status>(d.status()).unwrap();
        assert!(status(&mut d).dataplane_matches);
        let removed = {
            let mut held = fake.held.lock().unwrap();
            let k = held.get_mut(&None).unwrap();
            let n = k.addresses.len();
            k.addresses.clear();
            n
        };
        assert!(removed > 0);
        let s = status(&mut d);
        assert!(!s.dataplane_matches && s.drift == removed, "{s:?}");
        let all = d.open_namespaces();
        d.repair(&all, Check::Resync);
        let s = status(&mut d);
        assert!(s.dataplane_matches, "{s:?}");
        assert_eq!(s.repairs, removed as u64);
        // A namespace that cannot be repaired is reported, and retried.
        fake.held
            .lock()
            .unwrap()
            .get_mut(&None)
            .unwrap()
            .addresses
            .clear();
        *fake.refuse.lock().unwrap() = Some(None);
        d.repair(&all, Check::Resync);
        let s = status(&mut d);
        assert!(
            !s.dataplane_matches && s.failures.contains_key("default"),
            "{s:?}"
        );
        *fake.refuse.lock().unwrap() = None;
        d.repair(&all, Check::Resync);
        assert!(status(&mut d).dataplane_matches);
        let _ = std::fs::remove_dir_all(d.paths.state_dir.parent().unwrap());
    }

    /// Issue 17 over the fake: a repair is one `repair` event per operation and counted by
    /// kind in the metrics, a failed one is a `repair-failed` event and an apply failure;
    /// a command is a `command` event (applied or refused).
    #[test]
    fn repairs_and_commands_are_events_and_metrics() {
        let (mut d, fake) = faked("events");
        let mut rx = d.events().subscribe();
        let removed = {
            let mut held = fake.held.lock().unwrap();
            let k = held.get_mut(&None).unwrap();
            let n = k.addresses.len();
            k.addresses.clear();
            n
        };
        let all = d.open_namespaces();
        d.repair(&all, Check::Resync);
        let mut repaired = 0;
        while let Ok(e) = rx.try_recv() {
            match e.event {
                events::Event::Repair { netns, kind, .. } => {
                    assert_eq!((netns.as_str(), kind.as_str()), ("default", "add-address"));
                    repaired += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(repaired, removed);
        let text = d.metrics_text();
        let line = format!("ntkplane_repairs_total{{kind=\"add-address\"}} {removed}");
        assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        assert!(text.contains("ntkplane_apply_failures_total 0"), "{text}");

        fake.held
            .lock()
            .unwrap()
            .get_mut(&None)
            .unwrap()
            .addresses
            .clear();
        *fake.refuse.lock().unwrap() = Some(None);
        d.repair(&all, Check::Resync);
        assert!(matches!(
            rx.try_recv().unwrap().event,
            events::Event::RepairFailed { .. }
        ));
        assert!(d.metrics_text().contains("ntkplane_apply_failures_total 1"));
        *fake.refuse.lock().unwrap() = None;
        d.repair(&all, Check::Resync);
        while rx.try_recv().is_ok() {}

        let req = Request::RemoveArc {
            identity: 0,
            arc: 9,
        };
        let resp = d.handle(&req);
        d.announce(&req, &resp);
        match rx.try_recv().unwrap().event {
            events::Event::Command {
                command,
                request,
                ok,
                error,
            } => {
                assert_eq!((command.as_str(), request), ("remove-arc", Some(req)));
                assert!(!ok && error.unwrap().contains("no arc 9"));
            }
            other => panic!("{other:?}"),
        }
        // Read-only requests are not events.
        let resp = d.handle(&Request::Status {});
        d.announce(&Request::Status {}, &resp);
        assert!(rx.try_recv().is_err());
        let _ = std::fs::remove_dir_all(d.paths.state_dir.parent().unwrap());
    }

    /// E13 over the fake: an entry's old identity goes to its new namespace (provisioned and
    /// applied before the old namespace is rewritten), and is dismissed (its namespace
    /// removed) only once that state reached the kernel.
    #[test]
    fn entry_new_namespace_first_then_e13_dismissal() {
        let (mut d, fake) = faked_with("e13", "00:16:3E:3C:14:33", "169.254.163.36", "3.1.0.0");
        ok(
            &mut d,
            Request::AddIdentityArc {
                identity: 0,
                nic: "eth1".into(),
                peer_mac: "00:16:3E:EC:A3:E1".parse().unwrap(),
                peer_linklocal: "169.254.96.141".parse().unwrap(),
            },
        );
        ok(
            &mut d,
            Request::PrepareEnterNetPhase1 {
                args: proto::PrepareArgs {
                    identity: 0,
                    guest_level: 0,
                    host_level: 1,
                    host_addr: proto::Dotted(vec![2, 1, 1]),
                    host_elderships: String::new(),
                    pos1: 2,
                    pos1_eldership: 0,
                    pos2: 1,
                    pos2_eldership: 0,
                    conn_pos: 2,
                    conn_pos_eldership: 0,
                },
                arcs: proto::ArcList(vec![0]),
                op_id: 4958850,
                prev_op_id: proto::OpRef(Some(262359)),
                pseudo: vec!["eth1=02:00:00:00:05:01@169.254.133.31".parse().unwrap()],
            },
        );
        fake.log.lock().unwrap().clear();
        ok(
            &mut d,
            Request::EnterNetPhase1 {
                identity: 0,
                op_id: 4958850,
                internal: vec![],
            },
        );
        let log = fake.log.lock().unwrap().clone();
        let at = |e: &str| {
            log.iter()
                .position(|x| x == e)
                .unwrap_or_else(|| panic!("no '{e}' in {log:?}"))
        };
        assert!(at("provision entr01") < at("apply entr01"), "{log:?}");
        assert!(at("apply entr01") < at("apply default"), "{log:?}");
        assert!(at("apply default") < at("remove entr01"), "{log:?}");
        assert!(
            !log.contains(&"pause 300ms".to_string()),
            "an entry has no M5 pause: {log:?}"
        );
        assert_eq!(
            d.system.identities.len(),
            1,
            "the old identity was not dismissed"
        );
        let _ = std::fs::remove_dir_all(d.paths.state_dir.parent().unwrap());
    }

    /// Issue 19, finding 4 over the fake: a command whose apply the kernel refuses is not
    /// persisted, the model and the kernel go back, and the next command works.
    #[test]
    fn a_refused_apply_is_reverted_and_not_persisted() {
        let (mut d, fake) = faked("refuse");
        let state = std::fs::read_to_string(d.paths.state()).ok();
        *fake.refuse.lock().unwrap() = Some(None);
        let req = Request::AddIdentityArc {
            identity: 0,
            nic: "eth1".into(),
            peer_mac: "00:16:3E:5B:78:D5".parse().unwrap(),
            peer_linklocal: "169.254.94.223".parse().unwrap(),
        };
        let r = d.handle(&req);
        assert!(
            !r.ok && r.error.as_deref().unwrap().contains("not applied"),
            "{r:?}"
        );
        assert_eq!(std::fs::read_to_string(d.paths.state()).ok(), state);
        assert!(d.system.identity(0).unwrap().arcs.is_empty());
        *fake.refuse.lock().unwrap() = None;
        ok(&mut d, req);
        assert_eq!(d.system.identity(0).unwrap().arcs.len(), 1);
        assert!(std::fs::read_to_string(d.paths.state())
            .unwrap()
            .contains("00:16:3E:5B:78:D5"));
        let _ = std::fs::remove_dir_all(d.paths.state_dir.parent().unwrap());
    }

    /// Issue 19: instance names that would escape their directories or not fit are refused.
    #[test]
    fn instance_names_are_checked() {
        for ok in [
            "ntkplane",
            "a",
            "ntkt123d",
            "x_y-z",
            &"a".repeat(MAX_INSTANCE),
        ] {
            check_instance(ok).unwrap();
        }
        for bad in [
            "",
            "../../tmp/x",
            "a/b",
            ".",
            "..",
            "-x",
            "a b",
            "é",
            &"a".repeat(MAX_INSTANCE + 1),
        ] {
            assert!(check_instance(bad).is_err(), "{bad:?} accepted");
        }
        let mut p = Paths::new("ntkplane");
        p.check().unwrap();
        p.run_dir = PathBuf::from("/").join("r".repeat(100));
        let e = p.check().unwrap_err().to_string();
        assert!(e.contains("longer than the 107"), "{e}");
    }
}
