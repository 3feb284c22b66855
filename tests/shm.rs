//! Shared memory between a parent and a forked child: POSIX, SysV, memfd and
//! anonymous mappings, the errors of each call, and that nothing is left
//! behind in /dev/shm or the SysV table.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering;

use procwire::sys::process::{exit_immediately, fork, ExitStatus, Fork};
use procwire::sys::shm::{
    file_size, ftruncate, shm_open, shm_remove, shm_segment_size, shm_stat, shm_unlink, shmget,
    unique_shm_name, Access, Mapping, SharedMemory, ShmOpenFlags, SysvKey, SysvMapping, SysvOpen,
};

/// Forks a child that copies `msg` to the start of `mem` and exits with `code`.
fn child_writes(mem: &dyn SharedMemory, msg: &'static [u8], code: i32) -> ExitStatus {
    let ptr = mem.as_ptr();
    // SAFETY: the child copies into memory that is already mapped (no
    // allocation, no lock) and `_exit`s.
    match unsafe { fork() }.unwrap() {
        Fork::Child => {
            // SAFETY: `ptr` starts a writable mapping longer than `msg`.
            unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), ptr, msg.len()) };
            exit_immediately(code)
        }
        Fork::Parent(mut c) => c.wait().unwrap(),
    }
}

/// Unlinks a POSIX name when the test ends, also on a failed assertion.
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = shm_unlink(&self.0);
    }
}

fn sysv_ids() -> Vec<i32> {
    // Same table `ipcs -m` prints: the second column is the shmid.
    std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

#[test]
fn posix_segment_written_by_a_forked_child() {
    let name = unique_shm_name("procwire-test");
    let fd = shm_open(&name, ShmOpenFlags::CREATE | ShmOpenFlags::EXCLUSIVE, 0o600).unwrap();
    let _guard = Unlink(name.clone());
    let st = rustix::fs::fstat(&fd).unwrap();
    assert_eq!(st.st_mode & 0o777, 0o600, "created with mode 0600");
    ftruncate(fd.as_fd(), 4096).unwrap();
    assert_eq!(file_size(fd.as_fd()).unwrap(), 4096);
    let map = Mapping::map(fd.as_fd(), 4096, Access::ReadWrite).unwrap();
    assert_eq!(
        child_writes(&map, b"hello from the child", 42),
        ExitStatus::Exited(42)
    );
    let mut got = [0u8; 20];
    map.read_at(0, &mut got).unwrap();
    assert_eq!(&got, b"hello from the child");

    // A second open sees the same bytes.
    let again = shm_open(&name, ShmOpenFlags::READ_ONLY, 0).unwrap();
    let ro = Mapping::map(again.as_fd(), 4096, Access::ReadOnly).unwrap();
    let mut got2 = [0u8; 5];
    ro.read_at(0, &mut got2).unwrap();
    assert_eq!(&got2, b"hello");

    shm_unlink(&name).unwrap();
    assert!(
        !std::path::Path::new("/dev/shm").join(&name[1..]).exists(),
        "the name is gone from /dev/shm"
    );
    let e = shm_open(&name, ShmOpenFlags::empty(), 0).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn sysv_segment_written_by_a_forked_child_and_removed() {
    let id = shmget(SysvKey::Private, 4096, SysvOpen::Create, 0o600).unwrap();
    let map = SysvMapping::attach(id, Access::ReadWrite).unwrap();
    // Marked for removal at once: it lives while attached (the child inherits
    // the attachment), and can't outlive the test even if it fails.
    assert_eq!(shm_segment_size(id).unwrap(), 4096);
    let st = shm_stat(id).unwrap();
    assert_eq!(st.size, 4096);
    assert_eq!(st.creator_pid, std::process::id() as i32);
    // SAFETY: getuid has no preconditions.
    assert_eq!(st.uid, unsafe { libc::getuid() });
    assert_eq!(st.mode, 0o600);
    let e = shm_stat(-1).unwrap_err();
    assert!(e.to_string().contains("id -1, IPC_STAT"), "{e}");
    shm_remove(id).unwrap();
    assert_eq!(map.len(), 4096);
    assert_eq!(
        child_writes(&map, b"sysv child", 43),
        ExitStatus::Exited(43)
    );
    let mut got = [0u8; 10];
    map.read_at(0, &mut got).unwrap();
    assert_eq!(&got, b"sysv child");
    drop(map);
    // A child forked meanwhile by another test of this process inherits the
    // attachment until it exits, so allow a bounded moment for that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while sysv_ids().contains(&id) {
        assert!(
            std::time::Instant::now() < deadline,
            "segment {id} is still in the SysV table"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let e = SysvMapping::attach(id, Access::ReadWrite).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EINVAL);
    assert!(
        e.to_string()
            .starts_with(&format!("shmctl(id {id}, IPC_STAT): ")),
        "{e}"
    );
}

#[test]
fn sysv_errors_name_the_call() {
    let e = shmget(SysvKey::Key(0x7072_6f63), 4096, SysvOpen::Existing, 0o600).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::ENOENT);
    assert!(
        e.to_string()
            .starts_with("shmget(Key(1886547811), 4096 bytes, Existing, 0o600): "),
        "{e}"
    );
    let e = shm_remove(-1).unwrap_err();
    assert!(
        e.to_string().starts_with("shmctl(id -1, IPC_RMID): "),
        "{e}"
    );
}

#[test]
fn posix_errors_name_the_segment() {
    let name = unique_shm_name("procwire-missing");
    let e = shm_open(&name, ShmOpenFlags::empty(), 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("shm_open({name}, O_RDWR, 0o0): No such file or directory (os error 2)")
    );
    let e = shm_unlink(&name).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("shm_unlink({name}): No such file or directory (os error 2)")
    );
}

#[test]
fn mapping_errors_and_bounds() {
    let name = unique_shm_name("procwire-test");
    let fd = shm_open(&name, ShmOpenFlags::CREATE | ShmOpenFlags::EXCLUSIVE, 0o600).unwrap();
    shm_unlink(&name).unwrap();
    ftruncate(fd.as_fd(), 64).unwrap();
    let e = Mapping::map(fd.as_fd(), 0, Access::ReadWrite).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EINVAL);
    assert!(
        e.to_string()
            .starts_with(&format!("mmap(fd {}, length 0)", fd.as_raw_fd())),
        "{e}"
    );

    let ro_name = unique_shm_name("procwire-test");
    let ro = shm_open(
        &ro_name,
        ShmOpenFlags::CREATE | ShmOpenFlags::READ_ONLY,
        0o600,
    );
    let _guard = Unlink(ro_name);
    if let Ok(ro) = ro {
        // Writable shared mapping of an fd opened read-only: EACCES.
        let e = Mapping::map(ro.as_fd(), 64, Access::ReadWrite).unwrap_err();
        assert_eq!(e.raw_os_error(), libc::EACCES);
        assert!(
            e.to_string().starts_with(&format!(
                "mmap(fd {}, 64 bytes, ReadWrite, MAP_SHARED)",
                ro.as_raw_fd()
            )),
            "{e}"
        );
    }

    let map = Mapping::map(fd.as_fd(), 64, Access::ReadWrite).unwrap();
    assert!(
        map.write_at(60, b"12345").is_err(),
        "a write past the end is refused"
    );
    assert_eq!(
        map.read_at(usize::MAX, &mut [0u8; 2])
            .unwrap_err()
            .raw_os_error(),
        libc::EFAULT
    );
    assert!(map.atomic_u32(1).is_none(), "misaligned");
    assert!(map.atomic_u32(64).is_none(), "out of bounds");
    assert!(map.atomic_u64(56).is_some());
    let ro = Mapping::map(fd.as_fd(), 64, Access::ReadOnly).unwrap();
    assert!(
        ro.atomic_u32(0).is_none(),
        "no atomics from a read-only mapping"
    );
    assert_eq!(
        ro.write_at(0, b"x").unwrap_err().raw_os_error(),
        libc::EACCES
    );

    let (sock, _) = procwire::sys::socket::socketpair(
        procwire::sys::socket::Domain::UNIX,
        procwire::sys::socket::Type::STREAM,
    )
    .unwrap();
    let e = ftruncate(sock.as_fd(), 10).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("ftruncate(fd {}, 10): ", sock.as_raw_fd())),
        "{e}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn memfd_with_seals() {
    use procwire::sys::shm::{add_seals, memfd_create, seals, Seals};
    let fd = memfd_create("procwire-test").unwrap();
    ftruncate(fd.as_fd(), 8192).unwrap();
    add_seals(fd.as_fd(), Seals::SHRINK | Seals::GROW | Seals::SEAL).unwrap();
    assert_eq!(
        seals(fd.as_fd()).unwrap(),
        Seals::SHRINK | Seals::GROW | Seals::SEAL
    );
    let e = ftruncate(fd.as_fd(), 4096).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EPERM, "a sealed size can't shrink");
    let e = add_seals(fd.as_fd(), Seals::WRITE).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EPERM);
    assert!(
        e.to_string().starts_with(&format!(
            "fcntl(fd {}, F_ADD_SEALS Seals(WRITE)): ",
            fd.as_raw_fd()
        )),
        "{e}"
    );
    let map = Mapping::map(fd.as_fd(), 8192, Access::ReadWrite).unwrap();
    map.write_at(8000, b"memfd").unwrap();

    let e = memfd_create(&"n".repeat(300)).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EINVAL);
    assert_eq!(e.call(), "memfd_create");
}

#[test]
fn anonymous_mapping_is_shared_with_a_child() {
    let map = Mapping::anonymous(4096).unwrap();
    let counter = map.atomic_u32(128).unwrap();
    counter.store(1, Ordering::SeqCst);
    let addr = counter as *const _ as usize;
    // SAFETY: the child only does an atomic add on existing memory and exits.
    match unsafe { fork() }.unwrap() {
        Fork::Child => {
            // SAFETY: the address is the live shared atomic above.
            let c = unsafe { &*(addr as *const std::sync::atomic::AtomicU32) };
            c.fetch_add(41, Ordering::SeqCst);
            exit_immediately(0)
        }
        Fork::Parent(mut c) => assert!(c.wait().unwrap().success()),
    }
    assert_eq!(counter.load(Ordering::SeqCst), 42);
    assert_eq!(
        Mapping::anonymous(0).unwrap_err().raw_os_error(),
        libc::EINVAL
    );
}

#[cfg(target_os = "linux")]
#[test]
fn populate_backs_every_page_up_front() {
    use procwire::sys::shm::memfd_create;
    use std::os::unix::fs::MetadataExt;
    let len = 4 << 20;
    let fd = memfd_create("procwire-populate").unwrap();
    ftruncate(fd.as_fd(), len as u64).unwrap();
    let file = std::fs::File::from(fd.try_clone().unwrap());
    let map = Mapping::map(fd.as_fd(), len, Access::ReadWrite).unwrap();
    assert_eq!(file.metadata().unwrap().blocks(), 0, "no page yet");
    map.populate().unwrap();
    // tmpfs counts allocated pages in 512-byte blocks.
    assert_eq!(file.metadata().unwrap().blocks() * 512, len as u64);
    // The contents are still zero.
    let mut b = [1u8; 16];
    map.read_at(len - 16, &mut b).unwrap();
    assert_eq!(b, [0u8; 16]);

    // A mapping longer than its file can't be backed past the end: an
    // error naming the call, not a SIGBUS.
    let short = memfd_create("procwire-populate-short").unwrap();
    ftruncate(short.as_fd(), 4096).unwrap();
    let over = Mapping::map(short.as_fd(), 3 * 4096, Access::ReadWrite).unwrap();
    let e = over.populate().unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EFAULT, "{e}");
    assert!(
        e.to_string()
            .starts_with("madvise(12288 bytes at 0, MADV_POPULATE_WRITE): "),
        "{e}"
    );
}

#[test]
fn populate_range_backs_only_the_pages_of_its_bytes() {
    use procwire::sys::shm::{memfd_create, page_size};
    use std::os::unix::fs::MetadataExt;
    let page = page_size();
    let len = 16 * page;
    let fd = memfd_create("procwire-populate-range").unwrap();
    ftruncate(fd.as_fd(), len as u64).unwrap();
    let file = std::fs::File::from(fd.try_clone().unwrap());
    let map = Mapping::map(fd.as_fd(), len, Access::ReadWrite).unwrap();
    // From the middle of page 3 to one byte into page 6: pages 3..=6.
    assert!(map.populate_range(3 * page + 100, 3 * page).unwrap());
    assert_eq!(file.metadata().unwrap().blocks() * 512, 4 * page as u64);
    // Nothing to do is done.
    assert!(map.populate_range(len, 0).unwrap());
    assert_eq!(file.metadata().unwrap().blocks() * 512, 4 * page as u64);
    // Past the end: an error naming the range, and nothing backed.
    let e = map.populate_range(15 * page, page + 1).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EFAULT, "{e}");
    assert!(e.to_string().starts_with("populate("), "{e}");
    assert_eq!(file.metadata().unwrap().blocks() * 512, 4 * page as u64);
}
