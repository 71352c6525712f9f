//! The control socket on tokio: every client is served by a task of its own, with deadlines
//! and a per-request size limit, so no client can hold the others up; the requests go, one
//! at a time, to the single writer (the thread that owns the [`super::Daemon`]).
//!
//! Deadlines: a connection with no request started for [`IDLE`] is closed; a request must
//! arrive completely within [`READ`] of its first byte, and its reply be taken within
//! [`WRITE`], else the connection is closed (with an error reply when one can be written).
//! A request line is at most [`MAX_REQUEST`] bytes; a connection carries any number of them.
use std::{sync::mpsc, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{oneshot, watch},
    task::JoinSet,
};

use super::{
    events::{Event, Events},
    proto::{self, Request, Response, MAX_REQUEST},
};

pub const IDLE: Duration = Duration::from_secs(300);
pub const READ: Duration = Duration::from_secs(5);
pub const WRITE: Duration = Duration::from_secs(5);
/// How long, at the end, clients still get to take their replies.
const DRAIN: Duration = Duration::from_millis(500);

/// What the socket side asks of the writer.
pub enum Msg {
    Request(Request, oneshot::Sender<Response>),
    /// A request of the protocol runtime (what it learnt): applied like a client's, logged
    /// at debug level only.
    Protocol(Request, oneshot::Sender<Response>),
    /// SIGTERM/SIGINT: shut down as `quit` does.
    Stop(&'static str),
    /// Something changed in this namespace (a watcher saw a netlink event).
    Drift(Option<String>),
    /// A scrape of `/metrics`: the rendering, gathered by the writer.
    Metrics(oneshot::Sender<String>),
}

/// What the socket thread serves besides the control socket.
pub struct Extras {
    /// The event hub `monitor` connections subscribe to.
    pub events: Events,
    /// `run --metrics`: the listener, already bound (in the system's namespace).
    pub metrics: Option<std::net::TcpListener>,
}

enum Line {
    Complete,
    Eof,
    TooLong,
}

/// Reads one line (without its newline) into `buf`, at most `MAX_REQUEST` bytes.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Line> {
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(Line::Eof);
        }
        match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => {
                buf.extend_from_slice(&chunk[..i]);
                r.consume(i + 1);
                return Ok(if buf.len() > MAX_REQUEST {
                    Line::TooLong
                } else {
                    Line::Complete
                });
            }
            None => {
                let n = chunk.len();
                buf.extend_from_slice(chunk);
                r.consume(n);
                if buf.len() > MAX_REQUEST {
                    return Ok(Line::TooLong);
                }
            }
        }
    }
}

/// `monitor`: the connection becomes a stream of events, one JSON line each, until the client
/// closes it (anything it sends is ignored). A client that does not read loses events (the
/// hub keeps [`super::events::CAPACITY`]) and is told so with a `lagged` event; one whose
/// socket stays full for [`WRITE`] is disconnected. The daemon never waits for it.
async fn monitor<R, W>(rd: &mut R, wr: &mut W, events: &Events)
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = events.subscribe();
    let ack = Response::ok(
        serde_json::to_value(super::events::Monitoring { monitoring: true }).expect("serializable"),
    );
    let mut text = serde_json::to_string(&ack).expect("responses serialize");
    text.push('\n');
    if !matches!(
        tokio::time::timeout(WRITE, wr.write_all(text.as_bytes())).await,
        Ok(Ok(()))
    ) {
        return;
    }
    loop {
        let stamped = tokio::select! {
            r = rx.recv() => match r {
                Ok(s) => s,
                Err(RecvError::Lagged(missed)) => {
                    super::events::Stamped::now(Event::Lagged { missed })
                }
                Err(RecvError::Closed) => return,
            },
            r = rd.fill_buf() => match r {
                Ok(b) if !b.is_empty() => {
                    let n = b.len();
                    rd.consume(n);
                    continue;
                }
                _ => return,
            },
        };
        let mut line = serde_json::to_string(&stamped).expect("events serialize");
        line.push('\n');
        match tokio::time::timeout(WRITE, wr.write_all(line.as_bytes())).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        if matches!(stamped.event, Event::Shutdown { .. }) {
            return;
        }
    }
}

async fn client(stream: UnixStream, writer: mpsc::Sender<Msg>, events: Events) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    loop {
        // Idle: wait for the first byte of the next request.
        match tokio::time::timeout(IDLE, rd.fill_buf()).await {
            Ok(Ok(b)) if !b.is_empty() => {}
            _ => return,
        }
        let mut line = Vec::new();
        let (resp, last) = match tokio::time::timeout(READ, read_line(&mut rd, &mut line)).await {
            Err(_) => (
                Response::err(format!(
                    "request not completed within {} s: closing",
                    READ.as_secs()
                )),
                true,
            ),
            Ok(Err(_)) => return,
            Ok(Ok(Line::TooLong)) => (
                Response::err(format!("request longer than {MAX_REQUEST} bytes")),
                true,
            ),
            Ok(Ok(Line::Eof)) if line.iter().all(u8::is_ascii_whitespace) => return,
            Ok(Ok(l)) => {
                let last = matches!(l, Line::Eof);
                let resp = match proto::decode(&line) {
                    Err(e) => Response::err(e),
                    Ok(Request::Monitor {}) => {
                        monitor(&mut rd, &mut wr, &events).await;
                        return;
                    }
                    Ok(req) => {
                        let (tx, rx) = oneshot::channel();
                        if writer.send(Msg::Request(req, tx)).is_err() {
                            Response::err("the daemon is stopping")
                        } else {
                            rx.await
                                .unwrap_or_else(|_| Response::err("the daemon is stopping"))
                        }
                    }
                };
                (resp, last)
            }
        };
        let mut text = serde_json::to_string(&resp).expect("responses serialize");
        text.push('\n');
        match tokio::time::timeout(WRITE, wr.write_all(text.as_bytes())).await {
            Ok(Ok(())) if !last => {}
            _ => return,
        }
    }
}

/// Runs the socket side until `stop` turns true: accepts clients, forwards SIGTERM/SIGINT
/// to the writer. On its own thread, with its own runtime.
pub fn run(
    listener: std::os::unix::net::UnixListener,
    writer: mpsc::Sender<Msg>,
    mut stop: watch::Receiver<bool>,
    extras: Extras,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = match UnixListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("control socket: {e}");
                let _ = writer.send(Msg::Stop("the control socket failed"));
                return;
            }
        };
        // Scrapes are served by tasks of this runtime: they end with it.
        let metrics = match extras.metrics.map(tokio::net::TcpListener::from_std) {
            None => None,
            Some(Ok(l)) => Some(tokio::spawn(super::http::serve(l, writer.clone()))),
            Some(Err(e)) => {
                tracing::error!("metrics listener: {e}");
                let _ = writer.send(Msg::Stop("the metrics listener failed"));
                return;
            }
        };
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut clients = JoinSet::new();
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => { clients.spawn(client(s, writer.clone(), extras.events.clone())); }
                    Err(e) => tracing::warn!("accept: {e}"),
                },
                _ = term.recv() => { let _ = writer.send(Msg::Stop("SIGTERM")); }
                _ = int.recv() => { let _ = writer.send(Msg::Stop("SIGINT")); }
                _ = stop.changed() => break,
                Some(_) = clients.join_next(), if !clients.is_empty() => {}
            }
        }
        drop(listener);
        if let Some(m) = metrics {
            m.abort();
        }
        // The last replies (quit's) get a moment to be written; then everyone is cut.
        let _ = tokio::time::timeout(DRAIN, async {
            while clients.join_next().await.is_some() {}
        })
        .await;
        clients.abort_all();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A monitor that fell behind is told how many events it lost, then gets the rest; it
    /// ends when its client goes away.
    #[tokio::test]
    async fn a_lagging_monitor_is_told_and_ends_with_its_client() {
        let hub = Events::new();
        let (client, server) = tokio::io::duplex(256);
        let (srd, mut swr) = tokio::io::split(server);
        let task = tokio::spawn({
            let hub = hub.clone();
            async move {
                let mut srd = BufReader::new(srd);
                monitor(&mut srd, &mut swr, &hub).await;
            }
        });
        let (crd, cwr) = tokio::io::split(client);
        let mut lines = BufReader::new(crd).lines();
        let ack: Response =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert!(ack.ok);
        // Subscribed: more than the hub keeps, emitted while the monitor cannot write.
        let extra = 7;
        for i in 0..(super::super::events::CAPACITY + extra) {
            hub.emit(Event::RepairFailed {
                netns: "default".into(),
                error: i.to_string(),
            });
        }
        let first: serde_json::Value =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(first["event"], "lagged", "{first}");
        assert!(first["missed"].as_u64().unwrap() >= extra as u64, "{first}");
        let next: serde_json::Value =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(next["event"], "repair-failed", "{next}");
        drop(lines);
        drop(cwr);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the monitor ends when its client goes")
            .unwrap();
    }

    /// Issue 19, finding 8: the limit is per request line, not per connection.
    #[tokio::test]
    async fn the_size_limit_is_per_request() {
        let line = format!(
            "{{\"command\":\"status\"}}{}\n",
            " ".repeat(MAX_REQUEST / 2)
        );
        let data = line.repeat(5); // 2.5 MiB on one connection
        let mut r = BufReader::new(data.as_bytes());
        for _ in 0..5 {
            let mut buf = Vec::new();
            assert!(matches!(
                read_line(&mut r, &mut buf).await.unwrap(),
                Line::Complete
            ));
            assert!(proto::decode(&buf).is_ok());
        }
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut r, &mut buf).await.unwrap(),
            Line::Eof
        ));
        let long = vec![b' '; MAX_REQUEST + 2];
        let mut r = BufReader::new(&long[..]);
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut r, &mut buf).await.unwrap(),
            Line::TooLong
        ));
    }
}
