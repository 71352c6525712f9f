//! Drift detection: in every namespace the daemon owns, a thread listens to the kernel's
//! rtnetlink (links, IPv4 addresses, routes, rules) and nftables multicast groups and tells
//! the writer that something changed there; the writer compares the namespace with the
//! model and repairs it (debounced, so that a burst of events is one repair). What the
//! rtnetlink events say is kept ([`Touched`]): the repair looks at the routes they name, not
//! at the whole namespace, so the daemon's own changes (which raise events too) cost a
//! comparison per route they wrote, and nothing in the kernel.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::Duration,
};

use crate::{kernel::events::Touched, netns::Netns};

/// rtnetlink multicast groups (the legacy bitmask of `sockaddr_nl.nl_groups`).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV4_RULE: u32 = 0x80;
/// `NFNLGRP_NFTABLES` (7) as a bitmask on a `NETLINK_NETFILTER` socket.
const NFNLGRP_NFTABLES_MASK: u32 = 1 << (7 - 1);

/// The rtnetlink socket's receive buffer: an apply of a whole table set (hundreds of
/// thousands of routes) must not overflow it while the writer is busy (an overflow costs a
/// full observation). Kernel memory, used only while notifications wait.
const RCVBUF: libc::c_int = 64 << 20;

/// How often a watcher looks at its stop flag.
const TICK: Duration = Duration::from_millis(200);

/// A netlink socket bound to `groups` of `protocol` in the current thread's namespace, with
/// a receive timeout of [`TICK`].
fn subscribe(protocol: i32, groups: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2)/bind(2)/setsockopt(2) calls on a descriptor we own.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let mut sa: libc::sockaddr_nl = std::mem::zeroed();
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_groups = groups;
        if libc::bind(
            raw,
            &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: TICK.as_micros() as libc::suseconds_t,
        };
        // Best effort (SO_RCVBUFFORCE needs CAP_NET_ADMIN): a small buffer only costs
        // observations after overflows.
        let size = RCVBUF;
        libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        );
        if libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// Drains what is queued on `fd` (with `flags` 0: waits for the first message, up to
/// [`TICK`]), handing each datagram to `seen`, and ENOBUFS (events lost) as an empty one:
/// whether anything came.
fn drain(
    fd: &std::os::fd::OwnedFd,
    buf: &mut [u8],
    flags: i32,
    mut seen: impl FnMut(Option<&[u8]>),
) -> bool {
    let raw = std::os::fd::AsRawFd::as_raw_fd(fd);
    let mut any = false;
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), flags) };
        if n > 0 {
            any = true;
            seen(Some(&buf[..n as usize]));
        } else if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
            any = true; // events lost: something changed
            seen(None);
        } else {
            return any;
        }
        if flags == 0 {
            return any;
        }
    }
}

/// A running watcher; stops when dropped.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    touched: Arc<Mutex<Touched>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// What the events said since the last call.
    pub fn take(&self) -> Touched {
        std::mem::take(&mut *self.touched.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Watches `netns`; calls `notify` (from the watcher's thread) when something changed there.
pub fn watch(netns: Netns, notify: impl Fn() -> bool + Send + 'static) -> Result<Watcher, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let touched = Arc::new(Mutex::new(Touched::default()));
    let shared = touched.clone();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let label = format!("{netns:?}");
    let thread = std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || {
            let failed = ready_tx.clone();
            let r = netns.run(move || {
                let rt = subscribe(
                    libc::NETLINK_ROUTE,
                    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV4_RULE,
                );
                let nf = subscribe(libc::NETLINK_NETFILTER, NFNLGRP_NFTABLES_MASK);
                let (rt, nf) = match (rt, nf) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = ready_tx.send(Err(format!("netlink subscribe: {e}")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut buf = vec![0u8; 64 * 1024];
                while !flag.load(Ordering::Relaxed) {
                    // Blocks up to TICK on the rtnetlink socket, then polls nftables'.
                    let record = |m: Option<&[u8]>| {
                        let mut t = shared.lock().unwrap_or_else(|e| e.into_inner());
                        match m {
                            Some(bytes) => t.absorb(bytes),
                            None => t.lost = true,
                        }
                    };
                    let a = drain(&rt, &mut buf, 0, record);
                    let a = a | drain(&rt, &mut buf, libc::MSG_DONTWAIT, record);
                    let b = drain(&nf, &mut buf, libc::MSG_DONTWAIT, |_| {});
                    if b {
                        shared.lock().unwrap_or_else(|e| e.into_inner()).nft = true;
                    }
                    if (a || b) && !notify() {
                        return;
                    }
                }
            });
            if let Err(e) = r {
                let _ = failed.send(Err(e.to_string()));
            }
        })
        .map_err(|e| format!("watch thread: {e}"))?;
    match ready_rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(())) => Ok(Watcher {
            stop,
            touched,
            thread: Some(thread),
        }),
        Ok(Err(e)) => Err(format!("watch {label}: {e}")),
        Err(_) => Err(format!("watch {label}: the watcher did not start")),
    }
}
