//! Shared by the symbolization benches (`symbolize`, warm throughput under
//! criterion, and `symbolize_mem`, cold start and memory in fresh processes):
//! the binaries, the address set, the implementations and the agreement check.
// Each bench target compiles this module and uses most, not all, of it.
#![allow(dead_code)]

pub mod addrs;
pub mod agree;
pub mod cpu_time;
pub mod subjects;

use std::path::PathBuf;
use std::process::Command;

/// A real binary on this machine to measure on, and the levels that make
/// sense for it.
pub struct Binary {
    /// Short name for tables.
    pub name: &'static str,
    /// Where it is.
    pub path: PathBuf,
    /// Levels measured: all four with DWARF, symbol table only without.
    pub levels: &'static [subjects::Level],
}

/// Seed of the address draw: the same addresses on every run.
pub const SEED: u64 = 0x5eed_2026;

/// Addresses per set, `ROVER_BENCH_ADDRS` or 20 000.
pub fn address_count() -> usize {
    std::env::var("ROVER_BENCH_ADDRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// The binaries measured: CPython's shared library (full DWARF; path from
/// `ROVER_BENCH_PYTHON_LIB`) and the Rust compiler's driver library (a big
/// `.symtab`, no DWARF; found in `rustc --print sysroot`). Missing ones are
/// left out with a message saying why.
pub fn binaries() -> Vec<Binary> {
    let mut out = Vec::new();
    let python = std::env::var_os("ROVER_BENCH_PYTHON_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0"));
    if python.exists() {
        out.push(Binary {
            name: "libpython3.11",
            path: python,
            levels: &subjects::Level::ALL,
        });
    } else {
        eprintln!(
            "bench: {} not found (set ROVER_BENCH_PYTHON_LIB): skipping it",
            python.display()
        );
    }
    match rustc_driver() {
        Some(path) => out.push(Binary {
            name: "librustc_driver",
            path,
            levels: &[subjects::Level::SymbolTable],
        }),
        None => eprintln!(
            "bench: librustc_driver-*.so not found in `rustc --print sysroot`: skipping it"
        ),
    }
    out
}

fn rustc_driver() -> Option<PathBuf> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let lib = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim()).join("lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("librustc_driver-") && n.ends_with(".so"))
        })
}
