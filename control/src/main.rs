//! The `ntkplane` command.
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ntkplane::addr::{report::AddrReport, NtkAddress, Topology};

#[derive(Parser)]
#[command(
    name = "ntkplane",
    version,
    about = "A Linux dataplane for Netsukuku mesh networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every IPv4 form of a Netsukuku address: own addresses, g-nodes, destinations, NETMAP.
    Addr(AddrArgs),
    /// Load the classifier and report the verifier's verdict (a smoke check of the eBPF object).
    CheckEbpf,
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Addr(a) => addr(a),
        Command::CheckEbpf => {
            match ntkplane::classifier::Classifier::load(
                ntkplane::netns::Netns::Current,
                Default::default(),
            ) {
                Ok(c) => {
                    println!("classify: loaded, mark mask {:#x}", c.mark_mask());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
