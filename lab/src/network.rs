//! A network of identities (addresses, interfaces, qspn arcs with costs) and the input of
//! any one identity's forwarding state, with the paths given by the path model. Used by
//! the golden tests, the kernel tests and the lab.
use std::{collections::BTreeMap, net::Ipv4Addr};

use crate::paths::{paths_from, Edge, Node};
use ntkplane::fwd::{Arc, IdentityInput, Interface, QspnArc};
use ntkplane::{
    addr::{NtkAddress, Topology},
    mac::MacAddr,
};

/// One identity: its address and the interface (name in its own namespace, MAC,
/// link-local) its arcs use.
#[derive(Clone, Debug)]
pub struct NetIdentity {
    pub name: String,
    pub address: NtkAddress,
    pub dev: String,
    pub mac: MacAddr,
    pub linklocal: Ipv4Addr,
    pub main: bool,
}

/// A qspn arc between two identities, with the cost each end measures.
#[derive(Clone, Debug)]
pub struct NetArc {
    pub a: String,
    pub b: String,
    pub cost_a: u64,
    pub cost_b: u64,
}

#[derive(Clone, Debug)]
pub struct Network {
    pub topology: Topology,
    pub identities: Vec<NetIdentity>,
    pub arcs: Vec<NetArc>,
}

/// Per-identity options of [`Network::input`].
#[derive(Clone, Debug, Default)]
pub struct InputOptions {
    pub subnet_level: usize,
    pub serve_anonymous: bool,
    pub anonymizer: bool,
    /// Neighbours (by MAC) not known yet: their tables stay unreachable, without rule.
    pub unknown: Vec<MacAddr>,
}

impl Network {
    pub fn index(&self, name: &str) -> Option<usize> {
        self.identities.iter().position(|i| i.name == name)
    }

    /// The input of identity `me`'s forwarding state: one qspn arc per arc of the network
    /// touching it (arc indices in the order the arcs are listed), table ids from `table`,
    /// paths from the path model.
    pub fn input(
        &self,
        me: &str,
        table: impl Fn(MacAddr) -> u32,
        opts: &InputOptions,
    ) -> Option<IdentityInput<'_>> {
        let m = self.index(me)?;
        let nodes: Vec<Node> = self
            .identities
            .iter()
            .map(|i| Node {
                address: i.address.clone(),
            })
            .collect();
        let mut next = vec![0u32; nodes.len()];
        let mut edges = Vec::new();
        for a in &self.arcs {
            let (x, y) = (self.index(&a.a)?, self.index(&a.b)?);
            edges.push(Edge {
                a: x,
                b: y,
                arc_at_a: next[x],
                arc_at_b: next[y],
                cost_a: a.cost_a,
                cost_b: a.cost_b,
            });
            next[x] += 1;
            next[y] += 1;
        }
        let my = &self.identities[m];
        let mut arcs = Vec::new();
        for e in &edges {
            let (peer, id) = match (e.a == m, e.b == m) {
                (true, _) => (e.b, e.arc_at_a),
                (_, true) => (e.a, e.arc_at_b),
                _ => continue,
            };
            let p = &self.identities[peer];
            arcs.push(Arc {
                id,
                dev: my.dev.clone(),
                peer_mac: p.mac,
                peer_linklocal: p.linklocal,
                qspn: Some(QspnArc {
                    table: table(p.mac),
                    neighbour: (!opts.unknown.contains(&p.mac))
                        .then(|| my.address.coord_of(&p.address))
                        .flatten(),
                }),
            });
        }
        Some(IdentityInput {
            topology: &self.topology,
            subnet_level: opts.subnet_level,
            address: my.address.clone(),
            main: my.main,
            serve_anonymous: opts.serve_anonymous,
            anonymizer: opts.anonymizer,
            bootstrap_level: None,
            interfaces: vec![Interface {
                name: my.dev.clone(),
                linklocal: my.linklocal,
            }],
            arcs,
            paths: paths_from(&self.topology, &nodes, &edges, m),
        })
    }
}

/// Compact constructor for tests and scenario tables:
/// `(name, address, dev, MAC, link-local, main)`.
pub fn identity(
    t: &Topology,
    name: &str,
    addr: &str,
    dev: &str,
    mac: &str,
    ll: &str,
    main: bool,
) -> NetIdentity {
    NetIdentity {
        name: name.into(),
        address: NtkAddress::parse(addr, t).expect("valid address"),
        dev: dev.into(),
        mac: mac.parse().expect("valid MAC"),
        linklocal: ll.parse().expect("valid link-local"),
        main,
    }
}

/// `(a, b, cost at a, cost at b)`.
pub fn arc(a: &str, b: &str, cost_a: u64, cost_b: u64) -> NetArc {
    NetArc {
        a: a.into(),
        b: b.into(),
        cost_a,
        cost_b,
    }
}

/// Table ids from a fixed MAC → id map (what the allocator produced on that system).
pub fn fixed_tables(map: &BTreeMap<MacAddr, u32>) -> impl Fn(MacAddr) -> u32 + '_ {
    move |m| *map.get(&m).unwrap_or_else(|| panic!("no table id for {m}"))
}
