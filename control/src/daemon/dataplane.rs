//! The one seam between the daemon and the kernel: what the daemon asks of a system's
//! dataplane (provision and remove identity namespaces, converge a namespace to its desired
//! content, check it, observe it, clean it up), implemented over rtnetlink + nft + aya
//! ([`RealDataplane`]) and, for tests, in memory ([`FakeDataplane`]), so that the daemon's
//! ordering (new namespaces first, the M5 pause, E13 dismissal) and its failure paths are
//! unit-tested without root.
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use super::{DaemonError, Paths};
use crate::{
    kernel::{
        events::Touched,
        in_netns,
        rtnl::{Rtnl, RtnlError},
        KernelError, Reconciler, Report,
    },
    mac::MacAddr,
    netns::{Netns, NetnsError},
    plan::{Desired, KernelState},
    system::Handled,
};

/// A namespace of the system: `None` the system's own, `Some(label)` an identity's.
pub type Ns = Option<String>;

pub trait Dataplane {
    /// The namespaces open (with a reconciler), in order.
    fn open_namespaces(&self) -> Vec<Ns>;
    /// Creates an identity namespace with its pseudo-interfaces `handled` if needed (not for
    /// the system's), and opens it.
    fn provision(&mut self, ns: &Ns, handled: &[Handled]) -> Result<(), DaemonError>;
    /// Converges an open namespace to `desired` (diffed against the kernel view the
    /// dataplane keeps: what the namespace holds is observed only when that view is unknown).
    fn apply(&mut self, ns: &Ns, desired: &Desired) -> Result<Report, KernelError>;
    /// [`Dataplane::apply`] after a full observation of the namespace (start, periodic
    /// resync).
    fn resync(&mut self, ns: &Ns, desired: &Desired) -> Result<Report, KernelError> {
        self.apply(ns, desired)
    }
    /// Brings the kernel view of `ns` up to date with the kernel's notifications.
    fn absorb(&mut self, _ns: &Ns, _touched: &Touched) -> Result<(), KernelError> {
        Ok(())
    }
    /// Repairs what the notifications `touched` report changed in `ns`.
    fn repair(
        &mut self,
        ns: &Ns,
        desired: &Desired,
        _touched: &Touched,
    ) -> Result<Report, KernelError> {
        self.apply(ns, desired)
    }
    /// The cheap check of what sends no event (nft table, classifier links and entries).
    fn check_cheap(&mut self, ns: &Ns, desired: &Desired) -> Result<Report, KernelError>;
    /// How many operations would bring the namespace to `desired`.
    fn drift(&mut self, ns: &Ns, desired: &Desired) -> Result<usize, KernelError>;
    /// What ntkplane has in the namespace now.
    fn observe(&mut self, ns: &Ns) -> Option<KernelState>;
    /// Packets the classifier counted from `mac` in the namespace.
    fn packets(&self, ns: &Ns, mac: MacAddr) -> Option<u64>;
    /// The fast path's per-outcome counters for `mac` (`None` where it does not run).
    fn fast_path_counters(
        &self,
        ns: &Ns,
        mac: MacAddr,
    ) -> Option<std::collections::BTreeMap<String, u64>>;
    /// Per open namespace: whether its classifier runs the fast path.
    fn fast_path_running(&self) -> Vec<bool>;
    /// The classifier's counters in the namespace, for `/metrics` (`None`: no classifier).
    fn classifier_counters(&self, _ns: &Ns) -> Option<super::metrics::ClassifierCounters> {
        None
    }
    /// How many of ntkplane's routes each table of the namespace holds, for `/metrics`
    /// (`None`: it could not be read).
    fn route_counts(&mut self, ns: &Ns) -> Option<BTreeMap<u32, usize>> {
        let k = self.observe(ns)?;
        let mut out = BTreeMap::new();
        for (table, _) in k.routes.keys() {
            *out.entry(*table).or_insert(0) += 1;
        }
        Some(out)
    }
    /// Removes an identity namespace: ntkplane's objects, pseudo-interfaces, the namespace.
    fn remove_namespace(&mut self, label: &str) -> Result<(), DaemonError>;
    /// Removes ntkplane's objects from an open namespace and closes it.
    fn close(&mut self, ns: &Ns) -> Result<(), KernelError>;
    /// Identity namespaces of this instance that exist, open or not.
    fn existing_namespaces(&self) -> Vec<String>;
    /// M5: lets the neighbours move their routes.
    fn pause(&mut self, d: Duration);
    /// The kernel namespace of `ns` (for the watchers; `None`: nothing to watch).
    fn netns(&self, ns: &Ns) -> Option<Netns>;
}

/// The dataplane of the real kernel.
pub struct RealDataplane {
    paths: Paths,
    system_netns: Netns,
    mark_mask: u32,
    reconcilers: BTreeMap<Ns, Reconciler>,
}

impl RealDataplane {
    pub fn new(paths: Paths, system_netns: Netns, mark_mask: u32) -> Self {
        RealDataplane {
            paths,
            system_netns,
            mark_mask,
            reconcilers: BTreeMap::new(),
        }
    }

    fn name(&self, label: &str) -> String {
        format!("{}-{}", self.paths.instance, label)
    }

    fn netns_of(&self, ns: &Ns) -> Netns {
        match ns {
            None => self.system_netns.clone(),
            Some(label) => Netns::named(self.name(label)),
        }
    }

    fn open(&mut self, ns: &Ns) -> Result<(), KernelError> {
        if self.reconcilers.contains_key(ns) {
            return Ok(());
        }
        let rt: Option<PathBuf> = if ns.is_none() {
            self.paths.rt_tables()
        } else {
            None
        };
        let r = Reconciler::pinned(self.netns_of(ns), self.mark_mask, rt, &self.paths.pins(ns))?;
        self.reconcilers.insert(ns.clone(), r);
        Ok(())
    }

    fn get(&mut self, ns: &Ns) -> Result<&mut Reconciler, KernelError> {
        self.open(ns)?;
        Ok(self.reconcilers.get_mut(ns).expect("opened"))
    }

    /// Creates (or finds) an identity namespace and its pseudo-interfaces: macvlans on the
    /// real NICs of the system namespace, born inside the identity's (identities.md §3.1;
    /// sysctls, up and link-locals follow from the reconciler).
    fn ensure_identity_netns(&self, label: &str, handled: &[Handled]) -> Result<(), DaemonError> {
        let name = self.name(label);
        let ns = match Netns::create(&name) {
            Ok(ns) => ns,
            Err(NetnsError::Exists(_)) => Netns::named(&name),
            Err(e) => return Err(KernelError::from(e).into()),
        };
        let have = in_netns(&ns, |rt| {
            rt.block_on(async { Ok::<_, RtnlError>(Rtnl::connect().await?.links().clone()) })
        })
        .map_err(KernelError::from)?
        .map_err(KernelError::from)?;
        let missing: Vec<Handled> = handled
            .iter()
            .filter(|h| !have.contains_key(&h.dev))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let target = ns.open().map_err(KernelError::from)?;
        in_netns(&self.system_netns, |rt| {
            rt.block_on(async {
                let r = Rtnl::connect().await?;
                for h in &missing {
                    r.add_macvlan(&h.dev, &h.nic, Some(h.mac), &target).await?;
                }
                Ok::<_, RtnlError>(())
            })
        })
        .map_err(KernelError::from)?
        .map_err(KernelError::from)?;
        tracing::info!(
            netns = name,
            links = missing.len(),
            "identity namespace ready"
        );
        Ok(())
    }
}

impl Dataplane for RealDataplane {
    fn open_namespaces(&self) -> Vec<Ns> {
        self.reconcilers.keys().cloned().collect()
    }

    fn provision(&mut self, ns: &Ns, handled: &[Handled]) -> Result<(), DaemonError> {
        if let Some(label) = ns {
            self.ensure_identity_netns(label, handled)?;
        }
        Ok(self.open(ns)?)
    }

    fn apply(&mut self, ns: &Ns, desired: &Desired) -> Result<Report, KernelError> {
        self.get(ns)?.apply_known(desired)
    }

    fn resync(&mut self, ns: &Ns, desired: &Desired) -> Result<Report, KernelError> {
        self.get(ns)?.apply(desired)
    }

    fn absorb(&mut self, ns: &Ns, touched: &Touched) -> Result<(), KernelError> {
        match self.reconcilers.get_mut(ns) {
            Some(r) => r.absorb(touched),
            None => Ok(()),
        }
    }

    fn repair(
        &mut self,
        ns: &Ns,
        desired: &Desired,
        touched: &Touched,
    ) -> Result<Report, KernelError> {
        self.get(ns)?.repair(desired, touched)
    }

    fn check_cheap(&mut self, ns: &Ns, desired: &Desired) -> Result<Report, KernelError> {
        self.get(ns)?.check_cheap(desired)
    }

    fn drift(&mut self, ns: &Ns, desired: &Desired) -> Result<usize, KernelError> {
        self.get(ns)?.drift(desired)
    }

    fn observe(&mut self, ns: &Ns) -> Option<KernelState> {
        self.reconcilers.get_mut(ns)?.observe().ok()
    }

    fn packets(&self, ns: &Ns, mac: MacAddr) -> Option<u64> {
        let r = self.reconcilers.get(ns)?;
        r.classifier()
            .counters(mac)
            .ok()
            .flatten()
            .map(|c| c.packets)
    }

    fn fast_path_counters(
        &self,
        ns: &Ns,
        mac: MacAddr,
    ) -> Option<std::collections::BTreeMap<String, u64>> {
        crate::kernel::reconcile::fast_path_row(self.reconcilers.get(ns)?.classifier(), mac)
    }

    fn fast_path_running(&self) -> Vec<bool> {
        self.reconcilers
            .values()
            .map(|r| r.classifier().fast_path())
            .collect()
    }

    /// One rtnetlink dump (no `nft` process, no map read): a scrape must be cheap.
    fn route_counts(&mut self, ns: &Ns) -> Option<BTreeMap<u32, usize>> {
        if !self.reconcilers.contains_key(ns) {
            return None;
        }
        let routes = in_netns(&self.netns_of(ns), |rt| {
            rt.block_on(async { Rtnl::connect().await?.routes().await })
        })
        .ok()?
        .ok()?;
        let mut out = BTreeMap::new();
        for ((table, _), _) in routes {
            *out.entry(table).or_insert(0) += 1;
        }
        Some(out)
    }

    fn classifier_counters(&self, ns: &Ns) -> Option<super::metrics::ClassifierCounters> {
        let c = self.reconcilers.get(ns)?.classifier();
        // The mark is the table id (docs/DESIGN.md, spaces); the entry's `table` is 0 while
        // the table's rule is not installed, so it would not name the table.
        let neighbours = c
            .entries()
            .ok()?
            .into_iter()
            .map(|(mac, e)| {
                let n = c.counters(mac).ok().flatten().unwrap_or_default();
                super::metrics::NeighbourCounters {
                    mac: mac.to_string(),
                    table: e.mark,
                    packets: n.packets,
                    bytes: n.bytes,
                    fast_path: crate::kernel::reconcile::fast_path_row(c, mac).unwrap_or_default(),
                }
            })
            .collect();
        Some(super::metrics::ClassifierCounters {
            neighbours,
            misses: c.misses().map_or(0, |m| m.packets),
            ignored: c.ignored().map_or(0, |m| m.packets),
        })
    }

    /// Removes an identity namespace: ntkplane's objects (and pins), its pseudo-interfaces,
    /// the namespace (identities.md §3.2).
    fn remove_namespace(&mut self, label: &str) -> Result<(), DaemonError> {
        let ns = Some(label.to_string());
        let name = self.name(label);
        let mut r = match self.reconcilers.remove(&ns) {
            Some(r) => r,
            None => Reconciler::pinned(
                Netns::named(&name),
                self.mark_mask,
                None,
                &self.paths.pins(&ns),
            )?,
        };
        r.cleanup()?;
        drop(r);
        in_netns(&Netns::named(&name), |rt| {
            rt.block_on(async {
                let r = Rtnl::connect().await?;
                let macvlans: Vec<String> = r
                    .links()
                    .keys()
                    .filter(|n| n.starts_with(&format!("{label}_")))
                    .cloned()
                    .collect();
                for l in macvlans {
                    r.del_link(&l).await?;
                }
                Ok::<_, RtnlError>(())
            })
        })
        .map_err(KernelError::from)?
        .map_err(KernelError::from)?;
        Netns::delete(&name).map_err(KernelError::from)?;
        let _ = std::fs::remove_dir(self.paths.pins(&ns));
        tracing::info!(netns = name, "identity namespace removed");
        Ok(())
    }

    fn close(&mut self, ns: &Ns) -> Result<(), KernelError> {
        match self.reconcilers.remove(ns) {
            Some(mut r) => r.cleanup().map(|_| ()),
            None => Ok(()),
        }
    }

    fn existing_namespaces(&self) -> Vec<String> {
        let prefix = format!("{}-", self.paths.instance);
        std::fs::read_dir(crate::netns::NETNS_RUN_DIR)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| n.strip_prefix(&prefix).map(str::to_string))
            .filter(|l| {
                (l.starts_with("entr") || l.starts_with("migr"))
                    && l[4..].chars().all(|c| c.is_ascii_digit())
            })
            .collect()
    }

    fn pause(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn netns(&self, ns: &Ns) -> Option<Netns> {
        Some(self.netns_of(ns))
    }
}

/// An in-memory dataplane: every call is recorded in `log` (shared with the test), `apply`
/// makes the namespace hold the desired state and reports the operations it took (the
/// real diff against what was held), and `refuse` makes the applies of one namespace fail.
#[derive(Debug, Default)]
pub struct FakeDataplane {
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub refuse: std::sync::Arc<std::sync::Mutex<Option<Ns>>>,
    /// What each open namespace holds (shared: a test changes it "behind the daemon's back").
    pub held: std::sync::Arc<std::sync::Mutex<BTreeMap<Ns, KernelState>>>,
    pub existing: Vec<String>,
}

impl FakeDataplane {
    fn note(&self, e: String) {
        self.log.lock().unwrap().push(e);
    }
}

fn label(ns: &Ns) -> String {
    ns.clone().unwrap_or_else(|| "default".into())
}

impl Dataplane for FakeDataplane {
    fn open_namespaces(&self) -> Vec<Ns> {
        self.held.lock().unwrap().keys().cloned().collect()
    }
    fn provision(&mut self, ns: &Ns, _: &[Handled]) -> Result<(), DaemonError> {
        self.note(format!("provision {}", label(ns)));
        if let Some(l) = ns {
            if !self.existing.contains(l) {
                self.existing.push(l.clone());
            }
        }
        self.held.lock().unwrap().entry(ns.clone()).or_default();
        Ok(())
    }
    fn apply(&mut self, ns: &Ns, desired: &Desired) -> Result<Report, KernelError> {
        self.note(format!("apply {}", label(ns)));
        if self.refuse.lock().unwrap().as_ref() == Some(ns) {
            return Err(KernelError::Refused {
                count: 1,
                of: 1,
                errors: "refused by the fake".into(),
            });
        }
        let mut held = self.held.lock().unwrap();
        let have = held.entry(ns.clone()).or_default();
        let ops = crate::plan::diff(&desired.state, have);
        *have = desired.state.clone();
        Ok(Report {
            ops,
            ..Default::default()
        })
    }
    fn check_cheap(&mut self, _: &Ns, _: &Desired) -> Result<Report, KernelError> {
        Ok(Report::default())
    }
    fn drift(&mut self, ns: &Ns, desired: &Desired) -> Result<usize, KernelError> {
        Ok(match self.held.lock().unwrap().get(ns) {
            Some(have) => crate::plan::diff(&desired.state, have).len(),
            None => 1,
        })
    }
    fn observe(&mut self, ns: &Ns) -> Option<KernelState> {
        self.held.lock().unwrap().get(ns).cloned()
    }
    fn packets(&self, _: &Ns, _: MacAddr) -> Option<u64> {
        None
    }
    fn fast_path_counters(
        &self,
        _: &Ns,
        _: MacAddr,
    ) -> Option<std::collections::BTreeMap<String, u64>> {
        None
    }
    fn fast_path_running(&self) -> Vec<bool> {
        Vec::new()
    }
    fn remove_namespace(&mut self, l: &str) -> Result<(), DaemonError> {
        self.note(format!("remove {l}"));
        self.held.lock().unwrap().remove(&Some(l.to_string()));
        self.existing.retain(|e| e != l);
        Ok(())
    }
    fn close(&mut self, ns: &Ns) -> Result<(), KernelError> {
        self.note(format!("close {}", label(ns)));
        self.held.lock().unwrap().remove(ns);
        Ok(())
    }
    fn existing_namespaces(&self) -> Vec<String> {
        self.existing.clone()
    }
    fn pause(&mut self, d: Duration) {
        self.note(format!("pause {}ms", d.as_millis()));
    }
    fn netns(&self, _: &Ns) -> Option<Netns> {
        None
    }
}
