//! The `ntkplane` command.
use clap::{Parser, Subcommand};

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
    /// Load the classifier and report the verifier's verdict (a smoke check of the eBPF object).
    CheckEbpf,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckEbpf => {
            let c = ntkplane::classifier::Classifier::load(
                ntkplane::netns::Netns::Current,
                Default::default(),
            )?;
            println!("classify: loaded, mark mask {:#x}", c.mark_mask());
        }
    }
    Ok(())
}
