//! The datagram format (docs/PROTOCOL.md §2): a fixed header, the postcard body, and, with a
//! network key, the auth trailer. Decoding is structural only (semantic checks belong to the
//! state machines) and never panics: every failure is a [`Drop`] reason the runtime counts.
use std::net::SocketAddrV4;

use super::{
    auth::{Admit, Auth, TRAILER_LEN},
    message::Message,
};

/// Magic bytes opening every datagram.
pub const MAGIC: [u8; 4] = *b"NTKP";
/// The only version this code speaks; any other is dropped ([`Drop::Version`]).
pub const VERSION: u8 = 1;
/// Header: magic (4), version (1), flags (1), sender's NeighborhoodNodeID (4, big endian).
pub const HEADER_LEN: usize = 10;
/// The largest datagram sent or accepted (fits one UDP datagram over IPv4).
pub const MAX_DATAGRAM: usize = 65_000;
/// Flag: an auth trailer follows the body.
pub const FLAG_AUTH: u8 = 0x01;
const KNOWN_FLAGS: u8 = FLAG_AUTH;

/// Why a datagram was not delivered; the runtime counts each reason
/// (`ntkplane_protocol_dropped_total{reason}`) and logs it at debug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Drop {
    BadMagic,
    Version,
    TooLong,
    Truncated,
    /// Reserved flag bits set.
    Flags,
    /// The body is not a valid message (or has trailing bytes).
    Malformed,
    /// A list inside the message is over its cap (`message::limits`).
    Limits,
    /// A key is configured and the datagram has no trailer.
    AuthMissing,
    /// No key is configured and the datagram has a trailer (or is a challenge).
    AuthUnexpected,
    BadMac,
    Replay,
    /// Unknown sender index: a challenge is out (or was just sent).
    ChallengePending,
    /// A challenge reply with no matching, live challenge.
    BadChallenge,
    /// A challenge request arrived too soon after the last one answered.
    RateLimited,
    /// Our own datagram, looped back.
    Own,
    /// A challenge (broadcast) for another system.
    NotForMe,
}

impl Drop {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::BadMagic => "bad_magic",
            Drop::Version => "version",
            Drop::TooLong => "too_long",
            Drop::Truncated => "truncated",
            Drop::Flags => "flags",
            Drop::Malformed => "malformed",
            Drop::Limits => "limits",
            Drop::AuthMissing => "auth_missing",
            Drop::AuthUnexpected => "auth_unexpected",
            Drop::BadMac => "bad_mac",
            Drop::Replay => "replay",
            Drop::ChallengePending => "challenge_pending",
            Drop::BadChallenge => "bad_challenge",
            Drop::RateLimited => "rate_limited",
            Drop::Own => "own",
            Drop::NotForMe => "not_for_me",
        }
    }

    /// Every reason, for pre-registering the metric's label values.
    pub const ALL: [Drop; 16] = [
        Drop::BadMagic,
        Drop::Version,
        Drop::TooLong,
        Drop::Truncated,
        Drop::Flags,
        Drop::Malformed,
        Drop::Limits,
        Drop::AuthMissing,
        Drop::AuthUnexpected,
        Drop::BadMac,
        Drop::Replay,
        Drop::ChallengePending,
        Drop::BadChallenge,
        Drop::RateLimited,
        Drop::Own,
        Drop::NotForMe,
    ];
}

impl std::fmt::Display for Drop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message too long: {len} bytes encoded, at most {MAX_DATAGRAM} fit a datagram")]
    TooLong { len: usize },
    #[error("message over its list caps (wire::message::limits)")]
    Limits,
    #[error("cannot encode message: {0}")]
    Encode(#[from] postcard::Error),
}

/// A decoded datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Accepted: hand `msg` to the state machines. `sender` is the header's
    /// NeighborhoodNodeID.
    Message { sender: u32, msg: Message },
    /// Authentication at work (only with a key): encode `reply` and **broadcast** it on the
    /// NIC the datagram came in on (a new neighbour has no host route yet; the reply names its
    /// addressee's index, others drop it as [`Drop::NotForMe`]). If `dropped` is set the
    /// datagram itself was not accepted for that reason (count it): this is how a new or
    /// restarted sender gets challenged.
    Respond {
        sender: u32,
        reply: Message,
        dropped: Option<Drop>,
    },
    /// Authentication traffic handled entirely by the decoder (a valid challenge reply).
    Consumed { sender: u32 },
}

/// Encodes one datagram from `sender` (this system's NeighborhoodNodeID). With `auth`, the
/// trailer is appended and the packet counter advances.
/// Whether a datagram carries one of the Neighborhood's messages (`Message` variants 0–6,
/// `HereIAm` … `ProbeReply`: postcard writes the variant index as the body's first byte),
/// judged from the magic and that byte alone, before any check. Only the order in which the
/// runtime handles datagrams depends on it: a datagram that lies is still decoded, checked
/// and dropped like any other.
pub fn is_neighbourhood(bytes: &[u8]) -> bool {
    bytes.len() > HEADER_LEN && bytes[..4] == MAGIC && bytes[HEADER_LEN] <= 6
}

pub fn encode(sender: u32, msg: &Message, auth: Option<&mut Auth>) -> Result<Vec<u8>, WireError> {
    if !msg.within_limits() {
        return Err(WireError::Limits);
    }
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(if auth.is_some() { FLAG_AUTH } else { 0 });
    out.extend_from_slice(&sender.to_be_bytes());
    let mut out = postcard::to_extend(msg, out)?;
    if let Some(a) = auth {
        a.seal(&mut out);
    }
    if out.len() > MAX_DATAGRAM {
        return Err(WireError::TooLong { len: out.len() });
    }
    Ok(out)
}

/// Decodes one datagram received from `from`. `auth` must be given iff a network key is
/// configured: then only authentic, fresh datagrams are accepted.
pub fn decode(
    bytes: &[u8],
    auth: Option<&mut Auth>,
    from: SocketAddrV4,
    now_ms: u64,
) -> Result<Decoded, Drop> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(Drop::TooLong);
    }
    let header = bytes.get(..HEADER_LEN).ok_or(Drop::Truncated)?;
    let (magic, rest) = header.split_at(4);
    if magic != MAGIC {
        return Err(Drop::BadMagic);
    }
    let (version, flags, sender) = match rest {
        [v, f, s0, s1, s2, s3] => (*v, *f, u32::from_be_bytes([*s0, *s1, *s2, *s3])),
        _ => return Err(Drop::Truncated),
    };
    if version != VERSION {
        return Err(Drop::Version);
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Drop::Flags);
    }
    let authed = flags & FLAG_AUTH != 0;
    match (auth, authed) {
        (None, true) => Err(Drop::AuthUnexpected),
        (Some(_), false) => Err(Drop::AuthMissing),
        (None, false) => {
            let msg = body(&bytes[HEADER_LEN..])?;
            if matches!(
                msg,
                Message::ChallengeRequest { .. } | Message::ChallengeReply { .. }
            ) {
                return Err(Drop::AuthUnexpected);
            }
            Ok(Decoded::Message { sender, msg })
        }
        (Some(auth), true) => {
            let end = bytes
                .len()
                .checked_sub(TRAILER_LEN)
                .filter(|e| *e >= HEADER_LEN)
                .ok_or(Drop::Truncated)?;
            // The MAC first: nothing of an unauthenticated datagram is even parsed.
            let trailer = auth.open(bytes)?;
            let msg = body(&bytes[HEADER_LEN..end])?;
            match auth.admit(from, trailer, &msg, now_ms)? {
                Admit::Accept => Ok(Decoded::Message { sender, msg }),
                Admit::Respond { reply, dropped } => Ok(Decoded::Respond {
                    sender,
                    reply,
                    dropped,
                }),
                Admit::Consumed => Ok(Decoded::Consumed { sender }),
            }
        }
    }
}

/// The postcard body. Decoding from the bounded slice bounds every allocation: postcard
/// reports no size hint for a sequence longer than the bytes left, so serde's `Vec` starts
/// empty and grows only as elements are actually read (docs/PROTOCOL.md §4).
fn body(b: &[u8]) -> Result<Message, Drop> {
    let (msg, rest) = postcard::take_from_bytes::<Message>(b).map_err(|e| match e {
        postcard::Error::DeserializeUnexpectedEnd => Drop::Truncated,
        _ => Drop::Malformed,
    })?;
    if !rest.is_empty() {
        return Err(Drop::Malformed);
    }
    if !msg.within_limits() {
        return Err(Drop::Limits);
    }
    Ok(msg)
}
