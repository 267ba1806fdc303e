//! A profiling session in a chosen stack mode that measures itself: the
//! runner of `benches/unwind_overhead.sh` (the profiler's own CPU and its
//! BPF programs' run time, frame pointers against tables) and of the
//! frame-pointer comparison in `benches/nginx_unwind.sh`.
//!
//! ```text
//! unwind_session [--stack-mode fp|dwarf|auto] [--mode on-cpu|off-cpu]
//!                [--all | --pid PID ...] [--duration SECS] [--frequency HZ]
//!                [--min-block-us N] [--steady-from N] [--folded PATH] [--svg PATH]
//! ```
//!
//! It starts a session as the `profile` example does (plus the stack mode),
//! consumes its windows, and prints, as `key=value` lines:
//! - `startup`: seconds from the start of `main` to the first window, and
//!   the CPU the process spent by then (table builds and the verifier's
//!   work are in it: both run in this process or in its system calls);
//! - `steady`: from window `--steady-from` (default 3) to the last window
//!   before `--duration`, the process's CPU (`getrusage`, every thread, as
//!   /proc/PID/stat's utime + stime) and its BPF programs' run time (the
//!   `run_time_ns` and `run_cnt` that `kernel.bpf_stats_enabled` makes the
//!   kernel keep, read from `/proc/self/fdinfo` of this process's program
//!   fds, so programs of other processes are never counted), each as % of
//!   one core, and the walks by outcome over those windows;
//! - `prog`: each program's share of that run time (named by `bpftool`).
//!
//! `--folded` and `--svg` write the whole profile, as the example does.
//!
//! `--tables [--rows N]` measures memory instead: it attaches the on-CPU
//! program in Dwarf mode to every process (the loader's program, whose
//! table service is visible), waits until every table is built, and prints
//! the service's counters (`tables`: tables, rows, bytes, processes, build
//! time, failures) and the kernel memory (`memlock`) of each of its own
//! unwinder maps (`map`), with `--rows` the row array's size (default
//! rover-core's 2^20).
//! Errors are messages and exit status 1; nothing is assumed of the kernel.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use rover_core::export::{FlameGraphOptions, FoldedOptions, write_flamegraph, write_folded};
use rover_core::{Profiler, StackMode, Targets, UserWalk};

#[path = "self_cost.rs"]
mod self_cost;
use self_cost::{fdinfo, fdinfo_field, process_cpu, prog_stats};

struct Args {
    stack_mode: StackMode,
    off_cpu: bool,
    targets: Targets,
    duration: Duration,
    frequency: u64,
    min_block_us: u64,
    steady_from: u64,
    folded: Option<String>,
    svg: Option<String>,
    tables: bool,
    rows: Option<u32>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        stack_mode: StackMode::Auto,
        off_cpu: false,
        targets: Targets::All,
        duration: Duration::from_secs(30),
        frequency: 99,
        min_block_us: 1000,
        steady_from: 3,
        folded: None,
        svg: None,
        tables: false,
        rows: None,
    };
    let mut pids = Vec::new();
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--stack-mode" => {
                args.stack_mode = match value()?.as_str() {
                    "fp" => StackMode::FramePointers,
                    "dwarf" => StackMode::Dwarf,
                    "auto" => StackMode::Auto,
                    other => return Err(format!("--stack-mode fp|dwarf|auto, not {other}")),
                }
            }
            "--mode" => {
                args.off_cpu = match value()?.as_str() {
                    "on-cpu" => false,
                    "off-cpu" => true,
                    other => return Err(format!("--mode on-cpu|off-cpu, not {other}")),
                }
            }
            "--all" => args.targets = Targets::All,
            "--pid" => pids.push(value()?.parse().map_err(|e| format!("--pid: {e}"))?),
            "--duration" => {
                let secs: f64 = value()?.parse().map_err(|e| format!("--duration: {e}"))?;
                if !(secs > 0.0 && secs <= 86_400.0) {
                    return Err(format!("--duration must be in (0, 86400], not {secs}"));
                }
                args.duration = Duration::from_secs_f64(secs);
            }
            "--frequency" => {
                args.frequency = value()?.parse().map_err(|e| format!("--frequency: {e}"))?
            }
            "--min-block-us" => {
                args.min_block_us = value()?
                    .parse()
                    .map_err(|e| format!("--min-block-us: {e}"))?
            }
            "--steady-from" => {
                args.steady_from = value()?
                    .parse()
                    .map_err(|e| format!("--steady-from: {e}"))?
            }
            "--folded" => args.folded = Some(value()?),
            "--svg" => args.svg = Some(value()?),
            "--tables" => args.tables = true,
            "--rows" => args.rows = Some(value()?.parse().map_err(|e| format!("--rows: {e}"))?),
            // `cargo bench` passes this to every bench binary.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !pids.is_empty() {
        args.targets = Targets::Pids(pids);
    }
    Ok(args)
}

/// A program's name, as bpftool shows it.
fn prog_name(id: u32) -> String {
    Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .skip_while(|w| *w != "name")
                .nth(1)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("id{id}"))
}

struct Snapshot {
    at: Instant,
    cpu: f64,
    progs: BTreeMap<u32, (u64, u64)>,
}

impl Snapshot {
    fn now() -> Self {
        Snapshot {
            at: Instant::now(),
            cpu: process_cpu(),
            progs: prog_stats(),
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let started = Instant::now();
    let profiler = Profiler::new().map_err(|e| e.to_string())?;
    let mut session = if args.off_cpu {
        profiler
            .off_cpu()
            .min_block(Duration::from_micros(args.min_block_us))
            .targets(args.targets.clone())
            .stack_mode(args.stack_mode)
            .start()
    } else {
        profiler
            .on_cpu()
            .frequency(args.frequency)
            .targets(args.targets.clone())
            .stack_mode(args.stack_mode)
            .start()
    }
    .map_err(|e| e.to_string())?;
    let attached = started.elapsed();
    let attached_cpu = process_cpu();
    let mut windows = futures::executor::block_on_stream(session.windows());
    let end = started + args.duration;
    let mut first = None;
    let mut steady: Option<Snapshot> = None;
    let mut last: Option<Snapshot> = None;
    let mut walks: BTreeMap<String, u64> = BTreeMap::new();
    let mut weight = 0u64;
    while Instant::now() < end {
        let Some(window) = windows.next() else {
            break;
        };
        if first.is_none() {
            first = Some((started.elapsed(), process_cpu()));
        }
        if window.stats.index + 1 >= args.steady_from {
            if steady.is_none() {
                steady = Some(Snapshot::now());
                continue;
            }
            last = Some(Snapshot::now());
            weight += if args.off_cpu {
                window.stats.off_cpu_nanos / 1000
            } else {
                window.stats.samples
            };
            for (walk, n) in &window.stats.user_walks {
                let name = match walk {
                    UserWalk::FramePointers => "frame_pointers".to_owned(),
                    UserWalk::Complete => "complete".to_owned(),
                    UserWalk::Stopped(why) => format!("stopped_{why:?}"),
                };
                *walks.entry(name).or_default() += n;
            }
        }
    }
    drop(windows);
    // Named while the programs are loaded.
    let names: BTreeMap<u32, String> = last
        .iter()
        .flat_map(|s| s.progs.keys())
        .map(|id| (*id, prog_name(*id)))
        .collect();
    let profile = session.stop_blocking().map_err(|e| e.to_string())?;

    let Some((first_after, first_cpu)) = first else {
        return Err("no window came".to_owned());
    };
    println!(
        "startup: attached_s={:.3} attached_cpu_s={attached_cpu:.3} first_window_s={:.3} cpu_s={first_cpu:.3}",
        attached.as_secs_f64(),
        first_after.as_secs_f64()
    );
    let (Some(from), Some(to)) = (steady, last) else {
        return Err("too few windows for a steady state: lengthen --duration".to_owned());
    };
    let secs = to.at.duration_since(from.at).as_secs_f64();
    let mut bpf_ns = 0u64;
    let mut runs = 0u64;
    let mut per_prog = Vec::new();
    for (id, (ns, cnt)) in &to.progs {
        let (ns0, cnt0) = from.progs.get(id).copied().unwrap_or((0, 0));
        let (ns, cnt) = (ns.saturating_sub(ns0), cnt.saturating_sub(cnt0));
        bpf_ns += ns;
        runs += cnt;
        per_prog.push((*id, ns, cnt));
    }
    let cpu = to.cpu - from.cpu;
    let unit = if args.off_cpu {
        "us_off_cpu"
    } else {
        "samples"
    };
    println!(
        "steady: seconds={secs:.3} steady_cpu_s={cpu:.4} cpu_pct={:.3} bpf_ms={:.3} bpf_pct={:.3} total_pct={:.3} runs={runs} ns_per_run={} {unit}={weight}",
        100.0 * cpu / secs,
        bpf_ns as f64 / 1e6,
        100.0 * bpf_ns as f64 / 1e9 / secs,
        100.0 * (cpu + bpf_ns as f64 / 1e9) / secs,
        bpf_ns
            .checked_div(runs)
            .map_or_else(|| "-".to_owned(), |ns| ns.to_string()),
    );
    for (id, ns, cnt) in per_prog {
        println!(
            "prog: id={id} name={} run_time_ns={ns} run_cnt={cnt}",
            names.get(&id).map_or("?", String::as_str)
        );
    }
    let walks: Vec<String> = walks.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("walks: {}", walks.join(" "));

    let title = if args.off_cpu {
        "rover: off-CPU (µs)"
    } else {
        "rover: on-CPU"
    };
    if let Some(path) = &args.folded {
        let options = if args.off_cpu {
            FoldedOptions::off_cpu()
        } else {
            FoldedOptions::on_cpu()
        };
        let file = File::create(path).map_err(|e| format!("{path}: {e}"))?;
        write_folded(&profile, &options, BufWriter::new(file))
            .map_err(|e| format!("{path}: {e}"))?;
    }
    if let Some(path) = &args.svg {
        let options = if args.off_cpu {
            FlameGraphOptions::off_cpu(title)
        } else {
            FlameGraphOptions::on_cpu(title)
        };
        let file = File::create(path).map_err(|e| format!("{path}: {e}"))?;
        write_flamegraph(&profile, &options, BufWriter::new(file))
            .map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

/// `(map_id, memlock)` of every BPF map this process holds an fd of.
fn map_memlock() -> BTreeMap<u32, u64> {
    fdinfo()
        .iter()
        .filter_map(|text| {
            let field = |name| fdinfo_field(text, name);
            Some((field("map_id:")? as u32, field("memlock:")?))
        })
        .collect()
}

/// A map's name, as bpftool shows it.
fn map_name(id: u32) -> String {
    Command::new("bpftool")
        .args(["map", "show", "id", &id.to_string()])
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .skip_while(|w| *w != "name")
                .nth(1)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("id{id}"))
}

fn tables(args: &Args) -> Result<(), String> {
    use rover_core::loader::{MapSizes, OnCpuConfig, OnCpuProgram};
    let started = Instant::now();
    let mut map_sizes = MapSizes::default();
    if let Some(rows) = args.rows {
        map_sizes.unwind_rows = rows;
    }
    let program = OnCpuProgram::attach(&OnCpuConfig {
        targets: rover_core::loader::Targets::All,
        stack_mode: StackMode::Dwarf,
        map_sizes,
        ..OnCpuConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let unwinder = program
        .unwinder()
        .ok_or("a Dwarf program without a table service")?;
    let idle = unwinder.wait_idle(Duration::from_secs(300));
    let elapsed = started.elapsed();
    let stats = unwinder.stats();
    let store = &stats.store;
    println!(
        "tables: idle={idle} after_s={:.3} tables={} rows={} bytes={} capacity_rows={} processes={} builds={} build_failures={} evictions={} build_time_s={:.3} builds_dropped={} sink_errors={}",
        elapsed.as_secs_f64(),
        store.tables,
        store.rows_used,
        store.bytes,
        store.capacity_rows,
        store.processes,
        store.builds,
        store.build_failures,
        store.evictions,
        store.build_time.as_secs_f64(),
        stats.builds_dropped,
        stats.sink_errors,
    );
    for failure in unwinder.failures() {
        println!("failure: {}: {}", failure.what, failure.reason);
    }
    let mut unwinder_total = 0;
    for (id, memlock) in map_memlock() {
        let name = map_name(id);
        if name.starts_with("unwind_") {
            unwinder_total += memlock;
        }
        println!("map: id={id} name={name} memlock={memlock}");
    }
    println!("maps: unwind_total_memlock={unwinder_total}");
    Ok(())
}

fn main() -> ExitCode {
    match parse().and_then(|args| {
        if args.tables {
            tables(&args)
        } else {
            run(args)
        }
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("unwind_session: {error}");
            ExitCode::FAILURE
        }
    }
}
