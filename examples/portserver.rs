//! A portserver for Python's `portpicker` (and anything else that speaks
//! its protocol; see `procwire::net::port::portserver`): test processes ask
//! it for ports, and no two live processes get the same one.
//!
//! ```text
//! cargo run --release --example portserver -- --portserver_address=@unittest-portserver
//! PORTSERVER_ADDRESS=@unittest-portserver python3 -m pytest ...
//! ```
//!
//! Same flags as portpicker's `portserver.py`. Serves until Ctrl-C or
//! SIGTERM, then prints how many requests got a port.

// The binary in src/bin has its own copy at the crate root, which the
// macros and `crate::cli` paths name.
#[allow(clippy::duplicate_mod, unused_imports)]
#[macro_use]
#[path = "cli/mod.rs"]
mod cli;

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;

use procwire::net::event::EventLoop;
use procwire::net::port::parse_port_list;
use procwire::net::port::portserver::{
    address, parse_request, PortPool, DEFAULT_ADDRESS, DEFAULT_POOL, MAX_REQUEST,
};
use procwire::net::server::{serve, Output, Protocol, ServerOptions};
use procwire::sys::socket::{Domain, SockAddr, Socket, Type};

const USAGE: &str = "usage: portserver [--portserver_address ADDRESS] [--portserver_static_pool RANGES] [--verbose] [--debug]

Hands out ports to the processes of this host that ask over a Unix socket,
by the protocol of Python's portpicker (PORTSERVER_ADDRESS): each port to one
live process at a time, checked free for TCP and UDP when handed out, offered
again once that process has exited.

  --portserver_address ADDRESS      where to listen; @NAME is a Linux abstract
                                    name (default @unittest-portserver)
  --portserver_unix_socket_address  the same (portpicker's older name)
  --portserver_static_pool RANGES   the ports to hand out, as N-P ranges and
                                    single ports, comma-separated (default
                                    15000-24999); ports of the ephemeral range
                                    and below 1024 are left out
  --verbose, --debug                log every request on stderr";

struct Args {
    address: String,
    pool: Vec<(u16, u16)>,
    verbose: bool,
}

fn parse_args() -> Result<Args, String> {
    use lexopt::prelude::*;
    let mut a = Args {
        address: DEFAULT_ADDRESS.to_string(),
        pool: vec![DEFAULT_POOL],
        verbose: false,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("portserver_address") | Long("portserver_unix_socket_address") => {
                a.address = p
                    .value()
                    .map_err(|e| e.to_string())?
                    .string()
                    .map_err(|e| e.to_string())?;
            }
            Long("portserver_static_pool") => {
                let v = p
                    .value()
                    .map_err(|e| e.to_string())?
                    .string()
                    .map_err(|e| e.to_string())?;
                a.pool = parse_port_list(&v)
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| format!("bad --portserver_static_pool {v:?}"))?;
            }
            Long("verbose") | Long("debug") => a.verbose = true,
            Short('h') | Long("help") => {
                outln!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    Ok(a)
}

/// One client connection: one request line, one reply, then closed.
struct Request {
    pool: Rc<RefCell<PortPool>>,
    verbose: bool,
}

impl Protocol for Request {
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> std::io::Result<usize> {
        let req = match parse_request(input) {
            Some(r) => r,
            None if input.len() < MAX_REQUEST => return Ok(0),
            None => Err(()),
        };
        let reply = self.pool.borrow_mut().reply(req);
        if self.verbose {
            let asked = String::from_utf8_lossy(&input[..input.len().min(MAX_REQUEST)]);
            eprintln!("portserver: {:?} -> {}", asked.trim_end(), reply.trim_end());
        }
        out.write(reply.as_bytes())?;
        out.close();
        Ok(input.len())
    }
}

fn listen(at: &SockAddr) -> Result<Socket, procwire::sys::Error> {
    if let SockAddr::Unix(path) = at {
        // A socket file left by an earlier server: replaced, as
        // portserver.py does.
        let _ = std::fs::remove_file(path);
    }
    let s = Socket::new(Domain::UNIX, Type::STREAM)?;
    s.bind(at.clone())?;
    s.listen(1024)?;
    Ok(s)
}

fn run(a: Args) -> Result<(), Box<dyn std::error::Error>> {
    let at = address(&a.address)?;
    let pool = PortPool::new(&a.pool);
    if pool.is_empty() {
        return Err(format!(
            "no port to hand out: the pool's {} ports are all below 1024 or in the ephemeral range",
            pool.left_out()
        )
        .into());
    }
    let pool = Rc::new(RefCell::new(pool));
    let lp = EventLoop::new()?;
    lp.on_shutdown(|cx| cx.stop())?;
    let l = listen(&at)?;
    {
        let p = pool.borrow();
        outln!(
            "portserver listening on {} with {} ports ({} left out: below 1024 or ephemeral)",
            a.address,
            p.len(),
            p.left_out()
        );
    }
    let opts = ServerOptions::default().max_input(MAX_REQUEST * 2);
    let verbose = a.verbose;
    let shared = Rc::clone(&pool);
    let _server = serve(&lp, l, opts, move |_| Request {
        pool: Rc::clone(&shared),
        verbose,
    })?;
    lp.run()?;
    if let SockAddr::Unix(path) = &at {
        let _ = std::fs::remove_file(path);
    }
    let (given, denied) = pool.borrow().counts();
    outln!("portserver: {given} requests got a port, {denied} got none");
    Ok(())
}

/// The program (also run by the installable binary of the same name).
pub fn main() -> ExitCode {
    crate::cli::keep_running_without_stdout();
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("portserver: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portserver: {e}");
            ExitCode::FAILURE
        }
    }
}
