//! Forwarding benchmark: sender → router → sink namespaces over veth, a `sendmmsg` UDP
//! blaster (64-byte payloads) pinned to one CPU, packets counted at the sink.
//!
//! For every neighbour count, one chain per classification variant is built (none, ebpf,
//! nft-map, ipt-legacy, ipt-nft; the sender's MAC is the last entry), checked to forward by
//! its variant's path (the sink's route is reachable only through the mark), then measured
//! in interleaved rounds (order rotated every round, a warm-up round discarded). The
//! remapping variants (no NAT, iptables NETMAP, ntkplane's nft prefix maps) follow the same
//! way. Ratios are always against variants of the same interleaved run.
//!
//! Every classification variant (none, ebpf, fastpath, nft-map, ipt-legacy, ipt-nft) is
//! measured bare and with the node's real nft table present (`+nat`: the anonymizer's SNAT
//! rule, so conntrack runs), all in the same interleaved rounds.
//!
//! The sender is, by default, `BPF_PROG_TEST_RUN` live frames (`--gen live`: an `XDP_TX`
//! program on the sender's veth, as xdp-trafficgen does) so that the router limits the rate;
//! `--gen udp` is the older `sendmmsg` blaster, whose own stack costs as much as the router.
//!
//! Usage: bench-forward [--counts 1,16,…] [--remap-counts 4,…] [--rounds N] [--secs S]
//!                      [--cpu N] [--gen live|udp] [--nat both|off|on]
//!                      [--rules per-neighbour|single]
//!                      [--json PATH] [--md PATH] [--svg PATH]
use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use ntkplane_integration::{
    fwdlab::{forwards, measure, Chain, Generator, Rules, Sample, Variant},
    lab::require_root,
    svg,
};
use serde_json::{json, Value};

struct Args {
    counts: Vec<u32>,
    remap_counts: Vec<u32>,
    rounds: usize,
    secs: f64,
    cpu: usize,
    gen: Generator,
    /// The router's rule list (a real node's: one fwmark rule per neighbour).
    rules: Rules,
    /// NAT-table settings measured for the classification variants.
    nat: Vec<bool>,
    json: Option<String>,
    md: Option<String>,
    svg: Option<String>,
}

fn args() -> Args {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut a = Args {
        counts: vec![1, 16, 256, 1024, 4096],
        remap_counts: vec![4, 64],
        rounds: 15,
        secs: 0.5,
        cpu: cpus - 1,
        gen: Generator::Live,
        rules: Rules::PerNeighbour,
        nat: vec![false, true],
        json: None,
        md: None,
        svg: None,
    };
    let list = |v: &str| -> Vec<u32> {
        v.split(',')
            .map(|x| x.parse().expect("a comma-separated list of numbers"))
            .collect()
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let val = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--counts" => a.counts = list(&val),
            "--remap-counts" => a.remap_counts = list(&val),
            "--rounds" => a.rounds = val.parse().expect("--rounds N"),
            "--secs" => a.secs = val.parse().expect("--secs S"),
            "--cpu" => a.cpu = val.parse().expect("--cpu N"),
            "--gen" => {
                a.gen = match val.as_str() {
                    "live" => Generator::Live,
                    "udp" => Generator::Udp,
                    _ => panic!("--gen live|udp"),
                }
            }
            "--rules" => {
                a.rules = match val.as_str() {
                    "per-neighbour" => Rules::PerNeighbour,
                    "single" => Rules::Single,
                    _ => panic!("--rules per-neighbour|single"),
                }
            }
            "--nat" => {
                a.nat = match val.as_str() {
                    "both" => vec![false, true],
                    "off" => vec![false],
                    "on" => vec![true],
                    _ => panic!("--nat both|off|on"),
                }
            }
            "--json" => a.json = Some(val),
            "--md" => a.md = Some(val),
            "--svg" => a.svg = Some(val),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(a.counts.iter().chain(&a.remap_counts).all(|c| *c >= 1));
    a
}

fn rules_name(r: Rules) -> &'static str {
    match r {
        Rules::PerNeighbour => "one fwmark rule per neighbour (the sender's in the middle)",
        Rules::Single => "the sender's fwmark rule only",
    }
}

/// Samples of one (variant, entries) point.
struct Point {
    variant: Variant,
    nat_table: bool,
    entries: u32,
    samples: Vec<Sample>,
    /// Did not forward by its variant's path in the pre-check.
    failed: bool,
}

impl Point {
    fn label(&self) -> String {
        if self.nat_table {
            format!("{}+nat", self.variant.name())
        } else {
            self.variant.name().to_string()
        }
    }
    fn pps(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.samples.iter().map(|s| s.pps).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    }
    fn median(&self) -> f64 {
        let v = self.pps();
        if v.is_empty() {
            return 0.0;
        }
        if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        }
    }
}

/// Builds the chains of one group, checks them, runs warm-up + `rounds` interleaved rounds.
fn group(variants: &[(Variant, bool)], entries: u32, a: &Args, label: &str) -> Vec<Point> {
    eprintln!(
        "[bench-forward] {label} {entries}: setting up {} chains",
        variants.len()
    );
    let chains: Vec<Chain> = variants
        .iter()
        .map(|(v, nat)| Chain::build(*v, entries, *nat, a.gen, a.rules))
        .collect();
    let mut points: Vec<Point> = chains
        .iter()
        .map(|c| {
            let ok = forwards(c);
            if !ok {
                eprintln!(
                    "[bench-forward]   {} does not forward by its path: FAILED",
                    c.label()
                );
            }
            Point {
                variant: c.variant,
                nat_table: c.nat_table,
                entries,
                samples: vec![],
                failed: !ok,
            }
        })
        .collect();
    let dur = Duration::from_secs_f64(a.secs);
    let mut last = vec![0.0; chains.len()];
    for round in 0..=a.rounds {
        // Rotate the order so no variant always runs first (or right after another).
        for k in 0..chains.len() {
            let i = (k + round) % chains.len();
            if points[i].failed {
                continue;
            }
            let s = measure(&chains[i], dur, a.cpu);
            last[i] = s.pps;
            if round > 0 {
                points[i].samples.push(s);
            }
        }
        let line: Vec<String> = points
            .iter()
            .zip(&last)
            .map(|(p, pps)| format!("{} {:.0}k", p.label(), pps / 1000.0))
            .collect();
        eprintln!(
            "[bench-forward]   round {round}/{}{}: {}",
            a.rounds,
            if round == 0 { " (warm-up)" } else { "" },
            line.join(", ")
        );
    }
    points
}

/// The median over rounds of `p`'s pps divided by `q`'s in the same round. Pairing the
/// samples taken next to each other cancels the drift of the machine between rounds, which
/// is larger than the differences measured (see BENCHMARKS.md).
fn paired_ratio(p: &Point, q: Option<&Point>) -> Option<f64> {
    let q = q?;
    if p.failed || q.failed || p.samples.len() != q.samples.len() || p.samples.is_empty() {
        return None;
    }
    let mut r: Vec<f64> = p
        .samples
        .iter()
        .zip(&q.samples)
        .filter(|(_, b)| b.pps > 0.0)
        .map(|(a, b)| a.pps / b.pps)
        .collect();
    if r.is_empty() {
        return None;
    }
    r.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Some(if r.len() % 2 == 1 {
        r[r.len() / 2]
    } else {
        (r[r.len() / 2 - 1] + r[r.len() / 2]) / 2.0
    })
}

/// One JSON row; `ratios` are (key, the point to divide by).
fn row(p: &Point, ratios: &[(&str, Option<&Point>)]) -> Value {
    let v = p.pps();
    let sent: u64 = p.samples.iter().map(|s| s.sent).sum();
    let received: u64 = p.samples.iter().map(|s| s.received).sum();
    let mut r = json!({
        "variant": p.variant.name(),
        "nat_table": p.nat_table,
        "neighbours": p.entries,
        "pps_median": p.median(),
        "pps_min": v.first().copied().unwrap_or(0.0),
        "pps_max": v.last().copied().unwrap_or(0.0),
        "pps_samples": p.samples.iter().map(|s| s.pps).collect::<Vec<_>>(),
        "sent": sent,
        "received": received,
        "failed": p.failed || (p.samples.iter().any(|s| s.received == 0)),
    });
    for (key, q) in ratios {
        r[*key] = json!(paired_ratio(p, *q));
    }
    r
}

fn sh(cmd: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string());
    json!({
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cpu_model": model,
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "date": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
        "iptables": sh("iptables -V"),
        "nft": sh("nft -v"),
    })
}

fn fmt_ratio(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |r| format!("{r:.3}×"))
}

/// A markdown table of `rows` with one column per (header, ratio key).
fn table(rows: &[Value], count_label: &str, ratios: &[(&str, &str)]) -> String {
    let heads: String = ratios.iter().map(|(h, _)| format!(" {h} |")).collect();
    let aligns: String = ratios.iter().map(|_| "---:|").collect();
    let mut md = format!(
        "| variant | {count_label} | pps median | min – max |{heads}\n|---|---:|---:|---:|{aligns}\n"
    );
    for r in rows {
        let failed = r["failed"].as_bool() == Some(true);
        let cells: String = ratios
            .iter()
            .map(|(_, k)| format!(" {} |", fmt_ratio(&r[*k])))
            .collect();
        let nat = if r["nat_table"].as_bool() == Some(true) {
            " +nat"
        } else {
            ""
        };
        let _ = writeln!(
            md,
            "| {}{nat} | {} | {} | {:.0} – {:.0} |{cells}",
            r["variant"].as_str().unwrap(),
            r["neighbours"],
            if failed {
                "FAILED (nothing forwarded)".to_string()
            } else {
                format!("{:.0}", r["pps_median"].as_f64().unwrap())
            },
            r["pps_min"].as_f64().unwrap(),
            r["pps_max"].as_f64().unwrap(),
        );
    }
    md
}

fn main() {
    require_root();
    let a = args();
    let mut rows = Vec::new();
    for &n in &a.counts {
        let vs: Vec<(Variant, bool)> = a
            .nat
            .iter()
            .flat_map(|nat| Variant::CLASSIFY.iter().map(move |v| (*v, *nat)))
            .collect();
        let pts = group(&vs, n, &a, "neighbours");
        let find =
            |v: Variant, nat: bool| pts.iter().find(|p| p.variant == v && p.nat_table == nat);
        for p in &pts {
            let nat = p.nat_table;
            let mut r = row(
                p,
                &[
                    ("ratio_to_none", find(Variant::None, nat)),
                    ("ratio_to_ebpf", find(Variant::Ebpf, nat)),
                    ("ratio_to_ipt_nft", find(Variant::IptNft, nat)),
                    ("ratio_to_nft_map", find(Variant::NftMap, nat)),
                ],
            );
            if nat {
                // What the node's NAT table costs this variant (same rounds, paired).
                r["ratio_to_bare"] = json!(paired_ratio(p, find(p.variant, false)));
            }
            rows.push(r);
        }
    }
    let mut remap_rows = Vec::new();
    for &n in &a.remap_counts {
        let vs: Vec<(Variant, bool)> = Variant::REMAP.iter().map(|v| (*v, false)).collect();
        let pts = group(&vs, n, &a, "mapped ranges");
        let find = |v: Variant| pts.iter().find(|p| p.variant == v);
        for p in &pts {
            let mut r = row(
                p,
                &[
                    ("ratio_to_none", find(Variant::RemapNone)),
                    ("ratio_to_ipt_netmap", find(Variant::RemapIptNetmap)),
                ],
            );
            r["mapped_ranges"] = r["neighbours"].clone();
            remap_rows.push(r);
        }
    }

    // The claims, evaluated on this run (reported, never asserted).
    let get_nat = |v: &str, n: u64, nat: bool, key: &str| {
        rows.iter()
            .find(|r| r["variant"] == v && r["neighbours"] == n && r["nat_table"] == nat)
            .and_then(|r| r[key].as_f64())
    };
    let get = |v: &str, n: u64, key: &str| get_nat(v, n, false, key);
    let at = 1024;
    let claims = json!({
        "neighbours": at,
        "ebpf_over_ipt_nft": get("ebpf", at, "ratio_to_ipt_nft"),
        "ebpf_over_nft_map": get("ebpf", at, "ratio_to_nft_map"),
        "ebpf_over_none": get("ebpf", at, "ratio_to_none"),
        "fastpath_over_ebpf_bare": get("fastpath", at, "ratio_to_ebpf"),
        "fastpath_over_ebpf_nat": get_nat("fastpath", at, true, "ratio_to_ebpf"),
    });

    let mut md = format!(
        "Forwarding (sender → router → sink, 64-byte UDP, {} interleaved rounds of {} s after a warm-up; sender: {}, pinned to CPU {}; router rules: {}; +nat: the node's nft table with the anonymizer's SNAT rule is present)\n\n",
        a.rounds,
        a.secs,
        match a.gen {
            Generator::Live => "BPF_PROG_TEST_RUN live frames (XDP_TX)",
            Generator::Udp => "sendmmsg UDP socket",
        },
        a.cpu,
        rules_name(a.rules),
    );
    md += &table(
        &rows,
        "neighbours",
        &[
            ("÷ none", "ratio_to_none"),
            ("÷ ebpf", "ratio_to_ebpf"),
            ("÷ ipt-nft", "ratio_to_ipt_nft"),
            ("÷ nft-map", "ratio_to_nft_map"),
            ("÷ bare", "ratio_to_bare"),
        ],
    );
    md += "\nRemapping (autonomous-subnet gateway, one established flow to a mapped address)\n\n";
    md += &table(
        &remap_rows,
        "mapped ranges",
        &[
            ("÷ remap-none", "ratio_to_none"),
            ("÷ ipt-netmap", "ratio_to_ipt_netmap"),
        ],
    );
    let _ = writeln!(
        md,
        "\nRatios are medians of per-round ratios (samples taken next to each other), against the same NAT setting.\n\nAt {at} neighbours: ebpf / ipt-nft = {}, ebpf / nft-map = {}, ebpf / none = {}; fastpath / ebpf = {} bare, {} with the NAT table",
        fmt_ratio(&claims["ebpf_over_ipt_nft"]),
        fmt_ratio(&claims["ebpf_over_nft_map"]),
        fmt_ratio(&claims["ebpf_over_none"]),
        fmt_ratio(&claims["fastpath_over_ebpf_bare"]),
        fmt_ratio(&claims["fastpath_over_ebpf_nat"]),
    );
    print!("{md}");

    if let Some(p) = &a.svg {
        let mut by: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
        for r in &rows {
            if r["failed"].as_bool() != Some(true) && r["nat_table"].as_bool() != Some(true) {
                by.entry(r["variant"].as_str().unwrap()).or_default().push((
                    r["neighbours"].as_f64().unwrap(),
                    r["pps_median"].as_f64().unwrap(),
                ));
            }
        }
        let series: Vec<svg::Series> = Variant::CLASSIFY
            .iter()
            .filter_map(|v| {
                by.remove(v.name()).map(|points| svg::Series {
                    name: v.name().into(),
                    points,
                })
            })
            .collect();
        std::fs::write(
            p,
            svg::plot(
                "Forwarded pps vs neighbour MACs on the router",
                "neighbour MACs (log scale; the sender's is the last)",
                "packets/s at the sink (median)",
                &series,
            ),
        )
        .unwrap();
    }
    if let Some(p) = &a.md {
        std::fs::write(p, &md).unwrap();
    }
    if let Some(p) = &a.json {
        let v = json!({
            "machine": machine(),
            "settings": {"rounds": a.rounds, "secs": a.secs, "sender_cpu": a.cpu, "payload_bytes": 64,
                "generator": match a.gen { Generator::Live => "xdp-live-frames", Generator::Udp => "sendmmsg" },
                "router_rules": rules_name(a.rules)},
            "forwarding": rows,
            "remap": remap_rows,
            "claims": claims,
        });
        std::fs::write(p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
    let failed = rows
        .iter()
        .chain(&remap_rows)
        .any(|r| r["failed"].as_bool() == Some(true));
    if failed {
        eprintln!("[bench-forward] some variants did not forward (see FAILED above)");
        std::process::exit(1);
    }
}
