//! `cargo xtask test`: everything, in the order that makes failures readable.
use anyhow::Result;

use crate::{clean_cargo, ebpf, root, run, step};

pub fn run_all(extra: &[String]) -> Result<()> {
    // 1. The eBPF object first: the control crate embeds it at build time.
    ebpf::build()?;
    // 2. Every test of the workspace: unit and golden tests, BPF_PROG_TEST_RUN tests and
    //    the network-namespace integration tests (these need root).
    step("running the test suites");
    let mut cmd = clean_cargo();
    cmd.current_dir(root())
        .args(["test", "--workspace", "--all-targets", "--"])
        .args(extra);
    run(&mut cmd)?;
    step("all tests passed");
    Ok(())
}
