//! The report: per system its identities, tables and NAT, the connectivity matrix, the checks'
//! outcome; and how to look at a kept lab.
use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr, time::Duration};

use ntkplane::daemon::{proto::Request, reply};

use super::{CheckResult, Lab, LAB_PREFIX};
use crate::{
    icmp::{Answer, Pinger},
    readback,
};

impl Lab<'_> {
    /// Per system: identities, namespaces, tables with route counts and per-neighbour
    /// packet counters, NAT; then a connectivity matrix between the systems' main identities
    /// (global addresses) and hosts.
    pub fn report(&self) -> String {
        let mut r = String::new();
        for (name, s) in &self.systems {
            let _ = writeln!(
                r,
                "\n== {name} (instance {}, namespace {})",
                s.instance, s.netns
            );
            let Ok(ids) = self.ask::<Vec<reply::IdentityRow>>(name, &Request::ShowIdentities {})
            else {
                let _ = writeln!(r, "  daemon not running");
                continue;
            };
            for i in &ids {
                let _ = writeln!(
                    r,
                    "  identity {} {} {} in {}",
                    i.index, i.kind, i.address, i.netns
                );
            }
            if let Ok(tables) = self.ask::<Vec<reply::TableRow>>(name, &Request::ShowTables {}) {
                for t in &tables {
                    let _ = writeln!(
                        r,
                        "    [{}] table {} {:<28} {:>3} routes, rule {}, packets {}",
                        t.netns,
                        t.table,
                        t.name,
                        t.routes,
                        if t.rule { "yes" } else { "no" },
                        t.packets.map_or("-".into(), |p| p.to_string())
                    );
                    if let Some(f) = &t.fast_path {
                        let parts: Vec<String> = f
                            .iter()
                            .filter(|(_, v)| **v > 0)
                            .map(|(k, v)| format!("{k} {v}"))
                            .collect();
                        let _ = writeln!(
                            r,
                            "        fast path: {}",
                            if parts.is_empty() {
                                "no packets".to_string()
                            } else {
                                parts.join(", ")
                            }
                        );
                    }
                }
            }
            let nat = readback::sh_in(&s.netns, "nft list table ip ntkplane 2>/dev/null || true")
                .unwrap_or_default();
            let rules: Vec<&str> = nat
                .lines()
                .map(str::trim)
                .filter(|l| l.contains("snat") || l.contains("dnat"))
                .collect();
            let _ = writeln!(
                r,
                "  NAT: {}",
                if rules.is_empty() {
                    "none".into()
                } else {
                    rules.join(" | ")
                }
            );
        }
        r += &self.matrix();
        let failed: Vec<&CheckResult> = self.results.iter().filter(|c| !c.ok).collect();
        let _ = writeln!(
            r,
            "\nchecks: {} passed, {} failed ({} exact)",
            self.results.len() - failed.len(),
            failed.len(),
            self.results.iter().filter(|c| c.exact).count()
        );
        for c in failed {
            let _ = writeln!(r, "  FAILED step {}: {}", c.step, c.what);
            for l in c.detail.lines() {
                let _ = writeln!(r, "    {l}");
            }
        }
        r
    }

    pub(super) fn matrix(&self) -> String {
        let targets: Vec<(String, Option<Ipv4Addr>)> = self
            .systems
            .keys()
            .map(|n| (n.clone(), self.resolve(&format!("{n}:global")).ok()))
            .collect();
        let sources: Vec<String> = self
            .systems
            .keys()
            .chain(self.hosts.keys())
            .cloned()
            .collect();
        // One raw ICMP socket per source namespace.
        let mut pingers: BTreeMap<&String, Result<Pinger, String>> = sources
            .iter()
            .map(|s| (s, Pinger::open(&self.ns_of_node(s), None)))
            .collect();
        let mut r = String::from(
            "\nconnectivity (ping to each system's global address; ✓ reply, ✗ none, · self)\n",
        );
        let _ = write!(r, "{:>10} ", "from \\ to");
        for (t, ip) in &targets {
            let _ = write!(
                r,
                "{:>9}",
                format!("{t}{}", if ip.is_none() { "?" } else { "" })
            );
        }
        r.push('\n');
        for s in &sources {
            let _ = write!(r, "{s:>10} ");
            for (t, ip) in &targets {
                let cell = match ip {
                    _ if t == s => "·",
                    None => "-",
                    Some(ip) => {
                        let ok = pingers
                            .get_mut(s)
                            .and_then(|p| p.as_mut().ok())
                            .and_then(|p| p.echo(*ip, Duration::from_secs(1)).ok());
                        if matches!(ok, Some(Answer::Reply { .. })) {
                            "✓"
                        } else {
                            "✗"
                        }
                    }
                };
                let _ = write!(r, "{cell:>9}");
            }
            r.push('\n');
        }
        r
    }

    /// How to look at a kept lab.
    pub fn keep_hints(&self) -> String {
        let mut r = String::from("\nThe lab is still running. Look at it with:\n");
        if let Some((name, s)) = self.systems.iter().next() {
            let _ = writeln!(
                r,
                "  ip netns exec {} ip route show table 251        # {name}'s ntk table",
                s.netns
            );
            let _ = writeln!(r, "  ip netns exec {} ip rule", s.netns);
            let _ = writeln!(r, "  ip netns exec {} nft list table ip ntkplane", s.netns);
            let _ = writeln!(
                r,
                "  {} --instance {} --run-dir {} show-tables",
                self.bin.display(),
                s.instance,
                self.dir.join("run").display()
            );
        }
        let _ = writeln!(r, "  ip netns list | grep {LAB_PREFIX}");
        let _ = writeln!(
            r,
            "Remove it with: ntkplane-lab clean (or cargo xtask lab clean)"
        );
        r
    }
}
