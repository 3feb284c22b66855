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
//! join its parent's reservation. `peer_manager` starts these. Everything
//! runs on one thread on the event loop: answering, exchanges (non-blocking
//! connects with a timer as deadline), the tick, and SIGTERM.

// Also included by a program that has its own copy: only the crate root's
// is used (the macros name `$crate::cli`).
#[allow(clippy::duplicate_mod)]
#[macro_use]
#[path = "cli/mod.rs"]
mod cli;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use procwire::net::event::{Context, EventLoop, Interest};
use procwire::net::port::{bind_reserved, listen_fds};
use procwire::net::server::{serve, Output, Protocol, ServerOptions};
use procwire::sys::process::getpid;
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
                outln!("{USAGE}");
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
    match serve_peer(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a peer counts, shared by its handlers on the loop.
#[derive(Default)]
struct Stats {
    partners: BTreeSet<u16>,
    /// Peers reached at least once: a refused connect to one never reached
    /// is "not up yet" (port hand-off: it binds after it starts), not a
    /// failure.
    reached: BTreeSet<u16>,
    initiated: u64,
    answered: u64,
    failures: u64,
}

const IO_TIMEOUT: Duration = Duration::from_secs(2);

struct Peer {
    a: Args,
    stats: Rc<RefCell<Stats>>,
    rng: RefCell<cli::Rng>,
    /// Peers still to visit in this round (a shuffled bag).
    bag: RefCell<Vec<u16>>,
}

impl Peer {
    fn tag(&self) -> String {
        format!("peer {} (port {})", self.a.index, self.a.port)
    }

    fn pick(&self) -> Option<u16> {
        let mut bag = self.bag.borrow_mut();
        if bag.is_empty() {
            *bag = self
                .a
                .peers
                .iter()
                .copied()
                .filter(|&p| p != self.a.port)
                .collect();
            let mut rng = self.rng.borrow_mut();
            for i in (1..bag.len()).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                bag.swap(i, j);
            }
        }
        bag.pop()
    }

    /// Starts one exchange without blocking the loop: a non-blocking
    /// connect, `hello` when writable, `ack` when readable, a timer as the
    /// deadline.
    fn exchange(self: &Rc<Self>, cx: &mut Context<'_>) -> Result<(), Error> {
        let Some(to) = self.pick() else { return Ok(()) };
        let s = Socket::new(Domain::IPV4, Type::STREAM)?;
        s.set_nonblocking(true)?;
        match s.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, to))) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == errno::EINPROGRESS => {}
            Err(e) => {
                self.failed(to, &e.to_string(), e.raw_os_error() == errno::ECONNREFUSED);
                return Ok(());
            }
        }
        let finished = Rc::new(Cell::new(false));
        let (me, fin) = (Rc::clone(self), Rc::clone(&finished));
        let mut sent = false;
        let mut line = Vec::new();
        let reg = cx.register(
            s,
            Interest::READABLE | Interest::WRITABLE,
            move |cx, s: &Socket, r| {
                let end = |cx: &mut Context<'_>, outcome: Result<u16, (String, bool)>| {
                    fin.set(true);
                    cx.deregister_current();
                    match outcome {
                        Ok(from) => me.succeeded(to, from),
                        Err((why, refused)) => me.failed(to, &why, refused),
                    }
                };
                if !sent {
                    if !(r.is_writable() || r.is_error()) {
                        return Ok(());
                    }
                    if let Some(e) = s.take_error()? {
                        let refused = e.raw_os_error() == Some(errno::ECONNREFUSED);
                        end(cx, Err((e.to_string(), refused)));
                        return Ok(());
                    }
                    // Tiny, into an empty buffer: it goes in one send.
                    s.send(format!("hello {} {}\n", me.a.index, me.a.port).as_bytes())?;
                    sent = true;
                }
                let mut b = [0u8; 64];
                loop {
                    match s.recv(&mut b) {
                        Ok(0) => {
                            end(cx, Err(("closed before the ack".into(), false)));
                            return Ok(());
                        }
                        Ok(n) => {
                            line.extend_from_slice(&b[..n]);
                            if let Some(at) = line.iter().position(|&c| c == b'\n') {
                                let text = String::from_utf8_lossy(&line[..at]).into_owned();
                                end(cx, parse_greeting(&text, "ack").map_err(|e| (e, false)));
                                return Ok(());
                            }
                            if line.len() > 128 {
                                end(cx, Err(("ack line too long".into(), false)));
                                return Ok(());
                            }
                        }
                        Err(e) if e.is_would_block() => return Ok(()),
                        Err(e) => {
                            end(cx, Err((e.to_string(), false)));
                            return Ok(());
                        }
                    }
                }
            },
        )?;
        // The deadline: dropping the registration ends the exchange (a
        // no-op if it finished already).
        let me = Rc::clone(self);
        let mut reg = Some(reg);
        cx.after(IO_TIMEOUT, move |_| {
            drop(reg.take());
            if !finished.get() {
                me.failed(to, "timed out", false);
            }
        });
        Ok(())
    }

    fn succeeded(&self, to: u16, from: u16) {
        let initiated = {
            let mut st = self.stats.borrow_mut();
            st.initiated += 1;
            st.reached.insert(to);
            st.partners.insert(from);
            st.initiated
        };
        outln!("{}: hello to port {to}, ack from port {from}", self.tag());
        if self.a.crash_after.is_some_and(|n| initiated >= n) {
            eprintln!(
                "{}: crashing on purpose after {initiated} exchanges",
                self.tag()
            );
            std::process::abort();
        }
    }

    fn failed(&self, to: u16, why: &str, refused: bool) {
        let mut st = self.stats.borrow_mut();
        if refused && !st.reached.contains(&to) {
            // Not listening yet: try it again first next time.
            drop(st);
            self.bag.borrow_mut().insert(0, to);
            return;
        }
        st.failures += 1;
        drop(st);
        outln!("{}: exchange with port {to} failed: {why}", self.tag());
    }

    fn summary(&self) -> String {
        let st = self.stats.borrow();
        format!(
            "summary index={} port={} initiated={} answered={} failures={} partners={}",
            self.a.index,
            self.a.port,
            st.initiated,
            st.answered,
            st.failures,
            st.partners
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    }
}

/// The answering side: reads `hello INDEX PORT`, writes `ack INDEX PORT`,
/// closes.
struct Answer {
    peer: Rc<Peer>,
}

impl Protocol for Answer {
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> std::io::Result<usize> {
        let Some(at) = input.iter().position(|&c| c == b'\n') else {
            if input.len() > 128 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "hello line too long",
                ));
            }
            return Ok(0);
        };
        let text = String::from_utf8_lossy(&input[..at]).into_owned();
        let from = parse_greeting(&text, "hello")
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        out.write(format!("ack {} {}\n", self.peer.a.index, self.peer.a.port).as_bytes())?;
        out.close();
        {
            let mut st = self.peer.stats.borrow_mut();
            st.answered += 1;
            st.partners.insert(from);
        }
        outln!("{}: answered hello from port {from}", self.peer.tag());
        Ok(at + 1)
    }

    fn on_close(&mut self, error: Option<&std::io::Error>) {
        if let Some(e) = error {
            self.peer.stats.borrow_mut().failures += 1;
            outln!("{}: failed to answer: {e}", self.peer.tag());
        }
    }
}

fn serve_peer(a: Args) -> Result<(), Box<dyn std::error::Error>> {
    let lp = EventLoop::new()?;
    // Before anything else, so that Ctrl-C from the start ends the loop.
    lp.on_shutdown(|cx| cx.stop())?;
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
    let interval = a.interval;
    let peer = Rc::new(Peer {
        a,
        stats: Rc::default(),
        rng: RefCell::new(cli::Rng::new(seed)),
        bag: RefCell::new(Vec::new()),
    });
    let mut servers = Vec::new();
    for l in listeners {
        let p = Rc::clone(&peer);
        servers.push(serve(&lp, l, ServerOptions::default(), move |_| Answer {
            peer: Rc::clone(&p),
        })?);
    }
    let p = Rc::clone(&peer);
    lp.every(interval, move |cx| {
        if let Err(e) = p.exchange(cx) {
            p.stats.borrow_mut().failures += 1;
            outln!("{}: exchange failed: {e}", p.tag());
        }
    });
    lp.run()?;
    outln!("{}", peer.summary());
    Ok(())
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
    cli::keep_running_without_stdout();
    run(std::env::args_os().skip(1))
}
