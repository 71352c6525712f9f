//! The daemons' wire protocol (docs/PROTOCOL.md): one versioned, length-limited datagram
//! format over UDP on the real NICs' link-local addresses, carrying every [`Message`]
//! (neighbourhood, identities, QSPN), optionally authenticated with a network key
//! (HMAC-SHA256, RFC 8967-style replay protection). Pure: no sockets, no clocks.
pub mod auth;
pub mod codec;
pub mod message;
pub mod rng;

#[cfg(test)]
mod tests;

pub use auth::{Auth, KeyError, NetworkKey};
pub use codec::{
    decode, encode, is_neighbourhood, Decoded, Drop, WireError, MAX_DATAGRAM, VERSION,
};
pub use message::{Mac, Message, PeerIdentity};
pub use rng::SplitMix64;

/// The UDP port of the protocol (neighborhood.md §10: qspnclient's 60269).
pub const PORT: u16 = 60269;
