//! Per-packet cost of the `classify` eBPF program, by `BPF_PROG_TEST_RUN` with `repeat`
//! (the kernel runs the program that many times on one frame and reports the mean), at
//! 1 … 4096 neighbour MACs in the map (the measured sender's MAC inserted last), for a hit
//! and a miss, plus the verifier's instruction count. Rounds are interleaved over the
//! neighbour counts; the median per point is reported. The hit must come back with the
//! sender's mark, or the point is reported as failed.
//!
//! Usage: bench-classify [--repeat N] [--rounds N] [--json PATH]
use std::fmt::Write as _;

use ntkplane::{
    classifier::{Classifier, ClassifierConfig},
    mac::MacAddr,
    netns::Netns,
};
use ntkplane_integration::{
    lab::require_root,
    packet::{frame, test_run},
};
use serde_json::json;

const COUNTS: [u32; 5] = [1, 16, 256, 1024, 4096];

fn mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
}

/// Mean ns per run and the mark the program wrote.
fn cost(c: &Classifier, data: &[u8], repeat: u32) -> (f64, u32) {
    let r = test_run(c, data, 0, repeat);
    (r.duration.as_nanos() as f64, r.mark)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    require_root();
    let mut repeat = 1_000_000u32;
    let mut rounds = 3usize;
    let mut json_out = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--repeat" => repeat = it.next().unwrap().parse().unwrap(),
            "--rounds" => rounds = it.next().unwrap().parse().unwrap(),
            "--json" => json_out = it.next(),
            other => panic!("unknown argument {other}"),
        }
    }
    // One loaded classifier per neighbour count (test-run needs no attachment).
    let mut points = Vec::new();
    for n in COUNTS {
        let mut c = Classifier::load(Netns::Current, ClassifierConfig::default()).expect("load");
        for i in 1..=n {
            c.insert(mac(i), 1000 + i, 1000 + i).expect("insert");
        }
        points.push((n, c));
    }
    let insns = points[0]
        .1
        .program()
        .info()
        .ok()
        .and_then(|i| i.verified_instruction_count());
    // The fast-path program (classify + forward in TC): its verifier count, for the record.
    let fastpath = Classifier::load(
        Netns::Current,
        ClassifierConfig {
            fast_path: true,
            ..Default::default()
        },
    )
    .expect("load fastpath");
    let fp_insns = fastpath
        .program()
        .info()
        .ok()
        .and_then(|i| i.verified_instruction_count());
    drop(fastpath);
    let mut hit: Vec<Vec<f64>> = vec![vec![]; COUNTS.len()];
    let mut miss: Vec<Vec<f64>> = vec![vec![]; COUNTS.len()];
    let mut failed = vec![false; COUNTS.len()];
    for round in 0..=rounds {
        for (k, (n, c)) in points.iter().enumerate() {
            let sender = frame(mac(*n).0, 0x0800, 64);
            let stranger = frame(mac(0x00FF_FFFF).0, 0x0800, 64);
            let (h, m) = cost(c, &sender, repeat);
            let (s, sm) = cost(c, &stranger, repeat);
            failed[k] |= m != 1000 + n || sm != 0;
            if round > 0 {
                // round 0 warms up and is discarded
                hit[k].push(h);
                miss[k].push(s);
            }
        }
        eprintln!("[bench-classify] round {round}/{rounds} done");
    }
    let mut md = String::from(
        "| neighbours | hit ns/pkt (median) | miss ns/pkt (median) | hit vs 1 neighbour |\n|---:|---:|---:|---:|\n",
    );
    let mut rows = Vec::new();
    let base = median(&mut hit[0].clone());
    for (k, n) in COUNTS.iter().enumerate() {
        let h = median(&mut hit[k]);
        let m = median(&mut miss[k]);
        let _ = writeln!(
            md,
            "| {n} | {h:.1} | {m:.1} | {:.2}× |{}",
            h / base,
            if failed[k] {
                " FAILED (wrong mark)"
            } else {
                ""
            }
        );
        rows.push(json!({
            "neighbours": n, "hit_ns_median": h, "miss_ns_median": m,
            "hit_ns_samples": hit[k], "ratio_to_1": h / base, "failed": failed[k],
        }));
    }
    let show = |i: Option<u32>| i.map_or("n/a".into(), |i| i.to_string());
    println!(
        "classify per-packet cost (BPF_PROG_TEST_RUN, repeat {repeat}, {rounds} rounds), verified instructions: classify {}, fastpath {}",
        show(insns),
        show(fp_insns)
    );
    print!("{md}");
    if let Some(p) = json_out {
        let v = json!({
            "program": "classify",
            "verified_instructions": insns,
            "verified_instructions_by_program": {"classify": insns, "fastpath": fp_insns},
            "repeat": repeat,
            "rounds": rounds,
            "points": rows,
        });
        std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
    if failed.iter().any(|f| *f) {
        std::process::exit(1);
    }
}
