//! Up-front checks of privileges and kernel features, so a missing one is
//! reported by name instead of as an opaque `EPERM` from a syscall.

use std::fs;
use std::path::Path;

use super::LoaderError;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// What the running kernel and process offer for eBPF profiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// Whether tracefs is mounted (needed only by the classic tracepoint
    /// fallback of the off-CPU program).
    pub tracefs: bool,
    /// The kernel's limit on perf sampling frequency, in Hz.
    pub max_sample_rate: u64,
}

impl Environment {
    /// Checks that this process may load and attach rover's programs: root,
    /// or CAP_BPF with CAP_PERFMON (CAP_SYS_ADMIN also does), and kernel BTF.
    ///
    /// ```no_run
    /// let env = rover_core::loader::Environment::check()?;
    /// println!("sampling up to {} Hz", env.max_sample_rate);
    /// # Ok::<(), rover_core::loader::LoaderError>(())
    /// ```
    pub fn check() -> Result<Self, LoaderError> {
        let caps = effective_capabilities()?;
        let has = |cap: u32| caps & (1u64 << cap) != 0;
        if !has(CAP_SYS_ADMIN) {
            let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
                .into_iter()
                .filter(|(cap, _)| !has(*cap))
                .map(|(_, name)| name)
                .collect();
            if !missing.is_empty() {
                return Err(LoaderError::Privileges {
                    missing: missing.join(" and "),
                });
            }
        }
        if !Path::new(BTF_PATH).exists() {
            return Err(LoaderError::NoBtf);
        }
        Ok(Environment {
            tracefs: TRACEFS_PATHS
                .iter()
                .any(|path| Path::new(path).join("events").is_dir()),
            max_sample_rate: max_sample_rate()?,
        })
    }
}

fn effective_capabilities() -> Result<u64, LoaderError> {
    let status = fs::read_to_string("/proc/self/status").map_err(|source| LoaderError::Io {
        what: "reading /proc/self/status".into(),
        source,
    })?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| LoaderError::Io {
            what: "reading /proc/self/status".into(),
            source: std::io::Error::other("no parsable CapEff line"),
        })
}

fn max_sample_rate() -> Result<u64, LoaderError> {
    const PATH: &str = "/proc/sys/kernel/perf_event_max_sample_rate";
    let io = |source| LoaderError::Io {
        what: format!("reading {PATH}"),
        source,
    };
    let text = fs::read_to_string(PATH).map_err(io)?;
    text.trim()
        .parse()
        .map_err(|_| io(std::io::Error::other(format!("not a number: {text:?}"))))
}
