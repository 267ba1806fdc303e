//! The kernel program behind a session, on-CPU or off-CPU, drained into one
//! shape so the rest of the session does not care which it is.

use crate::loader::{
    ErrorCounts, LoaderError, OffCpuProgram, OffCpuWindow, OnCpuProgram, OnCpuWindow, StackSlot,
    TaskState,
};
use crate::profile::{OffCpuState, ProfileKind, SampleValue};

/// An attached program of either kind (boxed: each holds about a kilobyte
/// of map handles, and the drain thread moves it once).
pub(crate) enum Program {
    OnCpu(Box<OnCpuProgram>),
    OffCpu(Box<OffCpuProgram>),
}

/// One counted key of a drained window.
pub(crate) struct RawEntry {
    pub tgid: u32,
    pub tid: u32,
    pub comm: String,
    pub user: StackSlot,
    pub kernel: StackSlot,
    pub value: SampleValue,
}

/// A drained window of either program.
pub(crate) struct RawWindow {
    pub entries: Vec<RawEntry>,
    pub stacks: Vec<Vec<u64>>,
    pub errors: ErrorCounts,
}

impl Program {
    pub fn kind(&self) -> ProfileKind {
        match self {
            Program::OnCpu(_) => ProfileKind::OnCpu,
            Program::OffCpu(_) => ProfileKind::OffCpu,
        }
    }

    /// Replaces the target pids of a program attached to pids.
    pub fn set_targets(&mut self, pids: &[u32]) -> Result<(), LoaderError> {
        match self {
            Program::OnCpu(program) => program.set_targets(pids),
            Program::OffCpu(program) => program.set_targets(pids),
        }
    }

    pub fn drain(&mut self) -> Result<RawWindow, LoaderError> {
        match self {
            Program::OnCpu(program) => Ok(RawWindow::from_on_cpu(program.drain()?)),
            Program::OffCpu(program) => Ok(RawWindow::from_off_cpu(program.drain()?)),
        }
    }
}

impl RawWindow {
    pub fn from_on_cpu(window: OnCpuWindow) -> Self {
        RawWindow {
            entries: window
                .entries
                .into_iter()
                .map(|e| RawEntry {
                    tgid: e.tgid,
                    tid: e.tid,
                    comm: e.comm,
                    user: e.user_stack,
                    kernel: e.kernel_stack,
                    value: SampleValue::OnCpu { samples: e.samples },
                })
                .collect(),
            stacks: window.stacks,
            errors: ErrorCounts::sum(&window.errors),
        }
    }

    pub fn from_off_cpu(window: OffCpuWindow) -> Self {
        RawWindow {
            entries: window
                .entries
                .into_iter()
                .map(|e| RawEntry {
                    tgid: e.tgid,
                    tid: e.tid,
                    comm: e.comm,
                    user: e.user_stack,
                    kernel: e.kernel_stack,
                    value: SampleValue::OffCpu {
                        state: off_cpu_state(e.state),
                        switches: e.switches,
                        nanos: e.total_ns,
                    },
                })
                .collect(),
            stacks: window.stacks,
            errors: ErrorCounts::sum(&window.errors),
        }
    }
}

fn off_cpu_state(state: TaskState) -> OffCpuState {
    match state {
        TaskState::Preempted => OffCpuState::Preempted,
        TaskState::Interruptible => OffCpuState::Interruptible,
        TaskState::Uninterruptible => OffCpuState::Uninterruptible,
        TaskState::Other => OffCpuState::Other,
    }
}
