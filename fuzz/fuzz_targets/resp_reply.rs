//! Arbitrary bytes to the RESP2/RESP3 reply parser: no panic; a parsed
//! reply consumes no more than the input; its RESP3 encoding parses back
//! to a value with the same encoding (the encoders and the parser agree);
//! its RESP2 rendering is one complete reply; and every strict prefix of
//! the consumed bytes is incomplete.
#![no_main]

use libfuzzer_sys::fuzz_target;
use procwire::net::resp::{parse_reply, Version};

const MAX_BULK: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((value, n))) = parse_reply(data, MAX_BULK) else {
        return;
    };
    assert!(n > 0 && n <= data.len());
    for cut in [0, n / 2, n - 1] {
        assert!(
            matches!(parse_reply(&data[..cut], MAX_BULK), Ok(None)),
            "prefix {cut} of {n}"
        );
    }
    let mut v3 = Vec::new();
    value.encode(&mut v3, Version::Resp3);
    let (again, m) = parse_reply(&v3, MAX_BULK)
        .expect("our RESP3 encoding parses")
        .expect("and is complete");
    assert_eq!(m, v3.len());
    let mut v3b = Vec::new();
    again.encode(&mut v3b, Version::Resp3);
    assert_eq!(v3, v3b);
    let mut v2 = Vec::new();
    value.encode(&mut v2, Version::Resp2);
    let (_, m2) = parse_reply(&v2, MAX_BULK)
        .expect("our RESP2 rendering parses")
        .expect("and is complete");
    assert_eq!(m2, v2.len());
});
