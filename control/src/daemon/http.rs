//! A minimal HTTP/1.1 responder for `GET /metrics` (Prometheus scrapes), on the control
//! thread's runtime beside the control socket.
//!
//! One request per connection (`Connection: close`). A misbehaving client cannot hold anything
//! up: the request head must arrive within [`READ`] and fit in [`MAX_HEAD`] bytes, the
//! answer be taken within [`WRITE`], and at most [`MAX_CONNECTIONS`] connections are served
//! at once (more are closed at once). The rendering is asked of the writer thread, which
//! gathers from the kernel; a writer busy with a long command makes the scrape wait (up to
//! [`GATHER`]), never the other way round.
use std::{sync::mpsc, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{oneshot, Semaphore},
};

use super::server::Msg;

pub const READ: Duration = Duration::from_secs(5);
pub const WRITE: Duration = Duration::from_secs(5);
/// How long a scrape waits for the writer to gather.
pub const GATHER: Duration = Duration::from_secs(10);
/// Longest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
pub const MAX_CONNECTIONS: usize = 16;
/// After the answer: how long, and how much, of what the client still sends is drained.
const LINGER: Duration = Duration::from_millis(500);
const MAX_DRAIN: usize = 128 * 1024;

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Metrics { head: bool },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Parses the request line of a complete head (`GET /metrics HTTP/1.1`); a query string is
/// ignored (Prometheus may add one).
pub fn route(head: &[u8]) -> Route {
    let Ok(text) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    let line = text.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics { head: false },
        ("HEAD", "/metrics") => Route::Metrics { head: true },
        (_, "/metrics") => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

/// Reads until the end of the head (`\r\n\r\n`): `Ok(None)` when the client closed first,
/// `Err` when it is longer than [`MAX_HEAD`].
async fn read_head(s: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(i);
            return Ok(Some(buf));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too long"));
        }
    }
}

fn response(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

async fn serve_one(mut s: TcpStream, writer: mpsc::Sender<Msg>) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let reply = match tokio::time::timeout(READ, read_head(&mut s)).await {
        Err(_) => response(
            "408 Request Timeout",
            TEXT,
            "request not received in time\n",
            false,
        ),
        Ok(Ok(None)) => return,
        Ok(Err(_)) => response(
            "431 Request Header Fields Too Large",
            TEXT,
            "request head too long\n",
            false,
        ),
        Ok(Ok(Some(head))) => match route(&head) {
            Route::Metrics { head } => {
                let (tx, rx) = oneshot::channel();
                let text = if writer.send(Msg::Metrics(tx)).is_err() {
                    None
                } else {
                    tokio::time::timeout(GATHER, rx)
                        .await
                        .ok()
                        .and_then(Result::ok)
                };
                match text {
                    Some(t) => response("200 OK", super::metrics::CONTENT_TYPE, &t, head),
                    None => response(
                        "503 Service Unavailable",
                        TEXT,
                        "the daemon is busy or stopping\n",
                        head,
                    ),
                }
            }
            Route::NotFound => response("404 Not Found", TEXT, "try /metrics\n", false),
            Route::MethodNotAllowed => {
                response("405 Method Not Allowed", TEXT, "GET or HEAD\n", false)
            }
            Route::BadRequest => response("400 Bad Request", TEXT, "bad request line\n", false),
        },
    };
    let _ = tokio::time::timeout(WRITE, async {
        s.write_all(&reply).await?;
        s.shutdown().await
    })
    .await;
    // Lingering close: what the client still sends (the rest of an oversized head) is read
    // and dropped for a moment, so that closing does not reset the connection before the
    // client has read the answer.
    let _ = tokio::time::timeout(LINGER, async {
        let mut buf = [0u8; 4096];
        let mut drained = 0;
        while drained < MAX_DRAIN {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// Accepts scrapes until the task is dropped (the control thread's end).
pub async fn serve(listener: TcpListener, writer: mpsc::Sender<Msg>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (s, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("metrics: accept: {e}");
                // EMFILE and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the limit: closed at once rather than queued.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let writer = writer.clone();
        tokio::spawn(async move {
            serve_one(s, writer).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"GET /metrics?x=1 HTTP/1.0"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1"),
            Route::Metrics { head: true }
        );
        assert_eq!(route(b"POST /metrics HTTP/1.1"), Route::MethodNotAllowed);
        assert_eq!(route(b"GET / HTTP/1.1"), Route::NotFound);
        assert_eq!(route(b"GET /metrics"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics SPDY/3"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
    }

    /// A slow or oversized client gets an error status, and the writer is never asked.
    #[tokio::test]
    async fn oversized_and_wrong_requests_get_errors() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let srv = tokio::spawn(serve(l, tx));
        for (req, status) in [
            (vec![b'a'; MAX_HEAD + 10], "431"),
            (b"GET /nope HTTP/1.1\r\n\r\n".to_vec(), "404"),
            (b"garbage\r\n\r\n".to_vec(), "400"),
        ] {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(&req).await.unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).await.unwrap();
            assert!(out.starts_with(&format!("HTTP/1.1 {status}")), "{out}");
        }
        assert!(rx.try_recv().is_err());
        srv.abort();
    }
}
