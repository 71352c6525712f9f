//! The lab: scenario files (systems, graphs, a timeline, checks) run against real daemons in
//! network namespaces, the feed (what QSPN would have told each identity, from a network
//! graph), the spec's listing format for expected tables, and read-back helpers.
pub mod feed;
pub mod listing;
pub mod readback;
pub mod runner;
pub mod scenario;
