//! The cache's keyspace: values with optional expiry, an LRU order for
//! `--max-memory`, a memory account, and a scan order that cursors can
//! resume from.
//!
//! The scan order is every key sorted by a keyed 64-bit hash (fixed for
//! the life of the process), and a cursor is the hash to resume at. A key
//! keeps its place however many keys come and go around it, so a full
//! iteration returns every key that was there from its start to its end
//! exactly once, as Redis promises, and a walk never holds anything that
//! inserts or evictions would invalidate.

use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::hash::BuildHasher;
use std::ops::Bound;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

/// A key, shared by the map, the scan order, the LRU order and the expiry
/// heap (one allocation per key).
pub type Key = Rc<[u8]>;

/// Bytes counted per key besides its name and value.
const ENTRY_OVERHEAD: usize = 64;

/// One value.
pub struct Entry {
    pub value: Vec<u8>,
    pub expires: Option<Instant>,
    /// Its position in the LRU order.
    tick: u64,
    /// Changes with every write of the key (for WATCH).
    stamp: u64,
}

/// The keyspace and its accounts.
pub struct Store {
    map: HashMap<Key, Entry>,
    order: BTreeSet<(u64, Key)>,
    hasher: RandomState,
    lru: BTreeMap<u64, Key>,
    expiries: BinaryHeap<Reverse<(Instant, Key)>>,
    tick: u64,
    /// The last write's number.
    writes: u64,
    used: usize,
    pub max_memory: Option<usize>,
    pub data_dir: Option<PathBuf>,
    pub max_bulk: usize,
    pub evicted: u64,
    pub expired: u64,
}

fn cost(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

impl Store {
    pub fn new(max_memory: Option<usize>, data_dir: Option<PathBuf>, max_bulk: usize) -> Self {
        Store {
            map: HashMap::new(),
            order: BTreeSet::new(),
            hasher: RandomState::new(),
            lru: BTreeMap::new(),
            expiries: BinaryHeap::new(),
            tick: 0,
            writes: 0,
            used: 0,
            max_memory,
            data_dir,
            max_bulk,
            evicted: 0,
            expired: 0,
        }
    }

    /// Keys held, expired ones not yet removed included (as Redis's DBSIZE).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// What WATCH remembers of a key: the number of its last write, or
    /// `None` when it holds nothing. Any write, deletion, expiry or
    /// eviction changes it.
    pub fn stamp(&mut self, key: &[u8], now: Instant) -> Option<u64> {
        self.entry(key, now).map(|e| e.stamp)
    }

    /// Bytes accounted for.
    pub fn used(&self) -> usize {
        self.used
    }

    fn scan_hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn touch(&mut self, key: &[u8]) {
        // The LRU order only matters when something may be evicted.
        if self.max_memory.is_none() {
            return;
        }
        self.tick += 1;
        let t = self.tick;
        if let Some(e) = self.map.get_mut(key) {
            let old = std::mem::replace(&mut e.tick, t);
            if let Some(k) = self.lru.remove(&old) {
                self.lru.insert(t, k);
            }
        }
    }

    /// Removes `key` (expired or not).
    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let (k, e) = self.map.remove_entry(key)?;
        self.lru.remove(&e.tick);
        self.order.remove(&(self.scan_hash(&k), k));
        self.used -= cost(key, &e.value);
        Some(e)
    }

    /// Whether `key` holds a value now, removing it if it expired.
    pub fn live(&mut self, key: &[u8], now: Instant) -> bool {
        match self.map.get(key).map(|e| e.expires) {
            Some(Some(t)) if t <= now => {
                self.remove(key);
                self.expired += 1;
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// The live entry of `key` (no read-through, no LRU touch).
    pub fn entry(&mut self, key: &[u8], now: Instant) -> Option<&Entry> {
        if self.live(key, now) {
            self.map.get(key)
        } else {
            None
        }
    }

    /// The value of `key`: a live one (now the most recently used), or the
    /// file of that name in `--data-dir`, cached.
    pub fn get(&mut self, key: &[u8], now: Instant) -> Option<&[u8]> {
        if self.live(key, now) {
            self.touch(key);
        } else {
            let v = self.read_through(key)?;
            let _ = self.set(key, v, None);
        }
        self.map.get(key).map(|e| e.value.as_slice())
    }

    /// A missing key's value from `--data-dir`, if the key is a plain file
    /// name there.
    fn read_through(&self, key: &[u8]) -> Option<Vec<u8>> {
        let dir = self.data_dir.as_ref()?;
        let name = std::str::from_utf8(key).ok()?;
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains(['/', '\0', '\\'])
            || name.len() > 255
        {
            return None;
        }
        let path = dir.join(name);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > self.max_bulk as u64 {
            return None;
        }
        std::fs::read(path).ok()
    }

    /// Stores `value` under `key` with the given expiry, replacing what was
    /// there (returned, expired or not), then evicts down to `--max-memory`.
    pub fn set(&mut self, key: &[u8], value: Vec<u8>, expires: Option<Instant>) -> Option<Vec<u8>> {
        self.tick += 1;
        self.writes += 1;
        let (tick, stamp) = (self.tick, self.writes);
        let track = self.max_memory.is_some();
        let old = if let Some(e) = self.map.get_mut(key) {
            // In place: the key, its scan position and its allocation stay.
            self.used = self.used - e.value.len() + value.len();
            e.expires = expires;
            e.stamp = stamp;
            if track {
                let before = std::mem::replace(&mut e.tick, tick);
                if let Some(k) = self.lru.remove(&before) {
                    self.lru.insert(tick, k);
                }
            }
            let old = std::mem::replace(&mut e.value, value);
            if let Some(t) = expires {
                if let Some((k, _)) = self.map.get_key_value(key) {
                    let k = Rc::clone(k);
                    self.push_expiry(t, k);
                }
            }
            Some(old)
        } else {
            let k: Key = Rc::from(key);
            self.order.insert((self.scan_hash(key), Rc::clone(&k)));
            self.used += cost(key, &value);
            if track {
                self.lru.insert(tick, Rc::clone(&k));
            }
            if let Some(t) = expires {
                self.push_expiry(t, Rc::clone(&k));
            }
            self.map.insert(
                k,
                Entry {
                    value,
                    expires,
                    tick,
                    stamp,
                },
            );
            None
        };
        self.evict();
        old
    }

    /// Changes a live value in place (APPEND, SETRANGE, INCR...), keeping
    /// its expiry; `f` returns what to reply. `None` when `key` is missing.
    pub fn update<R>(
        &mut self,
        key: &[u8],
        now: Instant,
        f: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> Option<R> {
        if !self.live(key, now) {
            return None;
        }
        self.touch(key);
        self.writes += 1;
        let e = self.map.get_mut(key)?;
        e.stamp = self.writes;
        let before = e.value.len();
        let r = f(&mut e.value);
        self.used = self.used - before + e.value.len();
        self.evict();
        Some(r)
    }

    /// Sets or clears the expiry of a live key; `false` when missing.
    pub fn set_expiry(&mut self, key: &[u8], expires: Option<Instant>, now: Instant) -> bool {
        if !self.live(key, now) {
            return false;
        }
        let Some(k) = self.map.get_key_value(key).map(|(k, _)| Rc::clone(k)) else {
            return false;
        };
        self.writes += 1;
        if let Some(e) = self.map.get_mut(key) {
            e.expires = expires;
            e.stamp = self.writes;
        }
        if let Some(t) = expires {
            self.push_expiry(t, k);
        }
        true
    }

    fn push_expiry(&mut self, t: Instant, k: Key) {
        self.expiries.push(Reverse((t, k)));
        // Entries whose key changed expiry or left stay until due; keep
        // them from outgrowing the keyspace.
        if self.expiries.len() > 2 * self.map.len() + 1024 {
            let map = &self.map;
            self.expiries
                .retain(|Reverse((t, k))| map.get(k).and_then(|e| e.expires) == Some(*t));
        }
    }

    /// Moves the value (and expiry) of `from` to `to`, replacing `to`.
    pub fn rename(&mut self, from: &[u8], to: &[u8]) -> bool {
        let Some(e) = self.remove(from) else {
            return false;
        };
        let _ = self.set(to, e.value, e.expires);
        true
    }

    /// Drops every key.
    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
        self.lru.clear();
        self.expiries.clear();
        self.used = 0;
    }

    /// Drops least recently used keys until under `--max-memory`.
    fn evict(&mut self) {
        let Some(max) = self.max_memory else { return };
        while self.used > max {
            let Some((_, key)) = self.lru.pop_first() else {
                break;
            };
            if let Some((k, e)) = self.map.remove_entry(&key) {
                self.order.remove(&(self.scan_hash(&k), k));
                self.used -= cost(&key, &e.value);
                self.evicted += 1;
            }
        }
    }

    /// Removes keys whose time has come (the timer's half of expiry).
    pub fn expire_due(&mut self, now: Instant) {
        while let Some(Reverse((t, _))) = self.expiries.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((t, key))) = self.expiries.pop() else {
                break;
            };
            if self.map.get(&key).and_then(|e| e.expires) == Some(t) {
                self.remove(&key);
                self.expired += 1;
            }
        }
    }

    /// Visits at least `count` keys in scan order from `cursor` (more only
    /// to finish keys that share one hash), calling `f` with each live one,
    /// and returns the cursor to go on from: 0 when the walk is complete.
    pub fn scan(
        &mut self,
        cursor: u64,
        count: usize,
        now: Instant,
        mut f: impl FnMut(&Key),
    ) -> u64 {
        let start: Key = Rc::from(&[][..]);
        let mut batch: Vec<Key> = Vec::new();
        let mut last = None;
        let mut next = 0;
        for (h, k) in self
            .order
            .range((Bound::Included((cursor, start)), Bound::Unbounded))
        {
            if batch.len() >= count.max(1) && last != Some(*h) {
                next = *h;
                break;
            }
            last = Some(*h);
            batch.push(Rc::clone(k));
        }
        for k in &batch {
            if self.live(k, now) {
                f(k);
            }
        }
        next
    }
}
