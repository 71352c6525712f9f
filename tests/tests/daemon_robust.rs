//! Issue 19: a daemon that no client, crash or third party can stall or wedge. Each test
//! reproduces one finding of the issue against the real kernel.

use std::time::{Duration, Instant};

use ntkplane_integration::{
    daemon::Instance,
    lab::{require_root, udp_through, veth, End, Ns},
    readback::{
        addresses_text, full_dump, links_in, pinned_marks, routes_text, rules_text, sysctl_in,
        table,
    },
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

/// Packets the classifier counted from γ (`show-tables`).
fn gamma_packets(d: &Instance) -> u64 {
    let rows = d.json(&["show-tables"]);
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["table"] == 250)
        .and_then(|r| r["packets"].as_u64())
        .unwrap_or(0)
}

/// γ sends datagrams to the system's eth1 address: they enter through the classifier.
fn gamma_sends(sys: &Ns, peer: &Ns) {
    peer.sh("ip route replace 192.0.2.1/32 dev eth1 && \
         ip neigh replace 192.0.2.1 lladdr 00:16:3e:ec:a3:e1 dev eth1 nud permanent");
    udp_through(
        peer,
        sys,
        "192.0.2.1:9999".parse().unwrap(),
        10,
        Duration::from_millis(300),
    );
}

/// Finding 3 (and 2's restart half): a crash that left a partial pin set, or a pinned link
/// whose interface was deleted and re-created, does not block the next start, and the
/// classifier counts again.
#[test]
fn restart_repairs_a_partial_pin_set_and_a_dead_pinned_link() {
    require_root();
    let (sys, peer) = system();
    let mut d = Instance::new(&sys);
    d.start();
    with_gamma(&d);
    let pins = d.pins().join("default");
    gamma_sends(&sys, &peer);
    let counted = gamma_packets(&d);
    assert!(counted >= 10, "{counted}");

    // A crash after the maps were pinned and before the program was: maps only.
    d.kill9();
    std::fs::remove_file(pins.join("link-eth1")).unwrap();
    std::fs::remove_file(pins.join("prog")).unwrap();
    assert!(pins.join("NTK_NEIGHBOURS").exists());
    d.start();
    assert!(pins.join("prog").exists() && pins.join("link-eth1").exists());
    gamma_sends(&sys, &peer);
    assert!(
        gamma_packets(&d) >= 10,
        "the classifier does not count after the repair"
    );

    // The interface deleted and re-created while no daemon ran: the pinned link is dead.
    d.kill9();
    sys.sh("ip link del eth1");
    veth(
        End(&sys, "eth1", "00:16:3e:ec:a3:e1", "192.0.2.1/32"),
        End(&peer, "eth1", "00:16:3e:5b:78:d5", "192.0.2.2/32"),
    );
    d.start();
    let before = gamma_packets(&d);
    gamma_sends(&sys, &peer);
    assert!(
        gamma_packets(&d) >= before + 10,
        "the classifier is not attached to the re-created interface"
    );
    assert!(routes_text(&sys.name, Some(250)).contains("proto ntk"));
}

/// Finding 6 and 9's quit half: with one step failing (the rt_tables file replaced by a
/// directory), every other step still runs, the daemon exits non-zero, and the sysctls and
/// the interface's admin state are back to what they were before `run`.
#[test]
fn quit_attempts_every_step_and_restores_host_settings() {
    require_root();
    let (sys, _peer) = system();
    sys.sh("ip link set eth1 down");
    let keys = [
        "net/ipv4/ip_forward",
        "net/ipv4/conf/all/rp_filter",
        "net/ipv4/conf/eth1/rp_filter",
        "net/ipv4/conf/eth1/arp_ignore",
        "net/ipv4/conf/eth1/arp_announce",
    ];
    let before: Vec<String> = keys.iter().map(|k| sysctl_in(&sys.name, k)).collect();
    assert!(!links_in(&sys.name)["eth1"].up);
    let rt_dir = std::env::temp_dir().join(format!("{}-rt", sys.name));
    let mut d = Instance::new(&sys);
    let mut opts = ntkplane_integration::daemon::REFERENCE.to_vec();
    let rt = rt_dir.display().to_string();
    opts.extend(["--rt-tables-dir", &rt]);
    d.start_with(&opts);
    with_gamma(&d);
    assert_eq!(sysctl_in(&sys.name, "net/ipv4/ip_forward"), "1");
    assert!(links_in(&sys.name)["eth1"].up);
    let conf = rt_dir.join(format!("{}.conf", d.name));
    assert!(conf.exists());
    std::fs::remove_file(&conf).unwrap();
    std::fs::create_dir_all(conf.join("blocker")).unwrap();

    let (code, _, err) = d.client(&["quit"]);
    assert_ne!(code, 0, "a failed quit step reported success");
    assert!(err.contains(&conf.display().to_string()), "{err}");
    let mut child = d.child.take().unwrap();
    let st = child.wait().unwrap();
    assert!(
        !st.success(),
        "the daemon exited 0 after a failed quit step"
    );
    // Everything else is gone.
    assert!(table(&sys, 250).is_empty() && table(&sys, 251).is_empty());
    assert!(!rules_text(&sys.name).contains("proto ntk"));
    assert!(!sys.sh("nft list tables").contains("ntkplane"));
    assert!(!d.pins().join("default").exists(), "pins left behind");
    let after: Vec<String> = keys.iter().map(|k| sysctl_in(&sys.name, k)).collect();
    assert_eq!(after, before, "sysctls not restored");
    assert!(!links_in(&sys.name)["eth1"].up, "eth1 left up");
    let _ = std::fs::remove_dir_all(&rt_dir);
}

/// Finding 5: a first start that fails late (here `nft` is not found) removes everything it
/// installed; a restart with options that differ from the persisted ones is refused naming
/// them, and `--discard-state` starts afresh.
#[test]
fn a_failed_start_leaves_nothing_and_changed_options_are_refused() {
    require_root();
    let (sys, _peer) = system();
    let before = full_dump(&sys);
    let mut d = Instance::new(&sys);
    let empty = std::env::temp_dir().join(format!("{}-nopath", sys.name));
    std::fs::create_dir_all(&empty).unwrap();
    let mut cmd = d.run_cmd(&[]);
    cmd.env("PATH", &empty);
    let (code, err) = Instance::refused(cmd);
    assert_ne!(code, 0);
    assert!(err.contains("nft"), "{err}");
    assert_eq!(
        full_dump(&sys),
        before,
        "the failed start left kernel state behind"
    );
    assert!(!d.pins().join("default").exists(), "pins left behind");
    assert!(!d.state_file().exists(), "state.json left behind");
    assert!(!d.run_dir.join(format!("{}.sock", d.name)).exists());
    let _ = std::fs::remove_dir_all(&empty);

    // A restart with another topology or address is refused, naming the differences.
    d.start();
    d.kill9();
    let mut other: Vec<&str> = ntkplane_integration::daemon::REFERENCE.to_vec();
    other[1] = "4.2.2.4";
    other[3] = "2.1.1.3";
    let mut cmd = d.cmd();
    cmd.args(["run", "--netns", &d.netns])
        .args(&other)
        .args(["--rt-tables-dir", "none", "--state-dir"])
        .arg(&d.state_dir);
    let (code, err) = Instance::refused(cmd);
    assert_ne!(code, 0);
    assert!(
        err.contains("--topology 4.2.2.2 (persisted) vs 4.2.2.4 (given)")
            && err.contains("--address 2.1.1.1 (persisted) vs 2.1.1.3 (given)")
            && err.contains("--discard-state"),
        "{err}"
    );
    // The same options restart; --discard-state with the new ones starts afresh.
    d.start();
    d.kill9();
    other.push("--discard-state");
    d.start_with(&other);
    assert!(d.ok(&["show-identities"]).contains("address=2.1.1.3"));
}

/// Finding 4: a command whose kernel apply fails (a third party removed the `main` rule, so
/// γ's gateway is unreachable) is not persisted; once the kernel is fixed, the same command
/// and a restart work.
#[test]
fn a_command_the_kernel_refuses_is_not_persisted() {
    require_root();
    let (sys, _peer) = system();
    let mut d = Instance::new(&sys);
    d.start();
    d.ok(&["add-identity-arc", "0", "eth1", GAMMA, "169.254.94.223"]);
    d.ok(&["add-qspn-arc", "0", "eth1", GAMMA]);
    d.ok(&["set-neighbour", "0", "0", "2.1.1.0"]);
    let state = std::fs::read_to_string(d.state_file()).unwrap();
    sys.sh("ip rule del pref 32766");
    let (code, _, err) = d.client(&["set-paths", "0", "0,0", PATH_TO_GAMMA]);
    assert_ne!(code, 0);
    assert!(err.contains("not applied"), "{err}");
    assert_eq!(
        std::fs::read_to_string(d.state_file()).unwrap(),
        state,
        "a command the kernel refused was persisted"
    );
    // Later commands are not wedged by it.
    d.ok(&[
        "add-identity-arc",
        "0",
        "eth1",
        "02:00:00:00:00:09",
        "169.254.1.9",
    ]);
    sys.sh("ip rule add pref 32766 lookup main");
    d.ok(&["set-paths", "0", "0,0", PATH_TO_GAMMA]);
    assert!(routes_text(&sys.name, Some(251)).contains("10.0.0.22 via 169.254.94.223"));
    d.kill9();
    d.start();
    assert!(routes_text(&sys.name, Some(251)).contains("10.0.0.22 via 169.254.94.223"));
}

fn socket(d: &Instance) -> std::path::PathBuf {
    d.run_dir.join(format!("{}.sock", d.name))
}

/// `status` through the CLI, timed.
fn timed_status(d: &Instance) -> Duration {
    let t0 = Instant::now();
    assert!(d.ok(&["status"]).contains("identities: 1"));
    t0.elapsed()
}

/// Findings 1 and 8: a client that sends half a line, one that sends requests and never
/// reads the replies, hold nobody up; one connection carries more than 1 MiB of requests;
/// SIGTERM acts within a second whatever the clients do.
#[test]
fn no_client_stalls_the_control_plane() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    require_root();
    let (sys, _peer) = system();
    let mut d = Instance::new(&sys);
    d.start();

    // Half a line, then silence.
    let mut half = UnixStream::connect(socket(&d)).unwrap();
    half.write_all(br#"{"command":"sta"#).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = timed_status(&d);
    assert!(
        t < Duration::from_secs(1),
        "status took {t:?} behind a half-line client"
    );

    // Requests by the thousand, replies never read.
    let mut deaf = UnixStream::connect(socket(&d)).unwrap();
    deaf.set_nonblocking(true).unwrap();
    let req = b"{\"command\":\"status\"}\n".repeat(2000);
    let mut sent = 0;
    let t0 = Instant::now();
    while sent < req.len() && t0.elapsed() < Duration::from_secs(2) {
        match deaf.write(&req[sent..]) {
            Ok(n) => sent += n,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let t = timed_status(&d);
    assert!(
        t < Duration::from_secs(1),
        "status took {t:?} behind a deaf client"
    );

    // More than 1 MiB on one connection: three requests of 500 kB each (JSON whitespace).
    let s = UnixStream::connect(socket(&d)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let pad = " ".repeat(500_000);
    for i in 0..3 {
        writeln!(w, "{{\"command\":\"status\"}}{pad}").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"ok\":true"), "request {i}: {line}");
    }

    // SIGTERM with the half-line and deaf clients still connected.
    let pid = d.child.as_ref().unwrap().id() as i32;
    let t0 = Instant::now();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut child = d.child.take().unwrap();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "SIGTERM not acted on within a second"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(st.success());
    assert!(table(&sys, 251).is_empty(), "SIGTERM did not clean up");
    drop((half, deaf));
}

/// Waits up to 5 s for `ok`; panics naming `what` otherwise.
fn repaired_within_5s(what: &str, ok: impl Fn() -> bool) -> Duration {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{what}: not repaired within 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

/// Detaches the TCX link pinned at `pin` behind the daemon's back (`BPF_LINK_DETACH`).
fn detach_pinned_link(pin: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(pin.as_os_str().as_bytes()).unwrap();
    let mut attr = [0u64; 3];
    attr[0] = c.as_ptr() as u64;
    // SAFETY: BPF_OBJ_GET (7) with a zeroed attr holding the path.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 7, attr.as_ptr(), 24) };
    assert!(fd >= 0, "BPF_OBJ_GET {}", std::io::Error::last_os_error());
    let attr = [fd as u32, 0, 0, 0];
    // SAFETY: BPF_LINK_DETACH (34) with the link's fd.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 34, attr.as_ptr(), 16) };
    assert_eq!(r, 0, "BPF_LINK_DETACH {}", std::io::Error::last_os_error());
    // SAFETY: our descriptor.
    unsafe { libc::close(fd as i32) };
}

/// Finding 2: what a third party changes behind the daemon's back is repaired within 5 s
/// with no command sent, and counted in `status`.
#[test]
fn drift_is_repaired_without_a_command() {
    require_root();
    let (sys, peer) = system();
    let mut d = Instance::new(&sys);
    d.start();
    with_gamma(&d);
    let status = |d: &Instance| d.json(&["status"]);
    assert_eq!(status(&d)["dataplane_matches"], true, "{}", status(&d));
    let t250 = table(&sys, 250);
    let t251 = table(&sys, 251);
    let rules = rules_text(&sys.name);
    let nft = sys.sh("nft list table ip ntkplane");

    sys.sh("ip rule del fwmark 0xfa");
    repaired_within_5s("deleted rule", || rules_text(&sys.name) == rules);
    sys.sh("ip route flush table 250");
    repaired_within_5s("flushed table 250", || table(&sys, 250) == t250);
    sys.sh("ip route flush table 251");
    repaired_within_5s("flushed table 251", || table(&sys, 251) == t251);
    sys.sh("ip addr del 10.0.0.23/32 dev eth1");
    repaired_within_5s("deleted address", || {
        addresses_text(&sys.name, Some("eth1")).contains("10.0.0.23/32")
    });
    sys.sh("nft delete table ip ntkplane");
    repaired_within_5s("deleted nft table", || {
        sys.try_sh("nft list table ip ntkplane").status.success()
            && sys.sh("nft list table ip ntkplane") == nft
    });
    let chain = nft
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("chain ")
                .and_then(|c| c.split(' ').next())
        })
        .unwrap()
        .to_string();
    sys.sh(&format!("nft add rule ip ntkplane {chain} drop"));
    repaired_within_5s("foreign drop rule", || {
        !sys.sh("nft list table ip ntkplane").contains("drop")
    });

    // γ's entry deleted from the classifier's map: put back.
    {
        use aya::maps::{HashMap, Map, MapData};
        use ntkplane_common::{MacKey, NeighbourEntry};
        let pin = d.pins().join("default/NTK_NEIGHBOURS");
        let mut m: HashMap<MapData, MacKey, NeighbourEntry> =
            HashMap::try_from(Map::from_map_data(MapData::from_pin(&pin).unwrap()).unwrap())
                .unwrap();
        let mac: ntkplane::mac::MacAddr = GAMMA.parse().unwrap();
        m.remove(&MacKey::new(mac.0)).unwrap();
    }
    let marks = || pinned_marks(&d.pins().join("default"));
    repaired_within_5s("deleted map entry", || marks().len() == 1);

    // The classifier's TCX link detached: re-attached, and it counts again.
    detach_pinned_link(&d.pins().join("default/link-eth1"));
    repaired_within_5s("detached TCX link", || {
        let before = gamma_packets(&d);
        gamma_sends(&sys, &peer);
        gamma_packets(&d) >= before + 10
    });
    // The interface deleted and re-created while the daemon runs: addresses, sysctls and the
    // classifier come back on the new one.
    sys.sh("ip link del eth1");
    veth(
        End(&sys, "eth1", "00:16:3e:ec:a3:e1", "192.0.2.1/32"),
        End(&peer, "eth1", "00:16:3e:5b:78:d5", "192.0.2.2/32"),
    );
    repaired_within_5s("re-created interface", || {
        addresses_text(&sys.name, Some("eth1")).contains("10.0.0.23/32")
            && sysctl_in(&sys.name, "net/ipv4/conf/eth1/arp_ignore") == "1"
            && {
                let before = gamma_packets(&d);
                gamma_sends(&sys, &peer);
                gamma_packets(&d) >= before + 10
            }
    });
    let s = status(&d);
    assert!(s["repairs"].as_u64().unwrap() >= 7, "{s}");
    repaired_within_5s("status says the dataplane matches", || {
        status(&d)["dataplane_matches"] == true
    });
    // show-tables puts the kernel next to the model.
    for row in d.json(&["show-tables"]).as_array().unwrap() {
        assert_eq!(row["kernel_routes"], row["routes"], "{row}");
        assert_eq!(row["kernel_rule"], row["rule"], "{row}");
    }
}

/// Finding 4's restart half and "failures never wedge": a restart whose state the kernel
/// partly refuses (γ's gateway unreachable: the `main` rule removed and table 251 flushed
/// while no daemon ran) still starts, installs everything else, reports the failure, and
/// installs the rest once the kernel allows it, with no command.
#[test]
fn a_restart_the_kernel_partly_refuses_still_starts_and_retries() {
    require_root();
    let (sys, _peer) = system();
    let mut d = Instance::new(&sys);
    let mut opts = ntkplane_integration::daemon::REFERENCE.to_vec();
    opts.extend(["--resync-interval", "1"]);
    d.start_with(&opts);
    with_gamma(&d);
    let t251 = table(&sys, 251);
    d.kill9();
    sys.sh("ip rule del pref 32766 && ip route flush table 251");
    d.start_with(&opts);
    let s = d.json(&["status"]);
    assert_eq!(s["dataplane_matches"], false, "{s}");
    assert!(s["failures"]["start"].is_string(), "{s}");
    let now = routes_text(&sys.name, Some(251));
    assert!(
        now.contains("unreachable") && !now.contains("10.0.0.22 via"),
        "the installable routes are missing: {now}"
    );
    sys.sh("ip rule add pref 32766 lookup main");
    repaired_within_5s("refused routes once the kernel allows them", || {
        table(&sys, 251) == t251 && d.json(&["status"])["dataplane_matches"] == true
    });
}
