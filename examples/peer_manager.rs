//! The seed's `peer_manager`: starts N `peer` processes with reserved ports,
//! passes each the ports of the others, and holds every reservation until
//! its peer has exited. Stops on Ctrl-C or after `--duration`, and prints a
//! summary: exchanges per peer, failures, and how each peer ended. A peer
//! that fails makes it exit non-zero, naming the peer.
//!
//! ```text
//! cargo run --release --example peer_manager -- 3
//! ```
//!
//! The peers are this same program run as `peer_manager peer ...` (see
//! `examples/peer.rs`). One thread: the peers' output comes through pipes
//! on the event loop, and the supervisor is polled between turns.

// Also included by a program that has its own copy: only the crate root's
// is used (the macros name `$crate::cli`).
#[allow(clippy::duplicate_mod)]
#[macro_use]
#[path = "cli/mod.rs"]
mod cli;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use procwire::net::event::{EventLoop, Interest};
use procwire::sys::fd::set_nonblocking;

use procwire::net::supervisor::{ChildSpec, Handoff, StopReason, Supervisor, SupervisorOptions};
use procwire::sys::fd::pipe;

#[path = "peer.rs"]
mod peer;

const USAGE: &str =
    "usage: peer_manager N [--duration SECS] [--interval-ms MS] [--handoff fd|port] [--crash INDEX]

Starts N peers on reserved ports (127.0.0.1 and ::1 held), each told the
ports of the others; every MS milliseconds (default 100) each peer exchanges
a message with another. Runs until Ctrl-C, or for SECS seconds, then stops
the peers (SIGTERM, SIGKILL after 5 s) and prints a summary.

  --handoff fd     pass each peer its listening socket (socket activation; default)
  --handoff port   pass the port number; the peer binds with SO_REUSEPORT
  --crash INDEX    make peer INDEX abort after 3 exchanges (to see a failure)";

struct Args {
    n: usize,
    duration: Option<Duration>,
    interval_ms: u64,
    handoff: Handoff,
    crash: Option<usize>,
}

fn parse() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut n = None;
    let mut a = Args {
        n: 0,
        duration: None,
        interval_ms: 100,
        handoff: Handoff::Listener,
        crash: None,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("duration") => a.duration = Some(Duration::from_secs_f64(p.value()?.parse()?)),
            Long("interval-ms") => a.interval_ms = p.value()?.parse()?,
            Long("handoff") => {
                a.handoff = match p.value()?.string()?.as_str() {
                    "fd" => Handoff::Listener,
                    "port" => Handoff::Port,
                    other => {
                        return Err(format!("--handoff must be fd or port, not {other:?}").into())
                    }
                }
            }
            Long("crash") => a.crash = Some(p.value()?.parse()?),
            Short('h') | Long("help") => {
                outln!("{USAGE}");
                std::process::exit(0);
            }
            Value(v) if n.is_none() => n = Some(v.parse()?),
            _ => return Err(arg.unexpected()),
        }
    }
    a.n = n.ok_or("N (the number of peers) is required")?;
    if a.n < 2 {
        return Err("N must be at least 2, so peers have someone to talk to".into());
    }
    Ok(a)
}

/// What a peer said in its summary line.
#[derive(Default, Clone)]
struct Summary {
    initiated: u64,
    answered: u64,
    failures: u64,
    partners: Vec<u16>,
}

fn parse_summary(line: &str) -> Option<Summary> {
    let rest = line.strip_prefix("summary ")?;
    let mut s = Summary::default();
    for kv in rest.split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        match k {
            "initiated" => s.initiated = v.parse().ok()?,
            "answered" => s.answered = v.parse().ok()?,
            "failures" => s.failures = v.parse().ok()?,
            "partners" => s.partners = v.split(',').filter_map(|p| p.parse().ok()).collect(),
            _ => {}
        }
    }
    Some(s)
}

fn main() -> ExitCode {
    cli::keep_running_without_stdout();
    if std::env::args_os().nth(1).is_some_and(|a| a == "peer") {
        return peer::run(std::env::args_os().skip(2));
    }
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("peer_manager: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match manage(&a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("peer_manager: {e}");
            ExitCode::FAILURE
        }
    }
}

fn manage(a: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let me = std::env::current_exe()?.to_string_lossy().into_owned();
    let lp = EventLoop::new()?;
    let summaries: Rc<RefCell<BTreeMap<usize, Summary>>> = Rc::default();
    let mut readers = Vec::new();
    let mut specs = Vec::new();
    for i in 0..a.n {
        let mut cmd = vec![
            me.clone(),
            "peer".into(),
            "{port}".into(),
            "{peers}".into(),
            "--index".into(),
            "{index}".into(),
            "--interval-ms".into(),
            a.interval_ms.to_string(),
        ];
        if a.crash == Some(i) {
            cmd.extend(["--crash-after".into(), "3".into()]);
        }
        // Each peer's stdout comes through a pipe: forwarded line by line,
        // and its summary line kept for the report.
        let (r, w) = pipe()?;
        set_nonblocking(r.as_fd(), true)?;
        let sums = Rc::clone(&summaries);
        let mut pending: Vec<u8> = Vec::new();
        // The peer's stdout on the loop: forwarded line by line, its
        // summary line kept for the report.
        readers.push(lp.register(
            std::fs::File::from(r),
            Interest::READABLE,
            move |cx, f: &std::fs::File, _| {
                let mut buf = [0u8; 4096];
                loop {
                    match (&*f).read(&mut buf) {
                        Ok(0) => {
                            cx.deregister_current();
                            break;
                        }
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                while let Some(at) = pending.iter().position(|&c| c == b'\n') {
                    let line = String::from_utf8_lossy(&pending[..at]).into_owned();
                    pending.drain(..=at);
                    match parse_summary(&line) {
                        Some(s) => {
                            sums.borrow_mut().insert(i, s);
                        }
                        None => outln!("{line}"),
                    }
                }
                Ok(())
            },
        )?);
        specs.push(
            ChildSpec::new(format!("peer-{i}"), cmd)
                .handoff(a.handoff)
                .fd(w, 1),
        );
    }
    let opts = SupervisorOptions::default().duration(a.duration);
    let mut sup = Supervisor::start(specs, opts)?;
    for c in sup.children() {
        outln!(
            "peer_manager: started {} pid {} port {}",
            c.name,
            c.pid,
            c.port
        );
    }
    // One thread: the loop carries the peers' output, the supervisor is
    // polled between turns (SIGCHLD, SIGINT, SIGTERM, the duration).
    let reason = loop {
        lp.run_once(Some(Duration::from_millis(20)))?;
        if let Some(r) = sup.poll(Duration::ZERO)? {
            break r;
        }
    };
    let outcome = sup.finish(reason)?;
    drop(sup);
    // Take what the peers printed last, until every pipe closed (bounded).
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while !lp.is_empty() && std::time::Instant::now() < until {
        lp.run_once(Some(Duration::from_millis(50)))?;
    }
    drop(readers);

    let by_port: BTreeMap<u16, String> = outcome
        .children
        .iter()
        .map(|c| (c.port, c.name.clone()))
        .collect();
    let sums = summaries.borrow().clone();
    outln!(
        "peer_manager: stopped ({})",
        match &outcome.reason {
            StopReason::AllExited => "every peer exited".to_string(),
            StopReason::Duration => "duration reached".to_string(),
            StopReason::Signal(s) => format!("got {s}"),
            StopReason::ChildFailed(i) => format!("{} failed", outcome.children[*i].name),
            other => format!("{other:?}"),
        }
    );
    for (i, c) in outcome.children.iter().enumerate() {
        let status = c.status.map_or("running".to_string(), |s| s.to_string());
        match sums.get(&i) {
            Some(s) => outln!(
                "{}: port {}, pid {}, initiated {}, answered {}, failures {}, partners {}, {status}",
                c.name,
                c.port,
                c.pid,
                s.initiated,
                s.answered,
                s.failures,
                s.partners
                    .iter()
                    .map(|p| by_port.get(p).cloned().unwrap_or_else(|| format!("port {p}")))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => outln!("{}: port {}, pid {}, no summary, {status}", c.name, c.port, c.pid),
        }
    }
    let failed: Vec<_> = outcome.failures().collect();
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for c in failed {
            eprintln!("peer_manager: {c}");
        }
        Ok(ExitCode::FAILURE)
    }
}
