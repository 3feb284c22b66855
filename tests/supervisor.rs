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

/// Not a test of its own: run as the supervisor's child (with
/// `PROCWIRE_LATE_LISTENER` set), it listens on `$PORT` only after a
/// while, as a slow server does, then accepts until it is stopped.
#[test]
fn late_listener_helper() {
    if std::env::var_os("PROCWIRE_LATE_LISTENER").is_none() {
        return;
    }
    let port: u16 = std::env::var("PORT").unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let l = procwire::net::port::bind_reserved(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .unwrap();
    l.listen(16).unwrap();
    loop {
        let _ = l.accept();
    }
}

fn late_listener(name: &str) -> ChildSpec {
    let exe = std::env::current_exe().unwrap();
    ChildSpec::new(
        name,
        [
            exe.to_str().unwrap(),
            "--exact",
            "late_listener_helper",
            "--nocapture",
            "--test-threads",
            "1",
        ],
    )
    .env("PROCWIRE_LATE_LISTENER", "1")
}

#[test]
fn wait_ready_waits_for_the_port_to_accept() {
    use procwire::net::supervisor::Readiness;
    let specs = (0..2)
        .map(|i| late_listener(&format!("slow-{i}")).ready(Readiness::Connect))
        .collect();
    let mut sup = Supervisor::start(specs, opts()).unwrap();
    assert_eq!(sup.ready(), vec![false, false]);
    sup.wait_ready().unwrap();
    assert_eq!(sup.ready(), vec![true, true]);
    for p in sup.ports() {
        std::net::TcpStream::connect(("127.0.0.1", p)).expect("ready means it accepts");
    }
    let outcome = sup.finish(StopReason::Duration).unwrap();
    assert!(outcome.success(), "{:?}", outcome.children);
}

#[test]
fn a_readiness_command_runs_until_it_succeeds() {
    use procwire::net::supervisor::Readiness;
    let dir = std::env::temp_dir().join(format!("procwire-ready-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let spec = sh(
        "flagger",
        &format!("sleep 0.2; touch {d}/flag-{{index}}-{{port}}; exec sleep 30"),
    )
    .ready(Readiness::Command(vec![
        "test".into(),
        "-e".into(),
        format!("{d}/flag-{{index}}-{{port}}"),
    ]));
    let mut sup = Supervisor::start(vec![spec], opts()).unwrap();
    let port = sup.ports()[0];
    sup.wait_ready().unwrap();
    assert!(dir.join(format!("flag-0-{port}")).exists());
    sup.terminate().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_child_that_misses_its_deadline_or_dies_first_is_named() {
    use procwire::net::supervisor::Readiness;
    let spec = sh("sleepy", "exec sleep 30")
        .ready(Readiness::Connect)
        .ready_timeout(Duration::from_millis(300));
    let mut sup = Supervisor::start(vec![spec], opts()).unwrap();
    let pid = sup.children()[0].pid;
    let e = sup.wait_ready().unwrap_err();
    assert_eq!(e.raw_os_error(), libc::ETIMEDOUT, "{e}");
    assert!(
        e.to_string().contains("sleepy: not ready after 300ms"),
        "{e}"
    );
    drop(sup);
    assert!(!process_exists(pid), "stopped and reaped on drop");

    let specs = vec![
        late_listener("fine").ready(Readiness::Connect),
        sh("quitter", "exit 3").ready(Readiness::Connect),
    ];
    let mut sup = Supervisor::start(specs, opts()).unwrap();
    let e = sup.wait_ready().unwrap_err();
    assert_eq!(e.raw_os_error(), libc::ECHILD, "{e}");
    assert!(
        e.to_string().contains("quitter") && e.to_string().contains("exited before it was ready"),
        "{e}"
    );
}

/// Not a test of its own: the notify protocol's child side, by role
/// (`PROCWIRE_NOTIFY_ROLE`): `late` says READY=1 after a while, `forger`
/// sends READY=1 to the socket named in the file `$FORGE_FILE` (another
/// child's), `watchdog` pings three times and then stops.
#[test]
fn notify_helper() {
    use procwire::net::supervisor::notify;
    let Ok(role) = std::env::var("PROCWIRE_NOTIFY_ROLE") else {
        return;
    };
    match role.as_str() {
        "late" => {
            std::thread::sleep(Duration::from_millis(200));
            assert!(notify("STATUS=warmed up\nREADY=1").unwrap());
        }
        "forger" => {
            let file = std::env::var("FORGE_FILE").unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let target = loop {
                if let Ok(t) = std::fs::read_to_string(&file) {
                    if t.ends_with('\n') {
                        break t.trim().to_string();
                    }
                }
                assert!(std::time::Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(5));
            };
            std::env::set_var("NOTIFY_SOCKET", &target);
            for _ in 0..3 {
                notify("READY=1").unwrap();
            }
            // Then its own READY, so only the victim waits.
        }
        "watchdog" => {
            let usec: u64 = std::env::var("WATCHDOG_USEC").unwrap().parse().unwrap();
            notify("READY=1").unwrap();
            for _ in 0..3 {
                std::thread::sleep(Duration::from_micros(usec / 4));
                notify("WATCHDOG=1").unwrap();
            }
        }
        _ => {}
    }
    std::thread::sleep(Duration::from_secs(60));
}

#[cfg(target_os = "linux")]
fn notifier(name: &str, role: &str) -> ChildSpec {
    let exe = std::env::current_exe().unwrap();
    ChildSpec::new(
        name,
        [
            exe.to_str().unwrap(),
            "--exact",
            "notify_helper",
            "--nocapture",
            "--test-threads",
            "1",
        ],
    )
    .env("PROCWIRE_NOTIFY_ROLE", role)
    .ready(procwire::net::supervisor::Readiness::Notify)
}

#[cfg(target_os = "linux")]
#[test]
fn notify_ready_counts_and_its_status_is_kept() {
    let mut sup = Supervisor::start(vec![notifier("late", "late")], opts()).unwrap();
    assert_eq!(sup.ready(), vec![false]);
    sup.wait_ready().unwrap();
    let c = &sup.children()[0];
    assert_eq!(c.status_text.as_deref(), Some("warmed up"));
    assert_eq!(c.refused_notifications, 0);
    // Outside a supervisor there is no one to tell.
    std::env::remove_var("NOTIFY_SOCKET");
    assert!(!procwire::net::supervisor::notify("READY=1").unwrap());
}

#[cfg(target_os = "linux")]
#[test]
fn a_child_cannot_say_ready_for_another() {
    let dir = std::env::temp_dir().join(format!("procwire-forge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("target");
    let specs = vec![
        notifier("victim", "none").ready_timeout(Duration::from_millis(1500)),
        notifier("forger", "forger").env("FORGE_FILE", file.to_str().unwrap()),
    ];
    let mut sup = Supervisor::start(specs, opts()).unwrap();
    let victim_pid = sup.children()[0].pid;
    // The victim's socket name, as the supervisor gave it in its environment.
    let environ = std::fs::read(format!("/proc/{victim_pid}/environ")).unwrap();
    let target = environ
        .split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(b"NOTIFY_SOCKET="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap();
    std::fs::write(&file, format!("{target}\n")).unwrap();
    let e = sup.wait_ready().unwrap_err();
    assert_eq!(e.raw_os_error(), libc::ETIMEDOUT, "{e}");
    assert!(e.to_string().contains("victim: not ready"), "{e}");
    assert!(
        e.to_string()
            .contains("3 notifications from other processes refused"),
        "{e}"
    );
    drop(sup);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn a_lapsed_watchdog_aborts_the_child_and_stops_the_rest() {
    let specs = vec![
        notifier("dog", "watchdog").watchdog(Duration::from_millis(200)),
        late_listener("bystander"),
    ];
    let mut sup = Supervisor::start(specs, opts()).unwrap();
    sup.wait_ready().unwrap();
    let outcome = sup.run().unwrap();
    assert_eq!(outcome.reason, StopReason::ChildFailed(0));
    let dog = &outcome.children[0];
    assert!(dog.watchdog_lapsed && dog.failed(), "{dog:?}");
    assert_eq!(dog.status, Some(ExitStatus::Signaled(Signal::ABRT)));
    assert!(!outcome.children[1].failed(), "{:?}", outcome.children[1]);
}

#[test]
fn a_child_starts_only_after_the_ones_it_depends_on_are_ready() {
    use procwire::net::supervisor::Readiness;
    // The second child checks, when it starts, that the first one's port
    // already answers; the first listens only after a while.
    let specs = vec![
        late_listener("database").ready(Readiness::Connect),
        sh(
            "app",
            "exec python3 -c 'import socket,os; socket.create_connection((\"127.0.0.1\", int(os.environ[\"DB\"])), 5); print(\"connected\")'",
        )
        .env("DB", "{peers}")
        .after([0]),
    ];
    let (r, w) = pipe().unwrap();
    let mut specs = specs;
    let app = specs.pop().unwrap().fd(w, 1);
    specs.push(app);
    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err()
    {
        println!("skipped: python3 not installed (apt-get install python3)");
        return;
    }
    let mut sup = Supervisor::start(specs, opts()).unwrap();
    assert_eq!(sup.ready(), vec![true, true], "start waited for the first");
    // The app exits 0 once it connected.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sup.children()[1].status.is_none() {
        assert!(std::time::Instant::now() < deadline);
        let _ = sup.poll(Duration::from_millis(50)).unwrap();
    }
    assert_eq!(sup.children()[1].status, Some(ExitStatus::Exited(0)));
    drop(sup);
    assert_eq!(read_all(r).trim(), "connected");

    // A dependency on a later child is refused before anything starts.
    let e =
        Supervisor::start(vec![sh("a", "true").after([1]), sh("b", "true")], opts()).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EINVAL, "{e}");
    assert!(e.to_string().contains("a: depends on child 1"), "{e}");
}

#[test]
fn a_line_of_output_makes_a_child_ready_and_the_last_lines_are_kept() {
    use procwire::net::supervisor::Readiness;
    let spec = sh(
        "talker",
        "echo booting; sleep 0.2; echo 'Ready to accept connections' >&2; exec sleep 30",
    )
    .ready(Readiness::Output("Ready to accept".into()))
    .capture_output("talker | ");
    let mut sup = Supervisor::start(vec![spec], opts()).unwrap();
    assert_eq!(sup.ready(), vec![false]);
    sup.wait_ready().unwrap();
    let lines = sup.children()[0].last_lines.clone();
    assert!(lines.contains(&"booting".to_string()), "{lines:?}");
    assert!(
        lines.contains(&"Ready to accept connections".to_string()),
        "{lines:?}"
    );
    sup.terminate().unwrap();

    // One that dies first: its last lines are in the error.
    let spec =
        sh("quitter", "echo one; echo two >&2; exit 4").ready(Readiness::Output("never".into()));
    let mut sup = Supervisor::start(vec![spec], opts()).unwrap();
    let e = sup.wait_ready().unwrap_err();
    let text = e.to_string();
    assert_eq!(e.raw_os_error(), libc::ECHILD, "{text}");
    assert!(text.contains("exit code 4; its last lines:"), "{text}");
    assert!(
        text.contains("\n    one") && text.contains("\n    two"),
        "{text}"
    );
}
