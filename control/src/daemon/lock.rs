//! Ownership: one daemon per instance, one instance per network namespace.
//!
//! Both are `flock(2)` locks held for the daemon's lifetime on files that are never
//! removed (removing a lock file races with a process that just opened it). The kernel drops
//! the locks when the process dies, so a crash never leaves a stale owner behind.
use std::{
    fs::{self, File},
    io::{self, Read, Seek, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    os::unix::io::AsRawFd,
    path::{Path, PathBuf},
};

use crate::netns::Netns;

/// Where the per-namespace owner locks live: fixed, so instances with different run
/// directories still see each other.
pub const OWNERS_DIR: &str = "/run/ntkplane-owners";

/// A held lock (released when dropped or when the process exits).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    pub path: PathBuf,
}

/// What holds a lock: the content its holder wrote.
#[derive(Debug)]
pub enum LockError {
    Held { path: PathBuf, holder: String },
    Io(io::Error),
}

fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Takes the exclusive lock on `path` (created 0600 if missing, never through a symlink)
/// and writes `who` into it; `Held` (with what the holder wrote) if another process has it.
pub fn take(path: &Path, who: &str) -> Result<Lock, LockError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| LockError::Io(at(dir, e)))?;
    }
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| LockError::Io(at(path, e)))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            return Err(LockError::Held {
                path: path.into(),
                holder: holder.trim().to_string(),
            });
        }
        return Err(LockError::Io(at(path, e)));
    }
    let write = |f: &mut File| -> io::Result<()> {
        f.set_len(0)?;
        f.rewind()?;
        writeln!(f, "{who}")
    };
    write(&mut f).map_err(|e| LockError::Io(at(path, e)))?;
    Ok(Lock {
        _file: f,
        path: path.into(),
    })
}

/// The owner-lock file of a network namespace: named after the namespace's inode (a name
/// can be bound twice, a namespace is one inode while it lives).
pub fn netns_lock_path(netns: &Netns) -> io::Result<PathBuf> {
    let p = match netns {
        Netns::Current => PathBuf::from("/proc/self/ns/net"),
        Netns::Named(n) => Path::new(crate::netns::NETNS_RUN_DIR).join(n),
    };
    let m = fs::metadata(&p).map_err(|e| at(&p, e))?;
    Ok(Path::new(OWNERS_DIR).join(format!("netns-{}-{}.lock", m.dev(), m.ino())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_refused_and_told_the_holder() {
        let dir = std::env::temp_dir().join(format!("ntkplane-lock-{}", std::process::id()));
        let p = dir.join("x.lock");
        let l = take(&p, "first").unwrap();
        match take(&p, "second") {
            Err(LockError::Held { holder, .. }) => assert_eq!(holder, "first"),
            other => panic!("{other:?}"),
        }
        drop(l);
        let _l2 = take(&p, "second").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap().trim(), "second");
        fs::remove_dir_all(&dir).unwrap();
    }
}
