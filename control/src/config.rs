//! `ntkplane run --config FILE`: a TOML file of `run`'s options, named as the flags without
//! `--` (`topology = "4.2.2.2"`, `interface = ["eth1=169.254.96.141"]`,
//! `serve-anonymous = true`), so that a unit file stays one line.
//!
//! The file is turned into the flags it stands for and checked with the very parsers of
//! those flags (clap's); a flag given on the command line wins over the file's key (for a
//! repeatable flag, the command line's list replaces the file's). Unknown keys, values of the
//! wrong type and values a flag refuses are errors naming the file, the line and the key.
use std::{
    ffi::OsString,
    ops::Range,
    path::{Path, PathBuf},
};

use clap::{parser::ValueSource, ArgAction, ArgMatches};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// toml's message names the line and column.
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}:{line}: unknown key '{key}' (known: {known})")]
    UnknownKey {
        path: PathBuf,
        line: usize,
        key: String,
        known: String,
    },
    #[error("{path}:{line}: {key}: {message}")]
    Value {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

/// Flags that act once rather than configure: in a file read at every (re)start, they
/// would act at every restart (`discard-state` would drop the state after each crash).
const ONE_OFF: &[&str] = &["discard-state"];

/// Line number (1-based) of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// The arguments the file at `path` adds to `run` (`--key value`…), leaving out the keys the
/// command line gave (`given`, the matches of `run`). `run` is the built `run` subcommand
/// (global flags are not keys of the file: they also name the socket clients use).
pub fn file_args(
    path: &Path,
    run: &clap::Command,
    given: &ArgMatches,
) -> Result<Vec<OsString>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    parse_args(path, &text, run, given)
}

fn parse_args(
    path: &Path,
    text: &str,
    run: &clap::Command,
    given: &ArgMatches,
) -> Result<Vec<OsString>, ConfigError> {
    let syntax = |e: toml::de::Error| ConfigError::Syntax {
        path: path.into(),
        message: e.to_string().trim_end().replace('\n', " "),
    };
    // Values from the typed table, positions from the spanned parse.
    let table: toml::Table = toml::from_str(text).map_err(syntax)?;
    let spans: std::collections::BTreeMap<String, Range<usize>> = toml::de::DeTable::parse(text)
        .map_err(syntax)?
        .into_inner()
        .iter()
        .map(|(k, _)| (k.get_ref().to_string(), k.span()))
        .collect();
    let keys: Vec<&clap::Arg> = run
        .get_arguments()
        .filter(|a| {
            a.get_long()
                .is_some_and(|l| l != "config" && l != "help" && !ONE_OFF.contains(&l))
                && !a.is_global_set()
        })
        .collect();
    let mut out = Vec::new();
    for (key, value) in &table {
        let line = spans.get(key).map_or(1, |s| line_of(text, s.start));
        if ONE_OFF.contains(&key.as_str()) {
            return Err(ConfigError::Value {
                path: path.into(),
                line,
                key: key.clone(),
                message: "a one-time action, not a setting: give it on the command line".into(),
            });
        }
        let Some(arg) = keys.iter().find(|a| a.get_long() == Some(key.as_str())) else {
            let mut known: Vec<&str> = keys.iter().filter_map(|a| a.get_long()).collect();
            known.sort();
            return Err(ConfigError::UnknownKey {
                path: path.into(),
                line,
                key: key.clone(),
                known: known.join(", "),
            });
        };
        let bad = |message: String| ConfigError::Value {
            path: path.into(),
            line,
            key: key.clone(),
            message,
        };
        let flag = format!("--{key}");
        let values: Vec<String> = match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(b)) => {
                if given.value_source(arg.get_id().as_str()) != Some(ValueSource::CommandLine) && *b
                {
                    out.push(OsString::from(&flag));
                }
                continue;
            }
            (ArgAction::SetTrue, _) => return Err(bad("expected true or false".into())),
            (ArgAction::Append, toml::Value::Array(items)) => items
                .iter()
                .map(scalar)
                .collect::<Option<_>>()
                .ok_or_else(|| bad("expected a list of strings or numbers".into()))?,
            (_, v) => vec![scalar(v).ok_or_else(|| {
                bad(match v {
                    toml::Value::Array(_) => "expected one value, not a list".into(),
                    _ => "expected a string or a number".into(),
                })
            })?],
        };
        // The flag's own parser: the same checks as on the command line (on a command of
        // that one flag, so that the file's other keys and `run`'s requirements stay out).
        let probe = clap::Command::new("ntkplane-config")
            .no_binary_name(true)
            .arg(
                clap::Arg::new("v")
                    .long("value")
                    .value_parser(arg.get_value_parser().clone())
                    .action(ArgAction::Set)
                    .allow_hyphen_values(true),
            );
        for v in &values {
            if let Err(e) = probe
                .clone()
                .try_get_matches_from([OsString::from("--value"), OsString::from(v)])
            {
                // clap's words (invalid value, why, the possible values) without its usage.
                let msg = e.render().to_string();
                let text: Vec<&str> = msg
                    .lines()
                    .map(str::trim)
                    .filter(|l| {
                        !l.is_empty() && !l.starts_with("Usage") && !l.starts_with("For more")
                    })
                    .collect();
                let text = text
                    .join(" ")
                    .replace(" for '--value <v>'", "")
                    .replace("error: ", "");
                return Err(bad(text));
            }
        }
        if given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            continue;
        }
        for v in values {
            out.push(OsString::from(&flag));
            out.push(OsString::from(v));
        }
    }
    Ok(out)
}

/// A TOML scalar as the text of a flag's value.
fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    use crate::args::{Cli, Command};

    /// Parses `argv` as `main` does: the file's arguments appended after the command line's.
    fn parse(argv: &[&str], file: &str) -> Result<Cli, String> {
        let m = Cli::command()
            .try_get_matches_from(argv)
            .map_err(|e| e.to_string())?;
        let (_, sub) = m.subcommand().unwrap();
        let mut cmd = Cli::command();
        cmd.build();
        let run = cmd.find_subcommand("run").unwrap();
        let extra = parse_args(Path::new("/etc/ntkplane/x.toml"), file, run, sub)
            .map_err(|e| e.to_string())?;
        let mut all: Vec<OsString> = argv.iter().map(OsString::from).collect();
        all.extend(extra);
        let m = Cli::command()
            .try_get_matches_from(all)
            .map_err(|e| e.to_string())?;
        Cli::from_arg_matches(&m).map_err(|e| e.to_string())
    }

    const FILE: &str = r#"
topology = "4.2.2.2"
address = "2.1.1.1"
interface = ["eth1=169.254.96.141", "eth2"]
serve-anonymous = true
resync-interval = 30
"#;

    #[test]
    fn the_file_fills_in_and_flags_win() {
        let cli = parse(
            &["ntkplane", "run", "--config", "x", "--address", "3.1.1.1"],
            FILE,
        )
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.topology.as_deref(), Some("4.2.2.2"));
        assert_eq!(a.address.as_deref(), Some("3.1.1.1"), "the flag wins");
        assert_eq!(a.interfaces, ["eth1=169.254.96.141", "eth2"]);
        assert!(a.serve_anonymous);
        assert_eq!(a.resync_interval, 30);
        let cli = parse(
            &["ntkplane", "run", "--config", "x", "--interface", "eth9"],
            FILE,
        )
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!()
        };
        assert_eq!(
            a.interfaces,
            ["eth9"],
            "the command line's list replaces the file's"
        );
    }

    #[test]
    fn bad_files_name_the_file_the_line_and_the_key() {
        let argv = &["ntkplane", "run", "--config", "x"];
        let e = parse(argv, "topology = \"4.2.2.2\"\n\nsubnet_level = 1\n").unwrap_err();
        assert!(
            e.starts_with("/etc/ntkplane/x.toml:3: unknown key 'subnet_level'")
                && e.contains("subnet-level"),
            "{e}"
        );
        let e = parse(argv, "fast-path = \"sometimes\"\n").unwrap_err();
        assert!(
            e.starts_with("/etc/ntkplane/x.toml:1: fast-path:") && e.contains("sometimes"),
            "{e}"
        );
        let e = parse(argv, "\nserve-anonymous = \"yes\"\n").unwrap_err();
        assert_eq!(
            e,
            "/etc/ntkplane/x.toml:2: serve-anonymous: expected true or false"
        );
        let e = parse(argv, "topology = [\"4.2\"]\n").unwrap_err();
        assert!(
            e.ends_with("topology: expected one value, not a list"),
            "{e}"
        );
        let e = parse(argv, "metrics = \"localhost\"\n").unwrap_err();
        assert!(e.starts_with("/etc/ntkplane/x.toml:1: metrics:"), "{e}");
        let e = parse(argv, "topology = \n").unwrap_err();
        assert!(
            e.starts_with("/etc/ntkplane/x.toml: ") && e.contains("line 1"),
            "{e}"
        );
        let e = parse(argv, "discard-state = true\n").unwrap_err();
        assert!(e.contains(":1: discard-state: a one-time action"), "{e}");
        let e = parse(argv, "instance = \"a\"\n").unwrap_err();
        assert!(e.contains("unknown key 'instance'"), "{e}");
    }
}
