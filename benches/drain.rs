//! Benchmarks of the session's drain side (run as root):
//!
//! 1. Symbolizing a realistic window: thousands of distinct user stacks over
//!    several live processes of different binaries (this benchmark's own
//!    Rust binary, python3, perl, bash, sleep, and the shared libraries they
//!    map) plus kernel stacks, through the same code a session's drain
//!    thread runs (`WindowSymbolizer`), cold (fresh symbolizer) and warm.
//! 2. The profiler's own CPU use while an on-CPU session samples every
//!    process at 99 Hz (and then with an off-CPU session on every process
//!    as well), from `/proc/self/stat` utime + stime over the run.
//!
//! `cargo bench -p rover-benches --bench drain` (ROVER_BENCH_SECS sets the
//! length of each CPU-use run, default 20).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rover_core::loader::{RawEntry, RawWindow, StackSlot, UserWalk};
use rover_core::profile::SampleValue;
use rover_core::session::WindowSymbolizer;
use rover_core::{Profiler, WindowStats};
use rover_symbolize::Symbolizer;

const USER_STACKS: usize = 4000;
const KERNEL_STACKS: usize = 1500;
const ENTRIES: usize = 8000;
const WARM_UP: Duration = Duration::from_secs(5);

fn main() {
    if !is_root() {
        eprintln!(
            "drain bench: needs root (reads other processes' mappings and loads eBPF); skipped"
        );
        return;
    }
    symbolize_window();
    let seconds = std::env::var("ROVER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20u64);
    cpu_use(Duration::from_secs(seconds), false);
    cpu_use(Duration::from_secs(seconds), true);
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// xorshift64*: reproducible windows without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Helpers(Vec<Child>);

impl Drop for Helpers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_helpers() -> Helpers {
    let commands: [&[&str]; 4] = [
        &[
            "python3",
            "-c",
            "import time, json, decimal; time.sleep(300)",
        ],
        &["perl", "-e", "sleep 300"],
        &["bash", "-c", "read -t 300"],
        &["sleep", "300"],
    ];
    let mut children = Vec::new();
    for command in commands {
        if let Ok(child) = Command::new(command[0])
            .args(&command[1..])
            .stdin(Stdio::piped())
            .spawn()
        {
            children.push(child);
        }
    }
    // Let exec map the binaries and python import its modules.
    std::thread::sleep(Duration::from_millis(500));
    Helpers(children)
}

/// Executable file mappings of `pid` as (start, end).
fn executable_ranges(pid: u32) -> Vec<(u64, u64)> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?;
            if !perms.contains('x') || !path.starts_with('/') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            ))
        })
        .collect()
}

/// Kernel text symbols as (start, size up to the next symbol), so picked
/// addresses fall inside a function as real return addresses do.
fn kernel_text_symbols() -> Vec<(u64, u64)> {
    let Ok(text) = std::fs::read_to_string("/proc/kallsyms") else {
        return Vec::new();
    };
    let mut starts: Vec<(u64, bool)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
            let kind = fields.next()?;
            (addr != 0).then_some((addr, kind == "t" || kind == "T"))
        })
        .collect();
    starts.sort_unstable();
    starts
        .windows(2)
        .filter(|pair| pair[0].1 && pair[1].0 > pair[0].0 + 1)
        .map(|pair| (pair[0].0, pair[1].0 - pair[0].0))
        .collect()
}

fn realistic_window(pids: &[u32], rng: &mut Rng) -> RawWindow {
    let kernel = kernel_text_symbols();
    let mut stacks: Vec<Vec<u64>> = Vec::new();
    let mut kernel_ids = Vec::new();
    if !kernel.is_empty() {
        for _ in 0..KERNEL_STACKS {
            let depth = 4 + rng.below(20);
            kernel_ids.push(stacks.len());
            stacks.push(
                (0..depth)
                    .map(|_| {
                        let (start, size) = kernel[rng.below(kernel.len())];
                        start + 1 + rng.next() % (size - 1).min(256)
                    })
                    .collect(),
            );
        }
    }
    let mut user_ids: Vec<(u32, usize)> = Vec::new();
    let ranges: Vec<(u32, Vec<(u64, u64)>)> = pids
        .iter()
        .map(|pid| (*pid, executable_ranges(*pid)))
        .filter(|(_, r)| !r.is_empty())
        .collect();
    for i in 0..USER_STACKS {
        let (pid, maps) = &ranges[i % ranges.len()];
        let depth = 8 + rng.below(24);
        user_ids.push((*pid, stacks.len()));
        stacks.push(
            (0..depth)
                .map(|_| {
                    let (start, end) = maps[rng.below(maps.len())];
                    start + rng.next() % (end - start)
                })
                .collect(),
        );
    }
    let entries = (0..ENTRIES)
        .map(|i| {
            // Every user stack appears at least once; the rest repeat some.
            let (pid, user) = user_ids[if i < user_ids.len() {
                i
            } else {
                rng.below(user_ids.len())
            }];
            let kernel_stack = if !kernel_ids.is_empty() && rng.below(2) == 0 {
                StackSlot::Stack(kernel_ids[rng.below(kernel_ids.len())])
            } else {
                StackSlot::Empty
            };
            RawEntry {
                tgid: pid,
                tid: pid + (i % 4) as u32,
                comm: "bench".into(),
                user_stack: StackSlot::Stack(user),
                user_walk: UserWalk::FramePointers,
                kernel_stack,
                value: SampleValue::OnCpu {
                    samples: 1 + rng.below(5) as u64,
                },
            }
        })
        .collect();
    RawWindow {
        entries,
        stacks,
        errors: Vec::new(),
        unwinder: None,
    }
}

fn symbolize_window() {
    let helpers = spawn_helpers();
    let mut pids: Vec<u32> = helpers.0.iter().map(Child::id).collect();
    pids.push(std::process::id());
    let window = realistic_window(&pids, &mut Rng(0x5eed_1234_abcd_0001));
    let addresses: usize = window.stacks.iter().map(Vec::len).sum();
    let modules: usize = pids.iter().map(|p| executable_ranges(*p).len()).sum();
    println!(
        "drain-and-symbolize window: {} processes, {} executable mappings, {} distinct stacks \
         ({} kernel), {} addresses, {} keys",
        pids.len(),
        modules,
        window.stacks.len(),
        KERNEL_STACKS,
        addresses,
        window.entries.len()
    );
    let mut symbolizer = WindowSymbolizer::new(Arc::new(Symbolizer::default()));
    let started = Instant::now();
    let cold = symbolizer.on_cpu(&window);
    let cold_time = started.elapsed();
    let mut warm_times = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        let warm = symbolizer.on_cpu(&window);
        warm_times.push(started.elapsed());
        assert_eq!(warm.profile.len(), cold.profile.len());
    }
    warm_times.sort();
    let warm = warm_times[warm_times.len() / 2];
    let stats = &cold.stats.symbolization;
    println!(
        "  cold (fresh symbolizer): {:8.1} ms  ({:.0} ns/address)",
        cold_time.as_secs_f64() * 1e3,
        cold_time.as_nanos() as f64 / addresses as f64
    );
    println!(
        "  warm (median of 7):      {:8.1} ms  ({:.0} ns/address)",
        warm.as_secs_f64() * 1e3,
        warm.as_nanos() as f64 / addresses as f64
    );
    println!(
        "  window profile: {} rows, {} stacks, {} frames, {:.1} MB; {} of {} addresses unresolved {:?}",
        cold.profile.len(),
        cold.profile.stack_count(),
        cold.profile.frame_count(),
        cold.profile.memory_bytes() as f64 / 1e6,
        stats.missed(),
        stats.addresses,
        stats.misses
    );
    drop(helpers);
}

fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn cpu_use(duration: Duration, with_off_cpu: bool) {
    let profiler = match Profiler::new() {
        Ok(profiler) => profiler,
        Err(error) => {
            eprintln!("profiler CPU use: skipped: {error}");
            return;
        }
    };
    let before = cpu_ticks();
    let started = Instant::now();
    let mut sessions = Vec::new();
    match profiler.on_cpu().all().frequency(99).start() {
        Ok(session) => sessions.push(session),
        Err(error) => {
            eprintln!("profiler CPU use: skipped: {error}");
            return;
        }
    }
    if with_off_cpu {
        match profiler.off_cpu().all().start() {
            Ok(session) => sessions.push(session),
            Err(error) => {
                eprintln!("profiler CPU use (off-CPU): skipped: {error}");
                return;
            }
        }
    }
    let streams: Vec<_> = sessions.iter_mut().map(|s| s.windows()).collect();
    let consumer = std::thread::spawn(move || {
        futures::executor::block_on(futures::stream::select_all(streams).collect::<Vec<_>>())
    });
    // The first seconds load the symbols of every running binary; the rest
    // is the steady state a long-running session lives in.
    let warm_up = WARM_UP.min(duration / 2);
    std::thread::sleep(warm_up);
    let warm_ticks = cpu_ticks();
    let warm_started = Instant::now();
    std::thread::sleep(duration - warm_up);
    let steady_ticks = cpu_ticks() - warm_ticks;
    let steady_elapsed = warm_started.elapsed();
    let mut samples = 0;
    for session in sessions {
        if let Ok(profile) = session.stop_blocking() {
            samples += profile.len();
        }
    }
    let elapsed = started.elapsed();
    let ticks = cpu_ticks() - before;
    let windows: Vec<rover_core::Window> = consumer.join().unwrap_or_default();
    let stats: Vec<&WindowStats> = windows.iter().map(|w| &w.stats).collect();
    let work: Duration = stats.iter().map(|s| s.drain_time + s.symbolize_time).sum();
    let max_work = stats
        .iter()
        .map(|s| s.drain_time + s.symbolize_time)
        .max()
        .unwrap_or_default();
    if std::env::var_os("ROVER_BENCH_VERBOSE").is_some() {
        for s in &stats {
            eprintln!(
                "  window {:2}: {:5} keys {:5} stacks {:6} addrs drain {:6.2} ms symbolize {:6.2} ms",
                s.index,
                s.keys,
                s.distinct_stacks,
                s.symbolization.addresses,
                s.drain_time.as_secs_f64() * 1e3,
                s.symbolize_time.as_secs_f64() * 1e3
            );
        }
    }
    let keys: usize = stats.iter().map(|s| s.keys).sum();
    let events: u64 = stats.iter().map(|s| s.samples).sum();
    let cpu_seconds = ticks as f64 / 100.0;
    println!(
        "profiler CPU use, {} of every process, {:.0} s: {:.2}% of one core, \
         {:.2}% after the first {:.0} s \
         ({:.2} CPU s; {} windows, {} samples/blocks, {} keys, {} rows in the whole profiles; \
         drain+symbolize {:.1} ms per window on average, {:.1} ms at most)",
        if with_off_cpu {
            "on-CPU at 99 Hz + off-CPU"
        } else {
            "on-CPU at 99 Hz"
        },
        elapsed.as_secs_f64(),
        100.0 * cpu_seconds / elapsed.as_secs_f64(),
        100.0 * (steady_ticks as f64 / 100.0) / steady_elapsed.as_secs_f64(),
        warm_up.as_secs_f64(),
        cpu_seconds,
        stats.len(),
        events,
        keys,
        samples,
        work.as_secs_f64() * 1e3 / stats.len().max(1) as f64,
        max_work.as_secs_f64() * 1e3,
    );
}
