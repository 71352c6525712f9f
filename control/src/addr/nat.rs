//! The main identity's address remapping: the anonymizer's SNAT (forwarding-state.md §8)
//! and an autonomous-subnet gateway's NETMAP rules (§9).
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{
    ipv4::{anon_gnode, anon_range, global_gnode, global_node, internal_gnode},
    naddr::NtkAddress,
    prefix::Ipv4Prefix,
    topology::Topology,
};

/// `-d <anon range> -j SNAT --to <own global>` (postrouting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnatRule {
    pub daddr: Ipv4Prefix,
    pub to: Ipv4Addr,
}

/// The anonymizer's SNAT, present iff the anonymizer is on and `n` is completely real.
pub fn snat(t: &Topology, n: &NtkAddress, anonymizer: bool) -> Option<SnatRule> {
    if !anonymizer {
        return None;
    }
    global_node(t, n).map(|to| SnatRule {
        daddr: anon_range(t),
        to,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NatChain {
    /// Destination rewrite, before routing.
    Prerouting,
    /// Source rewrite, after routing.
    Postrouting,
}

/// One 1:1 prefix mapping (iptables `NETMAP`): prerouting rewrites the destination,
/// postrouting the source (only for sources in `saddr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetmapRule {
    pub chain: NatChain,
    pub daddr: Ipv4Prefix,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saddr: Option<Ipv4Prefix>,
    pub to: Ipv4Prefix,
}

/// The NETMAP rule set of a gateway of an autonomous subnet of level `s` (> 0) with main
/// address `n`, in the Vala order (forwarding-state.md §9.3/§9.4). A level's pair exists
/// only while the own address it is based on exists (§9.5); `[]` when `s == 0`.
pub fn netmap(t: &Topology, n: &NtkAddress, s: usize, serve_anonymous: bool) -> Vec<NetmapRule> {
    let l = t.levels();
    if s == 0 || s >= l {
        return Vec::new();
    }
    let range1 = internal_gnode(t, n, s, s).expect("i = k is always computable");
    let pre = |daddr, to| NetmapRule {
        chain: NatChain::Prerouting,
        daddr,
        saddr: None,
        to,
    };
    let post = |daddr, to| NetmapRule {
        chain: NatChain::Postrouting,
        daddr,
        saddr: Some(range1),
        to,
    };
    let mut out = Vec::new();
    for i in s..l {
        if i < l - 1 {
            let Some(range2) = internal_gnode(t, n, s, i + 1) else {
                continue;
            };
            let range3 = internal_gnode(t, n, i + 1, i + 1).expect("i = k");
            out.push(pre(range2, range1));
            out.push(post(range3, range2));
        } else {
            let Some(range2) = global_gnode(t, n, s) else {
                continue;
            };
            let range3 = global_gnode(t, n, l).expect("whole range");
            out.push(pre(range2, range1));
            out.push(post(range3, range2));
            if serve_anonymous {
                let range4 = anon_gnode(t, n, s).expect("real like range2");
                out.push(pre(range4, range1));
            }
            out.push(post(anon_range(t), range2));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Topology {
        "4.2.2.2".parse().unwrap()
    }

    fn show(rules: &[NetmapRule]) -> Vec<String> {
        rules
            .iter()
            .map(|r| match r.saddr {
                None => format!("PREROUTING -d {} --to {}", r.daddr, r.to),
                Some(s) => format!("POSTROUTING -d {} -s {} --to {}", r.daddr, s, r.to),
            })
            .collect()
    }

    /// forwarding-state.md §9.4, λ 1·1·0·0, s = 1, serve-anonymous (Vala order).
    #[test]
    fn lambda_startup() {
        let n = NtkAddress::parse("1.1.0.0", &t()).unwrap();
        assert_eq!(
            show(&netmap(&t(), &n, 1, true)),
            [
                "PREROUTING -d 10.0.0.48/31 --to 10.0.0.40/31",
                "POSTROUTING -d 10.0.0.48/30 -s 10.0.0.40/31 --to 10.0.0.48/31",
                "PREROUTING -d 10.0.0.60/31 --to 10.0.0.40/31",
                "POSTROUTING -d 10.0.0.56/29 -s 10.0.0.40/31 --to 10.0.0.60/31",
                "PREROUTING -d 10.0.0.12/31 --to 10.0.0.40/31",
                "POSTROUTING -d 10.0.0.0/27 -s 10.0.0.40/31 --to 10.0.0.12/31",
                "PREROUTING -d 10.0.0.76/31 --to 10.0.0.40/31",
                "POSTROUTING -d 10.0.0.64/27 -s 10.0.0.40/31 --to 10.0.0.12/31",
            ]
        );
    }

    /// λ 2·1·1·0 after becoming real (DettagliOperazioni12, Eventi13).
    #[test]
    fn lambda_after_entering() {
        let n = NtkAddress::parse("2.1.1.0", &t()).unwrap();
        let got = show(&netmap(&t(), &n, 1, true)).join("\n");
        for want in [
            "-d 10.0.0.50/31 --to 10.0.0.40/31",
            "--to 10.0.0.62/31",
            "-d 10.0.0.22/31 --to",
            "-d 10.0.0.86/31 --to 10.0.0.40/31",
        ] {
            assert!(got.contains(want), "{want} missing in\n{got}");
        }
        assert_eq!(
            netmap(&t(), &n, 1, false).len(),
            7,
            "no anonymizing prerouting without -k"
        );
    }

    /// λ during its entry (`2·1·2·0`, virtual at level 1): no pair at all (S2-B).
    #[test]
    fn virtual_address_has_no_rules() {
        let n = NtkAddress::parse("2.1.2.0", &t()).unwrap();
        assert!(netmap(&t(), &n, 1, true).is_empty());
        assert_eq!(snat(&t(), &n, true), None);
        let real = NtkAddress::parse("3.0.1.0", &t()).unwrap();
        assert!(
            netmap(&t(), &real, 0, true).is_empty(),
            "no subnet level, no NETMAP"
        );
    }

    #[test]
    fn snat_of_alpha() {
        let n = NtkAddress::parse("3.0.1.0", &t()).unwrap();
        let r = snat(&t(), &n, true).unwrap();
        assert_eq!(
            (r.daddr.to_string(), r.to.to_string()),
            ("10.0.0.64/27".into(), "10.0.0.26".into())
        );
        assert_eq!(snat(&t(), &n, false), None);
        let b: Topology = "4.16.256.256".parse().unwrap();
        let n = NtkAddress::parse("3.10.123.45", &b).unwrap();
        let r = snat(&b, &n, true).unwrap();
        assert_eq!(
            (r.daddr.to_string(), r.to.to_string()),
            ("10.128.0.0/10".into(), "10.58.123.45".into())
        );
    }
}
