//! The process events program: new processes, execs, exits and executable
//! mappings, read from its ring buffer as [`ProcessEvent`]s.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use rover_ebpf::abi::{self, ProcEvent, ProcExec};

use super::object::{kernel_btf, missing_in_object, take_map};
use super::window::comm_string;
use super::{Environment, Error, KernelFeature, KernelFeatures};
use crate::error::ConfigError;
use crate::process::events::{
    DroppedEvents, ExecMapping, ExitStatus, ProcessEvent, ProcessEventKind,
};

const RING: &str = "procevents_ring";
const DROPS: &str = "procevents_drops";
const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The three scheduler hooks, as (tp_btf program, classic program, the
/// tracepoint's name, the classic tracepoint's category and name).
const HOOKS: [(&str, &str, &str, &str, &str); 3] = [
    (
        "rover_proc_fork_btf",
        "rover_proc_fork_tp",
        "sched_process_fork",
        "task",
        "task_newtask",
    ),
    (
        "rover_proc_exec_btf",
        "rover_proc_exec_tp",
        "sched_process_exec",
        "sched",
        "sched_process_exec",
    ),
    (
        "rover_proc_exit_btf",
        "rover_proc_exit_tp",
        "sched_process_exit",
        "sched",
        "sched_process_exit",
    ),
];

/// The syscall tracepoints of executable mappings, each exit attached
/// before its enter so that nothing is remembered that no exit would see.
const MAP_HOOKS: [(&str, &str); 4] = [
    ("rover_proc_mmap_exit", "sys_exit_mmap"),
    ("rover_proc_mmap_enter", "sys_enter_mmap"),
    ("rover_proc_mprotect_exit", "sys_exit_mprotect"),
    ("rover_proc_mprotect_enter", "sys_enter_mprotect"),
];

/// The default ring buffer: 256 KiB, about 3 200 fork or exit records (72
/// bytes and an 8-byte header each) or 780 exec records (328 bytes).
pub const DEFAULT_RING_SIZE: u32 = 256 * 1024;

/// Where the process events program hooks the scheduler's fork, exec and
/// exit tracepoints. Executable mappings always come from the classic
/// syscall tracepoints (`syscalls/sys_{enter,exit}_{mmap,mprotect}`), which
/// have no BTF-typed form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcessHook {
    /// `tp_btf/sched_process_{fork,exec,exit}` (Linux 5.5+ with BTF).
    BtfTracepoint,
    /// The classic tracepoints `task/task_newtask`,
    /// `sched/sched_process_exec` and `sched/sched_process_exit` (need
    /// tracefs). A fork's start time is found through the parent's list of
    /// children, and is unknown for a child created with `CLONE_PARENT`.
    Tracepoint,
}

/// How to run the process events program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcEventsConfig {
    /// The ring buffer's size in bytes: a power of two, at least one page
    /// (default [`DEFAULT_RING_SIZE`]).
    pub ring_size: u32,
    /// The hook to use; `None` picks the BTF tracepoints where the kernel
    /// has them (falling back to the classic ones if they fail to attach).
    pub hook: Option<ProcessHook>,
    /// Whether to report executable mappings (default yes).
    pub map_exec: bool,
}

impl Default for ProcEventsConfig {
    fn default() -> Self {
        ProcEventsConfig {
            ring_size: DEFAULT_RING_SIZE,
            hook: None,
            map_exec: true,
        }
    }
}

impl ProcEventsConfig {
    /// Checks the settings, without privileges or a kernel.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let page = page_size();
        if !self.ring_size.is_power_of_two() || u64::from(self.ring_size) < page {
            return Err(ConfigError::RingBufferSize {
                size: self.ring_size,
                page,
            });
        }
        Ok(())
    }
}

/// The attached process events program. Dropping it detaches every
/// program and closes every fd.
///
/// ```no_run
/// use rover_core::loader::{ProcEventsConfig, ProcEventsProgram};
///
/// let mut program = ProcEventsProgram::attach(&ProcEventsConfig::default())?;
/// std::thread::sleep(std::time::Duration::from_secs(1));
/// for event in program.read(usize::MAX) {
///     println!("{} {:?}", event.pid, event.kind);
/// }
/// println!("{} dropped", program.dropped()?.total());
/// # Ok::<(), rover_core::Error>(())
/// ```
pub struct ProcEventsProgram {
    ring: RingBuf<MapData>,
    drops: PerCpuArray<MapData, u64>,
    hook: ProcessHook,
    map_exec_unavailable: Option<String>,
    clock: BootClock,
    // Holds the programs and their links; dropped last.
    _ebpf: Ebpf,
}

impl ProcEventsProgram {
    /// Validates the configuration, checks privileges and the kernel's
    /// features (BTF, ring buffers; tp_btf or tracefs), loads the programs
    /// and attaches them.
    pub fn attach(config: &ProcEventsConfig) -> Result<Self, Error> {
        config.validate()?;
        Self::attach_checked(config, &Environment::check()?)
    }

    /// Attaches a validated configuration in an environment checked already.
    pub(crate) fn attach_checked(
        config: &ProcEventsConfig,
        environment: &Environment,
    ) -> Result<Self, Error> {
        let features = &environment.features;
        features.require(KernelFeature::Btf, PROGRAM, None)?;
        features.require(KernelFeature::RingBuffer, PROGRAM, Some(POLL))?;
        features.require(KernelFeature::ProbeReadKernel, PROGRAM, Some(POLL))?;
        match config.hook {
            Some(ProcessHook::BtfTracepoint) => {
                features.require(KernelFeature::BtfTracepoints, BTF_HOOK, Some(LEAVE_UNSET))?;
                Self::load(config, ProcessHook::BtfTracepoint)
            }
            Some(ProcessHook::Tracepoint) => {
                require_classic(features)?;
                Self::load(config, ProcessHook::Tracepoint)
            }
            None if !features.support(KernelFeature::BtfTracepoints).is_no() => {
                match Self::load(config, ProcessHook::BtfTracepoint) {
                    Ok(program) => Ok(program),
                    Err(_) => {
                        require_classic(features)?;
                        Self::load(config, ProcessHook::Tracepoint)
                    }
                }
            }
            None => {
                require_classic(features)?;
                Self::load(config, ProcessHook::Tracepoint)
            }
        }
    }

    fn load(config: &ProcEventsConfig, hook: ProcessHook) -> Result<Self, Error> {
        let btf = kernel_btf()?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(btf))
            .map_max_entries(RING, config.ring_size)
            // common.h's pid map, which this program does not use.
            .map_max_entries("target_pids", 1)
            .load(rover_ebpf::PROCEVENTS_OBJECT)
            .map_err(|source| Error::Load {
                object: "procevents",
                source: Box::new(source),
            })?;
        let ring = take_map(&mut ebpf, RING, RingBuf::try_from)?;
        let drops = take_map(&mut ebpf, DROPS, PerCpuArray::try_from)?;
        for (btf_name, tp_name, btf_target, category, name) in HOOKS {
            match hook {
                ProcessHook::BtfTracepoint => {
                    let program: &mut BtfTracePoint = program_mut(&mut ebpf, btf_name)?;
                    program
                        .load(btf_target, btf)
                        .map_err(Error::program(btf_name))?;
                    program.attach().map_err(Error::program(btf_name))?;
                }
                ProcessHook::Tracepoint => {
                    let program: &mut TracePoint = program_mut(&mut ebpf, tp_name)?;
                    program.load().map_err(Error::program(tp_name))?;
                    program
                        .attach(category, name)
                        .map_err(Error::program(tp_name))?;
                }
            }
        }
        let map_exec_unavailable = if config.map_exec {
            attach_map_hooks(&mut ebpf).err()
        } else {
            Some("not asked for (map_exec(false))".to_owned())
        };
        Ok(ProcEventsProgram {
            ring,
            drops,
            hook,
            map_exec_unavailable,
            clock: BootClock::now(),
            _ebpf: ebpf,
        })
    }

    /// The hooks the program is attached to.
    pub fn hook(&self) -> ProcessHook {
        self.hook
    }

    /// Why no [`ProcessEventKind::MapExec`] events come, when none can:
    /// the kernel has no syscall tracepoints (`CONFIG_FTRACE_SYSCALLS`
    /// off), or they were not asked for.
    pub fn map_exec_unavailable(&self) -> Option<&str> {
        self.map_exec_unavailable.as_deref()
    }

    /// The ring buffer's fd, readable (for `poll`/`epoll`) when records
    /// are waiting.
    pub fn ring_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }

    /// Takes up to `max` records waiting in the ring buffer, in the order
    /// the kernel reserved them; never blocks.
    pub fn read(&mut self, max: usize) -> Vec<ProcessEvent> {
        let mut events = Vec::new();
        while events.len() < max {
            let Some(item) = self.ring.next() else { break };
            if let Some(event) = decode(&item, &self.clock) {
                events.push(event);
            }
        }
        events
    }

    /// What the kernel side lost so far because the ring buffer was full.
    pub fn dropped(&self) -> Result<DroppedEvents, Error> {
        let count = |index: u32| -> Result<u64, Error> {
            let values = self.drops.get(&index, 0).map_err(Error::map(DROPS))?;
            Ok(values.iter().sum())
        };
        Ok(DroppedEvents {
            fork: count(abi::PROC_DROP_FORK)?,
            exec: count(abi::PROC_DROP_EXEC)?,
            exit: count(abi::PROC_DROP_EXIT)?,
            map_exec: count(abi::PROC_DROP_MAP_EXEC)?,
        })
    }
}

const PROGRAM: &str = "the process events program";
const POLL: &str = "use EventSource::Poll (or Auto, which falls back to it)";
const BTF_HOOK: &str = "the process events hook ProcessHook::BtfTracepoint";
const CLASSIC_HOOK: &str = "the process events hook ProcessHook::Tracepoint";
const LEAVE_UNSET: &str =
    "leave the hook unset, and rover uses the classic tracepoints (ProcessHook::Tracepoint)";

fn require_classic(features: &KernelFeatures) -> Result<(), Error> {
    features.require(KernelFeature::TracepointPrograms, CLASSIC_HOOK, None)?;
    features.require(KernelFeature::Tracefs, CLASSIC_HOOK, None)
}

fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, Error>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| missing_in_object(name))?
        .try_into()
        .map_err(Error::program(name))
}

/// Attaches the syscall tracepoint programs, or says why they cannot be
/// (and unloads those that were), leaving the rest of the program working.
fn attach_map_hooks(ebpf: &mut Ebpf) -> Result<(), String> {
    let tracefs = TRACEFS_PATHS
        .iter()
        .map(Path::new)
        .find(|path| path.join("events").is_dir());
    if let Some(tracefs) = tracefs
        && !tracefs.join("events/syscalls/sys_enter_mmap").is_dir()
    {
        return Err(format!(
            "this kernel has no syscall tracepoints ({} is missing: a kernel built without \
             CONFIG_FTRACE_SYSCALLS)",
            tracefs.join("events/syscalls/sys_enter_mmap").display()
        ));
    }
    let mut attached = Vec::new();
    let mut failure = None;
    for (name, tracepoint) in MAP_HOOKS {
        let result = program_mut::<TracePoint>(ebpf, name).and_then(|program| {
            program.load().map_err(Error::program(name))?;
            program
                .attach("syscalls", tracepoint)
                .map_err(Error::program(name))
        });
        attached.push(name);
        if let Err(error) = result {
            failure = Some(format!(
                "attaching to syscalls/{tracepoint} failed: {error}"
            ));
            break;
        }
    }
    let Some(failure) = failure else {
        return Ok(());
    };
    for name in attached {
        if let Ok(program) = program_mut::<TracePoint>(ebpf, name) {
            // A program that never loaded has nothing to unload.
            let _ = program.unload();
        }
    }
    Err(failure)
}

/// One ring buffer record as an event; `None` for a record too short for
/// its kind or of a kind this loader does not know.
fn decode(bytes: &[u8], clock: &BootClock) -> Option<ProcessEvent> {
    let header = read_pod::<ProcEvent>(bytes)?;
    let kind = match header.kind {
        abi::PROC_FORK => ProcessEventKind::Fork {
            parent: header.ppid,
        },
        abi::PROC_EXEC => {
            let exec = read_pod::<ProcExec>(bytes)?;
            let name = &exec.filename;
            let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            ProcessEventKind::Exec {
                filename: path_from_bytes(&name[..len]),
            }
        }
        abi::PROC_EXIT => ProcessEventKind::Exit {
            status: Some(ExitStatus::from_raw(header.exit_code)),
        },
        abi::PROC_MAP_EXEC => ProcessEventKind::MapExec {
            addr: header.addr,
            len: header.len,
            mapping: if header.flags & abi::PROC_MAP_MPROTECT != 0 {
                ExecMapping::Mprotect
            } else if header.flags & abi::PROC_MAP_ANONYMOUS != 0 {
                ExecMapping::Anonymous
            } else {
                ExecMapping::File
            },
        },
        _ => return None,
    };
    Some(ProcessEvent {
        kind,
        pid: header.pid,
        tid: header.tid,
        comm: comm_string(&header.comm),
        boot_ns: header.time_ns,
        time: clock.system_time(header.time_ns),
        start_ticks: (header.start_ns != 0).then(|| ticks_of_ns(header.start_ns)),
        info: None,
    })
}

fn read_pod<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: `bytes` holds at least size_of::<T>() bytes, T is Pod (any
    // bit pattern is valid), and read_unaligned needs no alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn path_from_bytes(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// Clock ticks per second of /proc/PID/stat's times (`USER_HZ`).
pub(crate) fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Nanoseconds since boot as /proc/PID/stat's starttime (`nsec_to_clock_t`).
pub(crate) fn ticks_of_ns(ns: u64) -> u64 {
    ns / (1_000_000_000 / clock_ticks_per_second())
}

/// `CLOCK_BOOTTIME` now, in nanoseconds: the clock of the kernel's records.
pub(crate) fn boot_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; both clocks exist on
    // every Linux rover runs on (BOOTTIME since 2.6.39).
    unsafe { libc::clock_gettime(clock, &mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// Turns boot-time nanoseconds into wall-clock time, with the offset
/// between the two clocks taken once (a later jump of the wall clock is not
/// followed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BootClock {
    /// Wall-clock nanoseconds since the epoch at boot.
    boot_unix_ns: u64,
}

impl BootClock {
    pub(crate) fn now() -> Self {
        let boot = boot_ns();
        let unix = clock_ns(libc::CLOCK_REALTIME);
        BootClock {
            boot_unix_ns: unix.saturating_sub(boot),
        }
    }

    pub(crate) fn system_time(&self, boot_ns: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(self.boot_unix_ns.saturating_add(boot_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_are_powers_of_two_of_at_least_a_page() {
        let size = |ring_size| {
            ProcEventsConfig {
                ring_size,
                ..ProcEventsConfig::default()
            }
            .validate()
        };
        assert!(size(DEFAULT_RING_SIZE).is_ok());
        assert!(size(page_size() as u32).is_ok());
        assert!(matches!(
            size(3 * 4096),
            Err(ConfigError::RingBufferSize { size: 12288, .. })
        ));
        assert!(size(1024).is_err());
        assert!(size(0).is_err());
    }

    fn record(kind: u32) -> ProcEvent {
        let mut comm = [0u8; abi::COMM_LEN];
        comm[..4].copy_from_slice(b"true");
        ProcEvent {
            kind,
            pid: 41,
            tid: 42,
            ppid: 7,
            time_ns: 5_000_000_000,
            start_ns: 4_990_000_000,
            addr: 0x7f00_0000_0000,
            len: 4096,
            exit_code: 7 << 8,
            flags: 0,
            comm,
        }
    }

    fn bytes<T: aya::Pod>(value: &T) -> Vec<u8> {
        // SAFETY: a Pod value's bytes, read for its size.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn records_decode_by_kind() {
        let clock = BootClock { boot_unix_ns: 0 };
        let fork = decode(&bytes(&record(abi::PROC_FORK)), &clock).unwrap();
        assert_eq!(fork.kind, ProcessEventKind::Fork { parent: 7 });
        assert_eq!((fork.pid, fork.tid, fork.comm.as_str()), (41, 42, "true"));
        assert_eq!(fork.start_ticks, Some(ticks_of_ns(4_990_000_000)));
        assert_eq!(fork.time, SystemTime::UNIX_EPOCH + Duration::from_secs(5));
        let exit = decode(&bytes(&record(abi::PROC_EXIT)), &clock).unwrap();
        let ProcessEventKind::Exit {
            status: Some(status),
        } = exit.kind
        else {
            panic!("{exit:?}");
        };
        assert_eq!((status.code(), status.signal()), (Some(7), None));
        let mut exec = ProcExec {
            event: record(abi::PROC_EXEC),
            filename: [0; abi::PROC_FILENAME_LEN],
        };
        exec.filename[..9].copy_from_slice(b"/bin/true");
        let event = decode(&bytes(&exec), &clock).unwrap();
        assert_eq!(
            event.kind,
            ProcessEventKind::Exec {
                filename: "/bin/true".into()
            }
        );
        // An exec record cut short, or a kind from a newer object: skipped.
        assert!(decode(&bytes(&record(abi::PROC_EXEC)), &clock).is_none());
        assert!(decode(&bytes(&record(99)), &clock).is_none());
        let mut map = record(abi::PROC_MAP_EXEC);
        map.flags = abi::PROC_MAP_ANONYMOUS;
        let event = decode(&bytes(&map), &clock).unwrap();
        assert_eq!(
            event.kind,
            ProcessEventKind::MapExec {
                addr: 0x7f00_0000_0000,
                len: 4096,
                mapping: ExecMapping::Anonymous
            }
        );
        let mut unknown_start = record(abi::PROC_FORK);
        unknown_start.start_ns = 0;
        let event = decode(&bytes(&unknown_start), &clock).unwrap();
        assert_eq!(event.start_ticks, None);
    }
}
