//! The one place that talks to nftables: ntkplane's own table `ip ntkplane` in the current
//! thread's namespace. Structural changes are one atomic `nft -f -` transaction (declare,
//! delete, re-create: a failed script changes nothing); state is read back with
//! `nft -j list table` into the canonical [`NatState`] (the `nftables` crate cannot parse
//! prefix-NAT rules, so the JSON is read as plain values). No other table is touched.
use std::{
    io::Write,
    process::{Command, Stdio},
    sync::Mutex,
};

use serde_json::Value;

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    addr::Ipv4Prefix,
    plan::nat::{NatState, Skeleton, NFT_TABLE},
};

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatChange {
    /// The table was (re)built in one transaction.
    Table,
    /// Only map elements were deleted/added, in one transaction.
    Elements,
}

/// ntkplane's table as read back: canonical state, structure, and each map's elements.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub nat: NatState,
    pub skeleton: Skeleton,
    pub maps: BTreeMap<String, BTreeSet<(Ipv4Prefix, Ipv4Prefix)>>,
    /// Rules that are not ntkplane's (no NAT statement: a `drop` added by hand): their
    /// presence makes the table be rebuilt.
    pub foreign: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft: {0} (is the nftables package installed?)")]
    Spawn(#[source] std::io::Error),
    #[error("nft failed: {0}")]
    Failed(String),
    #[error("cannot read nft's JSON: {0}")]
    Parse(String),
}

fn run(args: &[&str], stdin: Option<&str>) -> Result<(bool, String, String), NftError> {
    let mut c = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(s) = stdin {
        c.stdin
            .take()
            .unwrap()
            .write_all(s.as_bytes())
            .map_err(NftError::Spawn)?;
    }
    let out = c.wait_with_output().map_err(NftError::Spawn)?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Makes ntkplane's table hold `nat`, in one transaction: when only map elements differ,
/// only they change (rules, counters and handles stay); otherwise the table is rebuilt; an
/// empty state removes it.
pub fn apply(nat: &NatState) -> Result<NatChange, NftError> {
    let current = observe_full()?;
    if let Some(cur) =
        current.filter(|c| !nat.is_empty() && c.foreign == 0 && c.skeleton == nat.skeleton())
    {
        let want = nat.maps();
        let mut script = String::new();
        for (name, elems) in &cur.maps {
            let gone: Vec<String> = elems
                .difference(want.get(name).unwrap_or(&BTreeSet::new()))
                .map(|(k, _)| k.to_string())
                .collect();
            if !gone.is_empty() {
                script.push_str(&format!(
                    "delete element ip {NFT_TABLE} {name} {{ {} }}\n",
                    gone.join(", ")
                ));
            }
        }
        for (name, elems) in &want {
            let new: Vec<String> = elems
                .difference(cur.maps.get(name).unwrap_or(&BTreeSet::new()))
                .map(|(k, v)| format!("{k} : {v}"))
                .collect();
            if !new.is_empty() {
                script.push_str(&format!(
                    "add element ip {NFT_TABLE} {name} {{ {} }}\n",
                    new.join(", ")
                ));
            }
        }
        run_script(&script)?;
        return Ok(NatChange::Elements);
    }
    // `table` declares it (no-op if present) so that `delete` never fails.
    let mut script = format!("table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n");
    if !nat.is_empty() {
        script.push_str(&nat.render());
    }
    run_script(&script)?;
    Ok(NatChange::Table)
}

fn run_script(script: &str) -> Result<(), NftError> {
    if script.is_empty() {
        return Ok(());
    }
    let (ok, _, err) = run(&["-f", "-"], Some(script))?;
    if !ok {
        return Err(NftError::Failed(format!(
            "{}\n--- script ---\n{script}",
            err.trim()
        )));
    }
    Ok(())
}

/// Reads ntkplane's table back (empty state when it does not exist).
pub fn observe() -> Result<NatState, NftError> {
    Ok(observe_full()?.map(|o| o.nat).unwrap_or_default())
}

/// The last read of ntkplane's table in each namespace (the device and inode of its
/// `/proc/thread-self/ns/net`), with the ruleset generation read just before it.
type Reads = BTreeMap<(u64, u64), (u32, Option<Observed>)>;
static READS: Mutex<Reads> = Mutex::new(BTreeMap::new());

/// The current thread's namespace, as a key of [`READS`].
fn netns_key() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/thread-self/ns/net").ok()?;
    Some((m.dev(), m.ino()))
}

/// Reads ntkplane's table back with its structure; `None` when it does not exist.
///
/// Every reconcile reads the table, and reading it is a process (`nft -j list`): while 49
/// daemons converged on 2 CPUs, `nft` was a fifth of all CPU time. So the read is reused
/// while the namespace's ruleset generation has not moved since (any nftables commit in the
/// namespace, ntkplane's or anyone's, moves it: drift is still seen at the next check). The
/// generation is read before the table, so a change in between only causes one more read.
/// When the generation cannot be read, the table is read every time, as before.
pub fn observe_full() -> Result<Option<Observed>, NftError> {
    let key = netns_key();
    let gen = crate::kernel::nftgen::generation().ok();
    let reads = || READS.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some(k), Some(g)) = (key, gen) {
        if let Some((seen, o)) = reads().get(&k) {
            if *seen == g {
                return Ok(o.clone());
            }
        }
    }
    let o = read_table()?;
    if let (Some(k), Some(g)) = (key, gen) {
        reads().insert(k, (g, o.clone()));
    }
    Ok(o)
}

fn read_table() -> Result<Option<Observed>, NftError> {
    let (ok, out, err) = run(&["-j", "list", "table", "ip", NFT_TABLE], None)?;
    if !ok {
        if err.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(NftError::Failed(err.trim().to_string()));
    }
    parse(&out).map(Some)
}

/// The raw JSON ruleset of ntkplane's table, for tests and `show` commands.
pub fn list_json() -> Result<Option<Value>, NftError> {
    let (ok, out, _) = run(&["-j", "list", "table", "ip", NFT_TABLE], None)?;
    if !ok {
        return Ok(None);
    }
    serde_json::from_str(&out)
        .map(Some)
        .map_err(|e| NftError::Parse(e.to_string()))
}

fn prefix_of(v: &Value) -> Option<Ipv4Prefix> {
    if let Some(p) = v.get("prefix") {
        let addr = p.get("addr")?.as_str()?;
        let len = p.get("len")?.as_u64()?;
        return format!("{addr}/{len}").parse().ok();
    }
    v.as_str()?.parse().ok()
}

/// Parses `nft -j list table ip ntkplane`.
pub fn parse(json: &str) -> Result<Observed, NftError> {
    let v: Value = serde_json::from_str(json).map_err(|e| NftError::Parse(e.to_string()))?;
    let objs = v["nftables"]
        .as_array()
        .ok_or_else(|| NftError::Parse("no nftables array".into()))?;
    let mut maps: std::collections::BTreeMap<String, Vec<(Ipv4Prefix, Ipv4Prefix)>> =
        Default::default();
    for o in objs {
        if let Some(m) = o.get("map") {
            let name = m["name"].as_str().unwrap_or_default().to_string();
            let mut elems = Vec::new();
            for e in m["elem"].as_array().into_iter().flatten() {
                let pair = e
                    .as_array()
                    .ok_or_else(|| NftError::Parse(format!("element {e}")))?;
                let (k, v) = (prefix_of(&pair[0]), prefix_of(&pair[1]));
                match (k, v) {
                    (Some(k), Some(v)) => elems.push((k, v)),
                    _ => return Err(NftError::Parse(format!("element {e}"))),
                }
            }
            maps.insert(name, elems);
        }
    }
    let mut s = NatState::default();
    let mut post_maps: BTreeMap<String, Ipv4Prefix> = BTreeMap::new();
    let mut foreign = 0;
    for o in objs {
        let Some(r) = o.get("rule") else { continue };
        let exprs = r["expr"].as_array().cloned().unwrap_or_default();
        if !exprs
            .iter()
            .any(|e| e.get("dnat").is_some() || e.get("snat").is_some())
        {
            foreign += 1;
            continue;
        }
        let mut saddr = None;
        let mut daddr = None;
        for e in &exprs {
            if let Some(m) = e.get("match") {
                let field = m["left"]["payload"]["field"].as_str();
                let p = prefix_of(&m["right"]);
                match field {
                    Some("saddr") => saddr = p,
                    Some("daddr") => daddr = p,
                    _ => {}
                }
            }
            for (kind, stmt) in [("dnat", e.get("dnat")), ("snat", e.get("snat"))] {
                let Some(stmt) = stmt else { continue };
                let addr = &stmt["addr"];
                if let Some(map) = addr.get("map") {
                    let name = map["data"]
                        .as_str()
                        .unwrap_or_default()
                        .trim_start_matches('@');
                    let elems = maps.get(name).cloned().unwrap_or_default();
                    match (kind, saddr) {
                        ("dnat", _) => s.pre.extend(elems),
                        ("snat", Some(src)) => {
                            post_maps.insert(name.to_string(), src);
                            s.post.extend(elems.into_iter().map(|(k, v)| (src, k, v)))
                        }
                        _ => return Err(NftError::Parse(format!("unexpected rule {r}"))),
                    }
                } else if let (Some(to), Some(d)) = (addr.as_str(), daddr) {
                    let to = to
                        .parse()
                        .map_err(|_| NftError::Parse(format!("snat target {to}")))?;
                    s.snat = Some((d, to));
                } else {
                    return Err(NftError::Parse(format!("unexpected rule {r}")));
                }
            }
        }
    }
    let skeleton = Skeleton {
        pre_maps: maps.keys().filter(|n| n.starts_with("pre")).count(),
        post_maps: post_maps.values().copied().collect(),
        snat: s.snat,
    };
    let maps = maps
        .into_iter()
        .map(|(n, v)| (n, v.into_iter().collect()))
        .collect();
    Ok(Observed {
        nat: s,
        skeleton,
        maps,
        foreign,
    })
}
