//! The lab runner as a user meets it: `ntkplane-lab run FILE`. A scenario with an unknown
//! system, a bad address or a malformed MAC is refused with the file, line and field named,
//! before anything is created; the quickstart runs its checks with real packets and leaves
//! nothing behind.
use std::process::Command;

use ntkplane_integration::{daemon::lab_bin, lab::require_root};

const QUICKSTART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/quickstart.toml");

fn lab_state() -> Vec<String> {
    ntkplane_lab::runner::lab_leftovers()
}

fn lab_run(file: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(lab_bin())
        .arg("run")
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One test: the checks compare the host's lab state before and after, so nothing else of
/// the lab may run at the same time.
#[test]
fn bad_scenarios_are_refused_then_the_quickstart_passes_and_leaves_nothing() {
    require_root();
    bad_scenarios_are_refused_with_the_field_named_and_nothing_created();
    quickstart_passes_and_leaves_nothing();
}

fn bad_scenarios_are_refused_with_the_field_named_and_nothing_created() {
    let good = std::fs::read_to_string(QUICKSTART).unwrap();
    let dir = std::env::temp_dir().join(format!("ntkt-labfiles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (tag, from, to, want) in [
        (
            "unknown-system",
            "on = \"beta\"",
            "on = \"omega\"",
            "step[1].on: unknown system 'omega'",
        ),
        (
            "bad-address",
            "address = \"2.0.1.1\"",
            "address = \"2.0.7.1\"",
            "system[1].address: bad address '2.0.7.1'",
        ),
        (
            "malformed-mac",
            "mac = \"00:16:3E:FD:E2:AA\"",
            "mac = \"00:16:3E:FD:E2\"",
            "system[0].mac: malformed MAC '00:16:3E:FD:E2'",
        ),
    ] {
        assert!(good.contains(from), "{tag}: fixture changed");
        let f = dir.join(format!("{tag}.toml"));
        std::fs::write(&f, good.replacen(from, to, 1)).unwrap();
        let before = lab_state();
        let (code, _, err) = lab_run(&f);
        assert_ne!(code, 0, "{tag} was accepted");
        assert!(
            err.contains(&format!("{}:", f.display())) && err.contains(want),
            "{tag}: '{err}' does not name '{want}' with the file and line"
        );
        let at = format!("{}:", f.display());
        let line: usize = err
            .split_once(&at)
            .and_then(|(_, r)| r.split(':').next())
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        assert!(
            good.replacen(from, to, 1)
                .lines()
                .nth(line.saturating_sub(1))
                .unwrap_or("")
                .contains(to.split(" = ").nth(1).unwrap()),
            "{tag}: line {line} is not the faulty one: {err}"
        );
        assert_eq!(lab_state(), before, "{tag}: something was created");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn quickstart_passes_and_leaves_nothing() {
    let before = lab_state();
    let (code, out, err) = lab_run(std::path::Path::new(QUICKSTART));
    assert_eq!(code, 0, "quickstart failed:\n{out}\n{err}");
    assert!(out.contains("checks: 4 passed, 0 failed"), "{out}");
    assert!(
        out.contains("connectivity"),
        "no matrix in the report: {out}"
    );
    assert_eq!(lab_state(), before, "the lab left something");
}
