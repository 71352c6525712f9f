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
mod report;
mod topology;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Child,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use ntkplane::daemon::proto::Feed;
use serde_json::Value;

pub use checks::{compare_marks, compare_tables};
pub use topology::{clean_all, lab_leftovers, lab_namespaces};

use crate::scenario::{Scenario, Step};

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
}

/// One check's outcome, for the report.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub step: usize,
    pub what: String,
    pub ok: bool,
    pub detail: String,
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
            fed: BTreeMap::new(),
            results: vec![],
            passed: false,
        };
        lab.setup(log)
            .map_err(|msg| LabError::Setup { msg, logs: dir })?;
        Ok(lab)
    }

    /// Runs the timeline; stops at the first failed command (checks are all recorded).
    pub fn run_steps(&mut self, log: &mut dyn FnMut(&str)) -> Result<(), LabError> {
        let total = self.sc.steps.len();
        for (i, (_, step)) in self.sc.steps.iter().enumerate() {
            if stopped() {
                return Err(LabError::Interrupted);
            }
            let title = describe(step);
            let r = self.step(i, step);
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
                    return Err(LabError::Step {
                        step: i + 1,
                        title,
                        msg: msg + &self.dead_daemons(),
                    });
                }
            }
        }
        Ok(())
    }

    fn record(&mut self, step: usize, what: String, errors: Vec<String>) -> Result<String, String> {
        let ok = errors.is_empty();
        self.results.push(CheckResult {
            step,
            what: what.clone(),
            ok,
            detail: errors.join("; "),
        });
        if ok {
            Ok("ok".into())
        } else {
            Ok(format!("CHECK FAILED:\n      {}", errors.join("\n      ")))
        }
    }

    fn step(&mut self, i: usize, s: &Step) -> Result<String, String> {
        let on =
            s.on.as_ref()
                .map(|o| o.get_ref().clone())
                .unwrap_or_default();
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
            return Ok(String::new());
        }
        if s.start.is_some() {
            self.start(&on)?;
            return Ok("daemon up".into());
        }
        if let Some(cmd) = &s.shell {
            let ns = self.ns_of_node(&on);
            crate::readback::sh_in(&ns, cmd)?;
            return Ok(String::new());
        }
        if let Some(g) = &s.feed {
            return self.feed(g.get_ref());
        }
        if let Some(ms) = s.wait_ms {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(ms) && !stopped() {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Ok(String::new());
        }
        if let Some(k) = &s.check {
            let errors = self.kernel_check(k);
            let what = format!(
                "{} {}: {}",
                k.on.get_ref(),
                k.netns.as_deref().unwrap_or("default"),
                k.listing.as_ref().map_or("state", |l| l.get_ref())
            );
            return self.record(i + 1, what, errors);
        }
        if let Some(p) = &s.ping {
            let (what, errors) = self.ping(p)?;
            return self.record(i + 1, what, errors);
        }
        if let Some(u) = &s.udp {
            let (what, errors) = self.udp(u, i)?;
            return self.record(i + 1, what, errors);
        }
        unreachable!("checked at load: one action per step")
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

fn describe(s: &Step) -> String {
    if let Some(t) = &s.title {
        return t.clone();
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
