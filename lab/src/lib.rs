//! The ntkplane lab: scenario files (systems, graphs, a timeline, checks) run against real
//! `ntkplane` daemons in network namespaces; the path solver (a network graph → the paths
//! QSPN would give each identity, fed to the daemons); the spec's listing format for expected
//! tables; and reading a namespace's kernel state back for the checks.
//!
//! The daemon never uses any of this: this crate depends on `ntkplane`, never the reverse.
pub mod arc_costs;
pub mod expect;
pub mod feed;
pub mod icmp;
pub mod listing;
pub mod network;
pub mod paths;
pub mod readback;
pub mod runner;
pub mod scenario;
pub mod seed;
