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

use super::copy::{Chooser, CopyPath};
use super::ring::{ConsumerState, Copy, ProducerState, RingRef};
use crate::sys::error::{Error, Result};
use crate::sys::interpose::{self, ffi};
use crate::sys::shm::{self, Access, Mapping, SharedMemory};

/// The hello's first eight bytes.
pub const HELLO_MAGIC: [u8; 8] = *b"PWACCEL1";
/// Wire and layout version (4: a writer may fill a whole ring past a jump
/// its reader has not followed yet, which a version-3 reader would take
/// for a corrupt index).
pub const VERSION: u32 = 4;
/// The hello's length: magic, version, ring size (little-endian `u32`s).
pub const HELLO_LEN: usize = 16;
/// Default bytes per direction. A bulk stream of 256 KiB writes moved 4 GiB
/// in 0.28 s with 2 MiB rings on a 2-vCPU AMD EPYC guest and in 0.38 s
/// with 1 MiB ones; small messages touch the same pages either way (a
/// ring's memory is allocated as its bytes first reach it).
pub const DEFAULT_RING: usize = 2 << 20;
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

/// One direction's shared words, on five cache lines by who writes them,
/// so that a call waits for as few of the other CPU's lines as it can: the
/// writer's index (read by the reader on every read); the reader's line
/// (the writer reads it only when the room it knows of runs short); the
/// doorbell hand-shake, written by each side only when a doorbell is
/// needed or sent; the rarely written rest; and the writing side's own
/// words, which the reader never touches.
#[repr(C, align(64))]
struct Dir {
    // The writer's line.
    tail: AtomicU64,
    /// The last jump of the writer to the ring's start ([`JUMP_AT`]): the
    /// positions `skip_from..skip_to` hold no bytes. Written before the
    /// `tail` that follows the jump; the reader at `skip_from` moves on
    /// to `skip_to`.
    skip_from: AtomicU64,
    /// See `skip_from`.
    skip_to: AtomicU64,
    _p0: [u8; 40],
    // The reader's line.
    head: AtomicU64,
    /// Non-data bytes readers took off the socket, claimed before each
    /// take, so that readers together never take more than `nondata`: a
    /// data byte that follows a switch is never eaten.
    skipped: AtomicU64,
    /// Thread id of the reader in a call, or 0.
    rlock: AtomicU32,
    _p1: [u8; 44],
    // The hand-shake.
    /// The reader relies on the socket: the next writer sends a doorbell.
    reader_armed: AtomicU32,
    _p2: [u8; 4],
    /// Non-data bytes (doorbells, filler) the writer put on the socket,
    /// counted before each send.
    nondata: AtomicU64,
    _p3: [u8; 48],
    // The rest.
    /// The writer found the ring full and sent fillers.
    writer_blocked: AtomicU32,
    /// A process of the reading side closed its last fd of the
    /// connection: the writer asks the kernel (a doorbell) on every write
    /// from now on, which fails with `EPIPE` once the socket is closed.
    reader_closing: AtomicU32,
    /// The downgrade of this direction ([`SWITCH_RING`], [`SWITCH_GOING`],
    /// [`SWITCH_DONE`]): once done, `nondata` is final and every later byte
    /// of the writer goes on the socket.
    switch: AtomicU32,
    /// The reading side left the ring (it hands the fd to a program that
    /// reads the socket): the writer takes the unread bytes back and sends
    /// them on the socket, in order, before anything newer.
    reader_gone: AtomicU32,
    /// The writer took `[head, tail)` back: it sends those bytes on the
    /// socket, advancing `head` itself.
    reclaimed: AtomicU32,
    _p4: [u8; 44],
    // The writing side's own.
    /// Thread id of the writer in a call, or 0.
    wlock: AtomicU32,
    /// Non-data sends under way (counted before they start, so that a
    /// switch can wait them out).
    inflight: AtomicU32,
    _p5: [u8; 56],
}

/// `reader_armed` bit of a reader that waits on the socket.
const ARM_SLEEPER: u32 = 1;
/// `reader_armed` bit of a wait that looks at the ring first.
const ARM_LAZY: u32 = 2;

/// A direction that is still on the ring.
const SWITCH_RING: u32 = 0;
/// Its writer is switching to the socket.
const SWITCH_GOING: u32 = 1;
/// Its writer writes on the socket.
const SWITCH_DONE: u32 = 2;

/// The segment's header: identity, the attach record, two directions
/// (0: client to server, 1: server to client).
#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    ring_size: AtomicU32,
    /// Non-zero once the client attached; then `plain_before` is final.
    attached: AtomicU32,
    /// Non-zero once either side asked for the connection to go back to
    /// the plain socket (the downgrade).
    downgrade: AtomicU32,
    /// Bytes the client wrote to the socket before attaching.
    plain_before: AtomicU64,
    /// Of those, bytes the server side took off the socket.
    plain_read: AtomicU64,
    _p0: [u8; 24],
    /// Per side (0: client, 1: server), each on its own line: 1 + the CPU
    /// its waiting thread last ran on while it is not blocked in a wait, 0
    /// otherwise; only processes that may spin publish it
    /// ([`Accel::set_running`]). A peer that never spins leaves it 0,
    /// which never lets anyone spin.
    running: [Running; 2],
    dirs: [Dir; 2],
}

/// A word alone on its cache line.
#[repr(C, align(64))]
struct Running {
    cpu: AtomicU32,
    _p: [u8; 60],
}

const_assert_eq!(std::mem::size_of::<Dir>(), 320);
const_assert_eq!(std::mem::offset_of!(Dir, skip_from), 8);
const_assert_eq!(std::mem::offset_of!(Dir, skip_to), 16);
const_assert_eq!(std::mem::offset_of!(Dir, head), 64);
const_assert_eq!(std::mem::offset_of!(Dir, skipped), 72);
const_assert_eq!(std::mem::offset_of!(Dir, rlock), 80);
const_assert_eq!(std::mem::offset_of!(Dir, reader_armed), 128);
const_assert_eq!(std::mem::offset_of!(Dir, nondata), 136);
const_assert_eq!(std::mem::offset_of!(Dir, writer_blocked), 192);
const_assert_eq!(std::mem::offset_of!(Dir, wlock), 256);
const_assert_eq!(std::mem::size_of::<Running>(), 64);
const_assert_eq!(std::mem::offset_of!(Header, running), 64);
const_assert_eq!(std::mem::offset_of!(Header, dirs), 192);
const_assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);

/// Offsets of the segment's words, for tests that play a hostile peer.
#[cfg(feature = "testing")]
pub mod layout {
    use super::{Dir, Header};
    use std::mem::{offset_of, size_of};

    /// Where direction `d` (0: client to server, 1: server to client)
    /// begins.
    pub const fn dir(d: usize) -> usize {
        offset_of!(Header, dirs) + d * size_of::<Dir>()
    }
    /// Bytes per direction.
    pub const DIR_LEN: usize = size_of::<Dir>();
    /// In a direction: the writer's index (`u64`).
    pub const TAIL: usize = offset_of!(Dir, tail);
    /// In a direction: where the writer's last jump to the ring's start
    /// began (`u64`).
    pub const SKIP_FROM: usize = offset_of!(Dir, skip_from);
    /// In a direction: where it ended (`u64`).
    pub const SKIP_TO: usize = offset_of!(Dir, skip_to);
    /// In a direction: the reader's index (`u64`).
    pub const HEAD: usize = offset_of!(Dir, head);
    /// In a direction: the writer's lock (`u32`).
    pub const WLOCK: usize = offset_of!(Dir, wlock);
    /// In a direction: the reader's lock (`u32`).
    pub const RLOCK: usize = offset_of!(Dir, rlock);
}

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

impl Counters {
    /// Counts bytes put into the ring, under the ring's write lock (which
    /// orders this process's threads), so with a plain load and store.
    fn add_sent(&self, n: usize) {
        let v = self.sent.load(Ordering::Relaxed);
        self.sent.store(v.wrapping_add(n as u64), Ordering::Relaxed);
    }

    /// Counts bytes taken out of the ring, under its read lock.
    fn add_received(&self, n: usize) {
        let v = self.received.load(Ordering::Relaxed);
        self.received
            .store(v.wrapping_add(n as u64), Ordering::Relaxed);
    }
}

/// One accelerated connection as one process sees it: the mapped segment
/// and the side. Shared by every fd of the process that refers to the
/// connection (`dup`), and by its threads.
pub struct Accel {
    map: Mapping,
    size: u64,
    side: Side,
    /// The socket's `SO_SNDBUF` before it was made small, given back at
    /// the downgrade.
    orig_sndbuf: usize,
    /// The direction this side reads is back on the socket (a cache of
    /// what the segment says, never cleared).
    rx_plain: AtomicU32,
    /// This process counted the connection as downgraded.
    counted_down: AtomicU32,
    /// A wait on the peer's words ran out (a switch that never ended): the
    /// segment can't be trusted, and every later call fails at once.
    broken: AtomicU32,
    /// Server: every pre-attach byte has been read.
    plain_done: AtomicU32,
    /// The program shut down writing (`shutdown(SHUT_WR)`), or the kernel
    /// said the peer is gone (`EPIPE`): later writes get the kernel's
    /// answer.
    shut_wr: AtomicU32,
    /// Waits of this process that look at the ring before they block (the
    /// preload's fast-mode epoll sets holding the connection): while there
    /// are any, a read that empties the ring leaves the doorbell and does
    /// not arm, and the wait arms before it sleeps ([`Accel::wait_prep`]),
    /// so a busy peer rings no doorbell.
    lazy: AtomicU32,
    /// A lazy arm was taken back at least once ([`Accel::disarm_lazy`]):
    /// the socket may lack the doorbell for bytes in the ring, so a wait
    /// that asks only the kernel must look at the ring first
    /// ([`Accel::kernel_waits`]).
    disarmed: AtomicU32,
    /// A wait that asks only the kernel may watch the socket (an epoll set
    /// the preload does not answer for, `poll`, `select`): lazy arms are
    /// never taken back from now on.
    kernel_watched: AtomicU32,
    /// Which copy large writes into the ring and large reads out of it
    /// take (`memcpy` or a vector loop), each side measuring its own
    /// ([`Chooser`]; its `streaming` choice means the loop here). Taken
    /// without waiting: a thread that finds one busy copies with `memcpy`
    /// unmeasured. Boxed: an `Accel` moves through [`Attach`].
    copies: Box<Copies>,
    /// The reader's index of the ring this side writes, as a write of
    /// this process last read it (written under the ring's write lock).
    tx_head: AtomicU64,
    /// How many bytes from the start of the ring this side writes have
    /// their pages populated in this process's mapping, on the first lap
    /// ([`Accel::populate_ahead`]); `u64::MAX` once all are, or the kernel
    /// can't.
    tx_populated: AtomicU64,
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
const ANNOUNCE_PREFIX: &[u8] = b"procwire/2/c/";

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

/// The largest write that jumps back to the ring's start ([`JUMP_AT`]).
const WINDOW: u64 = 32 << 10;
/// How far into the ring a writer of messages up to [`WINDOW`] goes before,
/// finding the ring empty, it jumps back to its start for the next one: a
/// stream of requests and replies then keeps reusing the first pages of
/// each ring, which stay in the caches and take no page fault after the
/// first time, instead of sweeping all of a ring of megabytes. 4 KiB (a
/// page on x86-64): a server with hundreds of connections keeps all of their rings' working
/// lines in its caches (with 32 KiB, 200 connections' rings spread over
/// 13 MiB, and a read cost 5-10% more CPU). Each jump costs the writer a
/// look at the reader's index, once per page of messages. Bulk traffic,
/// whose ring is rarely empty and whose writes are larger, uses the whole
/// ring.
const JUMP_AT: u64 = 4 << 10;
/// The most a write populates ahead of itself on a ring's first lap
/// ([`Accel::populate_ahead`]): sixteen 4 KiB pages, the window the
/// kernel's fault-around maps for the reader.
const POPULATE_STEP: u64 = 64 << 10;
/// Per-call scratch space for draining socket bytes.
const SCRATCH: usize = 256;
/// Bytes moved per step when ring bytes go back onto the socket.
const RESEND_CHUNK: usize = 4096;
/// `Header::attached`: the client attached.
const ATTACHED: u32 = 1;
/// `Header::attached`: the server left before the client attached, which
/// then never does.
const REFUSED: u32 = 2;

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

    fn new(map: Mapping, size: u64, side: Side, orig_sndbuf: usize) -> Self {
        Self {
            map,
            size,
            side,
            orig_sndbuf,
            rx_plain: AtomicU32::new(0),
            counted_down: AtomicU32::new(0),
            broken: AtomicU32::new(0),
            plain_done: AtomicU32::new(u32::from(side == Side::Client)),
            shut_wr: AtomicU32::new(0),
            lazy: AtomicU32::new(0),
            disarmed: AtomicU32::new(0),
            kernel_watched: AtomicU32::new(0),
            copies: Box::new(Copies {
                tx: std::sync::Mutex::new(Chooser::new(CopyPath::Auto, false)),
                rx: std::sync::Mutex::new(Chooser::new(CopyPath::Auto, false)),
            }),
            tx_head: AtomicU64::new(0),
            tx_populated: AtomicU64::new(0),
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
        let orig = interpose::send_buffer(sock).unwrap_or(0);
        let a = Self::new(map, ring as u64, Side::Server, orig);
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
        if self.rx_plain.load(Ordering::Acquire) != 0
            || self.dir(1 - self.side.tx()).switch.load(Ordering::Acquire) != SWITCH_RING
        {
            // On the socket, or about to be: the kernel's count (which may
            // still count a non-data byte or two while the writer switches).
            return None;
        }
        let mut plain = 0;
        if self.side == Side::Server && self.plain_done.load(Ordering::Acquire) == 0 {
            let h = self.header();
            if h.attached.load(Ordering::Acquire) == 0 {
                return None;
            }
            let k = h.plain_before.load(Ordering::Acquire);
            plain = k.saturating_sub(h.plain_read.load(Ordering::Acquire));
        }
        let d = self.dir(1 - self.side.tx());
        // A peer's impossible indices show as nothing to read (its next
        // read says why).
        let ring = rx_indices(d, self.size).map_or(0, |(head, tail)| tail - head);
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
    /// first, from the socket; after a downgrade, the ring's last bytes
    /// come before the socket's).
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
        self.follow(sock)?;
        if self.rx_plain.load(Ordering::Acquire) != 0 {
            return plain_recv(sock, bufs, flags);
        }
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
                if n > 0
                    && !flags.peek
                    && self.lazy.load(Ordering::Relaxed) == 0
                    && !self.rx_has_bytes()
                {
                    // Emptied: take the doorbell off now, so that the
                    // socket stops being readable with the ring (a lazy
                    // reader leaves that to the wait that would sleep).
                    self.settle(sock)?;
                }
                return Ok(got);
            }
            // The ring is empty. Back on the socket for good?
            if self.rx_transition(sock)? {
                let mut rest = advance(bufs, got);
                return match plain_recv(sock, &mut rest, flags) {
                    Ok(m) => Ok(got + m),
                    Err(_) if got > 0 => Ok(got),
                    Err(e) => Err(e),
                };
            }
            // Arm and wait, or say so.
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
            match h.attached.load(Ordering::Acquire) {
                0 => {}
                ATTACHED => {
                    let k = h.plain_before.load(Ordering::Acquire);
                    let done = h.plain_read.load(Ordering::Acquire);
                    if done >= k {
                        self.plain_done.store(1, Ordering::Release);
                        return Ok(None);
                    }
                    return Ok(Some((k - done).min(usize::MAX as u64) as usize));
                }
                // Refused (this side left before the client attached):
                // the socket is the client's plain stream for good.
                _ => return Ok(Some(usize::MAX)),
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
        self.header()
            .plain_read
            .fetch_add(n as u64, Ordering::AcqRel);
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
        if !peek {
            // The lines this read waits for come from the writer's CPU:
            // its index, the bytes, and the hand-shake this read arms on
            // if it empties the ring. Asked for together, so that they
            // cross at once instead of one after the other.
            let at = dir.head.load(Ordering::Relaxed) & (self.size - 1);
            // An offset below the ring's size: inside the ring.
            prefetch_read(ring.data.wrapping_add(at as usize));
            prefetch_write(&dir.reader_armed);
            prefetch_read(&dir.tail);
        }
        let guard = Lock::take(&dir.rlock, sock)?;
        if dir.reader_gone.load(Ordering::Acquire) != 0
            || dir.reclaimed.load(Ordering::Acquire) != 0
        {
            // This side left the ring, or the writer took its bytes back:
            // they come again on the socket.
            return Ok(0);
        }
        // Only what `rx_head` vouched for is read: once this read reached
        // the writer's tail, the writer may jump to the ring's start, and
        // the positions it skips hold no bytes; a further look goes through
        // `rx_head` again, which follows such a jump.
        let (head, tail) = self.rx_head(dir, sock)?;
        let mut c = ConsumerState {
            head,
            tail_cache: tail,
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
            if c.head == c.tail_cache && n > 0 {
                if peek {
                    // A peek leaves the shared index behind: it sees only
                    // the bytes of its first look.
                    break;
                }
                let (head, tail) = self.rx_head(dir, sock)?;
                c = ConsumerState {
                    head,
                    tail_cache: tail,
                };
            }
            let got = if peek {
                ring.peek_viewed(&mut c, &mut b[from..])
            } else {
                measured(&self.copies.rx, len - from, |how| {
                    ring.read_viewed(&mut c, &mut b[from..], how)
                })
            }
            .map_err(|_| corrupt(sock))?;
            n += got;
            at += len;
            if got < len - from {
                break;
            }
        }
        if !peek {
            self.counters.add_received(n);
        }
        // What this read left of the bytes it was shown.
        let unread = c.tail_cache - c.head;
        drop(guard);
        // A downgrade under way waits for the writer's blocked fillers:
        // they go at once.
        if n > 0
            && !peek
            && (writer_may_wake(unread, self.size)
                || self.header().downgrade.load(Ordering::Relaxed) != 0)
        {
            // Dekker with a writer that marks itself blocked: our head
            // store, then its flag.
            fence(Ordering::SeqCst);
            // A load first: the swap (a write to the hand-shake line) only
            // when the writer is blocked.
            if dir.writer_blocked.load(Ordering::SeqCst) != 0
                && dir.writer_blocked.swap(0, Ordering::SeqCst) != 0
            {
                self.drain(sock, 1)?;
            }
        }
        Ok(n)
    }

    /// Whether the ring this side reads has bytes for it (a fresh look).
    fn rx_has_bytes(&self) -> bool {
        let dir = self.dir(1 - self.side.tx());
        if dir.reader_gone.load(Ordering::Acquire) != 0
            || dir.reclaimed.load(Ordering::Acquire) != 0
        {
            return false;
        }
        let head = dir.head.load(Ordering::SeqCst);
        dir.tail.load(Ordering::SeqCst) != head
    }

    /// The reader's index and the writer's, for a caller that holds the
    /// reader's lock of direction `dir`: a jump of the writer to the
    /// ring's start that the reader is at is followed (the reader's index
    /// is stored past it), so `head..tail` is all bytes.
    ///
    /// # Errors
    ///
    /// `EIO` for indices the writer could not have left.
    fn rx_head(&self, dir: &Dir, sock: BorrowedFd<'_>) -> Result<(u64, u64)> {
        let (head, tail) = rx_indices(dir, self.size).ok_or_else(|| corrupt(sock))?;
        if head != dir.head.load(Ordering::Relaxed) {
            dir.head.store(head, Ordering::Release);
        }
        Ok((head, tail))
    }

    /// The ring looked empty: takes the socket's non-data bytes off and
    /// arms, so that the socket is readable exactly when the ring has
    /// bytes (or the peer is gone). Never blocks.
    fn settle(&self, sock: BorrowedFd<'_>) -> Result<Settled> {
        self.settle_as(sock, ARM_SLEEPER)
    }

    /// [`Accel::settle`], arming with `arm` ([`ARM_SLEEPER`] or [`ARM_LAZY`]).
    fn settle_as(&self, sock: BorrowedFd<'_>, arm: u32) -> Result<Settled> {
        let dir = self.dir(1 - self.side.tx());
        let kept = self.drain(sock, 1)?;
        dir.reader_armed.fetch_or(arm, Ordering::SeqCst);
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
            // Data bytes on the socket: the writer is back on it.
            Drained::Data => Ok(Settled::Data),
            Drained::Empty => Ok(Settled::Empty),
            Drained::KeptOne => {
                // The last byte, now that a writer after our arm rings anew.
                if claim(dir, 1) == 0 {
                    // Taken by another reader of this side meanwhile.
                    return Ok(Settled::Empty);
                }
                let mut one = [0u8; 1];
                match interpose::recv(sock, &mut one, ffi::MSG_DONTWAIT) {
                    Ok(0) => {
                        unclaim(dir, 1);
                        return Ok(Settled::Eof);
                    }
                    Ok(_) => {}
                    Err(e) if e.is_would_block() => unclaim(dir, 1),
                    Err(e) => {
                        unclaim(dir, 1);
                        return Err(e);
                    }
                }
                fence(Ordering::SeqCst);
                Ok(if self.rx_has_bytes() {
                    Settled::Data
                } else {
                    Settled::Empty
                })
            }
        }
    }

    /// Takes queued non-data bytes off the socket without blocking, leaving
    /// `keep` (0 or 1) of them, and never a data byte. How many there are
    /// is the writer's count, so no `MSG_PEEK` is needed: the common
    /// case of one doorbell costs no system call here, and more cost one.
    /// A counted byte may still be on its way (its send has not returned);
    /// then fewer are taken, and it arrives as a stale doorbell.
    fn drain(&self, sock: BorrowedFd<'_>, keep: usize) -> Result<Drained> {
        let dir = self.dir(1 - self.side.tx());
        let mut scratch = [0u8; SCRATCH];
        loop {
            let counted = dir
                .nondata
                .load(Ordering::SeqCst)
                .saturating_sub(dir.skipped.load(Ordering::SeqCst));
            if counted <= keep as u64 {
                match dir.switch.load(Ordering::Acquire) {
                    // What else is queued is data: the writer is back on
                    // the socket.
                    SWITCH_DONE => return Ok(Drained::Data),
                    SWITCH_RING | SWITCH_GOING => {}
                    _ => return Err(corrupt(sock)),
                }
                return Ok(if counted > 0 {
                    Drained::KeptOne
                } else {
                    Drained::Empty
                });
            }
            let take = claim(dir, (counted as usize - keep).min(SCRATCH));
            if take == 0 {
                continue;
            }
            let got = match interpose::recv(sock, &mut scratch[..take], ffi::MSG_DONTWAIT) {
                Ok(got) => got,
                Err(e) => {
                    unclaim(dir, take);
                    if e.is_would_block() {
                        return Ok(Drained::Empty);
                    }
                    return Err(e);
                }
            };
            unclaim(dir, take - got);
            if got == 0 {
                return Ok(Drained::Eof);
            }
            if got < take {
                // Fewer were there than counted: the rest is on its way.
                return Ok(Drained::Empty);
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
            Settled::Empty => {}
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
        match self.next_bytes(sock)? {
            Next::PlainPhase | Next::Ring => return Ok(true),
            Next::Socket => {}
            Next::Nothing => {
                if !matches!(self.settle(sock)?, Settled::Empty) {
                    return Ok(true);
                }
            }
        }
        // On the socket now; or nothing counted is left, and the kernel woke
        // the wait for end-of-file, or for a doorbell whose send had not
        // returned when we counted (it is taken off next time).
        let mut one = [0u8; 1];
        match interpose::recv(sock, &mut one, ffi::MSG_PEEK | ffi::MSG_DONTWAIT) {
            Ok(0) => Ok(true),
            Ok(_) => Ok(self.rx_plain.load(Ordering::Acquire) != 0),
            Err(e) if e.is_would_block() => Ok(false),
            Err(_) => Ok(true),
        }
    }

    /// Where this side's next bytes come from (after reacting to a
    /// downgrade, and moving to the socket if the ring is done with).
    fn next_bytes(&self, sock: BorrowedFd<'_>) -> Result<Next> {
        self.follow(sock)?;
        if self.rx_plain.load(Ordering::Acquire) != 0 {
            return Ok(Next::Socket);
        }
        if self.side == Side::Server && self.plain_done.load(Ordering::Acquire) == 0 {
            return Ok(Next::PlainPhase);
        }
        if self.rx_has_bytes() {
            return Ok(Next::Ring);
        }
        Ok(if self.rx_transition(sock)? {
            Next::Socket
        } else {
            Next::Nothing
        })
    }

    /// Writes `bufs` as `send`/`writev` would on the socket `sock`.
    ///
    /// # Errors
    ///
    /// The socket's: `EAGAIN` where it would block (nothing written),
    /// `EPIPE` (with `SIGPIPE` unless `nosignal`) for a closed peer or after
    /// `shutdown(SHUT_WR)`, `EINTR`; `EIO` for a segment the peer broke.
    pub fn send(&self, sock: BorrowedFd<'_>, bufs: &[&[u8]], flags: Flags) -> Result<usize> {
        self.follow(sock)?;
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
        // The reader wrote its arm last: fetch the line for the write
        // after the copy while the copy runs.
        prefetch_write(&dir.reader_armed);
        let ring = self.ring(tx);
        let mut sent = 0;
        loop {
            if dir.switch.load(Ordering::Acquire) != SWITCH_RING {
                // Back on the socket: after the ring's unread bytes.
                let rest = skip_sent(bufs, sent);
                return match self.plain_send(sock, &rest, flags) {
                    Ok(m) => Ok(sent + m),
                    Err(_) if sent > 0 => Ok(sent),
                    Err(e) => Err(e),
                };
            }
            // Whether the reader looked armed before the copy: its line is
            // then fetched while the bytes are copied, and the swap after
            // the fence needs no load of its own.
            let hint = dir.reader_armed.load(Ordering::Relaxed) != 0;
            let n = {
                let _guard = Lock::take(&dir.wlock, sock)?;
                if dir.switch.load(Ordering::Acquire) != SWITCH_RING {
                    continue;
                }
                // Our own index lives in shared memory too (so that
                // threads and forked processes share it), where the peer
                // can write it: checked like the peer's.
                // The reader's index as this process last read it: it
                // only grows, so an old value only understates the room,
                // and the ring reads it afresh when that is too little
                // (the reader's line stays with the reader meanwhile).
                let tail = dir.tail.load(Ordering::Relaxed);
                let mut skip = jump_record(dir, tail, self.size);
                let mut head = self.tx_head.load(Ordering::Relaxed);
                if head > tail || tail - head > self.size {
                    head = room_head(dir.head.load(Ordering::Acquire), skip);
                    if head > tail || tail - head > self.size {
                        return Err(corrupt(sock));
                    }
                }
                let mut tail = tail;
                let left = (want - sent) as u64;
                if tail & (self.size - 1) >= JUMP_AT && left <= WINDOW {
                    // Small, and past the window: back to the ring's
                    // start if the reader has read everything.
                    let fresh = dir.head.load(Ordering::Acquire);
                    if fresh == tail {
                        let to = (tail | (self.size - 1)) + 1;
                        dir.skip_from.store(tail, Ordering::Relaxed);
                        dir.skip_to.store(to, Ordering::Relaxed);
                        // Published by the tail store after the copy: a
                        // reader that sees that tail sees the jump. Until
                        // it follows, its index is `fresh`, which counts
                        // as `to`: the positions between hold nothing it
                        // will read, so the whole ring is room.
                        skip = Some((tail, to));
                        head = to;
                        tail = to;
                    }
                }
                self.populate_ahead(tail & (self.size - 1), want - sent);
                let mut p = ProducerState {
                    tail,
                    head_cache: head,
                    skip,
                };
                let mut n = 0;
                let mut at = 0;
                for b in bufs {
                    if at + b.len() <= sent {
                        at += b.len();
                        continue;
                    }
                    let from = sent.saturating_sub(at);
                    let put = measured(&self.copies.tx, b.len() - from, |how| {
                        ring.write_with(&mut p, &b[from..], how)
                    })
                    .map_err(|_| corrupt(sock))?;
                    n += put;
                    at += b.len();
                    if put < b.len() - from {
                        break;
                    }
                }
                self.tx_head.store(p.head_cache, Ordering::Relaxed);
                // Under the lock, so no locked add (which would wait for
                // the copy's stores to reach the reader's CPU).
                self.counters.add_sent(n);
                n
            };
            if n > 0 {
                sent += n;
                fence(Ordering::SeqCst);
                // A load first: the swap (a write to the line the reader
                // arms on) only when the reader is armed.
                if ((hint || dir.reader_armed.load(Ordering::SeqCst) != 0)
                    && dir.reader_armed.swap(0, Ordering::SeqCst) != 0)
                    || dir.reader_closing.load(Ordering::Relaxed) != 0
                {
                    match self.ping(dir, sock, ffi::MSG_DONTWAIT | ffi::MSG_NOSIGNAL) {
                        // Sent, or not needed: a switch under way wakes
                        // the reader with a byte of its own.
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

    /// Before a write of `want` bytes at ring offset `at`, while not all
    /// of the ring is populated (what was written so far is always a
    /// prefix of it: the writer moves on from the start, and comes back
    /// to it by a wrap or a jump): populates the pages the write reaches
    /// and as many again as were populated so far (at least a page, at
    /// most [`POPULATE_STEP`]), so
    /// that the write takes no page fault, and a run of small writes one
    /// system call per step instead of one fault per page. The reader's
    /// faults on pages that exist map up to sixteen at once (the kernel's
    /// fault-around). Best effort: a kernel without the advice, or a
    /// failure, leaves the rest to faults.
    fn populate_ahead(&self, at: u64, want: usize) {
        let done = self.tx_populated.load(Ordering::Relaxed);
        let end = at.saturating_add(want as u64).min(self.size);
        if done == u64::MAX || end <= done {
            return;
        }
        let page = shm::page_size() as u64;
        let step = done.clamp(page, POPULATE_STEP);
        let upto = end
            .div_ceil(page)
            .saturating_mul(page)
            .max(done + step)
            .min(self.size);
        let from = HEADER_SIZE + self.side.tx() * self.size as usize + done as usize;
        let next = match self.map.populate_range(from, (upto - done) as usize) {
            Ok(true) if upto < self.size => upto,
            _ => u64::MAX,
        };
        self.tx_populated.store(next, Ordering::Relaxed);
    }

    /// The ring is full: sends filler bytes (one, blocking in the fd's mode
    /// once the kernel's buffer is full), marks the writer blocked, and
    /// returns to look at the ring again.
    fn fill(&self, sock: BorrowedFd<'_>, flags: Flags) -> Result<()> {
        let dir = self.dir(self.side.tx());
        let r = self.ping(dir, sock, flags.send_bits());
        dir.writer_blocked.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        match r {
            // Sent, or the direction is switching (the loop then goes to
            // the socket).
            Ok(_) => Ok(()),
            Err(e) if e.is_would_block() => {
                // Not writable now. Space freed since? Then go on.
                let head = dir.head.load(Ordering::SeqCst);
                let tail = dir.tail.load(Ordering::SeqCst);
                let head = room_head(head, jump_record(dir, tail, self.size));
                if tail.wrapping_sub(head) < self.size {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Sends one non-data byte (a doorbell or filler) on the socket for
    /// this side's direction `d`, counted before it goes. Once the
    /// direction is switching to the socket nothing is sent (the switch
    /// wakes the reader with a byte of its own).
    fn ping(&self, d: &Dir, sock: BorrowedFd<'_>, bits: i32) -> Result<()> {
        d.inflight.fetch_add(1, Ordering::SeqCst);
        if d.switch.load(Ordering::SeqCst) != SWITCH_RING {
            d.inflight.fetch_sub(1, Ordering::SeqCst);
            return Ok(());
        }
        d.nondata.fetch_add(1, Ordering::SeqCst);
        let r = interpose::send(sock, &[0], bits);
        if !matches!(r, Ok(1)) {
            d.nondata.fetch_sub(1, Ordering::SeqCst);
        }
        d.inflight.fetch_sub(1, Ordering::SeqCst);
        r.map(|_| ())
    }

    // ------------------------------------------------------- the downgrade
    //
    // Either side may take the connection back to the plain socket; the
    // other notices at its next call (`follow`), and a non-data byte sent
    // as a switch begins wakes one that waits on its socket. Each direction
    // switches on its own: its writer stops the ring and its non-data
    // bytes (so their count is final), takes back the bytes its reader has
    // not read, and sends them on the socket before anything newer; its
    // reader skips exactly that many non-data bytes and reads the socket
    // from then on. So the order holds whatever either side does next: a
    // side that *leaves* (its fd goes to a program that knows only the
    // socket) takes the last non-data bytes off before it goes, and marks
    // the direction it reads `reader_gone` so that its own other processes
    // and threads keep out of the ring too.

    /// Reacts to a downgrade either side asked for: switches this side's
    /// writing to the socket, takes back what a departed reader left, and
    /// sends on what was taken back (without blocking).
    fn follow(&self, sock: BorrowedFd<'_>) -> Result<()> {
        if self.header().downgrade.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        if self.broken.load(Ordering::Acquire) != 0 {
            return Err(corrupt(sock));
        }
        let d = self.dir(self.side.tx());
        if d.switch.load(Ordering::Acquire) != SWITCH_DONE {
            self.switch_tx(sock)?;
        }
        self.push_resend(sock, false)?;
        Ok(())
    }

    /// Switches the direction this side writes to the socket.
    fn switch_tx(&self, sock: BorrowedFd<'_>) -> Result<()> {
        let d = self.dir(self.side.tx());
        let _g = Lock::take(&d.wlock, sock)?;
        if d.switch.load(Ordering::Acquire) == SWITCH_DONE {
            return Ok(());
        }
        // A last non-data byte wakes a reader that waits on its socket (a
        // full socket is readable already; a closed one has no reader).
        let _ = self.ping(d, sock, ffi::MSG_DONTWAIT | ffi::MSG_NOSIGNAL);
        d.switch.store(SWITCH_GOING, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // Non-data sends that started before it: a filler blocked on a
        // full socket ends when the reader drains it.
        self.wait_for(sock, || d.inflight.load(Ordering::SeqCst) == 0)?;
        if self.orig_sndbuf > 0 {
            // The kernel reports twice what was set.
            let _ = interpose::set_send_buffer(sock, self.orig_sndbuf / 2);
        }
        {
            // The bytes the reader has not read are taken back, under the
            // reader's lock (no reader is inside the ring as they change
            // hands): they go on the socket before anything newer, so the
            // order holds whatever the reader does next (it may leave too).
            let _r = Lock::take(&d.rlock, sock)?;
            d.reclaimed.store(1, Ordering::SeqCst);
        }
        d.switch.store(SWITCH_DONE, Ordering::SeqCst);
        Ok(())
    }

    /// Waits for a switch another thread or process of this side began.
    fn wait_switched(&self, sock: BorrowedFd<'_>) -> Result<()> {
        let d = self.dir(self.side.tx());
        self.wait_for(sock, || d.switch.load(Ordering::Acquire) == SWITCH_DONE)
    }

    /// Waits (at most [`LOCK_PATIENCE`]) until `done` holds for words that
    /// another thread or process of this side changes; past it the segment
    /// can't be trusted, and the connection is broken for good.
    fn wait_for(&self, sock: BorrowedFd<'_>, done: impl Fn() -> bool) -> Result<()> {
        let start = Instant::now();
        while !done() {
            if start.elapsed() > LOCK_PATIENCE {
                self.broken.store(1, Ordering::Release);
                return Err(corrupt(sock));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    }

    /// Sends the bytes taken back from a departed reader on the socket,
    /// blocking (in the fd's mode) if `block`; `Ok(true)` once all are
    /// out.
    fn push_resend(&self, sock: BorrowedFd<'_>, block: bool) -> Result<bool> {
        let tx = self.side.tx();
        let d = self.dir(tx);
        if d.reclaimed.load(Ordering::Acquire) == 0 {
            return Ok(true);
        }
        let ring = self.ring(tx);
        let _g = Lock::take(&d.rlock, sock)?;
        let mut chunk = [0u8; RESEND_CHUNK];
        let bits = ffi::MSG_NOSIGNAL | if block { 0 } else { ffi::MSG_DONTWAIT };
        loop {
            let (head, tail) = self.rx_head(d, sock)?;
            if head == tail {
                return Ok(true);
            }
            let mut c = ConsumerState {
                head,
                tail_cache: tail,
            };
            let n = ring
                .peek_viewed(&mut c, &mut chunk)
                .map_err(|_| corrupt(sock))?;
            match interpose::send(sock, &chunk[..n], bits) {
                Ok(m) => d.head.store(head + m as u64, Ordering::Release),
                Err(e) if e.is_would_block() => return Ok(false),
                Err(e) if e.raw_os_error() == ffi::EPIPE => {
                    // Nobody is left to read them.
                    d.head.store(tail, Ordering::Release);
                    return Ok(true);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes on the socket after this side's switch, the bytes taken back
    /// first.
    fn plain_send(&self, sock: BorrowedFd<'_>, bufs: &[&[u8]], flags: Flags) -> Result<usize> {
        if self.broken.load(Ordering::Acquire) != 0 {
            return Err(corrupt(sock));
        }
        self.wait_switched(sock)?;
        if !self.push_resend(sock, !flags.dontwait)? {
            return Err(interpose::error("send", sock, ffi::EAGAIN));
        }
        let mut n = 0;
        for b in bufs.iter().filter(|b| !b.is_empty()) {
            match interpose::send(sock, b, flags.bits) {
                Ok(m) => {
                    n += m;
                    if m < b.len() {
                        break;
                    }
                }
                Err(_) if n > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// The ring this side reads is empty: whether its writer is on the
    /// socket now, and if so skips its last non-data bytes (then every
    /// later read is the socket's).
    fn rx_transition(&self, sock: BorrowedFd<'_>) -> Result<bool> {
        let d = self.dir(1 - self.side.tx());
        if d.switch.load(Ordering::Acquire) != SWITCH_DONE {
            return Ok(false);
        }
        if self.rx_has_bytes() {
            return Ok(false);
        }
        while d.skipped.load(Ordering::SeqCst) < d.nondata.load(Ordering::SeqCst) {
            match self.drain(sock, 0)? {
                Drained::Eof => break,
                Drained::Data | Drained::KeptOne => {}
                Drained::Empty => {
                    if d.skipped.load(Ordering::SeqCst) < d.nondata.load(Ordering::SeqCst) {
                        // Counted bytes that were never sent: a broken peer.
                        return Err(corrupt(sock));
                    }
                }
            }
        }
        self.rx_plain.store(1, Ordering::Release);
        Ok(true)
    }

    /// Starts the downgrade from this side for the direction it writes
    /// (before ancillary data, `sendfile` or `splice` to the socket): from
    /// now on its bytes go on the socket, after the ring's; the peer
    /// switches its own at its next call. Never waits for the peer.
    ///
    /// # Errors
    ///
    /// `EIO` when a non-data send of this side stayed blocked for
    /// [`LOCK_PATIENCE`] (the connection is then broken for good), or for a
    /// broken segment.
    pub fn downgrade_tx(&self, sock: BorrowedFd<'_>) -> Result<()> {
        if self.side == Side::Server && !self.refuse(sock)? {
            // The client's unread pre-attach bytes go into the ring now,
            // before the client can switch (it switches once it sees the
            // request): on the socket they would stay ahead of its non-data
            // bytes, and a later leave of this side could not give them
            // back. Where they don't fit they stay (the reads here take
            // them first anyway).
            let rx = self.dir(1 - self.side.tx());
            let _r = Lock::take(&rx.rlock, sock)?;
            if rx.reader_gone.load(Ordering::Acquire) == 0 {
                match self.plain_back_to_ring(sock) {
                    Err(e) if e.raw_os_error() == ffi::EIO => {}
                    r => r?,
                }
            }
        }
        self.header().downgrade.store(1, Ordering::SeqCst);
        self.follow(sock)
    }

    /// Server: if the client has not attached yet, refuses its attach for
    /// good (it then finds a plain connection): both directions are the
    /// socket's from now on, and what this side put in the ring it sends
    /// again itself (`push_resend`). Whether it refused.
    fn refuse(&self, sock: BorrowedFd<'_>) -> Result<bool> {
        let h = self.header();
        if h.attached
            .compare_exchange(0, REFUSED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Ok(false);
        }
        h.downgrade.store(1, Ordering::SeqCst);
        let rx = self.dir(1 - self.side.tx());
        let tx = self.dir(self.side.tx());
        rx.switch.store(SWITCH_DONE, Ordering::SeqCst);
        rx.reader_gone.store(1, Ordering::SeqCst);
        tx.reader_gone.store(1, Ordering::SeqCst);
        self.follow(sock)?;
        self.rx_plain.store(1, Ordering::Release);
        Ok(true)
    }

    /// This side leaves the ring for good, in both directions, because its
    /// fd goes to a program that reads only the socket (an `exec`, a
    /// descriptor passed away, `splice` from it): asks the peer to send
    /// what this side has not read on the socket, and waits for it (at
    /// most `patience`) so as to take the last non-data bytes off. After
    /// it, the socket holds exactly the connection's bytes in order.
    ///
    /// # Errors
    ///
    /// `ETIMEDOUT` when the peer did not answer within `patience` (it never
    /// called into the connection); `EIO` when the bytes left over can't be
    /// put back (or for a broken segment). The connection is then not
    /// whole, and the caller should shut it down.
    pub fn leave(&self, sock: BorrowedFd<'_>, patience: Duration) -> Result<()> {
        if self.broken.load(Ordering::Acquire) != 0 {
            return Err(corrupt(sock));
        }
        let h = self.header();
        let rxi = 1 - self.side.tx();
        let rx = self.dir(rxi);
        if self.side == Side::Server && self.refuse(sock)? {
            // The client has not attached and now never will: its stream
            // is plain throughout.
            let deadline = Instant::now() + patience;
            while !self.push_resend(sock, false)? {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(interpose::error("accel leave", sock, ffi::ETIMEDOUT));
                }
                crate::sys::fd::wait_writable(sock, Some(left))?;
            }
            self.rx_plain.store(1, Ordering::Release);
            return Ok(());
        }
        {
            let _r = Lock::take(&rx.rlock, sock)?;
            if rx.reader_gone.load(Ordering::Acquire) == 0 {
                if self.side == Side::Server {
                    self.plain_back_to_ring(sock)?;
                }
                rx.reader_gone.store(1, Ordering::SeqCst);
            }
        }
        // Only now: a client that switched before its pre-attach bytes
        // were put back would resend its ring's bytes behind them.
        h.downgrade.store(1, Ordering::SeqCst);
        self.follow(sock)?;
        let deadline = Instant::now() + patience;
        loop {
            if self.rx_transition(sock)? {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(interpose::error("accel leave", sock, ffi::ETIMEDOUT));
            }
            // Everything before the peer's switch is non-data: take it off
            // (a filler of a blocked peer frees it), then wait for more.
            match self.drain(sock, 0)? {
                Drained::Eof => {
                    // The peer is gone: nothing more will come.
                    self.rx_plain.store(1, Ordering::Release);
                    return Ok(());
                }
                // Data already (the peer switched and is taking the bytes
                // back): look again shortly.
                Drained::Data => std::thread::sleep(left.min(Duration::from_millis(1))),
                Drained::Empty | Drained::KeptOne => {
                    crate::sys::fd::wait_readable(sock, Some(left))?;
                }
            }
        }
    }

    /// Server leaving: the client's pre-attach bytes not yet read go into
    /// the ring ahead of its unread bytes (which move up to make room), so
    /// that the client sends them again with those; on the socket they are
    /// ahead of non-data bytes, which this side must take off. Called with
    /// the reader's lock held; takes the writer's, whose index it moves.
    fn plain_back_to_ring(&self, sock: BorrowedFd<'_>) -> Result<()> {
        let h = self.header();
        let k = h
            .plain_before
            .load(Ordering::Acquire)
            .saturating_sub(h.plain_read.load(Ordering::Acquire));
        if k == 0 {
            return Ok(());
        }
        let d = self.dir(1 - self.side.tx());
        if d.reclaimed.load(Ordering::SeqCst) != 0 {
            // The client switched on its own (it downgraded first) and
            // sends its ring's bytes on the socket, behind these and its
            // non-data bytes: they can't be put ahead of those any more.
            return Err(corrupt(sock));
        }
        let _w = Lock::take(&d.wlock, sock)?;
        let (head, tail) = self.rx_head(d, sock)?;
        if tail - head + k > self.size {
            return Err(corrupt(sock));
        }
        let ring = self.ring(1 - self.side.tx());
        let mask = self.size - 1;
        let at = |i: u64| {
            // SAFETY: masked to the ring, which lies in a live mapping; byte
            // accesses through the raw pointer (no reference to shared
            // memory is made).
            unsafe { ring.data.add((i & mask) as usize) }
        };
        // The unread bytes move up by `k`, last first.
        let mut i = tail;
        while i > head {
            i -= 1;
            // SAFETY: see `at`.
            unsafe { at(i + k).write(at(i).read()) };
        }
        let mut chunk = [0u8; RESEND_CHUNK];
        let mut put = 0;
        while put < k {
            let want = ((k - put) as usize).min(RESEND_CHUNK);
            let n = interpose::recv(sock, &mut chunk[..want], ffi::MSG_DONTWAIT)?;
            if n == 0 {
                return Err(corrupt(sock));
            }
            for (j, b) in chunk[..n].iter().enumerate() {
                // SAFETY: see `at`.
                unsafe { at(head + put + j as u64).write(*b) };
            }
            put += n as u64;
        }
        h.plain_read.fetch_add(k, Ordering::AcqRel);
        self.plain_done.store(1, Ordering::Release);
        d.tail.store(tail + k, Ordering::Release);
        Ok(())
    }

    /// Whether the connection is all on the socket again as far as this
    /// process is concerned: every later call can be the program's own.
    pub fn is_plain(&self) -> bool {
        if self.rx_plain.load(Ordering::Acquire) == 0 {
            return false;
        }
        let d = self.dir(self.side.tx());
        d.switch.load(Ordering::Acquire) == SWITCH_DONE
            && d.head.load(Ordering::Acquire) == d.tail.load(Ordering::Acquire)
    }

    /// `true` once, the first time this process finds the connection plain
    /// again (for the report's count of downgrades).
    pub fn first_time_plain(&self) -> bool {
        self.is_plain() && self.counted_plain()
    }

    /// `true` the first time it is asked (after [`Accel::leave`], which
    /// makes the connection plain whether or not the peer answered).
    pub fn counted_plain(&self) -> bool {
        self.counted_down.swap(1, Ordering::AcqRel) == 0
    }

    /// After [`Accel::downgrade_tx`]: waits for this side's switch to end
    /// and sends what a departed reader left (blocking in the fd's mode if
    /// `block`), so that the program's own call comes next on the socket.
    ///
    /// # Errors
    ///
    /// `EAGAIN` when those bytes don't fit now and `block` is false (or
    /// the fd is non-blocking); `EIO` for a broken segment.
    pub fn flush_tx(&self, sock: BorrowedFd<'_>, block: bool) -> Result<()> {
        self.wait_switched(sock)?;
        if self.push_resend(sock, block)? {
            Ok(())
        } else {
            Err(interpose::error("send", sock, ffi::EAGAIN))
        }
    }

    // ------------------------------------------------ waits that look first
    //
    // A wait that answers the program from the rings (the preload's fast
    // mode) asks these without a system call, and arms before it sleeps.

    /// One more (`true`) or one fewer (`false`) wait of this process that
    /// looks at the ring before it blocks; see the `lazy` field.
    pub fn set_lazy(&self, on: bool) {
        if on {
            self.lazy.fetch_add(1, Ordering::AcqRel);
        } else {
            let _ = self
                .lazy
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    /// Publishes whether this side's waiting thread runs (on `cpu`) or
    /// sleeps in a wait (`None`), for a peer that would spin.
    pub fn set_running(&self, cpu: Option<u32>) {
        let v = cpu.map_or(0, |c| c.saturating_add(1));
        let w = &self.header().running[self.side.tx()].cpu;
        if w.load(Ordering::Relaxed) != v {
            w.store(v, Ordering::Relaxed);
        }
    }

    /// Whether the peer said it runs, on a CPU other than `cpu`: only then
    /// can spinning here see its bytes sooner than a sleep would.
    pub fn peer_runs_elsewhere(&self, cpu: u32) -> bool {
        let v = self.header().running[1 - self.side.tx()]
            .cpu
            .load(Ordering::Relaxed);
        v != 0 && v != cpu.saturating_add(1)
    }

    /// Whether either side asked for the plain socket: from then on the
    /// kernel's readiness of the socket is the connection's (as in safe
    /// mode), and a wait should ask the kernel.
    pub fn downgrading(&self) -> bool {
        self.header().downgrade.load(Ordering::Acquire) != 0
    }

    /// Whether a read would find bytes in the ring now, without a system
    /// call: `Some` while this side reads the ring (the server's
    /// pre-attach bytes all read), `None` where only the socket can say.
    pub fn ring_readable(&self) -> Option<bool> {
        if self.rx_plain.load(Ordering::Acquire) != 0 || self.downgrading() || !self.plain_over() {
            return None;
        }
        Some(self.rx_has_bytes())
    }

    /// The writer's index of the ring this side reads (it moves whenever
    /// new bytes arrive: edge-triggered waits compare it).
    pub fn rx_mark(&self) -> u64 {
        self.dir(1 - self.side.tx()).tail.load(Ordering::Acquire)
    }

    /// The count of bytes the peer ever read from the ring this side
    /// writes (it moves whenever space is freed).
    pub fn tx_mark(&self) -> u64 {
        self.dir(self.side.tx()).head.load(Ordering::Acquire)
    }

    /// Whether a write would put bytes into the ring now: `Some` while this
    /// side writes the ring, `None` once the socket decides (after
    /// `shutdown(SHUT_WR)`, a closed peer, or a downgrade).
    pub fn ring_writable(&self) -> Option<bool> {
        let d = self.dir(self.side.tx());
        if self.shut_wr.load(Ordering::Acquire) != 0
            || d.switch.load(Ordering::Acquire) != SWITCH_RING
            || self.downgrading()
        {
            return None;
        }
        let head = d.head.load(Ordering::SeqCst);
        let tail = d.tail.load(Ordering::SeqCst);
        let head = room_head(head, jump_record(d, tail, self.size));
        Some(tail.wrapping_sub(head) < self.size)
    }

    /// Before a wait blocks for reading: `Ok(true)` if a read would not
    /// block now (bytes, end-of-file, or the socket has the next bytes);
    /// otherwise the reader is armed and stale doorbells are off the
    /// socket, so the socket turns readable as soon as a byte arrives.
    ///
    /// # Errors
    ///
    /// Those of `recv`; `EIO` for a broken segment.
    pub fn wait_prep(&self, sock: BorrowedFd<'_>) -> Result<bool> {
        self.wait_prep_as(sock, ARM_SLEEPER)
    }

    /// [`Accel::wait_prep`] for a wait that looks at the ring again each
    /// time it wakes: its arm may be taken back ([`Accel::disarm_lazy`])
    /// while it is awake.
    ///
    /// # Errors
    ///
    /// As for [`Accel::wait_prep`].
    pub fn wait_prep_lazy(&self, sock: BorrowedFd<'_>) -> Result<bool> {
        self.wait_prep_as(sock, ARM_LAZY)
    }

    /// Takes back an arm [`Accel::wait_prep_lazy`] left, so that the
    /// peer rings no doorbell while the waiter is awake and looks at the
    /// ring anyway; unless a writer rang it already, a reader that waits
    /// on the socket armed too, or a kernel-only wait may watch the socket
    /// ([`Accel::kernel_waits`]). Whether it was taken back.
    ///
    /// The caller answers for every other waiter on this side: none may
    /// rely on the lazy arm (one wait of one process holds the connection,
    /// no other thread sleeps in it).
    pub fn disarm_lazy(&self) -> bool {
        if self.kernel_watched.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let d = self.dir(1 - self.side.tx());
        if d.reader_armed.load(Ordering::Relaxed) != ARM_LAZY {
            return false;
        }
        // Dekker with `kernel_waits`: either it sees this mark and arms
        // for the kernel, or this sees its mark and leaves the arm.
        self.disarmed.store(1, Ordering::SeqCst);
        if self.kernel_watched.load(Ordering::SeqCst) != 0 {
            return false;
        }
        d.reader_armed
            .compare_exchange(ARM_LAZY, 0, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// A wait that asks only the kernel is about to watch the socket (the
    /// program's `poll` or `select`, an epoll set the preload does not
    /// answer for): lazy arms stay from now on, and the reader is armed.
    /// `Ok(true)` if a read would not block now; then the socket may lack
    /// the byte that makes the kernel say so, and the caller must answer
    /// from here (or take the connection back to the plain socket, see
    /// [`Accel::leave`]). `Ok(false)`: the kernel's readiness of the socket
    /// mirrors the ring from now on.
    ///
    /// # Errors
    ///
    /// As for [`Accel::wait_prep`].
    pub fn kernel_waits(&self, sock: BorrowedFd<'_>) -> Result<bool> {
        self.kernel_watched.store(1, Ordering::SeqCst);
        if self.disarmed.load(Ordering::SeqCst) == 0 {
            // Never taken back: a ring with bytes has its doorbell.
            return Ok(false);
        }
        self.wait_prep(sock)
    }

    /// Whether no kernel-only wait has watched the socket yet: then
    /// [`Accel::kernel_waits`] comes before one does.
    pub fn needs_kernel_look(&self) -> bool {
        self.kernel_watched.load(Ordering::Relaxed) == 0
    }

    /// How many waits of this process that look at the ring first hold
    /// the connection (see [`Accel::set_lazy`]).
    pub fn lazy_readers(&self) -> u32 {
        self.lazy.load(Ordering::Acquire)
    }

    fn wait_prep_as(&self, sock: BorrowedFd<'_>, arm: u32) -> Result<bool> {
        self.follow(sock)?;
        if self.rx_plain.load(Ordering::Acquire) != 0 {
            return self.poll_readable(sock);
        }
        if !self.plain_over() {
            // The socket holds the client's plain bytes (or will): readable
            // when it has any. A client that attaches rings its first
            // doorbell (each reader starts armed), so nothing is armed here.
            let mut one = [0u8; 1];
            return match interpose::recv(sock, &mut one, ffi::MSG_PEEK | ffi::MSG_DONTWAIT) {
                Err(e) if e.is_would_block() => Ok(false),
                // Bytes, end-of-file, or an error the read will report.
                _ => Ok(true),
            };
        }
        if self.rx_has_bytes() {
            return Ok(true);
        }
        if self.rx_transition(sock)? {
            return self.poll_readable(sock);
        }
        Ok(!matches!(self.settle_as(sock, arm)?, Settled::Empty))
    }

    /// Server: whether every pre-attach byte of the client has been read
    /// (no system call; remembered once true). Always true on the client.
    fn plain_over(&self) -> bool {
        if self.plain_done.load(Ordering::Acquire) != 0 {
            return true;
        }
        let h = self.header();
        if h.attached.load(Ordering::Acquire) != ATTACHED {
            return false;
        }
        if h.plain_read.load(Ordering::Acquire) >= h.plain_before.load(Ordering::Acquire) {
            self.plain_done.store(1, Ordering::Release);
            return true;
        }
        false
    }

    /// Before a wait blocks for writing: `Ok(true)` if the ring has space
    /// now; otherwise the socket is made unwritable (filler bytes) and the
    /// writer marked blocked, so the socket turns writable as soon as the
    /// reader frees space.
    ///
    /// # Errors
    ///
    /// Those of `send`; `EIO` for a broken segment.
    pub fn wait_prep_write(&self, sock: BorrowedFd<'_>) -> Result<bool> {
        let flags = Flags::from_bits(ffi::MSG_DONTWAIT | ffi::MSG_NOSIGNAL);
        loop {
            match self.ring_writable() {
                Some(false) => {}
                _ => return Ok(true),
            }
            match self.fill(sock, flags) {
                Ok(()) => {}
                Err(e) if e.is_would_block() => return Ok(false),
                Err(e) if e.raw_os_error() == ffi::EPIPE => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether this side's next bytes come from the socket (so a
    /// `recvmsg` that may carry ancillary data is the program's own):
    /// the ring is empty and its writer is back on the socket.
    ///
    /// # Errors
    ///
    /// Those of `recv`; `EIO` for a broken segment.
    pub fn socket_next(&self, sock: BorrowedFd<'_>) -> Result<bool> {
        Ok(matches!(self.next_bytes(sock)?, Next::Socket))
    }
}

/// The copy choosers of one connection's two directions, as this process
/// writes and reads them.
struct Copies {
    tx: std::sync::Mutex<Chooser>,
    rx: std::sync::Mutex<Chooser>,
}

/// Copies of at least this many bytes asked for are measured and may take
/// the vector loop; smaller ones always take `memcpy`.
const MEASURED_COPY: usize = 64 << 10;

/// Runs `copy` (which moves bytes into or out of a ring the way it is
/// given, returning how many) with the way `chooser` picks, and tells the
/// chooser how long it took, for copies of `len >= MEASURED_COPY` bytes
/// asked for; others, and a chooser another thread holds, take `memcpy`.
fn measured<E>(
    chooser: &std::sync::Mutex<Chooser>,
    len: usize,
    copy: impl FnOnce(Copy) -> std::result::Result<usize, E>,
) -> std::result::Result<usize, E> {
    if len < MEASURED_COPY {
        return copy(Copy::Plain);
    }
    let Ok(mut c) = chooser.try_lock() else {
        return copy(Copy::Plain);
    };
    let how = if c.streaming() {
        Copy::Vector
    } else {
        Copy::Plain
    };
    c.begin(Instant::now());
    let r = copy(how);
    if let Ok(n) = r {
        c.end(n, Instant::now());
    }
    r
}

/// Reads into `bufs` from the socket, as the program's own call would.
fn plain_recv(sock: BorrowedFd<'_>, bufs: &mut [&mut [u8]], flags: Flags) -> Result<usize> {
    let mut n = 0;
    for b in bufs.iter_mut().filter(|b| !b.is_empty()) {
        match interpose::recv(sock, b, flags.bits) {
            Ok(m) => {
                n += m;
                if m < b.len() || flags.peek {
                    break;
                }
            }
            Err(_) if n > 0 => break,
            Err(e) => return Err(e),
        }
        if !flags.waitall {
            // One receive's worth, as a single call gives.
            break;
        }
    }
    Ok(n)
}

/// The buffers past their first `n` bytes.
fn skip_sent<'b>(bufs: &[&'b [u8]], mut n: usize) -> Vec<&'b [u8]> {
    let mut out = Vec::with_capacity(bufs.len());
    for b in bufs {
        if n >= b.len() {
            n -= b.len();
            continue;
        }
        out.push(&b[n..]);
        n = 0;
    }
    out
}

/// Claims up to `want` of the direction's counted non-data bytes for
/// taking off the socket; how many were claimed.
fn claim(d: &Dir, want: usize) -> usize {
    let mut s = d.skipped.load(Ordering::SeqCst);
    loop {
        let n = d.nondata.load(Ordering::SeqCst);
        let k = n.saturating_sub(s).min(want as u64);
        if k == 0 {
            return 0;
        }
        match d
            .skipped
            .compare_exchange(s, s + k, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => return k as usize,
            Err(x) => s = x,
        }
    }
}

/// Gives back claimed bytes that were not there to take.
fn unclaim(d: &Dir, k: usize) {
    if k > 0 {
        d.skipped.fetch_sub(k as u64, Ordering::SeqCst);
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
    /// Nothing counted is queued now.
    Empty,
    /// What is queued is data (the writer is back on the socket).
    Data,
    /// One byte is left.
    KeptOne,
    /// End-of-file.
    Eof,
}

/// The reader's index of direction `d` (past a jump of the writer to the
/// ring's start, if the reader is at it) and the writer's, or `None` for
/// indices the writer could not have left: the reader's beyond the
/// writer's or more than a ring behind, a jump that is not to a ring's
/// start or ends past the bytes written after it.
fn rx_indices(d: &Dir, size: u64) -> Option<(u64, u64)> {
    let head = d.head.load(Ordering::Acquire);
    let tail = d.tail.load(Ordering::Acquire);
    if head > tail {
        return None;
    }
    // With a jump not yet followed, the writer may have written a whole
    // ring past its end (the positions skipped are room): the span is
    // checked from where the bytes start.
    let within = |from: u64| (tail - from <= size).then_some((from, tail));
    if head == tail || d.skip_from.load(Ordering::Relaxed) != head {
        return within(head);
    }
    let to = d.skip_to.load(Ordering::Relaxed);
    if to <= head {
        // An old record (or none yet): no jump here.
        return within(head);
    }
    if to > tail || to & (size - 1) != 0 || to - head > size {
        return None;
    }
    within(to)
}

/// The writer's last jump of direction `d` to the ring's start, as
/// [`ProducerState::skip`] takes it, if the record is one the writer could
/// have left with `tail` written: forward, at most a ring long, to a
/// ring's start, not past `tail` (anything else is ignored for the room,
/// and the reader finds it corrupt if it is at it).
fn jump_record(d: &Dir, tail: u64, size: u64) -> Option<(u64, u64)> {
    let from = d.skip_from.load(Ordering::Relaxed);
    let to = d.skip_to.load(Ordering::Relaxed);
    (from < to && to - from <= size && to <= tail && to & (size - 1) == 0).then_some((from, to))
}

/// Whether a read that left `unread` bytes of a ring of `size` in it has
/// freed enough for a writer that found the ring full to go on: a quarter
/// or less left unread, the rule of the kernel's own Unix sockets (a
/// writer blocked on a full socket is woken when no more than a quarter of
/// its send buffer is still queued). A writer woken for every read would
/// sleep again after filling what that one read freed, one wake-up per
/// read on each side; this way a wake-up moves three quarters of a ring.
fn writer_may_wake(unread: u64, size: u64) -> bool {
    unread <= size / 4
}

/// The reader's index as the writer counts its room: past the jump
/// `skip` when the reader is at its start (it skips those positions).
fn room_head(head: u64, skip: Option<(u64, u64)>) -> u64 {
    match skip {
        Some((from, to)) if from == head => to,
        _ => head,
    }
}

/// Asks for the cache line at `p` in a state this CPU may write
/// (`PREFETCHW`), so that a write there a little later finds the line here
/// instead of waiting for the CPU that wrote it last. Only a hint: where
/// the CPU lacks the instruction, nothing.
#[inline]
fn prefetch_write<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if has_prefetchw() {
        // SAFETY: PREFETCHW only hints the cache: it reads no value into a
        // register, writes nothing and never faults, whatever `p` is; the
        // CPU has it (CPUID, checked).
        unsafe {
            std::arch::asm!(
                "prefetchw [{0}]",
                in(reg) p,
                options(nostack, preserves_flags, readonly)
            );
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// Asks for the cache line at `p` for reading (`PREFETCHT0`). Only a hint:
/// never faults, whatever `p` is; elsewhere than x86-64, nothing.
#[inline]
fn prefetch_read<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: PREFETCHT0 only hints the cache: it reads no value into a
    // register, writes nothing and never faults (SSE, on every x86-64).
    unsafe {
        std::arch::asm!(
            "prefetcht0 [{0}]",
            in(reg) p,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// Whether this x86-64 CPU has `PREFETCHW` (CPUID 8000_0001h, ECX bit 8),
/// asked once.
#[cfg(all(target_arch = "x86_64", not(miri)))]
fn has_prefetchw() -> bool {
    // 0: not asked yet, 1: no, 2: yes.
    static HAS: AtomicU32 = AtomicU32::new(0);
    match HAS.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            // SAFETY: CPUID exists on every x86-64 CPU; leaf 8000_0001h is
            // asked only where the highest extended leaf reaches it.
            #[allow(unused_unsafe)]
            let yes = unsafe {
                use std::arch::x86_64::__cpuid;
                __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
            };
            HAS.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

/// Where a side's next bytes come from ([`Accel::next_bytes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// The plain socket, for good.
    Socket,
    /// Server: the client's pre-attach bytes, on the socket.
    PlainPhase,
    /// The ring.
    Ring,
    /// Nowhere yet.
    Nothing,
}

/// What [`Accel::settle`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settled {
    /// The ring has bytes.
    Data,
    /// Empty and armed.
    Empty,
    /// Empty, and the peer is gone or shut down writing.
    Eof,
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
    let orig = interpose::send_buffer(sock).unwrap_or(0);
    let a = Accel::new(map, ring as u64, Side::Client, orig);
    let h = a.header();
    if h.magic.load(Ordering::Acquire) != u64::from_le_bytes(HELLO_MAGIC)
        || h.ring_size.load(Ordering::Acquire) as usize != ring
    {
        return Err(interpose::error("accel attach", sock, ffi::EIO));
    }
    let _ = interpose::set_send_buffer(sock, FILLER_SNDBUF);
    h.plain_before.store(plain_written, Ordering::Release);
    // The server may have left before this attach (`Accel::leave`): then
    // the segment already says that both directions are on the socket, and
    // the connection is plain from its first call.
    let _ = h
        .attached
        .compare_exchange(0, ATTACHED, Ordering::SeqCst, Ordering::SeqCst);
    Ok(Attach::Attached(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direction whose last jump record says `from..to`.
    fn jumped(from: u64, to: u64) -> Box<Dir> {
        // SAFETY: every field of `Dir` is an atomic integer or padding
        // bytes, for all of which all-zero bits are a valid value.
        let d: Box<Dir> = Box::new(unsafe { std::mem::zeroed() });
        d.skip_from.store(from, Ordering::Relaxed);
        d.skip_to.store(to, Ordering::Relaxed);
        d
    }

    /// A peer may scribble any numbers in the record: the writer counts
    /// only a jump it could have made, each condition checked alone.
    #[test]
    fn a_jump_record_counts_only_as_the_writer_could_have_left_it() {
        let size = 4096;
        assert_eq!(
            jump_record(&jumped(4000, 4096), 4200, size),
            Some((4000, 4096))
        );
        // The tail right at the jump's end, and a jump a whole ring long.
        assert_eq!(
            jump_record(&jumped(4000, 4096), 4096, size),
            Some((4000, 4096))
        );
        assert_eq!(
            jump_record(&jumped(4096, 8192), 9000, size),
            Some((4096, 8192))
        );
        // Not forward.
        assert_eq!(jump_record(&jumped(4096, 4096), 9000, size), None);
        assert_eq!(jump_record(&jumped(5000, 4096), 9000, size), None);
        // Longer than a ring.
        assert_eq!(jump_record(&jumped(4095, 8192), 9000, size), None);
        // Past the tail.
        assert_eq!(jump_record(&jumped(4000, 4096), 4095, size), None);
        // Not to a ring's start.
        assert_eq!(jump_record(&jumped(4000, 4100), 9000, size), None);
    }

    #[test]
    fn the_room_skips_a_jump_only_for_a_reader_at_its_start() {
        assert_eq!(room_head(4000, Some((4000, 4096))), 4096);
        assert_eq!(room_head(3999, Some((4000, 4096))), 3999);
        assert_eq!(room_head(4096, Some((4000, 4096))), 4096);
        assert_eq!(room_head(4000, None), 4000);
    }
}
