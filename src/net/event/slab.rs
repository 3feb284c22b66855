//! Registrations: the slab of slots that hold each registered source with
//! its handler, the [`Key`]s (index and generation) that name them, and the
//! [`Registration`] handle a caller keeps.
//!
//! A slot is vacant or live; a live slot's entry is at home, out being
//! called, or out being called and already deregistered (removed when the
//! call returns). Each free makes the slot's generation grow, and every
//! lookup compares it, so a token of a freed slot finds nothing.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::rc::Weak;

use super::{Context, EventLoop, Inner, Interest, Mode, Ready};
use crate::sys::event::Token;
use crate::sys::{errno, Error, Result};

/// Identifies a registration: a slab index and the slot's generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    index: u32,
    generation: u32,
}

#[cfg(target_pointer_width = "64")]
impl Key {
    pub(super) fn token(self) -> Token {
        Token((u64::from(self.generation) << 32 | u64::from(self.index)) as usize)
    }

    pub(super) fn from_token(t: Token) -> Self {
        Self {
            index: t.0 as u32,
            generation: (t.0 as u64 >> 32) as u32,
        }
    }
}

#[cfg(not(target_pointer_width = "64"))]
impl Key {
    // 24 bits of index, 8 of generation where tokens are 32 bits wide.
    pub(super) fn token(self) -> Token {
        Token(((self.generation & 0xff) << 24 | (self.index & 0xff_ffff)) as usize)
    }

    pub(super) fn from_token(t: Token) -> Self {
        Self {
            index: (t.0 & 0xff_ffff) as u32,
            generation: (t.0 >> 24) as u32 & 0xff,
        }
    }
}

/// A registered source and its handler, type-erased.
pub(super) trait Entry {
    /// The fd the selector watches, if the entry has one of its own (a
    /// waker or signal source registers its own fds).
    fn fd(&self) -> Option<BorrowedFd<'_>>;
    fn call(&mut self, cx: &mut Context<'_>, ready: Ready) -> io::Result<()>;
    /// The source, for [`Registration::into_source`]; `None` for entries
    /// the loop made itself.
    fn into_source(self: Box<Self>) -> Option<Box<dyn std::any::Any>> {
        None
    }
}

/// A source the loop owns and the handler it is called with.
pub(super) struct Registered<S, H> {
    pub(super) source: S,
    pub(super) handler: H,
}

impl<S, H> Entry for Registered<S, H>
where
    S: AsFd + 'static,
    H: FnMut(&mut Context<'_>, &S, Ready) -> io::Result<()>,
{
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.source.as_fd())
    }

    fn call(&mut self, cx: &mut Context<'_>, ready: Ready) -> io::Result<()> {
        (self.handler)(cx, &self.source, ready)
    }

    fn into_source(self: Box<Self>) -> Option<Box<dyn std::any::Any>> {
        Some(Box::new(self.source))
    }
}

/// Where a live slot's entry is.
enum Call {
    /// At home in the slot.
    Idle(Box<dyn Entry>),
    /// Out being called.
    Calling,
    /// Out being called, and deregistered meanwhile: freed when the call
    /// returns.
    Removing,
}

/// A registration's slot while it is live.
struct Live {
    call: Call,
    mode: Mode,
    /// On the list of end-of-turn calls.
    deferred: bool,
    /// The registered fd's number. The entry owns the source and hands
    /// handlers only `&S`, so the number stays valid (and the same open
    /// file) for as long as the slot is live.
    fd: Option<RawFd>,
}

struct Slot {
    generation: u32,
    live: Option<Live>,
}

/// The slots, and the indices of the vacant ones.
#[derive(Default)]
pub(super) struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

/// What the loop does with an entry after its call.
pub(super) struct AfterCall {
    /// Free the slot and drop the entry (after `EPOLL_CTL_DEL`).
    pub(super) remove: bool,
    /// Queue an end-of-turn call.
    pub(super) defer: bool,
}

impl Slab {
    /// The live slot `key` names, unless it was deregistered.
    fn live(&mut self, key: Key) -> Option<&mut Live> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        match slot.live.as_mut() {
            Some(l) if !matches!(l.call, Call::Removing) => Some(l),
            _ => None,
        }
    }

    /// The number of live registrations.
    pub(super) fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.live.is_some()).count()
    }

    /// Sets a vacant slot aside and returns the key it will have.
    pub(super) fn reserve(&mut self) -> Key {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    live: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        Key {
            index,
            generation: self.slots[index as usize].generation,
        }
    }

    /// Fills the slot [`Slab::reserve`] set aside.
    pub(super) fn fill(&mut self, key: Key, mode: Mode, entry: Box<dyn Entry>) {
        let fd = entry.fd().map(|f| std::os::fd::AsRawFd::as_raw_fd(&f));
        self.slots[key.index as usize].live = Some(Live {
            call: Call::Idle(entry),
            mode,
            deferred: false,
            fd,
        });
    }

    /// Gives back a reserved slot that was never filled.
    pub(super) fn unreserve(&mut self, key: Key) {
        self.free_slot(key.index);
    }

    fn free_slot(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        slot.live = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
    }

    /// The fd and mode of `key`, for a reregistration; `mode` replaces the
    /// registration's mode first.
    pub(super) fn fd_and_mode(&mut self, key: Key, mode: Option<Mode>) -> Option<(RawFd, Mode)> {
        let live = self.live(key)?;
        if let Some(m) = mode {
            live.mode = m;
        }
        Some((live.fd?, live.mode))
    }

    /// Deregisters `key`: the entry to drop now (after `EPOLL_CTL_DEL`), or
    /// `None` when it is out being called (it is removed when the call
    /// returns) or was gone already.
    pub(super) fn remove(&mut self, key: Key) -> Option<Box<dyn Entry>> {
        let live = self.live(key)?;
        // `live` skips `Removing`: the entry is at home or out being called.
        match std::mem::replace(&mut live.call, Call::Removing) {
            Call::Idle(entry) => {
                self.free_slot(key.index);
                Some(entry)
            }
            _ => None,
        }
    }

    /// Deregisters `key` only if its entry is at home (not out being
    /// called), returning the entry; otherwise changes nothing.
    pub(super) fn remove_idle(&mut self, key: Key) -> Option<Box<dyn Entry>> {
        let live = self.live(key)?;
        if !matches!(live.call, Call::Idle(_)) {
            return None;
        }
        self.remove(key)
    }

    /// Takes the entry of `key` out for a call, if the slot still holds that
    /// generation and the entry is at home (a handler is never re-entered).
    pub(super) fn begin_call(&mut self, key: Key) -> Option<Box<dyn Entry>> {
        let live = self.live(key)?;
        match std::mem::replace(&mut live.call, Call::Calling) {
            Call::Idle(entry) => Some(entry),
            other => {
                live.call = other;
                None
            }
        }
    }

    /// Puts an entry back after its call. Returns it when it must be
    /// dropped instead (deregistered during the call, or `after.remove`),
    /// and whether the key was newly put on the end-of-turn list.
    pub(super) fn end_call(
        &mut self,
        key: Key,
        entry: Box<dyn Entry>,
        after: AfterCall,
    ) -> (Option<Box<dyn Entry>>, bool) {
        let slot = &mut self.slots[key.index as usize];
        let Some(live) = slot.live.as_mut() else {
            return (Some(entry), false);
        };
        if after.remove || matches!(live.call, Call::Removing) {
            self.free_slot(key.index);
            return (Some(entry), false);
        }
        live.call = Call::Idle(entry);
        let queue = after.defer && !live.deferred;
        live.deferred |= after.defer;
        (None, queue)
    }

    /// Takes `key` off the end-of-turn list; `false` if it is gone.
    pub(super) fn undefer(&mut self, key: Key) -> bool {
        match self.slots.get_mut(key.index as usize) {
            Some(slot) if slot.generation == key.generation => {
                if let Some(l) = slot.live.as_mut() {
                    l.deferred = false;
                }
                true
            }
            _ => false,
        }
    }
}

/// A registered source. Dropping it deregisters the source and drops it;
/// [`Registration::detach`] leaves it to the loop instead.
#[must_use = "dropping a Registration deregisters its source at once; keep it, or call detach()"]
pub struct Registration {
    pub(super) lp: Weak<Inner>,
    pub(super) key: Key,
}

impl Registration {
    /// The registration's key.
    pub fn key(&self) -> Key {
        self.key
    }

    fn with_loop(&self, f: impl FnOnce(&EventLoop) -> Result<()>) -> Result<()> {
        match self.lp.upgrade() {
            Some(inner) => f(&EventLoop { inner }),
            None => Ok(()),
        }
    }

    /// Changes the interest (the mode stays).
    pub fn reregister(&self, interest: Interest) -> Result<()> {
        self.with_loop(|lp| lp.reregister_key(self.key, interest, None))
    }

    /// Changes interest and mode (re-arms a fired oneshot).
    pub fn reregister_with(&self, interest: Interest, mode: Mode) -> Result<()> {
        self.with_loop(|lp| lp.reregister_key(self.key, interest, Some(mode)))
    }

    /// Deregisters now, reporting a failure of `EPOLL_CTL_DEL`.
    pub fn deregister(self) -> Result<()> {
        let r = self.with_loop(|lp| lp.remove(self.key));
        std::mem::forget(self);
        r
    }

    /// Deregisters the source and gives it back, with its handler dropped.
    ///
    /// `S` is the type the source was registered as.
    ///
    /// # Errors
    ///
    /// `EBUSY` during the registration's own handler call (the source is
    /// in use; it is deregistered and dropped once the call returns, as
    /// when a `Registration` drops), `ENOENT` when the loop is gone or the
    /// registration was removed already, `EINVAL` when the source is not
    /// an `S` (it is dropped), and a failure of `EPOLL_CTL_DEL`.
    pub fn into_source<S: 'static>(self) -> Result<S> {
        let key = self.key;
        let Some(inner) = self.lp.upgrade() else {
            std::mem::forget(self);
            return Err(Error::new(
                "Registration::into_source",
                "the loop is gone",
                errno::ENOENT,
            ));
        };
        let lp = EventLoop { inner };
        let taken = lp.take_source(key);
        match taken {
            Err(e) => {
                std::mem::forget(self);
                Err(e)
            }
            Ok(None) => Err(Error::new(
                "Registration::into_source",
                format!("{key:?}: its handler is running, or it was removed"),
                errno::EBUSY,
            )),
            Ok(Some(any)) => {
                std::mem::forget(self);
                any.downcast::<S>().map(|b| *b).map_err(|_| {
                    Error::new(
                        "Registration::into_source",
                        format!(
                            "{key:?}: the source is not a {}",
                            std::any::type_name::<S>()
                        ),
                        errno::EINVAL,
                    )
                })
            }
        }
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
        // Nowhere to report from drop; `deregister` reports.
        let _ = self.with_loop(|lp| lp.remove(self.key));
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .finish()
    }
}
