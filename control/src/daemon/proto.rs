//! The control protocol: one JSON object per line each way.
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{addr::HCoord, fwd::Path, mac::MacAddr};

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 1 << 20;

/// A command, kebab-case names mapping 1:1 to qspnclient's where one exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// A neighbour identity seen on a NIC (qspnclient learnt it from Neighborhood/Identities).
    AddIdentityArc {
        identity: u32,
        nic: String,
        peer_mac: MacAddr,
        peer_linklocal: Ipv4Addr,
    },
    /// `add_qspn_arc <idx> <dev> <peer_mac>`.
    AddQspnArc {
        identity: u32,
        nic: String,
        peer_mac: MacAddr,
    },
    /// The neighbour's address over a qspn arc (its first ETP).
    SetNeighbour {
        identity: u32,
        arc: u32,
        address: String,
    },
    /// The paths an identity knows towards a destination (empty: none).
    SetPaths {
        identity: u32,
        dest: HCoord,
        paths: Vec<Path>,
    },
    RemovePaths {
        identity: u32,
        dest: HCoord,
    },
    RemoveArc {
        identity: u32,
        arc: u32,
    },
    ShowIdentities,
    ShowArcs {
        identity: u32,
    },
    ShowTables,
    Status,
    /// Shut down: remove everything ntkplane installed.
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
