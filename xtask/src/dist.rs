//! `cargo xtask dist`: what a package of ntkplane ships besides the binary, generated from the
//! clap definitions (`ntkplane::args::Cli`) so they never drift from the command line: shell
//! completions and man pages, plus the systemd unit, in `target/dist/`.
use anyhow::{Context, Result};

use crate::{clean_cargo, root, run, step};

pub fn run_dist() -> Result<()> {
    // The library embeds the eBPF object: it must exist before the generator builds.
    crate::ebpf::build()?;
    let out = root().join("target/dist");
    std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
    // The generator is an example of the `ntkplane` crate: clap_complete and clap_mangen stay
    // dev-dependencies, out of the daemon's binary.
    run(clean_cargo()
        .current_dir(root())
        .args([
            "run",
            "--quiet",
            "-p",
            "ntkplane",
            "--example",
            "dist-docs",
            "--",
        ])
        .arg(&out))?;
    let unit = root().join("contrib/ntkplane@.service");
    let systemd = out.join("systemd");
    std::fs::create_dir_all(&systemd).with_context(|| systemd.display().to_string())?;
    std::fs::copy(&unit, systemd.join("ntkplane@.service"))
        .with_context(|| format!("copying {}", unit.display()))?;
    step(format!(
        "dist: completions, man pages and the unit file in {}",
        out.display()
    ));
    Ok(())
}
