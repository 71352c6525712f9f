//! `cargo xtask test`: everything, in the order that makes failures readable.
use std::process::Command;

use anyhow::Result;

use crate::{clean_cargo, ebpf, root, run, step, tools};

/// Prefix of the namespaces the integration tests create (`tests/src/lab.rs`).
const TEST_NETNS_PREFIX: &str = "ntkt";

pub fn run_all(extra: &[String]) -> Result<()> {
    tools::ensure(&[tools::RUN, tools::TEST])?;
    remove_stale_test_namespaces();
    // 1. The eBPF object first: the control crate embeds it at build time.
    ebpf::build()?;
    // 2. Every test of the workspace: unit and golden tests, BPF_PROG_TEST_RUN tests and
    //    the network-namespace integration tests (these need root).
    step("running the test suites");
    let mut cmd = clean_cargo();
    cmd.current_dir(root())
        .args(["test", "--workspace", "--all-targets", "--"])
        .args(extra);
    let result = run(&mut cmd);
    remove_stale_test_namespaces();
    result?;
    step("all tests passed");
    Ok(())
}

/// Tests delete their namespaces on drop, even when they fail; a test process killed
/// outright cannot. Remove such leftovers (only names with the tests' prefix).
fn remove_stale_test_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(TEST_NETNS_PREFIX) {
            step(format!("removing leftover test namespace {name}"));
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
    // Pins of a killed test (their namespace, hence their links, are gone already).
    if let Ok(dirs) = std::fs::read_dir("/sys/fs/bpf/ntkplane") {
        for d in dirs.flatten() {
            if d.file_name()
                .to_string_lossy()
                .starts_with(TEST_NETNS_PREFIX)
            {
                step(format!(
                    "removing leftover test pins {}",
                    d.path().display()
                ));
                let _ = std::fs::remove_dir_all(d.path());
            }
        }
    }
}
