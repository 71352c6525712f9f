//! Running work inside a named network namespace.
//!
//! `setns(2)` switches only the calling thread, and sockets keep the namespace they were
//! created in; so work for a namespace runs on a dedicated thread that enters it first.
//! Child processes and threads spawned from that thread inherit its namespace.
use std::{
    fs::File,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

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
    #[error("invalid network namespace name '{0}'")]
    BadName(String),
    #[error("network namespace '{0}' already exists")]
    Exists(String),
    #[error("cannot create network namespace '{name}': {detail}")]
    Create { name: String, detail: String },
    #[error("cannot delete network namespace '{name}': {detail}")]
    Delete { name: String, detail: String },
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

    /// Creates a named namespace the way `ip netns add` does: a new network namespace kept
    /// alive by a bind mount on `/run/netns/<name>`.
    pub fn create(name: &str) -> Result<Netns, NetnsError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(NetnsError::BadName(name.into()));
        }
        let dir = Path::new(NETNS_RUN_DIR);
        let err = |d: String| NetnsError::Create {
            name: name.into(),
            detail: d,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(NetnsError::Exists(name.into()))
            }
            Err(e) => return Err(err(e.to_string())),
        }
        let made = std::thread::scope(|s| {
            s.spawn(|| -> Result<(), String> {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("unshare: {e}"))?;
                nix::mount::mount(
                    Some("/proc/thread-self/ns/net"),
                    &path,
                    None::<&str>,
                    nix::mount::MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| format!("bind mount: {e}"))
            })
            .join()
            .unwrap_or_else(|_| Err("thread panicked".into()))
        });
        if let Err(d) = made {
            let _ = std::fs::remove_file(&path);
            return Err(err(d));
        }
        tracing::info!(name, "network namespace created");
        Ok(Netns::Named(name.into()))
    }

    /// Deletes a named namespace (`ip netns del`): its interfaces go with it once no
    /// process or socket holds it.
    pub fn delete(name: &str) -> Result<(), NetnsError> {
        let path = Path::new(NETNS_RUN_DIR).join(name);
        let err = |d: String| NetnsError::Delete {
            name: name.into(),
            detail: d,
        };
        nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| err(format!("umount: {e}")))?;
        std::fs::remove_file(&path).map_err(|e| err(e.to_string()))?;
        tracing::info!(name, "network namespace deleted");
        Ok(())
    }

    /// Moves the calling thread into this namespace for good (a long-lived thread whose
    /// sockets must live there). `Current` leaves it where it is.
    pub fn enter(&self) -> Result<(), NetnsError> {
        let Netns::Named(name) = self else {
            return Ok(());
        };
        let file = self.open()?;
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
            name: name.clone(),
            source,
        })
    }

    /// An fd of the namespace (to move interfaces into it).
    pub fn open(&self) -> Result<File, NetnsError> {
        let path = match self {
            Netns::Current => PathBuf::from("/proc/thread-self/ns/net"),
            Netns::Named(n) => PathBuf::from(NETNS_RUN_DIR).join(n),
        };
        File::open(&path).map_err(|source| NetnsError::NotFound {
            name: format!("{self:?}"),
            path,
            source,
        })
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
