//! The peer-server-peer network end to end, as its programs run: small
//! networks in both control modes through `client_manager` (which compares
//! every output with the file byte for byte), with datagrams dropped on
//! purpose, with a client killed midway, and against a hostile peer that
//! sends chunks nobody asked for, corrupted chunks and malformed messages.

#[path = "../examples/psp_common/pair.rs"]
mod pair;
#[path = "../examples/psp_common/proto.rs"]
mod proto;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proto::{Msg, CONTROL_SIZE};

mod common;
use common::example;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("procwire-psp-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One network at a time: each is a server and several clients, and on two
/// CPUs several at once would only measure the scheduler.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `client_manager` with `args`; returns its stdout after asserting
/// that it succeeded.
fn manager(tag: &str, args: &[&str]) -> String {
    run_manager(tag, args, &[]).1
}

/// Runs `client_manager` with `args` and `env`, one network at a time;
/// its pid and stdout, after asserting that it succeeded and that every
/// output matched.
fn run_manager(tag: &str, args: &[&str], env: &[(&str, &str)]) -> (u32, String) {
    let _one = one_at_a_time();
    let dir = temp_dir(tag);
    let child = Command::new(example("client_manager"))
        .envs(env.iter().copied())
        .args(args)
        .arg("--out-dir")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "client_manager {args:?} failed\nstdout:\n{so}\nstderr:\n{se}"
    );
    assert!(so.contains("ok: every output matches the file"), "{so}");
    (pid, so)
}

const SMALL: &[&str] = &["--clients", "8", "--size", "4MB", "--cache", "64"];

#[test]
fn udp_control_small_network_delivers_every_byte() {
    let mut a = SMALL.to_vec();
    a.extend(["--control", "udp"]);
    manager("udp", &a);
}

#[test]
fn tcp_control_small_network_delivers_every_byte() {
    let mut a = SMALL.to_vec();
    a.extend(["--control", "tcp"]);
    manager("tcp", &a);
}

#[test]
fn ten_percent_of_datagrams_dropped_still_completes() {
    for mode in ["udp", "tcp"] {
        let mut a = SMALL.to_vec();
        a.extend(["--control", mode, "--drop-udp", "0.1"]);
        manager(&format!("drop-{mode}"), &a);
    }
}

#[test]
fn a_client_killed_midway_leaves_the_others_to_finish() {
    for mode in ["udp", "tcp"] {
        let mut a = SMALL.to_vec();
        a.extend(["--control", mode, "--kill-one"]);
        manager(&format!("kill-{mode}"), &a);
    }
}

#[test]
fn sweep_prints_a_table_and_csv() {
    let so = manager(
        "sweep",
        &["--size", "1MB", "--sweep", "clients=1,3", "--cache", "16"],
    );
    assert!(so.contains("clients,cache,wall_s"), "{so}");
    let rows = so.lines().filter(|l| l.ends_with(",true")).count();
    assert_eq!(rows, 2, "{so}");
}

/// Starts `psp_server`; returns it, its port, and where its summary line
/// arrives once it exits.
fn spawn_server(
    file: &Path,
    clients: u32,
) -> (
    Child,
    u16,
    std::sync::mpsc::Receiver<String>,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    let mut server = Command::new(example("psp_server"))
        .arg(file)
        .args([
            "--clients",
            &clients.to_string(),
            "--cache",
            "16",
            "--control",
            "udp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    let port: u16 = first
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("server said {first:?}"));
    // Keep reading so the server never blocks on a full pipe; the last
    // line (its summary) is what the test wants.
    let (tx, rx) = std::sync::mpsc::channel();
    let status = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let st = std::sync::Arc::clone(&status);
    std::thread::spawn(move || {
        let mut last_summary = String::new();
        for l in out.lines().map_while(Result::ok) {
            if l.starts_with("summary") {
                last_summary = l;
            } else if l.starts_with("status") {
                *st.lock().unwrap() = l;
            }
        }
        let _ = tx.send(last_summary);
    });
    (server, port, rx, status)
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// A registered peer that lies: it sends a chunk nobody asked for, answers
/// every ask with corrupted bytes, and sends malformed datagrams and
/// records. Two honest clients must still get the file intact.
#[test]
fn a_hostile_peer_gets_nothing_into_any_file() {
    let _one = one_at_a_time();
    let dir = temp_dir("hostile");
    let file = dir.join("source.bin");
    let data: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    let (mut server, port, summary, status) = spawn_server(&file, 3);
    let server_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    // The hostile peer: UDP and TCP on one port, like a client.
    let (udp, tcp, _) = pair::same_port_pair(Ipv4Addr::LOCALHOST.into()).unwrap();
    tcp.connect(server_addr).unwrap();
    udp.connect(server_addr).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    // Malformed datagrams: short, unknown type, an empty range.
    udp.send(&[1, 2, 3]).unwrap();
    let mut unknown = [0u8; CONTROL_SIZE];
    unknown[0] = 99;
    udp.send(&unknown).unwrap();
    let mut empty = Msg::Req { start: 0, count: 1 }.encode();
    empty[5..9].copy_from_slice(&0u32.to_be_bytes());
    udp.send(&empty).unwrap();

    let outs: Vec<PathBuf> = (0..2).map(|i| dir.join(format!("out-{i}"))).collect();
    let mut honest: Vec<Child> = outs
        .iter()
        .map(|o| {
            Command::new(example("psp_client"))
                .arg(server_addr.to_string())
                .arg("-o")
                .arg(o)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(90);
    let mut info = None;
    let mut buf = [0u8; 65536];
    let mut tcp_w = tcp.try_clone().unwrap();
    while !outs.iter().all(|o| o.exists()) {
        assert!(
            Instant::now() < deadline,
            "honest clients did not finish; the server's last status: {}",
            status.lock().unwrap()
        );
        if info.is_none() {
            // As a real client does: the server may not have taken our
            // connection yet when a Reg arrives, so say it again.
            udp.send(&Msg::Reg { pid: 1 }.encode()).unwrap();
        }
        let n = match udp.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.is_would_block() => continue,
            Err(e) => panic!("{e}"),
        };
        match Msg::decode(&buf[..n]) {
            Ok(Msg::Info(i)) if info.is_none() => {
                info = Some(i);
                // A chunk nobody asked for, and a record of a bad type.
                let mut rec = Vec::new();
                proto::encode_chunk(0, &vec![0xAA; 1024], 1024, &mut rec);
                let mut bad_type = vec![0u8; rec.len()];
                bad_type[0] = 42;
                rec.extend_from_slice(&bad_type);
                tcp_w.write_all(&rec).unwrap();
            }
            Ok(Msg::Ask { start, count }) => {
                let i = info.expect("asked before Info");
                let mut rec = Vec::new();
                for id in start..(start + count).min(i.n_chunks) {
                    let len = proto::chunk_len(id, 1024, i.file_size);
                    let at = id as usize * 1024;
                    let mut lie = data[at..at + len].to_vec();
                    lie[0] ^= 0xFF;
                    proto::encode_chunk(id, &lie, 1024, &mut rec);
                }
                tcp_w.write_all(&rec).unwrap();
            }
            _ => {}
        }
    }
    // Everyone honest is done: the hostile peer leaves, and the server
    // ends the transfer.
    drop(tcp_w);
    drop(tcp);
    drop(udp);
    for (i, c) in honest.iter_mut().enumerate() {
        let st = wait_bounded(c, Duration::from_secs(30));
        assert!(st.success(), "honest client {i}: {st:?}");
    }
    for o in &outs {
        let mut got = Vec::new();
        std::fs::File::open(o)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert!(got == data, "{} differs from the file", o.display());
    }
    let st = wait_bounded(&mut server, Duration::from_secs(30));
    assert!(st.success(), "server: {st:?}");
    let summary = summary.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        field(&summary, "bad") >= 1,
        "no corrupted chunk was seen: {summary}"
    );
    assert!(field(&summary, "unasked") >= 1, "{summary}");
    assert!(field(&summary, "malformed") >= 3, "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Once every client is done the server exits, and a chunk a client was
/// still sending it (an answer to an ask) is unread: the kernel resets the
/// connection instead of closing it. After the client's Done that reset
/// is the server's goodbye: the client exits 0 with the file. A stand-in
/// server here makes the reset happen every time.
#[test]
fn a_reset_from_the_server_after_done_is_its_goodbye() {
    let _one = one_at_a_time();
    let dir = temp_dir("reset");
    let chunk = 1024usize;
    let data: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(7) >> 2) as u8)
        .collect();
    let n_chunks = data.len().div_ceil(chunk) as u32;
    let sums: Vec<u64> = data.chunks(chunk).map(proto::checksum).collect();
    // The stand-in: a TCP listener and a UDP socket on one port.
    let (listener, udp) = (0..100)
        .find_map(|_| {
            let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
            let port = l.local_addr().ok()?.port();
            let u = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).ok()?;
            Some((l, u))
        })
        .expect("no free port for both TCP and UDP");
    let server_addr = listener.local_addr().unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let out = dir.join("out");
    let mut client = Command::new(example("psp_client"))
        .arg(server_addr.to_string())
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tcp = None;
    let mut buf = [0u8; 65536];
    let mut asked = false;
    loop {
        assert!(Instant::now() < deadline, "the client never answered");
        if tcp.is_none() {
            match listener.accept() {
                Ok((t, _)) => tcp = Some(t),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        if asked {
            // The answer is in our receive queue, unread: closing now
            // resets the connection.
            let t: &std::net::TcpStream = tcp.as_ref().unwrap();
            t.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            match t.peek(&mut buf) {
                Ok(n) if n > 0 => break,
                Ok(_) => panic!("the client closed its connection"),
                Err(_) => continue,
            }
        }
        let (n, from) = match udp.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let Some(t) = tcp.as_mut() else { continue };
        match Msg::decode(&buf[..n]) {
            Ok(Msg::Reg { .. }) => {
                let info = proto::Info {
                    client: 0,
                    n_chunks,
                    chunk_size: chunk as u32,
                    file_size: data.len() as u64,
                    file_hash: proto::file_checksum(&sums),
                    block_start: 0,
                    block_end: n_chunks,
                    replica_start: 0,
                    replica_end: 0,
                };
                udp.send_to(&Msg::Info(info).encode(), from).unwrap();
            }
            Ok(Msg::Req { start, count }) => {
                let mut rec = Vec::new();
                for id in start..start.saturating_add(count).min(n_chunks) {
                    let at = id as usize * chunk;
                    let len = proto::chunk_len(id, chunk, data.len() as u64);
                    proto::encode_chunk(id, &data[at..at + len], chunk, &mut rec);
                }
                t.write_all(&rec).unwrap();
            }
            Ok(Msg::Done) if !asked => {
                udp.send_to(&Msg::Ask { start: 0, count: 1 }.encode(), from)
                    .unwrap();
                asked = true;
            }
            _ => {}
        }
    }
    drop(tcp);
    let st = wait_bounded(&mut client, Duration::from_secs(30));
    let mut err = String::new();
    client
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(st.success(), "client: {st:?}: {err}");
    assert!(std::fs::read(&out).unwrap() == data, "the output differs");
    drop(udp);
    let _ = std::fs::remove_dir_all(&dir);
}

fn wait_bounded(c: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            panic!("process {} did not exit within {limit:?}", c.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Network namespaces whose name says this `client_manager` made them.
fn namespaces_of(pid: u32) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter(|l| l.starts_with(&format!("pwnet-{pid}-")))
        .map(str::to_string)
        .collect()
}

/// Whether this machine lets the tests make network namespaces (root with
/// iproute2); prints the skip line otherwise.
fn can_make_namespaces() -> bool {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("pwnet-probe-{}-{n}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &name])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let _ = Command::new("ip").args(["netns", "delete", &name]).status();
    } else {
        println!(
            "skipped: making network namespaces needs root and iproute2 (apt-get install iproute2)"
        );
    }
    ok
}

#[test]
fn a_network_of_hosts_delivers_every_byte_in_both_modes_and_leaves_nothing() {
    if !can_make_namespaces() {
        return;
    }
    for mode in ["udp", "tcp"] {
        let so = hosts_run(
            &format!("hosts-{mode}"),
            &[
                "--hosts",
                "3",
                "--mtu",
                "1500",
                "--rate",
                "1gbit",
                "--clients",
                "6",
                "--size",
                "3MB",
                "--control",
                mode,
            ],
        );
        assert!(so.contains("network: server on 10.77.0.1"), "{so}");
        assert!(so.contains("MTU 1500, 1000 Mbit/s per link"), "{so}");
    }
}

#[test]
fn ctrl_c_during_a_network_run_removes_every_namespace() {
    if !can_make_namespaces() {
        return;
    }
    let _one = one_at_a_time();
    let dir = temp_dir("hosts-int");
    // Slow enough (a 2 Mbit/s link for 20 MB) that it is still running
    // when the signal comes.
    let mut child = Command::new(example("client_manager"))
        .args([
            "--hosts",
            "2",
            "--rate",
            "2mbit",
            "--clients",
            "4",
            "--size",
            "20MB",
        ])
        .arg("--out-dir")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The table's header comes after the network is made.
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.trim_start().starts_with("clients") {
            break;
        }
    }
    assert!(seen.contains("network:"), "{seen}");
    assert!(
        !namespaces_of(pid).is_empty(),
        "the network should exist now"
    );
    procwire::sys::process::kill(pid as i32, procwire::sys::signal::Signal::INT).unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(130), "{seen}");
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
}

#[test]
fn without_the_privileges_for_namespaces_it_says_so_in_one_line() {
    if !can_make_namespaces() {
        return;
    }
    // A user namespace of its own with no mapping: root there can't make
    // network namespaces that the machine sees.
    let out = Command::new("unshare")
        .args(["--user", "--"])
        .arg(example("client_manager"))
        .args(["--hosts", "2", "--clients", "2", "--size", "10KB"])
        .output();
    let Ok(out) = out else {
        println!("skipped: unshare not found (apt-get install util-linux)");
        return;
    };
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{se}");
    assert_eq!(se.trim().lines().count(), 1, "{se}");
    assert!(se.contains("needs root"), "{se}");
}

/// A namespace run of `client_manager` with `args`; its stdout, after
/// asserting that it succeeded and left no namespace.
fn hosts_run(tag: &str, args: &[&str]) -> String {
    hosts_run_env(tag, args, &[])
}

/// [`hosts_run`] with variables set for every program of the run.
fn hosts_run_env(tag: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let (pid, so) = run_manager(tag, args, env);
    assert_eq!(namespaces_of(pid), Vec::<String>::new(), "{args:?}");
    so
}

#[test]
fn a_hundred_clients_on_ten_rate_limited_hosts_with_drops_a_kill_and_junk() {
    if !can_make_namespaces() {
        return;
    }
    for mode in ["udp", "tcp"] {
        // 1% of datagrams dropped by the programs, a hostile peer on a
        // host of its own; 64,000-byte chunks travel in pieces (MTU 1500).
        for chunk in ["1024", "64000"] {
            let so = hosts_run(
                &format!("stress-{mode}-{chunk}"),
                &[
                    "--hosts",
                    "10",
                    "--rate",
                    "1gbit",
                    "--clients",
                    "100",
                    "--size",
                    "1MB",
                    "--control",
                    mode,
                    "--chunk-size",
                    chunk,
                    "--drop-udp",
                    "0.01",
                    "--junk",
                ],
            );
            let malformed = so
                .lines()
                .find(|l| l.starts_with("server summary"))
                .map(|l| field(l, "malformed"))
                .unwrap_or(0);
            assert!(malformed > 0, "the junk was not seen: {so}");
            let summary = so
                .lines()
                .find(|l| l.starts_with("server summary"))
                .unwrap_or("");
            if mode == "tcp" {
                // Chunks over UDP went out in batches: fewer calls than datagrams.
                assert!(
                    field(summary, "send_calls") < field(summary, "datagrams"),
                    "{so}"
                );
            }
        }
        // A client SIGKILLed midway: the others finish.
        hosts_run(
            &format!("kill-{mode}"),
            &[
                "--hosts",
                "10",
                "--rate",
                "1gbit",
                "--clients",
                "20",
                "--size",
                "2MB",
                "--control",
                mode,
                "--chunk-size",
                "64000",
                "--kill-one",
            ],
        );
    }
}

#[test]
fn without_gso_and_gro_pieces_go_one_datagram_at_a_time() {
    if !can_make_namespaces() {
        return;
    }
    // The path a kernel without the offloads takes, on the same network.
    hosts_run_env(
        "no-offload",
        &[
            "--hosts",
            "3",
            "--rate",
            "1gbit",
            "--clients",
            "6",
            "--size",
            "3MB",
            "--control",
            "tcp",
            "--chunk-size",
            "64000",
            "--drop-udp",
            "0.01",
        ],
        &[("PSP_NO_GSO", "1"), ("PSP_NO_GRO", "1")],
    );
}
