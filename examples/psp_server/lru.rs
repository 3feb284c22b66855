//! The server's chunk cache: a bounded LRU map of chunk id to bytes.

use std::collections::HashMap;

/// No slot.
const NIL: usize = usize::MAX;

/// One cached chunk, linked into the recency list.
struct Slot {
    id: u32,
    data: Vec<u8>,
    /// The slot used just more recently, or `NIL`.
    prev: usize,
    /// The slot used just less recently, or `NIL`.
    next: usize,
}

/// A bounded LRU map of chunk id -> bytes, in a slab with an intrusive
/// doubly linked list (most recent at the head).
pub(crate) struct Lru {
    cap: usize,
    map: HashMap<u32, usize>,
    slots: Vec<Slot>,
    head: usize,
    tail: usize,
}

impl Lru {
    /// A cache of at most `cap` chunks.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            map: HashMap::new(),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.slots[i].prev, self.slots[i].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next].prev = prev;
        }
    }

    fn push_front(&mut self, i: usize) {
        self.slots[i].prev = NIL;
        self.slots[i].next = self.head;
        if self.head != NIL {
            self.slots[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    /// The bytes of chunk `id`, now the most recently used.
    pub(crate) fn get(&mut self, id: u32) -> Option<&[u8]> {
        let i = *self.map.get(&id)?;
        self.unlink(i);
        self.push_front(i);
        Some(&self.slots[i].data)
    }

    /// Whether chunk `id` is cached (its recency stays).
    pub(crate) fn contains(&self, id: u32) -> bool {
        self.map.contains_key(&id)
    }

    /// Caches chunk `id` (the least recently used goes when full).
    pub(crate) fn put(&mut self, id: u32, data: &[u8]) {
        if let Some(&i) = self.map.get(&id) {
            self.unlink(i);
            self.push_front(i);
            return;
        }
        let i = if self.slots.len() < self.cap {
            self.slots.push(Slot {
                id,
                data: data.to_vec(),
                prev: NIL,
                next: NIL,
            });
            self.slots.len() - 1
        } else {
            let i = self.tail;
            self.unlink(i);
            self.map.remove(&self.slots[i].id);
            let slot = &mut self.slots[i];
            slot.id = id;
            slot.data.clear();
            slot.data.extend_from_slice(data);
            i
        };
        self.map.insert(id, i);
        self.push_front(i);
    }
}
