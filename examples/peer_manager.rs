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
//! `examples/peer.rs`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use procwire::net::port::{ChildSpec, Handoff, StopReason, Supervisor, SupervisorOptions};
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
                println!("{USAGE}");
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
    let summaries: Arc<Mutex<BTreeMap<usize, Summary>>> = Arc::default();
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
        let sums = Arc::clone(&summaries);
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(std::fs::File::from(r)).lines() {
                let Ok(line) = line else { break };
                match parse_summary(&line) {
                    Some(s) => {
                        sums.lock().map(|mut m| m.insert(i, s)).ok();
                    }
                    None => println!("{line}"),
                }
            }
        }));
        specs.push(
            ChildSpec::new(format!("peer-{i}"), cmd)
                .handoff(a.handoff)
                .fd(w, 1),
        );
    }
    let opts = SupervisorOptions {
        duration: a.duration,
        ..SupervisorOptions::default()
    };
    let mut sup = Supervisor::start(specs, opts)?;
    for c in sup.children() {
        println!(
            "peer_manager: started {} pid {} port {}",
            c.name, c.pid, c.port
        );
    }
    let outcome = sup.run()?;
    drop(sup);
    for r in readers {
        let _ = r.join();
    }

    let by_port: BTreeMap<u16, String> = outcome
        .children
        .iter()
        .map(|c| (c.port, c.name.clone()))
        .collect();
    let sums = summaries.lock().map(|m| m.clone()).unwrap_or_default();
    println!(
        "peer_manager: stopped ({})",
        match &outcome.reason {
            StopReason::AllExited => "every peer exited".to_string(),
            StopReason::Duration => "duration reached".to_string(),
            StopReason::Signal(s) => format!("got {s}"),
            StopReason::ChildFailed(i) => format!("{} failed", outcome.children[*i].name),
        }
    );
    for (i, c) in outcome.children.iter().enumerate() {
        let status = c.status.map_or("running".to_string(), |s| s.to_string());
        match sums.get(&i) {
            Some(s) => println!(
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
            None => println!("{}: port {}, pid {}, no summary, {status}", c.name, c.port, c.pid),
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
