//! The lab's topology: one bridge namespace per segment, one namespace per system and host
//! joined to it by a veth, the hosts' addresses and routes; and removing all of it (also what
//! kept or interrupted labs left). Set up with `ip`, as an administrator would.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use ntkplane::daemon::proto::Request;

use super::{Lab, Sys, LAB_PREFIX};

impl Lab<'_> {
    pub(super) fn add_ns(&mut self, name: &str) -> Result<String, String> {
        let ns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub(super) fn setup(&mut self, log: &mut dyn FnMut(&str)) -> Result<(), String> {
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

    pub(super) fn teardown(&mut self) {
        let names: Vec<String> = self.systems.keys().cloned().collect();
        for name in names {
            if self.systems[&name].child.is_some() {
                let _ = self.send(&name, &Request::Quit {});
            }
            let s = self.systems.get_mut(&name).unwrap();
            if let Some(mut c) = s.child.take() {
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
        // The daemons' logs stay after a failure (their folder is named in the error).
        let _ = std::fs::remove_dir_all(if self.passed {
            self.dir.clone()
        } else {
            self.dir.join("run")
        });
    }
}

pub(super) fn ip(args: &[&str]) -> Result<(), String> {
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
pub(super) const PINS: &str = "/sys/fs/bpf/ntkplane";

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
