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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_on_change_and_removes_when_empty() {
        let dir = std::env::temp_dir().join(format!("ntkplane-rt-{}", std::process::id()));
        let path = dir.join("ntkplane.conf");
        let names = BTreeMap::from([
            (251, "ntk".to_string()),
            (250, "ntk_from_00:16:3E:5B:78:D5".to_string()),
        ]);
        assert!(write(&path, &names).unwrap());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# Written by ntkplane; do not edit.\n250 ntk_from_00:16:3E:5B:78:D5\n251 ntk\n"
        );
        assert!(
            !write(&path, &names).unwrap(),
            "unchanged content is not rewritten"
        );
        assert!(write(&path, &BTreeMap::new()).unwrap());
        assert!(!path.exists());
        assert!(!write(&path, &BTreeMap::new()).unwrap());
        fs::remove_dir(&dir).unwrap();
    }
}
