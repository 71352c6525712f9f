//! `cargo xtask demo [scenario] [--keep] [--paths protocol|feed]` and `cargo xtask lab run
//! <file> [--keep] [--paths …]`: build
//! what is needed (the eBPF toolchain bootstrap included), run the scenario with the lab
//! runner (`ntkplane-lab run`, crate `lab/`), then make sure nothing of the lab is left on the
//! host.
use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::{clean_cargo, ebpf, root, run, step, tools};

/// The lab's namespaces and pins start with this (`lab/src/runner.rs`).
const LAB_PREFIX: &str = "ntkl";

pub const DEFAULT_SCENARIO: &str = "scenarios/migration-case-2.toml";

pub fn run_scenario(file: &Path, keep: bool, paths: &str) -> Result<()> {
    let file = if file.is_absolute() {
        file.to_path_buf()
    } else {
        std::env::current_dir()?.join(file)
    };
    if !file.exists() {
        bail!("no scenario file {}", file.display());
    }
    tools::ensure(&[tools::RUN])?;
    ebpf::build()?;
    build_lab()?;
    // Ctrl-C reaches the whole foreground group: the lab runner turns it into a stop and
    // cleans up; this process must outlive it to check the result.
    // SAFETY: setting a signal disposition has no preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let bin = lab_bin();
    let mut lab = Command::new(&bin);
    lab.arg("run").arg(&file).args(["--paths", paths]);
    if keep {
        lab.arg("--keep");
    }
    step(format!(
        "$ {} run {} --paths {paths}",
        bin.display(),
        file.display()
    ));
    let mut child = lab.spawn().context("cannot start the lab runner")?;
    // The runner names everything `ntkl<its pid % 10000>…`: only that is this run's (other
    // labs may be running on the machine).
    let prefix = format!("{LAB_PREFIX}{}", child.id() % 10_000);
    let status = child.wait().context("the lab runner")?;
    if !keep {
        let left = leftovers(&prefix);
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

/// `ntkplane-lab ARGS` (check, clean: no eBPF object needed).
pub fn lab(args: &[&std::ffi::OsStr]) -> Result<()> {
    build_lab()?;
    run(Command::new(lab_bin()).args(args))
}

/// The daemon and the lab binary, side by side in `target/debug/`.
fn build_lab() -> Result<()> {
    let mut cmd = clean_cargo();
    cmd.current_dir(root())
        .args(["build", "-q", "-p", "ntkplane", "-p", "ntkplane-lab"]);
    run(&mut cmd)
}

fn lab_bin() -> std::path::PathBuf {
    root().join("target/debug/ntkplane-lab")
}

fn leftovers(prefix: &str) -> Vec<String> {
    let mut left = Vec::new();
    for dir in ["/run/netns", "/sys/fs/bpf/ntkplane"] {
        if let Ok(d) = std::fs::read_dir(dir) {
            for e in d.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                // `ntkl12-…` is this run's, `ntkl123-…` another's.
                let ours = n
                    .strip_prefix(prefix)
                    .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()));
                if ours {
                    left.push(format!("{dir}/{n}"));
                }
            }
        }
    }
    left
}
