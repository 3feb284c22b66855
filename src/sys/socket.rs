//! Sockets: one [`Socket`] type for IPv4, IPv6 and Unix-domain stream and
//! datagram sockets, created close-on-exec, with addresses as [`SockAddr`].
//!
//! The socket is created and bound in separate steps (unlike
//! `std::net::TcpListener::bind`), so options such as `SO_REUSEPORT` can be set
//! in between; the options themselves live in [`crate::sys::sockopt`].

use std::fmt;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{self as rnet, AddressFamily, SocketAddrAny, SocketAddrUnix, SocketType};

use super::error::{Context, Error, Result};

/// The address family of a socket (`AF_INET`, `AF_INET6`, `AF_UNIX`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Domain(AddressFamily);

impl Domain {
    /// `AF_INET`: IPv4.
    pub const IPV4: Self = Self(AddressFamily::INET);
    /// `AF_INET6`: IPv6.
    pub const IPV6: Self = Self(AddressFamily::INET6);
    /// `AF_UNIX`: Unix-domain sockets.
    pub const UNIX: Self = Self(AddressFamily::UNIX);

    /// The domain an address belongs to.
    pub fn of(addr: &SockAddr) -> Self {
        match addr {
            SockAddr::Inet(SocketAddr::V4(_)) => Self::IPV4,
            SockAddr::Inet(SocketAddr::V6(_)) => Self::IPV6,
            _ => Self::UNIX,
        }
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match *self {
            Self::IPV4 => "AF_INET",
            Self::IPV6 => "AF_INET6",
            Self::UNIX => "AF_UNIX",
            _ => "AF_?",
        })
    }
}

/// The type of a socket (`SOCK_STREAM`, `SOCK_DGRAM`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Type(SocketType);

/// The error of `call` on `addr`: an IP address is kept unrendered, so a
/// routine refusal (a refused or in-progress connect, a port in use)
/// allocates nothing.
fn addr_error(call: &'static str, addr: &SockAddr, e: rustix::io::Errno) -> Error {
    match addr {
        SockAddr::Inet(ip) => Error::with_inet(call, *ip, e.raw_os_error()),
        other => Error::new(call, other, e.raw_os_error()),
    }
}

impl Type {
    /// `SOCK_STREAM`: TCP, or a Unix stream socket.
    pub const STREAM: Self = Self(SocketType::STREAM);
    /// `SOCK_DGRAM`: UDP, or a Unix datagram socket.
    pub const DGRAM: Self = Self(SocketType::DGRAM);

    pub(super) fn from_rustix(ty: SocketType) -> Self {
        Self(ty)
    }
}

impl fmt::Debug for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match *self {
            Self::STREAM => "SOCK_STREAM",
            Self::DGRAM => "SOCK_DGRAM",
            _ => "SOCK_?",
        })
    }
}

/// Which half of a connection [`Socket::shutdown`] closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shutdown {
    /// `SHUT_RD`: no more receives.
    Read,
    /// `SHUT_WR`: no more sends; the peer reads end-of-file.
    Write,
    /// `SHUT_RDWR`: both.
    Both,
}

/// A socket address: an IP address and port, or a Unix-domain address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SockAddr {
    /// An IPv4 or IPv6 address with a port.
    Inet(SocketAddr),
    /// A Unix-domain socket bound to a path in the file system.
    Unix(PathBuf),
    /// A Linux abstract Unix-domain name (no file; gone when the socket closes).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Abstract(Vec<u8>),
    /// An unbound Unix-domain socket (for example one end of a socketpair).
    Unnamed,
}

impl SockAddr {
    /// A Unix-domain path address.
    pub fn unix(path: impl AsRef<Path>) -> Self {
        Self::Unix(path.as_ref().to_path_buf())
    }

    /// A Linux abstract Unix-domain address (`name` without the leading NUL).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn abstract_name(name: impl AsRef<[u8]>) -> Self {
        Self::Abstract(name.as_ref().to_vec())
    }

    /// A Unix-domain address as programs write one in a variable or a flag
    /// (`NOTIFY_SOCKET`, `PORTSERVER_ADDRESS`): `@name` is a Linux
    /// abstract name, anything else a path.
    ///
    /// # Errors
    ///
    /// `EINVAL` for an empty text, or an `@` name where there are no
    /// abstract names.
    pub fn parse_unix(text: &str) -> Result<Self> {
        if text.is_empty() {
            return Err(Error::invalid_input("unix address", "empty"));
        }
        match text.strip_prefix('@') {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Some(name) => Ok(Self::abstract_name(name)),
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            Some(_) => Err(Error::invalid_input(
                "unix address",
                format!("{text:?}: abstract names are Linux only"),
            )),
            None => Ok(Self::unix(text)),
        }
    }

    /// The IP address and port, if this is an internet address.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Self::Inet(a) => Some(*a),
            _ => None,
        }
    }

    /// The port, if this is an internet address.
    pub fn port(&self) -> Option<u16> {
        self.as_inet().map(|a| a.port())
    }

    /// The path, if this is a Unix-domain path address.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Self::Unix(p) => Some(p),
            _ => None,
        }
    }

    fn to_rustix(&self, call: &'static str) -> Result<SocketAddrAny> {
        Ok(match self {
            Self::Inet(a) => SocketAddrAny::from(*a),
            Self::Unix(p) => SocketAddrAny::from(
                SocketAddrUnix::new(p.as_path()).ctx(call, || p.display().to_string())?,
            ),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Self::Abstract(n) => SocketAddrAny::from(
                SocketAddrUnix::new_abstract_name(n).ctx(call, || self.to_string())?,
            ),
            Self::Unnamed => return Err(Error::invalid_input(call, "unnamed address")),
        })
    }

    fn from_rustix(a: SocketAddrAny) -> Self {
        match a.address_family() {
            AddressFamily::INET => match SocketAddrV4::try_from(a) {
                Ok(v4) => Self::Inet(SocketAddr::V4(v4)),
                Err(_) => Self::Unnamed,
            },
            AddressFamily::INET6 => match SocketAddrV6::try_from(a) {
                Ok(v6) => Self::Inet(SocketAddr::V6(v6)),
                Err(_) => Self::Unnamed,
            },
            _ => match SocketAddrUnix::try_from(a) {
                Ok(u) => Self::from_unix(&u),
                Err(_) => Self::Unnamed,
            },
        }
    }

    fn from_unix(u: &SocketAddrUnix) -> Self {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(name) = u.abstract_name() {
            // The kernel reports an unbound peer with an empty name.
            if name.is_empty() {
                return Self::Unnamed;
            }
            return Self::Abstract(name.to_vec());
        }
        match u.path_bytes() {
            Some(p) if !p.is_empty() => {
                let p = p.strip_suffix(b"\0").unwrap_or(p);
                Self::Unix(PathBuf::from(std::ffi::OsStr::from_bytes(p)))
            }
            _ => Self::Unnamed,
        }
    }
}

impl fmt::Display for SockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inet(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "{}", p.display()),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Self::Abstract(n) => write!(f, "@{}", n.escape_ascii()),
            Self::Unnamed => f.write_str("(unnamed)"),
        }
    }
}

impl From<SocketAddr> for SockAddr {
    fn from(a: SocketAddr) -> Self {
        Self::Inet(a)
    }
}

impl From<SocketAddrV4> for SockAddr {
    fn from(a: SocketAddrV4) -> Self {
        Self::Inet(a.into())
    }
}

impl From<SocketAddrV6> for SockAddr {
    fn from(a: SocketAddrV6) -> Self {
        Self::Inet(a.into())
    }
}

impl From<&Path> for SockAddr {
    fn from(p: &Path) -> Self {
        Self::unix(p)
    }
}

impl From<PathBuf> for SockAddr {
    fn from(p: PathBuf) -> Self {
        Self::Unix(p)
    }
}

/// A socket that owns its file descriptor and closes it on drop.
///
/// Every socket this module creates (by [`Socket::new`], [`Socket::accept`],
/// [`socketpair`] or [`Socket::try_clone`]) is close-on-exec; handing one to a
/// child process is explicit (see [`crate::sys::process`]). Writes never raise
/// `SIGPIPE`: a write to a closed peer is an `EPIPE` error.
#[must_use = "dropping a Socket closes it at once (a listener stops listening, a reserved port is freed)"]
pub struct Socket {
    fd: OwnedFd,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

/// Renders an fd for error messages.
pub(crate) fn fd_arg(fd: BorrowedFd<'_>) -> String {
    format!("fd {}", fd.as_raw_fd())
}

#[cfg(target_vendor = "apple")]
fn set_cloexec(fd: BorrowedFd<'_>, call: &'static str) -> Result<()> {
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC).ctx(call, || fd_arg(fd))
}

impl Socket {
    /// Creates a socket (`socket(2)`), close-on-exec.
    ///
    /// # Errors
    ///
    /// `socket` fails with `EAFNOSUPPORT` where the family is off (IPv6
    /// disabled), `EMFILE`/`ENFILE` when out of descriptors.
    ///
    /// # References
    ///
    /// ```c
    /// int socket(int domain, int type, int protocol);
    /// ```
    ///
    /// - `socket(2)`: [Linux](https://man7.org/linux/man-pages/man2/socket.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=socket&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/socket.2.html)
    #[doc(alias = "socket")]
    pub fn new(domain: Domain, ty: Type) -> Result<Self> {
        let args = || format!("{domain:?}, {ty:?}");
        #[cfg(not(target_vendor = "apple"))]
        let fd = rnet::socket_with(domain.0, ty.0, rnet::SocketFlags::CLOEXEC, None)
            .ctx("socket", args)?;
        #[cfg(target_vendor = "apple")]
        let fd = {
            let fd = rnet::socket(domain.0, ty.0, None).ctx("socket", args)?;
            set_cloexec(fd.as_fd(), "socket")?;
            rnet::sockopt::set_socket_nosigpipe(&fd, true).ctx("setsockopt", || {
                format!("{}, SO_NOSIGPIPE", fd_arg(fd.as_fd()))
            })?;
            fd
        };
        Ok(Self { fd })
    }

    /// Creates a socket in non-blocking mode (`SOCK_NONBLOCK` where the
    /// platform has it, so no second call), close-on-exec as [`Socket::new`].
    ///
    /// # References
    ///
    /// ```c
    /// int socket(int domain, int type, int protocol);
    /// ```
    ///
    /// - `socket(2)`: [Linux](https://man7.org/linux/man-pages/man2/socket.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=socket&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/socket.2.html)
    #[doc(alias = "socket")]
    pub fn new_nonblocking(domain: Domain, ty: Type) -> Result<Self> {
        #[cfg(not(target_vendor = "apple"))]
        {
            let flags = rnet::SocketFlags::CLOEXEC | rnet::SocketFlags::NONBLOCK;
            let fd = rnet::socket_with(domain.0, ty.0, flags, None)
                .ctx("socket", || format!("{domain:?}, {ty:?} | SOCK_NONBLOCK"))?;
            Ok(Self { fd })
        }
        #[cfg(target_vendor = "apple")]
        {
            let s = Self::new(domain, ty)?;
            s.set_nonblocking(true)?;
            Ok(s)
        }
    }

    /// Waits up to `timeout` until the socket is writable (a non-blocking
    /// connect finished, either way) or has an error pending (`poll(2)`);
    /// `false` on a timeout. Interrupted waits resume with the time left.
    ///
    /// # References
    ///
    /// ```c
    /// int poll(struct pollfd *fds, nfds_t nfds, int timeout);
    /// ```
    ///
    /// - `poll(2)`: [Linux](https://man7.org/linux/man-pages/man2/poll.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=poll&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/poll.2.html)
    #[doc(alias = "poll")]
    pub fn wait_writable(&self, timeout: Duration) -> Result<bool> {
        self.wait_for(rustix::event::PollFlags::OUT, Some(timeout))
    }

    /// Waits until the socket is readable, its peer hung up, or an error is
    /// pending (`poll(2)`), at most `timeout` (`None`: no limit); `false` on
    /// a timeout. Interrupted waits resume with the time left.
    ///
    /// # References
    ///
    /// ```c
    /// int poll(struct pollfd *fds, nfds_t nfds, int timeout);
    /// ```
    ///
    /// - `poll(2)`: [Linux](https://man7.org/linux/man-pages/man2/poll.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=poll&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/poll.2.html)
    #[doc(alias = "poll")]
    pub fn wait_readable(&self, timeout: Option<Duration>) -> Result<bool> {
        self.wait_for(rustix::event::PollFlags::IN, timeout)
    }

    fn wait_for(&self, flags: rustix::event::PollFlags, timeout: Option<Duration>) -> Result<bool> {
        super::fd::poll_one(self.fd.as_fd(), flags, timeout)
    }

    /// Creates a socket of the family `addr` belongs to.
    ///
    /// # References
    ///
    /// ```c
    /// int socket(int domain, int type, int protocol);
    /// ```
    ///
    /// - `socket(2)`: [Linux](https://man7.org/linux/man-pages/man2/socket.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=socket&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/socket.2.html)
    #[doc(alias = "socket")]
    pub fn for_addr(addr: &SockAddr, ty: Type) -> Result<Self> {
        Self::new(Domain::of(addr), ty)
    }

    /// Binds the socket to `addr` (`bind(2)`).
    ///
    /// # Errors
    ///
    /// `EADDRINUSE` when the address is taken, `EACCES` for a privileged port.
    ///
    /// # References
    ///
    /// ```c
    /// int bind(int sockfd, const struct sockaddr *addr, socklen_t addrlen);
    /// ```
    ///
    /// - `bind(2)`: [Linux](https://man7.org/linux/man-pages/man2/bind.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=bind&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/bind.2.html)
    pub fn bind(&self, addr: impl Into<SockAddr>) -> Result<()> {
        let addr = addr.into();
        let raw = addr.to_rustix("bind")?;
        rnet::bind(&self.fd, &raw).map_err(|e| addr_error("bind", &addr, e))
    }

    /// Marks the socket as accepting connections (`listen(2)`).
    ///
    /// # References
    ///
    /// ```c
    /// int listen(int sockfd, int backlog);
    /// ```
    ///
    /// - `listen(2)`: [Linux](https://man7.org/linux/man-pages/man2/listen.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=listen&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/listen.2.html)
    pub fn listen(&self, backlog: i32) -> Result<()> {
        rnet::listen(&self.fd, backlog).ctx("listen", || {
            format!("{}, backlog {backlog}", fd_arg(self.fd.as_fd()))
        })
    }

    /// Accepts a connection (`accept4(2)` with `SOCK_CLOEXEC` where it exists),
    /// returning the new socket and the peer's address.
    ///
    /// # Errors
    ///
    /// `EINVAL` on a socket that is not listening, `EAGAIN` on a non-blocking
    /// socket with nothing pending, `EMFILE` when out of descriptors. `EINTR` is
    /// surfaced, not retried.
    ///
    /// # References
    ///
    /// ```c
    /// int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags);
    /// ```
    ///
    /// - `accept4(2)`: [Linux](https://man7.org/linux/man-pages/man2/accept4.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=accept4&sektion=2)
    #[doc(alias = "accept4")]
    pub fn accept(&self) -> Result<(Socket, SockAddr)> {
        #[cfg(not(target_vendor = "apple"))]
        let (fd, addr) = rnet::acceptfrom_with(&self.fd, rnet::SocketFlags::CLOEXEC)
            .ctx_fd("accept", self.fd.as_fd())?;
        #[cfg(target_vendor = "apple")]
        let (fd, addr) = {
            let (fd, addr) = rnet::acceptfrom(&self.fd).ctx_fd("accept", self.fd.as_fd())?;
            set_cloexec(fd.as_fd(), "accept")?;
            (fd, addr)
        };
        let addr = addr.map_or(SockAddr::Unnamed, SockAddr::from_rustix);
        Ok((Socket { fd }, addr))
    }

    /// Connects to `addr` (`connect(2)`).
    ///
    /// # Errors
    ///
    /// `ECONNREFUSED` when nothing listens there; `EINPROGRESS` on a
    /// non-blocking socket (wait for writability, then read
    /// [`Socket::take_error`]).
    ///
    /// # References
    ///
    /// ```c
    /// int connect(int sockfd, const struct sockaddr *addr, socklen_t addrlen);
    /// ```
    ///
    /// - `connect(2)`: [Linux](https://man7.org/linux/man-pages/man2/connect.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=connect&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/connect.2.html)
    pub fn connect(&self, addr: impl Into<SockAddr>) -> Result<()> {
        let addr = addr.into();
        let raw = addr.to_rustix("connect")?;
        rnet::connect(&self.fd, &raw).map_err(|e| addr_error("connect", &addr, e))
    }

    /// The address the socket is bound to (`getsockname(2)`).
    ///
    /// # References
    ///
    /// ```c
    /// int getsockname(int sockfd, struct sockaddr *addr, socklen_t *addrlen);
    /// ```
    ///
    /// - `getsockname(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockname.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockname&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockname.2.html)
    #[doc(alias = "getsockname")]
    pub fn local_addr(&self) -> Result<SockAddr> {
        rnet::getsockname(&self.fd)
            .map(SockAddr::from_rustix)
            .ctx_fd("getsockname", self.fd.as_fd())
    }

    /// The address of the connected peer (`getpeername(2)`).
    ///
    /// # Errors
    ///
    /// `ENOTCONN` when the socket is not connected.
    ///
    /// # References
    ///
    /// ```c
    /// int getpeername(int sockfd, struct sockaddr *addr, socklen_t *addrlen);
    /// ```
    ///
    /// - `getpeername(2)`: [Linux](https://man7.org/linux/man-pages/man2/getpeername.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getpeername&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getpeername.2.html)
    #[doc(alias = "getpeername")]
    pub fn peer_addr(&self) -> Result<SockAddr> {
        rnet::getpeername(&self.fd)
            .map(|a| a.map_or(SockAddr::Unnamed, SockAddr::from_rustix))
            .ctx_fd("getpeername", self.fd.as_fd())
    }

    /// Switches non-blocking mode on or off (`ioctl(FIONBIO)`).
    ///
    /// # References
    ///
    /// ```c
    /// int fcntl(int fd, int cmd, ... /* arg */ );
    /// ```
    ///
    /// - `fcntl(2)`: [Linux](https://man7.org/linux/man-pages/man2/fcntl.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=fcntl&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/fcntl.2.html)
    #[doc(alias = "fcntl")]
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<()> {
        rustix::io::ioctl_fionbio(&self.fd, nonblocking).ctx("ioctl", || {
            format!("{}, FIONBIO {nonblocking}", fd_arg(self.fd.as_fd()))
        })
    }

    /// Shuts down one or both directions (`shutdown(2)`).
    ///
    /// # References
    ///
    /// ```c
    /// int shutdown(int sockfd, int how);
    /// ```
    ///
    /// - `shutdown(2)`: [Linux](https://man7.org/linux/man-pages/man2/shutdown.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=shutdown&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/shutdown.2.html)
    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        let h = match how {
            Shutdown::Read => rnet::Shutdown::Read,
            Shutdown::Write => rnet::Shutdown::Write,
            Shutdown::Both => rnet::Shutdown::Both,
        };
        rnet::shutdown(&self.fd, h).ctx("shutdown", || {
            format!("{}, {how:?}", fd_arg(self.fd.as_fd()))
        })
    }

    /// Sends bytes on a connected socket (`send(2)`, never raising `SIGPIPE`).
    ///
    /// # Errors
    ///
    /// `EPIPE` when the peer has closed, `EAGAIN` when a non-blocking socket's
    /// buffer is full. `EINTR` is surfaced.
    ///
    /// # References
    ///
    /// ```c
    /// ssize_t send(int sockfd, const void *buf, size_t len, int flags);
    /// ```
    ///
    /// - `send(2)`: [Linux](https://man7.org/linux/man-pages/man2/send.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=send&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/send.2.html)
    pub fn send(&self, buf: &[u8]) -> Result<usize> {
        rnet::send(&self.fd, buf, send_flags()).ctx_fd_len("send", self.fd.as_fd(), buf.len())
    }

    /// Receives bytes (`recv(2)`); `Ok(0)` is end-of-file on a stream socket.
    ///
    /// # References
    ///
    /// ```c
    /// ssize_t recv(int sockfd, void *buf, size_t len, int flags);
    /// ```
    ///
    /// - `recv(2)`: [Linux](https://man7.org/linux/man-pages/man2/recv.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=recv&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/recv.2.html)
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        let len = buf.len();
        rnet::recv(&self.fd, buf, rnet::RecvFlags::empty())
            .map(|(n, _)| n)
            .ctx_fd_len("recv", self.fd.as_fd(), len)
    }

    /// Sends the buffers in order as one call (`sendmsg(2)` with no
    /// ancillary data, `MSG_NOSIGNAL` where the platform has it, as
    /// [`send`](Self::send)); returns how many bytes went, which may be
    /// fewer than their total.
    ///
    /// # References
    ///
    /// ```c
    /// ssize_t sendmsg(int sockfd, const struct msghdr *msg, int flags);
    /// ```
    ///
    /// - `sendmsg(2)`: [Linux](https://man7.org/linux/man-pages/man2/sendmsg.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=sendmsg&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/sendmsg.2.html)
    #[doc(alias = "sendmsg")]
    #[doc(alias = "writev")]
    pub fn send_vectored(&self, bufs: &[io::IoSlice<'_>]) -> Result<usize> {
        let len = bufs.iter().map(|b| b.len()).sum();
        rnet::sendmsg(
            &self.fd,
            bufs,
            &mut rnet::SendAncillaryBuffer::default(),
            send_flags(),
        )
        .ctx_fd_len("sendmsg", self.fd.as_fd(), len)
    }

    /// Receives into the buffers in order as one call (`recvmsg(2)` with no
    /// ancillary data); `Ok(0)` is end-of-file on a stream socket.
    ///
    /// # References
    ///
    /// ```c
    /// ssize_t recvmsg(int sockfd, struct msghdr *msg, int flags);
    /// ```
    ///
    /// - `recvmsg(2)`: [Linux](https://man7.org/linux/man-pages/man2/recvmsg.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=recvmsg&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/recvmsg.2.html)
    #[doc(alias = "recvmsg")]
    #[doc(alias = "readv")]
    pub fn recv_vectored(&self, bufs: &mut [io::IoSliceMut<'_>]) -> Result<usize> {
        let len = bufs.iter().map(|b| b.len()).sum();
        rnet::recvmsg(
            &self.fd,
            bufs,
            &mut rnet::RecvAncillaryBuffer::default(),
            rnet::RecvFlags::empty(),
        )
        .map(|m| m.bytes)
        .ctx_fd_len("recvmsg", self.fd.as_fd(), len)
    }

    /// Sends without blocking even on a blocking socket (`MSG_DONTWAIT`).
    ///
    /// # References
    ///
    /// ```c
    /// ssize_t send(int sockfd, const void *buf, size_t len, int flags);
    /// ```
    ///
    /// - `send(2)`: [Linux](https://man7.org/linux/man-pages/man2/send.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=send&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/send.2.html)
    #[doc(alias = "send")]
    pub fn send_nonblocking(&self, buf: &[u8]) -> Result<usize> {
        rnet::send(&self.fd, buf, send_flags() | rnet::SendFlags::DONTWAIT).ctx_fd_len(
            "send",
            self.fd.as_fd(),
            buf.len(),
        )
    }

    /// Receives without blocking even on a blocking socket (`MSG_DONTWAIT`).
    ///
    /// # References
    ///
    /// ```c
    /// ssize_t recv(int sockfd, void *buf, size_t len, int flags);
    /// ```
    ///
    /// - `recv(2)`: [Linux](https://man7.org/linux/man-pages/man2/recv.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=recv&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/recv.2.html)
    #[doc(alias = "recv")]
    pub fn recv_nonblocking(&self, buf: &mut [u8]) -> Result<usize> {
        let len = buf.len();
        rnet::recv(&self.fd, buf, rnet::RecvFlags::DONTWAIT)
            .map(|(n, _)| n)
            .ctx_fd_len("recv", self.fd.as_fd(), len)
    }

    /// Sends a datagram to `addr` (`sendto(2)`).
    ///
    /// # References
    ///
    /// ```c
    /// ssize_t sendto(int sockfd, const void *buf, size_t len, int flags, const struct sockaddr *dest_addr, socklen_t addrlen);
    /// ```
    ///
    /// - `sendto(2)`: [Linux](https://man7.org/linux/man-pages/man2/sendto.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=sendto&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/sendto.2.html)
    #[doc(alias = "sendto")]
    pub fn send_to(&self, buf: &[u8], addr: impl Into<SockAddr>) -> Result<usize> {
        let addr = addr.into();
        let raw = addr.to_rustix("sendto")?;
        rnet::sendto(&self.fd, buf, send_flags(), &raw)
            .ctx("sendto", || format!("{addr}, {} bytes", buf.len()))
    }

    /// Receives a datagram and its sender's address (`recvfrom(2)`). A
    /// datagram longer than `buf` is truncated to it.
    ///
    /// # References
    ///
    /// ```c
    /// ssize_t recvfrom(int sockfd, void *buf, size_t len, int flags, struct sockaddr *src_addr, socklen_t *addrlen);
    /// ```
    ///
    /// - `recvfrom(2)`: [Linux](https://man7.org/linux/man-pages/man2/recvfrom.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=recvfrom&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/recvfrom.2.html)
    #[doc(alias = "recvfrom")]
    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SockAddr)> {
        let len = buf.len();
        rnet::recvfrom(&self.fd, buf, rnet::RecvFlags::empty())
            .map(|(n, _, a)| (n, a.map_or(SockAddr::Unnamed, SockAddr::from_rustix)))
            .ctx_fd_len("recvfrom", self.fd.as_fd(), len)
    }

    /// Receives a datagram and its sender's address without waiting
    /// (`recvfrom(2)` with `MSG_DONTWAIT`): `EAGAIN` when none is queued.
    ///
    /// # References
    ///
    /// ```c
    /// ssize_t recvfrom(int sockfd, void *buf, size_t len, int flags, struct sockaddr *src_addr, socklen_t *addrlen);
    /// ```
    ///
    /// - `recvfrom(2)`: [Linux](https://man7.org/linux/man-pages/man2/recvfrom.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=recvfrom&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/recvfrom.2.html)
    #[doc(alias = "recvfrom")]
    pub fn recv_from_nonblocking(&self, buf: &mut [u8]) -> Result<(usize, SockAddr)> {
        let len = buf.len();
        rnet::recvfrom(&self.fd, buf, rnet::RecvFlags::DONTWAIT)
            .map(|(n, _, a)| (n, a.map_or(SockAddr::Unnamed, SockAddr::from_rustix)))
            .ctx_fd_len("recvfrom", self.fd.as_fd(), len)
    }

    /// A second handle to the same socket (`fcntl(F_DUPFD_CLOEXEC)`).
    ///
    /// # References
    ///
    /// ```c
    /// int dup(int oldfd);
    /// ```
    ///
    /// - `dup(2)`: [Linux](https://man7.org/linux/man-pages/man2/dup.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=dup&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/dup.2.html)
    #[doc(alias = "dup")]
    pub fn try_clone(&self) -> Result<Socket> {
        rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
            .map(|fd| Socket { fd })
            .ctx("fcntl", || {
                format!("{}, F_DUPFD_CLOEXEC", fd_arg(self.fd.as_fd()))
            })
    }
}

#[cfg(not(target_vendor = "apple"))]
fn send_flags() -> rnet::SendFlags {
    rnet::SendFlags::NOSIGNAL
}

#[cfg(target_vendor = "apple")]
fn send_flags() -> rnet::SendFlags {
    // SO_NOSIGPIPE was set when the socket was made.
    rnet::SendFlags::empty()
}

/// Creates a pair of connected sockets (`socketpair(2)`), both close-on-exec.
///
/// # References
///
/// ```c
/// int socketpair(int domain, int type, int protocol, int sv[2]);
/// ```
///
/// - `socketpair(2)`: [Linux](https://man7.org/linux/man-pages/man2/socketpair.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=socketpair&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/socketpair.2.html)
pub fn socketpair(domain: Domain, ty: Type) -> Result<(Socket, Socket)> {
    let args = || format!("{domain:?}, {ty:?}");
    #[cfg(not(target_vendor = "apple"))]
    let (a, b) = rnet::socketpair(domain.0, ty.0, rnet::SocketFlags::CLOEXEC, None)
        .ctx("socketpair", args)?;
    #[cfg(target_vendor = "apple")]
    let (a, b) = {
        let (a, b) = rnet::socketpair(domain.0, ty.0, rnet::SocketFlags::empty(), None)
            .ctx("socketpair", args)?;
        for fd in [&a, &b] {
            set_cloexec(fd.as_fd(), "socketpair")?;
            rnet::sockopt::set_socket_nosigpipe(fd, true).ctx("setsockopt", || {
                format!("{}, SO_NOSIGPIPE", fd_arg(fd.as_fd()))
            })?;
        }
        (a, b)
    };
    Ok((Socket { fd: a }, Socket { fd: b }))
}

impl io::Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.recv(buf)?)
    }

    fn read_vectored(&mut self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        Ok(self.recv_vectored(bufs)?)
    }
}

impl io::Read for &Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.recv(buf)?)
    }

    fn read_vectored(&mut self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        Ok(self.recv_vectored(bufs)?)
    }
}

impl io::Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(self.send(buf)?)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        Ok(self.send_vectored(bufs)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Write for &Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(self.send(buf)?)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        Ok(self.send_vectored(bufs)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Conversions to and from std's socket types, by handing the fd over
/// (no call is made, and nothing checks that the socket is of the kind
/// the target type expects: as with `socket2`, converting a UDP socket
/// into a `TcpStream` gives a `TcpStream` whose calls fail).
macro_rules! std_socket_conversions {
    ($($t:ty),* $(,)?) => {$(
        impl From<Socket> for $t {
            fn from(s: Socket) -> Self {
                <$t>::from(s.fd)
            }
        }

        impl From<$t> for Socket {
            fn from(s: $t) -> Self {
                Self { fd: OwnedFd::from(s) }
            }
        }
    )*};
}

std_socket_conversions!(
    std::net::TcpListener,
    std::net::TcpStream,
    std::net::UdpSocket,
    std::os::unix::net::UnixListener,
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixDatagram,
);

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl IntoRawFd for Socket {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}

impl FromRawFd for Socket {
    /// # Safety
    ///
    /// `fd` must be an open socket that nothing else owns; the `Socket`
    /// closes it on drop.
    unsafe fn from_raw_fd(fd: RawFd) -> Self {
        Self {
            // SAFETY: the caller hands over sole ownership of an open fd.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        }
    }
}

impl From<OwnedFd> for Socket {
    fn from(fd: OwnedFd) -> Self {
        Self { fd }
    }
}

impl From<Socket> for OwnedFd {
    fn from(s: Socket) -> Self {
        s.fd
    }
}
