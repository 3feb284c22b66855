//! An echo over the shared-memory transport, in two modes.
//!
//! ```text
//! cargo run --release --example shm_echo -- server /tmp/shm-echo.sock
//! cargo run --release --example shm_echo -- client /tmp/shm-echo.sock "hello"
//! ```
//!
//! The server echoes every connection (one thread each) until Ctrl-C (a
//! peer that connects and misbehaves is closed by the listener, never
//! returned by `accept`, so it can't stop the loop); the
//! client sends its message, prints what comes back, and the round-trip
//! time.

#[macro_use]
#[path = "cli/mod.rs"]
mod cli;

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Instant;

use procwire::ipc::{ShmListener, ShmStream};

const USAGE: &str = "usage: shm_echo server PATH
       shm_echo client PATH [MESSAGE]

The server echoes every connection over the shared-memory transport until
Ctrl-C; the client sends MESSAGE, prints what comes back and the round trip.";

fn server(path: &str) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let l = ShmListener::bind(path)?;
    outln!("shm_echo listening on {path}");
    loop {
        let mut s = l.accept()?;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        eprintln!("shm_echo: {e}");
                        return;
                    }
                }
            }
        });
    }
}

fn client(path: &str, msg: &str) -> std::io::Result<()> {
    let mut s = ShmStream::connect(path)?;
    let t = Instant::now();
    s.write_all(msg.as_bytes())?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    outln!(
        "{} ({:?} round trip)",
        String::from_utf8_lossy(&back),
        t.elapsed()
    );
    Ok(())
}

fn main() -> ExitCode {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut words = Vec::new();
    loop {
        match p.next() {
            Ok(None) => break,
            Ok(Some(Short('h') | Long("help"))) => return cli::help(USAGE),
            Ok(Some(Value(v))) => match v.into_string() {
                Ok(v) => words.push(v),
                Err(v) => {
                    return cli::usage_error("shm_echo", USAGE, format!("{v:?} is not UTF-8"))
                }
            },
            Ok(Some(other)) => return cli::usage_error("shm_echo", USAGE, other.unexpected()),
            Err(e) => return cli::usage_error("shm_echo", USAGE, e),
        }
    }
    let r = match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["server", path] => {
            // A server: a closed stdout doesn't stop it.
            cli::keep_running_without_stdout();
            server(path)
        }
        ["client", path] => client(path, "hello over shared memory"),
        ["client", path, msg] => client(path, msg),
        _ => {
            return cli::usage_error(
                "shm_echo",
                USAGE,
                "expected `server PATH` or `client PATH [MESSAGE]`",
            )
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shm_echo: {e}");
            ExitCode::FAILURE
        }
    }
}
