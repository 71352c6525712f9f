//! QSPN, one instance per identity (qspn.md): pure logic, no I/O. The daemon's protocol
//! runtime feeds it arcs, costs and received messages and carries out what it returns.
pub mod bootstrap;
pub mod cost;
pub mod engine;
#[cfg(test)]
mod engine_tests;
pub mod event;
pub mod fingerprint;
pub mod fuzz_seeds;
pub mod ignore;
pub mod lifecycle;
#[cfg(test)]
mod lifecycle_tests;
pub mod map;
pub mod msg;
pub mod path;
#[cfg(test)]
mod prop_tests;
pub mod revise;
pub mod select;
pub mod sim;
#[cfg(test)]
mod sim_tests;
pub mod validate;
pub use {
    bootstrap::{BootstrapArgs, InternalArc},
    engine::{Params, Qspn},
    event::{Output, Signal, Timer},
    path::PathView,
};
