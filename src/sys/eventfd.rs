//! `eventfd` (Linux): a kernel counter behind an fd, for waking a waiter that
//! sleeps in `poll`/`epoll` rather than on a futex.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::event::EventfdFlags;

use super::error::{Context, Result};
use super::socket::fd_arg;

/// An eventfd counter, close-on-exec.
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates a counter with value `initval` (`eventfd(2)`).
    ///
    /// # References
    ///
    /// ```c
    /// int eventfd(unsigned int initval, int flags);
    /// ```
    ///
    /// - `eventfd(2)`: [Linux](https://man7.org/linux/man-pages/man2/eventfd.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=eventfd&sektion=2)
    #[doc(alias = "eventfd")]
    pub fn new(initval: u32, nonblocking: bool) -> Result<Self> {
        let mut flags = EventfdFlags::CLOEXEC;
        if nonblocking {
            flags |= EventfdFlags::NONBLOCK;
        }
        rustix::event::eventfd(initval, flags)
            .map(|fd| Self { fd })
            .ctx("eventfd", || format!("{initval}, {flags:?}"))
    }

    /// Wraps an eventfd received from elsewhere (inherited, or passed with
    /// `SCM_RIGHTS`). Nothing checks that `fd` is an eventfd: on another
    /// kind of file, [`EventFd::read`] and [`EventFd::write`] act on that
    /// file and report its errors.
    pub fn from_owned(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// Adds `n` to the counter, making the fd readable (`write(2)`).
    ///
    /// # Errors
    ///
    /// `EAGAIN` on a non-blocking counter that would overflow; `EINVAL` for
    /// `u64::MAX`.
    ///
    /// # References
    ///
    /// ```c
    /// ssize_t write(int fd, const void *buf, size_t count);
    /// ```
    ///
    /// - `write(2)`: [Linux](https://man7.org/linux/man-pages/man2/write.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=write&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/write.2.html)
    pub fn write(&self, n: u64) -> Result<()> {
        rustix::io::write(&self.fd, &n.to_ne_bytes())
            .map(drop)
            .ctx("write", || {
                format!("eventfd {}, {n}", fd_arg(self.fd.as_fd()))
            })
    }

    /// Reads the counter and resets it to 0 (`read(2)`). Blocks while it is 0
    /// unless non-blocking (then `EAGAIN`).
    ///
    /// # References
    ///
    /// ```c
    /// ssize_t read(int fd, void *buf, size_t count);
    /// ```
    ///
    /// - `read(2)`: [Linux](https://man7.org/linux/man-pages/man2/read.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=read&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/read.2.html)
    pub fn read(&self) -> Result<u64> {
        let mut b = [0u8; 8];
        rustix::io::read(&self.fd, &mut b)
            .ctx("read", || format!("eventfd {}", fd_arg(self.fd.as_fd())))?;
        Ok(u64::from_ne_bytes(b))
    }
}

impl fmt::Debug for EventFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventFd")
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
