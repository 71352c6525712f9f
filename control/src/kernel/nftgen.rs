//! The nftables ruleset generation of the current thread's namespace: one netlink round
//! trip (`NFT_MSG_GETGEN`), no process. The kernel bumps it at every committed nftables
//! transaction in the namespace, whoever made it, so an unchanged generation means an
//! unchanged ruleset: [`super::nft`] reads its table back with `nft -j list` (a process,
//! ~10 ms of CPU) only when the generation moved since its last read.
use std::{io, mem};

/// `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN`.
const GETGEN: u16 = (10 << 8) | 16;
/// `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN`: the answer.
const NEWGEN: u16 = (10 << 8) | 15;
const NLMSG_ERROR: u16 = 2;
const NFTA_GEN_ID: u16 = 1;
const NLM_F_REQUEST: u16 = 1;
const NETLINK_NETFILTER: i32 = 12;
/// `nlmsghdr` + `nfgenmsg`.
const HDR: usize = 16;
const NFGEN: usize = 4;

/// The `NFT_MSG_GETGEN` request with sequence number `seq`.
pub fn request(seq: u32) -> [u8; HDR + NFGEN] {
    let mut m = [0u8; HDR + NFGEN];
    m[0..4].copy_from_slice(&((HDR + NFGEN) as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&GETGEN.to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // pid 0 (the kernel), nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id 0.
    m
}

/// The generation in an answer to [`request`]`(seq)`; `None` for anything else (an error,
/// another message, a truncated or malformed one).
pub fn parse(reply: &[u8], seq: u32) -> Option<u32> {
    let u16_at = |b: &[u8], i: usize| Some(u16::from_ne_bytes(b.get(i..i + 2)?.try_into().ok()?));
    let u32_at = |b: &[u8], i: usize| Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let len = u32_at(reply, 0)? as usize;
    let msg = reply.get(..len)?;
    let kind = u16_at(msg, 4)?;
    if kind == NLMSG_ERROR || kind != NEWGEN || u32_at(msg, 8)? != seq {
        return None;
    }
    let mut i = HDR + NFGEN;
    while i + 4 <= msg.len() {
        let alen = u16_at(msg, i)? as usize;
        let atype = u16_at(msg, i + 2)? & 0x3fff;
        if alen < 4 {
            return None;
        }
        if atype == NFTA_GEN_ID && alen >= 8 {
            // Netfilter attributes are big-endian.
            return Some(u32::from_be_bytes(msg.get(i + 4..i + 8)?.try_into().ok()?));
        }
        i += (alen + 3) & !3;
    }
    None
}

/// Closes the socket however `generation` returns.
struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: a descriptor this module opened and nobody else holds.
        unsafe { libc::close(self.0) };
    }
}

/// The current thread's namespace's ruleset generation.
pub fn generation() -> io::Result<u32> {
    // SAFETY: plain syscalls on a socket owned by `fd`; the buffers outlive the calls and
    // their lengths are theirs.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = Fd(fd);
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd.0,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            mem::size_of::<libc::timeval>() as u32,
        );
        let mut sa: libc::sockaddr_nl = mem::zeroed();
        sa.nl_family = libc::AF_NETLINK as u16;
        let seq = 1;
        let req = request(seq);
        let sent = libc::sendto(
            fd.0,
            req.as_ptr() as *const libc::c_void,
            req.len(),
            0,
            &sa as *const _ as *const libc::sockaddr,
            mem::size_of::<libc::sockaddr_nl>() as u32,
        );
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 512];
        let n = libc::recv(fd.0, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        parse(&buf[..n as usize], seq).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "no nftables generation in the answer",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `NFT_MSG_NEWGEN` answer as the kernel writes it: generation, pid, process name.
    fn answer(seq: u32, gen: u32) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&8u16.to_ne_bytes());
        attrs.extend_from_slice(&NFTA_GEN_ID.to_ne_bytes());
        attrs.extend_from_slice(&gen.to_be_bytes());
        attrs.extend_from_slice(&8u16.to_ne_bytes());
        attrs.extend_from_slice(&2u16.to_ne_bytes());
        attrs.extend_from_slice(&77u32.to_be_bytes());
        let mut m = Vec::new();
        m.extend_from_slice(&((HDR + NFGEN + attrs.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&NEWGEN.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[0, 0, (gen >> 8) as u8, gen as u8]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn request_is_a_getgen_of_its_own_length() {
        let r = request(7);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes(r[4..6].try_into().unwrap()), GETGEN);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 7);
    }

    #[test]
    fn the_generation_is_read_big_endian() {
        assert_eq!(parse(&answer(3, 0x0102_0304), 3), Some(0x0102_0304));
    }

    #[test]
    fn another_sequence_an_error_or_another_message_is_none() {
        assert_eq!(parse(&answer(3, 9), 4), None);
        let mut e = answer(3, 9);
        e[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(parse(&e, 3), None);
        let mut o = answer(3, 9);
        o[4..6].copy_from_slice(&GETGEN.to_ne_bytes());
        assert_eq!(parse(&o, 3), None);
    }

    #[test]
    fn truncated_and_malformed_answers_are_none_never_a_panic() {
        let a = answer(3, 9);
        for n in 0..a.len() {
            assert_eq!(parse(&a[..n], 3), None, "cut at {n}");
        }
        // An attribute of length 0 would loop forever if trusted.
        let mut z = answer(3, 9);
        z[HDR + NFGEN..HDR + NFGEN + 2].copy_from_slice(&0u16.to_ne_bytes());
        assert_eq!(parse(&z, 3), None);
        // A header length beyond the buffer.
        let mut l = answer(3, 9);
        l[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(parse(&l, 3), None);
    }

    #[test]
    fn the_generation_attribute_may_come_later() {
        let mut a = answer(3, 5);
        // Swap the two attributes: pid first, then the generation.
        let (g, p) = (HDR + NFGEN, HDR + NFGEN + 8);
        let first: Vec<u8> = a[g..p].to_vec();
        let second: Vec<u8> = a[p..p + 8].to_vec();
        a[g..p].copy_from_slice(&second);
        a[p..p + 8].copy_from_slice(&first);
        assert_eq!(parse(&a, 3), Some(5));
    }
}
