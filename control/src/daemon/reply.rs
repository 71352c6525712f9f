//! The `data` of each successful reply, typed: the daemon builds these, clients (the CLI's
//! `--json`, the lab) read them back with the same types. The JSON field names are the
//! protocol's, documented in README.md.
use std::{collections::BTreeMap, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::{mac::MacAddr, system::IdArc};

/// `add-identity-arc`, `neighbour-migrated`: the arc's index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArcAdded {
    pub arc: u32,
}

/// `add-qspn-arc`: the neighbour's table id, which is also its mark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QspnArcAdded {
    pub table: u32,
    pub mark: u32,
}

/// `prepare-*-phase-1`: the old identity's pseudo-interfaces (NIC → MAC, link-local).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    pub pseudo: BTreeMap<String, (MacAddr, Ipv4Addr)>,
}

/// `*-phase-1`, `*-phase-2`: the identity the operation created or made real.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityIndex {
    pub identity: u32,
}

/// `remove-outer-arcs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArcsRemoved {
    pub removed_arcs: Vec<u32>,
}

/// `remove-identity`: the identities dismissed (chained ones included).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentitiesRemoved {
    pub removed_identities: Vec<u32>,
}

/// `check-connectivity`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connectivity {
    pub removable: bool,
    /// qspnclient's sentence.
    pub message: String,
    pub needed_for: Vec<String>,
}

/// `show-arcs IDX`: the identity's arcs by index.
pub type Arcs = BTreeMap<u32, IdArc>;

/// `show-identities`: one row per identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRow {
    pub index: u32,
    pub address: String,
    pub kind: IdentityKind,
    /// The namespace's name (`default` for the system's own).
    pub netns: String,
    /// (g, h) of a connectivity identity.
    pub connectivity: Option<(usize, usize)>,
    pub copy_of: Option<u32>,
    pub bootstrap: bool,
    pub bootstrap_levels: Option<BootstrapLevels>,
    pub bootstrap_for_ms: Option<u64>,
    pub bootstrap_gives_up_in_ms: Option<u64>,
    pub bootstrap_waiting_for: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    Main,
    Connectivity,
}

impl std::fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdentityKind::Main => "main",
            IdentityKind::Connectivity => "connectivity",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapLevels {
    pub guest: usize,
    pub host: usize,
}

/// `show-tables`: one row per table of each namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRow {
    pub netns: String,
    pub table: u32,
    pub name: String,
    pub routes: usize,
    pub rule: bool,
    /// What the kernel holds: routes in the table and whether its rule is there (`None`
    /// when the namespace could not be read).
    #[serde(default)]
    pub kernel_routes: Option<usize>,
    #[serde(default)]
    pub kernel_rule: Option<bool>,
    /// Packets the classifier counted from this neighbour (`None` for `ntk`).
    pub packets: Option<u64>,
    /// With the eBPF fast path: this neighbour's packets per outcome (`forwarded` in TC, or
    /// the reason they were handed to the stack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_path: Option<std::collections::BTreeMap<String, u64>>,
}

/// `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The kernel holds exactly what the model wants, and nothing failed.
    #[serde(default)]
    pub dataplane_matches: bool,
    /// Operations that would bring the kernel to the model now (0 when it matches).
    #[serde(default)]
    pub drift: usize,
    /// Kernel operations done to repair changes made behind ntkplane's back.
    #[serde(default)]
    pub repairs: u64,
    /// Namespaces that could not be brought to the model, with the error (retried).
    #[serde(default)]
    pub failures: BTreeMap<String, String>,
    pub instance: String,
    pub topology: String,
    pub identities: usize,
    pub namespaces: Vec<String>,
    pub tables: usize,
    pub pending_operations: Vec<PendingOp>,
    /// The eBPF fast path: `on`, or `off (why)`.
    #[serde(default)]
    pub fast_path: String,
    /// `run --paths protocol`: the protocols' counters (datagrams in/out, drops by reason,
    /// ETPs applied); absent in feed mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<BTreeMap<String, u64>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOp {
    pub op_id: u64,
    pub kind: crate::system::OpKind,
    pub identity: u32,
    pub waiting_phase_2: Option<u32>,
}

/// The empty reply of commands that return nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {}
