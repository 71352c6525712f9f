//! Control plane end to end: the real `ntkplane run` daemon on a large topology
//! (default 4.16.256.256, the 22-bit layout), given N neighbours and one ETP with a path to
//! every destination, through the client as an operator would. Measures, in one run
//! (issue 14's must-show is read off two runs of it, at 16 and 200 neighbours):
//!
//! 1. the N neighbours' arcs, added one by one (`add-identity-arc` + `add-qspn-arc`);
//! 2. one ETP → the full state in the kernel: `routes` (read back over rtnetlink) and
//!    `routes_per_second` (the ETP goes over the control socket as the client sends it: its
//!    JSON outgrows a command-line argument at a thousand destinations);
//! 3. the same routes written into a fresh namespace by a raw pipelined rtnetlink writer
//!    (`rtnetlink_routes_per_second`, the rate the kernel allows on this machine now; the
//!    median of `RAW_ROUNDS`);
//! 4. single arc commands at N neighbours with the full state installed: remove an arc, add
//!    it back (`add-identity-arc`, `add-qspn-arc`, `set-neighbour`), each command timed
//!    (`arc_command_ms_p50`, `arc_command_ms_p99`). Each changes one neighbour's table, a
//!    cost independent of N: what the latency grows by with N is what the daemon re-does;
//! 5. the daemon's peak RSS (`VmHWM`) with that state (`peak_rss_kib`);
//! 6. `migrate-phase-1` of the identity holding all N neighbours, until the new namespace
//!    the old identity moves into has a route to every destination in every neighbour's
//!    table (`migrate_phase_1_ms`).
//!
//! Usage: bench-daemon [--topology T] [--address A] [--neighbours N] [--arc-samples K]
//!                     [--window W] [--json PATH]
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use ntkplane::{
    addr::HCoord,
    daemon::proto::{DestPaths, Feed, KnownNeighbour, Request, Response},
    fwd::Path,
    kernel::rtnl::RouteEntry,
};
use ntkplane_integration::{
    daemon::Instance,
    lab::{require_root, Ns},
    rtnl_writer::{Route, Writer},
};
use ntkplane_lab::readback;
use serde_json::json;

/// Rounds of the raw rtnetlink writer (each into a fresh namespace).
const RAW_ROUNDS: usize = 3;

struct Args {
    topology: String,
    address: String,
    neighbours: u32,
    /// Remove + re-add cycles sampled at full state (4 timed commands each).
    arc_samples: usize,
    /// Requests in flight of the raw rtnetlink writer.
    window: usize,
    json: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        topology: "4.16.256.256".into(),
        address: "3.10.123.45".into(),
        neighbours: 16,
        arc_samples: 24,
        window: 1024,
        json: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let val = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--topology" => a.topology = val,
            "--address" => a.address = val,
            "--neighbours" => a.neighbours = val.parse().expect("--neighbours N"),
            "--arc-samples" => a.arc_samples = val.parse().expect("--arc-samples K"),
            "--window" => a.window = val.parse().expect("--window W"),
            "--json" => a.json = Some(val),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Dotted positions, highest level first, as low-level-first numbers.
fn low_first(dotted: &str, what: &str) -> Vec<u32> {
    dotted
        .split('.')
        .rev()
        .map(|p| p.parse().unwrap_or_else(|_| panic!("{what}: '{dotted}'")))
        .collect()
}

fn high_first(pos: &[u32]) -> String {
    let v: Vec<String> = pos.iter().rev().map(u32::to_string).collect();
    v.join(".")
}

/// The system namespace and the daemon, dropped daemon first (its quit removes what it
/// installed, identity namespaces included), then any identity namespace it left (a
/// daemon killed mid-run), then the system namespace.
struct Fixture {
    daemon: Instance,
    identity_namespaces: Vec<IdentityNs>,
    sys: Ns,
}

/// A namespace the daemon created: deleted on drop if the daemon's quit did not.
struct IdentityNs(String);

impl Drop for IdentityNs {
    fn drop(&mut self) {
        if std::path::Path::new("/run/netns").join(&self.0).exists() {
            if let Err(e) = ntkplane::netns::Netns::delete(&self.0) {
                eprintln!("cannot delete namespace {}: {e}", self.0);
            }
        }
    }
}

impl Fixture {
    fn start(topology: &str, address: &str) -> Fixture {
        let sys = Ns::new("dm");
        sys.sh("ip link add eth1 type veth peer name eth1p && ip link set eth1 up && ip link set eth1p up");
        let mut daemon = Instance::new(&sys);
        daemon.start_with(&[
            "--topology",
            topology,
            "--address",
            address,
            "--interface",
            "eth1=169.254.1.1",
        ]);
        Fixture {
            daemon,
            identity_namespaces: Vec::new(),
            sys,
        }
    }

    /// Makes sure a namespace the daemon created is deleted even if the daemon is not
    /// there to do it.
    fn adopt(&mut self, netns: &str) {
        self.identity_namespaces.push(IdentityNs(netns.to_string()));
    }
}

/// One neighbour: its MAC, link-local and address.
struct Neighbour {
    mac: String,
    linklocal: String,
    address: String,
}

fn neighbours(gsizes: &[u32], own: &[u32], n: u32) -> Vec<Neighbour> {
    // N neighbours in our level-0 g-node, positions other than ours.
    (0..gsizes[0])
        .filter(|p| *p != own[0])
        .take(n as usize)
        .enumerate()
        .map(|(i, pos)| {
            let mut addr = own.to_vec();
            addr[0] = pos;
            Neighbour {
                mac: format!("02:bb:00:00:{:02x}:{:02x}", i / 256, i % 256),
                linklocal: format!("169.254.{}.{}", 2 + i / 250, 1 + i % 250),
                address: high_first(&addr),
            }
        })
        .collect()
}

/// One ETP: every destination g-node visible from our address, two paths each (through
/// neighbours `k` and `k+1`), so every table has a route to everything.
fn feed(gsizes: &[u32], own: &[u32], nb: &[Neighbour], arcs: &[u32]) -> Feed {
    let first_hop = |i: usize| HCoord {
        lvl: 0,
        pos: low_first(&nb[i].address, "neighbour")[0],
    };
    let mut paths = Vec::new();
    for (lvl, g) in gsizes.iter().enumerate() {
        for pos in 0..*g {
            if pos == own[lvl] {
                continue;
            }
            let dest = HCoord { lvl, pos };
            let via = |k: usize| {
                let i = k % nb.len();
                let first = first_hop(i);
                Path {
                    arc: arcs[i],
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
    let neighbours = nb
        .iter()
        .zip(arcs)
        .map(|(n, a)| KnownNeighbour {
            arc: *a,
            address: n.address.clone(),
        })
        .collect();
    Feed { neighbours, paths }
}

/// A lower bound of the routes per table: one per destination g-node.
fn destinations(gsizes: &[u32]) -> u64 {
    gsizes.iter().map(|g| *g as u64 - 1).sum()
}

/// Routes in the namespace's own tables (not main, not local): ntk and the neighbours'.
fn table_routes(netns: &str) -> Vec<RouteEntry> {
    readback::routes_in(netns)
        .unwrap_or_else(|e| panic!("read back the routes of {netns}: {e}"))
        .into_iter()
        .filter(|r| r.table != 254 && r.table != 255)
        .collect()
}

/// Sends one request over the daemon's control socket, as the client does, and returns its
/// data; panics (with the daemon's error) when it fails. For the ETP, whose JSON outgrows
/// what one command-line argument may hold (128 KiB) at a thousand destinations.
fn request(d: &Instance, what: &str, req: &Request) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let sock = d.run_dir.join(format!("{}.sock", d.name));
    let mut s = std::os::unix::net::UnixStream::connect(&sock)
        .unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
    let mut line = serde_json::to_vec(req).expect("a request serializes");
    line.push(b'\n');
    s.write_all(&line)
        .unwrap_or_else(|e| panic!("send to {}: {e}", sock.display()));
    let mut answer = String::new();
    BufReader::new(s)
        .read_line(&mut answer)
        .unwrap_or_else(|e| panic!("answer from {}: {e}", sock.display()));
    let r: Response =
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("answer '{answer}': {e}"));
    assert!(r.ok, "{what}: {}", r.error.unwrap_or_default());
    r.data
}

/// Times one client command; panics (with the daemon's error) when it fails.
fn timed(d: &Instance, args: &[&str]) -> (serde_json::Value, Duration) {
    let t0 = Instant::now();
    let v = d.json(args);
    (v, t0.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of `v` (sorted here), in the unit of its values.
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn summary(v: &[f64]) -> serde_json::Value {
    json!({
        "samples": v.len(),
        "p50": percentile(v, 50.0),
        "p99": percentile(v, 99.0),
        "max": v.iter().cloned().fold(0.0, f64::max),
    })
}

/// The JSON report, rewritten after every phase with `"complete": false` until the end: a
/// run stopped part way (hundreds of neighbours take long before issue 14's rewrite) keeps
/// what its finished phases measured.
struct Report {
    path: Option<String>,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    fn new(path: Option<String>) -> Report {
        Report {
            path,
            fields: serde_json::Map::new(),
        }
    }

    /// Adds the fields of `v` (an object) and rewrites the file.
    fn add(&mut self, v: serde_json::Value) {
        if let serde_json::Value::Object(m) = v {
            self.fields.extend(m);
        }
        self.write(false);
    }

    fn write(&mut self, complete: bool) {
        let Some(p) = &self.path else { return };
        self.fields.insert("complete".into(), json!(complete));
        let text = serde_json::to_string_pretty(&self.fields).expect("JSON values serialize");
        std::fs::write(p, text).unwrap_or_else(|e| panic!("write {p}: {e}"));
    }
}

/// A phase done (runs at hundreds of neighbours take minutes).
fn progress(what: &str) {
    eprintln!("bench-daemon: {what}");
}

/// The 1-minute load average: latencies on a shared machine are read against it.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The load average at the start and the highest seen during the run (sampled at each
/// phase and each arc command cycle): a run whose maximum is far above the CPU count was
/// measured beside other work.
struct Load {
    before: f64,
    max: f64,
}

impl Load {
    fn start() -> Load {
        let l = loadavg();
        Load { before: l, max: l }
    }
    fn sample(&mut self) {
        self.max = self.max.max(loadavg());
    }
}

/// The daemon's `VmHWM` and `VmRSS`, KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
    };
    (kib("VmHWM:"), kib("VmRSS:"))
}

/// A fresh namespace that can take the routes of `src`'s tables: the same device names
/// (veths), the same IPv4 addresses (without their prefix routes) and the same main
/// table, so gateways resolve and preferred sources are local as in `src`. Returns it with
/// its device indices. Setup, not measured.
fn mirror(src: &str, window: usize) -> (Ns, BTreeMap<String, u32>) {
    let ns = Ns::new("rw");
    let links = readback::links_in(src).unwrap_or_else(|e| panic!("links of {src}: {e}"));
    // veth pairs (this kernel has no dummy driver); the peers carry names of their own.
    for (k, name) in links.keys().filter(|n| *n != "lo").enumerate() {
        ns.sh(&format!(
            "ip link add {name} type veth peer name rwpeer{k} && ip link set {name} up && ip link set rwpeer{k} up"
        ));
    }
    for a in readback::addresses_in(src).unwrap_or_else(|e| panic!("addresses of {src}: {e}")) {
        if a.dev != "lo" {
            ns.sh(&format!(
                "ip addr add {}/{} dev {} noprefixroute",
                a.local, a.prefix_len, a.dev
            ));
        }
    }
    let index: BTreeMap<String, u32> = readback::links_in(&ns.name)
        .unwrap_or_else(|e| panic!("links of {}: {e}", ns.name))
        .into_iter()
        .map(|(n, l)| (n, l.index))
        .collect();
    let main: Vec<Route> = readback::routes_in(src)
        .unwrap_or_else(|e| panic!("routes of {src}: {e}"))
        .iter()
        .filter(|r| r.table == 254 && r.src.is_none())
        .map(|r| Route::from_entry(r, &index).unwrap_or_else(|e| panic!("{e:#}")))
        .collect();
    writer_in(&ns)
        .create(&main, window)
        .unwrap_or_else(|e| panic!("copy the main table into {}: {e:#}", ns.name));
    (ns, index)
}

fn writer_in(ns: &Ns) -> Writer {
    ns.netns()
        .run(Writer::open)
        .unwrap_or_else(|e| panic!("enter {}: {e}", ns.name))
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Writes `routes` (read back from the daemon's namespace) into a fresh mirror of it with
/// the raw pipelined writer; checks they all arrived. The writing time only.
fn raw_rtnetlink(src: &str, routes: &[RouteEntry], window: usize) -> Duration {
    let (ns, index) = mirror(src, window);
    let requests: Vec<Route> = routes
        .iter()
        .map(|r| Route::from_entry(r, &index).unwrap_or_else(|e| panic!("{e:#}")))
        .collect();
    let mut w = writer_in(&ns);
    let t0 = Instant::now();
    w.create(&requests, window)
        .unwrap_or_else(|e| panic!("raw rtnetlink writer into {}: {e:#}", ns.name));
    let t = t0.elapsed();
    let written = table_routes(&ns.name).len();
    assert_eq!(
        written,
        routes.len(),
        "the raw writer's namespace holds {written} routes, {} were written",
        routes.len()
    );
    t
}

/// Reads `netns` back until `tables` of its tables have a route to every destination (one
/// per neighbour), for up to `within`. Returns when the read that found it complete began
/// (reads start at once and every 20 ms: when the daemon answers with the kernel done, the
/// first one does) and the routes it found; panics with the counts after `within`.
fn wait_complete(netns: &str, tables: usize, per_table: u64, within: Duration) -> (Instant, usize) {
    let t0 = Instant::now();
    loop {
        let read_at = Instant::now();
        let routes = table_routes(netns);
        let mut per: BTreeMap<u32, u64> = BTreeMap::new();
        for r in &routes {
            *per.entry(r.table).or_default() += 1;
        }
        let full = per.values().filter(|c| **c >= per_table).count();
        if full >= tables {
            return (read_at, routes.len());
        }
        assert!(
            t0.elapsed() < within,
            "{netns}: {full} tables with a route to each of {per_table} destinations after \
             {within:?}, {tables} expected ({} routes)",
            routes.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    require_root();
    let a = args();
    let gsizes = low_first(&a.topology, "topology");
    let own = low_first(&a.address, "address");
    let n = a.neighbours;
    assert!(
        n >= 1 && n < gsizes[0],
        "neighbours must fit in the level-0 g-node ({} positions)",
        gsizes[0]
    );
    assert!(
        gsizes.len() >= 2,
        "the migration moves the node to another level-1 g-node: two levels at least"
    );
    let mut load = Load::start();
    let mut report = Report::new(a.json.clone());
    report.add(json!({
        "topology": a.topology, "neighbours": n,
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "loadavg_1m_before": load.before,
        },
    }));
    let mut fx = Fixture::start(&a.topology, &a.address);
    let pid = fx.daemon.child.as_ref().expect("daemon started").id();
    let d = &fx.daemon;
    let nb = neighbours(&gsizes, &own, n);

    // 1. The arcs, one neighbour at a time (the latency grows with the arcs already there).
    let t0 = Instant::now();
    let mut arcs = Vec::new();
    let mut setup_ms = Vec::new();
    for x in &nb {
        let (v, t1) = timed(d, &["add-identity-arc", "0", "eth1", &x.mac, &x.linklocal]);
        let arc = v["arc"].as_u64().expect("add-identity-arc answers the arc") as u32;
        let (_, t2) = timed(d, &["add-qspn-arc", "0", "eth1", &x.mac]);
        arcs.push(arc);
        setup_ms.extend([ms(t1), ms(t2)]);
    }
    let arcs_done = t0.elapsed();
    load.sample();
    progress(&format!(
        "{} arc commands in {:.1} s",
        2 * n,
        arcs_done.as_secs_f64()
    ));
    report.add(json!({
        "arcs_seconds": arcs_done.as_secs_f64(), "arc_setup_ms": summary(&setup_ms),
    }));

    // 2. One ETP → the full state.
    let etp = Request::Etp {
        identity: 0,
        feed: feed(&gsizes, &own, &nb, &arcs),
    };
    let t0 = Instant::now();
    request(d, "etp", &etp);
    let etp_time = t0.elapsed();
    let routes = table_routes(&fx.sys.name);
    let per_table = destinations(&gsizes);
    assert!(
        routes.len() as u64 >= (n as u64 + 1) * per_table,
        "the daemon did not install a route to every destination in every table: {} routes",
        routes.len()
    );
    let routes_per_second = routes.len() as f64 / etp_time.as_secs_f64();
    load.sample();
    progress(&format!(
        "ETP → {} routes in {:.1} s",
        routes.len(),
        etp_time.as_secs_f64()
    ));
    report.add(json!({
        "routes_after_etp": routes.len(), "etp_seconds": etp_time.as_secs_f64(),
        "routes_per_second": routes_per_second,
    }));

    // 3. The kernel's own rate for the same routes, now, on this machine: the median of a
    // few rounds, each into a fresh namespace, so that one round caught by another
    // process's burst on a shared machine does not set the baseline.
    let mut raw_rounds: Vec<f64> = (0..RAW_ROUNDS)
        .map(|_| routes.len() as f64 / raw_rtnetlink(&fx.sys.name, &routes, a.window).as_secs_f64())
        .collect();
    let rtnetlink_routes_per_second = percentile(&raw_rounds, 50.0);
    raw_rounds.sort_by(|a, b| a.partial_cmp(b).unwrap());
    load.sample();
    drop(routes);
    progress(&format!(
        "raw pipelined rtnetlink: {:.0} routes/s (median of {raw_rounds:.0?})",
        rtnetlink_routes_per_second
    ));
    report.add(json!({
        "rtnetlink_routes_per_second": rtnetlink_routes_per_second,
        "rtnetlink_rounds_routes_per_second": raw_rounds,
        "rtnetlink_window": a.window,
        // The daemon's memory with the full state, before the arc commands change it.
        "peak_rss_kib_after_etp": memory_kib(pid).0,
    }));

    // 4. Arc commands at N neighbours. Arcs at even positions only, so no destination
    // loses both its paths (they go through neighbours k and k+1).
    let cycle: Vec<usize> = (0..nb.len()).step_by(2).collect();
    let mut per_command: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for s in 0..a.arc_samples {
        let i = cycle[s % cycle.len()];
        let x = &nb[i];
        let arc = arcs[i].to_string();
        let (_, t) = timed(d, &["remove-arc", "0", &arc]);
        per_command.entry("remove-arc").or_default().push(ms(t));
        let (v, t) = timed(d, &["add-identity-arc", "0", "eth1", &x.mac, &x.linklocal]);
        per_command
            .entry("add-identity-arc")
            .or_default()
            .push(ms(t));
        arcs[i] = v["arc"].as_u64().expect("add-identity-arc answers the arc") as u32;
        let arc = arcs[i].to_string();
        let (_, t) = timed(d, &["add-qspn-arc", "0", "eth1", &x.mac]);
        per_command.entry("add-qspn-arc").or_default().push(ms(t));
        let (_, t) = timed(d, &["set-neighbour", "0", &arc, &x.address]);
        per_command.entry("set-neighbour").or_default().push(ms(t));
        load.sample();
        report.add(json!({
            "arc_commands": per_command.iter().map(|(k, v)| (k.to_string(), summary(v))).collect::<BTreeMap<_, _>>(),
        }));
    }
    let all: Vec<f64> = per_command.values().flatten().cloned().collect();
    let routes_now = table_routes(&fx.sys.name).len();
    assert!(
        routes_now as u64 >= (n as u64 + 1) * per_table,
        "after the arc commands a table lacks a destination: {routes_now} routes"
    );

    progress(&format!(
        "{} arc commands at full state: p50 {:.1} ms, p99 {:.1} ms",
        all.len(),
        percentile(&all, 50.0),
        percentile(&all, 99.0)
    ));

    // 5. Memory with the full state of N neighbours.
    let (hwm, rss) = memory_kib(pid);

    // 6. migrate-phase-1: the node moves to the next level-1 g-node; the old identity, with
    // all N arcs, moves into a new namespace and keeps a table per neighbour there.
    let mut host = own.clone();
    host[1] = (own[1] + 1) % gsizes[1];
    let host_addr = high_first(&host[1..]);
    let elderships = high_first(&vec![0; host.len() - 1]);
    let (pos1, pos2, conn) = (gsizes[0] + 1, own[0], gsizes[0] + 2);
    let op = "262359";
    d.ok(&[
        "prepare-migrate-phase-1",
        "0",
        "0",
        "1",
        &host_addr,
        &elderships,
        &pos1.to_string(),
        "1",
        &pos2.to_string(),
        "1",
        &conn.to_string(),
        "1",
        op,
        "null",
        "--pseudo",
        "eth1=02:cc:00:00:00:01@169.254.250.1",
    ]);
    let t0 = Instant::now();
    let v = d.json(&["migrate-phase-1", "0", op]);
    let answered = t0.elapsed();
    let new_identity = v["identity"].clone();
    // The first migration of a fresh daemon moves the old identity into `<instance>-migr01`
    // (checked against show-identities below, after the clock stopped).
    let moved_to = d.identity_netns("migr01");
    fx.adopt(&moved_to);
    let (complete_at, migrated_routes) =
        wait_complete(&moved_to, n as usize, per_table, Duration::from_secs(120));
    let migrate = complete_at - t0;
    let ids = fx.daemon.json(&["show-identities"]);
    assert!(
        ids.as_array().is_some_and(|rows| rows
            .iter()
            .any(|r| r["index"] == 0 && r["netns"] == moved_to)),
        "identity 0 did not move into {moved_to}: {ids}"
    );
    let (hwm_after, _) = memory_kib(pid);
    load.sample();

    println!(
        "daemon on {} with {n} neighbours: {} routes in ntk tables; {} arcs in {:.2} s; \
         ETP → full state in {:.2} s ({:.0} routes/s; raw pipelined rtnetlink {:.0} routes/s, \
         ratio {:.2}); arc command p50 {:.1} ms p99 {:.1} ms ({} samples); peak RSS {:.1} MiB \
         (now {:.1} MiB); migrate-phase-1 {:.0} ms ({} routes in {moved_to}); peak RSS after \
         {:.1} MiB",
        a.topology,
        routes_now,
        2 * n,
        arcs_done.as_secs_f64(),
        etp_time.as_secs_f64(),
        routes_per_second,
        rtnetlink_routes_per_second,
        routes_per_second / rtnetlink_routes_per_second,
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        all.len(),
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0,
        ms(migrate),
        migrated_routes,
        hwm_after as f64 / 1024.0,
    );
    report.add(json!({
        "routes": routes_now,
        "arc_command_ms_p50": percentile(&all, 50.0),
        "arc_command_ms_p99": percentile(&all, 99.0),
        "peak_rss_kib": hwm, "rss_kib": rss,
        "migrate_phase_1_ms": ms(migrate),
        "migrate_phase_1_answer_ms": ms(answered),
        "migrate_new_identity": new_identity,
        "migrate_namespace_routes": migrated_routes,
        "peak_rss_kib_after_migrate": hwm_after,
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "loadavg_1m_before": load.before, "loadavg_1m_max": load.max,
        },
    }));
    report.write(true);
}
