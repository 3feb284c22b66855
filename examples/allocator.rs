//! The seed's `allocator`: reserves a free port, prints it, and starts the
//! client on it, holding the reservation until the client exits, so no other
//! process can take the port in between.
//!
//! ```text
//! allocator [--fd] [--exit-after N]
//! ```
//!
//! With `--fd` the listening socket itself is handed to the client by the
//! socket-activation protocol (fd 3, `LISTEN_FDS`, `LISTEN_PID`), so the
//! client needs no socket options at all. The client is this same program
//! run as `allocator client ...` (see `examples/client.rs`).

// Also included by a program that has its own copy: only the crate root's
// is used (the macros name `$crate::cli`).
#[allow(clippy::duplicate_mod)]
#[macro_use]
#[path = "cli/mod.rs"]
mod cli;

use std::os::fd::AsFd;
use std::process::ExitCode;

use procwire::net::port::{pass_listeners, Reservation};
use procwire::sys::process::Spawn;

#[path = "client.rs"]
mod client;

const USAGE: &str = "usage: allocator [--fd] [--exit-after N]

Reserves a port on 127.0.0.1 (SO_REUSEPORT, not listening), prints
'Allocator: 127.0.0.1:PORT', starts the client on it and keeps the
reservation until the client exits. --fd passes the listening socket itself
(socket activation) instead of the port number. --exit-after N makes the
client stop after N connections.";

fn main() -> ExitCode {
    cli::keep_running_without_stdout();
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "client") {
        args.next();
        return client::run(args);
    }
    let mut fd = false;
    let mut exit_after: Option<String> = None;
    let mut p = lexopt::Parser::from_args(args);
    loop {
        use lexopt::prelude::*;
        match p.next() {
            Ok(None) => break,
            Ok(Some(Long("fd"))) => fd = true,
            Ok(Some(Long("exit-after"))) => match p.value().map(|v| v.string()) {
                Ok(Ok(v)) if v.parse::<u64>().is_ok() => exit_after = Some(v),
                _ => return usage("--exit-after needs a number"),
            },
            Ok(Some(Short('h') | Long("help"))) => {
                outln!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Ok(Some(other)) => return usage(&other.unexpected().to_string()),
            Err(e) => return usage(&e.to_string()),
        }
    }
    match allocate(fd, exit_after.as_deref()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("allocator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("allocator: {msg}\n{USAGE}");
    ExitCode::from(2)
}

fn allocate(fd: bool, exit_after: Option<&str>) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let reservation = Reservation::new("127.0.0.1:0".parse()?)?;
    outln!("Allocator: {}", reservation.addr());
    let me = std::env::current_exe()?;
    let mut spawn = Spawn::new(&me);
    spawn.arg("client");
    if fd {
        reservation.listen(128)?;
        let listeners: Vec<_> = reservation
            .tcp_sockets()
            .map(|(_, s)| ("tcp-ipv4", s.as_fd()))
            .collect();
        pass_listeners(&mut spawn, &listeners)?;
        spawn.arg("--listen-fds");
    } else {
        spawn.arg(reservation.port().to_string());
    }
    if let Some(n) = exit_after {
        spawn.args(["--exit-after", n]);
    }
    let mut child = spawn.spawn()?;
    // The reservation stays alive until the client has exited.
    let status = child.wait()?;
    drop(reservation);
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        eprintln!("allocator: client (pid {}) ended: {status}", child.pid());
        ExitCode::FAILURE
    })
}
