//! Byte buffers read from the front and filled at the back: [`Buffer`],
//! under the frame decoder and the server's connection input, and
//! [`WriteQueue`], the bytes waiting for a socket that takes them slowly.
//!
//! Consumed bytes are skipped, not shifted out on every read. They are
//! given back (the rest moved to the front) once they are at least half of
//! what is held, so each byte moves at most about once, or when new bytes
//! would otherwise make the buffer grow, so it never grows while it has
//! room.

use std::io;

use crate::sys::errno;
use crate::sys::socket::Socket;

/// A byte buffer with a consumed prefix; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct Buffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buffer {
    /// An empty buffer (no allocation until bytes come).
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held and not consumed.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The bytes held, oldest first.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops the first `n` bytes held (all of them if `n` is larger).
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Forgets every byte held, keeping the allocation.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Forgets every byte held and gives the allocation back (after one
    /// huge message, say).
    pub fn release(&mut self) {
        *self = Self::default();
    }

    /// Bytes allocated, held or not.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Moves the held bytes to the front when [`should_compact`] says so.
    fn compact_for(&mut self, need: usize) {
        if should_compact(self.start, self.end, self.buf.len(), need) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Appends `data` (one copy: room behind is overwritten, the rest
    /// appended, never zero-filled first).
    pub fn extend(&mut self, data: &[u8]) {
        self.compact_for(data.len());
        let behind = (self.buf.len() - self.end).min(data.len());
        self.buf[self.end..self.end + behind].copy_from_slice(&data[..behind]);
        self.buf.extend_from_slice(&data[behind..]);
        self.end += data.len();
    }

    /// Room for at least `min` more bytes at the back, to receive into;
    /// then [`Buffer::commit`] what was written. The room may be larger.
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        self.compact_for(min);
        if self.buf.len() - self.end < min {
            self.buf.resize(self.end + min, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Takes `n` bytes written into [`Buffer::spare`]'s room as held.
    pub fn commit(&mut self, n: usize) {
        self.end += n.min(self.buf.len() - self.end);
    }
}

/// Whether a buffer whose bytes `start..end` are held, in `cap` bytes,
/// moves them to the front before taking `need` more: when something was
/// consumed and it is at least half of what came in (so each byte moves at
/// most about once), or when the new bytes would not fit behind (so the
/// buffer never grows while consumed room would do).
fn should_compact(start: usize, end: usize, cap: usize, need: usize) -> bool {
    start > 0 && (start >= end / 2 || cap - end < need)
}

/// Bytes waiting to be written to a socket: written at once as far as the
/// socket takes them ([`WriteQueue::write_to`]), the rest kept in order for
/// when it is writable again ([`WriteQueue::flush`]). It holds whatever it
/// is given; the caller bounds it by stopping its producer once
/// [`WriteQueue::len`] passes its limit (as the server's connections do with
/// `max_output`).
#[derive(Clone, Debug, Default)]
pub struct WriteQueue {
    buf: Buffer,
}

impl WriteQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes queued and not yet sent.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Queues `data` behind what is queued, without sending.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend(data);
    }

    /// Forgets what is queued (the peer is gone).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Sends as much of the queue as `sock` takes now; `Ok(true)` when all
    /// of it went. `EINTR` is retried.
    ///
    /// # Errors
    ///
    /// The socket's error (`EPIPE`, `ECONNRESET`, ...); what was not sent
    /// stays queued.
    pub fn flush(&mut self, sock: &Socket) -> io::Result<bool> {
        while !self.buf.is_empty() {
            match sock.send(self.buf.data()) {
                Ok(n) => self.buf.consume(n),
                Err(e) if e.is_would_block() => return Ok(false),
                Err(e) if e.raw_os_error() == errno::EINTR => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Sends `data` behind what is queued: straight to the socket while
    /// nothing is queued, as far as it takes it; the rest (or all of it, if
    /// bytes wait already) is queued.
    ///
    /// # Errors
    ///
    /// The socket's error; nothing of `data` is queued then.
    pub fn write_to(&mut self, sock: &Socket, data: &[u8]) -> io::Result<()> {
        let mut data = data;
        if self.buf.is_empty() {
            while !data.is_empty() {
                match sock.send(data) {
                    Ok(n) => data = &data[n..],
                    Err(e) if e.is_would_block() => break,
                    Err(e) if e.raw_os_error() == errno::EINTR => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if !data.is_empty() {
            self.buf.extend(data);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_comes_at_half_or_when_the_bytes_would_not_fit() {
        // (start, end, cap, need) -> compact?
        for (case, want) in [
            ((0, 10, 10, 5), false), // nothing consumed: grow instead
            ((0, 0, 8, 1), false),
            ((5, 10, 20, 1), true),  // half consumed
            ((4, 10, 20, 1), false), // less than half, and room behind
            ((4, 10, 10, 1), true),  // no room behind
            ((4, 10, 11, 1), false), // exactly room for it
            ((4, 10, 11, 2), true),
            ((3, 3, 3, 0), true), // all consumed
        ] {
            let (start, end, cap, need) = case;
            assert_eq!(should_compact(start, end, cap, need), want, "{case:?}");
        }
    }

    #[test]
    fn consumed_bytes_are_skipped_then_given_back_at_half() {
        let mut b = Buffer::new();
        b.extend(b"abcdefgh");
        assert_eq!((b.data(), b.len()), (&b"abcdefgh"[..], 8));
        b.consume(3);
        assert_eq!(b.data(), b"defgh");
        assert_eq!(b.len(), 5);
        assert!(!b.is_empty());
        assert_eq!(b.capacity(), 8);
        // The byte doesn't fit behind: the consumed room is given back
        // rather than the buffer grown.
        b.extend(b"i");
        assert_eq!(b.data(), b"defghi");
        assert_eq!(b.capacity(), 8);
        // 2 of 6 consumed, and room behind: nothing moves or grows.
        b.consume(2);
        b.extend(b"j");
        assert_eq!(b.data(), b"fghij");
        assert_eq!(b.capacity(), 8);
        // 4 of 7 consumed: at least half, so they are given back first and
        // the buffer takes 4 more without growing.
        b.consume(2);
        b.extend(b"klmn");
        assert_eq!(b.data(), b"hijklmn");
        assert_eq!(b.capacity(), 8);
        b.consume(100);
        assert!(b.is_empty());
        assert_eq!(b.data(), b"");
    }

    #[test]
    fn it_never_grows_while_consumed_room_would_do() {
        let mut b = Buffer::new();
        b.extend(&[1; 100]);
        b.consume(10);
        // 90 held, 10 consumed (less than half): 10 more fit only after
        // the move.
        b.extend(&[2; 10]);
        assert_eq!(b.capacity(), 100);
        assert_eq!(b.len(), 100);
        assert_eq!(&b.data()[88..92], &[1, 1, 2, 2]);
        let room = b.spare(5);
        assert!(room.len() >= 5);
        room[..2].copy_from_slice(&[3, 3]);
        b.commit(2);
        assert_eq!(&b.data()[98..], &[2, 2, 3, 3]);
        // A commit past the room is cut to it.
        let room = b.spare(1).len();
        b.commit(room + 10);
        assert_eq!(b.len(), 102 + room);
        b.release();
        assert_eq!((b.len(), b.capacity()), (0, 0));
        b.extend(b"xyz");
        b.consume(1);
        b.clear();
        assert!(b.is_empty());
        assert_eq!((b.len(), b.data()), (0, &b""[..]));
        assert_eq!(b.capacity(), 3, "clear keeps the allocation");
    }

    #[test]
    #[cfg_attr(miri, ignore = "system calls")]
    fn a_write_queue_sends_what_the_socket_takes_and_keeps_the_rest_in_order() {
        use crate::sys::socket::{socketpair, Domain, Type};
        let (a, b) = socketpair(Domain::UNIX, Type::STREAM).unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let mut q = WriteQueue::new();
        assert!(q.is_empty());
        // Straight through while nothing waits.
        q.write_to(&a, b"one ").unwrap();
        assert_eq!(q.len(), 0);
        // Fill the socket until it takes no more, then some.
        let big = vec![7u8; 1 << 16];
        // Bounded: a socket buffer holds a few MiB at most.
        for _ in 0..1024 {
            if !q.is_empty() {
                break;
            }
            q.write_to(&a, &big).unwrap();
        }
        assert!(!q.is_empty(), "the socket filled up");
        let queued = q.len();
        q.write_to(&a, b"two").unwrap();
        assert_eq!(q.len(), queued + 3, "behind what waits, nothing sent");
        q.push(b"!");
        assert_eq!(q.len(), queued + 4);
        assert!(!q.flush(&a).unwrap(), "the peer has not read yet");
        // Drain the peer while flushing: every byte arrives once, in order.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "the queue never emptied"
            );
            let done = q.flush(&a).unwrap();
            loop {
                match b.recv(&mut buf) {
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.is_would_block() => break,
                    Err(e) => panic!("{e}"),
                }
            }
            if done && q.is_empty() {
                break;
            }
        }
        while let Ok(n) = b.recv(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"one "));
        assert!(got.ends_with(b"two!"), "the tail came last");
        assert_eq!(got.len() % (1 << 16), 8, "whole copies of the big writes");
        q.push(b"left");
        q.clear();
        assert!(q.is_empty());
        drop(b);
        let e = q.write_to(&a, b"gone").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
        assert!(q.is_empty(), "nothing of a failed write is queued");
        q.push(b"x");
        assert!(q.flush(&a).is_err());
        assert_eq!(q.len(), 1, "what was not sent stays queued");
    }
}
