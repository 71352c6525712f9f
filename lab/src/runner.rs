//! The lab runner: builds a scenario's namespaces and links, starts one daemon per system,
//! runs the timeline (client commands, feeds from the path solver, waits, checks with real
//! packets), prints a report, and removes everything it created — also after a failure or
//! an interrupt (SIGINT/SIGTERM are turned into a stop between steps).
//!
//! Lab setup (bridges, veths, the addresses and routes of non-Netsukuku hosts) uses `ip`
//! like an administrator would; everything the daemons do goes through their own netlink
//! code.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{Ipv4Addr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::network::{arc, NetIdentity, Network};
use crate::{
    feed::feed_for,
    listing::{parse_tables, section, ExpectedTable, SCENARIO_LISTINGS},
    readback,
    scenario::{AddrKind, KernelCheck, PingCheck, Scenario, Step, Target, UdpCheck},
};
use ntkplane::{
    addr::{ipv4, NtkAddress},
    daemon::proto::Feed,
    mac::MacAddr,
    netns::Netns,
    plan::KRoute,
};

/// Every namespace of a lab starts with this (leftovers are recognisable and removable).
pub const LAB_PREFIX: &str = "ntkl";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM stop the lab between steps (and its waits), then it cleans up.
pub fn install_stop_handler() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("setup: {0}")]
    Setup(String),
    #[error("step {step} ({title}): {msg}")]
    Step {
        step: usize,
        title: String,
        msg: String,
    },
    #[error("interrupted")]
    Interrupted,
}

pub struct Options {
    /// The `ntkplane` binary for daemons and client commands.
    pub bin: PathBuf,
    /// Leave the lab running at the end.
    pub keep: bool,
}

/// One check's outcome, for the report.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub step: usize,
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

struct Sys {
    netns: String,
    instance: String,
    child: Option<Child>,
}

/// A running lab; dropping it removes everything (unless kept).
pub struct Lab<'a> {
    sc: &'a Scenario,
    prefix: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    systems: BTreeMap<String, Sys>,
    hosts: BTreeMap<String, String>,
    bin: PathBuf,
    keep: bool,
    /// Last feed sent per (system, identity index): only changes are sent again.
    fed: BTreeMap<(String, u32), Feed>,
    pub results: Vec<CheckResult>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Namespaces whose name starts with [`LAB_PREFIX`].
pub fn lab_namespaces() -> Vec<String> {
    prefixed(ntkplane::netns::NETNS_RUN_DIR)
}

/// Everything of labs on the host: namespaces and pin directories (paths).
pub fn lab_leftovers() -> Vec<String> {
    let mut v: Vec<String> = lab_namespaces()
        .into_iter()
        .map(|n| format!("{}/{n}", ntkplane::netns::NETNS_RUN_DIR))
        .collect();
    v.extend(prefixed(PINS).into_iter().map(|n| format!("{PINS}/{n}")));
    v
}

/// Where daemons pin (`daemon::Paths`: `<BPFFS>/ntkplane/<instance>`).
const PINS: &str = "/sys/fs/bpf/ntkplane";

fn prefixed(dir: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(LAB_PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes what labs left (kept labs, or a runner killed outright): their namespaces and
/// pins. Returns what was removed.
pub fn clean_all() -> Vec<String> {
    let mut gone = Vec::new();
    for n in lab_namespaces() {
        if ip(&["netns", "del", &n]).is_ok() {
            gone.push(format!("namespace {n}"));
        }
    }
    for p in prefixed(PINS) {
        let path = PathBuf::from(PINS).join(&p);
        let _ = std::fs::remove_dir_all(&path);
        gone.push(format!("pins {}", path.display()));
    }
    gone
}

impl<'a> Lab<'a> {
    /// Creates segments, system and host namespaces, links, host addresses and routes, and
    /// starts the daemons of systems with `start = true`.
    pub fn build(
        sc: &'a Scenario,
        opts: &Options,
        log: &mut dyn FnMut(&str),
    ) -> Result<Lab<'a>, LabError> {
        let prefix = format!("{LAB_PREFIX}{}", std::process::id() % 10_000);
        let dir = std::env::temp_dir().join(format!("{prefix}-lab"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| LabError::Setup(e.to_string()))?;
        let mut lab = Lab {
            sc,
            prefix,
            dir,
            namespaces: vec![],
            systems: BTreeMap::new(),
            hosts: BTreeMap::new(),
            bin: opts.bin.clone(),
            keep: opts.keep,
            fed: BTreeMap::new(),
            results: vec![],
        };
        lab.setup(log).map_err(LabError::Setup)?;
        Ok(lab)
    }

    fn add_ns(&mut self, name: &str) -> Result<String, String> {
        let ns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn setup(&mut self, log: &mut dyn FnMut(&str)) -> Result<(), String> {
        let mut switches: BTreeMap<String, (String, u32)> = BTreeMap::new();
        let plugs: Vec<(String, String, String, bool)> = self
            .sc
            .systems
            .iter()
            .map(|s| {
                (
                    s.name.get_ref().clone(),
                    s.mac.get_ref().clone(),
                    s.segment.clone(),
                    true,
                )
            })
            .chain(self.sc.hosts.iter().map(|h| {
                (
                    h.name.get_ref().clone(),
                    h.mac.get_ref().clone(),
                    h.segment.clone(),
                    false,
                )
            }))
            .collect();
        for (name, mac, segment, is_system) in plugs {
            if !switches.contains_key(&segment) {
                let sw = self.add_ns(&format!("sw-{segment}"))?;
                ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
                ip(&["-n", &sw, "link", "set", "br0", "up"])?;
                log(&format!("segment {segment}: bridge br0 in {sw}"));
                switches.insert(segment.clone(), (sw, 0));
            }
            let ns = self.add_ns(&name)?;
            let (sw, n) = switches.get_mut(&segment).unwrap();
            let port = format!("p{n}");
            *n += 1;
            ip(&[
                "link", "add", &port, "netns", sw, "type", "veth", "peer", "name", "eth1", "netns",
                &ns, "address", &mac,
            ])?;
            ip(&["-n", sw, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", sw, "link", "set", &port, "up"])?;
            ip(&["-n", &ns, "link", "set", "eth1", "up"])?;
            if is_system {
                let instance = format!("{}{name}", self.prefix);
                self.systems.insert(
                    name.clone(),
                    Sys {
                        netns: ns.clone(),
                        instance,
                        child: None,
                    },
                );
                log(&format!("system {name}: namespace {ns}, eth1 {mac}"));
            } else {
                self.hosts.insert(name.clone(), ns.clone());
                log(&format!("host {name}: namespace {ns}, eth1 {mac}"));
            }
        }
        for h in &self.sc.hosts {
            let ns = &self.hosts[h.name.get_ref()];
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/32", h.linklocal.get_ref()),
                "dev",
                "eth1",
            ])?;
            for a in &h.addresses {
                ip(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{}/32", a.get_ref()),
                    "dev",
                    "eth1",
                ])?;
            }
            for r in &h.routes {
                let mut args = vec!["-n", ns, "route", "add"];
                args.extend(r.split_whitespace());
                ip(&args)?;
            }
        }
        for s in &self.sc.systems {
            if s.start {
                self.start(s.name.get_ref())?;
                log(&format!(
                    "system {}: daemon up (address {})",
                    s.name.get_ref(),
                    s.address.get_ref()
                ));
            }
        }
        Ok(())
    }

    fn sys(&self, name: &str) -> &Sys {
        &self.systems[name]
    }

    fn start(&mut self, name: &str) -> Result<(), String> {
        let def = self
            .sc
            .systems
            .iter()
            .find(|s| s.name.get_ref() == name)
            .expect("checked at load");
        let s = &self.systems[name];
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--instance", &s.instance, "--run-dir"])
            .arg(self.dir.join("run"))
            .args([
                "run",
                "--netns",
                &s.netns,
                "--topology",
                &self.sc.topology_text,
            ])
            .args(["--address", def.address.get_ref()])
            .args(["--interface", &format!("eth1={}", def.linklocal.get_ref())])
            .args(["--rt-tables-dir", "none", "--state-dir"])
            .arg(self.dir.join("state"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        if def.serve_anonymous {
            cmd.arg("--serve-anonymous");
        }
        if def.subnet_level > 0 {
            cmd.args(["--subnet-level", &def.subnet_level.to_string()]);
        }
        // Own process group: the terminal's Ctrl-C reaches the runner, which quits the
        // daemons in order instead of having them killed mid-operation.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        self.systems.get_mut(name).unwrap().child = Some(child);
        let t0 = Instant::now();
        while self.client(name, &["status"]).is_err() {
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "the daemon of {name} did not come up; see {}",
                    self.dir.join(format!("{name}.log")).display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// One client command to a system's daemon; its JSON reply.
    pub fn client(&self, system: &str, args: &[&str]) -> Result<Value, String> {
        let s = self.sys(system);
        let out = Command::new(&self.bin)
            .args(["--instance", &s.instance, "--run-dir"])
            .arg(self.dir.join("run"))
            .arg("--json")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run the client: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{system}: ntkplane {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text.trim().to_string())))
    }

    /// The daemon's arc index of identity `idx` towards `mac`.
    fn arc_to(&self, system: &str, idx: u32, mac: MacAddr) -> Result<u32, String> {
        let arcs = self.client(system, &["show-arcs", &idx.to_string()])?;
        arcs.as_object()
            .and_then(|m| {
                m.iter().find_map(|(k, a)| {
                    (a["peer_mac"].as_str()?.parse::<MacAddr>().ok()? == mac)
                        .then(|| k.parse().ok())?
                })
            })
            .ok_or_else(|| format!("{system}: identity {idx} has no arc to {mac}"))
    }

    /// Replaces `{arc IDX MAC}` in an argument with the daemon's arc index.
    fn expand(&self, system: &str, arg: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = arg;
        while let Some(p) = rest.find("{arc ") {
            out.push_str(&rest[..p]);
            let end = rest[p..]
                .find('}')
                .ok_or_else(|| format!("unclosed template in '{arg}'"))?
                + p;
            let w: Vec<&str> = rest[p + 5..end].split_whitespace().collect();
            let (idx, mac) = match w.as_slice() {
                [i, m] => (
                    i.parse::<u32>()
                        .map_err(|_| format!("'{arg}': bad identity index"))?,
                    m.parse::<MacAddr>().map_err(|e| format!("'{arg}': {e}"))?,
                ),
                _ => return Err(format!("'{arg}': expected {{arc IDX MAC}}")),
            };
            out.push_str(&self.arc_to(system, idx, mac)?.to_string());
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The network of graph `g`, from the scenario's definitions.
    fn network(&self, g: &str) -> Network {
        let def = &self.sc.graphs[g];
        let t = &self.sc.topology;
        let identities = def
            .identities
            .iter()
            .map(|i| {
                let sys = i.system.as_ref().and_then(|s| {
                    self.sc
                        .systems
                        .iter()
                        .find(|d| d.name.get_ref() == s.get_ref())
                });
                let mac = i
                    .mac
                    .as_ref()
                    .map(|m| m.get_ref().clone())
                    .or_else(|| sys.map(|s| s.mac.get_ref().clone()))
                    .expect("checked at load");
                let ll = i
                    .linklocal
                    .as_ref()
                    .map(|m| m.get_ref().clone())
                    .or_else(|| sys.map(|s| s.linklocal.get_ref().clone()))
                    .expect("checked at load");
                NetIdentity {
                    name: i.name.get_ref().clone(),
                    address: NtkAddress::parse(i.address.get_ref(), t).expect("checked at load"),
                    dev: i.dev.clone().unwrap_or_else(|| "eth1".into()),
                    mac: mac.parse().expect("checked at load"),
                    linklocal: ll.parse().expect("checked at load"),
                    main: !i.connectivity,
                }
            })
            .collect();
        Network {
            topology: t.clone(),
            identities,
            arcs: def
                .arcs
                .iter()
                .map(|a| {
                    let (x, y, cx, cy) = a.get_ref();
                    arc(x, y, *cx, *cy)
                })
                .collect(),
        }
    }

    /// Solves graph `g` and sends each daemon-held identity its feed, when it changed.
    fn feed(&mut self, g: &str) -> Result<String, String> {
        let net = self.network(g);
        let mut sent = Vec::new();
        for i in &self.sc.graphs[g].identities {
            let (Some(s), Some(idx)) = (&i.system, i.index) else {
                continue;
            };
            let system = s.get_ref().clone();
            let arcs = self.client(&system, &["show-arcs", &idx.to_string()])?;
            let by_mac: BTreeMap<MacAddr, u32> = arcs
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, a)| Some((a["peer_mac"].as_str()?.parse().ok()?, k.parse().ok()?)))
                .collect();
            let f = feed_for(&net, i.name.get_ref(), |m| by_mac.get(&m).copied())
                .map_err(|e| e.to_string())?;
            let key = (system.clone(), idx);
            if self.fed.get(&key) == Some(&f) {
                continue;
            }
            self.client(
                &system,
                &["etp", &idx.to_string(), &serde_json::to_string(&f).unwrap()],
            )?;
            sent.push(format!("{}[{idx}]", i.name.get_ref()));
            self.fed.insert(key, f);
        }
        Ok(if sent.is_empty() {
            "no path changed".into()
        } else {
            format!("fed {}", sent.join(", "))
        })
    }

    fn netns_of(&self, system: &str, label: Option<&str>) -> String {
        let s = self.sys(system);
        label.map_or_else(|| s.netns.clone(), |l| format!("{}-{l}", s.instance))
    }

    /// The IPv4 address a target names, from the system's current main identity.
    fn resolve(&self, target: &str) -> Result<Ipv4Addr, String> {
        match target.parse::<Target>()? {
            Target::Ip(ip) => Ok(ip),
            Target::Of { system, kind } => {
                let ids = self.client(&system, &["show-identities"])?;
                let addr = ids
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|i| i["kind"] == "main")
                    .and_then(|i| i["address"].as_str())
                    .ok_or_else(|| format!("{system}: no main identity"))?;
                let t = &self.sc.topology;
                let n = NtkAddress::parse(addr, t).map_err(|e| e.to_string())?;
                match kind {
                    AddrKind::Global => ipv4::global_node(t, &n),
                    AddrKind::Anon => ipv4::anon_node(t, &n),
                    AddrKind::Internal(k) => ipv4::internal_node(t, &n, k),
                }
                .ok_or_else(|| {
                    format!("{system} ({addr}) has no {target} address (virtual position?)")
                })
            }
        }
    }

    fn ns_of_node(&self, name: &str) -> String {
        self.hosts
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.sys(name).netns.clone())
    }

    /// Runs the timeline; stops at the first failed command (checks are all recorded).
    pub fn run_steps(&mut self, log: &mut dyn FnMut(&str)) -> Result<(), LabError> {
        let total = self.sc.steps.len();
        for (i, (_, step)) in self.sc.steps.iter().enumerate() {
            if stopped() {
                return Err(LabError::Interrupted);
            }
            let title = describe(step);
            let r = self.step(i, step);
            match r {
                Ok(msg) => log(&format!(
                    "[{:>3}/{total}] {title}{}",
                    i + 1,
                    if msg.is_empty() {
                        String::new()
                    } else {
                        format!(" — {msg}")
                    }
                )),
                Err(msg) => {
                    log(&format!("[{:>3}/{total}] {title} — FAILED", i + 1));
                    return Err(LabError::Step {
                        step: i + 1,
                        title,
                        msg,
                    });
                }
            }
        }
        Ok(())
    }

    fn record(&mut self, step: usize, what: String, errors: Vec<String>) -> Result<String, String> {
        let ok = errors.is_empty();
        self.results.push(CheckResult {
            step,
            what: what.clone(),
            ok,
            detail: errors.join("; "),
        });
        if ok {
            Ok("ok".into())
        } else {
            Ok(format!("CHECK FAILED:\n      {}", errors.join("\n      ")))
        }
    }

    fn step(&mut self, i: usize, s: &Step) -> Result<String, String> {
        let on =
            s.on.as_ref()
                .map(|o| o.get_ref().clone())
                .unwrap_or_default();
        if let Some(args) = &s.run {
            let args: Vec<String> = args
                .iter()
                .map(|a| self.expand(&on, a))
                .collect::<Result<_, _>>()?;
            let refs: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
            let reply = self.client(&on, &refs)?;
            if let Some(exp) = &s.expect {
                let want: Value = serde_json::to_value(exp).unwrap();
                for (k, v) in want.as_object().unwrap() {
                    if reply.get(k) != Some(v) {
                        return Err(format!("reply {reply}: {k} is not {v}"));
                    }
                }
            }
            return Ok(String::new());
        }
        if s.start.is_some() {
            self.start(&on)?;
            return Ok("daemon up".into());
        }
        if let Some(cmd) = &s.shell {
            let ns = self.ns_of_node(&on);
            readback::sh_in(&ns, cmd)?;
            return Ok(String::new());
        }
        if let Some(g) = &s.feed {
            return self.feed(g.get_ref());
        }
        if let Some(ms) = s.wait_ms {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(ms) && !stopped() {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Ok(String::new());
        }
        if let Some(k) = &s.check {
            let errors = self.kernel_check(k);
            let what = format!(
                "{} {}: {}",
                k.on.get_ref(),
                k.netns.as_deref().unwrap_or("default"),
                k.listing.as_ref().map_or("state", |l| l.get_ref())
            );
            return self.record(i + 1, what, errors);
        }
        if let Some(p) = &s.ping {
            let (what, errors) = self.ping(p)?;
            return self.record(i + 1, what, errors);
        }
        if let Some(u) = &s.udp {
            let (what, errors) = self.udp(u, i)?;
            return self.record(i + 1, what, errors);
        }
        unreachable!("checked at load: one action per step")
    }

    fn kernel_check(&self, k: &KernelCheck) -> Vec<String> {
        let mut errors = Vec::new();
        let system = k.on.get_ref();
        let netns = self.netns_of(system, k.netns.as_deref());
        let mut push = |r: Result<(), String>| {
            if let Err(e) = r {
                errors.push(e);
            }
        };
        let want: Option<BTreeMap<u32, ExpectedTable>> = match (&k.listing, &k.tables) {
            (Some(l), _) => Some(section(SCENARIO_LISTINGS, l.get_ref())),
            (None, Some(text)) => match parse_tables(text) {
                Ok(t) => Some(t),
                Err(e) => {
                    push(Err(format!("tables: {e}")));
                    None
                }
            },
            _ => None,
        };
        if let Some(want) = want {
            push(compare_tables(&netns, &want));
        }
        if let Some(marks) = &k.marks {
            let pins = PathBuf::from(PINS)
                .join(&self.sys(system).instance)
                .join(k.netns.as_deref().unwrap_or("default"));
            push(compare_marks(&pins, marks));
        }
        if !k.contains.is_empty() || !k.absent.is_empty() {
            let text = [
                "ip -4 -o addr show",
                "ip route show table all",
                "ip rule show",
                "nft list ruleset",
            ]
            .iter()
            .map(|c| readback::sh_in(&netns, c).unwrap_or_default())
            .collect::<String>();
            for c in &k.contains {
                if !text.contains(c.as_str()) {
                    push(Err(format!("'{c}' not found")));
                }
            }
            for a in &k.absent {
                if text.contains(a.as_str()) {
                    push(Err(format!("'{a}' present")));
                }
            }
        }
        errors
    }

    fn ping(&self, p: &PingCheck) -> Result<(String, Vec<String>), String> {
        let from = p.from.get_ref();
        let dst = self.resolve(p.to.get_ref())?;
        let src = p
            .source
            .as_ref()
            .map(|x| self.resolve(x.get_ref()))
            .transpose()?;
        let ns = self.ns_of_node(from);
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns", "exec", &ns, "ping", "-n", "-c", "2", "-i", "0.3", "-W", "1",
        ]);
        if let Some(s) = src {
            cmd.args(["-I", &s.to_string()]);
        }
        cmd.arg(dst.to_string()).env("LC_ALL", "C");
        let out = cmd.output().map_err(|e| format!("cannot run ping: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let what = format!(
            "ping {from} → {} ({dst}){}: expect {}",
            p.to.get_ref(),
            src.map(|s| format!(" from {s}")).unwrap_or_default(),
            p.expect.get_ref()
        );
        let mut errors = Vec::new();
        let replier = text.lines().find_map(|l| {
            l.split_once("bytes from ")
                .map(|(_, r)| r.split(':').next().unwrap_or("").to_string())
        });
        let icmp_from = text
            .lines()
            .find(|l| l.contains("Unreachable"))
            .and_then(|l| {
                l.strip_prefix("From ")
                    .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
            });
        let seen = match p.expect.get_ref().as_str() {
            "reply" => {
                if replier.is_none() {
                    errors.push(format!("no reply: {}", last_lines(&text)));
                }
                replier
            }
            "no-reply" => {
                if let Some(r) = &replier {
                    errors.push(format!("a reply came from {r}"));
                }
                None
            }
            _ => {
                if icmp_from.is_none() {
                    errors.push(format!(
                        "no ICMP destination unreachable: {}",
                        last_lines(&text)
                    ));
                }
                icmp_from
            }
        };
        if let (Some(want), Some(seen)) = (&p.reply_from, &seen) {
            let want = self.resolve(want.get_ref())?;
            if seen != &want.to_string() {
                errors.push(format!("answer from {seen}, expected from {want}"));
            }
        }
        Ok((what, errors))
    }

    fn udp(&self, u: &UdpCheck, step: usize) -> Result<(String, Vec<String>), String> {
        let dst = self.resolve(u.to.get_ref())?;
        let port = 40_000 + step as u16;
        let rx = Netns::named(self.ns_of_node(u.at.get_ref()))
            .run(|| UdpSocket::bind(("0.0.0.0", port)))
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("bind :{port} in {}: {e}", u.at.get_ref()))?;
        let tx = Netns::named(self.ns_of_node(u.from.get_ref()))
            .run(|| UdpSocket::bind("0.0.0.0:0"))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        rx.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut buf = [0u8; 64];
        let mut seen = None;
        for _ in 0..3 {
            let _ = tx.send_to(b"ntkplane lab", (dst, port));
            if let Ok((_, from)) = rx.recv_from(&mut buf) {
                seen = Some(from.ip());
                break;
            }
        }
        let what = format!(
            "udp {} → {} ({dst}) received at {}",
            u.from.get_ref(),
            u.to.get_ref(),
            u.at.get_ref()
        );
        let mut errors = Vec::new();
        match seen {
            None => errors.push("nothing received".into()),
            Some(seen) => {
                if let Some(w) = &u.source_seen {
                    let w = self.resolve(w.get_ref())?;
                    if seen != w {
                        errors.push(format!("source seen {seen}, expected {w}"));
                    }
                }
                if let Some(w) = &u.source_not {
                    let w = self.resolve(w.get_ref())?;
                    if seen == w {
                        errors.push(format!("source seen {seen}: not rewritten"));
                    }
                }
            }
        }
        Ok((what, errors))
    }

    /// Per system: identities, namespaces, tables with route counts and per-neighbour
    /// packet counters, NAT; then a connectivity matrix between the systems' main identities
    /// (global addresses) and hosts.
    pub fn report(&self) -> String {
        let mut r = String::new();
        for (name, s) in &self.systems {
            let _ = writeln!(
                r,
                "\n== {name} (instance {}, namespace {})",
                s.instance, s.netns
            );
            let Ok(ids) = self.client(name, &["show-identities"]) else {
                let _ = writeln!(r, "  daemon not running");
                continue;
            };
            for i in ids.as_array().into_iter().flatten() {
                let _ = writeln!(
                    r,
                    "  identity {} {} {} in {}",
                    i["index"],
                    i["kind"].as_str().unwrap_or(""),
                    i["address"].as_str().unwrap_or(""),
                    i["netns"].as_str().unwrap_or("")
                );
            }
            if let Ok(t) = self.client(name, &["show-tables"]) {
                for t in t.as_array().into_iter().flatten() {
                    let _ = writeln!(
                        r,
                        "    [{}] table {} {:<28} {:>3} routes, rule {}, packets {}",
                        t["netns"].as_str().unwrap_or(""),
                        t["table"],
                        t["name"].as_str().unwrap_or(""),
                        t["routes"],
                        if t["rule"] == true { "yes" } else { "no" },
                        t["packets"].as_u64().map_or("-".into(), |p| p.to_string())
                    );
                }
            }
            let nat = readback::sh_in(&s.netns, "nft list table ip ntkplane 2>/dev/null || true")
                .unwrap_or_default();
            let rules: Vec<&str> = nat
                .lines()
                .map(str::trim)
                .filter(|l| l.contains("snat") || l.contains("dnat"))
                .collect();
            let _ = writeln!(
                r,
                "  NAT: {}",
                if rules.is_empty() {
                    "none".into()
                } else {
                    rules.join(" | ")
                }
            );
        }
        r += &self.matrix();
        let failed: Vec<&CheckResult> = self.results.iter().filter(|c| !c.ok).collect();
        let _ = writeln!(
            r,
            "\nchecks: {} passed, {} failed",
            self.results.len() - failed.len(),
            failed.len()
        );
        for c in failed {
            let _ = writeln!(r, "  FAILED step {}: {}: {}", c.step, c.what, c.detail);
        }
        r
    }

    fn matrix(&self) -> String {
        let targets: Vec<(String, Option<Ipv4Addr>)> = self
            .systems
            .keys()
            .map(|n| (n.clone(), self.resolve(&format!("{n}:global")).ok()))
            .collect();
        let sources: Vec<String> = self
            .systems
            .keys()
            .chain(self.hosts.keys())
            .cloned()
            .collect();
        let mut r = String::from(
            "\nconnectivity (ping to each system's global address; ✓ reply, ✗ none, · self)\n",
        );
        let _ = write!(r, "{:>10} ", "from \\ to");
        for (t, ip) in &targets {
            let _ = write!(
                r,
                "{:>9}",
                format!("{t}{}", if ip.is_none() { "?" } else { "" })
            );
        }
        r.push('\n');
        for s in &sources {
            let _ = write!(r, "{s:>10} ");
            for (t, ip) in &targets {
                let cell = match ip {
                    _ if t == s => "·",
                    None => "-",
                    Some(ip) => {
                        let ok = Command::new("ip")
                            .args([
                                "netns",
                                "exec",
                                &self.ns_of_node(s),
                                "ping",
                                "-n",
                                "-c",
                                "1",
                                "-W",
                                "1",
                            ])
                            .arg(ip.to_string())
                            .output()
                            .is_ok_and(|o| o.status.success());
                        if ok {
                            "✓"
                        } else {
                            "✗"
                        }
                    }
                };
                let _ = write!(r, "{cell:>9}");
            }
            r.push('\n');
        }
        r
    }

    /// How to look at a kept lab.
    pub fn keep_hints(&self) -> String {
        let mut r = String::from("\nThe lab is still running. Look at it with:\n");
        if let Some((name, s)) = self.systems.iter().next() {
            let _ = writeln!(
                r,
                "  ip netns exec {} ip route show table 251        # {name}'s ntk table",
                s.netns
            );
            let _ = writeln!(r, "  ip netns exec {} ip rule", s.netns);
            let _ = writeln!(r, "  ip netns exec {} nft list table ip ntkplane", s.netns);
            let _ = writeln!(
                r,
                "  {} --instance {} --run-dir {} show-tables",
                self.bin.display(),
                s.instance,
                self.dir.join("run").display()
            );
        }
        let _ = writeln!(r, "  ip netns list | grep {LAB_PREFIX}");
        let _ = writeln!(r, "Remove it with: ntkplane-lab clean (or cargo xtask lab clean)");
        r
    }

    fn teardown(&mut self) {
        for s in self.systems.values_mut() {
            if let Some(mut c) = s.child.take() {
                let _ = Command::new(&self.bin)
                    .args(["--instance", &s.instance, "--run-dir"])
                    .arg(self.dir.join("run"))
                    .arg("quit")
                    .output();
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_secs(5) {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::fs::remove_dir_all(PathBuf::from(PINS).join(&s.instance));
        }
        // Identity namespaces a daemon could not remove carry its instance name.
        for n in lab_namespaces() {
            if n.starts_with(&self.prefix) {
                let _ = ip(&["netns", "del", &n]);
            }
        }
        for n in &self.namespaces {
            let _ = ip(&["netns", "del", n]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    pub fn log_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        if !self.keep || stopped() {
            self.teardown();
        }
    }
}

fn last_lines(t: &str) -> String {
    let l: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
    l[l.len().saturating_sub(2)..].join(" / ")
}

fn describe(s: &Step) -> String {
    if let Some(t) = &s.title {
        return t.clone();
    }
    let on = s.on.as_ref().map(|o| o.get_ref().as_str()).unwrap_or("");
    if let Some(r) = &s.run {
        return format!("{on}: ntkplane {}", r.join(" "));
    }
    if s.start.is_some() {
        return format!("{on}: start the daemon");
    }
    if let Some(c) = &s.shell {
        return format!("{on}: {c}");
    }
    if let Some(g) = &s.feed {
        return format!("feed graph {}", g.get_ref());
    }
    if let Some(ms) = s.wait_ms {
        return format!("wait {ms} ms");
    }
    if let Some(k) = &s.check {
        return format!(
            "check {} {}{}",
            k.on.get_ref(),
            k.netns.as_deref().unwrap_or("default"),
            k.listing
                .as_ref()
                .map(|l| format!(" = {}", l.get_ref()))
                .unwrap_or_default()
        );
    }
    if let Some(p) = &s.ping {
        return format!(
            "ping {} → {} (expect {})",
            p.from.get_ref(),
            p.to.get_ref(),
            p.expect.get_ref()
        );
    }
    if let Some(u) = &s.udp {
        return format!("udp {} → {}", u.from.get_ref(), u.to.get_ref());
    }
    "step".into()
}

/// The namespace's tables against the expected ones: the same set of ntk tables, every
/// route one of the listed values, a fwmark rule for every forwarding table.
pub fn compare_tables(netns: &str, want: &BTreeMap<u32, ExpectedTable>) -> Result<(), String> {
    let mut errors = Vec::new();
    let got_tables = readback::ntk_tables_in(netns)?;
    let want_tables: std::collections::BTreeSet<u32> = want.keys().copied().collect();
    if got_tables != want_tables {
        errors.push(format!("tables {got_tables:?}, expected {want_tables:?}"));
    }
    for (id, t) in want {
        let got = readback::ntk_table_in(netns, *id)?;
        for (p, alts) in &t.routes {
            let alts: Vec<KRoute> = alts.iter().map(KRoute::from).collect();
            match got.get(p) {
                None => errors.push(format!("table {id}: {p} missing")),
                Some(r) if !alts.contains(r) => {
                    errors.push(format!("table {id}: {p} is {r:?}, expected {alts:?}"))
                }
                _ => {}
            }
        }
        for p in got.keys().filter(|p| !t.routes.contains_key(p)) {
            errors.push(format!("table {id}: {p} not expected"));
        }
    }
    let rules = readback::ntk_rules_in(netns)?;
    for id in want.keys().filter(|id| **id != ntkplane::fwd::NTK_TABLE) {
        if !rules
            .iter()
            .any(|(_, m, t)| t == &id.to_string() && m.is_some())
        {
            errors.push(format!("no fwmark rule for table {id}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The pinned classifier map holds exactly these MAC → mark entries.
pub fn compare_marks(pins: &Path, want: &BTreeMap<String, u32>) -> Result<(), String> {
    let got = readback::pinned_marks(pins)?;
    let want: BTreeMap<String, u32> = want.iter().map(|(m, v)| (m.to_uppercase(), *v)).collect();
    if got != want {
        return Err(format!("marks {got:?}, expected {want:?}"));
    }
    Ok(())
}
