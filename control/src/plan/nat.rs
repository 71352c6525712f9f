//! The NAT part of a namespace's state (anonymizer SNAT, autonomous-subnet NETMAP) in a
//! canonical form, and its rendering as one nftables table.
use std::{collections::BTreeSet, fmt::Write as _, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::addr::{
    nat::{NatChain, NetmapRule, SnatRule},
    Ipv4Prefix,
};

/// The nftables table ntkplane owns in each namespace (family `ip`). Nothing else is touched.
pub const NFT_TABLE: &str = "ntkplane";
/// Hook priorities: the standard NAT ones (`dstnat` = -100, `srcnat` = 100), so ntkplane's
/// rules order with other NAT tables exactly as iptables' nat table would.
pub const PRE_PRIORITY: &str = "dstnat";
pub const POST_PRIORITY: &str = "srcnat";

/// Canonical NAT state: order-free sets (the rendering fixes the order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatState {
    /// `ip daddr <anon range> snat to <own global>`, evaluated before the NETMAP source
    /// rewrites (forwarding-state.md §9.6: SNAT wins for subnet hosts → anonymizing range).
    pub snat: Option<(Ipv4Prefix, Ipv4Addr)>,
    /// Destination rewrites: daddr prefix → prefix (host bits kept).
    pub pre: BTreeSet<(Ipv4Prefix, Ipv4Prefix)>,
    /// Source rewrites: (saddr selector, daddr selector) → source prefix (host bits kept).
    pub post: BTreeSet<(Ipv4Prefix, Ipv4Prefix, Ipv4Prefix)>,
}

impl NatState {
    pub fn new(snat: Option<SnatRule>, netmap: &[NetmapRule]) -> Self {
        let mut s = NatState {
            snat: snat.map(|r| (r.daddr, r.to)),
            ..Default::default()
        };
        for r in netmap {
            match (r.chain, r.saddr) {
                (NatChain::Prerouting, _) => {
                    s.pre.insert((r.daddr, r.to));
                }
                (NatChain::Postrouting, Some(src)) => {
                    s.post.insert((src, r.daddr, r.to));
                }
                (NatChain::Postrouting, None) => {
                    // A source rewrite needs a source selector; the spec has none without.
                }
            }
        }
        s
    }

    /// Every range a NAT rule of this state can rewrite, as destination or as source: the
    /// anonymizing range, the NETMAP'd destination ranges, the source selectors and the
    /// ranges sources are mapped to. The eBPF fast path hands packets from or to these to the
    /// stack (conntrack and the NAT hooks must see them).
    pub fn fast_path_exclusions(&self) -> BTreeSet<Ipv4Prefix> {
        let mut out = BTreeSet::new();
        if let Some((range, _)) = self.snat {
            out.insert(range);
        }
        for (from, to) in &self.pre {
            out.insert(*from);
            out.insert(*to);
        }
        for (src, _, to) in &self.post {
            out.insert(*src);
            out.insert(*to);
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.snat.is_none() && self.pre.is_empty() && self.post.is_empty()
    }

    /// Prerouting maps: each layer holds non-overlapping keys; layers go most specific
    /// first, because an nft interval map cannot hold nested prefixes and the first map
    /// that matches wins.
    pub fn pre_layers(&self) -> Vec<Vec<(Ipv4Prefix, Ipv4Prefix)>> {
        layers(self.pre.iter().copied().collect(), |e| e.0)
    }

    /// Postrouting maps per source selector, layered like [`Self::pre_layers`].
    pub fn post_layers(&self) -> Vec<(Ipv4Prefix, Vec<(Ipv4Prefix, Ipv4Prefix)>)> {
        let sources: BTreeSet<Ipv4Prefix> = self.post.iter().map(|e| e.0).collect();
        let mut out = Vec::new();
        for src in sources {
            let entries: Vec<(Ipv4Prefix, Ipv4Prefix)> = self
                .post
                .iter()
                .filter(|e| e.0 == src)
                .map(|e| (e.1, e.2))
                .collect();
            for layer in layers(entries, |e| e.0) {
                out.push((src, layer));
            }
        }
        out
    }

    /// Everything but map elements: map names (with, for postrouting maps, their source
    /// selector) and the SNAT rule. Two states with the same skeleton differ only in
    /// elements, which can be changed without touching rules.
    pub fn skeleton(&self) -> Skeleton {
        Skeleton {
            pre_maps: self.pre_layers().len(),
            post_maps: self.post_layers().iter().map(|(src, _)| *src).collect(),
            snat: self.snat,
        }
    }

    /// Map name → elements, as rendered.
    pub fn maps(&self) -> std::collections::BTreeMap<String, BTreeSet<(Ipv4Prefix, Ipv4Prefix)>> {
        let mut m = std::collections::BTreeMap::new();
        for (i, l) in self.pre_layers().into_iter().enumerate() {
            m.insert(format!("pre{i}"), l.into_iter().collect());
        }
        for (i, (_, l)) in self.post_layers().into_iter().enumerate() {
            m.insert(format!("post{i}"), l.into_iter().collect());
        }
        m
    }

    /// The whole table as an `nft -f` script (without the replace preamble).
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "table ip {NFT_TABLE} {{");
        let elems = |l: &[(Ipv4Prefix, Ipv4Prefix)]| {
            l.iter()
                .map(|(k, v)| format!("{k} : {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let pre = self.pre_layers();
        let post = self.post_layers();
        for (i, l) in pre.iter().enumerate() {
            let _ = writeln!(
                s,
                "  map pre{i} {{\n    type ipv4_addr : interval ipv4_addr\n    flags interval\n    elements = {{ {} }}\n  }}",
                elems(l)
            );
        }
        for (i, (_, l)) in post.iter().enumerate() {
            let _ = writeln!(
                s,
                "  map post{i} {{\n    type ipv4_addr : interval ipv4_addr\n    flags interval\n    elements = {{ {} }}\n  }}",
                elems(l)
            );
        }
        let _ = writeln!(s, "  chain prerouting {{\n    type nat hook prerouting priority {PRE_PRIORITY}; policy accept;");
        for i in 0..pre.len() {
            let _ = writeln!(s, "    dnat ip prefix to ip daddr map @pre{i}");
        }
        let _ = writeln!(s, "  }}");
        let _ = writeln!(s, "  chain postrouting {{\n    type nat hook postrouting priority {POST_PRIORITY}; policy accept;");
        if let Some((d, to)) = self.snat {
            let _ = writeln!(s, "    ip daddr {d} snat ip to {to}");
        }
        for (i, (src, _)) in post.iter().enumerate() {
            let _ = writeln!(
                s,
                "    ip saddr {src} snat ip prefix to ip daddr map @post{i}"
            );
        }
        let _ = writeln!(s, "  }}\n}}");
        s
    }
}

/// The structure of ntkplane's nft table (see [`NatState::skeleton`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skeleton {
    pub pre_maps: usize,
    /// Source selector of `post0`, `post1`, …
    pub post_maps: Vec<Ipv4Prefix>,
    pub snat: Option<(Ipv4Prefix, Ipv4Addr)>,
}

/// Splits entries into layers of pairwise non-overlapping keys, most specific first.
fn layers<T: Copy>(mut entries: Vec<T>, key: impl Fn(&T) -> Ipv4Prefix) -> Vec<Vec<T>> {
    entries.sort_by_key(|e| (std::cmp::Reverse(key(e).prefix_len()), key(e)));
    let mut out: Vec<Vec<T>> = Vec::new();
    for e in entries {
        let k = key(&e);
        match out
            .iter_mut()
            .find(|l| l.iter().all(|x| !key(x).overlaps(&k)))
        {
            Some(l) => l.push(e),
            None => out.push(vec![e]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Ipv4Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn fast_path_exclusions_cover_every_range_a_rule_rewrites() {
        let mut s = NatState {
            snat: Some((p("10.0.0.64/27"), "10.0.0.18".parse().unwrap())),
            ..Default::default()
        };
        s.pre.insert((p("10.0.0.40/29"), p("10.0.0.8/29")));
        s.post
            .insert((p("10.0.0.8/29"), p("10.0.0.0/24"), p("10.0.0.40/29")));
        let got: Vec<String> = s
            .fast_path_exclusions()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(got, ["10.0.0.8/29", "10.0.0.40/29", "10.0.0.64/27"]);
        assert!(NatState::default().fast_path_exclusions().is_empty());
    }

    #[test]
    fn nested_keys_go_to_separate_layers_most_specific_first() {
        let mut s = NatState::default();
        s.pre.insert((p("10.60.0.0/24"), p("10.50.2.0/24")));
        s.pre.insert((p("10.60.0.48/30"), p("10.99.0.0/30")));
        s.pre.insert((p("10.61.0.0/24"), p("10.51.2.0/24")));
        let l = s.pre_layers();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0][0].0, p("10.60.0.48/30"));
        assert!(l[0].iter().all(|e| e.0 != p("10.60.0.0/24")));
        assert_eq!(l[1], vec![(p("10.60.0.0/24"), p("10.50.2.0/24"))]);
    }

    #[test]
    fn render_of_lambda() {
        let t: crate::addr::Topology = "4.2.2.2".parse().unwrap();
        let n = crate::addr::NtkAddress::parse("1.1.0.0", &t).unwrap();
        let s = NatState::new(
            crate::addr::nat::snat(&t, &n, true),
            &crate::addr::nat::netmap(&t, &n, 1, true),
        );
        let text = s.render();
        assert!(text.contains("ip daddr 10.0.0.64/27 snat ip to 10.0.0.12"));
        assert!(text.contains("10.0.0.48/31 : 10.0.0.40/31"));
        assert!(text.contains("ip saddr 10.0.0.40/31 snat ip prefix to ip daddr map @post0"));
        // SNAT precedes the NETMAP source rewrite.
        assert!(text.find("snat ip to").unwrap() < text.find("snat ip prefix").unwrap());
        assert_eq!(s.pre.len(), 4);
        assert_eq!(s.post.len(), 4);
    }
}
