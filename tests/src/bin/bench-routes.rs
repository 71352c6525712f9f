//! Route-programming benchmark: how fast a large forwarding state gets into the kernel.
//!
//! Variants, measured in the same run, each into a fresh namespace, rounds interleaved:
//! - `reconciler`: ntkplane's `Reconciler::apply` from an empty namespace (observe + diff +
//!   sysctls + classifier attach + every route);
//! - `rtnetlink`: the same routes, one awaited NLM_F_REPLACE request each (the raw rate);
//! - `ip-batch`: one `ip -batch` file;
//! - `ip-per-route`: one `ip route add` process per route (qspnclient's way), on a sample.
//!
//! Usage: bench-routes [--tables N] [--prefixes N] [--rounds N] [--sample N] [--json PATH]
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use ntkplane::{
    addr::Ipv4Prefix,
    kernel::{in_netns, rtnl::Rtnl, Desired, Reconciler},
    plan::{KRoute, KernelState},
};
use ntkplane_integration::lab::{require_root, Ns};

struct Args {
    tables: u32,
    prefixes: u32,
    rounds: usize,
    sample: usize,
    json: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        tables: 64,
        prefixes: 2000,
        rounds: 3,
        sample: 1000,
        json: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--tables" => a.tables = val.parse().expect("--tables N"),
            "--prefixes" => a.prefixes = val.parse().expect("--prefixes N"),
            "--rounds" => a.rounds = val.parse().expect("--rounds N"),
            "--sample" => a.sample = val.parse().expect("--sample N"),
            "--json" => a.json = Some(val),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

/// `tables` tables (ids 1000…) × `prefixes` /32s each: half unreachable, half
/// `via 192.0.2.2 dev bench0 src 192.0.2.1`, like a big identity's ntk/ntk_from tables.
fn state(tables: u32, prefixes: u32) -> KernelState {
    let mut k = KernelState::default();
    for t in 0..tables {
        for i in 0..prefixes {
            let p = Ipv4Prefix::host(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8));
            let r = if i % 2 == 0 {
                KRoute::Unreachable
            } else {
                KRoute::Via {
                    gw: "192.0.2.2".parse().unwrap(),
                    dev: "bench0".into(),
                    src: Some("192.0.2.1".parse().unwrap()),
                }
            };
            k.routes.insert((1000 + t, p), r);
        }
    }
    k
}

fn fresh_ns() -> Ns {
    let ns = Ns::new("bench");
    ns.sh("ip link add bench0 type veth peer name bench1 && ip addr add 192.0.2.1/24 dev bench0 && ip link set bench1 up && ip link set bench0 up");
    ns
}

/// Unicast and unreachable routes to 10.0.0.0/8, every table (read over rtnetlink).
fn count_routes(ns: &Ns, tables: u32) -> usize {
    let _ = tables;
    ntkplane_lab::readback::routes_in(&ns.name)
        .unwrap()
        .iter()
        .filter(|r| matches!(r.kind, 1 | 7) && r.dst.addr().octets()[0] == 10)
        .count()
}

fn ip_line(table: u32, p: &Ipv4Prefix, r: &KRoute) -> String {
    match r {
        KRoute::Unreachable => format!("route add unreachable {p} table {table} proto ntk"),
        KRoute::Via { gw, dev, src } => {
            let src = src.map(|s| format!(" src {s}")).unwrap_or_default();
            format!("route add {p} via {gw} dev {dev}{src} table {table} proto ntk")
        }
        _ => unreachable!(),
    }
}

fn run_variant(name: &str, k: &KernelState, sample: usize) -> (usize, Duration) {
    let ns = fresh_ns();
    let n = k.routes.len();
    let (routes, t) = match name {
        "reconciler" => {
            let mut r = Reconciler::new(ns.netns(), u32::MAX, None).unwrap();
            let d = Desired {
                interfaces: vec!["bench0".into()],
                state: k.clone(),
                table_names: BTreeMap::new(),
            };
            let t0 = Instant::now();
            r.apply(&d).unwrap();
            (n, t0.elapsed())
        }
        "rtnetlink" => {
            let t = in_netns(&ns.netns(), |rt| {
                rt.block_on(async {
                    let r = Rtnl::connect().await.unwrap();
                    let t0 = Instant::now();
                    for ((table, p), route) in &k.routes {
                        r.replace_route(*table, *p, route).await.unwrap();
                    }
                    t0.elapsed()
                })
            })
            .unwrap();
            (n, t)
        }
        "ip-batch" => {
            let mut text = String::new();
            for ((table, p), r) in &k.routes {
                let _ = writeln!(text, "{}", ip_line(*table, p, r));
            }
            let file =
                std::env::temp_dir().join(format!("ntkplane-bench-{}.batch", std::process::id()));
            std::fs::write(&file, text).unwrap();
            let t0 = Instant::now();
            let st = Command::new("ip")
                .args(["-n", &ns.name, "-batch"])
                .arg(&file)
                .status()
                .unwrap();
            let t = t0.elapsed();
            assert!(st.success(), "ip -batch failed");
            let _ = std::fs::remove_file(&file);
            (n, t)
        }
        "ip-per-route" => {
            let t0 = Instant::now();
            for ((table, p), r) in k.routes.iter().take(sample) {
                let line = ip_line(*table, p, r);
                let st = Command::new("ip")
                    .args(["-n", &ns.name])
                    .args(line.split(' '))
                    .status()
                    .unwrap();
                assert!(st.success());
            }
            (sample.min(n), t0.elapsed())
        }
        _ => unreachable!(),
    };
    let installed = count_routes(&ns, 0);
    assert_eq!(
        installed, routes,
        "{name}: {installed} routes in the kernel, {routes} expected"
    );
    (routes, t)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    require_root();
    let a = args();
    let k = state(a.tables, a.prefixes);
    let variants = ["reconciler", "rtnetlink", "ip-batch", "ip-per-route"];
    let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    eprintln!(
        "route programming: {} tables x {} prefixes = {} routes, {} rounds",
        a.tables,
        a.prefixes,
        k.routes.len(),
        a.rounds
    );
    for round in 0..a.rounds {
        for v in variants {
            let (n, t) = run_variant(v, &k, a.sample);
            let rate = n as f64 / t.as_secs_f64();
            eprintln!(
                "  round {} {:<13} {:>7} routes in {:>8.1} ms = {:>9.0} routes/s",
                round + 1,
                v,
                n,
                t.as_secs_f64() * 1e3,
                rate
            );
            rates.entry(v).or_default().push(rate);
        }
    }
    let raw = median(rates["rtnetlink"].clone());
    let per_route = median(rates["ip-per-route"].clone());
    println!("| variant | routes/s (median) | min | max | vs rtnetlink | vs ip-per-route |");
    println!("|---|---|---|---|---|---|");
    let mut json = Vec::new();
    for v in variants {
        let r = &rates[v];
        let m = median(r.clone());
        let (lo, hi) = (
            r.iter().cloned().fold(f64::MAX, f64::min),
            r.iter().cloned().fold(0.0, f64::max),
        );
        println!(
            "| {v} | {m:.0} | {lo:.0} | {hi:.0} | {:.2} | {:.1} |",
            m / raw,
            m / per_route
        );
        json.push(serde_json::json!({
            "variant": v, "routes": if v == "ip-per-route" { a.sample.min(k.routes.len()) } else { k.routes.len() },
            "routes_per_s": {"median": m, "min": lo, "max": hi},
            "ratio_to_rtnetlink": m / raw, "ratio_to_ip_per_route": m / per_route,
        }));
    }
    if let Some(path) = a.json {
        let doc = serde_json::json!({
            "benchmark": "route-programming",
            "tables": a.tables, "prefixes_per_table": a.prefixes, "rounds": a.rounds,
            "kernel": String::from_utf8_lossy(&Command::new("uname").arg("-r").output().unwrap().stdout).trim(),
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "results": json,
        });
        if let Some(dir) = std::path::Path::new(&path).parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        eprintln!("wrote {path}");
    }
}
