//! Property tests of the addressing layer: for random topologies (within the bit budget)
//! and random addresses, real and virtual.
use ntkplane::addr::{
    destinations, ipv4, naddr::NtkAddress, nat::netmap, prefix::Ipv4Prefix, topology::Topology,
};
use proptest::prelude::*;

/// A valid topology: 1..=6 levels of 2..=16 positions (powers of two), top level large
/// enough to hold a level number, at most 22 bits.
fn topology() -> impl Strategy<Value = Topology> {
    prop::collection::vec(1u32..=4, 1..=6).prop_filter_map("bit budget / top level", |exps| {
        let l = exps.len();
        let mut exps = exps;
        // the top level must hold a level number 0..l-1
        while (1u32 << exps[l - 1]) < l as u32 {
            exps[l - 1] += 1;
        }
        if exps.iter().sum::<u32>() > 22 {
            return None;
        }
        Topology::new(
            exps.iter().map(|e| 1 << e).collect(),
            "10.0.0.0/8".parse().unwrap(),
        )
        .ok()
    })
}

/// A topology with an address; each position is virtual with probability ~1/5.
fn topo_and_address() -> impl Strategy<Value = (Topology, NtkAddress)> {
    topology().prop_flat_map(|t| {
        let levels: Vec<_> = (0..t.levels())
            .map(|i| {
                let g = t.gsize(i);
                prop_oneof![4 => 0..g, 1 => g..2 * g]
            })
            .collect();
        (Just(t), levels).prop_map(|(t, pos)| (t.clone(), NtkAddress::from_low_first(pos)))
    })
}

proptest! {
    #[test]
    fn destination_prefixes_are_disjoint_and_inside_the_base((t, n) in topo_and_address(), s in 0usize..3) {
        let s = s.min(t.levels() - 1);
        let d = destinations(&t, &n, s);
        for (i, a) in d.iter().enumerate() {
            prop_assert!(t.base().contains_prefix(&a.prefix), "{} outside the base", a.prefix);
            prop_assert!(a.hc.lvl >= s && a.hc.pos < t.gsize(a.hc.lvl));
            for b in &d[i + 1..] {
                prop_assert!(!a.prefix.overlaps(&b.prefix), "{} overlaps {}", a.prefix, b.prefix);
            }
        }
        if n.is_all_real(&t) {
            prop_assert_eq!(d.len(), ntkplane::addr::destinations::full_size(&t, s));
        }
    }

    #[test]
    fn own_addresses_are_outside_every_destination((t, n) in topo_and_address()) {
        let d = destinations(&t, &n, 0);
        for (_, ip) in ipv4::own_ips(&t, &n, true) {
            prop_assert!(d.iter().all(|x| !x.prefix.contains(ip)), "own {ip} inside a destination");
        }
    }

    #[test]
    fn address_kinds_never_overlap(t in topology()) {
        let g = ipv4::global_range(&t);
        let a = ipv4::anon_range(&t);
        let mut ranges = vec![g, a, Ipv4Prefix::host(ipv4::localhost(&t))];
        for k in 1..t.levels() {
            ranges.push(ipv4::internal_range(&t, k).unwrap());
        }
        for (i, x) in ranges.iter().enumerate() {
            prop_assert!(t.base().contains_prefix(x));
            for y in &ranges[i + 1..] {
                prop_assert!(!x.overlaps(y), "{x} overlaps {y}");
            }
        }
    }

    #[test]
    fn node_addresses_decode_back((t, n) in topo_and_address()) {
        // addressing.md §4.8: type and fields can be read back from the IPv4 address.
        let b = t.bits();
        let base = u32::from(t.base().addr());
        if let Some(ip) = ipv4::global_node(&t, &n) {
            let v = u32::from(ip) - base;
            prop_assert_eq!(v >> b, 0);
            for c in 0..t.levels() {
                prop_assert_eq!((v >> t.off(c)) & (t.gsize(c) - 1), n.pos(c));
            }
        }
        if let Some(ip) = ipv4::anon_node(&t, &n) {
            prop_assert_eq!((u32::from(ip) - base) >> b, 2);
        }
        for k in 1..t.levels() {
            if let Some(ip) = ipv4::internal_node(&t, &n, k) {
                let v = u32::from(ip) - base;
                prop_assert_eq!(v >> b, 1);
                prop_assert_eq!((v >> t.off(t.levels() - 1)) & (t.gsize(t.levels() - 1) - 1), k as u32);
                prop_assert!(ipv4::internal_range(&t, k).unwrap().contains(ip));
            }
        }
    }

    #[test]
    fn gnode_prefixes_nest((t, n) in topo_and_address()) {
        // The level-i g-node contains the level-(i-1) g-node (when both exist).
        for i in 1..=t.levels() {
            if let (Some(outer), Some(inner)) = (ipv4::global_gnode(&t, &n, i), ipv4::global_gnode(&t, &n, i - 1)) {
                prop_assert!(outer.contains_prefix(&inner));
            }
        }
    }

    #[test]
    fn parse_display_round_trips((t, n) in topo_and_address()) {
        let t2: Topology = t.to_string().parse().unwrap();
        prop_assert_eq!(&t2, &t);
        let n2 = NtkAddress::parse(&n.to_string(), &t).unwrap();
        prop_assert_eq!(&n2, &n);
        if let Some(p) = ipv4::global_gnode(&t, &n, 1) {
            prop_assert_eq!(p.to_string().parse::<Ipv4Prefix>().unwrap(), p);
        }
    }

    #[test]
    fn netmap_maps_blocks_of_equal_size((t, n) in topo_and_address(), s in 1usize..4) {
        prop_assume!(s < t.levels());
        for r in netmap(&t, &n, s, true) {
            // NETMAP is 1:1: both sides have the subnet's size, except the postrouting
            // selectors (daddr) which are whole scopes.
            prop_assert_eq!(r.to.prefix_len() as u32, 32 - t.off(s));
            if r.saddr.is_none() {
                prop_assert_eq!(r.daddr.prefix_len(), r.to.prefix_len());
            }
        }
    }
}
