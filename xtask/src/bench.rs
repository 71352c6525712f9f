//! `cargo xtask bench`: performance measurements, reported as ratios against baselines
//! measured in the same run (never as pass/fail timings).
use anyhow::Result;

use crate::{clean_cargo, ebpf, root, run, step};

pub fn run_all(quick: bool) -> Result<()> {
    ebpf::build()?;
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    step("route programming: reconciler vs raw rtnetlink vs ip -batch vs one ip process per route");
    let mut cmd = clean_cargo();
    cmd.current_dir(root()).args([
        "run",
        "--release",
        "-q",
        "-p",
        "ntkplane-integration",
        "--bin",
        "bench-routes",
        "--",
    ]);
    if quick {
        cmd.args([
            "--tables",
            "8",
            "--prefixes",
            "2000",
            "--rounds",
            "1",
            "--sample",
            "300",
        ]);
    }
    cmd.arg("--json").arg(out.join("routes.json"));
    run(&mut cmd)?;

    step("classifier per-packet cost: BPF_PROG_TEST_RUN at 1…4096 neighbour MACs");
    let mut cmd = clean_cargo();
    cmd.current_dir(root()).args([
        "run",
        "--release",
        "-q",
        "-p",
        "ntkplane-integration",
        "--bin",
        "bench-classify",
        "--",
    ]);
    if quick {
        cmd.args(["--repeat", "200000", "--rounds", "1"]);
    }
    cmd.arg("--json").arg(out.join("classify.json"));
    run(&mut cmd)?;
    step(format!("results in {}", out.display()));
    Ok(())
}
