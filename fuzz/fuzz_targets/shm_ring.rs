//! Operations on a ring in an anonymous mapping against a `VecDeque`
//! model: while the header is intact, data read equals data written; after
//! a corruption every call returns an error or bytes, never touches memory
//! outside the ring (AddressSanitizer watches), panics or loops.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use procwire::ipc::testing::{Field, LocalRing};

fuzz_target!(|data: &[u8]| {
    let mut ring = LocalRing::new(64).expect("ring");
    let mut model: VecDeque<u8> = VecDeque::new();
    let mut corrupted = false;
    let mut next = 0u8;
    let mut ops = data.chunks(9);
    while let Some(op) = ops.next() {
        let Some((&kind, arg)) = op.split_first() else { break };
        let n = usize::from(arg.first().copied().unwrap_or(0)) % 100;
        match kind % 4 {
            0 => {
                let buf: Vec<u8> = (0..n).map(|_| {
                    next = next.wrapping_add(1);
                    next
                }).collect();
                match ring.write(&buf) {
                    Ok(w) => {
                        assert!(w <= buf.len());
                        if !corrupted {
                            assert_eq!(w, buf.len().min(ring.size() - model.len()));
                            model.extend(&buf[..w]);
                        }
                    }
                    Err(_) => assert!(corrupted, "error on an intact ring"),
                }
            }
            1 => {
                let mut buf = vec![0u8; n];
                match ring.read(&mut buf) {
                    Ok(r) => {
                        assert!(r <= n);
                        if !corrupted {
                            // At most what is there; something if anything is.
                            assert!(r <= n.min(model.len()));
                            assert!(n == 0 || model.is_empty() || r > 0);
                            let want: Vec<u8> = model.drain(..r).collect();
                            assert_eq!(&buf[..r], &want[..], "data read equals data written");
                        }
                    }
                    Err(_) => assert!(corrupted, "error on an intact ring"),
                }
            }
            2 => {
                let mut v = [0u8; 8];
                for (i, b) in arg.iter().take(8).enumerate() {
                    v[i] = *b;
                }
                let value = u64::from_le_bytes(v);
                let field = [Field::Tail, Field::Head, Field::RingSize, Field::DataWaiter][usize::from(arg.get(7).copied().unwrap_or(0)) % 4];
                ring.corrupt(field, value);
                // The ring size word is read only at setup; the waiter word
                // is not an index: neither garbles the data path.
                if matches!(field, Field::Tail | Field::Head) {
                    corrupted = true;
                }
            }
            _ => {}
        }
    }
});
