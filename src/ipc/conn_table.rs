//! [`ConnTable`]: int handles for connections, negative for accelerated
//! ones (as the TSSX notes do), for code that must hand out ints.

use std::collections::HashMap;

/// Connections by int handle, for code that must hand out ints (a C API, a
/// preload shim): accelerated connections get negative ids (-1, -2, ...),
/// plain ones positive ids (1, 2, ...), so the two never collide with each
/// other (nor, for negative ids, with fds).
#[derive(Debug)]
pub struct ConnTable<T> {
    next_accel: i32,
    next_plain: i32,
    conns: HashMap<i32, T>,
}

impl<T> Default for ConnTable<T> {
    fn default() -> Self {
        Self {
            next_accel: -1,
            next_plain: 1,
            conns: HashMap::new(),
        }
    }
}

impl<T> ConnTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores an accelerated connection; returns its (negative) id.
    pub fn insert_accelerated(&mut self, conn: T) -> i32 {
        let id = self.next_accel;
        self.next_accel = if id == i32::MIN { -1 } else { id - 1 };
        self.conns.insert(id, conn);
        id
    }

    /// Stores a plain connection; returns its (positive) id.
    pub fn insert_plain(&mut self, conn: T) -> i32 {
        let id = self.next_plain;
        self.next_plain = if id == i32::MAX { 1 } else { id + 1 };
        self.conns.insert(id, conn);
        id
    }

    /// Whether `id` names an accelerated connection.
    pub fn is_accelerated(id: i32) -> bool {
        id < 0
    }

    /// The connection with this id.
    pub fn get(&self, id: i32) -> Option<&T> {
        self.conns.get(&id)
    }

    /// The connection with this id, mutably.
    pub fn get_mut(&mut self, id: i32) -> Option<&mut T> {
        self.conns.get_mut(&id)
    }

    /// Removes and returns the connection.
    pub fn remove(&mut self, id: i32) -> Option<T> {
        self.conns.remove(&id)
    }

    /// How many connections are stored.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}
