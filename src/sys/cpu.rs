//! Which CPU this thread runs on, and pinning to CPUs (Linux, Android),
//! and [`cpu_tag`], which says it on every platform (0: unknown).

#[cfg(any(target_os = "linux", target_os = "android"))]
use super::error::{Context, Result};

/// The CPU this thread runs on now, plus one, or 0 where the platform can't
/// tell: a value for shared memory, where 0 means "don't know" and two
/// equal non-zero tags mean the same CPU.
pub fn cpu_tag() -> u32 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        current_cpu() as u32 + 1
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        0
    }
}

/// The CPU the calling thread runs on now (`sched_getcpu(3)`; a vDSO or rseq
/// read, no system call on current kernels). It may change at any moment.
#[doc(alias = "sched_getcpu")]
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn current_cpu() -> usize {
    rustix::thread::sched_getcpu()
}

/// Restricts the calling thread (and threads and processes it starts
/// later) to `cpus` (`sched_setaffinity(2)`).
///
/// # Errors
///
/// `EINVAL` when no CPU of the set is online.
#[doc(alias = "sched_setaffinity")]
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn pin_to(cpus: &[usize]) -> Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    rustix::thread::sched_setaffinity(None, &set)
        .ctx("sched_setaffinity", || format!("cpus {cpus:?}"))
}

/// The number of CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
