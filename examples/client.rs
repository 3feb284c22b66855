//! The seed's `client`: listens on a port its parent reserved and prints a
//! line for every connection it accepts.
//!
//! ```text
//! client PORT [--exit-after N]     bind 127.0.0.1:PORT with SO_REUSEPORT (joins the hold)
//! client --listen-fds [--exit-after N]   take the socket passed by socket activation
//! ```
//!
//! Started by `allocator`, which reserves the port first.

// Also included by a program that has its own copy: only the crate root's
// is used (the macros name `$crate::cli`).
#[allow(clippy::duplicate_mod)]
#[macro_use]
#[path = "cli/mod.rs"]
mod cli;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use procwire::net::port::{bind_reserved, listen_fds};
use procwire::sys::socket::Socket;

const USAGE: &str = "usage: client PORT [--exit-after N]
       client --listen-fds [--exit-after N]

Listens on 127.0.0.1:PORT (binding with SO_REUSEPORT to join the port its
parent reserved), or on the socket passed by socket activation, and prints
'Client received a connection' for each connection. Stops after N
connections with --exit-after.";

struct Args {
    port: Option<u16>,
    listen_fds: bool,
    exit_after: Option<u64>,
}

fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut a = Args {
        port: None,
        listen_fds: false,
        exit_after: None,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("listen-fds") => a.listen_fds = true,
            Long("exit-after") => a.exit_after = Some(p.value()?.parse()?),
            Short('h') | Long("help") => {
                outln!("{USAGE}");
                std::process::exit(0);
            }
            Value(v) if a.port.is_none() => a.port = Some(v.parse()?),
            _ => return Err(arg.unexpected()),
        }
    }
    if a.port.is_none() && !a.listen_fds {
        return Err("a PORT or --listen-fds is required".into());
    }
    Ok(a)
}

/// Runs the client with the arguments after the program name.
pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let a = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("client: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match serve(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(a: &Args) -> Result<(), procwire::sys::Error> {
    let listener: Socket = if a.listen_fds {
        let mut fds = listen_fds()?;
        if fds.is_empty() {
            return Err(procwire::sys::Error::new(
                "listen_fds",
                "no socket was passed (LISTEN_FDS/LISTEN_PID missing or not for this process)",
                procwire::sys::errno::EBADF,
            ));
        }
        fds.swap_remove(0).socket
    } else {
        let port = a.port.unwrap_or(0);
        bind_reserved(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?
    };
    outln!("Client listening to: {}", listener.local_addr()?);
    let mut served = 0;
    while a.exit_after.map_or(true, |n| served < n) {
        let (_conn, _peer) = listener.accept()?;
        outln!("Client received a connection");
        served += 1;
    }
    Ok(())
}

#[allow(dead_code)]
fn main() -> ExitCode {
    cli::keep_running_without_stdout();
    run(std::env::args_os().skip(1))
}
