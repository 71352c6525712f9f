//! The systems' daemons: starting one (its log kept in the lab's folder), client commands,
//! arc indices, and the path solver's feeds.
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use clap::Parser;
use ntkplane::{
    addr::{ipv4, NtkAddress},
    daemon::{proto::Request, reply, Paths},
    mac::MacAddr,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Lab, Sys};
use crate::{
    feed::feed_for,
    network::{arc, NetIdentity, Network},
    scenario::{AddrKind, Target},
};

impl Lab<'_> {
    pub(super) fn sys(&self, name: &str) -> &Sys {
        &self.systems[name]
    }

    pub(super) fn start(&mut self, name: &str) -> Result<(), String> {
        let def = self
            .sc
            .systems
            .iter()
            .find(|s| s.name.get_ref() == name)
            .expect("checked at load");
        let s = &self.systems[name];
        let log_path = self.log_path(name);
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
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
            .args(["--paths", self.paths.daemon_arg()])
            .args(self.paths.daemon_extra())
            .args(self.arc_cost_args(name))
            .args(["--rt-tables-dir", "none", "--state-dir"])
            .arg(self.dir.join("state"))
            // `NTKPLANE_LAB_LOG=debug` (or any filter) for the daemons' logs.
            .env(
                "RUST_LOG",
                std::env::var("NTKPLANE_LAB_LOG").unwrap_or_else(|_| "info".into()),
            )
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
        while self
            .ask::<reply::Status>(name, &Request::Status {})
            .is_err()
        {
            let sys = self.systems.get_mut(name).unwrap();
            if let Some(status) = sys.exited() {
                // Reported here, with its log: not again as a daemon that died later.
                sys.child = None;
                return Err(format!(
                    "the daemon of {name} exited at start ({status}):\n{}",
                    self.log_tail(name)
                ));
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "the daemon of {name} did not answer within 10 s:\n{}",
                    self.log_tail(name)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Protocol mode: `--arc-cost eth1=MAC=US` towards every system the graphs join to this
    /// one, with the graphs' costs (`crate::arc_costs`).
    fn arc_cost_args(&self, name: &str) -> Vec<String> {
        if self.paths.feeds() {
            return vec![];
        }
        crate::arc_costs::costs_of(&self.sc.graphs, name)
            .into_iter()
            .filter_map(|(peer, us)| {
                let def = self.sc.systems.iter().find(|s| s.name.get_ref() == &peer)?;
                Some([
                    "--arc-cost".to_string(),
                    format!("eth1={}={us}", def.mac.get_ref()),
                ])
            })
            .flatten()
            .collect()
    }

    fn log_path(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// The last lines of a daemon's log, indented, and where the whole log is.
    pub(super) fn log_tail(&self, name: &str) -> String {
        let path = self.log_path(name);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut out: String = lines[lines.len().saturating_sub(6)..]
            .iter()
            .map(|l| format!("    | {l}\n"))
            .collect();
        out += &format!("    (whole log: {})", path.display());
        out
    }

    /// Daemons that exited on their own, each with the end of its log ("" if none did).
    pub(super) fn dead_daemons(&mut self) -> String {
        let dead: Vec<(String, std::process::ExitStatus)> = self
            .systems
            .iter_mut()
            .filter_map(|(n, s)| Some((n.clone(), s.exited()?)))
            .collect();
        dead.iter()
            .map(|(n, st)| format!("\n  the daemon of {n} exited ({st}):\n{}", self.log_tail(n)))
            .collect()
    }

    /// A scenario's `run` step: the command line parsed as the `ntkplane` client parses it,
    /// sent to the system's daemon; the reply's data.
    pub fn client(&self, system: &str, args: &[&str]) -> Result<Value, String> {
        let line = || format!("{system}: ntkplane {}", args.join(" "));
        let req = ClientLine::try_parse_from(args)
            .map_err(|e| {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default();
                format!("{}: {}", line(), first.trim_start_matches("error: "))
            })?
            .req;
        self.send(system, &req)
            .map_err(|e| format!("{}: {e}", line()))
    }

    /// One request to a system's daemon over its control socket; the reply's data.
    pub(super) fn send(&self, system: &str, req: &Request) -> Result<Value, String> {
        let socket = Paths {
            run_dir: self.dir.join("run"),
            ..Paths::new(&self.sys(system).instance)
        }
        .socket();
        match ntkplane::cli::send(&socket, req) {
            Ok(r) if r.ok => Ok(r.data),
            Ok(r) => Err(r.error.unwrap_or_else(|| "refused".into())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// [`Self::send`] for a request whose reply the lab reads: typed.
    pub(super) fn ask<T: DeserializeOwned>(
        &self,
        system: &str,
        req: &Request,
    ) -> Result<T, String> {
        let data = self
            .send(system, req)
            .map_err(|e| format!("{system}: {e}"))?;
        serde_json::from_value(data).map_err(|e| format!("{system}: unexpected reply: {e}"))
    }

    /// The arcs of identity `idx`.
    fn arcs(&self, system: &str, identity: u32) -> Result<reply::Arcs, String> {
        self.ask(system, &Request::ShowArcs { identity })
    }

    /// The daemon's arc index of identity `idx` towards `mac`.
    pub(super) fn arc_to(&self, system: &str, idx: u32, mac: MacAddr) -> Result<u32, String> {
        self.arcs(system, idx)?
            .into_iter()
            .find_map(|(k, a)| (a.peer_mac == mac).then_some(k))
            .ok_or_else(|| format!("{system}: identity {idx} has no arc to {mac}"))
    }

    /// Replaces `{arc IDX MAC}` in an argument with the daemon's arc index.
    pub(super) fn expand(&self, system: &str, arg: &str) -> Result<String, String> {
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
    pub(super) fn network(&self, g: &str) -> Network {
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
    pub(super) fn feed(&mut self, g: &str) -> Result<String, String> {
        let net = self.network(g);
        let mut sent = Vec::new();
        for i in &self.sc.graphs[g].identities {
            let (Some(s), Some(idx)) = (&i.system, i.index) else {
                continue;
            };
            let system = s.get_ref().clone();
            let by_mac: BTreeMap<MacAddr, u32> = self
                .arcs(&system, idx)?
                .into_iter()
                .map(|(k, a)| (a.peer_mac, k))
                .collect();
            let f = feed_for(&net, i.name.get_ref(), |m| by_mac.get(&m).copied())
                .map_err(|e| e.to_string())?;
            let key = (system.clone(), idx);
            if self.fed.get(&key) == Some(&f) {
                continue;
            }
            self.ask::<reply::Done>(
                &system,
                &Request::Etp {
                    identity: idx,
                    feed: f.clone(),
                },
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

    pub(super) fn netns_of(&self, system: &str, label: Option<&str>) -> String {
        let s = self.sys(system);
        label.map_or_else(|| s.netns.clone(), |l| format!("{}-{l}", s.instance))
    }

    /// The IPv4 address a target names, from the system's current main identity.
    pub(super) fn resolve(&self, target: &str) -> Result<Ipv4Addr, String> {
        match target.parse::<Target>()? {
            Target::Ip(ip) => Ok(ip),
            Target::Of { system, kind } => {
                let ids: Vec<reply::IdentityRow> =
                    self.ask(&system, &Request::ShowIdentities {})?;
                let addr = &ids
                    .iter()
                    .find(|i| i.kind == reply::IdentityKind::Main)
                    .ok_or_else(|| format!("{system}: no main identity"))?
                    .address;
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

    pub(super) fn ns_of_node(&self, name: &str) -> String {
        self.hosts
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.sys(name).netns.clone())
    }
}

/// A `run` step's arguments, parsed by the client's own definitions.
#[derive(clap::Parser)]
#[command(name = "ntkplane", no_binary_name = true)]
struct ClientLine {
    #[command(subcommand)]
    req: Request,
}
