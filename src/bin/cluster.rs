//! `cluster`: starts N copies of any server on race-free ports, waits until
//! every one is ready, prints the ports, and then runs a command against
//! them (exiting with its status) or stays until Ctrl-C; then stops them.
//!
//! ```text
//! cluster -n 3 --ready connect -- redis-server --port {port} --save ''
//! cluster -n 3 --ready connect -- redis-server --port {port} --then sh -c 'redis-cli -p $PORT_0 ping'
//! ```

#[macro_use]
#[path = "../../examples/cli/mod.rs"]
mod cli;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::net::{IpAddr, Ipv4Addr};

use procwire::net::port::ReservationBuilder;
use procwire::net::supervisor::{ChildSpec, Handoff, Readiness, Supervisor, SupervisorOptions};

const USAGE: &str = "usage: cluster -n N [options] -- PROGRAM [ARGS...] [--then COMMAND [ARGS...]]

Starts N copies of PROGRAM, each on a port of its own reserved race-free
({port}, {ports}, {peers} and {index} in the arguments; PORT in the
environment), waits until all are ready, prints the ports, then runs COMMAND
with PORTS (space-separated, in index order) and PORT_0, PORT_1, ... in its
environment and exits with its status, stopping the copies; without --then
it serves until Ctrl-C. Each port is held (SO_REUSEADDR and SO_REUSEPORT,
not listening) until its copy has exited: the copy's own bind with
SO_REUSEADDR, as servers do, gets in; autobinds and binds without options
don't.

  -n, --count N         how many copies (default 1)
  --ready HOW           started (default), connect (the port accepts a TCP
                        connection), notify (READY=1 by the systemd notify
                        protocol, NOTIFY_SOCKET; Linux), output:TEXT (a line
                        of its output contains TEXT), unix:PATH (a Unix
                        socket there accepts), or cmd:COMMAND (run by sh
                        until it exits 0; templates apply)
  --timeout SECS        how long each copy gets to become ready (default 30)
  --handoff port|fd     by port number (default), or the listening socket itself
                        by LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES
  --ordered             start each copy only once the one before it is ready
  --grace SECS          between SIGTERM and SIGKILL when stopping (default 5)
  --json                print the ports as JSON
  --env-file PATH       also write PORTS and PORT_i to PATH
  --logs DIR            each copy's output to DIR/INDEX.log instead of this
                        terminal, where it is prefixed with the copy's index";

struct Args {
    count: usize,
    ready: Readiness,
    timeout: Duration,
    handoff: Handoff,
    grace: Duration,
    json: bool,
    ordered: bool,
    env_file: Option<PathBuf>,
    logs: Option<PathBuf>,
    program: Vec<String>,
    then: Vec<String>,
}

fn parse(args: Vec<OsString>) -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let split = args.iter().position(|a| a == "--");
    let (opts, rest) = match split {
        Some(i) => (args[..i].to_vec(), args[i + 1..].to_vec()),
        None => (args.clone(), Vec::new()),
    };
    let mut a = Args {
        count: 1,
        ready: Readiness::Started,
        timeout: Duration::from_secs(30),
        handoff: Handoff::Port,
        grace: Duration::from_secs(5),
        json: false,
        ordered: false,
        env_file: None,
        logs: None,
        program: Vec::new(),
        then: Vec::new(),
    };
    let mut p = lexopt::Parser::from_args(opts);
    let err = |e: lexopt::Error| e.to_string();
    let secs = |v: OsString| -> Result<Duration, String> {
        let s = v.string().map_err(err)?;
        s.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("not a number of seconds: {s:?}"))
    };
    while let Some(arg) = p.next().map_err(err)? {
        match arg {
            Short('n') | Long("count") => {
                a.count = p.value().map_err(err)?.parse().map_err(err)?;
                if a.count == 0 {
                    return Err("-n must be at least 1".into());
                }
            }
            Long("ready") => {
                let v = p.value().map_err(err)?.string().map_err(err)?;
                a.ready = match v.as_str() {
                    "started" => Readiness::Started,
                    "connect" => Readiness::Connect,
                    #[cfg(any(target_os = "linux", target_os = "android"))]
                    "notify" => Readiness::Notify,
                    c if c.starts_with("output:") => Readiness::Output(c[7..].to_string()),
                    c if c.starts_with("unix:") => Readiness::ConnectUnix(c[5..].to_string()),
                    c if c.starts_with("cmd:") => {
                        Readiness::Command(vec!["sh".into(), "-c".into(), c[4..].to_string()])
                    }
                    other => {
                        return Err(format!(
                        "--ready: not started, connect, notify, output:..., unix:... or cmd:...: {other:?}"
                    ))
                    }
                };
            }
            Long("timeout") => a.timeout = secs(p.value().map_err(err)?)?,
            Long("grace") => a.grace = secs(p.value().map_err(err)?)?,
            Long("handoff") => {
                a.handoff = match p.value().map_err(err)?.string().map_err(err)?.as_str() {
                    "port" => Handoff::Port,
                    "fd" => Handoff::Listener,
                    other => return Err(format!("--handoff: not port or fd: {other:?}")),
                };
            }
            Long("json") => a.json = true,
            Long("ordered") => a.ordered = true,
            Long("env-file") => a.env_file = Some(p.value().map_err(err)?.into()),
            Long("logs") => a.logs = Some(p.value().map_err(err)?.into()),
            Short('h') | Long("help") => return Ok(None),
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    let rest: Vec<String> = rest
        .into_iter()
        .map(|s| s.into_string().map_err(|s| format!("not UTF-8: {s:?}")))
        .collect::<Result<_, _>>()?;
    let (program, then) = match rest.iter().position(|s| s == "--then") {
        Some(i) if i + 1 == rest.len() => return Err("--then needs a command".into()),
        Some(i) => (rest[..i].to_vec(), rest[i + 1..].to_vec()),
        None => (rest, Vec::new()),
    };
    if program.is_empty() {
        return Err("no program given (after --)".into());
    }
    a.program = program;
    a.then = then;
    Ok(Some(a))
}

fn run(a: Args) -> Result<u8, Box<dyn std::error::Error>> {
    let mut specs = Vec::with_capacity(a.count);
    for i in 0..a.count {
        let mut spec = ChildSpec::new(format!("{i}"), a.program.clone())
            .handoff(a.handoff)
            .ready(a.ready.clone())
            .ready_timeout(a.timeout);
        if a.ordered && i > 0 {
            spec = spec.after([i - 1]);
        }
        match &a.logs {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let f = std::fs::File::create(dir.join(format!("{i}.log")))?;
                let f2 = f.try_clone()?;
                spec = spec.fd(f.into(), 1).fd(f2.into(), 2);
            }
            // Shown here, each line after the copy's index.
            None => spec = spec.capture_output(format!("{i}| ")),
        }
        specs.push(spec);
    }
    // Unmodified servers set SO_REUSEADDR, not SO_REUSEPORT: the hold is
    // the pair that lets such a bind in (and keeps autobinds and binds
    // without options out) until the copy has exited.
    let hold = ReservationBuilder::new(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .both_loopback_families(true)
        .reuse_address(true);
    let opts = SupervisorOptions::default()
        .grace(a.grace)
        .reservation(hold);
    let mut sup = Supervisor::start(specs, opts)?;
    let ports = sup.ports();
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprint!("cluster: waiting for {} copies to be ready...\r", a.count);
    }
    if let Err(e) = sup.wait_ready() {
        // The error has the last lines of a copy that died.
        eprintln!("cluster: {e}");
        sup.terminate()?;
        return Ok(1);
    }
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    if a.json {
        let pids: Vec<String> = sup.children().iter().map(|c| c.pid.to_string()).collect();
        outln!(
            "{{\"ports\":[{}],\"pids\":[{}]}}",
            list.join(","),
            pids.join(",")
        );
    } else {
        outln!("cluster: ready: {}", list.join(" "));
    }
    cli::flush();
    let mut env: Vec<(String, String)> = vec![("PORTS".into(), list.join(" "))];
    for (i, p) in list.iter().enumerate() {
        env.push((format!("PORT_{i}"), p.clone()));
    }
    if let Some(path) = &a.env_file {
        let text: String = env.iter().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect();
        std::fs::write(path, text)?;
    }
    if a.then.is_empty() {
        let outcome = sup.run()?;
        let failed = outcome.failures().count();
        for c in outcome.failures() {
            eprintln!("cluster: {c}");
        }
        // Stopped by Ctrl-C or every copy exited: 0 unless one failed.
        return Ok(u8::from(failed > 0));
    }
    let mut then = std::process::Command::new(&a.then[0])
        .args(&a.then[1..])
        .envs(env)
        .spawn()
        .map_err(|e| format!("{}: {e}", a.then[0]))?;
    // The copies' output keeps flowing while the command runs.
    let status = loop {
        if let Some(s) = then.try_wait()? {
            break s;
        }
        let _ = sup.poll(Duration::from_millis(20))?;
    };
    sup.terminate()?;
    Ok(
        match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(c), _) => c.clamp(0, 255) as u8,
            (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
            _ => 1,
        },
    )
}

fn main() -> ExitCode {
    cli::keep_running_without_stdout();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let a = match parse(args) {
        Ok(Some(a)) => a,
        Ok(None) => return cli::help(USAGE),
        Err(e) => return cli::usage_error("cluster", USAGE, e),
    };
    match run(a) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cluster: {e}");
            ExitCode::FAILURE
        }
    }
}
