//! Checks: kernel state against expected listings, marks, substrings and the exact forms
//! (read over rtnetlink, from the pinned classifier map, TCX queries and nftables); pings
//! (ICMP echo from a raw socket); UDP with the source address the receiver sees. Every
//! failure names the scenario file, line and field of the expectation that failed.
use std::{
    collections::BTreeMap,
    fmt,
    net::UdpSocket,
    path::{Path, PathBuf},
    time::Duration,
};

use ntkplane::{netns::Netns, plan::MAIN_TABLE};

use super::{exact, topology::PINS, Lab};
use crate::{
    icmp::{self, Answer},
    listing::{parse_tables, section, ExpectedTable, SCENARIO_LISTINGS},
    readback::{self, Kernel},
    scenario::{KernelCheck, PingCheck, Scenario, UdpCheck},
};

/// One failed expectation: where it is written (`FILE:LINE`), its field, what differs.
#[derive(Debug, Clone)]
pub struct Failure {
    pub at: String,
    pub field: String,
    pub msg: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.at, self.field, self.msg)
    }
}

/// Where a check is written: the scenario, the file, the field prefix (`step[12].check`).
pub(super) struct Loc<'s> {
    pub sc: &'s Scenario,
    pub file: &'s Path,
    pub prefix: String,
}

impl Loc<'_> {
    pub fn fail(&self, span: std::ops::Range<usize>, key: &str, msg: impl Into<String>) -> Failure {
        Failure {
            at: self.sc.at(self.file, span),
            field: if key.is_empty() {
                self.prefix.clone()
            } else {
                format!("{}.{key}", self.prefix)
            },
            msg: msg.into(),
        }
    }
}

/// Where a kernel check looks: the namespace, its classifier pins, the system's daemon
/// instance (whose identity namespaces are `<instance>-<label>`).
#[derive(Debug, Clone)]
pub(super) struct Probe {
    pub netns: String,
    pub pins: PathBuf,
    pub instance: String,
}

impl Lab<'_> {
    pub(super) fn probe(&self, k: &KernelCheck) -> Probe {
        let system = k.on.get_ref();
        let instance = self.sys(system).instance.clone();
        Probe {
            netns: self.netns_of(system, k.netns.as_deref()),
            pins: PathBuf::from(PINS)
                .join(&instance)
                .join(k.netns.as_deref().unwrap_or("default")),
            instance,
        }
    }

    pub(super) fn kernel_check(&self, k: &KernelCheck, loc: &Loc) -> Vec<Failure> {
        evaluate(&self.probe(k), k, loc)
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

/// The expected tables of a check: its listing, with its inline `tables` added (tables, or
/// routes of a listed table).
pub(super) fn expected_tables(
    k: &KernelCheck,
) -> Result<Option<BTreeMap<u32, ExpectedTable>>, String> {
    let mut want = match &k.listing {
        Some(l) => section(SCENARIO_LISTINGS, l.get_ref()),
        None if k.tables.is_none() => return Ok(None),
        None => BTreeMap::new(),
    };
    if let Some(t) = &k.tables {
        for (id, t) in parse_tables(t.get_ref())? {
            match want.get_mut(&id) {
                None => {
                    want.insert(id, t);
                }
                Some(w) => {
                    for (p, r) in t.routes {
                        if w.routes.insert(p, r).is_some() {
                            return Err(format!("table {id}: {p} is in the listing already"));
                        }
                    }
                }
            }
        }
    }
    Ok(Some(want))
}

/// A kernel check against the namespace now: every expectation it states, each failure
/// naming the expectation's line and field.
pub(super) fn evaluate(p: &Probe, k: &KernelCheck, loc: &Loc) -> Vec<Failure> {
    let mut out = Vec::new();
    let on = k.on.span();
    let needs_kernel = k.listing.is_some()
        || k.tables.is_some()
        || k.fwmark_rules.is_some()
        || !k.contains.is_empty()
        || !k.absent.is_empty()
        || k.addresses.is_some()
        || k.rules.is_some()
        || k.main.is_some()
        || k.links.is_some();
    let kernel: Option<Kernel> = if needs_kernel {
        readback::kernel_in(&p.netns)
            .map_err(|e| {
                out.push(loc.fail(on.clone(), "on", format!("cannot read the namespace: {e}")))
            })
            .ok()
    } else {
        None
    };
    let needs_nft = !k.contains.is_empty() || !k.absent.is_empty() || k.nat.is_some();
    let nft: Option<String> = if needs_nft {
        readback::nft_ruleset_in(&p.netns)
            .map_err(|e| out.push(loc.fail(on.clone(), "on", e)))
            .ok()
    } else {
        None
    };
    if let Some(kernel) = &kernel {
        tables_of(kernel, k, loc, &mut out);
        if let Some(a) = &k.addresses {
            for e in exact::addresses(kernel, a.get_ref()) {
                out.push(loc.fail(a.span(), "addresses", e));
            }
        }
        if let Some(r) = &k.rules {
            for e in exact::rules(kernel, r.get_ref()) {
                out.push(loc.fail(r.span(), "rules", e));
            }
        }
        if let Some(m) = &k.main {
            for e in exact::main_table(kernel, m.get_ref()) {
                out.push(loc.fail(m.span(), "main", e));
            }
        }
        if let Some(l) = &k.links {
            let tcx = |dev: &str| readback::tcx_ingress_in(&p.netns, dev);
            for e in exact::links(kernel, l.get_ref(), tcx) {
                out.push(loc.fail(l.span(), "links", e));
            }
        }
    }
    if let Some(n) = &k.nat {
        if let Some(rs) = &nft {
            for e in exact::nat(rs, n.get_ref()) {
                out.push(loc.fail(n.span(), "nat", e));
            }
        }
    }
    if let Some(ns) = &k.namespaces {
        let got = readback::identity_namespaces(&p.instance);
        for e in exact::namespaces(&got, ns.get_ref()) {
            out.push(loc.fail(ns.span(), "namespaces", e));
        }
    }
    if let Some(m) = &k.marks {
        if let Err(e) = compare_marks(&p.pins, m.get_ref()) {
            out.push(loc.fail(m.span(), "marks", e));
        }
    }
    if !k.contains.is_empty() || !k.absent.is_empty() {
        // Addresses, routes of every table and rules as iproute2 prints them (tables as
        // numbers), read over rtnetlink; then nftables' own listing.
        if let (Some(kernel), Some(rs)) = (&kernel, &nft) {
            let text = kernel.text() + rs;
            for (i, c) in k.contains.iter().enumerate() {
                if !text.contains(c.get_ref().as_str()) {
                    out.push(loc.fail(
                        c.span(),
                        &format!("contains[{i}]"),
                        format!("'{}' not found", c.get_ref()),
                    ));
                }
            }
            for (i, a) in k.absent.iter().enumerate() {
                if text.contains(a.get_ref().as_str()) {
                    out.push(loc.fail(
                        a.span(),
                        &format!("absent[{i}]"),
                        format!("'{}' present", a.get_ref()),
                    ));
                }
            }
        }
    }
    out
}

/// `listing`/`tables` (with `tables_exact`, `tables_subset`) and `fwmark_rules`.
fn tables_of(kernel: &Kernel, k: &KernelCheck, loc: &Loc, out: &mut Vec<Failure>) {
    let (span, key) = match (&k.listing, &k.tables) {
        (Some(l), _) => (l.span(), "listing"),
        (None, Some(t)) => (t.span(), "tables"),
        _ => (k.on.span(), "on"),
    };
    let flag = |f: &Option<toml::Spanned<bool>>| f.as_ref().is_some_and(|f| *f.get_ref());
    let want = match expected_tables(k) {
        Ok(w) => w,
        Err(e) => {
            out.push(loc.fail(span, "tables", e));
            return;
        }
    };
    let mut rules: BTreeMap<u32, bool> = BTreeMap::new();
    if let Some(want) = &want {
        for e in exact::tables(kernel, want, flag(&k.tables_exact), flag(&k.tables_subset)) {
            out.push(loc.fail(span.clone(), key, e));
        }
        // Every listed forwarding table has its fwmark rule, unless stated otherwise.
        rules.extend(
            want.keys()
                .filter(|id| **id != ntkplane::fwd::NTK_TABLE && **id != MAIN_TABLE)
                .map(|id| (*id, true)),
        );
    }
    let stated: BTreeMap<u32, bool> = k
        .fwmark_rules
        .as_ref()
        .map(|r| {
            r.get_ref()
                .iter()
                .filter_map(|(id, v)| Some((id.parse().ok()?, *v)))
                .collect()
        })
        .unwrap_or_default();
    rules.extend(stated.iter().map(|(k, v)| (*k, *v)));
    for (id, e) in exact::fwmark_rules(kernel, &rules) {
        match &k.fwmark_rules {
            Some(r) if stated.contains_key(&id) => out.push(loc.fail(r.span(), "fwmark_rules", e)),
            _ => out.push(loc.fail(span.clone(), key, e)),
        }
    }
}

/// The namespace's tables against the expected ones: the same set of ntk tables, every
/// ntk route one of the listed values, a fwmark rule for every forwarding table.
pub fn compare_tables(netns: &str, want: &BTreeMap<u32, ExpectedTable>) -> Result<(), String> {
    let kernel = readback::kernel_in(netns)?;
    let mut errors = exact::tables(&kernel, want, false, false);
    let rules: BTreeMap<u32, bool> = want
        .keys()
        .filter(|id| **id != ntkplane::fwd::NTK_TABLE)
        .map(|id| (*id, true))
        .collect();
    errors.extend(
        exact::fwmark_rules(&kernel, &rules)
            .into_iter()
            .map(|(_, e)| e),
    );
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
