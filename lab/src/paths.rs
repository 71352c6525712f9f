//! A deterministic model of the paths QSPN would know (lifecycle.md §2.6), for test oracles
//! and the lab: the daemons are fed what the reference's routing module would have learnt.
//!
//! Model: the graph of identities of one network (nodes with addresses, qspn arcs with a
//! cost per direction). A path from identity `X` is a simple walk `X → N1 → … → Nm`; its
//! hops are the HCoords of its nodes relative to `X` with consecutive repeats merged. A walk
//! is admissible when its hop levels never decrease (the *grouping rule*: through a
//! neighbour outside my level-`v` g-node only destinations of level ≥ `v` are reachable)
//! and no hop repeats (the *acyclic rule*). The walk is a path to the destination of its
//! last hop at the node where it first enters it. Paths are ranked by cost (sum of the arc
//! costs of the side that sends), then by hop count, then by the order of the first arc.
//! Unlike QSPN, every admissible path is kept (QSPN keeps up to 5 disjoint ones), so a
//! forwarding table may find an alternative QSPN would not know (scenarios.md label [M]).
use std::collections::BTreeMap;

use ntkplane::addr::{HCoord, NtkAddress, Topology};
use ntkplane::fwd::Path;

/// A node of the graph: one identity.
#[derive(Clone, Debug)]
pub struct Node {
    pub address: NtkAddress,
}

/// A qspn arc between nodes `a` and `b`; `arc_at_a`/`arc_at_b` are its indices in each
/// identity's arc list (what [`Path::arc`] names), `cost_*` the cost measured by each end.
#[derive(Clone, Debug)]
pub struct Edge {
    pub a: usize,
    pub b: usize,
    pub arc_at_a: u32,
    pub arc_at_b: u32,
    pub cost_a: u64,
    pub cost_b: u64,
}

/// Longest walk explored; the graphs of a lab are far smaller.
const MAX_DEPTH: usize = 24;

/// Paths known by node `me`, per destination, best first.
pub fn paths_from(
    t: &Topology,
    nodes: &[Node],
    edges: &[Edge],
    me: usize,
) -> BTreeMap<HCoord, Vec<Path>> {
    // adjacency: node → (neighbour, my arc index, cost)
    let mut adj: Vec<Vec<(usize, u32, u64)>> = vec![Vec::new(); nodes.len()];
    for e in edges {
        adj[e.a].push((e.b, e.arc_at_a, e.cost_a));
        adj[e.b].push((e.a, e.arc_at_b, e.cost_b));
    }
    let mut found: BTreeMap<HCoord, Vec<(u64, usize, usize, Path)>> = BTreeMap::new();
    let me_addr = &nodes[me].address;
    let mut visited = vec![false; nodes.len()];
    visited[me] = true;
    for (order, &(nb, arc, cost)) in adj[me].iter().enumerate() {
        let mut hops = Vec::new();
        walk(
            t,
            nodes,
            &adj,
            me_addr,
            nb,
            arc,
            order,
            cost,
            &mut hops,
            &mut visited,
            &mut found,
            1,
        );
    }
    found
        .into_iter()
        .map(|(hc, mut v)| {
            v.sort_by_key(|x| (x.0, x.1, x.2));
            // Keep the best walk per (first arc, hop list).
            let mut seen = Vec::new();
            let paths = v
                .into_iter()
                .filter(|(_, _, _, p)| {
                    let key = (p.arc, p.hops.clone());
                    if seen.contains(&key) {
                        false
                    } else {
                        seen.push(key);
                        true
                    }
                })
                .map(|(_, _, _, p)| p)
                .collect();
            (hc, paths)
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn walk(
    t: &Topology,
    nodes: &[Node],
    adj: &[Vec<(usize, u32, u64)>],
    me: &NtkAddress,
    at: usize,
    first_arc: u32,
    order: usize,
    cost: u64,
    hops: &mut Vec<HCoord>,
    visited: &mut [bool],
    found: &mut BTreeMap<HCoord, Vec<(u64, usize, usize, Path)>>,
    depth: usize,
) {
    if visited[at] || depth > MAX_DEPTH {
        return;
    }
    let Some(c) = me.coord_of(&nodes[at].address) else {
        return;
    };
    let pushed = match hops.last() {
        Some(last) if *last == c => false,
        Some(last) if c.lvl < last.lvl || hops.contains(&c) => return,
        _ => {
            hops.push(c);
            true
        }
    };
    if pushed && c.pos < t.gsize(c.lvl) {
        found.entry(c).or_default().push((
            cost,
            hops.len(),
            order,
            Path {
                arc: first_arc,
                hops: hops.clone(),
                cost,
            },
        ));
    }
    visited[at] = true;
    for &(nb, _, c2) in &adj[at] {
        walk(
            t,
            nodes,
            adj,
            me,
            nb,
            first_arc,
            order,
            cost + c2,
            hops,
            visited,
            found,
            depth + 1,
        );
    }
    visited[at] = false;
    if pushed {
        hops.pop();
    }
}
