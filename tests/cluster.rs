//! The `cluster` command with real programs: `--then` and its status, the
//! ports in the environment, JSON and the env file, readiness by connect and
//! by command, a copy that dies before it is ready, Ctrl-C while waiting,
//! and unmodified redis-servers where they are installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use procwire::sys::process::{kill, process_exists};
use procwire::sys::signal::Signal;

fn cluster() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cluster"))
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("procwire-cluster-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn then_gets_the_ports_and_its_status_is_the_exit_status() {
    let o = cluster()
        .args(["-n", "3", "--", "sleep", "30", "--then", "sh", "-c"])
        .arg(r#"test "$(echo $PORTS | wc -w)" = 3 && test "$PORT_0" -gt 0 && test "$PORT_2" -gt 0"#)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let o = cluster()
        .args([
            "-n", "2", "--", "sleep", "30", "--then", "sh", "-c", "exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{:?}", text(&o));
    let (out, _) = text(&o);
    let line = out
        .lines()
        .find(|l| l.starts_with("cluster: ready: "))
        .unwrap();
    assert_eq!(line.split(' ').count(), 4, "{line}");
}

#[test]
fn json_and_env_file_say_the_same_ports() {
    let d = temp("json");
    let env = d.join("ports.env");
    let o = cluster()
        .args(["-n", "2", "--json", "--env-file"])
        .arg(&env)
        .args(["--", "sleep", "30", "--then", "true"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    let (out, _) = text(&o);
    let json = out.lines().find(|l| l.starts_with('{')).unwrap();
    let ports: Vec<u16> = json["{\"ports\":[".len()..json.find(']').unwrap()]
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 2);
    let file = std::fs::read_to_string(&env).unwrap();
    assert_eq!(
        file,
        format!(
            "PORTS=\"{} {}\"\nPORT_0=\"{}\"\nPORT_1=\"{}\"\n",
            ports[0], ports[1], ports[0], ports[1]
        )
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn readiness_by_connect_and_by_command() {
    // Python's http.server sets SO_REUSEADDR, as most servers do, and
    // listens after its start-up: ready means the port answers.
    if Command::new("python3").arg("-V").output().is_err() {
        println!("skipped: python3 not installed (apt-get install python3)");
    } else {
        let o = cluster()
            .args(["-n", "2", "--ready", "connect", "--"])
            .args(["python3", "-m", "http.server", "--bind", "127.0.0.1", "{port}"])
            .args(["--then", "python3", "-c"])
            .arg("import os, urllib.request\nfor p in os.environ['PORTS'].split():\n    urllib.request.urlopen(f'http://127.0.0.1:{p}/').read()")
            .output()
            .unwrap();
        assert!(o.status.success(), "{:?}", text(&o));
    }
    // A daemon that tells systemd it is ready, in Python: by the notify
    // protocol from its own pid.
    if Command::new("python3").arg("-V").output().is_ok() {
        let o = cluster()
            .args(["-n", "2", "--ready", "notify", "--timeout", "20", "--"])
            .args(["python3", "-c"])
            .arg("import os, socket, time\na = os.environ['NOTIFY_SOCKET']\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.sendto(b'STATUS=up\\nREADY=1', '\\0' + a[1:] if a[0] == '@' else a)\ntime.sleep(30)")
            .args(["--then", "true"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{:?}", text(&o));
    }
    // The listening socket itself, by socket activation: a Python server
    // that takes fd 3 (LISTEN_FDS) and answers each connection.
    if Command::new("python3").arg("-V").output().is_ok() {
        let o = cluster()
            .args(["-n", "2", "--handoff", "fd", "--"])
            .args(["python3", "-c"])
            .arg("import os, socket\nassert os.environ['LISTEN_FDS'] in ('1', '2') and int(os.environ['LISTEN_PID']) == os.getpid()\nl = socket.socket(fileno=3)\nwhile True:\n    c, _ = l.accept()\n    c.sendall(b'hi')\n    c.close()")
            .args(["--then", "python3", "-c"])
            .arg("import os, socket\nfor p in os.environ['PORTS'].split():\n    assert socket.create_connection(('127.0.0.1', int(p)), 5).recv(2) == b'hi'")
            .output()
            .unwrap();
        assert!(o.status.success(), "{:?}", text(&o));
    }
    let d = temp("cmd");
    let flag = d.join("flag");
    let o = cluster()
        .args(["--ready"])
        .arg(format!("cmd:test -e {}-{{index}}", flag.display()))
        .args(["--", "sh", "-c"])
        .arg(format!(
            "sleep 0.2; touch {}-{{index}}; exec sleep 30",
            flag.display()
        ))
        .args(["--then", "test", "-e"])
        .arg(format!("{}-0", flag.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_copy_that_dies_before_it_is_ready_is_reported_with_its_last_lines() {
    let o = cluster()
        .args(["-n", "2", "--ready", "connect", "--timeout", "20", "--"])
        .args(["sh", "-c", "echo starting {index}; echo broken >&2; exit 4"])
        .args(["--then", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let (out, err) = text(&o);
    assert!(
        err.contains("exited before it was ready: exit code 4"),
        "{err}"
    );
    assert!(err.contains("its last lines:"), "{err}");
    assert!(err.contains("\n    broken"), "{err}");
    assert!(out.contains("| starting "), "{out}");
    // In order: the second copy starts only once the first is ready, so
    // the first one's marker is there when the second starts.
    let d = temp("ordered");
    let o = cluster()
        .args(["-n", "2", "--ordered", "--ready"])
        .arg(format!("cmd:test -e {}/{{index}}", d.display()))
        .args(["--", "sh", "-c"])
        .arg(format!(
            "if [ {{index}} = 1 ]; then test -e {0}/0 || exit 5; fi; sleep 0.2; touch {0}/{{index}}; exec sleep 30",
            d.display()
        ))
        .args(["--then", "true"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    std::fs::remove_dir_all(&d).unwrap();
    if Command::new("python3").arg("-V").output().is_ok() {
        // A Unix socket that accepts, at a templated path: the server makes
        // it only after a while.
        let d = temp("unix");
        let o = cluster()
            .args(["-n", "2", "--ready"])
            .arg(format!("unix:{}/{{index}}.sock", d.display()))
            .args(["--", "python3", "-c"])
            .arg(format!("import socket, time\ntime.sleep(0.2)\ns = socket.socket(socket.AF_UNIX)\ns.bind('{}/{{index}}.sock')\ns.listen()\ntime.sleep(30)", d.display()))
            .args(["--then", "test", "-S"])
            .arg(d.join("1.sock"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{:?}", text(&o));
        std::fs::remove_dir_all(&d).unwrap();
    }
    // A line of output as readiness.
    let o = cluster()
        .args(["-n", "2", "--ready", "output:listening on"])
        .args([
            "--",
            "sh",
            "-c",
            "sleep 0.1; echo listening on {port}; exec sleep 30",
        ])
        .args(["--then", "true"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("1| listening on "), "{:?}", text(&o));
    // A copy that never answers misses its deadline.
    let o = cluster()
        .args([
            "--ready",
            "connect",
            "--timeout",
            "0.3",
            "--",
            "sleep",
            "30",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("not ready after 300ms"),
        "{:?}",
        text(&o)
    );
}

fn wait_for(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s;
            }
        }
        assert!(Instant::now() < deadline, "{} never came", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ctrl_c_while_waiting_leaves_nothing_running() {
    let d = temp("int");
    let mut c = cluster()
        .args(["-n", "2", "--ready", "connect", "--grace", "2", "--"])
        .args(["sh", "-c"])
        .arg(format!(
            "echo $$ > {}/{{index}}.pid; exec sleep 30",
            d.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pids: Vec<i32> = (0..2)
        .map(|i| {
            wait_for(&d.join(format!("{i}.pid")))
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    kill(c.id() as i32, Signal::INT).unwrap();
    let status = c.wait().unwrap();
    assert!(!status.success());
    for p in pids {
        assert!(!process_exists(p), "copy {p} still runs");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn three_unmodified_redis_servers_answer_ping_when_ready() {
    let have = |p: &str| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok()
    };
    if !have("redis-server") || !have("redis-cli") {
        println!("skipped: redis-server or redis-cli not installed (apt-get install redis-server redis-tools)");
        return;
    }
    let d = temp("redis");
    let o = cluster()
        .args(["-n", "3", "--ready", "connect", "--"])
        .args([
            "redis-server",
            "--port",
            "{port}",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&d)
        .args(["--then", "sh", "-c"])
        .arg(r#"for p in $PORTS; do test "$(redis-cli -p $p ping)" = PONG || exit 9; done"#)
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    std::fs::remove_dir_all(&d).unwrap();
}
