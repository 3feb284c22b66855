//! Arbitrary bytes to the RESP request parser: no panic; a parsed request
//! consumes no more than the input, within the bulk limit; and parsing in
//! two pieces agrees with parsing at once (incomplete until the whole
//! request is there).
#![no_main]

use libfuzzer_sys::fuzz_target;
use procwire::net::resp::{parse_request, Request};

const MAX_BULK: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let whole = parse_request(data, MAX_BULK);
    if let Ok(Some(Request { args, consumed: n })) = &whole {
        assert!(*n <= data.len() && *n > 0 || data.is_empty());
        assert!(args.iter().all(|a| a.len() <= MAX_BULK || data.first() != Some(&b'*')));
        // Any strict prefix of the consumed request is incomplete or (for
        // inline requests cut inside a line) the same kind of answer.
        if data.first() == Some(&b'*') {
            for cut in [0, n / 2, n.saturating_sub(1)] {
                if cut < *n {
                    assert!(matches!(parse_request(&data[..cut], MAX_BULK), Ok(None)), "prefix {cut} of {n}");
                }
            }
        }
    }
});
