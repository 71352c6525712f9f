//! Netsukuku's protocols inside the daemon (`run --paths protocol`): neighbour discovery,
//! arcs and their cost, and QSPN, between real hosts. See `runtime` for the design and
//! docs/PROTOCOL.md for the wire format and the timers.
pub mod feed;
pub mod link;
pub mod peers;
pub mod retry;
mod runtime;

pub use runtime::{parse_arc_cost, spawn, Handle, Options, Shared, Status};
