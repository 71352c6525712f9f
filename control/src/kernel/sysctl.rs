//! The sysctls the spec sets (forwarding-state.md §2.1/§2.2), written (and read back) in
//! the current thread's namespace (`/proc/sys/net` follows the namespace of the task that opens it).
use std::{fs, io};

/// Namespace-wide settings: forwarding on, reverse-path filter off.
pub const GLOBAL: &[(&str, &str)] = &[
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv4/conf/all/rp_filter", "0"),
];

/// Per managed interface: no reverse-path filter; ARP answers only for addresses of the
/// interface itself and uses the best local source (the node has many /32 addresses).
pub fn per_interface(dev: &str) -> [(String, &'static str); 3] {
    [
        (format!("net/ipv4/conf/{dev}/rp_filter"), "0"),
        (format!("net/ipv4/conf/{dev}/arp_ignore"), "1"),
        (format!("net/ipv4/conf/{dev}/arp_announce"), "2"),
    ]
}

/// The current value of `key` (`net/ipv4/ip_forward`), trimmed.
pub fn read(key: &str) -> io::Result<String> {
    Ok(fs::read_to_string(format!("/proc/sys/{key}"))?
        .trim()
        .to_string())
}

/// Writes `value` if it differs; returns whether it wrote.
pub fn ensure(key: &str, value: &str) -> io::Result<bool> {
    let path = format!("/proc/sys/{key}");
    let cur = fs::read_to_string(&path)?;
    if cur.trim() == value {
        return Ok(false);
    }
    fs::write(&path, value)?;
    Ok(true)
}
