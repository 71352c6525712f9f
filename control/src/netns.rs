//! Running work inside a named network namespace.
//!
//! `setns(2)` switches only the calling thread, and sockets keep the namespace they were
//! created in; so work for a namespace runs on a dedicated thread that enters it first.
//! Child processes and threads spawned from that thread inherit its namespace.
use std::{fs::File, os::fd::AsFd, path::PathBuf};

use nix::sched::{setns, CloneFlags};

/// Where `ip netns` (and ntkplane) bind-mount named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace '{name}' not found ({path}): {source}")]
    NotFound {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot enter network namespace '{name}': {source}")]
    Enter { name: String, source: nix::Error },
}

/// A network namespace: the caller's own, or a named one under `/run/netns`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Netns {
    Current,
    Named(String),
}

impl Netns {
    pub fn named(name: impl Into<String>) -> Self {
        Netns::Named(name.into())
    }

    /// Runs `f` on a fresh thread inside this namespace and returns its result.
    /// A panic in `f` is propagated to the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        // Even the current namespace gets a fresh thread: callers may be on a tokio worker,
        // where the closure could not start a runtime of its own.
        let name = match self {
            Netns::Current => {
                return Ok(std::thread::scope(|s| match s.spawn(f).join() {
                    Ok(v) => v,
                    Err(panic) => std::panic::resume_unwind(panic),
                }))
            }
            Netns::Named(n) => n,
        };
        let path = PathBuf::from(NETNS_RUN_DIR).join(name);
        let file = File::open(&path).map_err(|source| NetnsError::NotFound {
            name: name.clone(),
            path: path.clone(),
            source,
        })?;
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| {
                    NetnsError::Enter {
                        name: name.clone(),
                        source,
                    }
                })?;
                Ok(f())
            });
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}
