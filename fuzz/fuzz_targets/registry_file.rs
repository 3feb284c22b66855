//! Arbitrary registry file contents: either an error naming a line within
//! the file, or associations that survive being written out and read back,
//! also after an add and a remove.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use procwire::net::port::{parse_text, rewrite_text, RegistryError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_text(Path::new("fuzz.conf"), text) {
        Err(RegistryError::Parse { line, .. }) => {
            assert!(line >= 1 && line <= text.lines().count().max(1), "line {line} of {}", text.lines().count());
        }
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(entries) => {
            let written = rewrite_text(text, None, None).expect("a parsed file rewrites");
            let back = parse_text(Path::new("fuzz.conf"), &written).expect("what we write parses");
            assert_eq!(back, entries);
            // Add a fresh name on a fresh port, then remove it again.
            let port = (1..=65535u16).find(|p| !entries.iter().any(|(_, q)| q == p));
            if let Some(port) = port {
                let added = rewrite_text(text, Some(("zz-fuzz-new", port)), None).expect("add");
                let with = parse_text(Path::new("fuzz.conf"), &added).expect("added parses");
                if !entries.iter().any(|(n, _)| n == "zz-fuzz-new") {
                    assert_eq!(with.len(), entries.len() + 1);
                    let removed = rewrite_text(&added, None, Some("zz-fuzz-new")).expect("remove");
                    assert_eq!(parse_text(Path::new("fuzz.conf"), &removed).expect("parses"), entries);
                }
            }
        }
    }
});
