//! The feed: from a network graph (identities, arcs, costs) the facts qspnclient learned from
//! its QSPN module — each neighbour's address and the paths an identity knows — as one
//! [`Feed`] per identity, with the daemon's own arc indices.
use std::collections::BTreeMap;

use crate::network::{InputOptions, Network};
use ntkplane::{
    daemon::proto::{DestPaths, Feed, KnownNeighbour},
    mac::MacAddr,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error("no identity '{0}' in the network")]
    UnknownIdentity(String),
    #[error("{me}: the daemon has no arc to {mac}")]
    NoArc { me: String, mac: MacAddr },
}

/// The feed of identity `me`: `arc_of(peer MAC)` is the daemon's arc index towards that peer.
pub fn feed_for(
    net: &Network,
    me: &str,
    arc_of: impl Fn(MacAddr) -> Option<u32>,
) -> Result<Feed, FeedError> {
    let input = net
        .input(me, |_| 0, &InputOptions::default())
        .ok_or_else(|| FeedError::UnknownIdentity(me.into()))?;
    let mut arc_map = BTreeMap::new();
    let mut neighbours = Vec::new();
    for a in &input.arcs {
        let arc = arc_of(a.peer_mac).ok_or(FeedError::NoArc {
            me: me.into(),
            mac: a.peer_mac,
        })?;
        arc_map.insert(a.id, arc);
        let peer = net
            .identities
            .iter()
            .find(|i| i.mac == a.peer_mac)
            .expect("arc peers are identities of the network");
        neighbours.push(KnownNeighbour {
            arc,
            address: peer.address.to_string(),
        });
    }
    let paths = input
        .paths
        .iter()
        .map(|(d, ps)| DestPaths {
            dest: *d,
            paths: ps
                .iter()
                .map(|p| {
                    let mut p = p.clone();
                    p.arc = arc_map[&p.arc];
                    p
                })
                .collect(),
        })
        .collect();
    Ok(Feed { neighbours, paths })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed;

    #[test]
    fn beta_at_s0_knows_alpha_and_gamma_with_its_own_arc_indices() {
        let net = seed::s0();
        let alpha: MacAddr = "00:16:3E:FD:E2:AA".parse().unwrap();
        // The daemon numbered γ 0 and α 1 (the network lists α first).
        let f = feed_for(&net, "beta1", |m| Some(if m == alpha { 1 } else { 0 })).unwrap();
        let nb: Vec<(u32, &str)> = f
            .neighbours
            .iter()
            .map(|n| (n.arc, n.address.as_str()))
            .collect();
        assert_eq!(nb, [(1, "2.0.1.0"), (0, "2.1.1.0")]);
        let via: Vec<u32> = f
            .paths
            .iter()
            .flat_map(|d| d.paths.iter().map(|p| p.arc))
            .collect();
        assert!(via.contains(&0) && via.contains(&1));
        assert_eq!(
            feed_for(&net, "beta1", |_| None),
            Err(FeedError::NoArc {
                me: "beta1".into(),
                mac: alpha
            })
        );
        assert!(matches!(
            feed_for(&net, "nobody", |_| None),
            Err(FeedError::UnknownIdentity(_))
        ));
    }
}
