//! The shared segment: a page of header, then one byte ring per direction;
//! the two [`Side`]s of a connection; and making the segment ([`Mem`]).
//!
//! Every field of the header is an atomic, because the other process may
//! write any of them at any time; values that should be constant (magic,
//! version, ring size) are read once when the segment is opened, checked,
//! and used from local copies afterwards. Words written by different sides
//! live on different 64-byte cache lines.

use std::io;
use std::ops::Deref;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64};

use static_assertions::{const_assert, const_assert_eq};

use crate::sys::shm::{self, Access, Mapping, SharedMemory, SysvMapping};

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

/// One value alone on a 64-byte cache line, used through `Deref`.
#[repr(C, align(64))]
pub(crate) struct CacheLine<T>(T);

impl<T> Deref for CacheLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// One end of a connection. Its index picks its words in the header; the
/// ring a side writes into (its direction) has the same index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Side {
    /// The side that connected (the client): index 0.
    Connector = 0,
    /// The side that accepted (the server): index 1.
    Acceptor = 1,
}

impl Side {
    /// The index of this side's words, and of the ring it writes.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The other side.
    pub(crate) fn peer(self) -> Side {
        match self {
            Side::Connector => Side::Acceptor,
            Side::Acceptor => Side::Connector,
        }
    }
}

/// What a process does with one direction, for [`Header::owners`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    /// Reads the peer's direction.
    Reader,
    /// Writes its own side's direction.
    Writer,
}

/// The header at the start of the segment. Per-side words are indexed by
/// [`Side::index`]; direction `d` carries bytes from side `d` to the other.
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
    pub(crate) refs: CacheLine<[AtomicU32; 2]>,
    /// Per side: [`CLOSED`] once its last holder closed it, [`WRITES_SHUT`]
    /// and [`READS_SHUT`] after a `shutdown` of that half.
    pub(crate) closed: CacheLine<[AtomicU32; 2]>,
    /// Per side: its CPU + 1 (0: unknown), with [`ASLEEP`] set while it
    /// sleeps; a hint only, never trusted.
    pub(crate) running: [CacheLine<AtomicU32>; 2],
    /// Per direction: bytes produced so far (written by the producer).
    pub(crate) tail: [CacheLine<AtomicU64>; 2],
    /// Per direction: bytes consumed so far (written by the consumer).
    pub(crate) head: [CacheLine<AtomicU64>; 2],
    /// Per direction: the consumer waits for data (1: on the futex, 2: on
    /// the socket).
    pub(crate) data_waiter: [CacheLine<AtomicU32>; 2],
    /// Per direction: the producer waits for space (as `data_waiter`).
    pub(crate) space_waiter: [CacheLine<AtomicU32>; 2],
    /// The pids that claimed reading and writing: `[read d0, read d1,
    /// write d0, write d1]` (0: unclaimed); see [`Header::owner`].
    pub(crate) owners: CacheLine<[AtomicU32; 4]>,
}

impl Header {
    /// The word that holds the pid of `side`'s process in `role`: a side
    /// writes its own direction and reads its peer's.
    pub(crate) fn owner(&self, side: Side, role: Role) -> &AtomicU32 {
        match role {
            Role::Reader => &self.owners[side.peer().index()],
            Role::Writer => &self.owners[2 + side.index()],
        }
    }
}

const_assert_eq!(std::mem::size_of::<CacheLine<AtomicU32>>(), 64);
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

/// How the segment is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SegmentKind {
    /// An anonymous memfd, sealed against resizing: it has no name, so it
    /// can't leak, and the peer can't shrink it under us (Linux, FreeBSD).
    #[default]
    Memfd,
    /// A POSIX `shm_open` object, mode 0600, unlinked as soon as it is open.
    Posix,
    /// A SysV segment, `IPC_PRIVATE`, mode 0600, removed (`IPC_RMID`) as soon
    /// as both sides attached; it lives until the last detach.
    SysV,
}

/// A segment's mapping, of either family.
pub(crate) enum Mem {
    Map(Mapping),
    Sysv(SysvMapping),
}

impl Mem {
    pub(crate) fn memory(&self) -> &dyn SharedMemory {
        match self {
            Mem::Map(m) => m,
            Mem::Sysv(m) => m,
        }
    }

    /// The first byte (read on every stream call: no dynamic dispatch).
    pub(crate) fn base(&self) -> *mut u8 {
        match self {
            Mem::Map(m) => m.as_ptr(),
            Mem::Sysv(m) => m.as_ptr(),
        }
    }
}

/// A new segment: its mapping, the fd to send (if any), and the SysV id
/// (or -1).
pub(crate) struct NewSegment {
    pub(crate) mem: Mem,
    pub(crate) fd: Option<OwnedFd>,
    pub(crate) sysv_id: i32,
}

/// Makes a segment of `len` bytes of `kind` (a memfd request becomes a
/// POSIX segment where memfds don't exist).
pub(crate) fn create(kind: SegmentKind, len: usize) -> io::Result<NewSegment> {
    match kind {
        SegmentKind::Memfd if shm::HAVE_MEMFD => {
            let fd = shm::sealed_memfd("procwire-shm", len as u64)?;
            let m = Mapping::map(fd.as_fd(), len, Access::ReadWrite)?;
            Ok(NewSegment {
                mem: Mem::Map(m),
                fd: Some(fd),
                sysv_id: -1,
            })
        }
        SegmentKind::Memfd | SegmentKind::Posix => {
            let name = shm::unique_shm_name("procwire-shm");
            let fd = shm::shm_open(
                &name,
                shm::ShmOpenFlags::CREATE | shm::ShmOpenFlags::EXCLUSIVE,
                0o600,
            )?;
            // No name outlives this call: the fd and mappings keep it.
            let unlinked = shm::shm_unlink(&name);
            shm::ftruncate(fd.as_fd(), len as u64)?;
            unlinked?;
            let m = Mapping::map(fd.as_fd(), len, Access::ReadWrite)?;
            Ok(NewSegment {
                mem: Mem::Map(m),
                fd: Some(fd),
                sysv_id: -1,
            })
        }
        SegmentKind::SysV => {
            let id = shm::shmget(shm::SysvKey::Private, len, shm::SysvOpen::Create, 0o600)?;
            let m = match SysvMapping::attach(id, Access::ReadWrite) {
                Ok(m) => m,
                Err(e) => {
                    let _ = shm::shm_remove(id);
                    return Err(e.into());
                }
            };
            // Where the peer may attach a segment already marked for
            // removal, remove it now: nothing can leak even if we die here.
            // Elsewhere the accepting side removes it once attached.
            if shm::SYSV_ATTACH_AFTER_REMOVE {
                shm::shm_remove(id)?;
            }
            Ok(NewSegment {
                mem: Mem::Sysv(m),
                fd: None,
                sysv_id: id,
            })
        }
    }
}
