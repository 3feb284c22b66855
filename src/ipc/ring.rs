//! One direction of the transport: a single-producer single-consumer byte
//! ring in shared memory, after rigtorp's SPSC queue. The indices are
//! monotonically growing byte counts; each side keeps its own index locally
//! (the copy in shared memory is only published, never read back) and a
//! cached copy of the other side's, re-read only when the ring looks full
//! (producer) or empty (consumer).
//!
//! Nothing read from shared memory is trusted: the other side's index is
//! checked against what is possible (it only grows, never past ours, never
//! more than a ring apart); a bad one is [`Corrupt`], and positions are
//! masked to the ring, so a hostile peer can garble the bytes but can't make
//! us touch memory outside the ring.
//!
//! # Why copying bytes a peer may be writing is sound
//!
//! The ring's bytes are shared with another process, which the Rust memory
//! model can't see; what the compiler may assume is limited to what we tell
//! it. The copies here go through raw pointers into memory that came from
//! `mmap` (no `&`/`&mut` to ring bytes is ever made, so no reference
//! promises that they don't change), and the destination is a plain `[u8]`,
//! for which every bit pattern is a valid value. Under the protocol the
//! range copied is owned by one side: the producer writes only between
//! `tail` and `head + size` and publishes with `Release`; the consumer reads
//! only between `head` and the `tail` it loaded with `Acquire`. A peer that
//! breaks the protocol and writes the same bytes while we copy them can
//! make us read torn or stale *bytes*, never an invalid value, and never
//! move an index: indices are loaded once per check, validated, and kept
//! locally. That is the same guarantee a `read(2)` from a socket gives, and
//! it is why everything taken out of a ring is parsed as untrusted input.

use std::sync::atomic::{AtomicU64, Ordering};

/// The other side's index in shared memory was impossible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corrupt;

/// One direction's ring: where its bytes are and its two shared indices.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingRef<'a> {
    /// The ring's first byte; `size` bytes follow, inside a live mapping.
    pub(crate) data: *mut u8,
    /// A power of two.
    pub(crate) size: u64,
    pub(crate) tail: &'a AtomicU64,
    pub(crate) head: &'a AtomicU64,
}

/// The producer's local state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProducerState {
    pub(crate) tail: u64,
    pub(crate) head_cache: u64,
    /// A jump of the producer's over positions that hold no bytes
    /// (`from..to`), which a consumer at `from` skips: a consumer index of
    /// `from` counts as `to` for the room (a layer that jumps records it
    /// in its own shared state, and its consumer follows that record).
    pub(crate) skip: Option<(u64, u64)>,
}

/// The consumer's local state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConsumerState {
    pub(crate) head: u64,
    pub(crate) tail_cache: u64,
}

impl RingRef<'_> {
    fn mask(&self) -> u64 {
        self.size - 1
    }

    /// Free space, re-reading the consumer's index when the cached view
    /// shows less than `want`.
    pub(crate) fn free(&self, p: &mut ProducerState, want: usize) -> Result<u64, Corrupt> {
        let free = self.size - (p.tail - p.head_cache);
        if free >= want as u64 && free > 0 {
            return Ok(free);
        }
        let mut head = self.head.load(Ordering::Acquire);
        match p.skip {
            Some((from, to)) if head == from && from < to && to <= p.tail => head = to,
            _ => {}
        }
        // It only grows, and never passes what we produced.
        if head < p.head_cache || head > p.tail || p.tail - head > self.size {
            return Err(Corrupt);
        }
        p.head_cache = head;
        Ok(self.size - (p.tail - head))
    }

    /// Bytes to read, re-reading the producer's index when the cached view
    /// shows none.
    pub(crate) fn available(&self, c: &mut ConsumerState) -> Result<u64, Corrupt> {
        let avail = c.tail_cache - c.head;
        if avail > 0 {
            return Ok(avail);
        }
        let tail = self.tail.load(Ordering::Acquire);
        // Here `tail_cache == head`: the index may not go back past it, nor
        // run more than a ring ahead.
        if tail < c.head || tail - c.head > self.size {
            return Err(Corrupt);
        }
        c.tail_cache = tail;
        Ok(tail - c.head)
    }

    /// Copies as much of `buf` as fits into the ring and publishes it.
    /// `streaming` copies with non-temporal stores (x86-64; elsewhere a
    /// plain copy): for a reader on another CPU, which then reads the bytes
    /// from memory instead of pulling each line out of this core's cache.
    pub(crate) fn write(
        &self,
        p: &mut ProducerState,
        buf: &[u8],
        streaming: bool,
    ) -> Result<usize, Corrupt> {
        let how = if streaming {
            Copy::Streaming
        } else {
            Copy::Plain
        };
        self.write_with(p, buf, how)
    }

    /// [`RingRef::write`] with the copy `how`.
    pub(crate) fn write_with(
        &self,
        p: &mut ProducerState,
        buf: &[u8],
        how: Copy,
    ) -> Result<usize, Corrupt> {
        let free = self.free(p, buf.len())?;
        let n = (buf.len() as u64).min(free) as usize;
        if n == 0 {
            return Ok(0);
        }
        let at = (p.tail & self.mask()) as usize;
        let first = n.min(self.size as usize - at);
        // SAFETY: `at < size` and `first <= size - at`, `n - first <= at`:
        // both copies stay inside the ring, which lies in a live mapping;
        // `buf` is local memory and can't overlap it.
        unsafe {
            how.copy(buf.as_ptr(), self.data.add(at), first);
            how.copy(buf.as_ptr().add(first), self.data, n - first);
        }
        p.tail += n as u64;
        self.tail.store(p.tail, Ordering::Release);
        Ok(n)
    }

    /// Copies up to `buf.len()` available bytes out of the ring and frees
    /// their space.
    pub(crate) fn read(&self, c: &mut ConsumerState, buf: &mut [u8]) -> Result<usize, Corrupt> {
        self.read_with(c, buf, Copy::Plain)
    }

    /// [`RingRef::read`] with the copy `how` ([`Copy::Streaming`] copies as
    /// [`Copy::Plain`] does: streaming stores would only push the reader's
    /// own buffer out of its caches).
    pub(crate) fn read_with(
        &self,
        c: &mut ConsumerState,
        buf: &mut [u8],
        how: Copy,
    ) -> Result<usize, Corrupt> {
        let avail = self.available(c)?;
        self.consume(c, buf, how, avail)
    }

    /// [`RingRef::read_with`] within the consumer's view only
    /// (`c.head..c.tail_cache`): the producer's index is not looked at
    /// again, for a layer whose producer may jump ([`ProducerState::skip`]).
    /// There the bytes past the view are known to be bytes only once the
    /// layer has looked at its jump record, and a producer that found the
    /// ring empty may have jumped since the view was taken.
    ///
    /// # Errors
    ///
    /// [`Corrupt`] for a view more than a ring long.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn read_viewed(
        &self,
        c: &mut ConsumerState,
        buf: &mut [u8],
        how: Copy,
    ) -> Result<usize, Corrupt> {
        let avail = self.viewed(c)?;
        self.consume(c, buf, how, avail)
    }

    /// Copies up to `avail` bytes out and frees their space: the vector
    /// loop where asked, else `memcpy` (streaming stores would only push
    /// the reader's own buffer out of its caches).
    fn consume(
        &self,
        c: &mut ConsumerState,
        buf: &mut [u8],
        how: Copy,
        avail: u64,
    ) -> Result<usize, Corrupt> {
        let how = if how == Copy::Vector {
            how
        } else {
            Copy::Plain
        };
        let n = self.copy_out(c, buf, how, avail)?;
        if n > 0 {
            self.head.store(c.head, Ordering::Release);
        }
        Ok(n)
    }

    /// Copies up to `buf.len()` bytes of the consumer's view out of the
    /// ring and moves the local index past them, leaving them in the ring
    /// (the shared index is not published): `MSG_PEEK`, within the view
    /// as [`RingRef::read_viewed`] reads.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn peek_viewed(
        &self,
        c: &mut ConsumerState,
        buf: &mut [u8],
    ) -> Result<usize, Corrupt> {
        self.copy_out(c, buf, Copy::Plain, self.viewed(c)?)
    }

    /// The bytes of the consumer's view, which its layer checked.
    fn viewed(&self, c: &ConsumerState) -> Result<u64, Corrupt> {
        match c.tail_cache.checked_sub(c.head) {
            Some(n) if n <= self.size => Ok(n),
            _ => Err(Corrupt),
        }
    }

    fn copy_out(
        &self,
        c: &mut ConsumerState,
        buf: &mut [u8],
        how: Copy,
        avail: u64,
    ) -> Result<usize, Corrupt> {
        let n = (buf.len() as u64).min(avail) as usize;
        if n == 0 {
            return Ok(0);
        }
        let at = (c.head & self.mask()) as usize;
        let first = n.min(self.size as usize - at);
        // SAFETY: as in `write`: both copies stay inside the ring; `buf` is
        // local memory. The peer may (against the protocol) be writing these
        // bytes right now: the copy goes through raw pointers into a `[u8]`,
        // so at worst it reads torn bytes, each still a valid `u8` (see the
        // module docs); nothing is inferred from them before they are parsed.
        unsafe {
            how.copy(self.data.add(at), buf.as_mut_ptr(), first);
            how.copy(self.data, buf.as_mut_ptr().add(first), n - first);
        }
        c.head += n as u64;
        Ok(n)
    }
}

/// How bytes are copied into or out of a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Copy {
    /// `memcpy` (the C library's choice for the size: on x86-64 with ERMS,
    /// `rep movsb` for large copies).
    Plain,
    /// Non-temporal stores (x86-64; elsewhere as `Plain`), for a reader on
    /// another CPU.
    Streaming,
    /// A loop of 16-byte loads and stores (x86-64; elsewhere as `Plain`):
    /// on some CPUs `rep movsb` into lines another core holds is the
    /// slower copy (which is faster is measured, see `copy.rs`).
    Vector,
}

impl Copy {
    /// Copies `len` bytes from `src` to `dst`.
    ///
    /// # Safety
    ///
    /// `src` must be valid for reads and `dst` for writes of `len` bytes,
    /// and the two must not overlap.
    unsafe fn copy(self, src: *const u8, dst: *mut u8, len: usize) {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            match self {
                Copy::Plain => std::ptr::copy_nonoverlapping(src, dst, len),
                Copy::Streaming => copy_streaming(src, dst, len),
                Copy::Vector => copy_vector(src, dst, len),
            }
        }
    }
}

/// Copies `len` bytes from `src` to `dst` with 16-byte loads and stores
/// (64 bytes a round), the rest with `memcpy`.
///
/// # Safety
///
/// As for [`Copy::copy`].
#[cfg(target_arch = "x86_64")]
unsafe fn copy_vector(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller's contract.
    let i = unsafe { copy_rounds::<false>(src, dst, 0, len) };
    // SAFETY: the rest, `len - i` bytes, within both ranges.
    unsafe { std::ptr::copy_nonoverlapping(src.add(i), dst.add(i), len - i) };
}

/// Copies `src[from..]` to `dst[from..]` in rounds of four 16-byte loads
/// and stores (non-temporal ones if `STREAM`) while a whole round fits in
/// `len`; where it stopped.
///
/// # Safety
///
/// As for [`Copy::copy`]; with `STREAM`, `dst + from` is 16-byte aligned.
#[cfg(target_arch = "x86_64")]
unsafe fn copy_rounds<const STREAM: bool>(
    src: *const u8,
    dst: *mut u8,
    from: usize,
    len: usize,
) -> usize {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128, _mm_stream_si128};
    let mut i = from;
    while i + 64 <= len {
        // SAFETY: `i + 64 <= len`: the four 16-byte loads and stores stay
        // in the ranges; for streaming stores `dst + i` is 16-byte aligned
        // (`dst + from` is, and `i - from` is a multiple of 64), as
        // `_mm_stream_si128` needs; SSE2 is part of x86-64.
        unsafe {
            for k in 0..4 {
                let v = _mm_loadu_si128(src.add(i + 16 * k).cast::<__m128i>());
                let to = dst.add(i + 16 * k).cast::<__m128i>();
                if STREAM {
                    _mm_stream_si128(to, v);
                } else {
                    _mm_storeu_si128(to, v);
                }
            }
        }
        i += 64;
    }
    i
}

/// # Safety
///
/// As for [`Copy::copy`].
#[cfg(not(target_arch = "x86_64"))]
unsafe fn copy_vector(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
}

/// Copies `len` bytes from `src` to `dst` with non-temporal stores where
/// the platform has them, and orders them before any later store (the
/// index published with `Release` after it), as plain stores are.
///
/// # Safety
///
/// `src` must be valid for reads and `dst` for writes of `len` bytes, and
/// the two must not overlap.
#[cfg(all(target_arch = "x86_64", not(miri)))]
unsafe fn copy_streaming(src: *const u8, dst: *mut u8, len: usize) {
    use std::arch::x86_64::_mm_sfence;
    // Plain stores up to the first 16-byte boundary of `dst`.
    let head = ((16 - (dst as usize & 15)) & 15).min(len);
    // SAFETY: `head <= len`, within both ranges (the caller's contract).
    unsafe { std::ptr::copy_nonoverlapping(src, dst, head) };
    // SAFETY: the caller's contract; `dst + head` is 16-byte aligned (or
    // `head == len` and no round runs).
    let i = unsafe { copy_rounds::<true>(src, dst, head, len) };
    // SAFETY: the rest, `len - i` bytes, within both ranges.
    unsafe { std::ptr::copy_nonoverlapping(src.add(i), dst.add(i), len - i) };
    // Non-temporal stores are weakly ordered: fence them before the index
    // that publishes them.
    // SAFETY: SSE is part of x86-64.
    unsafe { _mm_sfence() };
}

/// A plain copy where there are no streaming stores, and under Miri (which
/// can't run `movntdq`: inline assembly in `std::arch`).
///
/// # Safety
///
/// As on x86-64: `src` readable and `dst` writable for `len` bytes, apart.
#[cfg(any(not(target_arch = "x86_64"), miri))]
unsafe fn copy_streaming(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
}

#[cfg(test)]
mod tests {
    //! The ring's logic over plain heap memory (no mapping, no system call),
    //! so that Miri can check every copy and index for undefined behaviour.

    use super::*;
    use std::collections::VecDeque;

    struct Heap {
        data: Vec<u8>,
        tail: AtomicU64,
        head: AtomicU64,
    }

    impl Heap {
        fn new(size: usize) -> Self {
            Self {
                data: vec![0; size],
                tail: AtomicU64::new(0),
                head: AtomicU64::new(0),
            }
        }

        fn ring(&mut self) -> RingRef<'_> {
            RingRef {
                data: self.data.as_mut_ptr(),
                size: self.data.len() as u64,
                tail: &self.tail,
                head: &self.head,
            }
        }
    }

    #[test]
    fn bytes_come_out_in_order_through_wrap_around_with_both_copies() {
        let mut heap = Heap::new(64);
        let ring = heap.ring();
        let (mut p, mut c) = (ProducerState::default(), ConsumerState::default());
        let mut model = VecDeque::new();
        let mut next = 0u8;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for round in 0..400 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 90) as usize;
            if x & (1 << 40) != 0 {
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        next = next.wrapping_add(7);
                        next
                    })
                    .collect();
                let how = [Copy::Plain, Copy::Streaming, Copy::Vector][round % 3];
                let n = ring.write_with(&mut p, &data, how).unwrap();
                assert_eq!(n, len.min(64 - model.len()), "wrote what fit");
                model.extend(&data[..n]);
            } else {
                let mut buf = vec![0u8; len];
                let how = [Copy::Plain, Copy::Vector][round % 2];
                let n = ring.read_with(&mut c, &mut buf, how).unwrap();
                assert!(n <= model.len());
                let want: Vec<u8> = model.drain(..n).collect();
                assert_eq!(&buf[..n], &want[..]);
            }
        }
    }

    #[test]
    fn every_copy_keeps_every_byte_across_the_wrap() {
        // Copies longer than the vector loop's 64-byte rounds, with tails of
        // every length, at every offset of a ring they wrap around.
        let mut heap = Heap::new(4096);
        let ring = heap.ring();
        let (mut p, mut c) = (ProducerState::default(), ConsumerState::default());
        let mut next = 0u8;
        for round in 0..150usize {
            let len = 1 + (round * 37) % 1500;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    next = next.wrapping_add(13);
                    next
                })
                .collect();
            let how = [Copy::Plain, Copy::Streaming, Copy::Vector][round % 3];
            assert_eq!(ring.write_with(&mut p, &data, how), Ok(len));
            let mut back = vec![0u8; len];
            let how = [Copy::Vector, Copy::Plain][round % 2];
            assert_eq!(ring.read_with(&mut c, &mut back, how), Ok(len));
            assert_eq!(back, data, "round {round}: {len} bytes");
        }
    }

    #[test]
    fn free_space_and_availability_are_exact() {
        let mut heap = Heap::new(16);
        let ring = heap.ring();
        let (mut p, mut c) = (ProducerState::default(), ConsumerState::default());
        assert_eq!(ring.free(&mut p, 1), Ok(16));
        assert_eq!(ring.available(&mut c), Ok(0));
        assert_eq!(ring.write(&mut p, &[1; 10], false), Ok(10));
        assert_eq!(ring.free(&mut p, 1), Ok(6));
        assert_eq!(ring.available(&mut c), Ok(10));
        assert_eq!(ring.write(&mut p, &[2; 10], false), Ok(6), "only what fits");
        assert_eq!(ring.write(&mut p, &[3], false), Ok(0), "full");
        let mut b = [0u8; 4];
        assert_eq!(ring.read(&mut c, &mut b), Ok(4));
        // The producer re-reads the consumer's index only when its cached
        // view is short of what it wants.
        assert_eq!(ring.free(&mut p, 1), Ok(4));
        assert_eq!(ring.read(&mut c, &mut [0u8; 0]), Ok(0));
        // The consumer re-reads the producer's index only when its cached
        // view is empty: first the rest of what it saw, then the rest.
        let mut rest = [0u8; 32];
        assert_eq!(ring.read(&mut c, &mut rest), Ok(6));
        assert_eq!(&rest[..6], &[1; 6]);
        assert_eq!(ring.read(&mut c, &mut rest), Ok(6));
        assert_eq!(&rest[..6], &[2; 6]);
        assert_eq!(ring.read(&mut c, &mut rest), Ok(0), "empty");
        // Full again; asking for no room at all still looks again when the
        // cached view shows none.
        assert_eq!(ring.write(&mut p, &[4; 16], false), Ok(16));
        assert_eq!(ring.read(&mut c, &mut [0u8; 2]), Ok(2));
        assert_eq!(ring.free(&mut p, 0), Ok(2));
    }

    #[test]
    fn a_viewed_read_keeps_to_the_view_whatever_the_producer_published() {
        let mut heap = Heap::new(16);
        let ring = heap.ring();
        let mut p = ProducerState::default();
        assert_eq!(ring.write(&mut p, &[1, 2, 3, 4, 5, 6], false), Ok(6));
        // The view says nothing yet: nothing, though six bytes are there.
        let mut c = ConsumerState::default();
        let mut b = [0u8; 8];
        assert_eq!(ring.read_viewed(&mut c, &mut b, Copy::Plain), Ok(0));
        assert_eq!(ring.peek_viewed(&mut c, &mut b), Ok(0));
        // A view of four: four, peeked (the shared index stays) and read
        // (it moves), then nothing again.
        c.tail_cache = 4;
        assert_eq!(ring.peek_viewed(&mut c, &mut b), Ok(4));
        assert_eq!(
            ring.head.load(Ordering::Relaxed),
            0,
            "a peek publishes nothing"
        );
        c.head = 0;
        assert_eq!(ring.read_viewed(&mut c, &mut b[..3], Copy::Vector), Ok(3));
        assert_eq!(&b[..3], &[1, 2, 3]);
        assert_eq!(ring.head.load(Ordering::Relaxed), 3);
        assert_eq!(ring.read_viewed(&mut c, &mut b, Copy::Streaming), Ok(1));
        assert_eq!(b[0], 4);
        assert_eq!(ring.read_viewed(&mut c, &mut b, Copy::Plain), Ok(0));
        assert_eq!(ring.head.load(Ordering::Relaxed), 4);
        // A view a whole ring long is whole; one longer, or backwards, is
        // corrupt.
        c.tail_cache = c.head + 16;
        assert_eq!(ring.peek_viewed(&mut c, &mut [0u8; 32]), Ok(16));
        c.head = 4;
        c.tail_cache = c.head + 17;
        assert_eq!(ring.read_viewed(&mut c, &mut b, Copy::Plain), Err(Corrupt));
        assert_eq!(ring.peek_viewed(&mut c, &mut b), Err(Corrupt));
        c.tail_cache = c.head - 1;
        assert_eq!(ring.read_viewed(&mut c, &mut b, Copy::Plain), Err(Corrupt));
    }

    #[test]
    fn impossible_indices_are_corrupt() {
        let mut heap = Heap::new(16);
        {
            let ring = heap.ring();
            let mut c = ConsumerState::default();
            // A tail more than a ring ahead of what we consumed.
            ring.tail.store(17, Ordering::Relaxed);
            assert_eq!(ring.available(&mut c), Err(Corrupt));
            ring.tail.store(16, Ordering::Relaxed);
            assert_eq!(ring.available(&mut c), Ok(16));
            // A tail that goes back.
            c.head = 16;
            c.tail_cache = 16;
            ring.tail.store(15, Ordering::Relaxed);
            assert_eq!(ring.available(&mut c), Err(Corrupt));
        }
        let mut heap = Heap::new(16);
        let ring = heap.ring();
        let mut p = ProducerState {
            tail: 16,
            head_cache: 0,
            skip: None,
        };
        // A head past what we produced, one that goes back, one too far
        // behind: each is corrupt.
        ring.head.store(17, Ordering::Relaxed);
        assert_eq!(ring.free(&mut p, 1), Err(Corrupt));
        p.head_cache = 8;
        ring.head.store(7, Ordering::Relaxed);
        assert_eq!(ring.free(&mut p, 8), Ok(8), "the cached view suffices");
        assert_eq!(ring.free(&mut p, 9), Err(Corrupt));
        p = ProducerState {
            tail: 40,
            head_cache: 24,
            skip: None,
        };
        ring.head.store(23, Ordering::Relaxed);
        assert_eq!(
            ring.free(&mut p, 1),
            Err(Corrupt),
            "more than a ring behind"
        );
        ring.head.store(30, Ordering::Relaxed);
        assert_eq!(ring.free(&mut p, 1), Ok(6));
        assert_eq!(ring.write(&mut p, &[9; 10], false), Ok(6));
    }

    #[test]
    fn a_consumer_at_a_skip_counts_as_past_it() {
        let mut heap = Heap::new(16);
        let ring = heap.ring();
        // Consumed up to 12; the producer jumped from 12 to 16 and wrote
        // 10 more.
        ring.head.store(12, Ordering::Relaxed);
        let mut p = ProducerState {
            tail: 26,
            head_cache: 12,
            skip: Some((12, 16)),
        };
        assert_eq!(ring.free(&mut p, 3), Ok(6), "past the skip");
        assert_eq!(p.head_cache, 16);
        // Without the record the room is what the consumer's index leaves.
        p = ProducerState {
            tail: 26,
            head_cache: 12,
            skip: None,
        };
        assert_eq!(ring.free(&mut p, 3), Ok(2));
        // A consumer past `from` is taken as it is; a record that ends
        // past what was produced, or goes backwards, is not followed.
        for (head, skip, want) in [
            (17, (12, 16), Ok(7)),
            (12, (12, 27), Ok(2)),
            (12, (12, 11), Ok(2)),
        ] {
            ring.head.store(head, Ordering::Relaxed);
            let mut p = ProducerState {
                tail: 26,
                head_cache: 12,
                skip: Some(skip),
            };
            assert_eq!(ring.free(&mut p, 9), want, "head {head}, skip {skip:?}");
        }
    }
}
