//! The reconciler: observe a namespace, diff it against the desired state, apply the
//! difference in the safe order. Re-applying an unchanged state performs no operation;
//! anything changed behind ntkplane's back is found by the next observation and repaired.
//!
//! Between observations the reconciler keeps what it observed, updated by its own writes and
//! by the kernel's notifications ([`crate::kernel::events`]): the daemon's commands diff
//! against that view ([`Reconciler::apply_known`]) and its repairs look at the routes the
//! notifications named ([`Reconciler::repair`]), so neither reads the whole namespace back.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use serde::Serialize;

use super::{
    events::{Notified, Touched},
    in_netns,
    nft::{self, NftError},
    rt_tables,
    rtnl::{Rtnl, RtnlError, PROTO_NTK},
    sysctl,
};
use crate::{
    classifier::{Classifier, ClassifierConfig, ClassifierError},
    netns::{Netns, NetnsError},
    plan::{diff, Desired, KernelState, Op},
};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Rtnl(#[from] RtnlError),
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error(transparent)]
    Classifier(#[from] ClassifierError),
    #[error("sysctl {key}: {source}")]
    Sysctl {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel refused {count} of {of} operations (the others were done): {errors}")]
    Refused {
        count: usize,
        of: usize,
        errors: String,
    },
    #[error("rt_tables file {path}: {source}")]
    RtTables {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What one `apply` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Netlink, nftables and BPF-map operations, in execution order.
    pub ops: Vec<Op>,
    pub sysctls: usize,
    pub links_up: usize,
    pub attached: usize,
    pub detached: usize,
}

impl Report {
    /// Every kernel operation performed.
    pub fn total(&self) -> usize {
        self.ops.len() + self.sysctls + self.links_up + self.attached + self.detached
    }
}

/// The reconciler of one namespace. Owns that namespace's classifier.
pub struct Reconciler {
    netns: Netns,
    classifier: Classifier,
    rt_tables: Option<PathBuf>,
    /// ntkplane's objects in the namespace as last observed, kept true since by ntkplane's
    /// own successful writes and by the kernel's notifications ([`Reconciler::absorb`]).
    /// `None`: unknown, the next apply observes the namespace.
    known: Option<KernelState>,
    /// Rules in ntkplane's nft table that are not ntkplane's (seen by the last observation).
    foreign_nft: usize,
}

impl Reconciler {
    /// `rt_tables`: the file to publish table names in (None: do not publish).
    pub fn new(
        netns: Netns,
        mark_mask: u32,
        rt_tables: Option<PathBuf>,
    ) -> Result<Self, KernelError> {
        let classifier = Classifier::load(
            netns.clone(),
            ClassifierConfig {
                mark_mask,
                fast_path: fast_path_enabled(),
            },
        )?;
        Ok(Self {
            netns,
            classifier,
            rt_tables,
            known: None,
            foreign_nft: 0,
        })
    }

    /// A reconciler whose classifier is pinned under `pin_dir` (adopted if already there), so
    /// classification goes on while no process runs, and a restart does not reload it.
    pub fn pinned(
        netns: Netns,
        mark_mask: u32,
        rt_tables: Option<PathBuf>,
        pin_dir: &std::path::Path,
    ) -> Result<Self, KernelError> {
        let config = ClassifierConfig {
            mark_mask,
            fast_path: fast_path_enabled(),
        };
        let classifier = match Classifier::open_pinned(netns.clone(), config, pin_dir) {
            // Pinned with the other fast-path setting: keep it (classification never stops);
            // the new setting takes effect after a cleanup. `status` tells which one runs.
            Err(ClassifierError::FastPathMismatch { pinned, .. }) => {
                tracing::warn!(dir = %pin_dir.display(), pinned, "pinned classifier has the other fast-path setting: kept");
                Classifier::open_pinned(
                    netns.clone(),
                    ClassifierConfig {
                        fast_path: pinned,
                        ..config
                    },
                    pin_dir,
                )?
            }
            r => r?,
        };
        Ok(Self {
            netns,
            classifier,
            rt_tables,
            known: None,
            foreign_nft: 0,
        })
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// What ntkplane currently has in the namespace.
    pub fn observe(&mut self) -> Result<KernelState, KernelError> {
        let (mut k, foreign) = in_netns(&self.netns, |rt| {
            rt.block_on(async {
                let r = Rtnl::connect().await?;
                let nft = nft::observe_full()?;
                Ok::<_, KernelError>((
                    KernelState {
                        addresses: r.addresses().await?.into_iter().collect(),
                        routes: r.routes().await?.into_iter().collect(),
                        rules: r.rules().await?.into_iter().map(|(r, _)| r).collect(),
                        nat: nft.as_ref().map(|o| o.nat.clone()).unwrap_or_default(),
                        ..Default::default()
                    },
                    nft.map_or(0, |o| o.foreign),
                ))
            })
        })??;
        self.foreign_nft = foreign;
        k.marks = self
            .classifier
            .entries()?
            .into_iter()
            .map(|(mac, e)| (mac, e.mark))
            .collect();
        Ok(k)
    }

    /// Converges the namespace to `desired` after observing all of it: whatever changed
    /// behind ntkplane's back is found and repaired. Re-applying an unchanged state performs
    /// no operation.
    pub fn apply(&mut self, desired: &Desired) -> Result<Report, KernelError> {
        self.known = None;
        self.apply_known(desired)
    }

    /// Converges the namespace to `desired`, diffed against the kernel view this reconciler
    /// keeps (observed first only when there is none): a change costs what it changes, not
    /// what the namespace holds. What the kernel notified must have been absorbed
    /// ([`Reconciler::absorb`]) for changes made behind ntkplane's back to be repaired.
    pub fn apply_known(&mut self, desired: &Desired) -> Result<Report, KernelError> {
        let mut report = Report::default();
        self.converge_interfaces(desired, &mut report)?;
        let known = match self.known.take() {
            Some(k) => k,
            None => self.observe()?,
        };
        self.converge(desired, known, None, report)
    }

    /// Brings the cached kernel view up to date with notifications (nothing is written).
    pub fn absorb(&mut self, touched: &Touched) -> Result<(), KernelError> {
        if needs_observation(touched) {
            self.known = None;
        } else if let Some(mut known) = self.known.take() {
            self.absorb_into(&mut known, touched)?;
            self.known = Some(known);
        }
        Ok(())
    }

    /// Repairs what `touched` reports changed: only the routes it names are diffed (plus
    /// rules, addresses, marks and NAT, which are few). Falls back to [`Reconciler::apply`]
    /// when the notifications cannot tell (lost, links or addresses changed: the kernel
    /// flushes routes with them without notifying each).
    pub fn repair(&mut self, desired: &Desired, touched: &Touched) -> Result<Report, KernelError> {
        if needs_observation(touched) || self.known.is_none() {
            return self.apply(desired);
        }
        let mut known = self.known.take().expect("checked");
        self.absorb_into(&mut known, touched)?;
        // Most notifications are ntkplane's own writes coming back: only the keys where the
        // kernel now differs from the model go to the diff.
        let keys: Vec<(u32, crate::addr::Ipv4Prefix)> = touched
            .routes
            .keys()
            .filter(|k| known.routes.get(k) != desired.state.routes.get(k))
            .copied()
            .collect();
        self.converge(desired, known, Some(&keys), Report::default())
    }

    /// Sysctls, links up, the classifier on exactly the managed interfaces.
    fn converge_interfaces(
        &mut self,
        desired: &Desired,
        report: &mut Report,
    ) -> Result<(), KernelError> {
        let ifaces = desired.interfaces.clone();
        let (sysctls, ups) = in_netns(&self.netns, |rt| {
            rt.block_on(async {
                let mut n = 0;
                let keys = sysctl::GLOBAL
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .chain(ifaces.iter().flat_map(|d| sysctl::per_interface(d)));
                for (k, v) in keys {
                    n += sysctl::ensure(&k, v).map_err(|source| KernelError::Sysctl {
                        key: k.clone(),
                        source,
                    })? as usize;
                }
                let mut r = Rtnl::connect().await?;
                let mut ups = 0;
                for d in &ifaces {
                    if !r
                        .links()
                        .get(d.as_str())
                        .ok_or_else(|| RtnlError::NoSuchLink(d.clone()))?
                        .up
                    {
                        r.set_up(d).await?;
                        ups += 1;
                    }
                }
                Ok::<_, KernelError>((n, ups))
            })
        })??;
        report.sysctls = sysctls;
        report.links_up = ups;

        // The classifier on exactly the managed interfaces (dead links forgotten first).
        report.detached += self.classifier.prune_dead_links().len();
        let want: BTreeSet<&str> = desired.interfaces.iter().map(String::as_str).collect();
        let have: Vec<String> = self.classifier.attached().map(str::to_string).collect();
        for i in have.iter().filter(|i| !want.contains(i.as_str())) {
            self.classifier.detach(i)?;
            report.detached += 1;
        }
        for i in &want {
            if !have.iter().any(|h| h == i) {
                self.classifier.attach(i)?;
                report.attached += 1;
            }
        }
        Ok(())
    }

    /// Diffs `desired` against `known` (restricted to the route `keys` when given), performs
    /// the operations and keeps `known` as the new cached view: the operations applied to
    /// it when every one was done, unknown (observed next time) when the kernel refused one.
    fn converge(
        &mut self,
        desired: &Desired,
        mut known: KernelState,
        keys: Option<&[(u32, crate::addr::Ipv4Prefix)]>,
        mut report: Report,
    ) -> Result<Report, KernelError> {
        let mut ops = match keys {
            None => diff(&desired.state, &known),
            Some(k) => diff(&desired.state.restricted(k), &known.restricted(k)),
        };
        if self.foreign_nft > 0 && !ops.iter().any(|o| matches!(o, Op::SetNat(_))) {
            tracing::warn!(netns = ?self.netns, rules = self.foreign_nft, "foreign rules in ntkplane's nft table: rebuilding it");
            ops.push(Op::SetNat(desired.state.nat.clone()));
        }
        let active = active_tables(&desired.state);
        if self.classifier.fast_path() {
            // Before rules go: the fast path stops using a table before the stack does.
            self.sync_fast_path_tables(&active, false)?;
        }
        let executed = self.execute(&ops);
        if self.classifier.fast_path() {
            // After rules come: the fast path uses a table only once the stack would.
            self.sync_fast_path_tables(&active, true)?;
            self.classifier
                .set_excluded(&fast_path_exclusions(&desired.state))?;
        }
        if let Some(path) = &self.rt_tables {
            rt_tables::write(path, &desired.table_names).map_err(|source| {
                KernelError::RtTables {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        if executed.is_ok() {
            known.apply_ops(&ops);
            if ops.iter().any(|o| matches!(o, Op::SetNat(_))) {
                self.foreign_nft = 0; // the table was rebuilt as a whole
            }
            self.known = Some(known);
        }
        executed?;
        report.ops = ops;
        if report.total() > 0 {
            tracing::info!(netns = ?self.netns, ops = report.total(), "applied");
        }
        Ok(report)
    }

    /// Updates `known` from notifications: each notified route as the kernel announced it,
    /// rules re-read when a rule changed, the NAT table re-read when nftables changed.
    fn absorb_into(&mut self, known: &mut KernelState, t: &Touched) -> Result<(), KernelError> {
        if t.routes.is_empty() && !t.rules && !t.nft {
            return Ok(());
        }
        let (links, rules, nat) = in_netns(&self.netns, |rt| {
            rt.block_on(async {
                let r = Rtnl::connect().await?;
                let rules = if t.rules {
                    Some(r.rules().await?.into_iter().map(|(k, _)| k).collect())
                } else {
                    None
                };
                let nat = if t.nft {
                    Some(nft::observe_full()?)
                } else {
                    None
                };
                Ok::<_, KernelError>((r.links().clone(), rules, nat))
            })
        })??;
        let names: BTreeMap<u32, String> = links.into_values().map(|l| (l.index, l.name)).collect();
        for (key, n) in &t.routes {
            match n {
                Notified::Added(s) if s.protocol == PROTO_NTK => {
                    if known
                        .routes
                        .get(key)
                        .is_some_and(|r| crate::kernel::rtnl::kroute_is(s, &names, r))
                    {
                        continue; // ntkplane's own write coming back
                    }
                    match crate::kernel::rtnl::kroute_of(s, &names) {
                        Some(r) => known.routes.insert(*key, r),
                        None => known.routes.remove(key),
                    };
                }
                // Another protocol's route on the key replaced ntkplane's, or shares it:
                // ntkplane's is put (back) by the diff either way.
                Notified::Added(_) => {
                    known.routes.remove(key);
                }
                Notified::Deleted(s) if s.protocol == PROTO_NTK => {
                    known.routes.remove(key);
                }
                Notified::Deleted(_) => {}
            }
        }
        if let Some(rules) = rules {
            known.rules = rules;
        }
        if let Some(nat) = nat {
            self.foreign_nft = nat.as_ref().map_or(0, |o| o.foreign);
            known.nat = nat.map(|o| o.nat).unwrap_or_default();
        }
        Ok(())
    }

    /// Sets each classifier entry's `table` (the fast path's lookup table) to the table its
    /// mark selects when that table's `fwmark` rule is in `active`, else 0 (hand to the stack).
    /// With `raise` false only entries are lowered to 0 (before the rules change).
    fn sync_fast_path_tables(
        &mut self,
        active: &BTreeMap<u32, u32>,
        raise: bool,
    ) -> Result<(), KernelError> {
        for (mac, e) in self.classifier.entries()? {
            let want = active.get(&e.mark).copied().unwrap_or(0);
            if want != e.table && (raise || want == 0) {
                self.classifier.insert(mac, e.mark, want)?;
            }
        }
        Ok(())
    }

    /// The cheap check, for what sends no rtnetlink event: the classifier's links (alive,
    /// on the current interface) and map entries, and ntkplane's nft table (content and
    /// foreign rules). Repairs what differs; routes, rules and addresses are left to the
    /// events and the full resync ([`Reconciler::apply`]).
    pub fn check_cheap(&mut self, desired: &Desired) -> Result<Report, KernelError> {
        let mut report = Report::default();
        report.detached += self.classifier.prune_dead_links().len();
        let have: Vec<String> = self.classifier.attached().map(str::to_string).collect();
        for i in &desired.interfaces {
            if !have.contains(i) {
                self.classifier.attach(i)?;
                report.attached += 1;
            }
        }
        let nft = in_netns(&self.netns, |_| nft::observe_full())??;
        self.foreign_nft = nft.as_ref().map_or(0, |o| o.foreign);
        // Only what this check reads is compared: the marks and the NAT table.
        let wanted = KernelState {
            marks: desired.state.marks.clone(),
            nat: desired.state.nat.clone(),
            ..Default::default()
        };
        let observed = KernelState {
            nat: nft.map(|o| o.nat).unwrap_or_default(),
            marks: self
                .classifier
                .entries()?
                .into_iter()
                .map(|(mac, e)| (mac, e.mark))
                .collect(),
            ..Default::default()
        };
        let mut ops = diff(&wanted, &observed);
        if self.foreign_nft > 0 && !ops.iter().any(|o| matches!(o, Op::SetNat(_))) {
            ops.push(Op::SetNat(desired.state.nat.clone()));
        }
        let executed = self.execute(&ops);
        match (&executed, self.known.as_mut()) {
            (Ok(()), Some(k)) => {
                k.marks = wanted.marks;
                k.nat = wanted.nat;
            }
            _ => self.known = None,
        }
        executed?;
        if self.classifier.fast_path() {
            // A repaired map entry gets its lookup table back only while its rule exists.
            self.sync_fast_path_tables(&active_tables(&desired.state), true)?;
            self.classifier
                .set_excluded(&fast_path_exclusions(&desired.state))?;
        }
        report.ops = ops;
        Ok(report)
    }

    /// How many operations would bring the namespace to `desired` (0: it matches).
    pub fn drift(&mut self, desired: &Desired) -> Result<usize, KernelError> {
        let observed = self.observe()?;
        let mut n = diff(&desired.state, &observed).len() + (self.foreign_nft > 0) as usize;
        let have: Vec<String> = self.classifier.attached().map(str::to_string).collect();
        n += desired
            .interfaces
            .iter()
            .filter(|i| !have.contains(i))
            .count();
        Ok(n)
    }

    /// Performs `ops` in order. One operation the kernel refuses does not stop the others
    /// (a route whose gateway is unreachable must not keep the rest of the table out): every
    /// one is attempted, and the refused ones are returned together, each naming its object
    /// and the kernel's errno.
    ///
    /// Routes go pipelined ([`pipeline_runs`]): the kernel answers each request inside the
    /// `sendmsg` that carries it, so awaiting every ack one by one spends the time in the
    /// round trips through the runtime rather than in the kernel.
    fn execute(&mut self, ops: &[Op]) -> Result<(), KernelError> {
        use futures::StreamExt;
        let netns = self.netns.clone();
        let classifier = &mut self.classifier;
        let failed = in_netns(&netns, |rt| {
            rt.block_on(async {
                let r = Rtnl::connect().await?;
                let mut rules: Option<Vec<_>> = None;
                let mut failed: Vec<String> = Vec::new();
                for run in pipeline_runs(ops) {
                    if run.len() > 1 {
                        let r = &r;
                        let refused: Vec<String> = futures::stream::iter(run)
                            .map(|op| async move { (op, write_route(r, op).await) })
                            .buffer_unordered(PIPELINE)
                            .filter_map(|(op, res)| async move {
                                res.err().map(|e| {
                                    tracing::warn!(?op, "the kernel refused: {e}");
                                    e.to_string()
                                })
                            })
                            .collect()
                            .await;
                        failed.extend(refused);
                        continue;
                    }
                    let op = &run[0];
                    tracing::debug!(?op, "apply");
                    let done: Result<(), KernelError> = async {
                        match op {
                            Op::AddAddress { dev, addr } => r.add_address(dev, *addr).await?,
                            Op::DelAddress { dev, addr } => r.del_address(dev, *addr).await?,
                            Op::ReplaceRoute { .. } | Op::DelRoute { .. } => {
                                write_route(&r, op).await?
                            }
                            Op::AddRule(rule) => r.add_rule(rule).await?,
                            Op::DelRule(rule) => {
                                if rules.is_none() {
                                    rules = Some(r.rules().await?);
                                }
                                let msg = rules
                                    .as_ref()
                                    .unwrap()
                                    .iter()
                                    .find(|(k, _)| k == rule)
                                    .map(|(_, m)| m.clone());
                                if let Some(m) = msg {
                                    r.del_rule(m).await?;
                                }
                            }
                            Op::SetMark { mac, mark } => {
                                // The fast path's table is set once the rule exists (see
                                // apply).
                                let table = if classifier.fast_path() { 0 } else { *mark };
                                classifier.insert(*mac, *mark, table)?
                            }
                            Op::DelMark { mac } => {
                                classifier.remove(*mac)?;
                            }
                            Op::SetNat(nat) => {
                                let how = nft::apply(nat)?;
                                tracing::debug!(?how, "nat applied");
                            }
                        }
                        Ok(())
                    }
                    .await;
                    if let Err(e) = done {
                        tracing::warn!(?op, "the kernel refused: {e}");
                        failed.push(e.to_string());
                    }
                }
                Ok::<_, KernelError>(failed)
            })
        })??;
        if failed.is_empty() {
            Ok(())
        } else {
            Err(KernelError::Refused {
                count: failed.len(),
                of: ops.len(),
                errors: failed.join("; "),
            })
        }
    }

    /// Removes everything ntkplane installed in the namespace: routes, rules, addresses,
    /// NAT table, classifier entries and attachments, the rt_tables file.
    /// Both steps are attempted even when the first fails; the first error is returned.
    pub fn cleanup(&mut self) -> Result<Report, KernelError> {
        let empty = Desired::default();
        let report = self.apply(&empty);
        let unpinned = self.classifier.unpin();
        self.known = None;
        let report = report?;
        unpinned?;
        Ok(report)
    }
}

/// Whether notifications leave the cached view unknowable: lost ones, or link and address
/// changes (with which the kernel flushes routes without a notification per route).
fn needs_observation(t: &Touched) -> bool {
    t.lost || t.links || t.addresses
}

/// Route requests in flight at once on one netlink socket (measured: see BENCHMARKS.md).
const PIPELINE: usize = 256;

/// `ops` cut into the runs [`Reconciler::execute`] performs one after the other: a run of
/// more than one operation is route writes that may be in flight together, the others are
/// single operations. Routes of table `main` never share a run with routes of other tables:
/// a `via` needs its gateway's direct route acknowledged first (diff.rs, order 2), and a
/// direct route goes only once nothing uses it (order 7). Within a run every key is
/// distinct (a diff names each (table, prefix) once), so the order inside it is free.
fn pipeline_runs(ops: &[Op]) -> Vec<&[Op]> {
    let class = |o: &Op| match o {
        Op::ReplaceRoute { table, .. } | Op::DelRoute { table, .. } => {
            Some(*table == crate::plan::MAIN_TABLE)
        }
        _ => None,
    };
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=ops.len() {
        let cut =
            i == ops.len() || class(&ops[i]).is_none() || class(&ops[i]) != class(&ops[start]);
        if cut {
            runs.push(&ops[start..i]);
            start = i;
        }
    }
    runs
}

/// One route write of a run (see [`pipeline_runs`]).
async fn write_route(r: &Rtnl, op: &Op) -> Result<(), RtnlError> {
    match op {
        Op::ReplaceRoute {
            table,
            prefix,
            route,
        } => r.replace_route(*table, *prefix, route).await,
        Op::DelRoute { table, prefix } => r.del_route(*table, *prefix).await,
        other => unreachable!("not a route write: {other:?}"),
    }
}

/// Whether new classifiers load the fast path (set once at daemon start, see
/// [`set_fast_path`]). Off unless set.
static FAST_PATH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Why the fast path is off (for `status`), when it is.
static FAST_PATH_OFF: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Chooses, for the classifiers loaded from now on, `fastpath` (true) or `classify`;
/// `why_off` is what `status` says when it is off.
pub fn set_fast_path(on: bool, why_off: &str) {
    FAST_PATH.store(on, std::sync::atomic::Ordering::Relaxed);
    *FAST_PATH_OFF.lock().unwrap_or_else(|e| e.into_inner()) = why_off.to_string();
}

/// `status`'s fast-path line from what the namespaces' classifiers run.
pub fn fast_path_status(running: impl Iterator<Item = bool>) -> String {
    let running: Vec<bool> = running.collect();
    let why = FAST_PATH_OFF
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let wanted = fast_path_enabled();
    let on = running.iter().filter(|r| **r).count();
    match (wanted, on) {
        (true, n) if n == running.len() => "on".into(),
        (false, 0) => format!("off ({why})"),
        (_, n) => format!(
            "{} ({n} of {} namespaces run it: pinned classifiers keep their setting until a cleanup)",
            if wanted { "on" } else { "off" },
            running.len()
        ),
    }
}

/// `show-tables`' per-outcome fast-path counters of `mac`, when the fast path runs.
pub fn fast_path_row(c: &Classifier, mac: crate::mac::MacAddr) -> Option<BTreeMap<String, u64>> {
    let f = c.fast_path_counters(mac).ok().flatten()?;
    Some(
        ntkplane_common::fp::NAMES
            .iter()
            .zip(f.packets)
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
    )
}

pub fn fast_path_enabled() -> bool {
    FAST_PATH.load(std::sync::atomic::Ordering::Relaxed)
}

/// Mark → table of every `fwmark` rule of `state` (the tables the stack looks up by mark).
fn active_tables(state: &KernelState) -> BTreeMap<u32, u32> {
    state
        .rules
        .iter()
        .filter_map(|r| r.fwmark.map(|(mark, _)| (mark, r.table)))
        .collect()
}

/// What the fast path must hand to the stack in this namespace: the NAT-covered ranges and
/// the namespace's own addresses.
pub fn fast_path_exclusions(state: &KernelState) -> BTreeMap<(std::net::Ipv4Addr, u8), u32> {
    use ntkplane_common::{EXCLUDE_LOCAL, EXCLUDE_NAT};
    let mut out: BTreeMap<(std::net::Ipv4Addr, u8), u32> = state
        .nat
        .fast_path_exclusions()
        .into_iter()
        .map(|p| ((p.addr(), p.prefix_len()), EXCLUDE_NAT))
        .collect();
    for (_, a) in &state.addresses {
        out.entry((*a, 32)).or_insert(EXCLUDE_LOCAL);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{KRoute, KRule, MAIN_TABLE};

    fn route(table: u32, p: &str) -> Op {
        Op::ReplaceRoute {
            table,
            prefix: p.parse().unwrap(),
            route: KRoute::Unreachable,
        }
    }
    fn del(table: u32, p: &str) -> Op {
        Op::DelRoute {
            table,
            prefix: p.parse().unwrap(),
        }
    }
    fn rule() -> Op {
        Op::AddRule(KRule {
            priority: 1,
            fwmark: None,
            table: 250,
        })
    }

    #[test]
    fn no_ops_no_runs() {
        assert!(pipeline_runs(&[]).is_empty());
    }

    #[test]
    fn routes_of_other_tables_share_a_run_with_their_stale_deletes() {
        let ops = [
            route(250, "10.0.0.0/24"),
            route(251, "10.0.1.0/24"),
            del(250, "10.0.2.0/24"),
        ];
        assert_eq!(pipeline_runs(&ops), vec![&ops[..]]);
    }

    #[test]
    fn main_routes_are_acknowledged_before_the_vias_that_use_them() {
        let ops = [
            route(MAIN_TABLE, "169.254.0.1/32"),
            route(MAIN_TABLE, "169.254.0.2/32"),
            route(250, "10.0.0.0/24"),
            del(MAIN_TABLE, "169.254.0.3/32"),
        ];
        let runs = pipeline_runs(&ops);
        assert_eq!(runs, vec![&ops[0..2], &ops[2..3], &ops[3..4]]);
    }

    #[test]
    fn every_other_operation_is_a_run_of_its_own_in_order() {
        let ops = [
            route(250, "10.0.0.0/24"),
            rule(),
            rule(),
            route(250, "10.0.1.0/24"),
            route(250, "10.0.2.0/24"),
        ];
        let runs = pipeline_runs(&ops);
        assert_eq!(runs, vec![&ops[0..1], &ops[1..2], &ops[2..3], &ops[3..5]]);
        let flat: Vec<&Op> = runs.iter().flat_map(|r| r.iter()).collect();
        assert_eq!(
            flat,
            ops.iter().collect::<Vec<_>>(),
            "nothing reordered or lost"
        );
    }
}
