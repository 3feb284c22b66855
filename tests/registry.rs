//! Good ports and the name -> port registry: the `port-for` command against a
//! temporary file, concurrent writers in separate processes, SIGKILL at
//! random moments, and a malformed file left untouched.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use procwire::net::port::{
    available_good_ports, ephemeral_ranges, get_port, is_available, select_random,
    unassigned_ranges, PortSpec, Registry, RegistryError,
};
use procwire::sys::socket::{Domain, Socket, Type};

mod common;

const ROLE: &str = "PROCWIRE_TEST_ROLE";

fn temp_conf(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("procwire-registry-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("port-for.conf")
}

fn port_for(conf: &Path, args: &[&str]) -> (bool, String, String) {
    let bin = common::example("port-for");
    let out = Command::new(bin)
        .arg("--conf")
        .arg(conf)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn port_for_command_assigns_lists_and_unbinds() {
    let conf = temp_conf("cmd");
    let (ok, foo, _) = port_for(&conf, &["foo"]);
    assert!(ok);
    let (_, again, _) = port_for(&conf, &["foo"]);
    assert_eq!(foo, again, "the same port on every later call");
    let (_, bar, _) = port_for(&conf, &["--bind", "bar"]);
    assert_ne!(foo, bar);
    let (_, list, _) = port_for(&conf, &["--list"]);
    assert_eq!(list, format!("foo: {}bar: {}", foo, bar));
    assert!(port_for(&conf, &["--unbind", "foo"]).0);
    let (_, list, _) = port_for(&conf, &["-l"]);
    assert_eq!(list, format!("bar: {bar}"));
    // port-for's file format: [DEFAULT] with `name = port` lines.
    let text = std::fs::read_to_string(&conf).unwrap();
    assert_eq!(text, format!("[DEFAULT]\nbar = {}\n", bar.trim()));

    let (ok, out, _) = port_for(&conf, &["-b", "Web", "-p", "40001"]);
    assert!(ok && out == "40001\n", "{out}");
    let (ok, _, err) = port_for(&conf, &["web", "--port", "40002"]);
    assert!(!ok);
    assert!(
        err.contains("web is already associated with port 40001"),
        "{err}"
    );
    let (ok, _, err) = port_for(&conf, &["other", "-p", "40001"]);
    assert!(
        !ok && err.contains("port 40001 is already used by web"),
        "{err}"
    );
    let (ok, _, err) = port_for(&conf, &["x", "-p", "70000"]);
    assert!(!ok && err.contains("invalid port"), "{err}");
    let (ok, _, err) = port_for(&conf, &["a=b"]);
    assert!(!ok && err.contains("invalid name"), "{err}");
    let (ok, out, _) = port_for(&conf, &["--select", "2000-3000,4002"]);
    let p: u16 = out.trim().parse().unwrap();
    assert!(ok && ((2000..=3000).contains(&p) || p == 4002));
    let (ok, _, err) = port_for(&conf, &["--select", "9000-8000"]);
    assert!(!ok && err.contains("inverted"), "{err}");
}

#[test]
fn good_ports_are_unassigned_and_outside_the_ephemeral_range() {
    let good = available_good_ports();
    assert!(good.len() > 1000, "only {} good ports", good.len());
    let eph = ephemeral_ranges();
    let unassigned = unassigned_ranges();
    for &p in &good {
        assert!(p >= 1024);
        assert!(
            !eph.iter().any(|&(lo, hi)| (lo..=hi).contains(&p)),
            "{p} is ephemeral"
        );
        assert!(
            unassigned.iter().any(|&(lo, hi)| (lo..=hi).contains(&p)),
            "{p} is assigned"
        );
    }
    for well_known in [3306u16, 5432, 6379, 8080, 27017, 11211] {
        assert!(!good.contains(&well_known), "{well_known} is assigned");
    }
}

/// Each kind of holder makes a port unavailable; a probe that says "free"
/// leaves the port free (its one socket neither keeps the port nor leaves
/// a TIME_WAIT behind).
#[test]
fn is_available_sees_every_kind_of_holder() {
    assert!(!is_available(0));
    let free = select_random(None, &[]).unwrap();
    assert!(is_available(free));
    assert!(is_available(free), "a second probe finds it free again");
    let s = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
    s.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, free)))
        .unwrap();
    drop(s);

    type Holder = fn(u16) -> Option<Socket>;
    let holders: [(&str, Holder); 4] = [
        ("listener on 127.0.0.1", |p| {
            let s = Socket::new(Domain::IPV4, Type::STREAM).ok()?;
            s.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, p))).ok()?;
            s.listen(8).ok()?;
            Some(s)
        }),
        ("bound, not listening, on 0.0.0.0", |p| {
            let s = Socket::new(Domain::IPV4, Type::STREAM).ok()?;
            s.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, p))).ok()?;
            Some(s)
        }),
        ("bound on ::1 only", |p| {
            let s = Socket::new(Domain::IPV6, Type::STREAM).ok()?;
            s.set_only_v6(true).ok()?;
            s.bind(SocketAddr::from((Ipv6Addr::LOCALHOST, p))).ok()?;
            Some(s)
        }),
        ("listener on ::1 only", |p| {
            let s = Socket::new(Domain::IPV6, Type::STREAM).ok()?;
            s.set_only_v6(true).ok()?;
            s.bind(SocketAddr::from((Ipv6Addr::LOCALHOST, p))).ok()?;
            s.listen(8).ok()?;
            Some(s)
        }),
    ];
    for (what, hold) in holders {
        let p = select_random(None, &[]).unwrap();
        let Some(held) = hold(p) else {
            // Only where IPv6 is off.
            println!("skipped {what}: could not hold {p}");
            continue;
        };
        assert!(!is_available(p), "{what} on {p} went unseen");
        drop(held);
        assert!(is_available(p), "{p} free again after the {what} closed");
    }
}

#[test]
fn select_random_never_returns_a_held_port() {
    let good = available_good_ports();
    // Hold 50 good ports (those that are free) with live sockets.
    let mut held = Vec::new();
    let mut sockets = Vec::new();
    for &p in good.iter().step_by(37) {
        let s = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
        if s.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, p))).is_ok() {
            held.push(p);
            sockets.push(s);
        }
        if held.len() == 50 {
            break;
        }
    }
    assert!(held.iter().all(|&p| !is_available(p)));
    let e = select_random(Some(&held), &[]).unwrap_err();
    assert_eq!(e.call(), "select_random");
    // One free candidate among the held ones: always that one.
    let free = select_random(None, &held).unwrap();
    assert!(!held.contains(&free));
    let mut pool = held.clone();
    pool.push(free);
    for _ in 0..20 {
        assert_eq!(select_random(Some(&pool), &[]).unwrap(), free);
    }
    assert_eq!(
        get_port(&PortSpec::Exact(held[0]), &[]).unwrap(),
        held[0],
        "an exact port is given as is"
    );
    let spec: PortSpec = format!("{},{}", held[0], free).parse().unwrap();
    assert_eq!(get_port(&spec, &[]).unwrap(), free);
    let any = get_port(&PortSpec::Any, &held).unwrap();
    assert!(!held.contains(&any) && good.contains(&any));
}

#[test]
fn eight_processes_assigning_100_names_each_lose_nothing() {
    if let Ok(role) = std::env::var(ROLE) {
        if let Some(rest) = role.strip_prefix("assign:") {
            let (conf, proc) = rest.rsplit_once('|').unwrap();
            let reg = Registry::at(conf);
            for i in 0..100 {
                reg.get_or_assign(&format!("p{proc}-name{i}")).unwrap();
            }
            std::process::exit(0);
        }
        return;
    }
    let conf = temp_conf("concurrent");
    let children: Vec<_> = (0..8)
        .map(|i| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "eight_processes_assigning_100_names_each_lose_nothing",
                    "--exact",
                    "-q",
                ])
                .env(ROLE, format!("assign:{}|{i}", conf.display()))
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let list = Registry::at(&conf).list().unwrap();
    let names: HashSet<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
    let ports: HashSet<u16> = list.iter().map(|&(_, p)| p).collect();
    assert_eq!((list.len(), names.len(), ports.len()), (800, 800, 800));
}

#[test]
fn sigkill_at_random_moments_loses_no_returned_write() {
    if let Ok(role) = std::env::var(ROLE) {
        if let Some(rest) = role.strip_prefix("writer:") {
            let (conf, round) = rest.rsplit_once('|').unwrap();
            let reg = Registry::at(conf);
            for i in 0.. {
                let name = format!("r{round}-n{i}");
                reg.get_or_assign(&name).unwrap();
                println!("ok {name}");
            }
        }
        return;
    }
    let conf = temp_conf("crash");
    let mut seed = std::process::id() as u64 | 1;
    let mut confirmed: Vec<String> = Vec::new();
    for round in 0..200 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "sigkill_at_random_moments_loses_no_returned_write",
                "--exact",
                "-q",
                "--nocapture",
            ])
            .env(ROLE, format!("writer:{}|{round}", conf.display()))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        // Once it writes, kill it after a random 0-4 ms: mid-write, often.
        let mut first = String::new();
        while !first.starts_with("ok ") {
            first.clear();
            assert!(
                out.read_line(&mut first).unwrap() > 0,
                "round {round}: the writer ended early"
            );
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % 4000));
        child.kill().unwrap();
        child.wait().unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        for l in first.lines().chain(rest.lines()) {
            if let Some(name) = l.strip_prefix("ok ") {
                confirmed.push(name.to_string());
            }
        }
        let list = Registry::at(&conf)
            .list()
            .unwrap_or_else(|e| panic!("round {round}: the file doesn't parse: {e}"));
        let names: HashSet<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
        for n in &confirmed {
            assert!(
                names.contains(n.as_str()),
                "round {round}: {n} was confirmed but is gone"
            );
        }
    }
    assert!(confirmed.len() >= 200);
}

#[test]
fn a_broken_line_is_named_and_the_file_left_unchanged() {
    let conf = temp_conf("broken");
    let text = "# ports\n[DEFAULT]\nfoo = 30123\nthis line is broken\n";
    std::fs::write(&conf, text).unwrap();
    let reg = Registry::at(&conf);
    for e in [
        reg.get_or_assign("bar").unwrap_err(),
        reg.list().unwrap_err(),
        reg.unbind("foo").unwrap_err(),
    ] {
        assert!(matches!(e, RegistryError::Parse { line: 4, .. }), "{e:?}");
        assert!(e.to_string().contains(":4: "), "{e}");
    }
    assert_eq!(
        std::fs::read(&conf).unwrap(),
        text.as_bytes(),
        "byte-for-byte unchanged"
    );
    let (ok, _, err) = port_for(&conf, &["bar"]);
    assert!(!ok && err.contains("port-for.conf:4: "), "{err}");
}

#[test]
fn permission_denied_names_the_path_and_suggests_conf() {
    if rustix::process::geteuid().is_root() {
        // Root may write anywhere; make the directory a file instead.
        let f = temp_conf("perm");
        std::fs::write(&f, "").unwrap();
        let e = Registry::at(f.join("x.conf"))
            .get_or_assign("foo")
            .unwrap_err();
        assert!(e.to_string().contains(&f.display().to_string()), "{e}");
        return;
    }
    let e = Registry::at("/proc/procwire-no/port-for.conf")
        .get_or_assign("foo")
        .unwrap_err();
    assert!(e.to_string().contains("/proc/procwire-no/"), "{e}");
}

#[test]
fn existing_port_for_files_read_and_write_unchanged() {
    let conf = temp_conf("compat");
    // What port-for (Python ConfigParser) writes, plus hand-made extras.
    let text = "[DEFAULT]\nfoo = 37987\nexample.com/apache = 35456\n\n[notes]\nowner = ops\n";
    std::fs::write(&conf, text).unwrap();
    let reg = Registry::at(&conf);
    assert_eq!(reg.get("Example.com/Apache").unwrap(), Some(35456));
    assert!(reg.bind("new", 40123).is_ok());
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "[DEFAULT]\nfoo = 37987\nexample.com/apache = 35456\nnew = 40123\n\n[notes]\nowner = ops\n"
    );
    assert!(reg.unbind("new").unwrap());
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), text);
}
