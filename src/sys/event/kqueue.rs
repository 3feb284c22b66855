//! The kqueue backend of [`Selector`](super::Selector) (macOS, iOS, FreeBSD,
//! OpenBSD, NetBSD, DragonFly).
//!
//! An fd's read and write interests are two kevent filters. Changes go in one
//! `kevent()` call with `EV_RECEIPT`, so each change reports its own result
//! without consuming pending events.

use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::kqueue::{self, EventFilter, EventFlags};

use super::Flags;
use super::{merge_by_token, retry_interrupted, Event, Interest, Mode, Token};
use crate::sys::error::{Context, Error, Result};
use crate::sys::socket::fd_arg;

/// A kqueue instance.
pub struct Selector {
    kq: OwnedFd,
}

/// A reusable buffer of readiness reports, filled by [`Selector::wait`].
///
/// kqueue reports an fd's read and write filters as two kevents; a wait
/// merges them into one [`Event`] per token, in one pass over the kevents with a token index that is kept between
/// waits, so the loop above sees one event per registration as with epoll.
pub struct Events {
    list: Vec<kqueue::Event>,
    merged: Vec<Event>,
    /// Token to position in `merged`, for this wait's kevents.
    index: HashMap<usize, usize>,
}

// SAFETY: the only thing that keeps rustix's kevent from being `Send`
// is its user-data field, which may hold a pointer; this crate only ever
// stores a token (an integer) there and never dereferences it, so moving
// the buffer to another thread can't share anything.
unsafe impl Send for Events {}

impl Events {
    /// A buffer that takes up to `capacity` events per wait (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            list: Vec::with_capacity(capacity.max(1)),
            merged: Vec::with_capacity(capacity.max(1)),
            index: HashMap::with_capacity(capacity.max(1)),
        }
    }

    /// How many kevents one wait can return.
    pub fn capacity(&self) -> usize {
        self.list.capacity()
    }

    /// The number of events (merged per token) the last wait returned.
    pub fn len(&self) -> usize {
        self.merged.len()
    }

    /// Whether the last wait returned no event (it timed out).
    pub fn is_empty(&self) -> bool {
        self.merged.is_empty()
    }

    /// Forgets the events of the last wait.
    pub fn clear(&mut self) {
        self.list.clear();
        self.merged.clear();
        self.index.clear();
    }

    /// The events of the last wait, one per token (a read and a write
    /// report of one fd come as one event).
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.merged.iter().copied()
    }

    /// Turns the kevents of a wait into `merged`: linear in their number.
    fn merge(&mut self) {
        merge_by_token(
            self.list.iter().map(convert),
            &mut self.merged,
            &mut self.index,
        );
    }
}

/// One kevent as an [`Event`].
fn convert(e: &kqueue::Event) -> Event {
    let ef = e.flags();
    let mut flags = Flags::empty();
    match e.filter() {
        EventFilter::User { .. } => flags |= Flags::READABLE,
        EventFilter::Read(_) => {
            flags |= Flags::READABLE;
            if ef.contains(EventFlags::EOF) {
                flags |= Flags::READ_CLOSED;
            }
        }
        EventFilter::Write(_) => {
            flags |= Flags::WRITABLE;
            if ef.contains(EventFlags::EOF) {
                flags |= Flags::WRITE_CLOSED;
            }
        }
        _ => {}
    }
    if ef.contains(EventFlags::ERROR) {
        flags |= Flags::ERROR;
    }
    Event {
        token: Token(e.udata() as usize),
        flags,
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

fn mode_flags(mode: Mode) -> EventFlags {
    match mode {
        Mode::Level => EventFlags::empty(),
        Mode::Edge => EventFlags::CLEAR,
        Mode::Oneshot => EventFlags::ONESHOT,
    }
}

/// A new kqueue: close-on-exec set where it is a plain fd flag (Apple); a
/// kqueue is never inherited by a forked child.
fn new_kqueue() -> Result<OwnedFd> {
    let kq = kqueue::kqueue().ctx("kqueue", || "")?;
    #[cfg(target_vendor = "apple")]
    rustix::io::fcntl_setfd(&kq, rustix::io::FdFlags::CLOEXEC)
        .ctx("fcntl", || format!("{}, FD_CLOEXEC", fd_arg(kq.as_fd())))?;
    Ok(kq)
}

impl Selector {
    /// Creates a kqueue (`kqueue(2)`), close-on-exec.
    ///
    /// # References
    ///
    /// ```c
    /// int kqueue(void);
    /// ```
    ///
    /// - `kqueue(2)`: [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=kqueue&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/kqueue.2.html)
    #[doc(alias = "kqueue")]
    pub fn new() -> Result<Self> {
        new_kqueue().map(|kq| Self { kq })
    }

    /// Starts watching `fd`: one `EV_ADD` per wanted filter.
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
    /// int kevent(int kq, const struct kevent *changelist, int nchanges, struct kevent *eventlist, int nevents, const struct timespec *timeout);
    /// ```
    ///
    /// - `kevent(2)`: [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=kevent&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/kevent.2.html)
    #[doc(alias = "kevent")]
    pub unsafe fn register(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
        mode: Mode,
    ) -> Result<()> {
        self.apply(fd, token, interest, mode, false)
    }

    /// Replaces interest, mode and token of `fd`: `EV_ADD` for the wanted
    /// filters, `EV_DELETE` for the others; re-arms a fired oneshot.
    ///
    /// # References
    ///
    /// ```c
    /// int kevent(int kq, const struct kevent *changelist, int nchanges, struct kevent *eventlist, int nevents, const struct timespec *timeout);
    /// ```
    ///
    /// - `kevent(2)`: [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=kevent&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/kevent.2.html)
    #[doc(alias = "kevent")]
    pub fn reregister(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
        mode: Mode,
    ) -> Result<()> {
        self.apply(fd, token, interest, mode, true)
    }

    /// Stops watching `fd` (`EV_DELETE` of both filters).
    ///
    /// # Errors
    ///
    /// `ENOENT` if `fd` was registered for neither filter.
    ///
    /// # References
    ///
    /// ```c
    /// int kevent(int kq, const struct kevent *changelist, int nchanges, struct kevent *eventlist, int nevents, const struct timespec *timeout);
    /// ```
    ///
    /// - `kevent(2)`: [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=kevent&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/kevent.2.html)
    #[doc(alias = "kevent")]
    pub fn deregister(&self, fd: BorrowedFd<'_>) -> Result<()> {
        let raw = fd.as_raw_fd();
        let del = EventFlags::DELETE | EventFlags::RECEIPT;
        let changes = [
            kqueue::Event::new(EventFilter::Read(raw), del, std::ptr::null_mut()),
            kqueue::Event::new(EventFilter::Write(raw), del, std::ptr::null_mut()),
        ];
        let errors = self.submit(&changes, fd, "EV_DELETE")?;
        // One filter missing is normal (it was never asked for); both
        // missing means the fd was not registered.
        match errors {
            [Some(a), Some(_)] => Err(Error::new("kevent", self.args(fd, "EV_DELETE"), a)),
            [Some(e), None] | [None, Some(e)] if e != libc::ENOENT => {
                Err(Error::new("kevent", self.args(fd, "EV_DELETE"), e))
            }
            _ => Ok(()),
        }
    }

    fn apply(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
        mode: Mode,
        modify: bool,
    ) -> Result<()> {
        let raw = fd.as_raw_fd();
        let udata = token.0 as *mut std::ffi::c_void;
        let add = EventFlags::ADD | EventFlags::RECEIPT | mode_flags(mode);
        let del = EventFlags::DELETE | EventFlags::RECEIPT;
        let pick = |want: bool| if want { add } else { del };
        let changes = [
            kqueue::Event::new(
                EventFilter::Read(raw),
                pick(interest.contains(Interest::READABLE)),
                udata,
            ),
            kqueue::Event::new(
                EventFilter::Write(raw),
                pick(interest.contains(Interest::WRITABLE)),
                udata,
            ),
        ];
        let op = if modify { "EV_ADD (modify)" } else { "EV_ADD" };
        let errors = self.submit(&changes, fd, op)?;
        for (change, err) in changes.iter().zip(errors) {
            match err {
                // Deleting a filter that was never added is fine.
                Some(libc::ENOENT) if change.flags().contains(EventFlags::DELETE) => {}
                Some(e) => return Err(Error::new("kevent", self.args(fd, op), e)),
                None => {}
            }
        }
        Ok(())
    }

    /// Submits two changes with `EV_RECEIPT` and returns each one's errno.
    fn submit(
        &self,
        changes: &[kqueue::Event; 2],
        fd: BorrowedFd<'_>,
        op: &str,
    ) -> Result<[Option<i32>; 2]> {
        let mut receipts: Vec<kqueue::Event> = Vec::with_capacity(changes.len());
        // SAFETY: the udata pointers are plain token values that kqueue hands
        // back without dereferencing them.
        unsafe {
            kqueue::kevent(
                &self.kq,
                changes,
                rustix::buffer::spare_capacity(&mut receipts),
                None,
            )
        }
        .ctx("kevent", || self.args(fd, op))?;
        let mut out = [None, None];
        for r in &receipts {
            if r.flags().contains(EventFlags::ERROR) && r.data() != 0 {
                let slot = match r.filter() {
                    EventFilter::Write(_) => 1,
                    _ => 0,
                };
                out[slot] = Some(r.data() as i32);
            }
        }
        Ok(out)
    }

    /// Waits for readiness (`kevent(2)` with no changes), filling `events`;
    /// see the module docs for the contract.
    ///
    /// # References
    ///
    /// ```c
    /// int kevent(int kq, const struct kevent *changelist, int nchanges, struct kevent *eventlist, int nevents, const struct timespec *timeout);
    /// ```
    ///
    /// - `kevent(2)`: [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=kevent&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/kevent.2.html)
    #[doc(alias = "kevent")]
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> Result<()> {
        retry_interrupted(timeout, |left| {
            events.clear();
            // SAFETY: no changes are submitted; returned udata values are
            // tokens, never dereferenced.
            unsafe {
                kqueue::kevent(
                    &self.kq,
                    &[],
                    rustix::buffer::spare_capacity(&mut events.list),
                    left,
                )
            }
            .map(drop)
            .ctx("kevent", || {
                format!("{}, timeout {left:?}", fd_arg(self.kq.as_fd()))
            })
        })?;
        events.merge();
        Ok(())
    }

    fn args(&self, fd: BorrowedFd<'_>, op: &str) -> String {
        format!("{}, {}, {op}", fd_arg(self.kq.as_fd()), fd_arg(fd))
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selector")
            .field("kqueue", &self.kq.as_raw_fd())
            .finish()
    }
}

impl AsFd for Selector {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.kq.as_fd()
    }
}

impl Selector {
    /// Submits one change with `EV_RECEIPT` and returns its error, if any.
    fn change(&self, ev: kqueue::Event, what: &str) -> Result<()> {
        let mut receipts: Vec<kqueue::Event> = Vec::with_capacity(1);
        // SAFETY: udata values are plain tokens, never dereferenced.
        unsafe {
            kqueue::kevent(
                &self.kq,
                &[ev],
                rustix::buffer::spare_capacity(&mut receipts),
                None,
            )
        }
        .ctx("kevent", || format!("{}, {what}", fd_arg(self.kq.as_fd())))?;
        match receipts.first() {
            Some(r) if r.flags().contains(EventFlags::ERROR) && r.data() != 0 => Err(Error::new(
                "kevent",
                format!("{}, {what}", fd_arg(self.kq.as_fd())),
                r.data() as i32,
            )),
            _ => Ok(()),
        }
    }
}

/// Wakes a [`Selector`] blocked in `wait`, from any thread: an `EVFILT_USER`
/// event triggered with `NOTE_TRIGGER` (`EV_CLEAR`, so each trigger reports
/// once).
pub struct Notifier {
    kq: OwnedFd,
    ident: isize,
}

impl Notifier {
    /// Adds the user event to `selector` under `token`.
    ///
    /// # References
    ///
    /// ```c
    /// int kevent(int kq, const struct kevent *changelist, int nchanges, struct kevent *eventlist, int nevents, const struct timespec *timeout);
    /// ```
    ///
    /// - `kevent(2)`: [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=kevent&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/kevent.2.html)
    #[doc(alias = "kevent")]
    pub fn new(selector: &Selector, token: Token) -> Result<Self> {
        use rustix::event::kqueue::{UserDefinedFlags, UserFlags};
        let ident = token.0 as isize;
        let udata = token.0 as *mut std::ffi::c_void;
        let filter = EventFilter::User {
            ident,
            flags: UserFlags::empty(),
            user_flags: UserDefinedFlags::new(0),
        };
        selector.change(
            kqueue::Event::new(
                filter,
                EventFlags::ADD | EventFlags::CLEAR | EventFlags::RECEIPT,
                udata,
            ),
            "EVFILT_USER EV_ADD",
        )?;
        let kq = rustix::io::fcntl_dupfd_cloexec(&selector.kq, 0).ctx("fcntl", || {
            format!("{}, F_DUPFD_CLOEXEC", fd_arg(selector.kq.as_fd()))
        })?;
        Ok(Self { kq, ident })
    }

    /// Makes the selector report the notifier's token (`NOTE_TRIGGER`). One
    /// `kevent(2)` call with a stack buffer, no allocation.
    ///
    /// # References
    ///
    /// ```c
    /// int kevent(int kq, const struct kevent *changelist, int nchanges, struct kevent *eventlist, int nevents, const struct timespec *timeout);
    /// ```
    ///
    /// - `kevent(2)`: [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=kevent&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/kevent.2.html)
    #[doc(alias = "kevent")]
    pub fn notify(&self) -> Result<()> {
        use rustix::event::kqueue::{UserDefinedFlags, UserFlags};
        let filter = EventFilter::User {
            ident: self.ident,
            flags: UserFlags::TRIGGER,
            user_flags: UserDefinedFlags::new(0),
        };
        let ev = kqueue::Event::new(
            filter,
            EventFlags::empty(),
            self.ident as *mut std::ffi::c_void,
        );
        // SAFETY: no events are returned (empty list); udata is a token.
        unsafe {
            kqueue::kevent(
                &self.kq,
                &[ev],
                &mut [] as &mut [kqueue::Event],
                Some(Duration::ZERO),
            )
        }
        .map(drop)
        .ctx_fd("kevent", self.kq.as_fd())
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("ident", &self.ident)
            .finish()
    }
}

/// A one-shot timer that is a file descriptor: a kqueue of its own holding
/// one `EVFILT_TIMER` event, readable (as a kqueue is when an event is
/// pending) from the moment it fires until [`Timer::clear`], so it can be
/// registered in a [`Selector`] beside sockets.
#[must_use = "dropping a Timer cancels it"]
pub struct Timer {
    kq: OwnedFd,
}

impl Timer {
    /// Creates a disarmed timer (`kqueue(2)`).
    ///
    /// # References
    ///
    /// ```c
    /// int kqueue(void);
    /// ```
    ///
    /// - `kqueue(2)`: [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=kqueue&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/kqueue.2.html)
    #[doc(alias = "kqueue")]
    pub fn new() -> Result<Self> {
        new_kqueue().map(|kq| Self { kq })
    }

    /// Fires once `after` from now (a zero duration fires at once), or
    /// disarms with `None`; replaces any earlier setting (`EV_ADD |
    /// EV_ONESHOT`, or `EV_DELETE`). A firing that was not cleared yet
    /// stays until [`Timer::clear`].
    ///
    /// # References
    ///
    /// ```c
    /// int kevent(int kq, const struct kevent *changelist, int nchanges, struct kevent *eventlist, int nevents, const struct timespec *timeout);
    /// ```
    ///
    /// - `kevent(2)`: [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=kevent&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/kevent.2.html)
    #[doc(alias = "kevent")]
    pub fn set(&self, after: Option<Duration>) -> Result<()> {
        let (flags, what) = match after {
            Some(_) => (EventFlags::ADD | EventFlags::ONESHOT, "EV_ADD | EV_ONESHOT"),
            None => (EventFlags::DELETE, "EV_DELETE"),
        };
        let filter = EventFilter::Timer {
            ident: 0,
            timer: Some(after.unwrap_or_default()),
        };
        let ev = kqueue::Event::new(filter, flags, std::ptr::null_mut());
        // SAFETY: no events are returned (empty list); udata is unused.
        let r = unsafe {
            kqueue::kevent(
                &self.kq,
                &[ev],
                &mut [] as &mut [kqueue::Event],
                Some(Duration::ZERO),
            )
        };
        match r {
            // Disarming a timer that is not armed (it fired) is done.
            Err(rustix::io::Errno::NOENT) if after.is_none() => Ok(()),
            r => r.map(drop).ctx("kevent", || {
                format!("{}, EVFILT_TIMER {what} {after:?}", fd_arg(self.kq.as_fd()))
            }),
        }
    }

    /// Takes a firing off the queue (`kevent(2)` with a zero timeout):
    /// `true` if the timer had fired since the last clear.
    ///
    /// # References
    ///
    /// ```c
    /// int kevent(int kq, const struct kevent *changelist, int nchanges, struct kevent *eventlist, int nevents, const struct timespec *timeout);
    /// ```
    ///
    /// - `kevent(2)`: [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=kevent&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/kevent.2.html)
    #[doc(alias = "kevent")]
    pub fn clear(&self) -> Result<bool> {
        let mut out: Vec<kqueue::Event> = Vec::with_capacity(1);
        // SAFETY: no changes; the one returned event's udata is unused.
        let n = unsafe {
            kqueue::kevent(
                &self.kq,
                &[],
                rustix::buffer::spare_capacity(&mut out),
                Some(Duration::ZERO),
            )
        }
        .ctx_fd("kevent", self.kq.as_fd())?;
        Ok(n > 0)
    }
}

impl AsFd for Timer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.kq.as_fd()
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("kqueue", &self.kq.as_raw_fd())
            .finish()
    }
}

crate::sys::fd::as_raw_fd_from_as_fd!(Selector, Timer);
crate::sys::fd::into_fd_from_field!(Selector, kq);
crate::sys::fd::into_fd_from_field!(Timer, kq);
