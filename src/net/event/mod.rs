//! The event loop: a reactor over [`Selector`]. Register an fd with an
//! interest and a handler, run the loop, and each handler is called with the
//! readiness it got; timers, a cross-thread [`Waker`] and signals are events
//! of the same loop.
//!
//! - The loop owns each registered source (a socket, a pipe): deregistration
//!   (dropping the [`Registration`], [`Registration::deregister`], or
//!   [`Context::deregister_current`] from inside the handler) always removes
//!   the fd from the selector (`EPOLL_CTL_DEL` / `EV_DELETE`) *before* the
//!   source is dropped and its fd closed, so a duplicated or inherited file
//!   description never stays registered behind our back.
//! - Registrations live in a slab; each token carries the slot's generation,
//!   so a stale event for a slot that was freed and reused (a new fd with the
//!   same number, say) never reaches the new handler.
//! - Edge-triggered by default: a handler drains its source until
//!   `WouldBlock` (or, on a stream socket, until a read comes back shorter
//!   than asked, which means the queue is empty: the connections of
//!   [`serve`] save that last `recv`), but within [`Context::budget`]; when
//!   it stops early it calls [`Context::reschedule`] and runs again next
//!   turn, so one busy connection can't starve the rest. Level and oneshot
//!   are per registration.
//! - Timers ([`EventLoop::after`], [`EventLoop::every`]) sit in a heap and
//!   drive the wait's timeout (sub-millisecond through `epoll_pwait2` where
//!   the kernel has it); there is no fd per timer.
//! - No heap allocation per event in steady state: the event buffer, the
//!   slab, the timer heap and the reschedule list are reused.
//! - A handler's error goes to the error hook ([`EventLoop::set_error_hook`])
//!   or, without one, removes that registration and ends [`EventLoop::run`]
//!   with the error. The loop itself never panics on a peer reset, `EBADF`
//!   or `EINTR`.

mod server;

pub use server::{listen, serve, Output, Protocol, ServerOptions, BATCH_LIMIT};

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sys::event::{Event, Events, Notifier, Selector, SignalSource, Token};
use crate::sys::process::Signal;
use crate::sys::Result;

pub use crate::sys::event::{Interest, Mode};

/// How many events one wait takes at most.
const EVENTS_CAPACITY: usize = 1024;

/// The work a handler should do per turn before it reschedules itself
/// (reads, accepts, messages: the handler decides the unit).
pub const DEFAULT_BUDGET: usize = 32;

/// The readiness a handler is called with.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ready {
    ev: Event,
    rescheduled: bool,
    deferred: bool,
}

impl Ready {
    /// Reading (or accepting) will make progress.
    pub fn is_readable(&self) -> bool {
        self.ev.is_readable()
    }

    /// Writing will make progress.
    pub fn is_writable(&self) -> bool {
        self.ev.is_writable()
    }

    /// The fd has a pending error.
    pub fn is_error(&self) -> bool {
        self.ev.is_error()
    }

    /// The peer closed its writing half.
    pub fn is_read_closed(&self) -> bool {
        self.ev.is_read_closed()
    }

    /// Writing can't succeed any more.
    pub fn is_write_closed(&self) -> bool {
        self.ev.is_write_closed()
    }

    /// This call comes from [`Context::reschedule`], not from the selector.
    pub fn is_rescheduled(&self) -> bool {
        self.rescheduled
    }

    /// This call is the end-of-turn call [`Context::defer`] asked for; it
    /// reports no readiness.
    pub fn is_deferred(&self) -> bool {
        self.deferred
    }
}

impl fmt::Debug for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ready")
            .field("readable", &self.is_readable())
            .field("writable", &self.is_writable())
            .field("error", &self.is_error())
            .field("read_closed", &self.is_read_closed())
            .field("write_closed", &self.is_write_closed())
            .field("rescheduled", &self.rescheduled)
            .field("deferred", &self.deferred)
            .finish()
    }
}

/// Identifies a registration: a slab index and the slot's generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    index: u32,
    generation: u32,
}

#[cfg(target_pointer_width = "64")]
impl Key {
    fn token(self) -> Token {
        Token((u64::from(self.generation) << 32 | u64::from(self.index)) as usize)
    }

    fn from_token(t: Token) -> Self {
        Self {
            index: t.0 as u32,
            generation: (t.0 as u64 >> 32) as u32,
        }
    }
}

#[cfg(not(target_pointer_width = "64"))]
impl Key {
    // 24 bits of index, 8 of generation where tokens are 32 bits wide.
    fn token(self) -> Token {
        Token(((self.generation & 0xff) << 24 | (self.index & 0xff_ffff)) as usize)
    }

    fn from_token(t: Token) -> Self {
        Self {
            index: (t.0 & 0xff_ffff) as u32,
            generation: (t.0 >> 24) as u32 & 0xff,
        }
    }
}

/// What the error hook decides for a handler that returned an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OnError {
    /// Keep the registration and go on.
    Continue,
    /// Deregister (and drop) that registration, and go on.
    Remove,
    /// Deregister it and end [`EventLoop::run`] with the error.
    Stop,
}

/// A registered source and its handler, type-erased.
trait Entry {
    fn fd(&self) -> Option<BorrowedFd<'_>>;
    fn call(&mut self, cx: &mut Context<'_>, ready: Ready) -> io::Result<()>;
}

struct Registered<S, H> {
    source: S,
    handler: H,
}

impl<S, H> Entry for Registered<S, H>
where
    S: AsFd,
    H: FnMut(&mut Context<'_>, &S, Ready) -> io::Result<()>,
{
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.source.as_fd())
    }

    fn call(&mut self, cx: &mut Context<'_>, ready: Ready) -> io::Result<()> {
        (self.handler)(cx, &self.source, ready)
    }
}

struct Slot {
    generation: u32,
    entry: Option<Box<dyn Entry>>,
    /// Its entry is out being called.
    in_call: bool,
    /// Deregistered during its call: remove when the call returns.
    removed: bool,
    occupied: bool,
    /// On the list of end-of-turn calls.
    deferred: bool,
    mode: Mode,
    /// The registered fd's number. The entry owns the source and hands
    /// handlers only `&S`, so the number stays valid (and the same open
    /// file) for as long as the slot is occupied.
    fd: Option<RawFd>,
}

type TimerFn = Box<dyn FnMut(&mut Context<'_>)>;

struct TimerSlot {
    generation: u32,
    callback: Option<TimerFn>,
    period: Option<Duration>,
    live: bool,
    in_call: bool,
}

/// Identifies a timer, for [`EventLoop::cancel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

type ErrorHook = Box<dyn FnMut(Key, &io::Error) -> OnError>;

struct State {
    slots: Vec<Slot>,
    free: Vec<u32>,
    timer_heap: BinaryHeap<Reverse<(Instant, u64, u32, u32)>>,
    timers: Vec<TimerSlot>,
    free_timers: Vec<u32>,
    timer_seq: u64,
    /// Registrations to call again next turn, with their readiness.
    pending: Vec<(Key, Ready)>,
    /// Registrations to call at the end of this turn ([`Context::defer`]).
    deferred: Vec<Key>,
    error: Option<io::Error>,
}

struct Inner {
    selector: Selector,
    state: RefCell<State>,
    events: RefCell<Option<Events>>,
    error_hook: RefCell<Option<ErrorHook>>,
    stopped: Cell<bool>,
    /// The time of this turn, read on first use after each wait.
    now: Cell<Option<Instant>>,
    /// How long a wait polls without blocking before it sleeps.
    busy_poll: Cell<Duration>,
    /// The last wait returned events: the loop is in a burst of work.
    busy: Cell<bool>,
}

/// The reactor; see the module docs. Not `Send`: it runs on one thread,
/// and other threads reach it through a [`Waker`].
pub struct EventLoop {
    inner: Rc<Inner>,
}

/// What a handler or timer gets: the loop (all of [`EventLoop`]'s methods
/// through `Deref`) and the registration being called.
pub struct Context<'a> {
    lp: &'a EventLoop,
    current: Option<Key>,
    reschedule: bool,
    defer: bool,
}

impl std::ops::Deref for Context<'_> {
    type Target = EventLoop;

    fn deref(&self) -> &EventLoop {
        self.lp
    }
}

impl Context<'_> {
    /// The key of the registration being called (`None` in a timer).
    pub fn current(&self) -> Option<Key> {
        self.current
    }

    /// Deregisters the registration being called once its handler returns
    /// (its source is dropped then, after `EPOLL_CTL_DEL`).
    pub fn deregister_current(&mut self) {
        if let Some(k) = self.current {
            // The slot is in its call: this only marks it, and can't fail.
            let _ = self.lp.remove(k);
        }
    }

    /// Changes the interest of the registration being called.
    pub fn reregister_current(&self, interest: Interest) -> Result<()> {
        match self.current {
            Some(k) => self.lp.reregister_key(k, interest, None),
            None => Ok(()),
        }
    }

    /// Calls the current handler again next turn with the same readiness,
    /// without waiting for the selector: for a handler that stopped draining
    /// because its [`Context::budget`] ran out.
    pub fn reschedule(&mut self) {
        self.reschedule = true;
    }

    /// Calls the current handler once more at the end of this turn, after
    /// every handler with an event this turn has run and before the loop
    /// waits again, with [`Ready::is_deferred`]: a connection can gather
    /// what it produced and write it in one call, and its peer gets every
    /// reply of the turn together (as Redis writes replies just before it
    /// sleeps). Asking twice in a turn still makes one call; asking from the
    /// deferred call itself makes one at the end of the next turn. In a
    /// timer, which has no handler of its own, it does nothing.
    pub fn defer(&mut self) {
        self.defer = true;
    }

    /// How much work a handler should do in one call before rescheduling.
    pub fn budget(&self) -> usize {
        DEFAULT_BUDGET
    }
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("current", &self.current)
            .finish()
    }
}

/// A registered source. Dropping it deregisters the source and drops it;
/// [`Registration::detach`] leaves it to the loop instead.
pub struct Registration {
    lp: Weak<Inner>,
    key: Key,
}

impl Registration {
    /// The registration's key.
    pub fn key(&self) -> Key {
        self.key
    }

    /// Changes the interest (the mode stays).
    pub fn reregister(&self, interest: Interest) -> Result<()> {
        match self.lp.upgrade() {
            Some(inner) => EventLoop { inner }.reregister_key(self.key, interest, None),
            None => Ok(()),
        }
    }

    /// Changes interest and mode (re-arms a fired oneshot).
    pub fn reregister_with(&self, interest: Interest, mode: Mode) -> Result<()> {
        match self.lp.upgrade() {
            Some(inner) => EventLoop { inner }.reregister_key(self.key, interest, Some(mode)),
            None => Ok(()),
        }
    }

    /// Deregisters now, reporting a failure of `EPOLL_CTL_DEL`.
    pub fn deregister(self) -> Result<()> {
        let r = match self.lp.upgrade() {
            Some(inner) => EventLoop { inner }.remove(self.key),
            None => Ok(()),
        };
        std::mem::forget(self);
        r
    }

    /// Leaves the registration to the loop: it lives until its handler
    /// deregisters itself or the loop is dropped.
    pub fn detach(self) -> Key {
        let k = self.key;
        std::mem::forget(self);
        k
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(inner) = self.lp.upgrade() {
            // Nowhere to report from drop; `deregister` reports.
            let _ = EventLoop { inner }.remove(self.key);
        }
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .finish()
    }
}

/// Wakes an [`EventLoop`] from any thread (or a signal handler). Cheap to
/// clone; wakes are coalesced: while one is pending, more cost one atomic
/// operation and no system call.
#[derive(Clone)]
pub struct Waker {
    inner: Arc<WakerInner>,
}

struct WakerInner {
    notifier: Notifier,
    pending: AtomicBool,
}

impl Waker {
    /// Wakes the loop, which then calls the callback given to
    /// [`EventLoop::waker`]. Async-signal-safe on Linux: an atomic swap and
    /// at most one `write(2)` to an eventfd, no allocation or lock (on
    /// kqueue it is one `kevent(2)` call).
    pub fn wake(&self) -> Result<()> {
        if self.inner.pending.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.notifier.notify()
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waker")
            .field("notifier", &self.inner.notifier)
            .finish()
    }
}

static_assertions::assert_impl_all!(Waker: Send, Sync, Clone);

/// The waker's registration: clears the pending flag, calls back.
struct WakerEntry<F> {
    inner: Arc<WakerInner>,
    on_wake: F,
}

impl<F: FnMut(&mut Context<'_>)> Entry for WakerEntry<F> {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn call(&mut self, cx: &mut Context<'_>, _ready: Ready) -> io::Result<()> {
        self.inner.pending.store(false, Ordering::Release);
        (self.on_wake)(cx);
        Ok(())
    }
}

struct SignalEntry<F> {
    source: SignalSource,
    on_signal: F,
}

impl<F: FnMut(&mut Context<'_>, Signal)> Entry for SignalEntry<F> {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn call(&mut self, cx: &mut Context<'_>, ready: Ready) -> io::Result<()> {
        let f = &mut self.on_signal;
        self.source.read(&ready.ev, |s| f(cx, s))?;
        Ok(())
    }
}

impl EventLoop {
    /// Creates a loop with its own selector.
    pub fn new() -> Result<Self> {
        let now = Instant::now();
        Ok(Self {
            inner: Rc::new(Inner {
                selector: Selector::new()?,
                state: RefCell::new(State {
                    slots: Vec::new(),
                    free: Vec::new(),
                    timer_heap: BinaryHeap::new(),
                    timers: Vec::new(),
                    free_timers: Vec::new(),
                    timer_seq: 0,
                    pending: Vec::new(),
                    deferred: Vec::new(),
                    error: None,
                }),
                events: RefCell::new(Some(Events::with_capacity(EVENTS_CAPACITY))),
                error_hook: RefCell::new(None),
                stopped: Cell::new(false),
                now: Cell::new(Some(now)),
                busy_poll: Cell::new(Duration::ZERO),
                busy: Cell::new(false),
            }),
        })
    }

    /// The time of this turn: read once after the loop woke up (on first
    /// use), then the same for every handler and timer of the turn.
    pub fn now(&self) -> Instant {
        match self.inner.now.get() {
            Some(t) => t,
            None => {
                let t = Instant::now();
                self.inner.now.set(Some(t));
                t
            }
        }
    }

    /// Makes [`EventLoop::run`] return after the current turn.
    pub fn stop(&self) {
        self.inner.stopped.set(true);
    }

    /// Whether [`EventLoop::stop`] was called (reset by `run`).
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.get()
    }

    /// Before a wait that would block, polls without blocking for up to
    /// `budget` (default zero: off). A server whose peers send their next
    /// request within that time then never sleeps between them, so a
    /// peer's send doesn't have to wake it up: less latency, and less work
    /// for the peer (which pays for that wake-up). The price is a CPU spent
    /// polling for up to `budget` after each burst; a loop woken only by
    /// its timers, or idle, sleeps at once.
    pub fn set_busy_poll(&self, budget: Duration) {
        self.inner.busy_poll.set(budget);
    }

    /// Sets the hook that decides what happens when a handler returns an
    /// error.
    pub fn set_error_hook(&self, hook: impl FnMut(Key, &io::Error) -> OnError + 'static) {
        *self.inner.error_hook.borrow_mut() = Some(Box::new(hook));
    }

    /// The number of live registrations.
    pub fn len(&self) -> usize {
        self.inner
            .state
            .borrow()
            .slots
            .iter()
            .filter(|s| s.occupied)
            .count()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Allocates a slot for `entry` (filled in by the caller's closure,
    /// which gets the key and may fail).
    fn insert(&self, mode: Mode, make: impl FnOnce(Key) -> Result<Box<dyn Entry>>) -> Result<Key> {
        let key = {
            let mut st = self.inner.state.borrow_mut();
            let index = match st.free.pop() {
                Some(i) => i,
                None => {
                    st.slots.push(Slot {
                        generation: 0,
                        entry: None,
                        in_call: false,
                        removed: false,
                        occupied: false,
                        deferred: false,
                        mode,
                        fd: None,
                    });
                    (st.slots.len() - 1) as u32
                }
            };
            let slot = &mut st.slots[index as usize];
            slot.occupied = true;
            slot.removed = false;
            slot.mode = mode;
            slot.fd = None;
            Key {
                index,
                generation: slot.generation,
            }
        };
        match make(key) {
            Ok(entry) => {
                let fd = entry.fd().map(|f| f.as_raw_fd());
                let mut st = self.inner.state.borrow_mut();
                let slot = &mut st.slots[key.index as usize];
                slot.fd = fd;
                slot.entry = Some(entry);
                Ok(key)
            }
            Err(e) => {
                let mut st = self.inner.state.borrow_mut();
                free_slot(&mut st, key.index);
                Err(e)
            }
        }
    }

    /// Registers `source` with `interest`, edge-triggered; `handler` is
    /// called with the loop context, the source and the readiness. The loop
    /// owns the source until deregistration.
    pub fn register<S, H>(&self, source: S, interest: Interest, handler: H) -> Result<Registration>
    where
        S: AsFd + 'static,
        H: FnMut(&mut Context<'_>, &S, Ready) -> io::Result<()> + 'static,
    {
        self.register_with(source, interest, Mode::Edge, handler)
    }

    /// [`EventLoop::register`] with a chosen [`Mode`].
    pub fn register_with<S, H>(
        &self,
        source: S,
        interest: Interest,
        mode: Mode,
        handler: H,
    ) -> Result<Registration>
    where
        S: AsFd + 'static,
        H: FnMut(&mut Context<'_>, &S, Ready) -> io::Result<()> + 'static,
    {
        let key = self.insert(mode, |key| {
            // SAFETY: the slot's entry owns `source` from here on, and every
            // path that drops an entry (`remove`, `dispatch`, the loop's own
            // drop through `Inner`) deregisters its fd first, or drops the
            // selector with it.
            unsafe {
                self.inner
                    .selector
                    .register(source.as_fd(), key.token(), interest, mode)?
            };
            Ok(Box::new(Registered { source, handler }))
        })?;
        Ok(Registration {
            lp: Rc::downgrade(&self.inner),
            key,
        })
    }

    fn reregister_key(&self, key: Key, interest: Interest, mode: Option<Mode>) -> Result<()> {
        let mut st = self.inner.state.borrow_mut();
        let Some(slot) = st.slots.get_mut(key.index as usize) else {
            return Ok(());
        };
        if slot.generation != key.generation || !slot.occupied || slot.removed {
            return Ok(());
        }
        if let Some(m) = mode {
            slot.mode = m;
        }
        let mode = slot.mode;
        match slot.fd {
            Some(raw) => {
                // SAFETY: `raw` is the fd of the source this occupied slot's
                // entry owns (see `Slot::fd`); it is open for this call.
                let fd = unsafe { BorrowedFd::borrow_raw(raw) };
                self.inner
                    .selector
                    .reregister(fd, key.token(), interest, mode)
            }
            None => Ok(()),
        }
    }

    /// Deregisters `key`: `EPOLL_CTL_DEL`, then drops the source (outside
    /// any borrow of the loop's state, since dropping may deregister more).
    fn remove(&self, key: Key) -> Result<()> {
        let entry = {
            let mut st = self.inner.state.borrow_mut();
            let Some(slot) = st.slots.get_mut(key.index as usize) else {
                return Ok(());
            };
            if slot.generation != key.generation || !slot.occupied || slot.removed {
                return Ok(());
            }
            if slot.in_call {
                slot.removed = true;
                return Ok(());
            }
            let entry = slot.entry.take();
            free_slot(&mut st, key.index);
            entry
        };
        let r = match entry.as_ref().and_then(|e| e.fd()) {
            Some(fd) => self.inner.selector.deregister(fd),
            None => Ok(()),
        };
        drop(entry);
        r
    }

    /// Calls the handler of `key` next turn as if its source reported
    /// `interest` (a retry after a pause, say), without waiting for the
    /// selector. Nothing happens if `key` was deregistered meanwhile.
    pub fn schedule(&self, key: Key, interest: Interest) {
        let ready = Ready {
            ev: Event::new(key.token(), interest),
            rescheduled: true,
            deferred: false,
        };
        self.inner.state.borrow_mut().pending.push((key, ready));
    }

    /// Calls `f` after `delay` (not earlier), once. Returns an id for
    /// [`EventLoop::cancel`].
    pub fn after(&self, delay: Duration, f: impl FnMut(&mut Context<'_>) + 'static) -> TimerId {
        self.add_timer(delay, None, Box::new(f))
    }

    /// Calls `f` every `period`, the first time after one period.
    pub fn every(&self, period: Duration, f: impl FnMut(&mut Context<'_>) + 'static) -> TimerId {
        self.add_timer(
            period,
            Some(period.max(Duration::from_micros(1))),
            Box::new(f),
        )
    }

    fn add_timer(&self, delay: Duration, period: Option<Duration>, f: TimerFn) -> TimerId {
        let deadline = Instant::now() + delay;
        let mut st = self.inner.state.borrow_mut();
        let index = match st.free_timers.pop() {
            Some(i) => i,
            None => {
                st.timers.push(TimerSlot {
                    generation: 0,
                    callback: None,
                    period: None,
                    live: false,
                    in_call: false,
                });
                (st.timers.len() - 1) as u32
            }
        };
        let t = &mut st.timers[index as usize];
        t.callback = Some(f);
        t.period = period;
        t.live = true;
        let generation = t.generation;
        st.timer_seq += 1;
        let seq = st.timer_seq;
        st.timer_heap
            .push(Reverse((deadline, seq, index, generation)));
        TimerId { index, generation }
    }

    /// Cancels a timer; `true` if it was live. A cancelled timer never fires
    /// again, also when cancelled from inside a callback of the same turn.
    pub fn cancel(&self, id: TimerId) -> bool {
        let cb = {
            let mut st = self.inner.state.borrow_mut();
            let Some(t) = st.timers.get_mut(id.index as usize) else {
                return false;
            };
            if t.generation != id.generation || !t.live {
                return false;
            }
            t.live = false;
            if t.in_call {
                return true;
            }
            let cb = t.callback.take();
            t.generation = t.generation.wrapping_add(1);
            st.free_timers.push(id.index);
            cb
        };
        drop(cb);
        true
    }

    /// A [`Waker`] for this loop: `on_wake` runs on the loop's thread after
    /// any number of coalesced [`Waker::wake`] calls. It lives as long as the
    /// loop.
    pub fn waker(&self, on_wake: impl FnMut(&mut Context<'_>) + 'static) -> Result<Waker> {
        let mut made = None;
        self.insert(Mode::Edge, |key| {
            let inner = Arc::new(WakerInner {
                notifier: Notifier::new(&self.inner.selector, key.token())?,
                pending: AtomicBool::new(false),
            });
            made = Some(Waker {
                inner: Arc::clone(&inner),
            });
            Ok(Box::new(WakerEntry { inner, on_wake }))
        })?;
        made.ok_or_else(|| {
            crate::sys::Error::new("waker", "not created", crate::sys::errno::EINVAL)
        })
    }

    /// Delivers `signals` as loop events (signalfd on Linux, `EVFILT_SIGNAL`
    /// on kqueue) to `f`. On Linux the signals are blocked in this thread:
    /// call it before starting threads. It lives as long as the loop.
    pub fn on_signals(
        &self,
        signals: &[Signal],
        f: impl FnMut(&mut Context<'_>, Signal) + 'static,
    ) -> Result<()> {
        self.insert(Mode::Level, |key| {
            let source = SignalSource::new(&self.inner.selector, signals, key.token())?;
            Ok(Box::new(SignalEntry {
                source,
                on_signal: f,
            }))
        })
        .map(drop)
    }

    /// Calls `f` on SIGINT or SIGTERM (see [`EventLoop::on_signals`]); the
    /// usual `f` stops the loop.
    pub fn on_shutdown(&self, mut f: impl FnMut(&mut Context<'_>) + 'static) -> Result<()> {
        self.on_signals(&[Signal::INT, Signal::TERM], move |cx, _| f(cx))
    }

    /// Runs turns until [`EventLoop::stop`] or a handler error that the
    /// error hook (or its absence) turns into a stop.
    pub fn run(&self) -> io::Result<()> {
        self.inner.stopped.set(false);
        while !self.inner.stopped.get() {
            self.run_once(None)?;
        }
        Ok(())
    }

    /// Runs one turn: waits for events (at most `timeout`, shorter when a
    /// timer is due, zero when handlers were rescheduled), calls their
    /// handlers, then the due timers.
    pub fn run_once(&self, timeout: Option<Duration>) -> io::Result<()> {
        let wait = {
            let st = self.inner.state.borrow();
            if !st.pending.is_empty() || !st.deferred.is_empty() {
                Some(Duration::ZERO)
            } else {
                let timer = st
                    .timer_heap
                    .peek()
                    .map(|Reverse((d, ..))| d.saturating_duration_since(Instant::now()));
                match (timer, timeout) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        };
        let mut events = self
            .inner
            .events
            .borrow_mut()
            .take()
            .unwrap_or_else(|| Events::with_capacity(EVENTS_CAPACITY));
        let waited = self.wait(&mut events, wait);
        // Read the clock when someone needs it this turn, not every turn.
        self.inner.now.set(None);
        if let Err(e) = waited {
            *self.inner.events.borrow_mut() = Some(events);
            return Err(e.into());
        }
        // Rescheduled handlers first: they were ready before these events.
        let mut pending = std::mem::take(&mut self.inner.state.borrow_mut().pending);
        for (key, ready) in pending.drain(..) {
            // A deferred call that rescheduled comes back as a plain
            // rescheduled one.
            let ready = Ready {
                rescheduled: true,
                deferred: false,
                ..ready
            };
            self.dispatch(key, ready);
        }
        {
            let mut st = self.inner.state.borrow_mut();
            if st.pending.is_empty() {
                // Keep the allocation for next time.
                std::mem::swap(&mut st.pending, &mut pending);
            }
        }
        for (i, ev) in events.iter().enumerate() {
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            let ev = {
                // kqueue reports read and write of one fd as two events:
                // call the handler once, with both.
                if events
                    .iter()
                    .take(i)
                    .any(|e| e.token() == ev.token() && e.signal().is_none())
                {
                    continue;
                }
                events
                    .iter()
                    .skip(i + 1)
                    .filter(|e| e.token() == ev.token() && e.signal().is_none())
                    .fold(ev, |acc, e| acc.merged(&e))
            };
            let _ = i;
            self.dispatch(
                Key::from_token(ev.token()),
                Ready {
                    ev,
                    rescheduled: false,
                    deferred: false,
                },
            );
        }
        *self.inner.events.borrow_mut() = Some(events);
        self.run_deferred();
        self.fire_timers();
        match self.inner.state.borrow_mut().error.take() {
            Some(e) => {
                self.inner.stopped.set(true);
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Waits for events; with busy polling, first polls without blocking
    /// for up to the budget.
    fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> Result<()> {
        let budget = self.inner.busy_poll.get();
        if budget.is_zero() || !self.inner.busy.get() {
            // Not in a burst (idle, or woken only by timers): sleep at once.
            let r = self.inner.selector.wait(events, timeout);
            self.inner.busy.set(!events.is_empty());
            return r;
        }
        if timeout == Some(Duration::ZERO) {
            // Rescheduled work is part of the burst either way.
            return self.inner.selector.wait(events, timeout);
        }
        let start = Instant::now();
        let limit = timeout.map_or(budget, |t| t.min(budget));
        loop {
            self.inner.selector.wait(events, Some(Duration::ZERO))?;
            if !events.is_empty() {
                return Ok(());
            }
            let spent = start.elapsed();
            if spent >= limit {
                let left = timeout.map(|t| t.saturating_sub(spent));
                if left == Some(Duration::ZERO) {
                    // A timer is due and nothing came: the burst is over.
                    self.inner.busy.set(false);
                    return Ok(());
                }
                let r = self.inner.selector.wait(events, left);
                self.inner.busy.set(!events.is_empty());
                return r;
            }
            std::hint::spin_loop();
        }
    }

    /// Calls the handler of `key` if the slot still holds that generation.
    fn dispatch(&self, key: Key, ready: Ready) {
        let mut entry = {
            let mut st = self.inner.state.borrow_mut();
            let Some(slot) = st.slots.get_mut(key.index as usize) else {
                return;
            };
            if slot.generation != key.generation || slot.removed || slot.in_call {
                return;
            }
            let Some(entry) = slot.entry.take() else {
                return;
            };
            slot.in_call = true;
            entry
        };
        let mut cx = Context {
            lp: self,
            current: Some(key),
            reschedule: false,
            defer: false,
        };
        let result = entry.call(&mut cx, ready);
        let (reschedule, defer) = (cx.reschedule, cx.defer);
        let mut remove = false;
        if let Err(e) = &result {
            let decision = match self.inner.error_hook.borrow_mut().as_mut() {
                Some(hook) => hook(key, e),
                None => OnError::Stop,
            };
            remove = decision != OnError::Continue;
            if decision == OnError::Stop {
                let mut st = self.inner.state.borrow_mut();
                if st.error.is_none() {
                    st.error = result.err();
                }
            }
        }
        let dropped = {
            let mut st = self.inner.state.borrow_mut();
            let slot = &mut st.slots[key.index as usize];
            slot.in_call = false;
            if slot.removed || remove {
                free_slot(&mut st, key.index);
                Some(entry)
            } else {
                slot.entry = Some(entry);
                let queue = defer && !slot.deferred;
                slot.deferred |= defer;
                if queue {
                    st.deferred.push(key);
                }
                if reschedule {
                    st.pending.push((key, ready));
                }
                None
            }
        };
        if let Some(entry) = dropped {
            if let Some(fd) = entry.fd() {
                // The source still lives, so the fd is open: DEL before
                // the drop below closes it.
                let _ = self.inner.selector.deregister(fd);
            }
            drop(entry);
        }
    }

    /// Makes the end-of-turn calls [`Context::defer`] asked for. Calls
    /// asked for during these go to the end of the next turn.
    fn run_deferred(&self) {
        let mut keys = std::mem::take(&mut self.inner.state.borrow_mut().deferred);
        if keys.is_empty() {
            return;
        }
        for key in keys.drain(..) {
            {
                let mut st = self.inner.state.borrow_mut();
                match st.slots.get_mut(key.index as usize) {
                    Some(slot) if slot.generation == key.generation => slot.deferred = false,
                    _ => continue,
                }
            }
            let ready = Ready {
                ev: Event::new(key.token(), Interest::empty()),
                rescheduled: false,
                deferred: true,
            };
            self.dispatch(key, ready);
        }
        let mut st = self.inner.state.borrow_mut();
        if st.deferred.is_empty() {
            // Keep the allocation for next time.
            st.deferred = keys;
        }
    }

    fn fire_timers(&self) {
        if self.inner.state.borrow().timer_heap.is_empty() {
            return;
        }
        let now = self.now();
        loop {
            let (index, generation, deadline, mut cb) = {
                let mut st = self.inner.state.borrow_mut();
                match st.timer_heap.peek() {
                    Some(Reverse((d, ..))) if *d <= now => {}
                    _ => return,
                }
                let Some(Reverse((deadline, _, index, generation))) = st.timer_heap.pop() else {
                    return;
                };
                let t = &mut st.timers[index as usize];
                if t.generation != generation || !t.live {
                    continue;
                }
                let Some(cb) = t.callback.take() else {
                    continue;
                };
                t.in_call = true;
                (index, generation, deadline, cb)
            };
            let mut cx = Context {
                lp: self,
                current: None,
                reschedule: false,
                defer: false,
            };
            cb(&mut cx);
            let dropped = {
                let mut st = self.inner.state.borrow_mut();
                let t = &mut st.timers[index as usize];
                t.in_call = false;
                match (t.live, t.period) {
                    (true, Some(p)) => {
                        t.callback = Some(cb);
                        // Keep the cadence; skip missed periods.
                        let mut next = deadline + p;
                        if next <= now {
                            next = now + p;
                        }
                        st.timer_seq += 1;
                        let seq = st.timer_seq;
                        st.timer_heap.push(Reverse((next, seq, index, generation)));
                        None
                    }
                    _ => {
                        t.live = false;
                        t.generation = t.generation.wrapping_add(1);
                        st.free_timers.push(index);
                        Some(cb)
                    }
                }
            };
            drop(dropped);
        }
    }
}

fn free_slot(st: &mut State, index: u32) {
    let slot = &mut st.slots[index as usize];
    slot.occupied = false;
    slot.removed = false;
    slot.deferred = false;
    slot.entry = None;
    slot.fd = None;
    slot.generation = slot.generation.wrapping_add(1);
    st.free.push(index);
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("selector", &self.inner.selector)
            .field("registrations", &self.len())
            .finish()
    }
}
