//! Whatever `PortSpec` parses prints back and re-parses to the same value,
//! and every port it names is in 1..=65535.
#![no_main]

use libfuzzer_sys::fuzz_target;
use procwire::net::port::PortSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(spec) = text.parse::<PortSpec>() {
        let printed = spec.to_string();
        let again: PortSpec = printed.parse().expect("printed spec re-parses");
        assert_eq!(again, spec, "{text:?} -> {printed:?}");
        assert!(spec.ports().iter().all(|&p| p != 0));
    }
});
