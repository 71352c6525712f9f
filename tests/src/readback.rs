//! Reading a namespace back the way an administrator would: `ip -j`, `nft -j`.
use std::collections::BTreeMap;

use ntkplane::{addr::Ipv4Prefix, plan::KRoute};
use serde_json::Value;

use crate::lab::Ns;

fn json(ns: &Ns, cmd: &str) -> Value {
    let out = ns.sh(cmd);
    if out.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{cmd}: {e}: {out}"))
}

/// `ip -j route show table N` as prefix → route.
pub fn table(ns: &Ns, id: u32) -> BTreeMap<Ipv4Prefix, KRoute> {
    let mut out = BTreeMap::new();
    for r in json(ns, &format!("ip -j route show table {id}"))
        .as_array()
        .unwrap()
    {
        let dst = r["dst"].as_str().unwrap();
        let p: Ipv4Prefix = if dst.contains('/') {
            dst.parse().unwrap()
        } else {
            format!("{dst}/32").parse().unwrap()
        };
        let kind = r["type"].as_str().unwrap_or("unicast");
        let route = match kind {
            "unreachable" => KRoute::Unreachable,
            "blackhole" => KRoute::Blackhole,
            _ => {
                let dev = r["dev"].as_str().unwrap().to_string();
                let src = r["prefsrc"].as_str().map(|s| s.parse().unwrap());
                match r["gateway"].as_str() {
                    Some(gw) => KRoute::Via {
                        gw: gw.parse().unwrap(),
                        dev,
                        src,
                    },
                    None => KRoute::Link {
                        dev,
                        src: src.expect("direct route with src"),
                    },
                }
            }
        };
        out.insert(p, route);
    }
    out
}

/// `ip -j rule` entries with protocol ntk, as (priority, fwmark, table).
pub fn ntk_rules(ns: &Ns) -> Vec<(u64, Option<String>, String)> {
    json(ns, "ip -j rule show")
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["protocol"].as_str() == Some("ntk"))
        .map(|r| {
            (
                r["priority"].as_u64().unwrap(),
                r["fwmark"].as_str().map(str::to_string),
                r["table"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Everything a cleanup must restore, as text: addresses, routes of all tables, rules, the
/// whole nft ruleset.
pub fn full_dump(ns: &Ns) -> String {
    // IPv4 only: ntkplane manages no IPv6, whose link-local DAD flags change on their own.
    [
        "ip -4 -j addr show",
        "ip -4 -j route show table all",
        "ip -4 -j rule show",
        "nft -j list ruleset",
    ]
    .iter()
    .map(|c| format!("== {c}\n{}", ns.sh(c)))
    .collect()
}
