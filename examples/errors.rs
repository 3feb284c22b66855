//! Shows the error model: each failing call below prints which call failed,
//! on what, and why, then converts into `std::io::Error` for `?`.
//!
//! Run with `cargo run --example errors`.

use std::net::SocketAddr;

use procwire::sys::shm::{shm_open, ShmOpenFlags};
use procwire::sys::socket::{Domain, SockAddr, Socket, Type};

fn main() -> std::io::Result<()> {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("a literal address");

    // A port held by one socket can't be bound by a plain second one.
    let holder = Socket::new(Domain::IPV4, Type::STREAM)?;
    holder.bind(any)?;
    let taken = holder.local_addr()?;
    let other = Socket::new(Domain::IPV4, Type::STREAM)?;
    if let Err(e) = other.bind(taken.clone()) {
        println!("{e}");
    }

    // Nothing listens on a bound, non-listening port.
    if let Err(e) = other.connect(taken) {
        println!("{e}");
    }

    // Unix path in a directory that doesn't exist.
    let unix = Socket::new(Domain::UNIX, Type::STREAM)?;
    if let Err(e) = unix.bind(SockAddr::unix("/nonexistent/procwire.sock")) {
        println!("{e}");
    }

    // A shared-memory name nobody created.
    if let Err(e) = shm_open("/procwire-example-missing", ShmOpenFlags::empty(), 0) {
        println!("{e}");
        // `?` works in io::Result code; the kind comes from the errno.
        let io: std::io::Error = e.into();
        println!("as io::Error: kind {:?}, message {io}", io.kind());
    }
    Ok(())
}
