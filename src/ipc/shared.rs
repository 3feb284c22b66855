//! What every copy of one stream in this process shares: the mapping, which
//! side we are, our pid as the stream knows it, and how many values hold
//! the side; and the registry of live streams that [`super::fork`] updates.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::ring::RingRef;
use super::segment::{Header, Mem, Side, HEADER_SIZE};

/// The mapping and what every copy of a stream in this process shares.
pub(crate) struct Shared {
    pub(crate) mem: Mem,
    /// Bytes per direction, checked when the segment was made or accepted.
    pub(crate) ring_size: u64,
    pub(crate) side: Side,
    /// This process's pid as the stream knows it (updated by `ipc::fork`).
    pub(crate) pid: AtomicU32,
    /// How many `ShmStream` values of this process hold the side: 1, or 2
    /// after `ShmStream::split`; each counts in the header's `refs`.
    pub(crate) holders: AtomicU32,
}

// SAFETY: `mem` is a live mapping owned here; everything reached through it
// is atomics or raw bytes copied in and out; no reference to it escapes.
unsafe impl Send for Shared {}
// SAFETY: see `Send`.
unsafe impl Sync for Shared {}

impl Shared {
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the mapping holds at least HEADER_SIZE bytes (checked when
        // it was made or opened), is page aligned (so 64-byte aligned for
        // `Header`), lives as long as `self`, and every field of `Header` is
        // an atomic, so other processes' writes are not data races.
        unsafe { &*(self.mem.base() as *const Header) }
    }

    /// The ring `writer` writes into.
    pub(crate) fn ring(&self, writer: Side) -> RingRef<'_> {
        let h = self.header();
        let d = writer.index();
        RingRef {
            // SAFETY: HEADER_SIZE + 2 * ring_size is the mapping's length,
            // so this stays inside it.
            data: unsafe {
                self.mem
                    .base()
                    .add(HEADER_SIZE + d * self.ring_size as usize)
            },
            size: self.ring_size,
            tail: &h.tail[d],
            head: &h.head[d],
        }
    }

    /// The other side.
    pub(crate) fn peer(&self) -> Side {
        self.side.peer()
    }

    /// This side's holder count in the header.
    pub(crate) fn refs(&self) -> &AtomicU32 {
        &self.header().refs[self.side.index()]
    }
}

/// Streams alive in this process, for [`super::fork`].
static REGISTRY: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// Adds a new stream to the registry (and forgets dead ones).
pub(crate) fn register(shared: &Arc<Shared>) {
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
        s.refs().fetch_add(n, Ordering::AcqRel);
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
        s.refs().fetch_sub(n, Ordering::AcqRel);
    }
}
