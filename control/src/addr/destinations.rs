//! The destination set `D(n)` of an identity (addressing.md §6): every prefix it installs,
//! in every table it manages.
use serde::Serialize;

use super::{
    ipv4::{anon_gnode, global_gnode, internal_gnode},
    naddr::{HCoord, NtkAddress},
    prefix::Ipv4Prefix,
    topology::Topology,
};

/// What a destination prefix addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DestKind {
    Global,
    Anonymizing,
    /// The destination g-node as addressed inside our level-`k` g-node.
    Internal(usize),
}

/// One prefix of `D(n)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Destination {
    /// The destination g-node, relative to the identity's address.
    pub hc: HCoord,
    pub kind: DestKind,
    pub prefix: Ipv4Prefix,
}

/// `D(n)` in qspnclient's emission order (DettagliOperazioni2 / Vala
/// `compute_destination_ip_set`): levels `l-1` down to `subnet_level`, real positions only,
/// the own g-node skipped; global and anonymizing when `n` is real above the level; one
/// internal prefix per enclosing level `k` for which `n` is real strictly between.
pub fn destinations(t: &Topology, n: &NtkAddress, subnet_level: usize) -> Vec<Destination> {
    let l = t.levels();
    let mut out = Vec::new();
    for i in (subnet_level..l).rev() {
        for j in 0..t.gsize(i) {
            if j == n.pos(i) {
                continue;
            }
            let hc = HCoord { lvl: i, pos: j };
            let d = n.with(i, j);
            if n.is_real(t, i + 1, l - 1) {
                let g = global_gnode(t, &d, i).expect("d is real from i up");
                let a = anon_gnode(t, &d, i).expect("d is real from i up");
                out.push(Destination {
                    hc,
                    kind: DestKind::Global,
                    prefix: g,
                });
                out.push(Destination {
                    hc,
                    kind: DestKind::Anonymizing,
                    prefix: a,
                });
            }
            for k in (i + 1..l).rev() {
                if n.is_real(t, i + 1, k - 1) {
                    let p = internal_gnode(t, &d, i, k).expect("d is real from i to k-1");
                    out.push(Destination {
                        hc,
                        kind: DestKind::Internal(k),
                        prefix: p,
                    });
                }
            }
        }
    }
    out
}

/// Number of prefixes of `D(n)` for a completely real address
/// (`Σ_{i ≥ s} (gsize(i) − 1)·(2 + (l − 1 − i))`).
pub fn full_size(t: &Topology, subnet_level: usize) -> usize {
    let l = t.levels();
    (subnet_level..l)
        .map(|i| (t.gsize(i) as usize - 1) * (2 + (l - 1 - i)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Topology {
        "4.2.2.2".parse().unwrap()
    }

    /// `.x/y` shorthand of the spec: `10.0.0.x/y`.
    fn short(d: &[Destination]) -> Vec<String> {
        d.iter()
            .map(|d| {
                d.prefix
                    .to_string()
                    .trim_start_matches("10.0.0")
                    .to_string()
            })
            .collect()
    }

    fn d(addr: &str, s: usize) -> Vec<Destination> {
        destinations(&t(), &NtkAddress::parse(addr, &t()).unwrap(), s)
    }

    #[test]
    fn alpha_startup() {
        // addressing.md §6.1, α 3·0·1·0 (Eventi.md): 18 prefixes.
        assert_eq!(
            short(&d("3.0.1.0", 0)),
            [
                ".0/29", ".64/29", ".8/29", ".72/29", ".16/29", ".80/29", ".28/30", ".92/30",
                ".60/30", ".24/31", ".88/31", ".56/31", ".48/31", ".27/32", ".91/32", ".59/32",
                ".51/32", ".41/32"
            ]
        );
    }

    #[test]
    fn beta1_virtual_at_level_0() {
        assert_eq!(
            short(&d("2.1.1.2", 0)),
            [
                ".0/29", ".64/29", ".8/29", ".72/29", ".24/29", ".88/29", ".16/30", ".80/30",
                ".56/30", ".20/31", ".84/31", ".60/31", ".48/31", ".22/32", ".86/32", ".62/32",
                ".50/32", ".40/32", ".23/32", ".87/32", ".63/32", ".51/32", ".41/32"
            ]
        );
    }

    #[test]
    fn alpha1_virtual_at_level_2() {
        assert_eq!(
            short(&d("2.2.1.0", 0)),
            [
                ".0/29", ".64/29", ".8/29", ".72/29", ".24/29", ".88/29", ".16/30", ".80/30",
                ".56/30", ".20/30", ".84/30", ".60/30", ".48/31", ".51/32", ".41/32"
            ]
        );
    }

    #[test]
    fn lambda_subnet_level_1() {
        assert_eq!(
            short(&d("1.1.0.0", 1)),
            [
                ".0/29", ".64/29", ".16/29", ".80/29", ".24/29", ".88/29", ".8/30", ".72/30",
                ".56/30", ".14/31", ".78/31", ".62/31", ".50/31"
            ]
        );
    }

    #[test]
    fn old_delta_in_entr03() {
        assert_eq!(
            short(&d("3.1.2.1", 0)),
            [
                ".0/29", ".64/29", ".8/29", ".72/29", ".16/29", ".80/29", ".24/30", ".88/30",
                ".56/30", ".28/31", ".92/31", ".60/31", ".48/31", ".30/31", ".94/31", ".62/31",
                ".50/31", ".40/32"
            ]
        );
    }

    #[test]
    fn sizes() {
        let t = t();
        assert_eq!(full_size(&t, 0), 18);
        assert_eq!(full_size(&t, 1), 13);
        let b: Topology = "4.16.256.256".parse().unwrap();
        assert_eq!(full_size(&b, 0), 2346);
        let n = NtkAddress::parse("3.10.123.45", &b).unwrap();
        assert_eq!(destinations(&b, &n, 0).len(), 2346);
    }
}
