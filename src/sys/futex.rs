//! Futexes (Linux, Android): sleep until a 32-bit word in memory changes,
//! and wake sleepers. The calls are the shared (non-private) kind, so the
//! word may sit in a mapping other processes use. Elsewhere [`SUPPORTED`]
//! is false, [`futex_wait`] fails with `ENOSYS` and [`futex_wake`] wakes
//! no one, so callers choose another way to sleep from one constant rather
//! than from `cfg`s of their own.

use std::sync::atomic::AtomicU32;
use std::time::Duration;
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::time::Instant;

#[cfg(any(target_os = "linux", target_os = "android"))]
use rustix::thread::futex;

#[cfg(any(target_os = "linux", target_os = "android"))]
use super::error::Context;
use super::error::Result;

/// Whether this platform has futexes that work across processes.
pub const SUPPORTED: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// How [`futex_wait`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FutexWait {
    /// Woken (possibly spuriously: re-check the word).
    Woken,
    /// The word did not hold the expected value, so it never slept.
    ValueChanged,
    /// The timeout passed.
    TimedOut,
}

/// Sleeps while `word` holds `expected` (`futex(FUTEX_WAIT)`), for at most
/// `timeout` (`None`: until woken). `EINTR` is retried here with the time that
/// is left.
///
/// # References
///
/// ```c
/// long syscall(SYS_futex, uint32_t *uaddr, int futex_op, uint32_t val, const struct timespec *timeout, uint32_t *uaddr2, uint32_t val3);
/// ```
///
/// - `futex(2)`: [Linux](https://man7.org/linux/man-pages/man2/futex.2.html)
#[doc(alias = "futex")]
#[doc(alias = "FUTEX_WAIT")]
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Result<FutexWait> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut left = timeout;
    loop {
        let ts = left.and_then(|d| rustix::time::Timespec::try_from(d).ok());
        match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
            Ok(()) => return Ok(FutexWait::Woken),
            Err(rustix::io::Errno::AGAIN) => return Ok(FutexWait::ValueChanged),
            Err(rustix::io::Errno::TIMEDOUT) => return Ok(FutexWait::TimedOut),
            Err(rustix::io::Errno::INTR) => {
                if let Some(d) = deadline {
                    left = Some(d.saturating_duration_since(Instant::now()));
                }
            }
            Err(e) => {
                return Err(e).ctx("futex", || {
                    format!(
                        "{:p}, FUTEX_WAIT, expected {expected}, timeout {left:?}",
                        word
                    )
                })
            }
        }
    }
}

/// Wakes up to `count` sleepers on `word` (`futex(FUTEX_WAKE)`), returning
/// how many woke.
///
/// # References
///
/// ```c
/// long syscall(SYS_futex, uint32_t *uaddr, int futex_op, uint32_t val, const struct timespec *timeout, uint32_t *uaddr2, uint32_t val3);
/// ```
///
/// - `futex(2)`: [Linux](https://man7.org/linux/man-pages/man2/futex.2.html)
#[doc(alias = "FUTEX_WAKE")]
#[cfg(any(target_os = "linux", target_os = "android"))]
#[doc(alias = "futex")]
pub fn futex_wake(word: &AtomicU32, count: u32) -> Result<usize> {
    futex::wake(word, futex::Flags::empty(), count)
        .ctx("futex", || format!("{:p}, FUTEX_WAKE, {count}", word))
}

/// Without futexes: fails with `ENOSYS` (see [`SUPPORTED`]).
///
/// # References
///
/// ```c
/// long syscall(SYS_futex, uint32_t *uaddr, int futex_op, uint32_t val, const struct timespec *timeout, uint32_t *uaddr2, uint32_t val3);
/// ```
///
/// - `futex(2)`: [Linux](https://man7.org/linux/man-pages/man2/futex.2.html)
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[doc(alias = "futex")]
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Result<FutexWait> {
    let _ = timeout;
    Err(super::Error::new(
        "futex",
        format!("{:p}, FUTEX_WAIT, expected {expected}", word),
        libc::ENOSYS,
    ))
}

/// Without futexes: no one can sleep on a word, so no one is woken.
///
/// # References
///
/// ```c
/// long syscall(SYS_futex, uint32_t *uaddr, int futex_op, uint32_t val, const struct timespec *timeout, uint32_t *uaddr2, uint32_t val3);
/// ```
///
/// - `futex(2)`: [Linux](https://man7.org/linux/man-pages/man2/futex.2.html)
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[doc(alias = "futex")]
pub fn futex_wake(word: &AtomicU32, count: u32) -> Result<usize> {
    let _ = (word, count);
    Ok(0)
}
