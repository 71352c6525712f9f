//! Reading a namespace back the way an administrator would (`ip -j`, `nft`, `bpftool`), for
//! the lab's checks and the integration tests. Errors are strings naming the command.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

use serde_json::Value;

use ntkplane::{addr::Ipv4Prefix, plan::KRoute};

/// Output of `sh -c cmd` inside the named namespace.
pub fn sh_in(netns: &str, cmd: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "sh", "-c", cmd])
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("cannot run ip netns exec: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "[{netns}] {cmd}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json_in(netns: &str, cmd: &str) -> Result<Vec<Value>, String> {
    let out = sh_in(netns, cmd)?;
    if out.trim().is_empty() {
        return Ok(vec![]);
    }
    match serde_json::from_str(&out) {
        Ok(Value::Array(a)) => Ok(a),
        Ok(other) => Err(format!("{cmd}: not a list: {other}")),
        Err(e) => Err(format!("{cmd}: {e}")),
    }
}

/// `ip -j route show table N` as prefix → route.
pub fn table_in(netns: &str, id: u32) -> Result<BTreeMap<Ipv4Prefix, KRoute>, String> {
    routes(netns, &format!("ip -j route show table {id}"), id)
}

/// [`table_in`] restricted to ntkplane's routes (protocol ntk): what an administrator added
/// to the same table is not the daemon's state.
pub fn ntk_table_in(netns: &str, id: u32) -> Result<BTreeMap<Ipv4Prefix, KRoute>, String> {
    routes(netns, &format!("ip -j route show table {id} proto ntk"), id)
}

fn routes(netns: &str, cmd: &str, id: u32) -> Result<BTreeMap<Ipv4Prefix, KRoute>, String> {
    let mut out = BTreeMap::new();
    for r in json_in(netns, cmd)? {
        let bad = || format!("table {id}: unexpected route {r}");
        let dst = r["dst"].as_str().ok_or_else(bad)?;
        let p: Ipv4Prefix = if dst.contains('/') {
            dst.parse().map_err(|_| bad())?
        } else {
            format!("{dst}/32").parse().map_err(|_| bad())?
        };
        let route = match r["type"].as_str().unwrap_or("unicast") {
            "unreachable" => KRoute::Unreachable,
            "blackhole" => KRoute::Blackhole,
            _ => {
                let dev = r["dev"].as_str().ok_or_else(bad)?.to_string();
                let src = r["prefsrc"].as_str().and_then(|s| s.parse().ok());
                match r["gateway"].as_str() {
                    Some(gw) => KRoute::Via {
                        gw: gw.parse().map_err(|_| bad())?,
                        dev,
                        src,
                    },
                    None => KRoute::Link {
                        dev,
                        src: src.ok_or_else(bad)?,
                    },
                }
            }
        };
        out.insert(p, route);
    }
    Ok(out)
}

/// `ip -j rule` entries with protocol ntk, as (priority, fwmark, table).
pub fn ntk_rules_in(netns: &str) -> Result<Vec<(u64, Option<String>, String)>, String> {
    Ok(json_in(netns, "ip -j rule show")?
        .iter()
        .filter(|r| r["protocol"].as_str() == Some("ntk"))
        .map(|r| {
            (
                r["priority"].as_u64().unwrap_or(0),
                r["fwmark"].as_str().map(str::to_string),
                r["table"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect())
}

/// Table ids holding routes of protocol ntk.
pub fn ntk_tables_in(netns: &str) -> Result<BTreeSet<u32>, String> {
    Ok(json_in(netns, "ip -j route show table all proto ntk")?
        .iter()
        .filter_map(|r| {
            r["table"]
                .as_u64()
                .map(|t| t as u32)
                .or_else(|| r["table"].as_str().and_then(|t| t.parse().ok()))
        })
        .collect())
}

/// The classifier's MAC → mark entries, read from its pinned map with `bpftool`.
pub fn pinned_marks(pin_dir: &Path) -> Result<BTreeMap<String, u32>, String> {
    let map = pin_dir.join(ntkplane_common::NEIGHBOURS_MAP);
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&map)
        .output()
        .map_err(|e| format!("cannot run bpftool: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "bpftool map dump pinned {}: {}",
            map.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).map_err(|e| format!("bpftool: {e}"))?;
    let byte = |x: &Value| {
        u8::from_str_radix(x.as_str().unwrap_or("").trim_start_matches("0x"), 16).unwrap_or(0)
    };
    Ok(v.iter()
        .map(|e| {
            let k: Vec<u8> = e["key"]
                .as_array()
                .into_iter()
                .flatten()
                .map(byte)
                .collect();
            let val: Vec<u8> = e["value"]
                .as_array()
                .into_iter()
                .flatten()
                .map(byte)
                .collect();
            let mac = k
                .iter()
                .take(6)
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":");
            let mark = val
                .get(..4)
                .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()));
            (mac, mark)
        })
        .collect())
}
