//! `cargo xtask bench`: performance measurements, reported as ratios against baselines
//! measured in the same run (never as pass/fail timings).
//!
//! Writes `target/bench/`: one JSON per part, `results.json` (all parts, schema in
//! BENCHMARKS.md), `results.md`, `forwarding.svg` and the daemon's curve
//! (`daemon-latency.svg`, `daemon-rss.svg`). Afterwards it checks that the run
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

    step("3/4 the daemon at N neighbours: arc command latency, ETP → full state against raw rtnetlink, peak RSS, migrate-phase-1");
    let daemon = daemon_curve(&out, quick);

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
        "results: {}, {}, {}, {}, {}",
        out.join("results.json").display(),
        out.join("results.md").display(),
        out.join("forwarding.svg").display(),
        out.join("daemon-latency.svg").display(),
        out.join("daemon-rss.svg").display()
    ));
    Ok(())
}

/// bench-daemon's points: topology, address, neighbours. The level-0 g-node of 4.16.256.256
/// holds 255 neighbours; 1 000 need one of 1 024 positions (4.1024: the fewest levels, so the
/// fewest prefixes per destination, that has it).
const DAEMON_POINTS: &[(&str, &str, u32)] = &[
    ("4.16.256.256", "3.10.123.45", 16),
    ("4.16.256.256", "3.10.123.45", 64),
    ("4.16.256.256", "3.10.123.45", 200),
    ("4.1024", "3.45", 1000),
];

/// `--quick` (CI): the smallest point only, fewer arc command samples.
const DAEMON_QUICK: &[(&str, &str, u32)] = &[("4.16.256.256", "3.10.123.45", 16)];
const QUICK_ARC_SAMPLES: &str = "8";

/// Runs bench-daemon at every point (a failed point is left out of the curve and fails the
/// run at the end), then bench-daemon-curve: `daemon.json` (the points and issue 14's
/// must-show), `daemon-latency.svg` and `daemon-rss.svg`.
fn daemon_curve(out: &Path, quick: bool) -> Result<()> {
    let points = if quick { DAEMON_QUICK } else { DAEMON_POINTS };
    let mut runs = Vec::new();
    let mut failed = Vec::new();
    for (topology, address, n) in points {
        let json = out.join(format!("daemon-{n}.json"));
        // A point that fails must not be plotted from an earlier run's file.
        let _ = std::fs::remove_file(&json);
        let json = json.to_string_lossy().into_owned();
        let n = n.to_string();
        let mut a = vec![
            "--topology",
            topology,
            "--address",
            address,
            "--neighbours",
            &n,
            "--json",
            &json,
        ];
        if quick {
            a.extend(["--arc-samples", QUICK_ARC_SAMPLES]);
        }
        match run(&mut bench_bin("bench-daemon", &a)) {
            Ok(()) => runs.push(json),
            Err(e) => failed.push(format!("{n} neighbours on {topology}: {e:#}")),
        }
    }
    let p = |f: &str| out.join(f).to_string_lossy().into_owned();
    let mut a = vec![
        "--json".to_string(),
        p("daemon.json"),
        "--latency-svg".into(),
        p("daemon-latency.svg"),
        "--rss-svg".into(),
        p("daemon-rss.svg"),
    ];
    a.extend(runs);
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    run(&mut bench_bin("bench-daemon-curve", &a))?;
    if !failed.is_empty() {
        bail!("bench-daemon failed at {}", failed.join("; "));
    }
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
        "schema": 2,
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
    for d in v["daemon"]["points"].as_array().into_iter().flatten() {
        let f = |k: &str| d[k].as_f64().unwrap_or(f64::NAN);
        md += &format!(
            "\nDaemon on {}: {} neighbours, {} routes; arc command p50 {:.1} ms, p99 {:.1} ms; \
             ETP → full state {:.0} routes/s ({:.2} of raw pipelined rtnetlink); peak RSS {:.1} MiB \
             (budget {:.1}); migrate-phase-1 {:.0} ms\n",
            d["topology"].as_str().unwrap_or("?"),
            d["neighbours"],
            d["routes"],
            f("arc_command_ms_p50"),
            f("arc_command_ms_p99"),
            f("routes_per_second"),
            f("routes_per_second_over_rtnetlink"),
            f("peak_rss_kib") / 1024.0,
            f("rss_budget_kib") / 1024.0,
            f("migrate_phase_1_ms"),
        );
    }
    let growth = &v["daemon"]["must_show"]["arc_command_p50_growth"];
    if !growth.is_null() {
        md += &format!(
            "\nArc command p50 at {} over {} neighbours: {:.2} (must-show: at most 2)\n",
            growth["large"],
            growth["small"],
            growth["ratio"].as_f64().unwrap_or(f64::NAN)
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
