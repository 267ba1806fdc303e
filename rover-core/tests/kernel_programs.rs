//! The on-CPU and off-CPU programs, for real in the kernel, on fixtures
//! compiled at test time: a spin in a known function, and a thread that
//! blocks 20 times for 50 ms in a known function.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rover_core::loader::{
    OffCpuConfig, OffCpuHook, OffCpuProgram, OnCpuConfig, OnCpuProgram, RawEntry, StackLoss,
    StackSlot, Targets,
};
use rover_core::profile::{OffCpuState, SampleValue};
use support::{Fixture, go, kernel, kernel_names};

/// An on-CPU entry's samples.
fn samples(entry: &RawEntry) -> u64 {
    match entry.value {
        SampleValue::OnCpu { samples } => samples,
        SampleValue::OffCpu { .. } => panic!("an off-CPU value from the on-CPU program: {entry:?}"),
    }
}

/// An off-CPU entry's state, switches and nanoseconds.
#[cfg(target_arch = "x86_64")]
fn off_cpu(entry: &RawEntry) -> (OffCpuState, u64, u64) {
    match entry.value {
        SampleValue::OffCpu {
            state,
            switches,
            nanos,
        } => (state, switches, nanos),
        SampleValue::OnCpu { .. } => panic!("an on-CPU value from the off-CPU program: {entry:?}"),
    }
}

const SPIN: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>

volatile unsigned long sink;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

__attribute__((noinline)) void spin_here(double seconds) {
    double end = now() + seconds;
    while (now() < end)
        for (int i = 0; i < 200000; i++)
            sink += i;
}

int main(int argc, char **argv) {
    char go;
    struct rusage usage;
    printf("ready\n");
    fflush(stdout);
    if (read(0, &go, 1) != 1)
        return 1;
    getrusage(RUSAGE_SELF, &usage);
    double before = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 +
                    usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
    spin_here(atof(argv[1]));
    getrusage(RUSAGE_SELF, &usage);
    double after = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 +
                   usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
    printf("%f\n", after - before);
    fflush(stdout);
    /* Stay mapped until the test has symbolized the samples. */
    return read(0, &go, 1) == 1 ? 0 : 1;
}
"#;

/// Drains every `period` until the child exits, then once more.
fn drain_until_exit<W>(
    child: &mut std::process::Child,
    period: Duration,
    mut drain: impl FnMut() -> W,
) -> Vec<W> {
    let mut windows = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "fixture did not finish");
        std::thread::sleep(period);
        windows.push(drain());
    }
    windows.push(drain());
    windows
}

#[test]
fn oncpu_attributes_a_spinning_function() {
    let Some(_lock) = kernel("oncpu_attributes_a_spinning_function") else {
        return;
    };
    const HZ: u64 = 499;
    let fixture = Fixture::build("spin", SPIN);
    let mut child = fixture.spawn(&["1.5"]);
    let pid = child.id();
    // Frame pointers: this counts samples across buffer flips. With the
    // unwinder, in the emulated 6.1 guest, the count fell short (525 for
    // 750), most likely perf throttling an event whose program got costly
    // under emulation (the kernel lowers perf_event_max_sample_rate when
    // sampling takes too long); the unwinder's samples are checked in
    // kernel_unwind.rs and session_unwind.rs.
    let mut program = OnCpuProgram::attach(&OnCpuConfig {
        targets: Targets::Pids(vec![pid]),
        frequency_hz: HZ,
        stack_mode: rover_core::StackMode::FramePointers,
        ..OnCpuConfig::default()
    })
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        done.send(line).unwrap();
    });
    go(&mut child);
    let mut windows = Vec::new();
    let cpu_seconds: f64 = loop {
        std::thread::sleep(Duration::from_millis(250));
        windows.push(program.drain().unwrap());
        if let Ok(line) = finished.try_recv() {
            break line.trim().parse().unwrap();
        }
        assert!(windows.len() < 120, "fixture did not finish");
    };
    windows.push(program.drain().unwrap());

    // Symbolized while the fixture is still alive, as a session does.
    let symbolizer = rover_symbolize::Symbolizer::builder().build();
    let (mut total, mut in_spin) = (0u64, 0u64);
    for window in &windows {
        let leaves: Vec<u64> = window.stacks.iter().map(|stack| stack[0]).collect();
        let names: Vec<String> = symbolizer
            .symbolize(&rover_symbolize::Source::process(pid), &leaves)
            .unwrap()
            .into_iter()
            .map(|symbolized| match symbolized {
                rover_symbolize::Symbolized::Sym(sym) => sym.name.to_string(),
                rover_symbolize::Symbolized::Unknown(unknown) => format!("{unknown:?}"),
            })
            .collect();
        for entry in &window.entries {
            assert_eq!(entry.tgid, pid, "a sample of another process: {entry:?}");
            total += samples(entry);
            if let StackSlot::Stack(index) = entry.user_stack
                && names[index] == "spin_here"
            {
                in_spin += samples(entry);
            }
        }
    }
    go(&mut child);
    assert!(child.wait().unwrap().success());
    let expected = cpu_seconds * HZ as f64;
    println!(
        "{total} samples, {in_spin} in spin_here; {cpu_seconds:.3} s of CPU -> {expected:.0} expected"
    );
    // Whether perf lowered its sample rate during the run (it does when
    // sampling takes too long), to tell that shortfall from a lost window.
    let max_rate = std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .map_or_else(|e| format!("unreadable ({e})"), |s| s.trim().to_owned());
    println!("kernel.perf_event_max_sample_rate after the run: {max_rate}");
    assert!(total > 100, "too few samples: {total}");
    assert!(
        in_spin as f64 >= 0.9 * total as f64,
        "only {in_spin} of {total} samples in spin_here"
    );
    // Nothing counted twice across the buffer flips: never more samples
    // than the CPU time allows.
    assert!(
        total as f64 <= 1.15 * expected,
        "{total} samples for {expected:.0} expected"
    );
    // Nothing lost across the flips. On the host, within 15% of the CPU
    // time. In an emulated guest the CPU time is no measure of the samples
    // taken: cpu-clock's hrtimer skips the periods it fired late for, and
    // a TCG vCPU stalls for milliseconds at times (6.12's guest took 620
    // samples for 749 expected, 83%, in a CI run). There the exact count
    // across flips is checked by the off-CPU tests, which count each of
    // their fixture's 20 blocks through the same double-buffer code
    // (loader/buffer.rs), drained every 120 ms.
    let floor = if testkit::in_guest() { 0.5 } else { 0.85 };
    assert!(
        total as f64 >= floor * expected,
        "{total} samples for {expected:.0} expected (at least {:.0})",
        floor * expected
    );
}

const BLOCK: &str = r#"
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* The syscall is made here, not in libc, so that this function is the
 * leaf of the user stack (libc is built without frame pointers). */
__attribute__((noinline)) void block_here(int times, long ms) {
    for (int i = 0; i < times; i++) {
        struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
        long ret;
        __asm__ volatile("syscall"
                         : "=a"(ret)
                         : "a"(35 /* nanosleep */), "D"(&t), "S"(0)
                         : "rcx", "r11", "memory");
    }
}

int main(int argc, char **argv) {
    char go;
    if (argc > 1) {
        /* Pinned: every wake-up then leaves that CPU's idle task. */
        cpu_set_t cpus;
        CPU_ZERO(&cpus);
        CPU_SET(atoi(argv[1]), &cpus);
        if (sched_setaffinity(0, sizeof(cpus), &cpus))
            return 2;
    }
    printf("ready\n");
    fflush(stdout);
    if (read(0, &go, 1) != 1)
        return 1;
    block_here(20, 50);
    return 0;
}
"#;

/// Runs the blocking fixture under the off-CPU program, draining every
/// 120 ms so that many 50 ms blocks span a buffer flip, and returns the
/// entries whose user leaf is in `block_here` and all entries.
#[cfg(target_arch = "x86_64")]
fn run_blocking(config: OffCpuConfig, args: &[&str]) -> (Vec<RawEntry>, Vec<RawEntry>, OffCpuHook) {
    let fixture = Fixture::build("block", BLOCK);
    let mut child = fixture.spawn(args);
    let pid = child.id();
    let block = fixture.function_range(pid, "block_here");
    let mut program = OffCpuProgram::attach(&OffCpuConfig {
        targets: Targets::Pids(vec![pid]),
        ..config
    })
    .unwrap();
    let hook = program.hook();
    go(&mut child);
    let windows = drain_until_exit(&mut child, Duration::from_millis(120), || {
        program.drain().unwrap()
    });
    let mut blocked = Vec::new();
    let mut all = Vec::new();
    let mut kernel_leaves = HashMap::new();
    for window in &windows {
        for entry in &window.entries {
            assert_eq!(entry.tgid, pid, "another process: {entry:?}");
            all.push(entry.clone());
            let StackSlot::Stack(user) = entry.user_stack else {
                continue;
            };
            // On a busy machine the fixture can also be preempted while in
            // the blocking function; those switches are keyed apart by state
            // and are not the sleeps this test times.
            let (state, switches, _) = off_cpu(entry);
            if block.contains(&window.stacks[user][0]) && state == OffCpuState::Interruptible {
                let kernel = match entry.kernel_stack {
                    StackSlot::Stack(kernel) => kernel,
                    // This kernel does not always report a switch-in (seen
                    // in a VM, after a CPU's idle task): the block
                    // is counted at the next switch-out, without the kernel
                    // stack the BTF hook takes at switch-in.
                    StackSlot::Lost(StackLoss::SwitchInUnseen)
                        if hook == OffCpuHook::BtfTracepoint =>
                    {
                        *kernel_leaves
                            .entry("(switch-in unseen)".to_owned())
                            .or_insert(0) += switches;
                        blocked.push(entry.clone());
                        continue;
                    }
                    _ => panic!("no kernel stack for the block: {entry:?}"),
                };
                let names = kernel_names(&window.stacks[kernel]);
                // The classic tracepoint unwinds in context, through
                // __schedule (after __traceiter_sched_switch when other
                // probes share the tracepoint); the BTF hook unwinds the
                // saved task at switch-in, where the kernel leaves out
                // scheduler (__sched) functions.
                let scheduler = names.iter().take(2).any(|n| n == "__schedule");
                assert!(
                    names.iter().any(|n| n.contains("nanosleep"))
                        && (hook == OffCpuHook::BtfTracepoint) != scheduler,
                    "kernel stack of the block: {names:?}"
                );
                *kernel_leaves.entry(names[0].clone()).or_insert(0) += switches;
                blocked.push(entry.clone());
            }
        }
    }
    println!("kernel leaves of the blocks: {kernel_leaves:?}");
    // Every block counted without its switch-in was counted as such too
    // (the counter also holds the fixture's other unseen switch-ins).
    let unseen: u64 = windows
        .iter()
        .flat_map(|w| &w.errors)
        .map(|e| e.switch_in_unseen)
        .sum();
    let without_kernel_stack = kernel_leaves.get("(switch-in unseen)").copied();
    println!("switch-ins unseen: {unseen}");
    assert!(
        without_kernel_stack.unwrap_or(0) <= unseen,
        "{without_kernel_stack:?} blocks without a switch-in, {unseen} counted"
    );
    (blocked, all, hook)
}

#[cfg(target_arch = "x86_64")]
fn assert_one_second_in_twenty(blocked: &[RawEntry], all: &[RawEntry]) {
    let switches: u64 = blocked.iter().map(|e| off_cpu(e).1).sum();
    let total_ns: u64 = blocked.iter().map(|e| off_cpu(e).2).sum();
    println!("block_here: {switches} switches, {total_ns} ns");
    assert_eq!(switches, 20, "all entries of the fixture: {all:#?}");
    let seconds = total_ns as f64 / 1e9;
    assert!((0.9..=1.1).contains(&seconds), "{seconds} s off CPU");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn offcpu_times_blocks_on_their_stack() {
    let Some(_lock) = kernel("offcpu_times_blocks_on_their_stack") else {
        return;
    };
    let (blocked, all, hook) = run_blocking(OffCpuConfig::default(), &[]);
    assert_eq!(hook, OffCpuHook::BtfTracepoint);
    assert_one_second_in_twenty(&blocked, &all);
}

/// Every CPU in turn, the fixture pinned to it: each wake-up from a 50 ms
/// sleep leaves that CPU's idle task. Some kernels (seen in a Firecracker VM
/// on 6.18, on CPU 1) at times do not report that switch; the blocks must
/// still all be counted, with their time.
#[cfg(target_arch = "x86_64")]
#[test]
fn offcpu_counts_blocks_pinned_to_each_cpu() {
    let Some(_lock) = kernel("offcpu_counts_blocks_pinned_to_each_cpu") else {
        return;
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for cpu in 0..cpus {
        for hook in [OffCpuHook::BtfTracepoint, OffCpuHook::Tracepoint] {
            println!("CPU {cpu}, {hook:?}:");
            let (blocked, all, _) = run_blocking(
                OffCpuConfig {
                    hook: Some(hook),
                    ..OffCpuConfig::default()
                },
                &[&cpu.to_string()],
            );
            assert_one_second_in_twenty(&blocked, &all);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn offcpu_classic_tracepoint_fallback() {
    let Some(_lock) = kernel("offcpu_classic_tracepoint_fallback") else {
        return;
    };
    if !testkit::require(
        "offcpu_classic_tracepoint_fallback",
        rover_core::loader::Environment::check()
            .unwrap()
            .features
            .has(rover_core::KernelFeature::Tracefs),
        "tracefs is not mounted (mount -t tracefs tracefs /sys/kernel/tracing)",
    ) {
        return;
    }
    let (blocked, all, hook) = run_blocking(
        OffCpuConfig {
            hook: Some(OffCpuHook::Tracepoint),
            ..OffCpuConfig::default()
        },
        &[],
    );
    assert_eq!(hook, OffCpuHook::Tracepoint);
    assert_one_second_in_twenty(&blocked, &all);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn offcpu_minimum_block_time_filters() {
    let Some(_lock) = kernel("offcpu_minimum_block_time_filters") else {
        return;
    };
    let (blocked, all, _) = run_blocking(
        OffCpuConfig {
            min_block: Duration::from_millis(100),
            ..OffCpuConfig::default()
        },
        &[],
    );
    assert!(
        blocked.is_empty(),
        "50 ms blocks passed a 100 ms minimum: {blocked:?}"
    );
    for entry in all {
        let (_, switches, nanos) = off_cpu(&entry);
        assert!(nanos >= switches * 100_000_000, "{entry:?}");
    }
}
