//! Timers: a heap of deadlines over a slab of callbacks. There is no fd per
//! timer; the earliest deadline bounds the loop's wait.
//!
//! A heap entry names its timer by index and generation, so cancelling is
//! O(1) (the stale heap entry is skipped when it comes up), and a timer
//! cancelled from inside a callback of the same turn never fires again.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::Context;

/// A timer's callback.
pub(super) type TimerFn = Box<dyn FnMut(&mut Context<'_>)>;

/// Identifies a timer, for [`EventLoop::cancel`](super::EventLoop::cancel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

/// One entry of the heap: when, and which timer. Ordered by deadline, then
/// by the order timers were armed (`seq`), so equal deadlines fire in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Deadline {
    at: Instant,
    seq: u64,
    index: u32,
    generation: u32,
}

enum TimerState {
    Vacant,
    /// Waiting for its deadline.
    Armed(TimerFn),
    /// Its callback is running.
    Firing,
    /// Cancelled while its callback runs: freed when it returns.
    FiringCancelled,
}

struct TimerSlot {
    generation: u32,
    state: TimerState,
    period: Option<Duration>,
}

/// A timer that is due, taken out to be called.
pub(super) struct Due {
    id: TimerId,
    at: Instant,
    pub(super) callback: TimerFn,
}

/// All timers of a loop.
#[derive(Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<Deadline>>,
    slots: Vec<TimerSlot>,
    free: Vec<u32>,
    seq: u64,
}

impl Timers {
    fn push(&mut self, at: Instant, id: TimerId) {
        self.seq += 1;
        self.heap.push(Reverse(Deadline {
            at,
            seq: self.seq,
            index: id.index,
            generation: id.generation,
        }));
    }

    /// Arms `callback` for `at`, then every `period` if given.
    pub(super) fn add(
        &mut self,
        at: Instant,
        period: Option<Duration>,
        callback: TimerFn,
    ) -> TimerId {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(TimerSlot {
                    generation: 0,
                    state: TimerState::Vacant,
                    period: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let t = &mut self.slots[index as usize];
        t.state = TimerState::Armed(callback);
        t.period = period;
        let id = TimerId {
            index,
            generation: t.generation,
        };
        self.push(at, id);
        id
    }

    fn free_slot(&mut self, index: u32) {
        let t = &mut self.slots[index as usize];
        t.state = TimerState::Vacant;
        t.generation = t.generation.wrapping_add(1);
        self.free.push(index);
    }

    /// Cancels `id`: whether it was live, and its callback to drop (outside
    /// any borrow of the loop, since dropping may run user code).
    pub(super) fn cancel(&mut self, id: TimerId) -> (bool, Option<TimerFn>) {
        let Some(t) = self.slots.get_mut(id.index as usize) else {
            return (false, None);
        };
        if t.generation != id.generation {
            return (false, None);
        }
        match std::mem::replace(&mut t.state, TimerState::Vacant) {
            TimerState::Armed(cb) => {
                self.free_slot(id.index);
                (true, Some(cb))
            }
            TimerState::Firing => {
                t.state = TimerState::FiringCancelled;
                (true, None)
            }
            other => {
                t.state = other;
                (false, None)
            }
        }
    }

    /// Whether the heap is empty (it may still hold cancelled timers).
    pub(super) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The earliest deadline in the heap (perhaps of a cancelled timer,
    /// which only makes one wait shorter).
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(d)| d.at)
    }

    /// Takes out the next timer due at `now`, skipping cancelled ones.
    pub(super) fn take_due(&mut self, now: Instant) -> Option<Due> {
        loop {
            match self.heap.peek() {
                Some(Reverse(d)) if d.at <= now => {}
                _ => return None,
            }
            let Reverse(d) = self.heap.pop()?;
            let t = &mut self.slots[d.index as usize];
            if t.generation != d.generation {
                continue;
            }
            match std::mem::replace(&mut t.state, TimerState::Firing) {
                TimerState::Armed(callback) => {
                    return Some(Due {
                        id: TimerId {
                            index: d.index,
                            generation: d.generation,
                        },
                        at: d.at,
                        callback,
                    })
                }
                other => t.state = other,
            }
        }
    }

    /// Re-arms a periodic timer after its call (keeping its cadence and
    /// skipping missed periods), or frees it; returns the callback when it
    /// is to be dropped.
    pub(super) fn finish(&mut self, due: Due, now: Instant) -> Option<TimerFn> {
        let t = &mut self.slots[due.id.index as usize];
        match (&t.state, t.period) {
            (TimerState::Firing, Some(p)) => {
                t.state = TimerState::Armed(due.callback);
                let mut next = due.at + p;
                if next <= now {
                    next = now + p;
                }
                self.push(next, due.id);
                None
            }
            _ => {
                self.free_slot(due.id.index);
                Some(due.callback)
            }
        }
    }
}
