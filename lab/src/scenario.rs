//! The lab's scenario file (TOML): systems, non-Netsukuku hosts, L2 segments, the network
//! graphs the path solver works on, and a timeline of steps (commands, feeds, waits, checks).
//! [`Scenario::load`] checks everything that can be checked before anything is created and
//! names the file, line and field of the first error. The format is documented in
//! `docs/LAB.md`.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

use ntkplane::{
    addr::{NtkAddress, Topology},
    mac::MacAddr,
};

/// A scenario error: where (file, line, field) and what.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {field}: {msg}")]
pub struct ScenarioError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub msg: String,
}

type S<T> = Spanned<T>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Another scenario whose systems, hosts, graphs and steps come first (a pre-state).
    #[serde(default)]
    pub include: Option<S<String>>,
    #[serde(default)]
    pub topology: Option<S<String>>,
    #[serde(default, rename = "system")]
    pub systems: Vec<SystemDef>,
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostDef>,
    #[serde(default, rename = "graph")]
    pub graphs: BTreeMap<String, GraphDef>,
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
}

/// A Netsukuku system: one namespace, one NIC `eth1` on a segment, one daemon.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemDef {
    pub name: S<String>,
    pub mac: S<String>,
    pub linklocal: S<String>,
    /// The first (completely real) address, highest level first.
    pub address: S<String>,
    #[serde(default = "lan")]
    pub segment: String,
    #[serde(default)]
    pub subnet_level: usize,
    #[serde(default = "yes")]
    pub serve_anonymous: bool,
    /// Start the daemon at the beginning (default) or with a `start` step.
    #[serde(default = "yes")]
    pub start: bool,
}

/// A host that runs no daemon (e.g. ρ behind λ): addresses and `ip route` lines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostDef {
    pub name: S<String>,
    pub mac: S<String>,
    pub linklocal: S<String>,
    #[serde(default = "lan")]
    pub segment: String,
    #[serde(default)]
    pub addresses: Vec<S<String>>,
    /// `ip route add` arguments, e.g. `10.0.0.0/25 via 169.254.109.22`.
    #[serde(default)]
    pub routes: Vec<String>,
}

/// A network graph: identities and qspn arcs with the cost each end measures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphDef {
    pub identities: Vec<GraphIdentity>,
    #[serde(default)]
    pub arcs: Vec<S<(String, String, u64, u64)>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphIdentity {
    pub name: S<String>,
    pub address: S<String>,
    /// The system whose daemon holds this identity, and its index there; an identity without
    /// a system is only part of the graph (a node the lab does not run).
    #[serde(default)]
    pub system: Option<S<String>>,
    #[serde(default)]
    pub index: Option<u32>,
    /// Interface, MAC and link-local; default: the system's `eth1`.
    #[serde(default)]
    pub dev: Option<String>,
    #[serde(default)]
    pub mac: Option<S<String>>,
    #[serde(default)]
    pub linklocal: Option<S<String>>,
    /// A connectivity identity (not the system's main one).
    #[serde(default)]
    pub connectivity: bool,
}

/// One step of the timeline: exactly one action.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Shown as progress.
    #[serde(default)]
    pub title: Option<String>,
    /// The system a `run`/`shell`/`start` step applies to.
    #[serde(default)]
    pub on: Option<S<String>>,
    /// Client command arguments; `{arc IDX MAC}` is replaced by the daemon's arc index.
    #[serde(default)]
    pub run: Option<Vec<String>>,
    /// Expected fields of the command's JSON reply.
    #[serde(default)]
    pub expect: Option<toml::Table>,
    /// Start the daemon of `on` (a system with `start = false`).
    #[serde(default)]
    pub start: Option<bool>,
    /// A shell command in the namespace of `on` (lab setup outside the daemon).
    #[serde(default)]
    pub shell: Option<String>,
    /// Solve the named graph and feed every identity whose feed changed.
    #[serde(default)]
    pub feed: Option<S<String>>,
    #[serde(default)]
    pub wait_ms: Option<u64>,
    #[serde(default)]
    pub check: Option<KernelCheck>,
    #[serde(default)]
    pub ping: Option<PingCheck>,
    #[serde(default)]
    pub udp: Option<UdpCheck>,
}

/// Expected kernel state of one namespace of a system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelCheck {
    pub on: S<String>,
    /// Identity namespace label (`migr02`); default: the system's namespace.
    #[serde(default)]
    pub netns: Option<String>,
    /// Expected tables: a section of the spec's listings, or inline text in that format.
    #[serde(default)]
    pub listing: Option<S<String>>,
    #[serde(default)]
    pub tables: Option<String>,
    /// MAC → mark of the classifier's map (when given: exactly these).
    #[serde(default)]
    pub marks: Option<BTreeMap<String, u32>>,
    /// Substrings that must / must not appear in the namespace's IPv4 addresses, routes of
    /// every table and rules, rendered as `ip -4 -o addr show`, `ip route show table all`
    /// and `ip rule show` print them but with numeric table ids (read over rtnetlink), and
    /// in `nft list ruleset`.
    #[serde(default)]
    pub contains: Vec<String>,
    #[serde(default)]
    pub absent: Vec<String>,
}

/// `ping` from a system or host to an address; `expect` is `reply`, `unreachable` (an ICMP
/// destination-unreachable answer from a router) or `no-reply` (nothing comes back, for
/// whatever reason: e.g. the sender's own route is `unreachable`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingCheck {
    pub from: S<String>,
    /// An IPv4 address or `SYSTEM:global|anon|internal-N`.
    pub to: S<String>,
    /// Source address (same forms as `to`); default: the kernel's choice.
    #[serde(default)]
    pub source: Option<S<String>>,
    pub expect: S<String>,
    /// The address the reply (or the ICMP error) must come from.
    #[serde(default)]
    pub reply_from: Option<S<String>>,
}

/// One UDP datagram; a socket in the receiver's namespace reports the source it saw.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpCheck {
    pub from: S<String>,
    pub to: S<String>,
    /// The system or host whose namespace receives.
    pub at: S<String>,
    #[serde(default)]
    pub source_seen: Option<S<String>>,
    #[serde(default)]
    pub source_not: Option<S<String>>,
}

fn lan() -> String {
    "lan".into()
}
fn yes() -> bool {
    true
}

/// A loaded, checked scenario (includes resolved).
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub topology: Topology,
    pub topology_text: String,
    pub systems: Vec<SystemDef>,
    pub hosts: Vec<HostDef>,
    pub graphs: BTreeMap<String, GraphDef>,
    /// (file the step came from, step)
    pub steps: Vec<(PathBuf, Step)>,
}

/// Where a span starts: 1-based line.
fn line_of(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())].matches('\n').count() + 1
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(
        &self,
        span: std::ops::Range<usize>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> ScenarioError {
        ScenarioError {
            file: self.file.display().to_string(),
            line: line_of(self.text, span.start),
            field: field.into(),
            msg: msg.into(),
        }
    }
}

fn parse_mac(c: &Ctx, v: &S<String>, field: String) -> Result<MacAddr, ScenarioError> {
    let m: MacAddr = v.get_ref().parse().map_err(|e| {
        c.err(
            v.span(),
            &field,
            format!("malformed MAC '{}' ({e})", v.get_ref()),
        )
    })?;
    if m.0[0] & 1 != 0 || m.0 == [0; 6] {
        return Err(c.err(
            v.span(),
            field,
            format!("'{}' is not a unicast MAC", v.get_ref()),
        ));
    }
    Ok(m)
}

fn parse_ll(c: &Ctx, v: &S<String>, field: String) -> Result<Ipv4Addr, ScenarioError> {
    let a: Ipv4Addr = v.get_ref().parse().map_err(|_| {
        c.err(
            v.span(),
            &field,
            format!("bad IPv4 address '{}'", v.get_ref()),
        )
    })?;
    if !a.is_link_local() {
        return Err(c.err(
            v.span(),
            field,
            format!("{a} is not a link-local (169.254.0.0/16) address"),
        ));
    }
    Ok(a)
}

fn parse_addr(
    c: &Ctx,
    t: &Topology,
    v: &S<String>,
    field: String,
) -> Result<NtkAddress, ScenarioError> {
    NtkAddress::parse(v.get_ref(), t).map_err(|e| {
        c.err(
            v.span(),
            field,
            format!("bad address '{}' for topology: {e}", v.get_ref()),
        )
    })
}

/// The largest scenario file read (bytes).
const MAX_FILE: u64 = 1 << 20;

impl Scenario {
    /// Reads `path` (and its include), checks it, and returns it; nothing is created.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let fail = |msg: String| ScenarioError {
            file: path.display().to_string(),
            line: 0,
            field: "-".into(),
            msg,
        };
        // A scenario is a page of text: anything larger (or endless, like a device) is a
        // mistake, refused before it is read.
        let len = std::fs::metadata(path)
            .map_err(|e| fail(format!("cannot read: {e}")))?
            .len();
        if len > MAX_FILE {
            return Err(fail(format!(
                "{len} bytes: a scenario file is at most {MAX_FILE} bytes"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        Self::parse(path, &text)
    }

    /// Parses and checks scenario text (`path` names it in errors and resolves includes):
    /// the TOML, then each section in the order later ones refer to earlier ones.
    pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
        let c = Ctx { file: path, text };
        let f: File = toml::from_str(text).map_err(|e| ScenarioError {
            file: path.display().to_string(),
            line: e.span().map_or(0, |s| line_of(text, s.start)),
            field: "toml".into(),
            msg: e.message().to_string(),
        })?;
        let mut sc = Self::base(&c, &f)?;
        sc.name = f.name.clone();
        sc.description = f.description.clone();
        let mut names = Names::of(&sc);
        sc.nodes(&c, &f, &mut names)?;
        sc.graph_section(&c, &f, &names)?;
        sc.step_section(&c, &f, &names)?;
        Ok(sc)
    }

    /// `include` (the included scenario, already checked) or `topology` (an empty one).
    fn base(c: &Ctx, f: &File) -> Result<Scenario, ScenarioError> {
        let sc = match &f.include {
            Some(inc) => {
                let p = c
                    .file
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(inc.get_ref());
                if !p.is_file() {
                    return Err(c.err(
                        inc.span(),
                        "include",
                        format!("no regular file {}", p.display()),
                    ));
                }
                Scenario::load(&p)?
            }
            None => {
                let Some(t) = &f.topology else {
                    return Err(ScenarioError {
                        file: c.file.display().to_string(),
                        line: 1,
                        field: "topology".into(),
                        msg: "missing (e.g. topology = \"4.2.2.2\")".into(),
                    });
                };
                let topology: Topology = t.get_ref().parse().map_err(|e| {
                    c.err(
                        t.span(),
                        "topology",
                        format!("bad topology '{}': {e}", t.get_ref()),
                    )
                })?;
                Scenario {
                    name: String::new(),
                    description: String::new(),
                    topology,
                    topology_text: t.get_ref().clone(),
                    systems: vec![],
                    hosts: vec![],
                    graphs: BTreeMap::new(),
                    steps: vec![],
                }
            }
        };
        if let (Some(inc), Some(t)) = (&f.include, &f.topology) {
            if t.get_ref() != &sc.topology_text {
                return Err(c.err(
                    t.span(),
                    "topology",
                    format!(
                        "differs from the included scenario's '{}'",
                        sc.topology_text
                    ),
                ));
            }
            let _ = inc;
        }
        if let (Some(_), Some(t)) = (&f.include, &f.topology) {
            if t.get_ref() != &sc.topology_text {
                return Err(c.err(
                    t.span(),
                    "topology",
                    format!(
                        "differs from the included scenario's '{}'",
                        sc.topology_text
                    ),
                ));
            }
        }
        Ok(sc)
    }

    /// `[[system]]` and `[[host]]`: names unique across both, MACs and link-locals valid and
    /// unique, system addresses completely real.
    fn nodes(&mut self, c: &Ctx, f: &File, names: &mut Names) -> Result<(), ScenarioError> {
        let t = self.topology.clone();
        for (i, s) in f.systems.iter().enumerate() {
            let field = |x: &str| format!("system[{i}].{x}");
            names.new_node(c, &s.name, &s.mac, &s.linklocal, field)?;
            let a = parse_addr(c, &t, &s.address, field("address"))?;
            if !a.is_all_real(&t) {
                return Err(c.err(
                    s.address.span(),
                    field("address"),
                    "the first address must be completely real",
                ));
            }
            if s.subnet_level >= t.levels() {
                return Err(c.err(
                    s.name.span(),
                    field("subnet_level"),
                    format!("{} is not below the {} levels", s.subnet_level, t.levels()),
                ));
            }
        }
        for (i, h) in f.hosts.iter().enumerate() {
            let field = |x: &str| format!("host[{i}].{x}");
            names.new_node(c, &h.name, &h.mac, &h.linklocal, field)?;
            for (k, a) in h.addresses.iter().enumerate() {
                a.get_ref().parse::<Ipv4Addr>().map_err(|_| {
                    c.err(
                        a.span(),
                        field(&format!("addresses[{k}]")),
                        format!("bad IPv4 address '{}'", a.get_ref()),
                    )
                })?;
            }
        }
        self.systems.extend(f.systems.iter().cloned());
        self.hosts.extend(f.hosts.iter().cloned());
        names
            .systems
            .extend(f.systems.iter().map(|s| s.name.get_ref().clone()));
        Ok(())
    }

    /// `[graph.NAME]`: identities with valid addresses, systems known, arcs between
    /// identities of the graph.
    fn graph_section(&mut self, c: &Ctx, f: &File, names: &Names) -> Result<(), ScenarioError> {
        let t = self.topology.clone();
        for (g, def) in &f.graphs {
            let mut ids = BTreeSet::new();
            for (i, id) in def.identities.iter().enumerate() {
                let field = |x: &str| format!("graph.{g}.identities[{i}].{x}");
                if !ids.insert(id.name.get_ref().clone()) {
                    return Err(c.err(
                        id.name.span(),
                        field("name"),
                        format!("duplicate identity '{}'", id.name.get_ref()),
                    ));
                }
                parse_addr(c, &t, &id.address, field("address"))?;
                match &id.system {
                    Some(s) => {
                        names.known_system(c, s, field("system"))?;
                        if id.index.is_none() {
                            return Err(c.err(
                                s.span(),
                                field("index"),
                                "an identity of a system needs its index there",
                            ));
                        }
                    }
                    None => {
                        if id.mac.is_none() || id.linklocal.is_none() {
                            return Err(c.err(
                                id.name.span(),
                                field("mac"),
                                "an identity without a system needs mac and linklocal",
                            ));
                        }
                    }
                }
                if let Some(m) = &id.mac {
                    parse_mac(c, m, field("mac"))?;
                }
                if let Some(l) = &id.linklocal {
                    parse_ll(c, l, field("linklocal"))?;
                }
            }
            for (k, a) in def.arcs.iter().enumerate() {
                let (x, y, _, _) = a.get_ref();
                for end in [x, y] {
                    if !ids.contains(end) {
                        return Err(c.err(
                            a.span(),
                            format!("graph.{g}.arcs[{k}]"),
                            format!("unknown identity '{end}' in graph '{g}'"),
                        ));
                    }
                }
            }
        }
        self.graphs.extend(f.graphs.clone());
        Ok(())
    }

    /// `[[step]]`: one action each, every system, host, graph and listing it names known.
    fn step_section(&mut self, c: &Ctx, f: &File, names: &Names) -> Result<(), ScenarioError> {
        for (i, s) in f.steps.iter().enumerate() {
            let field = |x: &str| format!("step[{i}].{x}");
            let actions = [
                s.run.is_some(),
                s.start.is_some(),
                s.shell.is_some(),
                s.feed.is_some(),
                s.wait_ms.is_some(),
                s.check.is_some(),
                s.ping.is_some(),
                s.udp.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            let at = s.on.as_ref().map_or(0..0, |o| o.span());
            let at = if at.is_empty() {
                step_span(c.text, i)
            } else {
                at
            };
            if actions != 1 {
                return Err(c.err(at, format!("step[{i}]"), format!("{actions} actions: a step has exactly one of run, start, shell, feed, wait_ms, check, ping, udp")));
            }
            if s.run.is_some() || s.shell.is_some() || s.start.is_some() {
                match &s.on {
                    Some(o) if s.shell.is_some() => names.known_node(c, o, field("on"))?,
                    Some(o) => names.known_system(c, o, field("on"))?,
                    None => return Err(c.err(at, field("on"), "which system? (on = \"…\")")),
                }
            }
            if let Some(r) = &s.run {
                if r.is_empty() {
                    return Err(c.err(at, field("run"), "empty command"));
                }
            }
            if let Some(g) = &s.feed {
                if !self.graphs.contains_key(g.get_ref()) {
                    return Err(c.err(
                        g.span(),
                        field("feed"),
                        format!("unknown graph '{}'", g.get_ref()),
                    ));
                }
            }
            if let Some(k) = &s.check {
                names.known_system(c, &k.on, field("check.on"))?;
                if let Some(l) = &k.listing {
                    if !crate::listing::has_section(crate::listing::SCENARIO_LISTINGS, l.get_ref())
                    {
                        return Err(c.err(
                            l.span(),
                            field("check.listing"),
                            format!("no listing '{}' in the spec's listings", l.get_ref()),
                        ));
                    }
                }
                if let Some(t) = &k.tables {
                    crate::listing::parse_tables(t)
                        .map_err(|e| c.err(k.on.span(), field("check.tables"), e))?;
                }
                for m in k.marks.iter().flat_map(|m| m.keys()) {
                    if m.parse::<MacAddr>().is_err() {
                        return Err(c.err(
                            k.on.span(),
                            field("check.marks"),
                            format!("malformed MAC '{m}'"),
                        ));
                    }
                }
            }
            if let Some(p) = &s.ping {
                names.known_node(c, &p.from, field("ping.from"))?;
                check_target(c, &p.to, &names.systems, field("ping.to"))?;
                if let Some(x) = &p.source {
                    check_target(c, x, &names.systems, field("ping.source"))?;
                }
                if let Some(x) = &p.reply_from {
                    check_target(c, x, &names.systems, field("ping.reply_from"))?;
                }
                if !["reply", "unreachable", "no-reply"].contains(&p.expect.get_ref().as_str()) {
                    return Err(c.err(
                        p.expect.span(),
                        field("ping.expect"),
                        format!(
                            "'{}': expected reply, unreachable or no-reply",
                            p.expect.get_ref()
                        ),
                    ));
                }
            }
            if let Some(u) = &s.udp {
                names.known_node(c, &u.from, field("udp.from"))?;
                names.known_node(c, &u.at, field("udp.at"))?;
                check_target(c, &u.to, &names.systems, field("udp.to"))?;
                for x in [&u.source_seen, &u.source_not].into_iter().flatten() {
                    check_target(c, x, &names.systems, field("udp.source"))?;
                }
            }
            self.steps.push((c.file.to_path_buf(), s.clone()));
        }
        Ok(())
    }
}

/// The names a scenario defined so far: systems and hosts (shared namespace), their MACs.
struct Names {
    all: BTreeSet<String>,
    systems: BTreeSet<String>,
    macs: BTreeSet<MacAddr>,
}

impl Names {
    /// The names of an (included, already checked) scenario.
    fn of(sc: &Scenario) -> Names {
        Names {
            all: sc
                .systems
                .iter()
                .map(|s| s.name.get_ref().clone())
                .chain(sc.hosts.iter().map(|h| h.name.get_ref().clone()))
                .collect(),
            systems: sc
                .systems
                .iter()
                .map(|s| s.name.get_ref().clone())
                .collect(),
            macs: sc
                .systems
                .iter()
                .map(|s| &s.mac)
                .chain(sc.hosts.iter().map(|h| &h.mac))
                .filter_map(|m| m.get_ref().parse().ok())
                .collect(),
        }
    }

    fn known_system(&self, c: &Ctx, v: &S<String>, field: String) -> Result<(), ScenarioError> {
        if self.systems.contains(v.get_ref()) {
            Ok(())
        } else {
            Err(c.err(v.span(), field, format!("unknown system '{}'", v.get_ref())))
        }
    }

    fn known_node(&self, c: &Ctx, v: &S<String>, field: String) -> Result<(), ScenarioError> {
        if self.all.contains(v.get_ref()) {
            Ok(())
        } else {
            Err(c.err(
                v.span(),
                field,
                format!("unknown system or host '{}'", v.get_ref()),
            ))
        }
    }

    /// A system's or host's name, MAC and link-local: name valid and unused, MAC well formed and
    /// unused on any segment (systems and hosts share the check), link-local in 169.254/16.
    fn new_node(
        &mut self,
        c: &Ctx,
        name: &S<String>,
        mac: &S<String>,
        ll: &S<String>,
        field: impl Fn(&str) -> String,
    ) -> Result<(), ScenarioError> {
        if !valid_name(name.get_ref()) {
            return Err(c.err(
                name.span(),
                field("name"),
                format!("'{}': use 1-8 lowercase letters/digits", name.get_ref()),
            ));
        }
        if !self.all.insert(name.get_ref().clone()) {
            return Err(c.err(
                name.span(),
                field("name"),
                format!("duplicate name '{}'", name.get_ref()),
            ));
        }
        let m = parse_mac(c, mac, field("mac"))?;
        if !self.macs.insert(m) {
            return Err(c.err(mac.span(), field("mac"), format!("MAC {m} used twice")));
        }
        parse_ll(c, ll, field("linklocal"))?;
        Ok(())
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 8
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The span of the i-th `[[step]]` header (for steps without a better field to point at).
fn step_span(text: &str, i: usize) -> std::ops::Range<usize> {
    text.match_indices("[[step]]")
        .nth(i)
        .map_or(0..0, |(p, _)| p..p + 8)
}

/// An address target: an IPv4 address or `SYSTEM:global|anon|internal-N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Ip(Ipv4Addr),
    Of { system: String, kind: AddrKind },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrKind {
    Global,
    Anon,
    Internal(usize),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(ip) = s.parse() {
            return Ok(Target::Ip(ip));
        }
        let (sys, kind) = s.split_once(':').ok_or_else(|| {
            format!("'{s}': expected an IPv4 address or SYSTEM:global|anon|internal-N")
        })?;
        let kind = match kind {
            "global" => AddrKind::Global,
            "anon" => AddrKind::Anon,
            k => AddrKind::Internal(
                k.strip_prefix("internal-")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("'{k}': expected global, anon or internal-N"))?,
            ),
        };
        Ok(Target::Of {
            system: sys.into(),
            kind,
        })
    }
}

fn check_target(
    c: &Ctx,
    v: &S<String>,
    systems: &BTreeSet<String>,
    field: String,
) -> Result<(), ScenarioError> {
    match v.get_ref().parse::<Target>() {
        Err(e) => Err(c.err(v.span(), field, e)),
        Ok(Target::Of { system, .. }) if !systems.contains(&system) => {
            Err(c.err(v.span(), field, format!("unknown system '{system}'")))
        }
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name = "two"
topology = "4.2.2.2"

[[system]]
name = "alpha"
mac = "00:16:3E:FD:E2:AA"
linklocal = "169.254.69.30"
address = "2.0.1.0"

[[system]]
name = "beta"
mac = "00:16:3E:EC:A3:E1"
linklocal = "169.254.96.141"
address = "2.0.1.1"

[graph.g]
identities = [
  { name = "a", system = "alpha", index = 0, address = "2.0.1.0" },
  { name = "b", system = "beta", index = 0, address = "2.0.1.1" },
]
arcs = [["a", "b", 10000, 10000]]

[[step]]
on = "alpha"
run = ["add-identity-arc", "0", "eth1", "00:16:3E:EC:A3:E1", "169.254.96.141"]

[[step]]
feed = "g"

[[step]]
ping = { from = "alpha", to = "beta:global", expect = "reply" }
"#;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(Path::new("t.toml"), text)
    }

    #[test]
    fn a_good_file_loads() {
        let s = parse(OK).unwrap();
        assert_eq!(s.systems.len(), 2);
        assert_eq!(s.steps.len(), 3);
        assert_eq!(s.graphs["g"].arcs.len(), 1);
    }

    fn error_of(from: &str, to: &str) -> ScenarioError {
        assert!(OK.contains(from), "{from}");
        parse(&OK.replacen(from, to, 1)).unwrap_err()
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = error_of("mac = \"00:16:3E:EC:A3:E1\"", "mac = \"00:16:3E:EC:A3\"");
        assert_eq!((e.line, e.field.as_str()), (13, "system[1].mac"), "{e}");
        assert!(e.msg.contains("malformed MAC '00:16:3E:EC:A3'"), "{e}");

        let e = error_of("address = \"2.0.1.1\"", "address = \"2.0.9.1\"");
        assert_eq!((e.line, e.field.as_str()), (15, "system[1].address"), "{e}");
        assert!(e.msg.contains("bad address '2.0.9.1'"), "{e}");

        let e = error_of("on = \"alpha\"", "on = \"omega\"");
        assert_eq!(e.field, "step[0].on", "{e}");
        assert!(e.msg.contains("unknown system 'omega'"), "{e}");
        assert_eq!(e.line, 25);

        let e = error_of("system = \"beta\"", "system = \"zeta\"");
        assert_eq!(e.field, "graph.g.identities[1].system", "{e}");
        assert!(e.msg.contains("unknown system 'zeta'"));

        let e = error_of("to = \"beta:global\"", "to = \"beta:globl\"");
        assert_eq!(e.field, "step[2].ping.to", "{e}");

        let e = error_of("linklocal = \"169.254.69.30\"", "linklocal = \"10.1.2.3\"");
        assert_eq!(e.field, "system[0].linklocal");
        assert!(e.msg.contains("not a link-local"));

        let e = error_of("feed = \"g\"", "feed = \"h\"");
        assert!(e.msg.contains("unknown graph 'h'"), "{e}");

        let e = error_of(
            "[\"a\", \"b\", 10000, 10000]",
            "[\"a\", \"c\", 10000, 10000]",
        );
        assert!(e.msg.contains("unknown identity 'c'"), "{e}");

        let e = error_of("name = \"beta\"", "name = \"alpha\"");
        assert!(e.msg.contains("duplicate name 'alpha'"), "{e}");

        let host = "\n[[host]]\nname = \"rho\"\nmac = \"00:16:3E:FD:E2:AA\"\nlinklocal = \"169.254.1.1\"\n";
        let e = parse(&format!(
            "{}{host}",
            // the systems only, then a host with α's MAC
            OK.split("\n[graph.g]").next().unwrap()
        ))
        .unwrap_err();
        assert_eq!(e.field, "host[0].mac", "{e}");
        assert!(e.msg.contains("used twice"), "{e}");

        let e = error_of("expect = \"reply\"", "expect = \"maybe\"");
        assert_eq!(e.field, "step[2].ping.expect");
    }

    #[test]
    fn toml_and_schema_errors_name_the_line() {
        let e =
            parse(&OK.replace("address = \"2.0.1.0\"\n", "adress = \"2.0.1.0\"\n")).unwrap_err();
        assert_eq!(e.field, "toml");
        assert!(e.msg.contains("adress"), "{e}");
        assert_eq!(e.line, 9);
        let e = parse(&OK.replace(
            "[[step]]\nfeed = \"g\"",
            "[[step]]\nfeed = \"g\"\nwait_ms = 5",
        ))
        .unwrap_err();
        assert!(e.msg.contains("exactly one"), "{e}");
    }

    #[test]
    fn targets() {
        assert_eq!(
            "10.0.0.1".parse::<Target>().unwrap(),
            Target::Ip("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            "b:internal-2".parse::<Target>().unwrap(),
            Target::Of {
                system: "b".into(),
                kind: AddrKind::Internal(2)
            }
        );
        assert!("b:x".parse::<Target>().is_err());
        assert!("b".parse::<Target>().is_err());
    }
}
