//! Reading a namespace back the way an administrator would: `ip -j`, `nft -j`.
use std::collections::BTreeMap;

use ntkplane::{addr::Ipv4Prefix, plan::KRoute};
use serde_json::Value;

use crate::lab::Ns;

/// Output of `sh -c cmd` inside the named namespace.
pub fn sh_in(netns: &str, cmd: &str) -> String {
    let out = crate::lab::must(
        std::process::Command::new("ip")
            .args(["netns", "exec", netns, "sh", "-c", cmd])
            .env("LC_ALL", "C"),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[allow(dead_code)]
fn json(ns: &Ns, cmd: &str) -> Value {
    json_in(&ns.name, cmd)
}

fn json_in(netns: &str, cmd: &str) -> Value {
    let out = sh_in(netns, cmd);
    if out.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{cmd}: {e}: {out}"))
}

/// `ip -j route show table N` as prefix → route.
pub fn table(ns: &Ns, id: u32) -> BTreeMap<Ipv4Prefix, KRoute> {
    table_in(&ns.name, id)
}

/// [`table`] in a namespace given by name (an identity namespace a daemon created).
pub fn table_in(netns: &str, id: u32) -> BTreeMap<Ipv4Prefix, KRoute> {
    let mut out = BTreeMap::new();
    for r in json_in(netns, &format!("ip -j route show table {id}"))
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
    ntk_rules_in(&ns.name)
}

/// [`ntk_rules`] in a namespace given by name.
pub fn ntk_rules_in(netns: &str) -> Vec<(u64, Option<String>, String)> {
    json_in(netns, "ip -j rule show")
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

/// Table ids holding routes of protocol ntk (`ip -j route show table all`).
pub fn ntk_tables_in(netns: &str) -> std::collections::BTreeSet<u32> {
    json_in(netns, "ip -j route show table all proto ntk")
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            r["table"]
                .as_u64()
                .map(|t| t as u32)
                .or_else(|| r["table"].as_str().and_then(|t| t.parse().ok()))
        })
        .collect()
}

/// The classifier's MAC → mark entries, read from its pinned map with `bpftool`.
pub fn pinned_marks(pin_dir: &std::path::Path) -> BTreeMap<String, u32> {
    let map = pin_dir.join(ntkplane_common::NEIGHBOURS_MAP);
    let out = crate::lab::must(std::process::Command::new("bpftool").args([
        "-j",
        "map",
        "dump",
        "pinned",
        map.to_str().unwrap(),
    ]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let byte =
        |x: &Value| u8::from_str_radix(x.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let k: Vec<u8> = e["key"].as_array().unwrap().iter().map(byte).collect();
            let val: Vec<u8> = e["value"].as_array().unwrap().iter().map(byte).collect();
            let mac = k[..6]
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":");
            (mac, u32::from_le_bytes(val[..4].try_into().unwrap()))
        })
        .collect()
}
