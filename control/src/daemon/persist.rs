//! The persisted desired model: written atomically (temporary file, fsync, rename) after
//! every change, so a crash at any point leaves either the old or the new state.
//!
//! The file is 0600 in a 0700 directory (it names the node's neighbours and addresses). The
//! temporary file has a random name and is created with `O_CREAT|O_EXCL|O_NOFOLLOW`: a file
//! or symlink planted at a predictable name is never followed nor overwritten. Every error
//! names the path.
use std::{
    fs,
    io::{self, Read, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

use crate::system::System;

fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Creates `dir` (and missing parents) and makes `dir` itself 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| at(dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| at(dir, e))
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    if fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        b = (t ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn save(path: &Path, s: &System) -> io::Result<()> {
    let text = serde_json::to_string_pretty(s)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    write_private(path, text.as_bytes())
}

/// Writes `bytes` to `path` atomically, 0600, its directory 0700.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", random_hex()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| at(&tmp, e))?;
        f.write_all(bytes).map_err(|e| at(&tmp, e))?;
        f.sync_all().map_err(|e| at(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| at(path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The persisted model, if any.
pub fn load(path: &Path) -> io::Result<Option<System>> {
    match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(at(path, e)),
    }
}

pub fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(at(path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ntkplane-persist-{tag}-{}-{}",
            std::process::id(),
            random_hex()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// Issue 19: 0600 in a 0700 directory, and a symlink at the old fixed temporary name
    /// (`state.json.tmp`) is neither followed nor needed.
    #[test]
    fn private_modes_and_no_followed_symlink() {
        let root = scratch("modes");
        let dir = root.join("inst");
        let path = dir.join("state.json");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let victim = root.join("victim");
        fs::write(&victim, "keep").unwrap();
        symlink(&victim, dir.join("state.json.tmp")).unwrap();
        write_private(&path, b"{}").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{}");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // No temporary file left behind.
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp") && n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn errors_name_the_path() {
        let root = scratch("errs");
        let file = root.join("plain");
        fs::write(&file, "x").unwrap();
        // A directory where a file is: the error names the path.
        let e = write_private(&file.join("state.json"), b"{}").unwrap_err();
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        fs::remove_dir_all(&root).unwrap();
    }
}
