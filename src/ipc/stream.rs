//! `ShmListener` / `ShmStream`: a Unix-socket connection whose bytes travel
//! through a shared segment.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::ring::{ConsumerState, Corrupt, ProducerState, RingRef};
use super::segment::{
    segment_len, valid_ring, Header, ASLEEP, CLOSED, HEADER_SIZE, MAGIC, READS_SHUT, VERSION,
    WAIT_FUTEX, WAIT_NONE, WAIT_SOCKET, WRITES_SHUT,
};
use crate::sys::errno;
use crate::sys::fdpass::{recv_with_fds, send_with_fds};
use crate::sys::process::getpid;
use crate::sys::shm::{self, Access, Mapping, SharedMemory, SysvMapping};
use crate::sys::socket::{Domain, Shutdown, SockAddr, Socket, Type};

/// How the segment is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SegmentKind {
    /// An anonymous memfd, sealed against resizing: it has no name, so it
    /// can't leak, and the peer can't shrink it under us (Linux, FreeBSD).
    #[default]
    Memfd,
    /// A POSIX `shm_open` object, mode 0600, unlinked as soon as it is open.
    Posix,
    /// A SysV segment, `IPC_PRIVATE`, mode 0600, removed (`IPC_RMID`) as soon
    /// as both sides attached; it lives until the last detach.
    SysV,
}

/// Options of [`ShmStream::connect_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

impl Default for ShmOptions {
    fn default() -> Self {
        Self {
            kind: SegmentKind::Memfd,
            ring_size: 1 << 20,
            prefault: true,
        }
    }
}

/// The bit of the hello's kind byte that asks both sides to prefault.
const HELLO_PREFAULT: u8 = 0x80;

/// How long a blocked call sleeps before it checks that the peer lives.
const LIVENESS: Duration = Duration::from_millis(40);
/// The longest a waiter sleeps on the socket once idle (see
/// `ShmStream::deep_sleep`): it only bounds a wake-up lost between two
/// processes that share a side without having said so.
const DEEP_BACKSTOP: Duration = Duration::from_secs(1);
/// The smallest write copied with non-temporal stores when the reader runs
/// on another CPU: large writes are streams, and the reader gets their
/// bytes from memory faster than line by line out of the writer's cache
/// (11 to 16 GB/s across two CPUs here); small ones stay cached for latency.
const STREAMING_MIN: usize = 16 * 1024;
/// The longest a waiter spins while the peer runs on another CPU.
const SPIN: Duration = Duration::from_micros(30);
/// The longest a waiter spins for a peer it has just woken to start
/// running: about a wake-up's cost on a virtual machine.
const WAKE_SPIN: Duration = Duration::from_micros(100);
/// The handshake: "PWSHM", kind, ring size (u64 LE), SysV id (i32 LE).
const HELLO_LEN: usize = 5 + 1 + 8 + 4;
const ACK: u8 = b'A';
/// How long the accepting side waits for a connecting side's hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("shared-memory stream: {what}"),
    )
}

fn corrupt(_: Corrupt) -> io::Error {
    invalid("the peer corrupted the ring indices")
}

enum Mem {
    Map(Mapping),
    Sysv(SysvMapping),
}

impl Mem {
    fn memory(&self) -> &dyn SharedMemory {
        match self {
            Mem::Map(m) => m,
            Mem::Sysv(m) => m,
        }
    }

    fn base(&self) -> *mut u8 {
        match self {
            Mem::Map(m) => m.as_ptr(),
            Mem::Sysv(m) => m.as_ptr(),
        }
    }
}

/// The mapping and what every copy of a stream in this process shares.
pub(crate) struct Shared {
    mem: Mem,
    ring: u64,
    side: usize,
    /// This process's pid as the stream knows it (updated by `ipc::fork`).
    pid: AtomicU32,
    /// How many `ShmStream` values of this process hold the side: 1, or 2
    /// after [`ShmStream::split`]; each counts in the header's `refs`.
    holders: AtomicU32,
}

// SAFETY: `mem` is a live mapping owned here; everything reached through it
// is atomics or raw bytes copied in and out; no reference to it escapes.
unsafe impl Send for Shared {}
// SAFETY: see `Send`.
unsafe impl Sync for Shared {}

impl Shared {
    fn header(&self) -> &Header {
        // SAFETY: the mapping holds at least HEADER_SIZE bytes (checked when
        // it was made or opened), is page aligned (so 64-byte aligned for
        // `Header`), lives as long as `self`, and every field of `Header` is
        // an atomic, so other processes' writes are not data races.
        unsafe { &*(self.mem.base() as *const Header) }
    }

    fn ring(&self, direction: usize) -> RingRef<'_> {
        let h = self.header();
        RingRef {
            // SAFETY: HEADER_SIZE + 2 * ring is the mapping's length, so
            // this stays inside it.
            data: unsafe {
                self.mem
                    .base()
                    .add(HEADER_SIZE + direction * self.ring as usize)
            },
            size: self.ring,
            tail: &h.tail[direction].v,
            head: &h.head[direction].v,
        }
    }

    fn peer(&self) -> usize {
        1 - self.side
    }
}

/// Streams alive in this process, for [`super::fork`].
pub(crate) static REGISTRY: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

fn register(shared: &Arc<Shared>) {
    let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    reg.retain(|w| w.strong_count() > 0);
    reg.push(Arc::downgrade(shared));
}

/// Raises the holder count of every live stream's side (before a fork);
/// returns them so the child can update its pid, or the parent undo it.
pub(crate) fn fork_prepare() -> Vec<Arc<Shared>> {
    let reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    let live: Vec<Arc<Shared>> = reg.iter().filter_map(Weak::upgrade).collect();
    for s in &live {
        let n = s.holders.load(Ordering::Relaxed);
        s.header().refs.v[s.side].fetch_add(n, Ordering::AcqRel);
    }
    live
}

/// In the child after a fork: the streams' pid becomes the child's.
pub(crate) fn fork_child(live: &[Arc<Shared>], pid: u32) {
    for s in live {
        s.pid.store(pid, Ordering::Relaxed);
    }
}

/// When the fork failed: undo [`fork_prepare`].
pub(crate) fn fork_failed(live: &[Arc<Shared>]) {
    for s in live {
        let n = s.holders.load(Ordering::Relaxed);
        s.header().refs.v[s.side].fetch_sub(n, Ordering::AcqRel);
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn cpu_tag() -> u32 {
    crate::sys::cpu::current_cpu() as u32 + 1
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn cpu_tag() -> u32 {
    // Unknown: never "another CPU", so waiters don't spin.
    0
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
pub struct ShmStream {
    sock: Socket,
    shared: Arc<Shared>,
    tx: Cell<ProducerState>,
    rx: Cell<ConsumerState>,
    nonblocking: Cell<bool>,
    write_shut: Cell<bool>,
    read_shut: Cell<bool>,
    /// The pids this copy claimed reading and writing for (0: none). A copy
    /// inherited by a forked child carries the parent's pid here, so the
    /// child claims anew.
    claimed: Cell<[u32; 2]>,
    /// The peer's socket end closed (it died, or closed without telling).
    peer_gone: Cell<bool>,
    /// When we last woke the peer from a sleep.
    woke_peer: Cell<Option<Instant>>,
}

static_assertions::assert_impl_all!(ShmStream: Send);
static_assertions::assert_not_impl_any!(ShmStream: Sync);

impl fmt::Debug for ShmStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmStream")
            .field("socket", &self.sock.as_raw_fd())
            .field("side", &self.shared.side)
            .field("ring_size", &self.shared.ring)
            .finish()
    }
}

impl ShmStream {
    /// Connects to a [`ShmListener`] at `path` with the default options (a
    /// sealed memfd, 1 MiB per direction).
    pub fn connect(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::connect_with(path, ShmOptions::default())
    }

    /// Connects with chosen options: connects the Unix socket, makes the
    /// segment, sends it (its fd with `SCM_RIGHTS`, or its SysV id), and
    /// waits for the listener's acknowledgement.
    pub fn connect_with(path: impl AsRef<Path>, opts: ShmOptions) -> io::Result<Self> {
        let ring = opts.ring_size as u64;
        if !valid_ring(ring) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ring size {} is not a power of two from 4 KiB to 1 GiB",
                    opts.ring_size
                ),
            ));
        }
        let sock = Socket::new(Domain::UNIX, Type::STREAM)?;
        sock.connect(SockAddr::unix(path.as_ref()))?;
        let len = segment_len(opts.ring_size);
        let (mem, fd, sysv_id) = create_segment(opts.kind, len)?;
        if opts.prefault {
            mem.memory().populate()?;
        }
        let shared = Arc::new(Shared {
            mem,
            ring,
            side: 0,
            pid: AtomicU32::new(getpid() as u32),
            holders: AtomicU32::new(1),
        });
        let h = shared.header();
        h.ring_size.store(ring, Ordering::Relaxed);
        h.version.store(VERSION, Ordering::Relaxed);
        h.refs.v[0].store(1, Ordering::Relaxed);
        h.running[0].v.store(cpu_tag(), Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);

        let mut hello = [0u8; HELLO_LEN];
        hello[..5].copy_from_slice(b"PWSHM");
        hello[5] = opts.kind as u8 | if opts.prefault { HELLO_PREFAULT } else { 0 };
        hello[6..14].copy_from_slice(&ring.to_le_bytes());
        hello[14..18].copy_from_slice(&sysv_id.to_le_bytes());
        let fds: Vec<BorrowedFd<'_>> = fd.iter().map(AsFd::as_fd).collect();
        send_with_fds(&sock, &hello, &fds)?;
        drop(fd);
        let mut ack = [0u8; 1];
        sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let n = sock.recv(&mut ack)?;
        if n != 1 || ack[0] != ACK {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "shared-memory stream: the listener refused the segment",
            ));
        }
        sock.set_read_timeout(None)?;
        register(&shared);
        Ok(Self::new(sock, shared))
    }

    fn new(sock: Socket, shared: Arc<Shared>) -> Self {
        Self {
            sock,
            shared,
            tx: Cell::new(ProducerState::default()),
            rx: Cell::new(ConsumerState::default()),
            nonblocking: Cell::new(false),
            write_shut: Cell::new(false),
            read_shut: Cell::new(false),
            claimed: Cell::new([0, 0]),
            peer_gone: Cell::new(false),
            woke_peer: Cell::new(None),
        }
    }

    /// Bytes per direction.
    pub fn ring_size(&self) -> usize {
        self.shared.ring as usize
    }

    /// The mapped segment's first byte and length, for tests that play a
    /// hostile peer. Writing through it can only garble this stream.
    #[doc(hidden)]
    pub fn raw_segment(&self) -> (*mut u8, usize) {
        (
            self.shared.mem.base(),
            segment_len(self.shared.ring as usize),
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
            let h = self.shared.header();
            h.data_waiter[self.shared.peer()]
                .v
                .store(WAIT_SOCKET, Ordering::SeqCst);
        }
        Ok(())
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
        s.header().refs.v[s.side].fetch_add(1, Ordering::AcqRel);
        let [write_claim, read_claim] = self.claimed.get();
        self.claimed.set([write_claim, 0]);
        let reader = ShmStream {
            sock,
            shared: Arc::clone(&self.shared),
            tx: Cell::new(self.tx.get()),
            rx: Cell::new(self.rx.get()),
            nonblocking: Cell::new(false),
            write_shut: Cell::new(true),
            read_shut: Cell::new(self.read_shut.get()),
            claimed: Cell::new([0, read_claim]),
            peer_gone: Cell::new(self.peer_gone.get()),
            woke_peer: Cell::new(None),
        };
        let owner = s.pid.load(Ordering::Relaxed);
        Ok((ShmReadHalf(reader), ShmWriteHalf { s: self, owner }))
    }

    /// Shuts down writing (the peer reads EOF once it has read what was
    /// sent), reading (our reads return EOF and the peer's writes fail with
    /// `BrokenPipe`), or both, as on a socket; the other direction goes on.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let s = &self.shared;
        let h = s.header();
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.write_shut.set(true);
            h.closed.v[s.side].fetch_or(WRITES_SHUT, Ordering::Release);
            self.wake(&h.data_waiter[s.side].v);
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            self.read_shut.set(true);
            h.closed.v[s.side].fetch_or(READS_SHUT, Ordering::Release);
            self.wake(&h.space_waiter[s.peer()].v);
        }
        Ok(())
    }

    /// Claims the write (`bit` 1) or read (`bit` 2) direction for this
    /// process; no system call once claimed.
    fn claim(&self, bit: u8) -> io::Result<()> {
        let s = &self.shared;
        let pid = s.pid.load(Ordering::Relaxed);
        let i = usize::from(bit == 2);
        if self.claimed.get()[i] == pid {
            return Ok(());
        }
        // owners: [read d0, read d1, write d0, write d1]; we write our own
        // side's direction and read the peer's.
        let slot = if bit == 1 { 2 + s.side } else { s.peer() };
        let word = &s.header().owners.v[slot];
        match word.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {}
            Err(p) if p == pid => {}
            Err(p) => {
                let what = if bit == 1 { "writes" } else { "reads" };
                return Err(crate::sys::Error::new(
                    "ShmStream",
                    format!("process {p} already {what} this direction; one reader and one writer per direction"),
                    errno::EBUSY,
                )
                .into());
            }
        }
        let mut c = self.claimed.get();
        c[i] = pid;
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
            || self.shared.header().closed.v[self.shared.peer()].load(Ordering::Acquire)
                & (CLOSED | half)
                != 0
    }

    /// Drains wake-up bytes from the socket; notes end-of-file (peer gone).
    fn drain_socket(&self) {
        let mut b = [0u8; 64];
        loop {
            match self.sock.recv_nonblocking(&mut b, false) {
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

    /// Blocks until `ready()` or the peer goes: spins first while the peer
    /// runs on another CPU, then sleeps (futex on Linux, the socket
    /// elsewhere), checking the peer's liveness every `LIVENESS`.
    fn wait(&self, word: &AtomicU32, ready: &dyn Fn() -> io::Result<bool>) -> io::Result<()> {
        let s = &self.shared;
        let h = s.header();
        let me = cpu_tag();
        let peer = h.running[s.peer()].v.load(Ordering::Relaxed);
        let woke = self.woke_peer.take();
        if self.spin(me, peer, woke, ready)? {
            return Ok(());
        }
        if me != 0 && peer == me {
            // On one CPU the peer can only make progress if we let it run:
            // offer the CPU once before paying for a futex sleep.
            std::thread::yield_now();
            if ready()? {
                return Ok(());
            }
        }
        h.running[s.side].v.store(me | ASLEEP, Ordering::Relaxed);
        word.store(WAIT_FUTEX, Ordering::SeqCst);
        if ready()? {
            word.store(WAIT_NONE, Ordering::Relaxed);
            h.running[s.side].v.store(me, Ordering::Relaxed);
            return Ok(());
        }
        let woke = sleep_on(word, &self.sock);
        word.store(WAIT_NONE, Ordering::Relaxed);
        let mut result = Ok(());
        if !woke {
            // Timed out: is the peer still there?
            self.drain_socket();
            if h.refs.v[s.side].load(Ordering::Relaxed) == 1 {
                result = self.deep_sleep(word, ready);
            }
        }
        h.running[s.side].v.store(cpu_tag(), Ordering::Relaxed);
        result
    }

    /// The spin before a sleep, while the peer runs on another CPU (it
    /// then answers soon, and a sleep would cost more than the wait).
    /// Returns whether `ready` became true.
    ///
    /// A peer we have just woken has not said yet where it runs. It most
    /// likely runs where it ran before, so we spin for its wake-up too.
    /// Sleeping at once would make it sleep as well when it next waits (we
    /// would not be running), and both would go on paying a wake-up per
    /// message long after the stall that began it.
    fn spin(
        &self,
        me: u32,
        peer: u32,
        woke: Option<Instant>,
        ready: &dyn Fn() -> io::Result<bool>,
    ) -> io::Result<bool> {
        let (cpu, awake) = (peer & !ASLEEP, peer & ASLEEP == 0);
        if me == 0 || cpu == 0 || cpu == me || !awake && woke.is_none() {
            return Ok(false);
        }
        let start = Instant::now();
        if !awake && !woke.is_some_and(|t| start.duration_since(t) <= WAKE_SPIN) {
            return Ok(false);
        }
        let h = self.shared.header();
        // Since when the peer has been seen running.
        let mut running = awake.then_some(start);
        let mut i = 0u32;
        loop {
            if ready()? {
                return Ok(true);
            }
            std::hint::spin_loop();
            i += 1;
            if i % 64 != 0 {
                continue;
            }
            let now = h.running[self.shared.peer()].v.load(Ordering::Relaxed);
            match (now & ASLEEP == 0, running) {
                // Moved onto our CPU: let it run.
                (true, _) if now == me => return Ok(false),
                // Asleep (again), or not awake in time.
                (false, Some(_)) => return Ok(false),
                (false, None) if start.elapsed() > WAKE_SPIN => return Ok(false),
                (true, None) => running = Some(Instant::now()),
                (true, Some(t)) if t.elapsed() > SPIN => return Ok(false),
                _ => {}
            }
        }
    }

    /// Idle for a whole liveness period: sleep on the socket instead, where
    /// the peer's wake is a byte and its death (even by SIGKILL) a hang-up,
    /// so an idle connection takes no CPU at all and a dead peer is noticed
    /// at once. Only for the sole holder of this side: processes that share
    /// it after a fork share its socket, and one could take the byte meant
    /// for the other (`DEEP_BACKSTOP` bounds that case should a plain fork
    /// have left the count at one).
    fn deep_sleep(&self, word: &AtomicU32, ready: &dyn Fn() -> io::Result<bool>) -> io::Result<()> {
        word.store(WAIT_SOCKET, Ordering::SeqCst);
        if ready()? {
            word.store(WAIT_NONE, Ordering::Relaxed);
            return Ok(());
        }
        let r = self.sock.wait_readable(Some(DEEP_BACKSTOP));
        word.store(WAIT_NONE, Ordering::Relaxed);
        self.drain_socket();
        r?;
        Ok(())
    }

    fn read_inner(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.read_shut.get() {
            return Ok(0);
        }
        self.claim(2)?;
        let s = &self.shared;
        let dir = s.peer();
        let ring = s.ring(dir);
        let h = s.header();
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
                if c.tail_cache - c.head <= s.ring / 2 {
                    self.wake(&h.space_waiter[dir].v);
                }
                return Ok(n);
            }
            if self.peer_sends_no_more() {
                // Anything sent before the close is still read first.
                let mut c = self.rx.get();
                let avail = ring.available(&mut c).map_err(corrupt)?;
                self.rx.set(c);
                if avail == 0 {
                    return Ok(0);
                }
                continue;
            }
            if self.nonblocking.get() {
                h.data_waiter[dir].v.store(WAIT_SOCKET, Ordering::SeqCst);
                let mut c = self.rx.get();
                let avail = ring.available(&mut c).map_err(corrupt)?;
                self.rx.set(c);
                // Checked again after asking for a wake-up: the peer's
                // shutdown may have come just before.
                if avail > 0 || self.peer_sends_no_more() {
                    continue;
                }
                self.drain_socket();
                if self.peer_gone.get() {
                    continue;
                }
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.wait(&h.data_waiter[dir].v, &|| {
                let mut c = self.rx.get();
                let avail = ring.available(&mut c).map_err(corrupt)?;
                self.rx.set(c);
                Ok(avail > 0 || self.peer_sends_no_more())
            })?;
        }
    }

    fn write_inner(&self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.write_shut.get() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.claim(1)?;
        let s = &self.shared;
        let dir = s.side;
        let ring = s.ring(dir);
        let h = s.header();
        let streaming = buf.len() >= STREAMING_MIN && {
            let (me, peer) = (cpu_tag(), h.running[s.peer()].v.load(Ordering::Relaxed));
            me != 0 && peer != 0 && peer & ASLEEP == 0 && peer != me
        };
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
                self.wake(&h.data_waiter[dir].v);
                return Ok(n);
            }
            if self.nonblocking.get() {
                h.space_waiter[dir].v.store(WAIT_SOCKET, Ordering::SeqCst);
                let mut p = self.tx.get();
                let free = ring.free(&mut p, 1).map_err(corrupt)?;
                self.tx.set(p);
                if free > 0 || self.peer_reads_no_more() {
                    continue;
                }
                self.drain_socket();
                if self.peer_gone.get() {
                    continue;
                }
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.wait(&h.space_waiter[dir].v, &|| {
                let mut p = self.tx.get();
                let free = ring.free(&mut p, 1).map_err(corrupt)?;
                self.tx.set(p);
                Ok(free > 0 || self.peer_reads_no_more())
            })?;
        }
    }
}

/// Sleeps while `word` holds `WAIT_FUTEX`, at most `LIVENESS`; `false` on a
/// timeout.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn sleep_on(word: &AtomicU32, _sock: &Socket) -> bool {
    use crate::sys::futex::{futex_wait, FutexWait};
    !matches!(
        futex_wait(word, WAIT_FUTEX, Some(LIVENESS)),
        Ok(FutexWait::TimedOut)
    )
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn futex_wake(word: &AtomicU32) {
    // Fails only for a bad address, which a live mapping is not.
    let _ = crate::sys::futex::futex_wake(word, 1);
}

/// Without futexes the waiter sleeps on the socket, and the waker sends a
/// byte: the flag says "socket".
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn sleep_on(word: &AtomicU32, sock: &Socket) -> bool {
    word.store(WAIT_SOCKET, Ordering::SeqCst);
    let _ = sock.set_read_timeout(Some(LIVENESS));
    let mut b = [0u8; 1];
    let r = sock.recv(&mut b);
    let _ = sock.set_read_timeout(None);
    matches!(r, Ok(1))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn futex_wake(_word: &AtomicU32) {}

/// Makes a segment of `len` bytes: the mapping, the fd to send (if any),
/// and the SysV id (or -1).
fn create_segment(kind: SegmentKind, len: usize) -> io::Result<(Mem, Option<OwnedFd>, i32)> {
    match kind {
        SegmentKind::Memfd => {
            #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
            {
                let fd = shm::memfd_create("procwire-shm")?;
                shm::ftruncate(fd.as_fd(), len as u64)?;
                shm::add_seals(
                    fd.as_fd(),
                    shm::Seals::SHRINK | shm::Seals::GROW | shm::Seals::SEAL,
                )?;
                let m = Mapping::map(fd.as_fd(), len, Access::ReadWrite)?;
                Ok((Mem::Map(m), Some(fd), -1))
            }
            #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
            {
                create_segment(SegmentKind::Posix, len)
            }
        }
        SegmentKind::Posix => {
            let name = shm::unique_shm_name("procwire-shm");
            let fd = shm::shm_open(
                &name,
                shm::ShmOpenFlags::CREATE | shm::ShmOpenFlags::EXCLUSIVE,
                0o600,
            )?;
            // No name outlives this call: the fd and mappings keep it.
            let unlinked = shm::shm_unlink(&name);
            shm::ftruncate(fd.as_fd(), len as u64)?;
            unlinked?;
            let m = Mapping::map(fd.as_fd(), len, Access::ReadWrite)?;
            Ok((Mem::Map(m), Some(fd), -1))
        }
        SegmentKind::SysV => {
            let id = shm::shmget(shm::SysvKey::Private, len, true, 0o600)?;
            let m = match SysvMapping::attach(id, Access::ReadWrite) {
                Ok(m) => m,
                Err(e) => {
                    let _ = shm::shm_remove(id);
                    return Err(e.into());
                }
            };
            // Linux lets the peer attach a segment already marked for
            // removal, so nothing can leak even if we die right here.
            #[cfg(any(target_os = "linux", target_os = "android"))]
            shm::shm_remove(id)?;
            Ok((Mem::Sysv(m), None, id))
        }
    }
}

impl Drop for ShmStream {
    fn drop(&mut self) {
        let s = &self.shared;
        let h = s.header();
        let pid = s.pid.load(Ordering::Relaxed);
        let claimed = self.claimed.get();
        for (i, slot) in [(1usize, s.peer()), (0, 2 + s.side)] {
            if claimed[i] == pid {
                let _ =
                    h.owners.v[slot].compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
        s.holders.fetch_sub(1, Ordering::Relaxed);
        if h.refs.v[s.side].fetch_sub(1, Ordering::AcqRel) <= 1 {
            // The last holder of this side: tell the peer, wake its waiters.
            h.closed.v[s.side].fetch_or(CLOSED, Ordering::Release);
            self.wake(&h.data_waiter[s.side].v);
            self.wake(&h.space_waiter[s.peer()].v);
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

/// Refuses a SysV segment that the peer did not create: any id it names
/// that we may attach would do otherwise, including another connection's
/// segment (Linux and Android, where the socket tells the peer's pid).
fn check_sysv_creator(sock: &Socket, id: i32) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let peer = sock.peer_cred()?;
        let stat = shm::shm_stat(id)?;
        if stat.creator_pid != peer.pid {
            return Err(invalid(&format!(
                "SysV segment {id} was made by pid {}, not by the peer (pid {})",
                stat.creator_pid, peer.pid
            )));
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (sock, id);
    Ok(())
}

/// Whether this platform has memfds (and seals).
const HAVE_MEMFD: bool = cfg!(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd"
));

/// Whether `fd` is a memfd sealed against shrinking: no one can truncate
/// it under our mapping.
fn sealed_against_shrinking(fd: BorrowedFd<'_>) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        shm::seals(fd).is_ok_and(|s| s.contains(shm::Seals::SHRINK))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        let _ = fd;
        false
    }
}

/// Accepts [`ShmStream`] connections on a Unix socket path.
///
/// A memfd segment must come sealed against shrinking (a procwire
/// connector always seals it), so a hostile peer can't truncate it under
/// us and turn our accesses into `SIGBUS`. SysV segments can't change size.
/// A POSIX segment can't be sealed: its creator could truncate it at any
/// time, so where memfds exist (Linux, FreeBSD) the listener refuses POSIX
/// segments unless told to trust its peers with
/// [`set_sealed_only(false)`](Self::set_sealed_only). Elsewhere every
/// segment a connector makes is POSIX or SysV, and POSIX ones are taken.
#[derive(Debug)]
pub struct ShmListener {
    sock: Socket,
    sealed_only: bool,
}

impl ShmListener {
    /// Listens on `path` (which must not exist).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        let sock = Socket::new(Domain::UNIX, Type::STREAM)?;
        sock.bind(SockAddr::unix(path.as_ref()))?;
        sock.listen(1024)?;
        Ok(Self {
            sock,
            sealed_only: HAVE_MEMFD,
        })
    }

    /// Whether to refuse segments their creator could shrink under us
    /// (POSIX ones), taking only a sealed memfd or a SysV segment: on by
    /// default where memfds exist. Turn it off to take POSIX segments from
    /// peers you trust.
    pub fn set_sealed_only(&mut self, on: bool) {
        self.sealed_only = on;
    }

    /// Accepts one connection: receives the peer's segment, checks its size
    /// and header, maps it and acknowledges. A peer that sends something
    /// else gets its connection closed and an `InvalidData` error here.
    pub fn accept(&self) -> io::Result<ShmStream> {
        let (sock, _) = self.sock.accept()?;
        sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let mut hello = [0u8; HELLO_LEN];
        let mut fds = Vec::new();
        let mut got = 0;
        while got < HELLO_LEN {
            let r = recv_with_fds(&sock, &mut hello[got..], &mut fds, 1)?;
            if r.bytes == 0 {
                return Err(invalid("the peer closed during the handshake"));
            }
            got += r.bytes;
        }
        if &hello[..5] != b"PWSHM" {
            return Err(invalid("not a procwire shared-memory hello"));
        }
        let mut ring_bytes = [0u8; 8];
        ring_bytes.copy_from_slice(&hello[6..14]);
        let ring = u64::from_le_bytes(ring_bytes);
        if !valid_ring(ring) {
            return Err(invalid(&format!("bad ring size {ring}")));
        }
        let len = segment_len(ring as usize);
        let prefault = hello[5] & HELLO_PREFAULT != 0;
        let mem = match hello[5] & !HELLO_PREFAULT {
            k if k == SegmentKind::Memfd as u8 || k == SegmentKind::Posix as u8 => {
                let fd = fds.pop().ok_or_else(|| invalid("no segment fd"))?;
                let size = shm::file_size(fd.as_fd())?;
                if size != len as u64 {
                    return Err(invalid(&format!("segment of {size} bytes, expected {len}")));
                }
                if !sealed_against_shrinking(fd.as_fd()) {
                    // Where memfds exist, a procwire connector seals its
                    // memfd; elsewhere its memfd request became POSIX.
                    if k == SegmentKind::Memfd as u8 && HAVE_MEMFD {
                        return Err(invalid("memfd segment not sealed against shrinking"));
                    }
                    if self.sealed_only {
                        return Err(invalid(
                            "unsealed (POSIX) segment refused: the listener takes only sealed ones",
                        ));
                    }
                }
                Mem::Map(Mapping::map(fd.as_fd(), len, Access::ReadWrite)?)
            }
            k if k == SegmentKind::SysV as u8 => {
                let mut id = [0u8; 4];
                id.copy_from_slice(&hello[14..18]);
                let id = i32::from_le_bytes(id);
                check_sysv_creator(&sock, id)?;
                let m = SysvMapping::attach(id, Access::ReadWrite)?;
                if m.len() != len {
                    return Err(invalid(&format!(
                        "segment of {} bytes, expected {len}",
                        m.len()
                    )));
                }
                #[cfg(not(any(target_os = "linux", target_os = "android")))]
                let _ = shm::shm_remove(id);
                Mem::Sysv(m)
            }
            k => return Err(invalid(&format!("unknown segment kind {k}"))),
        };
        if prefault {
            mem.memory().populate()?;
        }
        let shared = Arc::new(Shared {
            mem,
            ring,
            side: 1,
            pid: AtomicU32::new(getpid() as u32),
            holders: AtomicU32::new(1),
        });
        let h = shared.header();
        if h.magic.load(Ordering::Acquire) != MAGIC
            || h.version.load(Ordering::Relaxed) != VERSION
            || h.ring_size.load(Ordering::Relaxed) != ring
        {
            return Err(invalid("bad segment header"));
        }
        h.refs.v[1].store(1, Ordering::Relaxed);
        h.running[1].v.store(cpu_tag(), Ordering::Relaxed);
        sock.set_read_timeout(None)?;
        sock.send(&[ACK])?;
        register(&shared);
        Ok(ShmStream::new(sock, shared))
    }

    /// The path it listens on.
    pub fn local_addr(&self) -> io::Result<SockAddr> {
        Ok(self.sock.local_addr()?)
    }
}

impl AsFd for ShmListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// The reading half of a [`ShmStream`], from [`ShmStream::split`].
#[derive(Debug)]
pub struct ShmReadHalf(ShmStream);

/// The writing half of a [`ShmStream`], from [`ShmStream::split`];
/// dropping it shuts down writing, in the process that split the stream
/// (a copy that a forked child drops only releases the child's hold).
#[derive(Debug)]
pub struct ShmWriteHalf {
    s: ShmStream,
    /// The pid that split the stream.
    owner: u32,
}

impl ShmReadHalf {
    /// Shuts down reading: our reads return end-of-file and the peer's
    /// writes fail with `BrokenPipe`.
    pub fn shutdown(&self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Read)
    }
}

impl ShmWriteHalf {
    /// Shuts down writing: the peer reads end-of-file once it has read
    /// what was sent.
    pub fn shutdown(&self) -> io::Result<()> {
        self.s.shutdown(Shutdown::Write)
    }
}

impl io::Read for ShmReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_inner(buf)
    }
}

impl io::Write for ShmWriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.s.write_inner(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ShmWriteHalf {
    fn drop(&mut self) {
        let pid = self.s.shared.pid.load(Ordering::Relaxed);
        if !self.s.write_shut.get() && pid == self.owner {
            // Nothing to report from a drop; the peer learns of the close
            // through the header anyway when the other half goes.
            let _ = self.s.shutdown(Shutdown::Write);
        }
    }
}

static_assertions::assert_impl_all!(ShmReadHalf: Send);
static_assertions::assert_impl_all!(ShmWriteHalf: Send);
