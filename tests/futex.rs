//! Futexes on a word in shared memory: a forked child sleeps and the parent
//! wakes it; stale values and timeouts return at once or on time.
#![cfg(target_os = "linux")]

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use procwire::sys::futex::{futex_wait, futex_wake, FutexWait};
use procwire::sys::process::{exit_immediately, fork, ExitStatus, Fork};
use procwire::sys::shm::{ftruncate, memfd_create, Access, Mapping, SharedMemory};

#[test]
fn parent_wakes_a_child_sleeping_on_a_shared_word() {
    let map = Mapping::anonymous(4096).unwrap();
    let word = map.atomic_u32(0).unwrap();
    word.store(0, Ordering::SeqCst);
    let addr = word as *const AtomicU32 as usize;
    // SAFETY: the child makes futex calls on existing shared memory and
    // `_exit`s; nothing allocates on its success paths.
    let mut child = match unsafe { fork() }.unwrap() {
        Fork::Child => {
            // SAFETY: `addr` is the live shared word above.
            let w = unsafe { &*(addr as *const AtomicU32) };
            let code = match futex_wait(w, 0, Some(Duration::from_secs(20))) {
                Ok(FutexWait::Woken) => 0,
                Ok(FutexWait::TimedOut) => 2,
                Ok(FutexWait::ValueChanged) => 3,
                Err(_) => 4,
            };
            exit_immediately(code)
        }
        Fork::Parent(c) => c,
    };
    // The word never changes, so the child can only leave its wait by our
    // wake (or its 20 s timeout). Wake until a sleeper was actually woken.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if futex_wake(word, 1).unwrap() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the child never slept on the word"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        child.wait().unwrap(),
        ExitStatus::Exited(0),
        "the child saw a wake, not a timeout"
    );
}

#[test]
fn stale_expected_value_returns_at_once() {
    let w = AtomicU32::new(5);
    let t = Instant::now();
    assert_eq!(
        futex_wait(&w, 4, Some(Duration::from_secs(10))).unwrap(),
        FutexWait::ValueChanged
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn wait_times_out() {
    let w = AtomicU32::new(0);
    let t = Instant::now();
    assert_eq!(
        futex_wait(&w, 0, Some(Duration::from_millis(20))).unwrap(),
        FutexWait::TimedOut
    );
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert_eq!(futex_wake(&w, 1).unwrap(), 0, "nobody sleeps there");
}

#[test]
fn wait_on_a_page_past_the_end_of_its_file_fails() {
    // The second page of this mapping lies past the end of the 4 KiB file:
    // the kernel can't read the word and reports EFAULT.
    let fd = memfd_create("procwire-futex").unwrap();
    ftruncate(fd.as_fd(), 4096).unwrap();
    let map = Mapping::map(fd.as_fd(), 8192, Access::ReadWrite).unwrap();
    let w = map.atomic_u32(4096).unwrap();
    let e = futex_wait(w, 0, Some(Duration::from_millis(10))).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EFAULT);
    assert!(
        e.to_string()
            .starts_with(&format!("futex({:p}, FUTEX_WAIT, expected 0", w)),
        "{e}"
    );
}
