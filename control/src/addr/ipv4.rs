//! The mapping of Netsukuku addresses onto IPv4 (addressing.md §3–§5).
//!
//! Every function returns `None` when its precondition on real positions fails (the Vala
//! code asserts instead): the address then has no IPv4 form of that kind.
use std::net::Ipv4Addr;

use serde::Serialize;

use super::{naddr::NtkAddress, prefix::Ipv4Prefix, topology::Topology};

/// The 2-bit address type above the address bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AddrType {
    Global = 0,
    Internal = 1,
    Anonymizing = 2,
}

/// `compose(type, field)` of addressing.md §3, placed inside the base prefix.
fn compose(t: &Topology, ty: AddrType, field: &[u32]) -> Ipv4Addr {
    let mut v: u32 = ty as u32;
    for c in (0..t.levels()).rev() {
        v = (v << t.gexp(c)) + field[c];
    }
    Ipv4Addr::from(u32::from(t.base().addr()) + v)
}

fn prefix(t: &Topology, ty: AddrType, field: &[u32], level: usize) -> Ipv4Prefix {
    Ipv4Prefix::new(compose(t, ty, field), (32 - t.off(level)) as u8)
        .expect("fields below the level are zero")
}

/// Fields of a global/anonymizing g-node of level `i`: positions from `i` up, zero below.
fn gnode_fields(n: &NtkAddress, i: usize) -> Vec<u32> {
    (0..n.levels())
        .map(|c| if c >= i { n.pos(c) } else { 0 })
        .collect()
}

/// Fields of the internal g-node of level `i` inside level `k`.
fn internal_fields(t: &Topology, n: &NtkAddress, i: usize, k: usize) -> Vec<u32> {
    let l = t.levels();
    (0..l)
        .map(|c| {
            if c == l - 1 {
                k as u32
            } else if c >= i && c < k {
                n.pos(c)
            } else {
                0
            }
        })
        .collect()
}

/// §4.1: global IP of a node. Needs every position real.
pub fn global_node(t: &Topology, n: &NtkAddress) -> Option<Ipv4Addr> {
    n.is_real(t, 0, t.levels() - 1)
        .then(|| compose(t, AddrType::Global, n.positions()))
}

/// §4.5: anonymizing IP of a node. Needs every position real.
pub fn anon_node(t: &Topology, n: &NtkAddress) -> Option<Ipv4Addr> {
    n.is_real(t, 0, t.levels() - 1)
        .then(|| compose(t, AddrType::Anonymizing, n.positions()))
}

/// §4.2: global prefix of the level-`i` g-node containing `n` (`0 ≤ i ≤ l`).
pub fn global_gnode(t: &Topology, n: &NtkAddress, i: usize) -> Option<Ipv4Prefix> {
    n.is_real(t, i, t.levels() - 1)
        .then(|| prefix(t, AddrType::Global, &gnode_fields(n, i), i))
}

/// §4.5: anonymizing prefix of the level-`i` g-node containing `n` (`0 ≤ i ≤ l`).
pub fn anon_gnode(t: &Topology, n: &NtkAddress, i: usize) -> Option<Ipv4Prefix> {
    n.is_real(t, i, t.levels() - 1)
        .then(|| prefix(t, AddrType::Anonymizing, &gnode_fields(n, i), i))
}

/// §4.3: internal IP of `n` inside its level-`k` g-node (`0 ≤ k ≤ l-1`; k = 0 is the
/// ntk localhost). Needs positions `0..k-1` real.
pub fn internal_node(t: &Topology, n: &NtkAddress, k: usize) -> Option<Ipv4Addr> {
    if k >= t.levels() {
        return None;
    }
    (k == 0 || n.is_real(t, 0, k - 1))
        .then(|| compose(t, AddrType::Internal, &internal_fields(t, n, 0, k)))
}

/// §4.4: internal prefix of the level-`i` g-node of `n` inside its level-`k` g-node
/// (`0 ≤ i ≤ k ≤ l-1`). Needs positions `i..k-1` real. `i = k` gives the block of all
/// internal-level-`k` addresses.
pub fn internal_gnode(t: &Topology, n: &NtkAddress, i: usize, k: usize) -> Option<Ipv4Prefix> {
    if i > k || k >= t.levels() {
        return None;
    }
    let real = i == k || n.is_real(t, i, k - 1);
    real.then(|| prefix(t, AddrType::Internal, &internal_fields(t, n, i, k), i))
}

/// §4.7: the ntk localhost (internal level 0), the same for every node of a topology.
pub fn localhost(t: &Topology) -> Ipv4Addr {
    compose(t, AddrType::Internal, &vec![0; t.levels()])
}

fn zero(t: &Topology) -> NtkAddress {
    NtkAddress::from_low_first(vec![0; t.levels()])
}

/// All global addresses (`10.0.0.0/27` in 4.2.2.2).
pub fn global_range(t: &Topology) -> Ipv4Prefix {
    global_gnode(t, &zero(t), t.levels()).unwrap()
}

/// §4.6: all anonymizing addresses, the anonymizer's SNAT selector.
pub fn anon_range(t: &Topology) -> Ipv4Prefix {
    anon_gnode(t, &zero(t), t.levels()).unwrap()
}

/// All internal addresses of level `k` (`1 ≤ k ≤ l-1`).
pub fn internal_range(t: &Topology, k: usize) -> Option<Ipv4Prefix> {
    internal_gnode(t, &zero(t), k, k)
}

/// What an own address is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnIpKind {
    Global,
    Anonymizing,
    /// Internal inside the level-`k` g-node.
    Internal(usize),
}

/// §5.1/§5.2: the main identity's addresses on each real NIC, in qspnclient's startup
/// order: global, anonymizing (only when serving anonymous requests), internal `l-1` down
/// to 1; each only if computable. (Internal level 0 is the ntk localhost on `lo`.)
pub fn own_ips(t: &Topology, n: &NtkAddress, serve_anonymous: bool) -> Vec<(OwnIpKind, Ipv4Addr)> {
    let mut out = Vec::new();
    if let Some(g) = global_node(t, n) {
        out.push((OwnIpKind::Global, g));
    }
    if serve_anonymous {
        if let Some(a) = anon_node(t, n) {
            out.push((OwnIpKind::Anonymizing, a));
        }
    }
    for k in (1..t.levels()).rev() {
        if let Some(ip) = internal_node(t, n, k) {
            out.push((OwnIpKind::Internal(k), ip));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a() -> Topology {
        "4.2.2.2".parse().unwrap()
    }
    fn b() -> Topology {
        "4.16.256.256".parse().unwrap()
    }
    /// Vala vectors list addresses low level first.
    fn low(v: &[u32]) -> NtkAddress {
        NtkAddress::from_low_first(v.to_vec())
    }
    fn ip(s: &str) -> Option<Ipv4Addr> {
        Some(s.parse().unwrap())
    }
    fn pfx(s: &str) -> Option<Ipv4Prefix> {
        Some(s.parse().unwrap())
    }

    /// addressing.md §7: every vector of tester.vala.
    #[test]
    fn vala_vectors() {
        let (a, b) = (a(), b());
        assert_eq!(global_node(&a, &low(&[1, 0, 1, 3])), ip("10.0.0.29"));
        assert_eq!(global_node(&a, &low(&[1, 0, 0, 1])), ip("10.0.0.9"));
        assert_eq!(
            global_node(&b, &low(&[234, 123, 15, 3])),
            ip("10.63.123.234")
        );
        assert_eq!(anon_node(&a, &low(&[1, 0, 1, 3])), ip("10.0.0.93"));
        assert_eq!(anon_node(&a, &low(&[1, 0, 0, 1])), ip("10.0.0.73"));
        assert_eq!(
            anon_node(&b, &low(&[234, 123, 15, 3])),
            ip("10.191.123.234")
        );
        assert_eq!(internal_node(&a, &low(&[1, 0, 1, 3]), 3), ip("10.0.0.61"));
        assert_eq!(internal_node(&a, &low(&[1, 0, 0, 1]), 3), ip("10.0.0.57"));
        assert_eq!(internal_node(&a, &low(&[1, 1, 1, 2]), 1), ip("10.0.0.41"));
        assert_eq!(
            internal_node(&b, &low(&[234, 123, 15, 3]), 3),
            ip("10.127.123.234")
        );
        assert_eq!(
            internal_node(&b, &low(&[234, 123, 15, 3]), 0),
            ip("10.64.0.0")
        );
        assert_eq!(
            global_gnode(&a, &low(&[1, 0, 1, 3]), 1),
            pfx("10.0.0.28/31")
        );
        assert_eq!(global_gnode(&a, &low(&[1, 0, 0, 1]), 1), pfx("10.0.0.8/31"));
        assert_eq!(
            global_gnode(&b, &low(&[234, 123, 15, 3]), 1),
            pfx("10.63.123.0/24")
        );
        assert_eq!(anon_gnode(&a, &low(&[1, 0, 1, 3]), 1), pfx("10.0.0.92/31"));
        assert_eq!(anon_gnode(&a, &low(&[1, 0, 0, 1]), 1), pfx("10.0.0.72/31"));
        assert_eq!(anon_gnode(&a, &low(&[1, 0, 0, 1]), 4), pfx("10.0.0.64/27"));
        assert_eq!(
            anon_gnode(&b, &low(&[234, 123, 15, 3]), 1),
            pfx("10.191.123.0/24")
        );
        assert_eq!(
            internal_gnode(&a, &low(&[1, 0, 1, 3]), 1, 3),
            pfx("10.0.0.60/31")
        );
        assert_eq!(
            internal_gnode(&a, &low(&[1, 0, 0, 1]), 1, 3),
            pfx("10.0.0.56/31")
        );
        assert_eq!(
            internal_gnode(&a, &low(&[1, 1, 1, 2]), 1, 2),
            pfx("10.0.0.50/31")
        );
        assert_eq!(
            internal_gnode(&b, &low(&[234, 123, 15, 3]), 1, 3),
            pfx("10.127.123.0/24")
        );
        assert_eq!(
            internal_gnode(&b, &low(&[234, 123, 15, 3]), 1, 2),
            pfx("10.96.123.0/24")
        );
        // Autonomous subnet, λ = [0,0,1,1], subnet level 1.
        let l = low(&[0, 0, 1, 1]);
        assert_eq!(internal_gnode(&a, &l, 1, 1), pfx("10.0.0.40/31"));
        assert_eq!(internal_gnode(&a, &l, 1, 2), pfx("10.0.0.48/31"));
        assert_eq!(internal_gnode(&a, &l, 2, 2), pfx("10.0.0.48/30"));
        assert_eq!(internal_gnode(&a, &l, 1, 3), pfx("10.0.0.60/31"));
        assert_eq!(internal_gnode(&a, &l, 3, 3), pfx("10.0.0.56/29"));
        assert_eq!(global_gnode(&a, &l, 1), pfx("10.0.0.12/31"));
        assert_eq!(global_gnode(&a, &l, 4), pfx("10.0.0.0/27"));
        assert_eq!(anon_gnode(&a, &l, 1), pfx("10.0.0.76/31"));
        assert_eq!(anon_gnode(&a, &l, 4), pfx("10.0.0.64/27"));
    }

    /// addressing.md §4 and §8 worked examples (4.16.256.256, n = 3·10·123·45).
    #[test]
    fn indirizzi_ip_examples() {
        let b = b();
        let n = NtkAddress::parse("3.10.123.45", &b).unwrap();
        assert_eq!(global_node(&b, &n), ip("10.58.123.45"));
        assert_eq!(anon_node(&b, &n), ip("10.186.123.45"));
        assert_eq!(internal_node(&b, &n, 3), ip("10.122.123.45"));
        assert_eq!(internal_node(&b, &n, 2), ip("10.96.123.45"));
        assert_eq!(internal_node(&b, &n, 1), ip("10.80.0.45"));
        assert_eq!(internal_node(&b, &n, 0), ip("10.64.0.0"));
        assert_eq!(global_gnode(&b, &n.with(2, 1), 2), pfx("10.49.0.0/16"));
        assert_eq!(global_gnode(&b, &n.with(1, 67), 1), pfx("10.58.67.0/24"));
        assert_eq!(global_gnode(&b, &n.with(3, 2), 3), pfx("10.32.0.0/12"));
        assert_eq!(
            internal_gnode(&b, &n.with(1, 67), 1, 2),
            pfx("10.96.67.0/24")
        );
        assert_eq!(
            internal_gnode(&b, &n.with(1, 67), 1, 3),
            pfx("10.122.67.0/24")
        );
        assert_eq!(anon_gnode(&b, &n.with(1, 67), 1), pfx("10.186.67.0/24"));
        assert_eq!(anon_gnode(&b, &n.with(3, 2), 3), pfx("10.160.0.0/12"));
        let m = NtkAddress::parse("3.10.67.89", &b).unwrap();
        assert_eq!(internal_node(&b, &m, 2), ip("10.96.67.89"));
        let o = NtkAddress::parse("2.10.237.242", &b).unwrap();
        assert_eq!(global_node(&b, &o), ip("10.42.237.242"));
    }

    /// addressing.md §3 table of fixed ranges.
    #[test]
    fn fixed_ranges() {
        let (a, b) = (a(), b());
        assert_eq!(Some(global_range(&a)), pfx("10.0.0.0/27"));
        assert_eq!(Some(anon_range(&a)), pfx("10.0.0.64/27"));
        assert_eq!(internal_range(&a, 3), pfx("10.0.0.56/29"));
        assert_eq!(internal_range(&a, 2), pfx("10.0.0.48/30"));
        assert_eq!(internal_range(&a, 1), pfx("10.0.0.40/31"));
        assert_eq!(Some(localhost(&a)), ip("10.0.0.32"));
        assert_eq!(Some(global_range(&b)), pfx("10.0.0.0/10"));
        assert_eq!(Some(anon_range(&b)), pfx("10.128.0.0/10"));
        assert_eq!(internal_range(&b, 3), pfx("10.112.0.0/12"));
        assert_eq!(internal_range(&b, 2), pfx("10.96.0.0/16"));
        assert_eq!(internal_range(&b, 1), pfx("10.80.0.0/24"));
        assert_eq!(Some(localhost(&b)), ip("10.64.0.0"));
    }

    /// addressing.md §5 examples of own addresses.
    #[test]
    fn own_addresses_in_assignment_order() {
        let a = a();
        let show = |n: &str, anon: bool| -> Vec<String> {
            own_ips(&a, &NtkAddress::parse(n, &a).unwrap(), anon)
                .into_iter()
                .map(|(_, ip)| ip.to_string())
                .collect()
        };
        assert_eq!(
            show("3.0.1.0", true),
            [
                "10.0.0.26",
                "10.0.0.90",
                "10.0.0.58",
                "10.0.0.50",
                "10.0.0.40"
            ]
        );
        assert_eq!(
            show("1.1.0.0", true),
            [
                "10.0.0.12",
                "10.0.0.76",
                "10.0.0.60",
                "10.0.0.48",
                "10.0.0.40"
            ]
        );
        // α₁ 2·2·1·0 (virtual at level 2) owns only internal 2 and 1.
        assert_eq!(show("2.2.1.0", true), ["10.0.0.50", "10.0.0.40"]);
        let b = b();
        let n = NtkAddress::parse("3.10.123.45", &b).unwrap();
        let got: Vec<String> = own_ips(&b, &n, false)
            .into_iter()
            .map(|(_, ip)| ip.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "10.58.123.45",
                "10.122.123.45",
                "10.96.123.45",
                "10.80.0.45"
            ]
        );
    }

    /// A base prefix other than 10.0.0.0/8 moves every address with it.
    #[test]
    fn configurable_base() {
        let t = Topology::parse_with_base("4.2.2.2", "172.16.0.0/12".parse().unwrap()).unwrap();
        let n = NtkAddress::parse("3.0.1.0", &t).unwrap();
        assert_eq!(global_node(&t, &n), ip("172.16.0.26"));
        assert_eq!(Some(anon_range(&t)), pfx("172.16.0.64/27"));
    }
}
