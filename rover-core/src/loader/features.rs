//! The eBPF features of the running kernel that rover uses or will use,
//! probed for real (a trivial program loaded per program type and helper, a
//! trivial map created), so that a session falls back, or refuses by the
//! feature's name, before it loads anything.

use std::fmt;
use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use aya::maps::MapType;
use aya::programs::{BtfTracePoint, ProgramError, ProgramType};
use aya::sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported};
use aya::{BtfError, EbpfLoader};

use super::Error;
use super::object::kernel_btf;

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// A Linux version, `major.minor`: when a feature arrived upstream, or what
/// the running kernel's release says it is.
///
/// ```
/// use rover_core::KernelVersion;
/// assert!(KernelVersion::new(5, 10) < KernelVersion::new(5, 15));
/// assert_eq!(KernelVersion::new(5, 9).to_string(), "5.9");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// The major number (the 6 of 6.1).
    pub major: u32,
    /// The minor number (the 1 of 6.1).
    pub minor: u32,
}

impl KernelVersion {
    /// The version `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        KernelVersion { major, minor }
    }

    /// The version a release string starts with, as `uname -r` prints it
    /// (`6.1.0-26-amd64` is 6.1); `None` when it starts otherwise.
    ///
    /// ```
    /// use rover_core::KernelVersion;
    /// assert_eq!(KernelVersion::from_release("5.10.0-35-amd64"), Some(KernelVersion::new(5, 10)));
    /// assert_eq!(KernelVersion::from_release("6.18"), Some(KernelVersion::new(6, 18)));
    /// assert_eq!(KernelVersion::from_release("linux"), None);
    /// ```
    pub fn from_release(release: &str) -> Option<Self> {
        let mut numbers = release.trim().split(['.', '-', '+', '_']);
        let major = numbers.next()?.parse().ok()?;
        let minor: String = numbers
            .next()?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Some(KernelVersion::new(major, minor.parse().ok()?))
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One eBPF feature of the kernel that rover uses or will use. Its
/// [`name`](KernelFeature::name) is a short stable id, the kernel's own
/// name where it has one.
///
/// ```no_run
/// use rover_core::KernelFeature;
/// let profiler = rover_core::Profiler::new()?;
/// if !profiler.kernel_features().has(KernelFeature::RingBuffer) {
///     println!("no ring buffers before Linux {:?}", KernelFeature::RingBuffer.since());
/// }
/// # Ok::<(), rover_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KernelFeature {
    /// Kernel BTF at `/sys/kernel/btf/vmlinux` (`CONFIG_DEBUG_INFO_BTF`),
    /// which the off-CPU program's CO-RE relocations need.
    Btf,
    /// tracefs mounted, which the classic tracepoint needs.
    Tracefs,
    /// `BPF_PROG_TYPE_PERF_EVENT`: the on-CPU program.
    #[doc(alias = "BPF_PROG_TYPE_PERF_EVENT")]
    PerfEventPrograms,
    /// `BPF_PROG_TYPE_TRACEPOINT`: the off-CPU program's classic hook.
    #[doc(alias = "BPF_PROG_TYPE_TRACEPOINT")]
    TracepointPrograms,
    /// `tp_btf` programs (`BPF_PROG_TYPE_TRACING`, with kernel BTF): the
    /// off-CPU program's typed hook. Probed by loading and attaching one
    /// that does nothing on `sched_switch`.
    #[doc(alias = "BPF_PROG_TYPE_TRACING")]
    BtfTracepoints,
    /// `bpf_get_stackid`: stack ids of user and kernel stacks.
    GetStackid,
    /// `bpf_get_stack`: the classic hook's kernel stack, in context.
    GetStack,
    /// `bpf_get_task_stack`: the typed hook's kernel stack of the task
    /// switched in.
    GetTaskStack,
    /// `bpf_probe_read_kernel`: CO-RE reads of kernel structures.
    ProbeReadKernel,
    /// `bpf_get_current_cgroup_id`: cgroup targets.
    GetCurrentCgroupId,
    /// `bpf_task_pt_regs`: a task's saved registers (in-kernel unwinding).
    TaskPtRegs,
    /// `BPF_MAP_TYPE_RINGBUF` (process tracking).
    #[doc(alias = "BPF_MAP_TYPE_RINGBUF")]
    RingBuffer,
}

impl KernelFeature {
    /// Every feature, in the order of [`KernelFeatures`]' report.
    pub const ALL: [KernelFeature; 12] = [
        KernelFeature::Btf,
        KernelFeature::Tracefs,
        KernelFeature::PerfEventPrograms,
        KernelFeature::TracepointPrograms,
        KernelFeature::BtfTracepoints,
        KernelFeature::GetStackid,
        KernelFeature::GetStack,
        KernelFeature::GetTaskStack,
        KernelFeature::ProbeReadKernel,
        KernelFeature::GetCurrentCgroupId,
        KernelFeature::TaskPtRegs,
        KernelFeature::RingBuffer,
    ];

    /// The feature's short stable id: `btf`, `tracefs`, `perf_event`,
    /// `tracepoint`, `tp_btf`, `bpf_get_stackid`, `bpf_get_stack`,
    /// `bpf_get_task_stack`, `bpf_probe_read_kernel`,
    /// `bpf_get_current_cgroup_id`, `bpf_task_pt_regs`, `ringbuf`.
    ///
    /// ```
    /// assert_eq!(rover_core::KernelFeature::BtfTracepoints.name(), "tp_btf");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            KernelFeature::Btf => "btf",
            KernelFeature::Tracefs => "tracefs",
            KernelFeature::PerfEventPrograms => "perf_event",
            KernelFeature::TracepointPrograms => "tracepoint",
            KernelFeature::BtfTracepoints => "tp_btf",
            KernelFeature::GetStackid => "bpf_get_stackid",
            KernelFeature::GetStack => "bpf_get_stack",
            KernelFeature::GetTaskStack => "bpf_get_task_stack",
            KernelFeature::ProbeReadKernel => "bpf_probe_read_kernel",
            KernelFeature::GetCurrentCgroupId => "bpf_get_current_cgroup_id",
            KernelFeature::TaskPtRegs => "bpf_task_pt_regs",
            KernelFeature::RingBuffer => "ringbuf",
        }
    }

    /// The upstream kernel the feature arrived in (x86-64); `None` for BTF
    /// and tracefs, which are a matter of configuration and mounts.
    /// Distribution kernels may backport features; rover probes them.
    ///
    /// ```
    /// use rover_core::{KernelFeature, KernelVersion};
    /// assert_eq!(KernelFeature::GetTaskStack.since(), Some(KernelVersion::new(5, 9)));
    /// ```
    pub const fn since(self) -> Option<KernelVersion> {
        let (major, minor) = match self {
            KernelFeature::Btf | KernelFeature::Tracefs => return None,
            KernelFeature::PerfEventPrograms => (4, 9),
            KernelFeature::TracepointPrograms => (4, 7),
            KernelFeature::BtfTracepoints => (5, 5),
            KernelFeature::GetStackid => (4, 6),
            KernelFeature::GetStack => (4, 18),
            KernelFeature::GetTaskStack => (5, 9),
            KernelFeature::ProbeReadKernel => (5, 5),
            KernelFeature::GetCurrentCgroupId => (4, 18),
            KernelFeature::TaskPtRegs => (5, 15),
            KernelFeature::RingBuffer => (5, 8),
        };
        Some(KernelVersion::new(major, minor))
    }
}

impl fmt::Display for KernelFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether the kernel has a feature, as probed.
///
/// ```
/// use rover_core::Support;
/// assert_eq!(Support::Yes.to_string(), "yes");
/// assert_eq!(Support::Unknown("EPERM".into()).to_string(), "unknown: EPERM");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// The probe succeeded.
    Yes,
    /// The kernel refused the probe in the way a kernel without the feature does.
    No,
    /// The probe failed otherwise, for this reason (one line).
    Unknown(String),
}

impl Support {
    /// Whether the feature is known to be there.
    pub fn is_yes(&self) -> bool {
        matches!(self, Support::Yes)
    }

    /// Whether the feature is known to be missing.
    pub fn is_no(&self) -> bool {
        matches!(self, Support::No)
    }

    fn from_probe<E: std::error::Error>(probe: Result<bool, E>) -> Self {
        match probe {
            Ok(true) => Support::Yes,
            Ok(false) => Support::No,
            Err(error) => Support::Unknown(one_line(&error)),
        }
    }
}

impl From<bool> for Support {
    fn from(yes: bool) -> Self {
        if yes { Support::Yes } else { Support::No }
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Support::Yes => f.write_str("yes"),
            Support::No => f.write_str("no"),
            Support::Unknown(reason) => write!(f, "unknown: {reason}"),
        }
    }
}

/// What the running kernel offers of every [`KernelFeature`], probed by
/// [`Environment::check`](crate::Environment::check) (and so by
/// [`Profiler::new`](crate::Profiler::new)). A probe that fails in an
/// unexpected way is [`Support::Unknown`], never an error.
///
/// `Display` is a report of one line per feature, `name: yes`, `name: no`
/// or `name: unknown: reason`.
///
/// ```no_run
/// use rover_core::KernelFeature;
/// let profiler = rover_core::Profiler::new()?;
/// let features = profiler.kernel_features();
/// println!("Linux {}:\n{features}", features.release());
/// if !features.has(KernelFeature::BtfTracepoints) {
///     println!("off-CPU sessions will use the classic tracepoint");
/// }
/// # Ok::<(), rover_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFeatures {
    release: String,
    support: [Support; KernelFeature::ALL.len()],
}

impl KernelFeatures {
    /// Probes the running kernel. The program, helper and map probes are
    /// run once per process (they load and free a few trivial programs and
    /// maps; parsing the kernel's BTF for the `tp_btf` probe is the slowest
    /// part) unless one came out unknown; BTF, tracefs and the release are
    /// looked at every time.
    pub(crate) fn probe() -> Self {
        static PROBED: OnceLock<[Support; KernelFeature::ALL.len()]> = OnceLock::new();
        let mut support = match PROBED.get() {
            Some(probed) => probed.clone(),
            None => {
                let probed = KernelFeature::ALL.map(probe_once);
                if !probed.iter().any(|s| matches!(s, Support::Unknown(_))) {
                    let _ = PROBED.set(probed.clone());
                }
                probed
            }
        };
        let btf = Path::new(BTF_PATH).exists();
        support[index(KernelFeature::Btf)] = Support::from(btf);
        support[index(KernelFeature::Tracefs)] = Support::from(
            TRACEFS_PATHS
                .iter()
                .any(|path| Path::new(path).join("events").is_dir()),
        );
        // The program type is not enough: a tp_btf program is loaded
        // against the kernel's BTF.
        if !btf {
            support[index(KernelFeature::BtfTracepoints)] = Support::No;
        }
        let release = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|release| release.trim().to_owned())
            .unwrap_or_else(|error| format!("unknown ({error})"));
        KernelFeatures { release, support }
    }

    /// The kernel's release, as `uname -r` prints it.
    pub fn release(&self) -> &str {
        &self.release
    }

    /// The version the release starts with (see [`KernelVersion::from_release`]).
    pub fn version(&self) -> Option<KernelVersion> {
        KernelVersion::from_release(&self.release)
    }

    /// What the probe of `feature` found.
    pub fn support(&self, feature: KernelFeature) -> &Support {
        &self.support[index(feature)]
    }

    /// Whether `feature` is known to be there ([`Support::Yes`]).
    pub fn has(&self, feature: KernelFeature) -> bool {
        self.support(feature).is_yes()
    }

    /// Every feature with what its probe found, in [`KernelFeature::ALL`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = (KernelFeature, &Support)> {
        KernelFeature::ALL.into_iter().zip(&self.support)
    }

    /// Refuses, naming it, a `feature` known to be missing that `needed_by`
    /// cannot do without (`instead`: what can, if anything); an unknown one
    /// is left to the load to decide.
    pub(crate) fn require(
        &self,
        feature: KernelFeature,
        needed_by: &'static str,
        instead: Option<&'static str>,
    ) -> Result<(), Error> {
        if !self.support(feature).is_no() {
            return Ok(());
        }
        Err(match feature {
            KernelFeature::Btf => Error::NoBtf,
            KernelFeature::Tracefs => Error::NoTracefs,
            feature => Error::Unsupported {
                feature,
                needed_by,
                instead,
                release: self.release.clone(),
            },
        })
    }

    /// Sets the release, for unit tests.
    #[cfg(test)]
    pub(crate) fn set_release_for_tests(&mut self, release: &str) {
        self.release = release.into();
    }

    /// Every feature present, for unit tests that need no kernel.
    #[cfg(test)]
    pub(crate) fn all_for_tests() -> Self {
        KernelFeatures {
            release: "6.12.0-test".into(),
            support: KernelFeature::ALL.map(|_| Support::Yes),
        }
    }

    #[cfg(test)]
    pub(crate) fn set_for_tests(&mut self, feature: KernelFeature, support: Support) {
        self.support[index(feature)] = support;
    }
}

impl fmt::Display for KernelFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (feature, support) in self.iter() {
            writeln!(f, "{feature}: {support}")?;
        }
        Ok(())
    }
}

/// Where `feature` is in [`KernelFeature::ALL`], which lists the variants
/// in the order they are declared.
fn index(feature: KernelFeature) -> usize {
    feature as usize
}

/// The probe of `feature` that needs syscalls; BTF and tracefs, which
/// [`KernelFeatures::probe`] looks at every time, come out `No` here.
fn probe_once(feature: KernelFeature) -> Support {
    use KernelFeature as F;
    // Tracing programs cannot probe helpers (they need an attach target);
    // tracepoint programs have the tracing helper set, perf_event programs
    // their own bpf_get_stackid and bpf_get_stack, the ones on-CPU calls.
    let (kind, helper) = match feature {
        F::Btf | F::Tracefs => return Support::No,
        F::PerfEventPrograms => {
            return Support::from_probe(is_program_supported(ProgramType::PerfEvent));
        }
        F::TracepointPrograms => {
            return Support::from_probe(is_program_supported(ProgramType::TracePoint));
        }
        F::BtfTracepoints => return probe_btf_tracepoint(),
        F::RingBuffer => return Support::from_probe(is_map_supported(MapType::RingBuf)),
        F::GetStackid => (ProgramType::PerfEvent, BpfHelper::BPF_FUNC_get_stackid),
        F::GetStack => (ProgramType::PerfEvent, BpfHelper::BPF_FUNC_get_stack),
        F::GetTaskStack => (ProgramType::TracePoint, BpfHelper::BPF_FUNC_get_task_stack),
        F::ProbeReadKernel => (
            ProgramType::TracePoint,
            BpfHelper::BPF_FUNC_probe_read_kernel,
        ),
        F::GetCurrentCgroupId => (
            ProgramType::TracePoint,
            BpfHelper::BPF_FUNC_get_current_cgroup_id,
        ),
        F::TaskPtRegs => (ProgramType::TracePoint, BpfHelper::BPF_FUNC_task_pt_regs),
    };
    Support::from_probe(is_helper_supported(kind, helper))
}

const PROBE_TP_BTF: &str = "rover_probe_tp_btf";

/// Loads and attaches a `tp_btf/sched_switch` program that does nothing.
/// aya's probe of the tracing program type would load an fentry program,
/// which some kernels refuse (EPERM, before the verifier) where tp_btf works.
fn probe_btf_tracepoint() -> Support {
    let Ok(btf) = kernel_btf() else {
        return Support::No;
    };
    let mut ebpf = match EbpfLoader::new()
        .btf(Some(btf))
        .load(rover_ebpf::PROBE_OBJECT)
    {
        Ok(ebpf) => ebpf,
        Err(error) => return Support::Unknown(one_line(&error)),
    };
    let Some(program) = ebpf.program_mut(PROBE_TP_BTF) else {
        return Support::Unknown(format!("the probe object has no {PROBE_TP_BTF}"));
    };
    let attached = <&mut BtfTracePoint>::try_from(program).and_then(|program| {
        program.load("sched_switch", btf)?;
        program.attach().map(drop)
    });
    match attached {
        Ok(()) => Support::Yes,
        // Before 5.5 the kernel's BTF has no `btf_trace_*` types, and the
        // kernel no tracing program type: it refuses it before verifying.
        Err(ProgramError::Btf(BtfError::UnknownBtfTypeName { .. })) => Support::No,
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) if io_error.raw_os_error() == Some(libc::EINVAL)
            && format!("{verifier_log:?}").trim().is_empty() =>
        {
            Support::No
        }
        Err(error) => Support::Unknown(one_line(&error)),
    }
}

/// An error and its causes on one line, for a report of one line per feature.
fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_releases() {
        let version = |release| KernelVersion::from_release(release);
        assert_eq!(version("5.10.0-35-amd64"), Some(KernelVersion::new(5, 10)));
        assert_eq!(
            version("6.1.0-26-cloud-amd64"),
            Some(KernelVersion::new(6, 1))
        );
        assert_eq!(version("6.18.44-fc-v769"), Some(KernelVersion::new(6, 18)));
        assert_eq!(version("6.12-rc1"), Some(KernelVersion::new(6, 12)));
        assert_eq!(version("4.19.0+\n"), Some(KernelVersion::new(4, 19)));
        assert_eq!(version("6"), None);
        assert_eq!(version("unknown (no such file)"), None);
        assert!(KernelVersion::new(5, 9) < KernelVersion::new(5, 10));
        assert!(KernelVersion::new(5, 15) < KernelVersion::new(6, 1));
    }

    #[test]
    fn names_are_unique_and_every_feature_is_listed_once() {
        let mut names: Vec<&str> = KernelFeature::ALL.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KernelFeature::ALL.len());
        for (i, feature) in KernelFeature::ALL.into_iter().enumerate() {
            assert_eq!(index(feature), i);
        }
    }

    #[test]
    fn the_report_is_one_line_per_feature() {
        let mut features = KernelFeatures::all_for_tests();
        features.set_for_tests(KernelFeature::RingBuffer, Support::No);
        features.set_for_tests(
            KernelFeature::TaskPtRegs,
            Support::Unknown("bpf_prog_load failed: Operation not permitted".into()),
        );
        let report = features.to_string();
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines.len(), KernelFeature::ALL.len(), "{report}");
        assert_eq!(lines[0], "btf: yes");
        assert!(lines.contains(&"ringbuf: no"), "{report}");
        assert!(
            lines.contains(
                &"bpf_task_pt_regs: unknown: bpf_prog_load failed: Operation not permitted"
            ),
            "{report}"
        );
    }

    #[test]
    fn an_unknown_reason_stays_on_one_line() {
        #[derive(Debug, thiserror::Error)]
        #[error("probe failed\n  twice")]
        struct Failed(#[source] std::io::Error);
        let support = Support::from_probe::<Failed>(Err(Failed(std::io::Error::other("EPERM"))));
        assert_eq!(
            support,
            Support::Unknown("probe failed twice: EPERM".into())
        );
    }

    #[test]
    fn only_a_missing_feature_is_refused_and_by_its_name() {
        let mut features = KernelFeatures::all_for_tests();
        assert!(
            features
                .require(KernelFeature::GetTaskStack, "x", None)
                .is_ok()
        );
        features.set_for_tests(KernelFeature::GetTaskStack, Support::Unknown("?".into()));
        assert!(
            features
                .require(KernelFeature::GetTaskStack, "x", None)
                .is_ok()
        );
        features.set_for_tests(KernelFeature::GetTaskStack, Support::No);
        let error = features
            .require(
                KernelFeature::GetTaskStack,
                "OffCpuHook::BtfTracepoint",
                Some("leave the hook unset"),
            )
            .unwrap_err();
        assert!(error.is_kernel_feature());
        let message = error.to_string();
        assert!(
            message.contains("bpf_get_task_stack")
                && message.contains("Linux 5.9")
                && message.contains("6.12.0-test")
                && message.contains("OffCpuHook::BtfTracepoint")
                && message.ends_with(": leave the hook unset"),
            "{message}"
        );
        features.set_for_tests(KernelFeature::Btf, Support::No);
        assert!(matches!(
            features.require(KernelFeature::Btf, "x", None),
            Err(Error::NoBtf)
        ));
        features.set_for_tests(KernelFeature::Tracefs, Support::No);
        assert!(matches!(
            features.require(KernelFeature::Tracefs, "x", None),
            Err(Error::NoTracefs)
        ));
    }
}
