//! Events that come from outside the loop's sources: the cross-thread
//! [`Waker`] and delivered signals, each a registration of its own.

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::slab::Entry;
use super::{Context, Ready};
use crate::sys::event::{Notifier, SignalSource};
use crate::sys::signal::Signal;
use crate::sys::Result;

/// Wakes an [`EventLoop`](super::EventLoop) from any thread (or a signal
/// handler). Cheap to clone; wakes are coalesced: while one is pending, more
/// cost one atomic operation and no system call.
#[derive(Clone)]
pub struct Waker {
    pub(super) inner: Arc<WakerInner>,
}

pub(super) struct WakerInner {
    pub(super) notifier: Notifier,
    pub(super) pending: AtomicBool,
}

impl Waker {
    /// Wakes the loop, which then calls the callback given to
    /// [`EventLoop::waker`](super::EventLoop::waker). Async-signal-safe on
    /// Linux: an atomic swap and at most one `write(2)` to an eventfd, no
    /// allocation or lock (on kqueue it is one `kevent(2)` call).
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
pub(super) struct WakerEntry<F> {
    pub(super) inner: Arc<WakerInner>,
    pub(super) on_wake: F,
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

/// A signal source's registration: calls back once per delivered signal.
pub(super) struct SignalEntry<F> {
    pub(super) source: SignalSource,
    pub(super) on_signal: F,
}

impl<F: FnMut(&mut Context<'_>, Signal)> Entry for SignalEntry<F> {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn call(&mut self, cx: &mut Context<'_>, ready: Ready) -> io::Result<()> {
        let f = &mut self.on_signal;
        let _ = ready;
        self.source.read(|s| f(cx, s))?;
        Ok(())
    }
}
