//! Fast mode's epoll: the library answers the program's epoll sets for
//! accelerated connections from their rings, so that a program's
//! `epoll_ctl(EPOLL_CTL_MOD)` of such an fd costs no system call and a
//! wait that finds a ring ready makes none either.
//!
//! The kernel holds one registration per member (an accelerated or
//! pending connection) with a tagged token ([`TAG`] and the fd) instead of
//! the program's data: `EPOLLIN|EPOLLRDHUP` for an accelerated one (its
//! doorbells and end-of-file), the program's own events for a pending
//! client (whose first readable byte is the server's hello). The program's
//! events, data, `EPOLLET` and `EPOLLONESHOT` live in the set's record
//! here. A wait looks at the rings first, asks the kernel without
//! blocking only where other fds (or pending members) need it, and blocks
//! only after arming every member it waits for: a reader that is not
//! sleeping gets no doorbell, so a busy pair exchanges no system call.
//! A wait that wakes takes those arms back ([`Accel::disarm_lazy`]) where
//! no other waiter can rely on them (see `Inner::disarm`); `poll` and
//! `select` look at the rings first, and a set that falls back answers
//! for the bytes the kernel was not told of (`Inner::owed`).
//!
//! - Level-triggered members are reported while their ring has bytes
//!   (`EPOLLIN`) or space (`EPOLLOUT`), never from the kernel's view of
//!   the socket's buffer; end-of-file, `EPOLLRDHUP`, `EPOLLHUP` and
//!   `EPOLLERR` are the kernel's, remembered once seen.
//! - `EPOLLET`: reported when the ring advanced since the last report
//!   (new bytes for `EPOLLIN`, freed space for `EPOLLOUT`).
//! - `EPOLLONESHOT`: disabled after one report until `EPOLL_CTL_MOD`.
//! - A set placed inside another epoll set, or given to `poll` or
//!   `select`, *falls back*: its members are registered as the program
//!   asked and it behaves as in safe mode (where the kernel's readiness
//!   mirrors the rings) for good.
//! - A set shared across `fork`: each process keeps its own record (as of
//!   the fork, plus its own changes); the kernel's registrations are
//!   shared, so a member one process adds is not reported to the other.
//!
//! Every record's lock is this module's own word lock (no `pthread`
//! mutex), taken over from a thread that no longer exists, so that a
//! forked child never finds it held for good.

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use procwire::ipc::accel::Accel;
use procwire::sys::eventfd::EventFd;
use procwire::sys::interpose;
use procwire::sys::interpose::ffi::{
    c_int, epoll_event, sigset_t, timespec, EEXIST, EFAULT, EINVAL, ENOENT, EPOLLERR, EPOLLET,
    EPOLLEXCLUSIVE, EPOLLHUP, EPOLLIN, EPOLLONESHOT, EPOLLOUT, EPOLLPRI, EPOLLRDHUP, EPOLLRDNORM,
    EPOLLWRNORM, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD,
};

use crate::table::{self, Entry, State};
use crate::{attached, fd_of, real, Conn};

/// The high half of the kernel token of a member: the low half is its fd.
pub(crate) const TAG: u64 = 0x7077_6163_0000_0000;
/// The kernel token of a fallen-back set's nudge (`Inner::nudge`).
const NUDGE: u64 = TAG | 0xffff_ffff;
const TAG_MASK: u64 = 0xffff_ffff_0000_0000;

const IN: u32 = (EPOLLIN | EPOLLRDNORM) as u32;
const OUT: u32 = (EPOLLOUT | EPOLLWRNORM) as u32;
const RDHUP: u32 = EPOLLRDHUP as u32;
const HUP: u32 = EPOLLHUP as u32;
const ERR: u32 = EPOLLERR as u32;
const ET: u32 = EPOLLET as u32;
const ONESHOT: u32 = EPOLLONESHOT as u32;

/// Whether fast mode is on (`PROCWIRE_ACCEL_MODE`, read by the
/// constructor).
static FAST: AtomicBool = AtomicBool::new(false);

/// Microseconds a wait may spin on the rings before it sleeps
/// (`PROCWIRE_SPIN_US`; 0: never).
static SPIN_US: AtomicU32 = AtomicU32::new(0);

/// Sets the spin (the constructor does).
pub(crate) fn set_spin_us(us: u32) {
    SPIN_US.store(us, Ordering::Release);
}

/// Turns fast mode on (the constructor does, unless told `safe`).
pub(crate) fn set_fast(on: bool) {
    FAST.store(on, Ordering::Release);
}

/// Whether fast mode is on.
#[inline]
pub(crate) fn fast() -> bool {
    FAST.load(Ordering::Relaxed)
}

/// An io_uring instance was seen in this process: its polls watch sockets
/// from the kernel, unseen here, so no arm is ever taken back.
static URING: AtomicBool = AtomicBool::new(false);

/// Whether this process was seen holding an io_uring instance.
pub(crate) fn uring_seen() -> bool {
    URING.load(Ordering::Relaxed)
}

/// Looks through this process's fds for an io_uring instance (as a
/// connection joins a set: one that exists by then is seen).
fn look_for_uring() {
    if uring_seen() {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        // Can't tell: as if there were one.
        URING.store(true, Ordering::Relaxed);
        return;
    };
    for d in dir.flatten() {
        if std::fs::read_link(d.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:[io_uring]") {
            URING.store(true, Ordering::Relaxed);
            return;
        }
    }
}

/// The program's record of one member.
struct Reg {
    fd: c_int,
    /// The member's entry (ids are never reused).
    id: u64,
    /// The program's events and flags.
    events: u32,
    /// The program's data.
    data: u64,
    /// The kernel's registration now (`None`: removed).
    kmask: Option<u32>,
    /// `EPOLLONESHOT` fired; waits for `EPOLL_CTL_MOD`.
    disabled: bool,
    /// The program removed it (`EPOLL_CTL_DEL`), the kernel's registration
    /// stays: programs that remove and add an fd around every request
    /// (redis's event loop does) then cost no system call. Its kernel
    /// events are the library's own business.
    ghost: bool,
    /// `EPOLLET`: the ring's marks at the last report.
    in_mark: Option<u64>,
    out_mark: Option<u64>,
    /// Seen from the kernel (kept: the kernel's level).
    eof: bool,
    hup: bool,
    err: bool,
    /// `EPOLLET`: end-of-file and hang-up already reported.
    said_eof: bool,
    said_hup: bool,
    /// The writer waits for room: the kernel also watches `EPOLLOUT`
    /// (filler bytes keep it off until the reader frees space).
    out_wait: bool,
    /// This record counts in its connection's lazy readers.
    lazy: bool,
    /// The wait round that last reported it, and where in the program's
    /// buffer (so that the kernel's bits of the same round join it).
    round: u64,
    slot: usize,
}

impl Reg {
    /// The program's `MOD` (or `ADD` again) with `p`: its events and data,
    /// enabled, and, as the kernel's `MOD` does, the current state is
    /// reported anew.
    fn renew(&mut self, p: &epoll_event) {
        self.events = p.events;
        self.data = p.u64;
        self.disabled = false;
        self.in_mark = None;
        self.out_mark = None;
        self.said_eof = false;
        self.said_hup = false;
        self.round = 0;
    }
}

#[derive(Default)]
struct Inner {
    regs: Vec<Reg>,
    index: HashMap<c_int, usize>,
    round: u64,
    turn: usize,
    /// A set that fell back: members whose ring held bytes the kernel did
    /// not know of (their doorbell taken off, see [`crate::kernel_watch`]).
    /// Its waits report them from the ring until they are read, and
    /// `nudge`, registered in the set, keeps the set readable for a wait
    /// that holds it (an outer set, `poll`) meanwhile.
    owed: Vec<Owed>,
    nudge: Option<EventFd>,
}

/// A member a fallen-back set still answers for (see `Inner::owed`).
struct Owed {
    fd: c_int,
    id: u64,
    events: u32,
    data: u64,
}

/// An epoll set's record (fast mode).
pub(crate) struct EpSet {
    /// The thread id of the holder of `inner`, or 0.
    lock: AtomicU32,
    inner: UnsafeCell<Inner>,
    /// Registrations of other fds: those the kernel held when the first
    /// member came (its fdinfo), then those made through the wrapper (or
    /// `usize::MAX / 2`: not known).
    others: AtomicUsize,
    /// Nested in another set or polled: the program's registrations are
    /// the kernel's, as in safe mode.
    fallback: AtomicBool,
    /// A member was added once: until then every call on the set is the
    /// program's own, made by a jump from the wrapper ([`ctl_needed`],
    /// [`wait_needed`]), so a program whose sets never see an accelerated
    /// connection pays a few loads per call.
    active: AtomicBool,
    /// Threads blocked in the kernel on this set (changed under the lock):
    /// a wait that wakes takes its members' arms back only when no other
    /// thread still sleeps on them.
    sleepers: AtomicU32,
    /// Fell back with members it still answers for (`Inner::owed`).
    owes: AtomicBool,
}

// SAFETY: `inner` is only reached through `Held`, which holds `lock`.
unsafe impl Sync for EpSet {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for EpSet {}

/// Holds an [`EpSet`]'s lock.
struct Held<'a>(&'a EpSet);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.lock.store(0, Ordering::Release);
    }
}

impl std::ops::Deref for Held<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        // SAFETY: this guard holds the lock.
        unsafe { &*self.0.inner.get() }
    }
}

impl std::ops::DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        // SAFETY: this guard holds the lock, and `&mut self` is unique.
        unsafe { &mut *self.0.inner.get() }
    }
}

/// How long a holder is waited for before it is looked at.
const LOCK_LOOK: Duration = Duration::from_millis(100);

impl EpSet {
    pub(crate) fn new() -> Self {
        Self {
            lock: AtomicU32::new(0),
            inner: UnsafeCell::new(Inner::default()),
            others: AtomicUsize::new(0),
            fallback: AtomicBool::new(false),
            active: AtomicBool::new(false),
            sleepers: AtomicU32::new(0),
            owes: AtomicBool::new(false),
        }
    }

    /// The record, or `None` when this thread holds it already (a signal
    /// handler's call: then the program's own call is made).
    fn hold(&self) -> Option<Held<'_>> {
        let me = interpose::thread_id() as u32;
        let mut since: Option<Instant> = None;
        loop {
            match self
                .lock
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Some(Held(self)),
                Err(h) if h == me => return None,
                Err(h) => {
                    let start = *since.get_or_insert_with(Instant::now);
                    if start.elapsed() > LOCK_LOOK
                        && !interpose::thread_alive(h as i32)
                        && self
                            .lock
                            .compare_exchange(h, me, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok()
                    {
                        // Its holder is gone (a forked child's copy of a
                        // lock another thread held).
                        return Some(Held(self));
                    }
                    std::thread::yield_now();
                }
            }
        }
    }

    /// The set's last fd is closed: its members stop being lazy.
    pub(crate) fn closed(&self) {
        if let Some(mut g) = self.hold() {
            for r in g.regs.drain(..) {
                release_lazy(&r);
            }
            g.index.clear();
        }
    }

    /// Whether the set fell back to the kernel's answers.
    fn is_fallback(&self) -> bool {
        self.fallback.load(Ordering::Acquire)
    }
}

/// The member entry of `fd` (pending, or accelerated and not on its way
/// back to the plain socket), if it is one.
fn member(fd: c_int) -> Option<&'static Entry> {
    let e = table::get(fd)?;
    match e.state() {
        State::Pending => Some(e),
        State::Accel => e.accel().filter(|a| !a.downgrading()).map(|_| e),
        _ => None,
    }
}

/// `reg`'s entry, if its fd still holds the same one.
fn entry_of(reg: &Reg) -> Option<&'static Entry> {
    table::get(reg.fd).filter(|e| e.id() == reg.id)
}

fn release_lazy(r: &Reg) {
    if r.lazy {
        if let Some(a) = entry_of(r).and_then(|e| e.accel()) {
            a.set_lazy(false);
        }
    }
}

fn event(events: u32, data: u64) -> epoll_event {
    epoll_event { events, u64: data }
}

/// The kernel's `epoll_ctl`, returning the errno on failure.
fn kctl(epfd: c_int, op: c_int, fd: c_int, events: u32, data: u64) -> Result<(), i32> {
    let mut ev = event(events, data);
    // SAFETY: `ev` is a valid epoll_event for the call.
    let r = unsafe { real::epoll_ctl(epfd, op, fd, &mut ev) };
    if r == 0 {
        Ok(())
    } else {
        Err(interpose::errno())
    }
}

/// What the kernel should watch for `reg` now.
fn desired(reg: &Reg, e: &Entry) -> Option<u32> {
    if reg.ghost {
        return if reg.hup { None } else { reg.kmask };
    }
    if reg.disabled {
        return Some(0);
    }
    match e.state() {
        State::Pending => {
            Some(reg.events & (IN | OUT | RDHUP | EPOLLPRI as u32) | EPOLLIN as u32 | RDHUP)
        }
        _ if reg.hup => None,
        _ => {
            let base = if reg.eof { 0 } else { EPOLLIN as u32 | RDHUP };
            Some(base | if reg.out_wait { EPOLLOUT as u32 } else { 0 })
        }
    }
}

/// Brings the kernel's registration of `reg` to `want`.
fn apply(epfd: c_int, reg: &mut Reg, want: Option<u32>) {
    if reg.kmask == want {
        return;
    }
    let tag = TAG | reg.fd as u32 as u64;
    let r = match (reg.kmask, want) {
        (Some(_), Some(m)) => kctl(epfd, EPOLL_CTL_MOD, reg.fd, m, tag),
        (None, Some(m)) => kctl(epfd, EPOLL_CTL_ADD, reg.fd, m, tag),
        (Some(_), None) => kctl(epfd, EPOLL_CTL_DEL, reg.fd, 0, 0),
        (None, None) => Ok(()),
    };
    // A failure leaves the kernel as it was; the next round tries again.
    if r.is_ok() || want.is_none() {
        reg.kmask = want;
    }
}

impl Inner {
    fn remove(&mut self, i: usize) -> Reg {
        let r = self.regs.swap_remove(i);
        self.index.remove(&r.fd);
        if let Some(moved) = self.regs.get(i) {
            self.index.insert(moved.fd, i);
        }
        r
    }

    fn find(&self, fd: c_int) -> Option<usize> {
        self.index.get(&fd).copied()
    }

    /// Hands `regs[i]` back to the kernel as the program asked (the
    /// connection went plain): it is an ordinary fd of the set from now
    /// on.
    fn give_back(&mut self, epfd: c_int, i: usize) {
        let r = self.remove(i);
        release_lazy(&r);
        if r.ghost {
            // Not the program's: the kernel forgets it too.
            if r.kmask.is_some() {
                let _ = kctl(epfd, EPOLL_CTL_DEL, r.fd, 0, 0);
            }
            return;
        }
        let events = if r.disabled { 0 } else { r.events };
        let op = if r.kmask.is_some() {
            EPOLL_CTL_MOD
        } else {
            EPOLL_CTL_ADD
        };
        let _ = kctl(epfd, op, r.fd, events, r.data);
    }

    /// Drops records of closed fds, hands back connections that went
    /// plain, and brings the kernel's registrations up to date.
    fn refresh(&mut self, epfd: c_int) {
        let mut i = 0;
        while i < self.regs.len() {
            let Some(e) = entry_of(&self.regs[i]) else {
                // Closed: the kernel dropped its registration with the
                // file (or a dup elsewhere keeps it; its tokens are then
                // unknown here and ignored).
                self.remove(i);
                continue;
            };
            let plain = match e.state() {
                State::Pending => false,
                State::Accel => e.accel().is_none_or(|a| a.downgrading()),
                _ => true,
            };
            if plain {
                self.give_back(epfd, i);
                continue;
            }
            let r = &mut self.regs[i];
            if let Some(a) = e.accel().filter(|_| !r.ghost) {
                if !r.lazy {
                    a.set_lazy(true);
                    r.lazy = true;
                }
                if r.out_wait && a.ring_writable() != Some(false) {
                    r.out_wait = false;
                }
            }
            let want = desired(r, e);
            apply(epfd, r, want);
            i += 1;
        }
    }
}

/// What `reg` (an accelerated member) is ready for, given what the kernel
/// said of its socket (`kbits`, 0 for none).
fn ready(reg: &mut Reg, a: &Accel, fd: c_int, kbits: u32) -> u32 {
    if kbits & (RDHUP | HUP) != 0 {
        reg.eof = true;
    }
    if kbits & HUP != 0 {
        reg.hup = true;
    }
    if kbits & ERR != 0 {
        reg.err = true;
    }
    let want = reg.events;
    let mut bits = 0;
    if want & IN != 0 {
        let readable = match a.ring_readable() {
            Some(true) => true,
            // Woken by a stale doorbell (taken off here), or by bytes that
            // raced in.
            Some(false) if kbits & IN != 0 && !reg.eof => {
                a.wait_prep_lazy(fd_of(fd)).unwrap_or(true)
            }
            Some(false) => reg.eof,
            None => reg.eof || a.wait_prep_lazy(fd_of(fd)).unwrap_or(true),
        };
        if readable {
            bits |= want & IN;
        }
    } else if kbits & IN != 0 && a.ring_readable() == Some(false) {
        // Not asked for, but a stale doorbell would wake every wait.
        let _ = a.wait_prep_lazy(fd_of(fd));
    }
    if want & OUT != 0 {
        let writable = match a.ring_writable() {
            Some(w) => w || reg.hup,
            None => true,
        };
        if writable {
            bits |= want & OUT;
        }
    }
    if want & RDHUP != 0 && reg.eof {
        bits |= RDHUP;
    }
    if reg.hup {
        bits |= HUP;
    }
    if reg.err {
        bits |= ERR;
    }
    if want & ET != 0 {
        if bits & IN != 0 {
            let m = a.rx_mark();
            let new_eof = reg.eof && !reg.said_eof;
            if reg.in_mark == Some(m) && !new_eof {
                bits &= !(IN | RDHUP);
            } else {
                reg.in_mark = Some(m);
                reg.said_eof |= reg.eof;
            }
        }
        if bits & OUT != 0 {
            let m = a.tx_mark();
            if reg.out_mark == Some(m) {
                bits &= !OUT;
            } else {
                reg.out_mark = Some(m);
            }
        }
        if bits & (HUP | ERR) != 0 {
            if reg.said_hup {
                bits &= !(HUP | ERR);
            } else {
                reg.said_hup = true;
            }
        }
    }
    bits
}

/// Records that `reg` was reported (for `EPOLLONESHOT`).
fn reported(epfd: c_int, reg: &mut Reg, round: u64) {
    reg.round = round;
    if reg.events & ONESHOT != 0 {
        reg.disabled = true;
        if reg.kmask.is_some_and(|m| m != 0) {
            apply(epfd, reg, Some(0));
        }
    }
}

/// Writes `ev` at `out[i]`.
///
/// # Safety
///
/// `out` is valid for at least `i + 1` events.
unsafe fn put(out: *mut epoll_event, i: usize, ev: epoll_event) {
    // SAFETY: the caller's bound; epoll_event may be packed.
    unsafe { std::ptr::write_unaligned(out.add(i), ev) }
}

/// Reads `out[i]`.
///
/// # Safety
///
/// As for [`put`].
unsafe fn get(out: *const epoll_event, i: usize) -> epoll_event {
    // SAFETY: the caller's bound.
    unsafe { std::ptr::read_unaligned(out.add(i)) }
}

impl Inner {
    /// Reports members whose ring is ready into `out[n..max]`; the new
    /// count.
    ///
    /// # Safety
    ///
    /// `out` is valid for `max` events.
    unsafe fn scan(
        &mut self,
        epfd: c_int,
        out: *mut epoll_event,
        mut n: usize,
        max: usize,
    ) -> usize {
        let len = self.regs.len();
        if len == 0 {
            return n;
        }
        let start = self.turn % len;
        self.turn = self.turn.wrapping_add(1);
        let round = self.round;
        for k in 0..len {
            if n >= max {
                break;
            }
            let r = &mut self.regs[(start + k) % len];
            if r.disabled || r.ghost || r.round == round {
                continue;
            }
            let Some(a) = entry_of(r).and_then(|e| e.accel()) else {
                continue;
            };
            let bits = ready(r, a, r.fd, 0);
            if bits != 0 {
                // SAFETY: `n < max`.
                unsafe { put(out, n, event(bits, r.data)) };
                r.slot = n;
                n += 1;
                reported(epfd, r, round);
            }
        }
        n
    }

    /// Turns the kernel's events at `out[n..n + k]` into the program's:
    /// members' tokens become their answers (or nothing), others stay.
    /// The new count.
    ///
    /// # Safety
    ///
    /// `out` is valid for `n + k` events.
    unsafe fn translate(
        &mut self,
        epfd: c_int,
        out: *mut epoll_event,
        n: usize,
        k: usize,
    ) -> usize {
        let round = self.round;
        let mut w = n;
        for i in n..n + k {
            // SAFETY: `i < n + k`; `w <= i`.
            let ev = unsafe { get(out, i) };
            let (kbits, data) = (ev.events, ev.u64);
            if data & TAG_MASK != TAG {
                // SAFETY: `w <= i`.
                unsafe { put(out, w, ev) };
                w += 1;
                continue;
            }
            let fd = (data & !TAG_MASK) as u32 as c_int;
            let Some(idx) = self.find(fd) else { continue };
            let Some(e) = entry_of(&self.regs[idx]) else {
                continue;
            };
            let r = &mut self.regs[idx];
            if r.round == round && !r.ghost {
                // Reported from its ring this round: the kernel's
                // end-of-file, hang-up and error join that event.
                r.eof |= kbits & (RDHUP | HUP) != 0;
                r.hup |= kbits & HUP != 0;
                r.err |= kbits & ERR != 0;
                let mut add = 0;
                if r.eof && r.events & RDHUP != 0 {
                    add |= RDHUP;
                }
                if r.eof && r.events & IN != 0 {
                    add |= r.events & IN;
                }
                if r.hup {
                    add |= HUP;
                }
                if r.err {
                    add |= ERR;
                }
                if r.slot < n {
                    // SAFETY: `slot < n <= i`, written this round.
                    let mut ev = unsafe { get(out, r.slot) };
                    ev.events |= add;
                    // SAFETY: as above.
                    unsafe { put(out, r.slot, ev) };
                }
                continue;
            }
            if r.ghost {
                r.hup |= kbits & HUP != 0;
                if kbits & IN != 0 && !r.hup {
                    match e.accel().map(|a| (a, a.ring_readable())) {
                        // A stale doorbell: off the socket.
                        Some((a, Some(false))) => {
                            let _ = a.wait_prep_lazy(fd_of(fd));
                        }
                        // Bytes nobody here waits for: the kernel stops
                        // telling until the program adds it again.
                        _ => apply(epfd, r, Some(0)),
                    }
                }
                continue;
            }
            if r.disabled {
                // Only a hang-up reaches a disabled member: remembered.
                r.hup |= kbits & HUP != 0;
                continue;
            }
            let bits = match attached(e, fd, false) {
                Conn::Accel(a) => ready(r, a, fd, kbits),
                // Plain for good (handed back at the next round), or the
                // hello is not all here yet: the kernel's answer, without
                // the readability a hello alone gives.
                Conn::Plain => kbits & (r.events | HUP | ERR),
                Conn::Wait(_) => kbits & (r.events | HUP | ERR) & !IN,
            };
            if bits != 0 {
                // SAFETY: `w <= i < n + k`.
                unsafe { put(out, w, event(bits, r.data)) };
                r.slot = w;
                w += 1;
                reported(epfd, r, round);
            }
        }
        w
    }

    /// Before blocking: arms every member the wait is for. `true` if one
    /// turned out ready meanwhile (then look again instead).
    fn prep(&mut self, epfd: c_int) -> bool {
        for r in self.regs.iter_mut() {
            if r.disabled || r.ghost {
                continue;
            }
            let Some(a) = entry_of(r).and_then(|e| e.accel()) else {
                continue;
            };
            let sock = fd_of(r.fd);
            if r.events & IN != 0 && !r.eof && a.wait_prep_lazy(sock).unwrap_or(true) {
                return true;
            }
            if r.events & OUT != 0 && a.ring_writable() == Some(false) {
                if a.wait_prep_write(sock).unwrap_or(true) {
                    return true;
                }
                r.out_wait = true;
                let want = table::get(r.fd).and_then(|e| desired(r, e));
                apply(epfd, r, want);
            }
        }
        false
    }

    /// Awake again, and no other thread sleeps on the set: takes back the
    /// arms of members whose writers did not ring, so that their peers
    /// ring no doorbell while this process is awake (it looks at their
    /// rings before it sleeps, and arms them again). Only where nothing
    /// else can rely on the arm: the connection is in no other set of this
    /// process ([`Accel::lazy_readers`]), no fork shared it, and no
    /// io_uring instance was seen ([`uring_seen`]); a wait that asks only
    /// the kernel ([`Accel::kernel_waits`]) keeps its arms for good.
    fn disarm(&self) {
        if uring_seen() {
            return;
        }
        for r in self
            .regs
            .iter()
            .filter(|r| !r.ghost && !r.disabled && r.lazy)
        {
            let Some(e) = entry_of(r) else { continue };
            if !e.unshared() {
                continue;
            }
            if let Some(a) = e.accel().filter(|a| a.lazy_readers() == 1) {
                a.disarm_lazy();
            }
        }
    }

    /// Publishes to every member's peer whether this process runs (on
    /// `cpu`) or is about to sleep (`None`).
    fn advertise(&self, cpu: Option<u32>) {
        for r in self.regs.iter().filter(|r| !r.ghost) {
            if let Some(a) = entry_of(r).and_then(|e| e.accel()) {
                a.set_running(cpu);
            }
        }
    }

    /// Whether some member's peer runs on another CPU than `cpu`.
    fn peer_elsewhere(&self, cpu: u32) -> bool {
        self.regs
            .iter()
            .filter(|r| !r.ghost && !r.disabled)
            .any(|r| {
                entry_of(r)
                    .and_then(|e| e.accel())
                    .is_some_and(|a| a.peer_runs_elsewhere(cpu))
            })
    }

    /// Whether a member's ring is ready for what the program waits for
    /// (a look without a system call, for spinning).
    fn ready_quick(&self) -> bool {
        self.regs
            .iter()
            .filter(|r| !r.ghost && !r.disabled)
            .any(|r| {
                entry_of(r).and_then(|e| e.accel()).is_some_and(|a| {
                    (r.events & IN != 0 && a.ring_readable() == Some(true))
                        || (r.events & OUT != 0 && a.ring_writable() == Some(true))
                })
            })
    }

    /// Whether a wait that found rings ready should also ask the kernel.
    fn kernel_too(&self, others: usize) -> bool {
        others > 0
            || self.round % 16 == 0
            || self.regs.iter().filter(|r| !r.ghost).any(|r| {
                // End-of-file for a program that asks for it, and the
                // hang-up after it, are the kernel's to tell.
                (r.events & RDHUP != 0 && !r.eof)
                    || (r.eof && !r.hup)
                    || table::get(r.fd).is_some_and(|e| e.state() == State::Pending)
            })
    }
}

// ------------------------------------------------------------- the calls

/// After the program's `epoll_create`/`epoll_create1` made `r`: the set
/// gets its record (fast mode).
pub(crate) fn created(r: c_int) -> c_int {
    if r >= 0 && crate::enabled() {
        table::install(r, Entry::epoll());
    }
    r
}

/// Whether the program's `epoll_ctl` needs [`ctl`]: `fd` is a member
/// (or, added, a set this library keeps a record of), or `epfd` answers
/// for members. The rest are the kernel's alone: a set that has had no
/// member counts its other registrations when the first one comes
/// ([`activate`]).
#[inline]
pub(crate) fn ctl_needed(epfd: c_int, op: c_int, fd: c_int) -> bool {
    (op == EPOLL_CTL_ADD && table::get(fd).is_some_and(|e| e.epset().is_some()))
        || member(fd).is_some()
        || set_of(epfd).is_some()
}

/// Whether the program's wait on `epfd` needs [`wait`]: the set answers
/// for members, or fell back owing some ring bytes.
#[inline]
pub(crate) fn wait_needed(epfd: c_int) -> bool {
    table::get(epfd).and_then(|e| e.epset()).is_some_and(|s| {
        if s.is_fallback() {
            s.owes.load(Ordering::Acquire)
        } else {
            s.active.load(Ordering::Acquire)
        }
    })
}

/// `set` (of `epfd`) takes its first member: from now on this library
/// answers for it, knowing how many other fds the kernel watches in it
/// (read before the set turns active, so that a registration counted by
/// the wrapper later is not in it twice; one made by another thread in
/// between is missed, which costs it only promptness: a wait that finds
/// ring bytes still asks the kernel every 16th round, and a wait that
/// blocks asks it always).
fn activate(epfd: c_int, set: &EpSet) {
    let known = interpose::epoll_watch_count(crate::fd_of(epfd)).unwrap_or(usize::MAX / 2);
    if set
        .active
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        set.others.fetch_add(known, Ordering::Relaxed);
    }
}

/// A managed set's record (with a member once, not fallen back).
fn set_of(epfd: c_int) -> Option<&'static EpSet> {
    table::get(epfd)
        .and_then(|e| e.epset())
        .filter(|s| s.active.load(Ordering::Acquire) && !s.is_fallback())
}

/// Counts a registration of another fd the kernel took (or dropped).
fn count_other(set: &EpSet, op: c_int, r: c_int) {
    if r != 0 {
        return;
    }
    match op {
        EPOLL_CTL_ADD => {
            set.others.fetch_add(1, Ordering::Relaxed);
        }
        EPOLL_CTL_DEL => {
            let _ = set
                .others
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
        _ => {}
    }
}

/// `fd` is put inside another set, or polled: if it is a managed epoll
/// set, it falls back to the kernel's answers for good.
pub(crate) fn nested(fd: c_int) {
    let Some(set) = table::get(fd).and_then(|e| e.epset()) else {
        return;
    };
    let Some(mut g) = set.hold() else { return };
    if set.fallback.swap(true, Ordering::AcqRel) {
        return;
    }
    while let Some(r) = g.regs.first() {
        let owed = Owed {
            fd: r.fd,
            id: r.id,
            events: if r.disabled { 0 } else { r.events },
            data: r.data,
        };
        let ghost = r.ghost;
        g.give_back(fd, 0);
        // The kernel answers for it from now on, but for bytes it was not
        // told of.
        if !ghost && owed.events & IN != 0 && crate::kernel_watch(owed.fd) {
            g.owed.push(owed);
        }
    }
    if !g.owed.is_empty() {
        set.owes.store(true, Ordering::Release);
    }
    if !g.owed.is_empty() && g.nudge.is_none() {
        if let Ok(n) = EventFd::new(1, true) {
            if kctl(fd, EPOLL_CTL_ADD, n.as_raw_fd(), EPOLLIN as u32, NUDGE).is_ok() {
                g.nudge = Some(n);
            }
        }
    }
}

/// A wait on a set that fell back while it still answers for members'
/// ring bytes (`Inner::owed`): those members, with what the kernel says
/// of the rest (without blocking). `None`: the program's own call (nothing
/// is owed any more; the nudge is gone).
///
/// # Safety
///
/// As for [`wait`].
unsafe fn owed_wait(epfd: c_int, set: &EpSet, out: *mut epoll_event, max: c_int) -> Option<c_int> {
    let mut g = set.hold()?;
    g.owed.retain(|o| {
        table::get(o.fd)
            .filter(|e| e.id() == o.id)
            .and_then(|e| e.accel())
            .is_some_and(|a| a.ring_readable() == Some(true))
    });
    if g.owed.is_empty() {
        set.owes.store(false, Ordering::Release);
        if let Some(n) = g.nudge.take() {
            let _ = kctl(epfd, EPOLL_CTL_DEL, n.as_raw_fd(), 0, 0);
        }
        return None;
    }
    // SAFETY: the program's buffer of `max` events; no block, no mask.
    let k = unsafe { real::epoll_pwait(epfd, out, max, 0, std::ptr::null()) };
    let mut n = 0;
    for i in 0..k.max(0) as usize {
        // SAFETY: `i < k <= max` events written; `n <= i`.
        let ev = unsafe { get(out, i) };
        if ev.u64 != NUDGE {
            // SAFETY: as above.
            unsafe { put(out, n, ev) };
            n += 1;
        }
    }
    let max = max as usize;
    let kernel = n;
    let mut i = 0;
    while i < g.owed.len() && n < max {
        let o = &g.owed[i];
        // SAFETY: `j < kernel <= n`, written above.
        let told = (0..kernel).any(|j| unsafe { get(out, j) }.u64 == o.data);
        if !told {
            // The kernel did not report it (a new doorbell would have).
            // SAFETY: `n < max`.
            unsafe { put(out, n, event(o.events & IN, o.data)) };
            n += 1;
        }
        if o.events & ONESHOT != 0 {
            g.owed.swap_remove(i);
        } else {
            i += 1;
        }
    }
    Some(n as c_int)
}

/// The program's `epoll_ctl` (fast mode).
///
/// # Safety
///
/// As for libc's `epoll_ctl`.
pub(crate) unsafe fn ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int {
    if op == EPOLL_CTL_ADD {
        nested(fd);
    }
    let m = member(fd);
    let record = table::get(epfd).and_then(|e| e.epset());
    // A set only the kernel answers for.
    let kernel = |epfd: c_int, ev: *mut epoll_event| {
        if m.is_some() && (op == EPOLL_CTL_ADD || op == EPOLL_CTL_MOD) {
            crate::kernel_watch(fd);
        }
        // SAFETY: the program's arguments.
        unsafe { real::epoll_ctl(epfd, op, fd, ev) }
    };
    if let Some(set) = record {
        if set.is_fallback() {
            return kernel(epfd, ev);
        }
        if !set.active.load(Ordering::Acquire) {
            if m.is_none() {
                // Not counted: see `activate`.
                // SAFETY: the program's arguments.
                return unsafe { real::epoll_ctl(epfd, op, fd, ev) };
            }
            activate(epfd, set);
        }
    }
    let set = match set_of(epfd) {
        Some(s) => s,
        // A set made before this library (or by a raw call) that gets a
        // member: a record now.
        None if m.is_some() && op == EPOLL_CTL_ADD && table::get(epfd).is_none() && epfd != fd => {
            match adopt(epfd) {
                Some(s) => s,
                None => return kernel(epfd, ev),
            }
        }
        None => return kernel(epfd, ev),
    };
    let Some(mut g) = set.hold() else {
        // SAFETY: the program's arguments.
        return unsafe { real::epoll_ctl(epfd, op, fd, ev) };
    };
    // A record of an fd closed behind our back is stale.
    if let Some(i) = g.find(fd) {
        if entry_of(&g.regs[i]).is_none() {
            g.remove(i);
        }
    }
    let fail = |errno: i32| {
        interpose::set_errno(errno);
        -1
    };
    let prog = if ev.is_null() {
        None
    } else {
        // SAFETY: the program's event.
        Some(unsafe { std::ptr::read_unaligned(ev) })
    };
    let ghost = g.find(fd).filter(|&i| g.regs[i].ghost);
    match (op, g.find(fd), m) {
        (EPOLL_CTL_ADD, Some(i), Some(e)) if ghost.is_some() => {
            let Some(p) = prog else {
                return fail(EFAULT);
            };
            let r = &mut g.regs[i];
            r.ghost = false;
            r.renew(&p);
            if let Some(a) = e.accel() {
                if !r.lazy {
                    a.set_lazy(true);
                    r.lazy = true;
                }
            }
            let want = desired(r, e);
            apply(epfd, r, want);
            0
        }
        (EPOLL_CTL_MOD | EPOLL_CTL_DEL, Some(_), _) if ghost.is_some() => fail(ENOENT),
        (EPOLL_CTL_ADD, Some(_), _) => fail(EEXIST),
        (EPOLL_CTL_ADD, None, Some(e)) => {
            let Some(p) = prog else {
                // SAFETY: the program's arguments (the kernel says EFAULT).
                return unsafe { real::epoll_ctl(epfd, op, fd, ev) };
            };
            let mut r = Reg {
                fd,
                id: e.id(),
                events: p.events,
                data: p.u64,
                kmask: None,
                disabled: false,
                ghost: false,
                in_mark: None,
                out_mark: None,
                eof: false,
                hup: false,
                err: false,
                said_eof: false,
                said_hup: false,
                out_wait: false,
                lazy: false,
                round: 0,
                slot: 0,
            };
            look_for_uring();
            let want = desired(&r, e).unwrap_or(0);
            if let Err(errno) = kctl(epfd, EPOLL_CTL_ADD, fd, want, TAG | fd as u32 as u64) {
                return fail(errno);
            }
            r.kmask = Some(want);
            if let Some(a) = e.accel() {
                a.set_lazy(true);
                r.lazy = true;
            }
            let i = g.regs.len();
            g.regs.push(r);
            g.index.insert(fd, i);
            0
        }
        (EPOLL_CTL_MOD, Some(i), _) => {
            let Some(p) = prog else {
                return fail(EFAULT);
            };
            if p.events & EPOLLEXCLUSIVE as u32 != 0 {
                return fail(EINVAL);
            }
            let r = &mut g.regs[i];
            r.renew(&p);
            if let Some(e) = entry_of(r) {
                let want = desired(r, e);
                apply(epfd, r, want);
            }
            0
        }
        (EPOLL_CTL_DEL, Some(i), Some(_)) => {
            // Kept in the kernel, out of the program's set.
            let r = &mut g.regs[i];
            release_lazy(r);
            r.lazy = false;
            r.ghost = true;
            0
        }
        (EPOLL_CTL_DEL, Some(i), None) => {
            let r = g.remove(i);
            release_lazy(&r);
            if r.kmask.is_some() {
                if let Err(errno) = kctl(epfd, EPOLL_CTL_DEL, fd, 0, 0) {
                    if errno != ENOENT {
                        return fail(errno);
                    }
                }
            }
            0
        }
        _ => {
            // SAFETY: the program's arguments.
            let r = unsafe { real::epoll_ctl(epfd, op, fd, ev) };
            count_other(set, op, r);
            r
        }
    }
}

/// A record for an epoll set this library did not see made (its other
/// registrations are not known).
fn adopt(epfd: c_int) -> Option<&'static EpSet> {
    // Only an epoll fd takes part (the kernel names its files so).
    let link = std::fs::read_link(format!("/proc/self/fd/{epfd}")).ok()?;
    if link.as_os_str() != "anon_inode:[eventpoll]" {
        return None;
    }
    let e = Entry::epoll();
    if let Some(set) = e.epset() {
        set.others.store(usize::MAX / 2, Ordering::Relaxed);
        set.active.store(true, Ordering::Release);
    }
    table::install(epfd, e);
    set_of(epfd)
}

/// How long a wait may block.
#[derive(Clone, Copy)]
pub(crate) enum Timeout {
    /// `epoll_wait`/`epoll_pwait` milliseconds (negative: forever).
    Ms(c_int),
    /// `epoll_pwait2`'s timespec (null: forever).
    Ts(*const timespec),
}

/// The real blocking (or polling, `left` zero) call.
///
/// # Safety
///
/// `out` valid for `max` events; `mask` null or a signal set.
unsafe fn kwait(
    epfd: c_int,
    out: *mut epoll_event,
    max: c_int,
    kind: Timeout,
    left: Option<Duration>,
    mask: *const sigset_t,
) -> c_int {
    match kind {
        Timeout::Ms(_) => {
            let ms = left.map_or(-1, |d| {
                // Rounded up: never wake before the program's deadline.
                let ms = d.as_nanos().div_ceil(1_000_000);
                ms.min(c_int::MAX as u128) as c_int
            });
            // SAFETY: the caller's contract.
            unsafe { real::epoll_pwait(epfd, out, max, ms, mask) }
        }
        Timeout::Ts(_) => {
            let ts = left.map(|d| timespec {
                tv_sec: d.as_secs() as _,
                tv_nsec: d.subsec_nanos() as _,
            });
            let tp = ts
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const timespec);
            // SAFETY: the caller's contract; `tp` null or `ts`.
            unsafe { real::epoll_pwait2(epfd, out, max, tp, mask) }
        }
    }
}

/// The program's `epoll_wait`/`epoll_pwait`/`epoll_pwait2` on a set, or
/// `None` when the set is not one this library answers for.
///
/// # Safety
///
/// As for libc's `epoll_pwait2`: `out` valid for `max` events, `mask`
/// null or a signal set, a `Ts` timeout null or a timespec.
pub(crate) unsafe fn wait(
    epfd: c_int,
    out: *mut epoll_event,
    max: c_int,
    timeout: Timeout,
    mask: *const sigset_t,
) -> Option<c_int> {
    if max <= 0 || out.is_null() {
        return None;
    }
    let Some(set) = set_of(epfd) else {
        let fell = table::get(epfd)
            .and_then(|e| e.epset())
            .filter(|s| s.is_fallback() && s.owes.load(Ordering::Acquire))?;
        // SAFETY: the caller's contract.
        return unsafe { owed_wait(epfd, fell, out, max) };
    };
    let deadline = match timeout {
        Timeout::Ms(ms) if ms < 0 => None,
        Timeout::Ms(ms) => Some(Duration::from_millis(ms as u64)),
        Timeout::Ts(t) if t.is_null() => None,
        // SAFETY: the program's timespec.
        Timeout::Ts(t) => unsafe {
            if (*t).tv_sec < 0 || !(0..1_000_000_000).contains(&(*t).tv_nsec) {
                interpose::set_errno(EINVAL);
                return Some(-1);
            }
            Some(Duration::new((*t).tv_sec as u64, (*t).tv_nsec as u32))
        },
    }
    .map(|d| Instant::now() + d);
    let left = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let maxu = max as usize;
    loop {
        {
            let mut g = set.hold()?;
            g.round = g.round.wrapping_add(1);
            g.refresh(epfd);
            let zero = left().is_some_and(|d| d.is_zero());
            // SAFETY: the program's buffer of `max` events.
            let mut n = unsafe { g.scan(epfd, out, 0, maxu) };
            // The kernel too where it may know something the rings don't
            // (other fds, pending clients, end-of-file and hang-up; its bits
            // for a member reported above join that event). A wait that
            // will block lets the blocking call bring them instead.
            if n < maxu && (zero || (n > 0 && g.kernel_too(set.others.load(Ordering::Relaxed)))) {
                // SAFETY: the rest of the program's buffer; no mask (a wait
                // that does not block lets no signal in).
                let k = unsafe {
                    kwait(
                        epfd,
                        out.add(n),
                        (maxu - n) as c_int,
                        timeout,
                        Some(Duration::ZERO),
                        std::ptr::null(),
                    )
                };
                if k > 0 {
                    // SAFETY: `n + k <= max` events written.
                    n = unsafe { g.translate(epfd, out, n, k as usize) };
                }
            }
            if n > 0 || zero {
                return Some(n as c_int);
            }
            let spin = SPIN_US.load(Ordering::Relaxed);
            if spin > 0 {
                // Opt-in: spin only while a peer runs on another CPU, where
                // its next bytes can arrive while we look.
                let cpu = interpose::current_cpu();
                g.advertise(Some(cpu));
                if g.peer_elsewhere(cpu) {
                    let until = Instant::now() + Duration::from_micros(spin as u64);
                    let mut found = false;
                    while Instant::now() < until && !left().is_some_and(|d| d.is_zero()) {
                        if g.ready_quick() {
                            found = true;
                            break;
                        }
                        std::hint::spin_loop();
                    }
                    if found {
                        continue;
                    }
                }
            }
            if g.prep(epfd) {
                continue;
            }
            if spin > 0 {
                g.advertise(None);
            }
            set.sleepers.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the program's buffer, mask and the time left.
        let k = unsafe { kwait(epfd, out, max, timeout, left(), mask) };
        let errno = interpose::errno();
        let Some(mut g) = set.hold() else {
            set.sleepers.fetch_sub(1, Ordering::Relaxed);
            return None;
        };
        if set.sleepers.fetch_sub(1, Ordering::Relaxed) == 1 {
            g.disarm();
        }
        if k < 0 {
            drop(g);
            interpose::set_errno(errno);
            return Some(k);
        }
        // SAFETY: `k <= max` events written.
        let n = unsafe { g.translate(epfd, out, 0, k as usize) };
        drop(g);
        interpose::set_errno(errno);
        if n > 0 {
            return Some(n as c_int);
        }
        if left().is_some_and(|d| d.is_zero()) {
            return Some(0);
        }
        // Woken for nothing the program asked for: look again.
    }
}
