//! The network key and the authentication of datagrams (docs/PROTOCOL.md §5), modelled on
//! Babel's HMAC authentication (RFC 8967): every datagram ends with the sender's per-boot
//! random *index*, its packet counter *PC* and an HMAC-SHA256 over everything before the MAC.
//! A receiver accepts a datagram only if its (source address, index) is known and its PC was
//! not seen before and is at most [`REPLAY_WINDOW`] behind the highest one; an unknown index is answered with a challenge (nonce)
//! that the sender must echo in an authenticated datagram (RFC 8967 §4.3).
use std::{
    collections::HashMap,
    net::SocketAddrV4,
    path::{Path, PathBuf},
};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::{codec::Drop, message::Message, rng::SplitMix64};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the trailer: index (8), PC (4), HMAC-SHA256 (32).
pub const TRAILER_LEN: usize = 8 + 4 + MAC_LEN;
const MAC_LEN: usize = 32;
/// The shortest key accepted (the HMAC's output size: shorter keys weaken it).
pub const MIN_KEY_LEN: usize = 32;
/// Senders whose (index, PC) are remembered; the least recently heard is forgotten first.
pub const MAX_PEERS: usize = 256;
/// A challenge is valid this long (RFC 8967 §4.3 suggests "a few seconds").
pub const CHALLENGE_TTL_MS: u64 = 3_000;
/// At most one challenge request to, and one reply to, a given source per this interval
/// (RFC 8967 §4.3: challenges must be rate-limited).
pub const CHALLENGE_INTERVAL_MS: u64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the network key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("network key {path} is too short: {len} bytes, at least {MIN_KEY_LEN} are needed (raw bytes, or {} hex digits)", 2 * MIN_KEY_LEN)]
    TooShort { path: PathBuf, len: usize },
}

/// The shared secret of a Netsukuku network (`--network-key FILE`).
#[derive(Clone)]
pub struct NetworkKey(Vec<u8>);

impl std::fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NetworkKey({} bytes)", self.0.len())
    }
}

impl NetworkKey {
    /// The file's contents: if they are only hex digits (surrounding whitespace ignored, even
    /// count) the key is what they spell, otherwise the raw bytes are the key. Either way at
    /// least [`MIN_KEY_LEN`] bytes.
    pub fn from_file(path: &Path) -> Result<NetworkKey, KeyError> {
        let raw = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        NetworkKey::from_contents(&raw).ok_or_else(|| KeyError::TooShort {
            path: path.to_owned(),
            len: key_len(&raw),
        })
    }

    /// As [`NetworkKey::from_file`], on contents; `None` if the key is too short.
    pub fn from_contents(raw: &[u8]) -> Option<NetworkKey> {
        let key = hex_decode(raw.trim_ascii()).unwrap_or_else(|| raw.to_vec());
        (key.len() >= MIN_KEY_LEN).then_some(NetworkKey(key))
    }
}

fn key_len(raw: &[u8]) -> usize {
    hex_decode(raw.trim_ascii()).map_or(raw.len(), |k| k.len())
}

fn hex_decode(s: &[u8]) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|p| {
            let hi = (p[0] as char).to_digit(16)?;
            let lo = (p[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}

/// The trailer's fields once its MAC is verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub index: u64,
    pub pc: u32,
}

/// What the replay protection decided about an authentic datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Fresh: hand the message on.
    Accept,
    /// Not accepted; send `reply` (a challenge request or reply) by broadcast on the NIC the
    /// datagram came in on.
    Respond {
        reply: Message,
        dropped: Option<Drop>,
    },
    /// Authentication traffic fully handled here (a valid challenge reply).
    Consumed,
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    index: u64,
    /// The highest PC accepted.
    pc: u32,
    /// Bit `i`: PC `pc − i` was accepted (bit 0 is `pc` itself).
    seen: u64,
    heard_ms: u64,
}

/// How far behind the highest PC a datagram may arrive and still be accepted once.
/// RFC 8967 accepts strictly increasing PCs only; a broadcast and a unicast sent back to back
/// may swap on the way, so ntkplane keeps IPsec's sliding window (RFC 4303 §3.4.3) instead.
pub const REPLAY_WINDOW: u32 = 64;

impl Peer {
    /// Accepts `pc` once, if it is ahead of the window's bottom; records it.
    fn accept(&mut self, pc: u32) -> bool {
        if pc > self.pc {
            let shift = pc - self.pc;
            self.seen = if shift >= REPLAY_WINDOW {
                1
            } else {
                (self.seen << shift) | 1
            };
            self.pc = pc;
            return true;
        }
        let behind = self.pc - pc;
        if behind >= REPLAY_WINDOW || self.seen & (1 << behind) != 0 {
            return false;
        }
        self.seen |= 1 << behind;
        true
    }
}

#[derive(Clone, Copy, Debug)]
struct Challenge {
    nonce: [u8; 16],
    sent_ms: u64,
}

/// One system's authentication state: its key, its own index and PC, and what it knows of
/// the senders it hears. Every bound is fixed ([`MAX_PEERS`] per table).
pub struct Auth {
    key: HmacSha256,
    index: u64,
    pc: u32,
    rng: SplitMix64,
    peers: HashMap<SocketAddrV4, Peer>,
    challenges: HashMap<SocketAddrV4, Challenge>,
    replied: HashMap<SocketAddrV4, u64>,
}

impl Auth {
    /// `seed` must come from the OS RNG: it gives the per-boot index and the nonces.
    pub fn new(key: &NetworkKey, seed: u64) -> Auth {
        let mut rng = SplitMix64::new(seed);
        let index = rng.next_u64();
        Auth {
            key: HmacSha256::new_from_slice(&key.0).expect("HMAC takes keys of any length"),
            index,
            pc: 0,
            rng,
            peers: HashMap::new(),
            challenges: HashMap::new(),
            replied: HashMap::new(),
        }
    }

    /// This boot's index (the runtime drops its own broadcasts looped back by the kernel).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Appends the trailer to a datagram (header and body already written).
    pub fn seal(&mut self, dgram: &mut Vec<u8>) {
        // RFC 8967 §4.1: the PC never repeats under one index; on wrap-around draw a new
        // index (receivers then challenge it).
        if self.pc == u32::MAX {
            self.index = self.rng.next_u64();
            self.pc = 0;
        }
        self.pc += 1;
        dgram.extend_from_slice(&self.index.to_be_bytes());
        dgram.extend_from_slice(&self.pc.to_be_bytes());
        let mut mac = self.key.clone();
        mac.update(dgram);
        dgram.extend_from_slice(&mac.finalize().into_bytes());
    }

    /// Verifies the trailer of `dgram` (whose last [`TRAILER_LEN`] bytes it is), in constant
    /// time; returns its index and PC.
    pub fn open(&self, dgram: &[u8]) -> Result<Trailer, Drop> {
        let Some(split) = dgram.len().checked_sub(MAC_LEN) else {
            return Err(Drop::Truncated);
        };
        let (signed, tag) = dgram.split_at(split);
        let mut mac = self.key.clone();
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| Drop::BadMac)?;
        let fields = signed
            .len()
            .checked_sub(12)
            .and_then(|at| signed.get(at..))
            .ok_or(Drop::Truncated)?;
        let (index, pc) = fields.split_at(8);
        Ok(Trailer {
            index: u64::from_be_bytes(index.try_into().map_err(|_| Drop::Truncated)?),
            pc: u32::from_be_bytes(pc.try_into().map_err(|_| Drop::Truncated)?),
        })
    }

    /// Replay protection for an authentic datagram (RFC 8967 §4.3): challenges are processed
    /// whatever the PC; anything else only with a known index and a higher PC.
    pub fn admit(
        &mut self,
        from: SocketAddrV4,
        t: Trailer,
        msg: &Message,
        now_ms: u64,
    ) -> Result<Admit, Drop> {
        if t.index == self.index {
            return Err(Drop::Own);
        }
        match msg {
            Message::ChallengeRequest { nonce, index } => {
                if *index != self.index {
                    return Err(Drop::NotForMe);
                }
                if let Some(last) = self.replied.get(&from) {
                    if now_ms.saturating_sub(*last) < CHALLENGE_INTERVAL_MS {
                        return Err(Drop::RateLimited);
                    }
                }
                insert_bounded(&mut self.replied, from, now_ms, |v| *v);
                return Ok(Admit::Respond {
                    reply: Message::ChallengeReply {
                        nonce: *nonce,
                        index: t.index,
                    },
                    dropped: None,
                });
            }
            Message::ChallengeReply { nonce, index } => {
                if *index != self.index {
                    return Err(Drop::NotForMe);
                }
                let ok = self.challenges.get(&from).is_some_and(|c| {
                    c.nonce == *nonce && now_ms.saturating_sub(c.sent_ms) < CHALLENGE_TTL_MS
                });
                if !ok {
                    return Err(Drop::BadChallenge);
                }
                self.challenges.remove(&from);
                let peer = Peer {
                    index: t.index,
                    pc: t.pc,
                    // Nothing sent before the proof of freshness is accepted afterwards.
                    seen: u64::MAX,
                    heard_ms: now_ms,
                };
                insert_bounded(&mut self.peers, from, peer, |p| p.heard_ms);
                return Ok(Admit::Consumed);
            }
            _ => {}
        }
        match self.peers.get_mut(&from) {
            Some(p) if p.index == t.index => {
                if !p.accept(t.pc) {
                    return Err(Drop::Replay);
                }
                p.heard_ms = now_ms;
                Ok(Admit::Accept)
            }
            // Unknown sender or a new index (it restarted): challenge it, at a bounded rate.
            _ => {
                if let Some(c) = self.challenges.get(&from) {
                    if now_ms.saturating_sub(c.sent_ms) < CHALLENGE_INTERVAL_MS {
                        return Err(Drop::ChallengePending);
                    }
                }
                let mut nonce = [0u8; 16];
                self.rng.fill(&mut nonce);
                let c = Challenge {
                    nonce,
                    sent_ms: now_ms,
                };
                insert_bounded(&mut self.challenges, from, c, |c| c.sent_ms);
                Ok(Admit::Respond {
                    reply: Message::ChallengeRequest {
                        nonce,
                        index: t.index,
                    },
                    dropped: Some(Drop::ChallengePending),
                })
            }
        }
    }
}

/// Inserts, first evicting the entry with the oldest `age` when the table is full.
fn insert_bounded<V>(
    map: &mut HashMap<SocketAddrV4, V>,
    k: SocketAddrV4,
    v: V,
    age: impl Fn(&V) -> u64,
) {
    if map.len() >= MAX_PEERS && !map.contains_key(&k) {
        if let Some(oldest) = map.iter().min_by_key(|(_, v)| age(v)).map(|(k, _)| *k) {
            map.remove(&oldest);
        }
    }
    map.insert(k, v);
}

#[cfg(test)]
impl Auth {
    /// Entries held about other senders (tests check the bound).
    pub(crate) fn tracked(&self) -> usize {
        self.peers.len() + self.challenges.len() + self.replied.len()
    }
}
