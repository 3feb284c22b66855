//! An echo over the shared-memory transport, in two modes.
//!
//! ```text
//! cargo run --release --example shm_echo -- server /tmp/shm-echo.sock
//! cargo run --release --example shm_echo -- client /tmp/shm-echo.sock "hello"
//! ```
//!
//! The server echoes every connection (one thread each) until Ctrl-C; the
//! client sends its message, prints what comes back, and the round-trip
//! time.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Instant;

use procwire::ipc::{ShmListener, ShmStream};

const USAGE: &str = "usage: shm_echo server PATH
       shm_echo client PATH [MESSAGE]";

fn server(path: &str) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let l = ShmListener::bind(path)?;
    println!("shm_echo listening on {path}");
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
    println!(
        "{} ({:?} round trip)",
        String::from_utf8_lossy(&back),
        t.elapsed()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match (args.first().map(String::as_str), args.get(1)) {
        (Some("server"), Some(p)) => server(p),
        (Some("client"), Some(p)) => client(
            p,
            args.get(2)
                .map_or("hello over shared memory", String::as_str),
        ),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
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
