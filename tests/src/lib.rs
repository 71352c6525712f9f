//! Helpers for ntkplane's integration tests: throwaway network namespaces that are always
//! removed (also when a test panics), shell commands inside them, and small packet tools.
//!
//! Test *setup* may use `ip` and friends, like an administrator would; what is under test
//! (ntkplane's own code) never shells out for the dataplane.
pub mod convergence;
pub mod daemon;
pub mod fastlab;
pub mod fwdlab;
pub mod lab;
pub mod metrics;
pub mod packet;
pub mod readback;
pub mod rtnl_writer;
pub mod scenarios;
pub mod svg;
