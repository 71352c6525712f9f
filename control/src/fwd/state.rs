//! The forwarding state of one identity (forwarding-state.md §2–§10, lifecycle.md §2.3):
//! a pure function of its address, its arcs and the paths it knows.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use serde::{Deserialize, Serialize};

use super::tables::{table_name, NTK_TABLE};
use crate::{
    addr::{
        destinations,
        ipv4::{global_node, internal_node, localhost, own_ips},
        nat::{netmap, snat, NetmapRule, SnatRule},
        DestKind, HCoord, Ipv4Prefix, NtkAddress, Topology,
    },
    mac::MacAddr,
};

/// Rule priorities. The kernel consults `local` (0) first, then ntkplane's fwmark rules,
/// then the catch-all `ntk` rule, then `main` (32766): the reference's order
/// (identities.md §5.3), made explicit. Everything in `PRIO_FWMARK..=PRIO_NTK` is ntkplane's.
pub const PRIO_FWMARK: u32 = 32764;
pub const PRIO_NTK: u32 = 32765;

/// An interface of the identity: a real NIC (main identity) or a pseudo-interface
/// (connectivity identity), with its link-local address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub linklocal: Ipv4Addr,
}

/// An identity arc as the forwarding state needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arc {
    /// The arc's index within the identity (paths name their first hop by it).
    pub id: u32,
    /// Our interface (name in the identity's namespace) the neighbour is reached on.
    pub dev: String,
    pub peer_mac: MacAddr,
    pub peer_linklocal: Ipv4Addr,
    /// Set when the arc is a qspn arc (the neighbour is in our network).
    pub qspn: Option<QspnArc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QspnArc {
    /// The table id of the neighbour's MAC (from [`super::tables::TableIds`]).
    pub table: u32,
    /// The neighbour's maximum distinct g-node, once known (first ETP received). Until
    /// then its table stays all `unreachable` and has no rule.
    pub neighbour: Option<HCoord>,
}

/// A path QSPN knows: first hop and hop list (HCoords relative to the identity, the
/// destination last).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Path {
    pub arc: u32,
    pub hops: Vec<HCoord>,
    pub cost: u64,
}

/// Everything the forwarding state of one identity depends on.
#[derive(Clone, Debug)]
pub struct IdentityInput<'a> {
    pub topology: &'a Topology,
    pub subnet_level: usize,
    pub address: NtkAddress,
    /// The main identity owns the default namespace: `ntk`, own addresses, NAT.
    pub main: bool,
    pub serve_anonymous: bool,
    pub anonymizer: bool,
    /// For a new identity still in bootstrap (lifecycle.md §2.3): the guest level `g`;
    /// paths towards destinations of level ≥ g are not trusted yet.
    pub bootstrap_level: Option<usize>,
    pub interfaces: Vec<Interface>,
    pub arcs: Vec<Arc>,
    /// Known paths per destination; any order (they are ranked by cost, stably).
    pub paths: BTreeMap<HCoord, Vec<Path>>,
}

/// A route value (forwarding-state.md §5.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Route {
    Unreachable,
    Blackhole,
    Via {
        gw: Ipv4Addr,
        dev: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        src: Option<Ipv4Addr>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub id: u32,
    pub name: String,
    pub routes: BTreeMap<Ipv4Prefix, Route>,
}

/// `ip rule`: `[fwmark N] lookup T` at a priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rule {
    pub priority: u32,
    pub fwmark: Option<u32>,
    pub table: u32,
}

/// A /32 address on an interface.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IfAddr {
    pub dev: String,
    pub addr: Ipv4Addr,
}

/// `<peer link-local> dev <dev> src <own link-local>` in table `main`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NeighbourRoute {
    pub dst: Ipv4Addr,
    pub dev: String,
    pub src: Ipv4Addr,
}

/// What one identity's namespace must contain (forwarding-state.md §10).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardingState {
    pub tables: BTreeMap<u32, Table>,
    pub rules: BTreeSet<Rule>,
    /// Source MAC → mark (= table id), one per qspn arc, from table creation on.
    pub marks: BTreeMap<MacAddr, u32>,
    /// Addresses in assignment order (ntk localhost, link-locals, own addresses).
    pub addresses: Vec<IfAddr>,
    pub neighbour_routes: BTreeSet<NeighbourRoute>,
    pub snat: Option<SnatRule>,
    pub netmap: Vec<NetmapRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("arc {arc} uses interface '{dev}', which the identity does not have")]
    UnknownInterface { arc: u32, dev: String },
    #[error("two arcs have index {0}")]
    DuplicateArc(u32),
    #[error("two qspn arcs use table {table} ({a} and {b}): one table per neighbour MAC")]
    SharedTable { table: u32, a: MacAddr, b: MacAddr },
    #[error("qspn arc {arc} uses table {table}, which is reserved for `ntk` or the kernel")]
    ReservedTable { arc: u32, table: u32 },
}

/// Computes the identity's forwarding state.
pub fn compute(input: &IdentityInput) -> Result<ForwardingState, StateError> {
    let t = input.topology;
    let n = &input.address;
    validate(input)?;
    let dests = destinations(t, n, input.subnet_level);
    let arcs: BTreeMap<u32, &Arc> = input.arcs.iter().map(|a| (a.id, a)).collect();

    // Paths, ranked: cheapest first, input order among equals; only real destinations,
    // via qspn arcs, and not while bootstrapping at that level.
    let ranked: BTreeMap<HCoord, Vec<&Path>> = input
        .paths
        .iter()
        .filter(|(hc, _)| hc.pos < t.gsize(hc.lvl))
        .filter(|(hc, _)| input.bootstrap_level.is_none_or(|g| hc.lvl < g))
        .map(|(hc, ps)| {
            let mut v: Vec<&Path> = ps
                .iter()
                .filter(|p| arcs.get(&p.arc).is_some_and(|a| a.qspn.is_some()))
                .collect();
            v.sort_by_key(|p| p.cost);
            (*hc, v)
        })
        .collect();

    let via = |p: &Path, src: Option<Ipv4Addr>| {
        let a = arcs[&p.arc];
        Route::Via {
            gw: a.peer_linklocal,
            dev: a.dev.clone(),
            src,
        }
    };
    let own_global = global_node(t, n);
    let src_for = |kind: DestKind| match kind {
        DestKind::Global | DestKind::Anonymizing => own_global,
        DestKind::Internal(k) => internal_node(t, n, k),
    };

    let mut st = ForwardingState::default();
    if input.main {
        let mut routes = BTreeMap::new();
        for d in &dests {
            let best = ranked.get(&d.hc).and_then(|v| v.first());
            let r = match best {
                Some(p) => via(p, src_for(d.kind)),
                None => Route::Unreachable,
            };
            routes.insert(d.prefix, r);
        }
        st.tables.insert(
            NTK_TABLE,
            Table {
                id: NTK_TABLE,
                name: "ntk".into(),
                routes,
            },
        );
        st.rules.insert(Rule {
            priority: PRIO_NTK,
            fwmark: None,
            table: NTK_TABLE,
        });
    }
    for a in &input.arcs {
        let Some(q) = &a.qspn else { continue };
        st.marks.insert(a.peer_mac, q.table);
        let mut routes = BTreeMap::new();
        for d in &dests {
            let r = match q.neighbour {
                None => Route::Unreachable,
                Some(hn) => match d.kind {
                    DestKind::Internal(k) if hn.lvl >= k => Route::Blackhole,
                    _ => ranked
                        .get(&d.hc)
                        .and_then(|v| v.iter().find(|p| !p.hops.contains(&hn)))
                        .map_or(Route::Unreachable, |p| via(p, None)),
                },
            };
            routes.insert(d.prefix, r);
        }
        st.tables.insert(
            q.table,
            Table {
                id: q.table,
                name: table_name(a.peer_mac),
                routes,
            },
        );
        if q.neighbour.is_some() {
            st.rules.insert(Rule {
                priority: PRIO_FWMARK,
                fwmark: Some(q.table),
                table: q.table,
            });
        }
    }

    if input.main {
        st.addresses.push(IfAddr {
            dev: "lo".into(),
            addr: localhost(t),
        });
    }
    for i in &input.interfaces {
        st.addresses.push(IfAddr {
            dev: i.name.clone(),
            addr: i.linklocal,
        });
    }
    if input.main {
        for i in &input.interfaces {
            for (_, ip) in own_ips(t, n, input.serve_anonymous) {
                st.addresses.push(IfAddr {
                    dev: i.name.clone(),
                    addr: ip,
                });
            }
        }
        st.snat = snat(t, n, input.anonymizer);
        st.netmap = netmap(t, n, input.subnet_level, input.serve_anonymous);
    }
    let ll: BTreeMap<&str, Ipv4Addr> = input
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i.linklocal))
        .collect();
    for a in &input.arcs {
        st.neighbour_routes.insert(NeighbourRoute {
            dst: a.peer_linklocal,
            dev: a.dev.clone(),
            src: ll[a.dev.as_str()],
        });
    }
    Ok(st)
}

fn validate(input: &IdentityInput) -> Result<(), StateError> {
    let devs: BTreeSet<&str> = input.interfaces.iter().map(|i| i.name.as_str()).collect();
    let mut ids = BTreeSet::new();
    let mut tables: BTreeMap<u32, MacAddr> = BTreeMap::new();
    for a in &input.arcs {
        if !devs.contains(a.dev.as_str()) {
            return Err(StateError::UnknownInterface {
                arc: a.id,
                dev: a.dev.clone(),
            });
        }
        if !ids.insert(a.id) {
            return Err(StateError::DuplicateArc(a.id));
        }
        if let Some(q) = &a.qspn {
            if q.table == NTK_TABLE || q.table == 0 || (252..=255).contains(&q.table) {
                return Err(StateError::ReservedTable {
                    arc: a.id,
                    table: q.table,
                });
            }
            if let Some(other) = tables.insert(q.table, a.peer_mac) {
                if other != a.peer_mac {
                    return Err(StateError::SharedTable {
                        table: q.table,
                        a: other,
                        b: a.peer_mac,
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Topology {
        "4.2.2.2".parse().unwrap()
    }
    fn hc(lvl: usize, pos: u32) -> HCoord {
        HCoord { lvl, pos }
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn p(s: &str) -> Ipv4Prefix {
        s.parse().unwrap()
    }
    fn arc(id: u32, mac: &str, ll: &str, table: u32, nb: Option<HCoord>) -> Arc {
        Arc {
            id,
            dev: "eth1".into(),
            peer_mac: mac.parse().unwrap(),
            peer_linklocal: ip(ll),
            qspn: Some(QspnArc {
                table,
                neighbour: nb,
            }),
        }
    }
    fn input<'a>(
        t: &'a Topology,
        addr: &str,
        arcs: Vec<Arc>,
        paths: BTreeMap<HCoord, Vec<Path>>,
    ) -> IdentityInput<'a> {
        IdentityInput {
            topology: t,
            subnet_level: 0,
            address: NtkAddress::parse(addr, t).unwrap(),
            main: true,
            serve_anonymous: false,
            anonymizer: true,
            bootstrap_level: None,
            interfaces: vec![Interface {
                name: "eth1".into(),
                linklocal: ip("169.254.1.1"),
            }],
            arcs,
            paths,
        }
    }

    /// Eventi2: β₁ still virtual at level 0 routes `10.0.0.22/32` without `src`; once real
    /// (2·1·1·1) the same route carries `src 10.0.0.23`.
    #[test]
    fn src_appears_only_with_the_own_address() {
        let t = t();
        let arcs = vec![arc(
            0,
            "00:16:3E:5B:78:D5",
            "169.254.94.223",
            250,
            Some(hc(0, 0)),
        )];
        let paths = BTreeMap::from([(
            hc(0, 0),
            vec![Path {
                arc: 0,
                hops: vec![hc(0, 0)],
                cost: 1,
            }],
        )]);
        let virt = compute(&input(&t, "2.1.1.2", arcs.clone(), paths.clone())).unwrap();
        let r = &virt.tables[&NTK_TABLE].routes[&p("10.0.0.22/32")];
        assert_eq!(
            *r,
            Route::Via {
                gw: ip("169.254.94.223"),
                dev: "eth1".into(),
                src: None
            }
        );
        let real = compute(&input(&t, "2.1.1.1", arcs, paths)).unwrap();
        let ntk = &real.tables[&NTK_TABLE].routes;
        let src = |pfx: &str| match &ntk[&p(pfx)] {
            Route::Via { src, .. } => *src,
            other => panic!("{pfx}: {other:?}"),
        };
        assert_eq!(src("10.0.0.22/32"), Some(ip("10.0.0.23")));
        assert_eq!(
            src("10.0.0.86/32"),
            Some(ip("10.0.0.23")),
            "anonymizing prefix: src = own global"
        );
        assert_eq!(src("10.0.0.62/32"), Some(ip("10.0.0.63")));
        assert_eq!(src("10.0.0.50/32"), Some(ip("10.0.0.51")));
        assert_eq!(src("10.0.0.40/32"), Some(ip("10.0.0.41")));
        // Forwarding tables never carry src.
        assert!(real.tables[&250]
            .routes
            .values()
            .all(|r| !matches!(r, Route::Via { src: Some(_), .. })));
    }

    #[test]
    fn cheapest_path_wins_and_equal_costs_keep_input_order() {
        let t = t();
        let arcs = vec![
            arc(0, "02:00:00:00:00:01", "169.254.0.1", 250, Some(hc(1, 0))),
            arc(1, "02:00:00:00:00:02", "169.254.0.2", 249, Some(hc(2, 0))),
        ];
        let paths = BTreeMap::from([(
            hc(3, 0),
            vec![
                Path {
                    arc: 0,
                    hops: vec![hc(1, 0), hc(3, 0)],
                    cost: 30,
                },
                Path {
                    arc: 1,
                    hops: vec![hc(2, 0), hc(3, 0)],
                    cost: 20,
                },
            ],
        )]);
        let st = compute(&input(&t, "3.1.1.1", arcs, paths)).unwrap();
        let gw = |table: u32| match &st.tables[&table].routes[&p("10.0.0.0/29")] {
            Route::Via { gw, .. } => gw.to_string(),
            r => format!("{r:?}"),
        };
        assert_eq!(gw(NTK_TABLE), "169.254.0.2", "cost 20 beats 30");
        // Table of the neighbour at (2,0): the cheaper path contains (2,0), take the other.
        assert_eq!(gw(249), "169.254.0.1");
        assert_eq!(gw(250), "169.254.0.2");
    }

    #[test]
    fn bootstrap_ignores_paths_at_and_above_the_guest_level() {
        let t = t();
        let arcs = vec![arc(
            0,
            "02:00:00:00:00:01",
            "169.254.0.1",
            250,
            Some(hc(0, 0)),
        )];
        let paths = BTreeMap::from([
            (
                hc(0, 0),
                vec![Path {
                    arc: 0,
                    hops: vec![hc(0, 0)],
                    cost: 1,
                }],
            ),
            (
                hc(2, 0),
                vec![Path {
                    arc: 0,
                    hops: vec![hc(0, 0), hc(2, 0)],
                    cost: 2,
                }],
            ),
        ]);
        let mut i = input(&t, "2.1.1.1", arcs, paths);
        i.bootstrap_level = Some(1);
        let st = compute(&i).unwrap();
        let ntk = &st.tables[&NTK_TABLE].routes;
        assert!(
            matches!(ntk[&p("10.0.0.22/32")], Route::Via { .. }),
            "level 0 < g: trusted"
        );
        assert_eq!(
            ntk[&p("10.0.0.16/30")],
            Route::Unreachable,
            "level 2 ≥ g: still bootstrapping"
        );
    }

    #[test]
    fn paths_over_non_qspn_arcs_and_to_virtual_destinations_are_ignored() {
        let t = t();
        let mut plain = arc(1, "02:00:00:00:00:09", "169.254.0.9", 0, None);
        plain.qspn = None;
        let arcs = vec![
            arc(0, "02:00:00:00:00:01", "169.254.0.1", 250, Some(hc(0, 0))),
            plain,
        ];
        let paths = BTreeMap::from([
            (
                hc(2, 0),
                vec![Path {
                    arc: 1,
                    hops: vec![hc(2, 0)],
                    cost: 1,
                }],
            ),
            (
                hc(0, 3),
                vec![Path {
                    arc: 0,
                    hops: vec![hc(0, 3)],
                    cost: 1,
                }],
            ),
        ]);
        let st = compute(&input(&t, "2.1.1.1", arcs, paths)).unwrap();
        assert_eq!(
            st.tables[&NTK_TABLE].routes[&p("10.0.0.16/30")],
            Route::Unreachable
        );
        assert_eq!(st.tables.len(), 2, "no table for a non-qspn arc");
        assert_eq!(st.marks.len(), 1);
        assert_eq!(
            st.neighbour_routes.len(),
            2,
            "every identity arc gets its host route"
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        let t = t();
        let mut a = arc(0, "02:00:00:00:00:01", "169.254.0.1", 250, None);
        a.dev = "eth9".into();
        assert_eq!(
            compute(&input(&t, "2.1.1.1", vec![a], BTreeMap::new())).unwrap_err(),
            StateError::UnknownInterface {
                arc: 0,
                dev: "eth9".into()
            }
        );
        let dup = vec![
            arc(0, "02:00:00:00:00:01", "169.254.0.1", 250, None),
            arc(0, "02:00:00:00:00:02", "169.254.0.2", 249, None),
        ];
        assert_eq!(
            compute(&input(&t, "2.1.1.1", dup, BTreeMap::new())).unwrap_err(),
            StateError::DuplicateArc(0)
        );
        let shared = vec![
            arc(0, "02:00:00:00:00:01", "169.254.0.1", 250, None),
            arc(1, "02:00:00:00:00:02", "169.254.0.2", 250, None),
        ];
        assert!(matches!(
            compute(&input(&t, "2.1.1.1", shared, BTreeMap::new())),
            Err(StateError::SharedTable { table: 250, .. })
        ));
        let reserved = vec![arc(0, "02:00:00:00:00:01", "169.254.0.1", 251, None)];
        assert!(matches!(
            compute(&input(&t, "2.1.1.1", reserved, BTreeMap::new())),
            Err(StateError::ReservedTable { .. })
        ));
    }
}
