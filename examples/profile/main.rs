//! `profile`: rover's command-line profiler and the README's first command.
//!
//! With targets (`--pid`, `--cgroup`, `--all`) it profiles them on-CPU or
//! off-CPU for `--duration` seconds and writes the requested files. With no
//! target it runs a built-in demo workload in a child process (threads
//! burning CPU in named functions, threads sleeping, waiting on a pipe and
//! syncing a file) and profiles it both ways, writing flame graphs.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures::StreamExt;
use futures::stream::select;
use rover_core::export::{
    FlameGraphOptions, FoldedOptions, Labels, OtlpEncoder, OtlpOptions, PprofOptions,
    write_flamegraph, write_folded, write_pprof_with,
};
use rover_core::profile::{FrameKind, Metric, TopOrder};
use rover_core::push::{Exporter, ExporterBuilder, PushStats};
use rover_core::{Profile, Profiler, Session, StackMode, Targets, Window};

/// Profile processes on-CPU or off-CPU with eBPF (needs root, or CAP_BPF and
/// CAP_PERFMON). With no target, profiles a built-in demo workload both ways.
#[derive(Parser, Debug)]
#[command(name = "profile", version)]
struct Args {
    /// A process to profile (repeat for several).
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// A cgroup v2 directory whose tasks to profile.
    #[arg(long, value_name = "PATH", conflicts_with = "pids")]
    cgroup: Option<PathBuf>,
    /// Profile every process on the machine.
    #[arg(long, conflicts_with_all = ["pids", "cgroup"])]
    all: bool,
    /// What to measure (default: on-cpu; the demo does both).
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// How long to profile, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    duration: f64,
    /// On-CPU samples per second per CPU.
    #[arg(long, value_name = "HZ", default_value_t = 99)]
    frequency: u64,
    /// How user stacks are walked: unwind tables from `.eh_frame` where the
    /// kernel can run the unwinder (auto), always (dwarf), or frame
    /// pointers only (frame-pointers).
    #[arg(long, value_enum, default_value_t = StackModeArg::Auto)]
    stack_mode: StackModeArg,
    /// Off-CPU: ignore blocks shorter than this many microseconds.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    min_block_us: u64,
    /// Write folded stacks here (`comm;root;...;leaf VALUE`).
    #[arg(long, value_name = "PATH")]
    folded: Option<PathBuf>,
    /// Write an SVG flame graph here.
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,
    /// Write a gzipped pprof profile here (for `go tool pprof`).
    #[arg(long, value_name = "PATH")]
    pprof: Option<PathBuf>,
    /// Write the whole run as one serialized OTLP
    /// `ExportProfilesServiceRequest` here (both modes share its dictionary).
    #[arg(long, value_name = "PATH")]
    otlp: Option<PathBuf>,
    /// The service the profiled processes belong to: OTLP `service.name`
    /// and a label on every pprof sample.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// A label for every export, OTLP and pprof alike (repeat for several).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Push each window while the run goes on to this OTLP endpoint (an
    /// OpenTelemetry Collector's: `http://localhost:4317` for gRPC,
    /// `http://localhost:4318` for HTTP, where `/v1development/profiles` is
    /// appended).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Push each window to the OTLP endpoint the standard variables name
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
    /// `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT` and their
    /// `PROFILES_` variants; default http/protobuf to localhost:4318).
    #[arg(long, conflicts_with = "otlp_endpoint")]
    otlp_from_env: bool,
    /// The protocol of `--otlp-endpoint`.
    #[arg(long, value_enum, default_value_t = OtlpProtocol::Grpc, requires = "otlp_endpoint")]
    otlp_protocol: OtlpProtocol,
    /// Push each window as pprof to this Pyroscope server's ingest
    /// (`http://localhost:4040`), as `SERVICE.cpu` / `SERVICE.off_cpu`
    /// (`--service`, default `rover`) with the labels.
    #[arg(long, value_name = "URL")]
    pyroscope: Option<String>,
    /// How many top functions to print.
    #[arg(long, value_name = "N", default_value_t = 10)]
    top: usize,
    /// Runs the demo workload itself (the child process of the demo).
    #[arg(long, hide = true, value_name = "SECS")]
    demo_workload: Option<f64>,
}

/// `--label KEY=VALUE`.
fn parse_label(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("a label is KEY=VALUE, not {arg:?}")),
    }
}

impl Args {
    /// The labels every export carries.
    fn export_labels(&self) -> Labels {
        let mut labels = Labels::new();
        if let Some(service) = &self.service {
            labels.insert(rover_core::export::SERVICE_NAME, service.clone());
        }
        for (key, value) in &self.labels {
            labels.insert(key.clone(), value.clone());
        }
        labels
    }
}

/// `--otlp-protocol`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OtlpProtocol {
    /// `ProfilesService/Export` over gRPC.
    Grpc,
    /// `POST /v1development/profiles`, protobuf, gzip.
    Http,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Timer samples of running threads.
    OnCpu,
    /// Time threads spend blocked, by where they blocked.
    OffCpu,
}

/// `--stack-mode`: [`StackMode`] as a command-line value.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum StackModeArg {
    /// Tables where the kernel can run the unwinder, else frame pointers.
    Auto,
    /// Tables from `.eh_frame`; an error where the kernel cannot.
    Dwarf,
    /// Frame pointers only, as bcc and bpftrace walk stacks.
    FramePointers,
}

impl From<StackModeArg> for StackMode {
    fn from(arg: StackModeArg) -> StackMode {
        match arg {
            StackModeArg::Auto => StackMode::Auto,
            StackModeArg::Dwarf => StackMode::Dwarf,
            StackModeArg::FramePointers => StackMode::FramePointers,
        }
    }
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::OnCpu => "on-cpu",
            Mode::OffCpu => "off-cpu",
        }
    }
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let text = error.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{first} (see --help)");
            return ExitCode::from(2);
        }
    };
    if let Some(seconds) = args.demo_workload {
        demo::run(seconds);
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let presses = handle_ctrl_c()?;
    if !(args.duration > 0.0 && args.duration <= 86_400.0) {
        return Err(format!(
            "--duration must be between 0 and 86400 seconds, not {}",
            args.duration
        ));
    }
    let duration = Duration::from_secs_f64(args.duration);
    // A mistake in the push settings is an error before anything starts.
    let exporters = start_exporters(args)?;
    let profiler = Profiler::new().map_err(|e| e.to_string())?;
    for warning in profiler.warnings() {
        eprintln!("warning: {warning}");
    }
    let demo = args.pids.is_empty() && args.cgroup.is_none() && !args.all;
    let modes = match (args.mode, demo) {
        (Some(mode), _) => vec![mode],
        (None, true) => vec![Mode::OnCpu, Mode::OffCpu],
        (None, false) => vec![Mode::OnCpu],
    };

    let mut child = None;
    let pids = if demo {
        let worker = DemoChild::spawn(args.duration)?;
        eprintln!(
            "no target given: profiling rover's demo workload (pid {}) for {:.1} s",
            worker.pid(),
            args.duration
        );
        let pid = worker.pid();
        child = Some(worker);
        vec![pid]
    } else {
        args.pids.clone()
    };

    let targets = if let Some(cgroup) = &args.cgroup {
        Targets::Cgroup(cgroup.clone())
    } else if args.all {
        Targets::All
    } else {
        Targets::Pids(pids)
    };
    let mut sessions = Vec::new();
    for mode in &modes {
        let session = match mode {
            Mode::OnCpu => profiler
                .on_cpu()
                .frequency(args.frequency)
                .stack_mode(args.stack_mode.into())
                .targets(targets.clone())
                .start(),
            Mode::OffCpu => profiler
                .off_cpu()
                .min_block(Duration::from_micros(args.min_block_us))
                .stack_mode(args.stack_mode.into())
                .targets(targets.clone())
                .start(),
        }
        .map_err(|e| e.to_string())?;
        sessions.push((*mode, session));
    }
    if let Some(child) = &mut child {
        child.go()?;
    }

    let started = Instant::now();
    let progress = spawn_progress(&mut sessions, duration, exporters.clone());
    if interrupted_within(&presses, duration) {
        eprintln!(
            "\ninterrupted: stopping and writing what was collected (Ctrl-C again to quit now)"
        );
    }
    let mut profiles = Vec::new();
    for (mode, session) in sessions {
        let profile = session.stop_blocking().map_err(|e| e.to_string())?;
        profiles.push((mode, profile));
    }
    let elapsed = started.elapsed();
    let totals = progress.join().unwrap_or_default();
    eprintln!();
    // Every window is queued by now; deliver what is left, within bounds.
    let pushed: Vec<(String, PushStats)> = exporters
        .into_iter()
        .map(|(name, exporter)| {
            let stats = match Arc::try_unwrap(exporter) {
                Ok(exporter) => exporter.shutdown(PUSH_SHUTDOWN),
                Err(shared) => shared.stats(),
            };
            (name, stats)
        })
        .collect();
    drop(child);

    let mut written = Vec::new();
    for (mode, profile) in &profiles {
        print_top(*mode, profile, args.top);
        written.extend(write_outputs(args, *mode, profile, demo, modes.len() > 1)?);
    }
    if let Some(path) = &args.otlp {
        let options = OtlpOptions {
            labels: args.export_labels(),
            host_name: None,
        };
        let mut encoder = OtlpEncoder::new(&options);
        for (_, profile) in &profiles {
            encoder.add(profile);
        }
        let bytes = prost::Message::encode_to_vec(&encoder.finish());
        let mut out = create(path)?;
        out.write_all(&bytes)
            .and_then(|()| out.flush())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(std::path::absolute(path).unwrap_or_else(|_| path.clone()));
    }
    println!();
    println!(
        "summary: profiled {:.1} s in {} windows",
        elapsed.as_secs_f64(),
        totals.windows
    );
    for (mode, profile) in &profiles {
        match mode {
            Mode::OnCpu => println!(
                "  on-CPU:  {} samples, {} dropped, {} with a lost stack, {} distinct stacks, {} threads",
                profile.total(Metric::OnCpuSamples),
                totals.on_cpu.dropped,
                totals.on_cpu.lost_stacks,
                profile.stack_count(),
                profile.thread_ids().len()
            ),
            Mode::OffCpu => println!(
                "  off-CPU: {} blocks, {:.3} s off CPU, {} dropped, {} with a lost stack, {} distinct stacks",
                profile.total(Metric::OffCpuSwitches),
                profile.total(Metric::OffCpuNanos) as f64 / 1e9,
                totals.off_cpu.dropped,
                totals.off_cpu.lost_stacks,
                profile.stack_count()
            ),
        }
    }
    println!(
        "  drain + symbolize: {:.1} ms per window on average; {} addresses unresolved",
        totals.work.as_secs_f64() * 1e3 / totals.windows.max(1) as f64,
        totals.missed
    );
    for (name, stats) in &pushed {
        println!(
            "  pushed to {name}: {} of {} windows sent, {} retries, {} dropped ({} queue full, {} given up, {} at shutdown), {} refused, {} profiles rejected",
            stats.sent,
            stats.accepted,
            stats.retries,
            stats.dropped(),
            stats.dropped_queue_full,
            stats.dropped_gave_up,
            stats.dropped_at_shutdown,
            stats.failed,
            stats.rejected_profiles
        );
        if let Some(error) = &stats.last_error {
            println!("    last error: {error}");
        }
        if let Some(rejection) = &stats.last_rejection {
            println!("    last rejection: {rejection}");
        }
    }
    if written.is_empty() && pushed.is_empty() {
        println!("  no files written (use --folded, --svg, --pprof or --otlp)");
    }
    for path in written {
        println!("  wrote {}", path.display());
    }
    Ok(())
}

/// Handles Ctrl-C from the start, so that one pressed while the sessions
/// start (loading and verifying their programs takes a while) still stops
/// the run cleanly: the first press is sent on the channel, a second exits
/// at once, with the usual status of a SIGINT death.
fn handle_ctrl_c() -> Result<std::sync::mpsc::Receiver<()>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let presses = AtomicUsize::new(0);
    ctrlc::set_handler(move || {
        if presses.fetch_add(1, Ordering::SeqCst) > 0 {
            std::process::exit(130);
        }
        let _ = tx.send(());
    })
    .map_err(|e| format!("cannot handle Ctrl-C: {e}"))?;
    Ok(rx)
}

/// Waits `duration`, or less if Ctrl-C came or comes first (then returns
/// true).
fn interrupted_within(presses: &std::sync::mpsc::Receiver<()>, duration: Duration) -> bool {
    presses.recv_timeout(duration).is_ok()
}

/// Running totals of the windows, for the progress line and the summary.
#[derive(Default)]
struct Totals {
    windows: u64,
    on_cpu_samples: u64,
    off_cpu_blocks: u64,
    off_cpu_nanos: u64,
    on_cpu: Losses,
    off_cpu: Losses,
    missed: u64,
    work: Duration,
}

/// Samples dropped by the kernel side (not counted) and samples counted
/// whose stack was lost, kept apart as `WindowStats` keeps them.
#[derive(Default)]
struct Losses {
    dropped: u64,
    lost_stacks: u64,
}

impl Losses {
    fn add(&mut self, stats: &rover_core::WindowStats) {
        self.dropped += stats.dropped_samples();
        self.lost_stacks += stats.lost_stack_samples();
    }
}

/// How long the exporters get at the end to deliver what is queued.
const PUSH_SHUTDOWN: Duration = Duration::from_secs(5);

/// The exporters `--otlp-endpoint` and `--pyroscope` ask for, by a name
/// for the summary.
fn start_exporters(args: &Args) -> Result<Vec<(String, Arc<Exporter>)>, String> {
    let labels = args.export_labels();
    let mut exporters = Vec::new();
    if let Some(endpoint) = &args.otlp_endpoint {
        let builder = Exporter::builder().labels(labels.clone());
        let builder = match args.otlp_protocol {
            OtlpProtocol::Grpc => builder.otlp_grpc(endpoint.clone()),
            OtlpProtocol::Http => builder.otlp_http(endpoint),
        };
        let exporter = builder
            .shutdown_timeout(PUSH_SHUTDOWN)
            .build()
            .map_err(|e| format!("--otlp-endpoint: {e}"))?;
        let protocol = match args.otlp_protocol {
            OtlpProtocol::Grpc => "gRPC",
            OtlpProtocol::Http => "HTTP",
        };
        exporters.push((format!("OTLP/{protocol} {endpoint}"), Arc::new(exporter)));
    }
    if args.otlp_from_env {
        let exporter = ExporterBuilder::from_env()
            .and_then(|builder| {
                builder
                    .labels(labels.clone())
                    .shutdown_timeout(PUSH_SHUTDOWN)
                    .build()
            })
            .map_err(|e| format!("--otlp-from-env: {e}"))?;
        exporters.push(("OTLP (OTEL_EXPORTER_OTLP_*)".to_owned(), Arc::new(exporter)));
    }
    if let Some(url) = &args.pyroscope {
        let exporter = Exporter::builder()
            .pyroscope(url.clone())
            .labels(labels)
            .shutdown_timeout(PUSH_SHUTDOWN)
            .build()
            .map_err(|e| format!("--pyroscope: {e}"))?;
        exporters.push((format!("Pyroscope {url}"), Arc::new(exporter)));
    }
    Ok(exporters)
}

/// Follows every session's windows on a thread with `block_on`, printing a
/// progress line per window and queueing it on every exporter; returns the
/// totals when the streams end.
fn spawn_progress(
    sessions: &mut [(Mode, Session)],
    duration: Duration,
    exporters: Vec<(String, Arc<Exporter>)>,
) -> std::thread::JoinHandle<Totals> {
    let mut streams = Vec::new();
    for (mode, session) in sessions.iter_mut() {
        let mode = *mode;
        streams.push(session.windows().map(move |w| (mode, w)).boxed());
    }
    let merged = streams
        .into_iter()
        .reduce(|a, b| select(a, b).boxed())
        .unwrap_or_else(|| futures::stream::empty().boxed());
    let started = Instant::now();
    std::thread::spawn(move || {
        futures::executor::block_on(merged.fold(Totals::default(), |mut totals, (mode, w)| {
            add_window(&mut totals, mode, &w);
            for (_, exporter) in &exporters {
                exporter.send(&w);
            }
            eprint!(
                "\r[{:5.1}/{:.1} s] on-CPU {} samples | off-CPU {} blocks, {:.2} s | dropped {}   ",
                started.elapsed().as_secs_f64().min(duration.as_secs_f64()),
                duration.as_secs_f64(),
                totals.on_cpu_samples,
                totals.off_cpu_blocks,
                totals.off_cpu_nanos as f64 / 1e9,
                totals.on_cpu.dropped + totals.off_cpu.dropped,
            );
            let _ = std::io::stderr().flush();
            async move { totals }
        }))
    })
}

fn add_window(totals: &mut Totals, mode: Mode, window: &Window) {
    let stats = &window.stats;
    totals.windows += 1;
    match mode {
        Mode::OnCpu => {
            totals.on_cpu_samples += stats.samples;
            totals.on_cpu.add(stats);
        }
        Mode::OffCpu => {
            totals.off_cpu_blocks += stats.samples;
            totals.off_cpu_nanos += stats.off_cpu_nanos;
            totals.off_cpu.add(stats);
        }
    }
    totals.missed += stats.symbolization.missed();
    totals.work += stats.drain_time + stats.symbolize_time;
}

/// On-CPU: the functions where threads ran (self samples). Off-CPU: where
/// in user code threads blocked (the kernel leaf is always the scheduler).
fn print_top(mode: Mode, profile: &Profile, n: usize) {
    println!();
    match mode {
        Mode::OnCpu => {
            let total = profile.total(Metric::OnCpuSamples).max(1) as f64;
            println!("top {n} functions on CPU:");
            println!(
                "{:>8} {:>6} {:>8} {:>6}  function",
                "self", "self%", "total", "total%"
            );
            for f in profile.top_functions(Metric::OnCpuSamples, TopOrder::SelfValue, n) {
                println!(
                    "{:>8} {:>5.1}% {:>8} {:>5.1}%  {}",
                    f.self_value,
                    100.0 * f.self_value as f64 / total,
                    f.total_value,
                    100.0 * f.total_value as f64 / total,
                    f.name
                );
            }
        }
        Mode::OffCpu => {
            let total = profile.total(Metric::OffCpuNanos).max(1) as f64;
            println!(
                "top {n} places threads blocked in user code (innermost frame outside shared libraries <- its caller):"
            );
            println!("{:>10} {:>6} {:>8}  where", "ms", "%", "blocks");
            for (place, nanos, switches) in blocking_places(profile).into_iter().take(n) {
                println!(
                    "{:>10.1} {:>5.1}% {:>8}  {place}",
                    nanos as f64 / 1e6,
                    100.0 * nanos as f64 / total,
                    switches
                );
            }
        }
    }
}

/// Off-CPU time by the innermost user frame of each stack outside shared
/// libraries (a complete stack starts in libc's system call wrappers) and
/// its caller, largest first.
fn blocking_places(profile: &Profile) -> Vec<(String, u64, u64)> {
    let mut places: std::collections::HashMap<String, (u64, u64)> = Default::default();
    let in_library =
        |module: Option<&str>| module.is_some_and(|m| m.ends_with(".so") || m.contains(".so."));
    for entry in profile.entries() {
        let frames: Vec<_> = profile
            .stack(entry.stack)
            .iter()
            .filter_map(|id| profile.frame(*id))
            .filter(|f| f.kind != FrameKind::Kernel && !f.inlined)
            .collect();
        let own = frames
            .iter()
            .position(|f| !in_library(f.module))
            .unwrap_or(0);
        let mut user = frames[own..].iter();
        let place = match (user.next(), user.next()) {
            (Some(leaf), Some(caller)) => {
                format!("{} <- {}", leaf.display_name(), caller.display_name())
            }
            (Some(leaf), None) => leaf.display_name().into_owned(),
            _ => "[kernel thread]".to_owned(),
        };
        let value = places.entry(place).or_default();
        value.0 += entry.value.get(Metric::OffCpuNanos);
        value.1 += entry.value.get(Metric::OffCpuSwitches);
    }
    let mut places: Vec<_> = places.into_iter().map(|(p, (n, s))| (p, n, s)).collect();
    places.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    places
}

fn write_outputs(
    args: &Args,
    mode: Mode,
    profile: &Profile,
    demo: bool,
    several: bool,
) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    let path_for =
        |requested: &Option<PathBuf>, demo_default: Option<String>| match (requested, demo_default)
        {
            (Some(path), _) if several => Some(with_mode(path, mode)),
            (Some(path), _) => Some(path.clone()),
            (None, Some(name)) if demo => Some(PathBuf::from(name)),
            _ => None,
        };
    let title = match mode {
        Mode::OnCpu => "rover: on-CPU",
        Mode::OffCpu => "rover: off-CPU (µs)",
    };
    if let Some(path) = path_for(&args.folded, None) {
        let options = match mode {
            Mode::OnCpu => FoldedOptions::on_cpu(),
            Mode::OffCpu => FoldedOptions::off_cpu(),
        };
        write_folded(profile, &options, create(&path)?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    let svg = path_for(&args.svg, Some(format!("rover-demo-{}.svg", mode.label())));
    let recorded = match mode {
        Mode::OnCpu => profile.total(Metric::OnCpuSamples),
        Mode::OffCpu => profile.total(Metric::OffCpuNanos),
    };
    if let Some(path) = svg.as_ref().filter(|_| recorded == 0) {
        // A flame graph of nothing is no graph: say so instead of failing.
        println!(
            "  nothing recorded {}: {} not written",
            mode.label(),
            path.display()
        );
    }
    if let Some(path) = svg.filter(|_| recorded > 0) {
        let options = match mode {
            Mode::OnCpu => FlameGraphOptions::on_cpu(title),
            Mode::OffCpu => FlameGraphOptions::off_cpu(title),
        };
        write_flamegraph(profile, &options, create(&path)?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    if let Some(path) = path_for(&args.pprof, None) {
        let options = PprofOptions {
            labels: args.export_labels(),
        };
        write_pprof_with(profile, &options, create(&path)?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written
        .into_iter()
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .collect())
}

fn create(path: &Path) -> Result<BufWriter<File>, String> {
    File::create(path)
        .map(BufWriter::new)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// `out.svg` becomes `out.on-cpu.svg` when one run writes both kinds.
fn with_mode(path: &Path, mode: Mode) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{}.{}", mode.label(), ext.to_string_lossy()),
        None => format!("{stem}.{}", mode.label()),
    };
    path.with_file_name(name)
}

/// The demo workload as a child process (this same binary), so the
/// profiler's own threads stay out of the profiles.
struct DemoChild(Child);

impl DemoChild {
    fn spawn(seconds: f64) -> Result<DemoChild, String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
        let mut child = Command::new(exe)
            .arg("--demo-workload")
            .arg(seconds.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the demo workload: {e}"))?;
        let mut ready = [0u8; 1];
        let started = child
            .stdout
            .as_mut()
            .is_some_and(|out| out.read_exact(&mut ready).is_ok());
        if !started {
            return Err("the demo workload did not start".into());
        }
        Ok(DemoChild(child))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn go(&mut self) -> Result<(), String> {
        self.0
            .stdin
            .as_mut()
            .and_then(|stdin| stdin.write_all(b"g").ok())
            .ok_or_else(|| "the demo workload exited early".to_owned())
    }
}

impl Drop for DemoChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        // Killed before it could remove its scratch file.
        if let Some(path) = demo::scratch_file(self.0.id()) {
            let _ = std::fs::remove_file(path);
        }
    }
}

mod demo;
