//! A lab whose daemon refuses to start says why in its own output: the daemon's error line
//! inline, and the folder where that run's logs are kept (they go only after a passing run).
use std::process::Command;

use ntkplane_integration::{daemon::lab_bin, lab::require_root};

const SCENARIO: &str = r#"
name = "refusal"
description = "alpha's daemon refuses to start: its interface was renamed away"
topology = "4.2.2.2"

[[system]]
name = "alpha"
mac = "00:16:3E:FD:E2:AA"
linklocal = "169.254.69.30"
address = "2.0.1.0"
start = false

[[step]]
on = "alpha"
shell = "ip link set eth1 name eth7"

[[step]]
on = "alpha"
start = true
"#;

/// What the daemon itself prints when `--interface eth1` does not exist.
const DAEMON_ERROR: &str = "error: --interface eth1: no such Ethernet interface";

#[test]
fn a_daemon_that_refuses_to_start_is_quoted_and_its_log_kept() {
    require_root();
    let dir = std::env::temp_dir().join(format!("ntkt-labfail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("refusal.toml");
    std::fs::write(&file, SCENARIO).unwrap();
    let before = ntkplane_lab::runner::lab_leftovers();

    let out = Command::new(lab_bin())
        .arg("run")
        .arg(&file)
        // A refused start, not convergence: the feed.
        .args(["--paths", "feed"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the lab passed: {err}");
    assert!(
        err.lines()
            .any(|l| l.contains("| ") && l.ends_with(DAEMON_ERROR)),
        "the daemon's own error line is not quoted inline:\n{err}"
    );
    let kept = err
        .lines()
        .find_map(|l| l.strip_prefix("daemon logs kept in "))
        .unwrap_or_else(|| panic!("no kept-logs folder named:\n{err}"));
    let log = std::path::Path::new(kept).join("alpha.log");
    let text = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("{}: {e} (the folder the lab named)", log.display()));
    assert!(text.contains(DAEMON_ERROR), "{}: {text}", log.display());

    std::fs::remove_dir_all(kept).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        ntkplane_lab::runner::lab_leftovers(),
        before,
        "the failed lab left namespaces or pins"
    );
}
