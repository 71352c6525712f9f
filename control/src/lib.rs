//! ntkplane: a Linux dataplane for Netsukuku mesh networks.
//!
//! Pure logic (addressing, forwarding state) lives apart from the modules that touch the
//! kernel; each kernel subsystem is reached from exactly one module:
//! - [`classifier`]: the eBPF source-MAC classifier (BPF maps, TCX links);
//! - [`netns`]: entering network namespaces.
pub mod addr;
pub mod args;
pub mod classifier;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod fwd;
pub mod kernel;
pub mod mac;
pub mod neighborhood;
pub mod netns;
pub mod plan;
pub mod qspn;
pub mod system;
pub mod wire;
