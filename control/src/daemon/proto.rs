//! The control protocol: one JSON object per line each way.
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    addr::HCoord,
    fwd::Path,
    mac::MacAddr,
    system::{PeerMoved, Prepare},
};

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

fn parse_mac_ll(s: &str, what: &str) -> Result<(MacAddr, Ipv4Addr), String> {
    let (m, l) = s
        .split_once('@')
        .ok_or_else(|| format!("{what}: expected MAC@LINKLOCAL, got '{s}'"))?;
    let mac = m.parse().map_err(|e| format!("{what}: {e}"))?;
    let ll = l
        .parse()
        .map_err(|_| format!("{what}: '{l}' is not an IPv4 address"))?;
    Ok((mac, ll))
}

/// `ARC=MAC@LINKLOCAL`: an internal arc whose peer's old identity moved to that MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MovedArg(pub PeerMoved);

impl std::str::FromStr for MovedArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("--internal: expected ARC=MAC@LINKLOCAL, got '{s}'"))?;
        let arc = a
            .parse()
            .map_err(|_| format!("--internal: bad arc index '{a}'"))?;
        let (mac, linklocal) = parse_mac_ll(rest, "--internal")?;
        Ok(MovedArg(PeerMoved {
            arc,
            mac,
            linklocal,
        }))
    }
}

/// `NIC=MAC@LINKLOCAL`: the pseudo-interface the old identity gets on NIC (default: a
/// random locally administered MAC and a random link-local).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PseudoArg {
    pub nic: String,
    pub mac: MacAddr,
    pub linklocal: Ipv4Addr,
}

impl std::str::FromStr for PseudoArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (nic, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("--pseudo: expected NIC=MAC@LINKLOCAL, got '{s}'"))?;
        let (mac, linklocal) = parse_mac_ll(rest, "--pseudo")?;
        Ok(PseudoArg {
            nic: nic.into(),
            mac,
            linklocal,
        })
    }
}

/// Dotted positions, highest level first (`2.1.1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Dotted(pub Vec<u32>);

impl std::str::FromStr for Dotted {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Ok(Dotted(vec![]));
        }
        s.split('.')
            .map(|p| {
                p.parse()
                    .map_err(|_| format!("host address: '{p}' in '{s}' is not a position"))
            })
            .collect::<Result<_, _>>()
            .map(Dotted)
    }
}
impl TryFrom<String> for Dotted {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}
impl From<Dotted> for String {
    fn from(d: Dotted) -> String {
        d.0.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
    }
}

/// `[0,2]`, `[]`: identity-arc indices (qspnclient's notation; `[]` is the empty list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ArcList(pub Vec<u32>);

impl std::str::FromStr for ArcList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let inner = s
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .ok_or_else(|| format!("arc list: expected [i,j,…], got '{s}'"))?;
        inner
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(|x| {
                x.parse()
                    .map_err(|_| format!("arc list: '{x}' is not an index"))
            })
            .collect::<Result<_, _>>()
            .map(ArcList)
    }
}

/// A previous operation id, or `null`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OpRef(pub Option<u64>);

impl std::str::FromStr for OpRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "null" {
            return Ok(OpRef(None));
        }
        s.parse()
            .map(|v| OpRef(Some(v)))
            .map_err(|_| format!("previous operation: '{s}' is neither an id nor null"))
    }
}

/// What one ETP taught an identity: neighbours now known and the complete set of paths
/// (destinations left out are forgotten). JSON:
/// `{"neighbours":[{"arc":0,"address":"2.1.1.0"}],"paths":[{"dest":{"lvl":0,"pos":0},"paths":[…]}]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    #[serde(default)]
    pub neighbours: Vec<KnownNeighbour>,
    #[serde(default)]
    pub paths: Vec<DestPaths>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownNeighbour {
    pub arc: u32,
    pub address: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestPaths {
    pub dest: HCoord,
    pub paths: Vec<Path>,
}

impl std::str::FromStr for Feed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_str(s).map_err(|e| format!("feed: {e}"))
    }
}

/// Arguments shared by `prepare-enter-net-phase-1` and `prepare-migrate-phase-1`, in
/// qspnclient's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
pub struct PrepareArgs {
    pub identity: u32,
    pub guest_level: usize,
    pub host_level: usize,
    pub host_addr: Dotted,
    /// (no kernel effect)
    pub host_elderships: String,
    pub pos1: u32,
    pub pos1_eldership: u32,
    pub pos2: u32,
    pub pos2_eldership: u32,
    pub conn_pos: u32,
    pub conn_pos_eldership: u32,
}

impl PrepareArgs {
    pub fn to_prepare(
        &self,
        kind: crate::system::OpKind,
        external_arcs: Vec<u32>,
        prev_op: OpRef,
        pseudo: &[PseudoArg],
    ) -> Prepare {
        Prepare {
            kind,
            old: self.identity,
            guest_level: self.guest_level,
            host_level: self.host_level,
            host_addr: self.host_addr.0.clone(),
            pos1: self.pos1,
            pos2: self.pos2,
            conn_pos: self.conn_pos,
            external_arcs,
            prev_op: prev_op.0,
            pseudo: pseudo
                .iter()
                .map(|p| (p.nic.clone(), (p.mac, p.linklocal)))
                .collect(),
        }
    }
}

/// A command to the daemon. The same enum is the client's subcommand set: each variant is
/// one `ntkplane <kebab-case-name>` and one JSON request `{"command": "<kebab-case-name>", …}`,
/// named after qspnclient's command where one exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::Subcommand)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
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
    /// An ETP processed by IDENTITY: neighbours known and all its paths (JSON, see `Feed`)
    Etp { identity: u32, feed: Feed },
    /// qspnclient's 14 arguments: IDENTITY GUEST HOST HOST_ADDR ELDERSHIPS POS1 E POS2 E CONN_POS E [ARCS] OP_ID PREV_OP_ID|null
    #[command(name = "prepare-enter-net-phase-1")]
    #[serde(rename = "prepare-enter-net-phase-1")]
    PrepareEnterNetPhase1 {
        #[command(flatten)]
        #[serde(flatten)]
        args: PrepareArgs,
        arcs: ArcList,
        op_id: u64,
        prev_op_id: OpRef,
        /// NIC=MAC@LINKLOCAL of the old identity's pseudo-interface (default: random)
        #[arg(long)]
        #[serde(default)]
        pseudo: Vec<PseudoArg>,
    },
    /// qspnclient's 13 arguments: IDENTITY GUEST HOST HOST_ADDR ELDERSHIPS POS1 E POS2 E CONN_POS E OP_ID PREV_OP_ID|null
    #[command(name = "prepare-migrate-phase-1")]
    #[serde(rename = "prepare-migrate-phase-1")]
    PrepareMigratePhase1 {
        #[command(flatten)]
        #[serde(flatten)]
        args: PrepareArgs,
        op_id: u64,
        prev_op_id: OpRef,
        /// NIC=MAC@LINKLOCAL of the old identity's pseudo-interface (default: random)
        #[arg(long)]
        #[serde(default)]
        pseudo: Vec<PseudoArg>,
    },
    /// Duplicate IDENTITY and enter the other network; prints the new identity's index
    #[command(name = "enter-net-phase-1")]
    #[serde(rename = "enter-net-phase-1")]
    EnterNetPhase1 {
        identity: u32,
        op_id: u64,
        /// ARC=MAC@LINKLOCAL: an internal arc (the peer takes part in the same operation)
        #[arg(long)]
        #[serde(default)]
        internal: Vec<MovedArg>,
    },
    /// Duplicate IDENTITY and migrate inside the network; prints the new identity's index
    #[command(name = "migrate-phase-1")]
    #[serde(rename = "migrate-phase-1")]
    MigratePhase1 {
        identity: u32,
        op_id: u64,
        /// ARC=MAC@LINKLOCAL: an internal arc (the peer takes part in the same operation)
        #[arg(long)]
        #[serde(default)]
        internal: Vec<MovedArg>,
    },
    /// The awaited migration is done: the new identity's position becomes real
    #[command(name = "enter-net-phase-2")]
    #[serde(rename = "enter-net-phase-2")]
    EnterNetPhase2 { identity: u32, op_id: u64 },
    /// As enter-net-phase-2, for a migration
    #[command(name = "migrate-phase-2")]
    #[serde(rename = "migrate-phase-2")]
    MigratePhase2 { identity: u32, op_id: u64 },
    /// A neighbour identity duplicated: ARC now leads to its old identity (MAC, link-local);
    /// prints the new arc towards its new identity
    NeighbourMigrated {
        identity: u32,
        arc: u32,
        peer_mac: MacAddr,
        peer_linklocal: Ipv4Addr,
    },
    /// presence_notified: a connectivity identity drops its arcs outside its g-node
    RemoveOuterArcs { identity: u32 },
    /// Can this connectivity identity be removed without splitting its g-nodes?
    CheckConnectivity { identity: u32 },
    /// Dismiss a connectivity identity (and, chained, the one it was copied from)
    RemoveIdentity { identity: u32 },
    /// Identities: index, address, kind, namespace
    ShowIdentities {},
    /// The arcs of one identity
    ShowArcs { identity: u32 },
    /// Tables with route counts, rules and per-neighbour packet counters
    ShowTables {},
    /// A summary of the daemon's state
    Status {},
    /// Stop the daemon, removing everything it installed
    Quit {},
    /// Stream the daemon's events (commands applied, repairs, identity lifecycle) until
    /// interrupted; with --json, one JSON object per line
    Monitor {},
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

/// Decodes one request line (without its newline): invalid UTF-8, malformed JSON and
/// unknown fields are errors naming the problem (the daemon answers them, never drops them).
pub fn decode(line: &[u8]) -> Result<Request, String> {
    let text =
        std::str::from_utf8(line).map_err(|e| format!("malformed request: not UTF-8 ({e})"))?;
    serde_json::from_str(text.trim()).map_err(|e| format!("malformed request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused() {
        let ok = [
            r#"{"command":"status"}"#,
            r#"{"command":"remove-arc","identity":0,"arc":1}"#,
            r#"{"command":"set-paths","identity":0,"dest":{"lvl":0,"pos":0},"paths":[{"arc":0,"hops":[{"lvl":0,"pos":0}],"cost":1}]}"#,
            r#"{"command":"etp","identity":0,"feed":{"neighbours":[{"arc":0,"address":"1.0"}],"paths":[]}}"#,
            r#"{"command":"prepare-migrate-phase-1","identity":0,"guest_level":0,"host_level":1,"host_addr":"1.1","host_elderships":"","pos1":0,"pos1_eldership":0,"pos2":0,"pos2_eldership":0,"conn_pos":0,"conn_pos_eldership":0,"op_id":1,"prev_op_id":null}"#,
        ];
        for l in ok {
            decode(l.as_bytes()).unwrap_or_else(|e| panic!("{l}: {e}"));
        }
        let bad = [
            r#"{"command":"status","x":1}"#,
            r#"{"command":"remove-arc","identity":0,"arc":1,"force":true}"#,
            r#"{"command":"set-paths","identity":0,"dest":{"lvl":0,"pos":0,"x":0},"paths":[]}"#,
            r#"{"command":"set-paths","identity":0,"dest":{"lvl":0,"pos":0},"paths":[{"arc":0,"hops":[{"lvl":0,"pos":0}],"cost":1,"x":2}]}"#,
            r#"{"command":"etp","identity":0,"feed":{"neighbours":[],"paths":[],"x":[]}}"#,
            r#"{"command":"etp","identity":0,"feed":{"neighbours":[{"arc":0,"address":"1.0","x":1}]}}"#,
            r#"{"command":"prepare-migrate-phase-1","identity":0,"guest_level":0,"host_level":1,"host_addr":"1.1","host_elderships":"","pos1":0,"pos1_eldership":0,"pos2":0,"pos2_eldership":0,"conn_pos":0,"conn_pos_eldership":0,"op_id":1,"prev_op_id":null,"x":1}"#,
        ];
        for l in bad {
            let e = decode(l.as_bytes()).expect_err(l);
            assert!(e.contains("unknown field"), "{l}: {e}");
        }
    }

    #[test]
    fn invalid_utf8_is_an_error_not_silence() {
        let e = decode(b"{\"command\":\"st\xffatus\"}").unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
    }
}
