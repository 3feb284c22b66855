//! Runs a whole peer-server-peer network and measures it: makes the test
//! file (or takes one), reserves one port for TCP and UDP, starts
//! `psp_server` on it and N `psp_client` processes, shows a live progress
//! line on a terminal, checks every client's output byte for byte, and
//! prints wall time, server CPU time, mean and p99 chunk round trip and the
//! cache hit rate. `--sweep` repeats the run over a list of client counts
//! or cache sizes and prints the table (and CSV) the original write-up
//! plotted.
//!
//! ```text
//! client_manager --clients 100 --size 100MB [--control udp|tcp] [--cache CHUNKS] [--chunk-size BYTES]
//! client_manager --sweep clients=1,10,50,100 --size 10MB
//! client_manager --hosts 10 [--mtu 1500] [--rate 1gbit] --clients 100 --size 100MB
//! ```
//!
//! `--hosts K` runs the server on one host and the clients spread over K
//! more: network namespaces on a bridge (see `psp_common/netns.rs`), each
//! with its own address and MTU and an optional rate limit, all removed
//! when the run ends (also on Ctrl-C). It needs root.
//!
//! Exits non-zero if any client failed or any output differs.

#[macro_use]
#[path = "cli/mod.rs"]
mod cli;

#[path = "psp_common/proto.rs"]
mod proto;

#[path = "psp_common/netns.rs"]
mod netns;

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use procwire::net::port::{Reservation, Transport};
use procwire::sys::process::kill;
use procwire::sys::signal::{Signal, SignalPipe};

use proto::{Control, Hist};

const USAGE: &str =
    "usage: client_manager [--clients N] [--size SIZE | --file PATH] [--control udp|tcp]
                      [--cache CHUNKS] [--chunk-size BYTES] [--sweep clients=A,B,..|cache=A,B,..]
                      [--csv PATH] [--out-dir DIR] [--keep]
                      [--hosts K [--mtu BYTES] [--rate RATE] [--net-shell CMD]]

Runs psp_server and N psp_client processes (default 100 clients, a 100MB
file of random bytes), checks every output and prints the figures.
SIZE takes a suffix: KB, MB, GB (powers of 1000) or KiB, MiB, GiB.
--cache defaults to 64 MiB worth of chunks.
--out-dir holds the clients' outputs (default: a new directory in /dev/shm
where it exists, else the temporary directory); they are deleted after the
check unless --keep.
--hosts K runs the server on its own host and the clients on K more hosts:
network namespaces joined by a bridge, addresses 10.77.0.0/16, links of
--mtu bytes (default 1500), each limited to --rate (tc's spelling: 1gbit,
500mbit) in both directions when given; removed when the run ends. Needs
root. --net-shell CMD makes that network and runs CMD (sh -c) instead of
the PSP programs, with PSP_NET_HOSTS (the namespaces, the server's host
first) and PSP_NET_ADDRS (their addresses) in its environment; it exits
with CMD's status once the network is gone again.";

#[derive(Clone)]
struct Config {
    clients: u32,
    size: u64,
    file: Option<PathBuf>,
    control: Control,
    cache: usize,
    chunk_size: usize,
    sweep: Option<(String, Vec<u64>)>,
    csv: Option<PathBuf>,
    out_dir: Option<PathBuf>,
    keep: bool,
    drop_udp: f64,
    kill_one: bool,
    hosts: usize,
    mtu: u32,
    rate: Option<u64>,
    junk: bool,
    net_shell: Option<String>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("size {s:?} must start with a number"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        u => return Err(format!("unknown size unit {u:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

fn parse() -> Result<Config, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let e = |e: lexopt::Error| e.to_string();
    let mut c = Config {
        clients: 100,
        size: 100_000_000,
        file: None,
        control: Control::Udp,
        cache: 0,
        chunk_size: proto::DEFAULT_CHUNK,
        sweep: None,
        csv: None,
        out_dir: None,
        keep: false,
        drop_udp: 0.0,
        kill_one: false,
        hosts: 0,
        mtu: 1500,
        rate: None,
        junk: false,
        net_shell: None,
    };
    while let Some(arg) = p.next().map_err(e)? {
        match arg {
            Long("clients") => c.clients = p.value().map_err(e)?.parse().map_err(e)?,
            Long("size") => c.size = parse_size(&p.value().map_err(e)?.string().map_err(e)?)?,
            Long("file") => c.file = Some(p.value().map_err(e)?.into()),
            Long("control") => c.control = p.value().map_err(e)?.parse().map_err(e)?,
            Long("cache") => {
                c.cache = p.value().map_err(e)?.parse().map_err(e)?;
                if c.cache == 0 {
                    return Err("--cache must be at least 1 chunk".into());
                }
            }
            Long("chunk-size") => c.chunk_size = p.value().map_err(e)?.parse().map_err(e)?,
            Long("csv") => c.csv = Some(p.value().map_err(e)?.into()),
            Long("out-dir") => c.out_dir = Some(p.value().map_err(e)?.into()),
            Long("keep") => c.keep = true,
            Long("hosts") => {
                c.hosts = p.value().map_err(e)?.parse().map_err(e)?;
                if c.hosts == 0 || c.hosts >= netns::MAX_HOSTS {
                    return Err(format!("--hosts must be 1 to {}", netns::MAX_HOSTS - 1));
                }
            }
            Long("mtu") => c.mtu = p.value().map_err(e)?.parse().map_err(e)?,
            Long("net-shell") => c.net_shell = Some(p.value().map_err(e)?.string().map_err(e)?),
            Long("rate") => {
                c.rate = Some(netns::parse_rate(
                    &p.value().map_err(e)?.string().map_err(e)?,
                )?)
            }
            Long("sweep") => {
                let v = p.value().map_err(e)?.string().map_err(e)?;
                let (what, list) = v.split_once('=').ok_or_else(|| {
                    format!("--sweep takes clients=A,B,.. or cache=A,B,.., not {v:?}")
                })?;
                if what != "clients" && what != "cache" {
                    return Err(format!("--sweep can vary clients or cache, not {what:?}"));
                }
                let vals = list
                    .split(',')
                    .map(|x| {
                        x.trim()
                            .parse::<u64>()
                            .map_err(|_| format!("--sweep value {x:?} is not a number"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if vals.is_empty() || vals.contains(&0) {
                    return Err("--sweep values must be at least 1".into());
                }
                c.sweep = Some((what.to_string(), vals));
            }
            // Test only: passed to the server and the clients.
            Long("drop-udp") => c.drop_udp = p.value().map_err(e)?.parse().map_err(e)?,
            // Test only: client 0 stalls halfway and is killed with SIGKILL;
            // the others must finish.
            Long("kill-one") => c.kill_one = true,
            // Test only: a hostile peer (psp_client --junk) on a host of
            // its own sends junk to the server during the run.
            Long("junk") => c.junk = true,
            Short('h') | Long("help") => {
                outln!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    if c.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if c.chunk_size == 0 || c.chunk_size > proto::MAX_CHUNK {
        return Err(format!("--chunk-size must be 1 to {}", proto::MAX_CHUNK));
    }
    if c.cache == 0 {
        c.cache = (proto::DEFAULT_CACHE_BYTES / c.chunk_size).max(1);
    }
    if c.kill_one && c.clients < 2 {
        return Err("--kill-one needs at least 2 clients".into());
    }
    if c.net_shell.is_some() && c.hosts == 0 {
        return Err("--net-shell runs in the network of --hosts".into());
    }
    if c.hosts == 0 && (c.rate.is_some() || c.mtu != 1500) {
        return Err("--mtu and --rate shape the links of --hosts".into());
    }
    if !(68..=65_535).contains(&c.mtu) {
        return Err(format!("--mtu must be 68 to 65535, not {}", c.mtu));
    }
    Ok(c)
}

/// What one run measured.
struct Outcome {
    clients: u32,
    cache: usize,
    wall: Duration,
    server_cpu: Option<f64>,
    hist: Hist,
    hit_rate: f64,
    failed: Vec<String>,
}

fn exe(name: &str) -> std::io::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let p = me.with_file_name(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} not found next to client_manager (build the examples: cargo build --release --examples)", p.display()),
        ))
    }
}

/// A file of `size` pseudo-random bytes.
fn make_file(path: &Path, size: u64) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut rng = cli::Rng::new(0x5eed_f11e);
    let mut left = size;
    let mut block = vec![0u8; 1 << 16];
    while left > 0 {
        for w in block.chunks_mut(8) {
            let v = (rng.unit() * (1u64 << 53) as f64) as u64;
            let b = v.to_le_bytes();
            w.copy_from_slice(&b[..w.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()
}

/// Whether `a` and `b` hold the same bytes.
fn same_contents(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (fa, fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ra, mut rb) = (
        BufReader::with_capacity(1 << 20, fa),
        BufReader::with_capacity(1 << 20, fb),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = ra.read(&mut ba)?;
        if n == 0 {
            return Ok(rb.read(&mut bb)? == 0);
        }
        rb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

#[derive(Default)]
struct Progress {
    served: u64,
    total: u64,
    done: u64,
    summary: Option<String>,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// Where the programs of a run live: loopback, or the hosts of a network
/// (the server on host 0, the clients on the others).
#[derive(Clone, Copy)]
enum Place<'a> {
    Loopback,
    /// The server on host 0, clients on hosts `1..=clients`, the junk
    /// peer (if any) on the host after them.
    Hosts(&'a netns::Network, usize),
}

/// Who runs a program.
#[derive(Clone, Copy)]
enum Role {
    Server,
    Client(u32),
    Junk,
}

impl Place<'_> {
    /// A command for `program` where `role` runs.
    fn command(&self, program: &Path, role: Role) -> Command {
        match *self {
            Place::Loopback => Command::new(program),
            Place::Hosts(net, clients) => {
                let host = match role {
                    Role::Server => 0,
                    Role::Client(c) => 1 + c as usize % clients,
                    Role::Junk => (clients + 1).min(net.len() - 1),
                };
                net.command(host, program)
            }
        }
    }

    fn server_ip(&self) -> Ipv4Addr {
        match self {
            Place::Loopback => Ipv4Addr::LOCALHOST,
            Place::Hosts(..) => netns::host_addr(0),
        }
    }
}

/// Set by [`interrupted`] once SIGINT or SIGTERM came.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the run should stop (Ctrl-C or SIGTERM), looking at `sig`.
fn interrupted(sig: &SignalPipe) -> bool {
    if let Ok(v) = sig.drain() {
        if !v.is_empty() {
            STOP.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    STOP.load(std::sync::atomic::Ordering::Relaxed)
}

fn run_once(
    cfg: &Config,
    file: &Path,
    out_dir: &Path,
    tag: &str,
    place: Place<'_>,
    sig: &SignalPipe,
) -> std::io::Result<Outcome> {
    let server_exe = exe("psp_server")?;
    let client_exe = exe("psp_client")?;
    // On loopback the port is reserved here and joined by the server; a
    // host of its own has every port free, and the server picks one.
    let res = match place {
        Place::Loopback => Some(
            Reservation::builder(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .transport(Transport::TcpAndUdp)
                .reserve()?,
        ),
        Place::Hosts(..) => None,
    };
    let mut server = place.command(&server_exe, Role::Server);
    server
        .arg(file)
        .args(["--clients", &cfg.clients.to_string()])
        .args(["--cache", &cfg.cache.to_string()])
        .args(["--chunk-size", &cfg.chunk_size.to_string()])
        .args(["--control", &cfg.control.to_string()])
        .args(["--bind", &place.server_ip().to_string()])
        .stdout(Stdio::piped());
    if let Some(r) = &res {
        server.args(["--port", &r.port().to_string()]);
    }
    if cfg.drop_udp > 0.0 {
        server.args(["--drop-udp", &cfg.drop_udp.to_string()]);
    }
    let mut server = server.spawn()?;
    let mut lines = BufReader::new(server.stdout.take().expect("piped stdout")).lines();
    let port = match lines.next() {
        Some(Ok(l)) if l.starts_with("ready") => l
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u16>().ok()),
        _ => None,
    };
    let Some(port) = port else {
        let _ = server.kill();
        let _ = server.wait();
        return Err(std::io::Error::other("psp_server did not start"));
    };
    // The server listens on the port now: the reservation can go.
    drop(res);
    let progress = Arc::new(Mutex::new(Progress::default()));
    let p = Arc::clone(&progress);
    let reader = std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut g = p.lock().unwrap_or_else(|e| e.into_inner());
            if line.starts_with("status") {
                g.served = field(&line, "served")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(g.served);
                g.total = field(&line, "total")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(g.total);
                g.done = field(&line, "done")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(g.done);
            } else if line.starts_with("summary") {
                g.summary = Some(line);
            }
        }
    });

    let n_chunks = cfg.size.div_ceil(cfg.chunk_size as u64);
    let start = Instant::now();
    let mut clients: Vec<(PathBuf, Child)> = Vec::new();
    for i in 0..cfg.clients {
        let out = out_dir.join(format!("{tag}-client-{i}"));
        let mut c = place.command(&client_exe, Role::Client(i));
        c.arg(format!("{}:{port}", place.server_ip()))
            .arg("-o")
            .arg(&out)
            .args(["--control", &cfg.control.to_string()])
            .stdout(Stdio::piped());
        if cfg.drop_udp > 0.0 {
            c.args(["--drop-udp", &cfg.drop_udp.to_string()]);
        }
        if cfg.kill_one && i == 0 {
            c.args(["--stall-after", &(n_chunks / 2).max(1).to_string()]);
        }
        match c.spawn() {
            Ok(child) => clients.push((out, child)),
            Err(e) => {
                for (_, mut ch) in clients {
                    let _ = ch.kill();
                    let _ = ch.wait();
                }
                let _ = server.kill();
                let _ = server.wait();
                return Err(e);
            }
        }
    }
    // --junk: the hostile peer, while the clients run.
    let mut junk = if cfg.junk {
        let mut j = place.command(&client_exe, Role::Junk);
        j.arg(format!("{}:{port}", place.server_ip()))
            .args(["--junk", "300"])
            .stdout(Stdio::null());
        Some(j.spawn()?)
    } else {
        None
    };
    // Client 0 in --kill-one: killed as soon as it says it stalled.
    let victim = if cfg.kill_one {
        let out = clients[0].1.stdout.take().expect("piped stdout");
        let pid = clients[0].1.id() as i32;
        Some(std::thread::spawn(move || {
            let mut rest = String::new();
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line == "stalled" {
                    let killed = kill(pid, Signal::KILL).is_ok();
                    return (killed, rest);
                }
                rest.push_str(&line);
            }
            (false, rest)
        }))
    } else {
        None
    };

    let tty = std::io::stderr().is_terminal();
    let mut results: Vec<Option<std::process::ExitStatus>> = vec![None; clients.len()];
    let mut last_draw = Instant::now();
    let mut aborted = None;
    while results.iter().any(Option::is_none) {
        if interrupted(sig) {
            for (j, (_, ch)) in clients.iter_mut().enumerate() {
                if results[j].is_none() {
                    let _ = ch.kill();
                    let _ = ch.wait();
                }
            }
            let _ = server.kill();
            let _ = server.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "interrupted; everything it started is stopped",
            ));
        }
        for (i, (_, ch)) in clients.iter_mut().enumerate() {
            if results[i].is_none() {
                results[i] = ch.try_wait()?;
                let failed = results[i].is_some_and(|s| !s.success());
                let victim = cfg.kill_one && i == 0;
                if failed && !victim && aborted.is_none() {
                    // One client failed: the transfer can't complete as
                    // asked, so nobody waits for it.
                    aborted = Some(i);
                }
            }
        }
        if let Some(i) = aborted {
            eprintln!("client_manager: client {i} failed; stopping the run");
            for (j, (_, ch)) in clients.iter_mut().enumerate() {
                if results[j].is_none() {
                    let _ = ch.kill();
                    results[j] = Some(ch.wait()?);
                }
            }
            let _ = server.kill();
        }
        if tty && last_draw.elapsed() >= Duration::from_millis(200) {
            last_draw = Instant::now();
            let g = progress.lock().unwrap_or_else(|e| e.into_inner());
            let pct = if g.total == 0 {
                0.0
            } else {
                100.0 * g.served as f64 / g.total as f64
            };
            eprint!(
                "\r{tag}: {:>6.2}s  chunks served {}/{} ({pct:.1}%)  clients done {}/{}   ",
                start.elapsed().as_secs_f64(),
                g.served,
                g.total,
                g.done,
                cfg.clients
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = start.elapsed();
    if tty {
        eprintln!();
    }
    // The server exits once every client is done or gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = server.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = server.wait();
    let _ = reader.join();
    let victim = victim.map(|h| h.join().unwrap_or((false, String::new())));

    let mut hist = Hist::default();
    let mut failed = Vec::new();
    for (i, (out, mut ch)) in clients.into_iter().enumerate() {
        let mut text = String::new();
        if let Some(mut o) = ch.stdout.take() {
            let _ = o.read_to_string(&mut text);
        }
        if i == 0 {
            if let Some((killed, _)) = &victim {
                if !killed {
                    failed.push("client 0 was to be killed midway but never stalled".into());
                }
                let _ = std::fs::remove_file(&out);
                continue;
            }
        }
        for line in text.lines() {
            if let Some(h) = line.strip_prefix("rtt ").and_then(Hist::from_line) {
                hist.merge(&h);
            }
        }
        let ok = results[i].is_some_and(|s| s.success());
        if !ok {
            failed.push(format!("client {i} exited with {:?}", results[i]));
        } else {
            match same_contents(file, &out) {
                Ok(true) => {}
                Ok(false) => failed.push(format!(
                    "client {i}: {} differs from the file",
                    out.display()
                )),
                Err(e) => failed.push(format!("client {i}: reading {}: {e}", out.display())),
            }
        }
        if !cfg.keep {
            let _ = std::fs::remove_file(&out);
        }
    }
    if let Some(j) = junk.as_mut() {
        match j.wait() {
            Ok(s) if s.success() => {}
            other => failed.push(format!("the junk peer ended with {other:?}")),
        }
    }
    let g = progress.lock().unwrap_or_else(|e| e.into_inner());
    let summary = g.summary.clone().unwrap_or_default();
    if summary.is_empty() {
        failed.push("psp_server printed no summary".into());
    } else if cfg.junk {
        outln!("server {summary}");
    }
    Ok(Outcome {
        clients: cfg.clients,
        cache: cfg.cache,
        wall,
        server_cpu: field(&summary, "cpu_s").and_then(|v| v.parse().ok()),
        hist,
        hit_rate: field(&summary, "hit_rate")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        failed,
    })
}

fn main() -> ExitCode {
    cli::keep_running_without_stdout();
    let cfg = match parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("client_manager: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&cfg) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
            eprintln!("client_manager: {e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("client_manager: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: &Config) -> std::io::Result<bool> {
    let base = match &cfg.out_dir {
        Some(d) => d.clone(),
        None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    let dir = base.join(format!("psp-run-{}", std::process::id()));
    // Ctrl-C and SIGTERM stop the run in order: children first, then the
    // network, then the outputs.
    let sig = SignalPipe::install(&[Signal::INT, Signal::TERM])?;
    let net = if cfg.hosts > 0 {
        // The server's host, one per --hosts, and the junk peer's.
        let n = cfg.hosts + 1 + usize::from(cfg.junk);
        Some(netns::Network::create(n, cfg.mtu, cfg.rate).map_err(std::io::Error::other)?)
    } else {
        None
    };
    let place = net
        .as_ref()
        .map_or(Place::Loopback, |n| Place::Hosts(n, cfg.hosts));
    if let Some(n) = &net {
        outln!(
            "network: server on {} ({}), clients on {} hosts, MTU {}{}",
            netns::host_addr(0),
            n.name(0),
            cfg.hosts,
            n.mtu(),
            cfg.rate.map_or(String::new(), |r| format!(
                ", {} Mbit/s per link",
                r / 1_000_000
            ))
        );
    }
    if let (Some(cmd), Some(n)) = (&cfg.net_shell, &net) {
        return net_shell(cmd, n, &sig);
    }
    std::fs::create_dir_all(&dir)?;
    let result = run_in(cfg, &dir, place, &sig);
    if !cfg.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// `--net-shell`: runs `cmd` with the network's names and addresses in
/// its environment; stopped (and the network removed by the caller) on
/// Ctrl-C.
fn net_shell(cmd: &str, net: &netns::Network, sig: &SignalPipe) -> std::io::Result<bool> {
    let names: Vec<&str> = (0..net.len()).map(|i| net.name(i)).collect();
    let addrs: Vec<String> = (0..net.len())
        .map(|i| netns::host_addr(i).to_string())
        .collect();
    let mut child = Command::new("sh")
        .args(["-c", cmd])
        .env("PSP_NET_HOSTS", names.join(" "))
        .env("PSP_NET_ADDRS", addrs.join(" "))
        .spawn()?;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if interrupted(sig) {
            let _ = kill(child.id() as i32, Signal::TERM);
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "interrupted; the command is stopped",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_in(cfg: &Config, dir: &Path, place: Place<'_>, sig: &SignalPipe) -> std::io::Result<bool> {
    let file = match &cfg.file {
        Some(f) => f.clone(),
        None => {
            let f = dir.join("source.bin");
            make_file(&f, cfg.size)?;
            f
        }
    };
    let size = std::fs::metadata(&file)?.len();
    let mut cfg = cfg.clone();
    cfg.size = size;
    let runs: Vec<Config> = match &cfg.sweep {
        None => vec![cfg.clone()],
        Some((what, vals)) => vals
            .iter()
            .map(|&v| {
                let mut c = cfg.clone();
                if what == "clients" {
                    c.clients = v as u32;
                } else {
                    c.cache = v as usize;
                }
                c
            })
            .collect(),
    };
    outln!(
        "file {} bytes, chunks of {} bytes, control over {}, chunks over {}",
        size,
        cfg.chunk_size,
        cfg.control,
        if cfg.control == Control::Udp {
            "tcp"
        } else {
            "udp"
        }
    );
    outln!(
        "{:>8} {:>8} {:>10} {:>12} {:>14} {:>14} {:>9}",
        "clients",
        "cache",
        "wall_s",
        "server_cpu_s",
        "rtt_mean_us",
        "rtt_p99_us",
        "hit_rate"
    );
    let mut rows = Vec::new();
    let mut all_ok = true;
    for (i, c) in runs.iter().enumerate() {
        let o = run_once(c, &file, dir, &format!("run{i}"), place, sig)?;
        outln!(
            "{:>8} {:>8} {:>10.3} {:>12} {:>14.0} {:>14.0} {:>9.3}",
            o.clients,
            o.cache,
            o.wall.as_secs_f64(),
            o.server_cpu.map_or("n/a".into(), |v| format!("{v:.2}")),
            o.hist.mean(),
            o.hist.quantile(0.99),
            o.hit_rate
        );
        for f in &o.failed {
            eprintln!("client_manager: FAILED: {f}");
        }
        all_ok &= o.failed.is_empty();
        rows.push(o);
    }
    let mut csv =
        String::from("clients,cache,wall_s,server_cpu_s,rtt_mean_us,rtt_p99_us,hit_rate,ok\n");
    for o in &rows {
        csv.push_str(&format!(
            "{},{},{:.4},{},{:.1},{:.1},{:.4},{}\n",
            o.clients,
            o.cache,
            o.wall.as_secs_f64(),
            o.server_cpu.map_or(String::new(), |v| format!("{v:.2}")),
            o.hist.mean(),
            o.hist.quantile(0.99),
            o.hit_rate,
            o.failed.is_empty()
        ));
    }
    if cfg.sweep.is_some() {
        outln!("csv:\n{csv}");
    }
    if let Some(p) = &cfg.csv {
        std::fs::write(p, &csv)?;
    }
    if all_ok {
        outln!("ok: every output matches the file");
    }
    Ok(all_ok)
}
