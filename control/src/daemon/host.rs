//! The system namespace's settings ntkplane changes (the spec's sysctls, managed interfaces
//! brought up), recorded before the first `run` touches them and restored by `quit`.
use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::{
    kernel::{in_netns, rtnl::Rtnl, sysctl},
    netns::Netns,
};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    /// `net/ipv4/...` → value before ntkplane.
    pub sysctls: BTreeMap<String, String>,
    /// Managed interface → administratively up before ntkplane.
    pub links_up: BTreeMap<String, bool>,
}

impl HostSettings {
    /// Reads the current values in `netns` for the managed interfaces `ifaces`.
    pub fn record(netns: &Netns, ifaces: &[String]) -> Result<Self, String> {
        let keys: Vec<String> = sysctl::GLOBAL
            .iter()
            .map(|(k, _)| k.to_string())
            .chain(
                ifaces
                    .iter()
                    .flat_map(|d| sysctl::per_interface(d).map(|(k, _)| k)),
            )
            .collect();
        let ifaces = ifaces.to_vec();
        in_netns(netns, |rt| {
            let mut h = HostSettings::default();
            for k in keys {
                let v = sysctl::read(&k).map_err(|e| format!("sysctl {k}: {e}"))?;
                h.sysctls.insert(k, v);
            }
            let links = rt.block_on(async {
                Ok::<_, String>(
                    Rtnl::connect()
                        .await
                        .map_err(|e| e.to_string())?
                        .links()
                        .clone(),
                )
            })?;
            for i in ifaces {
                if let Some(l) = links.get(&i) {
                    h.links_up.insert(i, l.up);
                }
            }
            Ok(h)
        })
        .map_err(|e| e.to_string())?
    }

    /// Puts every recorded value back; each failure is one message (every value is tried).
    pub fn restore(&self, netns: &Netns) -> Vec<String> {
        let me = self.clone();
        in_netns(netns, move |rt| {
            let mut errors = Vec::new();
            for (k, v) in &me.sysctls {
                if let Err(e) = sysctl::ensure(k, v) {
                    errors.push(format!("restore sysctl {k}={v}: {e}"));
                }
            }
            let downs: Vec<&String> = me
                .links_up
                .iter()
                .filter(|(_, up)| !**up)
                .map(|(i, _)| i)
                .collect();
            if !downs.is_empty() {
                rt.block_on(async {
                    match Rtnl::connect().await {
                        Ok(mut r) => {
                            for i in downs {
                                if r.links().contains_key(i.as_str()) {
                                    if let Err(e) = r.set_down(i).await {
                                        errors.push(format!("restore {i} down: {e}"));
                                    }
                                }
                            }
                        }
                        Err(e) => errors.push(format!("restore links: {e}")),
                    }
                });
            }
            errors
        })
        .unwrap_or_else(|e| vec![format!("restore host settings: {e}")])
    }

    pub fn load(path: &Path) -> Result<Option<Self>, String> {
        match std::fs::read_to_string(path) {
            Ok(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).expect("serializable");
        super::persist::write_private(path, text.as_bytes()).map_err(|e| e.to_string())
    }
}
