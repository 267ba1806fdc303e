//! Every check of a program's configuration, run before any privilege or
//! kernel check: a wrong setting is a [`ConfigError`] whether or not the
//! process may load programs, and can be tested without root.

use std::fs;
use std::time::Duration;

use super::targets::ResolvedTargets;
use super::{OffCpuConfig, OnCpuConfig, Targets};
use crate::Error;
use crate::error::ConfigError;

const MAX_SAMPLE_RATE: &str = "/proc/sys/kernel/perf_event_max_sample_rate";

/// The kernel's limits a configuration is checked against; readable
/// without privileges.
///
/// ```
/// use rover_core::loader::{Limits, OnCpuConfig};
///
/// let limits = Limits { max_sample_rate: 1000 };
/// let error = OnCpuConfig { frequency_hz: 5000, ..OnCpuConfig::default() }
///     .validate(&limits)
///     .unwrap_err();
/// assert!(error.to_string().contains("above the kernel's limit of 1000 Hz"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The kernel's limit on perf sampling frequency, in Hz
    /// (`/proc/sys/kernel/perf_event_max_sample_rate`; the kernel lowers it
    /// by itself when sampling takes too long).
    pub max_sample_rate: u64,
}

impl Limits {
    /// Reads the current limits from `/proc/sys`.
    pub fn read() -> Result<Self, Error> {
        let io = |source| Error::Io {
            what: format!("reading {MAX_SAMPLE_RATE}"),
            source,
        };
        let text = fs::read_to_string(MAX_SAMPLE_RATE).map_err(io)?;
        let max_sample_rate = text
            .trim()
            .parse()
            .map_err(|_| io(std::io::Error::other(format!("not a number: {text:?}"))))?;
        Ok(Limits { max_sample_rate })
    }
}

impl OnCpuConfig {
    /// Checks every setting: frequency within `1..=limits.max_sample_rate`,
    /// map sizes, and targets (pids that name live processes, not threads;
    /// a cgroup v2 directory). Reads `/proc` and the cgroup file system
    /// only; [`OnCpuProgram::attach`](super::OnCpuProgram::attach) runs it
    /// before its privilege check.
    pub fn validate(&self, limits: &Limits) -> Result<(), ConfigError> {
        self.checked(limits).map(|_| ())
    }

    pub(crate) fn checked(&self, limits: &Limits) -> Result<ResolvedTargets, ConfigError> {
        check_frequency(self.frequency_hz, limits)?;
        self.map_sizes.check()?;
        self.targets.resolve(self.map_sizes.pids)
    }
}

impl OffCpuConfig {
    /// Checks every setting: `min_block` at most `max_block`, a state set
    /// that is not empty, map sizes, and targets as
    /// [`OnCpuConfig::validate`] does (no kernel limit applies off CPU).
    /// [`OffCpuProgram::attach`](super::OffCpuProgram::attach) runs it
    /// before its privilege check.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.checked().map(|_| ())
    }

    pub(crate) fn checked(&self) -> Result<ResolvedTargets, ConfigError> {
        check_blocks(self.min_block, self.max_block)?;
        if self.states.is_empty() {
            return Err(ConfigError::NoStates);
        }
        self.map_sizes.check()?;
        self.targets.resolve(self.map_sizes.pids)
    }
}

/// The checks that read nothing, for a configuration about to be resolved.
pub(crate) fn check_frequency(hz: u64, limits: &Limits) -> Result<(), ConfigError> {
    if hz == 0 {
        return Err(ConfigError::ZeroFrequency);
    }
    if hz > limits.max_sample_rate {
        return Err(ConfigError::FrequencyTooHigh {
            requested: hz,
            max: limits.max_sample_rate,
        });
    }
    Ok(())
}

fn check_blocks(min: Duration, max: Option<Duration>) -> Result<(), ConfigError> {
    match max {
        Some(max) if min > max => Err(ConfigError::BlockRange { min, max }),
        _ => Ok(()),
    }
}

/// The profiler's own process id, left out of every-process and cgroup
/// targets unless asked for: an agent profiling the machine should not
/// see its own drain threads. Pid targets name it explicitly or not at all.
/// 0 (nothing left out) where the id the kernel knows this process by
/// cannot be told.
pub(crate) fn excluded_tgid(targets: &Targets, include_self: bool) -> u32 {
    match targets {
        Targets::Pids(_) => 0,
        Targets::All | Targets::Cgroup(_) if include_self => 0,
        Targets::All | Targets::Cgroup(_) => kernel_tgid().unwrap_or(0),
    }
}

/// This process's id as the programs see it, in the initial pid namespace.
/// `std::process::id()` is the id in this process's own pid namespace: in a
/// container with its own pid namespace it is another process's id on the
/// host, and leaving that one out would be wrong. `/proc/self` names this
/// process in the namespace of the procfs mounted at `/proc`, and that is
/// the initial one when it shows kthreadd as pid 2 (kernel threads are seen
/// only there), as with a host's `/proc` or a container run with the host's
/// pid namespace.
fn kernel_tgid() -> Option<u32> {
    let kthreadd = std::fs::read_to_string("/proc/2/comm").ok()?;
    if kthreadd.trim_end() != "kthreadd" {
        return None;
    }
    std::fs::read_link("/proc/self")
        .ok()?
        .to_str()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::{MapSizes, TaskStates};

    const LIMITS: Limits = Limits {
        max_sample_rate: 1000,
    };

    fn on_cpu(targets: Targets) -> OnCpuConfig {
        OnCpuConfig {
            targets,
            ..OnCpuConfig::default()
        }
    }

    fn me() -> Targets {
        Targets::Pids(vec![std::process::id()])
    }

    /// The main thread's id is the process id; any other thread's is not.
    fn a_thread_id() -> (u32, u32) {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            done_rx.recv().ok();
        });
        let tid = rx.recv().unwrap();
        let pid = std::process::id();
        // Checked while the thread lives.
        let error = on_cpu(Targets::Pids(vec![tid])).validate(&LIMITS);
        done_tx.send(()).unwrap();
        handle.join().unwrap();
        assert_eq!(error, Err(ConfigError::ThreadId { tid, tgid: pid }));
        (tid, pid)
    }

    #[test]
    fn every_on_cpu_mistake_is_a_config_error() {
        assert_eq!(on_cpu(me()).validate(&LIMITS), Ok(()));
        let cases = [
            (
                OnCpuConfig {
                    frequency_hz: 0,
                    ..on_cpu(me())
                },
                ConfigError::ZeroFrequency,
            ),
            (
                OnCpuConfig {
                    frequency_hz: 1001,
                    ..on_cpu(me())
                },
                ConfigError::FrequencyTooHigh {
                    requested: 1001,
                    max: 1000,
                },
            ),
            (on_cpu(Targets::Pids(Vec::new())), ConfigError::EmptyPids),
            (
                OnCpuConfig {
                    map_sizes: MapSizes {
                        pids: 1,
                        ..MapSizes::default()
                    },
                    ..on_cpu(Targets::Pids(vec![std::process::id(); 2]))
                },
                ConfigError::TooManyPids {
                    count: 2,
                    capacity: 1,
                },
            ),
            // Pids are never this high: pid_max is at most 2^22.
            (
                on_cpu(Targets::Pids(vec![4_999_999])),
                ConfigError::NoSuchProcess(4_999_999),
            ),
            (
                OnCpuConfig {
                    map_sizes: MapSizes {
                        counts: 0,
                        ..MapSizes::default()
                    },
                    ..on_cpu(me())
                },
                ConfigError::ZeroMapSize("counts"),
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(config.validate(&LIMITS), Err(expected), "{config:?}");
        }
        a_thread_id();
    }

    #[test]
    fn bad_cgroups_are_config_errors() {
        let dir = std::env::temp_dir();
        for (path, reason) in [
            (dir.join("rover-no-such-cgroup"), "No such file"),
            (dir.clone(), "not on a cgroup v2 file system"),
        ] {
            let error = on_cpu(Targets::Cgroup(path.clone()))
                .validate(&LIMITS)
                .unwrap_err();
            assert!(
                matches!(&error, ConfigError::Cgroup { path: p, .. } if *p == path),
                "{error}"
            );
            assert!(error.to_string().contains(reason), "{error}");
        }
    }

    #[test]
    fn every_off_cpu_mistake_is_a_config_error() {
        let base = OffCpuConfig {
            targets: me(),
            ..OffCpuConfig::default()
        };
        assert_eq!(base.validate(), Ok(()));
        let min = Duration::from_millis(10);
        let max = Duration::from_millis(1);
        let reversed = OffCpuConfig {
            min_block: min,
            max_block: Some(max),
            ..base.clone()
        };
        assert_eq!(
            reversed.validate(),
            Err(ConfigError::BlockRange { min, max })
        );
        let no_states = OffCpuConfig {
            states: TaskStates::from_bits_for_test(0),
            ..base.clone()
        };
        assert_eq!(no_states.validate(), Err(ConfigError::NoStates));
        let no_start = OffCpuConfig {
            map_sizes: MapSizes {
                start: 0,
                ..MapSizes::default()
            },
            ..base
        };
        assert_eq!(no_start.validate(), Err(ConfigError::ZeroMapSize("start")));
    }

    #[test]
    fn only_broad_targets_leave_the_profiler_out() {
        let me = std::process::id();
        assert_eq!(excluded_tgid(&Targets::All, false), me);
        assert_eq!(excluded_tgid(&Targets::All, true), 0);
        assert_eq!(excluded_tgid(&Targets::Cgroup("/x".into()), false), me);
        assert_eq!(excluded_tgid(&Targets::Pids(vec![me]), false), 0);
    }

    const PID_NAMESPACE_CHILD: &str = "ROVER_PID_NAMESPACE_CHILD";

    /// In a pid namespace of its own, with its own `/proc`, a process does
    /// not know the id the kernel's programs see, so it leaves nothing out
    /// rather than another process of the host that has its local id.
    #[test]
    fn in_a_pid_namespace_of_its_own_nothing_is_left_out() {
        let test = "in_a_pid_namespace_of_its_own_nothing_is_left_out";
        if !testkit::require_root(test) || !testkit::require_tool(test, "unshare") {
            return;
        }
        let binary = std::env::current_exe().unwrap();
        let output = std::process::Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(&binary)
            .args(["--exact", "loader::validate::tests::pid_namespace_child"])
            .args(["--ignored", "--nocapture"])
            .env(PID_NAMESPACE_CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "child failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Only run by `in_a_pid_namespace_of_its_own_nothing_is_left_out`.
    #[test]
    #[ignore = "run by in_a_pid_namespace_of_its_own_nothing_is_left_out in a new pid namespace"]
    fn pid_namespace_child() {
        assert_eq!(std::env::var(PID_NAMESPACE_CHILD).as_deref(), Ok("1"));
        // The namespace's first process is `unshare`'s fork: this is pid 1.
        assert_eq!(std::process::id(), 1);
        assert_eq!(kernel_tgid(), None);
        assert_eq!(excluded_tgid(&Targets::All, false), 0);
    }

    #[test]
    fn on_the_host_the_kernel_s_id_is_the_process_id() {
        assert_eq!(kernel_tgid(), Some(std::process::id()));
    }

    #[test]
    fn limits_are_readable_without_privileges() {
        assert!(Limits::read().unwrap().max_sample_rate > 0);
    }
}
