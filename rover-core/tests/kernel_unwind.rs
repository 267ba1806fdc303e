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
static int sleeping;
__attribute__((noinline)) void work_here(int x) {
  if (sleeping) {
    struct timespec ts = {0, 2000000};
    for (;;) nanosleep(&ts, 0);
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
  sleeping = argc > 1 && strcmp(argv[1], "sleep") == 0;
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

fn start(path: &Path, arg: &str) -> Running {
    let mut child = Running(
        Command::new(path)
            .arg(arg)
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
    let source = dir.join("deep.c");
    std::fs::write(&source, DEEP).unwrap();
    let out = dir.join("deep");
    let status = Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .expect("gcc is needed to build the fixture");
    assert!(status.success());
    out
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
    let mut program = OnCpuProgram::attach(&OnCpuConfig {
        targets: Targets::Pids(vec![pid]),
        frequency_hz: 199,
        stack_mode: StackMode::Dwarf,
        ..OnCpuConfig::default()
    })
    .unwrap();
    tables_loaded(program.unwinder());
    program.drain().unwrap();
    let mut stacks = Vec::new();
    while stacks
        .iter()
        .map(|s: &(Vec<String>, UserWalk, u64)| s.2)
        .sum::<u64>()
        < 100
    {
        std::thread::sleep(Duration::from_millis(500));
        stacks.extend(named_stacks(&program.drain().unwrap(), pid));
    }
    let share = share_complete(&stacks, &expected(&["work_here"]));
    println!("rover-unwind-share: kernel on-CPU {:.1}%", share * 100.0);
    assert!(share >= 0.95, "{share}");
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
