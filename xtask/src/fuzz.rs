//! `cargo xtask fuzz TARGET [--seconds N]`: runs a cargo-fuzz (libFuzzer) target for N
//! seconds, installing cargo-fuzz first when it is missing. The corpus lives in
//! `target/fuzz/corpus/TARGET` (seeded from the project's own files), crashes in the fuzz
//! crate's `artifacts/`. Fuzzing needs nightly (sanitizers), which the eBPF build needs too.
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::{clean_cargo, root, run, step};

/// A fuzz target: its name, the crate whose `fuzz/` holds it, and the files that seed it.
struct Target {
    name: &'static str,
    krate: &'static str,
    seeds: &'static str,
    seed_ext: &'static str,
}

const TARGETS: &[Target] = &[
    Target {
        name: "scenario",
        krate: "lab",
        seeds: "scenarios",
        seed_ext: "toml",
    },
    // The control protocol decoder and the model step of every request (daemon::model_step).
    Target {
        name: "control",
        krate: "control",
        seeds: "control/fuzz/seeds",
        seed_ext: "json",
    },
    // The QSPN ETP handler (validation, revise_etp, update_map) on arbitrary ETP sequences.
    Target {
        name: "etp",
        krate: "control",
        seeds: "control/fuzz/seeds-etp",
        seed_ext: "bin",
    },
    // The wire protocol's datagram decoder, with and without a network key (wire::decode).
    Target {
        name: "wire",
        krate: "control",
        seeds: "control/fuzz/seeds-wire",
        seed_ext: "bin",
    },
];

pub fn names() -> String {
    TARGETS
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn run_target(name: &str, seconds: u64) -> Result<()> {
    let Some(t) = TARGETS.iter().find(|t| t.name == name) else {
        bail!("no fuzz target '{name}' (targets: {})", names());
    };
    ensure_cargo_fuzz()?;
    let corpus = root().join("target/fuzz/corpus").join(t.name);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    seed(t, &corpus)?;
    step(format!("fuzzing '{}' for {seconds} s", t.name));
    let mut cmd = clean_cargo();
    cmd.current_dir(root().join(t.krate))
        .args(["+nightly", "fuzz", "run", t.name])
        .arg(&corpus)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-max_len=65536",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
        ]);
    run(&mut cmd).with_context(|| {
        format!(
            "fuzz target '{}' found a failure: see {}/fuzz/artifacts/{}",
            t.name,
            root().join(t.krate).display(),
            t.name
        )
    })?;
    step(format!(
        "fuzz target '{}': no failure in {seconds} s",
        t.name
    ));
    Ok(())
}

/// The project's own files of the target's kind, copied into the corpus once.
fn seed(t: &Target, corpus: &std::path::Path) -> Result<()> {
    let dir = root().join(t.seeds);
    for e in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
        let p: PathBuf = e?.path();
        if p.extension().is_some_and(|x| x == t.seed_ext) {
            let to = corpus.join(format!("seed-{}", p.file_name().unwrap().to_string_lossy()));
            if !to.exists() {
                std::fs::copy(&p, &to)?;
            }
        }
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    step("cargo-fuzz: missing, installing it (a minute or two)");
    run(clean_cargo().args(["install", "--locked", "cargo-fuzz"]))
}
