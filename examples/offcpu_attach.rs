//! Attaches rover's off-CPU program to every process and drains it once a
//! second, printing what each window held: the runner of
//! `benches/offcpu_overhead.sh`, and a quick check that the kernel side works.
//!
//! `cargo run --release --example offcpu_attach -- [SECONDS] [--classic] [--min-us N] [--stack-mode fp|dwarf|auto]`
//! (SECONDS defaults to 10; `--classic` uses the classic tracepoint; blocks
//! shorter than `--min-us` microseconds, default 1, are not counted; user
//! stacks are walked as `--stack-mode` says, default auto: see
//! `rover_core::StackMode`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rover_core::StackMode;
use rover_core::loader::{OffCpuConfig, OffCpuHook, OffCpuProgram};
use rover_core::profile::SampleValue;

fn main() -> ExitCode {
    let mut seconds = 10u64;
    let mut hook = None;
    let mut min_us = 1u64;
    let mut stack_mode = StackMode::Auto;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let parsed = match arg.as_str() {
            "--classic" => {
                hook = Some(OffCpuHook::Tracepoint);
                Some(())
            }
            "--min-us" => args.next().and_then(|v| v.parse().ok()).map(|v| min_us = v),
            "--stack-mode" => match args.next().as_deref() {
                Some("fp") => Some(StackMode::FramePointers),
                Some("dwarf") => Some(StackMode::Dwarf),
                Some("auto") => Some(StackMode::Auto),
                _ => None,
            }
            .map(|mode| stack_mode = mode),
            other => other.parse().ok().map(|v| seconds = v),
        };
        if parsed.is_none() {
            eprintln!(
                "offcpu_attach: usage: offcpu_attach [SECONDS] [--classic] [--min-us N] \
                 [--stack-mode fp|dwarf|auto]"
            );
            return ExitCode::FAILURE;
        }
    }
    let mut program = match OffCpuProgram::attach(&OffCpuConfig {
        hook,
        min_block: Duration::from_micros(min_us),
        stack_mode,
        ..OffCpuConfig::default()
    }) {
        Ok(program) => program,
        Err(error) => {
            eprintln!("offcpu_attach: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "offcpu_attach: attached ({:?}, {})",
        program.hook(),
        match (program.unwinder(), program.fallback()) {
            (Some(_), _) => "unwinding from tables".to_owned(),
            (None, Some(why)) => format!("frame pointers: {why}"),
            (None, None) => "frame pointers".to_owned(),
        }
    );
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1).min(end - Instant::now()));
        let started = Instant::now();
        match program.drain() {
            Ok(window) => {
                let switches: u64 = window
                    .entries
                    .iter()
                    .map(|e| match e.value {
                        SampleValue::OffCpu { switches, .. } => switches,
                        SampleValue::OnCpu { .. } => 0,
                    })
                    .sum();
                let errors = window.dropped();
                println!(
                    "window: {} keys, {switches} switches, {} stacks, {} dropped or lost ({:?}), drained in {:?}",
                    window.entries.len(),
                    window.stacks.len(),
                    errors.dropped_or_lost(),
                    errors,
                    started.elapsed()
                );
            }
            Err(error) => {
                eprintln!("offcpu_attach: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
