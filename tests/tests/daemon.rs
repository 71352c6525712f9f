//! The daemon and its client, driven as a user would: `ntkplane run` in a namespace that
//! plays the system, commands through the control socket, state read back over rtnetlink
//! (rendered as `ip` prints it) and with `nft`.

use ntkplane_integration::{
    daemon::Instance,
    lab::{require_root, veth, End, Ns},
    readback::{addresses_text, full_dump, routes_text, rules_text},
};

fn system() -> (Ns, Ns) {
    let sys = Ns::new("sys");
    let peer = Ns::new("peer");
    veth(
        End(&sys, "eth1", "00:16:3e:ec:a3:e1", "192.0.2.1/32"),
        End(&peer, "eth1", "00:16:3e:5b:78:d5", "192.0.2.2/32"),
    );
    (sys, peer)
}

const GAMMA: &str = "00:16:3E:5B:78:D5";
const PATH_TO_GAMMA: &str = r#"[{"arc":0,"hops":[{"lvl":0,"pos":0}],"cost":10000}]"#;

#[test]
fn commands_bad_input_crash_restart_and_quit() {
    require_root();
    let (sys, _peer) = system();
    let before_run = full_dump(&sys);
    let mut d = Instance::new(&sys);
    d.start();
    assert!(d.state_file().exists());

    // Startup state: own addresses, ntk all unreachable, SNAT.
    let addrs = addresses_text(&sys.name, Some("eth1"));
    for a in [
        "169.254.96.141/32",
        "10.0.0.23/32",
        "10.0.0.87/32",
        "10.0.0.63/32",
        "10.0.0.51/32",
        "10.0.0.41/32",
    ] {
        assert!(addrs.contains(a), "{a}: {addrs}");
    }
    assert!(routes_text(&sys.name, Some(251)).contains("unreachable 10.0.0.0/29 proto ntk"));
    assert!(sys
        .sh("nft list table ip ntkplane")
        .contains("ip daddr 10.0.0.64/27 snat to 10.0.0.23"));

    // γ: identity arc, qspn arc (table 250), first ETP, a path.
    assert!(d
        .ok(&["add-identity-arc", "0", "eth1", GAMMA, "169.254.94.223"])
        .contains("arc: 0"));
    assert!(d
        .ok(&["add-qspn-arc", "0", "eth1", GAMMA])
        .contains("table: 250"));
    assert!(
        !rules_text(&sys.name).contains("lookup 250"),
        "no rule before the neighbour is known"
    );
    d.ok(&["set-neighbour", "0", "0", "2.1.1.0"]);
    d.ok(&["set-paths", "0", "0,0", PATH_TO_GAMMA]);
    assert!(rules_text(&sys.name).contains("fwmark 0xfa lookup 250 proto ntk"));
    let ntk = routes_text(&sys.name, Some(251));
    assert!(
        ntk.contains("10.0.0.22 via 169.254.94.223 dev eth1 proto ntk src 10.0.0.23"),
        "{ntk}"
    );
    // γ is the g-node (0,0): every path to it contains it, so its prefixes are unreachable
    // in γ's own table (never bounce a packet back where it came from).
    let t250 = routes_text(&sys.name, Some(250));
    assert!(
        t250.contains("unreachable 10.0.0.22 proto ntk") && t250.lines().count() == 18,
        "{t250}"
    );
    let tables = d.ok(&["--json", "show-tables"]);
    assert!(
        tables.contains("\"name\": \"ntk_from_00:16:3E:5B:78:D5\""),
        "{tables}"
    );

    // Bad input: an error naming the problem, non-zero exit, kernel and state untouched.
    let dump = full_dump(&sys);
    let state = std::fs::read_to_string(d.state_file()).unwrap();
    for (args, msg) in [
        (
            vec!["add-qspn-arc", "0", "eth1", GAMMA],
            "already a qspn arc",
        ),
        (
            vec!["add-qspn-arc", "7", "eth1", GAMMA],
            "no identity with index 7",
        ),
        (
            vec![
                "add-identity-arc",
                "0",
                "eth9",
                "02:00:00:00:00:09",
                "169.254.1.1",
            ],
            "no managed interface 'eth9'",
        ),
        (
            vec![
                "add-identity-arc",
                "0",
                "eth1",
                "02:00:00:00:00:09",
                "10.1.1.1",
            ],
            "not a link-local address",
        ),
        (
            vec!["set-neighbour", "0", "3", "2.1.1.0"],
            "identity 0 has no arc 3",
        ),
        (
            vec!["set-neighbour", "0", "0", "2.1.9.0"],
            "position 9 at level 1",
        ),
        (
            vec![
                "set-paths",
                "0",
                "0,0",
                r#"[{"arc":5,"hops":[{"lvl":0,"pos":0}],"cost":1}]"#,
            ],
            "no such arc",
        ),
        (vec!["remove-arc", "0", "4"], "identity 0 has no arc 4"),
        // The lifecycle, out of order or with unknown ids.
        (
            vec!["enter-net-phase-1", "0", "4958850"],
            "no prepared operation 4958850",
        ),
        (
            vec!["migrate-phase-2", "0", "262359"],
            "no prepared operation 262359",
        ),
        (
            vec![
                "prepare-migrate-phase-1",
                "0",
                "0",
                "1",
                "2.0",
                "0.2.0",
                "2",
                "3",
                "1",
                "4",
                "3",
                "3",
                "262359",
                "null",
            ],
            "host address has 2 positions, levels l-1..h need 3",
        ),
        (
            vec![
                "prepare-migrate-phase-1",
                "0",
                "0",
                "1",
                "2.0.1",
                "0.2.0",
                "2",
                "3",
                "1",
                "4",
                "1",
                "3",
                "262359",
                "null",
            ],
            "connectivity position (must be virtual): position 1 is not valid at level 0",
        ),
        (
            vec![
                "prepare-enter-net-phase-1",
                "5",
                "0",
                "1",
                "2.0.1",
                "0.0.0",
                "2",
                "3",
                "1",
                "4",
                "2",
                "1",
                "[0]",
                "11",
                "null",
            ],
            "no identity with index 5",
        ),
        (
            vec![
                "prepare-enter-net-phase-1",
                "0",
                "0",
                "1",
                "2.0.1",
                "0.0.0",
                "2",
                "3",
                "1",
                "4",
                "2",
                "1",
                "[7]",
                "11",
                "null",
            ],
            "identity 0 has no arc 7",
        ),
        (
            vec!["remove-identity", "0"],
            "identity 0 is the main identity",
        ),
        (
            vec!["remove-outer-arcs", "0"],
            "identity 0 is not a connectivity identity",
        ),
        (vec!["check-connectivity", "3"], "no identity with index 3"),
        (
            vec![
                "neighbour-migrated",
                "0",
                "9",
                "02:00:00:00:00:09",
                "169.254.1.1",
            ],
            "identity 0 has no arc 9",
        ),
        (vec!["etp", "0", "{not json"], "feed:"),
    ] {
        let (code, _, err) = d.client(&args);
        assert_ne!(code, 0, "{args:?} was accepted");
        assert!(err.contains(msg), "{args:?}: '{err}' does not name '{msg}'");
    }
    // Malformed MAC: refused by the client before anything is sent.
    let (code, _, err) = d.client(&["add-qspn-arc", "0", "eth1", "00:16:3E:5B:78"]);
    assert_ne!(code, 0);
    assert!(err.contains("malformed MAC"), "{err}");
    // Non-JSON and oversized socket input.
    {
        use std::io::{BufRead, BufReader, Write};
        let sock = d.run_dir.join(format!("{}.sock", d.name));
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.write_all(b"this is not json\n").unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains("\"ok\":false") && line.contains("malformed request"),
            "{line}"
        );
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        let _ = s.write_all(&vec![b'x'; (1 << 20) + 10]);
        let _ = s.write_all(b"\n");
        let mut line = String::new();
        let _ = BufReader::new(s).read_line(&mut line);
        assert!(line.contains("longer than"), "{line}");
    }
    assert_eq!(
        full_dump(&sys),
        dump,
        "a refused command changed the kernel"
    );
    assert_eq!(
        std::fs::read_to_string(d.state_file()).unwrap(),
        state,
        "a refused command changed the state"
    );

    // A prepared entry (no kernel effect) refuses a phase 2 before its phase 1, a phase 1 of
    // the other kind, and a second preparation under the same id.
    d.ok(&[
        "prepare-enter-net-phase-1",
        "0",
        "0",
        "1",
        "2.0.1",
        "0.0.0",
        "2",
        "3",
        "1",
        "4",
        "2",
        "1",
        "[]",
        "11",
        "12",
    ]);
    let state = std::fs::read_to_string(d.state_file()).unwrap();
    for (args, msg) in [
        (
            vec!["enter-net-phase-2", "0", "11"],
            "no identity is waiting for phase 2 of operation 11",
        ),
        (
            vec!["migrate-phase-1", "0", "11"],
            "operation 11 was prepared as enter_net, not migrate",
        ),
        (
            vec!["enter-net-phase-1", "3", "11"],
            "operation 11 was prepared for identity 0, not 3",
        ),
        (
            vec![
                "prepare-enter-net-phase-1",
                "0",
                "0",
                "1",
                "2.0.1",
                "0.0.0",
                "2",
                "3",
                "1",
                "4",
                "2",
                "1",
                "[]",
                "11",
                "null",
            ],
            "operation 11 is already prepared",
        ),
    ] {
        let (code, _, err) = d.client(&args);
        assert_ne!(code, 0, "{args:?} was accepted");
        assert!(err.contains(msg), "{args:?}: '{err}' does not name '{msg}'");
    }
    assert_eq!(
        full_dump(&sys),
        dump,
        "prepare or a refused phase changed the kernel"
    );
    assert_eq!(std::fs::read_to_string(d.state_file()).unwrap(), state);

    // A second daemon on the same instance is refused.
    let (code, _, err) = {
        let out = d
            .cmd()
            .args([
                "run",
                "--netns",
                &d.netns,
                "--topology",
                "4.2.2.2",
                "--address",
                "2.1.1.1",
                "--interface",
                "eth1",
                "--rt-tables-dir",
                "none",
            ])
            .arg("--state-dir")
            .arg(&d.state_dir)
            .output()
            .unwrap();
        (
            out.status.code(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_ne!(code, Some(0));
    assert!(err.contains("already runs"), "{err}");

    // kill -9, then restart: the kernel converges to the persisted state, nothing doubled.
    d.kill9();
    assert!(
        d.pins().join("default/link-eth1").exists(),
        "pins gone with the process"
    );
    d.start();
    assert_eq!(full_dump(&sys), dump, "restart changed the kernel state");
    assert!(d.ok(&["show-identities"]).contains("address=2.1.1.1"));

    // quit: everything ntkplane installed is gone.
    let (code, _, err) = d.client(&["quit"]);
    assert_eq!(code, 0, "{err}");
    assert!(d.wait_exit(), "daemon did not exit cleanly");
    assert_eq!(full_dump(&sys), before_run, "quit left state behind");
    assert!(!d.pins().exists(), "pins left behind");
    assert!(!d.state_file().exists(), "state left behind");
    assert!(
        !d.run_dir.join(format!("{}.sock", d.name)).exists(),
        "socket left behind"
    );
}
