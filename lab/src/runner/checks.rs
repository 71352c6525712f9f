//! Checks: kernel state against expected listings, marks and substrings (read over
//! rtnetlink and from the pinned classifier map); pings (ICMP echo from a raw socket); UDP
//! with the source address the receiver sees.
use std::{
    collections::BTreeMap,
    net::UdpSocket,
    path::{Path, PathBuf},
    time::Duration,
};

use ntkplane::{netns::Netns, plan::KRoute};

use super::{topology::PINS, Lab};
use crate::{
    icmp::{self, Answer},
    listing::{parse_tables, section, ExpectedTable, SCENARIO_LISTINGS},
    readback,
    scenario::{KernelCheck, PingCheck, UdpCheck},
};

impl Lab<'_> {
    pub(super) fn kernel_check(&self, k: &KernelCheck) -> Vec<String> {
        let mut errors = Vec::new();
        let system = k.on.get_ref();
        let netns = self.netns_of(system, k.netns.as_deref());
        let mut push = |r: Result<(), String>| {
            if let Err(e) = r {
                errors.push(e);
            }
        };
        let want: Option<BTreeMap<u32, ExpectedTable>> = match (&k.listing, &k.tables) {
            (Some(l), _) => Some(section(SCENARIO_LISTINGS, l.get_ref())),
            (None, Some(text)) => match parse_tables(text) {
                Ok(t) => Some(t),
                Err(e) => {
                    push(Err(format!("tables: {e}")));
                    None
                }
            },
            _ => None,
        };
        if let Some(want) = want {
            push(compare_tables(&netns, &want));
        }
        if let Some(marks) = &k.marks {
            let pins = PathBuf::from(PINS)
                .join(&self.sys(system).instance)
                .join(k.netns.as_deref().unwrap_or("default"));
            push(compare_marks(&pins, marks));
        }
        if !k.contains.is_empty() || !k.absent.is_empty() {
            // Addresses, routes of every table and rules as iproute2 prints them (tables as
            // numbers), read over rtnetlink; then nftables' own listing.
            let text = match readback::kernel_in(&netns) {
                Ok(kernel) => {
                    kernel.text()
                        + &readback::sh_in(&netns, "nft list ruleset").unwrap_or_else(|e| {
                            push(Err(e));
                            String::new()
                        })
                }
                Err(e) => {
                    push(Err(e));
                    String::new()
                }
            };
            for c in &k.contains {
                if !text.contains(c.as_str()) {
                    push(Err(format!("'{c}' not found")));
                }
            }
            for a in &k.absent {
                if text.contains(a.as_str()) {
                    push(Err(format!("'{a}' present")));
                }
            }
        }
        errors
    }

    pub(super) fn ping(&self, p: &PingCheck) -> Result<(String, Vec<String>), String> {
        let from = p.from.get_ref();
        let dst = self.resolve(p.to.get_ref())?;
        let src = p
            .source
            .as_ref()
            .map(|x| self.resolve(x.get_ref()))
            .transpose()?;
        let ns = self.ns_of_node(from);
        let what = format!(
            "ping {from} → {} ({dst}){}: expect {}",
            p.to.get_ref(),
            src.map(|s| format!(" from {s}")).unwrap_or_default(),
            p.expect.get_ref()
        );
        // Up to two echo requests, one second each (as `ping -c 2 -W 1` did); the first
        // answer ends it.
        let mut pinger = icmp::Pinger::open(&ns, src)?;
        let mut seen: Vec<String> = Vec::new();
        let mut answer = None;
        for _ in 0..2 {
            match pinger.echo(dst, Duration::from_secs(1)) {
                Ok(Answer::Timeout) => seen.push("no answer".into()),
                Ok(a) => {
                    answer = Some(a);
                    break;
                }
                Err(e) => seen.push(format!("not sent: {e}")),
            }
        }
        let mut errors = Vec::new();
        let nothing = || seen.join(" / ");
        let from_addr = match (p.expect.get_ref().as_str(), answer) {
            ("reply", Some(Answer::Reply { from })) => Some(from),
            ("reply", Some(a)) => {
                errors.push(format!("no reply: {a}"));
                None
            }
            ("reply", None) => {
                errors.push(format!("no reply: {}", nothing()));
                None
            }
            ("no-reply", Some(Answer::Reply { from })) => {
                errors.push(format!("a reply came from {from}"));
                None
            }
            ("no-reply", _) => None,
            (_, Some(Answer::Unreachable { from, .. })) => Some(from),
            (_, Some(a)) => {
                errors.push(format!("no ICMP destination unreachable: {a}"));
                None
            }
            (_, None) => {
                errors.push(format!("no ICMP destination unreachable: {}", nothing()));
                None
            }
        };
        if let (Some(want), Some(seen)) = (&p.reply_from, from_addr) {
            let want = self.resolve(want.get_ref())?;
            if seen != want {
                errors.push(format!("answer from {seen}, expected from {want}"));
            }
        }
        Ok((what, errors))
    }

    pub(super) fn udp(&self, u: &UdpCheck, step: usize) -> Result<(String, Vec<String>), String> {
        let dst = self.resolve(u.to.get_ref())?;
        let port = 40_000 + step as u16;
        let rx = Netns::named(self.ns_of_node(u.at.get_ref()))
            .run(|| UdpSocket::bind(("0.0.0.0", port)))
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("bind :{port} in {}: {e}", u.at.get_ref()))?;
        let tx = Netns::named(self.ns_of_node(u.from.get_ref()))
            .run(|| UdpSocket::bind("0.0.0.0:0"))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        rx.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut buf = [0u8; 64];
        let mut seen = None;
        for _ in 0..3 {
            let _ = tx.send_to(b"ntkplane lab", (dst, port));
            if let Ok((_, from)) = rx.recv_from(&mut buf) {
                seen = Some(from.ip());
                break;
            }
        }
        let what = format!(
            "udp {} → {} ({dst}) received at {}",
            u.from.get_ref(),
            u.to.get_ref(),
            u.at.get_ref()
        );
        let mut errors = Vec::new();
        match seen {
            None => errors.push("nothing received".into()),
            Some(seen) => {
                if let Some(w) = &u.source_seen {
                    let w = self.resolve(w.get_ref())?;
                    if seen != w {
                        errors.push(format!("source seen {seen}, expected {w}"));
                    }
                }
                if let Some(w) = &u.source_not {
                    let w = self.resolve(w.get_ref())?;
                    if seen == w {
                        errors.push(format!("source seen {seen}: not rewritten"));
                    }
                }
            }
        }
        Ok((what, errors))
    }
}

/// The namespace's tables against the expected ones: the same set of ntk tables, every
/// route one of the listed values, a fwmark rule for every forwarding table.
pub fn compare_tables(netns: &str, want: &BTreeMap<u32, ExpectedTable>) -> Result<(), String> {
    let mut errors = Vec::new();
    // Main holds the daemon's link routes to its neighbours, which the listings leave out.
    let got_tables: std::collections::BTreeSet<u32> = readback::ntk_tables_in(netns)?
        .into_iter()
        .filter(|t| *t != ntkplane::plan::MAIN_TABLE)
        .collect();
    let want_tables: std::collections::BTreeSet<u32> = want.keys().copied().collect();
    if got_tables != want_tables {
        errors.push(format!("tables {got_tables:?}, expected {want_tables:?}"));
    }
    for (id, t) in want {
        let got = readback::ntk_table_in(netns, *id)?;
        for (p, alts) in &t.routes {
            let alts: Vec<KRoute> = alts.iter().map(KRoute::from).collect();
            match got.get(p) {
                None => errors.push(format!("table {id}: {p} missing")),
                Some(r) if !alts.contains(r) => {
                    errors.push(format!("table {id}: {p} is {r:?}, expected {alts:?}"))
                }
                _ => {}
            }
        }
        for p in got.keys().filter(|p| !t.routes.contains_key(p)) {
            errors.push(format!("table {id}: {p} not expected"));
        }
    }
    let rules = readback::ntk_rules_in(netns)?;
    for id in want.keys().filter(|id| **id != ntkplane::fwd::NTK_TABLE) {
        if !rules.iter().any(|r| r.table == *id && r.fwmark.is_some()) {
            errors.push(format!("no fwmark rule for table {id}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The pinned classifier map holds exactly these MAC → mark entries.
pub fn compare_marks(pins: &Path, want: &BTreeMap<String, u32>) -> Result<(), String> {
    let got = readback::pinned_marks(pins)?;
    let want: BTreeMap<String, u32> = want.iter().map(|(m, v)| (m.to_uppercase(), *v)).collect();
    if got != want {
        return Err(format!("marks {got:?}, expected {want:?}"));
    }
    Ok(())
}
