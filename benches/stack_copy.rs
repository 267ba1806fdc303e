//! The alternative to rover's in-kernel unwinder, measured: copy each
//! sample's user stack to user space and unwind it there with `framehop`
//! (as samply does; `perf record --call-graph dwarf` copies the same way).
//! Issue 9 asks whether that beats the in-kernel walk for on-CPU sampling.
//! `benches/stack_copy.sh` runs this beside rover's own session runner on
//! the same fixture.
//!
//! ```text
//! stack_copy --pid PID [--frequency HZ] [--duration SECS] [--warmup SECS]
//!            [--main-symbol NAME] [--stop-before copy|lookup]
//! ```
//!
//! It builds `benches/bpf/stack_copy.bpf.c` with clang-19 (`CLANG`
//! overrides), attaches it to `cpu-clock` on every CPU at `--frequency`
//! (default 99) for process PID only, and hands framehop the process's
//! executable mappings as modules (each file's `.eh_frame`,
//! `.eh_frame_hdr`, `.debug_frame`, `.text` and `.got`; the vDSO from
//! /proc/PID/mem). From `--warmup` seconds (default 2) to `--duration`
//! (default 20) it drains the ring buffer every 10 ms (the program wakes
//! no reader), unwinds each stack where it lies in the ring, and prints,
//! as `key=value` lines:
//! - `copy`: samples received and lost, mean bytes of stack copied, the
//!   program's run time per sample (`kernel.bpf_stats_enabled`, from this
//!   process's program fd), and the MB/s that crossed the ring buffer;
//! - `user`: this process's CPU (every thread) as % of one core and per
//!   sample, and framehop's share of it per sample (time in the unwinding
//!   loop alone), frames per stack, stacks framehop ended at their root,
//!   and stacks that reach `--main-symbol` (default `main`) of the
//!   process's executable.
//!
//! `--stop-before` takes the program's cost apart: `copy` leaves out the
//! stack copy (the stack's mapping is still looked up), `lookup` leaves out
//! the lookup too (the kernel stack and the ring buffer remain); no stack
//! is unwound then.
//!
//! The program copies 16 KiB, or up to the end of the stack's mapping
//! where that is nearer (a BPF read that crosses it fails whole; perf's
//! copy stops there instead). The main thread's end is given to it from
//! /proc/PID/maps; other threads' are looked up with `bpf_find_vma`.
//!
//! Errors are messages and exit status 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use aya::EbpfLoader;
use aya::maps::{Array, HashMap, RingBuf};
use aya::programs::PerfEvent;
use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Module, Unwinder};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

#[path = "self_cost.rs"]
mod self_cost;
use self_cost::{process_cpu, prog_stats};

/// The record's layout (benches/bpf/stack_copy.bpf.c's `struct sample`).
const HEADER: usize = 40;
const STACK_BYTES: usize = 16384;
/// rover's frame limit, the same for both.
const MAX_FRAMES: usize = 127;

struct Args {
    pid: u32,
    frequency: u64,
    duration: Duration,
    warmup: Duration,
    main_symbol: String,
    stop_before: u32,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        pid: 0,
        frequency: 99,
        duration: Duration::from_secs(20),
        warmup: Duration::from_secs(2),
        main_symbol: "main".to_owned(),
        stop_before: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let secs = |v: String| -> Result<Duration, String> {
            let s: f64 = v.parse().map_err(|e| format!("{flag}: {e}"))?;
            if !(0.0..=86_400.0).contains(&s) {
                return Err(format!("{flag} must be in [0, 86400], not {s}"));
            }
            Ok(Duration::from_secs_f64(s))
        };
        match flag.as_str() {
            "--pid" => args.pid = value()?.parse().map_err(|e| format!("--pid: {e}"))?,
            "--frequency" => {
                args.frequency = value()?.parse().map_err(|e| format!("--frequency: {e}"))?
            }
            "--duration" => args.duration = secs(value()?)?,
            "--warmup" => args.warmup = secs(value()?)?,
            "--main-symbol" => args.main_symbol = value()?,
            "--stop-before" => {
                args.stop_before = match value()?.as_str() {
                    "copy" => 1,
                    "lookup" => 2,
                    other => return Err(format!("--stop-before copy|lookup, not {other}")),
                }
            }
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.pid == 0 {
        return Err("--pid PID is needed".to_owned());
    }
    if args.warmup >= args.duration {
        return Err("--warmup must be shorter than --duration".to_owned());
    }
    Ok(args)
}

/// Builds the program into `dir`.
fn build_program(dir: &Path) -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join("stack_copy.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang-19".to_owned());
    let status = Command::new(&clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror", "-I"])
        .arg(root.join("../rover-ebpf/bpf"))
        .arg("-c")
        .arg(root.join("bpf/stack_copy.bpf.c"))
        .arg("-o")
        .arg(&out)
        .status()
        .map_err(|e| format!("{clang}: {e}"))?;
    if !status.success() {
        return Err(format!("{clang} failed to build bpf/stack_copy.bpf.c"));
    }
    Ok(out)
}

/// One executable mapping of the process.
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: String,
}

fn executable_mappings(pid: u32) -> Result<Vec<Mapping>, String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("/proc/{pid}/maps: {e}"))?;
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms), Some(offset)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = fields.nth(2).unwrap_or("").to_owned();
        if !perms.contains('x') || !(path.starts_with('/') || path == "[vdso]") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|e| format!("{line}: {e}"));
        out.push(Mapping {
            start: hex(start)?,
            end: hex(end)?,
            offset: hex(offset)?,
            path,
        });
    }
    Ok(out)
}

/// The file behind a mapping (through map_files, which still opens a
/// deleted one), or the vDSO's bytes from the process's memory.
fn mapping_bytes(pid: u32, mapping: &Mapping) -> Result<Vec<u8>, String> {
    if mapping.path == "[vdso]" {
        use std::io::{Read, Seek, SeekFrom};
        let mut mem = std::fs::File::open(format!("/proc/{pid}/mem"))
            .map_err(|e| format!("/proc/{pid}/mem: {e}"))?;
        mem.seek(SeekFrom::Start(mapping.start))
            .map_err(|e| format!("vdso: {e}"))?;
        let mut bytes = vec![0; (mapping.end - mapping.start) as usize];
        mem.read_exact(&mut bytes)
            .map_err(|e| format!("vdso: {e}"))?;
        return Ok(bytes);
    }
    let through = format!(
        "/proc/{pid}/map_files/{:x}-{:x}",
        mapping.start, mapping.end
    );
    std::fs::read(&through)
        .or_else(|_| std::fs::read(&mapping.path))
        .map_err(|e| format!("{}: {e}", mapping.path))
}

/// The end of the process's main stack ([stack] in its maps).
fn stack_end(pid: u32) -> Option<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let line = maps.lines().find(|l| l.ends_with("[stack]"))?;
    let (_, end) = line.split_whitespace().next()?.split_once('-')?;
    u64::from_str_radix(end, 16).ok()
}

/// framehop's module for a mapping, and the address the file's addresses
/// are moved by (its load bias).
fn module(pid: u32, mapping: &Mapping) -> Result<(Module<Vec<u8>>, u64), String> {
    let bytes = mapping_bytes(pid, mapping)?;
    let file = object::File::parse(&*bytes).map_err(|e| format!("{}: {e}", mapping.path))?;
    let bias = if mapping.path == "[vdso]" {
        // The vDSO image is mapped from its start.
        let first = file.segments().map(|s| s.address()).min().unwrap_or(0);
        mapping.start.wrapping_sub(first)
    } else {
        file.segments()
            .find_map(|seg| {
                let (off, size) = seg.file_range();
                (off <= mapping.offset && mapping.offset < off + size).then(|| {
                    mapping
                        .start
                        .wrapping_sub(seg.address() + (mapping.offset - off))
                })
            })
            .ok_or_else(|| {
                format!(
                    "{}: no segment holds offset {:#x}",
                    mapping.path, mapping.offset
                )
            })?
    };
    let section = |name: &str| {
        file.section_by_name(name).and_then(|s| {
            let data = s.uncompressed_data().ok()?.into_owned();
            Some((s.address()..s.address() + s.size(), data))
        })
    };
    let (text_svma, text) = section(".text").unzip();
    let (eh_frame_svma, eh_frame) = section(".eh_frame").unzip();
    let (eh_frame_hdr_svma, eh_frame_hdr) = section(".eh_frame_hdr").unzip();
    let (got_svma, _) = section(".got").unzip();
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma,
        text,
        got_svma,
        eh_frame_svma,
        eh_frame,
        eh_frame_hdr_svma,
        eh_frame_hdr,
        debug_frame: section(".debug_frame").map(|(_, data)| data),
        ..Default::default()
    };
    let module = Module::new(mapping.path.clone(), mapping.start..mapping.end, bias, info);
    Ok((module, bias))
}

/// The range `symbol` covers in the process, from its executable.
fn symbol_range(pid: u32, mappings: &[Mapping], symbol: &str) -> Result<(u64, u64), String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map_err(|e| format!("/proc/{pid}/exe: {e}"))?;
    let exe = exe.to_string_lossy();
    let mapping = mappings
        .iter()
        .find(|m| m.path == exe)
        .ok_or_else(|| format!("{exe} is not mapped executable"))?;
    let bytes = mapping_bytes(pid, mapping)?;
    let file = object::File::parse(&*bytes).map_err(|e| format!("{exe}: {e}"))?;
    let (_, bias) = module(pid, mapping)?;
    file.symbols()
        .find(|s| s.name() == Ok(symbol))
        .map(|s| {
            let start = s.address().wrapping_add(bias);
            (start, start + s.size().max(1))
        })
        .ok_or_else(|| format!("{exe} has no symbol {symbol}"))
}

/// Where the steady state began.
struct Start {
    at: Instant,
    cpu: f64,
    progs: BTreeMap<u32, (u64, u64)>,
    lost: u64,
}

/// What the samples came to.
#[derive(Default)]
struct Tally {
    samples: u64,
    bytes: u64,
    no_regs: u64,
    frames: u64,
    root: u64,
    reached_main: u64,
    unwind: Duration,
}

fn run(args: &Args) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("rover-stack-copy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let object = build_program(&dir)
        .and_then(|path| std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display())));
    let _ = std::fs::remove_dir_all(&dir);
    let object = object?;

    let started = Instant::now();
    let mappings = executable_mappings(args.pid)?;
    let mut unwinder: UnwinderX86_64<Vec<u8>> = UnwinderX86_64::new();
    for mapping in &mappings {
        match module(args.pid, mapping) {
            Ok((module, _)) => unwinder.add_module(module),
            Err(e) => eprintln!("stack_copy: left out {}: {e}", mapping.path),
        }
    }
    let main = symbol_range(args.pid, &mappings, &args.main_symbol)?;
    let modules_s = started.elapsed().as_secs_f64();

    let mut ebpf = EbpfLoader::new()
        .override_global("target_tgid", &args.pid, true)
        .override_global("stop_before", &args.stop_before, true)
        .load(&object)
        .map_err(|e| format!("loading stack_copy.bpf.o: {e}"))?;
    let program: &mut PerfEvent = ebpf
        .program_mut("stack_copy")
        .ok_or("no program stack_copy")?
        .try_into()
        .map_err(|e| format!("stack_copy: {e}"))?;
    program.load().map_err(|e| format!("loading: {e}"))?;
    let cpus = aya::util::online_cpus().map_err(|(what, e)| format!("{what}: {e}"))?;
    for cpu in cpus {
        program
            .attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Frequency(args.frequency),
                false,
            )
            .map_err(|e| format!("attaching on CPU {cpu}: {e}"))?;
    }
    // The main thread's stack ends where its [stack] mapping does; the
    // program looks others up (bpf_find_vma, much dearer).
    let mut ends: HashMap<_, u32, u64> =
        HashMap::try_from(ebpf.map_mut("stack_ends").ok_or("no map stack_ends")?)
            .map_err(|e| format!("stack_ends: {e}"))?;
    let main_stack_end = stack_end(args.pid);
    if let Some(end) = main_stack_end {
        ends.insert(args.pid, end, 0)
            .map_err(|e| format!("stack_ends: {e}"))?;
    }
    let lost: Array<_, u64> = Array::try_from(ebpf.take_map("lost").ok_or("no map lost")?)
        .map_err(|e| format!("lost: {e}"))?;
    let mut ring = RingBuf::try_from(ebpf.take_map("samples").ok_or("no map samples")?)
        .map_err(|e| format!("samples: {e}"))?;
    println!(
        "startup: modules_s={modules_s:.3} attached_s={:.3} main_stack_end={:#x}",
        started.elapsed().as_secs_f64(),
        main_stack_end.unwrap_or(0)
    );

    let mut cache = CacheX86_64::<_>::new();
    let mut frames = Vec::with_capacity(MAX_FRAMES);
    let mut tally = Tally::default();
    let mut from: Option<Start> = None;
    let end = started + args.duration;
    let steady_at = started + args.warmup;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if from.is_none() && now >= steady_at {
            let lost_now = lost.get(&0, 0).unwrap_or(0);
            from = Some(Start {
                at: now,
                cpu: process_cpu(),
                progs: prog_stats(),
                lost: lost_now,
            });
            tally = Tally::default();
        }
        // The program wakes no one: drain every 10 ms.
        std::thread::sleep(Duration::from_millis(10));
        while let Some(item) = ring.next() {
            // Unwound in place, the best case: no copy out of the ring.
            let record: &[u8] = &item;
            let word = |at: usize| {
                record
                    .get(at..at + 8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_le_bytes)
            };
            let (ip, sp, bp) = (word(8), word(16), word(24));
            let len = record
                .get(36..40)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_le_bytes) as usize;
            let stack = record
                .get(HEADER..HEADER + len.min(STACK_BYTES))
                .unwrap_or(&[]);
            tally.samples += 1;
            tally.bytes += stack.len() as u64;
            if stack.is_empty() {
                tally.no_regs += 1;
                continue;
            }
            let began = Instant::now();
            let mut read = |addr: u64| -> Result<u64, ()> {
                let at = addr.checked_sub(sp).ok_or(())? as usize;
                let bytes = stack.get(at..at.checked_add(8).ok_or(())?).ok_or(())?;
                Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
            };
            frames.clear();
            let mut iter =
                unwinder.iter_frames(ip, UnwindRegsX86_64::new(ip, sp, bp), &mut cache, &mut read);
            let mut ended_at_root = false;
            while frames.len() < MAX_FRAMES {
                match iter.next() {
                    Ok(Some(frame)) => frames.push(frame.address_for_lookup()),
                    Ok(None) => {
                        ended_at_root = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            tally.unwind += began.elapsed();
            tally.frames += frames.len() as u64;
            tally.root += u64::from(ended_at_root);
            tally.reached_main += u64::from(frames.iter().any(|&a| main.0 <= a && a < main.1));
        }
    }
    let Some(Start {
        at: at0,
        cpu: cpu0,
        progs: progs0,
        lost: lost0,
    }) = from
    else {
        return Err("the run ended before the warm-up did".to_owned());
    };
    let secs = at0.elapsed().as_secs_f64();
    let cpu = process_cpu() - cpu0;
    let progs = prog_stats();
    let (mut bpf_ns, mut runs) = (0u64, 0u64);
    for (id, (ns, cnt)) in &progs {
        let (ns0, cnt0) = progs0.get(id).copied().unwrap_or((0, 0));
        bpf_ns += ns.saturating_sub(ns0);
        runs += cnt.saturating_sub(cnt0);
    }
    let lost = lost.get(&0, 0).unwrap_or(0).saturating_sub(lost0);
    let n = tally.samples.max(1) as f64;
    let unwound = (tally.samples - tally.no_regs).max(1) as f64;
    println!(
        "copy: seconds={secs:.3} samples={} lost={lost} runs={runs} no_regs={} bytes_per_sample={:.0} ns_per_run={:.0} ns_per_sample={:.0} bpf_pct={:.3} ring_mb_s={:.2}",
        tally.samples,
        tally.no_regs,
        tally.bytes as f64 / n,
        bpf_ns as f64 / runs.max(1) as f64,
        bpf_ns as f64 / n,
        100.0 * bpf_ns as f64 / 1e9 / secs,
        (tally.samples as f64 * (HEADER + STACK_BYTES) as f64) / secs / 1e6,
    );
    println!(
        "user: cpu_pct={:.3} total_pct={:.3} ns_per_sample={:.0} unwind_ns_per_sample={:.0} frames_per_stack={:.1} root_pct={:.1} reached_main_pct={:.1}",
        100.0 * cpu / secs,
        100.0 * (cpu + bpf_ns as f64 / 1e9) / secs,
        cpu * 1e9 / n,
        tally.unwind.as_nanos() as f64 / unwound,
        tally.frames as f64 / unwound,
        100.0 * tally.root as f64 / unwound,
        100.0 * tally.reached_main as f64 / unwound,
    );
    Ok(())
}

fn main() -> ExitCode {
    match parse().and_then(|args| run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("stack_copy: {error}");
            ExitCode::FAILURE
        }
    }
}
