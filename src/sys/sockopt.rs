//! Socket options, one safe typed method pair per option on [`Socket`]
//! (socket2's way): `set_x(value)` and `x()`. The value type is fixed by the
//! method, so an option can't be set with the wrong type.
//!
//! ```compile_fail
//! # use procwire::sys::socket::{Domain, Socket, Type};
//! let s = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
//! s.set_linger(5u32).unwrap(); // SO_LINGER takes Option<Duration>
//! ```
//!
//! Options rustix has no call for (`SO_RCVLOWAT`) go through one private
//! `getsockopt`/`setsockopt` pair over `libc` for `c_int` values.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use rustix::net::sockopt as so;

use super::error::{last_errno, Context, Error, Result};
use super::socket::{fd_arg, Socket, Type};

/// The credentials of the process at the other end of a Unix socket, as the
/// kernel recorded them when it connected (`SO_PEERCRED`).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerCred {
    /// The peer's process id.
    pub pid: i32,
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
}

fn opt_args(s: &Socket, name: &str) -> String {
    format!("{}, {name}", fd_arg(s.as_fd()))
}

fn set_args(s: &Socket, name: &str, value: impl std::fmt::Debug) -> String {
    format!("{}, {name}, {value:?}", fd_arg(s.as_fd()))
}

/// Sets an `int`-valued option rustix has no call for.
fn setsockopt_int(s: &Socket, level: i32, opt: i32, name: &'static str, value: i32) -> Result<()> {
    // SAFETY: `value` is a live `c_int` and the length passed is its size; the
    // fd is owned by `s` and open for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&value as *const i32).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::new(
            "setsockopt",
            set_args(s, name, value),
            last_errno(),
        ))
    }
}

/// Reads an `int`-valued option rustix has no call for.
fn getsockopt_int(s: &Socket, level: i32, opt: i32, name: &'static str) -> Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals; `len` holds the size of
    // `value`, so the kernel writes at most that many bytes.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&mut value as *mut i32).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(Error::new("getsockopt", opt_args(s, name), last_errno()))
    }
}

impl Socket {
    /// Sets `SO_REUSEADDR`: bind an address whose old connections linger in
    /// TIME_WAIT.
    ///
    /// # References
    ///
    /// ```c
    /// int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen);
    /// ```
    ///
    /// - `setsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/setsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=setsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/setsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "SO_REUSEADDR")]
    #[doc(alias = "setsockopt")]
    pub fn set_reuse_address(&self, on: bool) -> Result<()> {
        so::set_socket_reuseaddr(self, on).ctx("setsockopt", || set_args(self, "SO_REUSEADDR", on))
    }

    /// Reads `SO_REUSEADDR`.
    ///
    /// # References
    ///
    /// ```c
    /// int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    /// ```
    ///
    /// - `getsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "getsockopt")]
    pub fn reuse_address(&self) -> Result<bool> {
        so::socket_reuseaddr(self).ctx("getsockopt", || opt_args(self, "SO_REUSEADDR"))
    }

    /// Sets `SO_REUSEPORT`: sockets of the same user that all set it may bind
    /// the same address and port.
    ///
    /// # References
    ///
    /// ```c
    /// int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen);
    /// ```
    ///
    /// - `setsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/setsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=setsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/setsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "SO_REUSEPORT")]
    #[doc(alias = "setsockopt")]
    pub fn set_reuse_port(&self, on: bool) -> Result<()> {
        so::set_socket_reuseport(self, on).ctx("setsockopt", || set_args(self, "SO_REUSEPORT", on))
    }

    /// Reads `SO_REUSEPORT`.
    ///
    /// # References
    ///
    /// ```c
    /// int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    /// ```
    ///
    /// - `getsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "getsockopt")]
    pub fn reuse_port(&self) -> Result<bool> {
        so::socket_reuseport(self).ctx("getsockopt", || opt_args(self, "SO_REUSEPORT"))
    }

    /// Sets `SO_RCVLOWAT`, the number of bytes that must be buffered before the
    /// socket reports readable. It saves wake-ups only: a non-blocking `recv`
    /// can still return fewer bytes, so decoders must reassemble anyway.
    ///
    /// # References
    ///
    /// ```c
    /// int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen);
    /// ```
    ///
    /// - `setsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/setsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=setsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/setsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "SO_RCVLOWAT")]
    #[doc(alias = "setsockopt")]
    pub fn set_recv_low_water(&self, bytes: usize) -> Result<()> {
        let v = i32::try_from(bytes).map_err(|_| {
            Error::invalid_input("setsockopt", set_args(self, "SO_RCVLOWAT", bytes))
        })?;
        setsockopt_int(self, libc::SOL_SOCKET, libc::SO_RCVLOWAT, "SO_RCVLOWAT", v)
    }

    /// Reads `SO_RCVLOWAT`.
    ///
    /// # References
    ///
    /// ```c
    /// int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    /// ```
    ///
    /// - `getsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "getsockopt")]
    pub fn recv_low_water(&self) -> Result<usize> {
        getsockopt_int(self, libc::SOL_SOCKET, libc::SO_RCVLOWAT, "SO_RCVLOWAT")
            .map(|v| v.max(0) as usize)
    }

    /// Reads `SO_TYPE`: whether this is a stream or a datagram socket (or
    /// another type, shown as `SOCK_?`).
    ///
    /// # References
    ///
    /// ```c
    /// int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    /// ```
    ///
    /// - `getsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "SO_TYPE")]
    #[doc(alias = "getsockopt")]
    pub fn socket_type(&self) -> Result<Type> {
        so::socket_type(self)
            .map(Type::from_rustix)
            .ctx("getsockopt", || opt_args(self, "SO_TYPE"))
    }

    /// Sets `SO_PASSCRED`: received messages carry the sender's pid, uid
    /// and gid (`SCM_CREDENTIALS`; see
    /// [`recv_with_pid_nonblocking`](crate::sys::fdpass::recv_with_pid_nonblocking)).
    ///
    /// # References
    ///
    /// - `unix(7)`: [Linux](https://man7.org/linux/man-pages/man7/unix.7.html)
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[doc(alias = "SO_PASSCRED")]
    #[doc(alias = "setsockopt")]
    pub fn set_pass_credentials(&self, on: bool) -> Result<()> {
        so::set_socket_passcred(self, on).ctx("setsockopt", || set_args(self, "SO_PASSCRED", on))
    }

    /// Reads `SO_ACCEPTCONN`: whether the socket is listening.
    ///
    /// # References
    ///
    /// ```c
    /// int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    /// ```
    ///
    /// - `getsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "SO_ACCEPTCONN")]
    #[doc(alias = "getsockopt")]
    pub fn is_listening(&self) -> Result<bool> {
        getsockopt_int(self, libc::SOL_SOCKET, libc::SO_ACCEPTCONN, "SO_ACCEPTCONN").map(|v| v != 0)
    }

    /// Sets `TCP_NODELAY`: send small segments at once instead of coalescing.
    ///
    /// # References
    ///
    /// ```c
    /// int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen);
    /// ```
    ///
    /// - `setsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/setsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=setsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/setsockopt.2.html)
    /// - `tcp(7)`: [Linux](https://man7.org/linux/man-pages/man7/tcp.7.html)
    #[doc(alias = "TCP_NODELAY")]
    #[doc(alias = "setsockopt")]
    pub fn set_nodelay(&self, on: bool) -> Result<()> {
        so::set_tcp_nodelay(self, on).ctx("setsockopt", || set_args(self, "TCP_NODELAY", on))
    }

    /// Reads `TCP_NODELAY`.
    ///
    /// # References
    ///
    /// ```c
    /// int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    /// ```
    ///
    /// - `getsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockopt.2.html)
    /// - `tcp(7)`: [Linux](https://man7.org/linux/man-pages/man7/tcp.7.html)
    #[doc(alias = "getsockopt")]
    pub fn nodelay(&self) -> Result<bool> {
        so::tcp_nodelay(self).ctx("getsockopt", || opt_args(self, "TCP_NODELAY"))
    }

    /// Sets `SO_RCVBUF`. The kernel may round or double the value (Linux
    /// doubles it for bookkeeping); read it back with [`Socket::recv_buffer_size`].
    ///
    /// # References
    ///
    /// ```c
    /// int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen);
    /// ```
    ///
    /// - `setsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/setsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=setsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/setsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "SO_RCVBUF")]
    #[doc(alias = "setsockopt")]
    pub fn set_recv_buffer_size(&self, bytes: usize) -> Result<()> {
        so::set_socket_recv_buffer_size(self, bytes)
            .ctx("setsockopt", || set_args(self, "SO_RCVBUF", bytes))
    }

    /// Sets `SO_RCVBUF` above the system's cap (`SO_RCVBUFFORCE`, Linux;
    /// needs `CAP_NET_ADMIN`). A caller without the privilege gets `EPERM`
    /// and can fall back to [`Socket::set_recv_buffer_size`].
    ///
    /// # References
    ///
    /// - [socket(7)](https://man7.org/linux/man-pages/man7/socket.7.html), `SO_RCVBUFFORCE`
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[doc(alias = "SO_RCVBUFFORCE")]
    pub fn set_recv_buffer_size_force(&self, bytes: usize) -> Result<()> {
        so::set_socket_recv_buffer_size_force(self, bytes)
            .ctx("setsockopt", || set_args(self, "SO_RCVBUFFORCE", bytes))
    }

    /// Sets `SO_SNDBUF` above the system's cap (`SO_SNDBUFFORCE`, Linux;
    /// needs `CAP_NET_ADMIN`).
    ///
    /// # References
    ///
    /// - [socket(7)](https://man7.org/linux/man-pages/man7/socket.7.html), `SO_SNDBUFFORCE`
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[doc(alias = "SO_SNDBUFFORCE")]
    pub fn set_send_buffer_size_force(&self, bytes: usize) -> Result<()> {
        so::set_socket_send_buffer_size_force(self, bytes)
            .ctx("setsockopt", || set_args(self, "SO_SNDBUFFORCE", bytes))
    }

    /// Reads `SO_RCVBUF`.
    ///
    /// # References
    ///
    /// ```c
    /// int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    /// ```
    ///
    /// - `getsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "getsockopt")]
    pub fn recv_buffer_size(&self) -> Result<usize> {
        so::socket_recv_buffer_size(self).ctx("getsockopt", || opt_args(self, "SO_RCVBUF"))
    }

    /// Sets `SO_SNDBUF` (rounded or doubled by the kernel like `SO_RCVBUF`).
    ///
    /// # References
    ///
    /// ```c
    /// int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen);
    /// ```
    ///
    /// - `setsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/setsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=setsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/setsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "SO_SNDBUF")]
    #[doc(alias = "setsockopt")]
    pub fn set_send_buffer_size(&self, bytes: usize) -> Result<()> {
        so::set_socket_send_buffer_size(self, bytes)
            .ctx("setsockopt", || set_args(self, "SO_SNDBUF", bytes))
    }

    /// Reads `SO_SNDBUF`.
    ///
    /// # References
    ///
    /// ```c
    /// int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    /// ```
    ///
    /// - `getsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "getsockopt")]
    pub fn send_buffer_size(&self) -> Result<usize> {
        so::socket_send_buffer_size(self).ctx("getsockopt", || opt_args(self, "SO_SNDBUF"))
    }

    /// Sets `SO_LINGER`: `Some(d)` makes `close` wait up to `d` for unsent
    /// data (`Some(ZERO)` resets the connection); `None` turns it off.
    ///
    /// # References
    ///
    /// ```c
    /// int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen);
    /// ```
    ///
    /// - `setsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/setsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=setsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/setsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "SO_LINGER")]
    #[doc(alias = "setsockopt")]
    pub fn set_linger(&self, linger: Option<Duration>) -> Result<()> {
        so::set_socket_linger(self, linger)
            .ctx("setsockopt", || set_args(self, "SO_LINGER", linger))
    }

    /// Reads `SO_LINGER`.
    ///
    /// # References
    ///
    /// ```c
    /// int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    /// ```
    ///
    /// - `getsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "getsockopt")]
    pub fn linger(&self) -> Result<Option<Duration>> {
        so::socket_linger(self).ctx("getsockopt", || opt_args(self, "SO_LINGER"))
    }

    /// Sets `SO_KEEPALIVE`.
    ///
    /// # References
    ///
    /// ```c
    /// int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen);
    /// ```
    ///
    /// - `setsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/setsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=setsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/setsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "SO_KEEPALIVE")]
    #[doc(alias = "setsockopt")]
    pub fn set_keepalive(&self, on: bool) -> Result<()> {
        so::set_socket_keepalive(self, on).ctx("setsockopt", || set_args(self, "SO_KEEPALIVE", on))
    }

    /// Reads `SO_KEEPALIVE`.
    ///
    /// # References
    ///
    /// ```c
    /// int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    /// ```
    ///
    /// - `getsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "getsockopt")]
    pub fn keepalive(&self) -> Result<bool> {
        so::socket_keepalive(self).ctx("getsockopt", || opt_args(self, "SO_KEEPALIVE"))
    }

    /// Sets `IPV6_V6ONLY` on an IPv6 socket: `true` keeps it from also taking
    /// IPv4-mapped traffic.
    ///
    /// # References
    ///
    /// ```c
    /// int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen);
    /// ```
    ///
    /// - `setsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/setsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=setsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/setsockopt.2.html)
    /// - `ipv6(7)`: [Linux](https://man7.org/linux/man-pages/man7/ipv6.7.html)
    #[doc(alias = "IPV6_V6ONLY")]
    #[doc(alias = "setsockopt")]
    pub fn set_only_v6(&self, on: bool) -> Result<()> {
        so::set_ipv6_v6only(self, on).ctx("setsockopt", || set_args(self, "IPV6_V6ONLY", on))
    }

    /// Reads `IPV6_V6ONLY`.
    ///
    /// # References
    ///
    /// ```c
    /// int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    /// ```
    ///
    /// - `getsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockopt.2.html)
    /// - `ipv6(7)`: [Linux](https://man7.org/linux/man-pages/man7/ipv6.7.html)
    #[doc(alias = "getsockopt")]
    pub fn only_v6(&self) -> Result<bool> {
        so::ipv6_v6only(self).ctx("getsockopt", || opt_args(self, "IPV6_V6ONLY"))
    }

    /// Sets `SO_RCVTIMEO`: a blocking receive (or accept) fails with
    /// `EAGAIN` after this long; `None` waits forever.
    ///
    /// # References
    ///
    /// ```c
    /// int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen);
    /// ```
    ///
    /// - `setsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/setsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=setsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/setsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "SO_RCVTIMEO")]
    #[doc(alias = "setsockopt")]
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        so::set_socket_timeout(self, so::Timeout::Recv, timeout)
            .ctx("setsockopt", || set_args(self, "SO_RCVTIMEO", timeout))
    }

    /// Reads `SO_RCVTIMEO`.
    ///
    /// # References
    ///
    /// ```c
    /// int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    /// ```
    ///
    /// - `getsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "getsockopt")]
    pub fn read_timeout(&self) -> Result<Option<Duration>> {
        so::socket_timeout(self, so::Timeout::Recv)
            .ctx("getsockopt", || opt_args(self, "SO_RCVTIMEO"))
    }

    /// Sets `SO_SNDTIMEO`: a blocking send fails with `EAGAIN` after this
    /// long; `None` waits forever.
    ///
    /// # References
    ///
    /// ```c
    /// int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen);
    /// ```
    ///
    /// - `setsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/setsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=setsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/setsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "SO_SNDTIMEO")]
    #[doc(alias = "setsockopt")]
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        so::set_socket_timeout(self, so::Timeout::Send, timeout)
            .ctx("setsockopt", || set_args(self, "SO_SNDTIMEO", timeout))
    }

    /// Reads `SO_SNDTIMEO`.
    ///
    /// # References
    ///
    /// ```c
    /// int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    /// ```
    ///
    /// - `getsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "getsockopt")]
    pub fn write_timeout(&self) -> Result<Option<Duration>> {
        so::socket_timeout(self, so::Timeout::Send)
            .ctx("getsockopt", || opt_args(self, "SO_SNDTIMEO"))
    }

    /// Reads and clears the pending socket error (`SO_ERROR`): how a
    /// non-blocking `connect` ended, for one.
    ///
    /// # References
    ///
    /// ```c
    /// int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    /// ```
    ///
    /// - `getsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "SO_ERROR")]
    #[doc(alias = "getsockopt")]
    pub fn take_error(&self) -> Result<Option<io::Error>> {
        so::socket_error(self)
            .map(|r| {
                r.err()
                    .map(|e| io::Error::from_raw_os_error(e.raw_os_error()))
            })
            .ctx("getsockopt", || opt_args(self, "SO_ERROR"))
    }

    /// The pid of the connected peer of a Unix socket, where the platform
    /// tells it (`SO_PEERCRED` on Linux and Android); `None` elsewhere.
    ///
    /// # References
    ///
    /// ```c
    /// int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    /// ```
    ///
    /// - `getsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[doc(alias = "getsockopt")]
    pub fn peer_pid(&self) -> Result<Option<i32>> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            self.peer_cred().map(|c| Some(c.pid))
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            Ok(None)
        }
    }

    /// The credentials of the connected peer of a Unix socket (`SO_PEERCRED`).
    ///
    /// # References
    ///
    /// ```c
    /// int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    /// ```
    ///
    /// - `getsockopt(2)`: [Linux](https://man7.org/linux/man-pages/man2/getsockopt.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getsockopt&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getsockopt.2.html)
    /// - `socket(7)`: [Linux](https://man7.org/linux/man-pages/man7/socket.7.html)
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[doc(alias = "SO_PEERCRED")]
    #[doc(alias = "getsockopt")]
    pub fn peer_cred(&self) -> Result<PeerCred> {
        so::socket_peercred(self)
            .map(|c| PeerCred {
                pid: c.pid.as_raw_nonzero().get(),
                uid: c.uid.as_raw(),
                gid: c.gid.as_raw(),
            })
            .ctx("getsockopt", || opt_args(self, "SO_PEERCRED"))
    }
}
