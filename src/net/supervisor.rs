//! A process supervisor: it starts N children with reserved ports, keeps
//! each reservation until its child has exited, reaps every child, forwards
//! SIGINT/SIGTERM as SIGTERM (then SIGKILL after a grace period), and
//! reports how each one ended. It waits on an [`EventLoop`] of its own,
//! where SIGCHLD, SIGINT and SIGTERM arrive as events.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::event::EventLoop;
use super::port::{pass_listeners, Reservation, ReservationBuilder};
use crate::sys::process::{Child, ExitStatus, Spawn};
use crate::sys::signal::Signal;
use crate::sys::socket::{Domain, SockAddr, Socket, Type};
use crate::sys::{errno, Error, Result};

/// How a child learns its port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Handoff {
    /// By number: `{port}` in its command and `PORT` in its environment; it
    /// binds with `SO_REUSEPORT` (hand-off 1).
    #[default]
    Port,
    /// The listening socket itself at fd 3 (and 4 for the IPv6 hold), by the
    /// socket-activation protocol, plus the number as with `Port` (hand-off 2).
    Listener,
}

/// When a child counts as ready, for [`Supervisor::wait_ready`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Readiness {
    /// As soon as it has started (the default).
    #[default]
    Started,
    /// Its port accepts a TCP connection on 127.0.0.1. Meant for the
    /// hand-off by port number: with [`Handoff::Listener`] the socket
    /// listens before the child starts, so it is ready at once.
    Connect,
    /// A Unix stream socket at this path (a template, like the child's
    /// command) accepts a connection.
    ConnectUnix(String),
    /// This command exits 0 (program first; templates as in the child's
    /// command). Run again after each failure, with back-off; one run that
    /// takes longer than 10 s is killed and counts as a failure.
    Command(Vec<String>),
    /// The systemd notify protocol: the child gets `NOTIFY_SOCKET`, an
    /// abstract datagram socket of its own, and is ready once it sends
    /// `READY=1` ([`notify`] is the child's side). Messages are taken only
    /// from the child's own pid, as the kernel vouches for it
    /// (`SCM_CREDENTIALS`): a child can't speak for another. `STATUS=`,
    /// `STOPPING=1` and `WATCHDOG=1` are kept too (see
    /// [`ChildSpec::watchdog`]).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Notify,
    /// A line of the child's output (stdout or stderr) contains this text.
    /// Turns on [`ChildSpec::capture_output`] (with no prefix unless one
    /// was set).
    Output(String),
}

/// Sends `state` (newline-separated `KEY=VALUE` lines such as `READY=1` or
/// `STATUS=loading`) to the supervisor by the systemd notify protocol, to
/// the socket `NOTIFY_SOCKET` names (`@` for an abstract name). `Ok(false)`
/// when the variable is not set (no one listens), as `sd_notify` returns 0.
///
/// # Errors
///
/// Those of the socket calls, for example `ECONNREFUSED` when nothing is
/// bound at that name any more.
pub fn notify(state: &str) -> Result<bool> {
    let Some(at) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let addr = SockAddr::parse_unix(&at.to_string_lossy())?;
    let s = Socket::new(Domain::UNIX, Type::DGRAM)?;
    s.send_to(state.as_bytes(), addr)?;
    Ok(true)
}

/// How long a child gets to become ready unless its spec says otherwise.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest one readiness command may run.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// One child to start: a command template and what to give it.
///
/// In the command, `{port}` becomes the child's port, `{ports}` all ports
/// (comma-separated, in child order), `{peers}` all ports but its own, and
/// `{index}` its position (from 0).
#[derive(Debug)]
pub struct ChildSpec {
    name: String,
    command: Vec<String>,
    env: Vec<(String, String)>,
    handoff: Handoff,
    fds: Vec<(OwnedFd, RawFd)>,
    ready: Readiness,
    ready_timeout: Duration,
    watchdog: Option<Duration>,
    after: Vec<usize>,
    capture: Option<String>,
}

impl ChildSpec {
    /// A child called `name` (in reports and errors) running `command`
    /// (program first).
    pub fn new<I, S>(name: impl Into<String>, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            name: name.into(),
            command: command.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            handoff: Handoff::Port,
            fds: Vec::new(),
            ready: Readiness::Started,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            watchdog: None,
            after: Vec::new(),
            capture: None,
        }
    }

    /// Takes the child's stdout and stderr (those not placed with
    /// [`fd`](Self::fd)) through pipes and forwards them line by line to
    /// this process's stdout and stderr, each line after `prefix` (as
    /// foreman does, `"web.1 | "`), keeping the last lines for the reports
    /// ([`ChildReport::last_lines`]). Forwarding happens while the
    /// supervisor waits ([`Supervisor::run`], [`Supervisor::poll`],
    /// [`Supervisor::wait_ready`]): a caller that stops polling for long
    /// lets a chatty child block on a full pipe.
    pub fn capture_output(mut self, prefix: impl Into<String>) -> Self {
        self.capture = Some(prefix.into());
        self
    }

    /// Starts the child only once the children at these indices (all
    /// before it in the list) are ready: [`Supervisor::start`] waits for
    /// them first, and fails as [`Supervisor::wait_ready`] does if one of
    /// them dies or misses its deadline.
    pub fn after(mut self, deps: impl IntoIterator<Item = usize>) -> Self {
        self.after.extend(deps);
        self
    }

    /// Asks the child for `WATCHDOG=1` at least every `period`
    /// (`WATCHDOG_USEC` in its environment, as systemd sets it; with
    /// [`Readiness::Notify`]). Once it is ready, a child that lets a period
    /// pass without one is sent `SIGABRT`, as systemd does, and counts as
    /// failed ([`ChildReport::watchdog_lapsed`]).
    pub fn watchdog(mut self, period: Duration) -> Self {
        self.watchdog = Some(period);
        self
    }

    /// When the child counts as ready ([`Supervisor::wait_ready`]).
    pub fn ready(mut self, ready: Readiness) -> Self {
        self.ready = ready;
        self
    }

    /// How long it gets to become ready, from its start (default
    /// [`DEFAULT_READY_TIMEOUT`]).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Sets an environment variable (the value is a template too).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Chooses the hand-off.
    pub fn handoff(mut self, handoff: Handoff) -> Self {
        self.handoff = handoff;
        self
    }

    /// Places `fd` at number `target` in the child (1 to capture its stdout,
    /// say); the supervisor closes its copy once the child started.
    pub fn fd(mut self, fd: OwnedFd, target: RawFd) -> Self {
        self.fds.push((fd, target));
        self
    }
}

/// How the supervisor runs and stops its children: start from `Default`
/// and change what you need, by the setters or by assigning the fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SupervisorOptions {
    /// How ports are reserved (default: TCP on 127.0.0.1 and ::1).
    pub reservation: ReservationBuilder,
    /// How long children get between SIGTERM and SIGKILL (default 5 s).
    pub grace: Duration,
    /// Stop everything when one child fails (default true).
    pub stop_on_failure: bool,
    /// Stop after this long (default: no limit).
    pub duration: Option<Duration>,
    /// Catch SIGINT and SIGTERM and stop the children on them (default true).
    pub handle_signals: bool,
}

option_setters!(SupervisorOptions {
    /// Sets [`reservation`](Self#structfield.reservation).
    reservation: ReservationBuilder,
    /// Sets [`grace`](Self#structfield.grace).
    grace: Duration,
    /// Sets [`stop_on_failure`](Self#structfield.stop_on_failure).
    stop_on_failure: bool,
    /// Sets [`duration`](Self#structfield.duration).
    duration: Option<Duration>,
    /// Sets [`handle_signals`](Self#structfield.handle_signals).
    handle_signals: bool,
});

impl Default for SupervisorOptions {
    fn default() -> Self {
        Self {
            reservation: ReservationBuilder::new(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .both_loopback_families(true),
            grace: Duration::from_secs(5),
            stop_on_failure: true,
            duration: None,
            handle_signals: true,
        }
    }
}

/// What is known of one child.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildReport {
    /// Its name from the [`ChildSpec`].
    pub name: String,
    /// Its program.
    pub program: String,
    /// Its process id.
    pub pid: i32,
    /// Its port.
    pub port: u16,
    /// How it ended, once it has.
    pub status: Option<ExitStatus>,
    /// Whether the supervisor sent it SIGTERM or SIGKILL.
    pub stopped_by_supervisor: bool,
    /// The last `STATUS=` it sent by the notify protocol.
    pub status_text: Option<String>,
    /// It said `STOPPING=1`.
    pub stopping: bool,
    /// It let its watchdog period pass and was sent `SIGABRT`.
    pub watchdog_lapsed: bool,
    /// Notify messages to its socket from other processes, refused.
    pub refused_notifications: u64,
    /// The last lines of its output, with [`ChildSpec::capture_output`]
    /// (at most [`TAIL_LINES`]).
    pub last_lines: Vec<String>,
}

/// How many of a child's last output lines are kept.
pub const TAIL_LINES: usize = 10;

/// Longest line kept whole for matching and the tail; longer ones are cut.
const MAX_LINE: usize = 64 * 1024;

/// What the capture of one child's output knows.
#[derive(Default)]
struct OutputState {
    tail: std::collections::VecDeque<String>,
    pattern: Option<String>,
    seen: bool,
}

impl OutputState {
    fn line(&mut self, line: &str) {
        if self.pattern.as_deref().is_some_and(|p| line.contains(p)) {
            self.seen = true;
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
    }
}

/// Forwards what is in `pipe` to this process's stdout or stderr, line by
/// line after `prefix`; at end-of-file the last partial line too.
fn forward_output(
    pipe: &std::fs::File,
    partial: &mut Vec<u8>,
    prefix: &str,
    to_stderr: bool,
    state: &RefCell<OutputState>,
) -> std::io::Result<bool> {
    use std::io::{Read, Write};
    let mut buf = [0u8; 8192];
    let mut eof = false;
    loop {
        match (&*pipe).read(&mut buf) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => partial.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if partial.len() > MAX_LINE && !partial.contains(&b'\n') {
            partial.push(b'\n');
        }
    }
    if eof && !partial.is_empty() && !partial.ends_with(b"\n") {
        partial.push(b'\n');
    }
    let mut out = Vec::new();
    while let Some(end) = partial.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = partial.drain(..=end).collect();
        let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(&line);
        state.borrow_mut().line(&text);
    }
    if !out.is_empty() {
        // A closed stdout of ours is no reason to stop the child.
        let _ = if to_stderr {
            std::io::stderr().write_all(&out)
        } else {
            std::io::stdout().write_all(&out)
        };
    }
    Ok(eof)
}

impl ChildReport {
    /// It ended badly: non-zero exit, or a signal the supervisor didn't send.
    pub fn failed(&self) -> bool {
        if self.watchdog_lapsed {
            return true;
        }
        match self.status {
            None | Some(ExitStatus::Exited(0)) => false,
            Some(ExitStatus::Signaled(s)) if self.stopped_by_supervisor => {
                s != Signal::TERM && s != Signal::KILL
            }
            Some(_) => true,
        }
    }
}

impl fmt::Display for ChildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (pid {}, port {}, {})",
            self.name, self.pid, self.port, self.program
        )?;
        match self.status {
            Some(s) => write!(f, ": {s}"),
            None => f.write_str(": running"),
        }
    }
}

/// Why [`Supervisor::run`] stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// Every child exited by itself.
    AllExited,
    /// The configured duration passed.
    Duration,
    /// This process got SIGINT or SIGTERM.
    Signal(Signal),
    /// A child failed (index into the reports).
    ChildFailed(usize),
}

/// The result of [`Supervisor::run`].
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Why it stopped.
    pub reason: StopReason,
    /// Every child, all reaped.
    pub children: Vec<ChildReport>,
}

impl Outcome {
    /// The children that failed.
    pub fn failures(&self) -> impl Iterator<Item = &ChildReport> {
        self.children.iter().filter(|c| c.failed())
    }

    /// No child failed.
    pub fn success(&self) -> bool {
        self.failures().next().is_none()
    }
}

struct Supervised {
    report: ChildReport,
    child: Child,
    /// Held until the child has exited.
    reservation: Option<Reservation>,
    /// What makes it ready, with the templates expanded.
    ready: Readiness,
    is_ready: bool,
    ready_deadline: Instant,
    ready_timeout: Duration,
    /// A readiness command running now, and when it started.
    probe: Option<(Child, Instant)>,
    /// The notify socket, with `READY=1` seen (Linux).
    #[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
    notify: Option<Socket>,
    #[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
    notified_ready: bool,
    /// The watchdog period and the last `WATCHDOG=1` (or the readiness).
    watchdog: Option<(Duration, Instant)>,
    /// The captured output's state, and its registrations.
    output: Option<Rc<RefCell<OutputState>>>,
    _captures: Vec<super::event::Registration>,
}

/// Makes each notify socket name unique within this process.
#[cfg(any(target_os = "linux", target_os = "android"))]
static NOTIFY_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Children started with reserved ports; see the module docs.
///
/// Dropping it stops and reaps whatever still runs, so no child outlives it
/// as a zombie or an orphan.
#[must_use = "dropping a Supervisor stops and reaps its children at once"]
pub struct Supervisor {
    children: Vec<Supervised>,
    opts: SupervisorOptions,
    /// Where the supervisor waits; SIGCHLD, SIGINT and SIGTERM are its
    /// events when `handle_signals` is on.
    lp: EventLoop,
    /// Whether the loop receives signals (else waits poll).
    catching: bool,
    /// The SIGINT or SIGTERM that came, not yet reported.
    stop_signal: Rc<Cell<Option<Signal>>>,
    /// When `opts.duration` runs out.
    deadline: Option<Instant>,
}

/// Replaces the placeholders of one template string.
fn expand(t: &str, index: usize, port: u16, ports: &[u16]) -> String {
    let join = |skip: Option<usize>| {
        ports
            .iter()
            .enumerate()
            .filter(|&(i, _)| Some(i) != skip)
            .map(|(_, p)| p.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    t.replace("{ports}", &join(None))
        .replace("{peers}", &join(Some(index)))
        .replace("{port}", &port.to_string())
        .replace("{index}", &index.to_string())
}

impl Supervisor {
    /// Reserves one port per spec (all or nothing), then starts the children
    /// in order.
    ///
    /// # Errors
    ///
    /// A reservation error, or a spawn error naming the child and program
    /// (`execve(peer-1: ./peer): No such file or directory`); `EINVAL` for
    /// a child that depends ([`ChildSpec::after`]) on one not before it;
    /// those of [`Supervisor::wait_ready`] while a child waits for the
    /// ones it depends on. Children started before the failure are stopped
    /// and reaped first.
    pub fn start(specs: Vec<ChildSpec>, opts: SupervisorOptions) -> Result<Self> {
        for (index, spec) in specs.iter().enumerate() {
            if let Some(&d) = spec.after.iter().find(|&&d| d >= index) {
                return Err(Error::new(
                    "Supervisor::start",
                    format!(
                        "{}: depends on child {d}, which is not started before it",
                        spec.name
                    ),
                    errno::EINVAL,
                ));
            }
        }
        let lp = EventLoop::new()?;
        let stop_signal = Rc::new(Cell::new(None));
        let catching = opts.handle_signals && {
            let seen = Rc::clone(&stop_signal);
            // Any of them ends the wait (`run_once` returns after the turn
            // that saw it): a child ended, or it is time to stop.
            let caught = lp.on_signals(&[Signal::INT, Signal::TERM, Signal::CHLD], move |_, s| {
                if s != Signal::CHLD {
                    seen.set(Some(s));
                }
            });
            match caught {
                Ok(()) => true,
                // The process has all the signal pipes it may: poll instead.
                Err(e) if e.raw_os_error() == errno::EBUSY => false,
                Err(e) => return Err(e),
            }
        };
        let reservations = opts.reservation.reserve_many(specs.len())?;
        let ports: Vec<u16> = reservations.iter().map(Reservation::port).collect();
        let deadline = opts.duration.map(|d| Instant::now() + d);
        let mut sup = Supervisor {
            children: Vec::with_capacity(specs.len()),
            deadline,
            opts,
            lp,
            catching,
            stop_signal,
        };
        for (index, (mut spec, reservation)) in specs.into_iter().zip(reservations).enumerate() {
            let deps = std::mem::take(&mut spec.after);
            let started = if deps.is_empty() {
                Ok(())
            } else {
                sup.wait_ready_of(&deps)
            }
            .and_then(|()| sup.spawn_one(index, spec, reservation, &ports));
            if let Err(e) = started {
                sup.terminate()?;
                return Err(e);
            }
        }
        Ok(sup)
    }

    fn spawn_one(
        &mut self,
        index: usize,
        spec: ChildSpec,
        reservation: Reservation,
        ports: &[u16],
    ) -> Result<()> {
        let port = reservation.port();
        let cmd: Vec<String> = spec
            .command
            .iter()
            .map(|t| expand(t, index, port, ports))
            .collect();
        let Some(program) = cmd.first().cloned() else {
            return Err(Error::new(
                "spawn",
                format!("{}: empty command", spec.name),
                errno::EINVAL,
            ));
        };
        let mut spawn = Spawn::new(&program);
        spawn.args(&cmd[1..]).env("PORT", port.to_string());
        for (k, v) in &spec.env {
            spawn.env(k, expand(v, index, port, ports));
        }
        for (fd, target) in &spec.fds {
            spawn.fd(fd.as_fd(), *target);
        }
        let notify = self.notify_socket(&spec, index, &mut spawn)?;
        let pattern = match &spec.ready {
            Readiness::Output(p) => Some(p.clone()),
            _ => None,
        };
        let prefix = spec
            .capture
            .clone()
            .or_else(|| pattern.as_ref().map(|_| String::new()));
        let mut pipes = Vec::new();
        if prefix.is_some() {
            for target in [1, 2] {
                if spec.fds.iter().all(|&(_, t)| t != target) {
                    let (r, w) = crate::sys::fd::pipe()?;
                    crate::sys::fd::set_nonblocking(r.as_fd(), true)?;
                    pipes.push((r, w, target));
                }
            }
        }
        for (_, w, target) in &pipes {
            spawn.fd(w.as_fd(), *target);
        }
        if let Some(period) = spec.watchdog {
            spawn.env("WATCHDOG_USEC", period.as_micros().to_string());
        }
        if spec.handoff == Handoff::Listener {
            reservation.listen(1024)?;
            let listeners: Vec<(&str, _)> = reservation
                .tcp_sockets()
                .map(|(a, s)| (if a.is_ipv4() { "tcp-ipv4" } else { "tcp-ipv6" }, s.as_fd()))
                .collect();
            pass_listeners(&mut spawn, &listeners)?;
        }
        let child = spawn.spawn().map_err(|e| {
            Error::new(
                e.call(),
                format!("{}: {}", spec.name, e.args()),
                e.raw_os_error(),
            )
        })?;
        drop(spec.fds);
        let output = prefix.as_ref().map(|_| {
            Rc::new(RefCell::new(OutputState {
                pattern: pattern.clone(),
                ..OutputState::default()
            }))
        });
        let mut captures = Vec::new();
        if let (Some(prefix), Some(state)) = (prefix, &output) {
            for (r, w, target) in pipes {
                drop(w);
                let (prefix, state) = (prefix.clone(), Rc::clone(state));
                let mut partial = Vec::new();
                let file = std::fs::File::from(r);
                captures.push(self.lp.register(
                    file,
                    super::event::Interest::READABLE,
                    move |cx, f, _| {
                        if forward_output(f, &mut partial, &prefix, target == 2, &state)? {
                            cx.deregister_current();
                        }
                        Ok(())
                    },
                )?);
            }
        }
        let ready = match spec.ready {
            Readiness::Command(c) => {
                Readiness::Command(c.iter().map(|t| expand(t, index, port, ports)).collect())
            }
            Readiness::ConnectUnix(p) => Readiness::ConnectUnix(expand(&p, index, port, ports)),
            other => other,
        };
        self.children.push(Supervised {
            is_ready: ready == Readiness::Started,
            ready,
            ready_deadline: Instant::now() + spec.ready_timeout,
            ready_timeout: spec.ready_timeout,
            probe: None,
            notify,
            notified_ready: false,
            output,
            _captures: captures,
            watchdog: spec.watchdog.map(|p| (p, Instant::now())),
            report: ChildReport {
                name: spec.name,
                program,
                pid: child.pid(),
                port,
                status: None,
                stopped_by_supervisor: false,
                status_text: None,
                stopping: false,
                watchdog_lapsed: false,
                refused_notifications: 0,
                last_lines: Vec::new(),
            },
            child,
            reservation: Some(reservation),
        });
        Ok(())
    }

    /// Waits until every child is ready by its [`Readiness`], probing with
    /// back-off (from 1 ms, doubling up to 100 ms) and watching for exits.
    ///
    /// # Errors
    ///
    /// `ECHILD` naming the child when one exits before it is ready,
    /// `ETIMEDOUT` naming it when one misses its deadline, `EINTR` when
    /// SIGINT or SIGTERM arrives (it is still reported by the next
    /// [`poll`](Self::poll)). The children keep running: stop them with
    /// [`terminate`](Self::terminate) (or by dropping the supervisor).
    pub fn wait_ready(&mut self) -> Result<()> {
        self.wait_ready_of(&[])
    }

    /// [`wait_ready`](Self::wait_ready) for the children in `only` (all
    /// of them when empty).
    fn wait_ready_of(&mut self, only: &[usize]) -> Result<()> {
        let mut delay = Duration::from_millis(1);
        loop {
            self.reap()?;
            let now = Instant::now();
            let mut waiting = false;
            let mut dead = None;
            for (i, c) in self
                .children
                .iter_mut()
                .enumerate()
                .filter(|(i, c)| !c.is_ready && (only.is_empty() || only.contains(i)))
            {
                if c.report.status.is_some() {
                    dead = Some(i);
                    break;
                }
                if probe(c, now)? {
                    c.is_ready = true;
                    if let Some((_, last)) = c.watchdog.as_mut() {
                        *last = now;
                    }
                    continue;
                }
                if now >= c.ready_deadline {
                    stop_probe(&mut c.probe)?;
                    return Err(Error::new(
                        "wait_ready",
                        match c.report.refused_notifications {
                            0 => format!("{}: not ready after {:?}", c.report.name, c.ready_timeout),
                            n => format!(
                                "{}: not ready after {:?} ({n} notifications from other processes refused)",
                                c.report.name, c.ready_timeout
                            ),
                        },
                        errno::ETIMEDOUT,
                    ));
                }
                waiting = true;
            }
            if let Some(i) = dead {
                return Err(self.died_before_ready(i));
            }
            if !waiting {
                return Ok(());
            }
            if let Some(sig) = self.wait_signal(delay)? {
                self.stop_signal.set(Some(sig));
                return Err(Error::new("wait_ready", format!("got {sig}"), errno::EINTR));
            }
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// The error for child `i`, which exited before it was ready: its
    /// status and, with its output captured, its last lines (what is still
    /// in its pipes is forwarded first).
    fn died_before_ready(&mut self, i: usize) -> Error {
        if self.children[i].output.is_some() {
            for _ in 0..8 {
                if self.lp.run_once(Some(Duration::ZERO)).is_err() {
                    break;
                }
            }
        }
        let r = &self.children()[i];
        let mut text = format!(
            "{} (pid {}, port {}, {}) exited before it was ready: {}",
            r.name,
            r.pid,
            r.port,
            r.program,
            r.status.map_or_else(|| "?".to_string(), |s| s.to_string())
        );
        if !r.last_lines.is_empty() {
            text.push_str("; its last lines:");
            for l in &r.last_lines {
                text.push_str("\n    ");
                text.push_str(l);
            }
        }
        Error::new("wait_ready", text, errno::ECHILD)
    }

    /// Whether each child is ready, in order.
    pub fn ready(&self) -> Vec<bool> {
        self.children.iter().map(|c| c.is_ready).collect()
    }

    /// The child's notify socket, for [`Readiness::Notify`]: an abstract
    /// datagram socket named `procwire-notify/PID/SEQ/INDEX`, passing
    /// credentials, its name in the child's `NOTIFY_SOCKET`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn notify_socket(
        &self,
        spec: &ChildSpec,
        index: usize,
        spawn: &mut Spawn<'_>,
    ) -> Result<Option<Socket>> {
        if spec.ready != Readiness::Notify {
            return Ok(None);
        }
        let seq = NOTIFY_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!(
            "procwire-notify/{}/{seq}/{index}",
            crate::sys::process::getpid()
        );
        let s = Socket::new_nonblocking(Domain::UNIX, Type::DGRAM)?;
        s.set_pass_credentials(true)?;
        s.bind(SockAddr::abstract_name(&name))?;
        spawn.env("NOTIFY_SOCKET", format!("@{name}"));
        Ok(Some(s))
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn notify_socket(
        &self,
        _spec: &ChildSpec,
        _index: usize,
        _spawn: &mut Spawn<'_>,
    ) -> Result<Option<Socket>> {
        Ok(None)
    }

    /// Sends `SIGABRT` to ready children whose watchdog period passed
    /// without a `WATCHDOG=1`.
    fn check_watchdogs(&mut self, now: Instant) -> Result<()> {
        for c in &mut self.children {
            if c.report.status.is_some() || c.report.watchdog_lapsed {
                continue;
            }
            read_notifications(c, now)?;
            if let Some((period, last)) = c.watchdog {
                if c.is_ready && now.duration_since(last) > period {
                    c.report.watchdog_lapsed = true;
                    c.child.kill(Signal::ABRT)?;
                }
            }
        }
        Ok(())
    }

    /// What is known of each child so far.
    pub fn children(&self) -> Vec<ChildReport> {
        self.children
            .iter()
            .map(|c| {
                let mut r = c.report.clone();
                if let Some(o) = &c.output {
                    r.last_lines = o.borrow().tail.iter().cloned().collect();
                }
                r
            })
            .collect()
    }

    /// The children's ports, in order.
    pub fn ports(&self) -> Vec<u16> {
        self.children.iter().map(|c| c.report.port).collect()
    }

    /// Reaps children that have ended, releasing their reservations.
    fn reap(&mut self) -> Result<()> {
        for c in &mut self.children {
            if c.report.status.is_none() {
                if let Some(s) = c.child.try_wait()? {
                    c.report.status = Some(s);
                    c.reservation = None;
                }
            }
        }
        Ok(())
    }

    fn live(&self) -> impl Iterator<Item = &Supervised> {
        self.children.iter().filter(|c| c.report.status.is_none())
    }

    /// Waits up to `timeout` for a signal (SIGCHLD included), returning
    /// SIGINT or SIGTERM if one came. Without signals it polls.
    fn wait_signal(&mut self, timeout: Duration) -> Result<Option<Signal>> {
        let timeout = if self.catching {
            timeout
        } else {
            timeout.min(Duration::from_millis(10))
        };
        self.lp
            .run_once(Some(timeout))
            .map_err(|e| Error::from_io("EventLoop::run_once", e))?;
        Ok(self.stop_signal.take())
    }

    /// Runs until every child has exited, one fails (with
    /// `stop_on_failure`), the duration passes or SIGINT/SIGTERM arrives;
    /// then stops the rest ([`Supervisor::terminate`]) and reports.
    pub fn run(&mut self) -> Result<Outcome> {
        loop {
            // SIGCHLD wakes the wait; the cap is only a backstop.
            if let Some(reason) = self.poll(Duration::from_secs(1))? {
                return self.finish(reason);
            }
        }
    }

    /// One step of [`Supervisor::run`], for callers that drive their own
    /// loop: reaps, checks the stop conditions, then waits at most
    /// `timeout` for a signal. `Some(reason)` means it is time to stop:
    /// call [`Supervisor::finish`].
    pub fn poll(&mut self, timeout: Duration) -> Result<Option<StopReason>> {
        self.check_watchdogs(Instant::now())?;
        self.reap()?;
        if self.live().next().is_none() {
            return Ok(Some(StopReason::AllExited));
        }
        if self.opts.stop_on_failure {
            if let Some(i) = self.children.iter().position(|c| c.report.failed()) {
                return Ok(Some(StopReason::ChildFailed(i)));
            }
        }
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            return Ok(Some(StopReason::Duration));
        }
        let timeout = self.deadline.map_or(timeout, |d| (d - now).min(timeout));
        Ok(self.wait_signal(timeout)?.map(StopReason::Signal))
    }

    /// Stops what still runs ([`Supervisor::terminate`]) and reports.
    pub fn finish(&mut self, reason: StopReason) -> Result<Outcome> {
        self.terminate()?;
        Ok(Outcome {
            reason,
            children: self.children(),
        })
    }

    /// Kills and reaps readiness commands still running.
    fn stop_probes(&mut self) -> Result<()> {
        for c in &mut self.children {
            stop_probe(&mut c.probe)?;
        }
        Ok(())
    }

    /// Sends SIGTERM to every live child, waits up to the grace period for
    /// them to exit (a second SIGINT/SIGTERM cuts it short), SIGKILLs the
    /// rest, and reaps them all.
    pub fn terminate(&mut self) -> Result<()> {
        self.stop_probes()?;
        self.reap()?;
        for c in self
            .children
            .iter_mut()
            // One whose watchdog lapsed has its SIGABRT already.
            .filter(|c| c.report.status.is_none() && !c.report.watchdog_lapsed)
        {
            c.report.stopped_by_supervisor = true;
            // ESRCH can't happen for an unreaped child; anything else is real.
            c.child.kill(Signal::TERM)?;
        }
        let deadline = Instant::now() + self.opts.grace;
        loop {
            self.reap()?;
            let now = Instant::now();
            if self.live().next().is_none() || now >= deadline {
                break;
            }
            if self
                .wait_signal((deadline - now).min(Duration::from_millis(100)))?
                .is_some()
            {
                break;
            }
        }
        for c in self
            .children
            .iter_mut()
            .filter(|c| c.report.status.is_none())
        {
            c.child.kill(Signal::KILL)?;
            c.report.status = Some(c.child.wait()?);
            c.reservation = None;
        }
        Ok(())
    }
}

/// Kills and reaps a readiness command, if one runs.
fn stop_probe(probe: &mut Option<(Child, Instant)>) -> Result<()> {
    if let Some((mut p, _)) = probe.take() {
        // ESRCH can't happen for an unreaped child; it may have exited.
        let _ = p.kill(Signal::KILL);
        p.wait()?;
    }
    Ok(())
}

/// Takes the notify messages waiting on `c`'s socket: only those from its
/// own pid count.
fn read_notifications(c: &mut Supervised, now: Instant) -> Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(s) = &c.notify {
        let mut buf = [0u8; 4096];
        loop {
            let (n, pid) = match crate::sys::fdpass::recv_with_pid_nonblocking(s, &mut buf) {
                Ok(v) => v,
                Err(e) if e.is_would_block() => break,
                Err(e) => return Err(e),
            };
            if pid != Some(c.report.pid) {
                c.report.refused_notifications += 1;
                continue;
            }
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                match line.split_once('=') {
                    Some(("READY", "1")) => c.notified_ready = true,
                    Some(("STATUS", v)) => c.report.status_text = Some(v.to_string()),
                    Some(("STOPPING", "1")) => c.report.stopping = true,
                    Some(("WATCHDOG", "1")) => {
                        if let Some((_, last)) = c.watchdog.as_mut() {
                            *last = now;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let _ = (c, now);
    Ok(())
}

/// One look at whether `c` is ready now.
fn probe(c: &mut Supervised, now: Instant) -> Result<bool> {
    read_notifications(c, now)?;
    match &c.ready {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Readiness::Notify => Ok(c.notified_ready),
        Readiness::Output(_) => Ok(c.output.as_ref().is_some_and(|o| o.borrow().seen)),
        Readiness::ConnectUnix(path) => {
            let s = Socket::new_nonblocking(Domain::UNIX, Type::STREAM)?;
            Ok(s.connect(SockAddr::unix(path)).is_ok())
        }
        Readiness::Started => Ok(true),
        Readiness::Connect => {
            let addr = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, c.report.port));
            let s = Socket::new_nonblocking(Domain::IPV4, Type::STREAM)?;
            match s.connect(addr) {
                Ok(()) => Ok(true),
                Err(e) if e.raw_os_error() == errno::EINPROGRESS => {
                    Ok(s.wait_writable(Duration::from_millis(50))? && s.take_error()?.is_none())
                }
                Err(_) => Ok(false),
            }
        }
        Readiness::Command(cmd) => {
            if let Some((p, started)) = c.probe.as_mut() {
                match p.try_wait()? {
                    Some(s) => {
                        c.probe = None;
                        return Ok(s.success());
                    }
                    None if now.duration_since(*started) > PROBE_LIMIT => {
                        stop_probe(&mut c.probe)?;
                    }
                    None => {}
                }
                return Ok(false);
            }
            let Some(program) = cmd.first() else {
                return Ok(true);
            };
            let mut spawn = Spawn::new(program);
            spawn.args(&cmd[1..]);
            let child = spawn.spawn()?;
            c.probe = Some((child, now));
            Ok(false)
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.stop_probes();
        if self.live().next().is_some() {
            // Nowhere to report from drop; terminate kills and reaps.
            let _ = self.terminate();
        }
    }
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("children", &self.children())
            .field("opts", &self.opts)
            .finish()
    }
}
