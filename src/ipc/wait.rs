//! How a blocked call waits for the peer: spin while the peer runs on
//! another CPU, then sleep (on a futex in the segment where the platform has
//! futexes, else on the socket), checking that the peer lives every
//! [`LIVENESS`], and after a whole idle period sleep on the socket itself.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::segment::{ASLEEP, WAIT_FUTEX, WAIT_NONE, WAIT_SOCKET};
use super::stream::ShmStream;
use crate::sys::cpu::cpu_tag;
use crate::sys::futex::{self, FutexWait};
use crate::sys::socket::Socket;

/// How long a blocked call sleeps before it checks that the peer lives.
pub(crate) const LIVENESS: Duration = Duration::from_millis(40);
/// The longest a waiter sleeps on the socket once idle (see
/// `ShmStream::deep_sleep`): it only bounds a wake-up lost between two
/// processes that share a side without having said so.
const DEEP_BACKSTOP: Duration = Duration::from_secs(1);
/// The longest a waiter spins while the peer runs on another CPU.
const SPIN: Duration = Duration::from_micros(30);
/// The longest a waiter spins for a peer it has just woken to start
/// running: of the order of a wake-up's cost (`shm_bench` prints this
/// host's figure).
const WAKE_SPIN: Duration = Duration::from_micros(100);

/// A readiness check, called between spins and before each sleep.
pub(crate) type Check<'a> = &'a dyn Fn() -> io::Result<bool>;

impl ShmStream {
    /// Blocks until `ready()` or the peer goes: spins first while the peer
    /// runs on another CPU, then sleeps, checking the peer's liveness every
    /// [`LIVENESS`].
    pub(crate) fn wait(&self, word: &AtomicU32, ready: Check<'_>) -> io::Result<()> {
        let s = &self.shared;
        let h = s.header();
        let (mine, theirs) = (&h.running[s.side.index()], &h.running[s.peer().index()]);
        let me = cpu_tag();
        let peer = theirs.load(Ordering::Relaxed);
        let woke = self.woke_peer.take();
        if self.spin(me, peer, woke, ready)? {
            return Ok(());
        }
        if me != 0 && peer == me {
            // On one CPU the peer can only make progress if we let it run:
            // offer the CPU once before paying for a futex sleep.
            std::thread::yield_now();
            if ready()? {
                return Ok(());
            }
        }
        mine.store(me | ASLEEP, Ordering::Relaxed);
        word.store(WAIT_FUTEX, Ordering::SeqCst);
        if ready()? {
            word.store(WAIT_NONE, Ordering::Relaxed);
            mine.store(me, Ordering::Relaxed);
            return Ok(());
        }
        let woke = sleep_on(word, &self.sock);
        word.store(WAIT_NONE, Ordering::Relaxed);
        let mut result = Ok(());
        if !woke {
            // Timed out: is the peer still there?
            self.drain_socket();
            if s.refs().load(Ordering::Relaxed) == 1 {
                result = self.deep_sleep(word, ready);
            }
        }
        mine.store(cpu_tag(), Ordering::Relaxed);
        result
    }

    /// The spin before a sleep, while the peer runs on another CPU (it
    /// then answers soon, and a sleep would cost more than the wait).
    /// Returns whether `ready` became true.
    ///
    /// A peer we have just woken has not said yet where it runs. It most
    /// likely runs where it ran before, so we spin for its wake-up too.
    /// Sleeping at once would make it sleep as well when it next waits (we
    /// would not be running), and both would go on paying a wake-up per
    /// message long after the stall that began it.
    fn spin(
        &self,
        me: u32,
        peer: u32,
        woke: Option<Instant>,
        ready: Check<'_>,
    ) -> io::Result<bool> {
        let (cpu, awake) = (peer & !ASLEEP, peer & ASLEEP == 0);
        if me == 0 || cpu == 0 || cpu == me || !awake && woke.is_none() {
            return Ok(false);
        }
        let start = Instant::now();
        if !awake && !woke.is_some_and(|t| start.duration_since(t) <= WAKE_SPIN) {
            return Ok(false);
        }
        let theirs = &self.shared.header().running[self.shared.peer().index()];
        // Since when the peer has been seen running.
        let mut running = awake.then_some(start);
        let mut i = 0u32;
        loop {
            if ready()? {
                return Ok(true);
            }
            std::hint::spin_loop();
            i += 1;
            if i % 64 != 0 {
                continue;
            }
            let now = theirs.load(Ordering::Relaxed);
            match (now & ASLEEP == 0, running) {
                // Moved onto our CPU: let it run.
                (true, _) if now == me => return Ok(false),
                // Asleep (again), or not awake in time.
                (false, Some(_)) => return Ok(false),
                (false, None) if start.elapsed() > WAKE_SPIN => return Ok(false),
                (true, None) => running = Some(Instant::now()),
                (true, Some(t)) if t.elapsed() > SPIN => return Ok(false),
                _ => {}
            }
        }
    }

    /// Idle for a whole liveness period: sleep on the socket instead, where
    /// the peer's wake is a byte and its death (even by SIGKILL) a hang-up,
    /// so an idle connection takes no CPU at all and a dead peer is noticed
    /// at once. Only for the sole holder of this side: processes that share
    /// it after a fork share its socket, and one could take the byte meant
    /// for the other (`DEEP_BACKSTOP` bounds that case should a plain fork
    /// have left the count at one).
    fn deep_sleep(&self, word: &AtomicU32, ready: Check<'_>) -> io::Result<()> {
        word.store(WAIT_SOCKET, Ordering::SeqCst);
        if ready()? {
            word.store(WAIT_NONE, Ordering::Relaxed);
            return Ok(());
        }
        let r = self.sock.wait_readable(Some(DEEP_BACKSTOP));
        word.store(WAIT_NONE, Ordering::Relaxed);
        self.drain_socket();
        r?;
        Ok(())
    }
}

/// Sleeps while `word` asks for a wake-up, at most [`LIVENESS`]; `false` on
/// a timeout. With futexes the waiter sleeps on the word itself; without,
/// it sleeps on the socket and says so in the word (the waker then sends a
/// byte).
fn sleep_on(word: &AtomicU32, sock: &Socket) -> bool {
    if futex::SUPPORTED {
        return !matches!(
            futex::futex_wait(word, WAIT_FUTEX, Some(LIVENESS)),
            Ok(FutexWait::TimedOut)
        );
    }
    word.store(WAIT_SOCKET, Ordering::SeqCst);
    let _ = sock.set_read_timeout(Some(LIVENESS));
    let mut b = [0u8; 1];
    let r = sock.recv(&mut b);
    let _ = sock.set_read_timeout(None);
    matches!(r, Ok(1))
}

/// Wakes a waiter sleeping on `word`'s futex (no one sleeps on it where
/// there are no futexes).
pub(crate) fn futex_wake(word: &AtomicU32) {
    // Fails only for a bad address, which a live mapping is not.
    let _ = futex::futex_wake(word, 1);
}
