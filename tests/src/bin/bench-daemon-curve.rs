//! The daemon's scaling curve from several `bench-daemon` runs (one JSON each, any order):
//! one `daemon.json` with the points sorted by N and issue 14's must-show read off them, and
//! two plots against N (log₂ axis): arc command p50 latency and peak RSS, each with its bound.
//!
//! The must-show (never a pass/fail of the benchmark: a point only reports whether it holds):
//! - `arc_command_ms_p50` at 200 neighbours ≤ 2 × its value at 16 (same topology);
//! - `routes_per_second` ≥ 0.8 × `rtnetlink_routes_per_second` of the same run;
//! - `peak_rss_kib` ≤ 20 MiB + 100 bytes per installed route.
//!
//! Usage: bench-daemon-curve --json OUT [--latency-svg PATH] [--rss-svg PATH] RUN.json…

use ntkplane_integration::svg::{plot, Series};
use serde_json::{json, Value};

/// The must-show's bounds (issue 14).
const LATENCY_GROWTH_MAX: f64 = 2.0;
const RATE_RATIO_MIN: f64 = 0.8;
const RSS_BASE_KIB: f64 = 20.0 * 1024.0;
const RSS_BYTES_PER_ROUTE: f64 = 100.0;
/// The two neighbour counts the latency growth is read between.
const SMALL_N: u64 = 16;
const LARGE_N: u64 = 200;

fn rss_budget_kib(routes: f64) -> f64 {
    RSS_BASE_KIB + routes * RSS_BYTES_PER_ROUTE / 1024.0
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v[key].as_f64()
}

/// The point's own checks: the rate ratio and the RSS budget.
fn annotate(p: &mut Value) {
    let ratio = match (
        num(p, "routes_per_second"),
        num(p, "rtnetlink_routes_per_second"),
    ) {
        (Some(d), Some(r)) if r > 0.0 => Some(d / r),
        _ => None,
    };
    let budget = num(p, "routes").map(rss_budget_kib);
    let rss = num(p, "peak_rss_kib");
    p["routes_per_second_over_rtnetlink"] = json!(ratio);
    p["rate_ratio_met"] = json!(ratio.map(|r| r >= RATE_RATIO_MIN));
    p["rss_budget_kib"] = json!(budget);
    p["rss_budget_met"] = json!(match (rss, budget) {
        (Some(r), Some(b)) => Some(r <= b),
        _ => None,
    });
}

/// p50 at `LARGE_N` over p50 at `SMALL_N`, on the topology both were run on.
fn latency_growth(points: &[Value]) -> Value {
    let p50 = |n: u64| {
        points
            .iter()
            .find(|p| p["neighbours"].as_u64() == Some(n))
            .and_then(|p| {
                Some((
                    p["topology"].as_str()?.to_string(),
                    num(p, "arc_command_ms_p50")?,
                ))
            })
    };
    match (p50(SMALL_N), p50(LARGE_N)) {
        (Some((t1, a)), Some((t2, b))) if t1 == t2 && a > 0.0 => json!({
            "topology": t1, "small": SMALL_N, "large": LARGE_N,
            "p50_small_ms": a, "p50_large_ms": b, "ratio": b / a,
            "met": b / a <= LATENCY_GROWTH_MAX,
        }),
        _ => Value::Null,
    }
}

/// One series per topology of `key` against N, scaled by `scale`: named `label` for the
/// first topology (the smallest N's), `label topology` for the others (the plot's legend is
/// narrow).
fn series(points: &[Value], key: &str, label: &str, scale: f64) -> Vec<Series> {
    let mut by_topology: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for p in points {
        if let (Some(n), Some(y), Some(t)) =
            (num(p, "neighbours"), num(p, key), p["topology"].as_str())
        {
            match by_topology.iter_mut().find(|(name, _)| name == t) {
                Some((_, v)) => v.push((n, y * scale)),
                None => by_topology.push((t.to_string(), vec![(n, y * scale)])),
            }
        }
    }
    by_topology
        .into_iter()
        .enumerate()
        .map(|(k, (t, points))| Series {
            name: if k == 0 {
                label.to_string()
            } else {
                format!("{label} {t}")
            },
            points,
        })
        .collect()
}

/// p50 at `SMALL_N`, the base of the latency bound.
fn p50_small(points: &[Value]) -> Option<f64> {
    points
        .iter()
        .find(|p| p["neighbours"].as_u64() == Some(SMALL_N))
        .and_then(|p| num(p, "arc_command_ms_p50"))
}

fn main() {
    let mut out = None;
    let (mut latency_svg, mut rss_svg) = (None, None);
    let mut inputs = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => out = it.next(),
            "--latency-svg" => latency_svg = it.next(),
            "--rss-svg" => rss_svg = it.next(),
            _ => inputs.push(a),
        }
    }
    let out = out.expect("--json OUT is required");
    let mut points: Vec<Value> = inputs
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("read {f}: {e}"));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{f}: {e}"))
        })
        .collect();
    points.sort_by_key(|p| p["neighbours"].as_u64().unwrap_or(0));
    points.iter_mut().for_each(annotate);
    let growth = latency_growth(&points);

    if let Some(path) = latency_svg {
        // p50 only: the must-show is about it, and one p99 caught by another process's
        // burst would flatten the curve. In µs, as the plot labels its axis in thousands:
        // its "k" reads as ms.
        let mut s = series(&points, "arc_command_ms_p50", "p50", 1e3);
        if let Some(small) = p50_small(&points) {
            s.push(Series {
                name: format!("{LATENCY_GROWTH_MAX}× p50 at {SMALL_N}"),
                points: points
                    .iter()
                    .filter_map(|p| num(p, "neighbours"))
                    .map(|x| (x, small * LATENCY_GROWTH_MAX * 1e3))
                    .collect(),
            });
        }
        let svg = plot(
            "One arc command through the client, at full state (p50)",
            "neighbours (N)",
            "latency (µs; k = ms)",
            &s,
        );
        std::fs::write(&path, svg).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
    if let Some(path) = rss_svg {
        let mut s = series(&points, "peak_rss_kib", "peak RSS", 1.0);
        s.extend(series(
            &points,
            "rss_budget_kib",
            "20 MiB + 100 B/route",
            1.0,
        ));
        let svg = plot(
            "The daemon's peak RSS (VmHWM) with the full state",
            "neighbours (N)",
            "KiB",
            &s,
        );
        std::fs::write(&path, svg).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }

    for p in &points {
        eprintln!(
            "N={:<5} {:<14} routes {:>8}  arc p50 {:>8.1} ms p99 {:>8.1} ms  routes/s {:>7.0} \
             (raw {:>7.0}, {:.2})  peak RSS {:>7.1} MiB (budget {:.1})  migrate-phase-1 {:>7.0} ms",
            p["neighbours"],
            p["topology"].as_str().unwrap_or("?"),
            p["routes"],
            num(p, "arc_command_ms_p50").unwrap_or(f64::NAN),
            num(p, "arc_command_ms_p99").unwrap_or(f64::NAN),
            num(p, "routes_per_second").unwrap_or(f64::NAN),
            num(p, "rtnetlink_routes_per_second").unwrap_or(f64::NAN),
            num(p, "routes_per_second_over_rtnetlink").unwrap_or(f64::NAN),
            num(p, "peak_rss_kib").unwrap_or(f64::NAN) / 1024.0,
            num(p, "rss_budget_kib").unwrap_or(f64::NAN) / 1024.0,
            num(p, "migrate_phase_1_ms").unwrap_or(f64::NAN),
        );
    }
    let doc = json!({
        "points": points,
        "must_show": {
            "arc_command_p50_growth": growth,
            "rate_ratio_min": RATE_RATIO_MIN,
            "rss_budget": "20 MiB + 100 B per route",
        },
    });
    std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap())
        .unwrap_or_else(|e| panic!("write {out}: {e}"));
}
