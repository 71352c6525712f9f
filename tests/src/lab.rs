//! Throwaway network namespaces for tests.
use std::{
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

/// Every namespace a test creates starts with this, so leftovers are recognisable.
pub const PREFIX: &str = "ntkt";

/// Fails the test early, with the reason, when not running as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (network namespaces, BPF, nftables): run `cargo xtask test` as root"
    );
}

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    // Keep it short: interface names derived from it must fit in 15 bytes.
    format!("{PREFIX}{}{n}{tag}", std::process::id() % 100_000)
}

/// Runs a command, returns its output; panics (naming the command and its stderr) on failure.
pub fn must(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A named network namespace that is deleted when dropped (also on panic).
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(tag: &str) -> Ns {
        let name = unique(tag);
        must(Command::new("ip").args(["netns", "add", &name]));
        let ns = Ns { name };
        ns.sh("ip link set lo up");
        ns
    }

    /// Runs `script` with `sh -c` inside the namespace and returns stdout; panics on failure.
    pub fn sh(&self, script: &str) -> String {
        let out = must(
            Command::new("ip")
                .args(["netns", "exec", &self.name, "sh", "-c", script])
                .env("LC_ALL", "C"),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`Ns::sh`] but returns the output whatever the exit status.
    pub fn try_sh(&self, script: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .output()
            .expect("cannot run ip netns exec")
    }

    pub fn netns(&self) -> ntkplane::netns::Netns {
        ntkplane::netns::Netns::named(&self.name)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// One end of a veth pair: namespace, interface name, MAC, IPv4 address (CIDR).
pub struct End<'a>(pub &'a Ns, pub &'a str, pub &'a str, pub &'a str);

/// Creates a veth pair between two namespaces with the given names, MACs and addresses,
/// both ends up.
pub fn veth(a: End, b: End) {
    let (End(a_ns, a_if, a_mac, a_ip), End(b_ns, b_if, b_mac, b_ip)) = (a, b);
    must(Command::new("ip").args([
        "link", "add", a_if, "netns", &a_ns.name, "address", a_mac, "type", "veth", "peer", "name",
        b_if, "netns", &b_ns.name, "address", b_mac,
    ]));
    a_ns.sh(&format!(
        "ip addr add {a_ip} dev {a_if} && ip link set {a_if} up"
    ));
    b_ns.sh(&format!(
        "ip addr add {b_ip} dev {b_if} && ip link set {b_if} up"
    ));
}

/// Sends `count` UDP datagrams from namespace `from` to `dst` and returns how many a socket
/// bound to `dst` in namespace `to` received (waiting `wait` after the last one).
pub fn udp_through(
    from: &Ns,
    to: &Ns,
    dst: std::net::SocketAddrV4,
    count: u32,
    wait: std::time::Duration,
) -> u32 {
    use std::net::UdpSocket;
    // Sockets keep the namespace they were created in.
    let rx = to
        .netns()
        .run(|| UdpSocket::bind(dst))
        .unwrap()
        .unwrap_or_else(|e| panic!("bind {dst} in {}: {e}", to.name));
    let tx = from
        .netns()
        .run(|| UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .expect("bind sender socket");
    for i in 0..count {
        // An unreachable route makes send_to fail with EHOSTUNREACH/ENETUNREACH later on
        // (ICMP errors are reported on the socket); that only means "not delivered".
        let _ = tx.send_to(format!("ntkplane test {i}").as_bytes(), dst);
    }
    rx.set_read_timeout(Some(wait)).unwrap();
    let mut got = 0;
    let mut buf = [0u8; 128];
    while rx.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    got
}

/// One L2 broadcast domain: a bridge in a namespace of its own ("switch"), to which
/// namespaces are plugged with a veth each (like the docs' VM testbed on one segment).
pub struct Segment {
    pub switch: Ns,
    ports: std::cell::Cell<u32>,
}

impl Segment {
    pub fn new() -> Segment {
        let switch = Ns::new("sw");
        switch.sh("ip link add br0 type bridge && ip link set br0 up");
        Segment {
            switch,
            ports: std::cell::Cell::new(0),
        }
    }

    /// Plugs `ns` in with an interface `ifname` of the given MAC (up, no address).
    pub fn plug(&self, ns: &Ns, ifname: &str, mac: &str) {
        let n = self.ports.get();
        self.ports.set(n + 1);
        let port = format!("p{n}");
        must(Command::new("ip").args([
            "link",
            "add",
            &port,
            "netns",
            &self.switch.name,
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            &ns.name,
            "address",
            mac,
        ]));
        self.switch.sh(&format!(
            "ip link set {port} master br0 && ip link set {port} up"
        ));
        ns.sh(&format!("ip link set {ifname} up"));
    }
}

impl Default for Segment {
    fn default() -> Self {
        Self::new()
    }
}

/// A UDP socket bound in `ns`.
pub fn udp_socket(ns: &Ns, bind: &str) -> std::net::UdpSocket {
    let bind: std::net::SocketAddr = bind.parse().unwrap();
    let s = ns
        .netns()
        .run(|| std::net::UdpSocket::bind(bind))
        .unwrap()
        .unwrap_or_else(|e| panic!("bind {bind} in {}: {e}", ns.name));
    s.set_read_timeout(Some(std::time::Duration::from_millis(700)))
        .unwrap();
    s
}

/// The first datagram on `s` within its timeout: (source, payload).
pub fn recv(s: &std::net::UdpSocket) -> Option<(std::net::SocketAddr, String)> {
    let mut buf = [0u8; 1500];
    s.recv_from(&mut buf)
        .ok()
        .map(|(n, from)| (from, String::from_utf8_lossy(&buf[..n]).into_owned()))
}
