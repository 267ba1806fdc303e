//! Memory under process churn: an every-process on-CPU session runs while
//! `perf bench sched messaging` loops and short-lived workers (a C program
//! of ~200 ms, built here) start and exit, and this process reports, every
//! `--every` seconds, its resident memory and what the symbolizer holds.
//!
//! ```text
//! churn_memory [--duration SECS] [--every SECS] [--workers-per-sec N] [--untracked]
//! ```
//!
//! `--untracked` turns the profiler's process tracking off
//! (`ProfilerBuilder::track_processes(false)`), as rover was before it: the
//! comparison.
//!
//! Prints one `key=value` line per report: `t` (seconds), `rss_kib`
//! (VmRSS), `hwm_kib` (VmHWM), `cached_processes` (processes whose maps
//! the symbolizer holds), `captured_modules` (modules held for processes
//! by captures), `cached_modules`, `workers` started so far,
//! `samples` and `unknown_share` (share of user-mode samples of the
//! workers with an unknown frame, over the last period). The figures go to
//! docs/performance.md ("Process churn"). Errors are messages and exit 1.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use rover_core::Profiler;
use rover_core::profile::FrameKind;

const WORKER: &str = r#"
#include <stdlib.h>
#include <time.h>
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
__attribute__((noinline)) unsigned long churn_work(double until) {
    volatile unsigned long x = 0;
    while (cpu_now() < until) for (int i = 0; i < 20000; i++) x += i;
    return x;
}
int main(int argc, char **argv) {
    double ms = argc > 1 ? atof(argv[1]) : 200;
    return churn_work(cpu_now() + ms / 1000.0) == 1;
}
"#;

struct Args {
    duration: Duration,
    every: Duration,
    workers_per_sec: u32,
    untracked: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        duration: Duration::from_secs(600),
        every: Duration::from_secs(30),
        workers_per_sec: 5,
        untracked: false,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().ok_or(format!("{arg} needs a value"));
        let secs = |text: String| -> Result<Duration, String> {
            let secs: f64 = text.parse().map_err(|e| format!("{arg}: {e}"))?;
            if !(secs > 0.0 && secs <= 86_400.0) {
                return Err(format!("{arg} must be in (0, 86400], not {secs}"));
            }
            Ok(Duration::from_secs_f64(secs))
        };
        match arg.as_str() {
            "--duration" => args.duration = secs(value()?)?,
            "--every" => args.every = secs(value()?)?,
            "--workers-per-sec" => {
                args.workers_per_sec = value()?
                    .parse()
                    .map_err(|e| format!("--workers-per-sec: {e}"))?
            }
            "--untracked" => args.untracked = true,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn build_worker(dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let source = dir.join("churn_worker.c");
    let binary = dir.join("churn_worker");
    std::fs::write(&source, WORKER).map_err(|e| format!("writing the worker: {e}"))?;
    let status = Command::new("cc")
        .args(["-O2", "-g", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .map_err(|e| format!("cc: {e}"))?;
    if !status.success() {
        return Err("cc failed to build the worker".into());
    }
    Ok(binary)
}

fn run() -> Result<(), String> {
    let args = parse()?;
    let dir = std::env::temp_dir().join(format!("rover-churn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let worker = build_worker(&dir)?;
    let profiler = Profiler::builder()
        .track_processes(!args.untracked)
        .build()
        .map_err(|e| e.to_string())?;
    let mut session = profiler.on_cpu().all().start().map_err(|e| e.to_string())?;
    let mut windows = session.windows();
    let started = Instant::now();
    let mut messaging: Option<Child> = None;
    let mut workers: Vec<Child> = Vec::new();
    let mut worker_pids = std::collections::HashSet::new();
    let mut started_workers = 0u64;
    let mut next_report = args.every;
    let (mut samples, mut unknown) = (0u64, 0u64);
    let gap = Duration::from_secs_f64(1.0 / f64::from(args.workers_per_sec.max(1)));
    let mut next_worker = Instant::now();
    while started.elapsed() < args.duration {
        if messaging
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
        {
            // Its own process group, so the end of the run kills the
            // processes perf forks too.
            messaging = Command::new("perf")
                .args(["bench", "sched", "messaging", "-l", "2000"])
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok();
        }
        if Instant::now() >= next_worker {
            next_worker += gap;
            if let Ok(child) = Command::new(&worker).arg("200").spawn() {
                worker_pids.insert(child.id());
                workers.push(child);
                started_workers += 1;
            }
        }
        workers.retain_mut(|c| c.try_wait().ok().flatten().is_none());
        // Windows as they come, without waiting past the next worker.
        while let Some(Some(window)) = windows.next().now_or_never() {
            for entry in window.profile.entries() {
                let Some(thread) = window.profile.thread(entry.thread) else {
                    continue;
                };
                if !worker_pids.contains(&thread.pid) {
                    continue;
                }
                let frames: Vec<_> = window
                    .profile
                    .stack(entry.stack)
                    .iter()
                    .filter_map(|&f| window.profile.frame(f))
                    .collect();
                if frames.first().is_none_or(|f| f.kind == FrameKind::Kernel) {
                    continue;
                }
                samples += entry.value.samples;
                if frames.iter().any(|f| f.kind == FrameKind::Unknown) {
                    unknown += entry.value.samples;
                }
            }
        }
        if started.elapsed() >= next_report {
            next_report += args.every;
            let symbolizer = profiler.symbolizer();
            println!(
                "t={:.0} rss_kib={} hwm_kib={} cached_processes={} captured_modules={} \
                 cached_modules={} workers={} samples={} unknown_share={:.4}",
                started.elapsed().as_secs_f64(),
                status_kib("VmRSS:"),
                status_kib("VmHWM:"),
                symbolizer.cached_processes(),
                symbolizer.captured_modules(),
                symbolizer.cached_modules(),
                started_workers,
                samples,
                unknown as f64 / samples.max(1) as f64,
            );
            samples = 0;
            unknown = 0;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(mut child) = messaging {
        if let Ok(pgid) = i32::try_from(child.id()) {
            // SAFETY: a signal to the process group this run started.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = child.wait();
    }
    for mut child in workers {
        let _ = child.wait();
    }
    session.stop_blocking().map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("churn_memory: {message}");
            ExitCode::FAILURE
        }
    }
}
