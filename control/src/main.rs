//! The `ntkplane` command: the daemon (`run`), its client commands, and `addr`.
use std::{ffi::OsString, net::Ipv4Addr, path::PathBuf, process::ExitCode};

use clap::{CommandFactory, FromArgMatches};
use ntkplane::{
    addr::{report::AddrReport, NtkAddress, Topology},
    args::{AddrArgs, Cli, Command, RunArgs},
    daemon::proto::Request,
};

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

/// The protocols' options, or `None` in feed mode.
fn protocol_options(a: &RunArgs) -> anyhow::Result<Option<ntkplane::daemon::protocol::Options>> {
    use anyhow::Context;
    if a.paths != "protocol" {
        for (set, flag) in [
            (a.network_key.is_some(), "--network-key"),
            (a.qspn_arcs != "manual", "--qspn-arcs"),
            (a.real_arcs != "auto", "--real-arcs"),
            (!a.arc_costs.is_empty(), "--arc-cost"),
        ] {
            anyhow::ensure!(!set, "{flag} needs --paths protocol");
        }
        return Ok(None);
    }
    let mut o = ntkplane::daemon::protocol::Options {
        port: a.protocol_port,
        auto_qspn: a.qspn_arcs == "auto",
        declared_arcs: a.real_arcs == "declared",
        ..Default::default()
    };
    for c in &a.arc_costs {
        let (nic, mac, us) = ntkplane::daemon::protocol::parse_arc_cost(c)
            .map_err(|e| anyhow::anyhow!("--arc-cost {c}: {e}"))?;
        o.pinned.insert((nic, mac), us);
    }
    if let Some(f) = &a.network_key {
        o.key = Some(
            ntkplane::wire::NetworkKey::from_file(f)
                .with_context(|| format!("--network-key {}", f.display()))?,
        );
    }
    if let Some(v) = a.announce_ms {
        o.timers.announce_ms = v;
    }
    if let Some(v) = a.probe_ms {
        o.timers.probe_ms = v;
    }
    if let Some(v) = a.dead_after_ms {
        o.timers.dead_after_ms = v;
    }
    Ok(Some(o))
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
    let required = |v: Option<String>, key: &str| {
        v.ok_or_else(|| {
            anyhow::anyhow!(
                "--{key} is required (on the command line, or `{key}` in the --config file)"
            )
        })
    };
    let topology = required(a.topology.clone(), "topology")?;
    let address = required(a.address.clone(), "address")?;
    if a.interfaces.is_empty() {
        anyhow::bail!(
            "--interface is required (on the command line, or `interface` in the --config file)"
        );
    }
    // Bound before anything else, in the system's namespace, so that a bad or busy address
    // fails the start before the kernel is touched.
    let metrics = match a.metrics {
        None => None,
        Some(addr) => Some(
            netns
                .run(|| {
                    let l = std::net::TcpListener::bind(addr)?;
                    l.set_nonblocking(true)?;
                    Ok::<_, std::io::Error>(l)
                })
                .map_err(|e| anyhow::anyhow!("--metrics {addr}: {e}"))?
                .with_context(|| format!("--metrics {addr}"))?,
        ),
    };
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
            topology: topology.clone(),
            base,
            subnet_level: a.subnet_level,
            serve_anonymous: a.serve_anonymous,
            anonymizer: !a.no_anonymizer,
            mark_mask: mask,
            nics,
        };
        Ok(System::init(config, &address)?)
    };
    let protocol = protocol_options(&a)?;
    let args = a.model_args(mask);
    let mut d = Daemon::start(
        paths,
        netns.clone(),
        a.bootstrap_timeout_ms,
        &args,
        a.discard_state,
        init,
    )?;
    if let Some(l) = metrics {
        tracing::info!(metrics = %l.local_addr()?, "serving /metrics");
        d.set_metrics_listener(l);
    }
    d.set_timing(ntkplane::daemon::Timing {
        resync: std::time::Duration::from_secs(a.resync_interval.max(1)),
        ..Default::default()
    });
    if let Some(o) = protocol {
        d.set_protocol(o);
    }
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

/// `monitor`: the daemon's events until interrupted (or the daemon stops).
fn monitor(socket: PathBuf, json: bool) -> ExitCode {
    use std::io::Write;
    let r = ntkplane::cli::monitor(&socket, |text, ev| {
        let mut out = std::io::stdout().lock();
        let _ = match (json, ev) {
            (false, Some(ev)) => writeln!(out, "{} {}", ntkplane::cli::clock(ev.time_ms), ev.event),
            _ => writeln!(out, "{text}"),
        };
        // Line by line, also into a pipe: a monitor is read live.
        let _ = out.flush();
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The command line, with `run --config FILE`'s options added where the command line gave none.
fn parse() -> Result<Cli, String> {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    let m = Cli::command().get_matches_from(&argv);
    if let Some(("run", sub)) = m.subcommand() {
        if let Some(path) = sub.get_one::<PathBuf>("config") {
            let mut cmd = Cli::command();
            cmd.build();
            let run = cmd.find_subcommand("run").expect("run is a subcommand");
            argv.extend(ntkplane::config::file_args(path, run, sub).map_err(|e| e.to_string())?);
            let m = Cli::command().get_matches_from(&argv);
            let cli = Cli::from_arg_matches(&m).map_err(|e| e.to_string())?;
            // What clap checks when there is no file: bad input, exit status 2.
            if let Command::Run(a) = &cli.command {
                for (missing, key) in [
                    (a.topology.is_none(), "topology"),
                    (a.address.is_none(), "address"),
                    (a.interfaces.is_empty(), "interface"),
                ] {
                    if missing {
                        return Err(format!(
                            "--{key} is required: give it on the command line or as `{key}` in {}",
                            path.display()
                        ));
                    }
                }
            }
            return Ok(cli);
        }
    }
    Cli::from_arg_matches(&m).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
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
            return match run(&cli.instance, cli.run_dir.clone(), *a) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Client(Request::Monitor {}) => return monitor(socket, cli.json),
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
