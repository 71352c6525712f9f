//! QSPN, one instance per identity (qspn.md): pure logic, no I/O. The daemon's protocol
//! runtime feeds it arcs, costs and received messages and carries out what it returns.
pub mod cost;
pub mod event;
pub mod fingerprint;
pub mod ignore;
pub mod map;
pub mod msg;
pub mod path;
pub mod revise;
pub mod select;
pub mod validate;
