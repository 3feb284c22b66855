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

use crate::sys::fd::{is_socket, set_cloexec, take_inherited};
use crate::sys::process::{getpid, Spawn};
use crate::sys::socket::{Domain, Socket, Type};
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

/// One socket received by socket activation, checked as `sd_is_socket`
/// checks: it is a socket (`fstat`: `S_IFSOCK`), of this family
/// (`getsockname`) and type (`SO_TYPE`), listening or not
/// (`SO_ACCEPTCONN`).
#[derive(Debug)]
#[non_exhaustive]
pub struct ListenFd {
    /// Its name from `LISTEN_FDNAMES` (`"unknown"` when none was given, as
    /// systemd does).
    pub name: String,
    /// The fd number it arrived at (3, 4, ...).
    pub fd: RawFd,
    /// Its address family.
    pub domain: Domain,
    /// Stream or datagram.
    pub ty: Type,
    /// Whether it is a listening (accepting) socket.
    pub listening: bool,
    /// The socket, now close-on-exec and owned by the caller.
    pub socket: Socket,
}

impl ListenFd {
    fn refuse(&self, want: &str) -> Error {
        let family = if self.domain == Domain::UNIX {
            "Unix"
        } else if self.domain == Domain::IPV6 {
            "IPv6"
        } else {
            "IPv4"
        };
        let ty = if self.ty == Type::STREAM {
            "stream"
        } else if self.ty == Type::DGRAM {
            "datagram"
        } else {
            "other"
        };
        let state = if self.listening { "listening " } else { "" };
        Error::new(
            "ListenFd",
            format!(
                "fd {} {:?} is a {state}{family} {ty} socket, not a {want}",
                self.fd, self.name
            ),
            errno::EINVAL,
        )
    }

    fn check(self, inet: bool, ty: Type, listening: bool, want: &str) -> Result<Socket> {
        let family_ok = if inet {
            self.domain == Domain::IPV4 || self.domain == Domain::IPV6
        } else {
            self.domain == Domain::UNIX
        };
        if family_ok && self.ty == ty && self.listening == listening {
            Ok(self.socket)
        } else {
            Err(self.refuse(want))
        }
    }

    /// The socket as a [`std::net::TcpListener`].
    ///
    /// # Errors
    ///
    /// `EINVAL`, saying what the fd is, unless it is a listening IPv4 or
    /// IPv6 stream socket.
    pub fn into_tcp_listener(self) -> Result<std::net::TcpListener> {
        self.check(true, Type::STREAM, true, "listening TCP socket")
            .map(Into::into)
    }

    /// The socket as a [`std::net::UdpSocket`].
    ///
    /// # Errors
    ///
    /// `EINVAL` unless it is an IPv4 or IPv6 datagram socket.
    pub fn into_udp_socket(self) -> Result<std::net::UdpSocket> {
        self.check(true, Type::DGRAM, false, "UDP socket")
            .map(Into::into)
    }

    /// The socket as a [`std::os::unix::net::UnixListener`].
    ///
    /// # Errors
    ///
    /// `EINVAL` unless it is a listening Unix stream socket.
    pub fn into_unix_listener(self) -> Result<std::os::unix::net::UnixListener> {
        self.check(false, Type::STREAM, true, "listening Unix stream socket")
            .map(Into::into)
    }

    /// The socket as a [`std::os::unix::net::UnixDatagram`].
    ///
    /// # Errors
    ///
    /// `EINVAL` unless it is a Unix datagram socket.
    pub fn into_unix_datagram(self) -> Result<std::os::unix::net::UnixDatagram> {
        self.check(false, Type::DGRAM, false, "Unix datagram socket")
            .map(Into::into)
    }
}

/// Set once the inherited fds have been taken, so they are owned once.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The child's side of socket activation, with its choices; see
/// [`listen_fds`] for the usual one.
///
/// ```no_run
/// use procwire::net::port::Activation;
///
/// // Keep the variables (no `remove_var` while other threads may read
/// // the environment), and take the fds even without `LISTEN_PID`.
/// let fds = Activation::new().remove_variables(false).allow_missing_pid(true).take()?;
/// for fd in fds {
///     let listener = fd.into_tcp_listener()?;
///     println!("serving on {}", listener.local_addr()?);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug)]
#[must_use = "an Activation takes nothing until .take()"]
pub struct Activation {
    remove: bool,
    allow_missing_pid: bool,
}

impl Default for Activation {
    fn default() -> Self {
        Self::new()
    }
}

impl Activation {
    /// Removes the variables, requires `LISTEN_PID`.
    pub fn new() -> Self {
        Self {
            remove: true,
            allow_missing_pid: false,
        }
    }

    /// Whether [`take`](Self::take) removes `LISTEN_PID`, `LISTEN_FDS` and
    /// `LISTEN_FDNAMES` from the environment (default true), so that they
    /// don't reach this process's own children.
    ///
    /// Changing the environment is only sound while no other thread reads
    /// or writes it (which is why edition 2024 makes `remove_var` unsafe):
    /// take the fds early in `main`, before starting threads, or turn this
    /// off and start children with those variables cleared instead (a
    /// stale `LISTEN_PID` names this process, not theirs, so a child that
    /// checks it takes nothing).
    pub fn remove_variables(mut self, on: bool) -> Self {
        self.remove = on;
        self
    }

    /// Whether a missing `LISTEN_PID` is taken as "these fds are for this
    /// process" (default false: the protocol requires it, and fds promised
    /// to an ancestor must not be taken). Some launchers don't set it.
    /// A `LISTEN_PID` that names another process still takes nothing.
    pub fn allow_missing_pid(mut self, on: bool) -> Self {
        self.allow_missing_pid = on;
        self
    }

    /// Takes the sockets the parent passed, if they are for this process.
    ///
    /// Returns nothing when `LISTEN_FDS` is missing, when `LISTEN_PID` is
    /// missing (unless allowed) or names another process, and on every call
    /// after the first that took fds. Otherwise takes ownership of fds 3..,
    /// checks that each is a socket, sets close-on-exec on it, and returns
    /// them with their names, families, types and whether they listen.
    ///
    /// # Errors
    ///
    /// `EINVAL` naming the variable when `LISTEN_FDS` or `LISTEN_PID` is not
    /// a number, `EBADF` naming the fd when a promised fd is not open,
    /// `ENOTSOCK` naming it when it is not a socket.
    pub fn take(&self) -> Result<Vec<ListenFd>> {
        let pid = std::env::var("LISTEN_PID").ok();
        let count = std::env::var("LISTEN_FDS").ok();
        let names = std::env::var("LISTEN_FDNAMES").ok();
        if self.remove {
            for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
                std::env::remove_var(v);
            }
        }
        let Some(count) = count else {
            return Ok(Vec::new());
        };
        match pid {
            Some(pid) => {
                let pid: i32 = pid.trim().parse().map_err(|_| {
                    Error::new("listen_fds", format!("LISTEN_PID={pid:?}"), errno::EINVAL)
                })?;
                if pid != getpid() {
                    return Ok(Vec::new());
                }
            }
            None if self.allow_missing_pid => {}
            None => return Ok(Vec::new()),
        }
        let n: RawFd = count
            .trim()
            .parse()
            .ok()
            .filter(|n| (0..=4096).contains(n))
            .ok_or_else(|| {
                Error::new("listen_fds", format!("LISTEN_FDS={count:?}"), errno::EINVAL)
            })?;
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
            // SAFETY: by the protocol, fds 3..3+LISTEN_FDS were placed for
            // this process (LISTEN_PID matched, or the caller said a missing
            // one means this process) and nothing else in it owns them; the
            // TAKEN flag makes sure they are taken once.
            let fd = unsafe { take_inherited(raw) }?;
            if !is_socket(fd.as_fd())? {
                return Err(Error::new(
                    "listen_fds",
                    format!("fd {raw} (of LISTEN_FDS={n})"),
                    errno::ENOTSOCK,
                ));
            }
            set_cloexec(fd.as_fd(), true)?;
            let socket = Socket::from(fd);
            let ty = socket.socket_type()?;
            let domain = Domain::of(&socket.local_addr()?);
            let listening = socket.is_listening()?;
            out.push(ListenFd {
                name: names
                    .get(i as usize)
                    .filter(|s| !s.is_empty())
                    .unwrap_or(&"unknown")
                    .to_string(),
                fd: raw,
                domain,
                ty,
                listening,
                socket,
            });
        }
        Ok(out)
    }
}

/// The child's side with the usual choices ([`Activation::new`]): the
/// sockets the parent passed, if `LISTEN_PID` names this process, with the
/// three variables removed. Call it early in `main`, before starting
/// threads (it changes the environment; see
/// [`Activation::remove_variables`]).
///
/// # Errors
///
/// Those of [`Activation::take`].
pub fn listen_fds() -> Result<Vec<ListenFd>> {
    Activation::new().take()
}
