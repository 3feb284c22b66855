//! The seed's `peer`: listens on its port and, on a timer, connects to one of
//! the other peers and exchanges a short message. Each side prints one line
//! per exchange; on SIGTERM or SIGINT it prints a summary line and exits 0.
//!
//! ```text
//! peer PORT [PEER_PORT[,PEER_PORT...]...] [--index I] [--interval-ms MS] [--crash-after N]
//! ```
//!
//! It takes the listening socket from socket activation when one was
//! passed (`LISTEN_FDS`), else binds 127.0.0.1:PORT with `SO_REUSEPORT` to
//! join its parent's reservation. `peer_manager` starts these.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use procwire::net::port::{bind_reserved, listen_fds};
use procwire::sys::event::{Events, Interest, Mode, Selector, Token};
use procwire::sys::process::{getpid, Signal};
use procwire::sys::signal::SignalPipe;
use procwire::sys::socket::{Domain, Socket, Type};
use procwire::sys::{errno, Error};

const USAGE: &str = "usage: peer PORT [PEER_PORT[,PEER_PORT...]...] [--index I] [--interval-ms MS] [--crash-after N]

Listens on 127.0.0.1:PORT (or the socket passed by socket activation) and,
every MS milliseconds (default 100), connects to another peer, chosen at
random but covering every peer once per round, and exchanges a message.
Prints one line per exchange, and a summary line on SIGTERM/SIGINT.
--crash-after N aborts after N exchanges it started (to test supervisors).";

struct Args {
    port: u16,
    peers: Vec<u16>,
    index: usize,
    interval: Duration,
    crash_after: Option<u64>,
}

fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut port = None;
    let mut a = Args {
        port: 0,
        peers: Vec::new(),
        index: 0,
        interval: Duration::from_millis(100),
        crash_after: None,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("index") => a.index = p.value()?.parse()?,
            Long("interval-ms") => a.interval = Duration::from_millis(p.value()?.parse()?),
            Long("crash-after") => a.crash_after = Some(p.value()?.parse()?),
            Short('h') | Long("help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Value(v) if port.is_none() => port = Some(v.parse()?),
            Value(v) => {
                for part in v.string()?.split(',').filter(|s| !s.is_empty()) {
                    a.peers.push(
                        part.parse()
                            .map_err(|e| format!("peer port {part:?}: {e}"))?,
                    );
                }
            }
            _ => return Err(arg.unexpected()),
        }
    }
    a.port = port.ok_or("PORT is required")?;
    Ok(a)
}

/// Runs a peer with the arguments after the program name.
pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let a = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("peer: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match Peer::new(a).and_then(|mut p| p.serve()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A small xorshift generator: enough to shuffle a few ports.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Peer {
    a: Args,
    listeners: Vec<Socket>,
    rng: Rng,
    /// Peers still to visit in this round (a shuffled bag).
    bag: Vec<u16>,
    /// Peers reached at least once: a refused connect to one never reached
    /// is "not up yet", not a failure.
    reached: BTreeSet<u16>,
    partners: BTreeSet<u16>,
    initiated: u64,
    answered: u64,
    failures: u64,
}

const SIGNALS: Token = Token(usize::MAX);
const IO_TIMEOUT: Duration = Duration::from_secs(2);

impl Peer {
    fn new(a: Args) -> Result<Self, Error> {
        let mut listeners: Vec<Socket> = listen_fds()?.into_iter().map(|l| l.socket).collect();
        if listeners.is_empty() {
            listeners.push(bind_reserved(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                a.port,
            )))?);
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = (getpid() as u64) << 32 ^ nanos ^ 0x9e37_79b9_7f4a_7c15;
        Ok(Self {
            a,
            listeners,
            rng: Rng(seed | 1),
            bag: Vec::new(),
            reached: BTreeSet::new(),
            partners: BTreeSet::new(),
            initiated: 0,
            answered: 0,
            failures: 0,
        })
    }

    fn tag(&self) -> String {
        format!("peer {} (port {})", self.a.index, self.a.port)
    }

    fn serve(&mut self) -> Result<(), Error> {
        let signals = SignalPipe::install(&[Signal::TERM, Signal::INT])?;
        let sel = Selector::new()?;
        sel.register(signals.as_fd(), SIGNALS, Interest::READABLE, Mode::Level)?;
        for (i, l) in self.listeners.iter().enumerate() {
            l.set_nonblocking(true)?;
            sel.register(l.as_fd(), Token(i), Interest::READABLE, Mode::Level)?;
        }
        let mut events = Events::with_capacity(8);
        let mut next_tick = Instant::now() + self.a.interval;
        loop {
            let now = Instant::now();
            sel.wait(&mut events, Some(next_tick.saturating_duration_since(now)))?;
            let ready: Vec<Token> = events.iter().map(|e| e.token()).collect();
            for t in ready {
                if t == SIGNALS {
                    if !signals.drain()?.is_empty() {
                        println!(
                            "summary index={} port={} initiated={} answered={} failures={} partners={}",
                            self.a.index,
                            self.a.port,
                            self.initiated,
                            self.answered,
                            self.failures,
                            self.partners.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
                        );
                        return Ok(());
                    }
                } else {
                    self.accept_all(t.0)?;
                }
            }
            if Instant::now() >= next_tick {
                self.exchange();
                next_tick += self.a.interval;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.a.interval;
                }
            }
        }
    }

    fn accept_all(&mut self, i: usize) -> Result<(), Error> {
        loop {
            let conn = match self.listeners[i].accept() {
                Ok((c, _)) => c,
                Err(e) if e.is_would_block() => return Ok(()),
                Err(e) if matches!(e.raw_os_error(), errno::EMFILE | errno::ENFILE) => {
                    eprintln!("{}: {e}", self.tag());
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            match self.answer(&conn) {
                Ok(from) => {
                    self.answered += 1;
                    self.partners.insert(from);
                    println!("{}: answered hello from port {from}", self.tag());
                }
                Err(e) => {
                    self.failures += 1;
                    println!("{}: failed to answer: {e}", self.tag());
                }
            }
        }
    }

    fn answer(&self, conn: &Socket) -> Result<u16, Box<dyn std::error::Error>> {
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        let line = read_line(conn)?;
        let from = parse_greeting(&line, "hello")?;
        (&*conn).write_all(format!("ack {} {}\n", self.a.index, self.a.port).as_bytes())?;
        Ok(from)
    }

    fn pick(&mut self) -> Option<u16> {
        if self.bag.is_empty() {
            self.bag = self
                .a
                .peers
                .iter()
                .copied()
                .filter(|&p| p != self.a.port)
                .collect();
            for i in (1..self.bag.len()).rev() {
                let j = (self.rng.next() % (i as u64 + 1)) as usize;
                self.bag.swap(i, j);
            }
        }
        self.bag.pop()
    }

    fn exchange(&mut self) {
        let Some(to) = self.pick() else { return };
        match self.greet(to) {
            Ok(from) => {
                self.initiated += 1;
                self.reached.insert(to);
                self.partners.insert(from);
                println!("{}: hello to port {to}, ack from port {from}", self.tag());
                if self.a.crash_after.is_some_and(|n| self.initiated >= n) {
                    eprintln!(
                        "{}: crashing on purpose after {} exchanges",
                        self.tag(),
                        self.initiated
                    );
                    std::process::abort();
                }
            }
            Err(e)
                if !self.reached.contains(&to) && e.raw_os_error() == Some(errno::ECONNREFUSED) =>
            {
                // Not listening yet (port hand-off: it binds after it starts).
                self.bag.insert(0, to);
            }
            Err(e) => {
                self.failures += 1;
                println!("{}: exchange with port {to} failed: {e}", self.tag());
            }
        }
    }

    fn greet(&self, to: u16) -> std::io::Result<u16> {
        let s = Socket::new(Domain::IPV4, Type::STREAM)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        s.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, to)))?;
        (&s).write_all(format!("hello {} {}\n", self.a.index, self.a.port).as_bytes())?;
        let line = read_line(&s)?;
        parse_greeting(&line, "ack")
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// Reads one line of at most 128 bytes.
fn read_line(s: &Socket) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 64];
    while !buf.contains(&b'\n') {
        let n = (&*s).read(&mut b)?;
        if n == 0 || buf.len() + n > 128 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no line",
            ));
        }
        buf.extend_from_slice(&b[..n]);
    }
    let end = buf.iter().position(|&c| c == b'\n').unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// Parses `WORD INDEX PORT`, returning the port.
fn parse_greeting(line: &str, word: &str) -> Result<u16, String> {
    let mut it = line.split_whitespace();
    match (it.next(), it.next(), it.next().and_then(|p| p.parse().ok())) {
        (Some(w), Some(_), Some(port)) if w == word => Ok(port),
        _ => Err(format!("unexpected message {line:?}")),
    }
}

#[allow(dead_code)]
fn main() -> ExitCode {
    run(std::env::args_os().skip(1))
}
