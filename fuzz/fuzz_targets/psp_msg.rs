//! Arbitrary bytes to the peer-server-peer decoders: a control record
//! either fails with a reason or decodes to a message that encodes back to
//! the same record (up to the padding); a chunk record either fails or
//! yields an id in range with exactly that chunk's length, inside the
//! record. A piece either fails or, with the others of its record, makes
//! a record of exactly the record size. Never a panic.
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
    // The same bytes as pieces of that file's records, cut at every
    // 37th byte: whatever the Reassembly gives back has the record's size.
    let rec_size = proto::chunk_record(chunk_size);
    let mut r = proto::Reassembly::new(rec_size, n_chunks.max(1), 4);
    for p in rec.chunks(37).chain(std::iter::once(rec)) {
        if let Ok(Some(whole)) = r.add(p) {
            assert_eq!(whole.len(), rec_size);
        }
        assert!(r.len() <= 4);
    }
    if let Some(l) = proto::Layout::new(rec_size, 64 + rec.len() % 2000) {
        let mut total = 0;
        if rec.len() >= rec_size {
            l.datagrams(&rec[..rec_size], None, |d| {
                assert!(d.len() <= l.payload);
                total += d.len();
            });
            assert!(total >= rec_size);
        }
    }
});
