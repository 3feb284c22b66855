//! Which copy a large write across CPUs takes into the ring: plain stores,
//! which leave the bytes in the writer's caches for the reader to pull, or
//! streaming (non-temporal) stores, which send them towards memory.
//!
//! Which is faster is a property of the host, not of the code: measured
//! with `shm_bench`, streaming won by 1.3x on one host, plain by 1.8x on
//! the next, and on a third the two floors swapped places between runs. So
//! the choice is made per connection while it runs:
//!
//! - the first guess comes from the cache topology the kernel reports: two
//!   CPUs that share a last-level cache start with plain stores (the bytes
//!   meet in that cache), others with streaming stores;
//! - then the writer measures. Large writes are counted in epochs of
//!   [`EPOCH`] bytes, timed from the first write to the end of the last,
//!   waits for ring space included, so an epoch's rate is what the
//!   reader actually took. A probe runs [`PROBE`] epochs alternating the
//!   two copies, keeps each copy's best epoch (an epoch slowed by a
//!   preemption only looks slower, never faster) and takes the faster copy
//!   for the next [`EXPLOIT`] epochs; then it probes again, so a change of
//!   placement or load is followed. An epoch on the chosen copy that falls
//!   below [`RIVAL`] of what the other copy reached probes again at once;
//! - a pause between large writes longer than [`GAP`] ends the epoch
//!   uncounted: the application's own pace says nothing about the copy.
//!
//! Small writes (under `STREAMING_MIN`) and writes to a reader on the same
//! CPU always use plain stores and are not counted. [`CopyPath::Plain`] and
//! [`CopyPath::Streaming`] force a copy (for tests and benchmarks).

use std::time::{Duration, Instant};

/// How writes of a [`ShmStream`](super::ShmStream) are copied into its ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CopyPath {
    /// Chosen per connection by measurement: a first guess from the cache
    /// topology the kernel reports, then whichever copy moved the
    /// connection's own large writes faster, measured again from time to
    /// time. The default.
    #[default]
    Auto,
    /// Plain stores for every write.
    Plain,
    /// Non-temporal stores for large writes to a reader on another CPU
    /// (x86-64; elsewhere the same as plain).
    Streaming,
}

/// Bytes per measured epoch.
pub(crate) const EPOCH: u64 = 4 << 20;
/// Epochs per probe, alternating the two copies.
pub(crate) const PROBE: u32 = 6;
/// Epochs on the chosen copy between probes.
pub(crate) const EXPLOIT: u32 = 64;
/// An epoch on the chosen copy slower than this share of the other
/// copy's best in the probe starts a new probe at once.
pub(crate) const RIVAL: f64 = 0.75;
/// A pause between large writes that ends an epoch uncounted.
pub(crate) const GAP: Duration = Duration::from_micros(500);

/// Where the chooser is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Epoch `k` of a probe (copies alternate, the guess first).
    Probe(u32),
    /// Epochs left on the chosen copy.
    Exploit(u32),
}

/// One writer's choice, for large writes to a reader on another CPU.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chooser {
    mode: CopyPath,
    /// What the next probe starts with (the topology's guess, then the
    /// last winner).
    first: bool,
    streaming: bool,
    phase: Phase,
    /// The epoch's start and its last write's end; bytes so far.
    start: Option<Instant>,
    last: Option<Instant>,
    bytes: u64,
    /// Each copy's best rate in this probe (bytes per second): plain,
    /// streaming.
    best: [f64; 2],
    /// The best rate the copy not chosen reached in the last probe.
    rival: f64,
}

impl Chooser {
    /// A chooser in `mode`; `guess_streaming` is the topology's guess.
    pub(crate) fn new(mode: CopyPath, guess_streaming: bool) -> Self {
        Self {
            mode,
            first: guess_streaming,
            streaming: guess_streaming,
            phase: Phase::Probe(0),
            start: None,
            last: None,
            bytes: 0,
            best: [0.0; 2],
            rival: 0.0,
        }
    }

    #[cfg(test)]
    fn mode(&self) -> CopyPath {
        self.mode
    }

    /// The copy a large cross-CPU write takes now: `true` for streaming.
    pub(crate) fn streaming(&self) -> bool {
        match self.mode {
            CopyPath::Plain => false,
            CopyPath::Streaming => true,
            CopyPath::Auto => self.streaming,
        }
    }

    /// A large cross-CPU write begins at `now`.
    pub(crate) fn begin(&mut self, now: Instant) {
        if self.mode != CopyPath::Auto {
            return;
        }
        match self.last {
            Some(last) if now.saturating_duration_since(last) <= GAP => {}
            // First write, or after a pause: the epoch starts over.
            _ => {
                self.start = Some(now);
                self.bytes = 0;
            }
        }
    }

    /// The write that began last moved `n` bytes and ended at `now`.
    pub(crate) fn end(&mut self, n: usize, now: Instant) {
        if self.mode != CopyPath::Auto {
            return;
        }
        self.last = Some(now);
        self.bytes += n as u64;
        let Some(start) = self.start else {
            return;
        };
        if self.bytes < EPOCH {
            return;
        }
        // A clock that did not move gives a huge rate, never a division
        // by zero.
        let secs = now.saturating_duration_since(start).as_secs_f64();
        let rate = self.bytes as f64 / secs.max(1e-9);
        self.start = Some(now);
        self.bytes = 0;
        self.epoch_done(rate);
    }

    /// Moves on after an epoch measured at `rate` on the current copy.
    fn epoch_done(&mut self, rate: f64) {
        match self.phase {
            Phase::Probe(k) => {
                let i = usize::from(self.streaming);
                self.best[i] = self.best[i].max(rate);
                if k + 1 < PROBE {
                    self.phase = Phase::Probe(k + 1);
                    self.streaming = !self.streaming;
                } else {
                    // Ties keep the guess.
                    let (plain, streaming) = (self.best[0], self.best[1]);
                    self.streaming = streaming > plain || (streaming == plain && self.first);
                    self.first = self.streaming;
                    self.rival = self.best[usize::from(!self.streaming)];
                    self.best = [0.0; 2];
                    self.phase = Phase::Exploit(EXPLOIT);
                }
            }
            Phase::Exploit(left) => {
                // Well below what the other copy did: the host changed (or
                // the probe was unlucky), so probe again now.
                if left > 1 && rate >= self.rival * RIVAL {
                    self.phase = Phase::Exploit(left - 1);
                } else {
                    self.phase = Phase::Probe(0);
                    self.streaming = self.first;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `epochs` epochs, each at the rate `rate(streaming)` in
    /// bytes/ns, with 1 MiB writes and no pauses; returns the choice after
    /// each epoch.
    fn drive(
        c: &mut Chooser,
        t: &mut Instant,
        epochs: u32,
        rate: impl Fn(bool) -> u64,
    ) -> Vec<bool> {
        let mut seen = Vec::new();
        for _ in 0..epochs {
            let mut written = 0;
            while written < EPOCH {
                let n = 1 << 20;
                c.begin(*t);
                *t += Duration::from_nanos(n / rate(c.streaming()));
                c.end(n as usize, *t);
                written += n;
            }
            seen.push(c.streaming());
        }
        seen
    }

    #[test]
    fn the_probe_alternates_from_the_guess_then_keeps_the_faster_copy() {
        for guess in [false, true] {
            for streaming_faster in [false, true] {
                let mut c = Chooser::new(CopyPath::Auto, guess);
                let mut t = Instant::now();
                assert_eq!(c.streaming(), guess);
                let rate = |s: bool| if s == streaming_faster { 20 } else { 10 };
                let seen = drive(&mut c, &mut t, PROBE, rate);
                // Probe epochs alternate from the guess, then decide.
                let n = PROBE as usize;
                for (k, &s) in seen[..n - 1].iter().enumerate() {
                    assert_eq!(s, guess == (k % 2 == 1), "epoch {k} after guess {guess}");
                }
                assert_eq!(seen[n - 1], streaming_faster, "guess {guess}");
                let seen = drive(&mut c, &mut t, EXPLOIT - 1, rate);
                assert!(seen.iter().all(|&s| s == streaming_faster));
                // The last exploit epoch starts the next probe, from the
                // winner.
                assert_eq!(c.phase, Phase::Exploit(1));
                drive(&mut c, &mut t, 1, rate);
                assert_eq!(c.phase, Phase::Probe(0));
                assert_eq!(c.streaming(), streaming_faster);
            }
        }
    }

    #[test]
    fn a_probe_follows_a_change_of_host_behaviour() {
        let mut c = Chooser::new(CopyPath::Auto, false);
        let mut t = Instant::now();
        drive(&mut c, &mut t, PROBE, |s| if s { 10 } else { 20 });
        assert!(!c.streaming());
        // Now streaming is faster: the next probe (after the exploit
        // epochs) switches.
        let after = drive(&mut c, &mut t, EXPLOIT + PROBE, |s| if s { 30 } else { 20 });
        assert!(after[..EXPLOIT as usize - 1].iter().all(|&s| !s));
        assert!(c.streaming(), "{after:?}");
    }

    #[test]
    fn one_slow_epoch_does_not_decide() {
        let mut c = Chooser::new(CopyPath::Auto, true);
        let mut t = Instant::now();
        // Streaming is faster, but its first probe epoch is preempted.
        for epoch in 0..PROBE {
            let streaming = c.streaming();
            let rate = match (streaming, epoch) {
                (true, 0) => 1,
                (true, _) => 20,
                (false, _) => 10,
            };
            drive(&mut c, &mut t, 1, |_| rate);
        }
        assert!(c.streaming());
    }

    #[test]
    fn a_chosen_copy_that_falls_far_behind_probes_again_at_once() {
        let mut c = Chooser::new(CopyPath::Auto, false);
        let mut t = Instant::now();
        drive(&mut c, &mut t, PROBE, |s| if s { 10 } else { 20 });
        assert!(!c.streaming());
        // Plain slows to 7 (under 0.75 of streaming's 10): the next epoch
        // starts a probe, which finds streaming faster now.
        let seen = drive(&mut c, &mut t, 1 + PROBE, |s| if s { 10 } else { 7 });
        assert_eq!(c.phase, Phase::Exploit(EXPLOIT), "{seen:?}");
        assert!(c.streaming(), "{seen:?}");
        // A smaller slowdown (to 0.8 of the rival) is no reason.
        let mut c = Chooser::new(CopyPath::Auto, false);
        drive(&mut c, &mut t, PROBE, |s| if s { 10 } else { 20 });
        drive(&mut c, &mut t, 3, |s| if s { 10 } else { 8 });
        assert_eq!(c.phase, Phase::Exploit(EXPLOIT - 3));
        assert!(!c.streaming());
    }

    #[test]
    fn a_pause_ends_the_epoch_uncounted() {
        let mut c = Chooser::new(CopyPath::Auto, false);
        let mut t = Instant::now();
        // Just under an epoch, then a pause: nothing counted.
        let n = (EPOCH - 1) as usize;
        c.begin(t);
        t += Duration::from_micros(100);
        c.end(n, t);
        t += GAP + Duration::from_nanos(1);
        c.begin(t);
        t += Duration::from_micros(10);
        c.end(1, t);
        assert_eq!(c.phase, Phase::Probe(0), "the pause restarted the epoch");
        assert!(!c.streaming());
        // Within the gap the epoch goes on and completes.
        t += GAP;
        c.begin(t);
        t += Duration::from_micros(10);
        c.end(n, t);
        assert_eq!(c.phase, Phase::Probe(1));
        assert!(c.streaming());
    }

    #[test]
    fn a_forced_copy_never_changes_and_ties_keep_the_guess() {
        for (mode, want) in [(CopyPath::Plain, false), (CopyPath::Streaming, true)] {
            let mut c = Chooser::new(mode, !want);
            let mut t = Instant::now();
            let seen = drive(&mut c, &mut t, 2 * PROBE, |s| if s { 1 } else { 50 });
            assert!(seen.iter().all(|&s| s == want), "{mode:?}");
            assert_eq!(c.mode(), mode);
        }
        for guess in [false, true] {
            let mut c = Chooser::new(CopyPath::Auto, guess);
            let mut t = Instant::now();
            let seen = drive(&mut c, &mut t, PROBE, |_| 10);
            assert_eq!(seen[PROBE as usize - 1], guess);
        }
    }
}
