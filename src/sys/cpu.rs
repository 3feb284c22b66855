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
///
/// # References
///
/// ```c
/// int sched_getcpu(void);
/// ```
///
/// - `sched_getcpu(3)`: [Linux](https://man7.org/linux/man-pages/man3/sched_getcpu.3.html)
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
///
/// # References
///
/// ```c
/// int sched_setaffinity(pid_t pid, size_t cpusetsize, const cpu_set_t *mask);
/// ```
///
/// - `sched_setaffinity(2)`: [Linux](https://man7.org/linux/man-pages/man2/sched_setaffinity.2.html)
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
///
/// # References
///
/// ```c
/// int sched_getaffinity(pid_t pid, size_t cpusetsize, cpu_set_t *mask);
/// ```
///
/// - `sched_getaffinity(2)`: [Linux](https://man7.org/linux/man-pages/man2/sched_getaffinity.2.html)
#[doc(alias = "sched_getaffinity")]
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Whether CPUs `a` and `b` share their last-level cache, as the kernel
/// reports it (`/sys/devices/system/cpu/cpuN/cache/index*/`: the highest
/// level's `shared_cpu_list`); `None` where it doesn't say. Read once per
/// process.
pub fn share_last_level_cache(a: usize, b: usize) -> Option<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        static TABLE: std::sync::OnceLock<Vec<Option<usize>>> = std::sync::OnceLock::new();
        let table = TABLE.get_or_init(|| {
            let n = last_level_cache_owner_count();
            (0..n).map(last_level_cache_owner).collect()
        });
        match (
            table.get(a).copied().flatten(),
            table.get(b).copied().flatten(),
        ) {
            (Some(x), Some(y)) => Some(x == y),
            _ => None,
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (a, b);
        None
    }
}

/// How many CPU directories to read: the highest possible CPU plus one.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn last_level_cache_owner_count() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .and_then(|cpus| cpus.into_iter().max())
        .map_or(0, |m| (m + 1).min(4096))
}

/// The lowest CPU sharing `cpu`'s last-level cache: equal for two CPUs
/// exactly when they share it.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn last_level_cache_owner(cpu: usize) -> Option<usize> {
    let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cache");
    let mut best: Option<(u32, usize)> = None;
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if !path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("index"))
        {
            continue;
        }
        let level: u32 = match std::fs::read_to_string(path.join("level")) {
            Ok(s) => match s.trim().parse() {
                Ok(l) => l,
                Err(_) => continue,
            },
            Err(_) => continue,
        };
        if best.is_some_and(|(l, _)| l >= level) {
            continue;
        }
        let Some(owner) = std::fs::read_to_string(path.join("shared_cpu_list"))
            .ok()
            .and_then(|s| parse_cpu_list(&s))
            .and_then(|cpus| cpus.into_iter().min())
        else {
            continue;
        };
        best = Some((level, owner));
    }
    best.map(|(_, owner)| owner)
}

/// Parses a kernel CPU list (`"0-3,8,10-11"`); `None` if malformed or
/// absurdly large.
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
            None => {
                let c: usize = part.parse().ok()?;
                (c, c)
            }
        };
        if lo > hi || hi >= 1 << 16 || out.len() + (hi - lo) > 1 << 16 {
            return None;
        }
        out.extend(lo..=hi);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_as_the_kernel_writes_them() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("0-0"), Some(vec![0]));
        for bad in ["3-1", "a", "1-", "-1", "0-65536", "1,,x", "0-65535,0-65535"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_cpu_shares_its_last_level_cache_with_itself() {
        // Where the kernel reports caches at all.
        if let Some(shared) = share_last_level_cache(0, 0) {
            assert!(shared);
        }
        assert_eq!(share_last_level_cache(0, 1 << 20), None);
    }
}
