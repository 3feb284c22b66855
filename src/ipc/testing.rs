//! A ring alone in an anonymous mapping, with both of its ends in this
//! process, for fuzzing and tests: write, read, and corrupt the shared
//! header words the way a hostile peer could.

use std::io;
use std::sync::atomic::Ordering;

use super::ring::{ConsumerState, ProducerState, RingRef};
use super::segment::{Header, HEADER_SIZE};
use crate::sys::shm::{Mapping, SharedMemory};

/// The shared header words a hostile peer may overwrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// The producer's published index.
    Tail,
    /// The consumer's published index.
    Head,
    /// The ring size word (read only at setup, so harmless afterwards).
    RingSize,
    /// The data waiter word.
    DataWaiter,
}

/// One direction's ring with its producer and consumer.
#[derive(Debug)]
pub struct LocalRing {
    map: Mapping,
    size: u64,
    p: ProducerState,
    c: ConsumerState,
}

impl LocalRing {
    /// A ring of `size` bytes (a power of two, at least 16).
    pub fn new(size: usize) -> io::Result<Self> {
        if !size.is_power_of_two() || size < 16 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring size must be a power of two >= 16",
            ));
        }
        let map = Mapping::anonymous(HEADER_SIZE + size)?;
        Ok(Self {
            map,
            size: size as u64,
            p: ProducerState::default(),
            c: ConsumerState::default(),
        })
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping holds HEADER_SIZE + size bytes, page aligned,
        // alive as long as `self`; all header fields are atomics.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    fn ring(&self) -> RingRef<'_> {
        let h = self.header();
        RingRef {
            // SAFETY: the ring starts at HEADER_SIZE, inside the mapping.
            data: unsafe { self.map.as_ptr().add(HEADER_SIZE) },
            size: self.size,
            tail: &h.tail[0],
            head: &h.head[0],
        }
    }

    /// Writes as much of `buf` as fits; `InvalidData` if the consumer's
    /// index was corrupted. Odd lengths are written with the streaming
    /// (non-temporal) copy, so both copies are exercised.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut p = self.p;
        let r = self.ring().write(&mut p, buf, buf.len() % 2 == 1);
        self.p = p;
        r.map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "corrupt head"))
    }

    /// Reads up to `buf.len()` bytes; `InvalidData` if the producer's index
    /// was corrupted.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut c = self.c;
        let r = self.ring().read(&mut c, buf);
        self.c = c;
        r.map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "corrupt tail"))
    }

    /// Overwrites a shared header word, as a hostile peer could.
    pub fn corrupt(&mut self, field: Field, value: u64) {
        let h = self.header();
        match field {
            Field::Tail => h.tail[0].store(value, Ordering::Relaxed),
            Field::Head => h.head[0].store(value, Ordering::Relaxed),
            Field::RingSize => h.ring_size.store(value, Ordering::Relaxed),
            Field::DataWaiter => h.data_waiter[0].store(value as u32, Ordering::Relaxed),
        }
    }

    /// The ring's size.
    pub fn size(&self) -> usize {
        self.size as usize
    }
}
