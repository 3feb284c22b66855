//! The supervisor with real child processes: templates, reservations held
//! until exit, failures, the grace period, and no child left behind.

use std::io::Read;
use std::time::Duration;

use procwire::net::supervisor::{ChildSpec, Handoff, StopReason, Supervisor, SupervisorOptions};
use procwire::sys::fd::pipe;
use procwire::sys::process::{process_exists, ExitStatus};
use procwire::sys::signal::Signal;

fn opts() -> SupervisorOptions {
    SupervisorOptions::default().grace(Duration::from_millis(500))
}

fn sh(name: &str, script: &str) -> ChildSpec {
    ChildSpec::new(name, ["sh", "-c", script])
}

fn read_all(fd: std::os::fd::OwnedFd) -> String {
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s).unwrap();
    s
}

#[test]
fn templates_and_port_variable_reach_each_child() {
    let (r0, w0) = pipe().unwrap();
    let (r1, w1) = pipe().unwrap();
    let specs = vec![
        ChildSpec::new(
            "a",
            [
                "sh",
                "-c",
                "echo {index} {port} {ports} {peers} $PORT $EXTRA",
            ],
        )
        .env("EXTRA", "x{port}")
        .fd(w0, 1),
        ChildSpec::new(
            "b",
            ["sh", "-c", "echo {index} {port} {ports} {peers} $PORT"],
        )
        .fd(w1, 1),
    ];
    let mut sup = Supervisor::start(specs, opts()).unwrap();
    let ports = sup.ports();
    let outcome = sup.run().unwrap();
    assert_eq!(outcome.reason, StopReason::AllExited);
    assert!(outcome.success());
    let (p0, p1) = (ports[0], ports[1]);
    assert_eq!(
        read_all(r0).trim(),
        format!("0 {p0} {p0},{p1} {p1} {p0} x{p0}")
    );
    assert_eq!(read_all(r1).trim(), format!("1 {p1} {p0},{p1} {p0} {p1}"));
}

/// Not a test of its own: run as the supervisor's child (with
/// `PROCWIRE_PROBE` set), it reports whether a plain bind of `$PORT` fails.
#[test]
fn probe_helper() {
    if std::env::var_os("PROCWIRE_PROBE").is_none() {
        return;
    }
    let port: u16 = std::env::var("PORT").unwrap().parse().unwrap();
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        // Marked: the harness prints its own words on the same line.
        Ok(_) => println!("probe: free"),
        Err(_) => println!("probe: held"),
    }
}

#[test]
fn reservation_is_held_while_the_child_runs() {
    let (r, w) = pipe().unwrap();
    // The child (this test binary again) reports whether a plain bind of
    // its port fails (held).
    let exe = std::env::current_exe().unwrap();
    let child = ChildSpec::new(
        "probe",
        [
            exe.to_str().unwrap(),
            "--exact",
            "probe_helper",
            "--nocapture",
            "--test-threads",
            "1",
        ],
    )
    .env("PROCWIRE_PROBE", "1")
    .fd(w, 1);
    let mut sup = Supervisor::start(vec![child], opts()).unwrap();
    sup.run().unwrap();
    let out = read_all(r);
    assert!(
        out.contains("probe: held") && !out.contains("probe: free"),
        "{out}"
    );
}

#[test]
fn a_failing_child_stops_the_others_and_is_named() {
    let specs = vec![sh("sleeper", "exec sleep 30"), sh("crasher", "exit 3")];
    let mut sup = Supervisor::start(specs, opts()).unwrap();
    let pids: Vec<i32> = sup.children().iter().map(|c| c.pid).collect();
    let outcome = sup.run().unwrap();
    assert_eq!(outcome.reason, StopReason::ChildFailed(1));
    let failed: Vec<_> = outcome.failures().map(|c| c.name.as_str()).collect();
    assert_eq!(failed, ["crasher"]);
    assert_eq!(outcome.children[1].status, Some(ExitStatus::Exited(3)));
    assert!(outcome.children[0].stopped_by_supervisor);
    assert_eq!(
        outcome.children[0].status,
        Some(ExitStatus::Signaled(Signal::TERM))
    );
    drop(sup);
    for p in pids {
        assert!(!process_exists(p), "pid {p} is left (zombie or running)");
    }
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let o = opts().duration(Some(Duration::from_millis(200)));
    let mut sup =
        Supervisor::start(vec![sh("stubborn", "trap '' TERM; exec sleep 30")], o).unwrap();
    let pid = sup.children()[0].pid;
    let t = std::time::Instant::now();
    let outcome = sup.run().unwrap();
    assert_eq!(outcome.reason, StopReason::Duration);
    assert_eq!(
        outcome.children[0].status,
        Some(ExitStatus::Signaled(Signal::KILL))
    );
    assert!(
        outcome.success(),
        "stopped by the supervisor is not a failure"
    );
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(!process_exists(pid));
}

#[test]
fn a_program_that_cannot_start_is_named_and_earlier_children_are_reaped() {
    let (r, w) = pipe().unwrap();
    let specs = vec![
        sh("first", "echo $$; exec sleep 30").fd(w, 1),
        ChildSpec::new("second", ["/nonexistent/procwire-peer", "{port}"]),
    ];
    let e = Supervisor::start(specs, opts()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "execve(second: /nonexistent/procwire-peer): No such file or directory (os error 2)"
    );
    // The first child was stopped and reaped: its stdout closed, its pid gone.
    let out = read_all(r);
    if let Ok(pid) = out.trim().parse::<i32>() {
        assert!(!process_exists(pid), "pid {pid} of the first child is left");
    }
}

#[test]
fn listener_handoff_passes_the_socket() {
    let (r, w) = pipe().unwrap();
    let script =
        "echo ${LISTEN_FDS}:${LISTEN_FDNAMES}:$([ \"$LISTEN_PID\" = \"$$\" ] && echo pid-ok)";
    let specs = vec![sh("activated", script).handoff(Handoff::Listener).fd(w, 1)];
    let mut sup = Supervisor::start(specs, opts()).unwrap();
    sup.run().unwrap();
    let out = read_all(r);
    assert!(
        out.trim() == "2:tcp-ipv4:tcp-ipv6:pid-ok" || out.trim() == "1:tcp-ipv4:pid-ok",
        "{out}"
    );
}
