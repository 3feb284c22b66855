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
//!   [`serve`](crate::net::server::serve) save that last `recv`), but within [`Context::budget`]; when
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

mod ready;
mod slab;
mod timer;
mod wake;

pub use ready::{Context, Ready};
pub use slab::{Key, Registration};
pub use timer::TimerId;
pub use wake::Waker;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sys::event::{Event, Events, Notifier, Selector, SignalSource};
use crate::sys::signal::Signal;
use crate::sys::Result;
use ready::Origin;
use slab::{AfterCall, Entry, Registered, Slab};
use timer::{TimerFn, Timers};
use wake::{SignalEntry, WakerEntry, WakerInner};

pub use crate::sys::event::{Interest, Mode};

/// How many events one wait takes at most.
const EVENTS_CAPACITY: usize = 1024;

/// The work a handler should do per turn before it reschedules itself
/// (reads, accepts, messages: the handler decides the unit).
pub const DEFAULT_BUDGET: usize = 32;

/// What the error hook decides for a handler that returned an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnError {
    /// Keep the registration and go on.
    Continue,
    /// Deregister (and drop) that registration, and go on.
    Remove,
    /// Deregister it and end [`EventLoop::run`] with the error.
    Stop,
}

type ErrorHook = Box<dyn FnMut(Key, &io::Error) -> OnError>;

#[derive(Default)]
struct State {
    slab: Slab,
    timers: Timers,
    /// Registrations to call again next turn, with their readiness.
    pending: Vec<(Key, Ready)>,
    /// Registrations to call at the end of this turn ([`Context::defer`]).
    deferred: Vec<Key>,
    error: Option<io::Error>,
}

/// The loop's shared part. Field order is drop order: the selector closes
/// before the registrations' sources, so no source is ever closed while
/// still registered (the contract of `Selector::register`).
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

impl EventLoop {
    /// Creates a loop with its own selector.
    pub fn new() -> Result<Self> {
        let now = Instant::now();
        Ok(Self {
            inner: Rc::new(Inner {
                selector: Selector::new()?,
                state: RefCell::new(State::default()),
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
        self.inner.state.borrow().slab.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Allocates a slot for the entry `make` builds (given the key it will
    /// have; it may fail, and then the slot goes back).
    fn insert(&self, mode: Mode, make: impl FnOnce(Key) -> Result<Box<dyn Entry>>) -> Result<Key> {
        let key = self.inner.state.borrow_mut().slab.reserve();
        match make(key) {
            Ok(entry) => {
                self.inner.state.borrow_mut().slab.fill(key, mode, entry);
                Ok(key)
            }
            Err(e) => {
                self.inner.state.borrow_mut().slab.unreserve(key);
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
        let found = self.inner.state.borrow_mut().slab.fd_and_mode(key, mode);
        match found {
            Some((raw, mode)) => {
                // SAFETY: `raw` is the fd of the source this live slot's
                // entry owns (see the slab's `Live::fd`); it is open now.
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
    /// During the key's own call this only marks it.
    fn remove(&self, key: Key) -> Result<()> {
        let entry = self.inner.state.borrow_mut().slab.remove(key);
        self.drop_entry(entry)
    }

    /// Deregisters `key` and returns its source, if its entry is at home;
    /// `Ok(None)` when it is out being called or gone (nothing changes).
    fn take_source(&self, key: Key) -> Result<Option<Box<dyn std::any::Any>>> {
        let entry = self.inner.state.borrow_mut().slab.remove_idle(key);
        let Some(entry) = entry else {
            return Ok(None);
        };
        if let Some(fd) = entry.fd() {
            self.inner.selector.deregister(fd)?;
        }
        Ok(entry.into_source())
    }

    /// Takes a removed entry's fd out of the selector while its source still
    /// lives (so the fd is open), then drops it.
    fn drop_entry(&self, entry: Option<Box<dyn Entry>>) -> Result<()> {
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
        let ready = Ready::new(Event::new(key.token(), interest), Origin::Rescheduled);
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
        let at = Instant::now() + delay;
        self.inner.state.borrow_mut().timers.add(at, period, f)
    }

    /// Cancels a timer; `true` if it was live. A cancelled timer never fires
    /// again, also when cancelled from inside a callback of the same turn.
    pub fn cancel(&self, id: TimerId) -> bool {
        let (was_live, callback) = self.inner.state.borrow_mut().timers.cancel(id);
        drop(callback);
        was_live
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

    /// Delivers `signals` as loop events to `f`, through a
    /// [`SignalPipe`](crate::sys::signal::SignalPipe) (a handler that writes
    /// to a pipe the loop watches): right with any number of threads, and
    /// beside other loops or supervisors that ask for the same signals (up
    /// to [`MAX_PIPES`](crate::sys::signal::MAX_PIPES) in a process). It
    /// lives as long as the loop; then the signals' old dispositions come
    /// back.
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
                    .timers
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()));
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
            self.dispatch(key, Ready::new(ready.ev, Origin::Rescheduled));
        }
        {
            let mut st = self.inner.state.borrow_mut();
            if st.pending.is_empty() {
                // Keep the allocation for next time.
                std::mem::swap(&mut st.pending, &mut pending);
            }
        }
        // One event per registration, kqueue's read and write reports
        // merged by its backend.
        for ev in events.iter() {
            self.dispatch(
                Key::from_token(ev.token()),
                Ready::new(ev, Origin::Selector),
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
        let Some(mut entry) = self.inner.state.borrow_mut().slab.begin_call(key) else {
            return;
        };
        let mut cx = Context::new(self, Some(key));
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
            let (dropped, queue) = st.slab.end_call(key, entry, AfterCall { remove, defer });
            if queue {
                st.deferred.push(key);
            }
            if reschedule && dropped.is_none() {
                st.pending.push((key, ready));
            }
            dropped
        };
        // Nowhere to report a failed DEL of a source that is going anyway.
        let _ = self.drop_entry(dropped);
    }

    /// Makes the end-of-turn calls [`Context::defer`] asked for. Calls
    /// asked for during these go to the end of the next turn.
    fn run_deferred(&self) {
        let mut keys = std::mem::take(&mut self.inner.state.borrow_mut().deferred);
        if keys.is_empty() {
            return;
        }
        for key in keys.drain(..) {
            if !self.inner.state.borrow_mut().slab.undefer(key) {
                continue;
            }
            let ready = Ready::new(Event::new(key.token(), Interest::empty()), Origin::Deferred);
            self.dispatch(key, ready);
        }
        let mut st = self.inner.state.borrow_mut();
        if st.deferred.is_empty() {
            // Keep the allocation for next time.
            st.deferred = keys;
        }
    }

    fn fire_timers(&self) {
        if self.inner.state.borrow().timers.is_empty() {
            return;
        }
        let now = self.now();
        loop {
            let Some(mut due) = self.inner.state.borrow_mut().timers.take_due(now) else {
                return;
            };
            (due.callback)(&mut Context::new(self, None));
            let dropped = self.inner.state.borrow_mut().timers.finish(due, now);
            drop(dropped);
        }
    }
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("selector", &self.inner.selector)
            .field("registrations", &self.len())
            .finish()
    }
}
