//! Building unwind tables (rover-unwind) for the binaries the in-kernel
//! unwinder will need most: Debian's libc, libpython3.11 and nginx, and the
//! Rust toolchain's librustc_driver (the largest `.eh_frame` on the
//! machine). For each: the table's rows and bytes, and the time to build
//! it, beside the time `readelf --debug-dump=frames-interp` takes to
//! interpret the same call-frame information (the reference that checks
//! the tables row by row in `rover-unwind/tests/readelf.rs`), in the same
//! run.
//!
//! Run with `cargo bench -p rover-benches --bench unwind_tables`. Files
//! that are not installed are listed and left out.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rover_unwind::UnwindTable;

/// The files measured, those present.
fn subjects() -> Vec<(&'static str, PathBuf)> {
    let mut subjects = Vec::new();
    let fixed = [
        ("libc", "/lib/x86_64-linux-gnu/libc.so.6"),
        (
            "libpython3.11",
            "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0",
        ),
        ("nginx", "/usr/sbin/nginx"),
    ];
    for (name, path) in fixed {
        if Path::new(path).exists() {
            subjects.push((name, PathBuf::from(path)));
        } else {
            eprintln!("unwind_tables: {path} is not installed; left out");
        }
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let toolchains = home.join(".rustup/toolchains");
    let driver = std::fs::read_dir(&toolchains)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|toolchain| std::fs::read_dir(toolchain.path().join("lib")).ok())
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("librustc_driver-") && n.ends_with(".so"))
        });
    match driver {
        Some(path) => subjects.push(("librustc_driver", path)),
        None => eprintln!(
            "unwind_tables: no librustc_driver under {}; left out",
            toolchains.display()
        ),
    }
    subjects
}

/// The median of `runs` timings of readelf interpreting the file's CFI.
fn readelf_time(path: &Path, runs: usize) -> Option<Duration> {
    let mut times = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        Command::new("readelf")
            .arg("--debug-dump=frames-interp")
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        times.push(started.elapsed());
    }
    times.sort();
    times.get(times.len() / 2).copied()
}

fn bench(c: &mut Criterion) {
    let subjects = subjects();
    println!("| file | table rows | table bytes | rover build | readelf -wF |");
    println!("|---|---|---|---|---|");
    for (name, path) in &subjects {
        let started = Instant::now();
        let table = match UnwindTable::from_path(path) {
            Ok(table) => table,
            Err(error) => {
                eprintln!("unwind_tables: {}: {error}", path.display());
                continue;
            }
        };
        let once = started.elapsed();
        let readelf = readelf_time(path, 5).map_or_else(
            || "readelf not installed".to_owned(),
            |t| format!("{:.1} ms", t.as_secs_f64() * 1e3),
        );
        println!(
            "| {name} ({:.1} MB) | {} | {} KiB | {:.1} ms (first) | {readelf} |",
            std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / 1e6),
            table.rows().len(),
            table.size_bytes() / 1024,
            once.as_secs_f64() * 1e3,
        );
    }
    let mut group = c.benchmark_group("unwind_table_build");
    group.sample_size(10);
    for (name, path) in &subjects {
        group.bench_function(*name, |b| {
            b.iter(|| {
                UnwindTable::from_path(path)
                    .map(|t| t.rows().len())
                    .unwrap_or(0)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
