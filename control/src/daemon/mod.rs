//! The ntkplane daemon: owns one system's dataplane. Commands arrive on a Unix socket as
//! JSON lines and are serialized (one writer per system); each is applied to a copy of the
//! model, validated, persisted, then the kernel is reconciled to the new model.
pub mod persist;
pub mod proto;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixListener},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use serde_json::json;

use self::proto::{Request, Response, MAX_REQUEST};
use crate::{kernel::Reconciler, netns::Netns, system::System};

/// Where a daemon instance keeps its files.
#[derive(Clone, Debug)]
pub struct Paths {
    pub instance: String,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub pin_root: PathBuf,
    pub rt_tables_dir: Option<PathBuf>,
}

impl Paths {
    pub fn new(instance: &str) -> Self {
        Paths {
            instance: instance.into(),
            state_dir: PathBuf::from("/var/lib/ntkplane"),
            run_dir: PathBuf::from("/run/ntkplane"),
            pin_root: PathBuf::from(crate::classifier::BPFFS).join("ntkplane"),
            rt_tables_dir: Some(PathBuf::from("/etc/iproute2/rt_tables.d")),
        }
    }
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join(format!("{}.sock", self.instance))
    }
    pub fn state(&self) -> PathBuf {
        self.state_dir.join(&self.instance).join("state.json")
    }
    pub fn pins(&self, ns: &Option<String>) -> PathBuf {
        self.pin_root
            .join(&self.instance)
            .join(ns.as_deref().unwrap_or("default"))
    }
    pub fn rt_tables(&self) -> Option<PathBuf> {
        self.rt_tables_dir
            .as_ref()
            .map(|d| d.join(format!("{}.conf", self.instance)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("a daemon already runs for instance '{0}' (its socket answers)")]
    AlreadyRunning(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    System(#[from] crate::system::SystemError),
    #[error(transparent)]
    Kernel(#[from] crate::kernel::KernelError),
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> DaemonError {
    move |e| DaemonError::Io(format!("{what}: {e}"))
}

pub struct Daemon {
    paths: Paths,
    /// The namespace that plays the system's default namespace.
    system_netns: Netns,
    system: System,
    reconcilers: BTreeMap<Option<String>, Reconciler>,
}

impl Daemon {
    /// Starts: refuses a second daemon on the instance, loads the persisted model (or creates
    /// it with `init`), and reconciles the kernel to it (adopting pinned BPF objects).
    pub fn start(
        paths: Paths,
        system_netns: Netns,
        init: impl FnOnce() -> Result<System, DaemonError>,
    ) -> Result<Self, DaemonError> {
        if std::os::unix::net::UnixStream::connect(paths.socket()).is_ok() {
            return Err(DaemonError::AlreadyRunning(paths.instance.clone()));
        }
        let system = match persist::load(&paths.state()).map_err(io_err("state"))? {
            Some(s) => {
                tracing::info!(state = %paths.state().display(), "restarting from the persisted state");
                s
            }
            None => {
                let s = init()?;
                persist::save(&paths.state(), &s).map_err(io_err("state"))?;
                s
            }
        };
        let mut d = Daemon {
            paths,
            system_netns,
            system,
            reconcilers: BTreeMap::new(),
        };
        d.reconcile()?;
        Ok(d)
    }

    fn netns_of(&self, ns: &Option<String>) -> Netns {
        match ns {
            None => self.system_netns.clone(),
            Some(n) => Netns::named(n),
        }
    }

    /// Brings every namespace to the model.
    fn reconcile(&mut self) -> Result<(), DaemonError> {
        let mut desired = self.system.desired()?;
        // One rt_tables file per system: the default namespace's reconciler publishes every name.
        let names: BTreeMap<u32, String> = desired
            .values()
            .flat_map(|d| d.table_names.clone())
            .collect();
        if let Some(d) = desired.get_mut(&None) {
            d.table_names = names;
        }
        let gone: Vec<Option<String>> = self
            .reconcilers
            .keys()
            .filter(|k| !desired.contains_key(k))
            .cloned()
            .collect();
        for ns in gone {
            let mut r = self.reconcilers.remove(&ns).unwrap();
            r.cleanup()?;
        }
        for (ns, d) in desired {
            if !self.reconcilers.contains_key(&ns) {
                let rt = if ns.is_none() {
                    self.paths.rt_tables()
                } else {
                    None
                };
                let r = Reconciler::pinned(
                    self.netns_of(&ns),
                    self.system.config.mark_mask,
                    rt,
                    &self.paths.pins(&ns),
                )?;
                self.reconcilers.insert(ns.clone(), r);
            }
            self.reconcilers.get_mut(&ns).unwrap().apply(&d)?;
        }
        Ok(())
    }

    /// Removes everything ntkplane installed, and the persisted state.
    pub fn shutdown(&mut self) -> Result<(), DaemonError> {
        let all: Vec<Option<String>> = self.reconcilers.keys().cloned().collect();
        for ns in all {
            let mut r = self.reconcilers.remove(&ns).unwrap();
            r.cleanup()?;
        }
        let _ = std::fs::remove_dir(self.paths.pin_root.join(&self.paths.instance));
        let _ = std::fs::remove_dir(&self.paths.pin_root);
        persist::remove(&self.paths.state()).map_err(io_err("state"))?;
        let _ = std::fs::remove_dir(self.paths.state_dir.join(&self.paths.instance));
        Ok(())
    }

    /// Applies one command.
    pub fn handle(&mut self, req: &Request) -> Response {
        let mut next = self.system.clone();
        let result: Result<serde_json::Value, crate::system::SystemError> = match req {
            Request::AddIdentityArc {
                identity,
                nic,
                peer_mac,
                peer_linklocal,
            } => next
                .add_identity_arc(*identity, nic, *peer_mac, *peer_linklocal)
                .map(|arc| json!({ "arc": arc })),
            Request::AddQspnArc {
                identity,
                nic,
                peer_mac,
            } => next
                .add_qspn_arc(*identity, nic, *peer_mac)
                .map(|t| json!({ "table": t, "mark": t })),
            Request::SetNeighbour {
                identity,
                arc,
                address,
            } => next
                .set_neighbour(*identity, *arc, address)
                .map(|_| json!({})),
            Request::SetPaths {
                identity,
                dest,
                paths,
            } => next
                .set_paths(*identity, *dest, paths.0.clone())
                .map(|_| json!({})),
            Request::RemovePaths { identity, dest } => {
                next.set_paths(*identity, *dest, vec![]).map(|_| json!({}))
            }
            Request::RemoveArc { identity, arc } => {
                next.remove_arc(*identity, *arc).map(|_| json!({}))
            }
            Request::ShowIdentities => return Response::ok(self.show_identities()),
            Request::ShowArcs { identity } => {
                return match self.system.identity(*identity) {
                    Ok(id) => Response::ok(json!(id.arcs)),
                    Err(e) => Response::err(e),
                }
            }
            Request::ShowTables => return self.show_tables(),
            Request::Status => return Response::ok(self.status()),
            Request::Quit => return Response::ok(json!({})),
        };
        let data = match result.and_then(|d| next.desired().map(|_| d)) {
            Ok(d) => d,
            Err(e) => return Response::err(e),
        };
        let previous = std::mem::replace(&mut self.system, next);
        if let Err(e) = persist::save(&self.paths.state(), &self.system) {
            self.system = previous;
            return Response::err(format!("cannot persist the state: {e}"));
        }
        match self.reconcile() {
            Ok(()) => Response::ok(data),
            Err(e) => Response::err(format!("kernel: {e}")),
        }
    }

    fn show_identities(&self) -> serde_json::Value {
        json!(self
            .system
            .identities
            .iter()
            .map(|(i, id)| json!({
                "index": i,
                "address": id.address.to_string(),
                "kind": if id.is_main() { "main" } else { "connectivity" },
                "netns": id.netns.clone().unwrap_or_else(|| "default".into()),
            }))
            .collect::<Vec<_>>())
    }

    fn show_tables(&self) -> Response {
        let desired = match self.system.desired() {
            Ok(d) => d,
            Err(e) => return Response::err(e),
        };
        let mut out = Vec::new();
        for (ns, d) in &desired {
            let counters = self.reconcilers.get(ns).map(|r| r.classifier());
            for (id, name) in &d.table_names {
                let routes = d.state.routes.keys().filter(|(t, _)| t == id).count();
                let mac = name.strip_prefix("ntk_from_").and_then(|m| m.parse().ok());
                let packets = match (counters, mac) {
                    (Some(c), Some(m)) => c.counters(m).ok().flatten().map(|c| c.packets),
                    _ => None,
                };
                out.push(json!({
                    "netns": ns.clone().unwrap_or_else(|| "default".into()),
                    "table": id, "name": name, "routes": routes,
                    "rule": d.state.rules.iter().any(|r| r.table == *id),
                    "packets": packets,
                }));
            }
        }
        Response::ok(json!(out))
    }

    fn status(&self) -> serde_json::Value {
        json!({
            "instance": self.paths.instance,
            "topology": self.system.config.topology,
            "identities": self.system.identities.len(),
            "namespaces": self.reconcilers.keys().map(|k| k.clone().unwrap_or_else(|| "default".into())).collect::<Vec<_>>(),
            "tables": self.system.tables.all().count(),
        })
    }

    /// Serves the control socket until `quit` (or SIGTERM/SIGINT, which set `stop`).
    pub fn serve(&mut self, stop: &AtomicBool) -> Result<(), DaemonError> {
        let sock = self.paths.socket();
        std::fs::create_dir_all(&self.paths.run_dir).map_err(io_err("run dir"))?;
        let _ = std::fs::remove_file(&sock); // a stale socket of a dead daemon (checked at start)
        let listener = UnixListener::bind(&sock).map_err(io_err(sock.display()))?;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("socket mode"))?;
        listener.set_nonblocking(true).map_err(io_err("socket"))?;
        tracing::info!(socket = %sock.display(), "listening");
        let result = loop {
            if stop.load(Ordering::Relaxed) {
                break self.shutdown();
            }
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(e) => break Err(DaemonError::Io(format!("accept: {e}"))),
            };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut quit = false;
            let mut writer = match stream.try_clone() {
                Ok(w) => w,
                Err(_) => continue,
            };
            let mut reader = BufReader::new(stream.take(MAX_REQUEST as u64 + 1));
            let mut line = String::new();
            while {
                line.clear();
                reader.read_line(&mut line).unwrap_or(0) > 0
            } {
                let resp = if line.len() > MAX_REQUEST {
                    Response::err(format!("request longer than {MAX_REQUEST} bytes"))
                } else {
                    match serde_json::from_str::<Request>(line.trim()) {
                        Ok(Request::Quit) => {
                            quit = true;
                            match self.shutdown() {
                                Ok(()) => Response::ok(json!({})),
                                Err(e) => Response::err(e),
                            }
                        }
                        Ok(req) => {
                            tracing::info!(?req, "command");
                            self.handle(&req)
                        }
                        Err(e) => Response::err(format!("malformed request: {e}")),
                    }
                };
                let _ = writeln!(writer, "{}", serde_json::to_string(&resp).unwrap());
                if quit || line.len() > MAX_REQUEST {
                    break;
                }
            }
            if quit {
                break Ok(());
            }
        };
        let _ = std::fs::remove_file(&sock);
        result
    }
}
