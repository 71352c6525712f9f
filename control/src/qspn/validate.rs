//! Validation of a received ETP (qspn.md §7.3), plus the size caps this implementation adds
//! because every ETP is untrusted network data (docs/QSPN.md "Bounds").
use super::msg::{EtpMessage, Fingerprint, HCoord};

/// Most paths accepted in one ETP. A full ETP carries every stored path: at most
/// `max_paths` + a few mandatory ones per destination, and destinations are bounded by the
/// sum of the gsizes (×2 with virtual positions), so honest messages stay far below this.
pub const MAX_ETP_PATHS: usize = 16_384;

/// Most hops in a path or in an ETP's hop list: a path acyclic in g-nodes crosses each
/// level-`i` g-node of a level-`i+1` g-node at most once; with virtual positions that is
/// `2·gsize(i)` per level.
pub fn max_hops(gsizes: &[u32]) -> usize {
    gsizes
        .iter()
        .map(|&g| 2 * g as usize)
        .sum::<usize>()
        .clamp(1, 4096)
}

/// Why an ETP was rejected (for logs/tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    AddressLevels,
    /// A position ≥ 2·gsize (virtual positions are `gsize..2·gsize−1`, addressing.md §1):
    /// without this bound a peer could make my map grow without limit.
    Position,
    AddressIsMine,
    Counts,
    Hops,
    TooManyPaths,
    PathShape,
    PathFingerprint,
    IgnoreOutside,
}

/// The coordinate `(L, m[L])` of address `m` seen from `my` (§2.1): `None` if equal or of a
/// different length.
pub fn coord(my: &[u32], m: &[u32]) -> Option<HCoord> {
    if my.len() != m.len() {
        return None;
    }
    (0..my.len())
        .rev()
        .find(|&i| my[i] != m[i])
        .map(|lvl| HCoord { lvl, pos: m[lvl] })
}

fn pos_ok(lvl: usize, pos: u32, gsizes: &[u32]) -> bool {
    gsizes
        .get(lvl)
        .is_some_and(|&g| u64::from(pos) < 2 * u64::from(g))
}

fn hops_ok(hops: &[HCoord], gsizes: &[u32], cap: usize) -> bool {
    hops.len() <= cap
        && hops.iter().all(|h| pos_ok(h.lvl, h.pos, gsizes))
        && hops.windows(2).all(|w| w[0].lvl <= w[1].lvl)
}

fn fp_ok(f: &Fingerprint, l: usize) -> bool {
    f.elderships.len() <= l + 1 && f.elderships_seed.len() <= l + 1
}

/// §7.3 `check_incoming_message`: `Ok` if `m` may be processed by the instance at `my`.
pub fn check(m: &EtpMessage, my: &[u32], gsizes: &[u32]) -> Result<(), Invalid> {
    let l = gsizes.len();
    if m.node_address.len() != l {
        return Err(Invalid::AddressLevels);
    }
    if m.node_address == my {
        return Err(Invalid::AddressIsMine);
    }
    if !m
        .node_address
        .iter()
        .enumerate()
        .all(|(i, &p)| pos_ok(i, p, gsizes))
    {
        return Err(Invalid::Position);
    }
    // §18.1: l+1 entries are sent; we need at least the l we read.
    if m.fingerprints.len() != l + 1
        || m.nodes_inside.len() != l + 1
        || !m.fingerprints.iter().all(|f| fp_ok(f, l))
    {
        return Err(Invalid::Counts);
    }
    let cap = max_hops(gsizes);
    if !hops_ok(&m.hops, gsizes, cap) {
        return Err(Invalid::Hops);
    }
    if m.p_list.len() > MAX_ETP_PATHS {
        return Err(Invalid::TooManyPaths);
    }
    for p in &m.p_list {
        if p.hops.is_empty() || p.hops.len() != p.arcs.len() || !hops_ok(&p.hops, gsizes, cap) {
            return Err(Invalid::PathShape);
        }
        let d = p.hops[p.hops.len() - 1].lvl;
        if p.fingerprint.level as usize != d || !fp_ok(&p.fingerprint, l) {
            return Err(Invalid::PathFingerprint);
        }
        if p.ignore_outside.len() != l || (d + 1..l).any(|i| !p.ignore_outside[i]) {
            return Err(Invalid::IgnoreOutside);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qspn::msg::{Cost, EtpPath};

    fn f(level: u8) -> Fingerprint {
        Fingerprint {
            id: 1,
            level,
            elderships: vec![0; 2],
            elderships_seed: vec![],
        }
    }
    fn h(lvl: usize, pos: u32) -> HCoord {
        HCoord { lvl, pos }
    }
    fn good() -> EtpMessage {
        EtpMessage {
            node_address: vec![1, 0, 1],
            fingerprints: vec![f(0), f(1), f(2), f(3)],
            nodes_inside: vec![1, 2, 3, 4],
            hops: vec![h(0, 1), h(2, 0)],
            p_list: vec![EtpPath {
                hops: vec![h(0, 0), h(1, 1)],
                arcs: vec![5, 6],
                cost: Cost::Real(3),
                fingerprint: f(1),
                nodes_inside: 2,
                ignore_outside: vec![false, false, true],
            }],
        }
    }
    const MY: [u32; 3] = [0, 0, 1];
    const G: [u32; 3] = [2, 2, 2];

    #[test]
    fn coord_rules() {
        assert_eq!(coord(&[0, 1, 0, 2], &[1, 1, 1, 2]), Some(h(2, 1)));
        assert_eq!(coord(&[1, 1, 1, 2], &[0, 1, 1, 2]), Some(h(0, 0)));
        assert_eq!(coord(&[1, 1], &[1, 1]), None);
        assert_eq!(coord(&[1, 1], &[1]), None);
    }

    #[test]
    fn accepts_good() {
        assert_eq!(check(&good(), &MY, &G), Ok(()));
    }

    #[test]
    fn rejects_each_defect() {
        let mut m = good();
        m.node_address = vec![1, 0];
        assert_eq!(check(&m, &MY, &G), Err(Invalid::AddressLevels));
        let mut m = good();
        m.node_address = MY.to_vec();
        assert_eq!(check(&m, &MY, &G), Err(Invalid::AddressIsMine));
        let mut m = good();
        m.nodes_inside.pop();
        assert_eq!(check(&m, &MY, &G), Err(Invalid::Counts));
        let mut m = good();
        m.fingerprints[1].elderships = vec![0; 100];
        assert_eq!(check(&m, &MY, &G), Err(Invalid::Counts));
        let mut m = good();
        m.hops = vec![h(1, 0), h(0, 1)];
        assert_eq!(check(&m, &MY, &G), Err(Invalid::Hops));
        let mut m = good();
        m.hops = vec![h(3, 0)];
        assert_eq!(check(&m, &MY, &G), Err(Invalid::Hops));
        let mut m = good();
        m.hops = vec![h(0, 0); 100];
        assert_eq!(check(&m, &MY, &G), Err(Invalid::Hops));
        let mut m = good();
        m.node_address = vec![1, 0, 4];
        assert_eq!(check(&m, &MY, &G), Err(Invalid::Position));
        let mut m = good();
        m.node_address = vec![3, 0, 1]; // virtual: accepted
        assert_eq!(check(&m, &MY, &G), Ok(()));
        let mut m = good();
        m.p_list[0].hops[1].pos = 4;
        assert_eq!(check(&m, &MY, &G), Err(Invalid::PathShape));
        let mut m = good();
        m.p_list[0].arcs.pop();
        assert_eq!(check(&m, &MY, &G), Err(Invalid::PathShape));
        let mut m = good();
        m.p_list[0].hops.clear();
        m.p_list[0].arcs.clear();
        assert_eq!(check(&m, &MY, &G), Err(Invalid::PathShape));
        let mut m = good();
        m.p_list[0].hops = vec![h(1, 1), h(0, 0)];
        assert_eq!(check(&m, &MY, &G), Err(Invalid::PathShape));
        let mut m = good();
        m.p_list[0].fingerprint.level = 0;
        assert_eq!(check(&m, &MY, &G), Err(Invalid::PathFingerprint));
        let mut m = good();
        m.p_list[0].ignore_outside[2] = false;
        assert_eq!(check(&m, &MY, &G), Err(Invalid::IgnoreOutside));
        let mut m = good();
        m.p_list[0].ignore_outside.pop();
        assert_eq!(check(&m, &MY, &G), Err(Invalid::IgnoreOutside));
        let mut m = good();
        m.p_list = vec![m.p_list[0].clone(); MAX_ETP_PATHS + 1];
        assert_eq!(check(&m, &MY, &G), Err(Invalid::TooManyPaths));
    }
}
