//! [`ShmListener`]: accepts [`ShmStream`] connections on a Unix socket path,
//! checking each peer's segment before it maps it.
//!
//! No connecting peer can hold the listener up. The listening socket is
//! non-blocking, and each accepted socket's handshake is read without
//! blocking: a hello that is all there is taken at once; one still on its
//! way is set aside as *pending*, watched by the listener's own selector
//! with a deadline ([`ShmListener::set_handshake_timeout`]), and there are
//! at most [`ShmListener::set_max_pending`] of them, the oldest dropped
//! past that. A peer that sends something else, too slowly, or too late is
//! closed and counted ([`ShmListener::stats`]); `accept` only ever returns
//! a connection whose handshake is complete, or an error of the listening
//! socket itself.
//!
//! The listener's fd ([`AsFd`]) is that selector's, readable when `accept`
//! has something to do: a connection to take, a hello to read, a deadline
//! passed (a timer in the same set). In non-blocking mode it registers in
//! [`crate::net::event::EventLoop`] like any source.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::hello::{self, Hello, ACK};
use super::segment::{segment_len, Mem, SegmentKind, Side, MAGIC, VERSION, WAIT_SOCKET};
use super::shared::{self, Shared};
use super::stream::{invalid, ShmStream};
use crate::sys::cpu::cpu_tag;
use crate::sys::errno;
use crate::sys::event::{Events, Interest, Mode, Selector, Timer, Token};
use crate::sys::fdpass::recv_with_fds_nonblocking;
use crate::sys::process::getpid;
use crate::sys::shm::{self, Access, Mapping, SharedMemory, SysvMapping};
use crate::sys::socket::{Domain, SockAddr, Socket, Type};

/// The default deadline of a handshake, from the connection's accept.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(250);
/// The default bound on connections still handshaking.
pub const DEFAULT_MAX_PENDING: usize = 128;
/// The default largest ring a peer may ask for (per direction): each
/// connection maps twice this much.
pub const DEFAULT_MAX_RING_SIZE: u64 = 64 << 20;

/// New connections taken off the listening socket per turn, so that one
/// turn stays short under a flood.
const ACCEPTS_PER_TURN: usize = 64;
/// Turns of one non-blocking `accept` (see there).
const MAX_TURNS: usize = 16;
const LISTEN: Token = Token(0);
const DEADLINE: Token = Token(1);
const FIRST_PENDING: usize = 2;

/// What a listener did with the connections it took, since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct HandshakeStats {
    /// Returned by `accept`, handshake complete.
    pub accepted: u64,
    /// Closed for a bad handshake: not a hello, a segment that fails a
    /// check, a peer that closed before it finished.
    pub refused: u64,
    /// Closed at their deadline, hello unfinished.
    pub timed_out: u64,
    /// Closed unfinished to make room: more were pending than allowed.
    pub evicted: u64,
}

/// Accepts [`ShmStream`] connections on a Unix socket path; see the module
/// docs for how it keeps peers from holding it up.
///
/// A memfd segment must come sealed against shrinking (a procwire
/// connector always seals it), so a hostile peer can't truncate it under
/// us and turn our accesses into `SIGBUS`. SysV segments can't change size.
/// A POSIX segment can't be sealed: its creator could truncate it at any
/// time, so where memfds exist (Linux, FreeBSD) the listener refuses POSIX
/// segments unless told to trust its peers with
/// [`set_sealed_only(false)`](Self::set_sealed_only). Elsewhere every
/// segment a connector makes is POSIX or SysV, and POSIX ones are taken.
///
/// `accept` takes `&self` and may be called from several threads; they
/// take turns.
#[derive(Debug)]
#[must_use = "dropping an ShmListener closes its socket at once"]
pub struct ShmListener {
    /// First: dropped (closing the epoll set) before what it watches.
    selector: Selector,
    sock: Socket,
    timer: Timer,
    state: Mutex<State>,
    sealed_only: bool,
    handshake_timeout: Duration,
    max_pending: usize,
    max_ring_size: u64,
    nonblocking: AtomicBool,
    counts: Counts,
    /// `state.pending.len()`, readable without the lock.
    pending: AtomicUsize,
    last_refusal: Mutex<Option<String>>,
}

static_assertions::assert_impl_all!(ShmListener: Send, Sync);

#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
    evicted: AtomicU64,
}

/// What `accept` works on, under the listener's lock.
#[derive(Debug)]
struct State {
    /// Oldest first: deadlines are in the same order.
    pending: VecDeque<Pending>,
    /// Handshakes done, not yet returned.
    ready: VecDeque<ShmStream>,
    next_token: usize,
    /// The deadline the timer is set for.
    armed: Option<Instant>,
    events: Events,
    /// The tokens of the last wait (kept for its allocation).
    tokens: Vec<Token>,
}

/// A connection whose hello is still on its way.
#[derive(Debug)]
struct Pending {
    sock: Socket,
    token: usize,
    bytes: [u8; hello::LEN],
    got: usize,
    fds: Vec<OwnedFd>,
    deadline: Instant,
}

/// How far a pending hello got.
enum Progress {
    Incomplete,
    Complete,
    Failed(io::Error),
}

impl ShmListener {
    /// Listens on `path` (which must not exist).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        let sock = Socket::new_nonblocking(Domain::UNIX, Type::STREAM)?;
        sock.bind(SockAddr::unix(path.as_ref()))?;
        sock.listen(1024)?;
        let selector = Selector::new()?;
        let timer = Timer::new()?;
        // SAFETY: the socket and the timer live in the listener beside the
        // selector and are dropped after it (field order), never lent out
        // for keeps; they are close-on-exec, so no other fd refers to them
        // unless the process forks, and then the child's copy of the
        // selector is the same set, watching the same files.
        unsafe {
            selector.register(sock.as_fd(), LISTEN, Interest::READABLE, Mode::Level)?;
            selector.register(timer.as_fd(), DEADLINE, Interest::READABLE, Mode::Level)?;
        }
        Ok(Self {
            selector,
            sock,
            timer,
            state: Mutex::new(State {
                pending: VecDeque::new(),
                ready: VecDeque::new(),
                next_token: FIRST_PENDING,
                armed: None,
                events: Events::with_capacity(64),
                tokens: Vec::with_capacity(64),
            }),
            sealed_only: shm::HAVE_MEMFD,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
            max_ring_size: DEFAULT_MAX_RING_SIZE,
            nonblocking: AtomicBool::new(false),
            counts: Counts::default(),
            pending: AtomicUsize::new(0),
            last_refusal: Mutex::new(None),
        })
    }

    /// Whether to refuse segments their creator could shrink under us
    /// (POSIX ones), taking only a sealed memfd or a SysV segment: on by
    /// default where memfds exist. Turn it off to take POSIX segments from
    /// peers you trust.
    pub fn set_sealed_only(&mut self, on: bool) {
        self.sealed_only = on;
    }

    /// How long a connection may take from its accept to a complete hello
    /// (default [`DEFAULT_HANDSHAKE_TIMEOUT`]); a procwire connector sends
    /// its hello right after it connects.
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
    }

    /// How many connections may be handshaking at once (default
    /// [`DEFAULT_MAX_PENDING`], at least 1): past it, the oldest is closed.
    /// Each holds one fd until it is done.
    pub fn set_max_pending(&mut self, n: usize) {
        self.max_pending = n.max(1);
    }

    /// The largest ring, per direction, a peer may ask for (default
    /// [`DEFAULT_MAX_RING_SIZE`]); a hello asking for more is refused.
    pub fn set_max_ring_size(&mut self, bytes: u64) {
        self.max_ring_size = bytes;
    }

    /// In non-blocking mode `accept` returns `WouldBlock` instead of
    /// waiting; register the listener (its fd, [`AsFd`]) for readability,
    /// and call `accept` until `WouldBlock` each time it is reported.
    pub fn set_nonblocking(&self, on: bool) {
        self.nonblocking.store(on, Ordering::Relaxed);
    }

    /// What the listener did with the connections it took.
    pub fn stats(&self) -> HandshakeStats {
        let c = &self.counts;
        HandshakeStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
        }
    }

    /// Why the last refused connection was refused.
    pub fn last_refusal(&self) -> Option<String> {
        lock(&self.last_refusal).clone()
    }

    /// How many connections are handshaking now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Returns the next connection whose handshake is complete: its
    /// segment received, checked, mapped and acknowledged. Blocks until
    /// there is one, unless non-blocking.
    ///
    /// # Errors
    ///
    /// Only the listener's own: `accept(2)` failing for the listening
    /// socket (`EMFILE` when out of descriptors, say), the selector, the
    /// timer; `WouldBlock` in non-blocking mode. A peer's bad or slow
    /// handshake is never an error here: it is closed and counted in
    /// [`stats`](Self::stats).
    pub fn accept(&self) -> io::Result<ShmStream> {
        let mut st = lock(&self.state);
        // A bound on the turns of one non-blocking call under a flood: if it
        // stops early, connections are pending and their timer fires.
        let mut turns = 0;
        loop {
            if let Some(s) = st.ready.pop_front() {
                self.counts.accepted.fetch_add(1, Ordering::Relaxed);
                return Ok(s);
            }
            let nonblocking = self.nonblocking.load(Ordering::Relaxed);
            let timeout = if nonblocking {
                Some(Duration::ZERO)
            } else {
                st.pending
                    .front()
                    .map(|p| p.deadline.saturating_duration_since(Instant::now()))
            };
            let events = self.turn(&mut st, timeout)?;
            // Only a turn that found nothing to do leaves the selector
            // unready: an edge-triggered registration then fires again.
            turns += 1;
            if nonblocking && st.ready.is_empty() && (events == 0 || turns >= MAX_TURNS) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }

    /// The path it listens on.
    pub fn local_addr(&self) -> io::Result<SockAddr> {
        Ok(self.sock.local_addr()?)
    }

    /// One wait of the selector and what it reported; returns the number of
    /// events.
    fn turn(&self, st: &mut State, timeout: Option<Duration>) -> io::Result<usize> {
        self.expire(st);
        self.selector.wait(&mut st.events, timeout)?;
        let mut tokens = std::mem::take(&mut st.tokens);
        tokens.clear();
        tokens.extend(st.events.iter().map(|e| e.token()));
        let n = tokens.len();
        for &token in &tokens {
            match token {
                LISTEN => self.take_new(st)?,
                DEADLINE => {
                    self.timer.clear()?;
                    st.armed = None;
                }
                Token(t) => {
                    if let Some(at) = st.pending.iter().position(|p| p.token == t) {
                        self.advance(st, at);
                    }
                }
            }
        }
        st.tokens = tokens;
        self.expire(st);
        self.arm(st)?;
        Ok(n)
    }

    /// Takes new connections off the listening socket; each whose hello is
    /// already there is finished at once, the others set aside.
    fn take_new(&self, st: &mut State) -> io::Result<()> {
        for _ in 0..ACCEPTS_PER_TURN {
            let sock = match self.sock.accept() {
                // Where an accepted socket inherits the listener's
                // `O_NONBLOCK`, the stream wants it blocking: its own waits
                // choose.
                #[cfg(target_vendor = "apple")]
                Ok((s, _)) => match s.set_nonblocking(false) {
                    Ok(()) => s,
                    Err(e) => {
                        self.refuse(e.into());
                        continue;
                    }
                },
                #[cfg(not(target_vendor = "apple"))]
                Ok((s, _)) => s,
                Err(e) if e.is_would_block() => return Ok(()),
                // The connection went before we took it (the BSDs say so;
                // the socket is non-blocking, so no `EINTR`).
                Err(e) if e.raw_os_error() == errno::ECONNABORTED => continue,
                Err(e) => return Err(e.into()),
            };
            let token = st.next_token;
            st.next_token += 1;
            let mut p = Pending {
                sock,
                token,
                bytes: [0; hello::LEN],
                got: 0,
                fds: Vec::new(),
                deadline: Instant::now() + self.handshake_timeout,
            };
            match read_hello(&mut p) {
                Progress::Complete => self.finish(st, p),
                Progress::Failed(e) => self.refuse(e),
                Progress::Incomplete => {
                    // SAFETY: the socket stays in `st.pending` until it is
                    // deregistered (`forget`) or the listener drops, and the
                    // selector drops before the state (field order).
                    let r = unsafe {
                        self.selector.register(
                            p.sock.as_fd(),
                            Token(token),
                            Interest::READABLE,
                            Mode::Level,
                        )
                    };
                    if let Err(e) = r {
                        self.refuse(e.into());
                        continue;
                    }
                    st.pending.push_back(p);
                    self.pending.store(st.pending.len(), Ordering::Relaxed);
                    while st.pending.len() > self.max_pending {
                        if let Some(old) = st.pending.pop_front() {
                            self.pending.store(st.pending.len(), Ordering::Relaxed);
                            self.forget(old, &self.counts.evicted);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads more of the pending hello at `at`; finishes or refuses it.
    fn advance(&self, st: &mut State, at: usize) {
        let progress = match st.pending.get_mut(at) {
            Some(p) => read_hello(p),
            None => return,
        };
        match progress {
            Progress::Incomplete => {}
            Progress::Complete => {
                if let Some(p) = st.pending.remove(at) {
                    self.pending.store(st.pending.len(), Ordering::Relaxed);
                    let _ = self.selector.deregister(p.sock.as_fd());
                    self.finish(st, p);
                }
            }
            Progress::Failed(e) => {
                self.refuse(e);
                if let Some(p) = st.pending.remove(at) {
                    self.pending.store(st.pending.len(), Ordering::Relaxed);
                    let _ = self.selector.deregister(p.sock.as_fd());
                }
            }
        }
    }

    /// Closes handshakes whose deadline passed.
    fn expire(&self, st: &mut State) {
        let now = Instant::now();
        while st.pending.front().is_some_and(|p| p.deadline <= now) {
            if let Some(p) = st.pending.pop_front() {
                self.pending.store(st.pending.len(), Ordering::Relaxed);
                self.forget(p, &self.counts.timed_out);
            }
        }
    }

    /// Sets the timer for the oldest pending deadline.
    fn arm(&self, st: &mut State) -> io::Result<()> {
        let next = st.pending.front().map(|p| p.deadline);
        if next != st.armed {
            let after = next.map(|d| d.saturating_duration_since(Instant::now()));
            self.timer.set(after)?;
            st.armed = next;
        }
        Ok(())
    }

    /// Counts a pending connection under `why`, then takes its socket out
    /// of the selector and closes it (in that order: a peer that sees the
    /// close finds it counted).
    fn forget(&self, p: Pending, why: &AtomicU64) {
        why.fetch_add(1, Ordering::Relaxed);
        let _ = self.selector.deregister(p.sock.as_fd());
    }

    fn refuse(&self, why: io::Error) {
        *lock(&self.last_refusal) = Some(why.to_string());
        self.counts.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Maps and checks the segment of a complete hello and acknowledges it;
    /// the stream joins the ready ones, or the peer is refused.
    fn finish(&self, st: &mut State, p: Pending) {
        match self.take_segment(&p) {
            Ok(shared) => {
                // The peer's socket buffer is empty: the byte fits unless
                // the peer is gone.
                if let Err(e) = p.sock.send_nonblocking(&[ACK]) {
                    self.refuse(e.into());
                    return;
                }
                shared::register(&shared);
                st.ready.push_back(ShmStream::new(p.sock, shared));
            }
            Err(e) => self.refuse(e),
        }
    }

    /// Checks, maps and checks again the segment a hello offers.
    fn take_segment(&self, p: &Pending) -> io::Result<Arc<Shared>> {
        let hello = Hello::decode(&p.bytes).map_err(|e| invalid(&e.to_string()))?;
        if hello.ring_size > self.max_ring_size {
            return Err(invalid(&format!(
                "a ring of {} bytes asked for; this listener takes up to {}",
                hello.ring_size, self.max_ring_size
            )));
        }
        let len = segment_len(hello.ring_size as usize);
        let fd = match (hello.kind, &p.fds[..]) {
            (SegmentKind::SysV, []) => None,
            (SegmentKind::SysV, _) => return Err(invalid("an fd sent with a SysV segment")),
            (_, [fd]) => Some(fd),
            (_, []) => return Err(invalid("no segment fd")),
            (_, _) => return Err(invalid("more than one fd sent")),
        };
        let mem = match fd {
            Some(fd) => {
                let size = shm::file_size(fd.as_fd())?;
                if size != len as u64 {
                    return Err(invalid(&format!("segment of {size} bytes, expected {len}")));
                }
                if !shm::is_sealed_against_shrinking(fd.as_fd()) {
                    // Where memfds exist, a procwire connector seals its
                    // memfd; elsewhere its memfd request became POSIX.
                    if hello.kind == SegmentKind::Memfd && shm::HAVE_MEMFD {
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
            None => {
                let id = hello.sysv_id;
                check_sysv_creator(&p.sock, id)?;
                let m = SysvMapping::attach(id, Access::ReadWrite)?;
                if m.len() != len {
                    return Err(invalid(&format!(
                        "segment of {} bytes, expected {len}",
                        m.len()
                    )));
                }
                if !shm::SYSV_ATTACH_AFTER_REMOVE {
                    // The creator could not remove it before we attached.
                    let _ = shm::shm_remove(id);
                }
                Mem::Sysv(m)
            }
        };
        if hello.prefault {
            mem.memory().populate()?;
        }
        let shared = Arc::new(Shared {
            mem,
            ring_size: hello.ring_size,
            side: Side::Acceptor,
            pid: AtomicU32::new(getpid() as u32),
            holders: AtomicU32::new(1),
        });
        let h = shared.header();
        if h.magic.load(Ordering::Acquire) != MAGIC
            || h.version.load(Ordering::Relaxed) != VERSION
            || h.ring_size.load(Ordering::Relaxed) != hello.ring_size
        {
            return Err(invalid("bad segment header"));
        }
        shared.refs().store(1, Ordering::Relaxed);
        h.running[Side::Acceptor.index()].store(cpu_tag(), Ordering::Relaxed);
        // Until it says otherwise, wake us for data through the socket: the
        // first bytes then make the socket readable even if they arrive
        // before the stream is switched to non-blocking and registered.
        h.data_waiter[Side::Connector.index()].store(WAIT_SOCKET, Ordering::Release);
        Ok(shared)
    }
}

impl AsFd for ShmListener {
    /// The listener's selector: readable when [`ShmListener::accept`] has
    /// something to do.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.selector.as_fd()
    }
}

/// Locks, taking over a lock whose holder panicked (the state stays
/// consistent between calls: each step leaves it whole).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads what has arrived of a hello, without blocking.
fn read_hello(p: &mut Pending) -> Progress {
    while p.got < hello::LEN {
        match recv_with_fds_nonblocking(&p.sock, &mut p.bytes[p.got..], &mut p.fds, 1) {
            Ok(r) if r.bytes == 0 => {
                return Progress::Failed(invalid("the peer closed during the handshake"))
            }
            Ok(r) if r.fds_truncated || p.fds.len() > 1 => {
                return Progress::Failed(invalid("more than one fd sent"))
            }
            Ok(r) => p.got += r.bytes,
            Err(e) if e.is_would_block() => return Progress::Incomplete,
            Err(e) => return Progress::Failed(e.into()),
        }
    }
    Progress::Complete
}

/// Refuses a SysV segment that the peer did not create: any id it names
/// that we may attach would do otherwise, including another connection's
/// segment. Checked where the socket tells the peer's pid (Linux, Android).
fn check_sysv_creator(sock: &Socket, id: i32) -> io::Result<()> {
    if let Some(peer) = sock.peer_pid()? {
        let stat = shm::shm_stat(id)?;
        if stat.creator_pid != peer {
            return Err(invalid(&format!(
                "SysV segment {id} was made by pid {}, not by the peer (pid {peer})",
                stat.creator_pid
            )));
        }
    }
    Ok(())
}

crate::sys::fd::as_raw_fd_from_as_fd!(ShmListener);
