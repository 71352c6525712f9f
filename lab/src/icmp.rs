//! ICMP echo from Rust, for the lab's `ping` checks, its connectivity matrix and the
//! integration tests: no `ping` binary.
//!
//! A raw ICMP socket (`socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)`: unprivileged ICMP sockets
//! are off in fresh namespaces) is opened on a thread inside the namespace, so it belongs to
//! it for its whole life; optionally bound to a source address (like `ping -I ADDR`). Each
//! echo request carries the socket's id and a new sequence number; what comes back within
//! the timeout is classified: an echo reply with our id/seq, or an ICMP error (destination
//! unreachable, time exceeded) whose quoted original carries them. A raw socket sees every
//! ICMP packet of the namespace, with the IP header: anything else is skipped, and received
//! packets are parsed defensively (lengths checked, nothing trusted).
use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use ntkplane::netns::Netns;

const ECHO_REPLY: u8 = 0;
const DEST_UNREACHABLE: u8 = 3;
const ECHO_REQUEST: u8 = 8;
const TIME_EXCEEDED: u8 = 11;
const IPPROTO_ICMP: u8 = 1;

/// What came back for one echo request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// An echo reply, from this address.
    Reply { from: Ipv4Addr },
    /// ICMP destination unreachable (type 3) from a router (or the destination), with its
    /// code (0 net, 1 host, 3 port, 13 administratively prohibited, …).
    Unreachable { from: Ipv4Addr, code: u8 },
    /// ICMP time exceeded (type 11).
    TimeExceeded { from: Ipv4Addr, code: u8 },
    /// Nothing within the timeout.
    Timeout,
}

impl Answer {
    /// The address that answered, if anything did.
    pub fn from(&self) -> Option<Ipv4Addr> {
        match self {
            Answer::Reply { from }
            | Answer::Unreachable { from, .. }
            | Answer::TimeExceeded { from, .. } => Some(*from),
            Answer::Timeout => None,
        }
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Reply { from } => write!(f, "reply from {from}"),
            Answer::Unreachable { from, code } => {
                write!(f, "destination unreachable (code {code}) from {from}")
            }
            Answer::TimeExceeded { from, code } => {
                write!(f, "time exceeded (code {code}) from {from}")
            }
            Answer::Timeout => f.write_str("no answer"),
        }
    }
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request (without IP header: the kernel adds it), checksum filled in.
pub fn echo_request(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + payload.len());
    p.extend_from_slice(&[ECHO_REQUEST, 0, 0, 0]);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// An IPv4 packet's (source, header length, total usable length), if `p` starts with a
/// well-formed IPv4 header carrying ICMP.
fn ipv4_icmp(p: &[u8]) -> Option<(Ipv4Addr, usize, usize)> {
    let first = *p.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || p.len() < ihl || p[9] != IPPROTO_ICMP {
        return None;
    }
    // The total length bounds the packet (trailing bytes are not ICMP); a raw socket may
    // also hand over less than announced, for a quoted packet in particular.
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let len = if total >= ihl {
        total.min(p.len())
    } else {
        p.len()
    };
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    Some((src, ihl, len))
}

/// What a received packet (IPv4 header included, as a raw socket delivers it) says about
/// our echo request `id`/`seq`; `None` if it is about something else or malformed.
pub fn classify(packet: &[u8], id: u16, seq: u16) -> Option<Answer> {
    let (from, ihl, len) = ipv4_icmp(packet)?;
    let icmp = packet.get(ihl..len)?;
    if icmp.len() < 8 {
        return None;
    }
    let ours = |b: &[u8]| b[4..6] == id.to_be_bytes() && b[6..8] == seq.to_be_bytes();
    match icmp[0] {
        ECHO_REPLY => (checksum(icmp) == 0 && ours(icmp)).then_some(Answer::Reply { from }),
        t @ (DEST_UNREACHABLE | TIME_EXCEEDED) => {
            // The error quotes the original IP header and at least 8 bytes of its payload:
            // our echo request's header.
            let quoted = &icmp[8..];
            let (_, qihl, _) = ipv4_icmp(quoted)?;
            let orig = quoted.get(qihl..qihl + 8)?;
            if orig[0] != ECHO_REQUEST || !ours(orig) {
                return None;
            }
            let code = icmp[1];
            Some(if t == DEST_UNREACHABLE {
                Answer::Unreachable { from, code }
            } else {
                Answer::TimeExceeded { from, code }
            })
        }
        _ => None,
    }
}

/// A raw ICMP socket living in one namespace, with an echo id of its own.
pub struct Pinger {
    fd: OwnedFd,
    id: u16,
    seq: u16,
}

impl Pinger {
    /// Opens the socket inside `netns`, bound to `source` when given.
    pub fn open(netns: &str, source: Option<Ipv4Addr>) -> Result<Pinger, String> {
        let fd = Netns::named(netns)
            .run(|| open_here(source))
            .map_err(|e| e.to_string())?
            .map_err(|e| {
                format!(
                    "[{netns}] raw ICMP socket{}: {e}",
                    source.map(|s| format!(" from {s}")).unwrap_or_default()
                )
            })?;
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let id = (std::process::id() as u16)
            .wrapping_mul(0x9e37)
            .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
        Ok(Pinger { fd, id, seq: 0 })
    }

    /// Sends one echo request to `dst` and waits up to `timeout` for what comes back. An
    /// error means the request could not be sent (e.g. the sender's own route is
    /// `unreachable`: `Network is unreachable`).
    pub fn echo(&mut self, dst: Ipv4Addr, timeout: Duration) -> io::Result<Answer> {
        self.seq = self.seq.wrapping_add(1);
        let (id, seq) = (self.id, self.seq);
        let pkt = echo_request(id, seq, b"ntkplane-lab echo request......");
        let sa = sockaddr(dst);
        // SAFETY: pkt and sa are valid for the given lengths; fd is an open socket.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Answer::Timeout);
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r == 0 {
                continue;
            }
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => continue,
                    // An ICMP error reported on the socket itself: the packet is read too.
                    _ if matches!(
                        e.raw_os_error(),
                        Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::ECONNREFUSED)
                    ) =>
                    {
                        continue
                    }
                    _ => return Err(e),
                }
            }
            if let Some(a) = classify(&buf[..n as usize], id, seq) {
                return Ok(a);
            }
        }
    }
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn open_here(source: Option<Ipv4Addr>) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if let Some(s) = source {
        let sa = sockaddr(s);
        // SAFETY: sa is a valid sockaddr_in.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// One echo request from namespace `netns` (optionally from `source`) to `dst`.
pub fn ping(
    netns: &str,
    source: Option<Ipv4Addr>,
    dst: Ipv4Addr,
    timeout: Duration,
) -> Result<Answer, String> {
    Pinger::open(netns, source)?
        .echo(dst, timeout)
        .map_err(|e| format!("[{netns}] echo request to {dst}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Built with an independent implementation (Python's struct/socket): an echo request
    // id 0x1234 seq 7 payload "ntkplane"; the reply from 10.0.0.41 to 10.0.0.9; a net
    // unreachable from 169.254.163.36 quoting the request 10.0.0.19 → 10.0.0.1.
    const REQUEST: [u8; 16] = [
        0x08, 0x00, 0x31, 0x19, 0x12, 0x34, 0x00, 0x07, 0x6e, 0x74, 0x6b, 0x70, 0x6c, 0x61, 0x6e,
        0x65,
    ];
    const REPLY: [u8; 36] = [
        0x45, 0x00, 0x00, 0x24, 0x04, 0xd2, 0x40, 0x00, 0x40, 0x01, 0x21, 0xd6, 0x0a, 0x00, 0x00,
        0x29, 0x0a, 0x00, 0x00, 0x09, 0x00, 0x00, 0x39, 0x19, 0x12, 0x34, 0x00, 0x07, 0x6e, 0x74,
        0x6b, 0x70, 0x6c, 0x61, 0x6e, 0x65,
    ];
    const UNREACHABLE: [u8; 56] = [
        0x45, 0x00, 0x00, 0x38, 0x04, 0xd2, 0x40, 0x00, 0x40, 0x01, 0xde, 0xbd, 0xa9, 0xfe, 0xa3,
        0x24, 0x0a, 0x00, 0x00, 0x13, 0x03, 0x00, 0xb1, 0xab, 0x00, 0x00, 0x00, 0x00, 0x45, 0x00,
        0x00, 0x24, 0x04, 0xd2, 0x40, 0x00, 0x3f, 0x01, 0x22, 0xf4, 0x0a, 0x00, 0x00, 0x13, 0x0a,
        0x00, 0x00, 0x01, 0x08, 0x00, 0x31, 0x19, 0x12, 0x34, 0x00, 0x07,
    ];

    #[test]
    fn echo_request_matches_an_independent_builder() {
        assert_eq!(echo_request(0x1234, 7, b"ntkplane"), REQUEST);
        // A packet with its checksum in place sums to zero; odd lengths are padded.
        assert_eq!(checksum(&REQUEST), 0);
        assert_eq!(checksum(&REPLY[..20]), 0, "IP header checksum");
        let odd = echo_request(1, 2, b"abc");
        assert_eq!(checksum(&odd), 0);
        assert_eq!(checksum(&[]), 0xffff);
    }

    #[test]
    fn a_reply_with_our_id_and_seq() {
        let from: Ipv4Addr = "10.0.0.41".parse().unwrap();
        assert_eq!(classify(&REPLY, 0x1234, 7), Some(Answer::Reply { from }));
        assert_eq!(classify(&REPLY, 0x1234, 8), None, "other seq");
        assert_eq!(classify(&REPLY, 0x4321, 7), None, "other id");
        let mut bad = REPLY;
        bad[30] ^= 1;
        assert_eq!(classify(&bad, 0x1234, 7), None, "bad ICMP checksum");
        // Our own request looped back (a raw socket sees it too) is no answer.
        let mut own = REPLY;
        own[20] = ECHO_REQUEST;
        assert_eq!(classify(&own, 0x1234, 7), None);
    }

    #[test]
    fn unreachable_and_time_exceeded_quote_our_request() {
        let from: Ipv4Addr = "169.254.163.36".parse().unwrap();
        assert_eq!(
            classify(&UNREACHABLE, 0x1234, 7),
            Some(Answer::Unreachable { from, code: 0 })
        );
        assert_eq!(classify(&UNREACHABLE, 0x1234, 6), None, "other seq");
        let mut te = UNREACHABLE;
        te[20] = TIME_EXCEEDED;
        assert_eq!(
            classify(&te, 0x1234, 7),
            Some(Answer::TimeExceeded { from, code: 0 })
        );
        let mut port = UNREACHABLE;
        port[21] = 3;
        assert_eq!(
            classify(&port, 0x1234, 7),
            Some(Answer::Unreachable { from, code: 3 })
        );
        // The quoted packet must be an echo request.
        let mut udp = UNREACHABLE;
        udp[48] = ECHO_REPLY;
        assert_eq!(classify(&udp, 0x1234, 7), None);
    }

    #[test]
    fn ip_options_are_skipped() {
        // The reply with a 4-byte option (IHL 6): the ICMP part moves by 4 bytes.
        let mut p = Vec::from(&REPLY[..20]);
        p[0] = 0x46;
        p[3] += 4;
        p.extend_from_slice(&[1, 1, 1, 0]);
        p.extend_from_slice(&REPLY[20..]);
        assert_eq!(
            classify(&p, 0x1234, 7),
            Some(Answer::Reply {
                from: "10.0.0.41".parse().unwrap()
            })
        );
    }

    #[test]
    fn truncated_or_malformed_input_is_no_answer_and_never_panics() {
        for p in [&REPLY[..], &UNREACHABLE[..]] {
            for n in 0..p.len() {
                assert_eq!(classify(&p[..n], 0x1234, 7), None, "{n} bytes");
            }
        }
        // Nonsense headers: IHL too small or beyond the packet, not IPv4, not ICMP.
        let mut v = REPLY;
        v[0] = 0x41;
        assert_eq!(classify(&v, 0x1234, 7), None);
        v[0] = 0x4f;
        assert_eq!(classify(&v, 0x1234, 7), None);
        v[0] = 0x65;
        assert_eq!(classify(&v, 0x1234, 7), None);
        let mut v = REPLY;
        v[9] = 17;
        assert_eq!(classify(&v, 0x1234, 7), None);
        // A total length shorter than the header is ignored, longer is capped.
        let mut v = REPLY;
        v[2..4].copy_from_slice(&[0, 4]);
        assert!(classify(&v, 0x1234, 7).is_some());
        v[2..4].copy_from_slice(&[0xff, 0xff]);
        assert!(classify(&v, 0x1234, 7).is_some());
        // The quoted header announcing options that are not there.
        let mut v = UNREACHABLE;
        v[28] = 0x4f;
        assert_eq!(classify(&v, 0x1234, 7), None);
        for b in 0..=255u8 {
            let _ = classify(&[b; 64], 0x1234, 7);
            let _ = classify(
                &[
                    0x45, 0, 0, 64, 0, 0, 0, 0, 64, 1, 0, 0, b, b, b, b, 0, 0, 0, 0, b,
                ],
                0,
                0,
            );
        }
    }
}
