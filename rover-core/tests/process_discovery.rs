//! Process discovery against the real `/proc`: this test's own process and
//! children it starts, checked against `ps` and the standard library;
//! selectors over the real listing; the profiling support of fixtures
//! built with and without frame pointers; and a process in its own pid and
//! mount namespaces, in a private root, whose binary is deleted, found and
//! then profiled.

mod session_fixtures;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rover_core::process::{Error, ProcessInfo, Selector, SupportCache, processes};
use rover_core::profile::Metric;
use session_fixtures::{Fixture, Language, SPIN, WITH_FRAME_POINTERS, profiler, value_through};

/// A `sleep` no other process has: its argument holds this test's pid and
/// a tag.
struct Sleeper {
    child: Child,
    argument: String,
}

impl Sleeper {
    fn start(tag: u32) -> Sleeper {
        let argument = format!("300.{}{tag:03}", std::process::id());
        let child = Command::new("sleep").arg(&argument).spawn().unwrap();
        // `spawn` returns once the child exists, maybe before it has exec'd
        // sleep: wait until its command line says so.
        let start = std::time::Instant::now();
        while std::fs::read(format!("/proc/{}/cmdline", child.id()))
            .map_or(true, |cmdline| !cmdline.starts_with(b"sleep"))
        {
            assert!(start.elapsed() < Duration::from_secs(10), "sleep never ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        Sleeper { child, argument }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ps -o FIELD= -p PID`, trimmed, in the C locale and UTC.
fn ps(field: &str, pid: u32) -> String {
    let output = Command::new("ps")
        .args(["-o", &format!("{field}="), "-p", &pid.to_string()])
        .env("LC_ALL", "C")
        .env("TZ", "UTC0")
        .output()
        .expect("ps (procps) is needed to check the listing");
    assert!(output.status.success(), "ps -p {pid}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// `ps -o lstart` (`Tue Dec  1 14:16:52 2026`, in UTC) as a time.
fn ps_start(pid: u32) -> SystemTime {
    let text = ps("lstart", pid);
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields.len(), 5, "lstart {text:?}");
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months.iter().position(|m| *m == fields[1]).unwrap() as i64 + 1;
    let day: i64 = fields[2].parse().unwrap();
    let year: i64 = fields[4].parse().unwrap();
    let hms: Vec<i64> = fields[3].split(':').map(|n| n.parse().unwrap()).collect();
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2];
    UNIX_EPOCH + Duration::from_secs(secs as u64)
}

/// How far apart two times are.
fn apart(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b)
        .or_else(|_| b.duration_since(a))
        .unwrap_or_default()
}

fn shell(script: &str) -> String {
    let output = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(output.status.success(), "{script}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn this_process_and_a_child_as_ps_sees_them() {
    let before_child = SystemTime::now();
    let sleeper = Sleeper::start(1);
    let me = ProcessInfo::read(std::process::id()).unwrap();
    let child = ProcessInfo::read(sleeper.pid()).unwrap();

    assert_eq!(me.pid, std::process::id());
    assert_eq!(me.ppid, std::os::unix::process::parent_id());
    let exe = std::env::current_exe().unwrap();
    assert_eq!(me.exe.as_deref(), Some(exe.as_path()));
    assert!(!me.exe_deleted);
    let name = exe.file_name().unwrap().to_str().unwrap();
    assert_eq!(me.comm, name[..name.len().min(15)]);
    assert_eq!(me.comm, ps("comm", me.pid));
    assert_eq!(me.cmdline, std::env::args().collect::<Vec<_>>());
    // SAFETY: geteuid reads this process's credentials.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(me.uid, Some(euid));
    assert_eq!(me.user.as_deref(), Some(ps("euser", me.pid).as_str()));
    assert_eq!(me.ns_pids.first(), Some(&me.pid));
    assert_eq!(me.container_pid(), None);
    assert_eq!(me.namespaces.pid_differs(), Some(false));
    assert_eq!(me.namespaces.mnt_differs(), Some(false));
    assert!(me.threads.is_some_and(|n| n >= 1));

    assert_eq!(child.pid, sleeper.pid());
    assert_eq!(child.ppid, me.pid);
    assert_eq!(child.comm, "sleep");
    let sleep = shell("readlink -f \"$(command -v sleep)\"");
    assert_eq!(child.exe.as_deref(), Some(Path::new(&sleep)));
    assert_eq!(child.cmdline, ["sleep", sleeper.argument.as_str()]);
    assert_eq!(child.threads, Some(1));
    assert_eq!(
        child.threads.map(|n| n.to_string()),
        Some(ps("nlwp", child.pid))
    );
    assert_eq!(
        child.cgroup, me.cgroup,
        "a child starts in its parent's cgroup"
    );

    // Start times: as ps computes them (whole seconds; ps may take the boot
    // time from the uptime instead of btime, a second apart), the child
    // after this process and after `before_child`, not in the future.
    for process in [&me, &child] {
        let ps = ps_start(process.pid);
        assert!(
            apart(process.start_time, ps) <= Duration::from_secs(2),
            "{}: {:?} against ps's {ps:?}",
            process.pid,
            process.start_time
        );
    }
    assert!(child.start_ticks >= me.start_ticks);
    assert!(child.start_time >= me.start_time);
    assert!(child.start_time + Duration::from_secs(1) >= before_child);
    assert!(child.start_time <= SystemTime::now());
    // A second child, started 0.2 s later, has a later start: what tells a
    // reused pid from the process that had it.
    std::thread::sleep(Duration::from_millis(200));
    let later = Sleeper::start(2);
    let later = ProcessInfo::read(later.pid()).unwrap();
    assert!(
        later.start_ticks > child.start_ticks,
        "{} then {}",
        child.start_ticks,
        later.start_ticks
    );
}

#[test]
fn the_cgroup_is_what_proc_self_cgroup_says() {
    let me = ProcessInfo::read(std::process::id()).unwrap();
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let lines: Vec<(&str, &str)> = text
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            let _ = parts.next();
            (parts.next().unwrap(), parts.next().unwrap())
        })
        .collect();
    assert_eq!(me.cgroups.len(), lines.len());
    for (line, (controllers, path)) in me.cgroups.iter().zip(&lines) {
        assert_eq!(line.controllers.join(","), *controllers);
        assert_eq!(line.path, *path);
    }
    // v2 alone: the unified path; otherwise the memory controller's (or,
    // without one, see the module's documented order).
    let v1_memory = lines
        .iter()
        .find(|(controllers, _)| controllers.split(',').any(|c| c == "memory"));
    let expected = if lines.iter().all(|(controllers, _)| controllers.is_empty()) {
        lines.first().map(|(_, path)| *path)
    } else {
        v1_memory.map(|(_, path)| *path)
    };
    if expected.is_some() {
        assert_eq!(me.cgroup.as_deref(), expected, "{text}");
    }
    eprintln!("cgroup {:?}, unit {:?}", me.cgroup, me.systemd_unit);
}

#[test]
fn the_listing_holds_every_process_once_and_no_threads() {
    let sleeper = Sleeper::start(3);
    // A thread of this process: its id opens under /proc, but is no entry of
    // the listing.
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() } as u32).unwrap();
        let _ = stop_rx.recv();
    });
    let tid = tid_rx.recv().unwrap();
    let ps_pids = || -> Vec<u32> {
        let ps = shell("ps -e -o pid=");
        ps.lines().map(|l| l.trim().parse().unwrap()).collect()
    };
    let before = ps_pids();
    let listed = processes().unwrap();
    let after = ps_pids();
    stop_tx.send(()).unwrap();
    thread.join().unwrap();

    let pids: Vec<u32> = listed.iter().map(|p| p.pid).collect();
    assert!(pids.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
    assert!(pids.contains(&std::process::id()));
    assert!(pids.contains(&sleeper.pid()));
    assert!(pids.contains(&1));
    assert!(!pids.contains(&tid), "thread {tid} listed");
    // Every process `ps -e` saw before and after the listing lived through
    // it, so is listed.
    let lived: Vec<u32> = before
        .into_iter()
        .filter(|pid| after.contains(pid))
        .collect();
    let missing: Vec<&u32> = lived.iter().filter(|pid| !pids.contains(pid)).collect();
    eprintln!(
        "{} processes listed, {} seen by ps before and after",
        pids.len(),
        lived.len()
    );
    assert!(missing.is_empty(), "not listed: {missing:?}");
    // Kernel threads are listed, without an executable or command line.
    let kthreadd = listed.iter().find(|p| p.pid == 2 && p.comm == "kthreadd");
    if let Some(kthreadd) = kthreadd {
        assert_eq!(kthreadd.exe, None);
        assert!(kthreadd.cmdline.is_empty());
        // Without privileges the link is not even followed: a permission
        // error, which says less but no more than is known.
        // SAFETY: geteuid reads this process's credentials.
        match (kthreadd.support(), unsafe { libc::geteuid() }) {
            (Err(Error::NoExecutable { pid: 2 }), _) => {}
            (Err(Error::Read { source, .. }), uid) if uid != 0 => {
                assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied)
            }
            (other, _) => panic!("kthreadd's support: {other:?}"),
        }
    }
}

#[test]
fn missing_and_exited_processes_are_errors_not_panics() {
    // Pids are never that high: pid_max is at most 2^22.
    assert!(matches!(
        ProcessInfo::read(4_999_999),
        Err(Error::NoSuchProcess { pid: 4_999_999 })
    ));
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    let gone = ProcessInfo::read(pid);
    child.wait().unwrap();
    // Reaped: gone (unless the pid was reused at once, which start times
    // would tell).
    match ProcessInfo::read(pid) {
        Err(Error::NoSuchProcess { pid: p }) => assert_eq!(p, pid),
        Ok(reused) => {
            assert!(reused.start_ticks > gone.unwrap().start_ticks);
        }
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn selectors_compose_over_the_real_listing() {
    let sleeper = Sleeper::start(4);
    let other = Sleeper::start(5);
    let me = std::process::id();
    let pids = |selector: &Selector| -> Vec<u32> {
        selector.select().unwrap().iter().map(|p| p.pid).collect()
    };
    let mine = Selector::cmdline(&regex_escape(&sleeper.argument)).unwrap();
    assert_eq!(pids(&mine), vec![sleeper.pid()]);
    let both = Selector::cmdline(&format!("^sleep 300\\.{me}00[45]$")).unwrap();
    assert_eq!(pids(&both), sorted(vec![sleeper.pid(), other.pid()]));
    assert_eq!(
        pids(&Selector::comm("sleep").and(mine.clone())),
        vec![sleeper.pid()]
    );
    assert!(pids(&Selector::comm("sleeping").and(mine.clone())).is_empty());
    assert_eq!(
        pids(&both.clone().and(!Selector::pid(other.pid()))),
        vec![sleeper.pid()]
    );
    assert_eq!(
        pids(&Selector::pid(me).or(Selector::pid(sleeper.pid()))),
        sorted(vec![me, sleeper.pid()])
    );
    assert_eq!(
        pids(&Selector::any([
            Selector::pid(other.pid()),
            Selector::pid(me),
            Selector::pid(4_999_999)
        ])),
        sorted(vec![me, other.pid()])
    );
    assert!(pids(&Selector::any([])).is_empty());
    let everything = pids(&Selector::all([]));
    assert!(everything.contains(&me) && everything.contains(&1));
    let sleep = PathBuf::from(shell("readlink -f \"$(command -v sleep)\""));
    assert_eq!(
        pids(&Selector::exe(&sleep).and(both.clone())),
        sorted(vec![sleeper.pid(), other.pid()])
    );
    assert!(pids(&Selector::exe("/nonexistent/sleep").and(both.clone())).is_empty());
    // By cgroup: this process's holds it and its children.
    let cgroup = ProcessInfo::read(me).unwrap().cgroup.unwrap();
    let in_cgroup = pids(&Selector::cgroup(cgroup.clone()));
    for pid in [me, sleeper.pid(), other.pid()] {
        assert!(in_cgroup.contains(&pid), "{pid} not in {cgroup}");
    }
    assert!(pids(&Selector::cgroup(format!("{cgroup}/nonexistent"))).is_empty());
    // No container here, so no match for any id.
    if ProcessInfo::read(me).unwrap().container_id.is_none() {
        assert!(
            pids(
                &Selector::container("0123456789ab")
                    .unwrap()
                    .and(both.clone())
            )
            .is_empty()
        );
    }
    // A selector only tests: a non-match over a given process is false.
    let info = ProcessInfo::read(sleeper.pid()).unwrap();
    assert!(mine.matches(&info));
    assert!(!mine.clone().not().matches(&info));
    assert!(matches!(
        Selector::cmdline("sleep ("),
        Err(Error::Pattern { .. })
    ));
}

fn sorted(mut pids: Vec<u32>) -> Vec<u32> {
    pids.sort_unstable();
    pids
}

fn regex_escape(text: &str) -> String {
    text.replace('.', "\\.")
}

#[test]
fn support_of_fixtures_with_and_without_frame_pointers() {
    let with = Fixture::build_with("fp_with", Language::C, WITH_FRAME_POINTERS, SPIN, None);
    let without = Fixture::build_without_frame_pointers("fp_without", Language::C, SPIN, None);
    // objdump's view, the control.
    assert!(!with.frame_pointer_functions().is_empty());
    assert!(without.frame_pointer_functions().is_empty());
    let cache = SupportCache::new();
    let mut children = Vec::new();
    for (fixture, expected) in [(&with, true), (&without, false)] {
        let running = fixture.spawn(&["100"]);
        let info = ProcessInfo::read(running.id()).unwrap();
        let support = cache.support(&info).unwrap();
        eprintln!("{}: {support:?}", fixture.path.display());
        assert!(support.elf);
        assert!(support.symtab && support.dynsym);
        assert!(support.has_symbols() && support.symbols >= 3);
        assert!(support.dwarf, "built with -g");
        assert!(support.eh_frame && support.has_unwind_tables());
        assert!(support.build_id.is_some());
        assert!(
            support.frame_pointers.sampled >= 2,
            "main and spin_here at least"
        );
        assert_eq!(support.frame_pointers.likely(), expected);
        // main, spin_here and now: all three or none.
        let all = if expected {
            support.frame_pointers.sampled
        } else {
            0
        };
        assert_eq!(support.frame_pointers.with_frame_pointer, all);
        // Its perf map, once there is one.
        assert_eq!(support.perf_map, None);
        let map = PathBuf::from(format!("/tmp/perf-{}.map", info.pid));
        std::fs::write(&map, "1000 10 jitted\n").unwrap();
        let found = cache.support(&info).unwrap().perf_map;
        std::fs::remove_file(&map).unwrap();
        assert_eq!(
            found,
            Some(PathBuf::from(format!(
                "/proc/{}/root/tmp/perf-{}.map",
                info.pid, info.pid
            )))
        );
        children.push(running);
    }
    // One entry per executable, reused for the second probe of each.
    assert_eq!(cache.len(), 2);
    // Stripped: no symbol table; its `.dynsym` names only imports.
    let stripped = with.path.with_file_name("fp_stripped");
    let status = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&with.path)
        .status()
        .expect("strip (binutils) is needed");
    assert!(status.success());
    let mut running = Command::new(&stripped)
        .arg("100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    read_ready(&mut running);
    let support = ProcessInfo::read(running.id()).unwrap().support().unwrap();
    eprintln!("stripped: {support:?}");
    assert!(!support.symtab && !support.dwarf);
    assert!(!support.has_symbols(), "{} symbols", support.symbols);
    assert!(support.eh_frame, "strip keeps .eh_frame");
    let _ = running.kill();
    let _ = running.wait();
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn read_ready(child: &mut Child) {
    let stdout = child.stdout.as_mut().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8];
    while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    assert_eq!(line, b"ready", "fixture did not start");
}

/// A process started by `unshare`, in its own pid and mount namespaces;
/// killed (by its host pid) and reaped when dropped.
struct Contained {
    unshare: Child,
    host_pid: Option<u32>,
}

impl Drop for Contained {
    fn drop(&mut self) {
        if let Some(pid) = self.host_pid {
            // SAFETY: kill sends a signal; the pid is the contained
            // process's, still unreaped (its parent, unshare, waits for it).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// The real container case without a container runtime: util-linux's
/// `unshare` gives the fixture its own pid namespace (it is pid 1 there)
/// and mount namespace, `chroot` a private root holding only the binary and
/// `/tmp`; the binary is deleted once running. The listing must still find
/// it and say so, its perf map is looked for under its own pid in its own
/// root, and an on-CPU session names its function (through
/// `/proc/PID/map_files`, the only way left to the binary).
#[test]
fn a_process_in_its_own_namespaces_and_root_with_its_binary_deleted() {
    const TEST: &str = "a_process_in_its_own_namespaces_and_root_with_its_binary_deleted";
    // SAFETY: geteuid reads this process's credentials.
    let root_user = unsafe { libc::geteuid() } == 0;
    if !testkit::require(TEST, root_user, "needs root for unshare and chroot") {
        return;
    }
    let unshare_found = Command::new("unshare").arg("--version").output().is_ok();
    if !testkit::require(TEST, unshare_found, "needs unshare (util-linux)") {
        return;
    }
    let Some(profiler) = profiler(TEST) else {
        return;
    };
    let build = tempfile::Builder::new()
        .prefix("rover-contained-src-")
        .tempdir()
        .unwrap();
    let source = build.path().join("contained.c");
    std::fs::write(&source, SPIN).unwrap();
    let root = tempfile::Builder::new()
        .prefix("rover-contained-root-")
        .tempdir()
        .unwrap();
    let binary = root.path().join("contained");
    let compile = |extra: &[&str]| {
        Command::new("cc")
            .args(WITH_FRAME_POINTERS)
            .args(extra)
            .arg("-o")
            .arg(&binary)
            .arg(&source)
            .stderr(Stdio::null())
            .status()
            .expect("cc is needed to build the fixture")
            .success()
    };
    // Static if libc's static archive is installed; otherwise the host's
    // libraries are bound into the private root.
    let linked_statically = compile(&["-static"]);
    if !linked_statically {
        assert!(compile(&[]), "cc failed on contained.c");
    }
    std::fs::create_dir(root.path().join("tmp")).unwrap();
    let libraries = r#"for d in lib lib64 usr; do
        if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$0/$d"
        elif [ -d "/$d" ]; then mkdir "$0/$d" && mount --rbind "/$d" "$0/$d"; fi
    done; "#;
    let script = format!(
        "{}exec chroot \"$0\" /contained 1000",
        if linked_statically { "" } else { libraries }
    );
    let unshare = Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "--mount-proc", "--kill-child"])
        .args(["sh", "-c", &script])
        .arg(root.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut contained = Contained {
        unshare,
        host_pid: None,
    };
    read_ready(&mut contained.unshare);
    // Running: from now on only the mapping reaches the binary.
    std::fs::remove_file(&binary).unwrap();

    let me = ProcessInfo::read(std::process::id()).unwrap();
    let listed = processes().unwrap();
    let unshare_pid = contained.unshare.id();
    let found: Vec<&ProcessInfo> = listed.iter().filter(|p| p.ppid == unshare_pid).collect();
    assert_eq!(found.len(), 1, "unshare's children: {found:?}");
    let process = found[0].clone();
    contained.host_pid = Some(process.pid);
    eprintln!("{process:#?}");
    assert_eq!(process.comm, "contained");
    assert_eq!(process.cmdline, ["/contained", "1000"]);
    assert_eq!(process.exe.as_deref(), Some(Path::new("/contained")));
    assert!(process.exe_deleted);
    assert_eq!(process.ns_pids, [process.pid, 1]);
    assert_eq!(process.container_pid(), Some(1));
    assert_eq!(process.own_pid(), 1);
    assert_eq!(process.namespaces.pid_differs(), Some(true));
    assert_eq!(process.namespaces.mnt_differs(), Some(true));
    assert_ne!(process.namespaces.pid, me.namespaces.pid);
    assert_ne!(process.namespaces.mnt, me.namespaces.mnt);
    assert_eq!(process.namespaces.own_pid, me.namespaces.pid);
    assert!(process.start_time >= me.start_time);
    // A namespace is no container runtime's: same cgroup, no id.
    assert_eq!(process.cgroup, me.cgroup);
    assert_eq!(process.container_id, me.container_id);
    // Selected by its command line, and by the executable path it sees.
    let selected = Selector::exe("/contained")
        .and(Selector::cmdline("^/contained 1000$").unwrap())
        .select()
        .unwrap();
    assert_eq!(
        selected.iter().map(|p| p.pid).collect::<Vec<_>>(),
        [process.pid]
    );

    // Its executable, deleted, read through /proc/PID/exe.
    let cache = SupportCache::new();
    let support = cache.support(&process).unwrap();
    eprintln!("{support:?}");
    assert!(support.elf && support.symtab && support.has_symbols());
    assert!(support.eh_frame);
    assert!(support.frame_pointers.sampled > 0);
    // Perf maps: none yet; one named by the host pid is not its; the one
    // named by its own pid, in its own /tmp, is.
    assert_eq!(support.perf_map, None);
    let tmp = root.path().join("tmp");
    std::fs::write(
        tmp.join(format!("perf-{}.map", process.pid)),
        "1000 10 host_named\n",
    )
    .unwrap();
    assert_eq!(cache.support(&process).unwrap().perf_map, None);
    std::fs::write(tmp.join("perf-1.map"), "1000 10 jitted\n").unwrap();
    let perf_map = cache.support(&process).unwrap().perf_map;
    assert_eq!(
        perf_map,
        Some(PathBuf::from(format!(
            "/proc/{}/root/tmp/perf-1.map",
            process.pid
        )))
    );
    assert_eq!(
        std::fs::read_to_string(perf_map.unwrap()).unwrap(),
        "1000 10 jitted\n"
    );

    // Profiled by its host pid.
    let session = profiler.on_cpu().pids([process.pid]).start().unwrap();
    let stdin = contained.unshare.stdin.as_mut().unwrap();
    stdin.write_all(b"g").unwrap();
    stdin.flush().unwrap();
    let mut line = Vec::new();
    let stdout = contained.unshare.stdout.as_mut().unwrap();
    let mut byte = [0u8];
    while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    assert_eq!(line, b"done");
    let profile = session.stop_blocking().unwrap();
    let total = profile.total(Metric::OnCpuSamples);
    let in_spin = value_through(&profile, "spin_here", Metric::OnCpuSamples);
    eprintln!("{in_spin} of {total} samples in spin_here");
    assert!(total > 10, "{total} samples for a second of CPU");
    assert!(
        in_spin * 10 >= total * 8,
        "{in_spin} of {total} in spin_here"
    );
}
