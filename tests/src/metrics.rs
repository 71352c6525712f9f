//! Reading a daemon's `/metrics` from inside its namespace, as a scraper would.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use crate::lab::Ns;

/// One HTTP exchange with `addr` inside `ns`: the status line and the body.
pub fn http(ns: &Ns, addr: &str, request: &[u8]) -> (String, String) {
    let mut s = ns
        .netns()
        .run(|| TcpStream::connect(addr))
        .unwrap()
        .unwrap_or_else(|e| panic!("connect {addr} in {}: {e}", ns.name));
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(request).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// `GET /metrics`: series (name with labels, as rendered) → value.
pub fn scrape(ns: &Ns, addr: &str) -> BTreeMap<String, f64> {
    let (status, body) = http(ns, addr, b"GET /metrics HTTP/1.1\r\nHost: ntkplane\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, v) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
            (
                series.to_string(),
                v.parse().unwrap_or_else(|_| panic!("{l}")),
            )
        })
        .collect()
}
