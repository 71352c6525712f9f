//! A raw, pipelined rtnetlink route writer: the baseline the daemon's route programming is
//! measured against (issue 14's `rtnetlink_routes_per_second`).
//!
//! One NETLINK_ROUTE socket, RTM_NEWROUTE messages encoded by hand and sent many per
//! `sendmsg`, each with NLM_F_ACK; up to `window` requests are in flight, and every ack is
//! matched to its request by sequence number, so a refused route is reported with what it
//! was. Nothing here waits for one answer before sending the next request: that is the rate
//! the kernel itself allows, which an awaited-request writer (the daemon today, the
//! `rtnetlink` variant of bench-routes) does not reach.
use std::{
    collections::BTreeMap,
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{anyhow, bail, Result};
use ntkplane::kernel::rtnl::RouteEntry;

/// One route, in the terms of `struct rtmsg` and its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub table: u32,
    pub dst: Ipv4Addr,
    pub dst_len: u8,
    /// RTN_* (1 unicast, 7 unreachable, …).
    pub kind: u8,
    pub protocol: u8,
    pub scope: u8,
    pub tos: u8,
    /// rtm_flags the request may carry (RTNH_F_ONLINK); the kernel's own are left out.
    pub flags: u32,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub prefsrc: Option<Ipv4Addr>,
    pub metric: Option<u32>,
}

/// RTNH_F_ONLINK: the only flag of a dumped route that a request sets.
const RTNH_F_ONLINK: u32 = 4;

impl Route {
    /// The request that recreates a route read back from another namespace, whose devices
    /// are found by name in this one (`ifindex`).
    pub fn from_entry(e: &RouteEntry, ifindex: &BTreeMap<String, u32>) -> Result<Route> {
        let oif = match &e.dev {
            Some(d) => Some(*ifindex.get(d).ok_or_else(|| {
                anyhow!(
                    "device '{d}' of route {} table {} does not exist in the target namespace",
                    e.dst,
                    e.table
                )
            })?),
            None => None,
        };
        Ok(Route {
            table: e.table,
            dst: e.dst.addr(),
            dst_len: e.dst.prefix_len(),
            kind: e.kind,
            protocol: e.protocol,
            scope: e.scope,
            tos: e.tos,
            flags: e.flags & RTNH_F_ONLINK,
            gateway: e.gateway,
            oif,
            prefsrc: e.prefsrc,
            metric: e.metric,
        })
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "{}/{} table {} type {}",
            self.dst, self.dst_len, self.table, self.kind
        );
        if let Some(g) = self.gateway {
            s += &format!(" via {g}");
        }
        if let Some(o) = self.oif {
            s += &format!(" oif {o}");
        }
        if let Some(p) = self.prefsrc {
            s += &format!(" src {p}");
        }
        s
    }
}

// Netlink and rtnetlink constants (linux/netlink.h, linux/rtnetlink.h).
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_TABLE: u16 = 15;
/// `rtm_table` of a request whose table only fits in RTA_TABLE.
const RT_TABLE_UNSPEC: u8 = 0;
const NLMSG_HDRLEN: usize = 16;

/// Bytes of requests per `sendmsg`: well under the socket's default send buffer, which
/// bounds one netlink message batch.
const BATCH_BYTES: usize = 32 * 1024;
/// Receive buffer forced on the socket so that `window` outstanding acks (one skb each)
/// never overflow it: a lost ack would leave its request unmatched.
const RCVBUF: libc::c_int = 16 << 20;
/// Acks read per `recvmmsg`.
const RECV_BATCH: usize = 256;
const RECV_SLOT: usize = 512;

/// A NETLINK_ROUTE socket of the namespace it was opened in (open it inside
/// [`ntkplane::netns::Netns::run`]: the socket keeps that namespace wherever it is used).
pub struct Writer {
    fd: OwnedFd,
    next_seq: u32,
}

impl Writer {
    pub fn open() -> Result<Writer> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            bail!("netlink socket: {}", io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Short acks (no echo of the request) with the kernel's error text when it has one.
        setsockopt(&fd, libc::SOL_NETLINK, NETLINK_CAP_ACK, 1)?;
        setsockopt(&fd, libc::SOL_NETLINK, NETLINK_EXT_ACK, 1)?;
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF)?;
        Ok(Writer { fd, next_seq: 1 })
    }

    /// Creates every route (NLM_F_CREATE | NLM_F_EXCL: a route already there is an error),
    /// keeping at most `window` requests unacknowledged. Returns once every request is
    /// acknowledged; any refusal is an error naming the first refused route.
    pub fn create(&mut self, routes: &[Route], window: usize) -> Result<()> {
        let window = window.max(1);
        let base = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(routes.len() as u32);
        // Index of each request by its sequence number: an ack names nothing else.
        let mut pending = vec![true; routes.len()];
        let mut outstanding = 0usize;
        let mut refused: Vec<(usize, i32, Option<String>)> = Vec::new();
        let mut acks = AckReader::new();
        let mut buf = Vec::with_capacity(BATCH_BYTES + 256);
        let mut next = 0;
        while next < routes.len() || outstanding > 0 {
            // Send as much as the window allows.
            buf.clear();
            let mut sent = 0;
            while next < routes.len()
                && outstanding + sent < window
                && buf.len() + 128 <= BATCH_BYTES
            {
                encode(&mut buf, &routes[next], base.wrapping_add(next as u32));
                next += 1;
                sent += 1;
            }
            if sent > 0 {
                self.send(&buf)?;
                outstanding += sent;
            }
            // Read acks while the window is full or nothing is left to send.
            if outstanding >= window || next == routes.len() || sent == 0 {
                for (seq, errno, msg) in acks.read(&self.fd)? {
                    let i = seq.wrapping_sub(base) as usize;
                    if i >= routes.len() || !pending[i] {
                        bail!("netlink: ack for unknown or already acknowledged sequence {seq}");
                    }
                    pending[i] = false;
                    outstanding -= 1;
                    if errno != 0 {
                        refused.push((i, errno, msg));
                    }
                }
            }
        }
        if let Some((i, errno, msg)) = refused.first() {
            let mut first = format!(
                "{}: {}",
                routes[*i].describe(),
                io::Error::from_raw_os_error(*errno)
            );
            if let Some(m) = msg {
                first += &format!(" ({m})");
            }
            bail!(
                "the kernel refused {} of {} routes; first: {first}",
                refused.len(),
                routes.len()
            );
        }
        Ok(())
    }

    fn send(&self, buf: &[u8]) -> Result<()> {
        // SAFETY: an all-zero sockaddr_nl with the family set addresses the kernel.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        loop {
            // SAFETY: buf and `to` are valid for the lengths given.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    0,
                    (&to as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as u32,
                )
            };
            if n >= 0 {
                return if n as usize == buf.len() {
                    Ok(())
                } else {
                    Err(anyhow!("netlink: short send, {n} of {} bytes", buf.len()))
                };
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                bail!("netlink send: {e}");
            }
        }
    }
}

fn setsockopt(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> Result<()> {
    // SAFETY: `v` lives for the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if r < 0 {
        bail!("netlink setsockopt {name}: {}", io::Error::last_os_error());
    }
    Ok(())
}

/// Appends one RTM_NEWROUTE request.
fn encode(buf: &mut Vec<u8>, r: &Route, seq: u32) {
    let start = buf.len();
    // struct nlmsghdr; the length is patched at the end.
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&RTM_NEWROUTE.to_ne_bytes());
    buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // struct rtmsg.
    buf.extend_from_slice(&[
        libc::AF_INET as u8,
        r.dst_len,
        0, // rtm_src_len
        r.tos,
        if r.table < 256 {
            r.table as u8
        } else {
            RT_TABLE_UNSPEC
        },
        r.protocol,
        r.scope,
        r.kind,
    ]);
    buf.extend_from_slice(&r.flags.to_ne_bytes());
    attr(buf, RTA_TABLE, &r.table.to_ne_bytes());
    if r.dst_len > 0 {
        attr(buf, RTA_DST, &r.dst.octets());
    }
    if let Some(g) = r.gateway {
        attr(buf, RTA_GATEWAY, &g.octets());
    }
    if let Some(o) = r.oif {
        attr(buf, RTA_OIF, &o.to_ne_bytes());
    }
    if let Some(p) = r.prefsrc {
        attr(buf, RTA_PREFSRC, &p.octets());
    }
    if let Some(m) = r.metric {
        attr(buf, RTA_PRIORITY, &m.to_ne_bytes());
    }
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// Appends one `struct rtattr` with its payload, padded to 4 bytes.
fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// Reads acks many at a time: the kernel queues each as a datagram of its own, so one
/// `recvmmsg` instead of one `recv` per ack.
struct AckReader {
    slots: Vec<[u8; RECV_SLOT]>,
}

/// (sequence, errno — 0 for success —, the kernel's extended-ack text).
type Ack = (u32, i32, Option<String>);

impl AckReader {
    fn new() -> AckReader {
        AckReader {
            slots: vec![[0u8; RECV_SLOT]; RECV_BATCH],
        }
    }

    /// Blocks for at least one datagram, then takes every one already queued (up to the
    /// batch), and returns the acks in them.
    fn read(&mut self, fd: &OwnedFd) -> Result<Vec<Ack>> {
        let mut iovs: Vec<libc::iovec> = self
            .slots
            .iter_mut()
            .map(|s| libc::iovec {
                iov_base: s.as_mut_ptr().cast(),
                iov_len: RECV_SLOT,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: an all-zero msghdr is valid; the iovec is set below.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        let n = loop {
            // SAFETY: every mmsghdr points at a live iovec of RECV_SLOT bytes.
            let n = unsafe {
                libc::recvmmsg(
                    fd.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    msgs.len() as u32,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                // ENOBUFS here means acks were dropped: the window outgrew the buffer.
                bail!("netlink: receive acks: {e}");
            }
        };
        let mut out = Vec::with_capacity(n);
        for (k, m) in msgs.iter().take(n).enumerate() {
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                bail!("netlink: an ack did not fit its buffer");
            }
            parse_acks(&self.slots[k][..m.msg_len as usize], &mut out)?;
        }
        Ok(out)
    }
}

/// The acks (NLMSG_ERROR messages) in one datagram.
fn parse_acks(mut d: &[u8], out: &mut Vec<Ack>) -> Result<()> {
    let u16_at = |b: &[u8], o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap());
    while d.len() >= NLMSG_HDRLEN {
        let len = u32_at(d, 0) as usize;
        if len < NLMSG_HDRLEN || len > d.len() {
            bail!("netlink: bad message length {len}");
        }
        let (kind, flags, seq) = (u16_at(d, 4), u16_at(d, 6), u32_at(d, 8));
        if kind != NLMSG_ERROR || len < NLMSG_HDRLEN + 4 {
            bail!("netlink: unexpected message type {kind} (sequence {seq})");
        }
        let errno = -(u32_at(d, NLMSG_HDRLEN) as i32);
        // With NETLINK_CAP_ACK the request's header (not its payload) follows the errno,
        // then the extended-ack attributes when the kernel sets NLM_F_ACK_TLVS.
        let mut text = None;
        let tlv_start = NLMSG_HDRLEN + 4 + NLMSG_HDRLEN;
        if flags & NLM_F_ACK_TLVS != 0 && len > tlv_start {
            let mut t = &d[tlv_start..len];
            while t.len() >= 4 {
                let (alen, akind) = (u16_at(t, 0) as usize, u16_at(t, 2));
                if alen < 4 || alen > t.len() {
                    break;
                }
                if akind == NLMSGERR_ATTR_MSG {
                    let s = &t[4..alen];
                    let s = s.split(|b| *b == 0).next().unwrap_or(s);
                    text = Some(String::from_utf8_lossy(s).into_owned());
                }
                t = &t[(alen + 3) & !3..];
            }
        }
        out.push((seq, errno, text));
        let step = (len + 3) & !3;
        d = &d[step.min(d.len())..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_its_table_beyond_255_and_is_padded() {
        let r = Route {
            table: 300,
            dst: Ipv4Addr::new(10, 1, 0, 0),
            dst_len: 16,
            kind: 1,
            protocol: 15,
            scope: 0,
            tos: 0,
            flags: 0,
            gateway: Some(Ipv4Addr::new(169, 254, 2, 1)),
            oif: Some(2),
            prefsrc: None,
            metric: None,
        };
        let mut buf = Vec::new();
        encode(&mut buf, &r, 7);
        assert_eq!(buf.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize,
            buf.len()
        );
        assert_eq!(u32::from_ne_bytes(buf[8..12].try_into().unwrap()), 7);
        // rtm_table is RT_TABLE_UNSPEC; RTA_TABLE (len 8, type 15) follows the rtmsg.
        assert_eq!(buf[NLMSG_HDRLEN + 4], RT_TABLE_UNSPEC);
        let a = NLMSG_HDRLEN + 12;
        assert_eq!(u16::from_ne_bytes([buf[a + 2], buf[a + 3]]), RTA_TABLE);
        assert_eq!(
            u32::from_ne_bytes(buf[a + 4..a + 8].try_into().unwrap()),
            300
        );
    }

    #[test]
    fn acks_are_matched_by_sequence_with_the_kernels_text() {
        // Two acks in one datagram: a success and an EEXIST with an extended-ack message.
        let mut d = Vec::new();
        let ack = |d: &mut Vec<u8>, seq: u32, errno: i32, msg: Option<&str>| {
            let start = d.len();
            d.extend_from_slice(&0u32.to_ne_bytes());
            d.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            let flags = if msg.is_some() { NLM_F_ACK_TLVS } else { 0 };
            d.extend_from_slice(&flags.to_ne_bytes());
            d.extend_from_slice(&seq.to_ne_bytes());
            d.extend_from_slice(&0u32.to_ne_bytes());
            d.extend_from_slice(&(-errno).to_ne_bytes());
            d.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
            if let Some(m) = msg {
                let mut p = m.as_bytes().to_vec();
                p.push(0);
                attr(d, NLMSGERR_ATTR_MSG, &p);
            }
            let len = (d.len() - start) as u32;
            d[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        };
        ack(&mut d, 41, 0, None);
        ack(&mut d, 42, libc::EEXIST, Some("route exists"));
        let mut out = Vec::new();
        parse_acks(&d, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                (41, 0, None),
                (42, libc::EEXIST, Some("route exists".to_string()))
            ]
        );
    }
}
