//! The `ntkplane` command line (clap definitions), in the library so that the man page and
//! the shell completions are generated from the very same definitions
//! (`cargo xtask dist`, `control/examples/dist-docs.rs`).
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::daemon::proto::Request;

#[derive(Debug, Parser)]
#[command(
    name = "ntkplane",
    version,
    about = "A Linux dataplane for Netsukuku mesh networks"
)]
pub struct Cli {
    /// Daemon instance: names its socket, state, pins and identity namespaces
    #[arg(long, global = true, default_value = "ntkplane")]
    pub instance: String,
    /// Directory of the control sockets
    #[arg(long, global = true, default_value = "/run/ntkplane")]
    pub run_dir: PathBuf,
    /// Print replies as JSON
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the daemon that owns this system's dataplane (qspnclient's `init`)
    Run(Box<RunArgs>),
    /// Commands to a running daemon
    #[command(flatten)]
    Client(Request),
    /// Every IPv4 form of a Netsukuku address: own addresses, g-nodes, destinations, NETMAP.
    Addr(AddrArgs),
    /// Load the classifier and report the verifier's verdict (a smoke check of the eBPF object).
    CheckEbpf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A TOML file with any of these options, named as the flags without `--`
    /// (`topology = "4.2.2.2"`, `interface = ["eth1"]`); flags given here win over it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// gsize of every level, highest level first, e.g. 4.2.2.2
    #[arg(long, required_unless_present = "config")]
    pub topology: Option<String>,
    /// The first (completely real) address, highest level first
    #[arg(long, required_unless_present = "config")]
    pub address: Option<String>,
    /// A managed NIC, optionally with its link-local: `eth1` or `eth1=169.254.69.30` (repeatable)
    #[arg(long = "interface", required_unless_present = "config")]
    pub interfaces: Vec<String>,
    /// Serve Prometheus metrics on ADDR:PORT (`GET /metrics`), bound in the system's
    /// namespace (`--netns`); off unless given
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    #[arg(long, default_value_t = 0)]
    pub subnet_level: usize,
    #[arg(long)]
    pub serve_anonymous: bool,
    #[arg(long)]
    pub no_anonymizer: bool,
    #[arg(long, default_value = crate::addr::topology::DEFAULT_BASE)]
    pub base: String,
    /// Bits of the packet mark ntkplane owns
    #[arg(long, default_value = "0xffffffff")]
    pub mark_mask: String,
    /// eBPF fast path (forward in TC with a per-neighbour FIB lookup): `auto` = on where the
    /// kernel supports it (≥ 6.5)
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub fast_path: String,
    /// The network namespace that plays the system's default namespace
    #[arg(long)]
    pub netns: Option<String>,
    /// Directory of the persisted state
    #[arg(long, default_value = "/var/lib/ntkplane")]
    pub state_dir: PathBuf,
    /// Directory for the rt_tables names file (`none` to skip)
    #[arg(long, default_value = "/etc/iproute2/rt_tables.d")]
    pub rt_tables_dir: String,
    /// How long a new identity stays in bootstrap without an ETP from outside its moving
    /// g-node (qspn.md §13.2; the reference's 10000). For tests: a shorter wait.
    #[arg(long, default_value_t = crate::system::BOOTSTRAP_TIMEOUT_MS, value_name = "MS")]
    pub bootstrap_timeout_ms: u64,
    /// Seconds between two full resyncs of routes, rules and addresses with the model
    /// (changes behind ntkplane's back are also repaired on rtnetlink events, and the nft
    /// table and the classifier are checked every 2 s)
    #[arg(long, default_value_t = 60, value_name = "S")]
    pub resync_interval: u64,
    /// Drop the persisted state of this instance and start afresh (a restart whose options
    /// differ from the persisted ones is refused without it)
    #[arg(long)]
    pub discard_state: bool,
    /// Where paths come from: `protocol` (neighbour discovery and QSPN with the neighbours,
    /// docs/PROTOCOL.md) or `feed` (only the commands `etp`, `set-paths`, `set-neighbour`, …:
    /// for tests and the lab's path solver)
    #[arg(long, default_value = "protocol", value_parser = ["feed", "protocol"])]
    pub paths: String,
    /// Protocol mode: `auto` makes every discovered neighbour's main identity a qspn arc (a
    /// mesh where every neighbour is in our network); `manual` waits for `add-qspn-arc`
    #[arg(long, default_value = "manual", value_parser = ["manual", "auto"])]
    pub qspn_arcs: String,
    /// Protocol mode: which discovered arcs carry identity arcs. `auto`: every arc the
    /// neighbour discovery finds becomes an identity arc of the main identity. `declared`:
    /// qspnclient's `add_real_arc` — discovery measures every neighbour, but only the arcs a
    /// command declared (`add-identity-arc`, `neighbour-migrated`) are used, and a dead
    /// arc's declaration stays (its qspn arc comes back when the neighbour does). For
    /// neighbours on one shared segment that are not all meant to be arcs (the lab).
    #[arg(long, default_value = "auto", value_parser = ["auto", "declared"])]
    pub real_arcs: String,
    /// Protocol mode: the cost of the real arc to the neighbour MAC on NIC, in µs, instead of
    /// the measured round-trip time (qspnclient's `add_real_arc FROM TO COST`); repeatable.
    /// Such an arc gets no random tie breaker and keeps its cost whatever the RTT does.
    #[arg(long = "arc-cost", value_name = "NIC=MAC=US")]
    pub arc_costs: Vec<String>,
    /// Protocol mode: a file with the network key (at least 32 bytes, or 64 hex digits);
    /// every protocol datagram then carries an HMAC-SHA256 with replay protection
    #[arg(long, value_name = "FILE")]
    pub network_key: Option<PathBuf>,
    /// Protocol mode: the UDP port of the protocols on the managed NICs
    #[arg(long, default_value_t = crate::wire::PORT, value_name = "PORT")]
    pub protocol_port: u16,
    /// Protocol mode: milliseconds between two announcements on a NIC
    #[arg(long, value_name = "MS")]
    pub announce_ms: Option<u64>,
    /// Protocol mode: milliseconds between two RTT probes of an arc
    #[arg(long, value_name = "MS")]
    pub probe_ms: Option<u64>,
    /// Protocol mode: an arc with no probe answered for this long is dead
    #[arg(long, value_name = "MS")]
    pub dead_after_ms: Option<u64>,
}

impl RunArgs {
    /// The options the model is built from, as persisted next to the state and compared at
    /// restart (flag → value).
    pub fn model_args(&self, mask: u32) -> std::collections::BTreeMap<String, String> {
        [
            ("--topology", self.topology.clone().unwrap_or_default()),
            ("--address", self.address.clone().unwrap_or_default()),
            ("--interface", self.interfaces.join(" ")),
            ("--subnet-level", self.subnet_level.to_string()),
            ("--serve-anonymous", self.serve_anonymous.to_string()),
            ("--no-anonymizer", self.no_anonymizer.to_string()),
            ("--base", self.base.clone()),
            ("--mark-mask", format!("{mask:#x}")),
            (
                "--netns",
                self.netns.clone().unwrap_or_else(|| "(current)".into()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

#[derive(Debug, Args)]
pub struct AddrArgs {
    /// gsize of every level, highest level first (qspnclient's notation), e.g. 4.2.2.2
    #[arg(long)]
    pub topology: String,
    /// Positions, highest level first, e.g. 3.1.0.1 (a position ≥ gsize is virtual)
    #[arg(long)]
    pub address: String,
    /// Level of the autonomous subnet this node is the gateway of (0: none)
    #[arg(long, default_value_t = 0)]
    pub subnet_level: usize,
    /// The node accepts anonymous requests (owns its anonymizing address)
    #[arg(long)]
    pub serve_anonymous: bool,
    /// IPv4 block the Netsukuku addresses are mapped into
    #[arg(long, default_value = crate::addr::topology::DEFAULT_BASE)]
    pub base: String,
    /// Print JSON (one object) instead of a table
    #[arg(long)]
    pub json: bool,
}
