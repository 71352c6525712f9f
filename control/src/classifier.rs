//! User-space side of the `classify` eBPF program: load it (once per network namespace),
//! attach it to interfaces (TCX ingress), keep its MAC → mark map, read its counters.
//!
//! This is the only module that talks to the classifier's BPF objects.
use std::collections::BTreeMap;

use aya::{
    maps::{HashMap, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::{tc::SchedClassifierLinkId, ProgramError, SchedClassifier, TcAttachType},
    Ebpf, EbpfError, EbpfLoader,
};
use ntkplane_common::{
    Counters, MacKey, NeighbourEntry, CLASSIFY_PROG, FIRST_NEIGHBOUR_SLOT, MARK_MASK_GLOBAL,
    NEIGHBOURS_MAP, SLOT_IGNORED, SLOT_MISS, STATS_MAP, STATS_SLOTS,
};

use crate::{
    mac::MacAddr,
    netns::{Netns, NetnsError},
};

/// The eBPF object built by `cargo xtask build-ebpf`, embedded at build time (empty when it
/// was not built; see `build.rs`).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ntkplane.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error("this ntkplane binary was built without its eBPF object: run `cargo xtask build-ebpf`, then rebuild")]
    ObjectMissing,
    #[error("cannot load the eBPF object: {0}")]
    Object(#[source] EbpfError),
    /// Carries the verifier log in its message (aya's `ProgramError::LoadError`).
    #[error("cannot load program 'classify': {0}")]
    Load(#[source] ProgramError),
    #[error("the eBPF object lacks '{0}'")]
    Missing(&'static str),
    #[error("map '{name}': {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot attach 'classify' to interface '{iface}': {source}")]
    Attach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("cannot detach 'classify' from interface '{iface}': {source}")]
    Detach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("'classify' is not attached to interface '{0}'")]
    NotAttached(String),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("MAC {0} is a group (broadcast/multicast) or zero address and can never be a frame's source")]
    GroupMac(MacAddr),
    #[error("mark {mark:#x} has bits outside the mark mask {mask:#x}")]
    MarkOutsideMask { mark: u32, mask: u32 },
    #[error("mark 0 cannot select a table")]
    ZeroMark,
    #[error("neighbour map is full ({0} entries)")]
    Full(u32),
    #[error("cannot read the number of possible CPUs: {0}")]
    Cpus(String),
}

/// Load-time settings.
#[derive(Debug, Clone, Copy)]
pub struct ClassifierConfig {
    /// Bits of `skb->mark` the classifier may change; the others are preserved.
    pub mark_mask: u32,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            mark_mask: u32::MAX,
        }
    }
}

/// One loaded `classify` program with its maps, in one network namespace.
pub struct Classifier {
    ebpf: Ebpf,
    neighbours: HashMap<MapData, MacKey, NeighbourEntry>,
    stats: PerCpuArray<MapData, Counters>,
    mark_mask: u32,
    /// Attached interfaces (by name, in the namespace `netns`).
    links: BTreeMap<String, SchedClassifierLinkId>,
    netns: Netns,
    free_slots: Vec<u32>,
    next_slot: u32,
    nr_cpus: usize,
}

impl Classifier {
    /// Loads the program (verifier included) for use in `netns`. The program and its maps
    /// exist independently of any namespace; the namespace matters only for attaching.
    pub fn load(netns: Netns, config: ClassifierConfig) -> Result<Self, ClassifierError> {
        if EBPF_OBJECT.is_empty() {
            return Err(ClassifierError::ObjectMissing);
        }
        let mut ebpf = EbpfLoader::new()
            .override_global(MARK_MASK_GLOBAL, &config.mark_mask, true)
            .load(EBPF_OBJECT)
            .map_err(ClassifierError::Object)?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(CLASSIFY_PROG)
            .ok_or(ClassifierError::Missing(CLASSIFY_PROG))?
            .try_into()
            .map_err(ClassifierError::Load)?;
        prog.load().map_err(ClassifierError::Load)?;
        let neighbours = HashMap::try_from(
            ebpf.take_map(NEIGHBOURS_MAP)
                .ok_or(ClassifierError::Missing(NEIGHBOURS_MAP))?,
        )
        .map_err(|source| ClassifierError::Map {
            name: NEIGHBOURS_MAP,
            source,
        })?;
        let stats = PerCpuArray::try_from(
            ebpf.take_map(STATS_MAP)
                .ok_or(ClassifierError::Missing(STATS_MAP))?,
        )
        .map_err(|source| ClassifierError::Map {
            name: STATS_MAP,
            source,
        })?;
        let nr_cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| ClassifierError::Cpus(format!("{what}: {e}")))?;
        tracing::debug!(netns = ?netns, mask = format_args!("{:#x}", config.mark_mask), "classifier loaded");
        Ok(Self {
            ebpf,
            neighbours,
            stats,
            mark_mask: config.mark_mask,
            links: BTreeMap::new(),
            netns,
            free_slots: Vec::new(),
            next_slot: FIRST_NEIGHBOUR_SLOT,
            nr_cpus,
        })
    }

    pub fn mark_mask(&self) -> u32 {
        self.mark_mask
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The loaded program, for `BPF_PROG_TEST_RUN` and inspection.
    pub fn program(&self) -> &SchedClassifier {
        self.ebpf
            .program(CLASSIFY_PROG)
            .expect("checked at load")
            .try_into()
            .expect("checked at load")
    }

    fn program_mut(&mut self) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(CLASSIFY_PROG)
            .expect("checked at load")
            .try_into()
            .expect("checked at load")
    }

    /// Attaches to `iface` (a name inside this classifier's namespace) at TC ingress. On
    /// kernels ≥ 6.6 this is a TCX link, appended after the programs already there; the
    /// classifier returns `TCX_NEXT`, so they keep running. Attaching twice is a no-op.
    pub fn attach(&mut self, iface: &str) -> Result<(), ClassifierError> {
        if self.links.contains_key(iface) {
            return Ok(());
        }
        let netns = self.netns.clone();
        let prog = self.program_mut();
        let id = netns
            .run(|| prog.attach(iface, TcAttachType::Ingress))?
            .map_err(|source| ClassifierError::Attach {
                iface: iface.to_string(),
                source,
            })?;
        tracing::info!(iface, netns = ?netns, "classifier attached (tc ingress)");
        self.links.insert(iface.to_string(), id);
        Ok(())
    }

    /// Detaches from `iface`.
    pub fn detach(&mut self, iface: &str) -> Result<(), ClassifierError> {
        let id = self
            .links
            .remove(iface)
            .ok_or_else(|| ClassifierError::NotAttached(iface.to_string()))?;
        self.program_mut()
            .detach(id)
            .map_err(|source| ClassifierError::Detach {
                iface: iface.to_string(),
                source,
            })?;
        tracing::info!(iface, "classifier detached");
        Ok(())
    }

    pub fn attached(&self) -> impl Iterator<Item = &str> {
        self.links.keys().map(String::as_str)
    }

    /// Inserts or updates the entry for `mac`. Its counters restart from zero when the MAC
    /// is new and keep counting when only the mark changes.
    pub fn insert(&mut self, mac: MacAddr, mark: u32, table: u32) -> Result<(), ClassifierError> {
        if mac.is_group() || mac.is_zero() {
            return Err(ClassifierError::GroupMac(mac));
        }
        if mark == 0 {
            return Err(ClassifierError::ZeroMark);
        }
        if mark & !self.mark_mask != 0 {
            return Err(ClassifierError::MarkOutsideMask {
                mark,
                mask: self.mark_mask,
            });
        }
        let key = MacKey::new(mac.0);
        let slot = match self.neighbours.get(&key, 0) {
            Ok(existing) => existing.slot,
            Err(MapError::KeyNotFound) => {
                let slot = self.alloc_slot()?;
                // Zero the slot before the entry that points at it becomes visible.
                let zeros = PerCpuValues::try_from(vec![Counters::default(); self.nr_cpus])
                    .map_err(|e| ClassifierError::Map {
                        name: STATS_MAP,
                        source: MapError::IoError(e),
                    })?;
                self.stats
                    .set(slot, zeros, 0)
                    .map_err(|source| ClassifierError::Map {
                        name: STATS_MAP,
                        source,
                    })?;
                slot
            }
            Err(source) => {
                return Err(ClassifierError::Map {
                    name: NEIGHBOURS_MAP,
                    source,
                })
            }
        };
        let entry = NeighbourEntry {
            mark,
            table,
            slot,
            _pad: 0,
        };
        self.neighbours
            .insert(key, entry, 0)
            .map_err(|source| ClassifierError::Map {
                name: NEIGHBOURS_MAP,
                source,
            })?;
        tracing::debug!(%mac, mark, table, slot, "classifier entry set");
        Ok(())
    }

    /// Removes the entry for `mac`; returns whether there was one.
    pub fn remove(&mut self, mac: MacAddr) -> Result<bool, ClassifierError> {
        let key = MacKey::new(mac.0);
        let slot = match self.neighbours.get(&key, 0) {
            Ok(e) => e.slot,
            Err(MapError::KeyNotFound) => return Ok(false),
            Err(source) => {
                return Err(ClassifierError::Map {
                    name: NEIGHBOURS_MAP,
                    source,
                })
            }
        };
        self.neighbours
            .remove(&key)
            .map_err(|source| ClassifierError::Map {
                name: NEIGHBOURS_MAP,
                source,
            })?;
        self.free_slots.push(slot);
        tracing::debug!(%mac, "classifier entry removed");
        Ok(true)
    }

    /// Every entry of the map, sorted by MAC.
    pub fn entries(&self) -> Result<Vec<(MacAddr, NeighbourEntry)>, ClassifierError> {
        let mut out = Vec::new();
        for item in self.neighbours.iter() {
            let (k, v) = item.map_err(|source| ClassifierError::Map {
                name: NEIGHBOURS_MAP,
                source,
            })?;
            out.push((MacAddr(k.addr), v));
        }
        out.sort_by_key(|(m, _)| *m);
        Ok(out)
    }

    /// Packets and bytes classified for `mac` (summed over CPUs), if it has an entry.
    pub fn counters(&self, mac: MacAddr) -> Result<Option<Counters>, ClassifierError> {
        match self.neighbours.get(&MacKey::new(mac.0), 0) {
            Ok(e) => self.slot_counters(e.slot).map(Some),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(ClassifierError::Map {
                name: NEIGHBOURS_MAP,
                source,
            }),
        }
    }

    /// IPv4 frames whose source MAC had no entry.
    pub fn misses(&self) -> Result<Counters, ClassifierError> {
        self.slot_counters(SLOT_MISS)
    }

    /// Frames not looked at (not IPv4, too short, group source MAC).
    pub fn ignored(&self) -> Result<Counters, ClassifierError> {
        self.slot_counters(SLOT_IGNORED)
    }

    fn slot_counters(&self, slot: u32) -> Result<Counters, ClassifierError> {
        let per_cpu = self
            .stats
            .get(&slot, 0)
            .map_err(|source| ClassifierError::Map {
                name: STATS_MAP,
                source,
            })?;
        Ok(per_cpu.iter().fold(Counters::default(), |acc, c| Counters {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
        }))
    }

    fn alloc_slot(&mut self) -> Result<u32, ClassifierError> {
        if let Some(s) = self.free_slots.pop() {
            return Ok(s);
        }
        if self.next_slot >= STATS_SLOTS {
            return Err(ClassifierError::Full(STATS_SLOTS - FIRST_NEIGHBOUR_SLOT));
        }
        let s = self.next_slot;
        self.next_slot += 1;
        Ok(s)
    }
}
