//! The system tools the project needs at run time, and getting them onto a fresh machine.
//!
//! `cargo xtask demo`, `test` and `bench` call [`ensure`] first with the tools of their job.
//! A missing tool is installed with `apt-get` when the xtask runs as root on a Debian-like
//! system (the command is printed before it runs); anywhere else it stops at once with one
//! line naming the package. `.ci/run` has no list of its own: it relies on this.
//!
//! Nothing here is needed to *read* the kernel: the lab and the tests do that themselves
//! (rtnetlink, aya, raw ICMP sockets), so `bpftool` and `ping` are not on any list.
use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Result};

use crate::{run, step};

/// A command the project runs, and the Debian package that brings it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tool {
    pub command: &'static str,
    pub package: &'static str,
    /// Who runs it: said in the error when it cannot be installed.
    pub why: &'static str,
}

/// The daemon's and the lab's tools.
pub const RUN: &[Tool] = &[
    Tool {
        command: "nft",
        package: "nftables",
        why: "the daemon installs its NAT table with nft",
    },
    Tool {
        command: "ip",
        package: "iproute2",
        why: "the lab builds its namespaces and links with ip",
    },
];

/// What the integration tests add: `sysctl` in their topology setup.
pub const TEST: &[Tool] = &[Tool {
    command: "sysctl",
    package: "procps",
    why: "the integration tests set forwarding sysctls",
}];

/// The benchmark's baselines.
pub const BENCH: &[Tool] = &[
    Tool {
        command: "iptables",
        package: "iptables",
        why: "the forwarding benchmark's iptables baselines",
    },
    Tool {
        command: "iptables-legacy-restore",
        package: "iptables",
        why: "the forwarding benchmark's iptables-legacy baseline",
    },
];

/// The convergence benchmark's anchor (`cargo xtask bench convergence`): another routing
/// daemon on the same topologies. Debian's package ships an init script that starts nothing
/// until interfaces are configured in /etc/default/babeld, so installing it runs no daemon.
pub const CONVERGENCE: &[Tool] = &[Tool {
    command: "babeld",
    package: "babeld",
    why: "the convergence benchmark runs babeld as its anchor",
}];

/// Makes sure every tool of `sets` is on `PATH`, installing the missing packages where that
/// is possible (root, apt-get), else failing with one line naming the package.
pub fn ensure(sets: &[&[Tool]]) -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let absent = missing(sets, &path);
    if absent.is_empty() {
        return Ok(());
    }
    let packages = packages(&absent);
    if !can_apt() {
        let t = absent[0];
        bail!(
            "`{}` is missing ({}): install the package `{}`{}",
            t.command,
            t.why,
            t.package,
            if packages.len() > 1 {
                format!(" (all missing: {})", packages.join(" "))
            } else {
                String::new()
            }
        );
    }
    step(format!(
        "missing: {} — installing {}",
        absent
            .iter()
            .map(|t| t.command)
            .collect::<Vec<_>>()
            .join(", "),
        packages.join(" ")
    ));
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        c
    };
    run(&mut apt(&["update", "-qq"]))?;
    let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
    install.args(&packages);
    run(&mut install)?;
    let still = missing(sets, &path);
    if let Some(t) = still.first() {
        bail!(
            "`{}` is still missing after installing `{}`",
            t.command,
            t.package
        );
    }
    Ok(())
}

/// The tools of `sets` not found in `path` (each once).
fn missing(sets: &[&[Tool]], path: &OsStr) -> Vec<Tool> {
    let mut out: Vec<Tool> = Vec::new();
    for t in sets.iter().flat_map(|s| s.iter()) {
        if find(t.command, path).is_none() && !out.contains(t) {
            out.push(*t);
        }
    }
    out
}

/// The packages that bring `tools`, each once, in order.
fn packages(tools: &[Tool]) -> Vec<&'static str> {
    let mut p: Vec<&'static str> = Vec::new();
    for t in tools {
        if !p.contains(&t.package) {
            p.push(t.package);
        }
    }
    p
}

/// An executable file named `command` in a directory of `path`. Also looks in the sbin
/// directories, where Debian puts `nft`, `ip` and `sysctl` and a non-login PATH may not.
fn find(command: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(command))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Root on a Debian-like system with apt-get.
fn can_apt() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    root && Path::new("/etc/debian_version").exists()
        && find("apt-get", &std::env::var_os("PATH").unwrap_or_default()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_is_on_the_path_and_names_packages_once() {
        let dir = std::env::temp_dir().join(format!("xtask-tools-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("nft");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Not executable: does not count.
        std::fs::write(dir.join("iptables"), "").unwrap();
        let path = std::env::join_paths([&dir]).unwrap();
        let m = missing(&[RUN, BENCH], &path);
        let cmds: Vec<&str> = m.iter().map(|t| t.command).collect();
        assert!(!cmds.contains(&"nft"), "{cmds:?}");
        // `ip` lives in /usr/sbin or /sbin on a Debian machine; iptables* nowhere here
        // unless installed, and never in `dir` (not executable there).
        if find("iptables", OsStr::new("")).is_none() {
            assert!(cmds.contains(&"iptables"));
            assert_eq!(packages(&m).iter().filter(|p| **p == "iptables").count(), 1);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
