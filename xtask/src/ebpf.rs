//! The eBPF toolchain bootstrap and build.
//!
//! On a fresh machine the nightly toolchain lacks `rust-src` (needed by `-Z build-std=core`)
//! and there is no `bpf-linker`. bpf-linker must link against an LLVM of the same major
//! version as nightly's; no system LLVM of that version exists here, so it is built against
//! the `libLLVM-<major>-rust-<ver>-nightly.so` that ships inside the nightly sysroot.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{clean_cargo, root, run, step};

/// bpf-linker release known to build against LLVM 22 with `no-llvm-linking`.
const BPF_LINKER_VERSION: &str = "0.13.0";
const TARGET: &str = "bpfel-unknown-none";

/// Path of the built object.
pub fn object_path() -> PathBuf {
    root()
        .join("target/ebpf")
        .join(TARGET)
        .join("release/ntkplane-ebpf")
}

/// Ensures the toolchain, builds the object, returns its path.
pub fn build() -> Result<PathBuf> {
    let t0 = Instant::now();
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    step("building the eBPF object (nightly, -Z build-std=core, bpfel-unknown-none)");
    let mut cmd = clean_cargo();
    cmd.current_dir(root().join("ebpf"))
        .args(["+nightly", "build", "--release", "-Z", "build-std=core"])
        .args(["--target", TARGET])
        .arg("--target-dir")
        .arg(root().join("target/ebpf"))
        // BTF lets `bpftool map dump` print keys and values by field name.
        .env(
            format!(
                "CARGO_TARGET_{}_RUSTFLAGS",
                TARGET.to_uppercase().replace('-', "_")
            ),
            "-C debuginfo=2 -C link-arg=--btf",
        );
    run(&mut cmd)?;
    let obj = object_path();
    let size = fs::metadata(&obj)
        .with_context(|| format!("the build did not produce {}", obj.display()))?
        .len();
    step(format!(
        "eBPF object ready: {} ({size} bytes) in {:.1}s",
        obj.display(),
        t0.elapsed().as_secs_f64()
    ));
    Ok(obj)
}

fn ensure_rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("cannot run rustup (is the nightly toolchain installed?)")?;
    if !out.status.success() {
        bail!(
            "`rustup component list --toolchain nightly` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        step("nightly rust-src: present");
        return Ok(());
    }
    step("nightly rust-src: missing, installing");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// `bpf-linker --version` works (which also proves its rpath'd libLLVM loads).
fn bpf_linker_works() -> Option<String> {
    let out = Command::new("bpf-linker").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn ensure_bpf_linker() -> Result<()> {
    // cargo finds the linker on PATH; make sure cargo's bin directory is on it.
    let bin = cargo_bin_dir();
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|p| p == bin) {
        let mut paths: Vec<PathBuf> = std::env::split_paths(&path).collect();
        paths.insert(0, bin.clone());
        std::env::set_var("PATH", std::env::join_paths(paths)?);
    }
    if let Some(v) = bpf_linker_works() {
        step(format!("bpf-linker: present ({v})"));
        return Ok(());
    }
    let sysroot = String::from_utf8(
        Command::new("rustc")
            .args(["+nightly", "--print", "sysroot"])
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .output()
            .context("cannot run `rustc +nightly --print sysroot`")?
            .stdout,
    )?;
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    let (libname, major) = find_nightly_llvm(&lib)?;
    step(format!(
        "bpf-linker: missing, building {BPF_LINKER_VERSION} against nightly's {libname} (LLVM {major}); takes about a minute"
    ));
    let rustflags = format!(
        "-C link-arg=-L{l} -C link-arg=-l{libname} -C link-arg=-Wl,-rpath,{l}",
        l = lib.display()
    );
    let mut cmd = clean_cargo();
    cmd.args(["+nightly", "install", "bpf-linker", "--locked"])
        .args(["--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{major},no-llvm-linking"))
        .env("RUSTFLAGS", rustflags);
    run(&mut cmd)?;
    match bpf_linker_works() {
        Some(v) => {
            step(format!("bpf-linker: installed ({v})"));
            Ok(())
        }
        None => bail!("bpf-linker was installed but `bpf-linker --version` does not run"),
    }
}

/// Finds `libLLVM-<major>-rust-<ver>-nightly.so` in the nightly sysroot's lib directory and
/// returns the linker name (without `lib` and `.so`) and the LLVM major version.
fn find_nightly_llvm(lib: &Path) -> Result<(String, u32)> {
    let mut found = Vec::new();
    for e in fs::read_dir(lib).with_context(|| format!("cannot list {}", lib.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(parsed) = parse_llvm_lib_name(&name) {
            found.push(parsed);
        }
    }
    match found.len() {
        1 => Ok(found.pop().unwrap()),
        0 => bail!(
            "no libLLVM-<major>-rust-*.so in {}: cannot build bpf-linker against nightly's LLVM",
            lib.display()
        ),
        _ => bail!(
            "several nightly LLVM libraries in {}: {found:?}",
            lib.display()
        ),
    }
}

fn parse_llvm_lib_name(name: &str) -> Option<(String, u32)> {
    let stem = name.strip_prefix("lib")?.strip_suffix(".so")?;
    let rest = stem.strip_prefix("LLVM-")?;
    let (major, tail) = rest.split_once('-')?;
    if !tail.starts_with("rust-") {
        return None;
    }
    Some((stem.to_string(), major.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::parse_llvm_lib_name;

    #[test]
    fn llvm_library_names() {
        assert_eq!(
            parse_llvm_lib_name("libLLVM-22-rust-1.97.0-nightly.so"),
            Some(("LLVM-22-rust-1.97.0-nightly".into(), 22))
        );
        assert_eq!(
            parse_llvm_lib_name("libLLVM.so.22.1-rust-1.97.0-nightly"),
            None
        );
        assert_eq!(parse_llvm_lib_name("librustc_driver-abc.so"), None);
    }
}
