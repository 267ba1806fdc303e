//! The one error type of rover-core: a bad configuration, missing privileges
//! or kernel features, the kernel refusing a program or map, and a session
//! that failed while running.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::KernelFeature;

/// Why a profiler, a program or a session could not start, or why a session
/// ended badly.
///
/// Every configuration mistake is [`Error::Config`] (or, for continuous
/// profiling, [`Error::Policy`]), found before any privilege or kernel
/// check, so it reads the same with or without root.
/// `Debug` prints the message and its causes, so
/// `fn main() -> Result<(), rover_core::Error>` still says what to do.
///
/// ```no_run
/// use rover_core::{ConfigError, Error};
///
/// # fn run() -> Result<(), rover_core::Error> {
/// let profiler = rover_core::Profiler::new()?;
/// match profiler.on_cpu().pids([1234]).frequency(0).start() {
///     Ok(session) => drop(session),
///     Err(Error::Config(ConfigError::ZeroFrequency)) => eprintln!("pick a frequency"),
///     Err(error) => return Err(error),
/// }
/// # Ok(()) }
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is wrong: nothing was loaded into the kernel.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A continuous-profiling policy, or the set of them, is wrong: nothing
    /// was started.
    #[error("invalid continuous-profiling policy: {0}")]
    Policy(#[from] crate::continuous::PolicyError),
    /// The process lacks the capabilities eBPF profiling needs.
    #[error(
        "missing privileges: {missing}; run as root, or grant CAP_BPF and CAP_PERFMON \
         (e.g. `setcap cap_bpf,cap_perfmon+ep <binary>`)"
    )]
    Privileges {
        /// The capabilities that are not in the effective set.
        missing: String,
    },
    /// The kernel exposes no BTF, which the off-CPU program's CO-RE
    /// relocations need (on-CPU sessions do without).
    #[error(
        "kernel BTF not found at /sys/kernel/btf/vmlinux: the off-CPU program needs a kernel \
         built with CONFIG_DEBUG_INFO_BTF=y (the default on current distributions)"
    )]
    NoBtf,
    /// The kernel lacks an eBPF feature that what was asked for cannot do
    /// without, as [`KernelFeatures`](crate::KernelFeatures) probed it;
    /// found before anything was loaded.
    #[error(
        "{needed_by} needs {feature}{}, which this kernel ({release}) does not have{}",
        arrived(*feature),
        instead.map(|instead| format!(": {instead}")).unwrap_or_default()
    )]
    Unsupported {
        /// The missing feature.
        feature: KernelFeature,
        /// What needs it, e.g. `the off-CPU hook OffCpuHook::BtfTracepoint`.
        needed_by: &'static str,
        /// What does without it, where something does.
        instead: Option<&'static str>,
        /// The kernel's release (`uname -r`).
        release: String,
    },
    /// The kernel is older than what was asked for needs, for something
    /// that cannot be probed as one helper or program type.
    #[error(
        "{needed_by} needs Linux {needs} or later ({why}); this kernel is {release}{}",
        instead.map(|instead| format!(": {instead}")).unwrap_or_default()
    )]
    KernelTooOld {
        /// What needs it.
        needed_by: &'static str,
        /// The first release that has it.
        needs: crate::KernelVersion,
        /// What that release brought.
        why: &'static str,
        /// What does without it, where something does.
        instead: Option<&'static str>,
        /// The kernel's release (`uname -r`).
        release: String,
    },
    /// The classic tracepoint (used where BTF tracepoints are missing or
    /// fail) needs tracefs, and it is not mounted.
    #[error(
        "the classic sched_switch tracepoint needs tracefs, which is not mounted (looked at \
         /sys/kernel/tracing and /sys/kernel/debug/tracing): mount it with \
         `mount -t tracefs tracefs /sys/kernel/tracing`"
    )]
    NoTracefs,
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
    /// The embedded eBPF object lacks a map or program rover-core expects.
    #[error("the embedded eBPF object has no `{name}`: rover-ebpf and rover-core are out of step")]
    ObjectMismatch {
        /// The missing map or program.
        name: &'static str,
    },
    /// A file rover reads could not be read.
    #[error("{what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The session's drain thread could not be spawned.
    #[error("spawning the session's drain thread failed: {0}")]
    Thread(#[source] io::Error),
    /// The drain thread ended without handing back the profile (it panicked).
    #[error("the session's drain thread ended without a result")]
    DrainThreadLost,
    /// The thread of a [`ProcessEvents`](crate::process::events::ProcessEvents)
    /// stream ended without a result (it panicked).
    #[error("the process events' thread ended without a result")]
    EventThreadLost,
}

/// What is wrong with a configuration: one case per mistake, each message
/// naming the setting to change.
///
/// ```
/// use rover_core::ConfigError;
/// let error = ConfigError::ZeroFrequency;
/// assert_eq!(error.to_string(), "sampling frequency must be at least 1 Hz (.frequency(..))");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A session was started without saying what to profile.
    #[error(
        "no targets: choose the processes to profile with .pids([..]), .cgroup(path) or .all()"
    )]
    NoTargets,
    /// The window is shorter than the minimum.
    #[error("window {window:?} is shorter than the minimum of {min:?} (.window(..))")]
    WindowTooShort {
        /// The window asked for.
        window: Duration,
        /// The shortest window allowed.
        min: Duration,
    },
    /// The on-CPU sampling frequency was 0.
    #[error("sampling frequency must be at least 1 Hz (.frequency(..))")]
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
    /// The shortest counted block is longer than the longest.
    #[error("min_block {min:?} is above max_block {max:?}: no block would be counted")]
    BlockRange {
        /// `min_block`.
        min: Duration,
        /// `max_block`.
        max: Duration,
    },
    /// No task state is counted.
    #[error("an empty state set counts nothing (.states(..))")]
    NoStates,
    /// The pid list is empty.
    #[error("an empty pid list targets nothing; use .all() for every process")]
    EmptyPids,
    /// More pids than the pid map holds.
    #[error("{count} target pids exceed the pid map's {capacity} entries (MapSizes::pids)")]
    TooManyPids {
        /// Pids given.
        count: usize,
        /// `MapSizes::pids`.
        capacity: u32,
    },
    /// A thread id was given where a process id is needed.
    #[error("{tid} is a thread of process {tgid}: target the process id")]
    ThreadId {
        /// The id given.
        tid: u32,
        /// Its process.
        tgid: u32,
    },
    /// A target process id names no running process.
    #[error("process {0} does not exist (no /proc/{0})")]
    NoSuchProcess(u32),
    /// A map capacity of 0.
    #[error("MapSizes::{0} must be at least 1")]
    ZeroMapSize(&'static str),
    /// The cgroup target is not a cgroup v2 directory.
    #[error("cgroup {}: {reason}", path.display())]
    Cgroup {
        /// The path given as target.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A process events ring buffer size the kernel refuses.
    #[error(
        "ring buffer size {size} must be a power of two of at least one page ({page} bytes) \
         (.ring_size(..))"
    )]
    RingBufferSize {
        /// The size asked for, in bytes.
        size: u32,
        /// The page size.
        page: u64,
    },
    /// `set_pids` on a session that was not started with `.pids(..)`.
    #[error(
        "set_pids changes the processes of a session started with .pids(..); \
         this one follows {0}, which has no pid list to change"
    )]
    NotAPidsSession(&'static str),
}

impl Error {
    /// Whether the error means this process lacks the privileges for eBPF
    /// profiling (not root, or no CAP_BPF and CAP_PERFMON).
    pub fn is_privileges(&self) -> bool {
        matches!(self, Error::Privileges { .. })
    }

    /// Whether the error means the kernel lacks a feature rover needs (BTF,
    /// tracefs for the tracepoint fallback, an eBPF program type or helper).
    pub fn is_kernel_feature(&self) -> bool {
        matches!(
            self,
            Error::NoBtf
                | Error::NoTracefs
                | Error::Unsupported { .. }
                | Error::KernelTooOld { .. }
        )
    }

    pub(crate) fn map(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| Error::Map {
            map,
            source: Box::new(source),
        }
    }

    pub(crate) fn program(
        program: &'static str,
    ) -> impl FnOnce(aya::programs::ProgramError) -> Self {
        move |source| Error::Program {
            program,
            source: Box::new(source),
        }
    }
}

/// ` (Linux 5.9 and later)`: when `feature` arrived, for its error message.
fn arrived(feature: KernelFeature) -> String {
    feature
        .since()
        .map(|since| format!(" (Linux {since} and later)"))
        .unwrap_or_default()
}

/// The message and its causes, not the variant: this is what `main`
/// returning an `Err` prints, and the message is what says what to do.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            // Most messages quote their direct cause already.
            let cause_text = cause.to_string();
            if !message.contains(&cause_text) {
                message.push_str("\n  caused by: ");
                message.push_str(&cause_text);
            }
            source = cause.source();
        }
        f.write_str(&message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_says_what_to_do() {
        let error = Error::Privileges {
            missing: "CAP_BPF and CAP_PERFMON".into(),
        };
        let debug = format!("{error:?}");
        assert_eq!(debug, error.to_string());
        assert!(debug.contains("setcap cap_bpf,cap_perfmon+ep"), "{debug}");
        assert!(!debug.contains("Privileges {"), "{debug}");
    }

    #[test]
    fn debug_lists_causes_the_message_does_not_quote() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] io::Error);
        let error = Error::Io {
            what: "reading /proc/self/status".into(),
            source: io::Error::other(Outer(io::Error::other("inner"))),
        };
        assert_eq!(
            format!("{error:?}"),
            "reading /proc/self/status: outer\n  caused by: inner"
        );
    }

    #[test]
    fn a_config_error_is_one_variant_with_the_setting_named() {
        let error = Error::from(ConfigError::BlockRange {
            min: Duration::from_millis(10),
            max: Duration::from_millis(1),
        });
        assert_eq!(
            format!("{error:?}"),
            "invalid configuration: min_block 10ms is above max_block 1ms: no block would be counted"
        );
    }
}
