// The preload's suite, run in each mode by `fast.rs` and `safe.rs`, which
// define `MODE` (the `PROCWIRE_ACCEL_MODE` of every preloaded process) and
// `OTHER` (the mode of the partner in the mixed pairs).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The library as cargo built it for these tests: beside the test
/// executable (`target/<profile>/deps`).
fn library() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let lib = exe.with_file_name("libprocwire_preload.so");
    assert!(lib.exists(), "{} not built", lib.display());
    lib
}

/// The C test program, compiled once; `None` (and a skip line) without a
/// C compiler.
fn unixprog() -> Option<&'static Path> {
    static PROG: OnceLock<Option<PathBuf>> = OnceLock::new();
    // FORTIFY: reads into buffers of known size go to `__read_chk`.
    PROG.get_or_init(|| compile("unixprog", &["-D_FORTIFY_SOURCE=2"]))
        .as_deref()
}

/// The waits test program, compiled once.
fn epollprog() -> Option<&'static Path> {
    static PROG: OnceLock<Option<PathBuf>> = OnceLock::new();
    PROG.get_or_init(|| compile("epollprog", &["-pthread"])).as_deref()
}

/// The io_uring test program, compiled once.
fn uringprog() -> Option<&'static Path> {
    static PROG: OnceLock<Option<PathBuf>> = OnceLock::new();
    PROG.get_or_init(|| compile("uringprog", &[])).as_deref()
}

/// Compiles `tests/prog/NAME.c` beside the library, in a directory of
/// this mode's (the suites of both modes run at once).
fn compile(name: &str, flags: &[&str]) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/prog/{name}.c"));
    let dir = library().with_file_name(format!("progs-{MODE}"));
    std::fs::create_dir_all(&dir).expect("program dir");
    let out = dir.join(name);
    match Command::new("cc")
        .args(["-O2", "-Wall"])
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
    {
        Ok(st) if st.success() => Some(out),
        Ok(st) => panic!("cc failed on {}: {st}", src.display()),
        Err(_) => {
            println!("skipped: no C compiler (apt-get install gcc)");
            None
        }
    }
}

/// A fresh directory for one test's socket and report.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("procwire-preload-{MODE}-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Whether a program is on PATH; prints the skip line when it is not.
fn have(program: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
    if !found {
        println!("skipped: {program} not installed (apt-get install {package})");
    }
    found
}

/// A command, preloaded (accelerating `sock`, reporting to `report`) or not.
fn cmd(program: impl AsRef<std::ffi::OsStr>, preload: bool, sock: &Path, report: &Path) -> Command {
    cmd_in(MODE, program, preload, sock, report)
}

/// [`cmd`] in the given mode.
fn cmd_in(
    mode: &str,
    program: impl AsRef<std::ffi::OsStr>,
    preload: bool,
    sock: &Path,
    report: &Path,
) -> Command {
    let mut c = Command::new(program);
    if preload {
        c.env("LD_PRELOAD", library())
            .env("PROCWIRE_ACCEL_MODE", mode)
            .env("PROCWIRE_ACCEL", sock)
            .env("PROCWIRE_ACCEL_REPORT", report);
    } else {
        c.env_remove("LD_PRELOAD");
    }
    c
}

/// Waits for `child` at most `limit`; kills it past that.
fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a child ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads `child`'s stdout up to a line equal to `line`, returning what
/// came before it.
fn read_until(out: &mut BufReader<std::process::ChildStdout>, line: &str) -> String {
    let mut seen = String::new();
    loop {
        let mut l = String::new();
        let n = out.read_line(&mut l).expect("read child stdout");
        assert!(n > 0, "stdout closed before {line:?}; saw {seen:?}");
        if l.trim_end() == line {
            return seen;
        }
        seen.push_str(&l);
    }
}

/// The report's sum of `field` over the lines of processes named `program`.
fn reported(report: &Path, program: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(report).unwrap_or_default();
    text.lines()
        .filter(|l| l.split(' ').any(|w| w == format!("program={program}")))
        .flat_map(|l| l.split(' '))
        .filter_map(|w| w.strip_prefix(&format!("{field}=")))
        .map(|v| v.parse::<u64>().expect("a number"))
        .sum()
}

/// What one run of the C program printed: the server's and the client's
/// stdout and exit statuses.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    server: String,
    server_status: Option<i32>,
    server_signal: Option<i32>,
    client: String,
    client_status: Option<i32>,
}

/// Starts the C program's server (and waits until it listens), then its
/// client, each preloaded or not, accelerating `accel`.
fn start_pair(
    prog: &Path,
    scenario: &str,
    (server_pre, client_pre): (bool, bool),
    sock: &Path,
    accel: &Path,
    report: &Path,
) -> (Child, BufReader<std::process::ChildStdout>, Child) {
    let mut server = cmd(prog, server_pre, accel, report)
        .args(["server".as_ref(), sock.as_os_str(), scenario.as_ref()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("server");
    let mut sout = BufReader::new(server.stdout.take().expect("stdout"));
    read_until(&mut sout, "listening");
    let client = cmd(prog, client_pre, accel, report)
        .args(["client".as_ref(), sock.as_os_str(), scenario.as_ref()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("client");
    (server, sout, client)
}

fn run_pair(
    prog: &Path,
    scenario: &str,
    server_pre: bool,
    client_pre: bool,
    dir: &Path,
) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    let sock = dir.join("s.sock");
    let report = dir.join("report");
    let (mut server, mut sout, mut client) = start_pair(
        prog,
        scenario,
        (server_pre, client_pre),
        &sock,
        &sock,
        &report,
    );
    let cs = wait_bounded(&mut client, Duration::from_secs(60));
    let ss = wait_bounded(&mut server, Duration::from_secs(60));
    let mut s = String::new();
    sout.read_to_string(&mut s).expect("server stdout");
    let mut c = String::new();
    client
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut c)
        .expect("client stdout");
    Outcome {
        server: s,
        server_status: ss.code(),
        server_signal: ss.signal(),
        client: c,
        client_status: cs.code(),
    }
}

/// Runs `scenario` plain and with the preload on the sides given, and
/// checks that the program saw the same, and that the report counts an
/// accelerated connection in each preloaded process that exits (`both`
/// of them) exactly when both sides are preloaded.
fn same_as_plain(scenario: &str, combos: &[(bool, bool)], both: u64) {
    same_as_plain_downgraded(scenario, combos, both, 0);
}

/// [`same_as_plain`], where the processes of a both-preloaded run also
/// count `downgraded` connections in all (0 for every mixed run).
fn same_as_plain_downgraded(scenario: &str, combos: &[(bool, bool)], both: u64, downgraded: u64) {
    let Some(prog) = unixprog() else { return };
    let dir = scratch(&format!("{scenario}-plain"));
    let plain = run_pair(prog, scenario, false, false, &dir);
    assert_eq!(plain.client_status, Some(0), "{plain:?}");
    for &(s, c) in combos {
        let dir = scratch(&format!("{scenario}-{s}-{c}"));
        let got = run_pair(prog, scenario, s, c, &dir);
        assert_eq!(
            got, plain,
            "{scenario} with the preload on server {s}, client {c}"
        );
        let accelerated = reported(&dir.join("report"), "unixprog", "accelerated");
        let want = if s && c { both } else { 0 };
        assert_eq!(
            accelerated, want,
            "{scenario}: server {s}, client {c}: accelerated count"
        );
        let down = reported(&dir.join("report"), "unixprog", "downgraded");
        let want = if s && c { downgraded } else { 0 };
        assert_eq!(
            down, want,
            "{scenario}: server {s}, client {c}: downgraded count"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

const ALL: &[(bool, bool)] = &[(true, true), (true, false), (false, true)];

#[test]
fn bulk_transfer_with_every_call_is_byte_exact_in_every_combination() {
    same_as_plain("bulk", ALL, 2);
}

#[test]
fn non_blocking_poll_and_select_echo_is_byte_exact() {
    same_as_plain("nonblock", ALL, 2);
}

#[test]
fn flags_fionread_shutdown_and_epipe_are_the_sockets() {
    // The server ends by SIGPIPE, as on the plain socket, so only the
    // client lives to write its report line.
    same_as_plain("flags", &[(true, true)], 1);
}

#[test]
fn timeouts_signals_high_fds_and_close_range_are_the_sockets() {
    same_as_plain("misc", &[(true, true)], 2);
}

#[test]
fn a_send_timeout_ends_a_blocked_write_with_eagain() {
    same_as_plain("sndtimeo", &[(true, true)], 2);
}

#[test]
fn parent_and_child_both_use_a_connection_after_fork() {
    // Three processes report one accelerated connection each: the client,
    // the server, and the server's child (which inherited the count, and
    // exits without closing).
    same_as_plain("fork", ALL, 3);
}

// The downgrade: the server hands the connection, with bytes in flight
// both ways (its greeting in the ring, the client's first bytes unread, the
// client still writing 3 MiB), to something that reads only the socket; the
// client checks every byte of the echo. Both sides count the downgrade.

#[test]
fn exec_with_an_inherited_connection_downgrades_it_whole() {
    // cat, with the preload (the environment is inherited) and without it.
    same_as_plain_downgraded("exec", ALL, 2, 2);
    same_as_plain_downgraded("execenv", &[(true, true)], 2, 2);
}

#[test]
fn a_connection_passed_away_with_scm_rights_downgrades_whole() {
    // The helper that receives it is a third process (0 accelerated).
    same_as_plain_downgraded("pass", ALL, 2, 2);
}

#[test]
fn an_unknown_ioctl_and_splice_or_sendfile_downgrade_whole() {
    same_as_plain_downgraded("ioctl", &[(true, true)], 2, 2);
    same_as_plain_downgraded("splice", ALL, 2, 2);
}

#[test]
fn vfork_and_posix_spawn_children_leave_the_connection_alone() {
    // The children dup, close and exec; the parent's connection stays
    // accelerated, and nothing is downgraded.
    same_as_plain_downgraded("vfork", ALL, 2, 0);
}

#[test]
fn dup_dup3_and_f_dupfd_copies_share_one_connection() {
    same_as_plain("dups", ALL, 2);
}

#[test]
fn a_thousand_connections_leave_no_fd_and_no_segment() {
    let Some(prog) = unixprog() else { return };
    let dir = scratch("cycles");
    let got = run_pair(prog, "cycles", true, true, &dir);
    assert_eq!(got.server, "server fds +0\nserver maps 0\n", "{got:?}");
    assert_eq!(got.client, "client fds +0\nclient maps 0\n", "{got:?}");
    assert_eq!(
        reported(&dir.join("report"), "unixprog", "accelerated"),
        2000
    );
}

/// Starts a preloaded pair in `scenario`, waits for the client's `ready`
/// line, SIGKILLs the client and returns how long the server took to
/// notice, with what it printed.
fn kill_client(scenario: &str, ready: &str) -> Option<(Duration, String)> {
    let prog = unixprog()?;
    let dir = scratch(&format!("kill-{scenario}"));
    let sock = dir.join("s.sock");
    let report = dir.join("report");
    let (mut server, mut sout, mut client) =
        start_pair(prog, scenario, (true, true), &sock, &sock, &report);
    let mut cout = BufReader::new(client.stdout.take().expect("stdout"));
    read_until(&mut cout, ready);
    client.kill().expect("kill");
    let killed = Instant::now();
    let _ = client.wait();
    let mut line = String::new();
    sout.read_line(&mut line).expect("server line");
    let took = killed.elapsed();
    wait_bounded(&mut server, Duration::from_secs(10));
    assert_eq!(
        reported(&report, "unixprog", "accelerated"),
        1,
        "the server's connection"
    );
    Some((took, line))
}

#[test]
fn a_killed_reader_fails_the_writer_with_epipe_within_100ms() {
    let Some((took, line)) = kill_client("flood", "reading") else {
        return;
    };
    assert!(
        line.contains("EPIPE") || line.contains("ECONNRESET"),
        "{line:?}"
    );
    assert!(took < Duration::from_millis(100), "noticed after {took:?}");
}

#[test]
fn a_killed_writer_is_end_of_file_for_the_reader_within_100ms() {
    let Some((took, line)) = kill_client("sink", "writing") else {
        return;
    };
    assert_eq!(line, "server read end-of-file\n");
    assert!(took < Duration::from_millis(100), "noticed after {took:?}");
}

#[test]
fn passthrough_without_a_listed_socket_changes_nothing() {
    let Some(prog) = unixprog() else { return };
    let dir = scratch("passthrough");
    let sock = dir.join("s.sock");
    let report = dir.join("report");
    let other = dir.join("other.sock");
    let (mut server, _sout, mut client) =
        start_pair(prog, "bulk", (true, true), &sock, &other, &report);
    assert!(wait_bounded(&mut client, Duration::from_secs(60)).success());
    assert!(wait_bounded(&mut server, Duration::from_secs(60)).success());
    let mut c = String::new();
    client
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut c)
        .expect("stdout");
    let (want, said) = c
        .trim_end()
        .split_once("; server said ")
        .expect("client line");
    assert_eq!(want.trim_start_matches("client expects "), said);
    assert_eq!(reported(&report, "unixprog", "accelerated"), 0);
    assert_eq!(
        reported(&report, "unixprog", "plain"),
        0,
        "no listed socket was used"
    );
}

// ------------------------------------------------------------ real programs

#[test]
fn socat_moves_256_mib_byte_exact_preloaded_and_mixed() {
    if !have("socat", "socat") {
        return;
    }
    for (s, c) in [(true, true), (true, false), (false, true)] {
        let dir = scratch(&format!("socat-{s}-{c}"));
        let sock = dir.join("s.sock");
        let report = dir.join("report");
        let input = dir.join("in");
        let output = dir.join("out");
        let mut data = vec![0u8; 256 << 20];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i as u64)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(17) as u8;
        }
        std::fs::write(&input, &data).expect("input");
        let mut server = cmd("socat", s, &sock, &report)
            .arg("-u")
            .arg(format!("UNIX-LISTEN:{}", sock.display()))
            .arg(format!("CREATE:{}", output.display()))
            .spawn()
            .expect("socat server");
        wait_listening("socat", &sock);
        let mut client = cmd("socat", c, &sock, &report)
            .arg("-u")
            .arg(format!("OPEN:{}", input.display()))
            .arg(format!("UNIX-CONNECT:{}", sock.display()))
            .spawn()
            .expect("socat client");
        assert!(wait_bounded(&mut client, Duration::from_secs(60)).success());
        assert!(wait_bounded(&mut server, Duration::from_secs(60)).success());
        let got = std::fs::read(&output).expect("output");
        assert!(got == data, "socat server {s} client {c}: bytes differ");
        let want = if s && c { 2 } else { 0 };
        assert_eq!(
            reported(&report, "socat", "accelerated"),
            want,
            "server {s} client {c}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn socat_moves_4_gib_with_a_checksum() {
    if !have("socat", "socat") {
        return;
    }
    let Some(prog) = unixprog() else { return };
    const N: u64 = 4 << 30;
    // The stream's checksum without any socket, for reference.
    let mut g = Command::new(prog)
        .args(["gen", &N.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("gen");
    let want = Command::new(prog)
        .arg("sum")
        .stdin(g.stdout.take().expect("gen stdout"))
        .output()
        .expect("sum");
    assert!(g.wait().expect("gen").success());
    let dir = scratch("socat-4g");
    let sock = dir.join("s.sock");
    let report = dir.join("report");
    let mut server = cmd("socat", true, &sock, &report)
        .arg("-u")
        .arg(format!("UNIX-LISTEN:{}", sock.display()))
        .arg("STDOUT")
        .stdout(Stdio::piped())
        .spawn()
        .expect("socat server");
    let summer = Command::new(prog)
        .arg("sum")
        .stdin(server.stdout.take().expect("server stdout"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("sum");
    wait_listening("socat", &sock);
    let mut g = Command::new(prog)
        .args(["gen", &N.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("gen");
    let mut client = cmd("socat", true, &sock, &report)
        .arg("-u")
        .arg("STDIN")
        .arg(format!("UNIX-CONNECT:{}", sock.display()))
        .stdin(g.stdout.take().expect("gen stdout"))
        .spawn()
        .expect("socat client");
    assert!(wait_bounded(&mut client, Duration::from_secs(120)).success());
    assert!(wait_bounded(&mut server, Duration::from_secs(60)).success());
    assert!(g.wait().expect("gen").success());
    let got = summer.wait_with_output().expect("sum");
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        String::from_utf8_lossy(&want.stdout),
        "4 GiB through socat: count and checksum"
    );
    assert_eq!(reported(&report, "socat", "accelerated"), 2);
    assert_eq!(reported(&report, "socat", "bytes_received"), N);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The report line of process `pid`, parsed: `field` of it.
fn reported_by(report: &Path, pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(report).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(&format!("pid={pid} ")))
        .flat_map(|l| l.split(' '))
        .find_map(|w| w.strip_prefix(&format!("{field}=")))
        .map(|v| v.parse().expect("a number"))
}

#[test]
fn socat_fork_exec_cat_echoes_byte_exact_and_downgrades_with_nofork() {
    if !have("socat", "socat") {
        return;
    }
    let data: Vec<u8> = (0..16u64 << 20)
        .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 29) as u8)
        .collect();
    // `EXEC:cat` relays through a socat child (the socket stays
    // accelerated); with `nofork` socat execs cat on the socket itself,
    // which downgrades it.
    for (exec, server_pre, client_pre) in [
        ("EXEC:cat", true, true),
        ("EXEC:cat,nofork", true, true),
        ("EXEC:cat,nofork", true, false),
        ("EXEC:cat,nofork", false, true),
    ] {
        let dir = scratch(&format!(
            "socat-exec-{}-{server_pre}-{client_pre}",
            exec.len()
        ));
        let sock = dir.join("s.sock");
        let report = dir.join("report");
        let input = dir.join("in");
        let output = dir.join("out");
        std::fs::write(&input, &data).expect("input");
        let mut server = cmd("socat", server_pre, &sock, &report)
            .arg(format!("UNIX-LISTEN:{},fork", sock.display()))
            .arg(exec)
            .spawn()
            .expect("socat server");
        wait_listening("socat", &sock);
        for round in 0..2 {
            let mut client = cmd("socat", client_pre, &sock, &report)
                .args(["-t", "30", "-"])
                .arg(format!("UNIX-CONNECT:{}", sock.display()))
                .stdin(std::fs::File::open(&input).expect("input"))
                .stdout(std::fs::File::create(&output).expect("output"))
                .spawn()
                .expect("socat client");
            let pid = client.id();
            assert!(wait_bounded(&mut client, Duration::from_secs(60)).success());
            let got = std::fs::read(&output).expect("output");
            assert!(
                got == data,
                "{exec} server {server_pre} client {client_pre} round {round}: the echo differs"
            );
            if client_pre {
                let both = server_pre && client_pre;
                assert_eq!(
                    reported_by(&report, pid, "accelerated"),
                    Some(u64::from(both)),
                    "{exec}: the client's report"
                );
                let down = both && exec.ends_with("nofork");
                assert_eq!(
                    reported_by(&report, pid, "downgraded"),
                    Some(u64::from(down)),
                    "{exec}: the client's report"
                );
            }
        }
        let _ = server.kill();
        let _ = server.wait();
        if server_pre && client_pre && exec.ends_with("nofork") {
            // The server's children that exec'd cat counted a downgrade.
            assert!(reported(&report, "socat", "downgraded") >= 4, "{exec}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn wait_listening(program: &str, sock: &Path) {
    // The file appears at `bind`, before `listen`: a connect in between is
    // refused. So wait until the kernel lists a listening socket (the
    // `__SO_ACCEPTCON` flag, 0x10000) bound to this path.
    let listening = || {
        let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
        table.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 8
                && Path::new(f[7]) == sock
                && u32::from_str_radix(f[3], 16).is_ok_and(|flags| flags & 0x10000 != 0)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening() {
        assert!(Instant::now() < deadline, "{program} did not listen");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A redis-server on a Unix socket in `dir`, preloaded or not.
struct Redis {
    child: Child,
    sock: PathBuf,
}

impl Redis {
    fn start(dir: &Path, preload: bool) -> Self {
        let sock = dir.join("redis.sock");
        let child = cmd("redis-server", preload, &sock, &dir.join("report"))
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&sock)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        wait_listening("redis-server", &sock);
        Self { child, sock }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_cli(r: &Redis, preload: bool, dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut c = cmd("redis-cli", preload, &r.sock, &dir.join("report"));
    c.arg("-s").arg(&r.sock).args(args);
    c.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = c.spawn().expect("redis-cli");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.unwrap_or(b"")).expect("stdin");
    drop(input);
    let out = child.wait_with_output().expect("redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {:?}", out.status);
    out.stdout
}

#[test]
fn redis_cli_sets_and_gets_1_byte_to_8_mb_preloaded_and_mixed() {
    if !have("redis-server", "redis-server") || !have("redis-cli", "redis-tools") {
        return;
    }
    for (s, c) in [(true, true), (true, false), (false, true)] {
        let dir = scratch(&format!("redis-{s}-{c}"));
        let r = Redis::start(&dir, s);
        for size in [1usize, 100, 65_536, 1 << 20, 8 << 20] {
            let value: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
            let ok = redis_cli(&r, c, &dir, &["-x", "set", "k"], Some(&value));
            assert_eq!(ok, b"OK\n");
            let mut got = redis_cli(&r, c, &dir, &["--raw", "get", "k"], None);
            assert_eq!(got.pop(), Some(b'\n'));
            assert!(got == value, "{size} bytes differ (server {s}, client {c})");
            if s && c {
                // The same listener serves a plain client beside them.
                let mut plain = redis_cli(&r, false, &dir, &["--raw", "get", "k"], None);
                assert_eq!(plain.pop(), Some(b'\n'));
                assert!(plain == value, "{size} bytes differ for a plain client");
            }
        }
        drop(r);
        let want = if s && c { 10 } else { 0 };
        assert_eq!(
            reported(&dir.join("report"), "redis-cli", "accelerated"),
            want,
            "server {s} client {c}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn nc_moves_10_mb_byte_exact() {
    if !have("nc.openbsd", "netcat-openbsd") {
        return;
    }
    let dir = scratch("nc");
    let sock = dir.join("s.sock");
    let report = dir.join("report");
    let data: Vec<u8> = (0..10_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut server = cmd("nc.openbsd", true, &sock, &report)
        .arg("-lU")
        .arg(&sock)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("nc -l");
    wait_listening("nc", &sock);
    let mut client = cmd("nc.openbsd", true, &sock, &report)
        .arg("-NU")
        .arg(&sock)
        .stdin(Stdio::piped())
        .spawn()
        .expect("nc");
    let mut input = client.stdin.take().expect("stdin");
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || input.write_all(&data))
    };
    let mut got = Vec::new();
    server
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut got)
        .expect("nc output");
    writer.join().expect("writer").expect("write");
    wait_bounded(&mut client, Duration::from_secs(30));
    wait_bounded(&mut server, Duration::from_secs(30));
    assert!(
        got == data,
        "nc: {} bytes of {} arrived, or differ",
        got.len(),
        data.len()
    );
    assert_eq!(reported(&report, "nc.openbsd", "accelerated"), 2);
}

/// A preloaded `redis-cli blpop` on a key nobody pushes, once the server
/// shows it blocked.
fn blocked_client(r: &Redis, dir: &Path) -> Child {
    let blocked = cmd("redis-cli", true, &r.sock, &dir.join("report"))
        .arg("-s")
        .arg(&r.sock)
        .args(["blpop", "nothing", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli blpop");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&redis_cli(r, true, dir, &["client", "list"], None))
        .contains("cmd=blpop")
    {
        assert!(Instant::now() < deadline, "blpop never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    blocked
}

#[test]
fn redis_benchmark_with_bgsave_and_kill_9_of_either_side() {
    if !have("redis-server", "redis-server")
        || !have("redis-cli", "redis-tools")
        || !have("redis-benchmark", "redis-tools")
    {
        return;
    }
    let dir = scratch("redis-bench");
    let report = dir.join("report");
    let r = Redis::start(&dir, true);
    // Load, with a BGSAVE (a fork whose child exits without closing the
    // connections it inherited) in the middle of it.
    let mut bench = cmd("redis-benchmark", true, &r.sock, &report)
        .arg("-s")
        .arg(&r.sock)
        .args([
            "-n", "40000", "-c", "20", "-t", "set,get", "-r", "1000", "-q",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-benchmark");
    assert_eq!(
        redis_cli(&r, true, &dir, &["bgsave"], None),
        b"Background saving started\n"
    );
    let status = wait_bounded(&mut bench, Duration::from_secs(120));
    let mut out = String::new();
    bench
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("stdout");
    assert!(
        status.success() && out.contains("requests per second"),
        "{out}"
    );
    assert!(
        reported(&report, "redis-benchmark", "accelerated") >= 20,
        "{out}"
    );
    // Every connection, also those made after the BGSAVE child exited.
    assert_eq!(reported(&report, "redis-benchmark", "plain"), 0);
    let n = redis_cli(&r, true, &dir, &["dbsize"], None);
    assert_eq!(
        n,
        redis_cli(&r, false, &dir, &["dbsize"], None),
        "same keys for a plain client"
    );

    // A client killed while it blocks: the server goes on.
    let mut blocked = blocked_client(&r, &dir);
    blocked.kill().expect("kill");
    let _ = blocked.wait();
    assert_eq!(redis_cli(&r, true, &dir, &["ping"], None), b"PONG\n");

    // The server killed while a client blocks: the client hears it.
    let mut blocked = blocked_client(&r, &dir);
    let mut r = r;
    r.child.kill().expect("kill redis-server");
    let killed = Instant::now();
    wait_bounded(&mut blocked, Duration::from_secs(10));
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the client noticed after {took:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ waits

/// Runs the waits program with the server and the client preloaded in the
/// given modes (`None`: not preloaded); what the server printed, and the
/// report's path.
fn run_waits(server: Option<&str>, client: Option<&str>, dir: &Path) -> Option<(String, PathBuf)> {
    Some(run_server_client(epollprog()?, server, client, dir))
}

/// Runs `prog server SOCK` and `prog client SOCK` (preloaded in the given
/// modes, or not), the server first, until it prints `listening`; what the
/// server printed (its last line `done`) and the report's path, after
/// both ended well within a minute.
fn run_server_client(
    prog: &Path,
    server: Option<&str>,
    client: Option<&str>,
    dir: &Path,
) -> (String, PathBuf) {
    let sock = dir.join("s.sock");
    let report = dir.join("report");
    let mut srv = cmd_in(server.unwrap_or(MODE), prog, server.is_some(), &sock, &report)
        .arg("server")
        .arg(&sock)
        .stdout(Stdio::piped())
        .spawn()
        .expect("server");
    let mut out = BufReader::new(srv.stdout.take().expect("stdout"));
    read_until(&mut out, "listening");
    let mut cli = cmd_in(client.unwrap_or(MODE), prog, client.is_some(), &sock, &report)
        .arg("client")
        .arg(&sock)
        .spawn()
        .expect("client");
    let ss = wait_bounded(&mut srv, Duration::from_secs(60));
    let cs = wait_bounded(&mut cli, Duration::from_secs(60));
    let mut text = String::new();
    out.read_to_string(&mut text).expect("server stdout");
    assert!(cs.success() && ss.success(), "client {cs}, server {ss}: {text}");
    assert!(text.ends_with("done\n"), "{text}");
    (text, report)
}

/// The one answer the safe mode gives differently: an edge-triggered
/// member whose reader left bytes unread gets no new edge for new bytes
/// (its reader is not armed, so the writer rings no doorbell). Fast mode
/// answers from the ring and reports it.
const SAFE_ET_LINE: &str = "et 10 more: ";

fn without_safe_et(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with(SAFE_ET_LINE))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn epoll_poll_and_select_answer_as_the_kernel_does() {
    let dir = scratch("waits-plain");
    let Some((plain, _)) = run_waits(None, None, &dir) else {
        return;
    };
    for (s, c) in [
        (Some(MODE), Some(MODE)),
        (Some(MODE), Some(OTHER)),
        (Some(MODE), None),
        (None, Some(MODE)),
    ] {
        let dir = scratch(&format!("waits-{s:?}-{c:?}"));
        let (got, report) = run_waits(s, c, &dir).expect("compiled once");
        if s == Some("safe") {
            assert_eq!(
                without_safe_et(&got),
                without_safe_et(&plain),
                "server {s:?}, client {c:?}"
            );
        } else {
            assert_eq!(got, plain, "server {s:?}, client {c:?}");
        }
        // The server's sixteen connections (control, data, fourteen
        // more) are accelerated when both sides take part, none
        // otherwise.
        let accelerated = reported(&report, "epollprog", "accelerated");
        if s.is_some() && c.is_some() {
            assert!(accelerated >= 16 + 2, "{accelerated}");
        } else {
            assert_eq!(accelerated, 0);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Runs `uringprog` (server and client preloaded in the given modes, or
/// not); what the server printed, and the report's path.
fn run_uring(server: Option<&str>, client: Option<&str>, dir: &Path) -> Option<(String, PathBuf)> {
    Some(run_server_client(uringprog()?, server, client, dir))
}

#[test]
fn io_uring_poll_add_completes_on_an_accelerated_connection() {
    let dir = scratch("uring-plain");
    let Some((plain, _)) = run_uring(None, None, &dir) else {
        return;
    };
    if plain.contains("no io_uring") {
        println!("skipped: io_uring is not available here ({})", plain.trim());
        return;
    }
    assert!(!plain.contains("no completion"), "{plain}");
    for (s, c) in [(Some(MODE), Some(MODE)), (Some(MODE), Some(OTHER))] {
        let dir = scratch(&format!("uring-{s:?}-{c:?}"));
        let (got, report) = run_uring(s, c, &dir).expect("compiled once");
        assert_eq!(got, plain, "server {s:?}, client {c:?}");
        assert_eq!(reported(&report, "uringprog", "accelerated"), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn redis_serves_a_client_of_the_other_mode() {
    if !have("redis-server", "redis-server")
        || !have("redis-cli", "redis-tools")
        || !have("redis-benchmark", "redis-tools")
    {
        return;
    }
    let dir = scratch("redis-mixed");
    let report = dir.join("report");
    let r = Redis::start(&dir, true);
    let out = cmd_in(OTHER, "redis-benchmark", true, &r.sock, &report)
        .arg("-s")
        .arg(&r.sock)
        .args(["-n", "20000", "-c", "10", "-t", "set,get", "-r", "100", "-q"])
        .output()
        .expect("redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("requests per second"),
        "{text}"
    );
    assert!(reported(&report, "redis-benchmark", "accelerated") >= 10);
    assert_eq!(reported(&report, "redis-benchmark", "plain"), 0);
    let value = vec![b'v'; 100_000];
    let mut set = cmd_in(OTHER, "redis-cli", true, &r.sock, &report)
        .arg("-s")
        .arg(&r.sock)
        .args(["-x", "set", "big"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-cli");
    set.stdin.take().expect("stdin").write_all(&value).expect("value");
    assert!(wait_bounded(&mut set, Duration::from_secs(30)).success());
    let got = redis_cli(&r, true, &dir, &["strlen", "big"], None);
    assert_eq!(got, b"100000\n");
}
