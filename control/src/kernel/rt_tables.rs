//! `/etc/iproute2/rt_tables.d/<file>.conf`: names for ntkplane's table ids, so that
//! `ip route show table ntk_from_<MAC>` works for administrators. Cosmetic: nothing in
//! ntkplane reads it. The file is ntkplane's alone; it is replaced atomically.
use std::{collections::BTreeMap, fs, io, path::Path};

/// Writes the names if the content differs; removes the file for an empty map. Returns
/// whether the file changed.
pub fn write(path: &Path, names: &BTreeMap<u32, String>) -> io::Result<bool> {
    if names.is_empty() {
        return match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        };
    }
    let mut text = String::from("# Written by ntkplane; do not edit.\n");
    for (id, name) in names {
        text.push_str(&format!("{id} {name}\n"));
    }
    if fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("conf.tmp");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)?;
    Ok(true)
}
