//! The lab runner: builds a scenario's namespaces and links, starts one daemon per system,
//! runs the timeline (client commands, feeds from the path solver, waits, checks with real
//! packets), prints a report, and removes everything it created — also after a failure or
//! an interrupt (SIGINT/SIGTERM are turned into a stop between steps).
//!
//! Lab setup (bridges, veths, the addresses and routes of non-Netsukuku hosts) uses `ip`
//! like an administrator would; everything the daemons do goes through their own netlink
//! code.
mod checks;
mod daemons;
mod exact;
mod mode;
mod report;
mod topology;
mod window;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Child,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use ntkplane::daemon::proto::Feed;
use serde_json::Value;

pub use checks::{compare_marks, compare_tables, Failure};
pub use mode::{Converge, PathsMode};
pub use topology::{clean_all, lab_leftovers, lab_namespaces};

use crate::scenario::{KernelCheck, Origin, Scenario, Step, DURING_PERIOD_MS};
use checks::{evaluate, Loc, Probe};

/// Every namespace of a lab starts with this (leftovers are recognisable and removable).
pub const LAB_PREFIX: &str = "ntkl";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM stop the lab between steps (and its waits), then it cleans up.
pub fn install_stop_handler() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("setup: {msg}\n  daemon logs kept in {}", logs.display())]
    Setup { msg: String, logs: PathBuf },
    #[error("step {step} ({title}): {msg}")]
    Step {
        step: usize,
        title: String,
        msg: String,
    },
    #[error("interrupted")]
    Interrupted,
}

pub struct Options {
    /// The `ntkplane` binary for daemons and client commands.
    pub bin: PathBuf,
    /// Leave the lab running at the end.
    pub keep: bool,
    /// Where the daemons' paths come from (`--paths`).
    pub paths: PathsMode,
    /// Protocol mode: how long a check waits for the daemons to converge.
    pub converge: Duration,
}

/// One check's outcome, for the report.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub step: usize,
    pub what: String,
    pub ok: bool,
    /// The failures, one per line, each `FILE:LINE: FIELD: what differs`.
    pub detail: String,
    /// The check stated a whole part of the state exactly ([`KernelCheck::is_exact`]).
    pub exact: bool,
}

/// What a step did: a progress note, or a check's outcome.
enum Done {
    Note(String),
    Check {
        what: String,
        failures: Vec<Failure>,
        exact: bool,
    },
}

/// What a `during` window's sampler saw.
#[derive(Default)]
struct Sampled {
    samples: usize,
    violations: usize,
    /// The longest time between the starts of two samples.
    max_gap: Duration,
    elapsed: Duration,
    /// The first violation: when (from the window's opening), which step ran, what failed.
    first: Option<(Duration, usize, Vec<Failure>)>,
}

/// An open `during` window: its sampler thread and how to stop it.
struct Window<'scope> {
    during: usize,
    to: usize,
    stop: Arc<AtomicBool>,
    handle: std::thread::ScopedJoinHandle<'scope, Sampled>,
}

struct Sys {
    netns: String,
    instance: String,
    child: Option<Child>,
}

impl Sys {
    /// The daemon's exit status if it was started and has exited since.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }
}

/// A running lab; dropping it removes everything (unless kept).
pub struct Lab<'a> {
    sc: &'a Scenario,
    prefix: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    systems: BTreeMap<String, Sys>,
    hosts: BTreeMap<String, String>,
    bin: PathBuf,
    keep: bool,
    paths: PathsMode,
    converge: Converge,
    /// Last feed sent per (system, identity index): only changes are sent again.
    fed: BTreeMap<(String, u32), Feed>,
    pub results: Vec<CheckResult>,
    /// Set once the whole run passed: only then are the daemons' logs deleted.
    passed: bool,
}

impl<'a> Lab<'a> {
    /// Creates segments, system and host namespaces, links, host addresses and routes, and
    /// starts the daemons of systems with `start = true`.
    pub fn build(
        sc: &'a Scenario,
        opts: &Options,
        log: &mut dyn FnMut(&str),
    ) -> Result<Lab<'a>, LabError> {
        let prefix = format!("{LAB_PREFIX}{}", std::process::id() % 10_000);
        let dir = std::env::temp_dir().join(format!("{prefix}-lab"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| LabError::Setup {
            msg: format!("{}: {e}", dir.display()),
            logs: dir.clone(),
        })?;
        let mut lab = Lab {
            sc,
            prefix,
            dir: dir.clone(),
            namespaces: vec![],
            systems: BTreeMap::new(),
            hosts: BTreeMap::new(),
            bin: opts.bin.clone(),
            keep: opts.keep,
            paths: opts.paths,
            converge: Converge::for_mode(opts.paths, opts.converge),
            fed: BTreeMap::new(),
            results: vec![],
            passed: false,
        };
        lab.setup(log)
            .map_err(|msg| LabError::Setup { msg, logs: dir })?;
        Ok(lab)
    }

    /// Runs the timeline; stops at the first failed command (checks are all recorded).
    /// A `during` step arms a window; it opens (its sampler's first sample taken) just before
    /// its `from` step starts and closes just after its `to` step ends.
    pub fn run_steps(&mut self, log: &mut dyn FnMut(&str)) -> Result<(), LabError> {
        let sc: &'a Scenario = self.sc;
        let total = sc.steps.len();
        let paths = self.paths;
        let running = AtomicUsize::new(0);
        let running = &running;
        std::thread::scope(|scope| {
            let mut armed: Vec<usize> = Vec::new();
            let mut open: Vec<Window> = Vec::new();
            let mut outcome = Ok(());
            for (i, (origin, step)) in sc.steps.iter().enumerate() {
                if stopped() {
                    outcome = Err(LabError::Interrupted);
                    break;
                }
                running.store(i, Ordering::SeqCst);
                let (starting, waiting): (Vec<usize>, Vec<usize>) =
                    armed.iter().partition(|d| window_of(sc, paths, **d).0 == i);
                armed = waiting;
                for d in starting {
                    let (_, to, k) = window_of(sc, paths, d);
                    let loc = Loc {
                        sc,
                        file: &sc.steps[d].0.file,
                        prefix: format!("step[{}].during.check", sc.steps[d].0.index),
                    };
                    let probe = self.probe(k);
                    let stop = Arc::new(AtomicBool::new(false));
                    let (ready, first) = mpsc::channel();
                    let flag = stop.clone();
                    let handle = scope.spawn(move || sample(probe, k, loc, running, &flag, ready));
                    // The window opens once its first sample is taken.
                    let _ = first.recv();
                    open.push(Window {
                        during: d,
                        to,
                        stop,
                        handle,
                    });
                }
                let title = describe(step);
                let r = match &step.during {
                    Some(_) => {
                        armed.push(i);
                        let (from, to, _) = window_of(sc, paths, i);
                        Ok(format!("armed for steps {}–{}", from + 1, to + 1))
                    }
                    None => self.step(i, origin, step),
                };
                let (ending, rest): (Vec<Window>, Vec<Window>) =
                    open.into_iter().partition(|w| w.to == i);
                open = rest;
                let closed: Vec<String> = ending
                    .into_iter()
                    .map(|w| self.close_window(w, None))
                    .collect();
                match r {
                    Ok(msg) => log(&format!(
                        "[{:>3}/{total}] {title}{}",
                        i + 1,
                        if msg.is_empty() {
                            String::new()
                        } else {
                            format!(" — {msg}")
                        }
                    )),
                    Err(msg) => {
                        log(&format!("[{:>3}/{total}] {title} — FAILED", i + 1));
                        outcome = Err(LabError::Step {
                            step: i + 1,
                            title,
                            msg: msg + &self.dead_daemons(),
                        });
                    }
                }
                for c in closed {
                    log(&format!("        {c}"));
                }
                if outcome.is_err() {
                    break;
                }
            }
            // Windows the run did not reach the end of.
            let at = running.load(Ordering::SeqCst);
            for w in open {
                let c = self.close_window(w, Some(at));
                log(&format!("        {c}"));
            }
            outcome
        })
    }

    /// Stops a window's sampler and records what it saw; `cut`: the run stopped at that
    /// step, before the window's end.
    fn close_window(&mut self, w: Window, cut: Option<usize>) -> String {
        w.stop.store(true, Ordering::SeqCst);
        let joined = w.handle.join();
        let crashed = joined.is_err();
        let seen = joined.unwrap_or_default();
        let sc = self.sc;
        let (from, to, k) = window_of(sc, self.paths, w.during);
        let what = format!(
            "during steps {}–{}: {} {}",
            from + 1,
            to + 1,
            k.on.get_ref(),
            k.netns.as_deref().unwrap_or("default")
        );
        let title = |n: usize| describe(&sc.steps[n].1);
        let mut failures: Vec<Failure> = match &seen.first {
            None => vec![],
            Some((t, n, fs)) => fs
                .iter()
                .map(|f| Failure {
                    msg: format!(
                        "at {} ms, while step {} ran ({}): {}",
                        t.as_millis(),
                        n + 1,
                        title(*n),
                        f.msg
                    ),
                    ..f.clone()
                })
                .collect(),
        };
        if crashed {
            let (origin, _) = &sc.steps[w.during];
            failures.push(Failure {
                at: sc.step_at(origin),
                field: format!("step[{}].during", origin.index),
                msg: "the sampler thread panicked".into(),
            });
        }
        if let Some(n) = cut {
            let (origin, step) = &sc.steps[w.during];
            let at = match &step.during {
                Some(d) => sc.at(&origin.file, d.to.span()),
                None => sc.step_at(origin),
            };
            failures.push(Failure {
                at,
                field: format!("step[{}].during.to", origin.index),
                msg: format!("the run stopped at step {} before the window's end", n + 1),
            });
        }
        let note = format!(
            "{} samples in {} ms, at most {} ms apart{}",
            seen.samples,
            seen.elapsed.as_millis(),
            seen.max_gap.as_millis(),
            if seen.violations > 0 {
                format!(", {} violated", seen.violations)
            } else {
                String::new()
            }
        );
        let exact = k.is_exact();
        let msg = self.record(
            w.during + 1,
            Done::Check {
                what: format!("{what} ({note})"),
                failures,
                exact,
            },
        );
        format!("window of step {} ({what}): {note} — {msg}", w.during + 1)
    }

    /// Records a step's outcome; the progress note.
    fn record(&mut self, step: usize, d: Done) -> String {
        match d {
            Done::Note(n) => n,
            Done::Check {
                what,
                failures,
                exact,
            } => {
                let ok = failures.is_empty();
                let lines: Vec<String> = failures.iter().map(|f| f.to_string()).collect();
                self.results.push(CheckResult {
                    step,
                    what,
                    ok,
                    detail: lines.join("\n"),
                    exact,
                });
                if ok {
                    "ok".into()
                } else {
                    format!("CHECK FAILED:\n      {}", lines.join("\n      "))
                }
            }
        }
    }

    /// One step of the timeline (`during` steps are the runner's).
    fn step(&mut self, i: usize, origin: &Origin, s: &Step) -> Result<String, String> {
        let on =
            s.on.as_ref()
                .map(|o| o.get_ref().clone())
                .unwrap_or_default();
        if s.start.is_some() {
            self.start(&on)?;
            return Ok("daemon up".into());
        }
        if let Some(g) = &s.feed {
            if !self.paths.feeds() {
                return Ok("skipped: the daemons' protocols find the paths".into());
            }
            return self.feed(g.get_ref());
        }
        if let Some(group) = &s.parallel {
            let t0 = Instant::now();
            let this: &Self = self;
            let done: Vec<Result<Done, String>> = std::thread::scope(|scope| {
                let handles: Vec<_> = group
                    .iter()
                    .enumerate()
                    .map(|(k, m)| {
                        let prefix = format!("step[{}].parallel[{k}]", origin.index);
                        scope.spawn(move || this.act(i, origin, m, &prefix))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
                    .collect()
            });
            let mut notes = Vec::new();
            let mut errors = Vec::new();
            for (k, d) in done.into_iter().enumerate() {
                match d {
                    Ok(d) => {
                        let n = self.record(i + 1, d);
                        if !n.is_empty() {
                            notes.push(format!("[{k}] {n}"));
                        }
                    }
                    Err(e) => errors.push(format!("[{k}] {e}")),
                }
            }
            if !errors.is_empty() {
                return Err(errors.join("; "));
            }
            notes.insert(
                0,
                format!(
                    "{} steps together in {} ms",
                    group.len(),
                    t0.elapsed().as_millis()
                ),
            );
            return Ok(notes.join("; "));
        }
        let d = self.act(i, origin, s, &format!("step[{}]", origin.index))?;
        Ok(self.record(i + 1, d))
    }

    /// A step that needs nothing but the lab as it is (and so can run in a `parallel`
    /// group): run, shell, wait_ms, check, ping, udp.
    fn act(&self, i: usize, origin: &Origin, s: &Step, prefix: &str) -> Result<Done, String> {
        let on =
            s.on.as_ref()
                .map(|o| o.get_ref().clone())
                .unwrap_or_default();
        let loc = |key: &str| Loc {
            sc: self.sc,
            file: &origin.file,
            prefix: format!("{prefix}.{key}"),
        };
        if let Some(args) = &s.run {
            let args: Vec<String> = args
                .iter()
                .map(|a| self.expand(&on, a))
                .collect::<Result<_, _>>()?;
            let refs: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
            let reply = self.client(&on, &refs)?;
            if let Some(exp) = &s.expect {
                let want: Value = serde_json::to_value(exp).unwrap();
                for (k, v) in want.as_object().unwrap() {
                    if reply.get(k) != Some(v) {
                        return Err(format!("reply {reply}: {k} is not {v}"));
                    }
                }
            }
            return Ok(Done::Note(String::new()));
        }
        if let Some(cmd) = &s.shell {
            let ns = self.ns_of_node(&on);
            crate::readback::sh_in(&ns, cmd)?;
            return Ok(Done::Note(String::new()));
        }
        if let Some(ms) = s.wait_ms {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(ms) && !stopped() {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Ok(Done::Note(String::new()));
        }
        if let Some(k) = &s.check {
            let (failures, _) = self
                .converge
                .settle(|| self.kernel_check(k, &loc("check")), stopped);
            let what = format!(
                "{} {}: {}",
                k.on.get_ref(),
                k.netns.as_deref().unwrap_or("default"),
                k.listing.as_ref().map_or("state", |l| l.get_ref())
            );
            return Ok(Done::Check {
                what,
                failures,
                exact: k.is_exact(),
            });
        }
        if let Some(p) = &s.ping {
            let (what, errors) = self.settled(|| self.ping(p))?;
            let l = loc("ping");
            return Ok(Done::Check {
                what,
                failures: errors
                    .into_iter()
                    .map(|e| l.fail(p.from.span(), "", e))
                    .collect(),
                exact: false,
            });
        }
        if let Some(u) = &s.udp {
            let (what, errors) = self.settled(|| self.udp(u, i))?;
            let l = loc("udp");
            return Ok(Done::Check {
                what,
                failures: errors
                    .into_iter()
                    .map(|e| l.fail(u.from.span(), "", e))
                    .collect(),
                exact: false,
            });
        }
        unreachable!("checked at load: one action per step")
    }

    /// A packet check (`ping`, `udp`: what was sent, what went wrong) compared until it
    /// holds or the convergence bound passed; an error to run it ends the wait at once.
    fn settled(
        &self,
        mut check: impl FnMut() -> Result<(String, Vec<String>), String>,
    ) -> Result<(String, Vec<String>), String> {
        let mut what = String::new();
        let mut fatal = None;
        let (errors, _) = self.converge.settle(
            || match check() {
                Ok((w, e)) => {
                    what = w;
                    e
                }
                Err(e) => {
                    fatal = Some(e);
                    vec![]
                }
            },
            stopped,
        );
        match fatal {
            Some(e) => Err(e),
            None => Ok((what, errors)),
        }
    }

    /// Where the daemons' logs are (kept after a failed run).
    pub fn log_dir(&self) -> &Path {
        &self.dir
    }

    /// The run passed: the logs can go with the rest of the lab.
    pub fn mark_passed(&mut self) {
        self.passed = true;
    }
}

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        if !self.keep || stopped() {
            self.teardown();
        }
    }
}

/// A `during` step's window: (from, to, check); in protocol mode a window that lasts until
/// a feed ends before the first step that can deliver an ETP ([`window::protocol_end`]).
fn window_of(sc: &Scenario, paths: PathsMode, d: usize) -> (usize, usize, &KernelCheck) {
    let w = sc.steps[d].1.during.as_ref().expect("a during step");
    let (from, to) = (sc.ids[w.from.get_ref()], sc.ids[w.to.get_ref()]);
    let to = if paths.feeds() {
        to
    } else {
        let kinds: Vec<window::Kind> = sc.steps.iter().map(|(_, s)| window::kind(s)).collect();
        window::protocol_end(&kinds, from, to)
    };
    (from, to, &w.check)
}

/// A `during` window's sampler: samples the check so that two samples start at most
/// [`DURING_PERIOD_MS`] ms apart (it aims at 4/5 of that, for the scheduler's delays; at once
/// if a sample took longer) until `stop`, then once more; `ready` is told when the first
/// sample is taken.
fn sample(
    probe: Probe,
    k: &KernelCheck,
    loc: Loc,
    running: &AtomicUsize,
    stop: &AtomicBool,
    ready: mpsc::Sender<()>,
) -> Sampled {
    let period = Duration::from_millis(DURING_PERIOD_MS * 4 / 5);
    let t0 = Instant::now();
    let mut seen = Sampled::default();
    let mut last: Option<Instant> = None;
    loop {
        let last_one = stop.load(Ordering::SeqCst);
        let now = Instant::now();
        if let Some(l) = last {
            seen.max_gap = seen.max_gap.max(now - l);
        }
        last = Some(now);
        let step = running.load(Ordering::SeqCst);
        let failures = evaluate(&probe, k, &loc);
        seen.samples += 1;
        if !failures.is_empty() {
            seen.violations += 1;
            if seen.first.is_none() {
                seen.first = Some((now - t0, step, failures));
            }
        }
        if seen.samples == 1 {
            let _ = ready.send(());
        }
        if last_one {
            break;
        }
        let next = now + period;
        while !stop.load(Ordering::SeqCst) {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(5)));
        }
    }
    seen.elapsed = t0.elapsed();
    seen
}

fn describe(s: &Step) -> String {
    if let Some(t) = &s.title {
        return t.clone();
    }
    if let Some(d) = &s.during {
        return format!(
            "during {} … {}: check {} {}",
            d.from.get_ref(),
            d.to.get_ref(),
            d.check.on.get_ref(),
            d.check.netns.as_deref().unwrap_or("default")
        );
    }
    if let Some(g) = &s.parallel {
        return format!(
            "together: {}",
            g.iter().map(describe).collect::<Vec<_>>().join(" ‖ ")
        );
    }
    let on = s.on.as_ref().map(|o| o.get_ref().as_str()).unwrap_or("");
    if let Some(r) = &s.run {
        return format!("{on}: ntkplane {}", r.join(" "));
    }
    if s.start.is_some() {
        return format!("{on}: start the daemon");
    }
    if let Some(c) = &s.shell {
        return format!("{on}: {c}");
    }
    if let Some(g) = &s.feed {
        return format!("feed graph {}", g.get_ref());
    }
    if let Some(ms) = s.wait_ms {
        return format!("wait {ms} ms");
    }
    if let Some(k) = &s.check {
        return format!(
            "check {} {}{}",
            k.on.get_ref(),
            k.netns.as_deref().unwrap_or("default"),
            k.listing
                .as_ref()
                .map(|l| format!(" = {}", l.get_ref()))
                .unwrap_or_default()
        );
    }
    if let Some(p) = &s.ping {
        return format!(
            "ping {} → {} (expect {})",
            p.from.get_ref(),
            p.to.get_ref(),
            p.expect.get_ref()
        );
    }
    if let Some(u) = &s.udp {
        return format!("udp {} → {}", u.from.get_ref(), u.to.get_ref());
    }
    "step".into()
}
