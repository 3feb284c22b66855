//! Plain descriptor calls: pipes, the close-on-exec flag, non-blocking mode,
//! and taking ownership of descriptors a parent process left at known
//! numbers.

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::error::{Context, Error, Result};
use super::socket::fd_arg;

/// Implements `AsRawFd` for types that implement `AsFd`, so that APIs that
/// still take a raw fd (mio's `SourceFd`, tokio's `AsyncFd`) accept them.
macro_rules! as_raw_fd_from_as_fd {
    ($($t:ty),* $(,)?) => {$(
        impl std::os::fd::AsRawFd for $t {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(self))
            }
        }
    )*};
}
pub(crate) use as_raw_fd_from_as_fd;

/// Implements `IntoRawFd` and `From<T> for OwnedFd` for a type that is one
/// owned fd (field `$f`) and nothing else to release.
macro_rules! into_fd_from_field {
    ($t:ty, $f:ident) => {
        impl std::os::fd::IntoRawFd for $t {
            fn into_raw_fd(self) -> std::os::fd::RawFd {
                std::os::fd::IntoRawFd::into_raw_fd(self.$f)
            }
        }

        impl From<$t> for std::os::fd::OwnedFd {
            fn from(v: $t) -> Self {
                v.$f
            }
        }
    };
}
pub(crate) use into_fd_from_field;

/// Creates a pipe (`pipe2(O_CLOEXEC)`, or `pipe` plus `fcntl` where there is
/// no `pipe2`), returning `(read end, write end)`, both close-on-exec.
///
/// # References
///
/// ```c
/// int pipe2(int pipefd[2], int flags);
/// ```
///
/// - `pipe2(2)`: [Linux](https://man7.org/linux/man-pages/man2/pipe2.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=pipe2&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/pipe2.2.html)
#[doc(alias = "pipe2")]
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    #[cfg(not(target_vendor = "apple"))]
    {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).ctx("pipe2", || "O_CLOEXEC")
    }
    #[cfg(target_vendor = "apple")]
    {
        use std::os::fd::AsFd;
        let (r, w) = rustix::pipe::pipe().ctx("pipe", || "")?;
        set_cloexec(r.as_fd(), true)?;
        set_cloexec(w.as_fd(), true)?;
        Ok((r, w))
    }
}

/// Whether `fd` is a socket (`fstat(2)`: `S_IFSOCK`), as `sd_is_socket`
/// checks before anything else.
///
/// # References
///
/// ```c
/// int fstat(int fd, struct stat *statbuf);
/// ```
///
/// - `fstat(2)`: [Linux](https://man7.org/linux/man-pages/man2/fstat.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=fstat&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/fstat.2.html)
#[doc(alias = "fstat")]
#[doc(alias = "S_IFSOCK")]
pub fn is_socket(fd: BorrowedFd<'_>) -> Result<bool> {
    rustix::fs::fstat(fd)
        .map(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode as _) == rustix::fs::FileType::Socket
        })
        .ctx("fstat", || fd_arg(fd))
}

/// Sets or clears close-on-exec (`fcntl(F_SETFD)`).
///
/// # References
///
/// ```c
/// int fcntl(int fd, int cmd, ... /* arg */ );
/// ```
///
/// - `fcntl(2)`: [Linux](https://man7.org/linux/man-pages/man2/fcntl.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=fcntl&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/fcntl.2.html)
#[doc(alias = "fcntl")]
pub fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    let flags = if on {
        rustix::io::FdFlags::CLOEXEC
    } else {
        rustix::io::FdFlags::empty()
    };
    rustix::io::fcntl_setfd(fd, flags).ctx("fcntl", || format!("{}, F_SETFD {flags:?}", fd_arg(fd)))
}

/// Whether close-on-exec is set (`fcntl(F_GETFD)`).
///
/// # References
///
/// ```c
/// int fcntl(int fd, int cmd, ... /* arg */ );
/// ```
///
/// - `fcntl(2)`: [Linux](https://man7.org/linux/man-pages/man2/fcntl.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=fcntl&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/fcntl.2.html)
#[doc(alias = "fcntl")]
pub fn is_cloexec(fd: BorrowedFd<'_>) -> Result<bool> {
    rustix::io::fcntl_getfd(fd)
        .map(|f| f.contains(rustix::io::FdFlags::CLOEXEC))
        .ctx("fcntl", || format!("{}, F_GETFD", fd_arg(fd)))
}

/// Switches `O_NONBLOCK` on or off (`ioctl(FIONBIO)`), for any fd.
///
/// # References
///
/// ```c
/// int fcntl(int fd, int cmd, ... /* arg */ );
/// ```
///
/// - `fcntl(2)`: [Linux](https://man7.org/linux/man-pages/man2/fcntl.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=fcntl&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/fcntl.2.html)
#[doc(alias = "fcntl")]
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    rustix::io::ioctl_fionbio(fd, on).ctx("ioctl", || format!("{}, FIONBIO {on}", fd_arg(fd)))
}

/// Waits up to `timeout` (`None`: no limit) until `fd` is readable, or
/// has an error or hang-up pending (`poll(2)`); `false` on a timeout.
/// Interrupted waits resume with the time left. Any pollable fd: a pipe, a
/// selector, a listener.
///
/// # References
///
/// ```c
/// int poll(struct pollfd *fds, nfds_t nfds, int timeout);
/// ```
///
/// - `poll(2)`: [Linux](https://man7.org/linux/man-pages/man2/poll.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=poll&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/poll.2.html)
#[doc(alias = "poll")]
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<std::time::Duration>) -> Result<bool> {
    poll_one(fd, rustix::event::PollFlags::IN, timeout)
}

/// Waits up to `timeout` (`None`: no limit) until `fd` is writable, or has
/// an error or hang-up pending (`poll(2)`); `false` on a timeout.
///
/// # References
///
/// ```c
/// int poll(struct pollfd *fds, nfds_t nfds, int timeout);
/// ```
///
/// - `poll(2)`: [Linux](https://man7.org/linux/man-pages/man2/poll.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=poll&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/poll.2.html)
#[doc(alias = "poll")]
pub fn wait_writable(fd: BorrowedFd<'_>, timeout: Option<std::time::Duration>) -> Result<bool> {
    poll_one(fd, rustix::event::PollFlags::OUT, timeout)
}

/// One fd's `poll(2)` for `flags`, retrying `EINTR` with the time left.
pub(crate) fn poll_one(
    fd: BorrowedFd<'_>,
    flags: rustix::event::PollFlags,
    timeout: Option<std::time::Duration>,
) -> Result<bool> {
    use rustix::event::PollFd;
    use std::time::Instant;
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ts = deadline.and_then(|d| {
            rustix::time::Timespec::try_from(d.saturating_duration_since(Instant::now())).ok()
        });
        let mut fds = [PollFd::new(&fd, flags)];
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e).ctx_fd("poll", fd),
        }
    }
}

/// Reads into `buf` (`read(2)`); `Ok(0)` is end-of-file.
///
/// # References
///
/// ```c
/// ssize_t read(int fd, void *buf, size_t count);
/// ```
///
/// - `read(2)`: [Linux](https://man7.org/linux/man-pages/man2/read.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=read&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/read.2.html)
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize> {
    let len = buf.len();
    rustix::io::read(fd, buf).ctx_fd_len("read", fd, len)
}

/// Writes from `buf` (`write(2)`), returning how many bytes went.
///
/// # References
///
/// ```c
/// ssize_t write(int fd, const void *buf, size_t count);
/// ```
///
/// - `write(2)`: [Linux](https://man7.org/linux/man-pages/man2/write.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=write&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/write.2.html)
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> Result<usize> {
    rustix::io::write(fd, buf).ctx_fd_len("write", fd, buf.len())
}

/// Takes ownership of descriptor `raw`, which this process inherited (for
/// example a socket passed by socket activation), after checking it is open.
///
/// # Safety
///
/// Nothing else in the process may own or later close `raw`: the returned
/// `OwnedFd` closes it on drop.
///
/// # Errors
///
/// `EBADF` when `raw` is not an open descriptor.
///
/// # References
///
/// ```c
/// int fcntl(int fd, int cmd, ... /* arg */ );
/// ```
///
/// - `fcntl(2)`: [Linux](https://man7.org/linux/man-pages/man2/fcntl.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=fcntl&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/fcntl.2.html)
#[doc(alias = "fcntl")]
pub unsafe fn take_inherited(raw: RawFd) -> Result<OwnedFd> {
    if raw < 0 {
        return Err(Error::new(
            "fcntl",
            format!("fd {raw}, F_GETFD"),
            libc::EBADF,
        ));
    }
    // SAFETY: only used for the duration of the F_GETFD check below; if the
    // fd is closed the call fails with EBADF and nothing else happens.
    let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
    is_cloexec(borrowed)?;
    // SAFETY: the caller hands over sole ownership of `raw`, open as checked.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Takes an exclusive advisory lock on the whole file (`flock(LOCK_EX)`),
/// waiting for other holders; `EINTR` is retried here. The lock goes with
/// the open file description: closing the fd (or the process dying)
/// releases it.
///
/// # References
///
/// ```c
/// int flock(int fd, int operation);
/// ```
///
/// - `flock(2)`: [Linux](https://man7.org/linux/man-pages/man2/flock.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=flock&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/flock.2.html)
#[doc(alias = "flock")]
pub fn lock_exclusive(fd: BorrowedFd<'_>) -> Result<()> {
    loop {
        match rustix::fs::flock(fd, rustix::fs::FlockOperation::LockExclusive) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.ctx("flock", || format!("{}, LOCK_EX", fd_arg(fd))),
        }
    }
}

/// Releases a lock taken with [`lock_exclusive`] (`flock(LOCK_UN)`).
///
/// # References
///
/// ```c
/// int flock(int fd, int operation);
/// ```
///
/// - `flock(2)`: [Linux](https://man7.org/linux/man-pages/man2/flock.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=flock&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/flock.2.html)
#[doc(alias = "flock")]
pub fn unlock(fd: BorrowedFd<'_>) -> Result<()> {
    rustix::fs::flock(fd, rustix::fs::FlockOperation::Unlock)
        .ctx("flock", || format!("{}, LOCK_UN", fd_arg(fd)))
}

/// Flushes a file's data and metadata to stable storage (`fsync(2)`); on a
/// directory fd this makes a rename inside it durable.
///
/// # References
///
/// ```c
/// int fsync(int fd);
/// ```
///
/// - `fsync(2)`: [Linux](https://man7.org/linux/man-pages/man2/fsync.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=fsync&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/fsync.2.html)
pub fn fsync(fd: BorrowedFd<'_>) -> Result<()> {
    rustix::fs::fsync(fd).ctx_fd("fsync", fd)
}

/// Whether this process may write `path` (`access(W_OK)`): for a directory,
/// whether it may create files in it.
///
/// # References
///
/// ```c
/// int access(const char *pathname, int mode);
/// ```
///
/// - `access(2)`: [Linux](https://man7.org/linux/man-pages/man2/access.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=access&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/access.2.html)
#[doc(alias = "access")]
pub fn can_write(path: &std::path::Path) -> bool {
    rustix::fs::access(path, rustix::fs::Access::WRITE_OK).is_ok()
}
