//! The one error type of the crate: which system call failed, on what, and why.
//!
//! Every wrapper in [`crate::sys`] returns [`Result`]. An [`Error`] carries the
//! call's name, a short rendering of the arguments that matter (an address, a
//! path, an fd, an option name, a size) and the errno. The context is built only
//! on the error path, so the success path costs nothing extra.

use std::fmt;
use std::io;

/// A failed system call: its name, the arguments that matter, and the errno.
///
/// `Display` reads like `bind(127.0.0.1:49475): Address already in use (os error 98)`;
/// [`errno`](Self::errno) gives the typed [`Errno`], which is also the
/// error's [`source`](std::error::Error::source).
///
/// It converts into [`std::io::Error`] as the errno itself, the `io::Error`
/// std would have returned from the same call: [`io::Error::raw_os_error`]
/// and [`io::Error::kind`] come out right, so code that matches errnos keeps
/// working across `?`. std's `io::Error` can't carry both an OS error and a
/// message, and of the two the errno is what a program acts on; the call
/// and its arguments stay in this type, which every wrapper returns, so
/// keep it (or render it) where the context matters.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    call: &'static str,
    args: Args,
    errno: Errno,
}

/// An errno value: the reason a system call gave for failing.
///
/// The constants are named as in C (`Errno::EADDRINUSE`); `Display` is the
/// system's message with the number, as std prints it
/// (`Address already in use (os error 98)`), and `Debug` shows the number
/// and the message. Converts into [`io::Error`] as an OS error.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(i32);

impl Errno {
    /// The errno with this raw value.
    pub const fn from_raw(raw: i32) -> Self {
        Self(raw)
    }

    /// The raw value, as `errno` holds it.
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// The [`io::ErrorKind`] std maps this errno to.
    pub fn kind(self) -> io::ErrorKind {
        io::Error::from_raw_os_error(self.0).kind()
    }

    /// Permission denied.
    pub const EACCES: Self = Self(libc::EACCES);
    /// Operation not permitted.
    pub const EPERM: Self = Self(libc::EPERM);
    /// Read-only file system.
    pub const EROFS: Self = Self(libc::EROFS);
    /// Address already in use.
    pub const EADDRINUSE: Self = Self(libc::EADDRINUSE);
    /// Cannot assign requested address (no such local address).
    pub const EADDRNOTAVAIL: Self = Self(libc::EADDRNOTAVAIL);
    /// Address family not supported.
    pub const EAFNOSUPPORT: Self = Self(libc::EAFNOSUPPORT);
    /// Protocol not supported.
    pub const EPROTONOSUPPORT: Self = Self(libc::EPROTONOSUPPORT);
    /// Resource temporarily unavailable (would block); the same value as
    /// `EWOULDBLOCK` on every supported platform.
    pub const EAGAIN: Self = Self(libc::EAGAIN);
    /// Bad file descriptor.
    pub const EBADF: Self = Self(libc::EBADF);
    /// Device or resource busy.
    pub const EBUSY: Self = Self(libc::EBUSY);
    /// No child processes.
    pub const ECHILD: Self = Self(libc::ECHILD);
    /// Connection aborted.
    pub const ECONNABORTED: Self = Self(libc::ECONNABORTED);
    /// Connection refused.
    pub const ECONNREFUSED: Self = Self(libc::ECONNREFUSED);
    /// Connection reset by peer.
    pub const ECONNRESET: Self = Self(libc::ECONNRESET);
    /// Operation now in progress (a non-blocking connect).
    pub const EINPROGRESS: Self = Self(libc::EINPROGRESS);
    /// Interrupted system call.
    pub const EINTR: Self = Self(libc::EINTR);
    /// Invalid argument.
    pub const EINVAL: Self = Self(libc::EINVAL);
    /// Input/output error.
    pub const EIO: Self = Self(libc::EIO);
    /// Too many open files in this process.
    pub const EMFILE: Self = Self(libc::EMFILE);
    /// Message too long.
    pub const EMSGSIZE: Self = Self(libc::EMSGSIZE);
    /// Too many open files in the system.
    pub const ENFILE: Self = Self(libc::ENFILE);
    /// No such file or directory.
    pub const ENOENT: Self = Self(libc::ENOENT);
    /// Out of memory.
    pub const ENOMEM: Self = Self(libc::ENOMEM);
    /// No space left on device.
    pub const ENOSPC: Self = Self(libc::ENOSPC);
    /// Function not implemented.
    pub const ENOSYS: Self = Self(libc::ENOSYS);
    /// Socket not connected.
    pub const ENOTCONN: Self = Self(libc::ENOTCONN);
    /// Not a socket.
    pub const ENOTSOCK: Self = Self(libc::ENOTSOCK);
    /// Operation not supported.
    pub const EOPNOTSUPP: Self = Self(libc::EOPNOTSUPP);
    /// Broken pipe.
    pub const EPIPE: Self = Self(libc::EPIPE);
    /// Protocol error.
    pub const EPROTO: Self = Self(libc::EPROTO);
    /// No such process.
    pub const ESRCH: Self = Self(libc::ESRCH);
    /// Connection timed out.
    pub const ETIMEDOUT: Self = Self(libc::ETIMEDOUT);
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&io::Error::from_raw_os_error(self.0), f)
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Errno({}: {})",
            self.0,
            io::Error::from_raw_os_error(self.0)
        )
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for io::Error {
    fn from(e: Errno) -> Self {
        io::Error::from_raw_os_error(e.0)
    }
}

impl From<Errno> for i32 {
    fn from(e: Errno) -> Self {
        e.0
    }
}

/// The arguments of a failed call, kept unrendered where that is cheap, so
/// that errors expected on hot paths (`EAGAIN` from a drained socket) cost
/// no allocation; rendered by `Display`.
#[derive(Clone, PartialEq, Eq)]
enum Args {
    /// A file descriptor: `fd 5`.
    Fd(i32),
    /// A file descriptor and a buffer length: `fd 5, 64 bytes`.
    FdLen(i32, usize),
    /// An IP socket address: `127.0.0.1:8080`.
    Inet(std::net::SocketAddr),
    /// Anything else, rendered when the error was made.
    Text(Box<str>),
}

impl fmt::Display for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fd(fd) => write!(f, "fd {fd}"),
            Self::FdLen(fd, len) => write!(f, "fd {fd}, {len} bytes"),
            Self::Inet(addr) => write!(f, "{addr}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// The result type of every wrapper in [`crate::sys`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds an error for `call` with a rendering of its arguments and a raw errno.
    pub fn new(call: &'static str, args: impl fmt::Display, errno: i32) -> Self {
        Self {
            call,
            args: Args::Text(args.to_string().into_boxed_str()),
            errno: Errno(errno),
        }
    }

    /// An error whose argument is one fd, made without allocating.
    pub(crate) fn with_fd(call: &'static str, fd: i32, errno: i32) -> Self {
        Self {
            call,
            args: Args::Fd(fd),
            errno: Errno(errno),
        }
    }

    /// An error whose arguments are an fd and a length, made without
    /// allocating.
    pub(crate) fn with_fd_len(call: &'static str, fd: i32, len: usize, errno: i32) -> Self {
        Self {
            call,
            args: Args::FdLen(fd, len),
            errno: Errno(errno),
        }
    }

    /// An error whose argument is an IP socket address, made without
    /// allocating (a refused or in-progress connect is routine).
    pub(crate) fn with_inet(call: &'static str, addr: std::net::SocketAddr, errno: i32) -> Self {
        Self {
            call,
            args: Args::Inet(addr),
            errno: Errno(errno),
        }
    }

    /// Builds an error for input the call was never made with because it was
    /// invalid (`EINVAL`), such as a Unix path that is too long.
    pub fn invalid_input(call: &'static str, args: impl fmt::Display) -> Self {
        Self::new(call, args, libc::EINVAL)
    }

    /// The name of the system call (or library operation) that failed.
    pub fn call(&self) -> &'static str {
        self.call
    }

    /// The rendering of the arguments that matter, as shown between parentheses.
    pub fn args(&self) -> std::borrow::Cow<'_, str> {
        match &self.args {
            Args::Text(t) => std::borrow::Cow::Borrowed(t),
            other => std::borrow::Cow::Owned(other.to_string()),
        }
    }

    /// The raw errno value.
    pub fn raw_os_error(&self) -> i32 {
        self.errno.0
    }

    /// The errno, typed: compare it with the constants of [`Errno`].
    pub fn errno(&self) -> Errno {
        self.errno
    }

    /// The [`io::ErrorKind`] the errno maps to.
    pub fn kind(&self) -> io::ErrorKind {
        self.errno.kind()
    }

    /// Whether the call would have blocked (`EAGAIN` / `EWOULDBLOCK`).
    pub fn is_would_block(&self) -> bool {
        self.kind() == io::ErrorKind::WouldBlock
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({}): {}", self.call, self.args, self.errno)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("call", &self.call)
            .field("args", &self.args())
            .field("errno", &self.errno)
            .finish()
    }
}

/// The source is the [`Errno`]. `Display` includes its message too, since
/// most programs print an error with `{}` alone; a reporter that walks the
/// chain shows the errno's text a second time.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.errno)
    }
}

/// Converts into the OS error std would have returned: `raw_os_error()` is
/// the errno and `kind()` follows from it; the call and its arguments are
/// not kept (see [`Error`]).
impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        io::Error::from(e.errno)
    }
}

impl Error {
    /// Into an `io::Error` that keeps this error as its payload, message and
    /// all, for conditions the library detected itself rather than a failed
    /// system call (a second writer on a shared-memory direction, say),
    /// where the errno alone would explain nothing. Its `raw_os_error()`
    /// is `None`, as std's own errors of that kind; [`Error::errno_of`]
    /// finds the errno.
    pub(crate) fn into_io_explained(self) -> io::Error {
        io::Error::new(self.kind(), self)
    }

    /// An [`Error`] from an `io::Error`: one that carries an [`Error`] (made
    /// with `io::Error::new(kind, error)`) gives it back intact, anything
    /// else becomes one named `call` with the `io::Error`'s message as its
    /// arguments and its errno (`EIO` if it has none).
    pub fn from_io(call: &'static str, e: io::Error) -> Self {
        let errno = Self::errno_of(&e).unwrap_or(libc::EIO);
        let text = e.to_string();
        match e.into_inner().map(|inner| inner.downcast::<Error>()) {
            Some(Ok(inner)) => *inner,
            _ => Self::new(call, text, errno),
        }
    }

    /// The errno behind an `io::Error`: its own `raw_os_error`, or that of an
    /// [`Error`] it carries.
    pub fn errno_of(e: &io::Error) -> Option<i32> {
        e.raw_os_error().or_else(|| {
            e.get_ref()
                .and_then(|inner| inner.downcast_ref::<Error>())
                .map(Error::raw_os_error)
        })
    }
}

/// Adds call context to a rustix or std result, building it only on error.
pub(crate) trait Context<T> {
    /// Maps an error to [`Error`] with `call` and the arguments `args()` renders.
    fn ctx<A: fmt::Display>(self, call: &'static str, args: impl FnOnce() -> A) -> Result<T>;

    /// Maps an error to [`Error`] with `call` and an fd, without allocating.
    fn ctx_fd(self, call: &'static str, fd: std::os::fd::BorrowedFd<'_>) -> Result<T>;

    /// Maps an error to [`Error`] with `call`, an fd and a length, without
    /// allocating.
    fn ctx_fd_len(
        self,
        call: &'static str,
        fd: std::os::fd::BorrowedFd<'_>,
        len: usize,
    ) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, rustix::io::Errno> {
    #[inline]
    fn ctx<A: fmt::Display>(self, call: &'static str, args: impl FnOnce() -> A) -> Result<T> {
        match self {
            Ok(v) => Ok(v),
            Err(e) => Err(Error::new(call, args(), e.raw_os_error())),
        }
    }

    #[inline]
    fn ctx_fd(self, call: &'static str, fd: std::os::fd::BorrowedFd<'_>) -> Result<T> {
        use std::os::fd::AsRawFd;
        self.map_err(|e| Error::with_fd(call, fd.as_raw_fd(), e.raw_os_error()))
    }

    #[inline]
    fn ctx_fd_len(
        self,
        call: &'static str,
        fd: std::os::fd::BorrowedFd<'_>,
        len: usize,
    ) -> Result<T> {
        use std::os::fd::AsRawFd;
        self.map_err(|e| Error::with_fd_len(call, fd.as_raw_fd(), len, e.raw_os_error()))
    }
}

impl<T> Context<T> for io::Result<T> {
    #[inline]
    fn ctx<A: fmt::Display>(self, call: &'static str, args: impl FnOnce() -> A) -> Result<T> {
        match self {
            Ok(v) => Ok(v),
            Err(e) => Err(Error::new(
                call,
                args(),
                e.raw_os_error().unwrap_or(libc::EIO),
            )),
        }
    }

    #[inline]
    fn ctx_fd(self, call: &'static str, fd: std::os::fd::BorrowedFd<'_>) -> Result<T> {
        use std::os::fd::AsRawFd;
        self.map_err(|e| {
            Error::with_fd(call, fd.as_raw_fd(), e.raw_os_error().unwrap_or(libc::EIO))
        })
    }

    #[inline]
    fn ctx_fd_len(
        self,
        call: &'static str,
        fd: std::os::fd::BorrowedFd<'_>,
        len: usize,
    ) -> Result<T> {
        use std::os::fd::AsRawFd;
        self.map_err(|e| {
            Error::with_fd_len(
                call,
                fd.as_raw_fd(),
                len,
                e.raw_os_error().unwrap_or(libc::EIO),
            )
        })
    }
}

/// Reads `errno` after a libc call reported failure.
pub(crate) fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// This thread's `errno` slot, for code that must save and restore it (a
/// signal handler) or read it without allocating (a forked child).
///
/// # Safety
///
/// The pointer is valid for the calling thread only and must not be kept.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) unsafe fn errno_ptr() -> *mut libc::c_int {
    // SAFETY: returns this thread's errno slot; always valid.
    unsafe { libc::__errno_location() }
}

/// See the Linux variant.
///
/// # Safety
///
/// The pointer is valid for the calling thread only and must not be kept.
#[cfg(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "dragonfly"
))]
pub(crate) unsafe fn errno_ptr() -> *mut libc::c_int {
    // SAFETY: returns this thread's errno slot; always valid.
    unsafe { libc::__error() }
}

/// See the Linux variant.
///
/// # Safety
///
/// The pointer is valid for the calling thread only and must not be kept.
#[cfg(any(target_os = "openbsd", target_os = "netbsd"))]
pub(crate) unsafe fn errno_ptr() -> *mut libc::c_int {
    // SAFETY: returns this thread's errno slot; always valid.
    unsafe { libc::__errno() }
}

/// Errno values the layers above compare errors against, so that they never
/// name libc themselves.
pub mod errno {
    /// Permission denied.
    pub const EACCES: i32 = libc::EACCES;
    /// Operation not permitted.
    pub const EPERM: i32 = libc::EPERM;
    /// Read-only file system.
    pub const EROFS: i32 = libc::EROFS;
    /// Address already in use.
    pub const EADDRINUSE: i32 = libc::EADDRINUSE;
    /// Cannot assign requested address (no such local address).
    pub const EADDRNOTAVAIL: i32 = libc::EADDRNOTAVAIL;
    /// Address family not supported (IPv6 off).
    pub const EAFNOSUPPORT: i32 = libc::EAFNOSUPPORT;
    /// Protocol not supported.
    pub const EPROTONOSUPPORT: i32 = libc::EPROTONOSUPPORT;
    /// Resource temporarily unavailable (would block).
    pub const EAGAIN: i32 = libc::EAGAIN;
    /// Bad file descriptor.
    pub const EBADF: i32 = libc::EBADF;
    /// Device or resource busy.
    pub const EBUSY: i32 = libc::EBUSY;
    /// No child processes.
    pub const ECHILD: i32 = libc::ECHILD;
    /// Connection aborted (a peer reset before accept).
    pub const ECONNABORTED: i32 = libc::ECONNABORTED;
    /// Protocol error (some kernels' accept of a reset connection).
    pub const EPROTO: i32 = libc::EPROTO;
    /// Connection reset by peer.
    pub const ECONNRESET: i32 = libc::ECONNRESET;
    /// Operation now in progress (a non-blocking connect).
    pub const EINPROGRESS: i32 = libc::EINPROGRESS;
    /// Connection refused.
    pub const ECONNREFUSED: i32 = libc::ECONNREFUSED;
    /// Interrupted system call.
    pub const EINTR: i32 = libc::EINTR;
    /// Invalid argument.
    pub const EINVAL: i32 = libc::EINVAL;
    /// Too many open files in this process.
    pub const EMFILE: i32 = libc::EMFILE;
    /// Too many open files in the system.
    pub const ENFILE: i32 = libc::ENFILE;
    /// No such file or directory.
    pub const ENOENT: i32 = libc::ENOENT;
    /// Broken pipe.
    pub const EPIPE: i32 = libc::EPIPE;
    /// No such process.
    pub const ESRCH: i32 = libc::ESRCH;
    /// Connection timed out.
    pub const ETIMEDOUT: i32 = libc::ETIMEDOUT;
    /// Message too long (a datagram larger than the protocol or the path
    /// takes).
    pub const EMSGSIZE: i32 = libc::EMSGSIZE;
    /// Socket not connected.
    pub const ENOTCONN: i32 = libc::ENOTCONN;
    /// Not a socket.
    pub const ENOTSOCK: i32 = libc::ENOTSOCK;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errno_survives_into_io_error_and_is_the_source() {
        let e = Error::new("connect", "127.0.0.1:1", libc::ECONNREFUSED);
        assert_eq!(e.errno(), Errno::ECONNREFUSED);
        assert_eq!(e.errno().raw(), libc::ECONNREFUSED);
        assert_eq!(Errno::from_raw(libc::EINTR), Errno::EINTR);
        assert_eq!(i32::from(Errno::EPIPE), libc::EPIPE);
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.downcast_ref::<Errno>(), Some(&Errno::ECONNREFUSED));
        assert_eq!(
            source.to_string(),
            io::Error::from_raw_os_error(libc::ECONNREFUSED).to_string()
        );
        let io = io::Error::from(e.clone());
        assert_eq!(io.raw_os_error(), Some(libc::ECONNREFUSED));
        assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
        fn through_question_mark(e: Error) -> io::Result<()> {
            Err(e)?
        }
        let io = through_question_mark(e).unwrap_err();
        assert_eq!(io.raw_os_error(), Some(libc::ECONNREFUSED));
        assert_eq!(Errno::EAGAIN.kind(), io::ErrorKind::WouldBlock);
        assert!(format!("{:?}", Errno::EPIPE).contains(&libc::EPIPE.to_string()));
        assert_eq!(
            io::Error::from(Errno::ENOENT).raw_os_error(),
            Some(libc::ENOENT)
        );
    }

    #[test]
    fn from_io_gives_back_the_error_an_io_error_was_made_from() {
        let sys = Error::new("bind", "127.0.0.1:1", libc::EADDRINUSE);
        let back = Error::from_io("other", io::Error::new(sys.kind(), sys));
        assert_eq!(back.call(), "bind");
        assert_eq!(back.raw_os_error(), libc::EADDRINUSE);
        assert!(
            back.to_string().starts_with("bind(127.0.0.1:1): "),
            "{back}"
        );
        // Anything else is named by the caller, with its errno or EIO.
        let os = Error::from_io("read", io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!((os.call(), os.raw_os_error()), ("read", libc::ENOENT));
        let other = Error::from_io("read", io::Error::other("odd"));
        assert_eq!((other.call(), other.raw_os_error()), ("read", libc::EIO));
        assert!(other.to_string().starts_with("read(odd): "), "{other}");
    }
}
