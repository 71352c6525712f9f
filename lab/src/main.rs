//! `ntkplane-lab`: run, check or clean up lab scenarios (docs/LAB.md). `cargo xtask demo` and
//! `cargo xtask lab run` build this binary and the daemon, then call it.
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use ntkplane_lab::{
    runner::{self, PathsMode},
    scenario::Scenario,
};

#[derive(Parser)]
#[command(
    name = "ntkplane-lab",
    version,
    about = "The ntkplane lab (docs/LAB.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: LabCmd,
}

#[derive(Subcommand)]
enum LabCmd {
    /// Build the lab, run the timeline and its checks, print the report, clean up
    Run {
        file: PathBuf,
        /// Leave the lab running at the end (remove it later with `ntkplane-lab clean`)
        #[arg(long)]
        keep: bool,
        /// The `ntkplane` binary the systems run (default: the one beside this binary)
        #[arg(long)]
        daemon: Option<PathBuf>,
        /// Where the daemons' paths come from: `protocol` (their own discovery and QSPN;
        /// `feed` steps are skipped and each check waits for convergence) or `feed` (the
        /// path solver's `etp` at each `feed` step)
        #[arg(long, value_enum, default_value_t = PathsMode::Protocol)]
        paths: PathsMode,
        /// Protocol mode: how long a check is compared again before it fails
        #[arg(long, default_value_t = 30_000, value_name = "MS")]
        converge_ms: u64,
    },
    /// Check a scenario file only (nothing is created)
    Check { file: PathBuf },
    /// Remove what kept or interrupted labs left (namespaces `ntkl*`, their pins)
    Clean,
}

fn main() -> ExitCode {
    let (file, keep, daemon, paths, converge_ms) = match Cli::parse().command {
        LabCmd::Clean => {
            for g in runner::clean_all() {
                println!("removed {g}");
            }
            return ExitCode::SUCCESS;
        }
        LabCmd::Check { file } => return check(&file),
        LabCmd::Run {
            file,
            keep,
            daemon,
            paths,
            converge_ms,
        } => (file, keep, daemon, paths, converge_ms),
    };
    let sc = match Scenario::load(&file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bin = match daemon.map_or_else(default_daemon, Ok) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    runner::install_stop_handler();
    let opts = runner::Options {
        bin,
        keep,
        paths,
        converge: std::time::Duration::from_millis(converge_ms),
    };
    println!("lab: {} — {}", sc.name, sc.description.trim());
    println!("  paths: {}", paths.daemon_arg());
    let mut log = |m: &str| println!("  {m}");
    let mut lab = match runner::Lab::build(&sc, &opts, &mut log) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = lab.run_steps(&mut log);
    print!("{}", lab.report());
    let failed = lab.results.iter().filter(|r| !r.ok).count();
    let code = match (&run, failed) {
        (Ok(()), 0) => {
            println!("lab {}: every check passed", sc.name);
            ExitCode::SUCCESS
        }
        (Ok(()), n) => {
            println!("lab {}: {n} checks failed", sc.name);
            ExitCode::FAILURE
        }
        (Err(e), _) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    };
    if code == ExitCode::SUCCESS {
        lab.mark_passed();
    } else if !keep {
        eprintln!("daemon logs kept in {}", lab.log_dir().display());
    }
    if keep && run.is_ok() {
        print!("{}", lab.keep_hints());
    } else {
        println!("lab {}: cleaning up", sc.name);
    }
    drop(lab);
    code
}

fn check(file: &std::path::Path) -> ExitCode {
    match Scenario::load(file) {
        Ok(sc) => {
            println!(
                "{}: {} systems, {} hosts, {} graphs, {} steps: ok",
                file.display(),
                sc.systems.len(),
                sc.hosts.len(),
                sc.graphs.len(),
                sc.steps.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `ntkplane` beside this binary (both are built into the same `target/<profile>/`).
fn default_daemon() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let bin = me.with_file_name("ntkplane");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "no daemon binary at {} (build it with `cargo build -p ntkplane`, or pass --daemon)",
            bin.display()
        ))
    }
}
