//! Writes the shell completions and the man pages of `ntkplane`, generated from its clap
//! definitions (`ntkplane::args::Cli`), into the directory given (`cargo xtask dist` runs it
//! with `target/dist`): `completions/ntkplane.{bash,zsh,fish,elv}`, `man/man8/ntkplane.8` and one
//! `man/man8/ntkplane-<subcommand>.8` per subcommand.
use std::path::PathBuf;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> anyhow::Result<()> {
    let out: PathBuf = std::env::args_os()
        .nth(1)
        .context("usage: dist-docs OUT_DIR")?
        .into();
    let mut cmd = ntkplane::args::Cli::command();
    cmd.build();

    let comp = out.join("completions");
    std::fs::create_dir_all(&comp).with_context(|| comp.display().to_string())?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::Elvish] {
        let p = clap_complete::generate_to(shell, &mut cmd, "ntkplane", &comp)
            .with_context(|| format!("{shell} completions in {}", comp.display()))?;
        println!("{}", p.display());
    }

    // A MANPATH tree: `MANPATH=target/dist/man man ntkplane-run`.
    let man = out.join("man/man8");
    std::fs::create_dir_all(&man).with_context(|| man.display().to_string())?;
    let page = |cmd: &clap::Command, name: &str| -> anyhow::Result<()> {
        let p = man.join(format!("{name}.8"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .title(name.to_uppercase())
            .section("8")
            .source(format!("ntkplane {}", env!("CARGO_PKG_VERSION")))
            .manual("ntkplane")
            .render(&mut buf)
            .with_context(|| format!("rendering {name}.8"))?;
        std::fs::write(&p, buf).with_context(|| p.display().to_string())?;
        println!("{}", p.display());
        Ok(())
    };
    page(&cmd, "ntkplane")?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        page(sub, &format!("ntkplane-{}", sub.get_name()))?;
    }
    Ok(())
}
