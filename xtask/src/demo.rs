//! `cargo xtask demo [scenario] [--keep]` and `cargo xtask lab run <file> [--keep]`: build
//! what is needed (the eBPF toolchain bootstrap included), run the scenario with the lab
//! runner (`ntkplane-lab run`, crate `lab/`), then make sure nothing of the lab is left on the
//! host.
use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::{clean_cargo, ebpf, root, run, step};

/// The lab's namespaces and pins start with this (`lab/src/runner.rs`).
const LAB_PREFIX: &str = "ntkl";

pub const DEFAULT_SCENARIO: &str = "scenarios/migration-case-2.toml";

pub fn run_scenario(file: &Path, keep: bool) -> Result<()> {
    let file = if file.is_absolute() {
        file.to_path_buf()
    } else {
        std::env::current_dir()?.join(file)
    };
    if !file.exists() {
        bail!("no scenario file {}", file.display());
    }
    ebpf::build()?;
    let mut cmd = clean_cargo();
    cmd.current_dir(root())
        .args(["build", "-q", "-p", "ntkplane", "-p", "ntkplane-lab"]);
    run(&mut cmd)?;
    // Ctrl-C reaches the whole foreground group: the lab runner turns it into a stop and
    // cleans up; this process must outlive it to check the result.
    // SAFETY: setting a signal disposition has no preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let bin = root().join("target/debug/ntkplane-lab");
    let mut lab = Command::new(&bin);
    lab.arg("run").arg(&file);
    if keep {
        lab.arg("--keep");
    }
    step(format!("$ {} run {}", bin.display(), file.display()));
    let status = lab.status().context("cannot start the lab runner")?;
    if !keep {
        let left = leftovers();
        if !left.is_empty() {
            bail!("the lab left state behind: {}", left.join(", "));
        }
        step("nothing of the lab is left (namespaces, BPF pins)");
    }
    if !status.success() {
        bail!("the scenario failed ({status})");
    }
    Ok(())
}

fn leftovers() -> Vec<String> {
    let mut left = Vec::new();
    for dir in ["/run/netns", "/sys/fs/bpf/ntkplane"] {
        if let Ok(d) = std::fs::read_dir(dir) {
            for e in d.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(LAB_PREFIX) {
                    left.push(format!("{dir}/{n}"));
                }
            }
        }
    }
    left
}
