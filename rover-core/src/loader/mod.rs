//! The loader: a small, typed layer over aya that loads rover's eBPF
//! programs, attaches them, and drains what they counted.
//!
//! This is the layer rover's sessions are built on; most users want the
//! sessions instead. It is public so that tools and benchmarks can drive
//! the kernel side directly: [`OnCpuProgram`] and [`OffCpuProgram`] attach
//! from a config, [`OnCpuProgram::drain`] / [`OffCpuProgram::drain`] swap the
//! double buffer and return the last window as one [`RawWindow`] type for
//! both (its values are the profile model's [`SampleValue`](crate::profile::SampleValue)),
//! and dropping a program detaches it and closes every fd. [`Program`] is
//! what both have in common. [`ProcEventsProgram`] is the process events
//! program, read from its ring buffer (`crate::process::events` streams it).
//!
//! A configuration is validated ([`OnCpuConfig::validate`],
//! [`OffCpuConfig::validate`]) before any privilege or kernel check, so a
//! wrong setting is an [`Error::Config`] with or without root.
//!
//! Kernel requirements: root or CAP_BPF with CAP_PERFMON; for the off-CPU
//! program, BTF (`/sys/kernel/btf/vmlinux`), and tracefs where BTF
//! tracepoints or `bpf_get_task_stack` are missing. [`KernelFeatures`]
//! says what the kernel has.

mod buffer;
mod environment;
mod features;
mod object;
mod offcpu;
mod oncpu;
mod procevents;
mod stack_mode;
mod states;
mod targets;
pub(crate) mod unwind;
mod validate;
mod window;

pub use environment::{Environment, Warning};
pub use features::{KernelFeature, KernelFeatures, KernelVersion, Support};
pub use offcpu::{OffCpuConfig, OffCpuHook, OffCpuProgram};
pub use oncpu::{OnCpuConfig, OnCpuProgram};
pub(crate) use procevents::{BootClock, boot_ns, clock_ticks_per_second};
pub use procevents::{DEFAULT_RING_SIZE, ProcEventsConfig, ProcEventsProgram, ProcessHook};
pub use stack_mode::StackMode;
pub use states::TaskStates;
pub(crate) use targets::ResolvedTargets;
pub use targets::Targets;
pub use unwind::{MAX_UNWIND_ROWS, MIN_UNWIND_KERNEL, TABLE_CACHE_BYTES};
pub use validate::Limits;
pub use window::{ErrorCounts, RawEntry, RawWindow, StackLoss, StackSlot, UserWalk, WalkStop};

use crate::Error;
use crate::error::ConfigError;
use crate::profile::ProfileKind;

/// What sessions need of an attached program, on-CPU or off-CPU alike, so
/// that a session (or a tool) holds one `Box<dyn Program>`.
///
/// ```no_run
/// use rover_core::loader::{OnCpuConfig, OnCpuProgram, Program, Targets};
///
/// let mut program: Box<dyn Program> = Box::new(OnCpuProgram::attach(&OnCpuConfig {
///     targets: Targets::Pids(vec![1234]),
///     ..OnCpuConfig::default()
/// })?);
/// std::thread::sleep(std::time::Duration::from_secs(1));
/// let window = program.drain()?;
/// println!("{:?}: {} keys", program.kind(), window.entries.len());
/// # Ok::<(), rover_core::Error>(())
/// ```
pub trait Program: Send {
    /// On-CPU or off-CPU: what the values of its windows are.
    fn kind(&self) -> ProfileKind;

    /// Replaces the target processes while the program runs. Only for a
    /// program attached with [`Targets::Pids`]; the pids are checked as at
    /// attach.
    fn set_targets(&mut self, pids: &[u32]) -> Result<(), Error>;

    /// Swaps the halves of the double buffer and returns what was counted in
    /// the half the program left.
    fn drain(&mut self) -> Result<RawWindow, Error>;

    /// How it walks user stacks ([`StackMode::Dwarf`] or
    /// [`StackMode::FramePointers`]), and why an `Auto` program walks frame
    /// pointers, when it does.
    fn stack_walk(&self) -> (StackMode, Option<String>) {
        (StackMode::FramePointers, None)
    }
}

/// Capacities of a program's maps, fixed at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    /// Distinct keys (thread × stacks × state) per window, per half.
    pub counts: u32,
    /// Distinct stacks per stack map (two per program, about 1 KiB each).
    pub stacks: u32,
    /// Target pids.
    pub pids: u32,
    /// Off-CPU: threads off CPU at once that are followed.
    pub start: u32,
    /// Unwind table rows the kernel holds ([`StackMode::Dwarf`]), 16 bytes
    /// each, shared by the tables of every module the targets map. When a
    /// new table does not fit, the least recently used are evicted.
    pub unwind_rows: u32,
    /// Processes whose mappings the unwinder holds (4 KiB each,
    /// preallocated: 4 MiB by default).
    pub unwind_processes: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes {
            counts: 16384,
            stacks: 8192,
            pids: 1024,
            start: 16384,
            unwind_rows: 1 << 20,
            unwind_processes: 1024,
        }
    }
}

impl MapSizes {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("counts", self.counts),
            ("stacks", self.stacks),
            ("pids", self.pids),
            ("start", self.start),
            ("unwind_rows", self.unwind_rows),
            ("unwind_processes", self.unwind_processes),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroMapSize(name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sessions drain programs from a thread of their own.
    #[test]
    fn programs_move_to_a_drain_thread() {
        fn send<T: Send>() {}
        send::<OnCpuProgram>();
        send::<OffCpuProgram>();
        send::<RawWindow>();
        send::<Error>();
    }

    #[test]
    fn map_sizes_must_be_positive() {
        assert!(MapSizes::default().check().is_ok());
        let error = MapSizes {
            stacks: 0,
            ..MapSizes::default()
        }
        .check()
        .unwrap_err();
        assert_eq!(error.to_string(), "MapSizes::stacks must be at least 1");
    }
}
