//! Hand-off of listening sockets by the systemd socket-activation protocol:
//! the sockets sit at fds 3, 4, ..., `LISTEN_FDS` says how many,
//! `LISTEN_FDNAMES` names them (`:`-separated), and `LISTEN_PID` holds the
//! pid of the process they are for. The child needs no socket options and
//! there is no window at all: the socket exists before the child starts.
//!
//! `LISTEN_PID` must equal the child's own pid, which only exists after the
//! fork, so the parent side writes it in the child between fork and exec
//! ([`Spawn::env_pid`]).

use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys::fd::{set_cloexec, take_inherited};
use crate::sys::process::{getpid, Spawn};
use crate::sys::socket::Socket;
use crate::sys::{errno, Error, Result};

/// The first fd number of the protocol.
pub const LISTEN_FDS_START: RawFd = 3;

/// Adds `listeners` to `spawn` by the protocol: each socket at fd 3, 4, ...
/// in order, and the three variables (with `LISTEN_PID` written in the child).
///
/// # Errors
///
/// `EINVAL` for a name that contains `:` (the protocol's separator) or is
/// longer than 255 bytes.
pub fn pass_listeners<'a>(
    spawn: &mut Spawn<'a>,
    listeners: &[(&str, BorrowedFd<'a>)],
) -> Result<()> {
    let mut names = Vec::with_capacity(listeners.len());
    for (i, (name, fd)) in listeners.iter().enumerate() {
        if name.contains(':') || name.len() > 255 {
            return Err(Error::new(
                "pass_listeners",
                format!("fd name {name:?}"),
                errno::EINVAL,
            ));
        }
        names.push(*name);
        spawn.fd(*fd, LISTEN_FDS_START + i as RawFd);
    }
    spawn
        .env("LISTEN_FDS", listeners.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env_pid("LISTEN_PID");
    Ok(())
}

/// One socket received by socket activation.
#[derive(Debug)]
pub struct ListenFd {
    /// Its name from `LISTEN_FDNAMES` (`"unknown"` when none was given, as
    /// systemd does).
    pub name: String,
    /// The socket, now close-on-exec and owned by the caller.
    pub socket: Socket,
}

/// Set once the inherited fds have been taken, so they are owned once.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The child's side: the sockets the parent passed, if they are for this
/// process.
///
/// Returns nothing when `LISTEN_PID` is missing or names another process (the
/// variables were inherited from further up). Otherwise takes ownership of
/// fds 3.. , sets close-on-exec on them, and returns them with their names.
/// In every case it removes the three variables so that they don't leak to
/// this process's own children, and a second call returns nothing. Call it
/// early in `main`, before starting threads (it changes the environment).
///
/// # Errors
///
/// `EINVAL` naming the variable when `LISTEN_FDS` or `LISTEN_PID` is not a
/// number, `EBADF` naming the fd when a promised fd is not open.
pub fn listen_fds() -> Result<Vec<ListenFd>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(v);
    }
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(Vec::new());
    };
    let pid: i32 = pid
        .trim()
        .parse()
        .map_err(|_| Error::new("listen_fds", format!("LISTEN_PID={pid:?}"), errno::EINVAL))?;
    if pid != getpid() {
        return Ok(Vec::new());
    }
    let n: RawFd = count
        .trim()
        .parse()
        .ok()
        .filter(|n| (0..=4096).contains(n))
        .ok_or_else(|| Error::new("listen_fds", format!("LISTEN_FDS={count:?}"), errno::EINVAL))?;
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = names
        .as_deref()
        .map(|s| s.split(':').collect())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let raw = LISTEN_FDS_START + i;
        // SAFETY: by the protocol, fds 3..3+LISTEN_FDS were placed for this
        // process (LISTEN_PID matched) and nothing else in it owns them; the
        // TAKEN flag makes sure they are taken once.
        let fd = unsafe { take_inherited(raw) }?;
        set_cloexec(fd.as_fd(), true)?;
        out.push(ListenFd {
            name: names
                .get(i as usize)
                .filter(|s| !s.is_empty())
                .unwrap_or(&"unknown")
                .to_string(),
            socket: Socket::from(fd),
        });
    }
    Ok(out)
}
