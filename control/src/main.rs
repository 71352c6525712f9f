//! The `ntkplane` command: the daemon (`run`), its client commands, and `addr`.
use std::{net::Ipv4Addr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use ntkplane::{
    addr::{report::AddrReport, NtkAddress, Topology},
    daemon::proto::Request,
};

#[derive(Parser)]
#[command(
    name = "ntkplane",
    version,
    about = "A Linux dataplane for Netsukuku mesh networks"
)]
struct Cli {
    /// Daemon instance: names its socket, state, pins and identity namespaces
    #[arg(long, global = true, default_value = "ntkplane")]
    instance: String,
    /// Directory of the control sockets
    #[arg(long, global = true, default_value = "/run/ntkplane")]
    run_dir: PathBuf,
    /// Print replies as JSON
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the daemon that owns this system's dataplane (qspnclient's `init`)
    Run(RunArgs),
    /// Commands to a running daemon
    #[command(flatten)]
    Client(Request),
    /// Every IPv4 form of a Netsukuku address: own addresses, g-nodes, destinations, NETMAP.
    Addr(AddrArgs),
    /// Load the classifier and report the verifier's verdict (a smoke check of the eBPF object).
    CheckEbpf,
}

#[derive(Args)]
struct RunArgs {
    /// gsize of every level, highest level first, e.g. 4.2.2.2
    #[arg(long)]
    topology: String,
    /// The first (completely real) address, highest level first
    #[arg(long)]
    address: String,
    /// A managed NIC, optionally with its link-local: `eth1` or `eth1=169.254.69.30` (repeatable)
    #[arg(long = "interface", required = true)]
    interfaces: Vec<String>,
    #[arg(long, default_value_t = 0)]
    subnet_level: usize,
    #[arg(long)]
    serve_anonymous: bool,
    #[arg(long)]
    no_anonymizer: bool,
    #[arg(long, default_value = ntkplane::addr::topology::DEFAULT_BASE)]
    base: String,
    /// Bits of the packet mark ntkplane owns
    #[arg(long, default_value = "0xffffffff")]
    mark_mask: String,
    /// eBPF fast path (forward in TC with a per-neighbour FIB lookup): `auto` = on where the
    /// kernel supports it (≥ 6.5)
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    fast_path: String,
    /// The network namespace that plays the system's default namespace
    #[arg(long)]
    netns: Option<String>,
    /// Directory of the persisted state
    #[arg(long, default_value = "/var/lib/ntkplane")]
    state_dir: PathBuf,
    /// Directory for the rt_tables names file (`none` to skip)
    #[arg(long, default_value = "/etc/iproute2/rt_tables.d")]
    rt_tables_dir: String,
    /// How long a new identity stays in bootstrap without an ETP from outside its moving
    /// g-node (qspn.md §13.2; the reference's 10000). For tests: a shorter wait.
    #[arg(long, default_value_t = ntkplane::system::BOOTSTRAP_TIMEOUT_MS, value_name = "MS")]
    bootstrap_timeout_ms: u64,
    /// Seconds between two full resyncs of routes, rules and addresses with the model
    /// (changes behind ntkplane's back are also repaired on rtnetlink events, and the nft
    /// table and the classifier are checked every 2 s)
    #[arg(long, default_value_t = 60, value_name = "S")]
    resync_interval: u64,
    /// Drop the persisted state of this instance and start afresh (a restart whose options
    /// differ from the persisted ones is refused without it)
    #[arg(long)]
    discard_state: bool,
}

impl RunArgs {
    /// The options the model is built from, as persisted next to the state and compared at
    /// restart (flag → value).
    fn model_args(&self, mask: u32) -> std::collections::BTreeMap<String, String> {
        [
            ("--topology", self.topology.clone()),
            ("--address", self.address.clone()),
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

#[derive(Args)]
struct AddrArgs {
    /// gsize of every level, highest level first (qspnclient's notation), e.g. 4.2.2.2
    #[arg(long)]
    topology: String,
    /// Positions, highest level first, e.g. 3.1.0.1 (a position ≥ gsize is virtual)
    #[arg(long)]
    address: String,
    /// Level of the autonomous subnet this node is the gateway of (0: none)
    #[arg(long, default_value_t = 0)]
    subnet_level: usize,
    /// The node accepts anonymous requests (owns its anonymizing address)
    #[arg(long)]
    serve_anonymous: bool,
    /// IPv4 block the Netsukuku addresses are mapped into
    #[arg(long, default_value = ntkplane::addr::topology::DEFAULT_BASE)]
    base: String,
    /// Print JSON (one object) instead of a table
    #[arg(long)]
    json: bool,
}

/// Bad input: exit status 2 with one line naming the problem.
fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn addr(a: AddrArgs) -> ExitCode {
    let base = match a.base.parse() {
        Ok(b) => b,
        Err(e) => return usage_error(format_args!("--base: {e}")),
    };
    let t = match Topology::parse_with_base(&a.topology, base) {
        Ok(t) => t,
        Err(e) => return usage_error(e),
    };
    let n = match NtkAddress::parse(&a.address, &t) {
        Ok(n) => n,
        Err(e) => return usage_error(e),
    };
    let r = match AddrReport::new(&t, &n, a.subnet_level, a.serve_anonymous) {
        Ok(r) => r,
        Err(e) => return usage_error(e),
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).expect("serializable")
        );
    } else {
        print!("{}", r.to_text(&t, &n));
    }
    ExitCode::SUCCESS
}

/// Random link-local 169.254.<0..254>.<0..254>, as qspnclient draws them.
fn random_linklocal() -> Ipv4Addr {
    let mut b = [0u8; 2];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    Ipv4Addr::new(169, 254, b[0] % 255, b[1] % 255)
}

fn run(cli_instance: &str, run_dir: PathBuf, a: RunArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use ntkplane::{
        daemon::{Daemon, Paths},
        kernel::{in_netns, rtnl::Rtnl},
        netns::Netns,
        system::{Config, Nic, System},
    };
    let netns = a.netns.clone().map_or(Netns::Current, Netns::Named);
    let mask = u32::from_str_radix(a.mark_mask.trim_start_matches("0x"), 16)
        .context("--mark-mask: expected hex")?;
    let base = a.base.parse().map_err(|e| anyhow::anyhow!("--base: {e}"))?;
    let support = ntkplane::classifier::kernel_supports_fast_path();
    match (a.fast_path.as_str(), support) {
        ("off", _) => ntkplane::kernel::reconcile::set_fast_path(false, "--fast-path off"),
        ("on", Err(e)) => anyhow::bail!("--fast-path on: {e}"),
        (_, Ok(())) => ntkplane::kernel::reconcile::set_fast_path(true, ""),
        (_, Err(e)) => ntkplane::kernel::reconcile::set_fast_path(false, &e),
    }
    tracing::info!(
        fast_path = ntkplane::kernel::reconcile::fast_path_enabled(),
        "eBPF fast path"
    );
    let mut paths = Paths::new(cli_instance);
    paths.run_dir = run_dir;
    paths.state_dir = a.state_dir.clone();
    paths.rt_tables_dir = (a.rt_tables_dir != "none").then(|| PathBuf::from(&a.rt_tables_dir));
    let init = || {
        // The NICs' MACs, read where they live.
        let links = in_netns(&netns, |rt| {
            rt.block_on(async { Ok::<_, anyhow::Error>(Rtnl::connect().await?.links().clone()) })
        })
        .map_err(|e| ntkplane::daemon::DaemonError::Io(e.to_string()))?
        .map_err(|e| ntkplane::daemon::DaemonError::Io(e.to_string()))?;
        let mut nics = Vec::new();
        for spec in &a.interfaces {
            let (name, ll) = match spec.split_once('=') {
                Some((n, l)) => (
                    n,
                    l.parse().map_err(|_| {
                        ntkplane::daemon::DaemonError::Io(format!(
                            "--interface {spec}: bad link-local"
                        ))
                    })?,
                ),
                None => (spec.as_str(), random_linklocal()),
            };
            let mac = links.get(name).and_then(|l| l.mac).ok_or_else(|| {
                ntkplane::daemon::DaemonError::Io(format!(
                    "--interface {name}: no such Ethernet interface"
                ))
            })?;
            nics.push(Nic {
                name: name.into(),
                mac,
                linklocal: ll,
            });
        }
        let config = Config {
            topology: a.topology.clone(),
            base,
            subnet_level: a.subnet_level,
            serve_anonymous: a.serve_anonymous,
            anonymizer: !a.no_anonymizer,
            mark_mask: mask,
            nics,
        };
        Ok(System::init(config, &a.address)?)
    };
    let args = a.model_args(mask);
    let mut d = Daemon::start(
        paths,
        netns.clone(),
        a.bootstrap_timeout_ms,
        &args,
        a.discard_state,
        init,
    )?;
    d.set_timing(ntkplane::daemon::Timing {
        resync: std::time::Duration::from_secs(a.resync_interval.max(1)),
        ..Default::default()
    });
    d.serve()?;
    Ok(())
}

fn client(socket: PathBuf, json: bool, req: Request) -> ExitCode {
    match ntkplane::cli::send(&socket, &req) {
        Ok(r) if r.ok => {
            if json {
                println!("{}", serde_json::to_string_pretty(&r.data).unwrap());
            } else {
                println!("{}", ntkplane::cli::human(&r.data));
            }
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!("error: {}", r.error.unwrap_or_default());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = ntkplane::daemon::check_instance(&cli.instance) {
        return usage_error(format_args!("--instance: {e}"));
    }
    let socket = ntkplane::daemon::Paths {
        run_dir: cli.run_dir.clone(),
        ..ntkplane::daemon::Paths::new(&cli.instance)
    }
    .socket();
    let req = match cli.command {
        Command::Run(a) => {
            return match run(&cli.instance, cli.run_dir.clone(), a) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Client(req) => req,
        Command::Addr(a) => return addr(a),
        Command::CheckEbpf => {
            return match ntkplane::classifier::Classifier::load(
                ntkplane::netns::Netns::Current,
                Default::default(),
            ) {
                Ok(c) => {
                    println!("classify: loaded, mark mask {:#x}", c.mark_mask());
                    match ntkplane::classifier::kernel_supports_fast_path() {
                        Err(e) => println!("fastpath: not supported here ({e})"),
                        Ok(()) => match ntkplane::classifier::Classifier::load(
                            ntkplane::netns::Netns::Current,
                            ntkplane::classifier::ClassifierConfig {
                                fast_path: true,
                                ..Default::default()
                            },
                        ) {
                            Ok(_) => println!("fastpath: loaded"),
                            Err(e) => {
                                eprintln!("error: fastpath: {e}");
                                return ExitCode::FAILURE;
                            }
                        },
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    };
    client(socket, cli.json, req)
}
