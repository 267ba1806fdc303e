//! The loader: a small, typed layer over aya that loads rover's eBPF
//! programs, attaches them, and drains what they counted.
//!
//! This is the layer rover's sessions are built on; most users want the
//! sessions instead. It is public so that tools and benchmarks can drive
//! the kernel side directly: [`OnCpuProgram`] and [`OffCpuProgram`] attach
//! from a config, [`OnCpuProgram::drain`] / [`OffCpuProgram::drain`] swap the
//! double buffer and return the last window as plain data, and dropping a
//! program detaches it and closes every fd.
//!
//! Kernel requirements: BTF (`/sys/kernel/btf/vmlinux`), root or CAP_BPF
//! with CAP_PERFMON, and tracefs only where BTF tracepoints are missing.

mod buffer;
mod environment;
mod error;
mod object;
mod offcpu;
mod oncpu;
mod states;
mod targets;
mod window;

pub use environment::Environment;
pub use error::LoaderError;
pub use offcpu::{OffCpuConfig, OffCpuEntry, OffCpuHook, OffCpuProgram, OffCpuWindow};
pub use oncpu::{OnCpuConfig, OnCpuEntry, OnCpuProgram, OnCpuWindow};
pub use states::{TaskState, TaskStates};
pub use targets::Targets;
pub use window::{ErrorCounts, StackLoss, StackSlot};

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
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes {
            counts: 16384,
            stacks: 8192,
            pids: 1024,
            start: 16384,
        }
    }
}

impl MapSizes {
    fn check(&self) -> Result<(), LoaderError> {
        for (name, value) in [
            ("counts", self.counts),
            ("stacks", self.stacks),
            ("pids", self.pids),
            ("start", self.start),
        ] {
            if value == 0 {
                return Err(LoaderError::InvalidConfig(format!(
                    "MapSizes::{name} must be at least 1"
                )));
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
        send::<OnCpuWindow>();
        send::<OffCpuWindow>();
        send::<LoaderError>();
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
        assert_eq!(
            error.to_string(),
            "invalid configuration: MapSizes::stacks must be at least 1"
        );
    }
}
