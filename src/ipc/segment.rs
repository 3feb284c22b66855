//! The shared segment: a page of header, then one byte ring per direction.
//!
//! Every field of the header is an atomic, because the other process may
//! write any of them at any time; values that should be constant (magic,
//! version, ring size) are read once when the segment is opened, checked,
//! and used from local copies afterwards. Words written by different sides
//! live on different 64-byte cache lines.

use std::sync::atomic::{AtomicU32, AtomicU64};

use static_assertions::{const_assert, const_assert_eq};

/// "PWSHM001", little-endian.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"PWSHM001");
/// Layout version.
pub(crate) const VERSION: u64 = 2;
/// The bit of a `running` word that says the side sleeps; the rest is the
/// CPU it last ran on, plus one.
pub(crate) const ASLEEP: u32 = 1 << 31;
/// Bits of a `closed` word: the side is closed; it will write no more
/// (its peer reads end-of-file once the ring is empty); it will read no
/// more (its peer's writes fail).
pub(crate) const CLOSED: u32 = 1;
/// See [`CLOSED`].
pub(crate) const WRITES_SHUT: u32 = 2;
/// See [`CLOSED`].
pub(crate) const READS_SHUT: u32 = 4;
/// Bytes before the first ring: one page.
pub(crate) const HEADER_SIZE: usize = 4096;
/// Smallest and largest ring per direction.
pub(crate) const MIN_RING: usize = 4096;
pub(crate) const MAX_RING: usize = 1 << 30;

/// One value alone on a 64-byte cache line.
#[repr(C, align(64))]
pub(crate) struct Line<T> {
    pub(crate) v: T,
}

/// The header at the start of the segment. Side 0 is the connecting side
/// (client), side 1 the accepting side (server); direction `d` carries bytes
/// from side `d` to side `1 - d`.
#[repr(C)]
pub(crate) struct Header {
    /// [`MAGIC`].
    pub(crate) magic: AtomicU64,
    /// [`VERSION`].
    pub(crate) version: AtomicU64,
    /// Bytes per ring (a power of two).
    pub(crate) ring_size: AtomicU64,
    /// Padding to the end of the line.
    pub(crate) _reserved: [AtomicU64; 5],
    /// How many processes hold each side open.
    pub(crate) refs: Line<[AtomicU32; 2]>,
    /// Per side: [`CLOSED`] once its last holder closed it, [`WRITES_SHUT`]
    /// and [`READS_SHUT`] after a `shutdown` of that half.
    pub(crate) closed: Line<[AtomicU32; 2]>,
    /// Per side: its CPU + 1 (0: unknown), with [`ASLEEP`] set while it
    /// sleeps; a hint only, never trusted.
    pub(crate) running: [Line<AtomicU32>; 2],
    /// Per direction: bytes produced so far (written by the producer).
    pub(crate) tail: [Line<AtomicU64>; 2],
    /// Per direction: bytes consumed so far (written by the consumer).
    pub(crate) head: [Line<AtomicU64>; 2],
    /// Per direction: the consumer waits for data (1: on the futex, 2: on
    /// the socket).
    pub(crate) data_waiter: [Line<AtomicU32>; 2],
    /// Per direction: the producer waits for space (as `data_waiter`).
    pub(crate) space_waiter: [Line<AtomicU32>; 2],
    /// The pids that claimed reading and writing: `[read d0, read d1,
    /// write d0, write d1]` (0: unclaimed).
    pub(crate) owners: Line<[AtomicU32; 4]>,
}

const_assert_eq!(std::mem::size_of::<Line<AtomicU32>>(), 64);
const_assert_eq!(std::mem::align_of::<Header>(), 64);
const_assert_eq!(std::mem::offset_of!(Header, magic), 0);
const_assert_eq!(std::mem::offset_of!(Header, version), 8);
const_assert_eq!(std::mem::offset_of!(Header, ring_size), 16);
const_assert_eq!(std::mem::offset_of!(Header, refs), 64);
const_assert_eq!(std::mem::offset_of!(Header, closed), 128);
const_assert_eq!(std::mem::offset_of!(Header, running), 192);
const_assert_eq!(std::mem::offset_of!(Header, tail), 320);
const_assert_eq!(std::mem::offset_of!(Header, head), 448);
const_assert_eq!(std::mem::offset_of!(Header, data_waiter), 576);
const_assert_eq!(std::mem::offset_of!(Header, space_waiter), 704);
const_assert_eq!(std::mem::offset_of!(Header, owners), 832);
const_assert_eq!(std::mem::size_of::<Header>(), 896);
const_assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);
static_assertions::assert_eq_size!(AtomicU64, u64);
static_assertions::assert_eq_size!(AtomicU32, u32);

/// Waiter word values.
pub(crate) const WAIT_NONE: u32 = 0;
pub(crate) const WAIT_FUTEX: u32 = 1;
pub(crate) const WAIT_SOCKET: u32 = 2;

/// The segment length for rings of `ring` bytes.
pub(crate) fn segment_len(ring: usize) -> usize {
    HEADER_SIZE + 2 * ring
}

/// Whether `ring` is an acceptable ring size.
pub(crate) fn valid_ring(ring: u64) -> bool {
    ring.is_power_of_two() && ring >= MIN_RING as u64 && ring <= MAX_RING as u64
}
