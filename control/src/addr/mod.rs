//! Netsukuku addressing (pure; no kernel access): topology, addresses, their IPv4 forms,
//! the destination set of an identity, and the NAT rules derived from an address.
//! Spec: `shared/spec/addressing.md`, `forwarding-state.md` §8–§9.
pub mod destinations;
pub mod ipv4;
pub mod naddr;
pub mod nat;
pub mod prefix;
pub mod report;
pub mod topology;

pub use destinations::{destinations, DestKind, Destination};
pub use naddr::{AddressError, HCoord, NtkAddress};
pub use prefix::Ipv4Prefix;
pub use topology::{Topology, TopologyError};
