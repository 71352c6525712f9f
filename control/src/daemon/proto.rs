//! The control protocol: one JSON object per line each way.
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{addr::HCoord, fwd::Path, mac::MacAddr};

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 1 << 20;

/// A list of paths; on the command line, as JSON:
/// `[{"arc":0,"hops":[{"lvl":1,"pos":1}],"cost":10000}]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PathList(pub Vec<Path>);

impl std::str::FromStr for PathList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_str(s)
            .map(PathList)
            .map_err(|e| format!("paths: {e}"))
    }
}

/// A command to the daemon. The same enum is the client's subcommand set: each variant is
/// one `ntkplane <kebab-case-name>` and one JSON request `{"command": "<kebab-case-name>", …}`,
/// named after qspnclient's command where one exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::Subcommand)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// A neighbour identity seen on a NIC (what Neighborhood/Identities told qspnclient)
    AddIdentityArc {
        identity: u32,
        nic: String,
        peer_mac: MacAddr,
        peer_linklocal: Ipv4Addr,
    },
    /// `add_qspn_arc <identity> <nic> <peer_mac>`: the neighbour is in our network
    AddQspnArc {
        identity: u32,
        nic: String,
        peer_mac: MacAddr,
    },
    /// The neighbour's address over a qspn arc (its first ETP)
    SetNeighbour {
        identity: u32,
        arc: u32,
        address: String,
    },
    /// The paths an identity knows towards destination LEVEL,POS (JSON list; empty: none)
    SetPaths {
        identity: u32,
        dest: HCoord,
        paths: PathList,
    },
    /// Forget the paths towards destination LEVEL,POS
    RemovePaths { identity: u32, dest: HCoord },
    /// Remove an identity arc (and its forwarding table)
    RemoveArc { identity: u32, arc: u32 },
    /// Identities: index, address, kind, namespace
    ShowIdentities,
    /// The arcs of one identity
    ShowArcs { identity: u32 },
    /// Tables with route counts, rules and per-neighbour packet counters
    ShowTables,
    /// A summary of the daemon's state
    Status,
    /// Stop the daemon, removing everything it installed
    Quit,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

impl Response {
    pub fn ok(data: Value) -> Self {
        Response {
            ok: true,
            error: None,
            data,
        }
    }
    pub fn err(e: impl ToString) -> Self {
        Response {
            ok: false,
            error: Some(e.to_string()),
            data: Value::Null,
        }
    }
}
