//! Which of the program's fds this library looks after: an array of
//! atomic pointers indexed by fd, sized from the hard `RLIMIT_NOFILE` and
//! mapped (untouched pages cost nothing), as VMA keeps its fd collection.
//! A lookup is one load; fds past the array are never looked after.
//!
//! An [`Entry`] is shared by every fd of this process that refers to the
//! same connection (`dup`), counted, and freed with the last of them. A
//! program that closes an fd while another of its threads uses it has
//! undefined results on a plain socket too (the number may be reused); the
//! entry is then freed under that thread, which this library does not
//! guard against.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use procwire::ipc::accel::Accel;

use crate::epoll::EpSet;
use procwire::sys::interpose;
use procwire::sys::shm::{Mapping, SharedMemory};

/// What the library knows of an fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// A listening socket on a listed path.
    Listener,
    /// A client that announced itself and waits for the server's hello.
    Pending,
    /// An accelerated connection.
    Accel,
    /// A listed connection whose peer does not take part.
    Plain,
    /// An epoll set whose accelerated members this library answers for
    /// (fast mode).
    Epoll,
}

const LISTENER: u8 = 0;
const PENDING: u8 = 1;
const ACCEL: u8 = 2;
const PLAIN: u8 = 3;
const EPOLL: u8 = 4;

/// Where entry ids come from.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One connection (or listener) as this process sees it.
pub(crate) struct Entry {
    /// Unique for the life of the process: an epoll set's record of a
    /// member tells its entry from a later one on the same fd number.
    id: u64,
    /// [`crate::forks`] when it was made: an entry born before a later
    /// fork may be shared with another process.
    born: u32,
    refs: AtomicUsize,
    state: AtomicU8,
    lock: AtomicU32,
    plain_written: AtomicU64,
    accel: OnceLock<Accel>,
    epset: OnceLock<EpSet>,
}

impl Entry {
    fn with(state: u8) -> Box<Self> {
        Box::new(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            born: crate::forks(),
            refs: AtomicUsize::new(1),
            state: AtomicU8::new(state),
            lock: AtomicU32::new(0),
            plain_written: AtomicU64::new(0),
            accel: OnceLock::new(),
            epset: OnceLock::new(),
        })
    }

    pub(crate) fn epoll() -> Box<Self> {
        let e = Self::with(EPOLL);
        let _ = e.epset.set(EpSet::new());
        e
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Whether no `fork` came after this entry was made: no other process
    /// holds its connection.
    pub(crate) fn unshared(&self) -> bool {
        self.born == crate::forks()
    }

    /// The epoll set, for an epoll entry.
    pub(crate) fn epset(&self) -> Option<&EpSet> {
        self.epset.get()
    }

    pub(crate) fn listener() -> Box<Self> {
        Self::with(LISTENER)
    }

    pub(crate) fn pending() -> Box<Self> {
        LIVE.fetch_add(1, Ordering::AcqRel);
        Self::with(PENDING)
    }

    pub(crate) fn accelerated(a: Accel) -> Box<Self> {
        LIVE.fetch_add(1, Ordering::AcqRel);
        let e = Self::with(ACCEL);
        let _ = e.accel.set(a);
        e
    }

    pub(crate) fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            LISTENER => State::Listener,
            PENDING => State::Pending,
            ACCEL => State::Accel,
            EPOLL => State::Epoll,
            _ => State::Plain,
        }
    }

    /// The connection, once accelerated.
    pub(crate) fn accel(&self) -> Option<&Accel> {
        self.accel.get()
    }

    /// Attached: from now on the ring.
    pub(crate) fn set_accel(&self, a: Accel) -> &Accel {
        let a = self.accel.get_or_init(|| a);
        self.state.store(ACCEL, Ordering::Release);
        a
    }

    /// The connection is (or went back to being) the plain socket.
    pub(crate) fn set_plain(&self) {
        if matches!(self.state.swap(PLAIN, Ordering::AcqRel), PENDING | ACCEL) {
            LIVE.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn plain_written(&self) -> u64 {
        self.plain_written.load(Ordering::Acquire)
    }

    pub(crate) fn add_plain_written(&self, n: u64) {
        self.plain_written.fetch_add(n, Ordering::AcqRel);
    }

    /// The pending client's lock: attach and plain writes exclude each
    /// other, so the count the server is told is exact.
    pub(crate) fn lock(&self) -> Guard<'_> {
        let me = interpose::thread_id() as u32;
        while self
            .lock
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
        Guard(&self.lock)
    }
}

/// Holds an entry's lock.
pub(crate) struct Guard<'a>(&'a AtomicU32);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

/// Entries that may need a look when the program waits: pending clients
/// and accelerated connections.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Whether any fd is pending or accelerated.
#[inline]
pub(crate) fn live() -> bool {
    LIVE.load(Ordering::Relaxed) != 0
}

static TABLE: AtomicPtr<AtomicPtr<Entry>> = AtomicPtr::new(std::ptr::null_mut());
static LEN: AtomicUsize = AtomicUsize::new(0);
/// One past the highest fd that ever had an entry.
static HIGH: AtomicUsize = AtomicUsize::new(0);
static MAPPING: OnceLock<Mapping> = OnceLock::new();

/// The most fds looked after, whatever the limit says.
const MAX_FDS: u64 = 1 << 22;

/// Maps the table; false when it can't be had (the library then stays a
/// pass-through).
pub(crate) fn init() -> bool {
    let (_, hard) = procwire::sys::process::open_files_limit();
    let n = hard.unwrap_or(MAX_FDS).clamp(1024, MAX_FDS) as usize;
    // Private: a forked child's closes must not clear the parent's entries.
    let Ok(m) = Mapping::anonymous_private(n * std::mem::size_of::<AtomicPtr<Entry>>()) else {
        return false;
    };
    let p = m.as_ptr().cast::<AtomicPtr<Entry>>();
    if MAPPING.set(m).is_err() {
        return false;
    }
    LEN.store(n, Ordering::Release);
    TABLE.store(p, Ordering::Release);
    true
}

fn slot(fd: i32) -> Option<&'static AtomicPtr<Entry>> {
    let t = TABLE.load(Ordering::Acquire);
    if t.is_null() || fd < 0 || fd as usize >= LEN.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: `fd < LEN`, the table's length; the mapping lives for the
    // rest of the process (held by `MAPPING`), zero-filled, and an
    // all-zero `AtomicPtr` is a null pointer.
    Some(unsafe { &*t.add(fd as usize) })
}

/// The entry of `fd`, if it has one.
#[inline]
pub(crate) fn get(fd: i32) -> Option<&'static Entry> {
    let p = slot(fd)?.load(Ordering::Acquire);
    // SAFETY: a non-null slot points at a live entry (boxed by `install`,
    // freed only when its last slot is cleared).
    (!p.is_null()).then(|| unsafe { &*p })
}

fn release(p: *mut Entry) {
    if p.is_null() {
        return;
    }
    // SAFETY: `p` came from a slot, which holds one of the entry's counted
    // references.
    let e = unsafe { &*p };
    if e.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
        if let Some(a) = e.accel() {
            a.closing();
        }
        if let Some(set) = e.epset() {
            set.closed();
        }
        if matches!(e.state(), State::Pending | State::Accel) {
            LIVE.fetch_sub(1, Ordering::AcqRel);
        }
        // SAFETY: the last reference: no slot points here any more.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// Makes `e` the entry of `fd` (a stale one is dropped).
pub(crate) fn install(fd: i32, e: Box<Entry>) {
    HIGH.fetch_max(fd as usize + 1, Ordering::AcqRel);
    match slot(fd) {
        Some(s) => release(s.swap(Box::into_raw(e), Ordering::AcqRel)),
        None => drop(e),
    }
}

/// `to` now refers to what `from` refers to (`dup`).
pub(crate) fn share(from: i32, to: i32) {
    let Some(dst) = slot(to) else { return };
    HIGH.fetch_max(to as usize + 1, Ordering::AcqRel);
    let p = slot(from).map_or(std::ptr::null_mut(), |s| s.load(Ordering::Acquire));
    if !p.is_null() {
        // SAFETY: a live entry (it is in `from`'s slot).
        unsafe { &*p }.refs.fetch_add(1, Ordering::AcqRel);
    }
    release(dst.swap(p, Ordering::AcqRel));
}

/// `fd` was closed (or is about to be).
pub(crate) fn remove(fd: i32) {
    if let Some(s) = slot(fd) {
        release(s.swap(std::ptr::null_mut(), Ordering::AcqRel));
    }
}

/// A new fd came from the kernel: any entry its number had is stale (the
/// old fd was closed behind this library's back).
pub(crate) fn purge(fd: i32) {
    remove(fd);
}

/// One past the highest fd that ever had an entry.
pub(crate) fn high() -> i32 {
    HIGH.load(Ordering::Acquire).min(i32::MAX as usize) as i32
}

/// `close_range(first, last)`.
pub(crate) fn remove_range(first: u32, last: u32) {
    let end = (last as usize).min(HIGH.load(Ordering::Acquire).saturating_sub(1));
    for fd in first as usize..=end {
        remove(fd as i32);
    }
}

/// At exit: every connection's peer learns from its next write.
pub(crate) fn closing_all() {
    for fd in 0..HIGH.load(Ordering::Acquire) {
        if let Some(e) = get(fd as i32) {
            if let Some(a) = e.accel() {
                a.closing();
            }
        }
    }
}
