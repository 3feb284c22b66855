//! What a handler is called with: the readiness it got ([`Ready`]) and the
//! loop with the registration being called ([`Context`]).

use std::fmt;

use super::slab::Key;
use super::{EventLoop, DEFAULT_BUDGET};
use crate::sys::event::Event;
use crate::sys::Result;

use super::Interest;

/// Where a call of a handler comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Origin {
    /// The selector reported readiness.
    Selector,
    /// [`Context::reschedule`] or [`EventLoop::schedule`] asked for it.
    Rescheduled,
    /// The end-of-turn call [`Context::defer`] asked for.
    Deferred,
}

/// The readiness a handler is called with.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ready {
    pub(super) ev: Event,
    pub(super) origin: Origin,
}

impl Ready {
    pub(super) fn new(ev: Event, origin: Origin) -> Self {
        Self { ev, origin }
    }

    /// Reading (or accepting) will make progress.
    pub fn is_readable(&self) -> bool {
        self.ev.is_readable()
    }

    /// Writing will make progress.
    pub fn is_writable(&self) -> bool {
        self.ev.is_writable()
    }

    /// Priority data is there (see [`Interest::PRIORITY`]).
    ///
    /// [`Interest::PRIORITY`]: crate::sys::event::Interest
    pub fn is_priority(&self) -> bool {
        self.ev.is_priority()
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
        self.origin == Origin::Rescheduled
    }

    /// This call is the end-of-turn call [`Context::defer`] asked for; it
    /// reports no readiness.
    pub fn is_deferred(&self) -> bool {
        self.origin == Origin::Deferred
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
            .field("rescheduled", &self.is_rescheduled())
            .field("deferred", &self.is_deferred())
            .finish()
    }
}

/// What a handler or timer gets: the loop (all of [`EventLoop`]'s methods
/// through `Deref`) and the registration being called.
pub struct Context<'a> {
    pub(super) lp: &'a EventLoop,
    pub(super) current: Option<Key>,
    pub(super) reschedule: bool,
    pub(super) defer: bool,
}

impl<'a> Context<'a> {
    pub(super) fn new(lp: &'a EventLoop, current: Option<Key>) -> Self {
        Self {
            lp,
            current,
            reschedule: false,
            defer: false,
        }
    }
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
