//! Control plane end to end: the real `ntkplane run` daemon on a large topology
//! (default 4.16.256.256, the 22-bit layout), given N neighbours and one ETP with a path to
//! every destination, through the client as an operator would. Reports the time from the
//! ETP to the full state in the kernel, the routes installed (read back over rtnetlink), and
//! the daemon's peak RSS (`VmHWM`).
//!
//! Usage: bench-daemon [--topology T] [--address A] [--neighbours N] [--json PATH]
use std::time::Instant;

use ntkplane::{
    addr::HCoord,
    daemon::proto::{DestPaths, Feed, KnownNeighbour},
    fwd::Path,
};
use ntkplane_integration::{
    daemon::Instance,
    lab::{require_root, Ns},
};
use serde_json::json;

fn main() {
    require_root();
    let (mut topology, mut address, mut n, mut json_out) = (
        "4.16.256.256".to_string(),
        "3.10.123.45".to_string(),
        16u32,
        None,
    );
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let val = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--topology" => topology = val,
            "--address" => address = val,
            "--neighbours" => n = val.parse().expect("--neighbours N"),
            "--json" => json_out = Some(val),
            other => panic!("unknown argument {other}"),
        }
    }
    let gsizes: Vec<u32> = topology
        .split('.')
        .rev()
        .map(|g| g.parse().expect("topology"))
        .collect();
    let own: Vec<u32> = address
        .split('.')
        .rev()
        .map(|p| p.parse().expect("address"))
        .collect();
    assert!(
        n >= 1 && n < gsizes[0],
        "neighbours must fit in the level-0 g-node"
    );

    let ns = Ns::new("dm");
    ns.sh(
        "ip link add eth1 type veth peer name eth1p && ip link set eth1 up && ip link set eth1p up",
    );
    let mut d = Instance::new(&ns);
    d.start_with(&[
        "--topology",
        &topology,
        "--address",
        &address,
        "--interface",
        "eth1=169.254.1.1",
    ]);
    let pid = d.child.as_ref().unwrap().id();

    // N neighbours in our level-0 g-node, positions other than ours.
    let positions: Vec<u32> = (0..gsizes[0])
        .filter(|p| *p != own[0])
        .take(n as usize)
        .collect();
    let t0 = Instant::now();
    let mut neighbours = Vec::new();
    for (i, pos) in positions.iter().enumerate() {
        let mac = format!("02:bb:00:00:{:02x}:{:02x}", i / 256, i % 256);
        let ll = format!("169.254.2.{}", i + 1);
        d.ok(&["add-identity-arc", "0", "eth1", &mac, &ll]);
        d.ok(&["add-qspn-arc", "0", "eth1", &mac]);
        let mut addr: Vec<u32> = own.clone();
        addr[0] = *pos;
        let addr: Vec<String> = addr.iter().rev().map(|p| p.to_string()).collect();
        neighbours.push(KnownNeighbour {
            arc: i as u32,
            address: addr.join("."),
        });
    }
    let arcs_done = t0.elapsed();

    // One ETP: every destination g-node visible from our address, two paths each (through
    // different neighbours), so every table has a route to everything.
    let mut paths = Vec::new();
    for (lvl, g) in gsizes.iter().enumerate() {
        for pos in 0..*g {
            if pos == own[lvl] {
                continue;
            }
            let dest = HCoord { lvl, pos };
            let via = |k: usize| {
                let arc = (k % positions.len()) as u32;
                let first = HCoord {
                    lvl: 0,
                    pos: positions[arc as usize],
                };
                Path {
                    arc,
                    hops: if first == dest {
                        vec![dest]
                    } else {
                        vec![first, dest]
                    },
                    cost: 10 + k as u64 % 7,
                }
            };
            let k = lvl * 1000 + pos as usize;
            paths.push(DestPaths {
                dest,
                paths: vec![via(k), via(k + 1)],
            });
        }
    }
    let feed = Feed { neighbours, paths };
    let t1 = Instant::now();
    d.ok(&["etp", "0", &serde_json::to_string(&feed).unwrap()]);
    let etp = t1.elapsed();

    let in_tables = ntkplane_lab::readback::routes_in(&ns.name)
        .unwrap()
        .iter()
        .filter(|r| r.table != 254 && r.table != 255)
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (hwm, rss) = (kib("VmHWM:"), kib("VmRSS:"));
    println!(
        "daemon on {topology} with {n} neighbours: {in_tables} routes in ntk tables; \
         {} arcs in {:.2} s; ETP → full state in {:.2} s ({:.0} routes/s); peak RSS {:.1} MiB (now {:.1} MiB)",
        2 * n,
        arcs_done.as_secs_f64(),
        etp.as_secs_f64(),
        in_tables as f64 / etp.as_secs_f64(),
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    assert!(
        in_tables as u64 >= (n as u64 + 1) * paths_per_table(&gsizes),
        "the daemon did not install a route to every destination in every table"
    );
    if let Some(p) = json_out {
        let v = json!({
            "topology": topology, "neighbours": n, "routes": in_tables,
            "arcs_seconds": arcs_done.as_secs_f64(), "etp_seconds": etp.as_secs_f64(),
            "routes_per_second": in_tables as f64 / etp.as_secs_f64(),
            "peak_rss_kib": hwm, "rss_kib": rss,
        });
        std::fs::write(p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
}

/// A lower bound of the routes per table: one per destination g-node.
fn paths_per_table(gsizes: &[u32]) -> u64 {
    gsizes.iter().map(|g| *g as u64 - 1).sum()
}
