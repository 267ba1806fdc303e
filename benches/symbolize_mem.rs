//! Cold start and peak memory of rover, blazesym and addr2line's `Loader`,
//! each measured in a fresh process of its own so that one implementation's
//! memory or caches never count for another.
//!
//! Run with `cargo bench -p rover-benches --bench symbolize_mem` (or
//! `benches/symbolize.sh`). The parent draws the address set once, writes it to a file, and runs this
//! same executable as a child (`--child IMPL LEVEL ELF ADDRS first|batch`)
//! once per measurement. A child reads the addresses, then times from nothing
//! (no symbolizer) to either the first address's result (`first`) or the
//! whole set's (`batch`), in wall time and in the process's CPU time, and
//! reports its peak resident set (`VmHWM`) before and after. "Cold" means a new process and a new symbolizer with the file in
//! the page cache; with `ROVER_BENCH_EVICT=1` the file's pages are also
//! evicted from the page cache before each child (`posix_fadvise
//! DONTNEED`), so the file is read from disk.
//!
//! For profiling, `--write-addrs DIR` writes the address sets, and
//! `--child IMPL LEVEL ELF ADDRS repeat` runs 101 passes over one with one
//! symbolizer (see `benches/README.md`).

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

use common::addrs::{AddressSet, read_addrs};
use common::cpu_time::process_cpu_now;
use common::subjects::{Implementation, Level, Subject};
use common::{SEED, address_count, binaries};

/// Fresh processes per figure: the median is reported.
const RUNS_FIRST: usize = 5;
const RUNS_BATCH: usize = 3;

/// What one child measured.
struct Measure {
    /// Wall time, seconds.
    secs: f64,
    /// CPU time of the process over the same span, seconds.
    cpu_secs: f64,
    resolved: usize,
    /// Peak resident set before the symbolizer existed, kB.
    hwm_before_kb: u64,
    /// Peak resident set at the end, kB.
    hwm_kb: u64,
    /// Anonymous (heap) resident memory at the end, symbolizer still alive, kB.
    anon_kb: u64,
}

fn status_kb(field: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let rest = l.strip_prefix(field)?.strip_prefix(':')?;
                rest.trim().trim_end_matches("kB").trim().parse().ok()
            })
        })
        .unwrap_or(0)
}

fn child(args: &[String]) -> Result<(), String> {
    let [imp, level, elf, addrs, mode] = args else {
        return Err(format!(
            "child wants IMPL LEVEL ELF ADDRS first|batch|repeat, got {args:?}"
        ));
    };
    let imp = Implementation::parse(imp).ok_or_else(|| format!("unknown implementation {imp}"))?;
    let level = Level::parse(level).ok_or_else(|| format!("unknown level {level}"))?;
    let addrs = read_addrs(Path::new(addrs)).map_err(|e| format!("{addrs}: {e}"))?;
    // `repeat` is not used by the parent: it is a steady warm load to put
    // under `perf record`, 1 + 100 passes over the set.
    let (addrs, passes) = match mode.as_str() {
        "first" => (&addrs[..1.min(addrs.len())], 1),
        "batch" => (&addrs[..], 1),
        "repeat" => (&addrs[..], 101),
        _ => return Err(format!("unknown mode {mode}")),
    };
    let hwm_before_kb = status_kb("VmHWM");
    let start = Instant::now();
    let cpu_start = process_cpu_now();
    let subject = Subject::open(imp, Path::new(elf), level)?;
    let mut resolved = 0;
    for _ in 0..passes {
        resolved = subject.run(addrs);
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_secs = (process_cpu_now() - cpu_start).as_secs_f64();
    let hwm_kb = status_kb("VmHWM");
    let anon_kb = status_kb("RssAnon");
    drop(subject);
    println!("{secs} {cpu_secs} {resolved} {hwm_before_kb} {hwm_kb} {anon_kb}");
    Ok(())
}

fn evict(path: &Path) {
    let Ok(file) = fs::File::open(path) else {
        return;
    };
    // SAFETY: a valid open descriptor; DONTNEED only drops clean cached pages.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        eprintln!("bench: posix_fadvise({}) failed: {rc}", path.display());
    }
}

fn run_child(
    imp: Implementation,
    level: Level,
    elf: &Path,
    addrs: &Path,
    mode: &str,
    evict_first: bool,
) -> Result<Measure, String> {
    if evict_first {
        evict(elf);
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args(["--child", imp.name(), level.name()])
        .arg(elf)
        .arg(addrs)
        .arg(mode)
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "child failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let f: Vec<&str> = text.split_whitespace().collect();
    let num = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or(format!("bad child output {text:?}"))
    };
    Ok(Measure {
        secs: num(0)?,
        cpu_secs: num(1)?,
        resolved: num(2)? as usize,
        hwm_before_kb: num(3)? as u64,
        hwm_kb: num(4)? as u64,
        anon_kb: num(5)? as u64,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn parent() -> Result<(), String> {
    let n = address_count();
    let evict_first = std::env::var_os("ROVER_BENCH_EVICT").is_some_and(|v| v == "1");
    let dir = std::env::temp_dir().join(format!("rover-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    println!(
        "Cold start and peak memory, each figure from fresh processes (median of {RUNS_FIRST} for \
         the first result, {RUNS_BATCH} for the whole set), {n} addresses, file {}.",
        if evict_first {
            "evicted from the page cache before each run"
        } else {
            "in the page cache"
        }
    );
    println!();
    println!(
        "| binary | level | implementation | first result, wall (ms) | first result, CPU (ms) | \
         whole set, wall (ms) | whole set, CPU (ms) | cold addr/s (CPU) | peak RSS (MB) | \
         peak RSS growth (MB) | heap at end (MB) | resolved |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for bin in binaries() {
        let set = AddressSet::draw(&bin.path, n, SEED)
            .map_err(|e| format!("{}: {e}", bin.path.display()))?;
        let addrs = dir.join(format!("{}.addrs", bin.name));
        set.write_addrs(&addrs).map_err(|e| e.to_string())?;
        for &level in bin.levels {
            for imp in Implementation::ALL {
                let mut firsts = Vec::new();
                for _ in 0..RUNS_FIRST {
                    firsts.push(run_child(
                        imp,
                        level,
                        &bin.path,
                        &addrs,
                        "first",
                        evict_first,
                    )?);
                }
                let first_resolved = firsts.iter().all(|m| m.resolved == 1);
                let mut batches = Vec::new();
                for _ in 0..RUNS_BATCH {
                    batches.push(run_child(
                        imp,
                        level,
                        &bin.path,
                        &addrs,
                        "batch",
                        evict_first,
                    )?);
                }
                let secs = median(batches.iter().map(|m| m.secs).collect());
                let cpu_secs = median(batches.iter().map(|m| m.cpu_secs).collect());
                let peak = batches.iter().map(|m| m.hwm_kb).max().unwrap_or(0);
                let growth = batches
                    .iter()
                    .map(|m| m.hwm_kb.saturating_sub(m.hwm_before_kb))
                    .max()
                    .unwrap_or(0);
                let anon = batches.iter().map(|m| m.anon_kb).max().unwrap_or(0);
                let resolved = batches.iter().map(|m| m.resolved).min().unwrap_or(0);
                println!(
                    "| {} | {} | {} | {:.1}{} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} \
                     | {}/{} |",
                    bin.name,
                    level.name(),
                    imp.name(),
                    1e3 * median(firsts.iter().map(|m| m.secs).collect()),
                    if first_resolved { "" } else { " (unresolved)" },
                    1e3 * median(firsts.iter().map(|m| m.cpu_secs).collect()),
                    1e3 * secs,
                    1e3 * cpu_secs,
                    set.addrs.len() as f64 / cpu_secs,
                    peak as f64 / 1024.0,
                    growth as f64 / 1024.0,
                    anon as f64 / 1024.0,
                    resolved,
                    set.addrs.len()
                );
            }
        }
    }
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

/// Writes each binary's address set to `DIR/<binary>.addrs`, for running a
/// child by hand (under `perf record`, say).
fn write_addrs(dir: Option<&Path>) -> Result<(), String> {
    let dir = dir.ok_or("--write-addrs wants a directory")?;
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for bin in binaries() {
        let set = AddressSet::draw(&bin.path, address_count(), SEED)
            .map_err(|e| format!("{}: {e}", bin.path.display()))?;
        let out = dir.join(format!("{}.addrs", bin.name));
        set.write_addrs(&out)
            .map_err(|e| format!("{}: {e}", out.display()))?;
        println!("{} {}", out.display(), bin.path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .position(|a| a == "--child" || a == "--write-addrs")
    {
        Some(i) if args[i] == "--child" => child(&args[i + 1..]),
        Some(i) => write_addrs(args.get(i + 1).map(Path::new)),
        // cargo bench passes `--bench` and any filter: nothing to pick here.
        None => parent(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("symbolize_mem: {e}");
            ExitCode::FAILURE
        }
    }
}
