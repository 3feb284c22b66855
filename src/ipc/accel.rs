//! Acceleration of a connected Unix-domain stream socket that a program
//! keeps using as a socket: the wire protocol and the data path of the
//! preloaded accelerator (`procwire-preload`), which moves the bytes of
//! chosen connections of unmodified programs onto shared memory.
//!
//! The program's fd stays the real connected socket. Its bytes move
//! through a sealed memfd holding one single-producer single-consumer ring
//! per direction (the layout below), and the socket carries only what makes
//! the kernel's view of it true:
//!
//! - **Readable** while the ring has bytes: a writer that finds the reader
//!   *armed* disarms it and sends one doorbell byte; a reader removes the
//!   last unread socket byte only after it armed itself and found the ring
//!   empty (Dekker order on both sides), so a ring with bytes always has a
//!   byte on the socket. A stale byte costs one spurious wake-up, after
//!   which the read finds nothing and says `EAGAIN`.
//! - **Not writable** while the ring is full: the writer sends filler bytes
//!   until the kernel refuses more (`EAGAIN`; a small `SO_SNDBUF`), marks
//!   itself blocked, and re-checks the ring; a reader that frees space and
//!   finds the writer blocked drains the socket (keeping one byte while the
//!   ring has bytes), which makes the writer's socket writable again.
//! - **Liveness and end-of-file** are the kernel's: a peer's close (or
//!   death) is end-of-file on the socket, read once the ring is empty; a
//!   write to a closed peer fails in the kernel with `EPIPE`/`SIGPIPE`.
//!
//! Blocking is the kernel's too: a reader with an empty ring waits in
//! `recv(MSG_PEEK)` of one byte, a writer with a full ring in the `send` of
//! a filler byte, both in the fd's own mode, so `O_NONBLOCK`, `SO_RCVTIMEO`,
//! `SO_SNDTIMEO`, `EINTR` and `SA_RESTART` behave exactly as on the socket.
//!
//! **Negotiation** sends nothing to a peer that is not accelerated. A
//! listener that takes part holds a marker ([`listener_marker`]); a client
//! that finds the marker binds its socket to an announcement name
//! ([`client_announcement`]) before connecting. The acceptor that sees an
//! announced peer makes the segment and sends the hello (16 bytes and the
//! memfd) on the fresh socket ([`Accel::offer`]). The client attaches at
//! its next call that finds the hello at the head of the stream
//! ([`try_attach`]), publishing how many bytes it wrote to the socket
//! before; the acceptor reads those from the socket first.
//!
//! Every end of a ring has a lock word (the holder's thread id), so
//! threads sharing an fd and processes sharing it after `fork` interleave
//! as on a socket. Nothing read from the segment is trusted: indices are
//! checked and positions masked (`ring.rs`), a lock held longer than
//! [`LOCK_PATIENCE`] by a thread that no longer exists is taken over, and
//! one held past it by a live one fails the call with `EIO`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use static_assertions::{const_assert, const_assert_eq};

use super::ring::{ConsumerState, ProducerState, RingRef};
use crate::sys::error::{Error, Result};
use crate::sys::interpose::{self, ffi};
use crate::sys::shm::{self, Access, Mapping, SharedMemory};

/// The hello's first eight bytes.
pub const HELLO_MAGIC: [u8; 8] = *b"PWACCEL1";
/// Wire and layout version.
pub const VERSION: u32 = 1;
/// The hello's length: magic, version, ring size (little-endian `u32`s).
pub const HELLO_LEN: usize = 16;
/// Default bytes per direction.
pub const DEFAULT_RING: usize = 1 << 20;
/// Smallest and largest ring an attaching side takes.
pub const MIN_RING: usize = 4096;
/// See [`MIN_RING`].
pub const MAX_RING: usize = 64 << 20;
/// How long a ring lock may be held before its holder is looked at.
pub const LOCK_PATIENCE: Duration = Duration::from_secs(1);
/// What an accelerated socket's `SO_SNDBUF` is set to, so that a handful of
/// filler bytes makes it unwritable.
pub const FILLER_SNDBUF: usize = 8192;
/// The memfd's name (Linux shows it in `/proc/PID/fd` and `/proc/PID/maps`).
pub const MEMFD_NAME: &str = "procwire-accel";

/// Bytes of header before the first ring.
const HEADER_SIZE: usize = 4096;

/// One direction's shared words, two cache lines for the indices and one
/// for the rest.
#[repr(C, align(64))]
struct Dir {
    tail: AtomicU64,
    _p0: [u8; 56],
    head: AtomicU64,
    _p1: [u8; 56],
    /// The reader relies on the socket: the next writer sends a doorbell.
    reader_armed: AtomicU32,
    /// The writer found the ring full and sent fillers.
    writer_blocked: AtomicU32,
    /// Thread id of the writer in a call, or 0.
    wlock: AtomicU32,
    /// Thread id of the reader in a call, or 0.
    rlock: AtomicU32,
    /// A process of the reading side closed its last fd of the
    /// connection: the writer asks the kernel (a doorbell) on every write
    /// from now on, which fails with `EPIPE` once the socket is closed.
    reader_closing: AtomicU32,
    _p2: [u8; 44],
}

/// The segment's header: identity, the attach record, two directions
/// (0: client to server, 1: server to client).
#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    ring_size: AtomicU32,
    /// Non-zero once the client attached; then `plain_before` is final.
    attached: AtomicU32,
    _p0: u32,
    /// Bytes the client wrote to the socket before attaching.
    plain_before: AtomicU64,
    _p1: [u8; 32],
    dirs: [Dir; 2],
}

const_assert_eq!(std::mem::size_of::<Dir>(), 192);
const_assert_eq!(std::mem::offset_of!(Dir, head), 64);
const_assert_eq!(std::mem::offset_of!(Dir, reader_armed), 128);
const_assert_eq!(std::mem::offset_of!(Header, dirs), 64);
const_assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);

/// Which end of the connection a process holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The side that connected.
    Client,
    /// The side that accepted.
    Server,
}

impl Side {
    /// The direction this side writes.
    fn tx(self) -> usize {
        match self {
            Side::Client => 0,
            Side::Server => 1,
        }
    }
}

/// What a [`Accel::recv`] or [`Accel::send`] call may do, from the
/// program's `MSG_*` flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// `MSG_PEEK`: leave the bytes.
    pub peek: bool,
    /// `MSG_DONTWAIT`: don't block, whatever the fd's mode.
    pub dontwait: bool,
    /// `MSG_WAITALL`: fill the buffer unless end-of-file, a signal or an
    /// error comes first.
    pub waitall: bool,
    /// `MSG_NOSIGNAL`: no `SIGPIPE` for a closed peer.
    pub nosignal: bool,
    /// The program's flag bits as given.
    pub bits: i32,
}

impl Flags {
    /// The flags a program passed to `recv`/`send`.
    pub fn from_bits(bits: i32) -> Self {
        Self {
            peek: bits & ffi::MSG_PEEK != 0,
            dontwait: bits & ffi::MSG_DONTWAIT != 0,
            waitall: bits & ffi::MSG_WAITALL != 0,
            nosignal: bits & ffi::MSG_NOSIGNAL != 0,
            bits,
        }
    }

    fn send_bits(self) -> i32 {
        let mut b = 0;
        if self.dontwait {
            b |= ffi::MSG_DONTWAIT;
        }
        if self.nosignal {
            b |= ffi::MSG_NOSIGNAL;
        }
        b
    }
}

/// Counters of one connection, for the preload's report.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes this process put into the ring.
    pub sent: AtomicU64,
    /// Bytes this process took out of the ring.
    pub received: AtomicU64,
}

/// One accelerated connection as one process sees it: the mapped segment
/// and the side. Shared by every fd of the process that refers to the
/// connection (`dup`), and by its threads.
pub struct Accel {
    map: Mapping,
    size: u64,
    side: Side,
    /// Server: bytes of the client's pre-attach stream read so far.
    plain_read: AtomicU64,
    /// Server: every pre-attach byte has been read.
    plain_done: AtomicU32,
    /// The program shut down writing (`shutdown(SHUT_WR)`), or the kernel
    /// said the peer is gone (`EPIPE`): later writes get the kernel's
    /// answer.
    shut_wr: AtomicU32,
    /// Traffic through the rings.
    pub counters: Counters,
}

impl std::fmt::Debug for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accel")
            .field("side", &self.side)
            .field("ring", &self.size)
            .finish()
    }
}

/// What [`try_attach`] found at the head of a client's stream.
#[derive(Debug)]
pub enum Attach {
    /// The hello: the connection is accelerated from now on.
    Attached(Accel),
    /// Nothing yet (the server has not answered, or the call would block).
    NotYet,
    /// Bytes that are not a hello, or end-of-file: the server is not
    /// accelerated; the connection stays plain for good.
    Plain,
}

/// The abstract name a taking-part listener of the socket file
/// `(dev, ino)` holds.
pub fn listener_marker(dev: u64, ino: u64) -> Vec<u8> {
    format!("procwire/{VERSION}/s/{dev:x}/{ino:x}").into_bytes()
}

/// Prefix of every client announcement name.
const ANNOUNCE_PREFIX: &[u8] = b"procwire/1/c/";

/// A fresh announcement name for a client socket (random, so two clients
/// never collide).
///
/// # Errors
///
/// Those of `getrandom`.
pub fn client_announcement() -> Result<Vec<u8>> {
    let mut r = [0u8; 16];
    interpose::random(&mut r)?;
    let mut v = ANNOUNCE_PREFIX.to_vec();
    for b in r {
        v.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    Ok(v)
}

/// Whether a peer's address (as [`interpose::peer_unix_name`] gives it,
/// abstract names with a leading NUL) is a client's announcement.
pub fn is_announcement(peer: &[u8]) -> bool {
    peer.first() == Some(&0) && peer[1..].starts_with(ANNOUNCE_PREFIX)
}

fn segment_len(ring: usize) -> usize {
    HEADER_SIZE + 2 * ring
}

/// Per-call scratch space for draining socket bytes.
const SCRATCH: usize = 256;

impl Accel {
    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least `HEADER_SIZE` bytes, page-aligned
        // (so aligned for `Header`), lives as long as `self`, and `Header`
        // is all atomics and padding: every bit pattern is valid and
        // concurrent writes by the peer are atomic.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    fn dir(&self, d: usize) -> &Dir {
        &self.header().dirs[d]
    }

    fn ring(&self, d: usize) -> RingRef<'_> {
        let dir = self.dir(d);
        RingRef {
            // SAFETY: `HEADER_SIZE + d * size` plus `size` bytes lie inside
            // the mapping (`segment_len`), for `d` in 0..2.
            data: unsafe { self.map.as_ptr().add(HEADER_SIZE + d * self.size as usize) },
            size: self.size,
            tail: &dir.tail,
            head: &dir.head,
        }
    }

    fn new(map: Mapping, size: u64, side: Side) -> Self {
        Self {
            map,
            size,
            side,
            plain_read: AtomicU64::new(0),
            plain_done: AtomicU32::new(u32::from(side == Side::Client)),
            shut_wr: AtomicU32::new(0),
            counters: Counters::default(),
        }
    }

    /// The side this process holds.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The mapped segment's first byte and length, for tests that play a
    /// hostile peer (the header layout is this module's `Header`).
    #[cfg(feature = "testing")]
    pub fn segment_for_tests(&self) -> (*mut u8, usize) {
        (self.map.as_ptr(), self.map.len())
    }

    /// Server side: makes a segment with rings of `ring` bytes and sends
    /// the hello with its memfd on the freshly accepted socket `sock`,
    /// without blocking (a fresh socket always has room).
    ///
    /// # Errors
    ///
    /// `EINVAL` for a ring size that is not a power of two in
    /// [`MIN_RING`]..=[`MAX_RING`]; those of `memfd_create`, `mmap` and
    /// `sendmsg` (the connection is then left plain: nothing was sent).
    pub fn offer(sock: BorrowedFd<'_>, ring: usize) -> Result<Self> {
        if !ring.is_power_of_two() || !(MIN_RING..=MAX_RING).contains(&ring) {
            return Err(Error::new(
                "accel offer",
                format!("ring {ring}"),
                ffi::EINVAL,
            ));
        }
        let fd = shm::sealed_memfd(MEMFD_NAME, segment_len(ring) as u64)?;
        let map = Mapping::map(fd.as_fd(), segment_len(ring), Access::ReadWrite)?;
        let a = Self::new(map, ring as u64, Side::Server);
        let h = a.header();
        h.magic
            .store(u64::from_le_bytes(HELLO_MAGIC), Ordering::Relaxed);
        h.version.store(VERSION, Ordering::Relaxed);
        h.ring_size.store(ring as u32, Ordering::Relaxed);
        // Each reader starts armed: the first bytes of either side ring a
        // doorbell, which wakes a peer that waits on its socket.
        for d in &h.dirs {
            d.reader_armed.store(1, Ordering::Relaxed);
        }
        fence(Ordering::Release);
        let mut hello = [0u8; HELLO_LEN];
        hello[..8].copy_from_slice(&HELLO_MAGIC);
        hello[8..12].copy_from_slice(&VERSION.to_le_bytes());
        hello[12..16].copy_from_slice(&(ring as u32).to_le_bytes());
        let sent = crate::sys::fdpass::send_with_fds(sock, &hello, &[fd.as_fd()])?;
        if sent != HELLO_LEN {
            // A fresh socket takes 16 bytes whole; a part sent would be a
            // broken stream, so say so loudly.
            return Err(Error::new("accel offer", "hello sent in part", ffi::EIO));
        }
        let _ = interpose::set_send_buffer(sock, FILLER_SNDBUF);
        Ok(a)
    }

    /// Bytes ready to read (`FIONREAD`): the ring's, plus on the server the
    /// client's pre-attach bytes still on the socket; `None` before the
    /// client attached (then the socket holds only data: ask it).
    pub fn readable(&self) -> Option<usize> {
        let mut plain = 0;
        if self.side == Side::Server && self.plain_done.load(Ordering::Acquire) == 0 {
            let h = self.header();
            if h.attached.load(Ordering::Acquire) == 0 {
                return None;
            }
            let k = h.plain_before.load(Ordering::Acquire);
            plain = k.saturating_sub(self.plain_read.load(Ordering::Acquire));
        }
        let d = self.dir(1 - self.side.tx());
        let tail = d.tail.load(Ordering::Acquire);
        let head = d.head.load(Ordering::Acquire);
        let ring = tail.saturating_sub(head).min(self.size);
        Some(usize::try_from(ring.saturating_add(plain)).unwrap_or(usize::MAX))
    }

    /// Marks writing shut down (after the program's `shutdown(SHUT_WR)`
    /// went through): later writes fail as the socket's would.
    pub fn shut_write(&self) {
        self.shut_wr.store(1, Ordering::Release);
    }

    /// Before a close or exit of the last fd of this process: arms the
    /// peer's direction so that the peer's next write rings a doorbell and
    /// learns from the kernel whether the socket is still open.
    pub fn closing(&self) {
        let d = self.dir(self.side.tx() ^ 1);
        d.reader_closing.store(1, Ordering::SeqCst);
        d.reader_armed.store(1, Ordering::SeqCst);
    }

    /// Reads into `bufs` as `recv`/`readv` would on the socket `sock`
    /// (on the server, the bytes the client wrote before it attached come
    /// first, from the socket).
    ///
    /// # Errors
    ///
    /// The socket's: `EAGAIN` where it would block, `EINTR`, `ECONNRESET`;
    /// `EIO` for a segment the peer broke.
    pub fn recv(
        &self,
        sock: BorrowedFd<'_>,
        bufs: &mut [&mut [u8]],
        flags: Flags,
    ) -> Result<usize> {
        match self.recv_inner(sock, bufs, flags) {
            // The kernel resets a connection whose dead peer left bytes
            // unread on its socket; here those are doorbells (or the
            // hello), and what it left unread is in our ring. So the
            // socket's answer holds only when our ring has bytes.
            Err(e) if e.raw_os_error() == ffi::ECONNRESET && self.tx_drained() => Ok(0),
            r => r,
        }
    }

    /// Whether the peer read everything this side wrote into the ring.
    fn tx_drained(&self) -> bool {
        let d = self.dir(self.side.tx());
        d.tail.load(Ordering::Acquire) == d.head.load(Ordering::Acquire)
    }

    fn recv_inner(
        &self,
        sock: BorrowedFd<'_>,
        bufs: &mut [&mut [u8]],
        flags: Flags,
    ) -> Result<usize> {
        if let Some(limit) = self.plain_phase(sock, flags)? {
            let want: usize = bufs.iter().map(|b| b.len()).sum();
            let Some(first) = bufs.iter_mut().find(|b| !b.is_empty()) else {
                return Ok(0);
            };
            let len = first.len().min(limit);
            let n = interpose::recv(sock, &mut first[..len], flags.bits)?;
            if flags.peek {
                return Ok(n);
            }
            self.plain_consumed(n);
            if !flags.waitall || n == 0 || n == want {
                return Ok(n);
            }
            // MSG_WAITALL across the end of the pre-attach bytes: the rest
            // from wherever it comes next.
            let mut rest = advance(bufs, n);
            return match self.recv_inner(sock, &mut rest, flags) {
                Ok(m) => Ok(n + m),
                Err(e) if e.raw_os_error() != ffi::EIO => Ok(n),
                Err(e) => Err(e),
            };
        }
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        let mut got = 0;
        loop {
            let n = self.ring_read(sock, bufs, got, flags.peek)?;
            got += n;
            let done = got == want || (got > 0 && !flags.waitall) || (got > 0 && flags.peek);
            if done || want == 0 {
                if n > 0 && !flags.peek && !self.rx_has_bytes() {
                    // Emptied: take the doorbell off now, so that the
                    // socket stops being readable with the ring.
                    self.settle(sock)?;
                }
                return Ok(got);
            }
            // The ring is empty: arm and wait, or say so.
            match self.wait_readable(sock, flags) {
                Ok(true) => {}
                Ok(false) => return Ok(got),
                Err(e) if got > 0 && e.raw_os_error() != ffi::EIO => return Ok(got),
                Err(e) => return Err(e),
            }
        }
    }

    /// Server: whether the client's pre-attach bytes are still being read
    /// from the socket, and how many of them the next read may take.
    fn plain_phase(&self, sock: BorrowedFd<'_>, flags: Flags) -> Result<Option<usize>> {
        if self.plain_done.load(Ordering::Acquire) != 0 {
            return Ok(None);
        }
        let h = self.header();
        loop {
            if h.attached.load(Ordering::Acquire) != 0 {
                let k = h.plain_before.load(Ordering::Acquire);
                let done = self.plain_read.load(Ordering::Acquire);
                if done >= k {
                    self.plain_done.store(1, Ordering::Release);
                    return Ok(None);
                }
                return Ok(Some((k - done).min(usize::MAX as u64) as usize));
            }
            // Not attached: what the socket holds now is all plain data.
            let mut probe = [0u8; SCRATCH];
            match interpose::recv(sock, &mut probe, ffi::MSG_PEEK | ffi::MSG_DONTWAIT) {
                Ok(n) if n > 0 => {
                    if h.attached.load(Ordering::Acquire) != 0 {
                        continue;
                    }
                    // Peeked before the client attached: plain bytes, all
                    // of them (the queue may hold more than `SCRATCH`, but
                    // only plain bytes until the attach record says).
                    return Ok(Some(n));
                }
                Ok(_) => {
                    // End-of-file before any attach: the socket's own.
                    return Ok(Some(usize::MAX));
                }
                Err(e) if e.is_would_block() => {
                    if flags.dontwait {
                        return Err(e);
                    }
                    // Wait in the fd's own mode for a byte (plain data, or
                    // a doorbell after the attach).
                    let mut one = [0u8; 1];
                    interpose::recv(sock, &mut one, ffi::MSG_PEEK)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Server: `n` pre-attach bytes were taken off the socket.
    fn plain_consumed(&self, n: usize) {
        self.plain_read.fetch_add(n as u64, Ordering::AcqRel);
    }

    /// Copies ring bytes into `bufs` from byte `skip` on; returns how many.
    fn ring_read(
        &self,
        sock: BorrowedFd<'_>,
        bufs: &mut [&mut [u8]],
        skip: usize,
        peek: bool,
    ) -> Result<usize> {
        let rx = 1 - self.side.tx();
        let ring = self.ring(rx);
        let dir = self.dir(rx);
        let guard = Lock::take(&dir.rlock, sock)?;
        let head = dir.head.load(Ordering::Relaxed);
        let mut c = ConsumerState {
            head,
            tail_cache: head,
        };
        let mut n = 0;
        let mut at = 0;
        for b in bufs.iter_mut() {
            let len = b.len();
            if at + len <= skip {
                at += len;
                continue;
            }
            let from = skip.saturating_sub(at);
            let got = if peek {
                ring.peek(&mut c, &mut b[from..])
            } else {
                ring.read(&mut c, &mut b[from..])
            }
            .map_err(|_| corrupt(sock))?;
            n += got;
            at += len;
            if got < len - from {
                break;
            }
        }
        drop(guard);
        if n > 0 && !peek {
            self.counters
                .received
                .fetch_add(n as u64, Ordering::Relaxed);
            // Dekker with a writer that marks itself blocked: our head
            // store, then its flag.
            fence(Ordering::SeqCst);
            if dir.writer_blocked.swap(0, Ordering::SeqCst) != 0 {
                drain(sock, 1)?;
            }
        }
        Ok(n)
    }

    /// Whether the ring this side reads has bytes (a fresh look).
    fn rx_has_bytes(&self) -> bool {
        let dir = self.dir(1 - self.side.tx());
        let head = dir.head.load(Ordering::SeqCst);
        dir.tail.load(Ordering::SeqCst) != head
    }

    /// The ring looked empty: takes the socket's non-data bytes off and
    /// arms, so that the socket is readable exactly when the ring has
    /// bytes (or the peer is gone). Never blocks.
    fn settle(&self, sock: BorrowedFd<'_>) -> Result<Settled> {
        let dir = self.dir(1 - self.side.tx());
        let kept = drain(sock, 1)?;
        dir.reader_armed.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.rx_has_bytes() {
            // A writer that published before our arm rang no doorbell; the
            // byte kept keeps the socket readable for its bytes.
            return Ok(Settled::Data);
        }
        match kept {
            Drained::Eof => Ok(if self.rx_has_bytes() {
                Settled::Data
            } else {
                Settled::Eof
            }),
            Drained::Empty { consumed } => Ok(Settled::Empty { consumed }),
            Drained::KeptOne => {
                // The last byte, now that a writer after our arm rings anew.
                let mut one = [0u8; 1];
                match interpose::recv(sock, &mut one, ffi::MSG_DONTWAIT) {
                    Ok(0) => return Ok(Settled::Eof),
                    Ok(_) => {}
                    Err(e) if e.is_would_block() => {}
                    Err(e) => return Err(e),
                }
                fence(Ordering::SeqCst);
                Ok(if self.rx_has_bytes() {
                    Settled::Data
                } else {
                    Settled::Empty { consumed: true }
                })
            }
        }
    }

    /// The ring was empty: settles, and waits (in the fd's mode) for a
    /// byte. `Ok(true)` to look at the ring again, `Ok(false)` at
    /// end-of-file.
    fn wait_readable(&self, sock: BorrowedFd<'_>, flags: Flags) -> Result<bool> {
        match self.settle(sock)? {
            Settled::Data => return Ok(true),
            Settled::Eof => return Ok(false),
            Settled::Empty { .. } => {}
        }
        let mut one = [0u8; 1];
        let bits = ffi::MSG_PEEK | if flags.dontwait { ffi::MSG_DONTWAIT } else { 0 };
        match interpose::recv(sock, &mut one, bits)? {
            0 => Ok(self.rx_has_bytes()),
            _ => Ok(true),
        }
    }

    /// Whether a read now would find bytes or end-of-file without waiting
    /// (after taking off non-data bytes that made the socket readable).
    /// For a layer above that answers the program's `poll`: a socket woken
    /// only by the hello or a stale doorbell is not readable.
    ///
    /// # Errors
    ///
    /// Those of `recv`.
    pub fn poll_readable(&self, sock: BorrowedFd<'_>) -> Result<bool> {
        if self.side == Side::Server && self.plain_done.load(Ordering::Acquire) == 0 {
            return Ok(true);
        }
        if self.rx_has_bytes() {
            return Ok(true);
        }
        Ok(!matches!(self.settle(sock)?, Settled::Empty { .. }))
    }

    /// Writes `bufs` as `send`/`writev` would on the socket `sock`.
    ///
    /// # Errors
    ///
    /// The socket's: `EAGAIN` where it would block (nothing written),
    /// `EPIPE` (with `SIGPIPE` unless `nosignal`) for a closed peer or after
    /// `shutdown(SHUT_WR)`, `EINTR`; `EIO` for a segment the peer broke.
    pub fn send(&self, sock: BorrowedFd<'_>, bufs: &[&[u8]], flags: Flags) -> Result<usize> {
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        if self.shut_wr.load(Ordering::Acquire) != 0 {
            // The kernel answers as it does after SHUT_WR: EPIPE, and the
            // signal unless the program asked for none.
            return interpose::send(sock, &[0], flags.send_bits());
        }
        if want == 0 {
            return Ok(0);
        }
        let tx = self.side.tx();
        let dir = self.dir(tx);
        let ring = self.ring(tx);
        let mut sent = 0;
        loop {
            let n = {
                let _guard = Lock::take(&dir.wlock, sock)?;
                // Our own index lives in shared memory too (so that
                // threads and forked processes share it), where the peer
                // can write it: checked like the peer's.
                let tail = dir.tail.load(Ordering::Relaxed);
                let head = dir.head.load(Ordering::Acquire);
                if head > tail || tail - head > self.size {
                    return Err(corrupt(sock));
                }
                let mut p = ProducerState {
                    tail,
                    head_cache: head,
                };
                let mut n = 0;
                let mut at = 0;
                for b in bufs {
                    if at + b.len() <= sent {
                        at += b.len();
                        continue;
                    }
                    let from = sent.saturating_sub(at);
                    let put = ring
                        .write(&mut p, &b[from..], false)
                        .map_err(|_| corrupt(sock))?;
                    n += put;
                    at += b.len();
                    if put < b.len() - from {
                        break;
                    }
                }
                n
            };
            if n > 0 {
                sent += n;
                self.counters.sent.fetch_add(n as u64, Ordering::Relaxed);
                fence(Ordering::SeqCst);
                if dir.reader_armed.swap(0, Ordering::SeqCst) != 0
                    || dir.reader_closing.load(Ordering::Relaxed) != 0
                {
                    match interpose::send(sock, &[0], ffi::MSG_DONTWAIT | ffi::MSG_NOSIGNAL) {
                        Ok(_) => {}
                        // Unread bytes fill the socket: it is readable.
                        Err(e) if e.is_would_block() => {}
                        Err(e) if e.raw_os_error() == ffi::EPIPE => {
                            // Every later write hears it from the kernel.
                            self.shut_wr.store(1, Ordering::Release);
                            if !self.tx_drained() {
                                // Bytes the peer never read: this write
                                // fails as the socket's would, with the
                                // signal unless the program asked for none.
                                return interpose::send(sock, &[0], flags.send_bits());
                            }
                            // The peer read all of it before it closed:
                            // the write happened.
                        }
                        Err(e) => return Err(e),
                    }
                }
                if sent == want {
                    return Ok(sent);
                }
                continue;
            }
            // Full: switch the socket's writability off, then look again.
            match self.fill(sock, flags) {
                Ok(()) => {}
                Err(e) if sent > 0 && e.raw_os_error() != ffi::EIO => return Ok(sent),
                Err(e) => return Err(e),
            }
        }
    }

    /// The ring is full: sends filler bytes (one, blocking in the fd's mode
    /// once the kernel's buffer is full), marks the writer blocked, and
    /// returns to look at the ring again.
    fn fill(&self, sock: BorrowedFd<'_>, flags: Flags) -> Result<()> {
        let dir = self.dir(self.side.tx());
        let r = interpose::send(sock, &[0], flags.send_bits());
        dir.writer_blocked.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.is_would_block() => {
                // Not writable now. Space freed since? Then go on.
                let head = dir.head.load(Ordering::SeqCst);
                let tail = dir.tail.load(Ordering::SeqCst);
                if tail.wrapping_sub(head) < self.size {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }
}

fn corrupt(sock: BorrowedFd<'_>) -> Error {
    interpose::error("accel ring", sock, ffi::EIO)
}

/// The buffers past their first `n` bytes.
fn advance<'b>(bufs: &'b mut [&mut [u8]], mut n: usize) -> Vec<&'b mut [u8]> {
    let mut out = Vec::with_capacity(bufs.len());
    for b in bufs.iter_mut() {
        if n >= b.len() {
            n -= b.len();
            continue;
        }
        out.push(&mut b[n..]);
        n = 0;
    }
    out
}

/// What [`drain`] left on the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Drained {
    /// Nothing is queued now; `consumed`: bytes were taken off.
    Empty { consumed: bool },
    /// One byte is left.
    KeptOne,
    /// End-of-file.
    Eof,
}

/// What [`Accel::settle`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settled {
    /// The ring has bytes.
    Data,
    /// Empty and armed; `consumed`: non-data bytes were taken off.
    Empty { consumed: bool },
    /// Empty, and the peer is gone or shut down writing.
    Eof,
}

/// Takes queued bytes off the socket without blocking, leaving `keep`
/// (0 or 1) of them.
fn drain(sock: BorrowedFd<'_>, keep: usize) -> Result<Drained> {
    let mut scratch = [0u8; SCRATCH];
    let mut consumed = false;
    loop {
        let q = match interpose::recv(sock, &mut scratch, ffi::MSG_PEEK | ffi::MSG_DONTWAIT) {
            Ok(0) => return Ok(Drained::Eof),
            Ok(q) => q,
            Err(e) if e.is_would_block() => return Ok(Drained::Empty { consumed }),
            Err(e) => return Err(e),
        };
        if q <= keep {
            return Ok(Drained::KeptOne);
        }
        match interpose::recv(sock, &mut scratch[..q - keep], ffi::MSG_DONTWAIT) {
            Ok(_) => consumed = true,
            Err(e) if e.is_would_block() => return Ok(Drained::Empty { consumed }),
            Err(e) => return Err(e),
        }
        if q < SCRATCH {
            return Ok(if keep > 0 {
                Drained::KeptOne
            } else {
                Drained::Empty { consumed }
            });
        }
    }
}

/// A ring end's lock, held for one call.
struct Lock<'a>(&'a AtomicU32);

impl<'a> Lock<'a> {
    fn take(word: &'a AtomicU32, sock: BorrowedFd<'_>) -> Result<Self> {
        let me = interpose::thread_id() as u32;
        let mut since: Option<Instant> = None;
        loop {
            match word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Ok(Lock(word)),
                Err(holder) if holder == me => {
                    // A signal handler on the thread that holds it.
                    return Err(interpose::error("accel lock", sock, ffi::EAGAIN));
                }
                Err(holder) => {
                    let start = *since.get_or_insert_with(Instant::now);
                    if start.elapsed() > LOCK_PATIENCE {
                        if !interpose::thread_alive(holder as i32) {
                            // Its holder died mid-call; indices are only
                            // published after a copy, so the ring is whole.
                            if word
                                .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                                .is_ok()
                            {
                                return Ok(Lock(word));
                            }
                            continue;
                        }
                        return Err(corrupt(sock));
                    }
                    std::thread::yield_now();
                }
            }
        }
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

/// Client side, announced and not yet attached: looks (without blocking
/// unless `block`) at the head of the stream for the hello, and attaches.
/// `plain_written` is what the client wrote to the socket so far.
///
/// # Errors
///
/// Those of `recvmsg` and `mmap`; a hello whose segment is not a sealed
/// memfd of the size it claims is [`Attach::Plain`], never mapped.
pub fn try_attach(sock: BorrowedFd<'_>, plain_written: u64, block: bool) -> Result<Attach> {
    let mut head = [0u8; HELLO_LEN];
    let bits = ffi::MSG_PEEK | if block { 0 } else { ffi::MSG_DONTWAIT };
    let n = match interpose::recv(sock, &mut head, bits) {
        Ok(n) => n,
        Err(e) if e.is_would_block() => return Ok(Attach::NotYet),
        Err(e) => return Err(e),
    };
    if n < HELLO_LEN || head[..8] != HELLO_MAGIC {
        return Ok(Attach::Plain);
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    let ring = u32::from_le_bytes([head[12], head[13], head[14], head[15]]) as usize;
    let mut fds: Vec<OwnedFd> = Vec::new();
    let got = crate::sys::fdpass::recv_with_fds_nonblocking(sock, &mut head, &mut fds, 1)?;
    if got.bytes != HELLO_LEN || fds.len() != 1 {
        // Consumed something that looked like a hello but carried no
        // segment: a stream we can no longer hand back whole.
        return Err(interpose::error("accel attach", sock, ffi::EIO));
    }
    let fd = fds.remove(0);
    if version != VERSION
        || !ring.is_power_of_two()
        || !(MIN_RING..=MAX_RING).contains(&ring)
        || !shm::is_sealed_against_shrinking(fd.as_fd())
        || shm::file_size(fd.as_fd())? < segment_len(ring) as u64
    {
        return Err(interpose::error("accel attach", sock, ffi::EIO));
    }
    let map = Mapping::map(fd.as_fd(), segment_len(ring), Access::ReadWrite)?;
    let a = Accel::new(map, ring as u64, Side::Client);
    let h = a.header();
    if h.magic.load(Ordering::Acquire) != u64::from_le_bytes(HELLO_MAGIC)
        || h.ring_size.load(Ordering::Acquire) as usize != ring
    {
        return Err(interpose::error("accel attach", sock, ffi::EIO));
    }
    let _ = interpose::set_send_buffer(sock, FILLER_SNDBUF);
    h.plain_before.store(plain_written, Ordering::Release);
    h.attached.store(1, Ordering::SeqCst);
    Ok(Attach::Attached(a))
}
