//! The protocol's sockets: one UDP socket per managed NIC, bound to the device, so a
//! datagram's NIC is the socket it arrived on and a send leaves by that NIC (also towards a
//! neighbour's link-local before any route to it exists: with the device bound, the kernel
//! takes an unrouted destination as on-link). Plus the NIC's carrier, polled.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd,
};

use socket2::{Domain, Protocol, Socket, Type};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("protocol socket on {nic} (UDP port {port}): {what}: {source}")]
    Socket {
        nic: String,
        port: u16,
        what: &'static str,
        source: std::io::Error,
    },
}

/// The two UDP sockets of `nic` on port `port`: one bound to the NIC's link-local, which sends
/// everything (so a datagram's source is always the link-local, whatever other addresses the
/// NIC holds: the kernel would pick a global one for a broadcast) and receives the unicasts;
/// one bound to the wildcard address, which receives the broadcasts. Must be called on a thread inside the system's default namespace
/// and inside a tokio runtime.
pub fn bind_pair(
    nic: &str,
    linklocal: Ipv4Addr,
    port: u16,
) -> Result<(tokio::net::UdpSocket, tokio::net::UdpSocket), LinkError> {
    Ok((
        bind(nic, linklocal, port)?,
        bind(nic, Ipv4Addr::UNSPECIFIED, port)?,
    ))
}

fn bind(nic: &str, addr: Ipv4Addr, port: u16) -> Result<tokio::net::UdpSocket, LinkError> {
    let err = |what: &'static str| {
        let nic = nic.to_string();
        move |source| LinkError::Socket {
            nic,
            port,
            what,
            source,
        }
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err("socket"))?;
    s.set_reuse_address(true).map_err(err("SO_REUSEADDR"))?;
    s.set_broadcast(true).map_err(err("SO_BROADCAST"))?;
    s.bind_device(Some(nic.as_bytes()))
        .map_err(err("SO_BINDTODEVICE"))?;
    // The link-local may be (re)assigned by the reconciler after us: bind all the same.
    s.set_freebind_v4(true).map_err(err("IP_FREEBIND"))?;
    s.set_nonblocking(true).map_err(err("O_NONBLOCK"))?;
    s.bind(&SocketAddrV4::new(addr, port).into())
        .map_err(err("bind"))?;
    tokio::net::UdpSocket::from_std(s.into()).map_err(err("tokio"))
}

/// Whether `nic` is up with a carrier (`IFF_UP | IFF_RUNNING`), asked through any socket of
/// the namespace. An unknown NIC is down.
pub fn carrier(sock: &impl AsRawFd, nic: &str) -> bool {
    // SAFETY: an all-zero ifreq is valid; the name is copied with a terminating NUL (at most
    // IFNAMSIZ-1 bytes); SIOCGIFFLAGS only writes ifr_flags.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        let name = nic.as_bytes();
        if name.len() >= req.ifr_name.len() {
            return false;
        }
        for (d, s) in req.ifr_name.iter_mut().zip(name) {
            *d = *s as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return false;
        }
        let flags = req.ifr_ifru.ifru_flags as libc::c_int;
        flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0
    }
}
