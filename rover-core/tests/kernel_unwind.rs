//! The in-kernel unwinder, driven through the loader, its tables loaded by
//! the table service for the target pid: a
//! fixture built with `-O2 -fomit-frame-pointer` spins (on-CPU) or sleeps
//! (off-CPU) twelve calls deep, and the programs' unwound user stacks must
//! name every level in order, down to `main` and libc's `_start`.

#[allow(dead_code, reason = "this test uses only the kernel lock")]
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rover_core::StackMode;
use rover_core::loader::{
    OffCpuConfig, OffCpuProgram, OnCpuConfig, OnCpuProgram, RawWindow, StackSlot, Targets, UserWalk,
};
use rover_ebpf::abi::UNWIND_FP_FRAME;
use rover_symbolize::{Source, Symbolized, Symbolizer};

const DEEP: &str = r#"
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
volatile unsigned long sink;
static int sleeping, ticking;
__attribute__((noinline)) void work_here(int x) {
  if (sleeping) {
    struct timespec ts = {0, 2000000};
    for (;;) nanosleep(&ts, 0);
  }
  if (ticking) {
    /* Served by the vDSO, no system call: samples land in its code. */
    struct timespec ts;
    for (;;) { clock_gettime(CLOCK_MONOTONIC, &ts); sink += ts.tv_nsec; }
  }
  for (;;) sink += x;
}
#define LEVEL(n, next) \
  __attribute__((noinline)) void level##n(int x) { \
    volatile char pad[8 * n + 24]; pad[0] = (char)x; next(x + 1); sink += pad[0]; }
LEVEL(10, work_here) LEVEL(9, level10) LEVEL(8, level9) LEVEL(7, level8)
LEVEL(6, level7) LEVEL(5, level6) LEVEL(4, level5) LEVEL(3, level4)
LEVEL(2, level3) LEVEL(1, level2)
int main(int argc, char **argv) {
  if (argc > 2 && strcmp(argv[1], "exec") == 0) {
    /* Spins a while, then becomes argv[2] (a copy of this binary). */
    printf("ready\n"); fflush(stdout);
    for (unsigned long i = 0; i < 300000000UL; i++) sink += i;
    char *args[] = {argv[2], "spin-quiet", 0};
    execv(argv[2], args);
    return 1;
  }
  if (argc > 1 && strcmp(argv[1], "spin-quiet") == 0) { level1(0); return 0; }
  sleeping = argc > 1 && strcmp(argv[1], "sleep") == 0;
  ticking = argc > 1 && strcmp(argv[1], "clock") == 0;
  printf("ready\n"); fflush(stdout); level1(0); return 0;
}
"#;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `path` with `args` (split at spaces) and waits for its `ready`.
fn start(path: &Path, args: &str) -> Running {
    let mut child = Running(
        Command::new(path)
            .args(args.split(' '))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    child
}

fn build(dir: &Path) -> std::path::PathBuf {
    build_with(dir, "deep", &[])
}

/// Waits until the table service has loaded what the targets map.
fn tables_loaded(unwinder: Option<&rover_unwind::Unwinder>) {
    let unwinder = unwinder.expect("a Dwarf program has a table service");
    assert!(
        unwinder.wait_idle(Duration::from_secs(120)),
        "tables not built"
    );
    let stats = unwinder.stats();
    eprintln!("tables: {:?}", stats.store);
    assert!(stats.store.tables >= 2, "{stats:?}");
}

/// The user stacks of `pid` in `window`, named, with their weight.
fn named_stacks(window: &RawWindow, pid: u32) -> Vec<(Vec<String>, UserWalk, u64)> {
    let symbolizer = Symbolizer::builder().build();
    let source = Source::process(pid);
    let mut out = Vec::new();
    for entry in window.entries.iter().filter(|e| e.tgid == pid) {
        let weight = match entry.value {
            rover_core::profile::SampleValue::OnCpu { samples } => samples,
            rover_core::profile::SampleValue::OffCpu { nanos, .. } => nanos,
        };
        let StackSlot::Stack(index) = entry.user_stack else {
            out.push((
                vec![format!("{:?}", entry.user_stack)],
                entry.user_walk,
                weight,
            ));
            continue;
        };
        let ips: Vec<u64> = window.stacks[index]
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                let ip = ip & !UNWIND_FP_FRAME;
                if i == 0 { ip } else { ip - 1 }
            })
            .collect();
        let names = symbolizer
            .symbolize(&source, &ips)
            .unwrap()
            .into_iter()
            .map(|s| match s {
                Symbolized::Sym(sym) => sym.name.to_string(),
                Symbolized::Unknown(_) => "?".into(),
            })
            .collect();
        out.push((names, entry.user_walk, weight));
    }
    out
}

fn expected(leaf: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = leaf.iter().map(|s| s.to_string()).collect();
    names.extend((1..=10).rev().map(|n| format!("level{n}")));
    names.push("main".into());
    names
}

/// The share of the weight whose stack is complete and holds `chain` in
/// order, then `_start` outermost.
fn share_complete(stacks: &[(Vec<String>, UserWalk, u64)], chain: &[String]) -> f64 {
    let total: u64 = stacks.iter().map(|s| s.2).sum();
    let good: u64 = stacks
        .iter()
        .filter(|(names, walk, _)| {
            *walk == UserWalk::Complete
                && names.windows(chain.len()).any(|w| w == chain)
                && names.last().map(String::as_str) == Some("_start")
        })
        .map(|s| s.2)
        .sum();
    for (names, walk, weight) in stacks {
        eprintln!("{weight:>10} {walk:?} {}", names.join(" <- "));
    }
    good as f64 / total.max(1) as f64
}

/// An on-CPU program in Dwarf mode on `pid`, its tables loaded and its
/// first window (from before they were) thrown away.
fn dwarf_on_cpu(pid: u32) -> OnCpuProgram {
    let attaching = std::time::Instant::now();
    let mut program = OnCpuProgram::attach(&OnCpuConfig {
        targets: Targets::Pids(vec![pid]),
        frequency_hz: 199,
        stack_mode: StackMode::Dwarf,
        ..OnCpuConfig::default()
    })
    .unwrap();
    println!("rover-unwind-attach: on-CPU in {:?}", attaching.elapsed());
    tables_loaded(program.unwinder());
    program.drain().unwrap();
    program
}

/// Drains `program` every 500 ms, handing each window to `look`, until
/// `pid` has `samples` samples; returns its named stacks.
fn sample(
    program: &mut OnCpuProgram,
    pid: u32,
    samples: u64,
    mut look: impl FnMut(&RawWindow),
) -> Vec<(Vec<String>, UserWalk, u64)> {
    let mut stacks: Vec<(Vec<String>, UserWalk, u64)> = Vec::new();
    while stacks.iter().map(|s| s.2).sum::<u64>() < samples {
        std::thread::sleep(Duration::from_millis(500));
        let window = program.drain().unwrap();
        look(&window);
        stacks.extend(named_stacks(&window, pid));
    }
    stacks
}

#[test]
fn on_cpu_stacks_of_a_frame_pointerless_binary_are_unwound_to_start() {
    let test = "on_cpu_stacks_of_a_frame_pointerless_binary_are_unwound_to_start";
    let Some(_kernel) = support::kernel(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path());
    let fixture = start(&path, "spin");
    let pid = fixture.0.id();
    let mut program = dwarf_on_cpu(pid);
    let stacks = sample(&mut program, pid, 100, |_| {});
    let share = share_complete(&stacks, &expected(&["work_here"]));
    println!("rover-unwind-share: kernel on-CPU {:.1}%", share * 100.0);
    assert!(share >= 0.95, "{share}");
}

/// Samples taken in the vDSO (clock_gettime without a system call) are
/// unwound through the vDSO's own table.
#[test]
fn stacks_through_the_vdso_are_unwound_to_start() {
    let test = "stacks_through_the_vdso_are_unwound_to_start";
    let Some(_kernel) = support::kernel(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path());
    let fixture = start(&path, "clock");
    let pid = fixture.0.id();
    let mut program = dwarf_on_cpu(pid);
    // Complete walks whose leaf is in the vDSO: they went through its table.
    let mut in_vdso = 0;
    let symbolizer = Symbolizer::builder().build();
    let stacks = sample(&mut program, pid, 100, |window| {
        for entry in window.entries.iter().filter(|e| e.tgid == pid) {
            let (StackSlot::Stack(index), UserWalk::Complete) = (entry.user_stack, entry.user_walk)
            else {
                continue;
            };
            let leaf = window.stacks[index][0];
            let module = match symbolizer.symbolize(&Source::process(pid), &[leaf]) {
                Ok(results) => match results.into_iter().next() {
                    Some(Symbolized::Sym(sym)) => sym.module.name().to_owned(),
                    _ => String::new(),
                },
                Err(_) => String::new(),
            };
            if module.contains("vdso") {
                in_vdso += match entry.value {
                    rover_core::profile::SampleValue::OnCpu { samples } => samples,
                    _ => 0,
                };
            }
        }
    });
    let share = share_complete(&stacks, &expected(&["work_here"]));
    println!(
        "rover-unwind-share: kernel vDSO {:.1}%, {in_vdso} samples in the vDSO",
        share * 100.0
    );
    assert!(share >= 0.95, "{share}");
    assert!(in_vdso > 0, "no sample in the vDSO's clock_gettime");
}

/// A target that execs another executable keeps its pid: its mappings are
/// read again (its executable changed, or its addresses are in none of the
/// old mappings), and its stacks are complete again.
#[test]
fn a_process_that_execs_is_unwound_in_its_new_image() {
    let test = "a_process_that_execs_is_unwound_in_its_new_image";
    let Some(_kernel) = support::kernel(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path());
    let copy = dir.path().join("deep-copy");
    std::fs::copy(&path, &copy).unwrap();
    let fixture = start(&path, &format!("exec {}", copy.display()));
    let pid = fixture.0.id();
    let mut program = dwarf_on_cpu(pid);
    let exe_of = || std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    // Until it has exec'd, then a few windows more.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while exe_of().as_deref() != Some(copy.as_path()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the fixture did not exec"
        );
        std::thread::sleep(Duration::from_millis(100));
        program.drain().unwrap();
    }
    let mut after = Vec::new();
    let mut share = 0.0;
    while std::time::Instant::now() < deadline {
        let window = sample(&mut program, pid, 50, |_| {});
        share = share_complete(&window, &expected(&["work_here"]));
        after.push(share);
        if share >= 0.9 {
            break;
        }
    }
    println!("rover-unwind-share: after exec, by window {after:?}");
    assert!(share >= 0.9, "{after:?}");
}

#[test]
fn off_cpu_stacks_of_a_frame_pointerless_binary_are_unwound_to_start() {
    let test = "off_cpu_stacks_of_a_frame_pointerless_binary_are_unwound_to_start";
    let Some(_kernel) = support::kernel(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path());
    let fixture = start(&path, "sleep");
    let pid = fixture.0.id();
    let mut program = OffCpuProgram::attach(&OffCpuConfig {
        targets: Targets::Pids(vec![pid]),
        stack_mode: StackMode::Dwarf,
        ..OffCpuConfig::default()
    })
    .unwrap();
    tables_loaded(program.unwinder());
    std::thread::sleep(Duration::from_millis(100));
    program.drain().unwrap();
    let mut stacks = Vec::new();
    let mut switches = 0;
    while switches < 100 {
        std::thread::sleep(Duration::from_millis(500));
        let window = program.drain().unwrap();
        switches += window
            .entries
            .iter()
            .filter(|e| e.tgid == pid)
            .map(|e| match e.value {
                rover_core::profile::SampleValue::OffCpu { switches, .. } => switches,
                _ => 0,
            })
            .sum::<u64>();
        stacks.extend(named_stacks(&window, pid));
    }
    let share = share_complete(&stacks, &expected(&["work_here"]));
    println!("rover-unwind-share: kernel off-CPU {:.1}%", share * 100.0);
    assert!(share >= 0.95, "{share}");
}

/// Builds DEEP with `-O2 -fomit-frame-pointer` and `flags`.
fn build_with(dir: &Path, name: &str, flags: &[&str]) -> std::path::PathBuf {
    let source = dir.join("deep.c");
    std::fs::write(&source, DEEP).unwrap();
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer"])
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .status()
        .expect("gcc is needed to build the fixture");
    assert!(status.success());
    out
}

/// Samples `path` on-CPU in Dwarf mode for a few windows: whatever its
/// tables, the windows come, and the fixture's samples are all there with
/// their leaf.
fn sample_bad(path: &Path) -> Vec<(Vec<String>, UserWalk, u64)> {
    let fixture = start(path, "spin");
    let pid = fixture.0.id();
    let mut program = dwarf_on_cpu(pid);
    let stacks = sample(&mut program, pid, 50, |_| {});
    for (names, walk, weight) in &stacks {
        eprintln!("{weight:>6} {walk:?} {}", names.join(" <- "));
    }
    // Every sample kept its leaf, whatever happened past it.
    assert!(
        stacks
            .iter()
            .all(|(names, _, _)| names.first().is_some_and(|n| n == "work_here")),
        "{stacks:?}"
    );
    stacks
}

#[test]
fn a_binary_without_call_frame_information_is_walked_with_frame_pointers_and_marked() {
    let test = "a_binary_without_call_frame_information_is_walked_with_frame_pointers_and_marked";
    let Some(_kernel) = support::kernel(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = build_with(
        dir.path(),
        "nocfi",
        &["-fno-asynchronous-unwind-tables", "-fno-unwind-tables"],
    );
    // gcc still links the C runtime's .eh_frame pieces: remove the section.
    let status = Command::new("objcopy")
        .args([
            "--remove-section",
            ".eh_frame",
            "--remove-section",
            ".eh_frame_hdr",
        ])
        .arg(&path)
        .status()
        .expect("objcopy is needed");
    assert!(status.success());
    let stacks = sample_bad(&path);
    // No table for the binary: never a complete walk through `main`.
    let through_main = stacks
        .iter()
        .filter(|(names, walk, _)| *walk == UserWalk::Complete && names.iter().any(|n| n == "main"))
        .count();
    assert_eq!(through_main, 0, "{stacks:?}");
}

#[test]
fn a_corrupted_eh_frame_leaves_marked_stacks_and_whole_windows() {
    let test = "a_corrupted_eh_frame_leaves_marked_stacks_and_whole_windows";
    let Some(_kernel) = support::kernel(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = build_with(dir.path(), "corrupt", &[]);
    // Overwrite the middle of .eh_frame with garbage.
    let data = std::fs::read(&path).unwrap();
    let (offset, size) = {
        use object::{Object, ObjectSection};
        let file = object::File::parse(&*data).unwrap();
        let section = file.section_by_name(".eh_frame").unwrap();
        section.file_range().unwrap()
    };
    let mut data = data;
    for (i, byte) in data[(offset + size / 4) as usize..(offset + size / 2) as usize]
        .iter_mut()
        .enumerate()
    {
        *byte = (i as u8).wrapping_mul(37) ^ 0xa5;
    }
    std::fs::write(&path, &data).unwrap();
    let stacks = sample_bad(&path);
    // Damaged rules may stop a walk, never make one up: every walk that
    // says it is complete and reaches main holds the real chain.
    let chain = expected(&["work_here"]);
    for (names, walk, _) in &stacks {
        if *walk == UserWalk::Complete && names.iter().any(|n| n == "main") {
            assert!(names.windows(chain.len()).any(|w| w == chain), "{names:?}");
        }
    }
}

const CHURN: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
  printf("ready\n"); fflush(stdout);
  for (;;) {
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) return 1;
    void (*spin)(int) = (void (*)(int))dlsym(lib, "spin_a_while");
    spin(0);
    dlclose(lib);
  }
}
"#;

const CHURN_LIB: &str = r#"
volatile unsigned long sink;
__attribute__((noinline)) void inner(int x) { for (int i = 0; i < 2000000; i++) sink += x; }
__attribute__((noinline)) void spin_a_while(int x) { inner(x + 1); sink++; }
"#;

/// A library mapped and unmapped over and over while it is sampled: walks
/// that meet it before its table is loaded, after it is gone, or at an
/// address no longer mapped stop with a reason; nothing else is disturbed.
#[test]
fn mappings_that_come_and_go_mid_session_leave_the_windows_whole() {
    let test = "mappings_that_come_and_go_mid_session_leave_the_windows_whole";
    let Some(_kernel) = support::kernel(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lib_c = dir.path().join("churn_lib.c");
    let lib = dir.path().join("libchurn.so");
    std::fs::write(&lib_c, CHURN_LIB).unwrap();
    let status = Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&lib_c)
        .status()
        .unwrap();
    assert!(status.success());
    let main_c = dir.path().join("churn.c");
    let exe = dir.path().join("churn");
    std::fs::write(&main_c, CHURN).unwrap();
    let status = Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-o"])
        .arg(&exe)
        .arg(&main_c)
        .arg("-ldl")
        .status()
        .unwrap();
    assert!(status.success());
    let fixture = start(&exe, lib.to_str().unwrap());
    let pid = fixture.0.id();
    let mut program = dwarf_on_cpu(pid);
    let stacks = sample(&mut program, pid, 150, |_| {});
    let complete_through_lib: u64 = stacks
        .iter()
        .filter(|(names, walk, _)| {
            *walk == UserWalk::Complete
                && names
                    .windows(3)
                    .any(|w| w == ["inner", "spin_a_while", "main"])
        })
        .map(|s| s.2)
        .sum();
    eprintln!(
        "{} samples, {complete_through_lib} complete through the library",
        stacks.iter().map(|s| s.2).sum::<u64>()
    );
    // The library's table is loaded as it is met (requests, refreshes):
    // most walks get through it once it is.
    assert!(complete_through_lib > 0);
}
