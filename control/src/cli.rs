//! The client side of the control socket: every command subcommand is a thin sender.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
};

use serde_json::Value;

use crate::daemon::proto::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no daemon answers on {0}: is `ntkplane run` running for this instance? ({1})")]
    Connect(String, std::io::Error),
    #[error("the daemon closed the connection without answering")]
    NoAnswer,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed answer: {0}")]
    Answer(#[from] serde_json::Error),
}

/// Sends one request and returns the daemon's response.
pub fn send(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| ClientError::Connect(socket.display().to_string(), e))?;
    writeln!(s, "{}", serde_json::to_string(req).expect("serializable"))?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    if line.is_empty() {
        return Err(ClientError::NoAnswer);
    }
    Ok(serde_json::from_str(&line)?)
}

/// A readable rendering of a response's data.
pub fn human(v: &Value) -> String {
    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        }
    }
    match v {
        Value::Array(rows) if rows.iter().all(Value::is_object) => rows
            .iter()
            .map(|r| {
                r.as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| format!("{k}={}", scalar(v)))
                    .collect::<Vec<_>>()
                    .join("  ")
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Object(m) if m.is_empty() => "ok".into(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}: {}", scalar(v)))
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => "ok".into(),
        other => serde_json::to_string_pretty(other).unwrap(),
    }
}

/// `monitor`: subscribes to the daemon's event stream and calls `each` with every event line
/// (its text, and the event when this client knows its kind) until the daemon ends the
/// stream. The subscription is confirmed on stderr before the first event.
pub fn monitor(
    socket: &Path,
    mut each: impl FnMut(&str, Option<&crate::daemon::events::Stamped>),
) -> Result<(), ClientError> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| ClientError::Connect(socket.display().to_string(), e))?;
    writeln!(
        s,
        "{}",
        serde_json::to_string(&Request::Monitor {}).expect("serializable")
    )?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(ClientError::NoAnswer);
    }
    let ack: Response = serde_json::from_str(&line)?;
    if !ack.ok {
        return Err(ClientError::Io(std::io::Error::other(
            ack.error.unwrap_or_default(),
        )));
    }
    eprintln!("monitoring {} (Ctrl-C to stop)", socket.display());
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let text = line.trim_end();
        // An event kind newer than this client is still shown (as its JSON).
        let ev = serde_json::from_str(text).ok();
        each(text, ev.as_ref());
    }
}

/// `HH:MM:SS.mmm` (UTC) of a time in ms since the UNIX epoch.
pub fn clock(time_ms: u64) -> String {
    let s = time_ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        time_ms % 1000
    )
}
