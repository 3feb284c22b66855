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
use super::{retry_interrupted, Event, Interest, Mode, Signal, Token};
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
            let mut flags = Flags::empty();
            if f.intersects(EventFlags::IN | EventFlags::PRI | EventFlags::RDHUP | EventFlags::HUP)
            {
                flags |= Flags::READABLE;
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
                signo: 0,
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

/// Wakes a [`Selector`] blocked in `wait`, from any thread or a signal
/// handler: an eventfd registered edge-triggered and never drained, so
/// every [`Notifier::notify`] is a new edge (the counter would take 2^64
/// notifications to fill).
pub struct Notifier {
    fd: OwnedFd,
}

impl Notifier {
    /// Creates the eventfd and registers it with `selector` under `token`.
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

/// Signals delivered through the selector: a `signalfd` for the given
/// signals, which are blocked in the calling thread so they queue on the fd
/// instead of running a handler.
///
/// Block them in every thread: create the source before starting threads
/// (threads inherit the mask). Children started with
/// [`Spawn`](crate::sys::process::Spawn) or `std::process::Command` get an
/// empty mask back. Dropping the source restores the thread's previous mask.
pub struct SignalSource {
    fd: OwnedFd,
    old_mask: libc::sigset_t,
}

impl SignalSource {
    /// Blocks `signals` in this thread, opens a signalfd for them and
    /// registers it with `selector` under `token`.
    #[doc(alias = "signalfd")]
    pub fn new(selector: &Selector, signals: &[Signal], token: Token) -> Result<Self> {
        use crate::sys::error::last_errno;
        use crate::sys::Error;
        // SAFETY: sigset_t is plain data; sigemptyset initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a live sigset_t owned by this frame.
        unsafe { libc::sigemptyset(&mut set) };
        for s in signals {
            // SAFETY: as above; sigaddset fails only for a bad number.
            if unsafe { libc::sigaddset(&mut set, s.as_raw()) } != 0 {
                return Err(Error::new("sigaddset", s, last_errno()));
            }
        }
        // SAFETY: zeroed sigset_t is a valid value for the kernel to fill.
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both sets are live; pthread_sigmask only reads/writes them.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old_mask) };
        if rc != 0 {
            return Err(Error::new("pthread_sigmask", "SIG_BLOCK", rc));
        }
        // SAFETY: -1 asks for a new fd; `set` is a valid mask.
        let raw = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if raw < 0 {
            let errno = last_errno();
            // SAFETY: restores the mask read above.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
            return Err(Error::new("signalfd", format!("{signals:?}"), errno));
        }
        // SAFETY: signalfd returned a new fd that nothing else owns.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        let source = Self { fd, old_mask };
        // SAFETY: as for the notifier's eventfd: the signalfd is private to
        // this source, so closing it leaves no file for epoll to report.
        unsafe { selector.register(source.fd.as_fd(), token, Interest::READABLE, Mode::Level)? };
        Ok(source)
    }

    /// Calls `f` with each signal that arrived (reading the signalfd until
    /// it is empty); `event` is the selector's report for this source.
    pub fn read(&self, _event: &Event, mut f: impl FnMut(Signal)) -> Result<()> {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        loop {
            match rustix::io::read(&self.fd, &mut info) {
                Ok(n) if n == info.len() => {
                    // ssi_signo is the first u32 of signalfd_siginfo.
                    let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
                    f(Signal::from_raw(signo as i32));
                }
                Ok(_) | Err(rustix::io::Errno::AGAIN) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e).ctx_fd("read", self.fd.as_fd()),
            }
        }
    }
}

impl Drop for SignalSource {
    fn drop(&mut self) {
        // SAFETY: restores the mask this source replaced; `old_mask` is a
        // valid sigset_t read by pthread_sigmask.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }
}

impl fmt::Debug for SignalSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalSource")
            .field("signalfd", &self.fd.as_raw_fd())
            .finish()
    }
}
