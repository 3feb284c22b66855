//! Arbitrary bytes to the peer-server-peer decoders: a control record
//! either fails with a reason or decodes to a message that encodes back to
//! the same record (up to the padding); a chunk record either fails or
//! yields an id in range with exactly that chunk's length, inside the
//! record. Never a panic.
#![no_main]

#[path = "../../examples/psp_common/proto.rs"]
#[allow(dead_code)]
mod proto;

use libfuzzer_sys::fuzz_target;
use proto::{Msg, CONTROL_SIZE};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Msg::decode(data) {
        let again = m.encode();
        assert_eq!(Msg::decode(&again), Ok(m), "re-encoding changed {m:?}");
    }
    if data.len() >= CONTROL_SIZE {
        let _ = Msg::decode(&data[..CONTROL_SIZE]);
    }
    // The first bytes choose a file shape; the rest is the record.
    if data.len() < 10 {
        return;
    }
    let chunk_size = 1 + usize::from(u16::from_le_bytes([data[0], data[1]])) % 2048;
    let file_size = u64::from(u32::from_le_bytes([data[2], data[3], data[4], data[5]])) % (1 << 24);
    let n_chunks = u32::try_from(file_size.div_ceil(chunk_size as u64)).unwrap_or(u32::MAX);
    let rec = &data[6..];
    if let Ok((id, bytes)) = proto::decode_chunk(rec, chunk_size, n_chunks, file_size) {
        assert!(id < n_chunks);
        assert_eq!(bytes.len(), proto::chunk_len(id, chunk_size, file_size));
        let mut out = Vec::new();
        proto::encode_chunk(id, bytes, chunk_size, &mut out);
        assert_eq!(out.len(), rec.len());
        assert_eq!(&out[..proto::CHUNK_HEADER + bytes.len()], &rec[..proto::CHUNK_HEADER + bytes.len()]);
    }
});
