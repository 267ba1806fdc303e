//! What pushing costs a session: the same every-process on-CPU session
//! (99 Hz, 1 s windows) run without an exporter (the reference), pushing
//! every window to the official Python OTLP receiver over gRPC and over
//! HTTP, and pushing to an endpoint where nothing listens (every window
//! retried, then dropped). Each mode runs in a fresh child process of this
//! binary, side by side in one run, under the same load (`perf bench sched
//! messaging`, restarted when it ends), and reports its CPU time, its
//! largest resident memory (VmRSS sampled every 250 ms) and the exporter's
//! counts.
//!
//! `cargo bench -p rover-benches --bench push_overhead [-- --secs N]`
//! (as root; needs the venv of `testkit::otel_python` and `perf`).

use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rover_core::Profiler;
use rover_core::push::{Exporter, PushStats};
use testkit::otel::Receiver;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the kernel to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One mode, in this (child) process: prints `key=value` lines.
fn child(mode: &str, target: Option<&str>, secs: u64) -> Result<(), String> {
    let profiler = Profiler::new().map_err(|e| e.to_string())?;
    let exporter = match (mode, target) {
        ("none", _) => None,
        ("grpc" | "absent", Some(url)) => Some(Exporter::builder().otlp_grpc(url)),
        ("http", Some(url)) => Some(Exporter::builder().otlp_http(url)),
        _ => return Err(format!("unknown mode {mode}")),
    }
    .map(|b| b.build().map_err(|e| e.to_string()))
    .transpose()?;
    let start_cpu = process_cpu();
    let mut session = profiler
        .on_cpu()
        .all()
        .window(Duration::from_secs(1))
        .start()
        .map_err(|e| e.to_string())?;
    // Windows are consumed (and sent) on their own thread, as an agent
    // would; this thread samples the memory.
    let windows = session.windows();
    let consumer = std::thread::spawn(move || {
        let mut windows = windows;
        let (mut count, mut samples) = (0u64, 0u64);
        while let Some(window) = futures::executor::block_on(windows.next()) {
            count += 1;
            samples += window.stats.samples;
            if let Some(exporter) = &exporter {
                exporter.send(&window);
            }
        }
        (count, samples, exporter)
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut peak_rss = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        peak_rss = peak_rss.max(rss_kib());
    }
    let profile = session.stop_blocking().map_err(|e| e.to_string())?;
    let (count, samples, exporter) = consumer.join().map_err(|_| "the consumer panicked")?;
    let stats = exporter
        .map(|e| e.shutdown(Duration::from_secs(3)))
        .unwrap_or_else(PushStats::default);
    let cpu = process_cpu() - start_cpu;
    println!("windows={count}");
    println!("samples={samples}");
    println!(
        "profile_samples={}",
        profile.total(rover_core::profile::Metric::OnCpuSamples)
    );
    println!("cpu_ms={}", cpu.as_millis());
    println!("peak_rss_kib={}", peak_rss.max(rss_kib()));
    println!("sent={}", stats.sent);
    println!("retries={}", stats.retries);
    println!("dropped={}", stats.dropped());
    println!("peak_queued={}", stats.peak_queued);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let secs: u64 = value("--secs").and_then(|s| s.parse().ok()).unwrap_or(30);
    if let Some(mode) = value("--child") {
        return match child(&mode, value("--target").as_deref(), secs) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("push_overhead child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match parent(secs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("push_overhead: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parent(secs: u64) -> Result<(), String> {
    let python = std::env::var_os("ROVER_OTEL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/rover-venv/bin/python3".into());
    let dir = std::env::temp_dir().join(format!("rover-push-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let grpc = Receiver::start(&python, "grpc", 0, &dir.join("grpc.jsonl"), &[]);
    let http = Receiver::start(&python, "http", 0, &dir.join("http.jsonl"), &[]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut load = Load::start();
    println!(
        "{:<8} {:>8} {:>9} {:>9} {:>12} {:>6} {:>8} {:>8} {:>6}",
        "mode",
        "windows",
        "samples",
        "CPU ms",
        "peak RSS MiB",
        "sent",
        "retries",
        "dropped",
        "peak q"
    );
    for (mode, target) in [
        ("none", None),
        ("grpc", Some(format!("http://127.0.0.1:{}", grpc.port))),
        ("http", Some(format!("http://127.0.0.1:{}", http.port))),
        ("absent", Some(format!("http://127.0.0.1:{closed}"))),
    ] {
        let mut command = Command::new(&me);
        command.args(["--child", mode, "--secs", &secs.to_string()]);
        if let Some(target) = &target {
            command.args(["--target", target]);
        }
        let child = command
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| e.to_string())?;
        load.keep_going();
        if !child.status.success() {
            return Err(format!("mode {mode} failed"));
        }
        let out = String::from_utf8_lossy(&child.stdout);
        let get = |key: &str| -> u64 {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        println!(
            "{:<8} {:>8} {:>9} {:>9} {:>12.1} {:>6} {:>8} {:>8} {:>6}",
            mode,
            get("windows"),
            get("samples"),
            get("cpu_ms"),
            get("peak_rss_kib") as f64 / 1024.0,
            get("sent"),
            get("retries"),
            get("dropped"),
            get("peak_queued")
        );
    }
    drop(load);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `perf bench sched messaging` in a loop: many short stacks on every CPU.
struct Load(Option<Child>);

impl Load {
    fn start() -> Load {
        let mut load = Load(None);
        load.keep_going();
        load
    }

    fn keep_going(&mut self) {
        let running = self
            .0
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if !running {
            use std::os::unix::process::CommandExt;
            // Its own process group, so that dropping the load kills the
            // sender and receiver processes perf forks, not only perf.
            self.0 = Command::new("perf")
                .args(["bench", "sched", "messaging", "-g", "2", "-l", "100000000"])
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            if let Ok(pgid) = i32::try_from(child.id()) {
                // SAFETY: a signal to the process group this load leads.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            let _ = child.wait();
        }
    }
}
