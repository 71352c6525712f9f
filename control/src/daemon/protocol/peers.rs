//! The identities of the neighbour systems, as each one announces them on a real arc
//! (`IdentityAnnounce`, what the reference's Identities module exchanged), and how an
//! identity arc finds its way on the wire from them.
//!
//! Every identity's QSPN messages travel between the two systems' real NICs (their
//! link-locals: the real arc the Neighborhood measured), whatever namespace the identities
//! live in; `Qspn{src, dst}` name the two identities by the NodeIDs the announcements gave
//! them. An identity arc towards a peer's connectivity identity (its pseudo-interface's MAC
//! in the model) rests on the real arc over which that MAC was announced. Pure: no I/O.
use std::collections::BTreeMap;

use crate::{mac::MacAddr, wire::PeerIdentity};

/// (NIC, the neighbour system's real MAC): a real arc.
pub type RealArc = (String, MacAddr);

/// What each neighbour last announced, per real arc.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    by_arc: BTreeMap<RealArc, Vec<PeerIdentity>>,
}

impl Peers {
    /// Records an announcement; whether it differs from the previous one on that arc.
    pub fn learn(&mut self, arc: RealArc, identities: Vec<PeerIdentity>) -> bool {
        self.by_arc.insert(arc, identities.clone()) != Some(identities)
    }

    /// The real arc is gone: what was announced on it goes too.
    pub fn forget(&mut self, arc: &RealArc) {
        self.by_arc.remove(arc);
    }

    pub fn on_arc(&self, arc: &RealArc) -> &[PeerIdentity] {
        self.by_arc.get(arc).map_or(&[], Vec::as_slice)
    }

    /// The identity arc `(nic, peer_mac)`: the real arc it rests on (one of `measured`, the
    /// real arcs the Neighborhood made available) and the peer identity's NodeID. A peer
    /// identity's MAC is its system's real MAC (its main identity) or one of its
    /// pseudo-interfaces' (a connectivity identity); either way it was announced on the real
    /// arc. `None` before the announcement (the caller tries again: calls are retransmitted).
    pub fn resolve<'a>(
        &self,
        nic: &str,
        peer_mac: MacAddr,
        measured: impl IntoIterator<Item = &'a RealArc>,
    ) -> Option<(RealArc, u32)> {
        measured
            .into_iter()
            .filter(|(n, _)| n == nic)
            .find_map(|arc| {
                let id = self
                    .on_arc(arc)
                    .iter()
                    .find(|p| MacAddr(p.mac) == peer_mac)?;
                Some((arc.clone(), id.node_id))
            })
    }

    /// The MAC of the peer identity `node_id` announced on `arc`.
    pub fn mac_of(&self, arc: &RealArc, node_id: u32) -> Option<MacAddr> {
        self.on_arc(arc)
            .iter()
            .find(|p| p.node_id == node_id)
            .map(|p| MacAddr(p.mac))
    }
}

/// QSPN's `update_naddr` for a change of my address from `old_my` to `new_my` (low level
/// first, same length): the g-node that moved is the one of the highest changed level's
/// lower levels; an address inside it (an internal neighbour's, or mine) keeps its positions
/// below the lowest changed level and takes `new_my`'s from there up.
pub fn update_naddr(old_my: &[u32], new_my: &[u32]) -> impl Fn(&[u32]) -> Vec<u32> {
    let from = old_my
        .iter()
        .zip(new_my)
        .position(|(a, b)| a != b)
        .unwrap_or(new_my.len());
    let new_my = new_my.to_vec();
    move |n: &[u32]| {
        if n.len() != new_my.len() {
            return n.to_vec(); // QSPN ignores an update of another length
        }
        n.iter()
            .enumerate()
            .map(|(i, p)| if i < from { *p } else { new_my[i] })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn id(node_id: u32, mac: u8, main: bool) -> PeerIdentity {
        PeerIdentity {
            node_id,
            mac: [2, 0, 0, 0, 0, mac],
            linklocal: Ipv4Addr::new(169, 254, 0, mac),
            main,
        }
    }

    fn m(x: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, x])
    }

    fn arc(nic: &str, x: u8) -> RealArc {
        (nic.into(), m(x))
    }

    #[test]
    fn learn_says_whether_the_announcement_changed() {
        let mut p = Peers::default();
        assert!(p.learn(arc("eth1", 1), vec![id(10, 1, true)]));
        assert!(!p.learn(arc("eth1", 1), vec![id(10, 1, true)]));
        assert!(p.learn(arc("eth1", 1), vec![id(10, 1, true), id(11, 9, false)]));
        p.forget(&arc("eth1", 1));
        assert!(p.on_arc(&arc("eth1", 1)).is_empty());
    }

    #[test]
    fn an_identity_arc_to_a_main_identity_rests_on_its_real_arc() {
        let mut p = Peers::default();
        p.learn(arc("eth1", 1), vec![id(10, 1, true)]);
        let measured = [arc("eth1", 1)];
        assert_eq!(
            p.resolve("eth1", m(1), &measured),
            Some((arc("eth1", 1), 10))
        );
    }

    #[test]
    fn an_identity_arc_to_a_connectivity_identity_rests_on_the_arc_it_was_announced_on() {
        let mut p = Peers::default();
        p.learn(arc("eth1", 1), vec![id(10, 1, true), id(11, 9, false)]);
        p.learn(arc("eth1", 2), vec![id(20, 2, true)]);
        let measured = [arc("eth1", 1), arc("eth1", 2)];
        assert_eq!(
            p.resolve("eth1", m(9), &measured),
            Some((arc("eth1", 1), 11))
        );
        assert_eq!(p.mac_of(&arc("eth1", 1), 11), Some(m(9)));
        assert_eq!(p.mac_of(&arc("eth1", 2), 11), None);
    }

    #[test]
    fn nothing_resolves_before_the_announcement_or_without_a_measured_arc() {
        let mut p = Peers::default();
        assert_eq!(p.resolve("eth1", m(1), &[arc("eth1", 1)]), None);
        p.learn(arc("eth1", 1), vec![id(10, 1, true)]);
        assert_eq!(p.resolve("eth1", m(1), &[]), None, "the real arc is not up");
        assert_eq!(
            p.resolve("eth0", m(1), &[arc("eth1", 1)]),
            None,
            "another NIC"
        );
    }

    #[test]
    fn update_naddr_moves_what_is_inside_the_moving_gnode() {
        // Low level first: 2·1·1·1 → 2·0·1·1 (level 2 changed: the level-2 g-node moved).
        let f = update_naddr(&[1, 1, 1, 2], &[1, 1, 0, 2]);
        assert_eq!(f(&[1, 1, 1, 2]), vec![1, 1, 0, 2], "mine");
        assert_eq!(f(&[0, 1, 1, 2]), vec![0, 1, 0, 2], "an internal neighbour");
        assert_eq!(f(&[0, 0, 1, 2]), vec![0, 0, 0, 2]);
        // Connectivity: position 0 at level 1 becomes virtual 3.
        let f = update_naddr(&[1, 1, 1, 2], &[1, 3, 1, 2]);
        assert_eq!(f(&[0, 1, 1, 2]), vec![0, 3, 1, 2]);
        // Nothing changed, or a malformed address: unchanged.
        let f = update_naddr(&[1, 1], &[1, 1]);
        assert_eq!(f(&[0, 1]), vec![0, 1]);
        assert_eq!(f(&[0]), vec![0]);
    }
}
