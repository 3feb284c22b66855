//! The shared-memory handshake's hello: any 18 bytes decode to a hello or
//! an error without panicking, and a decoded hello encodes back to the same
//! bytes (so the decoder accepts exactly what the encoder writes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use procwire::ipc::{Hello, HELLO_LEN};

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = data.get(..HELLO_LEN) else { return };
    let bytes: [u8; HELLO_LEN] = bytes.try_into().expect("length checked");
    if let Ok(hello) = Hello::decode(&bytes) {
        assert_eq!(hello.encode(), bytes, "{hello:?}");
        assert!(hello.ring_size.is_power_of_two());
    }
});
