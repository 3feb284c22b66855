//! [`ShmStream`]: a Unix-socket connection whose bytes travel through a
//! shared segment: connecting, reading, writing, shutting down, closing.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::copy::{Chooser, CopyPath};
use super::hello::{self, Hello, ACK};
use super::ring::{ConsumerState, Corrupt, ProducerState};
use super::segment::{
    self, segment_len, valid_ring, Role, SegmentKind, Side, CLOSED, MAGIC, READS_SHUT, VERSION,
    WAIT_FUTEX, WAIT_NONE, WAIT_SOCKET, WRITES_SHUT,
};
use super::shared::{self, Shared};
use super::split::{ShmReadHalf, ShmWriteHalf};
use super::wait::futex_wake;
use crate::sys::cpu::{cpu_tag, share_last_level_cache};
use crate::sys::errno;
use crate::sys::fdpass::send_with_fds;
use crate::sys::process::getpid;
use crate::sys::socket::{Domain, Shutdown, SockAddr, Socket, Type};

/// Options of [`ShmStream::connect_with`]: start from `Default` and change
/// what you need, by the setters or by assigning the fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ShmOptions {
    /// How the segment is made.
    pub kind: SegmentKind,
    /// Bytes per direction: a power of two from 4 KiB to 1 GiB (default
    /// 1 MiB).
    pub ring_size: usize,
    /// Back every page of the segment when the connection is made, on both
    /// sides (default true): no byte then pays for a page fault, which on
    /// the rings' first lap would slow every 4 KiB by several microseconds.
    /// The price is the whole segment's memory from the start; turn it off
    /// for many connections that carry little.
    pub prefault: bool,
}

option_setters!(ShmOptions {
    /// Sets [`kind`](Self#structfield.kind).
    kind: SegmentKind,
    /// Sets [`ring_size`](Self#structfield.ring_size).
    ring_size: usize,
    /// Sets [`prefault`](Self#structfield.prefault).
    prefault: bool,
});

impl Default for ShmOptions {
    fn default() -> Self {
        Self {
            kind: SegmentKind::Memfd,
            ring_size: 1 << 20,
            prefault: true,
        }
    }
}

/// The smallest write copied with non-temporal stores when the reader runs
/// on another CPU: large writes are streams, and the reader gets their
/// bytes from memory faster than line by line out of the writer's cache
/// (`shm_bench --placement two_cpus` measures both copies); small ones stay
/// cached for latency.
const STREAMING_MIN: usize = 16 * 1024;

pub(crate) fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("shared-memory stream: {what}"),
    )
}

fn corrupt(_: Corrupt) -> io::Error {
    invalid("the peer corrupted the ring indices")
}

/// The pids a stream value claimed reading and writing for (0: none). A
/// copy inherited by a forked child carries the parent's pid, so the child
/// claims anew.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Claims {
    pub(crate) reader: u32,
    pub(crate) writer: u32,
}

impl Claims {
    fn get(&self, role: Role) -> u32 {
        match role {
            Role::Reader => self.reader,
            Role::Writer => self.writer,
        }
    }

    fn set(&mut self, role: Role, pid: u32) {
        match role {
            Role::Reader => self.reader = pid,
            Role::Writer => self.writer = pid,
        }
    }
}

/// A connection whose bytes go through shared memory; see the module docs
/// of [`crate::ipc`].
///
/// `Read` and `Write` are implemented for `&ShmStream` too, so code that
/// shares the stream (event-loop handlers holding an `Rc`, say) can read and
/// write through a shared reference. It is `Send` but not `Sync`: one
/// thread at a time uses it, and each direction has one reader and one
/// writer. To read in one process and write in another, [`fork`](super::fork)
/// and let each keep one direction.
#[must_use = "dropping an ShmStream closes the connection at once"]
pub struct ShmStream {
    pub(crate) sock: Socket,
    pub(crate) shared: Arc<Shared>,
    pub(crate) tx: Cell<ProducerState>,
    pub(crate) rx: Cell<ConsumerState>,
    pub(crate) nonblocking: Cell<bool>,
    pub(crate) write_shut: Cell<bool>,
    pub(crate) read_shut: Cell<bool>,
    pub(crate) claimed: Cell<Claims>,
    /// The peer's socket end closed (it died, or closed without telling).
    pub(crate) peer_gone: Cell<bool>,
    /// When we last woke the peer from a sleep.
    pub(crate) woke_peer: Cell<Option<Instant>>,
    /// How large writes across CPUs are copied (`copy.rs`).
    pub(crate) copy: Cell<CopyPath>,
    /// Made at the first such write.
    pub(crate) chooser: Cell<Option<Chooser>>,
}

static_assertions::assert_impl_all!(ShmStream: Send);
static_assertions::assert_not_impl_any!(ShmStream: Sync);

impl fmt::Debug for ShmStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmStream")
            .field("socket", &self.sock.as_raw_fd())
            .field("side", &self.shared.side)
            .field("ring_size", &self.shared.ring_size)
            .finish()
    }
}

impl ShmStream {
    /// Connects to a [`ShmListener`](super::ShmListener) at `path` with the
    /// default options (a sealed memfd, 1 MiB per direction).
    pub fn connect(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::connect_with(path, ShmOptions::default())
    }

    /// Connects with chosen options: makes the segment, connects the Unix
    /// socket, sends the segment (its fd with `SCM_RIGHTS`, or its SysV
    /// id), and waits for the listener's acknowledgement, at most
    /// [`HANDSHAKE_TIMEOUT`](Self::HANDSHAKE_TIMEOUT).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a bad ring size; the socket's and the segment's
    /// own errors; `ConnectionRefused` when the listener closes instead of
    /// acknowledging (it refused the segment, or is not a procwire
    /// listener), `TimedOut` when it does neither in time.
    pub fn connect_with(path: impl AsRef<Path>, opts: ShmOptions) -> io::Result<Self> {
        let seg = Offer::make(opts)?;
        let sock = Socket::new(Domain::UNIX, Type::STREAM)?;
        sock.connect(SockAddr::unix(path.as_ref()))?;
        let c = seg.send(sock)?;
        loop {
            if let Some(shared) = c.acknowledged()? {
                return Self::established(c.sock, shared);
            }
            let left = c.deadline.saturating_duration_since(Instant::now());
            c.sock.wait_readable(Some(left))?;
        }
    }

    /// How long a connecting side waits for the listener's
    /// acknowledgement.
    pub const HANDSHAKE_TIMEOUT: std::time::Duration = hello::TIMEOUT;

    /// Starts a connection without blocking: makes the segment, connects,
    /// and sends the hello; the returned [`ShmConnecting`] finishes once
    /// the listener acknowledges. Its fd turns readable when it has.
    ///
    /// # Errors
    ///
    /// As [`connect_with`](Self::connect_with), and `WouldBlock` when the
    /// listener's backlog is full (a Unix socket's `connect` can't be left
    /// in progress): try again later.
    pub fn connect_nonblocking(
        path: impl AsRef<Path>,
        opts: ShmOptions,
    ) -> io::Result<ShmConnecting> {
        let seg = Offer::make(opts)?;
        let sock = Socket::new_nonblocking(Domain::UNIX, Type::STREAM)?;
        sock.connect(SockAddr::unix(path.as_ref()))?;
        seg.send(sock)
    }

    /// The stream of an acknowledged segment, its socket made blocking.
    fn established(sock: Socket, shared: Arc<Shared>) -> io::Result<Self> {
        sock.set_nonblocking(false)?;
        shared::register(&shared);
        Ok(Self::new(sock, shared))
    }

    pub(crate) fn new(sock: Socket, shared: Arc<Shared>) -> Self {
        Self {
            sock,
            shared,
            tx: Cell::new(ProducerState::default()),
            rx: Cell::new(ConsumerState::default()),
            nonblocking: Cell::new(false),
            write_shut: Cell::new(false),
            read_shut: Cell::new(false),
            claimed: Cell::new(Claims::default()),
            peer_gone: Cell::new(false),
            woke_peer: Cell::new(None),
            copy: Cell::new(CopyPath::Auto),
            chooser: Cell::new(None),
        }
    }

    /// How this side copies its writes into the ring: [`CopyPath::Auto`]
    /// (the default) measures per connection which copy the host moves
    /// faster; the others force one (for tests and benchmarks). Each side
    /// chooses for the direction it writes.
    pub fn set_copy_path(&self, path: CopyPath) {
        self.copy.set(path);
        self.chooser.set(None);
    }

    /// The copy large writes to a reader on another CPU take now:
    /// [`CopyPath::Plain`] or [`CopyPath::Streaming`], what `Auto` has
    /// chosen so far (plain before the first such write).
    pub fn current_copy(&self) -> CopyPath {
        let forced = self.copy.get();
        if forced != CopyPath::Auto {
            return forced;
        }
        match self.chooser.get() {
            Some(c) if c.streaming() => CopyPath::Streaming,
            _ => CopyPath::Plain,
        }
    }

    /// Bytes per direction.
    pub fn ring_size(&self) -> usize {
        self.shared.ring_size as usize
    }

    /// The mapped segment's first byte and length, for tests that play a
    /// hostile peer. Writing through it can only garble this stream.
    #[cfg(feature = "testing")]
    pub fn raw_segment(&self) -> (*mut u8, usize) {
        (
            self.shared.mem.base(),
            segment_len(self.shared.ring_size as usize),
        )
    }

    /// In non-blocking mode reads and writes return `WouldBlock` instead of
    /// waiting; register the stream (its socket, [`AsFd`]) for readability
    /// and the loop reports when to try again.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.nonblocking.set(on);
        if on {
            // From now on the peer wakes us through the socket: ask for
            // that before the first read, so data that arrives before it
            // makes the socket readable.
            self.data_waiter().store(WAIT_SOCKET, Ordering::SeqCst);
        }
        Ok(())
    }

    /// The word through which we ask the peer to wake us for data (in the
    /// peer's direction).
    fn data_waiter(&self) -> &AtomicU32 {
        &self.shared.header().data_waiter[self.shared.peer().index()]
    }

    /// The word through which we ask the peer to wake us for space (in our
    /// own direction).
    fn space_waiter(&self) -> &AtomicU32 {
        &self.shared.header().space_waiter[self.shared.side.index()]
    }

    /// This side's `closed` word.
    fn closed_word(&self) -> &AtomicU32 {
        &self.shared.header().closed[self.shared.side.index()]
    }

    /// Splits the stream into a reading half and a writing half, which may
    /// move to different threads (the stream itself is not `Sync`). The
    /// connection closes once both halves are gone; dropping the writing
    /// half first shuts down writing, so the peer reads end-of-file.
    ///
    /// Both halves block: a waiting half then keeps checking the peer every
    /// 40 ms instead of sleeping on the socket the two share.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a stream in non-blocking mode; the error of
    /// duplicating the socket (`fcntl(F_DUPFD_CLOEXEC)`).
    pub fn split(self) -> io::Result<(ShmReadHalf, ShmWriteHalf)> {
        if self.nonblocking.get() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ShmStream::split: the stream is non-blocking; halves block",
            ));
        }
        let sock = self.sock.try_clone()?;
        let s = &self.shared;
        s.holders.fetch_add(1, Ordering::Relaxed);
        s.refs().fetch_add(1, Ordering::AcqRel);
        let claims = self.claimed.get();
        self.claimed.set(Claims {
            reader: 0,
            ..claims
        });
        let reader = ShmStream {
            sock,
            shared: Arc::clone(&self.shared),
            tx: Cell::new(self.tx.get()),
            rx: Cell::new(self.rx.get()),
            nonblocking: Cell::new(false),
            write_shut: Cell::new(true),
            read_shut: Cell::new(self.read_shut.get()),
            claimed: Cell::new(Claims {
                writer: 0,
                ..claims
            }),
            peer_gone: Cell::new(self.peer_gone.get()),
            woke_peer: Cell::new(None),
            copy: Cell::new(self.copy.get()),
            chooser: Cell::new(None),
        };
        let owner = s.pid.load(Ordering::Relaxed);
        Ok((ShmReadHalf(reader), ShmWriteHalf::new(self, owner)))
    }

    /// Shuts down writing (the peer reads EOF once it has read what was
    /// sent), reading (our reads return EOF and the peer's writes fail with
    /// `BrokenPipe`), or both, as on a socket; the other direction goes on.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let h = self.shared.header();
        let (me, peer) = (self.shared.side.index(), self.shared.peer().index());
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.write_shut.set(true);
            self.closed_word().fetch_or(WRITES_SHUT, Ordering::Release);
            self.wake(&h.data_waiter[me]);
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            self.read_shut.set(true);
            self.closed_word().fetch_or(READS_SHUT, Ordering::Release);
            self.wake(&h.space_waiter[peer]);
        }
        Ok(())
    }

    /// Claims reading or writing for this process; no system call once
    /// claimed.
    fn claim(&self, role: Role) -> io::Result<()> {
        let s = &self.shared;
        let pid = s.pid.load(Ordering::Relaxed);
        if self.claimed.get().get(role) == pid {
            return Ok(());
        }
        let word = s.header().owner(s.side, role);
        match word.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {}
            Err(p) if p == pid => {}
            Err(p) => {
                let what = match role {
                    Role::Reader => "reads",
                    Role::Writer => "writes",
                };
                return Err(crate::sys::Error::new(
                    "ShmStream",
                    format!("process {p} already {what} this direction; one reader and one writer per direction"),
                    errno::EBUSY,
                )
                .into_io_explained());
            }
        }
        let mut c = self.claimed.get();
        c.set(role, pid);
        self.claimed.set(c);
        Ok(())
    }

    /// Wakes whoever waits on `word` (data or space).
    fn wake(&self, word: &AtomicU32) {
        // Pairs with the waiter's store-then-recheck: either it sees our
        // index, or we see its flag.
        fence(Ordering::SeqCst);
        if word.load(Ordering::Relaxed) == WAIT_NONE {
            return;
        }
        match word.swap(WAIT_NONE, Ordering::AcqRel) {
            WAIT_FUTEX => futex_wake(word),
            WAIT_SOCKET => {
                // Full socket buffer: a wake-up is pending anyway.
                let _ = self.sock.send_nonblocking(b"n");
            }
            _ => return,
        }
        self.woke_peer.set(Some(Instant::now()));
    }

    /// Whether the peer will send no more: it shut down its writing, closed
    /// its side, or its socket is gone.
    fn peer_sends_no_more(&self) -> bool {
        self.peer_closed(WRITES_SHUT)
    }

    /// Whether the peer will read no more: it shut down its reading, closed
    /// its side, or its socket is gone.
    fn peer_reads_no_more(&self) -> bool {
        self.peer_closed(READS_SHUT)
    }

    fn peer_closed(&self, half: u32) -> bool {
        self.peer_gone.get()
            || self.shared.header().closed[self.shared.peer().index()].load(Ordering::Acquire)
                & (CLOSED | half)
                != 0
    }

    /// Drains wake-up bytes from the socket; notes end-of-file (peer gone).
    pub(crate) fn drain_socket(&self) {
        let mut b = [0u8; 64];
        loop {
            match self.sock.recv_nonblocking(&mut b) {
                Ok(0) => {
                    self.peer_gone.set(true);
                    return;
                }
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == errno::EINTR => continue,
                Err(e) if e.is_would_block() => return,
                Err(_) => {
                    self.peer_gone.set(true);
                    return;
                }
            }
        }
    }

    /// Bytes to read in the peer's direction (re-reading its index when the
    /// cached view shows none).
    fn available(&self) -> io::Result<u64> {
        let mut c = self.rx.get();
        let avail = self.shared.ring(self.shared.peer()).available(&mut c);
        self.rx.set(c);
        avail.map_err(corrupt)
    }

    /// Free space in our direction (re-reading the peer's index when the
    /// cached view shows none).
    fn free(&self) -> io::Result<u64> {
        let mut p = self.tx.get();
        let free = self.shared.ring(self.shared.side).free(&mut p, 1);
        self.tx.set(p);
        free.map_err(corrupt)
    }

    pub(crate) fn read_inner(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.read_shut.get() {
            return Ok(0);
        }
        self.claim(Role::Reader)?;
        let s = &self.shared;
        let ring = s.ring(s.peer());
        loop {
            let mut c = self.rx.get();
            let r = ring.read(&mut c, buf);
            self.rx.set(c);
            let n = r.map_err(corrupt)?;
            if n > 0 {
                // As a socket does for its writers: a writer waiting for room
                // is woken once half the ring is free (by what we know
                // without another look at shared memory), so on one CPU the
                // two sides take turns in large steps, not one switch per
                // read. Emptying the ring always crosses the line.
                let c = self.rx.get();
                if c.tail_cache - c.head <= s.ring_size / 2 {
                    self.wake(&s.header().space_waiter[s.peer().index()]);
                }
                return Ok(n);
            }
            if self.peer_sends_no_more() {
                // Anything sent before the close is still read first.
                if self.available()? == 0 {
                    return Ok(0);
                }
                continue;
            }
            if self.nonblocking.get() {
                self.data_waiter().store(WAIT_SOCKET, Ordering::SeqCst);
                // Checked again after asking for a wake-up: the peer's
                // shutdown may have come just before.
                if self.available()? > 0 || self.peer_sends_no_more() {
                    continue;
                }
                self.drain_socket();
                if self.peer_gone.get() {
                    continue;
                }
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.wait(self.data_waiter(), &|| {
                Ok(self.available()? > 0 || self.peer_sends_no_more())
            })?;
        }
    }

    pub(crate) fn write_inner(&self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.write_shut.get() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.claim(Role::Writer)?;
        let s = &self.shared;
        let ring = s.ring(s.side);
        let h = s.header();
        // Large writes to a reader running on another CPU take the copy
        // the chooser picks (`copy.rs`); the rest plain stores.
        let mut chooser = None;
        if buf.len() >= STREAMING_MIN {
            let me = cpu_tag();
            let peer = h.running[s.peer().index()].load(Ordering::Relaxed);
            if me != 0 && peer != 0 && peer & segment::ASLEEP == 0 && peer != me {
                let mut c = self.chooser.get().unwrap_or_else(|| {
                    let shared_cache = share_last_level_cache(me as usize - 1, peer as usize - 1);
                    Chooser::new(self.copy.get(), shared_cache == Some(false))
                });
                c.begin(Instant::now());
                chooser = Some(c);
            }
        }
        let streaming = chooser.is_some_and(|c| c.streaming());
        loop {
            if self.peer_reads_no_more() {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "shared-memory stream: the peer closed",
                ));
            }
            let mut p = self.tx.get();
            let r = ring.write(&mut p, buf, streaming);
            self.tx.set(p);
            let n = r.map_err(corrupt)?;
            if n > 0 {
                self.wake(&h.data_waiter[s.side.index()]);
                if let Some(mut c) = chooser {
                    c.end(n, Instant::now());
                    self.chooser.set(Some(c));
                }
                return Ok(n);
            }
            if self.nonblocking.get() {
                self.space_waiter().store(WAIT_SOCKET, Ordering::SeqCst);
                if self.free()? > 0 || self.peer_reads_no_more() {
                    continue;
                }
                self.drain_socket();
                if self.peer_gone.get() {
                    continue;
                }
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.wait(self.space_waiter(), &|| {
                Ok(self.free()? > 0 || self.peer_reads_no_more())
            })?;
        }
    }
}

/// A segment made for a connection, with the hello that offers it.
struct Offer {
    shared: Arc<Shared>,
    fd: Option<std::os::fd::OwnedFd>,
    hello: Hello,
}

impl Offer {
    /// Makes and initialises the segment (before the socket connects, so
    /// the hello follows the connect at once: a listener gives a peer
    /// little time for it).
    fn make(opts: ShmOptions) -> io::Result<Offer> {
        let ring_size = opts.ring_size as u64;
        if !valid_ring(ring_size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ring size {} is not a power of two from 4 KiB to 1 GiB",
                    opts.ring_size
                ),
            ));
        }
        let seg = segment::create(opts.kind, segment_len(opts.ring_size))?;
        if opts.prefault {
            seg.mem.memory().populate()?;
        }
        let shared = Arc::new(Shared {
            mem: seg.mem,
            ring_size,
            side: Side::Connector,
            pid: AtomicU32::new(getpid() as u32),
            holders: AtomicU32::new(1),
        });
        let h = shared.header();
        h.ring_size.store(ring_size, Ordering::Relaxed);
        h.version.store(VERSION, Ordering::Relaxed);
        shared.refs().store(1, Ordering::Relaxed);
        h.running[Side::Connector.index()].store(cpu_tag(), Ordering::Relaxed);
        // Until it says otherwise, wake us for data through the socket (see
        // the listener's side).
        h.data_waiter[Side::Acceptor.index()].store(WAIT_SOCKET, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        let hello = Hello {
            kind: opts.kind,
            prefault: opts.prefault,
            ring_size,
            sysv_id: seg.sysv_id,
        };
        Ok(Offer {
            shared,
            fd: seg.fd,
            hello,
        })
    }

    /// Sends the hello with the segment on a connected socket.
    fn send(self, sock: Socket) -> io::Result<ShmConnecting> {
        let fds: Vec<BorrowedFd<'_>> = self.fd.iter().map(AsFd::as_fd).collect();
        // A new socket's buffer is empty: the hello fits at once.
        send_with_fds(&sock, &self.hello.encode(), &fds)?;
        Ok(ShmConnecting {
            sock,
            shared: Cell::new(Some(self.shared)),
            deadline: Instant::now() + hello::TIMEOUT,
        })
    }
}

/// A connection whose hello is sent, waiting for the listener's
/// acknowledgement; made by [`ShmStream::connect_nonblocking`]. Register
/// its fd ([`AsFd`]) for readability and call
/// [`try_finish`](Self::try_finish) when it is reported.
///
/// `try_finish` takes `&self`, so the event loop can own the value as the
/// source it watches; the stream it returns has its own fd.
#[must_use = "dropping an ShmConnecting abandons the connection"]
pub struct ShmConnecting {
    sock: Socket,
    shared: Cell<Option<Arc<Shared>>>,
    deadline: Instant,
}

static_assertions::assert_impl_all!(ShmConnecting: Send);

impl fmt::Debug for ShmConnecting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmConnecting")
            .field("socket", &self.sock.as_raw_fd())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl ShmConnecting {
    /// Finishes the handshake if the listener has answered: `Ok(Some)` with
    /// the stream (in blocking mode, as [`ShmStream::connect`] gives it),
    /// `Ok(None)` while it hasn't and the deadline is ahead.
    ///
    /// # Errors
    ///
    /// `ConnectionRefused` when the listener closed instead of
    /// acknowledging, `TimedOut` past the deadline
    /// ([`ShmStream::HANDSHAKE_TIMEOUT`] from the start), `InvalidInput`
    /// once the stream was returned.
    pub fn try_finish(&self) -> io::Result<Option<ShmStream>> {
        match self.acknowledged()? {
            Some(shared) => {
                let sock = self.sock.try_clone()?;
                Ok(Some(ShmStream::established(sock, shared)?))
            }
            None => Ok(None),
        }
    }

    /// The segment, once the listener acknowledged it.
    fn acknowledged(&self) -> io::Result<Option<Arc<Shared>>> {
        let Some(shared) = self.shared.take() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ShmConnecting::try_finish: the stream was returned already",
            ));
        };
        let r = self.ack();
        if !matches!(r, Ok(true)) {
            self.shared.set(Some(shared));
            return r.map(|_| None);
        }
        Ok(Some(shared))
    }

    /// Reads the listener's answer: `true` for the acknowledgement.
    fn ack(&self) -> io::Result<bool> {
        let mut ack = [0u8; 1];
        // `MSG_DONTWAIT`: never blocks, so never `EINTR`.
        let n = match self.sock.recv_nonblocking(&mut ack) {
            Ok(n) => n,
            Err(e) if e.is_would_block() => {
                if Instant::now() >= self.deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "shared-memory stream: the listener did not acknowledge in time",
                    ));
                }
                return Ok(false);
            }
            // A listener that closes on a refusal may reset.
            Err(e) if e.raw_os_error() == errno::ECONNRESET => 0,
            Err(e) => return Err(e.into()),
        };
        if n != 1 || ack[0] != ACK {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "shared-memory stream: the listener refused the segment",
            ));
        }
        Ok(true)
    }

    /// When [`try_finish`](Self::try_finish) gives up waiting.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl AsFd for ShmConnecting {
    /// The connection's socket: readable once the listener answered.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Drop for ShmStream {
    fn drop(&mut self) {
        let s = &self.shared;
        let h = s.header();
        let pid = s.pid.load(Ordering::Relaxed);
        let claimed = self.claimed.get();
        for role in [Role::Reader, Role::Writer] {
            if claimed.get(role) == pid {
                let _ = h.owner(s.side, role).compare_exchange(
                    pid,
                    0,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
        }
        s.holders.fetch_sub(1, Ordering::Relaxed);
        if s.refs().fetch_sub(1, Ordering::AcqRel) <= 1 {
            // The last holder of this side: tell the peer, wake its waiters.
            self.closed_word().fetch_or(CLOSED, Ordering::Release);
            self.wake(&h.data_waiter[s.side.index()]);
            self.wake(&h.space_waiter[s.peer().index()]);
            let _ = self.sock.shutdown(Shutdown::Both);
        }
    }
}

impl io::Read for &ShmStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inner(buf)
    }
}

impl io::Read for ShmStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inner(buf)
    }
}

impl io::Write for &ShmStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_inner(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Write for ShmStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_inner(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for ShmStream {
    /// The connection's socket: readable when the peer woke us in
    /// non-blocking mode, and hung up when the peer is gone.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

crate::sys::fd::as_raw_fd_from_as_fd!(ShmStream, ShmConnecting);
