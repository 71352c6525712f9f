//! The convergence benchmark's lab (`bench-convergence`): lines and grids of systems, one
//! namespace each, joined by veth pairs; one routing daemon per system (ntkplane with its
//! own protocols, or babeld as the anchor); and the checks that say "converged": routes
//! read back through rtnetlink, ICMP echo between sampled pairs.
//!
//! Everything is owned: namespaces are deleted and daemons killed on drop, also when a
//! measurement panics half-way.
use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use ntkplane::{
    addr::{destinations, report::AddrReport, HCoord, NtkAddress, Topology},
    kernel::rtnl::RouteEntry,
};
use ntkplane_lab::icmp::{Answer, Pinger};

use crate::{
    daemon::Instance,
    lab::{must, Ns},
};

/// Two levels of 8: a grid row (or eight nodes of a line) is one level-1 g-node. Written in
/// qspnclient's notation, highest level first.
pub const TOPOLOGY: &str = "8.8";
/// Table `ntk`, where ntkplane's egress routes live (the rules send local traffic there).
pub const NTK_TABLE: u32 = 251;
/// The kernel's main table, where babeld installs its routes.
pub const MAIN_TABLE: u32 = 254;
/// RTN_UNICAST.
const UNICAST: u8 = 1;

/// Share of the sampled pairs that must answer within one round.
pub const DELIVERY: f64 = 0.95;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `n` systems in a row.
    Line(usize),
    /// `k`×`k` systems, each linked to its 4-neighbours.
    Grid(usize),
}

impl Shape {
    /// `line:N` or `grid:K`.
    pub fn parse(s: &str) -> Result<Shape, String> {
        let (kind, n) = s
            .split_once(':')
            .ok_or_else(|| format!("{s}: expected line:N or grid:K"))?;
        let n: usize = n.parse().map_err(|_| format!("{s}: not a number"))?;
        // The addresses of TOPOLOGY: 8 positions per level.
        match kind {
            "line" if (2..=64).contains(&n) => Ok(Shape::Line(n)),
            "grid" if (2..=8).contains(&n) => Ok(Shape::Grid(n)),
            _ => Err(format!(
                "{s}: line:2…64 or grid:2…8 (addresses of topology {TOPOLOGY})"
            )),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Shape::Line(_) => "line",
            Shape::Grid(_) => "grid",
        }
    }

    pub fn label(&self) -> String {
        match self {
            Shape::Line(n) => format!("line:{n}"),
            Shape::Grid(k) => format!("grid:{k}"),
        }
    }

    pub fn nodes(&self) -> usize {
        match *self {
            Shape::Line(n) => n,
            Shape::Grid(k) => k * k,
        }
    }

    /// Node `i`'s (level-1, level-0) positions: its row and column in a grid; in a line,
    /// eight consecutive nodes per level-1 g-node.
    pub fn position(&self, i: usize) -> (u32, u32) {
        match *self {
            Shape::Line(_) => ((i / 8) as u32, (i % 8) as u32),
            Shape::Grid(k) => ((i / k) as u32, (i % k) as u32),
        }
    }

    /// Node `i`'s Netsukuku address, highest level first ("row.column").
    pub fn address(&self, i: usize) -> String {
        let (hi, lo) = self.position(i);
        format!("{hi}.{lo}")
    }

    /// The links as node pairs: right then down, row by row.
    pub fn links(&self) -> Vec<(usize, usize)> {
        match *self {
            Shape::Line(n) => (1..n).map(|i| (i - 1, i)).collect(),
            Shape::Grid(k) => {
                let mut v = Vec::new();
                for i in 0..k * k {
                    if i % k + 1 < k {
                        v.push((i, i + 1));
                    }
                    if i / k + 1 < k {
                        v.push((i, i + k));
                    }
                }
                v
            }
        }
    }

    /// Whether a link joins two level-1 g-nodes (grid rows, or groups of eight in a line):
    /// cutting it splits no g-node, which would be another problem than a reroute.
    pub fn between_gnodes(&self, (a, b): (usize, usize)) -> bool {
        self.position(a).0 != self.position(b).0
    }
}

/// The link cut by the reroute measurements and the pairs whose traffic crossed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// (a, b): `a`'s end is the one set down.
    pub link: (usize, usize),
    pub pairs: Vec<(usize, usize)>,
}

/// Up to `max` ordered pairs of distinct nodes out of `n`: all of them when that many or
/// fewer exist, else both directions between the first and the last node (the farthest
/// apart in a line or a grid) and a fixed pseudo-random choice of the others, so that every
/// system is measured on the same pairs.
pub fn sample_pairs(n: usize, max: usize) -> Vec<(usize, usize)> {
    let all: Vec<(usize, usize)> = (0..n)
        .flat_map(|a| (0..n).filter(move |b| *b != a).map(move |b| (a, b)))
        .collect();
    if all.len() <= max {
        return all;
    }
    let mut out = vec![(0, n - 1), (n - 1, 0)];
    out.truncate(max);
    // xorshift64: reproducible without a dependency.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ n as u64;
    while out.len() < max {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = all[(x % all.len() as u64) as usize];
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Ntkplane,
    Babeld,
}

impl System {
    pub fn parse(s: &str) -> Result<System, String> {
        match s {
            "ntkplane" => Ok(System::Ntkplane),
            "babeld" => Ok(System::Babeld),
            _ => Err(format!("{s}: ntkplane or babeld")),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            System::Ntkplane => "ntkplane",
            System::Babeld => "babeld",
        }
    }
    /// Where the system's routes for locally sent traffic are.
    pub fn table(&self) -> u32 {
        match self {
            System::Ntkplane => NTK_TABLE,
            System::Babeld => MAIN_TABLE,
        }
    }
}

/// One end of a link: node and its interface.
#[derive(Clone, Debug)]
pub struct Link {
    pub a: usize,
    pub a_if: String,
    pub b: usize,
    pub b_if: String,
}

/// The namespaces and links of one shape (no daemon).
pub struct Lab {
    pub shape: Shape,
    pub topology: Topology,
    pub nss: Vec<Ns>,
    /// Each node's interfaces, in creation order (`eth0`, `eth1`, …).
    pub ifaces: Vec<Vec<String>>,
    pub links: Vec<Link>,
    /// Each node's Netsukuku global address; babeld's nodes get the same one, plainly.
    pub addrs: Vec<Ipv4Addr>,
}

impl Lab {
    /// Namespaces and veth links, every interface up and without an address (ntkplane
    /// assigns its link-locals itself; babeld speaks over IPv6 link-local). For babeld, each
    /// node's address as a /32 on `lo`, IPv4 forwarding on and reverse-path filtering off
    /// (babeld does not set them; ntkplane's daemon does).
    pub fn build(shape: Shape, system: System) -> Lab {
        let topology: Topology = TOPOLOGY.parse().expect("TOPOLOGY parses");
        let n = shape.nodes();
        let addrs: Vec<Ipv4Addr> = (0..n)
            .map(|i| {
                let a = NtkAddress::parse(&shape.address(i), &topology).expect("address fits");
                AddrReport::new(&topology, &a, 0, false)
                    .expect("subnet level 0")
                    .global
                    .expect("a real address has a global IPv4")
            })
            .collect();
        let nss: Vec<Ns> = (0..n).map(|_| Ns::new("c")).collect();
        let mut ifaces: Vec<Vec<String>> = vec![Vec::new(); n];
        let mut links = Vec::new();
        for (a, b) in shape.links() {
            let a_if = format!("eth{}", ifaces[a].len());
            let b_if = format!("eth{}", ifaces[b].len());
            must(Command::new("ip").args([
                "link",
                "add",
                &a_if,
                "netns",
                &nss[a].name,
                "type",
                "veth",
                "peer",
                "name",
                &b_if,
                "netns",
                &nss[b].name,
            ]));
            ifaces[a].push(a_if.clone());
            ifaces[b].push(b_if.clone());
            links.push(Link { a, a_if, b, b_if });
        }
        for (i, ns) in nss.iter().enumerate() {
            let mut batch = String::new();
            for f in &ifaces[i] {
                let _ = writeln!(batch, "link set {f} up");
            }
            if system == System::Babeld {
                let _ = writeln!(batch, "address add {}/32 dev lo", addrs[i]);
                ns.sh("echo 1 > /proc/sys/net/ipv4/ip_forward \
                       && echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter \
                       && echo 0 > /proc/sys/net/ipv4/conf/default/rp_filter");
            }
            ip_batch(&ns.name, &batch);
        }
        Lab {
            shape,
            topology,
            nss,
            ifaces,
            links,
            addrs,
        }
    }

    /// The link between nodes `a` and `b`.
    pub fn link(&self, a: usize, b: usize) -> &Link {
        self.links
            .iter()
            .find(|l| (l.a, l.b) == (a, b) || (l.a, l.b) == (b, a))
            .expect("a link of the shape")
    }

    /// Every node's routes (all tables), read through rtnetlink: one dump per node.
    pub fn routes(&self) -> Result<Vec<Vec<RouteEntry>>, String> {
        self.nss
            .iter()
            .map(|ns| ntkplane_lab::readback::routes_in(&ns.name))
            .collect()
    }

    /// What keeps `system` from being routed everywhere: how many (node, destination)
    /// checks fail, and the first one. `(0, _)` means converged as far as routes go.
    ///
    /// Every node needs a unicast route (longest prefix match in the system's table, not an
    /// `unreachable`) to every other node's address. For ntkplane also every destination
    /// g-node of `D(n)` (all kinds: global, anonymizing, internal) that holds a node of the
    /// shape must be a unicast route in `ntk`: the path solver's tables for the same graph
    /// would route exactly those, at costs we cannot compare (ntkplane's are measured RTTs).
    pub fn missing_routes(&self, system: System) -> Result<(usize, String), String> {
        Ok(self.missing_in(&self.routes()?, system))
    }

    /// [`Lab::missing_routes`] over routes already read (`routes[i]`: node `i`'s).
    pub fn missing_in(&self, routes: &[Vec<RouteEntry>], system: System) -> (usize, String) {
        let table = system.table();
        let nas: Vec<NtkAddress> = (0..self.addrs.len()).map(|i| self.ntk_address(i)).collect();
        let mut missing = 0;
        let mut first = String::new();
        let mut note = |m: String| {
            if missing == 0 {
                first = m;
            }
            missing += 1;
        };
        for (a, rs) in routes.iter().enumerate() {
            for (b, dst) in self.addrs.iter().enumerate() {
                if a != b && route_dev(rs, table, *dst).is_none() {
                    note(format!(
                        "{} has no route to {} ({dst})",
                        self.shape.address(a),
                        self.shape.address(b)
                    ));
                }
            }
            if system != System::Ntkplane {
                continue;
            }
            let me = &nas[a];
            for d in destinations(&self.topology, me, 0) {
                if !self.holds_a_node(&nas, me, d.hc) {
                    continue;
                }
                let routed = rs.iter().any(|r| {
                    r.table == NTK_TABLE && r.dst == d.prefix && r.kind == UNICAST && r.tos == 0
                });
                if !routed {
                    note(format!(
                        "{} has no route to g-node ({}, {}) {:?} {}",
                        self.shape.address(a),
                        d.hc.lvl,
                        d.hc.pos,
                        d.kind,
                        d.prefix
                    ));
                }
            }
        }
        (missing, first)
    }

    /// Whether `me`'s destination g-node `hc` holds a node of the shape: one whose position
    /// at `hc.lvl` is `hc.pos` and that shares `me`'s positions above it.
    fn holds_a_node(&self, nas: &[NtkAddress], me: &NtkAddress, hc: HCoord) -> bool {
        nas.iter().any(|y| {
            y.pos(hc.lvl) == hc.pos
                && (hc.lvl + 1..self.topology.levels()).all(|l| y.pos(l) == me.pos(l))
        })
    }

    pub fn ntk_address(&self, i: usize) -> NtkAddress {
        NtkAddress::parse(&self.shape.address(i), &self.topology).expect("address fits")
    }

    /// Whether `a`, an end of `link`, sends to `b` over it: its route for `b`'s address
    /// leaves by its end of the link. Locally sent traffic follows the table the system's
    /// rules give it (`ntk`, `main`), so this is exact, unlike a path traced further:
    /// ntkplane forwards transit traffic by per-neighbour tables that the previous hop
    /// selects (a trace through `ntk` picked links that, silenced, cut nothing).
    fn sends_over(
        &self,
        routes: &[Vec<RouteEntry>],
        system: System,
        (x, y): (usize, usize),
        a: usize,
        b: usize,
    ) -> bool {
        let l = self.link(x, y);
        let dev = if a == l.a {
            &l.a_if
        } else if a == l.b {
            &l.b_if
        } else {
            return false;
        };
        route_dev(&routes[a], system.table(), self.addrs[b]).as_deref() == Some(dev.as_str())
    }

    /// Of `pairs`, those whose source sends over `link` now.
    pub fn crossing(
        &self,
        system: System,
        link: (usize, usize),
        pairs: &[(usize, usize)],
    ) -> Result<Vec<(usize, usize)>, String> {
        let routes = self.routes()?;
        Ok(pairs
            .iter()
            .copied()
            .filter(|&(a, b)| self.sends_over(&routes, system, link, a, b))
            .collect())
    }

    /// The link to cut: of the links between two level-1 g-nodes (cutting one splits no
    /// g-node, which would be another problem than a reroute), the one over which its two
    /// ends send to the most destinations (ties: the one nearest the middle), with those
    /// (end, destination) pairs, at most `max` of them, spread evenly. The more pairs, the
    /// less one lucky echo decides the time.
    pub fn choose_cut(&self, system: System, max: usize) -> Result<Cut, String> {
        let routes = self.routes()?;
        let n = self.addrs.len();
        let centre = |(x, y): (usize, usize)| {
            let ((rx, cx), (ry, cy)) = (self.shape.position(x), self.shape.position(y));
            let (rows, cols) = match self.shape {
                Shape::Grid(k) => (k as i64 - 1, k as i64 - 1),
                Shape::Line(n) => (((n - 1) / 8) as i64, 7),
            };
            (rx as i64 + ry as i64 - rows).abs() + (cx as i64 + cy as i64 - cols).abs()
        };
        let (link, mut pairs) = self
            .links
            .iter()
            .map(|l| (l.a, l.b))
            .filter(|l| self.shape.between_gnodes(*l))
            .map(|l| {
                let over: Vec<(usize, usize)> = [l.0, l.1]
                    .into_iter()
                    .flat_map(|end| (0..n).map(move |b| (end, b)))
                    .filter(|&(end, b)| end != b && self.sends_over(&routes, system, l, end, b))
                    .collect();
                (l, over)
            })
            .filter(|(_, over)| !over.is_empty())
            .min_by_key(|(l, over)| (std::cmp::Reverse(over.len()), centre(*l)))
            .ok_or("no node sends over a link between two g-nodes")?;
        if pairs.len() > max {
            let step = pairs.len().div_ceil(max);
            pairs = pairs.into_iter().step_by(step).collect();
        }
        Ok(Cut { link, pairs })
    }

    /// One echo request per pair, all at once, each from the source node's address; how
    /// many got their reply from the destination within `timeout`.
    pub fn ping_round(&self, pairs: &[(usize, usize)], timeout: Duration) -> usize {
        std::thread::scope(|s| {
            let hs: Vec<_> = pairs
                .iter()
                .map(|&(a, b)| {
                    s.spawn(move || {
                        // Binding fails while ntkplane has not yet put its address on an
                        // interface: not answered, like any other failure.
                        let Ok(mut p) = Pinger::open(&self.nss[a].name, Some(self.addrs[a])) else {
                            return false;
                        };
                        matches!(p.echo(self.addrs[b], timeout),
                            Ok(Answer::Reply { from }) if from == self.addrs[b])
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| matches!(h.join(), Ok(true)))
                .filter(|answered| *answered)
                .count()
        })
    }

    /// Sets node `a`'s end of its link to `b` down (the peer loses carrier) or up again.
    pub fn set_link(&self, a: usize, b: usize, up: bool) {
        let l = self.link(a, b);
        let dev = if l.a == a { &l.a_if } else { &l.b_if };
        ip_batch(
            &self.nss[a].name,
            &format!("link set {dev} {}\n", if up { "up" } else { "down" }),
        );
    }

    /// Makes the link between `a` and `b` drop every frame, at both ends, with nothing said
    /// to anyone (carrier stays up): only liveness timers can notice. Ingress and egress
    /// both: a TC program (ntkplane's fast path) that redirects at ingress runs before the
    /// netfilter ingress hook, so an ingress drop alone does not stop forwarded traffic.
    pub fn silence_link(&self, a: usize, b: usize) {
        let l = self.link(a, b);
        for (node, dev) in [(l.a, &l.a_if), (l.b, &l.b_if)] {
            self.nss[node].sh(&format!(
                "nft add table netdev ntkbench \
                 && nft add chain netdev ntkbench in_{dev} \
                 '{{ type filter hook ingress device \"{dev}\" priority 0; policy drop; }}' \
                 && nft add chain netdev ntkbench out_{dev} \
                 '{{ type filter hook egress device \"{dev}\" priority 0; policy drop; }}'"
            ));
        }
    }
}

/// Runs `ip -n NETNS -batch -` with `script` on its standard input; panics on failure.
fn ip_batch(netns: &str, script: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-n", netns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run ip");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ip -n {netns} -batch: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The output device of `table`'s longest-prefix match for `dst`, if that route is unicast
/// (an `unreachable` or `blackhole` match, or none, is `None`); empty for a multipath route,
/// which has no single device.
pub fn route_dev(routes: &[RouteEntry], table: u32, dst: Ipv4Addr) -> Option<String> {
    routes
        .iter()
        .filter(|r| r.table == table && r.tos == 0 && r.src.is_none() && r.dst.contains(dst))
        .max_by_key(|r| (r.dst.prefix_len(), std::cmp::Reverse(r.metric.unwrap_or(0))))
        .filter(|r| r.kind == UNICAST)
        .map(|r| r.dev.clone().unwrap_or_default())
}

/// Options of the daemons under test.
#[derive(Clone, Debug)]
pub struct DaemonOpts {
    /// babeld's `-h` and `-H` (seconds).
    pub babel_hello: u32,
    /// ntkplane's `--announce-ms`, `--probe-ms`, `--dead-after-ms`.
    pub announce_ms: u32,
    pub probe_ms: u32,
    pub dead_after_ms: u32,
    /// More options for every ntkplane daemon (e.g. `--bootstrap-timeout-ms 2000`).
    pub ntkplane_extra: Vec<String>,
}

/// babeld in one namespace, in the foreground (its pid is ours to kill), with its pid,
/// state and log files in a directory of its own; killed and cleaned up on drop.
pub struct Babeld {
    child: Child,
    pub dir: PathBuf,
}

impl Babeld {
    /// The options given to every babeld, besides the interfaces (reported in the JSON).
    pub fn args(o: &DaemonOpts) -> Vec<String> {
        let h = o.babel_hello.to_string();
        // No configuration file (a machine's /etc/babeld.conf must not change the anchor);
        // the hello interval for wireless (-h) and wired (-H) interfaces alike, veths being
        // detected as wired.
        ["-c", "/dev/null", "-h", &h, "-H", &h]
            .map(String::from)
            .to_vec()
    }

    pub fn start(ns: &Ns, ifaces: &[String], o: &DaemonOpts) -> Babeld {
        let dir = std::env::temp_dir().join(format!("{}-babeld", ns.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "babeld"])
            .args(Self::args(o))
            .arg("-I")
            .arg(dir.join("pid"))
            .arg("-S")
            .arg(dir.join("state"))
            .arg("-L")
            .arg(dir.join("log"))
            .args(ifaces)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start babeld (cargo xtask bench convergence installs it)");
        Babeld { child, dir }
    }

    /// Whether it is still running (it exits at once on a bad option or interface).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Babeld {
    fn drop(&mut self) {
        // `ip netns exec` execs babeld: this pid is babeld's own.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// ntkplane's options for node `i` of `lab`, besides those `Instance::start_with` adds.
pub fn ntkplane_args(lab: &Lab, i: usize, o: &DaemonOpts) -> Vec<String> {
    let mut v: Vec<String> = [
        "--topology".to_string(),
        TOPOLOGY.into(),
        "--address".into(),
        lab.shape.address(i),
    ]
    .to_vec();
    for f in &lab.ifaces[i] {
        v.extend(["--interface".into(), f.clone()]);
    }
    v.extend(
        [
            "--paths",
            "protocol",
            "--qspn-arcs",
            "auto",
            "--announce-ms",
            &o.announce_ms.to_string(),
            "--probe-ms",
            &o.probe_ms.to_string(),
            "--dead-after-ms",
            &o.dead_after_ms.to_string(),
        ]
        .map(String::from),
    );
    v.extend(o.ntkplane_extra.iter().cloned());
    v
}

/// The daemons of one run. Declared before the [`Lab`] that holds their namespaces in any
/// struct or scope, so that they stop first.
pub enum Daemons {
    Ntkplane(Vec<Instance>),
    Babeld(Vec<Babeld>),
}

impl Daemons {
    /// Starts one daemon per node, in node order, and returns once every one is spawned
    /// (not once it answers: see below).
    pub fn start(system: System, lab: &Lab, o: &DaemonOpts) -> Daemons {
        match system {
            System::Ntkplane => {
                let mut v: Vec<Instance> = lab.nss.iter().map(Instance::new).collect();
                // All at once, as the systems of a network boot (and as babeld's are). Not
                // waited for one by one (`ntkplane status` until it answers): the kernel's
                // routes and the pings say when the network works, a daemon that fails to
                // start is `dead`, and a poll per daemon every 50 ms (a process each) would
                // take the CPUs the daemons are starting on — it measured the poll's own
                // order, not the network (BENCHMARKS.md, "Convergence").
                for (i, d) in v.iter_mut().enumerate() {
                    let a = ntkplane_args(lab, i, o);
                    let a: Vec<&str> = a.iter().map(|x| x.as_str()).collect();
                    d.spawn_with(&a);
                }
                Daemons::Ntkplane(v)
            }
            System::Babeld => Daemons::Babeld(
                lab.nss
                    .iter()
                    .zip(&lab.ifaces)
                    .map(|(ns, ifs)| Babeld::start(ns, ifs, o))
                    .collect(),
            ),
        }
    }

    /// A daemon that has exited, with what it said, if any.
    pub fn dead(&mut self) -> Option<String> {
        match self {
            Daemons::Babeld(v) => v.iter_mut().enumerate().find_map(|(i, b)| {
                (!b.running()).then(|| {
                    let log = b.log();
                    let tail: Vec<&str> = log.lines().rev().take(3).collect();
                    format!("babeld of node {i} exited: {}", tail.join(" / "))
                })
            }),
            Daemons::Ntkplane(v) => v.iter_mut().enumerate().find_map(|(i, d)| {
                let c = d.child.as_mut()?;
                matches!(c.try_wait(), Ok(Some(_)))
                    .then(|| format!("ntkplane of node {i} ({}) exited", d.name))
            }),
        }
    }

    /// ntkplane's `protocol` counters summed over the nodes (numbers only); `null` for
    /// babeld or when no daemon reports them.
    pub fn protocol_totals(&self) -> serde_json::Value {
        let Daemons::Ntkplane(v) = self else {
            return serde_json::Value::Null;
        };
        let mut sum = serde_json::Map::new();
        for d in v {
            let (code, out, _) = d.client(&["--json", "status"]);
            let Ok(st) = serde_json::from_str::<serde_json::Value>(&out) else {
                continue;
            };
            if code != 0 {
                continue;
            }
            if let Some(p) = st.get("protocol").and_then(|p| p.as_object()) {
                for (k, val) in p {
                    if let Some(x) = val.as_f64() {
                        let e = sum.entry(k.clone()).or_insert(serde_json::json!(0.0));
                        *e = serde_json::json!(e.as_f64().unwrap_or(0.0) + x);
                    }
                }
            }
        }
        if sum.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::Value::Object(sum)
        }
    }
}

/// A line plot of seconds against nodes, linear on both axes (`svg::plot` is log-x and
/// labels its y axis in thousands, for packet rates); dashed series are the second kind of
/// measurement named in the legend.
pub fn plot_seconds(title: &str, series: &[(crate::svg::Series, &str, bool)]) -> String {
    let (w, h) = (760.0, 440.0);
    let (left, right, top, bottom) = (70.0, 230.0, 40.0, 60.0);
    let pts = || series.iter().flat_map(|(s, _, _)| s.points.iter());
    let x1 = pts().map(|p| p.0).fold(1.0f64, f64::max) * 1.05;
    let y1 = pts().map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    let px = |x: f64| left + x / x1 * (w - left - right);
    let py = |y: f64| h - bottom - y / y1 * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        (w - right + left) / 2.0,
        esc(title)
    );
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{b}" stroke="black"/>"#,
        b = h - bottom,
        r = w - right
    );
    let mut xt: Vec<f64> = pts().map(|p| p.0).collect();
    xt.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xt.dedup();
    for t in xt {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{t}</text>"#,
            px(t),
            h - bottom + 18.0
        );
    }
    for i in 0..=5 {
        let v = y1 / 5.0 * i as f64;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#e0e0e0"/><text x="{}" y="{}" text-anchor="end">{v:.1}</text>"##,
            w - right,
            left - 6.0,
            py(v) + 4.0,
            y = py(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">systems (nodes)</text>"#,
        (w - right + left) / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(20,{}) rotate(-90)" text-anchor="middle">seconds</text>"#,
        (h - bottom + top) / 2.0
    );
    for (k, (se, color, dashed)) in series.iter().enumerate() {
        let dash = if *dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let p: Vec<String> = se
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
            p.join(" ")
        );
        for (x, y) in &se.points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                px(*x),
                py(*y)
            );
        }
        let ly = top + 20.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            w - right + 15.0,
            w - right + 40.0,
            w - right + 46.0,
            ly + 4.0,
            esc(&se.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_link_as_drawn() {
        assert_eq!(Shape::parse("line:4"), Ok(Shape::Line(4)));
        assert_eq!(Shape::parse("grid:7"), Ok(Shape::Grid(7)));
        assert!(Shape::parse("grid:9").is_err());
        assert!(Shape::parse("ring:3").is_err());
        assert_eq!(Shape::Line(4).links(), vec![(0, 1), (1, 2), (2, 3)]);
        // 2·k·(k−1) links in a k×k grid.
        assert_eq!(Shape::Grid(3).links().len(), 12);
        assert_eq!(Shape::Grid(7).links().len(), 84);
        assert_eq!(Shape::Grid(3).address(5), "1.2");
        assert_eq!(Shape::Line(16).address(9), "1.1");
    }

    #[test]
    fn links_between_gnodes() {
        assert!(Shape::Grid(3).between_gnodes((1, 4)));
        assert!(!Shape::Grid(3).between_gnodes((3, 4)));
        assert!(Shape::Line(9).between_gnodes((7, 8)));
        assert!(!Shape::Line(9).between_gnodes((6, 7)));
    }

    #[test]
    fn pairs_are_distinct_reproducible_and_bounded() {
        assert_eq!(sample_pairs(3, 30).len(), 6);
        let p = sample_pairs(49, 30);
        assert_eq!(p.len(), 30);
        assert_eq!(p[..2], [(0, 48), (48, 0)]);
        assert!(p.iter().all(|(a, b)| a != b && *a < 49 && *b < 49));
        let mut q = p.clone();
        q.sort();
        q.dedup();
        assert_eq!(q.len(), 30);
        assert_eq!(p, sample_pairs(49, 30));
    }

    #[test]
    fn longest_prefix_match_must_be_unicast() {
        let r = |dst: &str, kind: u8, dev: &str| RouteEntry {
            table: NTK_TABLE,
            dst: dst.parse().unwrap(),
            kind,
            protocol: 0,
            scope: 0,
            tos: 0,
            flags: 0,
            src: None,
            gateway: None,
            dev: Some(dev.into()),
            prefsrc: None,
            metric: None,
        };
        let rs = vec![r("10.0.0.0/29", 1, "eth0"), r("10.0.0.8/29", 7, "lo")];
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            route_dev(&rs, NTK_TABLE, ip("10.0.0.3")).as_deref(),
            Some("eth0")
        );
        assert_eq!(route_dev(&rs, NTK_TABLE, ip("10.0.0.9")), None);
        assert_eq!(route_dev(&rs, NTK_TABLE, ip("10.0.0.17")), None);
        assert_eq!(route_dev(&rs, MAIN_TABLE, ip("10.0.0.3")), None);
    }

    /// ntkplane's route check on a 3×3 grid without namespaces: the `ntk` tables a path
    /// solver would give (every destination prefix of `D(n)` routed when its g-node holds a
    /// node, `unreachable` otherwise) pass; one `unreachable` instead fails, naming it.
    #[test]
    fn ntkplane_is_converged_when_every_populated_destination_is_routed() {
        let shape = Shape::Grid(3);
        let topology: Topology = TOPOLOGY.parse().unwrap();
        let lab = Lab {
            shape,
            topology: topology.clone(),
            nss: Vec::new(),
            ifaces: Vec::new(),
            links: Vec::new(),
            addrs: (0..9)
                .map(|i| {
                    let a = NtkAddress::parse(&shape.address(i), &topology).unwrap();
                    AddrReport::new(&topology, &a, 0, false)
                        .unwrap()
                        .global
                        .unwrap()
                })
                .collect(),
        };
        let nas: Vec<NtkAddress> = (0..9).map(|i| lab.ntk_address(i)).collect();
        let entry = |dst, kind| RouteEntry {
            table: NTK_TABLE,
            dst,
            kind,
            protocol: 0,
            scope: 0,
            tos: 0,
            flags: 0,
            src: None,
            gateway: None,
            dev: Some("eth0".into()),
            prefsrc: None,
            metric: None,
        };
        let mut routes: Vec<Vec<RouteEntry>> = nas
            .iter()
            .map(|me| {
                destinations(&topology, me, 0)
                    .into_iter()
                    .map(|d| {
                        let kind = if lab.holds_a_node(&nas, me, d.hc) {
                            UNICAST
                        } else {
                            7
                        };
                        entry(d.prefix, kind)
                    })
                    .collect()
            })
            .collect();
        assert_eq!(lab.missing_in(&routes, System::Ntkplane).0, 0);
        // 1.1's row-0 g-node (global, anonymizing, internal) and its neighbours in row 1.
        let populated = routes[4].iter().filter(|r| r.kind == UNICAST).count();
        assert_eq!(populated, 2 * 3 + 2 * 2);
        // Row 0 seen from 1.1: a /29 around 0.0, 0.1, 0.2.
        let row0 = routes[4]
            .iter_mut()
            .find(|r| r.kind == UNICAST && r.dst.contains(lab.addrs[0]))
            .unwrap();
        row0.kind = 7;
        let (missing, first) = lab.missing_in(&routes, System::Ntkplane);
        // Its global route was the only one to 0.0, 0.1 and 0.2, plus the g-node itself.
        assert_eq!(missing, 4, "{first}");
        assert!(first.starts_with("1.1 has no route to 0.0"), "{first}");
        // babeld's check reads `main`: nothing there.
        assert_eq!(lab.missing_in(&routes, System::Babeld).0, 9 * 8);
    }

    #[test]
    fn plot_has_a_polyline_per_series() {
        let s = plot_seconds(
            "t",
            &[
                (
                    crate::svg::Series {
                        name: "a".into(),
                        points: vec![(4.0, 1.5), (9.0, 3.0)],
                    },
                    "#d62728",
                    false,
                ),
                (
                    crate::svg::Series {
                        name: "b".into(),
                        points: vec![(9.0, 0.5)],
                    },
                    "#1f77b4",
                    true,
                ),
            ],
        );
        assert_eq!(s.matches("<polyline").count(), 2);
        assert_eq!(s.matches("stroke-dasharray").count(), 2);
    }
}
