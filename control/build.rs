//! Embeds the eBPF object built by `cargo xtask build-ebpf`, so that the `ntkplane` binary is
//! self-contained. When the object is missing an empty one is embedded and the loader reports
//! a clear error at run time instead of failing the (stable, eBPF-free) build.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=NTKPLANE_EBPF_OBJ");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let default = manifest
        .parent()
        .unwrap()
        .join("target/ebpf/bpfel-unknown-none/release/ntkplane-ebpf");
    let obj = env::var_os("NTKPLANE_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or(default);
    println!("cargo:rerun-if-changed={}", obj.display());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("ntkplane.bpf.o");
    match fs::read(&obj) {
        Ok(bytes) => fs::write(&out, bytes).unwrap(),
        Err(_) => {
            println!(
                "cargo:warning=eBPF object {} not found: run `cargo xtask build-ebpf`",
                obj.display()
            );
            fs::write(&out, []).unwrap()
        }
    }
}
