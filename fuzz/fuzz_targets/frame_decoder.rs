//! Arbitrary bytes fed in arbitrary splits decode to exactly the frames of a
//! one-shot decode, with the same error, and the decoder never buffers more
//! than the configured maximum beyond what it was fed at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use procwire::net::frame::{Decoder, Framing, HEADER_LEN};

const MAX: usize = 1024;

fn decode(framing: Framing, pieces: &[&[u8]]) -> (Vec<Vec<u8>>, Option<String>) {
    let mut d = Decoder::new(framing);
    let mut frames = Vec::new();
    for p in pieces {
        d.feed(p);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f.to_vec()),
                Ok(None) => break,
                Err(e) => return (frames, Some(e.to_string())),
            }
        }
        // What is held back is at most one incomplete frame (or record).
        assert!(d.buffered() <= MAX + HEADER_LEN + p.len().max(MAX + HEADER_LEN));
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Some((&split, bytes)) = rest.split_first() else { return };
    let framing = if mode % 2 == 0 {
        Framing::LengthPrefixed { max: MAX }
    } else {
        Framing::Fixed(usize::from(mode % 13) + 1)
    };
    let one_shot = decode(framing, &[bytes]);
    // Split into pieces whose sizes cycle through 1..=split+1.
    let step = usize::from(split) + 1;
    let mut pieces = Vec::new();
    let mut at = 0;
    let mut k = 0;
    while at < bytes.len() {
        let n = (k % step + 1).min(bytes.len() - at);
        pieces.push(&bytes[at..at + n]);
        at += n;
        k += 1;
    }
    let split_decode = decode(framing, &pieces);
    assert_eq!(one_shot, split_decode);
    for f in &one_shot.0 {
        assert!(f.len() <= MAX || matches!(framing, Framing::Fixed(_)));
    }
});
