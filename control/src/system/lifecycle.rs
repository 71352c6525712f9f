//! Identity lifecycle (lifecycle.md §6–§13): duplication for entering another network or
//! migrating, the virtual → real switch, a neighbour that duplicated, outer-arc removal,
//! dismissal and the connectivity check.
//!
//! The model is declarative: each operation rewrites identities, arcs and table ids, and the
//! kernel of every namespace follows from [`System::desired`]. The reconciler's ordered diff
//! gives the spec's ordering invariants (tables complete before their rule, rule gone before
//! the flush, direct route before any `via`, address before SNAT/NETMAP); the steps that
//! must reach the kernel separately (E13: the old identity of an entry is dismissed *after*
//! phase 1 reached the kernel) are split by the daemon.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use serde::{Deserialize, Serialize};

use super::{
    check_ll, check_mac, Bootstrap, Handled, IdArc, Identity, QspnState, System, SystemError,
};
use crate::{
    addr::{HCoord, NtkAddress},
    mac::MacAddr,
};

/// Linux interface names hold at most 15 bytes.
const IFNAMSIZ: usize = 15;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    /// `prepare_enter_net_phase_1`: join another network.
    Enter,
    /// `prepare_migrate_phase_1`: move to another g-node of the same network.
    Migrate,
}

impl OpKind {
    /// The label of the old identity's new namespace (the docs' `entrNN` / `migrNN`).
    fn label(self) -> &'static str {
        match self {
            OpKind::Enter => "entr",
            OpKind::Migrate => "migr",
        }
    }
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpKind::Enter => "enter_net",
            OpKind::Migrate => "migrate",
        })
    }
}

/// The arguments of `prepare_*_phase_1` (lifecycle.md §6.1), elderships aside (they have
/// no kernel effect).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    pub kind: OpKind,
    pub old: u32,
    pub guest_level: usize,
    pub host_level: usize,
    /// χ's positions for levels `l−1 … h`, highest first.
    pub host_addr: Vec<u32>,
    pub pos1: u32,
    pub pos2: u32,
    pub conn_pos: u32,
    /// Enter only: identity arcs of the old identity that become external qspn arcs of
    /// the new one.
    pub external_arcs: Vec<u32>,
    pub prev_op: Option<u64>,
    /// The pseudo-interface the old identity gets on each real NIC: (MAC, link-local).
    /// Chosen at prepare time so that the neighbours taking part in the same operation can
    /// be told the new MAC before anyone runs phase 1.
    pub pseudo: BTreeMap<String, (MacAddr, Ipv4Addr)>,
}

/// A prepared operation and, once phase 1 ran, the identity waiting for phase 2.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub prepare: Prepare,
    pub new_identity: Option<u32>,
}

/// An internal arc at phase 1: the peer takes part in the same operation, and its old
/// identity now answers on this MAC and link-local.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerMoved {
    pub arc: u32,
    pub mac: MacAddr,
    pub linklocal: Ipv4Addr,
}

/// What `check_connectivity` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Connectivity {
    pub removable: bool,
    /// Destinations some inner neighbour could reach only through this identity.
    pub needed_for: Vec<String>,
}

impl System {
    /// `prepare_enter_net_phase_1` / `prepare_migrate_phase_1`: validates and records the
    /// operation. No kernel effect.
    pub fn prepare(&mut self, op_id: u64, p: Prepare) -> Result<(), SystemError> {
        let t = self.topology();
        let l = t.levels();
        if self.ops.contains_key(&op_id) {
            return Err(SystemError::DuplicateOp(op_id));
        }
        let old = self.identity(p.old)?;
        let (g, h) = (p.guest_level, p.host_level);
        if h <= g || h > l {
            return Err(SystemError::Levels {
                guest: g,
                host: h,
                levels: l,
            });
        }
        if p.host_addr.len() != l - h {
            return Err(SystemError::HostAddress {
                given: p.host_addr.len(),
                want: l - h,
            });
        }
        for (k, pos) in p.host_addr.iter().enumerate() {
            let lvl = l - 1 - k;
            if *pos >= t.gsize(lvl) {
                return Err(SystemError::Position {
                    what: "host address",
                    lvl,
                    pos: *pos,
                });
            }
        }
        if p.pos1 >= 2 * t.gsize(h - 1) {
            return Err(SystemError::Position {
                what: "pos1",
                lvl: h - 1,
                pos: p.pos1,
            });
        }
        if p.pos2 >= t.gsize(h - 1) {
            return Err(SystemError::Position {
                what: "pos2 (must be real)",
                lvl: h - 1,
                pos: p.pos2,
            });
        }
        if p.conn_pos < t.gsize(g) || p.conn_pos >= 2 * t.gsize(g) {
            return Err(SystemError::Position {
                what: "connectivity position (must be virtual)",
                lvl: g,
                pos: p.conn_pos,
            });
        }
        if p.kind == OpKind::Migrate && !p.external_arcs.is_empty() {
            return Err(SystemError::ArcListOnMigrate);
        }
        for a in &p.external_arcs {
            if !old.arcs.contains_key(a) {
                return Err(SystemError::UnknownArc {
                    identity: p.old,
                    arc: *a,
                });
            }
        }
        for hd in &old.handled {
            let (mac, ll) = p
                .pseudo
                .get(&hd.nic)
                .ok_or_else(|| SystemError::NoPseudo(hd.nic.clone()))?;
            check_mac(*mac)?;
            check_ll(*ll)?;
        }
        if let Some(n) = p
            .pseudo
            .keys()
            .find(|n| !old.handled.iter().any(|h| &&h.nic == n))
        {
            return Err(SystemError::UnknownNic(n.clone()));
        }
        self.ops.insert(
            op_id,
            Pending {
                prepare: p,
                new_identity: None,
            },
        );
        Ok(())
    }

    /// `enter_net_phase_1` / `migrate_phase_1`: duplicates identity `old` (§6.2, E1–E12 /
    /// M1–M14). Returns the new identity's index. For an entry, the old identity is left
    /// flagged for dismissal ([`System::dismiss_flagged`], E13), to be run once this state
    /// reached the kernel. The new identity is in bootstrap from `now_ms` on (qspn.md §13.2,
    /// see [`System::expire_bootstraps`]).
    pub fn phase_1(
        &mut self,
        kind: OpKind,
        old: u32,
        op_id: u64,
        internal: &[PeerMoved],
        now_ms: u64,
    ) -> Result<u32, SystemError> {
        let t = self.topology();
        let l = t.levels();
        let pending = self.pending(kind, old, op_id)?.clone();
        let p = &pending.prepare;
        if pending.new_identity.is_some() {
            return Err(SystemError::PhaseOneDone(op_id));
        }
        let i0 = self.identity(old)?.clone();
        let mut moved = BTreeMap::new();
        for m in internal {
            let a = i0.arcs.get(&m.arc).ok_or(SystemError::UnknownArc {
                identity: old,
                arc: m.arc,
            })?;
            if p.external_arcs.contains(&m.arc) {
                return Err(SystemError::InternalAndExternal(m.arc));
            }
            if a.qspn.is_none() {
                return Err(SystemError::NotQspn {
                    identity: old,
                    arc: m.arc,
                });
            }
            check_mac(m.mac)?;
            check_ll(m.linklocal)?;
            if moved.insert(m.arc, *m).is_some() {
                return Err(SystemError::DuplicateArcArg(m.arc));
            }
        }
        let (g, h) = (p.guest_level, p.host_level);

        // Addresses (§6.1): n0' = n0 with position g := conn_pos; n1 = host · pos1 · n0[h−2 … 0].
        let n0 = i0.address.clone();
        let n0p = n0.with(g, p.conn_pos);
        let mut pos = n0.positions().to_vec();
        for (k, hp) in p.host_addr.iter().enumerate() {
            pos[l - 1 - k] = *hp;
        }
        pos[h - 1] = p.pos1;
        let n1 = NtkAddress::from_low_first(pos);

        // The old identity's namespace and pseudo-interfaces.
        let mut next = self.clone();
        next.next_netns += 1;
        let label = format!("{}{:02}", kind.label(), next.next_netns);
        let mut handled0 = Vec::new();
        for hd in &i0.handled {
            let dev = format!("{label}_{}", hd.nic);
            if dev.len() > IFNAMSIZ {
                return Err(SystemError::IfName(dev));
            }
            let (mac, ll) = p.pseudo[&hd.nic];
            handled0.push(Handled {
                nic: hd.nic.clone(),
                dev,
                mac,
                linklocal: ll,
            });
        }
        let new_idx = next.next_identity;
        next.next_identity += 1;

        // Ids in the spec's order: the new identity keeps the internal tables (taken before
        // the old identity lets go of them), the old identity's re-keyed tables (E4/M4)
        // come before the new identity's external ones (E11).
        for (k, a) in &i0.arcs {
            if moved.contains_key(k) {
                next.tables.acquire(a.peer_mac, new_idx)?;
            }
        }
        // The old identity: a connectivity identity in the new namespace. Internal arcs now
        // lead to the peer's old identity (new MAC, new link-local, new table: E4/M4).
        let mut i0n = i0.clone();
        for (k, m) in &moved {
            let a = i0n.arcs.get_mut(k).unwrap();
            next.tables.release(a.peer_mac, old)?;
            let table = next.tables.acquire(m.mac, old)?;
            if table & !next.config.mark_mask != 0 {
                return Err(SystemError::MarkMask(table));
            }
            a.peer_mac = m.mac;
            a.peer_linklocal = m.linklocal;
            a.qspn.as_mut().unwrap().table = table;
        }
        // The new identity: every identity arc copied (same index, same peer); qspn arcs per
        // E9/M11. Internal arcs keep their table (the peer's new identity kept the MAC) and
        // know the peer's new address; external arcs keep the table but wait for an ETP
        // (migrate: every other qspn arc, M8 withdraws the rule) or get one (enter: the listed
        // arcs, E11). An entry's other arcs lead into the old network: no qspn arc (E6b).
        let mut arcs1 = BTreeMap::new();
        for (k, a) in &i0.arcs {
            let qspn = if moved.contains_key(k) {
                let q = a.qspn.as_ref().expect("validated");
                next.tables.acquire(a.peer_mac, new_idx)?;
                Some(QspnState {
                    table: q.table,
                    neighbour: q.neighbour.as_ref().map(|nb| {
                        let v: Vec<u32> = (0..l)
                            .map(|i| if i < g { nb.pos(i) } else { n1.pos(i) })
                            .collect();
                        NtkAddress::from_low_first(v)
                    }),
                })
            } else {
                match (kind, &a.qspn) {
                    (OpKind::Migrate, Some(q)) => {
                        next.tables.acquire(a.peer_mac, new_idx)?;
                        Some(QspnState {
                            table: q.table,
                            neighbour: None,
                        })
                    }
                    (OpKind::Enter, _) if p.external_arcs.contains(k) => {
                        let table = next.tables.acquire(a.peer_mac, new_idx)?;
                        if table & !next.config.mark_mask != 0 {
                            return Err(SystemError::MarkMask(table));
                        }
                        Some(QspnState {
                            table,
                            neighbour: None,
                        })
                    }
                    _ => None,
                }
            };
            arcs1.insert(*k, IdArc { qspn, ..a.clone() });
        }
        // QSPN copies the paths towards destinations inside the moving g-node (E9).
        let paths1 = i0
            .paths
            .iter()
            .filter(|(d, _)| d.lvl < g)
            .map(|(d, ps)| {
                let ps: Vec<_> = ps
                    .iter()
                    .filter(|p| arcs1.get(&p.arc).is_some_and(|a| a.qspn.is_some()))
                    .cloned()
                    .collect();
                (*d, ps)
            })
            .filter(|(_, ps)| !ps.is_empty())
            .collect();
        let i1 = Identity {
            address: n1,
            netns: i0.netns.clone(),
            handled: i0.handled.clone(),
            arcs: arcs1,
            next_arc: i0.next_arc,
            paths: paths1,
            bootstrap_level: Some(g),
            bootstrap: Some(Bootstrap {
                host_level: h,
                since_ms: now_ms,
            }),
            copy_of: Some(old),
            connectivity: i0.connectivity,
            dismiss: false,
        };

        let to = match kind {
            OpKind::Enter => l,
            OpKind::Migrate => n0.coord_of(&i1.address).map_or(l, |c| c.lvl),
        };
        i0n.address = n0p;
        i0n.netns = Some(label);
        i0n.handled = handled0;
        i0n.connectivity = Some((g + 1, to));
        i0n.dismiss = kind == OpKind::Enter;
        next.identities.insert(old, i0n);
        next.identities.insert(new_idx, i1);

        let op = next.ops.get_mut(&op_id).unwrap();
        op.new_identity = Some(new_idx);
        if op.prepare.prev_op.is_none() {
            next.make_real(op_id)?;
        }
        *self = next;
        Ok(new_idx)
    }

    /// The operation `op_id`, checked to be of `kind` and prepared for identity `old`.
    fn pending(&self, kind: OpKind, old: u32, op_id: u64) -> Result<&Pending, SystemError> {
        let pending = self.ops.get(&op_id).ok_or(SystemError::UnknownOp(op_id))?;
        let p = &pending.prepare;
        if p.kind != kind {
            return Err(SystemError::WrongKind {
                op: op_id,
                prepared: p.kind,
                called: kind,
            });
        }
        if p.old != old {
            return Err(SystemError::WrongIdentity {
                op: op_id,
                prepared: p.old,
                called: old,
            });
        }
        Ok(pending)
    }

    /// `enter_net_phase_2` / `migrate_phase_2`: the awaited migration is done.
    pub fn phase_2(&mut self, kind: OpKind, old: u32, op_id: u64) -> Result<u32, SystemError> {
        let pending = self.pending(kind, old, op_id)?;
        let Some(new) = pending.new_identity else {
            return Err(SystemError::NotWaitingPhase2(op_id));
        };
        let mut next = self.clone();
        next.make_real(op_id)?;
        *self = next;
        Ok(new)
    }

    /// §8: the new identity's position at level `h−1` becomes `pos2`; the operation ends.
    fn make_real(&mut self, op_id: u64) -> Result<(), SystemError> {
        let op = self
            .ops
            .remove(&op_id)
            .ok_or(SystemError::UnknownOp(op_id))?;
        let new = op
            .new_identity
            .ok_or(SystemError::NotWaitingPhase2(op_id))?;
        let (g, h) = (op.prepare.guest_level, op.prepare.host_level);
        let id = self.identity_mut(new)?;
        // The whole moving g-node takes the real position: the neighbours inside it (internal
        // arcs, coordinate level < g) move with this identity.
        let before = id.address.clone();
        for q in id.arcs.values_mut().filter_map(|a| a.qspn.as_mut()) {
            if let Some(nb) = q.neighbour.as_mut() {
                if before.coord_of(nb).is_some_and(|c| c.lvl < g) {
                    *nb = nb.with(h - 1, op.prepare.pos2);
                }
            }
        }
        id.address = before.with(h - 1, op.prepare.pos2);
        // The neighbours' coordinates are relative to the address.
        self.end_bootstrap_if_told(new);
        Ok(())
    }

    /// Identities flagged for dismissal (an entry's old identity, E13).
    pub fn flagged(&self) -> Vec<u32> {
        self.identities
            .iter()
            .filter(|(_, i)| i.dismiss)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Dismisses every flagged identity.
    pub fn dismiss_flagged(&mut self) -> Result<Vec<u32>, SystemError> {
        let mut gone = Vec::new();
        for idx in self.flagged() {
            if self.identities.contains_key(&idx) {
                gone.extend(self.dismiss(idx)?);
            }
        }
        Ok(gone)
    }

    /// `remove_identity` (§13): a connectivity identity goes with its namespace; its table ids
    /// are released unless another identity uses them. Chained: when it was created as the
    /// copy of another connectivity identity, that one goes too. Returns the indices removed.
    pub fn dismiss(&mut self, idx: u32) -> Result<Vec<u32>, SystemError> {
        let id = self.identity(idx)?;
        if id.is_main() {
            return Err(SystemError::DismissMain(idx));
        }
        let mut next = self.clone();
        let mut gone = Vec::new();
        let mut cur = Some(idx);
        while let Some(i) = cur.take() {
            let Some(id) = next.identities.remove(&i) else {
                break;
            };
            for a in id.arcs.values().filter(|a| a.qspn.is_some()) {
                next.tables.release(a.peer_mac, i)?;
            }
            gone.push(i);
            if let Some(c) = id.copy_of {
                if next.identities.get(&c).is_some_and(|x| !x.is_main()) {
                    cur = Some(c);
                }
            }
        }
        for id in next.identities.values_mut() {
            if id.copy_of.is_some_and(|c| gone.contains(&c)) {
                id.copy_of = None;
            }
        }
        next.ops
            .retain(|_, p| !gone.contains(&p.prepare.old) || p.new_identity.is_some());
        *self = next;
        Ok(gone)
    }

    /// Identity arc changed, only the neighbour migrated (identities.md §7.3): the arc now
    /// leads to the neighbour's old identity (new MAC and link-local; the table is re-keyed,
    /// releasing before allocating so the id normally stays); a new identity arc towards the
    /// neighbour's new identity takes the previous MAC and link-local. Returns its index.
    pub fn neighbour_migrated(
        &mut self,
        idx: u32,
        arc: u32,
        mac: MacAddr,
        linklocal: Ipv4Addr,
    ) -> Result<u32, SystemError> {
        check_mac(mac)?;
        check_ll(linklocal)?;
        let id = self.identity(idx)?;
        let a = id
            .arcs
            .get(&arc)
            .cloned()
            .ok_or(SystemError::UnknownArc { identity: idx, arc })?;
        if let Some((other, _)) = id
            .arcs
            .iter()
            .find(|(_, b)| b.nic == a.nic && b.peer_mac == mac)
        {
            return Err(SystemError::DuplicateArc {
                identity: idx,
                nic: a.nic,
                mac,
                arc: *other,
            });
        }
        let mut next = self.clone();
        if a.qspn.is_some() {
            next.tables.release(a.peer_mac, idx)?;
            let table = next.tables.acquire(mac, idx)?;
            if table & !next.config.mark_mask != 0 {
                return Err(SystemError::MarkMask(table));
            }
            let na = next.identity_mut(idx)?.arcs.get_mut(&arc).unwrap();
            na.qspn.as_mut().unwrap().table = table;
        }
        let id = next.identity_mut(idx)?;
        let na = id.arcs.get_mut(&arc).unwrap();
        na.peer_mac = mac;
        na.peer_linklocal = linklocal;
        let new_arc = id.next_arc;
        id.next_arc += 1;
        id.arcs.insert(
            new_arc,
            IdArc {
                nic: a.nic.clone(),
                peer_mac: a.peer_mac,
                peer_linklocal: a.peer_linklocal,
                qspn: None,
            },
        );
        *self = next;
        Ok(new_arc)
    }

    /// `presence_notified` → `remove_outer_arcs` (§12): a connectivity identity drops every
    /// qspn arc whose neighbour lies outside its connectivity g-node (coordinate level ≥
    /// its `to` level). Returns the arcs removed.
    pub fn remove_outer_arcs(&mut self, idx: u32) -> Result<Vec<u32>, SystemError> {
        let id = self.identity(idx)?;
        let (_, to) = id
            .connectivity
            .filter(|_| !id.is_main())
            .ok_or(SystemError::NotConnectivity(idx))?;
        let outer: Vec<u32> = id
            .arcs
            .iter()
            .filter(|(_, a)| {
                a.qspn
                    .as_ref()
                    .and_then(|q| q.neighbour.as_ref())
                    .and_then(|nb| id.address.coord_of(nb))
                    .is_some_and(|c| c.lvl >= to)
            })
            .map(|(k, _)| *k)
            .collect();
        let mut next = self.clone();
        for a in &outer {
            next.remove_arc(idx, *a)?;
        }
        *self = next;
        Ok(outer)
    }

    /// `check_connectivity` (§13): can this connectivity identity go without splitting its
    /// g-nodes? Rule (UseCases19, on the paths the identity knows): from the lowest level
    /// `i ≥ from−1` where it knows destinations, every destination of levels `i … to−1` must
    /// be reachable, without this identity, by every known neighbour inside its level-`to`
    /// g-node: i.e. some known path starts with the arc to that neighbour. No state change.
    pub fn check_connectivity(&self, idx: u32) -> Result<Connectivity, SystemError> {
        let id = self.identity(idx)?;
        let (from, to) = id
            .connectivity
            .filter(|_| !id.is_main())
            .ok_or(SystemError::NotConnectivity(idx))?;
        let inner: Vec<(u32, HCoord)> = id
            .arcs
            .iter()
            .filter_map(|(k, a)| {
                let nb = a.qspn.as_ref()?.neighbour.as_ref()?;
                let c = id.address.coord_of(nb)?;
                (c.lvl < to).then_some((*k, c))
            })
            .collect();
        let lowest = id
            .paths
            .keys()
            .map(|d| d.lvl)
            .filter(|l| *l + 1 >= from)
            .min();
        let mut needed = BTreeSet::new();
        if let Some(i) = lowest {
            for (d, ps) in id.paths.iter().filter(|(d, _)| d.lvl >= i && d.lvl < to) {
                for (arc, c) in &inner {
                    if *c == *d {
                        continue; // the neighbour is the destination
                    }
                    if !ps.iter().any(|p| p.arc == *arc) {
                        needed.insert(format!("{},{}", d.lvl, d.pos));
                    }
                }
            }
        }
        Ok(Connectivity {
            removable: needed.is_empty(),
            needed_for: needed.into_iter().collect(),
        })
    }
}
