//! Shared memory against a Unix socket: the same ping-pong (64-byte
//! messages, p50 and p99 round trip) and the same one-way stream (64 KiB
//! writes, bytes/s) over `ShmStream` and over `std::os::unix::net::UnixStream`,
//! in three placements of the two processes: pinned to one CPU, pinned to two
//! CPUs, and unpinned. Medians of repeated runs, everything in one run; one
//! `RATIO` line per comparison.
//!
//! The goals are set against the machine's own floors, measured in the same
//! run, alternating with the stream: a cache-line ping-pong between two
//! processes over a shared mapping (the latency floor across two CPUs),
//! and the same one-way stream through a bare ring between them (no
//! library: each byte copied in and out, waits that spin and then yield)
//! written with plain stores and with streaming stores (the throughput
//! floor is the faster of the two, in each placement; on one CPU, plain).
//! Socket ratios are printed as well, and with them the two ways a waiter
//! can sleep (a futex on a shared word against an eventfd the waiter polls
//! with epoll, edge-triggered and never drained) in a one-CPU ping-pong.
//!
//! ```text
//! cargo run --release --example shm_bench
//! cargo run --release --example shm_bench -- --runs 3 --quick
//! ```
//!
//! Each peer is this program run again with a role.

#[macro_use]
#[path = "cli/mod.rs"]
mod cli;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use procwire::ipc::{CopyPath, ShmListener, ShmOptions, ShmStream};
use procwire::sys::cpu::{available_cpus, pin_to};
use procwire::sys::shm::{ftruncate, memfd_create, Access, Mapping, SharedMemory};

const MSG: usize = 64;
const CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Placement {
    OneCpu,
    TwoCpus,
    Unpinned,
}

impl Placement {
    fn name(self) -> &'static str {
        match self {
            Self::OneCpu => "one_cpu",
            Self::TwoCpus => "two_cpus",
            Self::Unpinned => "unpinned",
        }
    }

    /// The CPUs for (parent, child).
    fn cpus(self) -> (Vec<usize>, Vec<usize>) {
        let all: Vec<usize> = (0..cpu_count()).collect();
        match self {
            Self::OneCpu => (vec![0], vec![0]),
            Self::TwoCpus => (vec![0], vec![1 % all.len()]),
            Self::Unpinned => (all.clone(), all),
        }
    }
}

/// The CPUs this program may use, counted once before it pins itself
/// (afterwards the count would be that of the pinned set).
fn cpu_count() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(available_cpus)
}

/// Bytes per ring direction (`--ring`, default the transport's default).
static RING: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// How the stream copies (`--copy`, default auto).
static COPY: std::sync::OnceLock<CopyPath> = std::sync::OnceLock::new();

fn shm_options() -> ShmOptions {
    let mut o = ShmOptions::default();
    if let Some(&r) = RING.get() {
        o.ring_size = r;
    }
    o
}

fn pin(cpus: &[usize]) {
    if let Err(e) = pin_to(cpus) {
        eprintln!("shm_bench: {e}");
    }
}

fn spawn_peer(role: &str, path: &Path, cpus: &[usize], extra: &[String]) -> Child {
    let cpus: Vec<String> = cpus.iter().map(usize::to_string).collect();
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([role, &path.display().to_string(), &cpus.join(",")])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn peer");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("peer ready");
    child
}

/// Echoes 64-byte messages, or swallows a stream, until EOF.
fn serve(mut s: impl Read + Write, mode: &str) {
    let mut buf = vec![0u8; CHUNK];
    match mode {
        "echo" => loop {
            if s.read_exact(&mut buf[..MSG]).is_err() || s.write_all(&buf[..MSG]).is_err() {
                return;
            }
        },
        _ => loop {
            // The client announces how many bytes follow, then sends them.
            let mut head = [0u8; 8];
            if s.read_exact(&mut head).is_err() {
                return;
            }
            let mut left = u64::from_le_bytes(head);
            while left > 0 {
                let want = (left as usize).min(buf.len());
                match s.read(&mut buf[..want]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => left -= n as u64,
                }
            }
            if s.write_all(b"k").is_err() {
                return;
            }
        },
    }
}

fn ping_pong(s: &mut (impl Read + Write), rounds: usize) -> Vec<u64> {
    let mut msg = [0u8; MSG];
    let mut rtts = Vec::with_capacity(rounds);
    for i in 0..rounds + rounds / 10 {
        msg[0] = i as u8;
        let t = Instant::now();
        s.write_all(&msg).expect("write");
        s.read_exact(&mut msg).expect("read");
        if i >= rounds / 10 {
            rtts.push(t.elapsed().as_nanos() as u64);
        }
    }
    rtts
}

fn stream(s: &mut (impl Read + Write), bytes: u64) -> f64 {
    let chunk = vec![7u8; CHUNK];
    let t = Instant::now();
    s.write_all(&bytes.to_le_bytes()).expect("write");
    let mut sent = 0u64;
    while sent < bytes {
        s.write_all(&chunk).expect("write");
        sent += CHUNK as u64;
    }
    let mut k = [0u8; 1];
    s.read_exact(&mut k).expect("ack");
    bytes as f64 / t.elapsed().as_secs_f64()
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Figures {
    p50: f64,
    p99: f64,
    bytes_per_s: f64,
    /// The copy the stream's large writes took by the end.
    copy: Option<CopyPath>,
}

/// Runs the ping-pong (`echo`) or the stream (`sink`) on `s`.
fn run_mode(s: &mut (impl Read + Write), mode: &str, rounds: usize, bytes: u64, out: &mut Figures) {
    if mode == "echo" {
        let mut r = ping_pong(s, rounds);
        out.p50 = pct(&mut r, 0.5) as f64;
        out.p99 = pct(&mut r, 0.99) as f64;
    } else {
        out.bytes_per_s = stream(s, bytes);
    }
}

/// One measurement of one transport in one placement.
fn measure(shm: bool, placement: Placement, rounds: usize, bytes: u64, dir: &Path) -> Figures {
    let (mine, theirs) = placement.cpus();
    pin(&mine);
    let path = dir.join(if shm { "shm.sock" } else { "unix.sock" });
    let mut out = Figures {
        p50: 0.0,
        p99: 0.0,
        bytes_per_s: 0.0,
        copy: None,
    };
    for mode in ["echo", "sink"] {
        let _ = std::fs::remove_file(&path);
        let role = if shm { "peer-shm" } else { "peer-unix" };
        let mut child = spawn_peer(role, &path, &theirs, &[mode.to_string()]);
        if shm {
            let mut s = ShmStream::connect_with(&path, shm_options()).expect("connect");
            s.set_copy_path(COPY.get().copied().unwrap_or_default());
            run_mode(&mut s, mode, rounds, bytes, &mut out);
            out.copy = Some(s.current_copy());
        } else {
            run_mode(
                &mut UnixStream::connect(&path).expect("connect"),
                mode,
                rounds,
                bytes,
                &mut out,
            );
        }
        let _ = child.wait();
    }
    let _ = std::fs::remove_file(&path);
    out
}

/// Two processes bouncing a counter through one shared cache line each.
fn floor(placement: Placement, rounds: usize) -> (u64, u64) {
    let (mine, theirs) = placement.cpus();
    pin(&mine);
    let fd = memfd_create("shm-bench-floor").expect("memfd");
    ftruncate(std::os::fd::AsFd::as_fd(&fd), 4096).expect("ftruncate");
    let map = floor_map(&fd, 4096);
    let mut child = spawn_floor_peer(&fd, "peer-floor", &theirs, &[&rounds.to_string()]);
    let ping = map.atomic_u64(0).expect("word");
    let pong = map.atomic_u64(64).expect("word");
    let mut rtts = Vec::with_capacity(rounds);
    for i in 1..=(rounds + rounds / 10) as u64 {
        let t = Instant::now();
        ping.store(i, Ordering::Release);
        while pong.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        if i as usize > rounds / 10 {
            rtts.push(t.elapsed().as_nanos() as u64);
        }
    }
    let _ = child.wait();
    (pct(&mut rtts, 0.5), pct(&mut rtts, 0.99))
}

fn floor_peer(cpus: &[usize], rounds: u64) {
    pin(cpus);
    // SAFETY: the parent placed the memfd at fd 3 for us alone.
    let fd = unsafe { procwire::sys::fd::take_inherited(3) }.expect("fd 3");
    let map = floor_map(&fd, 4096);
    let ping: &AtomicU64 = map.atomic_u64(0).expect("word");
    let pong: &AtomicU64 = map.atomic_u64(64).expect("word");
    for i in 1..=rounds + rounds / 10 {
        while ping.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        pong.store(i, Ordering::Release);
    }
}

/// The ways the bare ring of [`floor_stream`] can move its bytes in.
#[derive(Clone, Copy, PartialEq)]
enum FloorCopy {
    /// Plain stores (the ring then travels through the caches).
    Plain,
    /// Non-temporal stores.
    Streaming,
}

/// Waits in a floor's loop: spin, and after a while offer the CPU (a peer
/// on the same CPU can only move once we let it run); pinned to one CPU,
/// offer it at once.
struct Backoff {
    spins: u32,
    period: u32,
}

impl Backoff {
    fn new(one_cpu: bool) -> Self {
        Self {
            spins: 0,
            period: if one_cpu { 1 } else { 256 },
        }
    }

    fn wait(&mut self) {
        self.spins += 1;
        if self.spins % self.period == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The stream's floor: a bare ring between two processes, no library in
/// the way, each byte copied in and out, waits that spin and then yield.
/// About the most such a ring can move here, with either copy.
fn floor_stream(placement: Placement, bytes: u64, how: FloorCopy) -> f64 {
    let (mine, theirs) = placement.cpus();
    pin(&mine);
    let ring = shm_options().ring_size;
    let fd = memfd_create("shm-bench-floor-stream").expect("memfd");
    ftruncate(std::os::fd::AsFd::as_fd(&fd), (FLOOR_DATA + ring) as u64).expect("ftruncate");
    let map = floor_map(&fd, FLOOR_DATA + ring);
    let mut child = spawn_floor_peer(
        &fd,
        "peer-floor-stream",
        &theirs,
        &[
            &ring.to_string(),
            &bytes.to_string(),
            &(placement == Placement::OneCpu).to_string(),
        ],
    );
    let (tail, head, ready) = floor_words(&map);
    while ready.load(Ordering::Acquire) == 0 {
        std::thread::yield_now();
    }
    let chunk = vec![7u8; CHUNK];
    let data = map.as_ptr().wrapping_add(FLOOR_DATA);
    let t = Instant::now();
    let mut sent = 0u64;
    let mut backoff = Backoff::new(placement == Placement::OneCpu);
    while sent < bytes {
        let free = ring as u64 - (sent - head.load(Ordering::Acquire));
        let n = free.min(CHUNK as u64).min(bytes - sent) as usize;
        if n == 0 {
            backoff.wait();
            continue;
        }
        let at = (sent % ring as u64) as usize;
        let first = n.min(ring - at);
        // SAFETY: `at + first <= ring` and `n - first <= at`: both copies
        // stay in the ring, which the mapping holds after `FLOOR_DATA`;
        // `chunk` has `CHUNK >= n` bytes; every length and offset is a
        // multiple of 64 (all sizes here are).
        unsafe {
            if how == FloorCopy::Plain {
                std::ptr::copy_nonoverlapping(chunk.as_ptr(), data.add(at), first);
                std::ptr::copy_nonoverlapping(chunk.as_ptr().add(first), data, n - first);
            } else {
                store_streaming(chunk.as_ptr(), data.add(at), first);
                store_streaming(chunk.as_ptr().add(first), data, n - first);
            }
        }
        sent += n as u64;
        tail.store(sent, Ordering::Release);
    }
    while head.load(Ordering::Acquire) < bytes {
        backoff.wait();
    }
    let rate = bytes as f64 / t.elapsed().as_secs_f64();
    let _ = child.wait();
    rate
}

/// Maps `len` bytes of a floor's memfd and backs every page.
fn floor_map(fd: &std::os::fd::OwnedFd, len: usize) -> Mapping {
    let map = Mapping::map(std::os::fd::AsFd::as_fd(fd), len, Access::ReadWrite).expect("map");
    map.populate().expect("populate");
    map
}

/// Runs this program as a floor's other process, on `cpus`, with `fd` as
/// its descriptor 3: `role <cpus> <args...>`.
fn spawn_floor_peer(
    fd: &std::os::fd::OwnedFd,
    role: &str,
    cpus: &[usize],
    args: &[&str],
) -> procwire::sys::process::Child {
    let mut spawn = procwire::sys::process::Spawn::new(std::env::current_exe().expect("exe"));
    let cpus: Vec<String> = cpus.iter().map(usize::to_string).collect();
    let cpus = cpus.join(",");
    spawn
        .args([role, cpus.as_str()].iter().chain(args))
        .fd(std::os::fd::AsFd::as_fd(fd), 3);
    spawn.spawn().expect("spawn floor peer")
}

/// The bare ring's layout: the writer's index, the reader's, the reader's
/// "mapped" flag, each on its own cache line; then the bytes.
const FLOOR_DATA: usize = 4096;

fn floor_words(map: &Mapping) -> (&AtomicU64, &AtomicU64, &AtomicU64) {
    (
        map.atomic_u64(0).expect("word"),
        map.atomic_u64(128).expect("word"),
        map.atomic_u64(256).expect("word"),
    )
}

fn floor_stream_peer(cpus: &[usize], ring: usize, bytes: u64, one_cpu: bool) {
    pin(cpus);
    // SAFETY: the parent placed the memfd at fd 3 for us alone.
    let fd = unsafe { procwire::sys::fd::take_inherited(3) }.expect("fd 3");
    let map = floor_map(&fd, FLOOR_DATA + ring);
    let (tail, head, ready) = floor_words(&map);
    ready.store(1, Ordering::Release);
    let data = map.as_ptr().wrapping_add(FLOOR_DATA).cast_const();
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    let mut backoff = Backoff::new(one_cpu);
    while got < bytes {
        let n = (tail.load(Ordering::Acquire) - got).min(CHUNK as u64) as usize;
        if n == 0 {
            backoff.wait();
            continue;
        }
        let at = (got % ring as u64) as usize;
        let first = n.min(ring - at);
        // SAFETY: as in the writer: both copies stay in the ring and in
        // `buf`; the writer won't touch these bytes until `head` passes
        // them.
        unsafe {
            std::ptr::copy_nonoverlapping(data.add(at), buf.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(data, buf.as_mut_ptr().add(first), n - first);
        }
        // Bytes nobody reads could be copied by nobody: keep the copy.
        std::hint::black_box(&mut buf);
        got += n as u64;
        head.store(got, Ordering::Release);
    }
}

/// Copies `len` bytes with non-temporal stores.
///
/// # Safety
///
/// `src` readable and `dst` writable for `len` bytes, apart; `dst` 16-byte
/// aligned and `len` a multiple of 16.
#[cfg(target_arch = "x86_64")]
unsafe fn store_streaming(src: *const u8, dst: *mut u8, len: usize) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
    for i in (0..len).step_by(16) {
        // SAFETY: `i + 16 <= len` (a multiple of 16), inside both ranges;
        // `dst + i` is 16-byte aligned; SSE2 is part of x86-64.
        unsafe {
            let v = _mm_loadu_si128(src.add(i).cast::<__m128i>());
            _mm_stream_si128(dst.add(i).cast::<__m128i>(), v);
        }
    }
    // SAFETY: SSE is part of x86-64; orders the stores before the index.
    unsafe { _mm_sfence() };
}

/// # Safety
///
/// `src` readable and `dst` writable for `len` bytes, apart.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn store_streaming(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
}

/// One-CPU ping-pong of a counter where every wait sleeps: `futex` sleeps on
/// the shared word, `eventfd` in `epoll_wait` on an eventfd that the other
/// side writes. Both sides always make the wake call, so the figures
/// compare the primitives, not a heuristic.
#[cfg(target_os = "linux")]
fn wake_compare(mode: &str, rounds: usize) -> (u64, u64) {
    use procwire::sys::eventfd::EventFd;
    let cpus = [0usize];
    pin(&cpus);
    let fd = memfd_create("shm-bench-wake").expect("memfd");
    ftruncate(std::os::fd::AsFd::as_fd(&fd), 4096).expect("ftruncate");
    let map = Mapping::map(std::os::fd::AsFd::as_fd(&fd), 4096, Access::ReadWrite).expect("map");
    let (mine, theirs) = (
        EventFd::new(0, false).expect("eventfd"),
        EventFd::new(0, false).expect("eventfd"),
    );
    let mut spawn = procwire::sys::process::Spawn::new(std::env::current_exe().expect("exe"));
    spawn
        .args(["peer-wake", mode, "0", &rounds.to_string()])
        .fd(std::os::fd::AsFd::as_fd(&fd), 3)
        .fd(std::os::fd::AsFd::as_fd(&theirs), 4)
        .fd(std::os::fd::AsFd::as_fd(&mine), 5);
    let mut child = spawn.spawn().expect("spawn wake peer");
    let waiter = Waiter::new(mode, mine);
    let ping = map.atomic_u32(0).expect("word");
    let pong = map.atomic_u32(64).expect("word");
    let mut rtts = Vec::with_capacity(rounds);
    for i in 1..=(rounds + rounds / 10) as u32 {
        let t = Instant::now();
        ping.store(i, Ordering::Release);
        waiter.wake(ping, &theirs);
        waiter.wait(pong, i);
        if i as usize > rounds / 10 {
            rtts.push(t.elapsed().as_nanos() as u64);
        }
    }
    let _ = child.wait();
    (pct(&mut rtts, 0.5), pct(&mut rtts, 0.99))
}

#[cfg(target_os = "linux")]
fn wake_peer(mode: &str, cpus: &[usize], rounds: u32) {
    use procwire::sys::eventfd::EventFd;
    pin(cpus);
    // SAFETY: the parent placed the memfd at 3 and the eventfds at 4 (ours)
    // and 5 (the parent's) for us alone.
    let (fd, mine, theirs) = unsafe {
        (
            procwire::sys::fd::take_inherited(3).expect("fd 3"),
            EventFd::from_owned(procwire::sys::fd::take_inherited(4).expect("fd 4")),
            EventFd::from_owned(procwire::sys::fd::take_inherited(5).expect("fd 5")),
        )
    };
    let map = Mapping::map(std::os::fd::AsFd::as_fd(&fd), 4096, Access::ReadWrite).expect("map");
    let ping = map.atomic_u32(0).expect("word");
    let pong = map.atomic_u32(64).expect("word");
    let waiter = Waiter::new(mode, mine);
    for i in 1..=rounds + rounds / 10 {
        waiter.wait(ping, i);
        pong.store(i, Ordering::Release);
        waiter.wake(pong, &theirs);
    }
}

#[cfg(target_os = "linux")]
struct Waiter {
    futex: bool,
    /// Ours, registered in `selector`: kept open for as long as that is.
    _efd: procwire::sys::eventfd::EventFd,
    selector: procwire::sys::event::Selector,
    events: std::cell::RefCell<procwire::sys::event::Events>,
}

#[cfg(target_os = "linux")]
impl Waiter {
    fn new(mode: &str, efd: procwire::sys::eventfd::EventFd) -> Self {
        use procwire::sys::event::{Events, Interest, Mode, Selector, Token};
        let selector = Selector::new().expect("epoll");
        // SAFETY: the eventfd lives in this waiter beside the selector and has
        // no other fd, so closing it takes it out of the set.
        unsafe {
            selector.register(
                std::os::fd::AsFd::as_fd(&efd),
                Token(0),
                Interest::READABLE,
                Mode::Edge,
            )
        }
        .expect("register");
        Self {
            futex: mode == "futex",
            _efd: efd,
            selector,
            events: std::cell::RefCell::new(Events::with_capacity(4)),
        }
    }

    fn wait(&self, word: &std::sync::atomic::AtomicU32, want: u32) {
        loop {
            let v = word.load(Ordering::Acquire);
            if v == want {
                return;
            }
            if self.futex {
                procwire::sys::futex::futex_wait(word, v, None).expect("futex wait");
            } else {
                self.selector
                    .wait(&mut self.events.borrow_mut(), None)
                    .expect("epoll_wait");
            }
        }
    }

    fn wake(&self, word: &std::sync::atomic::AtomicU32, peer: &procwire::sys::eventfd::EventFd) {
        if self.futex {
            procwire::sys::futex::futex_wake(word, 1).expect("futex wake");
        } else {
            peer.write(1).expect("eventfd write");
        }
    }
}

/// Medians of one placement's runs: the stream, the socket and the floors,
/// measured in turn within each run (the order rotating between runs).
struct PlacementFigures {
    shm: Figures,
    unix: Figures,
    /// The cache-line ping-pong's p50 and p99 (two CPUs only).
    ping_pong: Option<(f64, f64)>,
    /// The bare ring with plain stores.
    plain: f64,
    /// The bare ring with streaming stores (not on one CPU, where the
    /// stream copies plainly).
    streaming: Option<f64>,
    /// The copies the stream's large writes ended on, per run.
    copies: String,
    /// Medians of each run's own ratio of the stream to the floors (this
    /// host's speed drifts between runs; within a run the jobs follow each
    /// other closely): throughput over the faster bare ring, p50 and p99
    /// over the ping-pong's.
    vs_floor: (f64, Option<f64>, Option<f64>),
}

fn measure_placement(
    placement: Placement,
    runs: usize,
    rounds: usize,
    bytes: u64,
    dir: &Path,
) -> PlacementFigures {
    #[derive(Clone, Copy)]
    enum Job {
        Shm,
        Unix,
        PingPong,
        Floor(FloorCopy),
    }
    let mut jobs = vec![Job::Shm, Job::Unix, Job::Floor(FloorCopy::Plain)];
    if placement != Placement::OneCpu {
        jobs.push(Job::Floor(FloorCopy::Streaming));
    }
    // Unpinned, the scheduler may put two spinning processes on one CPU,
    // where a spinning ping-pong means nothing: it is for two CPUs.
    if placement == Placement::TwoCpus && cpu_count() > 1 {
        jobs.push(Job::PingPong);
    }
    let (mut s50, mut s99, mut sbw, mut u50, mut u99, mut ubw) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut f50, mut f99, mut plain, mut streaming) = (vec![], vec![], vec![], vec![]);
    let mut copies = Vec::new();
    for run in 0..runs {
        for k in 0..jobs.len() {
            match jobs[(k + run) % jobs.len()] {
                Job::Shm => {
                    let f = measure(true, placement, rounds, bytes, dir);
                    s50.push(f.p50);
                    s99.push(f.p99);
                    sbw.push(f.bytes_per_s);
                    copies.push(match f.copy {
                        Some(CopyPath::Streaming) => "s",
                        _ => "p",
                    });
                }
                Job::Unix => {
                    let f = measure(false, placement, rounds, bytes, dir);
                    u50.push(f.p50);
                    u99.push(f.p99);
                    ubw.push(f.bytes_per_s);
                }
                Job::PingPong => {
                    let (a, b) = floor(placement, rounds);
                    f50.push(a as f64);
                    f99.push(b as f64);
                }
                Job::Floor(how) => {
                    let bw = floor_stream(placement, bytes, how);
                    match how {
                        FloorCopy::Plain => plain.push(bw),
                        FloorCopy::Streaming => streaming.push(bw),
                    }
                }
            }
        }
    }
    let per_run = |ours: &[f64], floor: &dyn Fn(usize) -> f64| {
        median((0..runs).map(|r| ours[r] / floor(r)).collect())
    };
    let bw_ratio = per_run(&sbw, &|r| {
        streaming.get(r).map_or(plain[r], |s| s.max(plain[r]))
    });
    let lat_ratio =
        (!f50.is_empty()).then(|| (per_run(&s50, &|r| f50[r]), per_run(&s99, &|r| f99[r])));
    let fig = |p50: Vec<f64>, p99: Vec<f64>, bw: Vec<f64>| Figures {
        p50: median(p50),
        p99: median(p99),
        bytes_per_s: median(bw),
        copy: None,
    };
    PlacementFigures {
        shm: fig(s50, s99, sbw),
        unix: fig(u50, u99, ubw),
        ping_pong: (!f50.is_empty()).then(|| (median(f50), median(f99))),
        plain: median(plain),
        streaming: (!streaming.is_empty()).then(|| median(streaming)),
        copies: copies.concat(),
        vs_floor: (bw_ratio, lat_ratio.map(|r| r.0), lat_ratio.map(|r| r.1)),
    }
}

fn parse_cpus(s: &str) -> Vec<usize> {
    s.split(',').filter_map(|c| c.parse().ok()).collect()
}

const USAGE: &str =
    "usage: shm_bench [--runs N] [--quick] [--placement one_cpu|two_cpus|unpinned] [--ring BYTES]
                 [--copy auto|plain|streaming]

Shared memory against the machine's own floors and a Unix socket: 64-byte
round trips and a one-way stream, in three CPU placements; one RATIO line
per comparison. --runs N medians over N runs (default 5); --quick uses
fewer messages and bytes; --placement runs one placement only; --ring sets
the ring size of each direction (default 1 MiB); --copy forces the
stream's copy (default auto: chosen per connection).";

/// The options of a benchmark run.
struct Options {
    runs: usize,
    quick: bool,
    placement: Option<String>,
    ring: Option<usize>,
    copy: CopyPath,
}

/// The options, or `None` after `--help`.
fn parse_options() -> Result<Option<Options>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut o = Options {
        runs: 5,
        quick: false,
        placement: None,
        ring: None,
        copy: CopyPath::Auto,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("runs") => {
                o.runs = p.value()?.parse()?;
                if o.runs == 0 {
                    return Err("--runs must be at least 1".into());
                }
            }
            Long("quick") => o.quick = true,
            Long("placement") => {
                let v = p.value()?.string()?;
                if !["one_cpu", "two_cpus", "unpinned"].contains(&v.as_str()) {
                    return Err(format!("--placement {v:?}: one_cpu, two_cpus or unpinned").into());
                }
                o.placement = Some(v);
            }
            Long("ring") => {
                let r: usize = p.value()?.parse()?;
                if !r.is_power_of_two() || r < 4096 {
                    return Err(format!("--ring {r}: a power of two of at least 4096").into());
                }
                o.ring = Some(r);
            }
            Long("copy") => {
                o.copy = match p.value()?.string()?.as_str() {
                    "auto" => CopyPath::Auto,
                    "plain" => CopyPath::Plain,
                    "streaming" => CopyPath::Streaming,
                    v => return Err(format!("--copy {v:?}: auto, plain or streaming").into()),
                };
            }
            Short('h') | Long("help") => return Ok(None),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Some(o))
}

/// A ratio with three significant digits (at least three decimals), so a
/// tiny one never prints as 0.000.
fn three_digits(x: f64) -> String {
    let decimals = if x > 0.0 && x < 1.0 {
        (2.0 - x.log10().floor()).clamp(3.0, 12.0) as usize
    } else {
        3
    };
    format!("{x:.decimals$}")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("peer-shm") | Some("peer-unix") => {
            pin(&parse_cpus(&args[2]));
            let path = PathBuf::from(&args[1]);
            if args[0] == "peer-shm" {
                let l = ShmListener::bind(&path).expect("bind");
                outln!("ready");
                cli::flush();
                let s = l.accept().expect("accept");
                serve(s, &args[3]);
            } else {
                let l = UnixListener::bind(&path).expect("bind");
                outln!("ready");
                cli::flush();
                let (s, _) = l.accept().expect("accept");
                serve(s, &args[3]);
            }
            return ExitCode::SUCCESS;
        }
        Some("peer-floor-stream") => {
            floor_stream_peer(
                &parse_cpus(&args[1]),
                args[2].parse().unwrap_or(1 << 20),
                args[3].parse().unwrap_or(0),
                args[4] == "true",
            );
            return ExitCode::SUCCESS;
        }
        Some("peer-floor") => {
            floor_peer(&parse_cpus(&args[1]), args[2].parse().unwrap_or(0));
            return ExitCode::SUCCESS;
        }
        #[cfg(target_os = "linux")]
        Some("peer-wake") => {
            wake_peer(
                &args[1],
                &parse_cpus(&args[2]),
                args[3].parse().unwrap_or(0),
            );
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let opts = match parse_options() {
        Ok(Some(o)) => o,
        Ok(None) => return cli::help(USAGE),
        Err(e) => return cli::usage_error("shm_bench", USAGE, e),
    };
    let _ = COPY.set(opts.copy);
    cpu_count();
    if let Some(r) = opts.ring {
        let _ = RING.set(r);
    }
    let (quick, runs, only) = (opts.quick, opts.runs, opts.placement);
    let (rounds, bytes) = if quick {
        (2_000, 64 << 20)
    } else {
        (20_000, 512 << 20)
    };
    if cpu_count() < 2 {
        outln!("shm_bench: only one CPU: the two-CPU placement is the one-CPU placement here");
    }
    let dir = std::env::temp_dir().join(format!("procwire-shm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut ratios = Vec::new();
    outln!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10}  {}",
        "placement",
        "shm p50",
        "unix p50",
        "floor p50",
        "shm p99",
        "unix p99",
        "floor p99",
        "shm MB/s",
        "unix MB/s",
        "plain MB/s",
        "strm MB/s",
        "copy"
    );
    for placement in [Placement::OneCpu, Placement::TwoCpus, Placement::Unpinned] {
        if only.as_deref().is_some_and(|o| o != placement.name()) {
            continue;
        }
        let m = measure_placement(placement, runs, rounds, bytes, &dir);
        let us = |ns: Option<f64>| ns.map_or("-".to_string(), |v| format!("{:.2}us", v / 1e3));
        let mbs = |b: Option<f64>| b.map_or("-".to_string(), |v| format!("{:.0}", v / 1e6));
        outln!(
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10}  {}",
            placement.name(),
            us(Some(m.shm.p50)),
            us(Some(m.unix.p50)),
            us(m.ping_pong.map(|p| p.0)),
            us(Some(m.shm.p99)),
            us(Some(m.unix.p99)),
            us(m.ping_pong.map(|p| p.1)),
            mbs(Some(m.shm.bytes_per_s)),
            mbs(Some(m.unix.bytes_per_s)),
            mbs(Some(m.plain)),
            mbs(m.streaming),
            m.copies
        );
        let n = placement.name();
        let (shm, unix) = (&m.shm, &m.unix);
        // Against the machine's own floors, run by run.
        ratios.push(format!(
            "RATIO shm_bench/throughput_vs_floor_{n} = {:.3} goal >= 0.9",
            m.vs_floor.0
        ));
        if let (Some(p50), Some(p99)) = (m.vs_floor.1, m.vs_floor.2) {
            ratios.push(format!(
                "RATIO shm_bench/p50_vs_floor_{n} = {p50:.3} goal <= 2.0"
            ));
            ratios.push(format!(
                "RATIO shm_bench/p99_vs_floor_{n} = {p99:.3} goal <= 2.5"
            ));
        }
        // Against the socket (information beside the floors: the socket's
        // own speed differs 2x between hosts).
        let (bw_goal, p50_goal, p99_goal) = if placement == Placement::OneCpu {
            (3.0, 0.6, 0.8)
        } else {
            (1.0, 0.1, 0.1)
        };
        ratios.push(format!(
            "RATIO shm_bench/throughput_{n} = {:.2} goal >= {bw_goal}",
            shm.bytes_per_s / unix.bytes_per_s
        ));
        ratios.push(format!(
            "RATIO shm_bench/p50_{n} = {} goal <= {p50_goal}",
            three_digits(shm.p50 / unix.p50)
        ));
        ratios.push(format!(
            "RATIO shm_bench/p99_{n} = {} goal <= {p99_goal}",
            three_digits(shm.p99 / unix.p99)
        ));
    }
    pin(&(0..cpu_count()).collect::<Vec<_>>());
    #[cfg(target_os = "linux")]
    if only.is_none() || only.as_deref() == Some("one_cpu") {
        let (mut f50, mut f99, mut e50, mut e99) = (vec![], vec![], vec![], vec![]);
        for _ in 0..runs {
            let (a, b) = wake_compare("futex", rounds);
            let (c, d) = wake_compare("eventfd", rounds);
            f50.push(a as f64);
            f99.push(b as f64);
            e50.push(c as f64);
            e99.push(d as f64);
        }
        let (f50, f99, e50, e99) = (median(f50), median(f99), median(e50), median(e99));
        outln!(
            "wake one_cpu  futex p50 {:.2}us p99 {:.2}us; eventfd+epoll p50 {:.2}us p99 {:.2}us",
            f50 / 1e3,
            f99 / 1e3,
            e50 / 1e3,
            e99 / 1e3
        );
        ratios.push(format!(
            "RATIO shm_bench/wake_eventfd_vs_futex_p50 = {:.3} goal <= 1.1",
            e50 / f50
        ));
        pin(&(0..cpu_count()).collect::<Vec<_>>());
    }
    let _ = std::fs::remove_dir_all(&dir);
    for r in ratios {
        outln!("{r}");
    }
    ExitCode::SUCCESS
}
