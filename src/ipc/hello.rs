//! The handshake's one message each way. The connecting side sends a
//! [`Hello`] (with the segment's fd in the same `sendmsg`, unless it is a
//! SysV segment, named by its id); the accepting side answers [`ACK`] once
//! it has mapped and checked the segment.
//!
//! On the wire a hello is [`LEN`] bytes: `"PWSHM"`, a kind byte (the
//! [`SegmentKind`] in the low bits, [`PREFAULT`] on top), the ring size as
//! a little-endian `u64`, and the SysV id as a little-endian `i32` (-1 for
//! other kinds). One encoder and one decoder; the decoder trusts nothing.

use std::fmt;

use super::segment::{valid_ring, SegmentKind};

/// The length of a hello on the wire.
pub const LEN: usize = 5 + 1 + 8 + 4;
/// What the accepting side answers when it took the segment.
pub const ACK: u8 = b'A';
/// How long either side waits for the other's message of the handshake.
pub(crate) const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The bit of the kind byte that asks both sides to prefault the segment.
const PREFAULT: u8 = 0x80;
const MAGIC: &[u8; 5] = b"PWSHM";

/// What a connecting side tells the accepting side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hello {
    /// How the segment was made.
    pub kind: SegmentKind,
    /// Both sides back every page before the first byte.
    pub prefault: bool,
    /// Bytes per direction: a power of two from 4 KiB to 1 GiB.
    pub ring_size: u64,
    /// The SysV segment's id, or -1.
    pub sysv_id: i32,
}

/// Why bytes are not a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HelloError {
    /// It doesn't start with `"PWSHM"`: not a procwire shared-memory peer.
    Magic,
    /// An unknown segment kind.
    Kind(u8),
    /// A ring size that is not a power of two from 4 KiB to 1 GiB.
    RingSize(u64),
}

impl fmt::Display for HelloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelloError::Magic => f.write_str("not a procwire shared-memory hello"),
            HelloError::Kind(k) => write!(f, "unknown segment kind {k}"),
            HelloError::RingSize(r) => write!(f, "bad ring size {r}"),
        }
    }
}

impl std::error::Error for HelloError {}

fn kind_byte(kind: SegmentKind) -> u8 {
    match kind {
        SegmentKind::Memfd => 0,
        SegmentKind::Posix => 1,
        SegmentKind::SysV => 2,
    }
}

impl Hello {
    /// The hello's bytes.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..5].copy_from_slice(MAGIC);
        b[5] = kind_byte(self.kind) | if self.prefault { PREFAULT } else { 0 };
        b[6..14].copy_from_slice(&self.ring_size.to_le_bytes());
        b[14..18].copy_from_slice(&self.sysv_id.to_le_bytes());
        b
    }

    /// Reads a hello, checking the magic, the kind and the ring size.
    ///
    /// # Errors
    ///
    /// [`HelloError`] says which part is wrong.
    pub fn decode(b: &[u8; LEN]) -> Result<Hello, HelloError> {
        let (magic, rest) = b.split_at(5);
        if magic != MAGIC {
            return Err(HelloError::Magic);
        }
        let (kind, rest) = rest.split_at(1);
        let (ring, id) = rest.split_at(8);
        let kind = kind[0];
        let ring_size = u64::from_le_bytes(ring.try_into().map_err(|_| HelloError::Magic)?);
        let sysv_id = i32::from_le_bytes(id.try_into().map_err(|_| HelloError::Magic)?);
        let prefault = kind & PREFAULT != 0;
        let kind = match kind & !PREFAULT {
            0 => SegmentKind::Memfd,
            1 => SegmentKind::Posix,
            2 => SegmentKind::SysV,
            k => return Err(HelloError::Kind(k)),
        };
        if !valid_ring(ring_size) {
            return Err(HelloError::RingSize(ring_size));
        }
        Ok(Hello {
            kind,
            prefault,
            ring_size,
            sysv_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            kind: SegmentKind::SysV,
            prefault: true,
            ring_size: 1 << 20,
            sysv_id: 0x0102_0304,
        }
    }

    #[test]
    fn the_wire_form_is_pinned() {
        let b = hello().encode();
        assert_eq!(&b[..5], b"PWSHM");
        assert_eq!(b[5], 2 | 0x80);
        assert_eq!(&b[6..14], &(1u64 << 20).to_le_bytes());
        assert_eq!(&b[14..], &[4, 3, 2, 1]);
        for kind in [SegmentKind::Memfd, SegmentKind::Posix, SegmentKind::SysV] {
            for prefault in [false, true] {
                let h = Hello {
                    kind,
                    prefault,
                    ..hello()
                };
                assert_eq!(Hello::decode(&h.encode()), Ok(h));
            }
        }
    }

    #[test]
    fn each_bad_part_is_named() {
        let good = hello().encode();
        let mut b = good;
        b[0] = b'X';
        assert_eq!(Hello::decode(&b), Err(HelloError::Magic));
        let mut b = good;
        b[4] = b'm';
        assert_eq!(Hello::decode(&b), Err(HelloError::Magic));
        let mut b = good;
        b[5] = 3;
        assert_eq!(Hello::decode(&b), Err(HelloError::Kind(3)));
        b[5] = 0x83;
        assert_eq!(Hello::decode(&b), Err(HelloError::Kind(3)));
        for ring in [0u64, 2048, 4095, 4097, 3 << 20, 1 << 31, u64::MAX] {
            let mut b = good;
            b[6..14].copy_from_slice(&ring.to_le_bytes());
            assert_eq!(Hello::decode(&b), Err(HelloError::RingSize(ring)), "{ring}");
        }
        for ring in [4096u64, 1 << 30] {
            let mut b = good;
            b[6..14].copy_from_slice(&ring.to_le_bytes());
            assert_eq!(Hello::decode(&b).map(|h| h.ring_size), Ok(ring));
        }
        assert_eq!(HelloError::Kind(9).to_string(), "unknown segment kind 9");
    }
}
