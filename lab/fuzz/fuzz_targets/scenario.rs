//! The scenario parser on arbitrary text: it must return a scenario or a `file:line: field`
//! error, never panic (inline `tables` listings are parsed at load too).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ntkplane_lab::scenario::Scenario;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // In a directory that does not exist: a relative `include` names no file.
    if let Err(e) = Scenario::parse(Path::new("/nonexistent/ntkplane-fuzz/s.toml"), text) {
        assert!(!e.to_string().is_empty());
    }
});
