//! Errors of the loader layer: what is missing or wrong, and what to do.

use std::io;
use std::path::PathBuf;

/// Why a program could not be attached, updated or drained.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The process lacks the capabilities eBPF profiling needs.
    #[error(
        "missing privileges: {missing}; run as root, or grant CAP_BPF and CAP_PERFMON \
         (e.g. `setcap cap_bpf,cap_perfmon+ep <binary>`)"
    )]
    Privileges {
        /// The capabilities that are not in the effective set.
        missing: String,
    },
    /// The kernel exposes no BTF, which the CO-RE programs need.
    #[error(
        "kernel BTF not found at /sys/kernel/btf/vmlinux: rover's programs need a kernel \
         built with CONFIG_DEBUG_INFO_BTF=y (the default on current distributions)"
    )]
    NoBtf,
    /// The classic tracepoint (used where BTF tracepoints fail) needs tracefs,
    /// and it is not mounted.
    #[error(
        "the classic sched_switch tracepoint needs tracefs, which is not mounted (looked at \
         /sys/kernel/tracing and /sys/kernel/debug/tracing): mount it with \
         `mount -t tracefs tracefs /sys/kernel/tracing`"
    )]
    NoTracefs,
    /// A target process id names no running process.
    #[error("process {0} does not exist (no /proc/{0})")]
    NoSuchProcess(u32),
    /// The on-CPU sampling frequency was 0.
    #[error("sampling frequency must be at least 1 Hz")]
    ZeroFrequency,
    /// The on-CPU sampling frequency is above what the kernel allows.
    #[error(
        "sampling frequency {requested} Hz is above the kernel's limit of {max} Hz \
         (/proc/sys/kernel/perf_event_max_sample_rate)"
    )]
    FrequencyTooHigh {
        /// The frequency asked for.
        requested: u64,
        /// The kernel's current limit.
        max: u64,
    },
    /// The cgroup target is not a cgroup v2 directory.
    #[error("cgroup {path}: {reason}")]
    Cgroup {
        /// The path given as target.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The kernel refused the eBPF object (maps, relocations, BTF).
    #[error("loading the {object} eBPF object failed: {source}")]
    Load {
        /// `oncpu` or `offcpu`.
        object: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// Loading or attaching a program failed.
    #[error("eBPF program {program}: {source}")]
    Program {
        /// The program's name in the object.
        program: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// Reading or writing a map failed.
    #[error("eBPF map {map}: {source}")]
    Map {
        /// The map's name in the object.
        map: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A file the loader reads could not be read.
    #[error("{what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl LoaderError {
    pub(crate) fn map(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| LoaderError::Map {
            map,
            source: Box::new(source),
        }
    }

    pub(crate) fn program(
        program: &'static str,
    ) -> impl FnOnce(aya::programs::ProgramError) -> Self {
        move |source| LoaderError::Program {
            program,
            source: Box::new(source),
        }
    }
}
