//! `Source::Process` against live fixtures: absolute addresses of a PIE
//! (load bias) and a non-PIE binary compared with binutils, a libc symbol,
//! the vDSO read from memory, a perf-map JIT symbol, an exited process, and
//! a pid that does not exist.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use rover_symbolize::{Error, Reason, Source, Symbolized, Symbolizer};

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

fn check_live(label: &str, flags: &[&str]) {
    let dir = tempdir();
    let bin = build(dir.path(), "gcc", "c", &c_source_with(40), "live", flags);
    let stopped = Stopped::spawn(&bin);
    let bias = load_bias(stopped.pid(), &bin);
    let vaddrs = function_addrs(&bin);
    let absolute: Vec<u64> = vaddrs.iter().map(|v| v + bias).collect();
    let symbolizer = Symbolizer::default();
    let from_process = ours(&symbolizer, &Source::Process(stopped.pid()), &absolute);
    let theirs = reference(&bin, &vaddrs, true);
    let rate = compare(label, &vaddrs, &from_process, &theirs);
    assert!(
        rate >= 0.995,
        "{label}: agreement {:.2}% is below 99.5%",
        rate * 100.0
    );
    let results = symbolizer
        .symbolize(&Source::Process(stopped.pid()), &absolute)
        .unwrap();
    for (r, v) in results.iter().zip(&vaddrs) {
        if let Symbolized::Sym(sym) = r {
            assert_eq!(
                sym.module_offset, *v,
                "module offset is the file virtual address"
            );
            assert_eq!(&*sym.module, bin.to_str().unwrap());
        }
    }
}

#[test]
fn pie_process_addresses_match_addr2line() {
    check_live("live PIE process", &["-O2", "-g", "-pie", "-fPIE"]);
}

#[test]
fn non_pie_process_addresses_match_addr2line() {
    check_live(
        "live non-PIE process",
        &["-O2", "-g", "-no-pie", "-fno-pie"],
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
        .symbolize(&Source::Process(pid), &[libc_base + pause + 1])
        .unwrap();
    match &result[0] {
        Symbolized::Sym(sym) => {
            assert!(
                names_at_pause.contains(&sym.name.to_string()),
                "{} not in {names_at_pause:?}",
                sym.name
            );
            assert_eq!(sym.sym_addr, pause);
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
        .symbolize(&Source::Process(pid), &[start + gettime])
        .unwrap();
    match &result[0] {
        Symbolized::Sym(sym) => {
            assert!(
                sym.name.contains("clock_gettime"),
                "vdso symbol {} for {name}",
                sym.name
            );
            assert_eq!(&*sym.module, "[vdso]");
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
            &Source::Process(pid),
            &[stopped.jit + 0x10, stopped.jit + 0x108, stopped.jit + 0x80],
        )
        .unwrap();
    std::fs::remove_file(&map_path).unwrap();
    match &results[0] {
        Symbolized::Sym(sym) => {
            assert_eq!(&*sym.name, "jitted::hot_loop");
            assert_eq!(sym.sym_addr, stopped.jit);
            assert!(
                sym.module.ends_with(&format!("perf-{pid}.map")),
                "{}",
                sym.module
            );
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
        .symbolize(&Source::Process(pid), &absolute)
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
        .symbolize(&Source::Process(pid), &absolute)
        .unwrap();
    assert_eq!(before, after);
    assert!(matches!(after.last(), Some(Symbolized::Sym(s)) if &*s.name == "jitted::gone"));
    assert!(after.iter().all(|r| matches!(r, Symbolized::Sym(_))));
    assert_eq!(symbolizer.cached_processes(), 1);
    symbolizer.evict_process(pid);
    assert!(matches!(
        symbolizer.symbolize(&Source::Process(pid), &absolute),
        Err(Error::NoSuchProcess { pid: p }) if p == pid
    ));
}

#[test]
fn unmapped_address_and_missing_pid() {
    let symbolizer = Symbolizer::default();
    let me = std::process::id();
    let local = 0u64;
    let stack_addr = &local as *const u64 as u64;
    let results = symbolizer
        .symbolize(&Source::Process(me), &[0x10, stack_addr])
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
        symbolizer.symbolize(&Source::Process(missing), &[0x1000]),
        Err(Error::NoSuchProcess { pid }) if pid == missing
    ));
}
