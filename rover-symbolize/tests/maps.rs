//! Behaviour of `rover_symbolize::maps` against live processes and fixed
//! `/proc/PID/maps` samples.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rover_symbolize::Error;
use rover_symbolize::maps::{MapEntry, MapPath, Perms, ProcessMaps, namespace_pid, read_vdso};

/// A pid that can never exist: one past the largest the kernel hands out.
fn impossible_pid() -> u32 {
    let max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    max + 1
}

/// Kills and reaps a child when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_sleep() -> Reaped {
    Reaped(
        Command::new("sleep")
            .arg("30")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Waits until the child has exec'd `exe` and settled in its nanosleep:
/// while execve and the dynamic loader run, its maps are still being built
/// (the vDSO is mapped late in execve), and a task can be in state `S`
/// there too, so the state alone is not enough — the wait channel tells
/// that it reached the sleep itself.
fn wait_for_exec(pid: u32, exe_name: &str) -> ProcessMaps {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        let maps = ProcessMaps::read(pid).unwrap();
        let sleeping = stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('S'))
            && wchan.contains("nanosleep");
        let exec_done = maps.entries().iter().any(|e| match &e.path {
            MapPath::File(p) => p.file_name().is_some_and(|n| n == exe_name),
            _ => false,
        });
        if (sleeping && exec_done) || Instant::now() > deadline {
            return maps;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn own_maps_locate_own_code_and_vdso() {
    let pid = std::process::id();
    let maps = ProcessMaps::read(pid).unwrap();
    assert_eq!(maps.pid(), pid);
    assert!(maps.entries().len() > 5, "{:?}", maps.entries());
    assert!(maps.entries().is_sorted_by_key(|e| e.start));

    let code = own_maps_locate_own_code_and_vdso as fn() as usize as u64;
    let entry = maps.find(code).expect("own code is mapped");
    assert!(entry.is_executable() && entry.perms.read && !entry.perms.write);
    let exe = fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
    assert_eq!(entry.path, MapPath::File(exe.clone()));
    let meta = fs::metadata(&exe).unwrap();
    assert_eq!(entry.inode, std::os::unix::fs::MetadataExt::ino(&meta));
    assert!(entry.file_offset(code) < meta.len());

    let vdso: Vec<&MapEntry> = maps
        .entries()
        .iter()
        .filter(|e| e.path == MapPath::Vdso)
        .collect();
    assert_eq!(vdso.len(), 1);
    assert!(vdso[0].is_executable());
    assert!(
        maps.entries()
            .iter()
            .any(|e| e.path == MapPath::Special("[stack]".into()))
    );
}

#[test]
fn child_maps_show_its_executable() {
    let child = spawn_sleep();
    let pid = child.0.id();
    let maps = wait_for_exec(pid, "sleep");
    let exe = fs::canonicalize(fs::read_link(format!("/proc/{pid}/exe")).unwrap()).unwrap();
    let text: Vec<&MapEntry> = maps
        .entries()
        .iter()
        .filter(|e| e.path == MapPath::File(exe.clone()) && e.is_executable())
        .collect();
    assert_eq!(text.len(), 1, "{:?}", maps.entries());
    assert!(maps.find(text[0].start).is_some());
    assert!(maps.entries().iter().any(|e| e.path == MapPath::Vdso));
    let root = text[0].root_path(pid).unwrap();
    assert_eq!(
        root,
        Path::new(&format!("/proc/{pid}/root")).join(exe.strip_prefix("/").unwrap())
    );
    assert_eq!(fs::read(&root).unwrap(), fs::read(&exe).unwrap());
}

#[test]
fn every_line_of_every_live_process_parses() {
    let (mut processes, mut lines) = (0, 0);
    for dir in fs::read_dir("/proc").unwrap() {
        let Ok(pid) = dir.unwrap().file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // Processes exit meanwhile: skip those that are gone.
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let maps = ProcessMaps::parse(pid, &text);
        let want = text.lines().filter(|l| !l.is_empty()).count();
        assert_eq!(maps.entries().len(), want, "pid {pid}:\n{text}");
        for entry in maps.entries() {
            assert!(entry.start < entry.end);
            assert_eq!(maps.find(entry.start), Some(entry));
            assert_eq!(maps.find(entry.end - 1), Some(entry));
        }
        processes += 1;
        lines += want;
    }
    eprintln!("parsed {lines} maps lines of {processes} processes");
    assert!(processes > 1);
}

const SAMPLE: &str = "\
00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon
00651000-00652000 r--p 00051000 08:02 173521      /usr/bin/dbus-daemon
00e03000-00e24000 rw-p 00000000 00:00 0                                  [heap]
35b1800000-35b1820000 r-xp 00000000 08:02 135522  /usr/lib64/my lib (x86).so
7f2c4000-7f2c5000 rwxp 00000000 00:00 0 \n\
7f2c6000-7f2c7000 r-xs 00001000 fd:1a 99 /tmp/jit image (deleted)
7f2c8000-7f2c9000 r--p 00000000 00:00 0                                  [anon:rover test]
7ffcd1d3f000-7ffcd1d41000 r-xp 00000000 00:00 0                          [vdso]
7ffcd1d41000-7ffcd1d43000 r--p 00000000 00:00 0                          [vvar]
7ffe0000-7fff0000 rw-p 00000000 00:00 0 anon_inode:[perf_event]
80000000-80001000 r--p 00000000 08:02 7 /tmp/odd\\012name
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
this is not a maps line
00500000-00400000 r-xp 00000000 08:02 1 /backwards
00600000-00601000 rzxp 00000000 08:02 1 /bad/perms
00600000-00601000 r-xp 0000zz00 08:02 1 /bad/offset
00600000-00601000 r-xp 00000000 0802 1 /bad/dev
00600000-00601000 r-xp 00000000 08:02 -1 /bad/inode
00600000-00601000 r-xp
";

fn perms(s: &str) -> Perms {
    let b = s.as_bytes();
    Perms {
        read: b[0] == b'r',
        write: b[1] == b'w',
        exec: b[2] == b'x',
        shared: b[3] == b's',
    }
}

/// start, end, offset, perms, device major and minor, inode, path.
type Row = (u64, u64, u64, Perms, u32, u32, u64, MapPath);

#[test]
fn sample_lines_parse_exactly() {
    let maps = ProcessMaps::parse(42, SAMPLE);
    assert_eq!(maps.pid(), 42);
    let got: Vec<Row> = maps
        .entries()
        .iter()
        .map(|e| {
            (
                e.start,
                e.end,
                e.offset,
                e.perms,
                e.dev_major,
                e.dev_minor,
                e.inode,
                e.path.clone(),
            )
        })
        .collect();
    let file = |p: &str| MapPath::File(PathBuf::from(p));
    let special = |p: &str| MapPath::Special(p.to_owned());
    #[rustfmt::skip]
    let want = vec![
        (0x400000, 0x452000, 0, perms("r-xp"), 8, 2, 173521, file("/usr/bin/dbus-daemon")),
        (0x651000, 0x652000, 0x51000, perms("r--p"), 8, 2, 173521, file("/usr/bin/dbus-daemon")),
        (0xe03000, 0xe24000, 0, perms("rw-p"), 0, 0, 0, special("[heap]")),
        (0x7f2c4000, 0x7f2c5000, 0, perms("rwxp"), 0, 0, 0, MapPath::Anonymous),
        (0x7f2c6000, 0x7f2c7000, 0x1000, perms("r-xs"), 0xfd, 0x1a, 99, MapPath::Deleted("/tmp/jit image".into())),
        (0x7f2c8000, 0x7f2c9000, 0, perms("r--p"), 0, 0, 0, special("[anon:rover test]")),
        (0x7ffe0000, 0x7fff0000, 0, perms("rw-p"), 0, 0, 0, special("anon_inode:[perf_event]")),
        (0x80000000, 0x80001000, 0, perms("r--p"), 8, 2, 7, file("/tmp/odd\nname")),
        (0x35b1800000, 0x35b1820000, 0, perms("r-xp"), 8, 2, 135522, file("/usr/lib64/my lib (x86).so")),
        (0x7ffcd1d3f000, 0x7ffcd1d41000, 0, perms("r-xp"), 0, 0, 0, MapPath::Vdso),
        (0x7ffcd1d41000, 0x7ffcd1d43000, 0, perms("r--p"), 0, 0, 0, special("[vvar]")),
        (0xffffffffff600000, 0xffffffffff601000, 0, perms("--xp"), 0, 0, 0, special("[vsyscall]")),
    ];
    assert_eq!(got, want);
}

#[test]
fn find_hits_start_and_last_byte_and_misses_end_and_gaps() {
    let maps = ProcessMaps::parse(1, SAMPLE);
    let dbus = maps.find(0x400000).unwrap();
    assert_eq!(dbus.start, 0x400000);
    assert_eq!(maps.find(0x451fff).unwrap().start, 0x400000);
    assert!(maps.find(0x452000).is_none(), "end is exclusive");
    assert!(maps.find(0x3fffff).is_none(), "before the first mapping");
    assert!(maps.find(0).is_none());
    assert_eq!(maps.find(0x651000).unwrap().offset, 0x51000);
    assert_eq!(maps.find(0x651800).unwrap().file_offset(0x651800), 0x51800);
    assert_eq!(
        maps.find(0xffffffffff600fff).unwrap().start,
        0xffffffffff600000
    );
    assert!(maps.find(u64::MAX).is_none());
    assert!(ProcessMaps::parse(1, "").find(0x400000).is_none());

    let entry = maps.find(0x7f2c6800).unwrap();
    assert!(entry.contains(0x7f2c6000) && !entry.contains(0x7f2c7000));
    assert_eq!(
        entry.map_files_path(77),
        PathBuf::from("/proc/77/map_files/7f2c6000-7f2c7000")
    );
    assert_eq!(
        entry.root_path(77),
        Some(PathBuf::from("/proc/77/root/tmp/jit image"))
    );
    assert_eq!(maps.find(0x7f2c4000).unwrap().root_path(77), None);
}

#[test]
fn unsorted_input_is_sorted() {
    let text = "2000-3000 r-xp 00000000 00:00 0\n1000-2000 r-xp 00000000 00:00 0\n";
    let maps = ProcessMaps::parse(1, text);
    let starts: Vec<u64> = maps.entries().iter().map(|e| e.start).collect();
    assert_eq!(starts, [0x1000, 0x2000]);
    assert_eq!(maps.find(0x2000).unwrap().start, 0x2000);
    assert_eq!(maps.find(0x1fff).unwrap().start, 0x1000);
}

/// Opening `map_files` needs CAP_SYS_ADMIN; returns `None` (having said
/// why, or failing the test when `CI` is set) only when the kernel refuses
/// for lack of it.
fn read_map_files(path: &Path) -> Option<Vec<u8>> {
    match fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            testkit::skip(
                &testkit::current_test(),
                format_args!("map_files: {}: {e} (needs CAP_SYS_ADMIN)", path.display()),
            );
            None
        }
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

#[test]
fn map_files_opens_mapped_file_even_when_deleted() {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("rover-maps-test-{pid}"));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mapped file");
    let content: Vec<u8> = (0..3 * 4096u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&path, &content).unwrap();
    let file = fs::File::open(&path).unwrap();
    // SAFETY: the file is private to this test and not modified while mapped.
    let map = unsafe { memmap2::Mmap::map(&file).unwrap() };
    drop(file);
    let addr = map.as_ptr() as u64;

    let maps = ProcessMaps::read(pid).unwrap();
    let entry = maps.find(addr + 5000).unwrap();
    assert_eq!(entry.start, addr);
    assert_eq!(entry.path, MapPath::File(fs::canonicalize(&path).unwrap()));
    assert_eq!(entry.file_offset(addr + 5000), 5000);
    let by_root = entry.root_path(pid).unwrap();
    assert_eq!(fs::read(&by_root).unwrap(), content);

    fs::remove_file(&path).unwrap();
    let maps = ProcessMaps::read(pid).unwrap();
    let entry = maps.find(addr).unwrap();
    assert_eq!(
        entry.path,
        MapPath::Deleted(fs::canonicalize(&dir).unwrap().join("mapped file"))
    );
    assert!(!entry.root_path(pid).unwrap().exists());
    if let Some(bytes) = read_map_files(&entry.map_files_path(pid)) {
        assert_eq!(bytes, content, "map_files gives the deleted file's bytes");
    }

    // And a live executable of another process, compared with its path.
    let child = spawn_sleep();
    let child_pid = child.0.id();
    let maps = wait_for_exec(child_pid, "sleep");
    let exec = maps
        .entries()
        .iter()
        .find(|e| e.is_executable() && matches!(e.path, MapPath::File(_)))
        .unwrap();
    let MapPath::File(exe) = &exec.path else {
        unreachable!()
    };
    if let Some(bytes) = read_map_files(&exec.map_files_path(child_pid)) {
        assert_eq!(bytes, fs::read(exe).unwrap());
    }
    drop(map);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn deleted_executable_of_a_running_process_is_still_readable() {
    let dir = std::env::temp_dir().join(format!("rover-maps-exe-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("rover sleep");
    let sleep = fs::canonicalize(which("sleep")).unwrap();
    fs::copy(&sleep, &exe).unwrap();
    let child = Reaped(
        Command::new(&exe)
            .arg("30")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    wait_for_exec(pid, "rover sleep");
    // Replaced during an upgrade: the running image's file is gone.
    fs::remove_file(&exe).unwrap();
    let maps = ProcessMaps::read(pid).unwrap();
    let text = maps
        .entries()
        .iter()
        .find(|e| e.is_executable() && e.path == MapPath::Deleted(exe.clone()))
        .unwrap_or_else(|| panic!("{:?}", maps.entries()));
    assert!(!text.root_path(pid).unwrap().exists());
    if let Some(bytes) = read_map_files(&text.map_files_path(pid)) {
        assert_eq!(bytes, fs::read(&sleep).unwrap());
    }
    drop(child);
    fs::remove_dir_all(&dir).unwrap();
}

/// The full path of a program on `PATH`.
fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap()
}

#[test]
fn vdso_image_is_elf_for_self_and_child() {
    let pid = std::process::id();
    let maps = ProcessMaps::read(pid).unwrap();
    let vdso = maps
        .entries()
        .iter()
        .find(|e| e.path == MapPath::Vdso)
        .unwrap();
    let image = read_vdso(pid, vdso).unwrap();
    assert_eq!(image.len() as u64, vdso.end - vdso.start);
    assert_eq!(&image[..4], b"\x7fELF");

    let child = spawn_sleep();
    let child_pid = child.0.id();
    let maps = wait_for_exec(child_pid, "sleep");
    let vdso = maps
        .entries()
        .iter()
        .find(|e| e.path == MapPath::Vdso)
        .unwrap();
    assert_eq!(&read_vdso(child_pid, vdso).unwrap()[..4], b"\x7fELF");

    let not_vdso = maps
        .entries()
        .iter()
        .find(|e| e.path != MapPath::Vdso)
        .unwrap();
    assert!(matches!(
        read_vdso(child_pid, not_vdso),
        Err(Error::Proc { .. })
    ));
}

#[test]
fn namespace_pid_of_self_and_of_a_process_in_a_new_pid_namespace() {
    assert_eq!(
        namespace_pid(std::process::id()).unwrap(),
        std::process::id()
    );

    let test = "namespace_pid_of_self_and_of_a_process_in_a_new_pid_namespace";
    if !testkit::require(
        test,
        testkit::is_root(),
        "creating a pid namespace needs root",
    ) {
        return;
    }
    let unshare = Command::new("unshare")
        .args(["--pid", "--fork", "sleep", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(unshare) = unshare else {
        testkit::skip(test, testkit::not_installed("unshare"));
        return;
    };
    let mut unshare = Reaped(unshare);
    let children = format!("/proc/{0}/task/{0}/children", unshare.0.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let inner = loop {
        let text = fs::read_to_string(&children).unwrap_or_default();
        if let Some(pid) = text.split_whitespace().next() {
            break pid.parse::<u32>().unwrap();
        }
        if let Some(status) = unshare.0.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut unshare.0.stderr.take().unwrap(), &mut stderr)
                .unwrap();
            panic!("unshare --pid exited with {status}: {stderr}");
        }
        assert!(Instant::now() < deadline, "unshare --pid started no child");
        std::thread::sleep(Duration::from_millis(10));
    };
    let ns_pid = namespace_pid(inner);
    // The inner sleep outlives unshare unless killed itself.
    Command::new("kill")
        .arg(inner.to_string())
        .status()
        .unwrap();
    assert_eq!(ns_pid.unwrap(), 1, "first process of the new namespace");
}

#[test]
fn missing_process_is_an_error_not_a_panic() {
    let pid = impossible_pid();
    assert!(matches!(ProcessMaps::read(pid), Err(Error::NoSuchProcess { pid: p }) if p == pid));
    assert!(matches!(
        namespace_pid(pid),
        Err(Error::NoSuchProcess { .. })
    ));
    let vdso = ProcessMaps::parse(
        pid,
        "7ffcd1d3f000-7ffcd1d41000 r-xp 00000000 00:00 0 [vdso]",
    );
    assert!(matches!(
        read_vdso(pid, &vdso.entries()[0]),
        Err(Error::NoSuchProcess { .. })
    ));

    // A process that exited (and was reaped) is gone too, unless its pid was
    // reused in between, which the check tolerates.
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    match ProcessMaps::read(pid) {
        Err(Error::NoSuchProcess { .. }) => {}
        Ok(_) => eprintln!("pid {pid} was reused"),
        Err(e) => panic!("{e}"),
    }
}

fn path_strategy() -> impl Strategy<Value = MapPath> {
    prop_oneof![
        Just(MapPath::Anonymous),
        Just(MapPath::Vdso),
        "/[a-zA-Z0-9 ._()\\[\\]-]{0,40}[a-zA-Z0-9._]".prop_map(|p| MapPath::File(p.into())),
        "/[a-zA-Z0-9 ._-]{0,40}".prop_map(|p| MapPath::Deleted(p.into())),
        "\\[[a-z:]{1,12}\\]"
            .prop_filter("vdso has its own variant", |s| s != "[vdso]")
            .prop_map(MapPath::Special),
    ]
}

fn format_line(e: &MapEntry) -> String {
    let p = e.perms;
    let perms = format!(
        "{}{}{}{}",
        if p.read { 'r' } else { '-' },
        if p.write { 'w' } else { '-' },
        if p.exec { 'x' } else { '-' },
        if p.shared { 's' } else { 'p' }
    );
    // Padded as the kernel pads, to column 73.
    let head = format!(
        "{:08x}-{:08x} {perms} {:08x} {:02x}:{:02x} {} ",
        e.start, e.end, e.offset, e.dev_major, e.dev_minor, e.inode
    );
    let path = match &e.path {
        MapPath::Anonymous => return head,
        MapPath::Vdso => "[vdso]".to_owned(),
        MapPath::File(p) => p.display().to_string(),
        MapPath::Deleted(p) => format!("{} (deleted)", p.display()),
        MapPath::Special(s) => s.clone(),
    };
    format!("{head:<73}{path}")
}

prop_compose! {
    fn entry_strategy()(start in any::<u64>(), len in any::<u64>(), offset in any::<u64>(),
                        bits in any::<[bool; 4]>(), dev_major in 0u32..4096, dev_minor in any::<u32>(),
                        inode in any::<u64>(), path in path_strategy()) -> MapEntry {
        MapEntry {
            start,
            end: start.saturating_add(len),
            offset,
            perms: Perms { read: bits[0], write: bits[1], exec: bits[2], shared: bits[3] },
            dev_major,
            dev_minor,
            inode,
            path,
        }
    }
}

proptest! {
    // Failures print their minimal case; nothing is written into the tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// On real (non-overlapping) maps, the binary search finds what a
    /// linear scan finds.
    #[test]
    fn find_agrees_with_a_linear_scan(
        slots in proptest::collection::btree_map(0u64..256, 1u64..=0x1000, 0..40),
        probes in proptest::collection::vec(0u64..0x101000, 50),
    ) {
        let text: String = slots
            .iter()
            .map(|(slot, len)| format!("{:x}-{:x} r-xp 00000000 00:00 0\n", slot * 0x1000, slot * 0x1000 + len))
            .collect();
        let maps = ProcessMaps::parse(1, &text);
        for probe in probes {
            let linear = maps.entries().iter().find(|e| e.contains(probe));
            prop_assert_eq!(maps.find(probe), linear);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC*") {
        let maps = ProcessMaps::parse(1, &text);
        for e in maps.entries() {
            prop_assert!(e.start <= e.end);
            prop_assert!(maps.find(e.start).is_some() || e.start == e.end);
        }
    }

    #[test]
    fn arbitrary_fields_never_panic(lines in proptest::collection::vec(
        "[0-9a-f]{0,17}-[0-9a-fx]{0,17} [rwxsp-]{3,5} [0-9a-f]{0,9} [0-9a-f:]{0,6} [0-9-]{0,21} ?.{0,20}", 0..20)) {
        let maps = ProcessMaps::parse(1, &lines.join("\n"));
        prop_assert!(maps.entries().is_sorted_by_key(|e| e.start));
    }

    #[test]
    fn formatted_entries_round_trip(entries in proptest::collection::vec(entry_strategy(), 1..30)) {
        let text: Vec<String> = entries.iter().map(format_line).collect();
        let maps = ProcessMaps::parse(9, &text.join("\n"));
        let mut want = entries.clone();
        want.sort_by_key(|e| e.start);
        let mut got = maps.entries().to_vec();
        // Equal starts may come in either order; compare as sorted multisets.
        let key = |e: &MapEntry| (e.start, e.end, e.offset, e.inode, format!("{:?}", e.path));
        want.sort_by_key(key);
        got.sort_by_key(key);
        prop_assert_eq!(got, want);
    }
}
