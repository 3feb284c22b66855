//! Echo throughput: our `echo_server` (the event loop) against an echo
//! server written with mio, driven by the same load generator
//! (`echo_client`) in another process, alternating rounds in one run.
//! Records messages/s and the server's CPU time per message; ends with one
//! `RATIO` line per case (ours over mio, messages/s).
//!
//! `cargo bench --bench echo`
//!
//! Every process is this binary run with a role: `server-ours`,
//! `server-mio`, or `client ...`.

#[allow(clippy::duplicate_mod)]
#[macro_use]
#[path = "../examples/cli/mod.rs"]
mod cli;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

#[allow(dead_code)]
#[path = "../examples/echo_client.rs"]
mod echo_client;
#[allow(dead_code)]
#[path = "../examples/echo_server.rs"]
mod echo_server;

const ROUNDS: usize = 15;

/// An echo server on mio, written the way mio's own examples write one:
/// edge-triggered, read until WouldBlock, write back, queue what's left.
fn mio_server() {
    use mio::net::TcpListener;
    use mio::{Events, Interest, Poll, Token};
    use std::collections::HashMap;

    const LISTENER: Token = Token(0);
    let mut poll = Poll::new().expect("poll");
    let mut listener = TcpListener::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    println!(
        "echo_server listening on {}",
        listener.local_addr().expect("local_addr")
    );
    std::io::stdout().flush().expect("flush");
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .expect("register");
    let mut conns: HashMap<Token, (mio::net::TcpStream, Vec<u8>)> = HashMap::new();
    let mut next = 1;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("poll: {e}"),
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((mut s, _)) = listener.accept() {
                    let _ = s.set_nodelay(true);
                    let t = Token(next);
                    next += 1;
                    poll.registry()
                        .register(&mut s, t, Interest::READABLE | Interest::WRITABLE)
                        .expect("register");
                    conns.insert(t, (s, Vec::new()));
                }
                continue;
            }
            let t = ev.token();
            let mut close = false;
            if let Some((s, pending)) = conns.get_mut(&t) {
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => {
                            close = true;
                            break;
                        }
                        Ok(n) => {
                            if pending.is_empty() {
                                match s.write(&buf[..n]) {
                                    Ok(w) => pending.extend_from_slice(&buf[w..n]),
                                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                        pending.extend_from_slice(&buf[..n])
                                    }
                                    Err(_) => {
                                        close = true;
                                        break;
                                    }
                                }
                            } else {
                                pending.extend_from_slice(&buf[..n]);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            close = true;
                            break;
                        }
                    }
                }
                while !pending.is_empty() && !close {
                    match s.write(pending) {
                        Ok(w) => {
                            pending.drain(..w);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => close = true,
                    }
                }
            }
            if close {
                if let Some((mut s, _)) = conns.remove(&t) {
                    let _ = poll.registry().deregister(&mut s);
                }
            }
        }
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    procwire::sys::process::cpu_time_of(pid as i32)
        .expect("the server's CPU time")
        .as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Server {
    child: std::process::Child,
    addr: String,
}

fn start_server(role: &str) -> Server {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .arg(role)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("server address");
    let addr = line.trim().rsplit(' ').next().expect("address").to_string();
    Server { child, addr }
}

/// Runs one client process; returns messages/s.
fn client(addr: &str, rounds: u64, inflight: u64) -> f64 {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args(["client", addr, "--connections", "100", "--size", "64"])
        .args([
            "--rounds",
            &rounds.to_string(),
            "--inflight",
            &inflight.to_string(),
        ])
        .output()
        .expect("client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.rsplit("messages/s: ")
        .next()
        .and_then(|r| r.trim().parse().ok())
        .expect("a messages/s figure")
}

/// Pins this process to one CPU (servers on the last, clients on the first),
/// so the two sides don't trade places between rounds; the same for both
/// servers.
fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let role = std::env::args().nth(1).unwrap_or_default();
    if role.starts_with("server") {
        pin(cpus() - 1);
    } else if role == "client" {
        pin(0);
    }
    match args.next().as_deref() {
        Some("server-ours") => {
            std::process::exit(match echo_server::run(["--port".into(), "0".into()]) {
                std::process::ExitCode::SUCCESS => 0,
                _ => 1,
            })
        }
        Some("server-mio") => mio_server(),
        Some("client") => {
            let rest: Vec<std::ffi::OsString> = args.map(Into::into).collect();
            let code = echo_client::run(rest);
            std::process::exit(if code == std::process::ExitCode::SUCCESS {
                0
            } else {
                1
            });
        }
        _ => {}
    }
    let mut ours = start_server("server-ours");
    let mut mio = start_server("server-mio");
    let cases = [("pingpong", 1000u64, 1u64), ("inflight16", 10000, 16)];
    let mut lines = Vec::new();
    for (name, rounds, inflight) in cases {
        let messages = rounds as f64 * 100.0;
        // Warm up both.
        client(&ours.addr, rounds / 10, inflight);
        client(&mio.addr, rounds / 10, inflight);
        let (mut ro, mut rm, mut co, mut cm) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // Alternate which goes first.
            let order: [(&Server, bool); 2] = if round % 2 == 0 {
                [(&ours, true), (&mio, false)]
            } else {
                [(&mio, false), (&ours, true)]
            };
            for (srv, is_ours) in order {
                let pid = srv.child.id();
                let c0 = cpu_seconds(pid);
                let rate = client(&srv.addr, rounds, inflight);
                let cpu_us = (cpu_seconds(pid) - c0) * 1e6 / messages;
                if is_ours {
                    ro.push(rate);
                    co.push(cpu_us);
                } else {
                    rm.push(rate);
                    cm.push(cpu_us);
                }
            }
        }
        // Each round measures both back to back: the median of the per-round
        // ratios cancels drift of the machine between rounds.
        let paired = median(ro.iter().zip(&rm).map(|(o, m)| o / m).collect());
        let (ro, rm, co, cm) = (median(ro), median(rm), median(co), median(cm));
        println!("{name}: procwire {ro:.0} msg/s ({co:.2} us server CPU/msg), mio {rm:.0} msg/s ({cm:.2} us server CPU/msg), medians of {ROUNDS} alternating rounds");
        lines.push(format!("RATIO echo/{name} = {paired:.2} goal >= 1.0"));
    }
    for s in [&mut ours, &mut mio] {
        let _ = s.child.kill();
        let _ = s.child.wait();
    }
    for l in lines {
        println!("{l}");
    }
}
