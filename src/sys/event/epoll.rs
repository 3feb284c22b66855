//! The epoll backend of [`Selector`](super::Selector) (Linux, Android).
//!
//! Waits go through `epoll_pwait2` where the kernel has it (rustix picks it),
//! so timeouts keep sub-millisecond precision instead of rounding up to the
//! next millisecond.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::epoll::{self, EventData, EventFlags};

use super::{retry_interrupted, Event, Interest, Mode, Token};
use super::{ERROR, READABLE, READ_CLOSED, WRITABLE, WRITE_CLOSED};
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
            let mut flags = 0;
            if f.intersects(EventFlags::IN | EventFlags::PRI | EventFlags::RDHUP | EventFlags::HUP)
            {
                flags |= READABLE;
            }
            if f.contains(EventFlags::OUT) {
                flags |= WRITABLE;
            }
            if f.contains(EventFlags::ERR) {
                flags |= ERROR | WRITE_CLOSED;
            }
            if f.intersects(EventFlags::RDHUP | EventFlags::HUP) {
                flags |= READ_CLOSED;
            }
            if f.contains(EventFlags::HUP) {
                flags |= WRITE_CLOSED;
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
    match mode {
        Mode::Level => {}
        Mode::Edge => f |= EventFlags::ET,
        Mode::Oneshot => f |= EventFlags::ONESHOT,
    }
    f
}

impl Selector {
    /// Creates an epoll instance (`epoll_create1(EPOLL_CLOEXEC)`).
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
    #[doc(alias = "epoll_ctl")]
    pub fn register(
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
    pub fn deregister(&self, fd: BorrowedFd<'_>) -> Result<()> {
        epoll::delete(&self.ep, fd).ctx("epoll_ctl", || {
            format!("{}, DEL, {}", fd_arg(self.ep.as_fd()), fd_arg(fd))
        })
    }

    /// Waits for readiness (`epoll_pwait2`, else `epoll_wait`), filling
    /// `events`; see the module docs for the contract.
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
