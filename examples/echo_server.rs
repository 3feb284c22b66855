//! An echo server on the event loop: every byte a client sends comes back.
//!
//! ```text
//! cargo run --release --example echo_server                 # TCP, 127.0.0.1, a free port
//! cargo run --release --example echo_server -- --port 7000
//! cargo run --release --example echo_server -- --unix /tmp/echo.sock
//! ```
//!
//! Prints the address it listens on, then serves until Ctrl-C. After each
//! burst it polls for up to `--busy-poll` microseconds (default 50) before
//! it sleeps, so a client that sends again within that time doesn't pay for
//! waking it.

// Also included by a program that has its own copy: only the crate root's
// is used (the macros name `$crate::cli`).
#[allow(clippy::duplicate_mod)]
#[macro_use]
#[path = "cli/mod.rs"]
mod cli;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use procwire::net::event::EventLoop;
use procwire::net::server::{serve, Output, Protocol, ServerOptions};
use procwire::sys::socket::{Domain, SockAddr, Socket, Type};

const USAGE: &str =
    "usage: echo_server [--port PORT] [--host IP] [--unix PATH] [--busy-poll MICROSECONDS]

Echoes every byte back. Listens on TCP 127.0.0.1 (a free port unless --port)
or on a Unix socket with --unix; prints the address, serves until Ctrl-C.
--busy-poll: poll that long after each burst before sleeping (default 50;
0 sleeps at once).";

/// Sends every byte back.
pub struct Echo;

impl Protocol for Echo {
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> std::io::Result<usize> {
        out.write(input)?;
        Ok(input.len())
    }
}

/// Where to listen.
pub enum Listen {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path (an old socket file there is replaced).
    Unix(std::path::PathBuf),
}

/// Binds and listens on `at`.
pub fn listener(at: &Listen) -> Result<Socket, procwire::sys::Error> {
    let (sock, addr) = match at {
        Listen::Tcp(a) => {
            let s = Socket::for_addr(&SockAddr::Inet(*a), Type::STREAM)?;
            s.set_reuse_address(true)?;
            (s, SockAddr::Inet(*a))
        }
        Listen::Unix(p) => {
            let _ = std::fs::remove_file(p);
            (Socket::new(Domain::UNIX, Type::STREAM)?, SockAddr::unix(p))
        }
    };
    sock.bind(addr)?;
    sock.listen(1024)?;
    Ok(sock)
}

/// Runs the server with the arguments after the program name.
pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut port, mut host, mut unix) = (0u16, IpAddr::V4(Ipv4Addr::LOCALHOST), None);
    let mut busy_poll = 50u64;
    let parsed: Result<(), lexopt::Error> = (|| {
        while let Some(arg) = p.next()? {
            match arg {
                Long("port") => port = p.value()?.parse()?,
                Long("host") => host = p.value()?.parse()?,
                Long("unix") => unix = Some(std::path::PathBuf::from(p.value()?)),
                Long("busy-poll") => busy_poll = p.value()?.parse()?,
                Short('h') | Long("help") => {
                    outln!("{USAGE}");
                    std::process::exit(0);
                }
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(())
    })();
    if let Err(e) = parsed {
        eprintln!("echo_server: {e}\n{USAGE}");
        return ExitCode::from(2);
    }
    let at = match unix {
        Some(p) => Listen::Unix(p),
        None => Listen::Tcp(SocketAddr::new(host, port)),
    };
    match serve_forever(&at, std::time::Duration::from_micros(busy_poll)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve_forever(
    at: &Listen,
    busy_poll: std::time::Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let lp = EventLoop::new()?;
    lp.set_busy_poll(busy_poll);
    lp.on_shutdown(|cx| cx.stop())?;
    let l = listener(at)?;
    outln!("echo_server listening on {}", l.local_addr()?);
    let _server = serve(&lp, l, ServerOptions::default(), |_| Echo)?;
    lp.run()?;
    if let Listen::Unix(p) = at {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

#[allow(dead_code)]
fn main() -> ExitCode {
    cli::keep_running_without_stdout();
    run(std::env::args_os().skip(1))
}
