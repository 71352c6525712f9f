//! The facts `ntkplane addr` prints about one address (its JSON is a contract other tools
//! rely on: keep field names and order).
use std::{fmt::Write as _, net::Ipv4Addr};

use serde::{ser::SerializeMap, Serialize, Serializer};

use super::{
    destinations, ipv4,
    naddr::NtkAddress,
    nat::{netmap, NetmapRule},
    prefix::Ipv4Prefix,
    topology::Topology,
};

/// A JSON object whose keys keep insertion order (levels "0", "1", … "10").
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ordered<V>(pub Vec<(String, V)>);

impl<V: Serialize> Serialize for Ordered<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Debug, Serialize)]
pub struct GnodeReport {
    pub level: usize,
    pub global: Option<Ipv4Prefix>,
    pub anonymous: Option<Ipv4Prefix>,
    pub internal: Ordered<Ipv4Prefix>,
}

#[derive(Debug, Serialize)]
pub struct AddrReport {
    pub global: Option<Ipv4Addr>,
    pub anonymous: Option<Ipv4Addr>,
    pub internal: Ordered<Ipv4Addr>,
    pub localhost: Ipv4Addr,
    pub global_range: Ipv4Prefix,
    pub anonymous_range: Ipv4Prefix,
    pub gnodes: Vec<GnodeReport>,
    pub own_ips: Vec<Ipv4Addr>,
    pub destinations: Vec<Ipv4Prefix>,
    pub netmap: Vec<NetmapRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subnet level {level} must be below the number of levels ({levels})")]
pub struct SubnetLevelError {
    pub level: usize,
    pub levels: usize,
}

impl AddrReport {
    pub fn new(
        t: &Topology,
        n: &NtkAddress,
        subnet_level: usize,
        serve_anonymous: bool,
    ) -> Result<Self, SubnetLevelError> {
        let l = t.levels();
        if subnet_level >= l {
            return Err(SubnetLevelError {
                level: subnet_level,
                levels: l,
            });
        }
        let internal = Ordered(
            (0..l)
                .filter_map(|k| ipv4::internal_node(t, n, k).map(|ip| (k.to_string(), ip)))
                .collect(),
        );
        let gnodes = (0..=l)
            .map(|lvl| GnodeReport {
                level: lvl,
                global: ipv4::global_gnode(t, n, lvl),
                anonymous: ipv4::anon_gnode(t, n, lvl),
                internal: Ordered(
                    (lvl..l)
                        .filter_map(|k| {
                            ipv4::internal_gnode(t, n, lvl, k).map(|p| (k.to_string(), p))
                        })
                        .collect(),
                ),
            })
            .collect();
        Ok(Self {
            global: ipv4::global_node(t, n),
            anonymous: ipv4::anon_node(t, n),
            internal,
            localhost: ipv4::localhost(t),
            global_range: ipv4::global_range(t),
            anonymous_range: ipv4::anon_range(t),
            gnodes,
            own_ips: ipv4::own_ips(t, n, serve_anonymous)
                .into_iter()
                .map(|(_, ip)| ip)
                .collect(),
            destinations: destinations(t, n, subnet_level)
                .into_iter()
                .map(|d| d.prefix)
                .collect(),
            netmap: netmap(t, n, subnet_level, serve_anonymous),
        })
    }

    /// The same facts as a readable table.
    pub fn to_text(&self, t: &Topology, n: &NtkAddress) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "- (virtual position)".into());
        let mut s = String::new();
        let _ = writeln!(s, "address {n} in topology {t} (base {})", t.base());
        let _ = writeln!(
            s,
            "  global        {}",
            opt(self.global.map(|i| i.to_string()))
        );
        let _ = writeln!(
            s,
            "  anonymizing   {}",
            opt(self.anonymous.map(|i| i.to_string()))
        );
        for (k, ip) in &self.internal.0 {
            let what = if k == "0" { " (ntk localhost)" } else { "" };
            let _ = writeln!(s, "  internal {k:<4} {ip}{what}");
        }
        let _ = writeln!(s, "  global range  {}", self.global_range);
        let _ = writeln!(s, "  anon range    {}", self.anonymous_range);
        let _ = writeln!(s, "g-nodes containing it:");
        let _ = writeln!(
            s,
            "  {:<5} {:<18} {:<18} internal",
            "level", "global", "anonymizing"
        );
        for g in &self.gnodes {
            let internal: Vec<String> = g
                .internal
                .0
                .iter()
                .map(|(k, p)| format!("{k}:{p}"))
                .collect();
            let _ = writeln!(
                s,
                "  {:<5} {:<18} {:<18} {}",
                g.level,
                g.global.map_or("-".into(), |p| p.to_string()),
                g.anonymous.map_or("-".into(), |p| p.to_string()),
                internal.join(" ")
            );
        }
        let own: Vec<String> = self.own_ips.iter().map(Ipv4Addr::to_string).collect();
        let _ = writeln!(
            s,
            "own addresses (each real NIC, in order): {}",
            own.join(" ")
        );
        let _ = writeln!(s, "destinations ({}):", self.destinations.len());
        for chunk in self.destinations.chunks(6) {
            let row: Vec<String> = chunk.iter().map(Ipv4Prefix::to_string).collect();
            let _ = writeln!(s, "  {}", row.join("  "));
        }
        if !self.netmap.is_empty() {
            let _ = writeln!(s, "NETMAP (autonomous subnet gateway):");
            for r in &self.netmap {
                match r.saddr {
                    None => {
                        let _ = writeln!(s, "  prerouting   daddr {:<15} -> {}", r.daddr, r.to);
                    }
                    Some(src) => {
                        let _ = writeln!(
                            s,
                            "  postrouting  daddr {:<15} saddr {} -> {}",
                            r.daddr, src, r.to
                        );
                    }
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_of_the_issue_example() {
        let t: Topology = "4.2.2.2".parse().unwrap();
        let n = NtkAddress::parse("3.1.0.1", &t).unwrap();
        let r = AddrReport::new(&t, &n, 0, false).unwrap();
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["global"], "10.0.0.29");
        assert_eq!(j["anonymous"], "10.0.0.93");
        assert_eq!(j["localhost"], "10.0.0.32");
        assert_eq!(j["internal"]["0"], "10.0.0.32");
        assert_eq!(j["internal"]["1"], "10.0.0.41");
        assert_eq!(j["global_range"], "10.0.0.0/27");
        assert_eq!(j["anonymous_range"], "10.0.0.64/27");
        assert_eq!(j["gnodes"][0]["global"], "10.0.0.29/32");
        assert_eq!(j["gnodes"][4]["global"], "10.0.0.0/27");
        assert_eq!(j["gnodes"][1]["internal"]["3"], "10.0.0.60/31");
        assert_eq!(j["netmap"], serde_json::json!([]));
        let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 10);
    }

    #[test]
    fn virtual_positions_are_null() {
        let t: Topology = "4.2.2.2".parse().unwrap();
        let n = NtkAddress::parse("2.2.1.0", &t).unwrap();
        let j = serde_json::to_value(AddrReport::new(&t, &n, 0, true).unwrap()).unwrap();
        assert!(j["global"].is_null() && j["anonymous"].is_null());
        assert_eq!(
            j["internal"],
            serde_json::json!({"0": "10.0.0.32", "1": "10.0.0.40", "2": "10.0.0.50"})
        );
        assert_eq!(j["own_ips"], serde_json::json!(["10.0.0.50", "10.0.0.40"]));
        assert!(
            j["gnodes"][2]["global"].is_null(),
            "level-2 g-node has a virtual position"
        );
        assert_eq!(j["gnodes"][3]["global"], "10.0.0.16/29");
    }

    #[test]
    fn subnet_level_is_checked() {
        let t: Topology = "4.2.2.2".parse().unwrap();
        let n = NtkAddress::parse("1.1.0.0", &t).unwrap();
        assert!(AddrReport::new(&t, &n, 4, false).is_err());
        assert_eq!(AddrReport::new(&t, &n, 1, true).unwrap().netmap.len(), 8);
    }
}
