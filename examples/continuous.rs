//! `continuous`: watches the processes whose command name or command line
//! matches a pattern and profiles one by itself when its CPU use crosses a
//! threshold, writing a folded file and a flame graph per profile.
//!
//! ```sh
//! cargo run --release --example continuous -- --match '^java$' --cpu-percent 80 \
//!     --period 5 --count 3 --execute 10 --silence 300 --out profiles
//! ```

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use rover_core::Profiler;
use rover_core::continuous::{Check, ContinuousProfiler, Ended, Event, Mode, Policy, Trigger};
use rover_core::export::{FlameGraphOptions, FoldedOptions, write_flamegraph, write_folded};
use rover_core::profile::{Metric, Profile, ProfileKind};

/// Watch processes and profile one by itself when its CPU use over the
/// last checks crosses a threshold (needs root, or CAP_BPF and CAP_PERFMON).
#[derive(Parser, Debug)]
#[command(name = "continuous", version, allow_negative_numbers = true)]
struct Args {
    /// Watch the processes whose command name or command line matches this
    /// regular expression (never this program itself).
    #[arg(long = "match", value_name = "REGEX")]
    pattern: String,
    /// Trigger above this CPU use over one check interval, in percent of
    /// one CPU (above 100 for several CPUs).
    #[arg(long, value_name = "PCT")]
    cpu_percent: f64,
    /// How many of the latest checks are kept per process.
    #[arg(long, value_name = "N", default_value_t = 3)]
    period: u32,
    /// How many of the kept checks must be above the threshold.
    #[arg(long, value_name = "K", default_value_t = 2)]
    count: u32,
    /// How long to profile a process that triggered, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    execute: f64,
    /// How long a profiled process is not profiled again, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    silence: f64,
    /// Seconds between two checks.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    interval: f64,
    /// What to record when a process triggers.
    #[arg(long, value_enum, default_value_t = ModeArg::OnCpu)]
    mode: ModeArg,
    /// On-CPU samples per second per CPU.
    #[arg(long, value_name = "HZ", default_value_t = 99)]
    frequency: u64,
    /// Off-CPU: ignore blocks shorter than this many microseconds.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    min_block_us: u64,
    /// How many processes may be profiled at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    max_sessions: usize,
    /// Write `PID-COMM-UNIXTIME.folded` and `.svg` here (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(long = "for", value_name = "SECS")]
    run_for: Option<f64>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ModeArg {
    /// Timer samples of running threads.
    OnCpu,
    /// Time threads spend blocked, by where they blocked.
    OffCpu,
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
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first = lines.next().unwrap_or("invalid arguments").to_owned();
            // "the following required arguments were not provided:" names
            // them on the next line.
            if first.ends_with(':')
                && let Some(next) = lines.next()
            {
                first = format!("{first} {next}");
            }
            eprintln!("{first} (see --help)");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Seconds from the command line as a duration, or why not.
fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("--{flag} must be a number of seconds from 0 up, not {value}"))
}

fn policy(args: &Args) -> Result<Policy, String> {
    let frequency = args.frequency;
    let min_block = Duration::from_micros(args.min_block_us);
    Policy::builder(Check::CpuPercent, args.cpu_percent)
        .match_regex(&args.pattern)
        .period(args.period)
        .count(args.count)
        .execute(seconds("execute", args.execute)?)
        .silence(seconds("silence", args.silence)?)
        .interval(seconds("interval", args.interval)?)
        .mode(match args.mode {
            ModeArg::OnCpu => Mode::OnCpu,
            ModeArg::OffCpu => Mode::OffCpu,
        })
        .on_cpu_options(move |session| session.frequency(frequency))
        .off_cpu_options(move |session| session.min_block(min_block))
        .build()
        .map_err(|e| e.to_string())
}

fn run(args: &Args) -> Result<(), String> {
    // Every mistake in the arguments is found before the privilege checks.
    let policy = policy(args)?;
    let run_for = args.run_for.map(|s| seconds("for", s)).transpose()?;
    let presses = handle_ctrl_c()?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let profiler = Profiler::new().map_err(|e| e.to_string())?;
    for warning in profiler.warnings() {
        eprintln!("warning: {warning}");
    }
    let continuous = ContinuousProfiler::new(&profiler)
        .policy(policy)
        .max_sessions(args.max_sessions)
        .start()
        .map_err(|e| e.to_string())?;
    eprintln!(
        "watching processes matching {:?}: above {} % of one CPU in {} of the last {} checks \
         ({} s apart), profile {} for {} s, then silent for {} s{}",
        args.pattern,
        args.cpu_percent,
        args.count,
        args.period,
        args.interval,
        match args.mode {
            ModeArg::OnCpu => "on-CPU",
            ModeArg::OffCpu => "off-CPU",
        },
        args.execute,
        args.silence,
        match run_for {
            Some(d) => format!("; stopping after {} s", d.as_secs_f64()),
            None => "; Ctrl-C stops".into(),
        }
    );
    let deadline = run_for.and_then(|d| Instant::now().checked_add(d));
    let events = continuous.events();
    let mut written = 0;
    loop {
        if presses.try_recv().is_ok() {
            eprintln!("interrupted: stopping the sessions and writing their profiles");
            break;
        }
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            break;
        }
        match events.next_blocking(left.min(Duration::from_millis(200))) {
            Ok(event) => written += report(event, &args.out),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let stats = continuous.stop_blocking();
    // The profiles of the sessions the stop ended.
    for event in events.iter_blocking() {
        written += report(event, &args.out);
    }
    println!(
        "summary: {} checks, {} triggers, {} profiles ({} files written), {} failed, {} skipped at the cap of {}",
        stats.rounds.iter().sum::<u64>(),
        stats.triggered,
        stats.profiled,
        written,
        stats.failed,
        stats.skipped,
        args.max_sessions
    );
    Ok(())
}

/// Prints one line for the event and writes a profile's files; returns
/// how many files were written.
fn report(event: Event, out: &Path) -> usize {
    match event {
        Event::Triggered(t) => {
            let values: Vec<String> = t
                .values
                .iter()
                .map(|v| v.map_or("-".into(), |v| format!("{v:.0}")))
                .collect();
            println!(
                "triggered: pid {} ({}): {} [{}] % of one CPU over threshold {} %; profiling {}",
                t.pid,
                t.comm,
                t.check,
                values.join(", "),
                t.threshold,
                match t.kind {
                    ProfileKind::OnCpu => "on-CPU",
                    ProfileKind::OffCpu => "off-CPU",
                }
            );
            0
        }
        Event::Profiled {
            trigger,
            profile,
            ran,
            ended,
        } => {
            let why = match ended {
                Ended::Completed => "",
                Ended::ProcessExited => ", cut short: the process exited",
                Ended::Stopped => ", cut short: stopping",
                _ => ", cut short",
            };
            match write_profile(&trigger, &profile, out) {
                Ok(paths) => {
                    let names: Vec<String> =
                        paths.iter().map(|p| p.display().to_string()).collect();
                    println!(
                        "profiled: pid {} ({}) for {:.1} s{why}: wrote {}",
                        trigger.pid,
                        trigger.comm,
                        ran.as_secs_f64(),
                        names.join(" and ")
                    );
                    paths.len()
                }
                Err(message) => {
                    println!("error: pid {} ({}): {message}", trigger.pid, trigger.comm);
                    0
                }
            }
        }
        Event::Failed { trigger, error } => {
            println!("failed: pid {} ({}): {error}", trigger.pid, trigger.comm);
            0
        }
        Event::Skipped { trigger, running } => {
            println!(
                "skipped: pid {} ({}): {running} sessions already running",
                trigger.pid, trigger.comm
            );
            0
        }
        other => {
            println!("event: {other:?}");
            0
        }
    }
}

/// `DIR/PID-COMM-UNIXTIME.folded` and, when something was recorded, `.svg`.
fn write_profile(trigger: &Trigger, profile: &Profile, out: &Path) -> Result<Vec<PathBuf>, String> {
    let comm: String = trigger
        .comm
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let unix = trigger
        .started_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Joined as text: a name may hold dots (`python3.12`).
    let stem = format!("{}-{comm}-{unix}", trigger.pid);
    let on_cpu = trigger.kind == ProfileKind::OnCpu;
    let (folded_options, svg_options, recorded) = if on_cpu {
        (
            FoldedOptions::on_cpu(),
            FlameGraphOptions::on_cpu(format!(
                "rover: on-CPU, pid {} ({})",
                trigger.pid, trigger.comm
            )),
            profile.total(Metric::OnCpuSamples),
        )
    } else {
        (
            FoldedOptions::off_cpu(),
            FlameGraphOptions::off_cpu(format!(
                "rover: off-CPU (µs), pid {} ({})",
                trigger.pid, trigger.comm
            )),
            profile.total(Metric::OffCpuNanos),
        )
    };
    let folded = out.join(format!("{stem}.folded"));
    write_folded(profile, &folded_options, create(&folded)?)
        .map_err(|e| format!("{}: {e}", folded.display()))?;
    let mut written = vec![folded];
    // A flame graph of nothing is no graph.
    if recorded > 0 {
        let svg = out.join(format!("{stem}.svg"));
        write_flamegraph(profile, &svg_options, create(&svg)?)
            .map_err(|e| format!("{}: {e}", svg.display()))?;
        written.push(svg);
    }
    Ok(written)
}

fn create(path: &Path) -> Result<BufWriter<File>, String> {
    File::create(path)
        .map(BufWriter::new)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// The first Ctrl-C is sent on the channel (the run stops and writes what
/// its sessions recorded); a second exits at once.
fn handle_ctrl_c() -> Result<Receiver<()>, String> {
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
