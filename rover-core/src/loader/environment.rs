//! Up-front checks of privileges and kernel features, so a missing one is
//! reported by name instead of as an opaque `EPERM` from a syscall.

use std::fmt;
use std::fs;

use super::{Error, KernelFeatures, Limits};

const CAP_SYSLOG: u32 = 34;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What the running kernel and process offer for eBPF profiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// The eBPF features of the running kernel, probed after the privilege
    /// check: what sessions fall back from, or refuse without.
    pub features: KernelFeatures,
    /// The kernel's limit on perf sampling frequency, in Hz, when checked.
    pub max_sample_rate: u64,
    /// What may make profiles less useful without stopping them.
    pub warnings: Vec<Warning>,
}

/// Something that does not stop profiling but makes its results poorer,
/// found by the checks of [`Environment::check`] and
/// [`Profiler::warnings`](crate::Profiler::warnings).
///
/// ```no_run
/// for warning in rover_core::Profiler::new()?.warnings() {
///     eprintln!("warning: {warning}");
/// }
/// # Ok::<(), rover_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// `/proc/kallsyms` shows this process zeros instead of addresses, so
    /// every kernel frame will be an unnamed `[kernel.kallsyms]+0x...`.
    KernelAddressesHidden {
        /// `/proc/sys/kernel/kptr_restrict`.
        kptr_restrict: u8,
        /// Whether the process has CAP_SYSLOG.
        cap_syslog: bool,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::KernelAddressesHidden {
                kptr_restrict,
                cap_syslog,
            } => {
                write!(
                    f,
                    "kernel frames will not be named: /proc/kallsyms hides kernel addresses \
                     from this process (kernel.kptr_restrict = {kptr_restrict}, "
                )?;
                if *cap_syslog {
                    write!(f, "CAP_SYSLOG held); ")?;
                } else {
                    write!(f, "no CAP_SYSLOG); ")?;
                }
                const GRANT: &str = "run as root, or grant CAP_SYSLOG as well \
                                     (`setcap cap_bpf,cap_perfmon,cap_syslog+ep <binary>`)";
                match kptr_restrict {
                    0 => write!(f, "{GRANT}, or set `sysctl kernel.perf_event_paranoid=1`"),
                    1 => write!(
                        f,
                        "{GRANT}, or set `sysctl kernel.kptr_restrict=0` with \
                         kernel.perf_event_paranoid at most 1"
                    ),
                    _ => f.write_str(
                        "set `sysctl kernel.kptr_restrict=1` and run as root or with CAP_SYSLOG",
                    ),
                }
            }
        }
    }
}

impl Environment {
    /// Checks that this process may load and attach rover's programs: root,
    /// or CAP_BPF with CAP_PERFMON (CAP_SYS_ADMIN also does); then probes
    /// the kernel's eBPF features ([`KernelFeatures`]). A missing feature is
    /// not an error here: the session that needs it refuses by its name, or
    /// falls back (kernel BTF, for one, only the off-CPU program needs).
    ///
    /// ```no_run
    /// let env = rover_core::Environment::check()?;
    /// println!("sampling up to {} Hz", env.max_sample_rate);
    /// print!("{}", env.features);
    /// # Ok::<(), rover_core::Error>(())
    /// ```
    pub fn check() -> Result<Self, Error> {
        let caps = effective_capabilities()?;
        let has = |cap: u32| caps & (1u64 << cap) != 0;
        if !has(CAP_SYS_ADMIN) {
            let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
                .into_iter()
                .filter(|(cap, _)| !has(*cap))
                .map(|(_, name)| name)
                .collect();
            if !missing.is_empty() {
                return Err(Error::Privileges {
                    missing: missing.join(" and "),
                });
            }
        }
        let kptr_restrict = read_number("/proc/sys/kernel/kptr_restrict").unwrap_or(0);
        // Without perf events built in the sysctl is absent and the perf
        // exception of kptr_restrict=0 does not apply.
        let paranoid = read_number("/proc/sys/kernel/perf_event_paranoid").unwrap_or(i64::MAX);
        let cap_syslog = has(CAP_SYSLOG);
        let mut warnings = Vec::new();
        if !kernel_addresses_visible(kptr_restrict, paranoid, cap_syslog) {
            warnings.push(Warning::KernelAddressesHidden {
                kptr_restrict: u8::try_from(kptr_restrict).unwrap_or(u8::MAX),
                cap_syslog,
            });
        }
        Ok(Environment {
            features: KernelFeatures::probe(),
            max_sample_rate: Limits::read()?.max_sample_rate,
            warnings,
        })
    }
}

/// The kernel's `kallsyms_show_value()`: with kptr_restrict 0, addresses
/// show to perf-capable readers (perf_event_paranoid at most 1) and to
/// CAP_SYSLOG; with 1, to CAP_SYSLOG only; with 2 or more, to nobody.
fn kernel_addresses_visible(
    kptr_restrict: i64,
    perf_event_paranoid: i64,
    cap_syslog: bool,
) -> bool {
    match kptr_restrict {
        0 => perf_event_paranoid <= 1 || cap_syslog,
        1 => cap_syslog,
        _ => false,
    }
}

fn read_number(path: &str) -> Option<i64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn effective_capabilities() -> Result<u64, Error> {
    let status = fs::read_to_string("/proc/self/status").map_err(|source| Error::Io {
        what: "reading /proc/self/status".into(),
        source,
    })?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| Error::Io {
            what: "reading /proc/self/status".into(),
            source: std::io::Error::other("no parsable CapEff line"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_addresses_show_as_the_kernel_decides() {
        // Root, or CAP_SYSLOG, below kptr_restrict 2.
        assert!(kernel_addresses_visible(1, 2, true));
        assert!(kernel_addresses_visible(0, 2, true));
        // CAP_BPF + CAP_PERFMON alone: only with kptr_restrict 0 and a
        // permissive perf_event_paranoid.
        assert!(kernel_addresses_visible(0, 1, false));
        assert!(!kernel_addresses_visible(0, 2, false));
        assert!(!kernel_addresses_visible(1, -1, false));
        assert!(!kernel_addresses_visible(2, -1, true));
    }

    #[test]
    fn the_warning_says_what_to_do() {
        let hidden = Warning::KernelAddressesHidden {
            kptr_restrict: 1,
            cap_syslog: false,
        };
        let text = hidden.to_string();
        assert!(text.contains("kptr_restrict = 1, no CAP_SYSLOG"), "{text}");
        assert!(text.contains("cap_syslog+ep"), "{text}");
        assert!(text.contains("kptr_restrict=0"), "{text}");
        let paranoid = Warning::KernelAddressesHidden {
            kptr_restrict: 0,
            cap_syslog: false,
        };
        assert!(
            paranoid.to_string().contains("perf_event_paranoid=1")
                && !paranoid.to_string().contains("kptr_restrict=0"),
            "{paranoid}"
        );
        let never = Warning::KernelAddressesHidden {
            kptr_restrict: 2,
            cap_syslog: true,
        };
        assert!(never.to_string().contains("kptr_restrict=1"), "{never}");
    }
}
