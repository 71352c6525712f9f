//! The lab's exact checks, `during` windows and `parallel` groups against real daemons: a
//! scenario built from the quickstart (its systems and graph, new steps) passes with right
//! expectations of every kind; the same scenario with every expectation wrong fails, and its
//! report names each failed expectation with the file, the line it is written on and its
//! field. Two lab runs in all; nothing of either is left behind.
use std::{path::Path, process::Command};

use ntkplane_integration::{daemon::lab_bin, lab::require_root};

const QUICKSTART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/quickstart.toml");

/// After the quickstart's systems and graph (and [`GAMMA`]): identity arcs; two windows (α's
/// own state from the qspn arcs to the first ETPs; the pause between add-qspn-arc and the
/// first ETP, when table 250 exists without its rule); the qspn arcs added at once; an
/// administrator's route in table 251; α's whole state; a group of two checks and two sleeps
/// at once; then γ enters α's network with no previous operation, a window inside its
/// `enter_net_phase_1`.
const STEPS: &str = r#"
[[step]]
on = "alpha"
run = ["add-identity-arc", "0", "eth1", "00:16:3E:EC:A3:E1", "169.254.96.141"]

[[step]]
on = "beta"
run = ["add-identity-arc", "0", "eth1", "00:16:3E:FD:E2:AA", "169.254.69.30"]

[[step]]
title = "alpha's own state while the qspn arcs are added and the first ETPs arrive"
[step.during]
from = "arcs"
to = "etp"
[step.during.check]
on = "alpha"
addresses = { eth1 = ["169.254.69.30", "10.0.0.18", "10.0.0.40", "10.0.0.50", "10.0.0.58", "10.0.0.82"] }
nat = ["ip daddr 10.0.0.64/27 snat to 10.0.0.18"]
namespaces = []
links = { eth1 = { up = true, classifier = true } }

[[step]]
title = "between add-qspn-arc and the first ETP: table 250 exists, its rule does not"
[step.during]
from = "pause"
to = "pause"
[step.during.check]
on = "alpha"
rules = ["local", "lookup 251", "main", "default"]
fwmark_rules = { "250" = false }
tables_subset = true
tables = """
table 250
  unreachable: .0/29, .64/29, .8/29, .72/29, .24/29, .88/29, .20/30, .84/30, .60/30, .16/31, .80/31, .56/31, .48/31
  unreachable: .19/32, .83/32, .59/32, .51/32, .41/32
"""

[[step]]
id = "arcs"
title = "both qspn arcs at once"
parallel = [
  { on = "alpha", run = ["add-qspn-arc", "0", "eth1", "00:16:3E:EC:A3:E1"], expect = { table = 250 } },
  { on = "beta", run = ["add-qspn-arc", "0", "eth1", "00:16:3E:FD:E2:AA"] },
]

[[step]]
id = "pause"
wait_ms = 300

[[step]]
title = "an administrator's route in table 251"
on = "alpha"
shell = "ip route add 10.0.0.100/32 via 169.254.96.141 dev eth1 table 251"

[[step]]
id = "etp"
feed = "pair"

[[step]]
title = "alpha's whole state"
[step.check]
on = "alpha"
addresses = { eth1 = ["169.254.69.30", "10.0.0.18", "10.0.0.40", "10.0.0.50", "10.0.0.58", "10.0.0.82"], lo = ["127.0.0.1/8", "10.0.0.32"] }
rules = ["local", ["fwmark 250 lookup 250"], "lookup 251", "main", "default"]
nat = ["ip daddr 10.0.0.64/27 snat to 10.0.0.18"]
main = "169.254.96.141 src 169.254.69.30 dev eth1 scope link proto ntk"
namespaces = []
links = { eth1 = { up = true, classifier = true, kind = "veth", mac = "00:16:3E:FD:E2:AA" }, lo = { up = true, classifier = false } }
fwmark_rules = { "250" = true, "249" = false }
marks = { "00:16:3E:EC:A3:E1" = 250 }
tables_exact = true
tables = """
table 251 `ntk`
  unreachable: .0/29, .64/29, .8/29, .72/29, .24/29, .88/29, .20/30, .84/30, .60/30, .16/31, .80/31, .56/31, .48/31
  via 169.254.96.141 dev eth1: .19/32 src .18, .83/32 src .18, .59/32 src .58, .51/32 src .50, .41/32 src .40
  via 169.254.96.141 dev eth1: .100/32
table 250 `ntk_from_00:16:3E:EC:A3:E1`
  unreachable: .0/29, .64/29, .8/29, .72/29, .24/29, .88/29, .20/30, .84/30, .60/30, .16/31, .80/31, .56/31, .48/31
  unreachable: .19/32, .83/32, .59/32, .51/32, .41/32
"""

[[step]]
title = "two checks and two half-second sleeps at once"
parallel = [
  { on = "alpha", shell = "sleep 0.5" },
  { on = "beta", shell = "sleep 0.5" },
  { check = { on = "alpha", namespaces = [] } },
  { check = { on = "beta", rules = ["local", ["fwmark 250 lookup 250"], "lookup 251", "main", "default"] } },
]

[[step]]
ping = { from = "alpha", to = "beta:global", expect = "reply", reply_from = "beta:global" }

[[step]]
on = "gamma"
run = ["add-identity-arc", "0", "eth1", "00:16:3E:FD:E2:AA", "169.254.69.30"]

[[step]]
on = "alpha"
run = ["add-identity-arc", "0", "eth1", "00:16:3E:5B:78:D5", "169.254.94.223"]

[[step]]
title = "γ 3·1·0·0 enters α's network as 2·0·2·0, then 2·0·0·0: previous operation null"
on = "gamma"
run = ["prepare-enter-net-phase-1", "0", "0", "2", "2.0", "0.0", "2", "1", "0", "1", "2", "1", "[0]", "111", "null"]

[[step]]
title = "inside enter_net_phase_1 (phases 1 and 2): lookup 251 always there, no fwmark rule yet"
[step.during]
from = "entry"
to = "entry"
[step.during.check]
on = "gamma"
rules = ["local", "lookup 251", "main", "default"]
links = { eth1 = { up = true, classifier = true } }

[[step]]
id = "entry"
on = "gamma"
run = ["enter-net-phase-1", "0", "111"]
expect = { identity = 1 }

[[step]]
title = "the old identity's namespace went with the command"
check = { on = "gamma", namespaces = [], rules = ["local", "lookup 251", "main", "default"] }
"#;

/// A third system, alone in its own network until it enters α's (E12: with no previous
/// operation, phase 2 runs inside `enter_net_phase_1`).
const GAMMA: &str = r#"
[[system]]
name = "gamma"
mac = "00:16:3E:5B:78:D5"
linklocal = "169.254.94.223"
address = "3.1.0.0"
"#;

/// A wrong expectation: the text replaced and its replacement, the text that starts on the
/// line the failure must name (default: the replacement's first line), the field named, and
/// what the failure says.
struct Wrong {
    from: &'static str,
    to: &'static str,
    line_at: Option<&'static str>,
    field: &'static str,
    says: &'static [&'static str],
}

const WRONG: &[Wrong] = &[
    Wrong {
        from: r#""10.0.0.58", "10.0.0.82"] }
nat"#,
        to: r#""10.0.0.58"] }
nat"#,
        line_at: None,
        field: "step[2].during.check.addresses",
        says: &[
            "while step 5 ran (both qspn arcs at once)",
            "unexpected [10.0.0.82/32]",
        ],
    },
    Wrong {
        from: r#"rules = ["local", "lookup 251", "main", "default"]
fwmark_rules"#,
        to: r#"rules = ["local", "fwmark 250 lookup 250", "lookup 251", "main", "default"]
fwmark_rules"#,
        line_at: None,
        field: "step[3].during.check.rules",
        says: &[
            "while step 6 ran (wait 300 ms)",
            "got [local, lookup 251, main, default]",
        ],
    },
    Wrong {
        from: "tables_subset = true\ntables = \"\"\"\ntable 250\n  unreachable: .0/29",
        to: "tables_subset = true\ntables = \"\"\"\ntable 250\n  blackhole: .0/29",
        line_at: Some("tables = \"\"\"\ntable 250"),
        field: "step[3].during.check.tables",
        says: &["table 250: 10.0.0.0/29 is Unreachable, expected [Blackhole]"],
    },
    Wrong {
        from: r#"lo = ["127.0.0.1/8", "10.0.0.32"] }"#,
        to: r#"lo = ["127.0.0.1/8"] }"#,
        line_at: None,
        field: "step[8].check.addresses",
        says: &["lo: got [10.0.0.32/32, 127.0.0.1/8], expected [127.0.0.1/8]"],
    },
    Wrong {
        from: r#"rules = ["local", ["fwmark 250 lookup 250"], "lookup 251", "main", "default"]
nat"#,
        to: r#"rules = ["local", "lookup 251", ["fwmark 250 lookup 250"], "main", "default"]
nat"#,
        line_at: None,
        field: "step[8].check.rules",
        says: &["got [local, fwmark 250 lookup 250, lookup 251, main, default], expected [local, lookup 251, {fwmark 250 lookup 250}, main, default]"],
    },
    Wrong {
        from: "nat = [\"ip daddr 10.0.0.64/27 snat to 10.0.0.18\"]\nmain",
        to: "nat = [\"ip daddr 10.0.0.64/27 snat to 10.0.0.19\"]\nmain",
        line_at: None,
        field: "step[8].check.nat",
        says: &["got ['ip daddr 10.0.0.64/27 snat to 10.0.0.18'], expected ['ip daddr 10.0.0.64/27 snat to 10.0.0.19']"],
    },
    Wrong {
        from: "main = \"169.254.96.141 src 169.254.69.30",
        to: "main = \"169.254.96.141 src 169.254.69.31",
        line_at: None,
        field: "step[8].check.main",
        says: &["missing [169.254.96.141 dev eth1 proto ntk scope link src 169.254.69.31]; unexpected [169.254.96.141 dev eth1 proto ntk scope link src 169.254.69.30]"],
    },
    Wrong {
        from: "namespaces = []\nlinks = { eth1 = { up = true, classifier = true, kind",
        to: "namespaces = [\"migr01\"]\nlinks = { eth1 = { up = true, classifier = true, kind",
        line_at: None,
        field: "step[8].check.namespaces",
        says: &["got [], expected [migr01] (missing [migr01])"],
    },
    Wrong {
        from: "links = { eth1 = { up = true, classifier = true, kind",
        to: "links = { eth1 = { up = true, classifier = false, kind",
        line_at: None,
        field: "step[8].check.links",
        // `fastpath` where the kernel runs the fast path (the daemon's default), else `classify`.
        says: &["eth1: the classifier is attached 1 times to its TCX ingress (programs [", "]), expected not at all"],
    },
    Wrong {
        from: r#"fwmark_rules = { "250" = true, "249" = false }"#,
        to: r#"fwmark_rules = { "250" = false, "249" = false }"#,
        line_at: None,
        field: "step[8].check.fwmark_rules",
        says: &["table 250 has a fwmark rule, expected none"],
    },
    Wrong {
        from: "  via 169.254.96.141 dev eth1: .100/32\n",
        to: "",
        line_at: Some("tables = \"\"\"\ntable 251"),
        field: "step[8].check.tables",
        says: &["table 251: 10.0.0.100 via 169.254.96.141 dev eth1 not expected"],
    },
    Wrong {
        from: r#"on = "gamma"
rules = ["local", "lookup 251", "main", "default"]"#,
        to: r#"on = "gamma"
rules = ["local", "fwmark 250 lookup 250", "lookup 251", "main", "default"]"#,
        line_at: Some(r#"rules = ["local", "fwmark 250 lookup 250", "lookup 251", "main", "default"]
links"#),
        field: "step[14].during.check.rules",
        says: &[
            "while step 16 ran (gamma: ntkplane enter-net-phase-1 0 111)",
            "got [local, lookup 251, main, default]",
        ],
    },
    Wrong {
        from: r#"{ check = { on = "beta", rules = ["local", ["fwmark 250 lookup 250"], "lookup 251""#,
        to: r#"{ check = { on = "beta", rules = ["local", ["fwmark 249 lookup 249"], "lookup 251""#,
        line_at: None,
        field: "step[9].parallel[3].check.rules",
        says: &["expected [local, {fwmark 249 lookup 249}, lookup 251, main, default]"],
    },
];

fn run(file: &Path) -> (i32, String, String) {
    let out = Command::new(lab_bin())
        .arg("run")
        .arg(file)
        // The check machinery, not convergence: the feed, compared once.
        .args(["--paths", "feed"])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The 1-based line of `text` on which `needle` (its first line) starts.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("'{needle}' not in the scenario"));
    text[..at].matches('\n').count() + 1
}

#[test]
fn exact_checks_windows_and_groups_pass_when_right_and_name_each_wrong_expectation() {
    require_root();
    let quick = std::fs::read_to_string(QUICKSTART).unwrap();
    let head = &quick[..quick.find("[[step]]").unwrap()];
    let right = format!("{head}{GAMMA}{STEPS}");
    let mut wrong = right.clone();
    for w in WRONG {
        assert_eq!(wrong.matches(w.from).count(), 1, "fixture: {}", w.from);
        wrong = wrong.replacen(w.from, w.to, 1);
    }
    let dir = std::env::temp_dir().join(format!("ntkt-labchecks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (right_file, wrong_file) = (dir.join("right.toml"), dir.join("wrong.toml"));
    std::fs::write(&right_file, &right).unwrap();
    std::fs::write(&wrong_file, &wrong).unwrap();
    let before = ntkplane_lab::runner::lab_leftovers();

    // Right: every check passes; the windows sampled at most 50 ms apart; the group's four
    // steps (two half-second sleeps) ran at once.
    let (code, out, err) = run(&right_file);
    assert_eq!(code, 0, "the right scenario failed:\n{out}\n{err}");
    assert!(
        out.contains("checks: 8 passed, 0 failed (7 exact)"),
        "{out}"
    );
    let windows: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("window of step"))
        .collect();
    assert_eq!(windows.len(), 3, "{out}");
    for w in &windows {
        let gap: u64 = w
            .split("at most ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no gap in '{w}'"));
        // The sampler aims at 50 ms, but on a loaded 2-CPU machine a gap of 332 ms was seen
        // (no timed assertion): what must hold is that the window was sampled throughout,
        // not only at its ends — at least 3 samples, none of the gaps half the window.
        let (samples, span): (u64, u64) = w
            .split(": ")
            .last()
            .and_then(|r| {
                let mut it = r.split(' ');
                let n = it.next()?.parse().ok()?;
                let span = it.nth(2)?.parse().ok()?;
                Some((n, span))
            })
            .unwrap_or_else(|| panic!("no 'N samples in M ms' in '{w}'"));
        assert!(samples >= 3, "{samples} samples: {w}");
        assert!(2 * gap < span, "samples {gap} ms apart in {span} ms: {w}");
        assert!(w.ends_with("— ok"), "{w}");
    }
    let together: u64 = out
        .split("4 steps together in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no parallel group in:\n{out}"));
    assert!(together < 1000, "the group took {together} ms: not at once");

    // Wrong: each wrong expectation named with its file, line and field.
    let (code, out, err) = run(&wrong_file);
    assert_ne!(code, 0, "the wrong scenario passed:\n{out}");
    assert!(
        out.contains("checks: 3 passed, 5 failed (7 exact)"),
        "{out}"
    );
    let report = out.split("\nchecks: ").nth(1).unwrap_or("");
    for w in WRONG {
        let first = w.line_at.unwrap_or_else(|| w.to.lines().next().unwrap());
        let at = format!(
            "{}:{}: {}: ",
            wrong_file.display(),
            line_of(&wrong, first),
            w.field
        );
        let line = report
            .lines()
            .find(|l| l.trim_start().starts_with(&at))
            .unwrap_or_else(|| panic!("no failure '{at}…' in the report:\n{report}"));
        for s in w.says {
            assert!(line.contains(s), "'{line}' does not say '{s}'");
        }
    }
    if let Some(kept) = err
        .lines()
        .find_map(|l| l.strip_prefix("daemon logs kept in "))
    {
        std::fs::remove_dir_all(kept).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        ntkplane_lab::runner::lab_leftovers(),
        before,
        "a lab left namespaces or pins"
    );
}
