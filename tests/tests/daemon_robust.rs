//! Issue 19: a daemon that no client, crash or third party can stall or wedge. Each test
//! reproduces one finding of the issue against the real kernel.

use std::time::{Duration, Instant};

use ntkplane_integration::{
    daemon::Instance,
    lab::{require_root, veth, End, Ns},
    readback::{routes_text, rules_text, table},
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

/// γ as a qspn neighbour with one path: table 250 and its rule exist.
fn with_gamma(d: &Instance) {
    d.ok(&["add-identity-arc", "0", "eth1", GAMMA, "169.254.94.223"]);
    d.ok(&["add-qspn-arc", "0", "eth1", GAMMA]);
    d.ok(&["set-neighbour", "0", "0", "2.1.1.0"]);
    d.ok(&["set-paths", "0", "0,0", PATH_TO_GAMMA]);
}

/// Finding 7 (and 3's simultaneous starts): one daemon per instance, one instance per
/// namespace; a refused second daemon leaves the first one's tables intact.
#[test]
fn ownership_one_daemon_per_instance_one_instance_per_namespace() {
    require_root();
    let (sys, _peer) = system();
    let mut a = Instance::new(&sys);
    a.start();
    with_gamma(&a);
    let t250 = table(&sys, 250);
    assert_eq!(t250.len(), 18);

    // The same instance again.
    let (code, err) = a.run_refused(&[]);
    assert_ne!(code, 0);
    assert!(err.contains("already runs for instance"), "{err}");

    // Another instance on the same namespace.
    let b = Instance::named(&sys, &format!("{}o", sys.name));
    let (code, err) = b.run_refused(&[]);
    assert_ne!(code, 0);
    assert!(err.contains("is already owned by instance"), "{err}");
    assert_eq!(
        table(&sys, 250),
        t250,
        "the refused instance touched table 250"
    );
    assert!(rules_text(&sys.name).contains("lookup 250"));
    assert!(a.ok(&["status"]).contains("identities: 1"));
    assert!(
        !b.state_file().exists(),
        "the refused instance persisted a state"
    );
    drop(b);

    // Two starts at once of a fresh instance: exactly one runs, the other is refused.
    a.ok(&["quit"]);
    assert!(a.wait_exit());
    let (sys2, _peer2) = system();
    let c = Instance::new(&sys2);
    let mut kids: Vec<_> = (0..2)
        .map(|_| {
            c.run_cmd(&[])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let t0 = Instant::now();
    let mut exited = 0;
    while t0.elapsed() < Duration::from_secs(5) && exited == 0 {
        exited = kids
            .iter_mut()
            .map(|k| k.try_wait().unwrap().is_some())
            .filter(|e| *e)
            .count();
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let exited: Vec<bool> = kids
        .iter_mut()
        .map(|k| k.try_wait().unwrap().is_some())
        .collect();
    assert_eq!(exited.iter().filter(|e| **e).count(), 1, "{exited:?}");
    // The winner may still be starting (a loaded machine).
    let t0 = Instant::now();
    while c.client(&["status"]).0 != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the winner never came up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let running = kids
        .iter_mut()
        .map(|k| k.try_wait().unwrap().is_none())
        .filter(|r| *r)
        .count();
    assert_eq!(running, 1);
    assert!(routes_text(&sys2.name, Some(251)).contains("proto ntk"));
    c.ok(&["quit"]);
    for mut k in kids {
        let _ = k.wait();
    }
}
