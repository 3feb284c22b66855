//! Framing: length-prefixed frames (a big-endian `u32` length, then that many
//! bytes) and fixed-size records, decoded incrementally from reads of any
//! size.
//!
//! `SO_RCVLOWAT` does not frame: epoll waits for the low-water mark, but a
//! non-blocking `recv` can still return a short read (measured on Linux
//! 6.18), so these decoders always reassemble. A frame that is too large,
//! or input that ends inside a frame, is an error for that stream only.

use std::fmt;

use super::buffer::Buffer;

/// The default largest frame payload: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// What is wrong with a stream of frames.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A length prefix announced more than the maximum.
    TooLarge {
        /// The announced payload length.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The stream ended inside a frame or record.
    Truncated {
        /// Bytes of it that arrived.
        have: usize,
        /// Bytes it needed.
        need: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes is over the {max}-byte limit")
            }
            Self::Truncated { have, need } => {
                write!(f, "stream ended inside a frame: {have} of {need} bytes")
            }
        }
    }
}

impl std::error::Error for FrameError {}

impl From<FrameError> for std::io::Error {
    fn from(e: FrameError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// Parses one length-prefixed frame at the start of `input`: `Ok(Some((
/// payload, consumed)))` when it is complete, `Ok(None)` when more bytes are
/// needed, an error when its length is over `max`. For use straight on a
/// connection's input buffer, without copying.
pub fn parse_frame(input: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(head) = input.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max,
        });
    }
    Ok(input
        .get(HEADER_LEN..HEADER_LEN + len)
        .map(|payload| (payload, HEADER_LEN + len)))
}

/// Appends `payload` as one frame to `out`.
///
/// # Errors
///
/// [`FrameError::TooLarge`] when it is over `max` (or over `u32::MAX`).
pub fn encode_frame(payload: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l as usize <= max)
        .ok_or(FrameError::TooLarge {
            len: payload.len() as u64,
            max,
        })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Parses one fixed-size record at the start of `input`.
pub fn parse_record(input: &[u8], size: usize) -> Option<&[u8]> {
    input.get(..size)
}

/// How a [`Decoder`] cuts its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Framing {
    /// A big-endian `u32` length, then the payload, at most this long.
    LengthPrefixed {
        /// The largest payload accepted.
        max: usize,
    },
    /// Records of exactly this many bytes (at least 1).
    Fixed(usize),
}

impl Framing {
    /// Length-prefixed with [`DEFAULT_MAX_FRAME`].
    pub fn length_prefixed() -> Self {
        Self::LengthPrefixed {
            max: DEFAULT_MAX_FRAME,
        }
    }
}

/// An incremental decoder that owns its buffer: [`Decoder::feed`] bytes as
/// they arrive, in pieces of any size, then take frames with
/// [`Decoder::next_frame`]. It never holds more than one frame's worth of an
/// incomplete frame (at most the maximum plus the header), and after an
/// error it stays failed.
#[derive(Clone, Debug)]
pub struct Decoder {
    framing: Framing,
    buf: Buffer,
    /// The length of the frame last returned, still lent out: consumed at
    /// the next call.
    taken: usize,
    failed: Option<FrameError>,
}

impl Decoder {
    /// A decoder for `framing`.
    pub fn new(framing: Framing) -> Self {
        Self {
            framing,
            buf: Buffer::new(),
            taken: 0,
            failed: None,
        }
    }

    /// Adds received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.buf.consume(std::mem::take(&mut self.taken));
        self.buf.extend(bytes);
    }

    /// The next complete frame's payload (or record), `Ok(None)` when more
    /// bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.buf.consume(std::mem::take(&mut self.taken));
        let input = self.buf.data();
        let (range, consumed) = match self.framing {
            Framing::LengthPrefixed { max } => match parse_frame(input, max) {
                Ok(Some((p, n))) => ((n - p.len(), n), n),
                Ok(None) => return Ok(None),
                Err(e) => {
                    self.failed = Some(e.clone());
                    self.buf.release();
                    return Err(e);
                }
            },
            Framing::Fixed(size) => match parse_record(input, size.max(1)) {
                Some(r) => ((0, r.len()), r.len()),
                None => return Ok(None),
            },
        };
        self.taken = consumed;
        Ok(Some(&self.buf.data()[range.0..range.1]))
    }

    /// Bytes held that don't yet form a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.taken
    }

    /// Checks that the stream ended on a frame boundary.
    ///
    /// # Errors
    ///
    /// [`FrameError::Truncated`] when bytes of an incomplete frame are left.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let have = self.buffered();
        if have == 0 {
            return Ok(());
        }
        let need = match self.framing {
            Framing::LengthPrefixed { .. } if have < HEADER_LEN => HEADER_LEN,
            Framing::LengthPrefixed { .. } => {
                let h = &self.buf.data()[self.taken..self.taken + HEADER_LEN];
                HEADER_LEN + u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize
            }
            Framing::Fixed(size) => size,
        };
        Err(FrameError::Truncated { have, need })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for p in payloads {
            encode_frame(p, DEFAULT_MAX_FRAME, &mut v).unwrap();
        }
        v
    }

    fn decode_all(d: &mut Decoder) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = d.next_frame().unwrap() {
            out.push(f.to_vec());
        }
        out
    }

    #[test]
    fn one_byte_at_a_time_gives_the_frames_sent() {
        let sent: Vec<&[u8]> = vec![b"", b"a", b"hello", &[7u8; 300]];
        let wire = frames(&sent);
        let mut d = Decoder::new(Framing::length_prefixed());
        let mut got = Vec::new();
        for b in &wire {
            d.feed(std::slice::from_ref(b));
            got.extend(decode_all(&mut d));
        }
        assert_eq!(got, sent.iter().map(|s| s.to_vec()).collect::<Vec<_>>());
        d.finish().unwrap();
    }

    #[test]
    fn random_splits_give_the_frames_sent() {
        let sent: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; i as usize * 7]).collect();
        let refs: Vec<&[u8]> = sent.iter().map(|v| v.as_slice()).collect();
        let wire = frames(&refs);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        // Fewer rounds under Miri, which runs each one thousands of times
        // slower.
        for _ in 0..if cfg!(miri) { 5 } else { 200 } {
            let mut d = Decoder::new(Framing::length_prefixed());
            let mut got = Vec::new();
            let mut at = 0;
            while at < wire.len() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let n = (seed % 97) as usize + 1;
                let end = (at + n).min(wire.len());
                d.feed(&wire[at..end]);
                got.extend(decode_all(&mut d));
                at = end;
            }
            assert_eq!(got, sent);
        }
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut d = Decoder::new(Framing::LengthPrefixed { max: 10 });
        d.feed(&[0, 0, 0, 11, 1]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
        assert!(d.next_frame().is_err(), "stays failed");
        let mut d = Decoder::new(Framing::length_prefixed());
        d.feed(&[0, 0, 0, 5, 1, 2]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated { have: 6, need: 9 }));
        let mut v = Vec::new();
        assert!(encode_frame(&[0; 11], 10, &mut v).is_err());
        assert!(v.is_empty());
    }

    #[test]
    fn fixed_records_reassemble_short_reads() {
        let mut d = Decoder::new(Framing::Fixed(4));
        d.feed(b"abcde");
        assert_eq!(d.next_frame().unwrap(), Some(&b"abcd"[..]));
        assert_eq!(d.next_frame().unwrap(), None);
        d.feed(b"fgh");
        assert_eq!(d.next_frame().unwrap(), Some(&b"efgh"[..]));
        d.finish().unwrap();
        d.feed(b"x");
        assert_eq!(d.finish(), Err(FrameError::Truncated { have: 1, need: 4 }));
    }
}
