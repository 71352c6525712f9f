//! `cargo xtask bench`: performance measurements, reported as ratios against baselines
//! measured in the same run (never as pass/fail timings).
//!
//! Writes `target/bench/`: one JSON per part, `results.json` (all parts, schema in
//! BENCHMARKS.md), `results.md` and `forwarding.svg`. Afterwards it checks that the run
//! left no namespace, ip rule or BPF pin behind.
//!
//! `cargo xtask bench convergence` ([`convergence`]) is a part of its own, never run by
//! `run_all`: ntkplane's and babeld's convergence on lines and grids of namespaces.
use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{clean_cargo, ebpf, root, run, step, tools};

/// The benches' namespaces share the tests' prefix (`tests/src/lab.rs`).
const NETNS_PREFIX: &str = "ntkt";

fn bench_bin(name: &str, args: &[&str]) -> Command {
    let mut cmd = clean_cargo();
    cmd.current_dir(root()).args([
        "run",
        "--release",
        "-q",
        "-p",
        "ntkplane-integration",
        "--bin",
        name,
        "--",
    ]);
    cmd.args(args);
    cmd
}

pub fn run_all(quick: bool) -> Result<()> {
    tools::ensure(&[tools::RUN, tools::TEST, tools::BENCH])?;
    ebpf::build()?;
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let before = host_snapshot();
    // bench-daemon drives the real daemon binary, built beside the bench binaries.
    let mut cmd = clean_cargo();
    cmd.current_dir(root()).args([
        "build",
        "--release",
        "-q",
        "-p",
        "ntkplane",
        "--bin",
        "ntkplane",
    ]);
    run(&mut cmd)?;
    let p = |f: &str| out.join(f).to_string_lossy().into_owned();

    step("1/4 forwarding: sender → router → sink, classification and remapping variants");
    let mut a: Vec<String> = ["--json", &p("forwarding.json"), "--md", &p("forwarding.md")]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(["--svg".into(), p("forwarding.svg")]);
    if quick {
        a.extend(
            [
                "--counts",
                "1,1024",
                "--remap-counts",
                "4",
                "--rounds",
                "1",
                "--secs",
                "0.5",
            ]
            .map(String::from),
        );
    }
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    let forwarding = run(&mut bench_bin("bench-forward", &a));

    step("2/4 route programming: reconciler vs raw rtnetlink vs ip -batch vs one ip process per route");
    let mut a = vec!["--json".to_string(), p("routes.json")];
    if quick {
        a.extend(
            [
                "--tables",
                "8",
                "--prefixes",
                "2000",
                "--rounds",
                "1",
                "--sample",
                "300",
            ]
            .map(String::from),
        );
    }
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    let routes = run(&mut bench_bin("bench-routes", &a));

    step("3/4 the daemon on 4.16.256.256: N neighbours, one ETP, time to full state, peak RSS");
    let n = if quick { "4" } else { "16" };
    let daemon = run(&mut bench_bin(
        "bench-daemon",
        &["--neighbours", n, "--json", &p("daemon.json")],
    ));

    step("4/4 classifier per-packet cost: BPF_PROG_TEST_RUN at 1…4096 neighbour MACs");
    let mut a = vec!["--json".to_string(), p("classify.json")];
    if quick {
        a.extend(["--repeat", "200000", "--rounds", "1"].map(String::from));
    }
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    let classify = run(&mut bench_bin("bench-classify", &a));

    let leftovers = leftovers(&before);
    merge(&out, quick)?;
    for r in [forwarding, routes, daemon, classify] {
        r?;
    }
    if !leftovers.is_empty() {
        bail!("the benchmark left state behind: {}", leftovers.join("; "));
    }
    step(format!(
        "results: {}, {}, {}",
        out.join("results.json").display(),
        out.join("results.md").display(),
        out.join("forwarding.svg").display()
    ));
    Ok(())
}

/// `cargo xtask bench convergence [--quick]`: only the convergence benchmark, ntkplane and
/// babeld on lines and grids (`--quick`: line 4 and grid 3). Writes
/// `target/bench/convergence.json` and `convergence.svg`; not part of [`run_all`], which CI
/// runs: N daemons on the machine's CPUs for minutes.
pub fn convergence(quick: bool) -> Result<()> {
    // ip and nft (the cut link's silent drop) and babeld.
    tools::ensure(&[tools::RUN, tools::CONVERGENCE])?;
    // The daemon embeds the eBPF object at build time.
    ebpf::build()?;
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let before = host_snapshot();
    // Other namespaces of the tests' prefix may belong to runs going on beside this one:
    // only those that appear during this one are its leftovers.
    let netns_before = namespaces();
    let babelds_before = babelds();
    let mut cmd = clean_cargo();
    cmd.current_dir(root()).args([
        "build",
        "--release",
        "-q",
        "-p",
        "ntkplane",
        "--bin",
        "ntkplane",
    ]);
    run(&mut cmd)?;
    let p = |f: &str| out.join(f).to_string_lossy().into_owned();
    step("convergence: lines and grids, ntkplane and babeld, time to routes and pings, reroutes");
    let mut a = vec![
        "--json".to_string(),
        p("convergence.json"),
        "--svg".into(),
        p("convergence.svg"),
    ];
    if quick {
        a.push("--quick".into());
    }
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    let result = run(&mut bench_bin("bench-convergence", &a));
    let mut left: Vec<String> = namespaces()
        .into_iter()
        .filter(|n| !netns_before.contains(n))
        .map(|n| format!("namespace {n}"))
        .collect();
    left.extend(
        babelds()
            .into_iter()
            .filter(|p| !babelds_before.contains(p))
            .map(|p| format!("babeld process {p}")),
    );
    if sh("ip", &["rule", "show"]) != before.rules {
        left.push("the host's ip rules changed".into());
    }
    result?;
    if !left.is_empty() {
        bail!("the benchmark left state behind: {}", left.join("; "));
    }
    step(format!(
        "results: {}, {}",
        out.join("convergence.json").display(),
        out.join("convergence.svg").display()
    ));
    Ok(())
}

/// Namespaces with the benches' prefix.
fn namespaces() -> Vec<String> {
    sh("ip", &["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(NETNS_PREFIX))
        .map(String::from)
        .collect()
}

/// Pids of running babeld processes.
fn babelds() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|c| c.trim() == "babeld")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One `results.json` from the parts (missing parts are `null`), plus `results.md`.
fn merge(out: &Path, quick: bool) -> Result<()> {
    let read = |f: &str| -> Value {
        std::fs::read_to_string(out.join(f))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null)
    };
    let fwd = read("forwarding.json");
    let v = json!({
        "schema": 1,
        "quick": quick,
        "machine": fwd["machine"],
        "forwarding": fwd["forwarding"],
        "remap": fwd["remap"],
        "claims": fwd["claims"],
        "forwarding_settings": fwd["settings"],
        "route_programming": read("routes.json"),
        "daemon": read("daemon.json"),
        "classify_test_run": read("classify.json"),
    });
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&v)?)
        .context("write results.json")?;
    let mut md = std::fs::read_to_string(out.join("forwarding.md")).unwrap_or_default();
    let d = &v["daemon"];
    if !d.is_null() {
        md += &format!(
            "\nDaemon on {}: {} neighbours, {} routes, ETP → full state {:.2} s ({:.0} routes/s), peak RSS {:.1} MiB\n",
            d["topology"].as_str().unwrap_or("?"),
            d["neighbours"],
            d["routes"],
            d["etp_seconds"].as_f64().unwrap_or(0.0),
            d["routes_per_second"].as_f64().unwrap_or(0.0),
            d["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0
        );
    }
    std::fs::write(out.join("results.md"), md)?;
    Ok(())
}

/// What the host had before the run that the benches could leave behind.
struct Snapshot {
    rules: String,
    pins: Vec<String>,
}

fn host_snapshot() -> Snapshot {
    Snapshot {
        rules: sh("ip", &["rule", "show"]),
        pins: pins(),
    }
}

fn pins() -> Vec<String> {
    std::fs::read_dir("/sys/fs/bpf/ntkplane")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Namespaces with the benches' prefix, and host rules or pins that were not there before.
fn leftovers(before: &Snapshot) -> Vec<String> {
    let mut left = Vec::new();
    for line in sh("ip", &["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(NETNS_PREFIX) {
            left.push(format!("namespace {name}"));
        }
    }
    if sh("ip", &["rule", "show"]) != before.rules {
        left.push("the host's ip rules changed".into());
    }
    for p in pins() {
        if !before.pins.contains(&p) {
            left.push(format!("BPF pin /sys/fs/bpf/ntkplane/{p}"));
        }
    }
    left
}
