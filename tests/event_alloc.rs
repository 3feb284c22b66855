//! Zero heap allocations per event in steady state: 10,000 ping-pong events
//! through the loop after a warm-up, counted by a global allocator that
//! counts this thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use procwire::net::event::{EventLoop, Interest};
use procwire::sys::socket::{socketpair, Domain, Socket, Type};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a thread-local
// `Cell` of a `Copy` type with a const initialiser, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

#[test]
fn ping_pong_allocates_nothing_per_event() {
    let lp = EventLoop::new().unwrap();
    let (a, b) = socketpair(Domain::UNIX, Type::STREAM).unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    a.send(b"s").unwrap();
    let events = Rc::new(Cell::new(0u64));
    // Each side drains what came (until WouldBlock, as the edge contract
    // says, so every turn also meets an EAGAIN error) and sends one byte back.
    for s in [a, b] {
        let n = events.clone();
        lp.register(s, Interest::READABLE, move |_, s: &Socket, _| {
            let mut buf = [0u8; 64];
            let mut got = false;
            loop {
                match s.recv(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(_) => got = true,
                    Err(e) if e.is_would_block() => break,
                    Err(e) => return Err(e.into()),
                }
            }
            if got {
                n.set(n.get() + 1);
                s.send(b"p")?;
            }
            Ok(())
        })
        .unwrap()
        .detach();
    }
    // A periodic timer keeps the timer heap busy too.
    lp.every(Duration::from_micros(200), |_| {});

    // Warm up: buffers and heaps reach their steady sizes.
    while events.get() < 2_000 {
        lp.run_once(Some(Duration::from_secs(5))).unwrap();
    }
    let before = allocs();
    let start = events.get();
    while events.get() < start + 10_000 {
        lp.run_once(Some(Duration::from_secs(5))).unwrap();
    }
    let after = allocs();
    assert_eq!(after - before, 0, "allocations during 10,000 events");
}
