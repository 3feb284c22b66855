//! Shows the error model: each failing call below prints which call failed,
//! on what, and why, then converts into `std::io::Error` for `?`.
//!
//! Run with `cargo run --example errors`.

#[macro_use]
#[path = "cli/mod.rs"]
mod cli;

use std::net::SocketAddr;

use procwire::sys::shm::{shm_open, ShmOpenFlags};
use procwire::sys::socket::{Domain, SockAddr, Socket, Type};

const USAGE: &str = "usage: errors

Makes a few system calls fail on purpose and prints what each error says.";

fn main() -> std::process::ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("-h" | "--help") => return cli::help(USAGE),
        Some(other) => {
            return cli::usage_error("errors", USAGE, format!("unexpected argument {other:?}"))
        }
    }
    match show() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("errors: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn show() -> std::io::Result<()> {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("a literal address");

    // A port held by one socket can't be bound by a plain second one.
    let holder = Socket::new(Domain::IPV4, Type::STREAM)?;
    holder.bind(any)?;
    let taken = holder.local_addr()?;
    let other = Socket::new(Domain::IPV4, Type::STREAM)?;
    if let Err(e) = other.bind(taken.clone()) {
        outln!("{e}");
    }

    // Nothing listens on a bound, non-listening port.
    if let Err(e) = other.connect(taken) {
        outln!("{e}");
    }

    // Unix path in a directory that doesn't exist.
    let unix = Socket::new(Domain::UNIX, Type::STREAM)?;
    if let Err(e) = unix.bind(SockAddr::unix("/nonexistent/procwire.sock")) {
        outln!("{e}");
    }

    // A shared-memory name nobody created.
    if let Err(e) = shm_open("/procwire-example-missing", ShmOpenFlags::empty(), 0) {
        outln!("{e}");
        // `?` works in io::Result code; the kind comes from the errno.
        let io: std::io::Error = e.into();
        outln!("as io::Error: kind {:?}, message {io}", io.kind());
    }
    Ok(())
}
