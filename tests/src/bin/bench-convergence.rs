//! Convergence benchmark: lines and grids of systems (one namespace each, veth links), one
//! routing daemon per system, ntkplane with its own protocols and babeld as the anchor, in
//! the same run and on the same pairs.
//!
//! For each (shape, system): the time from the first daemon's start until every node has a
//! route to every other node (for ntkplane: to every destination g-node that exists) and at
//! least 95 % of the sampled pairs answer an ICMP echo within one round; then, in grids, a
//! link in the middle is set down at one end and the time until the pairs whose shortest
//! path crossed it answer again is measured; the link comes back, the routes return to it,
//! and the same link is then made to drop everything silently (nft netdev ingress drop at
//! both ends, carrier up) for the liveness timers' time. Every wait is bounded; what did not
//! happen is `null` with a reason. See BENCHMARKS.md, "Convergence".
//!
//! Usage: bench-convergence [--shapes line:4,grid:3,…] [--systems ntkplane,babeld] [--quick]
//!                          [--timeout S] [--pairs N] [--ping-timeout-ms MS]
//!                          [--babel-hello S] [--announce-ms MS] [--probe-ms MS]
//!                          [--dead-after-ms MS] [--ntkplane-args "--opt val …"]
//!                          [--json PATH] [--svg PATH]
use std::{
    fmt::Write as _,
    panic::{catch_unwind, AssertUnwindSafe},
    process::Command,
    time::{Duration, Instant},
};

use ntkplane_integration::{
    convergence::{
        plot_seconds, sample_pairs, Babeld, Cut, DaemonOpts, Daemons, Lab, Shape, System, DELIVERY,
        TOPOLOGY,
    },
    daemon,
    lab::require_root,
    svg::Series,
};
use serde_json::{json, Value};

struct Args {
    shapes: Vec<Shape>,
    systems: Vec<System>,
    timeout: Duration,
    pairs: usize,
    ping_timeout: Duration,
    daemon: DaemonOpts,
    json: Option<String>,
    svg: Option<String>,
}

fn usage(e: &str) -> ! {
    eprintln!("bench-convergence: {e}");
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        shapes: "line:4,line:9,line:16,grid:3,grid:5,grid:7"
            .split(',')
            .map(|s| Shape::parse(s).unwrap())
            .collect(),
        systems: vec![System::Ntkplane, System::Babeld],
        timeout: Duration::from_secs(60),
        pairs: 30,
        ping_timeout: Duration::from_millis(500),
        // Comparable timers: a hello (announce, probe) every second, a neighbour given up
        // after about three missed ones (babeld's wired links: 2 of the last 3 hellos).
        daemon: DaemonOpts {
            babel_hello: 1,
            announce_ms: 1000,
            probe_ms: 1000,
            dead_after_ms: 3000,
            ntkplane_extra: Vec::new(),
        },
        json: None,
        svg: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--quick" {
            a.shapes = vec![Shape::Line(4), Shape::Grid(3)];
            continue;
        }
        let v = it
            .next()
            .unwrap_or_else(|| usage(&format!("{k} needs a value")));
        let num = |v: &str| -> u64 {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("{k}: {v} is not a number")))
        };
        match k.as_str() {
            "--shapes" => {
                a.shapes = v
                    .split(',')
                    .map(|s| Shape::parse(s).unwrap_or_else(|e| usage(&e)))
                    .collect()
            }
            "--systems" => {
                a.systems = v
                    .split(',')
                    .map(|s| System::parse(s).unwrap_or_else(|e| usage(&e)))
                    .collect()
            }
            "--timeout" => a.timeout = Duration::from_secs(num(&v)),
            "--pairs" => a.pairs = num(&v).max(1) as usize,
            "--ping-timeout-ms" => a.ping_timeout = Duration::from_millis(num(&v)),
            "--babel-hello" => a.daemon.babel_hello = num(&v) as u32,
            "--announce-ms" => a.daemon.announce_ms = num(&v) as u32,
            "--probe-ms" => a.daemon.probe_ms = num(&v) as u32,
            "--dead-after-ms" => a.daemon.dead_after_ms = num(&v) as u32,
            "--ntkplane-args" => {
                a.daemon.ntkplane_extra = v.split_whitespace().map(String::from).collect()
            }
            "--json" => a.json = Some(v),
            "--svg" => a.svg = Some(v),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    a
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench-convergence] {}", msg.as_ref());
}

/// One measured (system, shape).
struct Row {
    system: System,
    shape: Shape,
    links: usize,
    pairs: usize,
    start_spread_s: Option<f64>,
    routes_s: Option<f64>,
    converged_s: Option<f64>,
    reroute_s: Option<f64>,
    silent_reroute_s: Option<f64>,
    /// The link cut and the pairs measured (grids, once converged).
    cut: Option<Cut>,
    reasons: Vec<String>,
    protocol: Value,
}

impl Row {
    fn json(&self) -> Value {
        let r = |x: Option<f64>| x.map(|s| (s * 1000.0).round() / 1000.0);
        json!({
            "system": self.system.name(),
            "shape": self.shape.kind(),
            "nodes": self.shape.nodes(),
            "converged_s": r(self.converged_s),
            "reroute_s": r(self.reroute_s),
            "silent_reroute_s": r(self.silent_reroute_s),
            "routes_s": r(self.routes_s),
            "start_spread_s": r(self.start_spread_s),
            "links": self.links,
            "pairs": self.pairs,
            "cut": self.cut.as_ref().map(|c| json!({
                "link": [self.shape.address(c.link.0), self.shape.address(c.link.1)],
                "pairs": c.pairs.iter()
                    .map(|(a, b)| format!("{}→{}", self.shape.address(*a), self.shape.address(*b)))
                    .collect::<Vec<_>>(),
            })),
            "reason": (!self.reasons.is_empty()).then(|| self.reasons.join("; ")),
            "protocol": self.protocol,
        })
    }
}

/// Whether `ok` answers out of `n` pairs is delivery.
fn delivered(ok: usize, n: usize) -> bool {
    ok as f64 >= DELIVERY * n as f64
}

/// Ping rounds over `pairs` from `since` until delivery (its round's start, in seconds
/// since `since`) or until `timeout` has passed.
fn until_delivery(
    lab: &Lab,
    daemons: &mut Daemons,
    pairs: &[(usize, usize)],
    since: Instant,
    a: &Args,
) -> Result<f64, String> {
    let mut last = 0;
    loop {
        let t = Instant::now();
        if t - since > a.timeout {
            return Err(format!(
                "not within {} s ({last}/{} pairs answered in the last round)",
                a.timeout.as_secs(),
                pairs.len()
            ));
        }
        if let Some(d) = daemons.dead() {
            return Err(d);
        }
        last = lab.ping_round(pairs, a.ping_timeout);
        if delivered(last, pairs.len()) {
            return Ok((t - since).as_secs_f64());
        }
        // A round that failed at once (no route: the send fails) must not spin.
        if t.elapsed() < Duration::from_millis(50) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits until some of `pairs` are sent over `link` (by their source) and those answer;
/// returns them.
fn until_link_used(
    lab: &Lab,
    system: System,
    daemons: &mut Daemons,
    link: (usize, usize),
    pairs: &[(usize, usize)],
    a: &Args,
) -> Result<Vec<(usize, usize)>, String> {
    let t0 = Instant::now();
    loop {
        let over = lab.crossing(system, link, pairs)?;
        if !over.is_empty() && delivered(lab.ping_round(&over, a.ping_timeout), over.len()) {
            return Ok(over);
        }
        if let Some(d) = daemons.dead() {
            return Err(d);
        }
        if t0.elapsed() > a.timeout {
            return Err(format!(
                "within {} s, {}",
                a.timeout.as_secs(),
                if over.is_empty() {
                    "none of its pairs was sent over it"
                } else {
                    "the pairs sent over it did not answer"
                }
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Convergence, then (grids) the two reroutes; fills `row`.
fn measure(lab: &Lab, daemons: &mut Daemons, t0: Instant, a: &Args, row: &mut Row) {
    let system = row.system;
    let n = lab.addrs.len();
    let pairs = sample_pairs(n, a.pairs);
    row.pairs = pairs.len();
    let mut last = String::from("nothing checked yet");
    let mut said = Instant::now();
    // The bound counts from when the last daemon was spawned; the time reported counts
    // from `t0`, just before the first one was.
    let started = Instant::now();
    loop {
        let t = Instant::now();
        if t - started > a.timeout {
            row.reasons.push(format!(
                "not converged within {} s after all daemons were spawned ({:.0} s after the \
                 first start): {last}",
                a.timeout.as_secs(),
                (t - t0).as_secs_f64()
            ));
            return;
        }
        if let Some(d) = daemons.dead() {
            row.reasons.push(d);
            return;
        }
        if said.elapsed() > Duration::from_secs(5) {
            log(format!("  {:.0} s: {last}", (t - t0).as_secs_f64()));
            said = Instant::now();
        }
        let (missing, first) = match lab.missing_routes(system) {
            Ok(m) => m,
            Err(e) => {
                row.reasons.push(format!("reading routes: {e}"));
                return;
            }
        };
        if missing > 0 {
            last = format!("{missing} routes missing ({first})");
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        row.routes_s.get_or_insert((t - t0).as_secs_f64());
        let ok = lab.ping_round(&pairs, a.ping_timeout);
        if delivered(ok, pairs.len()) {
            row.converged_s = Some((t - t0).as_secs_f64());
            break;
        }
        last = format!("all routes there, {ok}/{} pairs answered", pairs.len());
        if t.elapsed() < Duration::from_millis(50) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    log(format!(
        "  converged in {:.2} s (routes complete at {:.2} s)",
        row.converged_s.unwrap(),
        row.routes_s.unwrap()
    ));

    if matches!(lab.shape, Shape::Line(_)) {
        row.reasons
            .push("a line has no other path: no reroute measured".into());
        return;
    }
    let cut = match lab.choose_cut(system, a.pairs) {
        Ok(c) => c,
        Err(e) => {
            row.reasons.push(format!("no link to cut: {e}"));
            return;
        }
    };
    row.cut = Some(cut.clone());
    let (x, y) = cut.link;
    let name = format!("{}–{}", lab.shape.address(x), lab.shape.address(y));
    log(format!(
        "  cutting {name}: {} pairs sent over it",
        cut.pairs.len()
    ));
    let over = match until_link_used(lab, system, daemons, cut.link, &cut.pairs, a) {
        Ok(o) => o,
        Err(e) => {
            row.reasons.push(format!("before cutting {name}: {e}"));
            return;
        }
    };
    lab.set_link(x, y, false);
    let t = Instant::now();
    match until_delivery(lab, daemons, &over, t, a) {
        Ok(s) => {
            log(format!("  link {name} down: rerouted in {s:.2} s"));
            row.reroute_s = Some(s);
        }
        Err(e) => row
            .reasons
            .push(format!("reroute around {name} (down): {e}")),
    }
    lab.set_link(x, y, true);
    let back = Instant::now();
    // The routes come back to the link (some of the same pairs cross it again) before it
    // goes silent; otherwise the silence would cut nothing.
    let over = match until_link_used(lab, system, daemons, cut.link, &cut.pairs, a) {
        Ok(o) => o,
        Err(e) => {
            row.reasons
                .push(format!("after bringing {name} back up: {e}"));
            return;
        }
    };
    log(format!(
        "  link {name} up again: crossed again after {:.2} s",
        back.elapsed().as_secs_f64()
    ));
    lab.silence_link(x, y);
    let t = Instant::now();
    match until_delivery(lab, daemons, &over, t, a) {
        // Nothing can have noticed a silent link before the first round: its answers did
        // not cross it, and the number would measure nothing.
        Ok(s) if s < 0.01 => row.reasons.push(format!(
            "silent drop on {name}: the pairs answered at once, so their traffic did not \
             cross it (not measured)"
        )),
        Ok(s) => {
            log(format!("  link {name} silent: rerouted in {s:.2} s"));
            row.silent_reroute_s = Some(s);
        }
        Err(e) => row
            .reasons
            .push(format!("reroute around {name} (silent drop): {e}")),
    }
}

/// Builds the lab, starts the daemons and measures; everything is dropped (daemons first)
/// before it returns, also when it panics.
fn run(system: System, shape: Shape, a: &Args, row: &mut Row) {
    let lab = Lab::build(shape, system);
    row.links = lab.links.len();
    let t0 = Instant::now();
    let mut daemons = Daemons::start(system, &lab, &a.daemon);
    row.start_spread_s = Some(t0.elapsed().as_secs_f64());
    measure(&lab, &mut daemons, t0, a, row);
    row.protocol = daemons.protocol_totals();
    drop(daemons);
}

/// Why this ntkplane cannot take part, if it cannot: its daemon has no protocol mode (the
/// neighbour discovery and QSPN are not merged) or is not built.
fn ntkplane_unfit() -> Option<String> {
    // Beside this binary, where `daemon::bin` looks (asked first: it panics when missing).
    let beside = std::env::current_exe().ok()?.parent()?.join("ntkplane");
    if !beside.exists() {
        return Some(format!(
            "{} is not built (cargo build --release -p ntkplane --bin ntkplane)",
            beside.display()
        ));
    }
    let bin = daemon::bin();
    let out = match Command::new(&bin).args(["run", "--help"]).output() {
        Ok(o) => o,
        Err(e) => return Some(format!("{}: {e}", bin.display())),
    };
    let help = String::from_utf8_lossy(&out.stdout);
    (!help.contains("--announce-ms")).then(|| {
        format!(
            "{} has no `run --paths protocol` (--announce-ms): its protocols are not there",
            bin.display()
        )
    })
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s += &String::from_utf8_lossy(&o.stderr);
            s.trim().to_string()
        })
        .unwrap_or_default()
}

fn secs(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |s| format!("{s:.2}"))
}

fn main() {
    require_root();
    let a = args();
    let unfit = if a.systems.contains(&System::Ntkplane) {
        ntkplane_unfit()
    } else {
        None
    };
    if let Some(u) = &unfit {
        log(format!("ntkplane rows will be null: {u}"));
    }
    let mut rows: Vec<Row> = Vec::new();
    for &shape in &a.shapes {
        // Both systems on one shape next to each other: the machine's state drifts less
        // between them than across the whole run.
        for &system in &a.systems {
            let mut row = Row {
                system,
                shape,
                links: shape.links().len(),
                pairs: 0,
                start_spread_s: None,
                routes_s: None,
                converged_s: None,
                reroute_s: None,
                silent_reroute_s: None,
                cut: None,
                reasons: Vec::new(),
                protocol: Value::Null,
            };
            if let (System::Ntkplane, Some(u)) = (system, &unfit) {
                row.reasons.push(u.clone());
                rows.push(row);
                continue;
            }
            log(format!(
                "{} {} ({} nodes, {} links)",
                system.name(),
                shape.label(),
                shape.nodes(),
                row.links
            ));
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| run(system, shape, &a, &mut row))) {
                row.reasons.push(format!("failed: {}", panic_text(&*p)));
            }
            if !row.reasons.is_empty() {
                log(format!("  {}", row.reasons.join("; ")));
            }
            rows.push(row);
        }
    }

    let json_rows: Vec<Value> = rows.iter().map(Row::json).collect();
    let mut md = String::from(
        "| system | shape | nodes | converged s | reroute s | silent reroute s | note |\n|---|---|---:|---:|---:|---:|---|\n",
    );
    for r in &json_rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r["system"].as_str().unwrap(),
            r["shape"].as_str().unwrap(),
            r["nodes"],
            secs(&r["converged_s"]),
            secs(&r["reroute_s"]),
            secs(&r["silent_reroute_s"]),
            r["reason"].as_str().unwrap_or("")
        );
    }
    print!("{md}");

    if let Some(p) = &a.json {
        let mut ntkplane_args: Vec<String> = [
            "--paths",
            "protocol",
            "--qspn-arcs",
            "auto",
            "--announce-ms",
            &a.daemon.announce_ms.to_string(),
            "--probe-ms",
            &a.daemon.probe_ms.to_string(),
            "--dead-after-ms",
            &a.daemon.dead_after_ms.to_string(),
        ]
        .map(String::from)
        .to_vec();
        ntkplane_args.extend(a.daemon.ntkplane_extra.iter().cloned());
        let v = json!({
            "schema": 1,
            "machine": {
                "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
                "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
                "date": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
                "babeld": if a.systems.contains(&System::Babeld) { json!(sh("babeld -V")) } else { Value::Null },
            },
            "settings": {
                "topology": TOPOLOGY,
                "timeout_s": a.timeout.as_secs(),
                "pairs": a.pairs,
                "delivery": DELIVERY,
                "ping_timeout_ms": a.ping_timeout.as_millis() as u64,
                "babeld_args": Babeld::args(&a.daemon),
                "ntkplane_args": ntkplane_args,
            },
            "rows": json_rows,
        });
        std::fs::write(p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
    if let Some(p) = &a.svg {
        std::fs::write(p, plot(&json_rows)).unwrap();
    }
}

/// Seconds against nodes: convergence for lines (dashed) and grids, both reroutes (grids).
fn plot(rows: &[Value]) -> String {
    let metrics = [
        ("converged_s", "line", "converged (line)", true),
        ("converged_s", "grid", "converged (grid)", false),
        ("reroute_s", "grid", "reroute, link down", false),
        ("silent_reroute_s", "grid", "reroute, silent", false),
    ];
    let colors = |system: &str| -> [&'static str; 4] {
        if system == "ntkplane" {
            ["#d62728", "#d62728", "#ff7f0e", "#8c564b"]
        } else {
            ["#1f77b4", "#1f77b4", "#2ca02c", "#9467bd"]
        }
    };
    let mut series = Vec::new();
    for system in ["ntkplane", "babeld"] {
        for (k, (key, shape, label, dashed)) in metrics.iter().enumerate() {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r["system"] == system && r["shape"] == *shape)
                .filter_map(|r| Some((r["nodes"].as_f64()?, r[*key].as_f64()?)))
                .collect();
            if !points.is_empty() {
                series.push((
                    Series {
                        name: format!("{system} {label}"),
                        points,
                    },
                    colors(system)[k],
                    *dashed,
                ));
            }
        }
    }
    plot_seconds(
        "Convergence and reroute time (lines dashed; nulls left out)",
        &series,
    )
}
