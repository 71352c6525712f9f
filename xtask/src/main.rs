//! `cargo xtask …`: the project's build and test entry points.
mod bench;
mod demo;
mod dist;
mod ebpf;
mod fuzz;
mod test;
mod tools;

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum LabCmd {
    /// Run a scenario file (see docs/LAB.md)
    Run {
        file: PathBuf,
        #[arg(long)]
        keep: bool,
        /// Where the daemons' paths come from: their protocols, or the path solver's feed
        #[arg(long, default_value = "protocol", value_parser = ["protocol", "feed"])]
        paths: String,
    },
    /// Check a scenario file only (nothing is created)
    Check { file: PathBuf },
    /// Remove what kept or interrupted labs left
    Clean,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchPart {
    /// Routing convergence and reroute times, ntkplane against babeld (lines and grids of
    /// namespaces): minutes, and N daemons on the machine's CPUs.
    Convergence,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the eBPF build needs (nightly rust-src, bpf-linker), then build the eBPF object.
    BuildEbpf,
    /// The one test command: unit tests, eBPF build, BPF test-run tests, netns integration tests.
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run a scenario in the lab (default: S2, scenarios/migration-case-2.toml), report, clean up.
    Demo {
        scenario: Option<PathBuf>,
        /// Leave the lab running and print how to look at it
        #[arg(long)]
        keep: bool,
        /// Where the daemons' paths come from: `protocol` (their discovery and QSPN; the
        /// scenario's feed steps are skipped, checks wait for convergence) or `feed` (the
        /// path solver's)
        #[arg(long, default_value = "protocol", value_parser = ["protocol", "feed"])]
        paths: String,
    },
    /// The lab: `cargo xtask lab run <file> [--keep] | check <file> | clean`
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
    /// Fuzz a target with cargo-fuzz (installed when missing): scenario
    Fuzz {
        target: String,
        /// How long to run
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Shell completions, man pages (from the clap definitions) and the systemd unit, in target/dist/.
    Dist,
    /// Benchmarks: forwarding pps, remapping, route programming, daemon RSS, eBPF per-packet cost.
    /// `bench convergence` runs only the convergence benchmark (not part of the default set).
    Bench {
        /// One part only, left out of the default run: `convergence`.
        part: Option<BenchPart>,
        /// A short run (about a minute) for CI; with `convergence`, small shapes only.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> std::process::ExitCode {
    // One line naming the problem (anyhow's context chain), not a backtrace.
    match dispatch() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch() -> Result<()> {
    match Cli::parse().command {
        Cmd::BuildEbpf => ebpf::build().map(|_| ()),
        Cmd::Test { args } => test::run_all(&args),
        Cmd::Bench { part: None, quick } => bench::run_all(quick),
        Cmd::Bench {
            part: Some(BenchPart::Convergence),
            quick,
        } => bench::convergence(quick),
        Cmd::Dist => dist::run_dist(),
        Cmd::Fuzz { target, seconds } => fuzz::run_target(&target, seconds),
        Cmd::Demo {
            scenario,
            keep,
            paths,
        } => demo::run_scenario(
            &scenario.unwrap_or_else(|| root().join(demo::DEFAULT_SCENARIO)),
            keep,
            &paths,
        ),
        Cmd::Lab { cmd } => match cmd {
            LabCmd::Run { file, keep, paths } => demo::run_scenario(&file, keep, &paths),
            LabCmd::Check { file } => demo::lab(&["check".as_ref(), file.as_os_str()]),
            LabCmd::Clean => demo::lab(&["clean".as_ref()]),
        },
    }
}

/// The workspace root (parent of `xtask/`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn step(msg: impl AsRef<str>) {
    println!("[xtask] {}", msg.as_ref());
}

/// Runs `cmd`, echoing it; fails with its exit status.
pub fn run(cmd: &mut Command) -> Result<()> {
    step(format!("$ {}", show(cmd)));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", show(cmd));
    }
    Ok(())
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A `cargo` command free of the variables the outer `cargo xtask` set for its own toolchain,
/// so that `cargo +nightly …` really uses nightly and its own flags.
pub fn clean_cargo() -> Command {
    let mut c = Command::new("cargo");
    for v in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO",
        "CARGO_MANIFEST_DIR",
        "CARGO_PKG_NAME",
    ] {
        c.env_remove(v);
    }
    c
}
