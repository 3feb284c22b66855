//! Passing file descriptors between processes over a Unix-domain socket
//! (`SCM_RIGHTS`), with data bytes alongside.
//!
//! Descriptors received are close-on-exec. A message that carries more
//! descriptors than the receiver asked for has the extra ones closed, so a
//! sender can't leak descriptors into the receiver.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::error::{Context, Error, Result};
use super::socket::fd_arg;

/// What [`recv_with_fds`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Received {
    /// Data bytes placed in the buffer (0 with no fds: end-of-file).
    pub bytes: usize,
    /// Descriptors pushed onto the caller's vector.
    pub fds: usize,
    /// The message carried descriptors that did not fit: the kernel set
    /// `MSG_CTRUNC`, or more arrived than were asked for. Those were closed.
    pub fds_truncated: bool,
}

/// Sends `data` with `fds` attached (`sendmsg(2)` with `SCM_RIGHTS`), never
/// raising `SIGPIPE`. Returns the number of data bytes sent; the fds travel
/// with the first byte.
///
/// # Errors
///
/// `EINVAL` when fds are given with no data (a stream socket would send
/// nothing), `EPIPE` when the peer is gone, `ETOOMANYREFS`/`EINVAL` when the
/// kernel's per-message limit (253 on Linux) is passed.
///
/// # References
///
/// ```c
/// ssize_t sendmsg(int sockfd, const struct msghdr *msg, int flags);
/// ```
///
/// - `sendmsg(2)`: [Linux](https://man7.org/linux/man-pages/man2/sendmsg.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=sendmsg&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/sendmsg.2.html)
#[doc(alias = "sendmsg")]
#[doc(alias = "SCM_RIGHTS")]
pub fn send_with_fds(sock: impl AsFd, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<usize> {
    let sock = sock.as_fd();
    let args = || format!("{}, {} bytes, {} fds", fd_arg(sock), data.len(), fds.len());
    if data.is_empty() && !fds.is_empty() {
        return Err(Error::invalid_input("sendmsg", args()));
    }
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(Error::invalid_input("sendmsg", args()));
    }
    #[cfg(not(target_vendor = "apple"))]
    let flags = SendFlags::NOSIGNAL;
    #[cfg(target_vendor = "apple")]
    let flags = SendFlags::empty();
    rustix::net::sendmsg(sock, &[IoSlice::new(data)], &mut control, flags).ctx("sendmsg", args)
}

/// Receives data into `buf` and up to `max_fds` descriptors onto `fds`
/// (`recvmsg(2)`), all close-on-exec; extra descriptors are closed.
///
/// # Errors
///
/// `EAGAIN` on a non-blocking socket with nothing queued; `EMFILE` when the
/// receiver is out of descriptors (Linux then drops the fds and sets
/// `MSG_CTRUNC`).
///
/// # References
///
/// ```c
/// ssize_t recvmsg(int sockfd, struct msghdr *msg, int flags);
/// ```
///
/// - `recvmsg(2)`: [Linux](https://man7.org/linux/man-pages/man2/recvmsg.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=recvmsg&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/recvmsg.2.html)
#[doc(alias = "recvmsg")]
pub fn recv_with_fds(
    sock: impl AsFd,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    max_fds: usize,
) -> Result<Received> {
    recv_with_fds_flags(sock.as_fd(), buf, fds, max_fds, RecvFlags::empty())
}

/// [`recv_with_fds`] that never blocks, whatever the socket's mode
/// (`MSG_DONTWAIT`): `EAGAIN` when nothing is queued.
///
/// # References
///
/// ```c
/// ssize_t recvmsg(int sockfd, struct msghdr *msg, int flags);
/// ```
///
/// - `recvmsg(2)`: [Linux](https://man7.org/linux/man-pages/man2/recvmsg.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=recvmsg&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/recvmsg.2.html)
#[doc(alias = "recvmsg")]
pub fn recv_with_fds_nonblocking(
    sock: impl AsFd,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    max_fds: usize,
) -> Result<Received> {
    recv_with_fds_flags(sock.as_fd(), buf, fds, max_fds, RecvFlags::DONTWAIT)
}

fn recv_with_fds_flags(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    max_fds: usize,
    extra_flags: RecvFlags,
) -> Result<Received> {
    let len = buf.len();
    let args = || {
        let dontwait = if extra_flags.contains(RecvFlags::DONTWAIT) {
            ", MSG_DONTWAIT"
        } else {
            ""
        };
        format!(
            "{}, {len} bytes, up to {max_fds} fds{dontwait}",
            fd_arg(sock)
        )
    };
    let mut space =
        vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(max_fds.max(1)))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    let flags = RecvFlags::CMSG_CLOEXEC | extra_flags;
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    let flags = extra_flags;
    let msg = rustix::net::recvmsg(sock, &mut [IoSliceMut::new(buf)], &mut control, flags)
        .ctx("recvmsg", args)?;
    let mut got = 0;
    let mut extra = false;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(iter) = m {
            for fd in iter {
                if got < max_fds {
                    #[cfg(not(any(
                        target_os = "linux",
                        target_os = "android",
                        target_os = "freebsd"
                    )))]
                    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
                        .ctx("fcntl", || format!("{}, FD_CLOEXEC", fd_arg(fd.as_fd())))?;
                    fds.push(fd);
                    got += 1;
                } else {
                    // Dropping closes it.
                    extra = true;
                }
            }
        }
    }
    Ok(Received {
        bytes: msg.bytes.min(len),
        fds: got,
        fds_truncated: extra || msg.flags.contains(ReturnFlags::CTRUNC),
    })
}

/// Receives one datagram without blocking (`recvmsg(2)` with
/// `MSG_DONTWAIT`) with the sender's credentials as the kernel attaches
/// them (`SCM_CREDENTIALS`, on a socket with
/// [`set_pass_credentials`](crate::sys::socket::Socket::set_pass_credentials)
/// on): the byte count (the datagram is cut to `buf`) and the sender's pid,
/// `None` when no credentials came. A process can't put another's pid there
/// unless it has `CAP_SYS_ADMIN`. `EAGAIN` when nothing is queued.
///
/// # References
///
/// ```c
/// ssize_t recvmsg(int sockfd, struct msghdr *msg, int flags);
/// ```
///
/// - `recvmsg(2)`: [Linux](https://man7.org/linux/man-pages/man2/recvmsg.2.html)
/// - `unix(7)`: [Linux](https://man7.org/linux/man-pages/man7/unix.7.html)
#[cfg(any(target_os = "linux", target_os = "android"))]
#[doc(alias = "recvmsg")]
#[doc(alias = "SCM_CREDENTIALS")]
pub fn recv_with_pid_nonblocking(sock: impl AsFd, buf: &mut [u8]) -> Result<(usize, Option<i32>)> {
    let sock = sock.as_fd();
    let len = buf.len();
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::DONTWAIT,
    )
    .ctx("recvmsg", || {
        format!("{}, {len} bytes, MSG_DONTWAIT", fd_arg(sock))
    })?;
    let mut pid = None;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmCredentials(c) = m {
            pid = Some(c.pid.as_raw_nonzero().get());
        }
    }
    Ok((msg.bytes, pid))
}
