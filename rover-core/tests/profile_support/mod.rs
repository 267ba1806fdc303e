//! Helpers shared by the profile and export tests: symbolized frames and
//! hand-built profiles whose expected numbers are worked out by hand.
#![allow(dead_code)]

use std::sync::Arc;

use rover_core::profile::{OffCpuState, ProfileBuilder, Sample, SampleValue};
use rover_symbolize::{InlinedFrame, Location, Module, Origin, Reason, Sym, Symbolized, Unknown};

pub const APP: &str = "/usr/bin/app";
pub const KERNEL: &str = "[kernel.kallsyms]";
pub const PERF_MAP: &str = "/tmp/perf-10.map";

/// `name` in `module`: kernel code in [`KERNEL`], native code from a file
/// anywhere else (see [`jit`] for a perf-map frame).
pub fn sym(name: &str, module: &str) -> Symbolized {
    let (origin, in_file) = if module == KERNEL {
        (Origin::Kernel, None)
    } else {
        (Origin::File, Some(0x1000))
    };
    Symbolized::Sym(Sym {
        name: Arc::from(name),
        module: Module::new(module, None),
        origin,
        address: 0x1000,
        file_offset: in_file,
        vaddr: in_file,
        sym_addr: 0x1000,
        location: None,
        inlined: vec![],
    })
}

/// JIT code `name`, named by the perf map [`PERF_MAP`].
pub fn jit(name: &str) -> Symbolized {
    Symbolized::Sym(Sym {
        name: Arc::from(name),
        module: Module::new(PERF_MAP, None),
        origin: Origin::PerfMap,
        address: 0x7f00_0000_1000,
        file_offset: None,
        vaddr: None,
        sym_addr: 0x7f00_0000_1000,
        location: None,
        inlined: vec![],
    })
}

pub fn sym_at(name: &str, module: &str, file: &str, line: u32) -> Symbolized {
    let Symbolized::Sym(mut s) = sym(name, module) else {
        unreachable!()
    };
    s.location = Some(Location {
        file: Arc::from(file),
        line: Some(line),
        column: None,
    });
    Symbolized::Sym(s)
}

/// `outer` with `inlined` functions inside it, innermost first.
pub fn sym_inlined(outer: &str, module: &str, inlined: &[&str]) -> Symbolized {
    let Symbolized::Sym(mut s) = sym(outer, module) else {
        unreachable!()
    };
    s.inlined = inlined
        .iter()
        .enumerate()
        .map(|(i, n)| InlinedFrame {
            name: Arc::from(*n),
            location: Some(Location {
                file: Arc::from("inl.h"),
                line: Some(10 + i as u32),
                column: None,
            }),
        })
        .collect();
    s.location = Some(Location {
        file: Arc::from("outer.c"),
        line: Some(99),
        column: None,
    });
    Symbolized::Sym(s)
}

/// An address that did not resolve: in a file `module` that has no symbol
/// for it (at file virtual address `offset`), or outside every mapping.
pub fn unknown(module: Option<&str>, offset: u64) -> Symbolized {
    Symbolized::Unknown(Unknown {
        module: module.map(|m| Module::new(m, None)),
        origin: module.map(|_| Origin::File),
        address: if module.is_some() {
            0x5555_0000_0000 + offset
        } else {
            offset
        },
        file_offset: module.map(|_| offset),
        vaddr: module.map(|_| offset),
        reason: if module.is_some() {
            Reason::NoSymbols
        } else {
            Reason::Unmapped
        },
    })
}

pub fn user(names: &[&str]) -> Vec<Symbolized> {
    names.iter().map(|n| sym(n, APP)).collect()
}

pub fn kernel(names: &[&str]) -> Vec<Symbolized> {
    names.iter().map(|n| sym(n, KERNEL)).collect()
}

/// Adds `samples` on-CPU samples for a thread of process "app" (pid 10).
pub fn on_cpu(
    p: &mut ProfileBuilder,
    tid: u32,
    comm: &str,
    k: &[Symbolized],
    u: &[Symbolized],
    samples: u64,
) {
    p.add_sample(&Sample {
        pid: 10,
        tid,
        process_name: "app",
        comm,
        kernel: k,
        user: u,
        value: SampleValue::OnCpu { samples },
    });
}

/// Adds off-CPU time for a thread of process "app" (pid 10).
pub fn off_cpu(
    p: &mut ProfileBuilder,
    tid: u32,
    comm: &str,
    k: &[Symbolized],
    u: &[Symbolized],
    (state, switches, nanos): (OffCpuState, u64, u64),
) {
    p.add_sample(&Sample {
        pid: 10,
        tid,
        process_name: "app",
        comm,
        kernel: k,
        user: u,
        value: SampleValue::OffCpu {
            state,
            switches,
            nanos,
        },
    });
}
