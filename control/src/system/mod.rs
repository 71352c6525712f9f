//! The desired model of one system: its configuration, identities, arcs, the paths each
//! identity knows, and the table ids allocated. This is what the daemon persists and
//! what every command changes; the kernel state of each namespace is derived from it
//! ([`System::desired`]). Pure: no kernel access.
//!
//! Every operation validates first and changes nothing when it fails, so a refused command
//! leaves both the model and (since the kernel follows the model) the kernel as they were.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use serde::{Deserialize, Serialize};

use crate::{
    addr::{AddressError, HCoord, Ipv4Prefix, NtkAddress, Topology, TopologyError},
    fwd::{
        self, state::StateError, tables::AllocError, Arc, IdentityInput, Interface, Path, QspnArc,
        TableIds,
    },
    mac::MacAddr,
    plan::Desired,
    plan::KernelState,
};

/// A managed real NIC of the system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub mac: MacAddr,
    pub linklocal: Ipv4Addr,
}

/// Startup options (qspnclient's command line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// qspnclient's notation, highest level first (`4.2.2.2`).
    pub topology: String,
    pub base: Ipv4Prefix,
    pub subnet_level: usize,
    pub serve_anonymous: bool,
    pub anonymizer: bool,
    pub mark_mask: u32,
    pub nics: Vec<Nic>,
}

/// An identity's interface: a real NIC (main identity) or a pseudo-interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handled {
    /// The real NIC it rests on.
    pub nic: String,
    /// Its name in the identity's namespace.
    pub dev: String,
    pub mac: MacAddr,
    pub linklocal: Ipv4Addr,
}

/// An identity arc.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdArc {
    /// The real NIC the arc rests on.
    pub nic: String,
    pub peer_mac: MacAddr,
    pub peer_linklocal: Ipv4Addr,
    pub qspn: Option<QspnState>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QspnState {
    pub table: u32,
    /// The neighbour's address, once its first ETP arrived.
    pub neighbour: Option<NtkAddress>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub address: NtkAddress,
    /// `None`: the system's default namespace (the main identity).
    pub netns: Option<String>,
    pub handled: Vec<Handled>,
    pub arcs: BTreeMap<u32, IdArc>,
    pub next_arc: u32,
    #[serde(with = "paths_as_list")]
    pub paths: BTreeMap<HCoord, Vec<Path>>,
    /// While the identity is in bootstrap (qspn.md §13.2): the guest level `g`, the level of
    /// the g-node that moved with it. Paths towards destinations of level ≥ g are not used.
    pub bootstrap_level: Option<usize>,
    /// The rest of the bootstrap's facts (host level, start time), set with `bootstrap_level`.
    /// Absent in a state written before they were recorded (see [`System::resume_bootstraps`]).
    #[serde(default)]
    pub bootstrap: Option<Bootstrap>,
    /// The identity this one was duplicated from (until that one is dismissed).
    #[serde(default)]
    pub copy_of: Option<u32>,
    /// Connectivity levels `(from, to)` of a connectivity identity (identities.md §6).
    #[serde(default)]
    pub connectivity: Option<(usize, usize)>,
    /// To be dismissed once the current state reached the kernel (an entry's old identity).
    #[serde(default)]
    pub dismiss: bool,
}

impl Identity {
    pub fn is_main(&self) -> bool {
        self.netns.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct System {
    pub config: Config,
    pub identities: BTreeMap<u32, Identity>,
    pub next_identity: u32,
    pub tables: TableIds,
    /// Prepared entries/migrations by operation id (JSON keys are strings).
    #[serde(default, with = "ops_as_list")]
    pub ops: BTreeMap<u64, Pending>,
    /// Counter of the identity namespaces created (`entr01`, `migr02`, …).
    #[serde(default)]
    pub next_netns: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SystemError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("the first address must be completely real; '{0}' has a virtual position")]
    VirtualFirstAddress(String),
    #[error("subnet level {level} must be below the number of levels ({levels})")]
    SubnetLevel { level: usize, levels: usize },
    #[error("at least one interface is needed")]
    NoInterface,
    #[error("interface '{0}' is given twice")]
    DuplicateNic(String),
    #[error("no identity with index {0}")]
    UnknownIdentity(u32),
    #[error("identity {identity} has no arc {arc}")]
    UnknownArc { identity: u32, arc: u32 },
    #[error("no managed interface '{0}'")]
    UnknownNic(String),
    #[error("identity {identity} already has an arc to {mac} on {nic} (arc {arc})")]
    DuplicateArc {
        identity: u32,
        nic: String,
        mac: MacAddr,
        arc: u32,
    },
    #[error("identity {identity} has no arc to {mac} on {nic}")]
    NoArcTo {
        identity: u32,
        nic: String,
        mac: MacAddr,
    },
    #[error("arc {arc} of identity {identity} is already a qspn arc")]
    AlreadyQspn { identity: u32, arc: u32 },
    #[error("arc {arc} of identity {identity} is not a qspn arc")]
    NotQspn { identity: u32, arc: u32 },
    #[error("MAC {0} is a group or zero address")]
    BadMac(MacAddr),
    #[error("{0} is not a link-local address (169.254.0.0/16)")]
    NotLinkLocal(Ipv4Addr),
    #[error("the neighbour's address equals our own ({0})")]
    SameAddress(String),
    #[error("destination {0} does not exist in this topology")]
    BadDestination(HCoord),
    #[error("path via arc {arc} of identity {identity}: no such arc")]
    PathArc { identity: u32, arc: u32 },
    #[error("path to {dest}: its last hop must be the destination")]
    PathEnd { dest: HCoord },
    #[error("path to {dest}: hop {hop} does not exist in this topology")]
    BadHop { dest: HCoord, hop: HCoord },
    #[error("mark mask {0:#x} does not cover the table ids 200..=250 (it must include 0xff)")]
    MarkMaskTooNarrow(u32),
    #[error("table ids exhausted or inconsistent: {0}")]
    Alloc(#[from] AllocError),
    #[error("forwarding state: {0}")]
    State(#[from] StateError),
    #[error("table id {0} does not fit in the mark mask")]
    MarkMask(u32),
    #[error("operation {0} is already prepared")]
    DuplicateOp(u64),
    #[error(
        "no prepared operation {0} (run prepare_enter_net_phase_1 / prepare_migrate_phase_1 first)"
    )]
    UnknownOp(u64),
    #[error("operation {op} was prepared as {prepared}, not {called}")]
    WrongKind {
        op: u64,
        prepared: OpKind,
        called: OpKind,
    },
    #[error("operation {op} was prepared for identity {prepared}, not {called}")]
    WrongIdentity { op: u64, prepared: u32, called: u32 },
    #[error("phase 1 of operation {0} already ran")]
    PhaseOneDone(u64),
    #[error("no identity is waiting for phase 2 of operation {0}")]
    NotWaitingPhase2(u64),
    #[error("guest level {guest} and host level {host}: need guest < host <= {levels}")]
    Levels {
        guest: usize,
        host: usize,
        levels: usize,
    },
    #[error("host address has {given} positions, levels l-1..h need {want}")]
    HostAddress { given: usize, want: usize },
    #[error("{what}: position {pos} is not valid at level {lvl}")]
    Position {
        what: &'static str,
        lvl: usize,
        pos: u32,
    },
    #[error("a migration takes no arc list (every qspn arc follows the new identity)")]
    ArcListOnMigrate,
    #[error("no pseudo-interface MAC/link-local for interface '{0}'")]
    NoPseudo(String),
    #[error("arc {0} is listed both as internal and as external")]
    InternalAndExternal(u32),
    #[error("arc {0} is given twice")]
    DuplicateArcArg(u32),
    #[error("interface name '{0}' is longer than 15 bytes")]
    IfName(String),
    #[error("identity {0} is the main identity: it ends only with the daemon")]
    DismissMain(u32),
    #[error("identity {0} is not a connectivity identity")]
    NotConnectivity(u32),
}

impl System {
    /// `init`: the main identity (index 0) in the default namespace with a completely real
    /// address, on the given NICs.
    pub fn init(config: Config, address: &str) -> Result<Self, SystemError> {
        let t = Topology::parse_with_base(&config.topology, config.base)?;
        let n = NtkAddress::parse(address, &t)?;
        if !n.is_all_real(&t) {
            return Err(SystemError::VirtualFirstAddress(address.into()));
        }
        if config.subnet_level >= t.levels() {
            return Err(SystemError::SubnetLevel {
                level: config.subnet_level,
                levels: t.levels(),
            });
        }
        if config.nics.is_empty() {
            return Err(SystemError::NoInterface);
        }
        if crate::fwd::tables::CLASSIC_POOL
            .clone()
            .any(|t| t & !config.mark_mask != 0)
        {
            return Err(SystemError::MarkMaskTooNarrow(config.mark_mask));
        }
        let mut seen = BTreeSet::new();
        for nic in &config.nics {
            if !seen.insert(&nic.name) {
                return Err(SystemError::DuplicateNic(nic.name.clone()));
            }
            check_mac(nic.mac)?;
            check_ll(nic.linklocal)?;
        }
        let handled = config
            .nics
            .iter()
            .map(|n| Handled {
                nic: n.name.clone(),
                dev: n.name.clone(),
                mac: n.mac,
                linklocal: n.linklocal,
            })
            .collect();
        let main = Identity {
            address: n,
            netns: None,
            handled,
            arcs: BTreeMap::new(),
            next_arc: 0,
            paths: BTreeMap::new(),
            bootstrap_level: None,
            bootstrap: None,
            copy_of: None,
            connectivity: None,
            dismiss: false,
        };
        Ok(System {
            config,
            identities: BTreeMap::from([(0, main)]),
            next_identity: 1,
            tables: TableIds::default(),
            ops: BTreeMap::new(),
            next_netns: 0,
        })
    }

    pub fn topology(&self) -> Topology {
        Topology::parse_with_base(&self.config.topology, self.config.base)
            .expect("validated at init")
    }

    pub fn identity(&self, idx: u32) -> Result<&Identity, SystemError> {
        self.identities
            .get(&idx)
            .ok_or(SystemError::UnknownIdentity(idx))
    }

    fn identity_mut(&mut self, idx: u32) -> Result<&mut Identity, SystemError> {
        self.identities
            .get_mut(&idx)
            .ok_or(SystemError::UnknownIdentity(idx))
    }

    /// An identity arc (a neighbour identity seen on `nic`): no kernel state but the direct
    /// route to its link-local. Returns the arc index.
    pub fn add_identity_arc(
        &mut self,
        idx: u32,
        nic: &str,
        peer_mac: MacAddr,
        peer_ll: Ipv4Addr,
    ) -> Result<u32, SystemError> {
        check_mac(peer_mac)?;
        check_ll(peer_ll)?;
        if !self.config.nics.iter().any(|n| n.name == nic) {
            return Err(SystemError::UnknownNic(nic.into()));
        }
        let id = self.identity_mut(idx)?;
        if let Some((arc, _)) = id
            .arcs
            .iter()
            .find(|(_, a)| a.nic == nic && a.peer_mac == peer_mac)
        {
            return Err(SystemError::DuplicateArc {
                identity: idx,
                nic: nic.into(),
                mac: peer_mac,
                arc: *arc,
            });
        }
        let arc = id.next_arc;
        id.next_arc += 1;
        id.arcs.insert(
            arc,
            IdArc {
                nic: nic.into(),
                peer_mac,
                peer_linklocal: peer_ll,
                qspn: None,
            },
        );
        Ok(arc)
    }

    /// `add_qspn_arc <idx> <nic> <peer_mac>`: the arc becomes a qspn arc; its table is
    /// created (all unreachable) and its MAC marked. Returns the table id.
    pub fn add_qspn_arc(
        &mut self,
        idx: u32,
        nic: &str,
        peer_mac: MacAddr,
    ) -> Result<u32, SystemError> {
        let id = self.identity(idx)?;
        let (arc, a) = id
            .arcs
            .iter()
            .find(|(_, a)| a.nic == nic && a.peer_mac == peer_mac)
            .ok_or(SystemError::NoArcTo {
                identity: idx,
                nic: nic.into(),
                mac: peer_mac,
            })?;
        if a.qspn.is_some() {
            return Err(SystemError::AlreadyQspn {
                identity: idx,
                arc: *arc,
            });
        }
        let arc = *arc;
        let mut tables = self.tables.clone();
        let table = tables.acquire(peer_mac, idx)?;
        if table & !self.config.mark_mask != 0 {
            return Err(SystemError::MarkMask(table));
        }
        self.tables = tables;
        self.identity_mut(idx)?.arcs.get_mut(&arc).unwrap().qspn = Some(QspnState {
            table,
            neighbour: None,
        });
        Ok(table)
    }

    /// The neighbour over a qspn arc is known (its first ETP): its table becomes active.
    pub fn set_neighbour(&mut self, idx: u32, arc: u32, address: &str) -> Result<(), SystemError> {
        let t = self.topology();
        let n = NtkAddress::parse(address, &t)?;
        let id = self.identity(idx)?;
        if n == id.address {
            return Err(SystemError::SameAddress(address.into()));
        }
        let a = id
            .arcs
            .get(&arc)
            .ok_or(SystemError::UnknownArc { identity: idx, arc })?;
        if a.qspn.is_none() {
            return Err(SystemError::NotQspn { identity: idx, arc });
        }
        let id = self.identity_mut(idx)?;
        id.arcs
            .get_mut(&arc)
            .unwrap()
            .qspn
            .as_mut()
            .unwrap()
            .neighbour = Some(n);
        // A neighbour in the host g-node, outside the moving one, ends the bootstrap (§13.2).
        self.end_bootstrap_if_told(idx);
        Ok(())
    }

    /// Replaces the paths identity `idx` knows towards `dest` (best first, or any order with
    /// costs). An empty list removes them.
    pub fn set_paths(
        &mut self,
        idx: u32,
        dest: HCoord,
        paths: Vec<Path>,
    ) -> Result<(), SystemError> {
        let t = self.topology();
        if dest.lvl >= t.levels() || dest.pos >= 2 * t.gsize(dest.lvl) {
            return Err(SystemError::BadDestination(dest));
        }
        let id = self.identity(idx)?;
        for p in &paths {
            if !id.arcs.contains_key(&p.arc) {
                return Err(SystemError::PathArc {
                    identity: idx,
                    arc: p.arc,
                });
            }
            if p.hops.last() != Some(&dest) {
                return Err(SystemError::PathEnd { dest });
            }
            if let Some(hop) = p
                .hops
                .iter()
                .find(|h| h.lvl >= t.levels() || h.pos >= 2 * t.gsize(h.lvl))
            {
                return Err(SystemError::BadHop { dest, hop: *hop });
            }
        }
        let id = self.identity_mut(idx)?;
        if paths.is_empty() {
            id.paths.remove(&dest);
        } else {
            id.paths.insert(dest, paths);
        }
        // A path to a destination of level h−1 is knowledge from outside: bootstrap over (§13.2).
        self.end_bootstrap_if_told(idx);
        Ok(())
    }

    /// One processed ETP (lifecycle.md §2.5, one block): the neighbours now known and the
    /// identity's complete path set (destinations not given are forgotten).
    pub fn etp(
        &mut self,
        idx: u32,
        neighbours: &[(u32, String)],
        paths: &[(HCoord, Vec<Path>)],
    ) -> Result<(), SystemError> {
        let mut next = self.clone();
        for (arc, address) in neighbours {
            next.set_neighbour(idx, *arc, address)?;
        }
        let known: Vec<HCoord> = next.identity(idx)?.paths.keys().copied().collect();
        for d in known {
            next.set_paths(idx, d, vec![])?;
        }
        for (d, ps) in paths {
            next.set_paths(idx, *d, ps.clone())?;
        }
        *self = next;
        Ok(())
    }

    /// Removes an identity arc: its table (rule, routes, mark) goes, its id is released if
    /// no other identity uses it, paths through it are forgotten.
    pub fn remove_arc(&mut self, idx: u32, arc: u32) -> Result<(), SystemError> {
        let a = self
            .identity(idx)?
            .arcs
            .get(&arc)
            .cloned()
            .ok_or(SystemError::UnknownArc { identity: idx, arc })?;
        if a.qspn.is_some() {
            self.tables.release(a.peer_mac, idx)?;
        }
        let id = self.identity_mut(idx)?;
        id.arcs.remove(&arc);
        for ps in id.paths.values_mut() {
            ps.retain(|p| p.arc != arc);
        }
        id.paths.retain(|_, ps| !ps.is_empty());
        Ok(())
    }

    /// The forwarding-state input of identity `idx`.
    pub fn input<'a>(&self, t: &'a Topology, idx: u32) -> Result<IdentityInput<'a>, SystemError> {
        let id = self.identity(idx)?;
        let dev_of = |nic: &str| {
            id.handled
                .iter()
                .find(|h| h.nic == nic)
                .map(|h| h.dev.clone())
                .unwrap_or_else(|| nic.into())
        };
        let arcs = id
            .arcs
            .iter()
            .map(|(n, a)| Arc {
                id: *n,
                dev: dev_of(&a.nic),
                peer_mac: a.peer_mac,
                peer_linklocal: a.peer_linklocal,
                qspn: a.qspn.as_ref().map(|q| QspnArc {
                    table: q.table,
                    neighbour: q.neighbour.as_ref().and_then(|nb| id.address.coord_of(nb)),
                }),
            })
            .collect();
        Ok(IdentityInput {
            topology: t,
            subnet_level: self.config.subnet_level,
            address: id.address.clone(),
            main: id.is_main(),
            serve_anonymous: self.config.serve_anonymous,
            anonymizer: self.config.anonymizer,
            bootstrap_level: id.bootstrap_level,
            interfaces: id
                .handled
                .iter()
                .map(|h| Interface {
                    name: h.dev.clone(),
                    linklocal: h.linklocal,
                })
                .collect(),
            arcs,
            paths: id.paths.clone(),
        })
    }

    /// The desired kernel state of every namespace of the system (`None`: the default one).
    pub fn desired(&self) -> Result<BTreeMap<Option<String>, Desired>, SystemError> {
        let t = self.topology();
        let mut out = BTreeMap::new();
        for (idx, id) in &self.identities {
            let st = fwd::compute(&self.input(&t, *idx)?)?;
            let table_names = st.tables.values().map(|t| (t.id, t.name.clone())).collect();
            let interfaces: Vec<String> = id.handled.iter().map(|h| h.dev.clone()).collect();
            out.insert(
                id.netns.clone(),
                Desired {
                    interfaces,
                    state: KernelState::from_forwarding(&st, self.config.mark_mask),
                    table_names,
                },
            );
        }
        Ok(out)
    }
}

/// Operations persisted as a list of `{"op": id, …}`.
mod ops_as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Pending;

    #[derive(Serialize, Deserialize)]
    struct Entry {
        op: u64,
        #[serde(flatten)]
        pending: Pending,
    }

    pub fn serialize<S: Serializer>(m: &BTreeMap<u64, Pending>, s: S) -> Result<S::Ok, S::Error> {
        m.iter()
            .map(|(op, p)| Entry {
                op: *op,
                pending: p.clone(),
            })
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u64, Pending>, D::Error> {
        Ok(Vec::<Entry>::deserialize(d)?
            .into_iter()
            .map(|e| (e.op, e.pending))
            .collect())
    }
}

/// JSON objects need string keys: paths are persisted as `[{"dest": …, "paths": […]}]`.
mod paths_as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::{addr::HCoord, fwd::Path};

    #[derive(Serialize, Deserialize)]
    struct Entry {
        dest: HCoord,
        paths: Vec<Path>,
    }

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<HCoord, Vec<Path>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let v: Vec<Entry> = m
            .iter()
            .map(|(d, p)| Entry {
                dest: *d,
                paths: p.clone(),
            })
            .collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<HCoord, Vec<Path>>, D::Error> {
        Ok(Vec::<Entry>::deserialize(d)?
            .into_iter()
            .map(|e| (e.dest, e.paths))
            .collect())
    }
}

fn check_mac(m: MacAddr) -> Result<(), SystemError> {
    if m.is_group() || m.is_zero() {
        return Err(SystemError::BadMac(m));
    }
    Ok(())
}

fn check_ll(ip: Ipv4Addr) -> Result<(), SystemError> {
    if !ip.is_link_local() {
        return Err(SystemError::NotLinkLocal(ip));
    }
    Ok(())
}

mod bootstrap;
mod lifecycle;
pub use bootstrap::{Bootstrap, BootstrapStatus, BOOTSTRAP_TIMEOUT_MS};
pub use lifecycle::{Connectivity, OpKind, PeerMoved, Pending, Prepare};

#[cfg(test)]
mod tests;
