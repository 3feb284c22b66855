//! The epoll backend of [`Selector`](super::Selector) (Linux, Android).
//!
//! Waits go through `epoll_pwait2` where the kernel has it (rustix picks it),
//! so timeouts keep sub-millisecond precision instead of rounding up to the
//! next millisecond.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::epoll::{self, EventData, EventFlags};

use super::Flags;
use super::{retry_interrupted, Event, Interest, Mode, Token};
use crate::sys::error::{Context, Result};
use crate::sys::socket::fd_arg;

/// An epoll instance.
pub struct Selector {
    ep: OwnedFd,
}

/// A reusable buffer of readiness reports, filled by [`Selector::wait`].
pub struct Events {
    list: Vec<epoll::Event>,
}

// SAFETY: the only thing that keeps rustix's epoll_event from being `Send`
// is its user-data field, which may hold a pointer; this crate only ever
// stores a token (an integer) there and never dereferences it, so moving
// the buffer to another thread can't share anything.
unsafe impl Send for Events {}

impl Events {
    /// A buffer that takes up to `capacity` events per wait (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            list: Vec::with_capacity(capacity.max(1)),
        }
    }

    /// How many events one wait can return.
    pub fn capacity(&self) -> usize {
        self.list.capacity()
    }

    /// The number of events the last wait returned.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether the last wait returned no event (it timed out).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Forgets the events of the last wait.
    pub fn clear(&mut self) {
        self.list.clear();
    }

    /// The events of the last wait.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.list.iter().map(|e| {
            let f = e.flags;
            let mut flags = Flags::empty();
            if f.intersects(EventFlags::IN | EventFlags::RDHUP | EventFlags::HUP) {
                flags |= Flags::READABLE;
            }
            if f.contains(EventFlags::PRI) {
                flags |= Flags::PRIORITY;
            }
            if f.contains(EventFlags::OUT) {
                flags |= Flags::WRITABLE;
            }
            if f.contains(EventFlags::ERR) {
                flags |= Flags::ERROR | Flags::WRITE_CLOSED;
            }
            if f.intersects(EventFlags::RDHUP | EventFlags::HUP) {
                flags |= Flags::READ_CLOSED;
            }
            if f.contains(EventFlags::HUP) {
                flags |= Flags::WRITE_CLOSED;
            }
            Event {
                token: Token(e.data.u64() as usize),
                flags,
            }
        })
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

fn flags_for(interest: Interest, mode: Mode) -> EventFlags {
    let mut f = EventFlags::empty();
    if interest.contains(Interest::READABLE) {
        f |= EventFlags::IN | EventFlags::RDHUP;
    }
    if interest.contains(Interest::WRITABLE) {
        f |= EventFlags::OUT;
    }
    if interest.contains(Interest::PRIORITY) {
        f |= EventFlags::PRI;
    }
    match mode {
        Mode::Level => {}
        Mode::Edge => f |= EventFlags::ET,
        Mode::Oneshot => f |= EventFlags::ONESHOT,
    }
    f
}

impl Selector {
    /// Creates an epoll instance (`epoll_create1(EPOLL_CLOEXEC)`).
    ///
    /// # References
    ///
    /// ```c
    /// int epoll_create1(int flags);
    /// ```
    ///
    /// - `epoll_create1(2)`: [Linux](https://man7.org/linux/man-pages/man2/epoll_create1.2.html)
    #[doc(alias = "epoll_create1")]
    pub fn new() -> Result<Self> {
        epoll::create(epoll::CreateFlags::CLOEXEC)
            .map(|ep| Self { ep })
            .ctx("epoll_create1", || "EPOLL_CLOEXEC")
    }

    /// Starts watching `fd` (`epoll_ctl(EPOLL_CTL_ADD)`).
    ///
    /// # Errors
    ///
    /// `EEXIST` if `fd` is registered already, `EPERM` for a regular file,
    /// `EBADF` for a closed fd.
    ///
    /// # Safety
    ///
    /// The kernel keeps watching the open file behind `fd` after this borrow
    /// ends, and reports it under `token` for as long as any fd refers to it.
    /// The caller must [`deregister`](Self::deregister) `fd` before it is
    /// closed (or drop the selector first): otherwise a duplicate of the file
    /// description (after `dup` or `fork`) keeps delivering events for a
    /// source the caller believes gone, and a new fd that reuses the number
    /// can't be registered (`EEXIST`) or is confused with the old one. The
    /// event loop meets this by owning every source it registers.
    ///
    /// # References
    ///
    /// ```c
    /// int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);
    /// ```
    ///
    /// - `epoll_ctl(2)`: [Linux](https://man7.org/linux/man-pages/man2/epoll_ctl.2.html)
    #[doc(alias = "epoll_ctl")]
    pub unsafe fn register(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
        mode: Mode,
    ) -> Result<()> {
        epoll::add(
            &self.ep,
            fd,
            EventData::new_u64(token.0 as u64),
            flags_for(interest, mode),
        )
        .ctx("epoll_ctl", || self.args("ADD", fd, interest, mode))
    }

    /// Replaces the interest, mode and token of a registered `fd`
    /// (`EPOLL_CTL_MOD`); also re-arms a fired oneshot registration.
    ///
    /// # References
    ///
    /// ```c
    /// int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);
    /// ```
    ///
    /// - `epoll_ctl(2)`: [Linux](https://man7.org/linux/man-pages/man2/epoll_ctl.2.html)
    #[doc(alias = "epoll_ctl")]
    pub fn reregister(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
        mode: Mode,
    ) -> Result<()> {
        epoll::modify(
            &self.ep,
            fd,
            EventData::new_u64(token.0 as u64),
            flags_for(interest, mode),
        )
        .ctx("epoll_ctl", || self.args("MOD", fd, interest, mode))
    }

    /// Stops watching `fd` (`EPOLL_CTL_DEL`).
    ///
    /// # Errors
    ///
    /// `ENOENT` if `fd` is not registered.
    ///
    /// # References
    ///
    /// ```c
    /// int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);
    /// ```
    ///
    /// - `epoll_ctl(2)`: [Linux](https://man7.org/linux/man-pages/man2/epoll_ctl.2.html)
    #[doc(alias = "epoll_ctl")]
    pub fn deregister(&self, fd: BorrowedFd<'_>) -> Result<()> {
        epoll::delete(&self.ep, fd).ctx("epoll_ctl", || {
            format!("{}, DEL, {}", fd_arg(self.ep.as_fd()), fd_arg(fd))
        })
    }

    /// Waits for readiness (`epoll_pwait2`, else `epoll_wait`), filling
    /// `events`; see the module docs for the contract.
    ///
    /// # References
    ///
    /// ```c
    /// int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout);
    /// ```
    ///
    /// - `epoll_wait(2)`: [Linux](https://man7.org/linux/man-pages/man2/epoll_wait.2.html)
    #[doc(alias = "epoll_wait")]
    #[doc(alias = "epoll_pwait2")]
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> Result<()> {
        retry_interrupted(timeout, |left| {
            events.list.clear();
            let ts = match left {
                // A timeout too large for a timespec waits forever.
                Some(d) => rustix::time::Timespec::try_from(d).ok(),
                None => None,
            };
            epoll::wait(
                &self.ep,
                rustix::buffer::spare_capacity(&mut events.list),
                ts.as_ref(),
            )
            .map(drop)
            .ctx("epoll_wait", || {
                format!("{}, timeout {left:?}", fd_arg(self.ep.as_fd()))
            })
        })
    }

    fn args(&self, op: &str, fd: BorrowedFd<'_>, interest: Interest, mode: Mode) -> String {
        format!(
            "{}, {op}, {}, {interest:?}, {mode:?}",
            fd_arg(self.ep.as_fd()),
            fd_arg(fd)
        )
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selector")
            .field("epoll", &self.ep.as_raw_fd())
            .finish()
    }
}

impl AsFd for Selector {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ep.as_fd()
    }
}

/// Wakes a [`Selector`] blocked in `wait`, from any thread or a signal
/// handler: an eventfd registered edge-triggered and never drained, so
/// every [`Notifier::notify`] is a new edge (the counter would take 2^64
/// notifications to fill).
pub struct Notifier {
    fd: OwnedFd,
}

impl Notifier {
    /// Creates the eventfd and registers it with `selector` under `token`.
    ///
    /// # References
    ///
    /// ```c
    /// int eventfd(unsigned int initval, int flags);
    /// int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);
    /// ```
    ///
    /// - `eventfd(2)`: [Linux](https://man7.org/linux/man-pages/man2/eventfd.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=eventfd&sektion=2)
    /// - `epoll_ctl(2)`: [Linux](https://man7.org/linux/man-pages/man2/epoll_ctl.2.html)
    #[doc(alias = "eventfd")]
    #[doc(alias = "epoll_ctl")]
    pub fn new(selector: &Selector, token: Token) -> Result<Self> {
        use rustix::event::EventfdFlags;
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .ctx("eventfd", || "0, EFD_CLOEXEC | EFD_NONBLOCK")?;
        // SAFETY: the eventfd is private to this notifier and never lent
        // out; when it is closed the file has no other fd (it is
        // close-on-exec, and a forked child's copy belongs to a process
        // whose own tokens are checked by generation), so epoll drops it.
        unsafe { selector.register(fd.as_fd(), token, Interest::READABLE, Mode::Edge)? };
        Ok(Self { fd })
    }

    /// Makes the selector report the notifier's token. Async-signal-safe:
    /// one `write(2)` of 8 bytes from the stack, no allocation on success.
    ///
    /// # References
    ///
    /// ```c
    /// ssize_t write(int fd, const void *buf, size_t count);
    /// ```
    ///
    /// - `write(2)`: [Linux](https://man7.org/linux/man-pages/man2/write.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=write&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/write.2.html)
    #[doc(alias = "write")]
    pub fn notify(&self) -> Result<()> {
        match rustix::io::write(&self.fd, &1u64.to_ne_bytes()) {
            // A full counter already wakes the selector.
            Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(e) => Err(e).ctx_fd("write", self.fd.as_fd()),
        }
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("eventfd", &self.fd.as_raw_fd())
            .finish()
    }
}

/// A one-shot timer that is a file descriptor (a `timerfd` on the monotonic
/// clock): readable from the moment it fires until [`Timer::clear`], so it
/// can be registered in a [`Selector`] beside sockets.
#[must_use = "dropping a Timer cancels it"]
pub struct Timer {
    fd: OwnedFd,
}

impl Timer {
    /// Creates a disarmed timer (`timerfd_create(CLOCK_MONOTONIC,
    /// TFD_CLOEXEC | TFD_NONBLOCK)`).
    ///
    /// # References
    ///
    /// ```c
    /// int timerfd_create(int clockid, int flags);
    /// ```
    ///
    /// - `timerfd_create(2)`: [Linux](https://man7.org/linux/man-pages/man2/timerfd_create.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=timerfd_create&sektion=2)
    #[doc(alias = "timerfd_create")]
    pub fn new() -> Result<Self> {
        use rustix::time::{timerfd_create, TimerfdClockId, TimerfdFlags};
        timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
        )
        .map(|fd| Self { fd })
        .ctx("timerfd_create", || {
            "CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK"
        })
    }

    /// Fires once `after` from now (a zero duration fires at once), or
    /// disarms with `None`; replaces any earlier setting. A firing that was
    /// not cleared yet stays until [`Timer::clear`].
    ///
    /// # References
    ///
    /// ```c
    /// int timerfd_settime(int fd, int flags, const struct itimerspec *new_value, struct itimerspec *old_value);
    /// ```
    ///
    /// - `timerfd_settime(2)`: [Linux](https://man7.org/linux/man-pages/man2/timerfd_settime.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=timerfd_settime&sektion=2)
    #[doc(alias = "timerfd_settime")]
    pub fn set(&self, after: Option<Duration>) -> Result<()> {
        use rustix::time::{timerfd_settime, Itimerspec, TimerfdTimerFlags, Timespec};
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = match after {
            // An all-zero value would disarm: the shortest wait is 1 ns.
            Some(d) => Timespec::try_from(d.max(Duration::from_nanos(1))).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            }),
            None => zero,
        };
        timerfd_settime(
            &self.fd,
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: zero,
                it_value: value,
            },
        )
        .map(drop)
        .ctx("timerfd_settime", || {
            format!("{}, {after:?}", fd_arg(self.fd.as_fd()))
        })
    }

    /// Takes a firing off the fd (`read(2)` of its count): `true` if the
    /// timer had fired since the last clear.
    ///
    /// # References
    ///
    /// ```c
    /// ssize_t read(int fd, void *buf, size_t count);
    /// ```
    ///
    /// - `read(2)`: [Linux](https://man7.org/linux/man-pages/man2/read.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=read&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/read.2.html)
    #[doc(alias = "read")]
    pub fn clear(&self) -> Result<bool> {
        let mut count = [0u8; 8];
        match rustix::io::read(&self.fd, &mut count) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::AGAIN) => Ok(false),
            Err(e) => Err(e).ctx_fd("read", self.fd.as_fd()),
        }
    }
}

impl AsFd for Timer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("timerfd", &self.fd.as_raw_fd())
            .finish()
    }
}

crate::sys::fd::as_raw_fd_from_as_fd!(Selector, Timer);
crate::sys::fd::into_fd_from_field!(Selector, ep);
crate::sys::fd::into_fd_from_field!(Timer, fd);
