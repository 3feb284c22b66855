//! The shared-memory transport: a connection that starts on a Unix-domain
//! socket and then moves its bytes through a shared segment holding one
//! single-producer single-consumer byte ring per direction (after TSSX).
//!
//! - [`ShmStream::connect`] connects the socket, creates the segment (a
//!   sealed memfd by default, so nothing can leak by name; POSIX or SysV,
//!   mode 0600, as [`SegmentKind`] options), and sends it with
//!   `SCM_RIGHTS`; [`ShmListener::accept`] checks its size and header and
//!   maps it. The socket stays open: it is the liveness channel and the
//!   pollable fd.
//! - Reads and writes copy straight into and out of the rings, with no
//!   system call while both sides are busy. A side that must wait spins
//!   only while the peer advertises that it runs on another CPU (spinning on
//!   a shared CPU only delays the peer), or for a peer it has just woken
//!   that last ran on another CPU, so that one stall doesn't leave both
//!   sides sleeping once per message; then it sleeps on a futex in the
//!   segment (Linux; elsewhere it waits on the socket); the other side wakes
//!   it only if it said it sleeps. A futex sleep lasts at most 40 ms, after
//!   which the call checks that the peer's socket is still there; a call
//!   idle that long sleeps on the socket itself, where the peer's wake is a
//!   byte and its end a hang-up. So a peer that dies, even by SIGKILL, turns
//!   a blocked read into end-of-file and a blocked write into `BrokenPipe`
//!   within 40 ms, and an idle connection takes no CPU (only a process
//!   that shares a side with another after [`fork`] keeps the 40 ms checks:
//!   the two share the socket).
//! - In non-blocking mode a call that can't progress returns `WouldBlock`
//!   after asking the peer to wake it through the socket: register the
//!   stream (its [`AsFd`](std::os::fd::AsFd) is the socket) in
//!   [`crate::net::event::EventLoop`] for readability.
//! - Nothing read from shared memory is trusted: indices are checked and
//!   positions masked, so a buggy or hostile peer can garble the stream
//!   (an `InvalidData` error) but can't make us read or write outside the
//!   segment, panic, or loop forever. Nor can it make our accesses fault
//!   by shrinking the segment: [`ShmListener::accept`] takes a memfd only
//!   sealed against shrinking, and a SysV segment can't change size. A
//!   POSIX segment can't be sealed, so its creator could truncate it: a
//!   listener refuses those where memfds exist, unless told to trust its
//!   peers ([`ShmListener::set_sealed_only`]); a connector that asks for
//!   one trusts its server. A SysV
//!   segment is taken only from the process that created it (checked on
//!   Linux against the socket's peer credentials), so a peer can't make us
//!   attach someone else's.
//! - Fork: [`fork`] raises the holder count of every live stream, so the
//!   side is closed only when its last holder closes it. Each direction has
//!   one reader and one writer process: the first process to read (or
//!   write) claims that direction, another one gets an `EBUSY` error until the
//!   claimer closes its copy. The usual pattern: fork, and close the stream
//!   in the process that won't use it. Processes that share a side also
//!   share its socket, where non-blocking mode gets its wake-ups: one could
//!   take a wake-up meant for the other, so only one of them may use the
//!   stream in non-blocking mode (blocking calls wake through the segment).
//! - Threads: [`ShmStream::split`] gives a reading and a writing half that
//!   may move to different threads (both blocking).
//! - [`ConnTable`] hands out int handles, negative for accelerated
//!   connections as the TSSX notes do.

mod ring;
mod segment;
mod stream;
#[doc(hidden)]
pub mod testing;

pub use ring::Corrupt;
pub use stream::{SegmentKind, ShmListener, ShmOptions, ShmReadHalf, ShmStream, ShmWriteHalf};

use std::collections::HashMap;

use crate::sys::process::{getpid, Fork};

/// Forks (see [`crate::sys::process::fork`]), first raising the holder
/// count of every live [`ShmStream`] of this process so that each process's
/// close is counted; in the child the streams learn its pid.
///
/// A plain `fork()` works too, but then the child's close looks like the
/// parent's: the peer may see the stream closed while the parent still
/// holds it.
///
/// # Safety
///
/// As [`crate::sys::process::fork`]: in a multi-threaded parent the child
/// may only do async-signal-safe work until it execs or exits.
pub unsafe fn fork() -> crate::sys::Result<Fork> {
    let live = stream::fork_prepare();
    // SAFETY: the caller upholds the fork contract.
    let r = unsafe { crate::sys::process::fork() };
    match &r {
        Ok(Fork::Child) => stream::fork_child(&live, getpid() as u32),
        Ok(Fork::Parent(_)) => {}
        Err(_) => stream::fork_failed(&live),
    }
    // Dropping the Arcs only lowers reference counts: the streams still
    // hold theirs, so nothing is freed (no allocator call in the child).
    drop(live);
    r
}

/// Connections by int handle, for code that must hand out ints (a C API, a
/// preload shim): accelerated connections get negative ids (-1, -2, ...),
/// plain ones positive ids (1, 2, ...), so the two never collide with each
/// other (nor, for negative ids, with fds).
#[derive(Debug)]
pub struct ConnTable<T> {
    next_accel: i32,
    next_plain: i32,
    conns: HashMap<i32, T>,
}

impl<T> Default for ConnTable<T> {
    fn default() -> Self {
        Self {
            next_accel: -1,
            next_plain: 1,
            conns: HashMap::new(),
        }
    }
}

impl<T> ConnTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores an accelerated connection; returns its (negative) id.
    pub fn insert_accelerated(&mut self, conn: T) -> i32 {
        let id = self.next_accel;
        self.next_accel = if id == i32::MIN { -1 } else { id - 1 };
        self.conns.insert(id, conn);
        id
    }

    /// Stores a plain connection; returns its (positive) id.
    pub fn insert_plain(&mut self, conn: T) -> i32 {
        let id = self.next_plain;
        self.next_plain = if id == i32::MAX { 1 } else { id + 1 };
        self.conns.insert(id, conn);
        id
    }

    /// Whether `id` names an accelerated connection.
    pub fn is_accelerated(id: i32) -> bool {
        id < 0
    }

    /// The connection with this id.
    pub fn get(&self, id: i32) -> Option<&T> {
        self.conns.get(&id)
    }

    /// The connection with this id, mutably.
    pub fn get_mut(&mut self, id: i32) -> Option<&mut T> {
        self.conns.get_mut(&id)
    }

    /// Removes and returns the connection.
    pub fn remove(&mut self, id: i32) -> Option<T> {
        self.conns.remove(&id)
    }

    /// How many connections are stored.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}
