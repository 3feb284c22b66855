//! The shared-memory transport: a connection that starts on a Unix-domain
//! socket and then moves its bytes through a shared segment holding one
//! single-producer single-consumer byte ring per direction (after TSSX).
//! The socket stays open as the liveness channel and the pollable fd.
//!
//! - Connecting: [`ShmStream::connect`] makes the segment (a sealed memfd
//!   by default; POSIX or SysV by [`SegmentKind`]) and sends it over the
//!   socket; [`ShmListener::accept`] checks and maps it (`listener.rs`,
//!   the messages in `hello.rs`, the layout in `segment.rs`). The listener
//!   reads handshakes without blocking, with a deadline and a bound on how
//!   many are pending, so no peer can hold it up;
//!   [`ShmStream::connect_nonblocking`] is the connecting side's.
//! - Moving bytes: no system call while both sides are busy (`ring.rs`);
//!   a side that must wait spins only while the peer runs on another CPU,
//!   then sleeps, and a dead peer turns a blocked call into end-of-file or
//!   `BrokenPipe` within 40 ms (`wait.rs`). Non-blocking mode returns
//!   `WouldBlock` and wakes through the socket, for
//!   [`crate::net::event::EventLoop`].
//! - Copying: large writes to a reader on another CPU go in with plain or
//!   streaming (non-temporal) stores, whichever this host moves faster:
//!   guessed from the cache topology, then measured on the connection's
//!   own traffic (`copy.rs`; [`ShmStream::set_copy_path`] forces one).
//! - Trust: nothing read from the segment is trusted; indices are checked
//!   and positions masked, only segments that can't shrink are taken by
//!   default ([`ShmListener::set_sealed_only`]), and a SysV segment only
//!   from the process that made it.
//! - Processes and threads: [`fork`] counts each process's hold (`shared.rs`);
//!   each direction has one reading and one writing process, claimed on
//!   first use (`EBUSY` for another); [`ShmStream::split`] gives halves for
//!   two threads (`split.rs`).
//! - [`ConnTable`] hands out int handles, negative for accelerated
//!   connections (`conn_table.rs`).

#[cfg(target_os = "linux")]
pub mod accel;
mod conn_table;
mod copy;
mod hello;
mod listener;
mod ring;
mod segment;
mod shared;
mod split;
mod stream;
#[cfg(feature = "testing")]
pub mod testing;
mod wait;

pub use conn_table::ConnTable;
pub use copy::CopyPath;
#[cfg(feature = "testing")]
pub use hello::{Hello, HelloError, ACK as HELLO_ACK, LEN as HELLO_LEN};
pub use listener::{
    HandshakeStats, ShmListener, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_PENDING,
    DEFAULT_MAX_RING_SIZE,
};
pub use ring::Corrupt;
pub use segment::SegmentKind;
pub use split::{ShmReadHalf, ShmWriteHalf};
pub use stream::{ShmConnecting, ShmOptions, ShmStream};

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
    let live = shared::fork_prepare();
    // SAFETY: the caller upholds the fork contract.
    let r = unsafe { crate::sys::process::fork() };
    match &r {
        Ok(Fork::Child) => shared::fork_child(&live, getpid() as u32),
        Ok(Fork::Parent(_)) => {}
        Err(_) => shared::fork_failed(&live),
    }
    // Dropping the Arcs only lowers reference counts: the streams still
    // hold theirs, so nothing is freed (no allocator call in the child).
    drop(live);
    r
}
