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

use crate::expect::{self, RuleItem};

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
    /// A name `during` windows refer to the step by (unique in the scenario, includes too).
    #[serde(default)]
    pub id: Option<S<String>>,
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
    /// A kernel check sampled while the steps `from` … `to` run.
    #[serde(default)]
    pub during: Option<During>,
    /// Steps run concurrently (each in its own thread); the group ends when all have.
    #[serde(default)]
    pub parallel: Option<Vec<Step>>,
}

/// `during = { from, to, check }`: `check` must hold from just before step `from` starts
/// until just after step `to` ends (ids of later steps; `from` may be `to`), sampled at
/// least every [`DURING_PERIOD_MS`] ms.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct During {
    pub from: S<String>,
    pub to: S<String>,
    pub check: KernelCheck,
}

/// The period of a `during` window's samples.
pub const DURING_PERIOD_MS: u64 = 50;

/// Expected state of one link (`links = { eth1 = { up = true, classifier = true } }`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkExpect {
    /// Administratively up (IFF_UP).
    #[serde(default)]
    pub up: Option<bool>,
    /// The classifier (the TCX program `classify`) attached to its ingress: exactly once, or
    /// not at all.
    #[serde(default)]
    pub classifier: Option<bool>,
    /// The link kind (`veth`, `macvlan`, …).
    #[serde(default)]
    pub kind: Option<String>,
    /// A macvlan's mode (`vepa`, `bridge`, `private`, `passthru`, `source`).
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
}

/// Expected kernel state of one namespace of a system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelCheck {
    pub on: S<String>,
    /// Identity namespace label (`migr02`); default: the system's namespace.
    #[serde(default)]
    pub netns: Option<String>,
    /// Expected tables: a section of the spec's listings, or inline text in that format (with
    /// a listing: tables or routes added to it).
    #[serde(default)]
    pub listing: Option<S<String>>,
    #[serde(default)]
    pub tables: Option<S<String>>,
    /// Compare every route of the listed tables, whatever its protocol (default: ntkplane's
    /// routes, protocol ntk, only).
    #[serde(default)]
    pub tables_exact: Option<S<bool>>,
    /// Only the listed tables are compared; ntkplane may have others (default: exactly these).
    #[serde(default)]
    pub tables_subset: Option<S<bool>>,
    /// Table id → whether a `fwmark ID lookup ID` rule exists (default: true for every listed
    /// table but 251).
    #[serde(default)]
    pub fwmark_rules: Option<S<BTreeMap<String, bool>>>,
    /// MAC → mark of the classifier's map (when given: exactly these).
    #[serde(default)]
    pub marks: Option<S<BTreeMap<String, u32>>>,
    /// Substrings that must / must not appear in the namespace's IPv4 addresses, routes of
    /// every table and rules, rendered as `ip -4 -o addr show`, `ip route show table all`
    /// and `ip rule show` print them but with numeric table ids (read over rtnetlink), and
    /// in `nft list ruleset`.
    #[serde(default)]
    pub contains: Vec<S<String>>,
    #[serde(default)]
    pub absent: Vec<S<String>>,
    /// Interface → exactly these IPv4 addresses (`A.B.C.D/LEN`, `/32` if left out).
    #[serde(default)]
    pub addresses: Option<S<BTreeMap<String, Vec<String>>>>,
    /// Exactly these rules, in this order (priorities not compared); an inner array: rules in
    /// any order among themselves.
    #[serde(default)]
    pub rules: Option<S<Vec<RuleItem>>>,
    /// Exactly these NAT rules, in `nft list ruleset` order, named maps written in place.
    #[serde(default)]
    pub nat: Option<S<Vec<String>>>,
    /// Table main holds exactly these routes (`ip route show` lines, fields in any order).
    #[serde(default)]
    pub main: Option<S<String>>,
    /// The system's identity namespaces are exactly these labels (`[]`: none is left).
    #[serde(default)]
    pub namespaces: Option<S<Vec<String>>>,
    /// Links of the namespace: admin state, classifier attachment, kind, macvlan mode, MAC.
    #[serde(default)]
    pub links: Option<S<BTreeMap<String, LinkExpect>>>,
}

impl KernelCheck {
    /// Whether the check states a whole part of the state exactly (addresses, rules, NAT,
    /// table main, identity namespaces, tables over every protocol).
    pub fn is_exact(&self) -> bool {
        self.addresses.is_some()
            || self.rules.is_some()
            || self.nat.is_some()
            || self.main.is_some()
            || self.namespaces.is_some()
            || self.tables_exact.as_ref().is_some_and(|t| *t.get_ref())
    }
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
    /// (where the step was written, step)
    pub steps: Vec<(Origin, Step)>,
    /// Step ids → index in `steps`.
    pub ids: BTreeMap<String, usize>,
    /// The text of every file read (for the lines failures name at run time).
    pub sources: BTreeMap<PathBuf, String>,
}

/// Where a step was written: its file and its index among that file's `[[step]]`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub index: usize,
}

impl Scenario {
    /// `FILE:LINE` of a position in a file of the scenario.
    pub fn at(&self, file: &Path, span: std::ops::Range<usize>) -> String {
        let line = self.sources.get(file).map_or(0, |t| line_of(t, span.start));
        format!("{}:{line}", file.display())
    }

    /// `FILE:LINE` of a step's `[[step]]` header.
    pub fn step_at(&self, o: &Origin) -> String {
        let text = self.sources.get(&o.file).map_or("", |t| t.as_str());
        self.at(&o.file, step_span(text, o.index))
    }
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
        sc.sources.insert(path.to_path_buf(), text.to_string());
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
                    ids: BTreeMap::new(),
                    sources: BTreeMap::new(),
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

    /// `[[step]]`: one action each, every system, host, graph and listing it names known;
    /// step ids unique; `during` windows over later steps.
    fn step_section(&mut self, c: &Ctx, f: &File, names: &Names) -> Result<(), ScenarioError> {
        let base = self.steps.len();
        for (i, s) in f.steps.iter().enumerate() {
            let field = format!("step[{i}]");
            self.step_item(c, names, s, &field, step_span(c.text, i), false)?;
            if let Some(id) = &s.id {
                let v = id.get_ref();
                if v.is_empty()
                    || v.len() > 32
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                {
                    return Err(c.err(
                        id.span(),
                        format!("{field}.id"),
                        format!("'{v}': use 1-32 lowercase letters, digits or '-'"),
                    ));
                }
                if self.ids.insert(v.clone(), base + i).is_some() {
                    return Err(c.err(
                        id.span(),
                        format!("{field}.id"),
                        format!("duplicate step id '{v}'"),
                    ));
                }
            }
            self.steps.push((
                Origin {
                    file: c.file.to_path_buf(),
                    index: i,
                },
                s.clone(),
            ));
        }
        self.windows(c, f, base)
    }

    /// One step (or, `member`, one step of a `parallel` group): exactly one action, and what
    /// it names known.
    fn step_item(
        &self,
        c: &Ctx,
        names: &Names,
        s: &Step,
        prefix: &str,
        header: std::ops::Range<usize>,
        member: bool,
    ) -> Result<(), ScenarioError> {
        let field = |x: &str| format!("{prefix}.{x}");
        let actions = [
            s.run.is_some(),
            s.start.is_some(),
            s.shell.is_some(),
            s.feed.is_some(),
            s.wait_ms.is_some(),
            s.check.is_some(),
            s.ping.is_some(),
            s.udp.is_some(),
            s.during.is_some(),
            s.parallel.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        let at = s.on.as_ref().map_or(0..0, |o| o.span());
        let at = if at.is_empty() { header.clone() } else { at };
        if actions != 1 {
            return Err(c.err(at, prefix, format!("{actions} actions: a step has exactly one of run, start, shell, feed, wait_ms, check, ping, udp, during, parallel")));
        }
        if member {
            let not_here = [
                (s.start.is_some(), "start"),
                (s.feed.is_some(), "feed"),
                (s.during.is_some(), "during"),
                (s.parallel.is_some(), "parallel"),
                (s.id.is_some(), "id"),
            ];
            if let Some((_, what)) = not_here.iter().find(|(x, _)| *x) {
                return Err(c.err(
                    at,
                    field(what),
                    "not in a parallel group (its steps are run, shell, wait_ms, check, ping or udp)",
                ));
            }
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
            kernel_check(c, names, k, &field("check"))?;
        }
        if let Some(d) = &s.during {
            kernel_check(c, names, &d.check, &field("during.check"))?;
        }
        if let Some(group) = &s.parallel {
            if group.is_empty() {
                return Err(c.err(at, field("parallel"), "an empty group"));
            }
            for (k, m) in group.iter().enumerate() {
                self.step_item(
                    c,
                    names,
                    m,
                    &field(&format!("parallel[{k}]")),
                    header.clone(),
                    true,
                )?;
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
        Ok(())
    }

    /// `during = { from, to }` of this file's steps: ids of steps after the `during` step,
    /// `from` not after `to`.
    fn windows(&self, c: &Ctx, f: &File, base: usize) -> Result<(), ScenarioError> {
        for (i, s) in f.steps.iter().enumerate() {
            let Some(d) = &s.during else { continue };
            let here = base + i;
            let mut ends = [0usize; 2];
            for (k, (name, v)) in [("from", &d.from), ("to", &d.to)].into_iter().enumerate() {
                let field = format!("step[{i}].during.{name}");
                let Some(&at) = self.ids.get(v.get_ref()) else {
                    return Err(c.err(
                        v.span(),
                        field,
                        format!("no step with id '{}'", v.get_ref()),
                    ));
                };
                if at <= here {
                    return Err(c.err(
                        v.span(),
                        field,
                        format!(
                            "step '{}' is not after this one: a window is declared before it opens",
                            v.get_ref()
                        ),
                    ));
                }
                ends[k] = at;
            }
            if ends[0] > ends[1] {
                return Err(c.err(
                    d.to.span(),
                    format!("step[{i}].during.to"),
                    format!(
                        "step '{}' comes before '{}'",
                        d.to.get_ref(),
                        d.from.get_ref()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A kernel check (`check = {…}`, a window's `check`): the system known, every expectation
/// well formed.
fn kernel_check(
    c: &Ctx,
    names: &Names,
    k: &KernelCheck,
    prefix: &str,
) -> Result<(), ScenarioError> {
    let field = |x: &str| format!("{prefix}.{x}");
    names.known_system(c, &k.on, field("on"))?;
    let nothing = k.listing.is_none()
        && k.tables.is_none()
        && k.fwmark_rules.is_none()
        && k.marks.is_none()
        && k.contains.is_empty()
        && k.absent.is_empty()
        && k.addresses.is_none()
        && k.rules.is_none()
        && k.nat.is_none()
        && k.main.is_none()
        && k.namespaces.is_none()
        && k.links.is_none();
    if nothing {
        return Err(c.err(k.on.span(), prefix, "nothing to check"));
    }
    if let Some(l) = &k.listing {
        if !crate::listing::has_section(crate::listing::SCENARIO_LISTINGS, l.get_ref()) {
            return Err(c.err(
                l.span(),
                field("listing"),
                format!("no listing '{}' in the spec's listings", l.get_ref()),
            ));
        }
    }
    if let Some(t) = &k.tables {
        crate::listing::parse_tables(t.get_ref())
            .map_err(|e| c.err(t.span(), field("tables"), e))?;
    }
    for (name, flag) in [
        ("tables_exact", &k.tables_exact),
        ("tables_subset", &k.tables_subset),
    ] {
        if let Some(f) = flag {
            if k.listing.is_none() && k.tables.is_none() {
                return Err(c.err(f.span(), field(name), "needs listing or tables"));
            }
        }
    }
    if let Some(r) = &k.fwmark_rules {
        for id in r.get_ref().keys() {
            if id.parse::<u32>().is_err() {
                return Err(c.err(
                    r.span(),
                    field("fwmark_rules"),
                    format!("'{id}' is not a table id"),
                ));
            }
        }
    }
    if let Some(m) = &k.marks {
        for mac in m.get_ref().keys() {
            if mac.parse::<MacAddr>().is_err() {
                return Err(c.err(m.span(), field("marks"), format!("malformed MAC '{mac}'")));
            }
        }
    }
    if let Some(a) = &k.addresses {
        for (dev, list) in a.get_ref() {
            let f = field(&format!("addresses.{dev}"));
            let mut seen = BTreeSet::new();
            for x in list {
                let v = expect::parse_address(x).map_err(|e| c.err(a.span(), &f, e))?;
                if !seen.insert(v) {
                    return Err(c.err(a.span(), f, format!("'{x}' listed twice")));
                }
            }
        }
    }
    if let Some(r) = &k.rules {
        for (i, item) in r.get_ref().iter().enumerate() {
            let f = field(&format!("rules[{i}]"));
            if item.texts().is_empty() {
                return Err(c.err(r.span(), f, "an empty group"));
            }
            for t in item.texts() {
                expect::parse_rule(t).map_err(|e| c.err(r.span(), &f, e))?;
            }
        }
    }
    if let Some(n) = &k.nat {
        if let Some(i) = n.get_ref().iter().position(|x| x.trim().is_empty()) {
            return Err(c.err(n.span(), field(&format!("nat[{i}]")), "an empty rule"));
        }
    }
    if let Some(m) = &k.main {
        expect::parse_main(m.get_ref()).map_err(|e| c.err(m.span(), field("main"), e))?;
    }
    if let Some(ns) = &k.namespaces {
        for l in ns.get_ref() {
            if !valid_label(l) {
                return Err(c.err(
                    ns.span(),
                    field("namespaces"),
                    format!("'{l}': an identity namespace label (e.g. migr01)"),
                ));
            }
        }
    }
    if let Some(links) = &k.links {
        for (dev, l) in links.get_ref() {
            let f = field(&format!("links.{dev}"));
            if dev.is_empty() || dev.len() > 15 {
                return Err(c.err(links.span(), f, "not an interface name"));
            }
            if let Some(m) = &l.mac {
                m.parse::<MacAddr>()
                    .map_err(|e| c.err(links.span(), &f, format!("malformed MAC '{m}' ({e})")))?;
            }
            if let Some(m) = &l.mode {
                if !["private", "vepa", "bridge", "passthru", "source"].contains(&m.as_str()) {
                    return Err(c.err(
                        links.span(),
                        f,
                        format!(
                            "'{m}': a macvlan mode is private, vepa, bridge, passthru or source"
                        ),
                    ));
                }
            }
            if l.up.is_none()
                && l.classifier.is_none()
                && l.kind.is_none()
                && l.mode.is_none()
                && l.mac.is_none()
            {
                return Err(c.err(
                    links.span(),
                    f,
                    "nothing to check (up, classifier, kind, mode, mac)",
                ));
            }
        }
    }
    Ok(())
}

/// An identity namespace label (`migr01`, `entr05`).
fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 15
        && l.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
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

    /// [`OK`] with a check of every exact form, a `parallel` group and a `during` window.
    fn exact() -> String {
        OK.to_string()
            + r#"
[[step]]
during = { from = "arcs", to = "pause", check = { on = "alpha", rules = ["local", "lookup 251", "main", "default"] } }

[[step]]
id = "arcs"
parallel = [
  { on = "alpha", run = ["add-qspn-arc", "0", "eth1", "00:16:3E:EC:A3:E1"] },
  { on = "beta", run = ["add-qspn-arc", "0", "eth1", "00:16:3E:FD:E2:AA"] },
]

[[step]]
id = "pause"
wait_ms = 100

[[step]]
check = { on = "alpha",
  addresses = { eth1 = ["169.254.69.30/32", "10.0.0.18"], lo = ["127.0.0.1/8", "10.0.0.32/32"] },
  rules = ["local", ["fwmark 250 lookup 250", "fwmark 249 lookup 249"], "lookup 251", "main", "default"],
  nat = ["ip daddr 10.0.0.64/27 snat to 10.0.0.18"],
  main = """
169.254.96.141 dev eth1 proto ntk scope link src 169.254.69.30
""",
  namespaces = [],
  links = { eth1 = { up = true, classifier = true, kind = "veth" } },
  tables = """
table 250
  unreachable: .0/29
""", tables_exact = true, tables_subset = true, fwmark_rules = { "250" = false } }
"#
    }

    #[test]
    fn exact_forms_windows_and_groups_load() {
        let s = parse(&exact()).unwrap();
        assert_eq!(s.steps.len(), 7);
        assert_eq!(s.ids["arcs"], 4);
        assert_eq!(s.ids["pause"], 5);
        let k = s.steps[6].1.check.as_ref().unwrap();
        assert!(k.is_exact());
        assert_eq!(k.rules.as_ref().unwrap().get_ref().len(), 5);
        assert_eq!(s.steps[4].1.parallel.as_ref().unwrap().len(), 2);
        assert_eq!(s.step_at(&s.steps[6].0), "t.toml:48");
        assert_eq!(
            s.at(Path::new("t.toml"), k.nat.as_ref().unwrap().span()),
            "t.toml:52"
        );
    }

    /// The error of [`exact`] with `from` replaced by `to`.
    fn exact_error(from: &str, to: &str) -> ScenarioError {
        let text = exact();
        assert!(text.contains(from), "{from}");
        parse(&text.replacen(from, to, 1)).unwrap_err()
    }

    #[test]
    fn exact_forms_are_checked_at_load_with_line_and_field() {
        for (from, to, line, field, msg) in [
            ("\"10.0.0.18\"]", "\"10.0.0.318\"]", 50, "step[6].check.addresses.eth1", "bad address '10.0.0.318"),
            ("\"main\", \"default\"],\n", "\"main\", \"prio 5 lookup 9\"],\n", 51, "step[6].check.rules[4]", "unknown word 'prio'"),
            ("[\"fwmark 250 lookup 250\", \"fwmark 249 lookup 249\"]", "[]", 51, "step[6].check.rules[1]", "an empty group"),
            ("snat to 10.0.0.18\"]", "snat to 10.0.0.18\", \" \"]", 52, "step[6].check.nat[1]", "an empty rule"),
            ("scope link src 169.254.69.30\n", "scope lnk src 169.254.69.30\n", 53, "step[6].check.main", "unknown scope 'lnk'"),
            ("namespaces = []", "namespaces = [\"Migr01\"]", 56, "step[6].check.namespaces", "'Migr01'"),
            ("kind = \"veth\"", "mode = \"fast\"", 57, "step[6].check.links.eth1", "'fast': a macvlan mode"),
            ("classifier = true, kind", "clasifier = true, kind", 57, "toml", "clasifier"),
            ("{ \"250\" = false }", "{ \"ntk\" = false }", 61, "step[6].check.fwmark_rules", "'ntk' is not a table id"),
            ("unreachable: .0/29\n\"\"\"", "unreachable: 0/29\n\"\"\"", 58, "step[6].check.tables", "bad prefix"),
            ("to = \"pause\"", "to = \"pose\"", 35, "step[3].during.to", "no step with id 'pose'"),
            ("from = \"arcs\", to = \"pause\"", "from = \"pause\", to = \"arcs\"", 35, "step[3].during.to", "comes before"),
            ("id = \"pause\"", "id = \"arcs\"", 45, "step[5].id", "duplicate step id 'arcs'"),
            ("id = \"pause\"", "id = \"Pause\"", 45, "step[5].id", "'Pause'"),
            ("{ on = \"beta\", run", "{ on = \"beta\", start = true, run", 41, "step[4].parallel[1]", "2 actions"),
            ("{ on = \"beta\", run = [\"add-qspn-arc\", \"0\", \"eth1\", \"00:16:3E:FD:E2:AA\"] }", "{ on = \"beta\", start = true }", 41, "step[4].parallel[1].start", "not in a parallel group"),
            ("{ on = \"beta\", run", "{ on = \"zeta\", run", 41, "step[4].parallel[1].on", "unknown system 'zeta'"),
            ("rules = [\"local\", \"lookup 251\", \"main\", \"default\"] } }", "} }", 35, "step[3].during.check", "nothing to check"),
            ("tables_subset = true", "tables_subset = 1", 61, "toml", "bool"),
        ] {
            let e = exact_error(from, to);
            assert_eq!((e.line, e.field.as_str()), (line, field), "{from} → {to}: {e}");
            assert!(e.msg.contains(msg), "{from} → {to}: {e}");
        }
        // A window declared after the step it opens at.
        let text = exact().replace(
            "[[step]]\nduring = { from = \"arcs\"",
            "[[step]]\nid = \"w\"\nduring = { from = \"w\"",
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field, "step[3].during.from", "{e}");
        assert!(e.msg.contains("not after this one"), "{e}");
        // tables_exact without tables or listing.
        let e = parse(&OK.replace(
            "[[step]]\nfeed = \"g\"",
            "[[step]]\ncheck = { on = \"alpha\", tables_exact = true, namespaces = [] }\n[[step]]\nfeed = \"g\"",
        ))
        .unwrap_err();
        assert_eq!(e.field, "step[1].check.tables_exact", "{e}");
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
