//! `Source::Process` against live fixtures: absolute addresses of a PIE
//! (load bias) and a non-PIE binary compared with binutils, a libc symbol,
//! the vDSO read from memory, a perf-map JIT symbol, an exited process, and
//! a pid that does not exist.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use rover_symbolize::{Error, Origin, Process, Reason, Source, Symbolized, Symbolizer};

/// A fixture process stopped in `pause()`, killed on drop.
struct Stopped {
    child: Child,
    jit: u64,
}

impl Stopped {
    fn spawn(bin: &Path) -> Stopped {
        let mut child = Command::new(bin)
            .args(["50", "stop"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut jit = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(addr) = line.strip_prefix("jit 0x") {
                jit = u64::from_str_radix(addr, 16).unwrap();
            }
            if line == "ready" {
                break;
            }
        }
        assert_ne!(
            jit, 0,
            "fixture did not report its executable anonymous mapping"
        );
        Stopped { child, jit }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Start of the lowest mapping of `path` in `pid` (offset 0), and the
/// lowest `PT_LOAD` virtual address of the file: their difference is the
/// load bias.
fn load_bias(pid: u32, path: &Path) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let start = maps
        .lines()
        .filter(|l| l.ends_with(path.to_str().unwrap()))
        .find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (u64::from_str_radix(fields[2], 16).ok()? == 0)
                .then(|| u64::from_str_radix(fields[0].split('-').next()?, 16).ok())
                .flatten()
        })
        .expect("fixture mapping at offset 0");
    let headers = run(Command::new("readelf").args(["-lW"]).arg(path));
    let first_vaddr = headers
        .lines()
        .filter(|l| l.trim_start().starts_with("LOAD"))
        .filter_map(|l| {
            u64::from_str_radix(l.split_whitespace().nth(2)?.trim_start_matches("0x"), 16).ok()
        })
        .min()
        .expect("a PT_LOAD header");
    start - first_vaddr
}

fn check_live(label: &str, flags: &[&str], pie: bool) {
    let dir = tempdir();
    let bin = build(dir.path(), "gcc", "c", &c_source_with(40), "live", flags);
    let stopped = Stopped::spawn(&bin);
    let bias = load_bias(stopped.pid(), &bin);
    let vaddrs = function_addrs(&bin);
    let absolute: Vec<u64> = vaddrs.iter().map(|v| v + bias).collect();
    let symbolizer = Symbolizer::default();
    let from_process = ours(&symbolizer, &Source::process(stopped.pid()), &absolute);
    let theirs = reference(&bin, &vaddrs, true);
    let rate = compare(label, &vaddrs, &from_process, &theirs);
    assert!(
        rate >= 0.995,
        "{label}: agreement {:.2}% is below 99.5%",
        rate * 100.0
    );
    let results = symbolizer
        .symbolize(&Source::process(stopped.pid()), &absolute)
        .unwrap();
    let build_id = build_id_note(&bin);
    for ((r, v), a) in results.iter().zip(&vaddrs).zip(&absolute) {
        if let Symbolized::Sym(sym) = r {
            assert_eq!(sym.vaddr, Some(*v), "vaddr is the file virtual address");
            assert_eq!(sym.address, *a, "address is the one asked about");
            assert_eq!(sym.origin, Origin::File);
            assert_eq!(sym.module.name(), bin.to_str().unwrap());
            assert_eq!(
                sym.module.build_id().map(ToString::to_string).as_deref(),
                Some(build_id.as_str()),
                "the module's build id is the file's note"
            );
            assert!(sym.sym_addr <= sym.address);
            assert_eq!(
                sym.address - sym.vaddr.unwrap_or(0),
                bias,
                "address and vaddr differ by the load bias"
            );
        }
    }
    if pie {
        assert_ne!(
            bias, 0,
            "{label}: a PIE is loaded away from its link address"
        );
    } else {
        assert_eq!(bias, 0, "{label}: a non-PIE runs at its link address");
    }
    // The file offset of each address, from the mapping that holds it; the
    // file as a source finds the same offset from its segments.
    let maps = rover_symbolize::maps::ProcessMaps::read(stopped.pid()).unwrap();
    let from_file = symbolizer.symbolize(&Source::elf(&bin), &vaddrs).unwrap();
    for ((r, a), f) in results.iter().zip(&absolute).zip(&from_file) {
        let entry = maps.find(*a).expect("mapped");
        let want = entry.file_offset(*a);
        match r {
            Symbolized::Sym(sym) => assert_eq!(sym.file_offset, Some(want)),
            Symbolized::Unknown(u) => assert_eq!(u.file_offset, Some(want)),
        }
        if let Symbolized::Sym(sym) = f {
            assert_eq!(sym.file_offset, Some(want), "{label}: ELF source offset");
            assert_eq!(
                Some(sym.address),
                sym.vaddr,
                "an ELF source's addresses are vaddrs"
            );
        }
    }
}

/// The GNU build id of `bin` as `readelf -n` prints it.
fn build_id_note(bin: &Path) -> String {
    let notes = run(Command::new("readelf").arg("-n").arg(bin));
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("the fixture has a build id note")
        .trim()
        .to_string()
}

#[test]
fn pie_process_addresses_match_addr2line() {
    check_live("live PIE process", &["-O2", "-g", "-pie", "-fPIE"], true);
}

#[test]
fn non_pie_process_addresses_match_addr2line() {
    check_live(
        "live non-PIE process",
        &["-O2", "-g", "-no-pie", "-fno-pie"],
        false,
    );
}

fn libc_mapping(pid: u32) -> (u64, PathBuf) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(path) = fields.get(5) else { continue };
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        if (name.starts_with("libc.so") || name.starts_with("libc-"))
            && fields[2].trim_start_matches('0').is_empty()
        {
            let start = u64::from_str_radix(fields[0].split('-').next().unwrap(), 16).unwrap();
            return (start, PathBuf::from(path));
        }
    }
    panic!("libc not mapped at offset 0 in {pid}");
}

#[test]
fn shared_library_symbol_vdso_and_perf_map() {
    let dir = tempdir();
    let bin = build(dir.path(), "gcc", "c", C_SOURCE, "libs", &["-O2", "-g"]);
    let stopped = Stopped::spawn(&bin);
    let pid = stopped.pid();
    let symbolizer = Symbolizer::default();

    // libc's `pause`, from its dynamic symbol table.
    let (libc_base, libc) = libc_mapping(pid);
    let dynsyms = run(Command::new("nm").args(["-D", "--defined-only"]).arg(&libc));
    let pause = dynsyms
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[2].split('@').next() == Some("pause"))
                .then(|| u64::from_str_radix(f[0], 16).unwrap())
        })
        .expect("libc exports pause");
    // binutils finds libc's debug file (by build id) when one is installed
    // and names the function as its DWARF does (`__libc_pause`).
    let mut names_at_pause: Vec<String> = dynsyms
        .lines()
        .filter(|l| l.starts_with(&format!("{pause:016x}")))
        .map(|l| {
            l.split_whitespace()
                .nth(2)
                .unwrap()
                .split('@')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    names_at_pause.extend(
        reference(&libc, &[pause + 1], true)[0]
            .lines()
            .next()
            .map(str::to_string),
    );
    let result = symbolizer
        .symbolize(&Source::process(pid), &[libc_base + pause + 1])
        .unwrap();
    match &result[0] {
        Symbolized::Sym(sym) => {
            assert!(
                names_at_pause.contains(&sym.name.to_string()),
                "{} not in {names_at_pause:?}",
                sym.name
            );
            assert_eq!(sym.sym_addr, libc_base + pause, "sym_addr is absolute");
            assert_eq!(sym.vaddr, Some(pause + 1));
            assert_eq!(sym.address, libc_base + pause + 1);
            assert_eq!(sym.origin, Origin::File);
        }
        other => panic!("libc pause not resolved: {other:?}"),
    }

    // The vDSO, read from the process's memory.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let vdso = maps
        .lines()
        .find(|l| l.ends_with("[vdso]"))
        .expect("a vdso mapping");
    let (start, end) = vdso
        .split_whitespace()
        .next()
        .unwrap()
        .split_once('-')
        .unwrap();
    let (start, end) = (
        u64::from_str_radix(start, 16).unwrap(),
        u64::from_str_radix(end, 16).unwrap(),
    );
    let mut image = vec![0u8; (end - start) as usize];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(format!("/proc/{pid}/mem")).unwrap(),
        &mut image,
        start,
    )
    .unwrap();
    let vdso_file = dir.path().join("vdso.so");
    std::fs::write(&vdso_file, &image).unwrap();
    let vdso_syms = run(Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&vdso_file));
    let (gettime, name) = vdso_syms
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[2].contains("clock_gettime")).then(|| {
                (
                    u64::from_str_radix(f[0], 16).unwrap(),
                    f[2].split('@').next().unwrap().to_string(),
                )
            })
        })
        .expect("vdso exports clock_gettime");
    let result = symbolizer
        .symbolize(&Source::process(pid), &[start + gettime])
        .unwrap();
    match &result[0] {
        Symbolized::Sym(sym) => {
            assert!(
                sym.name.contains("clock_gettime"),
                "vdso symbol {} for {name}",
                sym.name
            );
            assert_eq!(sym.module.name(), "[vdso]");
            assert_eq!(sym.origin, Origin::Vdso);
            assert_eq!(sym.vaddr, Some(gettime));
            assert_eq!(sym.address, start + gettime);
            assert!(sym.module.build_id().is_some(), "the vDSO has a build id");
        }
        other => panic!("vdso address not resolved: {other:?}"),
    }

    // JIT code named by /tmp/perf-PID.map (garbage lines are skipped).
    let map_path = PathBuf::from(format!("/tmp/perf-{pid}.map"));
    std::fs::write(
        &map_path,
        format!(
            "not a line\n{:x} 40 jitted::hot_loop\nzz 10 bad\n{:x} 20 jitted::other\n",
            stopped.jit,
            stopped.jit + 0x100
        ),
    )
    .unwrap();
    let results = symbolizer
        .symbolize(
            &Source::process(pid),
            &[stopped.jit + 0x10, stopped.jit + 0x108, stopped.jit + 0x80],
        )
        .unwrap();
    std::fs::remove_file(&map_path).unwrap();
    match &results[0] {
        Symbolized::Sym(sym) => {
            assert_eq!(&*sym.name, "jitted::hot_loop");
            assert_eq!(sym.sym_addr, stopped.jit);
            assert!(
                sym.module.name().ends_with(&format!("perf-{pid}.map")),
                "{}",
                sym.module
            );
            assert_eq!(sym.origin, Origin::PerfMap);
            assert_eq!(sym.address, stopped.jit + 0x10);
            assert_eq!((sym.vaddr, sym.file_offset), (None, None));
            assert!(sym.module.build_id().is_none());
            assert!(sym.location.is_none());
        }
        other => panic!("perf-map symbol not resolved: {other:?}"),
    }
    assert!(matches!(&results[1], Symbolized::Sym(s) if &*s.name == "jitted::other"));
    assert!(matches!(&results[2], Symbolized::Unknown(u) if u.reason == Reason::NoPerfMap));
}

#[test]
fn exited_process_resolves_from_cache_until_evicted() {
    let dir = tempdir();
    let bin = build(dir.path(), "gcc", "c", C_SOURCE, "exits", &["-O2", "-g"]);
    let mut stopped = Stopped::spawn(&bin);
    let pid = stopped.pid();
    let bias = load_bias(pid, &bin);
    let vaddrs = function_addrs(&bin);
    let mut absolute: Vec<u64> = vaddrs.iter().map(|v| v + bias).collect();
    absolute.push(stopped.jit + 4);
    let map_path = PathBuf::from(format!("/tmp/perf-{pid}.map"));
    std::fs::write(&map_path, format!("{:x} 10 jitted::gone\n", stopped.jit)).unwrap();
    let symbolizer = Symbolizer::default();
    let before = symbolizer
        .symbolize(&Source::process(pid), &absolute)
        .unwrap();
    let modules = symbolizer.process_modules(pid).unwrap();
    assert!(
        modules
            .iter()
            .any(|m| m.path == bin && m.build_id.is_some()),
        "{modules:?}"
    );
    stopped.kill();
    std::fs::remove_file(&map_path).unwrap();
    let after = symbolizer
        .symbolize(&Source::process(pid), &absolute)
        .unwrap();
    assert_eq!(before, after);
    assert!(matches!(after.last(), Some(Symbolized::Sym(s)) if &*s.name == "jitted::gone"));
    assert!(after.iter().all(|r| matches!(r, Symbolized::Sym(_))));
    assert_eq!(symbolizer.cached_processes(), 1);
    symbolizer.evict_process(pid);
    assert!(matches!(
        symbolizer.symbolize(&Source::process(pid), &absolute),
        Err(Error::NoSuchProcess { pid: p }) if p == pid
    ));
}

/// A process captured while it lived, whose binary was deleted and which
/// exited before any of its addresses were symbolized, still resolves as
/// the binary does; without the capture it does not.
#[test]
fn captured_process_resolves_after_exit_and_deletion() {
    let dir = tempdir();
    let bin = build(dir.path(), "gcc", "c", C_SOURCE, "captured", &["-O2", "-g"]);
    let mut stopped = Stopped::spawn(&bin);
    let pid = stopped.pid();
    let bias = load_bias(pid, &bin);
    let vaddrs = function_addrs(&bin);
    let absolute: Vec<u64> = vaddrs.iter().map(|v| v + bias).collect();
    let symbolizer = Symbolizer::default();
    let expected = symbolizer.symbolize(&Source::elf(&bin), &vaddrs).unwrap();
    assert!(expected.iter().all(|r| matches!(r, Symbolized::Sym(_))));
    let capture = symbolizer.capture_process(pid).unwrap();
    assert!(capture.modules >= 2, "{capture:?}");
    assert_eq!(capture.unopened, 0, "{capture:?}");
    // A second capture replaces the first: the count stays.
    let held = symbolizer.captured_modules();
    symbolizer.capture_process(pid).unwrap();
    assert_eq!(symbolizer.captured_modules(), held);
    // Another symbolizer that only read the maps (no capture).
    let uncaptured = Symbolizer::default();
    uncaptured
        .symbolize(&Source::process(pid), &[0x10])
        .unwrap();
    symbolizer.evict_file(&bin);
    std::fs::remove_file(&bin).unwrap();
    stopped.kill();
    let after = symbolizer
        .symbolize(&Source::process(pid), &absolute)
        .unwrap();
    let names = |results: &[Symbolized]| -> Vec<String> {
        results
            .iter()
            .map(|r| match r {
                Symbolized::Sym(s) => s.name.to_string(),
                other => format!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(names(&after), names(&expected));
    let lost = uncaptured
        .symbolize(&Source::process(pid), &absolute)
        .unwrap();
    assert!(
        lost.iter()
            .all(|r| matches!(r, Symbolized::Unknown(u) if u.reason == Reason::FileGone)),
        "{lost:?}"
    );
    symbolizer.evict_process(pid);
    assert_eq!(symbolizer.captured_modules(), 0);
    // Capturing a process that is gone is an error, not a panic.
    assert!(matches!(
        symbolizer.capture_process(pid),
        Err(Error::NoSuchProcess { .. })
    ));
}

#[test]
fn unmapped_address_and_missing_pid() {
    let symbolizer = Symbolizer::default();
    let me = std::process::id();
    let local = 0u64;
    let stack_addr = &local as *const u64 as u64;
    let results = symbolizer
        .symbolize(&Source::process(me), &[0x10, stack_addr])
        .unwrap();
    assert!(matches!(&results[0], Symbolized::Unknown(u) if u.reason == Reason::Unmapped));
    // Mapped but not code: the thread's stack.
    assert!(
        matches!(&results[1], Symbolized::Unknown(u) if u.reason == Reason::NoSymbols && u.module.is_some()),
        "{:?}",
        results[1]
    );
    // Pids above the kernel's pid_max never exist.
    let missing = 4_194_304 + 17;
    assert!(matches!(
        symbolizer.symbolize(&Source::process(missing), &[0x1000]),
        Err(Error::NoSuchProcess { pid }) if pid == missing
    ));
}

#[test]
fn process_options_turn_off_perf_maps_and_map_files() {
    let dir = tempdir();
    let bin = build(dir.path(), "gcc", "c", C_SOURCE, "options", &["-O2", "-g"]);
    let stopped = Stopped::spawn(&bin);
    let pid = stopped.pid();
    let bias = load_bias(pid, &bin);
    let main = function_addrs(&bin)[0] + bias;

    // perf_map = false: the perf map is there but not read.
    let map_path = PathBuf::from(format!("/tmp/perf-{pid}.map"));
    std::fs::write(&map_path, format!("{:x} 40 jitted::hot\n", stopped.jit)).unwrap();
    let mut no_perf_map = Process::new(pid);
    no_perf_map.perf_map = false;
    let without = Symbolizer::default()
        .symbolize(&Source::Process(no_perf_map), &[stopped.jit + 4, main])
        .unwrap();
    let with = Symbolizer::default()
        .symbolize(&Source::process(pid), &[stopped.jit + 4])
        .unwrap();
    std::fs::remove_file(&map_path).unwrap();
    assert!(
        matches!(&without[0], Symbolized::Unknown(u)
            if u.reason == Reason::NoPerfMap && u.origin == Some(Origin::Anonymous)),
        "{:?}",
        without[0]
    );
    assert!(matches!(&without[1], Symbolized::Sym(s) if s.origin == Origin::File));
    assert!(
        matches!(&with[0], Symbolized::Sym(s) if &*s.name == "jitted::hot" && s.origin == Origin::PerfMap),
        "{:?}",
        with[0]
    );

    // map_files = false: files are opened by path, so a deleted binary is
    // gone, while map_files still reaches it.
    let mut by_path = Process::new(pid);
    by_path.map_files = false;
    let present = Symbolizer::default()
        .symbolize(&Source::Process(by_path.clone()), &[main])
        .unwrap();
    assert!(matches!(&present[0], Symbolized::Sym(s) if s.origin == Origin::File));
    std::fs::remove_file(&bin).unwrap();
    let deleted_by_path = Symbolizer::default()
        .symbolize(&Source::Process(by_path), &[main])
        .unwrap();
    assert!(
        matches!(&deleted_by_path[0], Symbolized::Unknown(u)
            if u.reason == Reason::FileGone && u.origin == Some(Origin::File)),
        "{:?}",
        deleted_by_path[0]
    );
    if is_root() {
        let deleted_by_map_files = Symbolizer::default()
            .symbolize(&Source::process(pid), &[main])
            .unwrap();
        assert!(
            matches!(&deleted_by_map_files[0], Symbolized::Sym(s) if s.origin == Origin::File),
            "{:?}",
            deleted_by_map_files[0]
        );
    } else {
        println!("skipped the map_files half: opening /proc/PID/map_files needs CAP_SYS_ADMIN");
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}
