//! Fingerprint operations (qspn.md §6.2): construction of a g-node's fingerprint from its
//! members' and the elder test between two fingerprints of the same g-node.
//!
//! Peer data may be malformed (short eldership lists): a missing eldership is read as
//! [`NULL_ELDERSHIP`] (never elder), nothing here indexes without a check.
use std::cmp::Ordering;

use super::msg::{Eldership, Fingerprint, NULL_ELDERSHIP};

fn first_eldership(f: &Fingerprint) -> Eldership {
    f.elderships.first().copied().unwrap_or(NULL_ELDERSHIP)
}

/// `construct(mine, others, is_null_eldership)` (§6.2): the level-`i` fingerprint from the
/// level-`(i−1)` fingerprint of my g-node (`mine`) and those of the other level-`(i−1)`
/// g-nodes inside it. `mine_null`: my g-node is a connectivity g-node (§6.4), its eldership
/// is null and it can give its id upward only if nobody else is there.
pub fn construct<'a>(
    mine: &Fingerprint,
    others: impl IntoIterator<Item = &'a Fingerprint>,
    mine_null: bool,
) -> Fingerprint {
    construct_with(mine, others.into_iter().map(|f| (f, false)), mine_null)
}

/// [`construct`] where each other g-node says whether it is a connectivity g-node (a
/// virtual position, §6.4): its eldership is null for whoever computes, not only for its
/// own members. Else its members (null) and the other members of the upper g-node (its
/// real eldership) could take different eldest ones, and the upper g-node's members would
/// advertise it with different fingerprints — a split that is not one (S2: after migr02 the
/// connectivity g-node `2·1·2·` kept S1's `2·1·1·`'s fingerprint and δ took it for `2·1·`'s
/// eldest, λ₁ did not; ε₂ then saw `2·1·` split and routed it away from λ₁).
pub fn construct_with<'a>(
    mine: &Fingerprint,
    others: impl IntoIterator<Item = (&'a Fingerprint, bool)>,
    mine_null: bool,
) -> Fingerprint {
    let mut eldest = mine;
    let mut eldest_e = if mine_null {
        NULL_ELDERSHIP
    } else {
        first_eldership(mine)
    };
    for (o, null) in others {
        let e = if null {
            NULL_ELDERSHIP
        } else {
            first_eldership(o)
        };
        // A null eldership is never elder (§19). Equal elderships (the reference never has
        // them: they are arrival orders; ntkplane's runtime derives them from clocks, docs/
        // QSPN.md) go to the smaller id, so that every member computes the same eldest.
        if e != NULL_ELDERSHIP && (e < eldest_e || (e == eldest_e && o.id < eldest.id)) {
            eldest = o;
            eldest_e = e;
        }
    }
    let mut seed = Vec::with_capacity(eldest.elderships_seed.len() + 1);
    seed.push(eldest_e);
    seed.extend_from_slice(&eldest.elderships_seed);
    Fingerprint {
        id: eldest.id,
        level: mine.level.saturating_add(1),
        elderships: mine.elderships.get(1..).unwrap_or(&[]).to_vec(),
        elderships_seed: seed,
    }
}

/// Elder order between two fingerprints of the same destination (§6.2 `elder_seed`):
/// `Less` = `a` is elder. Lexicographic on `elderships_seed` (smaller = elder); ties
/// (malformed or identical seeds) are broken by id so the order is total and deterministic.
pub fn elder_cmp(a: &Fingerprint, b: &Fingerprint) -> Ordering {
    a.elderships_seed
        .cmp(&b.elderships_seed)
        .then(a.id.cmp(&b.id))
}

/// `equals` (§6.2): same id.
pub fn same(a: &Fingerprint, b: &Fingerprint) -> bool {
    a.id == b.id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp0(id: u64, e: &[u32]) -> Fingerprint {
        Fingerprint {
            id,
            level: 0,
            elderships: e.to_vec(),
            elderships_seed: vec![],
        }
    }

    #[test]
    fn construct_alone_keeps_my_id() {
        let me = fp0(7, &[3, 1, 0]);
        let f = construct(&me, [], false);
        assert_eq!(f.id, 7);
        assert_eq!(f.level, 1);
        assert_eq!(f.elderships, vec![1, 0]);
        assert_eq!(f.elderships_seed, vec![3]);
    }

    #[test]
    fn construct_takes_the_eldest() {
        let me = fp0(7, &[3, 1, 0]);
        let a = fp0(8, &[1, 1, 0]);
        let b = fp0(9, &[2, 1, 0]);
        let f = construct(&me, [&b, &a], false);
        assert_eq!(f.id, 8);
        assert_eq!(f.elderships, vec![1, 0]);
        assert_eq!(f.elderships_seed, vec![1]);
        // Next level: the seed chain grows.
        let g = construct(&f, [], false);
        assert_eq!(g.id, 8);
        assert_eq!(g.level, 2);
        assert_eq!(g.elderships, vec![0]);
        assert_eq!(g.elderships_seed, vec![1, 1]);
    }

    #[test]
    fn equal_elderships_go_to_the_smaller_id_whoever_computes() {
        let a = fp0(8, &[5, 0]);
        let b = fp0(3, &[5, 0]);
        let c = fp0(9, &[6, 0]);
        assert_eq!(construct(&a, [&b, &c], false).id, 3);
        assert_eq!(construct(&b, [&a, &c], false).id, 3);
        assert_eq!(construct(&c, [&a, &b], false).id, 3);
    }

    #[test]
    fn null_eldership_never_elder() {
        let me = fp0(7, &[0, 0]);
        let a = fp0(8, &[5, 0]);
        // Mine is a connectivity g-node: the other one gives the id.
        assert_eq!(construct(&me, [&a], true).id, 8);
        // Alone, the connectivity g-node still gives its own id, with a null seed.
        let f = construct(&me, [], true);
        assert_eq!(f.id, 7);
        assert_eq!(f.elderships_seed, vec![NULL_ELDERSHIP]);
        // A peer's null eldership never wins.
        let n = fp0(9, &[NULL_ELDERSHIP]);
        assert_eq!(construct(&a, [&n], false).id, 8);
    }

    #[test]
    fn a_connectivity_g_node_never_gives_its_id_to_outsiders() {
        let me = fp0(7, &[5, 0]);
        let conn = fp0(3, &[5, 0]);
        let real = fp0(9, &[6, 0]);
        // Without the flag the connectivity g-node (same eldership, smaller id) wins.
        assert_eq!(construct(&me, [&conn, &real], false).id, 3);
        assert_eq!(
            construct_with(&me, [(&conn, true), (&real, false)], false).id,
            7
        );
        // Its own members, for whom it is `mine_null`, agree.
        assert_eq!(construct(&conn, [&me, &real], true).id, 7);
    }

    #[test]
    fn malformed_peer_fingerprint_does_not_panic() {
        let me = fp0(7, &[]);
        let bad = fp0(9, &[]);
        let f = construct(&me, [&bad], false);
        assert_eq!(f.id, 7);
        assert!(f.elderships.is_empty());
    }

    #[test]
    fn elder_by_seed_then_id() {
        let mut a = fp0(1, &[]);
        let mut b = fp0(2, &[]);
        a.elderships_seed = vec![0, 3];
        b.elderships_seed = vec![1, 0];
        assert_eq!(elder_cmp(&a, &b), Ordering::Less);
        b.elderships_seed = vec![0, 3];
        assert_eq!(elder_cmp(&a, &b), Ordering::Less);
        assert!(same(&a, &a.clone()));
    }
}
