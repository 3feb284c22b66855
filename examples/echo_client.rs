//! A load generator for echo servers, on the event loop: N connections,
//! each doing M round trips of S bytes with K messages in flight; prints
//! messages per second.
//!
//! ```text
//! cargo run --release --example echo_client -- 127.0.0.1:7000 --connections 100 --rounds 2000 --size 64
//! cargo run --release --example echo_client -- /tmp/echo.sock --inflight 16
//! ```

// Also included by a program that has its own copy: only the crate root's
// is used (the macros name `$crate::cli`).
#[allow(clippy::duplicate_mod)]
#[macro_use]
#[path = "cli/mod.rs"]
mod cli;

use std::cell::Cell;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use procwire::net::event::{EventLoop, Interest, Ready};
use procwire::sys::errno;
use procwire::sys::socket::{Domain, SockAddr, Socket, Type};

const USAGE: &str = "usage: echo_client ADDR|PATH [--connections N] [--rounds M] [--size S] [--inflight K] [--timeout SECS]

Opens N connections (default 100) to an echo server at a TCP address or a
Unix socket path; each sends M messages (default 1000) of S bytes (default
64), K at a time (default 1), checking every byte that comes back. Prints
'messages: T, seconds: X, messages/s: R'.";

/// What to run.
pub struct Load {
    /// The server.
    pub addr: SockAddr,
    /// Connections.
    pub connections: usize,
    /// Messages per connection.
    pub rounds: u64,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection.
    pub inflight: u64,
    /// Give up after this long.
    pub timeout: Duration,
}

/// One connection's progress.
struct Conn {
    connected: bool,
    sent: u64,
    received: u64,
    pending: Vec<u8>,
    pending_at: usize,
}

/// Runs `load`, returning (messages, elapsed).
pub fn drive(load: &Load) -> Result<(u64, Duration), Box<dyn std::error::Error>> {
    let lp = EventLoop::new()?;
    let done = Rc::new(Cell::new(0usize));
    let failed: Rc<Cell<Option<String>>> = Rc::new(Cell::new(None));
    let msg: Rc<Vec<u8>> = Rc::new((0..load.size).map(|i| b'a' + (i % 26) as u8).collect());
    let start = Instant::now();
    let mut regs = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let s = Socket::new(Domain::of(&load.addr), Type::STREAM)?;
        s.set_nonblocking(true)?;
        if matches!(load.addr, SockAddr::Inet(_)) {
            s.set_nodelay(true)?;
        }
        match s.connect(load.addr.clone()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == errno::EINPROGRESS || e.is_would_block() => {}
            Err(e) => return Err(e.into()),
        }
        let mut c = Conn {
            connected: false,
            sent: 0,
            received: 0,
            pending: Vec::with_capacity(load.size * load.inflight as usize),
            pending_at: 0,
        };
        let (rounds, size, inflight) = (load.rounds, load.size, load.inflight);
        let (msg, done, failed) = (msg.clone(), done.clone(), failed.clone());
        let mut rbuf = vec![0u8; 64 * 1024];
        let reg = lp.register(
            s,
            Interest::READABLE | Interest::WRITABLE,
            move |cx, s: &Socket, r: Ready| {
                let fail = |cx: &mut procwire::net::event::Context<'_>, why: String| {
                    failed.set(Some(why));
                    cx.stop();
                };
                if !c.connected {
                    if !r.is_writable() && !r.is_error() {
                        return Ok(());
                    }
                    if let Some(e) = s.take_error()? {
                        fail(cx, format!("connect: {e}"));
                        return Ok(());
                    }
                    c.connected = true;
                    while c.sent < rounds.min(inflight) {
                        c.pending.extend_from_slice(&msg);
                        c.sent += 1;
                    }
                }
                // Read what came back, checking it byte for byte.
                loop {
                    match s.recv(&mut rbuf) {
                        Ok(0) => {
                            if c.received < rounds * size as u64 {
                                fail(cx, "server closed the connection".into());
                            }
                            return Ok(());
                        }
                        Ok(n) => {
                            for (i, &b) in rbuf[..n].iter().enumerate() {
                                let at = ((c.received + i as u64) % size as u64) as usize;
                                if b != msg[at] {
                                    fail(cx, "echo mismatch".into());
                                    return Ok(());
                                }
                            }
                            let before = c.received / size as u64;
                            c.received += n as u64;
                            let completed = c.received / size as u64 - before;
                            for _ in 0..completed {
                                if c.sent < rounds {
                                    c.pending.extend_from_slice(&msg);
                                    c.sent += 1;
                                }
                            }
                            if c.received == rounds * size as u64 {
                                done.set(done.get() + 1);
                                cx.deregister_current();
                                return Ok(());
                            }
                            if n < rbuf.len() && !r.is_read_closed() {
                                // A short read on a stream socket: its queue
                                // is empty, and new data raises a new edge
                                // (the peer's end, if it came with this
                                // event, would not: then read on).
                                break;
                            }
                        }
                        Err(e) if e.is_would_block() => break,
                        Err(e) if e.raw_os_error() == errno::EINTR => continue,
                        Err(e) => {
                            fail(cx, e.to_string());
                            return Ok(());
                        }
                    }
                }
                // Send what is due.
                while c.pending_at < c.pending.len() {
                    match s.send(&c.pending[c.pending_at..]) {
                        Ok(n) => c.pending_at += n,
                        Err(e) if e.is_would_block() => break,
                        Err(e) => {
                            fail(cx, e.to_string());
                            return Ok(());
                        }
                    }
                }
                if c.pending_at == c.pending.len() {
                    c.pending.clear();
                    c.pending_at = 0;
                }
                Ok(())
            },
        )?;
        regs.push(reg);
    }
    let deadline = start + load.timeout;
    while done.get() < load.connections {
        if let Some(why) = failed.take() {
            return Err(why.into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "timed out: {} of {} connections done",
                done.get(),
                load.connections
            )
            .into());
        }
        lp.run_once(Some(Duration::from_millis(100)))?;
    }
    Ok((load.rounds * load.connections as u64, start.elapsed()))
}

/// Runs the client with the arguments after the program name.
pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut addr = None;
    let mut load = Load {
        addr: SockAddr::Unnamed,
        connections: 100,
        rounds: 1000,
        size: 64,
        inflight: 1,
        timeout: Duration::from_secs(120),
    };
    let parsed: Result<(), lexopt::Error> = (|| {
        while let Some(arg) = p.next()? {
            match arg {
                Long("connections") => load.connections = p.value()?.parse()?,
                Long("rounds") => load.rounds = p.value()?.parse()?,
                Long("size") => load.size = p.value()?.parse()?,
                Long("inflight") => load.inflight = p.value()?.parse()?,
                Long("timeout") => load.timeout = Duration::from_secs_f64(p.value()?.parse()?),
                Short('h') | Long("help") => {
                    outln!("{USAGE}");
                    std::process::exit(0);
                }
                Value(v) if addr.is_none() => addr = Some(v.string()?),
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(())
    })();
    if let Err(e) = parsed {
        eprintln!("echo_client: {e}\n{USAGE}");
        return ExitCode::from(2);
    }
    let Some(addr) = addr else {
        eprintln!("echo_client: ADDR is required\n{USAGE}");
        return ExitCode::from(2);
    };
    load.addr = match addr.parse::<SocketAddr>() {
        Ok(a) => SockAddr::Inet(a),
        Err(_) => SockAddr::unix(&addr),
    };
    if load.size == 0 || load.inflight == 0 || load.connections == 0 {
        eprintln!("echo_client: --size, --inflight and --connections must be at least 1");
        return ExitCode::from(2);
    }
    match drive(&load) {
        Ok((n, t)) => {
            outln!(
                "messages: {n}, seconds: {:.3}, messages/s: {:.0}",
                t.as_secs_f64(),
                n as f64 / t.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("echo_client: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(dead_code)]
fn main() -> ExitCode {
    run(std::env::args_os().skip(1))
}
