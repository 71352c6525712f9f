//! Issue 17: what an operator sees of a running daemon. `/metrics` scraped from inside the
//! daemon's namespace after the README's example, checked against what the kernel holds
//! (rtnetlink read-back, the classifier's counters after real pings); `monitor --json`
//! reporting the repair of a rule a third party deleted; a misbehaving HTTP client that
//! stalls nothing. The daemon is started from a `--config` file, as the unit file does.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read},
    net::{Ipv4Addr, TcpStream},
    path::PathBuf,
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use ntkplane_integration::{
    daemon::Instance,
    lab::{require_root, veth, End, Ns},
    readback::{full_dump, ntk_rules, ntk_tables_in, routes_text, table},
};
use ntkplane_lab::icmp::Pinger;

const GAMMA: &str = "00:16:3E:5B:78:D5";
const PATH_TO_GAMMA: &str = r#"[{"arc":0,"hops":[{"lvl":0,"pos":0}],"cost":10000}]"#;
/// The metrics listener: loopback of the test's own namespace.
const METRICS: &str = "127.0.0.1:9617";
const SYS_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// The README's daemon example as a config file (the unit file's way).
const CONFIG: &str = r#"
topology = "4.2.2.2"
address = "2.1.1.1"
interface = ["eth1=169.254.96.141"]
serve-anonymous = true
"#;

/// A file removed on drop.
struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The system under test and γ, its neighbour, on a veth; each can reach the other's
/// address directly (for the pings).
fn system() -> (Ns, Ns) {
    let sys = Ns::new("osys");
    let peer = Ns::new("opeer");
    veth(
        End(&sys, "eth1", "00:16:3e:ec:a3:e1", "192.0.2.1/32"),
        End(&peer, "eth1", "00:16:3e:5b:78:d5", "192.0.2.2/32"),
    );
    sys.sh("ip route add 192.0.2.2/32 dev eth1");
    peer.sh("ip route add 192.0.2.1/32 dev eth1");
    (sys, peer)
}

/// Starts the daemon from a config file, with `--metrics` on the command line.
fn start(sys: &Ns) -> (Instance, TempFile) {
    let mut d = Instance::new(sys);
    let conf = TempFile(std::env::temp_dir().join(format!("{}-conf.toml", d.name)));
    std::fs::write(&conf.0, CONFIG).unwrap();
    let path = conf.0.to_str().unwrap().to_string();
    d.start_with(&["--config", &path, "--metrics", METRICS]);
    (d, conf)
}

/// The README's commands: γ's arcs, its first ETP, a path.
fn readme_example(d: &Instance) {
    d.ok(&["add-identity-arc", "0", "eth1", GAMMA, "169.254.94.223"]);
    d.ok(&["add-qspn-arc", "0", "eth1", GAMMA]);
    d.ok(&["set-neighbour", "0", "0", "2.1.1.0"]);
    d.ok(&["set-paths", "0", "0,0", PATH_TO_GAMMA]);
}

/// One HTTP exchange with the metrics port from inside `ns`: (status line, body).
fn http(ns: &Ns, request: &[u8]) -> (String, String) {
    ntkplane_integration::metrics::http(ns, METRICS, request)
}

/// `GET /metrics`: series (name with labels, as rendered) → value.
fn scrape(ns: &Ns) -> BTreeMap<String, f64> {
    ntkplane_integration::metrics::scrape(ns, METRICS)
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("{series} missing; have: {:#?}", m.keys()))
}

/// Sum of the series of metric `name` whose labels contain every one of `with`.
fn sum(m: &BTreeMap<String, f64>, name: &str, with: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| k.split('{').next() == Some(name) && with.iter().all(|w| k.contains(w)))
        .map(|(_, v)| v)
        .sum()
}

fn neighbour(metric: &str) -> String {
    format!("{metric}{{netns=\"default\",table=\"250\",mac=\"{GAMMA}\"}}")
}

/// Sends `n` echo requests from `netns` (from `source` when given) to the system.
fn pings(netns: &str, source: Option<Ipv4Addr>, n: usize) {
    let mut p = Pinger::open(netns, source).unwrap();
    for _ in 0..n {
        p.echo(SYS_IP, Duration::from_millis(500))
            .unwrap_or_else(|e| panic!("echo from {netns}: {e}"));
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what}: not within 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn metrics_report_what_the_kernel_holds() {
    require_root();
    let (sys, peer) = system();
    let (d, _conf) = start(&sys);
    readme_example(&d);

    // Routes per table: what rtnetlink reads back from the kernel.
    let m = scrape(&sys);
    let tables = ntk_tables_in(&sys.name);
    assert!(tables.contains(&250) && tables.contains(&251), "{tables:?}");
    for t in &tables {
        let kernel = if *t == 254 {
            // main also holds the kernel's own routes: count ntkplane's.
            routes_text(&sys.name, Some(254))
                .lines()
                .filter(|l| l.contains("proto ntk"))
                .count()
        } else {
            table(&sys, *t).len()
        };
        let series = format!("ntkplane_routes{{netns=\"default\",table=\"{t}\"}}");
        assert_eq!(get(&m, &series), kernel as f64, "{series}");
    }
    assert_eq!(
        m.keys()
            .filter(|k| k.starts_with("ntkplane_routes{"))
            .count(),
        tables.len(),
        "one series per table holding ntkplane's routes"
    );
    let ids = d.json(&["show-identities"]);
    assert_eq!(
        get(&m, "ntkplane_identities"),
        ids.as_array().unwrap().len() as f64
    );
    // Every route the kernel holds was installed by this daemon, by one replace-route each.
    let routes: f64 = sum(&m, "ntkplane_routes", &[]);
    assert!(
        get(&m, "ntkplane_reconcile_ops_total{kind=\"replace-route\"}") >= routes,
        "{m:#?}"
    );
    assert!(get(&m, "ntkplane_reconcile_ops_total{kind=\"add-rule\"}") >= 2.0);
    assert!(get(&m, "ntkplane_reconcile_ops_total{kind=\"set-mark\"}") >= 1.0);
    // The start and the four commands are applies, each timed.
    let count = get(&m, "ntkplane_reconcile_seconds_count");
    assert!(count >= 5.0, "{count}");
    assert_eq!(
        get(&m, "ntkplane_reconcile_seconds_bucket{le=\"+Inf\"}"),
        count
    );
    assert!(get(&m, "ntkplane_reconcile_seconds_sum") > 0.0);
    assert_eq!(get(&m, "ntkplane_apply_failures_total"), 0.0);

    // Per-neighbour counters grow with real pings from γ; misses with pings from a MAC the
    // classifier does not know (a macvlan on γ's side, picked by a source rule).
    let p0 = get(&m, &neighbour("ntkplane_neighbour_packets_total"));
    let b0 = get(&m, &neighbour("ntkplane_neighbour_bytes_total"));
    let miss0 = get(&m, "ntkplane_classifier_misses_total{netns=\"default\"}");
    pings(&peer.name, None, 5);
    peer.sh(
        "ip link add mv0 link eth1 address 02:00:00:00:17:17 type macvlan mode bridge \
         && ip addr add 192.0.2.3/32 dev mv0 && ip link set mv0 up \
         && ip route add 192.0.2.1/32 dev mv0 src 192.0.2.3 table 100 \
         && ip rule add from 192.0.2.3 lookup 100 pref 100",
    );
    pings(&peer.name, Some(Ipv4Addr::new(192, 0, 2, 3)), 3);
    let m = scrape(&sys);
    let p1 = get(&m, &neighbour("ntkplane_neighbour_packets_total"));
    let b1 = get(&m, &neighbour("ntkplane_neighbour_bytes_total"));
    assert!(p1 - p0 >= 5.0, "packets {p0} → {p1}");
    // An echo request is at least an IPv4 header and an ICMP header long.
    assert!(b1 - b0 >= 5.0 * 28.0, "bytes {b0} → {b1}");
    assert!(
        get(&m, "ntkplane_classifier_misses_total{netns=\"default\"}") - miss0 >= 3.0,
        "{m:#?}"
    );
    // The same counters as show-tables reads from the BPF maps (no traffic in between).
    let rows = d.json(&["show-tables"]);
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["table"] == 250)
        .unwrap();
    assert_eq!(row["packets"].as_u64().unwrap() as f64, p1, "{row}");
    if let Some(fp) = row["fast_path"].as_object() {
        // Every packet of a known neighbour has exactly one fast-path outcome.
        let outcomes = sum(
            &m,
            "ntkplane_fast_path_packets_total",
            &[&format!("mac=\"{GAMMA}\"")],
        );
        assert_eq!(outcomes, p1, "{m:#?}");
        for (outcome, v) in fp {
            let series = format!(
                "ntkplane_fast_path_packets_total{{netns=\"default\",table=\"250\",mac=\"{GAMMA}\",outcome=\"{outcome}\"}}"
            );
            assert_eq!(get(&m, &series), v.as_u64().unwrap() as f64, "{series}");
        }
    }

    // A repair: counted by kind, and the same total as `status`.
    sys.sh("ip rule del fwmark 0xfa");
    wait_for("rule 250 put back", || {
        ntk_rules(&sys).iter().any(|r| r.table == 250)
    });
    let m = scrape(&sys);
    assert!(get(&m, "ntkplane_repairs_total{kind=\"add-rule\"}") >= 1.0);
    let status = d.json(&["status"]);
    assert_eq!(
        sum(&m, "ntkplane_repairs_total", &[]),
        status["repairs"].as_u64().unwrap() as f64,
        "{status}"
    );
}

#[test]
fn a_misbehaving_scraper_stalls_nothing() {
    require_root();
    let (sys, _peer) = system();
    let (d, _conf) = start(&sys);
    // A client that connects and says nothing, and one that sends more than a request
    // head may hold: neither holds up a scrape nor a command.
    let silent = sys
        .netns()
        .run(|| TcpStream::connect(METRICS))
        .unwrap()
        .unwrap();
    let t0 = Instant::now();
    let (status, _) = http(&sys, &vec![b'x'; 64 * 1024]);
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    let (status, _) = http(&sys, b"POST /metrics HTTP/1.1\r\n\r\n");
    assert!(status.starts_with("HTTP/1.1 405"), "{status}");
    let (status, _) = http(&sys, b"GET /other HTTP/1.1\r\n\r\n");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let m = scrape(&sys);
    assert_eq!(get(&m, "ntkplane_identities"), 1.0);
    d.ok(&["status"]);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "served while a client stayed silent: {:?}",
        t0.elapsed()
    );
    // The silent one is closed by the read deadline, with a 408.
    let mut silent = silent;
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = String::new();
    silent.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
}

/// `ntkplane --json monitor`, its stdout lines on a channel; killed on drop.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Monitor {
    fn start(d: &Instance) -> Monitor {
        let mut child = d
            .cmd()
            .args(["--json", "monitor"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The subscription is confirmed on stderr before any event.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        assert!(first.starts_with("monitoring "), "{first}");
        let (tx, lines) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Monitor { child, lines }
    }

    /// The first event (parsed) for which `pick` holds, within 10 s.
    fn expect(&self, what: &str, pick: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let t0 = Instant::now();
        let mut seen = Vec::new();
        loop {
            let left = Duration::from_secs(10).saturating_sub(t0.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let v: serde_json::Value =
                        serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
                    assert!(v["time_ms"].as_u64().is_some_and(|t| t > 0), "{l}");
                    if pick(&v) {
                        return v;
                    }
                    seen.push(l);
                }
                Err(_) => panic!("{what}: not in the stream within 10 s; saw {seen:#?}"),
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn monitor_reports_commands_and_the_repair_of_a_deleted_rule() {
    require_root();
    let (sys, _peer) = system();
    let (d, _conf) = start(&sys);
    let mon = Monitor::start(&d);
    readme_example(&d);
    let c = mon.expect("set-neighbour applied", |v| {
        v["event"] == "command" && v["command"] == "set-neighbour"
    });
    assert_eq!(c["ok"], true, "{c}");
    assert_eq!(c["request"]["address"], "2.1.1.0", "{c}");
    let (code, _, _) = d.client(&["remove-arc", "0", "7"]);
    assert_ne!(code, 0);
    let c = mon.expect("the refused remove-arc", |v| {
        v["event"] == "command" && v["command"] == "remove-arc"
    });
    assert_eq!(c["ok"], false, "{c}");
    assert!(c["error"].as_str().unwrap().contains("no arc 7"), "{c}");

    // A third party deletes the fwmark rule: the daemon puts it back and says so.
    assert!(ntk_rules(&sys).iter().any(|r| r.table == 250));
    sys.sh("ip rule del fwmark 0xfa");
    let r = mon.expect("repair of the rule", |v| v["event"] == "repair");
    assert_eq!(r["kind"], "add-rule", "{r}");
    assert_eq!(r["netns"], "default", "{r}");
    assert_eq!(
        r["detail"], "rule pref 32764 fwmark 0xfa/0xffffffff lookup 250",
        "{r}"
    );
    assert!(
        ntk_rules(&sys).iter().any(|r| r.table == 250),
        "the rule is back in the kernel"
    );

    // A second monitor sees the same stream; a stopping daemon ends both.
    let mon2 = Monitor::start(&d);
    d.ok(&["remove-paths", "0", "0,0"]);
    for m in [&mon, &mon2] {
        m.expect("remove-paths applied", |v| {
            v["event"] == "command" && v["command"] == "remove-paths"
        });
    }
    let mut d = d;
    d.ok(&["quit"]);
    assert!(d.wait_exit(), "quit exits 0");
    for m in [&mon, &mon2] {
        let s = m.expect("shutdown", |v| v["event"] == "shutdown");
        assert_eq!(s["reason"], "quit");
    }
}

/// A config file with a mistake refuses the start naming the file, the line and the key
/// (exit status 2, as bad flags), before anything is touched.
#[test]
fn a_bad_config_file_refuses_the_start_naming_file_line_and_key() {
    require_root();
    let (sys, _peer) = system();
    let d = Instance::new(&sys);
    let before = full_dump(&sys);
    for (text, line, what) in [
        (
            format!("{CONFIG}subnet_level = 1\n"),
            6,
            "unknown key 'subnet_level'",
        ),
        (
            format!("{CONFIG}metrics = \"127.0.0.1\"\n"),
            6,
            "metrics: invalid value '127.0.0.1'",
        ),
        (
            CONFIG.replace("serve-anonymous = true", "serve-anonymous = \"yes\""),
            5,
            "serve-anonymous: expected true or false",
        ),
    ] {
        let conf = TempFile(std::env::temp_dir().join(format!("{}-bad.toml", d.name)));
        std::fs::write(&conf.0, &text).unwrap();
        let mut cmd = d.cmd();
        cmd.args(["run", "--netns", &sys.name, "--config"])
            .arg(&conf.0)
            .args(["--rt-tables-dir", "none", "--state-dir"])
            .arg(&d.state_dir);
        let (code, err) = Instance::refused(cmd);
        let expected = format!("error: {}:{line}: {what}", conf.0.display());
        assert_eq!(code, 2, "{err}");
        assert!(err.starts_with(&expected), "{expected}\n{err}");
        assert!(!d.state_file().exists());
        assert_eq!(full_dump(&sys), before, "the kernel is untouched");
    }
}
