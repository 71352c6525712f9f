//! `ntkplane addr`: the CLI contract (JSON field names, values of addressing.md's worked
//! examples, exit status 2 and one error line on bad input).
use std::process::Command;

use serde_json::{json, Value};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ntkplane"))
        .arg("addr")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_of(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let (code, out, err) = run(&a);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn indirizzi_ip_worked_example() {
    // addressing.md §4 / §8: 3·10·123·45 in 4.16.256.256.
    let j = json_of(&["--topology", "4.16.256.256", "--address", "3.10.123.45"]);
    assert_eq!(j["global"], "10.58.123.45");
    assert_eq!(j["anonymous"], "10.186.123.45");
    assert_eq!(
        j["internal"],
        json!({"0": "10.64.0.0", "1": "10.80.0.45", "2": "10.96.123.45", "3": "10.122.123.45"})
    );
    assert_eq!(j["localhost"], "10.64.0.0");
    assert_eq!(j["global_range"], "10.0.0.0/10");
    assert_eq!(j["anonymous_range"], "10.128.0.0/10");
    assert_eq!(
        j["own_ips"],
        json!([
            "10.58.123.45",
            "10.122.123.45",
            "10.96.123.45",
            "10.80.0.45"
        ])
    );
    assert_eq!(j["destinations"].as_array().unwrap().len(), 2346);
    let d: Vec<&str> = j["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for p in [
        "10.58.67.0/24",
        "10.96.67.0/24",
        "10.122.67.0/24",
        "10.186.67.0/24",
        "10.32.0.0/12",
        "10.160.0.0/12",
    ] {
        assert!(d.contains(&p), "{p} missing from D(n)");
    }
    assert_eq!(j["gnodes"][1]["global"], "10.58.123.0/24");
    assert_eq!(
        j["gnodes"][2]["internal"],
        json!({"2": "10.96.0.0/16", "3": "10.122.0.0/16"})
    );
    assert_eq!(j["gnodes"][4]["global"], "10.0.0.0/10");
    assert_eq!(j["netmap"], json!([]));
}

#[test]
fn vala_vector_and_serve_anonymous() {
    let j = json_of(&[
        "--topology",
        "4.2.2.2",
        "--address",
        "3.1.0.1",
        "--serve-anonymous",
    ]);
    assert_eq!(j["global"], "10.0.0.29");
    assert_eq!(j["anonymous"], "10.0.0.93");
    assert_eq!(
        j["own_ips"],
        json!([
            "10.0.0.29",
            "10.0.0.93",
            "10.0.0.61",
            "10.0.0.49",
            "10.0.0.41"
        ])
    );
    let j = json_of(&["--topology", "4.2.2.2", "--address", "3.1.0.1"]);
    assert_eq!(
        j["own_ips"].as_array().unwrap().len(),
        4,
        "no anonymizing address without --serve-anonymous"
    );
}

#[test]
fn virtual_positions() {
    // β₁ 2·1·1·2 (virtual at level 0): no global, anonymizing or internal-above-0 address.
    let j = json_of(&["--topology", "4.2.2.2", "--address", "2.1.1.2"]);
    assert_eq!(j["global"], Value::Null);
    assert_eq!(j["anonymous"], Value::Null);
    assert_eq!(j["internal"], json!({"0": "10.0.0.32"}));
    assert_eq!(j["own_ips"], json!([]));
    assert_eq!(j["destinations"].as_array().unwrap().len(), 23);
    assert_eq!(j["gnodes"][0]["global"], Value::Null);
    assert_eq!(j["gnodes"][1]["global"], "10.0.0.22/31");
}

#[test]
fn subnet_gateway_netmap() {
    let j = json_of(&[
        "--topology",
        "4.2.2.2",
        "--address",
        "1.1.0.0",
        "--subnet-level",
        "1",
        "--serve-anonymous",
    ]);
    assert_eq!(j["destinations"].as_array().unwrap().len(), 13);
    assert_eq!(
        j["netmap"][0],
        json!({"chain": "prerouting", "daddr": "10.0.0.48/31", "to": "10.0.0.40/31"})
    );
    assert_eq!(
        j["netmap"][1],
        json!({"chain": "postrouting", "daddr": "10.0.0.48/30", "saddr": "10.0.0.40/31", "to": "10.0.0.48/31"})
    );
    assert_eq!(j["netmap"].as_array().unwrap().len(), 8);
}

#[test]
fn other_base_prefix() {
    let j = json_of(&[
        "--topology",
        "4.2.2.2",
        "--address",
        "3.0.1.0",
        "--base",
        "172.16.0.0/12",
    ]);
    assert_eq!(j["global"], "172.16.0.26");
}

#[test]
fn text_output_has_the_same_facts() {
    let (code, out, _) = run(&["--topology", "4.16.256.256", "--address", "3.10.123.45"]);
    assert_eq!(code, 0);
    for s in [
        "10.58.123.45",
        "10.186.123.45",
        "10.122.123.45",
        "10.96.123.45",
        "10.80.0.45",
        "destinations (2346)",
    ] {
        assert!(out.contains(s), "{s} missing from:\n{out}");
    }
}

#[test]
fn bad_input_exits_2_with_one_line() {
    for (args, msg) in [
        (
            vec!["--topology", "4.3.2.2", "--address", "3.1.0.1"],
            "error: gsize 3 at level 2 is not a power of two",
        ),
        (
            vec!["--topology", "8.256.256.256", "--address", "3.1.0.1"],
            "error: topology needs 27 address bits",
        ),
        (
            vec!["--topology", "2.2.2.2", "--address", "1.1.0.1"],
            "error: top-level gsize 2 is smaller than the number of levels 4",
        ),
        (
            vec!["--topology", "4.2.2.2", "--address", "3.1.0"],
            "error: address '3.1.0' has 3 levels",
        ),
        (
            vec!["--topology", "4.2.2.2", "--address", "3.1.x.1"],
            "error: malformed address '3.1.x.1'",
        ),
        (
            vec!["--topology", "4.2.2.2", "--address", "9.1.0.1"],
            "error: position 9 at level 3",
        ),
        (
            vec![
                "--topology",
                "4.2.2.2",
                "--address",
                "3.1.0.1",
                "--subnet-level",
                "4",
            ],
            "error: subnet level 4 must be below",
        ),
        (
            vec![
                "--topology",
                "4.2.2.2",
                "--address",
                "3.1.0.1",
                "--base",
                "10.0.0.1/8",
            ],
            "error: --base: '10.0.0.1/8' has host bits set",
        ),
        (
            vec![
                "--topology",
                "4.2.2.2",
                "--address",
                "3.1.0.1",
                "--base",
                "10.0.0.0/28",
            ],
            "error: topology needs 5 address bits",
        ),
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with(msg), "{args:?}: got '{err}', want '{msg}…'");
    }
}
