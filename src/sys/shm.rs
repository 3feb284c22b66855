//! Shared memory: POSIX named segments (`shm_open`), anonymous files
//! (`memfd_create`, with seals), SysV segments (`shmget`/`shmat`), and
//! [`Mapping`], an owned `mmap` that is unmapped on drop.
//!
//! Who may read and write is in the types: a [`Mapping`] made read-only hands
//! out no atomics and refuses writes; everything reached through
//! [`SharedMemory`] is bounds-checked, and bytes are copied in and out rather
//! than lent as slices, because another process may change them at any time.

use std::fmt;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use rustix::fs::Mode;

use super::error::{last_errno, Context, Error, Result};
use super::socket::fd_arg;

bitflags::bitflags! {
    /// How [`shm_open`] opens a POSIX segment.
    #[repr(transparent)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ShmOpenFlags: u32 {
        /// `O_CREAT`: create it if missing.
        const CREATE = 1;
        /// `O_EXCL`: with `CREATE`, fail with `EEXIST` if it exists.
        const EXCLUSIVE = 2;
        /// `O_TRUNC`: cut it to zero length.
        const TRUNCATE = 4;
        /// `O_RDONLY` instead of `O_RDWR`.
        const READ_ONLY = 8;
    }
}

/// Opens (or creates) a POSIX shared-memory object (`shm_open(3)`),
/// close-on-exec. `name` is like `/procwire-1234`; `mode` is the permission
/// bits of a new object (use `0o600`).
///
/// # Errors
///
/// `ENOENT` when it does not exist and `CREATE` was not given, `EEXIST` with
/// `CREATE | EXCLUSIVE` when it does, `EINVAL` for a malformed name.
///
/// # References
///
/// ```c
/// int shm_open(const char *name, int oflag, mode_t mode);
/// ```
///
/// - `shm_open(3)`: [Linux](https://man7.org/linux/man-pages/man3/shm_open.3.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=shm_open&sektion=3), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man3/shm_open.3.html)
pub fn shm_open(name: &str, flags: ShmOpenFlags, mode: u32) -> Result<OwnedFd> {
    use rustix::shm::OFlags;
    let mut o = if flags.contains(ShmOpenFlags::READ_ONLY) {
        OFlags::RDONLY
    } else {
        OFlags::RDWR
    };
    if flags.contains(ShmOpenFlags::CREATE) {
        o |= OFlags::CREATE;
    }
    if flags.contains(ShmOpenFlags::EXCLUSIVE) {
        o |= OFlags::EXCL;
    }
    if flags.contains(ShmOpenFlags::TRUNCATE) {
        o |= OFlags::TRUNC;
    }
    rustix::shm::open(name, o, Mode::from_raw_mode(mode as _)).ctx("shm_open", || {
        format!("{name}, {}, {mode:#o}", open_flags_c(flags))
    })
}

/// `O_RDWR|O_CREAT|...` as the C call would spell the flags.
fn open_flags_c(flags: ShmOpenFlags) -> String {
    let mut s = String::from(if flags.contains(ShmOpenFlags::READ_ONLY) {
        "O_RDONLY"
    } else {
        "O_RDWR"
    });
    for (f, name) in [
        (ShmOpenFlags::CREATE, "|O_CREAT"),
        (ShmOpenFlags::EXCLUSIVE, "|O_EXCL"),
        (ShmOpenFlags::TRUNCATE, "|O_TRUNC"),
    ] {
        if flags.contains(f) {
            s.push_str(name);
        }
    }
    s
}

/// Removes a POSIX shared-memory object's name (`shm_unlink(3)`); mappings
/// stay valid until unmapped.
///
/// # References
///
/// ```c
/// int shm_unlink(const char *name);
/// ```
///
/// - `shm_unlink(3)`: [Linux](https://man7.org/linux/man-pages/man3/shm_unlink.3.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=shm_unlink&sektion=3), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man3/shm_unlink.3.html)
pub fn shm_unlink(name: &str) -> Result<()> {
    rustix::shm::unlink(name).ctx("shm_unlink", || name.to_string())
}

bitflags::bitflags! {
    /// Seals of a memfd (`F_ADD_SEALS`): once added, they can't be removed.
    #[repr(transparent)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Seals: u32 {
        /// `F_SEAL_SEAL`: no more seals may be added.
        const SEAL = 1;
        /// `F_SEAL_SHRINK`: the size can't decrease.
        const SHRINK = 2;
        /// `F_SEAL_GROW`: the size can't increase.
        const GROW = 4;
        /// `F_SEAL_WRITE`: the contents can't change.
        const WRITE = 8;
    }
}

/// Whether this platform has memfds with seals (Linux, Android, FreeBSD).
pub const HAVE_MEMFD: bool = cfg!(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd"
));

/// Whether a SysV segment already marked for removal (`IPC_RMID`) can still
/// be attached by another process (Linux, Android): then its creator can
/// remove it at once, and it can't outlive the processes using it.
pub const SYSV_ATTACH_AFTER_REMOVE: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// A memfd of `len` bytes sealed against shrinking, growing and further
/// seals: a peer it is sent to can't change its size under a mapping.
///
/// # Errors
///
/// `ENOSYS` where memfds don't exist ([`HAVE_MEMFD`] is false); the errors
/// of `memfd_create`, `ftruncate` and `fcntl(F_ADD_SEALS)`.
///
/// # References
///
/// ```c
/// int memfd_create(const char *name, unsigned int flags);
/// int fcntl(int fd, int cmd, ... /* arg */ );
/// ```
///
/// - `memfd_create(2)`: [Linux](https://man7.org/linux/man-pages/man2/memfd_create.2.html)
/// - `fcntl(2)`: [Linux](https://man7.org/linux/man-pages/man2/fcntl.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=fcntl&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/fcntl.2.html)
#[doc(alias = "memfd_create")]
#[doc(alias = "fcntl")]
pub fn sealed_memfd(name: &str, len: u64) -> Result<OwnedFd> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        use std::os::fd::AsFd;
        let fd = memfd_create(name)?;
        ftruncate(fd.as_fd(), len)?;
        add_seals(fd.as_fd(), Seals::SHRINK | Seals::GROW | Seals::SEAL)?;
        Ok(fd)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        Err(Error::new(
            "memfd_create",
            format!("{name}, {len} bytes"),
            libc::ENOSYS,
        ))
    }
}

/// Whether `fd` is a memfd sealed against shrinking, so that no one can
/// truncate it under a mapping; `false` for anything else, and everywhere
/// memfds don't exist.
///
/// # References
///
/// ```c
/// int fcntl(int fd, int cmd, ... /* arg */ );
/// ```
///
/// - `fcntl(2)`: [Linux](https://man7.org/linux/man-pages/man2/fcntl.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=fcntl&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/fcntl.2.html)
#[doc(alias = "fcntl")]
pub fn is_sealed_against_shrinking(fd: BorrowedFd<'_>) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        seals(fd).is_ok_and(|s| s.contains(Seals::SHRINK))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        let _ = fd;
        false
    }
}

/// Creates an anonymous memory file (`memfd_create(2)`), close-on-exec, that
/// accepts seals. It has no name in any file system, so nothing can leak by
/// name: it is gone when the last fd and mapping are.
///
/// # References
///
/// ```c
/// int memfd_create(const char *name, unsigned int flags);
/// ```
///
/// - `memfd_create(2)`: [Linux](https://man7.org/linux/man-pages/man2/memfd_create.2.html)
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
pub fn memfd_create(name: &str) -> Result<OwnedFd> {
    use rustix::fs::MemfdFlags;
    rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .ctx("memfd_create", || name.to_string())
}

/// Adds seals to a memfd (`fcntl(F_ADD_SEALS)`).
///
/// # Errors
///
/// `EPERM` when `SEAL` was added before, `EBUSY` for `WRITE` while a
/// writable shared mapping exists.
///
/// # References
///
/// ```c
/// int fcntl(int fd, int cmd, ... /* arg */ );
/// ```
///
/// - `fcntl(2)`: [Linux](https://man7.org/linux/man-pages/man2/fcntl.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=fcntl&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/fcntl.2.html)
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
#[doc(alias = "fcntl")]
pub fn add_seals(fd: BorrowedFd<'_>, seals: Seals) -> Result<()> {
    use rustix::fs::SealFlags;
    let mut s = SealFlags::empty();
    for (ours, theirs) in [
        (Seals::SEAL, SealFlags::SEAL),
        (Seals::SHRINK, SealFlags::SHRINK),
        (Seals::GROW, SealFlags::GROW),
        (Seals::WRITE, SealFlags::WRITE),
    ] {
        if seals.contains(ours) {
            s |= theirs;
        }
    }
    rustix::fs::fcntl_add_seals(fd, s)
        .ctx("fcntl", || format!("{}, F_ADD_SEALS {seals:?}", fd_arg(fd)))
}

/// Reads the seals of a memfd (`fcntl(F_GET_SEALS)`).
///
/// # References
///
/// ```c
/// int fcntl(int fd, int cmd, ... /* arg */ );
/// ```
///
/// - `fcntl(2)`: [Linux](https://man7.org/linux/man-pages/man2/fcntl.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=fcntl&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/fcntl.2.html)
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
#[doc(alias = "fcntl")]
pub fn seals(fd: BorrowedFd<'_>) -> Result<Seals> {
    use rustix::fs::SealFlags;
    let s =
        rustix::fs::fcntl_get_seals(fd).ctx("fcntl", || format!("{}, F_GET_SEALS", fd_arg(fd)))?;
    let mut out = Seals::empty();
    for (ours, theirs) in [
        (Seals::SEAL, SealFlags::SEAL),
        (Seals::SHRINK, SealFlags::SHRINK),
        (Seals::GROW, SealFlags::GROW),
        (Seals::WRITE, SealFlags::WRITE),
    ] {
        if s.contains(theirs) {
            out |= ours;
        }
    }
    Ok(out)
}

/// Sets the size of a file or shared-memory object (`ftruncate(2)`).
///
/// # References
///
/// ```c
/// int ftruncate(int fd, off_t length);
/// ```
///
/// - `ftruncate(2)`: [Linux](https://man7.org/linux/man-pages/man2/ftruncate.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=ftruncate&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/ftruncate.2.html)
pub fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> Result<()> {
    rustix::fs::ftruncate(fd, len).ctx("ftruncate", || format!("{}, {len}", fd_arg(fd)))
}

/// The size of a file or shared-memory object (`fstat(2)`).
///
/// # References
///
/// ```c
/// int fstat(int fd, struct stat *statbuf);
/// ```
///
/// - `fstat(2)`: [Linux](https://man7.org/linux/man-pages/man2/fstat.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=fstat&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/fstat.2.html)
#[doc(alias = "fstat")]
pub fn file_size(fd: BorrowedFd<'_>) -> Result<u64> {
    rustix::fs::fstat(fd)
        .map(|st| st.st_size.max(0) as u64)
        .ctx("fstat", || fd_arg(fd))
}

/// Access through a [`Mapping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// `PROT_READ`: reads only.
    ReadOnly,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

/// Memory shared with other processes, as raw bytes at offsets.
///
/// The provided methods check bounds and alignment, so safe code using them
/// can't reach outside the mapping. Other processes may change the bytes at
/// any time: copy them out, then validate what you copied.
///
/// # Safety
///
/// The provided methods trust the three required ones, so an implementor
/// must guarantee, for as long as `self` lives:
///
/// - `as_ptr()..as_ptr() + len()` is one live mapping (valid for reads, and
///   for writes when `writable()` is true), and both values never change;
/// - `writable()` is true only if the whole range was mapped writable;
/// - no Rust reference (`&[u8]`, `&mut [u8]`, `&T`) to any byte of the range
///   exists anywhere, so that concurrent changes by another process break no
///   promise the compiler relies on; access is through raw pointers and
///   atomics only.
///
/// [`Mapping`] and [`SysvMapping`] are the implementations in this crate.
pub unsafe trait SharedMemory {
    /// The start of the mapping.
    fn as_ptr(&self) -> *mut u8;

    /// The length of the mapping in bytes.
    fn len(&self) -> usize;

    /// Whether the mapping has no bytes (never true for a live mapping).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the mapping may be written.
    fn writable(&self) -> bool;

    /// Faults in every page now (`madvise(MADV_POPULATE_WRITE)`, or
    /// `MADV_POPULATE_READ` for a read-only mapping; Linux 5.14 and later),
    /// so that first touches later take no page fault: a fault on a fresh
    /// shared page costs microseconds, which a ring that is touched a cache
    /// line at a time would otherwise pay once per page on its first lap.
    /// Best effort: where the kernel lacks the advice (`EINVAL`), and on
    /// other systems, it does nothing.
    ///
    /// # Errors
    ///
    /// `EFAULT` when a page can't be backed (the object behind the mapping
    /// is shorter than the mapping), `ENOMEM` when memory runs out.
    #[doc(alias = "MADV_POPULATE_WRITE")]
    fn populate(&self) -> Result<()> {
        self.populate_range(0, self.len()).map(|_| ())
    }

    /// [`SharedMemory::populate`] for the pages that hold the bytes
    /// `offset..offset + len` only (from the start of the page `offset`
    /// is in). `Ok(false)` where the kernel or the system has no such
    /// advice: nothing was done, and later calls would do nothing either.
    ///
    /// # Errors
    ///
    /// `EFAULT`-coded error when the range is outside the mapping; those of
    /// [`SharedMemory::populate`].
    fn populate_range(&self, offset: usize, len: usize) -> Result<bool> {
        check_range("populate", offset, len, self.len())?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use rustix::mm::Advice;
            if len == 0 {
                return Ok(true);
            }
            let (advice, name) = if self.writable() {
                (Advice::LinuxPopulateWrite, "MADV_POPULATE_WRITE")
            } else {
                (Advice::LinuxPopulateRead, "MADV_POPULATE_READ")
            };
            let start = offset - offset % page_size();
            let len = offset + len - start;
            // SAFETY: the range lies inside this live mapping (checked
            // above), and begins on a page boundary (mappings begin on
            // one); populating changes no byte of it.
            match unsafe { rustix::mm::madvise(self.as_ptr().add(start).cast(), len, advice) } {
                Ok(()) => Ok(true),
                Err(e) if e == rustix::io::Errno::INVAL => Ok(false),
                Err(e) => Err(Error::new(
                    "madvise",
                    format!("{len} bytes at {start}, {name}"),
                    e.raw_os_error(),
                )),
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            Ok(false)
        }
    }

    /// The `AtomicU32` at `offset`, or `None` if it is out of bounds,
    /// misaligned, or the mapping is read-only (a read-modify-write would
    /// fault).
    fn atomic_u32(&self, offset: usize) -> Option<&AtomicU32> {
        atomic_ptr(self, offset, 4)
            // SAFETY: `atomic_ptr` checked bounds, 4-byte alignment and
            // writability; the mapping lives as long as `&self`, and all
            // accesses by this process through it are atomic.
            .map(|p| unsafe { AtomicU32::from_ptr(p.cast()) })
    }

    /// The `AtomicU64` at `offset`, like [`SharedMemory::atomic_u32`].
    fn atomic_u64(&self, offset: usize) -> Option<&AtomicU64> {
        atomic_ptr(self, offset, 8)
            // SAFETY: as in `atomic_u32`, with 8-byte alignment checked.
            .map(|p| unsafe { AtomicU64::from_ptr(p.cast()) })
    }

    /// Copies `buf.len()` bytes at `offset` out of the mapping.
    ///
    /// # Errors
    ///
    /// `EFAULT`-coded error when the range is outside the mapping.
    fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        check_range("read_at", offset, buf.len(), self.len())?;
        // SAFETY: the range is inside the live mapping (checked above, and
        // the trait's contract) and `buf` is a distinct, exclusively borrowed
        // local buffer. Another process may write the range meanwhile: the
        // copy is through raw pointers into `u8`s, any bit pattern of which is
        // valid, so it can read torn bytes but nothing invalid.
        unsafe {
            std::ptr::copy_nonoverlapping(self.as_ptr().add(offset), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    /// Copies `data` into the mapping at `offset`.
    ///
    /// # Errors
    ///
    /// `EFAULT`-coded error when out of range, `EACCES` when read-only.
    fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        check_range("write_at", offset, data.len(), self.len())?;
        if !self.writable() {
            return Err(Error::new("write_at", "read-only mapping", libc::EACCES));
        }
        // SAFETY: the range is inside the live, writable mapping (checked
        // above); `data` can't overlap it mutably since we only hold `&self`.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.as_ptr().add(offset), data.len())
        };
        Ok(())
    }
}

/// The address of a `size`-byte atomic at `offset`, if it is inside the
/// mapping, aligned to `size`, and the mapping is writable.
fn atomic_ptr<M: SharedMemory + ?Sized>(m: &M, offset: usize, size: usize) -> Option<*mut u8> {
    let end = offset.checked_add(size)?;
    if !m.writable() || end > m.len() {
        return None;
    }
    let p = m.as_ptr().wrapping_add(offset);
    (p as usize % size == 0).then_some(p)
}

/// The size of a memory page on this system, in bytes.
pub fn page_size() -> usize {
    rustix::param::page_size()
}

fn check_range(call: &'static str, offset: usize, len: usize, size: usize) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::new(
            call,
            format!("offset {offset}, {len} bytes, mapping of {size}"),
            libc::EFAULT,
        )),
    }
}

/// An owned `MAP_SHARED` memory mapping, unmapped on drop.
#[must_use = "dropping a Mapping unmaps its memory at once"]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    access: Access,
}

// SAFETY: the mapping is plain memory owned by this value; `Mapping` hands
// out only raw pointers, atomics and copies, so sharing it between threads
// adds nothing a second process couldn't do anyway.
unsafe impl Send for Mapping {}
// SAFETY: see `Send`; all access through `&Mapping` is atomic or copying.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from offset 0, shared (`mmap(2)` with
    /// `MAP_SHARED`).
    ///
    /// # Errors
    ///
    /// `EINVAL` for a zero length, `EACCES` for write access on an fd opened
    /// read-only. Mapping past the end of the file succeeds, but touching
    /// those pages raises `SIGBUS`: size the file first ([`ftruncate`]) and
    /// check it ([`file_size`]) when it came from elsewhere.
    ///
    /// # References
    ///
    /// ```c
    /// void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);
    /// ```
    ///
    /// - `mmap(2)`: [Linux](https://man7.org/linux/man-pages/man2/mmap.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=mmap&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/mmap.2.html)
    #[doc(alias = "mmap")]
    pub fn map(fd: BorrowedFd<'_>, len: usize, access: Access) -> Result<Self> {
        use rustix::mm::MapFlags;
        if len == 0 {
            return Err(Error::invalid_input(
                "mmap",
                format!("{}, length 0", fd_arg(fd)),
            ));
        }
        // SAFETY: a null hint lets the kernel choose a fresh range, so no
        // existing memory is replaced.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                prot(access),
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .ctx("mmap", || {
            format!("{}, {len} bytes, {access:?}, MAP_SHARED", fd_arg(fd))
        })?;
        Self::from_raw(p, len, access)
    }

    /// Maps `len` bytes of fresh zeroed memory shared with children forked
    /// later (`MAP_SHARED | MAP_ANONYMOUS`).
    ///
    /// # References
    ///
    /// ```c
    /// void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);
    /// ```
    ///
    /// - `mmap(2)`: [Linux](https://man7.org/linux/man-pages/man2/mmap.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=mmap&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/mmap.2.html)
    #[doc(alias = "mmap")]
    pub fn anonymous(len: usize) -> Result<Self> {
        use rustix::mm::MapFlags;
        if len == 0 {
            return Err(Error::invalid_input("mmap", "anonymous, length 0"));
        }
        // SAFETY: as in `map`: a fresh range chosen by the kernel.
        let p = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                prot(Access::ReadWrite),
                MapFlags::SHARED,
            )
        }
        .ctx("mmap", || format!("anonymous, {len} bytes, MAP_SHARED"))?;
        Self::from_raw(p, len, Access::ReadWrite)
    }

    /// Maps `len` bytes of fresh zeroed memory private to this process: a
    /// forked child gets its own copy (`MAP_PRIVATE | MAP_ANONYMOUS`;
    /// pages are only backed once touched, so a large, sparse table costs
    /// what it uses).
    ///
    /// # References
    ///
    /// ```c
    /// void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);
    /// ```
    ///
    /// - `mmap(2)`: [Linux](https://man7.org/linux/man-pages/man2/mmap.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=mmap&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/mmap.2.html)
    #[doc(alias = "mmap")]
    pub fn anonymous_private(len: usize) -> Result<Self> {
        use rustix::mm::MapFlags;
        if len == 0 {
            return Err(Error::invalid_input("mmap", "anonymous, length 0"));
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let flags = MapFlags::PRIVATE | MapFlags::NORESERVE;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let flags = MapFlags::PRIVATE;
        // SAFETY: as in `map`: a fresh range chosen by the kernel.
        let p = unsafe {
            rustix::mm::mmap_anonymous(std::ptr::null_mut(), len, prot(Access::ReadWrite), flags)
        }
        .ctx("mmap", || format!("anonymous, {len} bytes, MAP_PRIVATE"))?;
        Self::from_raw(p, len, Access::ReadWrite)
    }

    fn from_raw(p: *mut std::ffi::c_void, len: usize, access: Access) -> Result<Self> {
        match NonNull::new(p.cast::<u8>()) {
            Some(ptr) => Ok(Self { ptr, len, access }),
            None => Err(Error::new("mmap", "returned null", libc::EFAULT)),
        }
    }

    /// The access the mapping was made with.
    pub fn access(&self) -> Access {
        self.access
    }
}

fn prot(access: Access) -> rustix::mm::ProtFlags {
    use rustix::mm::ProtFlags;
    match access {
        Access::ReadOnly => ProtFlags::READ,
        Access::ReadWrite => ProtFlags::READ | ProtFlags::WRITE,
    }
}

// SAFETY: `ptr..ptr+len` is the range `mmap` returned, unmapped only in
// `drop`; `access` is the protection it was mapped with; the type lends no
// references to its bytes.
unsafe impl SharedMemory for Mapping {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn len(&self) -> usize {
        self.len
    }

    fn writable(&self) -> bool {
        self.access == Access::ReadWrite
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` is the range mmap returned, owned by this
        // value and unmapped exactly once, here; borrows of it (atomics)
        // can't outlive `self`.
        // munmap of a range we mapped can't fail; nothing to report in drop.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("access", &self.access)
            .finish()
    }
}

static_assertions::assert_impl_all!(Mapping: Send, Sync);
static_assertions::assert_impl_all!(SysvMapping: Send, Sync);

/// The key of a SysV segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SysvKey {
    /// `IPC_PRIVATE`: always a new segment, reachable only by its id.
    Private,
    /// A chosen key (as from `ftok`).
    Key(i32),
}

/// Whether [`shmget`] makes a new SysV segment or opens one that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SysvOpen {
    /// `IPC_CREAT | IPC_EXCL`: a new segment; `EEXIST` if the key has one.
    Create,
    /// No flags: the segment the key names; `ENOENT` if there is none.
    Existing,
}

/// Gets or creates a SysV shared-memory segment (`shmget(2)`) of `size`
/// bytes, returning its id. `mode` is its permission bits (use `0o600`).
///
/// # Errors
///
/// `EEXIST` when creating a key that exists, `ENOENT` when opening one that
/// doesn't, `EINVAL` for a size outside the system's limits.
///
/// # References
///
/// ```c
/// int shmget(key_t key, size_t size, int shmflg);
/// ```
///
/// - `shmget(2)`: [Linux](https://man7.org/linux/man-pages/man2/shmget.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=shmget&sektion=2)
pub fn shmget(key: SysvKey, size: usize, open: SysvOpen, mode: u32) -> Result<i32> {
    let k = match key {
        SysvKey::Private => libc::IPC_PRIVATE as libc::key_t,
        SysvKey::Key(k) => k as libc::key_t,
    };
    let mut flags = (mode & 0o777) as libc::c_int;
    if open == SysvOpen::Create {
        flags |= libc::IPC_CREAT | libc::IPC_EXCL;
    }
    // SAFETY: shmget takes only integers and touches no memory of ours.
    let id = unsafe { libc::shmget(k, size, flags) };
    if id < 0 {
        Err(Error::new(
            "shmget",
            format!("{key:?}, {size} bytes, {open:?}, {mode:#o}"),
            last_errno(),
        ))
    } else {
        Ok(id)
    }
}

/// Marks a SysV segment for removal (`shmctl(IPC_RMID)`): it goes once the
/// last process detaches.
///
/// # References
///
/// ```c
/// int shmctl(int shmid, int cmd, struct shmid_ds *buf);
/// ```
///
/// - `shmctl(2)`: [Linux](https://man7.org/linux/man-pages/man2/shmctl.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=shmctl&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/shmctl.2.html)
#[doc(alias = "shmctl")]
pub fn shm_remove(id: i32) -> Result<()> {
    // SAFETY: IPC_RMID reads no buffer; a null pointer is allowed.
    let rc = unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    if rc < 0 {
        Err(Error::new(
            "shmctl",
            format!("id {id}, IPC_RMID"),
            last_errno(),
        ))
    } else {
        Ok(())
    }
}

/// What `shmctl(IPC_STAT)` says of a SysV segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShmStat {
    /// Its size in bytes.
    pub size: usize,
    /// The pid of the process that created it.
    pub creator_pid: i32,
    /// Its owner's user id.
    pub uid: u32,
    /// Its permission bits (as `0o600`).
    pub mode: u32,
}

/// The state of a SysV segment (`shmctl(IPC_STAT)`).
///
/// # Errors
///
/// `EINVAL` for an id that doesn't exist, `EACCES` when its mode forbids
/// reading it.
///
/// # References
///
/// ```c
/// int shmctl(int shmid, int cmd, struct shmid_ds *buf);
/// ```
///
/// - `shmctl(2)`: [Linux](https://man7.org/linux/man-pages/man2/shmctl.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=shmctl&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/shmctl.2.html)
#[doc(alias = "shmctl")]
pub fn shm_stat(id: i32) -> Result<ShmStat> {
    // SAFETY: `shmid_ds` is plain old data; all-zero is a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is a live, writable `shmid_ds` the kernel fills in.
    let rc = unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) };
    if rc < 0 {
        return Err(Error::new(
            "shmctl",
            format!("id {id}, IPC_STAT"),
            last_errno(),
        ));
    }
    Ok(ShmStat {
        size: ds.shm_segsz as usize,
        creator_pid: ds.shm_cpid as i32,
        uid: ds.shm_perm.uid as u32,
        mode: ds.shm_perm.mode as u32 & 0o777,
    })
}

/// The size in bytes of a SysV segment (`shmctl(IPC_STAT)`).
///
/// # References
///
/// ```c
/// int shmctl(int shmid, int cmd, struct shmid_ds *buf);
/// ```
///
/// - `shmctl(2)`: [Linux](https://man7.org/linux/man-pages/man2/shmctl.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=shmctl&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/shmctl.2.html)
#[doc(alias = "shmctl")]
pub fn shm_segment_size(id: i32) -> Result<usize> {
    shm_stat(id).map(|s| s.size)
}

/// A SysV segment attached to this process (`shmat(2)`), detached on drop
/// (`shmdt(2)`).
#[must_use = "dropping a SysvMapping detaches the segment at once"]
pub struct SysvMapping {
    ptr: NonNull<u8>,
    len: usize,
    id: i32,
    access: Access,
}

// SAFETY: as for `Mapping`: owned plain memory, reached only through raw
// pointers, atomics and copies.
unsafe impl Send for SysvMapping {}
// SAFETY: see `Send`.
unsafe impl Sync for SysvMapping {}

impl SysvMapping {
    /// Attaches segment `id` at an address the kernel picks.
    ///
    /// # Errors
    ///
    /// `EINVAL` for an id that doesn't exist (or was removed and detached),
    /// `EACCES` when its mode forbids the access.
    ///
    /// # References
    ///
    /// ```c
    /// void *shmat(int shmid, const void *shmaddr, int shmflg);
    /// ```
    ///
    /// - `shmat(2)`: [Linux](https://man7.org/linux/man-pages/man2/shmat.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=shmat&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/shmat.2.html)
    #[doc(alias = "shmat")]
    pub fn attach(id: i32, access: Access) -> Result<Self> {
        let len = shm_segment_size(id)?;
        let flags = match access {
            Access::ReadOnly => libc::SHM_RDONLY,
            Access::ReadWrite => 0,
        };
        // SAFETY: a null address lets the kernel choose a free range, so no
        // existing memory is replaced.
        let p = unsafe { libc::shmat(id, std::ptr::null(), flags) };
        if p as isize == -1 {
            return Err(Error::new(
                "shmat",
                format!("id {id}, {access:?}"),
                last_errno(),
            ));
        }
        match NonNull::new(p.cast::<u8>()) {
            Some(ptr) => Ok(Self {
                ptr,
                len,
                id,
                access,
            }),
            None => Err(Error::new(
                "shmat",
                format!("id {id}: returned null"),
                libc::EFAULT,
            )),
        }
    }

    /// The segment's id.
    pub fn id(&self) -> i32 {
        self.id
    }
}

// SAFETY: `ptr..ptr+len` is the range `shmat` attached, detached only in
// `drop`; `access` decided `SHM_RDONLY`; no references to its bytes are lent.
unsafe impl SharedMemory for SysvMapping {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn len(&self) -> usize {
        self.len
    }

    fn writable(&self) -> bool {
        self.access == Access::ReadWrite
    }
}

impl Drop for SysvMapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` is the address shmat returned, detached exactly once,
        // here; borrows of the memory can't outlive `self`. shmdt of an
        // attached address can't fail, and drop has nowhere to report.
        let _ = unsafe { libc::shmdt(self.ptr.as_ptr().cast()) };
    }
}

impl fmt::Debug for SysvMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SysvMapping")
            .field("id", &self.id)
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("access", &self.access)
            .finish()
    }
}

/// A name for a POSIX segment that no other live process uses: the prefix,
/// this pid, and a counter.
pub fn unique_shm_name(prefix: &str) -> String {
    use std::sync::atomic::Ordering;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("/{prefix}-{}-{n}", super::process::getpid())
}
