//! Task states of an off-CPU block, and sets of them to filter on.

use std::ops::BitOr;

use rover_ebpf::abi;

/// The state a task was in when it went off CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskState {
    /// Still runnable: preempted, or yielded the CPU.
    Preempted,
    /// Interruptible sleep: waiting on a lock, a socket, a timer, a child...
    Interruptible,
    /// Uninterruptible sleep, typically disk I/O.
    Uninterruptible,
    /// Stopped, traced, or an idle kernel wait.
    Other,
}

impl TaskState {
    pub(crate) fn from_bit(bit: u32) -> Self {
        match bit {
            abi::STATE_PREEMPTED => TaskState::Preempted,
            abi::STATE_INTERRUPTIBLE => TaskState::Interruptible,
            abi::STATE_UNINTERRUPTIBLE => TaskState::Uninterruptible,
            _ => TaskState::Other,
        }
    }
}

/// A set of [`TaskState`]s, e.g. `TaskStates::INTERRUPTIBLE | TaskStates::UNINTERRUPTIBLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskStates(u32);

impl TaskStates {
    /// Preempted or yielded.
    pub const PREEMPTED: TaskStates = TaskStates(abi::STATE_PREEMPTED);
    /// Interruptible sleep.
    pub const INTERRUPTIBLE: TaskStates = TaskStates(abi::STATE_INTERRUPTIBLE);
    /// Uninterruptible sleep.
    pub const UNINTERRUPTIBLE: TaskStates = TaskStates(abi::STATE_UNINTERRUPTIBLE);
    /// Any other state.
    pub const OTHER: TaskStates = TaskStates(abi::STATE_OTHER);
    /// Every state.
    pub const ALL: TaskStates = TaskStates(
        abi::STATE_PREEMPTED
            | abi::STATE_INTERRUPTIBLE
            | abi::STATE_UNINTERRUPTIBLE
            | abi::STATE_OTHER,
    );

    /// The mask as the program reads it.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether `state` is in the set.
    pub fn contains(self, state: TaskState) -> bool {
        let bit = match state {
            TaskState::Preempted => abi::STATE_PREEMPTED,
            TaskState::Interruptible => abi::STATE_INTERRUPTIBLE,
            TaskState::Uninterruptible => abi::STATE_UNINTERRUPTIBLE,
            TaskState::Other => abi::STATE_OTHER,
        };
        self.0 & bit != 0
    }
}

impl Default for TaskStates {
    fn default() -> Self {
        TaskStates::ALL
    }
}

impl BitOr for TaskStates {
    type Output = TaskStates;

    fn bitor(self, other: TaskStates) -> TaskStates {
        TaskStates(self.0 | other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_contain_their_states() {
        let sleeping = TaskStates::INTERRUPTIBLE | TaskStates::UNINTERRUPTIBLE;
        assert!(sleeping.contains(TaskState::Interruptible));
        assert!(sleeping.contains(TaskState::Uninterruptible));
        assert!(!sleeping.contains(TaskState::Preempted));
        assert_eq!(TaskStates::ALL.bits(), 0b1111);
        for bit in [1, 2, 4, 8] {
            assert!(TaskStates(bit).contains(TaskState::from_bit(bit)));
        }
    }
}
